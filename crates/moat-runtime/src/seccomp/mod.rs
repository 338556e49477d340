//! Seccomp: compiles the OCI `linux.seccomp` section into a libseccomp filter and loads it.
//!
//! The semantics follow runc and crun so that profiles written for them (Docker's default
//! profile in particular) behave the same under moat:
//! - `SCMP_ACT_KILL` means "kill the thread", like libseccomp's historic `SCMP_ACT_KILL`.
//! - A rule's `errnoRet` defaults to `EPERM` (as the OCI spec, runc and crun say); the
//!   profile-wide `defaultErrnoRet` only applies to `defaultAction`.
//! - Syscall names this libseccomp does not know are skipped: profiles list syscalls newer
//!   than the library, and refusing them would make every new profile unusable.
//! - A rule whose action equals the default action is skipped, because libseccomp refuses it
//!   and it would not change the filter's behaviour anyway.
//! - A rule that compares the same argument twice is split into one rule per condition (OR),
//!   because libseccomp cannot AND two comparisons of one argument; runc and crun do the same.
//!
//! The filter is built in full by [`Filter::from_spec`] so that every error surfaces while the
//! init can still report it; [`Filter::load`] then only hands the compiled filter to the kernel.

mod program;
pub use program::Program;

use std::os::fd::AsFd;

use libseccomp::error::SeccompError as LibError;
use libseccomp::ScmpSyscall;
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

/// The number of arguments a syscall can have; seccomp sees exactly these six registers.
const MAX_ARGS: usize = 6;

/// Errors building or loading a seccomp filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// loading the compiled program failed
    #[error("load the compiled seccomp program: {0}")]
    LoadProgram(std::io::Error),

    /// seccomp action SCMP_ACT_NOTIFY (used by {context}) is not supported yet
    #[error("seccomp action SCMP_ACT_NOTIFY (used by {context}) is not supported yet")]
    NotifyUnsupported {
        /// `defaultAction` or the syscalls of the offending rule.
        context: String,
    },

    /// errnoRet {value} of {context} does not fit the 16 bits seccomp can return
    #[error("errnoRet {value} of {context} does not fit the 16 bits seccomp can return")]
    ErrnoOutOfRange {
        /// `defaultAction` or the syscalls of the offending rule.
        context: String,
        /// The rejected value.
        value: u32,
    },

    /// errnoRet {value} of {context} is given for action {action}, which returns no value
    #[error("errnoRet {value} of {context} is given for action {action}, which returns no value")]
    ErrnoNotApplicable {
        /// `defaultAction` or the syscalls of the offending rule.
        context: String,
        /// The action that cannot carry a return value.
        action: LinuxSeccompAction,
        /// The rejected value.
        value: u32,
    },

    /// seccomp rule for {syscalls} compares argument index {index}, but syscalls only have arguments 0 to 5
    #[error(
        "seccomp rule for {syscalls} compares argument index {index}, \
         but syscalls only have arguments 0 to 5"
    )]
    ArgIndexOutOfRange {
        /// The syscalls of the offending rule.
        syscalls: String,
        /// The rejected index.
        index: usize,
    },

    /// creating a seccomp filter with default action {action:?} failed
    #[error("creating a seccomp filter with default action {action:?} failed")]
    CreateFilter {
        /// The default action that was requested.
        action: ScmpAction,
        /// libseccomp's error.
        #[source]
        source: LibError,
    },

    /// seccomp architecture {arch} is not supported by this host's libseccomp
    #[error("seccomp architecture {arch} is not supported by this host's libseccomp")]
    UnsupportedArch {
        /// The architecture from the config.
        arch: Arch,
        /// libseccomp's error.
        #[source]
        source: LibError,
    },

    /// setting seccomp filter attribute {attribute} failed
    #[error("setting seccomp filter attribute {attribute} failed")]
    SetAttribute {
        /// The attribute, named after the libseccomp setting it maps to.
        attribute: &'static str,
        /// libseccomp's error.
        #[source]
        source: LibError,
    },

    /// adding seccomp rule {action:?} for syscall {syscall} failed
    #[error("adding seccomp rule {action:?} for syscall {syscall} failed")]
    AddRule {
        /// The syscall name from the config.
        syscall: String,
        /// The rule's action.
        action: ScmpAction,
        /// libseccomp's error.
        #[source]
        source: LibError,
    },

    /// loading the seccomp filter (default action {default_action:?}) into the kernel failed
    #[error(
        "loading the seccomp filter (default action {default_action:?}) into the kernel failed"
    )]
    Load {
        /// The filter's default action, to tell filters apart in logs.
        default_action: ScmpAction,
        /// libseccomp's error.
        #[source]
        source: LibError,
    },

    /// exporting the seccomp filter as {format} failed
    #[error("exporting the seccomp filter as {format} failed")]
    Export {
        /// `BPF` or `PFC`.
        format: &'static str,
        /// libseccomp's error.
        #[source]
        source: LibError,
    },
}

