//! `list`: every container the store knows, with its live status.

use super::{OpsError, Runtime};
use crate::state::Status;

/// One row of `list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    /// Container id.
    pub id: String,
    /// Init pid (0 when stopped).
    pub pid: i32,
    /// Live status.
    pub status: Status,
    /// Bundle path.
    pub bundle: std::path::PathBuf,
    /// Creation time.
    pub created: String,
    /// Owner uid.
    pub owner: u32,
}

/// All containers, sorted by id; records that cannot be read are skipped.
pub fn list(rt: &Runtime) -> Result<Vec<Entry>, OpsError> {
    let mut out = vec![];
    for id in rt.store.ids()? {
        let Ok((rec, status)) = rt.lookup(&id) else {
            continue;
        };
        out.push(Entry {
            id: rec.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                rec.pid
            },
            status,
            bundle: rec.bundle.clone(),
            created: rec.created.clone(),
            owner: rec.owner,
        });
    }
    Ok(out)
}
