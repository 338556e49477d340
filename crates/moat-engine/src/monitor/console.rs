//! The terminal of a `-t` container: the monitor listens on `<container dir>/console.sock`, the
//! runtime hands that path to the init as its console socket (runc's protocol), and the init
//! sends the master of the pty it allocated inside the container (SCM_RIGHTS).

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::EngineError;

/// A console socket waiting for the pty master.
#[derive(Debug)]
pub(crate) struct Console {
    listener: UnixListener,
    /// The socket's path (removed when dropped).
    pub path: PathBuf,
}

impl Console {
    /// Listens on `dir/console.sock` (a stale socket from a monitor that died is replaced).
    ///
    /// A socket path must fit in 108 bytes and `dir` may be longer (any `--root`): the monitor
    /// works from `dir` and the socket is named relative to it, here and for the runtime (the
    /// starter inherits the working directory and connects before anything changes it).
    pub fn bind(dir: &Path) -> Result<Console, EngineError> {
        std::env::set_current_dir(dir).map_err(|source| EngineError::Io {
            what: "enter",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = PathBuf::from("console.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|source| EngineError::Io {
            what: "listen on",
            path: dir.join(&path),
            source,
        })?;
        Ok(Console { listener, path })
    }

    /// Listens on `path` (an exec's socket: a short path, since the caller keeps its working
    /// directory).
    pub fn bind_path(path: &Path) -> Result<Console, EngineError> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|source| EngineError::Io {
            what: "listen on",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Console {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The master, once the container started (its init sent it before reporting `Created`,
    /// so it is already queued: the accept does not wait).
    pub fn master(&self) -> Result<OwnedFd, EngineError> {
        self.receive(true)
    }

    /// The master of an exec's terminal: waits for the process to connect.
    pub fn wait_master(&self) -> Result<OwnedFd, EngineError> {
        self.receive(false)
    }

    fn receive(&self, queued: bool) -> Result<OwnedFd, EngineError> {
        let err = |what: &str| EngineError::StartFailed(format!("terminal: {what}"));
        self.listener
            .set_nonblocking(queued)
            .map_err(|_| err("set non-blocking"))?;
        let (conn, _) = self
            .listener
            .accept()
            .map_err(|e| err(&format!("no connection from the container's init: {e}")))?;
        let mut byte = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| err(&format!("receive the pty master: {e}")))?;
        for c in msg
            .cmsgs()
            .map_err(|e| err(&format!("control message: {e}")))?
        {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: the kernel just installed this descriptor for us (SCM_RIGHTS);
                    // nothing else owns it.
                    return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
                }
            }
        }
        Err(err("the init sent no descriptor"))
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The size (rows, columns) of the caller's terminal, from its stdin or stdout; `None` when
/// neither is a terminal.
pub fn caller_size() -> Option<(u16, u16)> {
    for fd in [0, 1] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// Sets the terminal size of running container `pid`'s terminal (the pty its init has on
/// standard input) to `rows` x `cols`: the kernel sends SIGWINCH to its foreground process
/// group. The terminal is reached through `/proc/PID/fd/0` (opened non-blocking and without
/// becoming our controlling terminal; anything but a terminal there is refused), so no channel
/// to the monitor is needed.
pub fn resize(pid: i32, rows: u16, cols: u16) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/0"))?;
    // The container chose what its fd 0 is: only a pseudo-terminal slave (majors 136-143) is
    // touched.
    let md = f.metadata()?;
    let pts = std::os::unix::fs::FileTypeExt::is_char_device(&md.file_type())
        && (136..=143).contains(&libc::major(std::os::unix::fs::MetadataExt::rdev(&md)));
    if !pts {
        return Err(std::io::Error::from_raw_os_error(libc::ENOTTY));
    }
    set_size(std::os::fd::AsFd::as_fd(&f), rows, cols)
}

/// Sets the size of the terminal behind `fd` (a pty's master or slave).
pub fn set_size(fd: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the struct we own, on a descriptor borrowed
    // for the call; on one that is not a terminal it fails with ENOTTY and changes nothing.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
