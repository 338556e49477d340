//! `start`: release a created container's init so it execs the user's program.

use std::io::Read;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{OpsError, Runtime};
use crate::id::ContainerId;
use crate::state::{Record, Status};

/// Starts container `id`, then runs its poststart hooks.
pub fn start(rt: &Runtime, id: &ContainerId) -> Result<(), OpsError> {
    let (rec, status) = rt.lookup(id)?;
    if status != Status::Created {
        return Err(OpsError::WrongStatus {
            id: id.clone(),
            status,
            op: "start (only a created container can be started)",
        });
    }
    let path = rt.store.fifo(id);
    // Non-blocking open: a blocking one would hang forever if the init died meanwhile.
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|source| OpsError::Io {
            what: "open exec fifo",
            path: path.clone(),
            source,
        })?;
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) if n > 0 => break,
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => {
                return Err(OpsError::Sys {
                    what: format!("poll exec fifo {}", path.display()),
                    source: e,
                })
            }
        }
        if !alive(&rec) {
            return Err(OpsError::InitDied {
                id: id.clone(),
                pid: rec.pid,
            });
        }
    }
    let mut byte = [0u8; 1];
    let _ = fifo.read(&mut byte);
    let _ = std::fs::remove_file(&path);
    run_poststart(&rec);
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

fn alive(rec: &Record) -> bool {
    !super::wait_gone(rec.pid, rec.pid_start_time, Duration::ZERO)
}

/// Poststart hooks: a failure is only a warning (the spec says the lifecycle goes on).
pub(crate) fn run_poststart(rec: &Record) {
    let hooks = rec.config.hooks().clone().unwrap_or_default();
    if let Some(h) = hooks.poststart() {
        let state = super::state::oci_state(rec, Status::Running).to_string();
        if let Err(e) = crate::hooks::run("poststart", h, &state) {
            log::warn!("{e}");
        }
    }
}
