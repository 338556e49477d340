//! The container's terminal: a pty allocated inside the container (from its own devpts) whose
//! master is sent to the caller over `--console-socket`, as runc does (SCM_RIGHTS).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, Winsize};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// Errors setting up the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// the pty could not be allocated
    #[error("allocate a pty inside the container ({step}): {source}")]
    Pty {
        /// Which step.
        step: &'static str,
        /// The errno.
        source: nix::Error,
    },
    /// sending the pty master failed
    #[error("send the pty master over the console socket: {0}")]
    Send(nix::Error),
    /// connecting to the console socket failed
    #[error("connect to console socket {path}: {source}")]
    Connect {
        /// The socket path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Connects to the console socket (done by the runtime before the init chain starts, while the
/// host's filesystem is still visible).
pub fn connect(path: &Path) -> Result<OwnedFd, ConsoleError> {
    std::os::unix::net::UnixStream::connect(path)
        .map(OwnedFd::from)
        .map_err(|source| ConsoleError::Connect {
            path: path.display().to_string(),
            source,
        })
}

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

/// Sends a pty `master` (and its slave's `name`) over a console socket, as runc does: the name
/// travels with the descriptor (consumers such as conmon ignore it).
pub fn send_master(socket: RawFd, master: &impl AsRawFd, name: &str) -> Result<(), ConsoleError> {
    let fds = [master.as_raw_fd()];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(
        socket,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(ConsoleError::Send)?;
    Ok(())
}

/// Allocates a pty, sends its master over `socket`, and makes the slave the calling process's
/// controlling terminal and stdio.
pub fn setup(socket: RawFd, size: Option<(u16, u16)>) -> Result<(), ConsoleError> {
    let pty = |step, source| ConsoleError::Pty { step, source };
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| pty("open /dev/ptmx", e))?;
    grantpt(&master).map_err(|e| pty("grantpt", e))?;
    unlockpt(&master).map_err(|e| pty("unlockpt", e))?;
    let name = ptsname_r(&master).map_err(|e| pty("ptsname", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| pty("open slave", e))?;
    if let Some((rows, cols)) = size {
        let ws = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: `slave` is an open tty descriptor and `ws` a valid Winsize for TIOCSWINSZ.
        unsafe { set_winsize(slave.as_raw_fd(), &ws) }.map_err(|e| pty("set size", e))?;
    }
    send_master(socket, &master, &name)?;
    drop(master);
    nix::unistd::setsid().map_err(|e| pty("setsid", e))?;
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal); `slave` is an open tty.
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc < 0 {
        return Err(pty("TIOCSCTTY", nix::Error::last()));
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the stdio descriptors of this (single-threaded) init process.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(pty("dup2", nix::Error::last()));
        }
    }
    Ok(())
}

/// Writes all of `data` to a pipe or terminal descriptor, retrying interrupted writes: the
/// relays of a container's stdio (its monitor, a VM's driver and agent) all need it.
pub fn write_all(fd: impl std::os::fd::AsFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd.as_fd(), data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
