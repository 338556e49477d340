//! `exec`: run another process inside a created or running container.

use std::path::PathBuf;

use nix::sys::signal::SigmaskHow;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::Process;

use super::run::{block, forwarded_signals, wait_forwarding};
use super::{cgroup_of, OpsError, Runtime};
use crate::bundle::namespaces;
use crate::id::ContainerId;
use crate::init::exec::{run as exec_stage1, ExecConfig};
use crate::state::Status;
use crate::sync::{self, Msg};

/// Options of `exec`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The process to run.
    pub process: Process,
    /// Where to write the process's pid.
    pub pid_file: Option<PathBuf>,
    /// Where to send the pty master (process.terminal).
    pub console_socket: Option<PathBuf>,
    /// Extra descriptors (3..3+N) passed to the process.
    pub preserve_fds: i32,
    /// Return once the process started.
    pub detach: bool,
}

/// Runs `opts.process` in container `id`; returns its exit code (0 when detached).
pub fn exec(rt: &Runtime, id: &ContainerId, opts: &ExecOptions) -> Result<i32, OpsError> {
    let (rec, status) = rt.lookup(id)?;
    if status == Status::Stopped {
        return Err(OpsError::WrongStatus {
            id: id.clone(),
            status,
            op: "exec (it is not running)",
        });
    }
    if opts.process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(OpsError::NoCommand);
    }
    let mut set = forwarded_signals();
    // With a console socket the terminal's size is the receiver's business (it holds the
    // master, as with runc): SIGWINCH is left to it rather than forwarded to the process.
    if opts.console_socket.is_some() {
        set.remove(nix::sys::signal::Signal::SIGWINCH);
    }
    if !opts.detach {
        block(&set)?;
    }
    let console = match (&opts.console_socket, opts.process.terminal()) {
        (Some(p), Some(true)) => Some(crate::console::connect(p)?),
        _ => None,
    };
    let linux = rec.config.linux().clone().unwrap_or_default();
    let cfg = ExecConfig {
        init_pid: rec.pid,
        namespaces: namespaces(&rec.config).iter().map(|n| n.typ()).collect(),
        process: opts.process.clone(),
        seccomp: rt.seccomp(linux.seccomp().as_ref())?,
        console,
        preserve_fds: opts.preserve_fds,
        cgroup_join: cgroup_of(&rec)?.self_join_files(),
    };
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let (parent, child) = sync::pair()?;
    // SAFETY: the moat binary is single-threaded, so the child may run arbitrary code after fork.
    let stage1 = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(parent);
            exec_stage1(&cfg, &child)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            return Err(OpsError::Sys {
                what: "fork".into(),
                source: e,
            })
        }
    };
    drop(child);
    let kill_stage1 = |e: OpsError| {
        let _ = nix::sys::signal::kill(stage1, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(stage1, None);
        e
    };
    parent.send(&Msg::Go).map_err(|e| kill_stage1(e.into()))?;
    let mut pid = None;
    loop {
        match parent.recv("exec") {
            Ok(Msg::InitPid(p)) => {
                pid = Some(Pid::from_raw(p));
                let _ = waitpid(stage1, None);
            }
            Ok(Msg::Warning(w)) => log::warn!("{w}"),
            Ok(Msg::CommandError(message, code)) => {
                let _ = waitpid(pid.unwrap_or(stage1), None);
                return Err(OpsError::Command { message, code });
            }
            Ok(Msg::Error(e)) => {
                let _ = waitpid(pid.unwrap_or(stage1), None);
                return Err(OpsError::ExecFailed(e));
            }
            Ok(got) => {
                return Err(OpsError::Protocol {
                    got: format!("{got:?}"),
                    expected: "the exec'd process's pid",
                })
            }
            // The descriptor closes on execve: end of stream after the pid means it runs.
            Err(_) => break,
        }
    }
    let Some(pid) = pid else {
        let _ = waitpid(stage1, None);
        return Err(OpsError::ExecFailed(
            "exec: the process exited before it started".into(),
        ));
    };
    if let Some(p) = &opts.pid_file {
        super::launch::write_pid_file(p, pid.as_raw())?;
    }
    if opts.detach {
        return Ok(0);
    }
    let code = wait_forwarding(&set, pid)?;
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    Ok(code)
}

/// runc's `exec` flags that shape the process when no `--process` file is given.
#[derive(Debug, Clone, Default)]
pub struct ExecOverrides {
    /// The command and its arguments.
    pub args: Vec<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Extra `KEY=VALUE` variables (replacing same-named ones).
    pub env: Vec<String>,
    /// uid and optional gid.
    pub user: Option<(u32, Option<u32>)>,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Capabilities added to every set.
    pub caps: Vec<String>,
    /// Set no_new_privileges.
    pub no_new_privs: bool,
}

/// The process for `exec`: the container's own process (env, user, capabilities, rlimits)
/// with the overrides applied, as runc builds it.
pub fn process_for(
    container: &oci_spec::runtime::Spec,
    o: &ExecOverrides,
) -> Result<Process, OpsError> {
    let mut p = container.process().clone().unwrap_or_default();
    p.set_args(Some(o.args.clone()));
    p.set_terminal(Some(o.tty));
    p.set_console_size(None);
    if let Some(cwd) = &o.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &o.env {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some((uid, gid)) = o.user {
        let mut u = p.user().clone();
        u.set_uid(uid);
        if let Some(g) = gid {
            u.set_gid(g);
        }
        if !o.additional_gids.is_empty() {
            u.set_additional_gids(Some(o.additional_gids.clone()));
        }
        p.set_user(u);
    }
    if !o.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &o.caps {
            let cap: oci_spec::runtime::Capability = name
                .trim_start_matches("CAP_")
                .parse()
                .map_err(|_| OpsError::UnknownCapability(name.clone()))?;
            let add = |s: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = s.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            caps.set_bounding(add(caps.bounding()));
            caps.set_effective(add(caps.effective()));
            caps.set_permitted(add(caps.permitted()));
        }
        p.set_capabilities(Some(caps));
    }
    if o.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}
