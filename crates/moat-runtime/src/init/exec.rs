//! `exec`: a new process inside a running container. Stage 1 joins the container init's
//! namespaces (user first); a fork then enters the pid namespace, prepares the process exactly as
//! the init does ([`super::process`]) and execs it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sched::setns;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::{stage1::clone_flag, Failure, InitError};
use crate::sync::{Channel, Msg};

/// What the exec'd process needs.
#[derive(Debug)]
pub struct ExecConfig {
    /// Host pid of the container's init, whose namespaces are joined.
    pub init_pid: i32,
    /// The container's namespace types.
    pub namespaces: Vec<LinuxNamespaceType>,
    /// The process to run.
    pub process: Process,
    /// The container's seccomp profile, compiled.
    pub seccomp: Option<crate::seccomp::Program>,
    /// Connected console socket (process.terminal).
    pub console: Option<OwnedFd>,
    /// Descriptors 3..3+N passed through.
    pub preserve_fds: i32,
    /// The cgroup files to write `0` into to join the container's cgroup.
    pub cgroup_join: Vec<std::path::PathBuf>,
}

fn ns_file(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Entry of the exec stage-1 child: never returns.
pub fn run(cfg: &ExecConfig, chan: &Channel) -> ! {
    let code = match stage1(cfg, chan) {
        Ok(()) => 0,
        Err((e, code)) => {
            let _ = chan.send(&Msg::Error(e.to_string()));
            code
        }
    };
    // SAFETY: _exit ends this forked child without running the runtime's atexit handlers.
    unsafe { libc::_exit(code) }
}

fn stage1(cfg: &ExecConfig, chan: &Channel) -> Result<(), Failure> {
    let f = |e: InitError| (e, 125);
    super::reset_signals();
    match chan.recv("Go").map_err(|e| f(e.into()))? {
        Msg::Go => {}
        got => {
            return Err(f(InitError::Unexpected {
                got,
                expected: "Go",
            }))
        }
    }
    crate::cgroups::join_self(&cfg.cgroup_join).map_err(|e| f(e.into()))?;
    // Open every namespace first: after joining the mount namespace, /proc is the container's.
    let mut order = cfg.namespaces.clone();
    order.sort_by_key(|t| {
        (
            *t != LinuxNamespaceType::User,
            *t == LinuxNamespaceType::Mount,
        )
    });
    let mut files: Vec<(LinuxNamespaceType, std::fs::File)> = vec![];
    for t in order {
        let path = format!("/proc/{}/ns/{}", cfg.init_pid, ns_file(t));
        let file = std::fs::File::open(&path).map_err(|e| {
            f(InitError::Namespace {
                step: "open",
                what: path.clone(),
                source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })
        })?;
        files.push((t, file));
    }
    for (t, file) in &files {
        // Joining our own user namespace again is EINVAL: skip when it is already ours.
        if *t == LinuxNamespaceType::User && same_ns(file, "/proc/self/ns/user") {
            continue;
        }
        setns(file.as_fd(), clone_flag(*t)).map_err(|source| {
            f(InitError::Namespace {
                step: "join",
                what: format!("{t} of pid {}", cfg.init_pid),
                source,
            })
        })?;
    }
    drop(files);
    match super::fork_reporting_pid(chan).map_err(f)? {
        None => {
            let failure = child(cfg, chan);
            let msg = if failure.1 == 126 || failure.1 == 127 {
                Msg::CommandError(failure.0.to_string(), failure.1)
            } else {
                Msg::Error(failure.0.to_string())
            };
            let _ = chan.send(&msg);
            // SAFETY: _exit ends this forked child without running atexit handlers.
            unsafe { libc::_exit(failure.1) }
        }
        Some(_) => Ok(()),
    }
}

fn same_ns(file: &std::fs::File, other: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(other)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn child(cfg: &ExecConfig, chan: &Channel) -> Failure {
    let console = cfg.console.as_ref().map(|c| c.as_raw_fd());
    match super::process::prepare(&cfg.process, cfg.seccomp.as_ref(), console) {
        Ok(p) => {
            for w in &p.warnings {
                let _ = chan.send(&Msg::Warning(w.clone()));
            }
            super::process::exec(&p, &cfg.process, cfg.preserve_fds)
        }
        Err(e) => e,
    }
}
