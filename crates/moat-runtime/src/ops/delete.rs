//! `delete`: remove a stopped (or, with force, any) container: its processes, cgroup and record,
//! then the poststop hooks.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{cgroup_of, wait_gone, OpsError, Runtime};
use crate::id::ContainerId;
use crate::state::{Record, Status};

/// Deletes container `id`. A created container is deleted too (its init never ran the user's
/// program); a running one only with `force`.
pub fn delete(rt: &Runtime, id: &ContainerId, force: bool) -> Result<(), OpsError> {
    let (rec, status) = rt.lookup(id)?;
    log::debug!("delete {id}: looked up");
    if status == Status::Running && !force {
        return Err(OpsError::WrongStatus {
            id: id.clone(),
            status,
            op: "delete (stop it first, or use --force)",
        });
    }
    // A stopped init can leave processes behind when the container has no pid namespace of its
    // own (they are not killed with it): they go too, or the cgroup could never be removed.
    let shared_pid_ns = !crate::bundle::namespaces(&rec.config)
        .iter()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none());
    if status != Status::Stopped || force || shared_pid_ns {
        stop_all(id, &rec)?;
    }
    destroy(rt, id, &rec)
}

/// Kills every process of the container and waits for the init to go.
fn stop_all(id: &ContainerId, rec: &Record) -> Result<(), OpsError> {
    let cg = cgroup_of(rec)?;
    // Freeze first so nothing forks between listing and killing.
    let frozen = cg.freeze().is_ok();
    let _ = kill(Pid::from_raw(rec.pid), Signal::SIGKILL);
    for p in cg.pids().unwrap_or_default() {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    if frozen {
        let _ = cg.thaw();
    }
    // Wait for every process of the cgroup, not only the init: rmdir needs it empty.
    for _ in 0..1000 {
        if cg.pids().map(|p| p.is_empty()).unwrap_or(true) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !wait_gone(rec.pid, rec.pid_start_time, Duration::from_secs(10)) {
        return Err(OpsError::StillAlive {
            id: id.clone(),
            pid: rec.pid,
            secs: 10,
        });
    }
    Ok(())
}

/// Removes the cgroup and the record, then runs the poststop hooks (failures only warn, as the
/// spec asks).
pub(crate) fn destroy(rt: &Runtime, id: &ContainerId, rec: &Record) -> Result<(), OpsError> {
    cgroup_of(rec)?.destroy()?;
    log::debug!("delete {id}: cgroup removed");
    rt.store.remove(id)?;
    let hooks = rec.config.hooks().clone().unwrap_or_default();
    if let Some(h) = hooks.poststop() {
        let state = super::state::oci_state(rec, Status::Stopped).to_string();
        if let Err(e) = crate::hooks::run("poststop", h, &state) {
            log::warn!("{e}");
        }
    }
    Ok(())
}
