//! `state`: the OCI state document of one container.

use serde_json::{json, Value};

use super::{OpsError, Runtime};
use crate::id::ContainerId;
use crate::state::{Record, Status};

/// The state document as runc prints it (the OCI fields plus rootfs, created and owner).
pub fn oci_state(rec: &Record, status: Status) -> Value {
    json!({
        "ociVersion": "1.2.0",
        "id": rec.id,
        "pid": if status == Status::Stopped { 0 } else { rec.pid },
        "status": status.to_string(),
        "bundle": rec.bundle,
        "rootfs": rec.rootfs,
        "created": rec.created,
        "owner": if rec.owner == 0 { "root".to_string() } else { rec.owner.to_string() },
        "annotations": rec.annotations(),
    })
}

/// The state of container `id`.
pub fn state(rt: &Runtime, id: &ContainerId) -> Result<Value, OpsError> {
    let (rec, status) = rt.lookup(id)?;
    Ok(oci_state(&rec, status))
}
