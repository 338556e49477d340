//! `kill`: send a signal to the container's init (or, with `all`, to every process in it).

use nix::sys::signal::{kill as send, Signal};
use nix::unistd::Pid;

use super::{cgroup_of, OpsError, Runtime};
use crate::id::ContainerId;
use crate::state::Status;

/// Sends `sig` to container `id`.
pub fn kill(rt: &Runtime, id: &ContainerId, sig: Signal, all: bool) -> Result<(), OpsError> {
    let (rec, status) = rt.lookup(id)?;
    if status == Status::Stopped {
        return Err(OpsError::WrongStatus {
            id: id.clone(),
            status,
            op: "kill (it is not running)",
        });
    }
    let targets = if all {
        cgroup_of(&rec)?.pids()?
    } else {
        vec![rec.pid]
    };
    for pid in targets {
        match send(Pid::from_raw(pid), sig) {
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(e) => {
                return Err(OpsError::Sys {
                    what: format!("send {sig} to pid {pid}"),
                    source: e,
                })
            }
        }
    }
    Ok(())
}
