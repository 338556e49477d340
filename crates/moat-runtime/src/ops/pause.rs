//! `pause` / `resume`: freeze and thaw every process of a running container (the cgroup
//! freezer), as runc does; `paused` tells whether it is frozen. Also what `top` and `stats`
//! read from the container's cgroup.

use super::{cgroup_of, OpsError, Runtime};
use crate::id::ContainerId;
use crate::state::Status;

/// Freezes a running container.
pub fn pause(rt: &Runtime, id: &ContainerId) -> Result<(), OpsError> {
    let (rec, status) = rt.lookup(id)?;
    if status != Status::Running {
        return Err(OpsError::WrongStatus {
            id: id.clone(),
            status,
            op: "pause (it is not running)",
        });
    }
    cgroup_of(&rec)?.freeze()?;
    Ok(())
}

/// Thaws a paused container.
pub fn resume(rt: &Runtime, id: &ContainerId) -> Result<(), OpsError> {
    let (rec, _) = rt.lookup(id)?;
    cgroup_of(&rec)?.thaw()?;
    Ok(())
}

/// Whether the container is frozen.
pub fn paused(rt: &Runtime, id: &ContainerId) -> bool {
    rt.lookup(id)
        .ok()
        .and_then(|(rec, _)| cgroup_of(&rec).ok())
        .is_some_and(|cg| cg.is_frozen())
}

/// The host pids of every process of the container (for `top`).
pub fn pids(rt: &Runtime, id: &ContainerId) -> Result<Vec<i32>, OpsError> {
    let (rec, _) = rt.lookup(id)?;
    Ok(cgroup_of(&rec)?.pids()?)
}

/// The container's resource usage now (for `stats`).
pub fn usage(rt: &Runtime, id: &ContainerId) -> Result<crate::cgroups::Usage, OpsError> {
    let (rec, _) = rt.lookup(id)?;
    Ok(cgroup_of(&rec)?.usage())
}

/// The container's cgroup (what `pause`, `top` and `stats` act on).
pub fn cgroup(rt: &Runtime, id: &ContainerId) -> Result<crate::cgroups::Cgroup, OpsError> {
    let (rec, _) = rt.lookup(id)?;
    cgroup_of(&rec)
}
