//! `update`: new resource limits for a created or running container's cgroup, as `runc
//! update` sets them; what the resources do not name stays as it is.

use oci_spec::runtime::LinuxResources;

use super::{cgroup_of, OpsError, Runtime};
use crate::id::ContainerId;
use crate::state::Status;

/// Applies `res` to container `id`'s cgroup.
pub fn update(rt: &Runtime, id: &ContainerId, res: &LinuxResources) -> Result<(), OpsError> {
    let (rec, status) = rt.lookup(id)?;
    if !matches!(status, Status::Running | Status::Created) {
        return Err(OpsError::WrongStatus {
            id: id.clone(),
            status,
            op: "update (it is not running)",
        });
    }
    cgroup_of(&rec)?.apply(res)?;
    Ok(())
}
