//! What the server keeps between requests: the engine's paths, the attach streams waiting for
//! their container to start, and the exits of the containers it started.
//!
//! Lifecycle of an attach (`docker run` without `-d`): `attach` (before `start`) makes pipes
//! and parks their container ends here; `start` takes them and gives them to the monitor as
//! its standard input, output and error; the monitor's exit closes them, which ends the
//! hijacked connection. The monitor's reports (started, exited) feed an exit watch per
//! container, which `wait` reads.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use moat_engine::Paths;
use tokio::sync::watch;

/// Where a container is in its life, as far as this server saw it start and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing seen yet (created, or started by someone else).
    Unknown,
    /// Started by this server, running.
    Running,
    /// Exited with this code.
    Exited(i32),
    /// Exited with this code and removed (`AutoRemove`, or `DELETE`).
    Removed(i32),
}

/// The container ends of an attach: the monitor's standard input, output and error.
#[derive(Debug)]
pub struct Parked {
    /// Standard input (a pipe from the connection, or /dev/null).
    pub stdin: OwnedFd,
    /// Standard output.
    pub stdout: OwnedFd,
    /// Standard error (the same pipe as stdout for a terminal).
    pub stderr: OwnedFd,
    /// Whether stdin carries the client's input.
    pub open_stdin: bool,
}

/// Shared server state.
#[derive(Debug)]
pub struct State {
    /// The engine's locations.
    pub paths: Paths,
    parked: Mutex<HashMap<String, Parked>>,
    phases: Mutex<HashMap<String, watch::Sender<Phase>>>,
    /// Exec instances.
    pub execs: crate::exec::Execs,
    /// Events for `GET /events`.
    pub events: crate::events::Events,
    /// A connection to the engine's database held for the server's life (never used): with
    /// one open, every other connection — the handlers', the monitors', the command line's —
    /// finds SQLite's WAL index built instead of rebuilding it from the whole WAL.
    _keep: std::sync::Mutex<Option<moat_engine::containers::Records>>,
}

impl State {
    /// State for the engine at `paths`.
    pub fn new(paths: Paths) -> State {
        State {
            events: crate::events::Events::new(&paths.root),
            _keep: std::sync::Mutex::new(moat_engine::containers::Records::open(&paths.root).ok()),
            paths,
            parked: Mutex::default(),
            phases: Mutex::default(),
            execs: Default::default(),
        }
    }

    /// Parks an attach's container ends until the container starts (replacing an earlier one).
    pub fn park(&self, id: &str, p: Parked) {
        if let Ok(mut m) = self.parked.lock() {
            m.insert(id.to_string(), p);
        }
    }

    /// Takes the parked attach of a container, if any.
    pub fn unpark(&self, id: &str) -> Option<Parked> {
        self.parked.lock().ok()?.remove(id)
    }

    /// The phase watch of a container (made on first use).
    pub fn phase(&self, id: &str) -> watch::Receiver<Phase> {
        let Ok(mut m) = self.phases.lock() else {
            return watch::channel(Phase::Unknown).1;
        };
        m.entry(id.to_string())
            .or_insert_with(|| watch::channel(Phase::Unknown).0)
            .subscribe()
    }

    /// Records a container's new phase (waking its waiters).
    pub fn set_phase(&self, id: &str, phase: Phase) {
        if let Ok(mut m) = self.phases.lock() {
            m.entry(id.to_string())
                .or_insert_with(|| watch::channel(Phase::Unknown).0)
                .send_replace(phase);
        }
    }

    /// Forgets a container's phase once nobody waits for it any more.
    pub fn forget(&self, id: &str) {
        if let Ok(mut m) = self.phases.lock() {
            if m.get(id).is_some_and(|s| s.receiver_count() == 0) {
                m.remove(id);
            }
        }
    }
}
