//! The init chain, split by stage (as runc's nsexec and youki's init):
//!
//! - the **parent** (`moat runtime create|run`) forks stage 1, puts it into the cgroup, writes its
//!   uid/gid maps when it asks, runs the createRuntime hooks, and records the container;
//! - **stage 1** ([`stage1`]) joins namespaces given by path, creates the new ones (the user
//!   namespace first, so the others are owned by it) and forks the init, then exits;
//! - **stage 2** ([`stage2`], the container's init and future pid 1) builds the rootfs, pivots,
//!   sets the process up, reports `Created`, blocks until `start`, and execs the user's program.
//!
//! The chain uses fork without exec, so it must start from a single-threaded process (the `moat`
//! binary is one); library tests never call it.

pub mod exec;
pub mod process;
pub mod stage1;
pub mod stage2;

use std::os::fd::OwnedFd;

use oci_spec::runtime::LinuxNamespace;

use crate::bundle::Bundle;
use crate::rootfs::RootfsPlan;

/// Errors inside the init chain; they travel to the parent as text over the sync channel.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// sync channel failure
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    /// joining the cgroup failed
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    /// a namespace step failed
    #[error("{step} namespace {what}: {source}")]
    Namespace {
        /// join/unshare.
        step: &'static str,
        /// The namespace (type or path).
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// fork failed
    #[error("fork the container's init: {0}")]
    Fork(nix::Error),
    /// rootfs set-up failed
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    /// a hook failed
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    /// capabilities failed
    #[error(transparent)]
    Caps(#[from] crate::capabilities::CapsError),
    /// rlimits failed
    #[error(transparent)]
    Rlimit(#[from] crate::rlimits::RlimitError),
    /// seccomp failed
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// the terminal failed
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    /// a process attribute could not be set
    #[error("set {what}: {source}")]
    Process {
        /// What was being set (names the value).
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// a file write of the set-up failed
    #[error("set {what}: {source}")]
    Io {
        /// What was being set (names the value).
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// the program cannot be found or run
    #[error("exec: {program:?}: {reason}")]
    Exec {
        /// The program from process.args[0].
        program: String,
        /// Why.
        reason: String,
    },
    /// the program exists but is not executable
    #[error("exec: {0:?}: permission denied (not an executable file)")]
    NotExecutable(String),
    /// cwd is outside the container
    #[error("process.cwd {0:?} resolves outside the container's root (refused: CVE-2024-21626)")]
    CwdEscape(String),
    /// unexpected message
    #[error("unexpected sync message {got:?} while waiting for {expected}")]
    Unexpected {
        /// What arrived.
        got: crate::sync::Msg,
        /// What was expected.
        expected: &'static str,
    },
}

/// Wraps an I/O error of the set-up step `what`.
/// Gives the container's process (and a process exec'd into it) the signal state of a fresh
/// process: nothing blocked, every disposition the default. An `exec` keeps ignored signals
/// ignored, so a runtime started from `nohup` or as a background job of a script (SIGINT, SIGQUIT
/// and SIGHUP ignored) would otherwise hand that on, and a shell started with SIGINT ignored
/// cannot even `trap` it (POSIX): Ctrl-C would do nothing in the container (seen in a test run
/// from a background job).
pub(crate) fn reset_signals() {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    /// The kernel's `struct sigaction` (x86_64 and aarch64 layout): the raw system call is
    /// used because glibc refuses its own reserved signals (32, 33), which a parent may have
    /// left ignored all the same.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a struct we own for the duration of the call and writes
        // nothing (no old action asked for); SIG_DFL installs no handler. Async-signal-safe,
        // fine in this forked child; an error (none expected) leaves the disposition as it was.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

pub(crate) fn ioerr(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InitError {
    let what = what.into();
    move |source| InitError::Io { what, source }
}

/// Wraps an errno of the set-up step `what`.
/// Forks the process that becomes the container's init (or the exec'd process) and reports its
/// pid to the runtime on `chan`; returns `None` in the child, `Some(pid)` in the parent.
///
/// The child shares `chan` with its parent, so without care its first message (`Created`, a
/// hook request, an error) could reach the runtime before the parent's `InitPid`: the runtime
/// would then record pid 0 and `run` would wait forever for a child that does not exist (seen
/// once in 30 test runs). The child therefore waits on a pipe that the parent closes only once
/// the pid is sent.
pub(crate) fn fork_reporting_pid(chan: &crate::sync::Channel) -> Result<Option<i32>, InitError> {
    use nix::unistd::{fork, pipe2, ForkResult};
    let (gate_r, gate_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(perr("pipe"))?;
    // SAFETY: the runtime is single-threaded while it builds a container, so the child may run
    // arbitrary code after fork.
    match unsafe { fork() }.map_err(InitError::Fork)? {
        ForkResult::Child => {
            drop(gate_w);
            let mut b = [0u8; 1];
            // End of file (or a byte) means the pid is out; EINTR is retried. Another error
            // leaves the order unguarded but cannot block us.
            while let Err(nix::Error::EINTR) = nix::unistd::read(&gate_r, &mut b) {}
            Ok(None)
        }
        ForkResult::Parent { child } => {
            drop(gate_r);
            let sent = chan.send(&crate::sync::Msg::InitPid(child.as_raw()));
            drop(gate_w);
            sent?;
            Ok(Some(child.as_raw()))
        }
    }
}

pub(crate) fn perr(what: impl Into<String>) -> impl FnOnce(nix::Error) -> InitError {
    let what = what.into();
    move |source| InitError::Process { what, source }
}

/// An error with the exit code the process ends with: 125 for set-up failures, 126/127 for a
/// program that cannot run (Docker's codes).
pub(crate) type Failure = (InitError, i32);

/// How the init learns that it may exec the user's program.
#[derive(Debug)]
pub enum StartSignal {
    /// `create` then `start`: the init opens this fifo (an O_PATH descriptor of
    /// `<state>/exec.fifo`) for writing, which blocks until `start` opens it for reading.
    Fifo(OwnedFd),
    /// `run`: the parent sends [`crate::sync::Msg::Start`] on the sync channel.
    Channel,
}

/// Everything the chain needs; built by the parent before the first fork and inherited by copy.
#[derive(Debug)]
pub struct InitConfig {
    /// Container id (for hook state).
    pub id: String,
    /// The bundle.
    pub bundle: Bundle,
    /// Namespaces from the config.
    pub namespaces: Vec<LinuxNamespace>,
    /// Rootfs plan.
    pub rootfs: RootfsPlan,
    /// How `start` is signalled.
    pub start: StartSignal,
    /// The console socket, connected by the parent (only with process.terminal).
    pub console: Option<OwnedFd>,
    /// Descriptors 3..3+N passed through to the container (`--preserve-fds`).
    pub preserve_fds: i32,
    /// The cgroup files stage 1 writes `0` into to join the container's cgroup.
    pub cgroup_join: Vec<std::path::PathBuf>,
    /// linux.seccomp, compiled by the runtime before the first fork.
    pub seccomp: Option<crate::seccomp::Program>,
}

/// The OCI state document that hooks receive on stdin.
pub fn hook_state(cfg: &InitConfig, pid: i32, status: &str) -> String {
    serde_json::json!({
        "ociVersion": "1.2.0",
        "id": cfg.id,
        "status": status,
        "pid": pid,
        "bundle": cfg.bundle.dir,
        "annotations": cfg.bundle.spec.annotations().clone().unwrap_or_default(),
    })
    .to_string()
}