/// A compiled filter, built from the OCI config before the container's process drops privileges.
///
/// Not `Send`: it owns a libseccomp context, which is a raw pointer. It is meant to be built
/// and loaded by the same (init) process.
#[derive(Debug)]
pub struct Filter {
    ctx: ScmpFilterContext,
    default_action: ScmpAction,
}

impl Filter {
    /// Builds the filter described by `spec`, without loading it.
    pub fn from_spec(spec: &LinuxSeccomp) -> Result<Filter, SeccompError> {
        let default_action = resolve_action(
            spec.default_action(),
            spec.default_errno_ret(),
            "defaultAction",
        )?;
        let mut ctx = ScmpFilterContext::new(default_action).map_err(|source| {
            SeccompError::CreateFilter {
                action: default_action,
                source,
            }
        })?;

        // The runtime decides about no_new_privs itself (from `process.noNewPrivileges`);
        // libseccomp would otherwise set it behind our back on load. Loading without it needs
        // CAP_SYS_ADMIN, which the init still holds when it loads the filter.
        ctx.set_ctl_nnp(false)
            .map_err(|source| SeccompError::SetAttribute {
                attribute: "CTL_NNP",
                source,
            })?;

        for &arch in spec.architectures().iter().flatten() {
            ctx.add_arch(scmp_arch(arch))
                .map_err(|source| SeccompError::UnsupportedArch { arch, source })?;
        }

        for &flag in spec.flags().iter().flatten() {
            apply_flag(&mut ctx, flag)?;
        }

        for rule in spec.syscalls().iter().flatten() {
            add_rule(&mut ctx, rule, default_action)?;
        }

        Ok(Filter {
            ctx,
            default_action,
        })
    }

    /// Loads the filter into the calling process (irreversible). Called in the container's init
    /// right before execve.
    ///
    /// The caller must have set no_new_privs or still hold CAP_SYS_ADMIN; the kernel refuses
    /// the filter (EACCES) otherwise.
    pub fn load(&self) -> Result<(), SeccompError> {
        self.ctx.load().map_err(|source| SeccompError::Load {
            default_action: self.default_action,
            source,
        })
    }

    /// The action taken for syscalls no rule matches.
    pub fn default_action(&self) -> ScmpAction {
        self.default_action
    }

    /// Writes the kernel-readable BPF program to `fd` (for caching or debugging).
    pub fn export_bpf<Fd: AsFd>(&self, fd: Fd) -> Result<(), SeccompError> {
        self.ctx
            .export_bpf(fd)
            .map_err(|source| SeccompError::Export {
                format: "BPF",
                source,
            })
    }

    /// Writes a human-readable rendering of the filter to `fd` (for debugging).
    pub fn export_pfc<Fd: AsFd>(&self, fd: Fd) -> Result<(), SeccompError> {
        self.ctx
            .export_pfc(fd)
            .map_err(|source| SeccompError::Export {
                format: "PFC",
                source,
            })
    }
}

/// Names a rule in error messages by its syscalls, which is how profiles are read.
fn rule_context(rule: &LinuxSyscall) -> String {
    format!("syscalls [{}]", rule.names().join(", "))
}

