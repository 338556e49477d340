//! The lifecycle operations of the OCI runtime spec, one per file: [`create`], [`start`],
//! [`state`], [`kill`], [`delete`], plus [`run`] (create + start + wait + delete), [`list`] and
//! [`spec`] as runc offers them.

pub mod create;
pub mod delete;
pub mod exec;
pub mod kill;
mod launch;
pub mod list;
pub mod pause;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cgroups::{Cgroup, HostFs, Layout};
use crate::id::ContainerId;
use crate::state::{proc_start_time, Record, Status, Store};

/// Errors of the lifecycle operations.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// invalid container id
    #[error(transparent)]
    Id(#[from] crate::id::IdError),
    /// the bundle cannot be used
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    /// state store failure
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// cgroup failure
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    /// sync channel failure
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    /// console socket failure
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    /// a hook failed
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    /// the container's init reported a failure (its message, sent across the process boundary)
    #[error("container init: {0}")]
    Init(String),
    /// the exec'd process reported a failure (its message, sent across the process boundary)
    #[error("{0}")]
    ExecFailed(String),
    /// the seccomp profile cannot be compiled
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// the user's program cannot be run
    #[error("{message}")]
    Command {
        /// What the init said (names the program).
        message: String,
        /// Docker's exit code for it: 126 (cannot be invoked) or 127 (not found).
        code: i32,
    },
    /// the init chain sent a message out of order
    #[error("init chain protocol error: unexpected {got} while waiting for {expected}")]
    Protocol {
        /// The message received.
        got: String,
        /// What was expected.
        expected: &'static str,
    },
    /// the init died before start
    #[error("container {id}: init (pid {pid}) died before start")]
    InitDied {
        /// The container.
        id: ContainerId,
        /// Its pid.
        pid: i32,
    },
    /// exec without a command
    #[error("exec: no command given")]
    NoCommand,
    /// unknown capability name
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    /// malformed --user
    #[error("--user {0:?}: expected uid[:gid] (numbers)")]
    BadUser(String),
    /// malformed process file
    #[error("process file {path}: {source}")]
    ProcessFile {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// the operation does not fit the container's status
    #[error("container {id} is {status}: cannot {op}")]
    WrongStatus {
        /// The container.
        id: ContainerId,
        /// Its status.
        status: Status,
        /// The refused operation.
        op: &'static str,
    },
    /// a file operation failed
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// a process operation failed
    #[error("{what}: {source}")]
    Sys {
        /// What was being done (names the pid or signal).
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// unknown signal
    #[error("unknown signal {0:?}")]
    Signal(String),
    /// the init did not exit in time
    #[error("container {id}: pid {pid} did not exit within {secs} s after SIGKILL")]
    StillAlive {
        /// The container.
        id: ContainerId,
        /// Its init pid.
        pid: i32,
        /// How long we waited.
        secs: u64,
    },
}

/// The runtime: a state store plus the host's cgroup layout.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Where container records live (`--root`).
    pub store: Store,
}

impl Runtime {
    /// A runtime whose state lives under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime {
            store: Store::new(root),
        }
    }

    /// Compiles a seccomp profile, with the compiled programs cached under the state root
    /// (`@seccomp`: `@` is not allowed in container ids, so it never collides with one).
    pub fn seccomp(
        &self,
        spec: Option<&oci_spec::runtime::LinuxSeccomp>,
    ) -> Result<Option<crate::seccomp::Program>, OpsError> {
        let cache = self.store.root().join("@seccomp");
        spec.map(|s| crate::seccomp::Program::compile(s, Some(&cache)))
            .transpose()
            .map_err(OpsError::from)
    }

    /// Loads a record and its live status.
    pub fn lookup(&self, id: &ContainerId) -> Result<(Record, Status), OpsError> {
        let rec = self.store.load(id)?;
        let status = self.store.status(id, &rec);
        Ok((rec, status))
    }
}

/// The cgroup of a recorded container.
pub(crate) fn cgroup_of(rec: &Record) -> Result<Cgroup, OpsError> {
    Ok(Cgroup::new(Layout::detect()?, &rec.cgroup_path, HostFs)?)
}

/// Waits until `pid` (started at `start`) is gone or a zombie; false on timeout.
pub(crate) fn wait_gone(pid: i32, start: u64, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        match proc_start_time(pid) {
            Some((s, state)) if s == start && state != 'Z' && state != 'X' => {}
            _ => return true,
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Parses a signal as runc does: `KILL`, `SIGKILL` or `9`.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, OpsError> {
    use std::str::FromStr;
    let err = || OpsError::Signal(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map_err(|_| err());
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn signals_parse_in_every_spelling() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
