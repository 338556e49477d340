//! `create`: build the container and leave its init blocked until `start`.

pub use super::launch::CreateOptions;
use super::launch::{launch, StartKind};
use super::{OpsError, Runtime};
use crate::id::ContainerId;

/// Creates container `id` from `opts.bundle`; returns the init's host pid.
pub fn create(rt: &Runtime, id: &ContainerId, opts: &CreateOptions) -> Result<i32, OpsError> {
    let launched = launch(rt, id, opts, StartKind::Fifo)?;
    Ok(launched.pid)
}
