//! What a pull or push reports as it goes, in Docker's words, so that a terminal can draw a
//! bar per layer, a pipe can get one line per step, and the API can send Docker's JSON
//! progress messages from the same events.

use std::fmt;

/// One step of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Queued for download.
    PullingFsLayer,
    /// Bytes received so far (the layer is unpacked as it arrives).
    Downloading {
        /// Received bytes.
        current: u64,
        /// Expected total.
        total: u64,
    },
    /// Downloaded, verified and unpacked.
    PullComplete,
    /// The layer is in the local store already.
    AlreadyExists,
    /// Push: about to check the registry.
    Preparing,
    /// Push: uploading.
    Pushing,
    /// Push: uploaded.
    Pushed,
    /// Push: the registry has it.
    LayerAlreadyExists,
    /// Push: the registry linked it from another repository.
    MountedFrom(String),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::PullingFsLayer => write!(f, "Pulling fs layer"),
            Status::Downloading { .. } => write!(f, "Downloading"),
            Status::PullComplete => write!(f, "Pull complete"),
            Status::AlreadyExists => write!(f, "Already exists"),
            Status::Preparing => write!(f, "Preparing"),
            Status::Pushing => write!(f, "Pushing"),
            Status::Pushed => write!(f, "Pushed"),
            Status::LayerAlreadyExists => write!(f, "Layer already exists"),
            Status::MountedFrom(repo) => write!(f, "Mounted from {repo}"),
        }
    }
}

/// Receives the progress of a pull or push. Called from worker threads.
pub trait Progress: Sync {
    /// A whole line (`latest: Pulling from library/busybox`, `Digest: ...`).
    fn message(&self, text: &str);
    /// A step of the layer shown as `id` (12 hex digits of its digest).
    fn layer(&self, id: &str, status: &Status);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn message(&self, _: &str) {}
    fn layer(&self, _: &str, _: &Status) {}
}
