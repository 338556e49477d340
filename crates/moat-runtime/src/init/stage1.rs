//! Stage 1: namespaces. Joins the namespaces given by path, creates the new ones and forks the
//! container's init into them (a new pid namespace only applies to children), then exits.

use std::os::fd::AsFd;

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::LinuxNamespaceType;

use super::{stage2, InitConfig, InitError};
use crate::sync::{Channel, Msg};

/// The clone flag of a namespace type.
pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// Entry of the stage-1 child: never returns.
pub fn run(cfg: &InitConfig, chan: &Channel) -> ! {
    let code = match stage1(cfg, chan) {
        Ok(()) => 0,
        Err(e) => {
            let _ = chan.send(&Msg::Error(e.to_string()));
            1
        }
    };
    // SAFETY: _exit ends this forked child without running the parent's atexit handlers or
    // flushing its copied stdio buffers twice.
    unsafe { libc::_exit(code) }
}

fn stage1(cfg: &InitConfig, chan: &Channel) -> Result<(), InitError> {
    // The parent of `run` blocks signals to forward them, and may have been started with some
    // ignored: the container inherits neither.
    super::reset_signals();
    match chan.recv("Go")? {
        Msg::Go => {}
        got => {
            return Err(InitError::Unexpected {
                got,
                expected: "Go",
            })
        }
    }
    // Into the cgroup before any namespace: a new cgroup namespace is rooted where we are.
    crate::cgroups::join_self(&cfg.cgroup_join)?;
    // Join by path, the user namespace first: it decides what we may do in the others.
    let mut joins: Vec<_> = cfg
        .namespaces
        .iter()
        .filter(|n| n.path().is_some())
        .collect();
    joins.sort_by_key(|n| n.typ() != LinuxNamespaceType::User);
    for ns in joins {
        let path = ns
            .path()
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let err = |source| InitError::Namespace {
            step: "join",
            what: format!("{} {path}", ns.typ()),
            source,
        };
        let f = std::fs::File::open(&path)
            .map_err(|e| err(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
        setns(f.as_fd(), clone_flag(ns.typ())).map_err(err)?;
    }
    let new: Vec<_> = cfg
        .namespaces
        .iter()
        .filter(|n| n.path().is_none())
        .collect();
    if new.iter().any(|n| n.typ() == LinuxNamespaceType::User) {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|source| InitError::Namespace {
            step: "create",
            what: "user".into(),
            source,
        })?;
        chan.send(&Msg::MapIds)?;
        match chan.recv("IdsMapped")? {
            Msg::IdsMapped => {}
            got => {
                return Err(InitError::Unexpected {
                    got,
                    expected: "IdsMapped",
                })
            }
        }
        // Become root of the new namespace when it has one (mounts need it to own the files).
        let _ = setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
        let _ = setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
    }
    let mut flags = CloneFlags::empty();
    for n in &new {
        if n.typ() != LinuxNamespaceType::User {
            flags |= clone_flag(n.typ());
        }
    }
    unshare(flags).map_err(|source| InitError::Namespace {
        step: "create",
        what: format!("{flags:?}"),
        source,
    })?;
    match super::fork_reporting_pid(chan)? {
        None => stage2::run(cfg, chan),
        Some(_) => Ok(()),
    }
}
