//! A container's network namespace, made before the container and pinned on a file
//! (`<netns dir>/<container id>`, an nsfs bind mount as `ip netns` makes), so that its endpoint
//! is plumbed before the container's process exists and the runtime only has to join it.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::netlink::{NetlinkError, Rtnl};

/// Errors of making or removing a pinned namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A system call failed.
    #[error("{what} {path}: {source}")]
    Sys {
        /// The call.
        what: &'static str,
        /// The namespace file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Netlink inside the new namespace failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The helper thread died.
    #[error("the thread making network namespace {0} panicked")]
    Thread(PathBuf),
}

/// What [`create`] returns: the namespace's descriptor, an rtnetlink socket inside it, and
/// (when asked for) the DNS responder's sockets there.
pub type Made = (OwnedFd, Rtnl, Option<crate::dns::Sockets>);

/// A namespace being made on its own thread (the kernel's part takes about a millisecond,
/// which the caller spends on its records meanwhile).
#[derive(Debug)]
pub struct Pending {
    path: PathBuf,
    thread: Result<std::thread::JoinHandle<Result<Made, NetnsError>>, NetnsError>,
}

impl Pending {
    /// Waits for the namespace; on failure the pin is gone.
    pub fn wait(self) -> Result<Made, NetnsError> {
        let made = self.thread.and_then(|t| {
            t.join()
                .map_err(|_| NetnsError::Thread(self.path.clone()))
                .and_then(|r| r)
        });
        if made.is_err() {
            remove(&self.path);
        }
        made
    }
}

/// A new network namespace pinned at `path`, its loopback up, with the DNS responder's sockets
/// bound inside when `dns`.
pub fn create(path: &Path, dns: bool) -> Result<Made, NetnsError> {
    start(path, dns).wait()
}

/// Starts making the namespace of [`create`].
pub fn start(path: &Path, dns: bool) -> Pending {
    Pending {
        path: path.to_path_buf(),
        thread: spawn(path, dns),
    }
}

type Thread = std::thread::JoinHandle<Result<Made, NetnsError>>;

fn spawn(path: &Path, dns: bool) -> Result<Thread, NetnsError> {
    let sys = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| NetnsError::Sys { what, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(sys("create", dir))?;
    }
    // A pin left by a monitor that died (kill -9) is replaced.
    remove(path);
    File::create(path).map_err(sys("create", path))?;
    let target = path.to_path_buf();
    // unshare(CLONE_NEWNET) moves only the calling thread: a short-lived thread makes the
    // namespace, and the caller's own stays as it was.
    Ok(std::thread::spawn(move || -> Result<Made, NetnsError> {
        let sys = |what: &'static str| {
            let path = target.clone();
            move |e: nix::Error| NetnsError::Sys {
                what,
                path,
                source: e.into(),
            }
        };
        unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare a network namespace for"))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("pin the network namespace on"))?;
        let fd = File::open("/proc/thread-self/ns/net")
            .map_err(|source| NetnsError::Sys {
                what: "open the network namespace of",
                path: target.clone(),
                source,
            })?
            .into();
        // The socket stays in this namespace whichever thread uses it.
        let mut rtnl = Rtnl::open()?;
        if let Some(lo) = rtnl.index("lo")? {
            rtnl.set_up(lo, None, "lo")?;
        }
        // Sockets too stay in the namespace they were made in: the responder, running in
        // the host's namespace (to reach the host's resolvers), answers on these.
        let dns = if dns {
            Some(
                crate::dns::Sockets::bind().map_err(|source| NetnsError::Sys {
                    what: "bind 127.0.0.11:53 in the network namespace of",
                    path: target.clone(),
                    source,
                })?,
            )
        } else {
            None
        };
        Ok((fd, rtnl, dns))
    }))
}

/// An rtnetlink socket inside the namespace pinned at `path` (a running container's), made by
/// a short-lived thread that joins it: the caller's own namespace never changes.
pub fn socket_in(path: &Path) -> Result<Rtnl, NetnsError> {
    let ns = File::open(path).map_err(|source| NetnsError::Sys {
        what: "open the network namespace",
        path: path.to_path_buf(),
        source,
    })?;
    let p = path.to_path_buf();
    std::thread::spawn(move || -> Result<Rtnl, NetnsError> {
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Sys {
            what: "join the network namespace",
            path: p,
            source: e.into(),
        })?;
        Ok(Rtnl::open()?)
    })
    .join()
    .map_err(|_| NetnsError::Thread(path.to_path_buf()))?
}

/// Unpins and deletes the namespace file (the namespace ends with its last process).
pub fn remove(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}
