//! The runtime's record of each container: `<root>/<id>/state.json`, plus the `exec.fifo` that
//! holds a created container's init until `start`.
//!
//! Creating the directory is the atomic claim on an id, so two concurrent `create`s of the same id
//! cannot both succeed. The record is written to a temporary file and renamed, so a reader never
//! sees half of it.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::id::ContainerId;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// container already exists
    #[error("container {0} already exists")]
    Exists(ContainerId),
    /// container does not exist
    #[error("container {0} does not exist")]
    NotFound(ContainerId),
    /// I/O on a state path failed
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// a state file is corrupt
    #[error("corrupt state file {path}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The lifecycle status, as the OCI runtime spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created (namespaces and rootfs in progress).
    Creating,
    /// Created: init is blocked until `start`.
    Created,
    /// The user's process runs.
    Running,
    /// The process has exited (or was never started and died).
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        })
    }
}

/// What the runtime remembers about one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The id.
    pub id: String,
    /// Host pid of the container's init.
    pub pid: i32,
    /// Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22): guards against
    /// signalling an unrelated process that reused the pid after the container died.
    pub pid_start_time: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Uid of the user who created it.
    pub owner: u32,
    /// The cgroup path used (relative to the cgroup mounts).
    pub cgroup_path: PathBuf,
    /// The config as it was at create time (hooks and cgroups must not change behind our back).
    pub config: Spec,
}

impl Record {
    /// Annotations of the config.
    pub fn annotations(&self) -> HashMap<String, String> {
        self.config.annotations().clone().unwrap_or_default()
    }
}

/// The state directory of all containers.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// A store rooted at `root` (created on first use, mode 0700).
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of one container.
    pub fn dir(&self, id: &ContainerId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// Path of the fifo a created container's init waits on.
    pub fn fifo(&self, id: &ContainerId) -> PathBuf {
        self.dir(id).join("exec.fifo")
    }

    /// Claims `id`: creates its directory, failing if it exists.
    pub fn claim(&self, id: &ContainerId) -> Result<PathBuf, StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(io(&self.root))?;
        let dir = self.dir(id);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists(id.clone()))
            }
            Err(e) => Err(io(&dir)(e)),
        }
    }

    /// Writes the record atomically.
    pub fn save(&self, id: &ContainerId, record: &Record) -> Result<(), StateError> {
        let path = self.dir(id).join("state.json");
        let tmp = self.dir(id).join(".state.json.tmp");
        let data = serde_json::to_vec(record).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&data).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Loads the record of `id`.
    pub fn load(&self, id: &ContainerId) -> Result<Record, StateError> {
        let path = self.dir(id).join("state.json");
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.clone()))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&data).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Removes the directory of `id` and everything in it.
    pub fn remove(&self, id: &ContainerId) -> Result<(), StateError> {
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&dir)(e)),
        }
    }

    /// Ids of all containers that have a state directory.
    pub fn ids(&self) -> Result<Vec<ContainerId>, StateError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io(&self.root)(e)),
        };
        let mut ids: Vec<ContainerId> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The live status of a recorded container.
    pub fn status(&self, id: &ContainerId, record: &Record) -> Status {
        match proc_start_time(record.pid) {
            Some((start, state))
                if start == record.pid_start_time && state != 'Z' && state != 'X' =>
            {
                if self.fifo(id).exists() {
                    Status::Created
                } else {
                    Status::Running
                }
            }
            _ => Status::Stopped,
        }
    }
}

/// Start time (field 22) and state letter (field 3) of a process, from /proc/PID/stat.
pub fn proc_start_time(pid: i32) -> Option<(u64, char)> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    // `rest` starts at field 3; field 22 is 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state))
}

/// Now, as RFC 3339 UTC with nanoseconds (the format runc and Docker use).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(pid: i32, start: u64) -> Record {
        Record {
            id: "c1".into(),
            pid,
            pid_start_time: start,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: now_rfc3339(),
            owner: 0,
            cgroup_path: "/moat/c1".into(),
            config: Spec::default(),
        }
    }

    #[test]
    fn claim_is_exclusive_and_remove_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().join("state"));
        let id: ContainerId = "c1".parse().unwrap();
        store.claim(&id).unwrap();
        assert!(matches!(store.claim(&id), Err(StateError::Exists(_))));
        store.save(&id, &record(1, 0)).unwrap();
        assert_eq!(store.load(&id).unwrap().pid, 1);
        assert_eq!(store.ids().unwrap(), vec![id.clone()]);
        store.remove(&id).unwrap();
        store.remove(&id).unwrap();
        assert!(matches!(store.load(&id), Err(StateError::NotFound(_))));
    }

    #[test]
    fn status_follows_the_process_and_the_fifo() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let id: ContainerId = "c1".parse().unwrap();
        store.claim(&id).unwrap();
        let me = std::process::id() as i32;
        let (start, _) = proc_start_time(me).unwrap();
        assert_eq!(store.status(&id, &record(me, start)), Status::Running);
        fs::write(store.fifo(&id), b"").unwrap();
        assert_eq!(store.status(&id, &record(me, start)), Status::Created);
        // Same pid, other start time: the pid was reused, the container is gone.
        assert_eq!(store.status(&id, &record(me, start + 1)), Status::Stopped);
        assert_eq!(store.status(&id, &record(0, 0)), Status::Stopped);
    }

    #[test]
    fn rfc3339_has_the_expected_shape() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 30, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'), "{s}");
    }
}
