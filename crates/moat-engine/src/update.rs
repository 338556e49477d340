//! `update`: a container's resource limits and restart policy changed after its creation
//! (Docker's `docker update`): kept in its OCI config for its next starts, applied to its
//! cgroup now when it runs; the restart policy goes to its record and to its monitor.

use crate::containers::{Records, Row, State};
use crate::hostconfig::{HostConfig, RestartPolicy};
use crate::{EngineError, Paths};

/// The file through which a running container's monitor learns a new restart policy (it
/// reads it when the container exits).
pub const RESTART_POLICY: &str = "restart-policy";

/// The annotation an update leaves in the container's config (when): the container no longer
/// is as it was created, which `moat apply` takes as a change by hand to undo.
pub const UPDATED: &str = "moat.updated";

/// Whether container `id` was updated since its creation.
pub fn updated(paths: &Paths, id: &str) -> bool {
    std::fs::read(paths.container_dir(id).join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|doc| doc["annotations"][UPDATED].is_string())
}

/// What `update` changes: the resources set in `host` (the rest of it is ignored), and the
/// restart policy when given.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// Memory, swap, CPUs, shares, cpuset, pids.
    pub host: HostConfig,
    /// `--restart`.
    pub restart: Option<RestartPolicy>,
}

/// Updates container `row`.
pub fn update(paths: &Paths, row: &Row, u: &Update) -> Result<(), EngineError> {
    if let Some(r) = &u.restart {
        if row.auto_remove && !matches!(r, RestartPolicy::No) {
            return Err(EngineError::Conflict(
                "Restart policy cannot be updated because AutoRemove is enabled for the container"
                    .into(),
            ));
        }
    }
    let dir = paths.container_dir(&row.id);
    let vm = crate::vm::is_vm(&dir);
    crate::spec::edit_config(&dir, |doc| {
        let before = doc["linux"]["resources"].clone();
        let mut host = u.host.clone();
        // A new memory limit keeps the swap limit already set (`run`'s "twice the memory"
        // default is for a container without one), as Docker's update does.
        if host.memory.is_some() && host.memory_swap.is_none() {
            host.memory_swap = before["memory"]["swap"].as_i64();
        }
        host.apply_resources(doc);
        let res = &doc["linux"]["resources"];
        // Docker's rule: the memory limit may not exceed the swap limit (memory + swap).
        if let (Some(m), Some(s)) = (
            res["memory"]["limit"].as_i64(),
            res["memory"]["swap"].as_i64(),
        ) {
            if s > 0 && m > s {
                return Err(EngineError::Conflict(format!(
                    "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time (memory {m}, memoryswap {s})"
                )));
            }
        }
        if *res == before {
            return Ok(false);
        }
        if vm && row.effective().0 == State::Running {
            // Its processes' cgroups are in the guest, and the VM was sized at its start.
            return Err(EngineError::NotForVm(
                "new resource limits while running (stop it, update, start it again)",
            ));
        }
        if row.effective().0 == State::Running {
            let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(res.clone())
                .map_err(|e| EngineError::Spec(e.to_string()))?;
            let rt = moat_runtime::Runtime::new(&paths.runtime_root);
            let cid = row
                .id
                .parse()
                .map_err(|e: moat_runtime::id::IdError| EngineError::Spec(e.to_string()))?;
            moat_runtime::ops::update::update(&rt, &cid, &resources)?;
        }
        doc["annotations"][UPDATED] = moat_runtime::state::now_rfc3339().into();
        Ok(true)
    })?;
    if let Some(r) = &u.restart {
        let encoded = r.encode();
        if encoded != row.restart {
            crate::spec::edit_config(&dir, |doc| {
                doc["annotations"][UPDATED] = moat_runtime::state::now_rfc3339().into();
                Ok(true)
            })?;
        }
        Records::open(&paths.root)?.set_restart(&row.id, &encoded)?;
        let p = dir.join(RESTART_POLICY);
        std::fs::write(&p, &encoded).map_err(|source| EngineError::Io {
            what: "write",
            path: p,
            source,
        })?;
    }
    crate::events::container(paths, "update", row, &[]);
    Ok(())
}