/// Turns an OCI action plus its optional return value into a libseccomp action.
fn resolve_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    context: &str,
) -> Result<ScmpAction, SeccompError> {
    use LinuxSeccompAction as Oci;
    // The kernel keeps only SECCOMP_RET_DATA (16 bits) of the value; silently truncating
    // would return a different errno than the profile asked for.
    let data = |value: u32| {
        u16::try_from(value).map_err(|_| SeccompError::ErrnoOutOfRange {
            context: context.to_owned(),
            value,
        })
    };
    // The spec requires failing rather than ignoring a value the action cannot carry.
    // NOTIFY is let through here so it gets its own, clearer error below.
    let takes_value = matches!(
        action,
        Oci::ScmpActErrno | Oci::ScmpActTrace | Oci::ScmpActNotify
    );
    if let (false, Some(value)) = (takes_value, errno_ret) {
        return Err(SeccompError::ErrnoNotApplicable {
            context: context.to_owned(),
            action,
            value,
        });
    }
    // EPERM is the OCI spec's default for both ERRNO and TRACE (runc and crun agree).
    let value = || data(errno_ret.unwrap_or(libc::EPERM.unsigned_abs()));
    Ok(match action {
        Oci::ScmpActErrno => ScmpAction::Errno(i32::from(value()?)),
        Oci::ScmpActTrace => ScmpAction::Trace(value()?),
        // SCMP_ACT_KILL predates KILL_PROCESS and has always killed only the thread.
        Oci::ScmpActKill | Oci::ScmpActKillThread => ScmpAction::KillThread,
        Oci::ScmpActKillProcess => ScmpAction::KillProcess,
        Oci::ScmpActTrap => ScmpAction::Trap,
        Oci::ScmpActLog => ScmpAction::Log,
        Oci::ScmpActAllow => ScmpAction::Allow,
        // Needs a listener socket and an agent protocol, which moat does not have yet.
        Oci::ScmpActNotify => {
            return Err(SeccompError::NotifyUnsupported {
                context: context.to_owned(),
            })
        }
    })
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn apply_flag(
    ctx: &mut ScmpFilterContext,
    flag: LinuxSeccompFilterFlag,
) -> Result<(), SeccompError> {
    let (attribute, result) = match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => ("CTL_LOG", ctx.set_ctl_log(true)),
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ("CTL_SSB", ctx.set_ctl_ssb(true)),
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ("CTL_TSYNC", ctx.set_ctl_tsync(true)),
        // Only affects threads waiting on a NOTIFY listener, which moat does not support yet;
        // it also needs libseccomp 2.6. Ignoring it changes nothing for the filters we build.
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
            log::debug!("seccomp flag {flag} ignored: it only matters for SCMP_ACT_NOTIFY");
            return Ok(());
        }
    };
    result
        .map(|_| ())
        .map_err(|source| SeccompError::SetAttribute { attribute, source })
}

/// `index` is `arg.index()`, already checked to be below [`MAX_ARGS`].
fn scmp_compare(arg: &LinuxSeccompArg, index: u32) -> ScmpArgCompare {
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // OCI puts the mask in `value` and the expected result in `valueTwo`.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(
                index,
                ScmpCompareOp::MaskedEqual(arg.value()),
                arg.value_two().unwrap_or(0),
            )
        }
    };
    ScmpArgCompare::new(index, op, arg.value())
}

fn add_rule(
    ctx: &mut ScmpFilterContext,
    rule: &LinuxSyscall,
    default_action: ScmpAction,
) -> Result<(), SeccompError> {
    let action = resolve_action(rule.action(), rule.errno_ret(), &rule_context(rule))?;

    let args = rule.args().as_deref().unwrap_or_default();
    let mut conditions = Vec::with_capacity(args.len());
    let mut seen = [false; MAX_ARGS];
    let mut repeated_index = false;
    for arg in args {
        let index = arg.index();
        let Some(slot) = seen.get_mut(index) else {
            return Err(SeccompError::ArgIndexOutOfRange {
                syscalls: rule.names().join(", "),
                index,
            });
        };
        repeated_index |= std::mem::replace(slot, true);
        // Lossless: `seen` just bounded the index by MAX_ARGS.
        conditions.push(scmp_compare(arg, index as u32));
    }

    if action == default_action {
        log::debug!(
            "seccomp rule for {} skipped: its action {action:?} is the default action",
            rule_context(rule)
        );
        return Ok(());
    }

    for name in rule.names() {
        let syscall = match ScmpSyscall::from_name(name) {
            Ok(syscall) => syscall,
            Err(err) => {
                log::debug!("seccomp: syscall {name} unknown to libseccomp, skipped: {err}");
                continue;
            }
        };
        let add = |ctx: &mut ScmpFilterContext, conditions: &[ScmpArgCompare]| {
            ctx.add_rule_conditional(action, syscall, conditions)
                .map(|_| ())
                .map_err(|source| SeccompError::AddRule {
                    syscall: name.clone(),
                    action,
                    source,
                })
        };
        if repeated_index {
            for condition in &conditions {
                add(ctx, std::slice::from_ref(condition))?;
            }
        } else {
            add(ctx, &conditions)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
