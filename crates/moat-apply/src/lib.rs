//! `moat apply`: a Compose-specification file as the desired state of a project, planned
//! against what runs and converged through the engine.
//!
//! `compose` parses and checks the file (interpolated by `interpolate`); `plan` compares it
//! with the project's containers, networks and volumes and carries out the difference;
//! `rollout` replaces a changed service's containers as a rolling update.

pub mod compose;
pub mod files;
pub mod interpolate;
pub mod plan;
pub mod reconcile;
pub mod revisions;
pub mod rollout;
pub mod values;

pub use compose::{ComposeError, ComposeFile};
pub use plan::{execute, plan, Action, PlanError};

/// The project's name when the file names none: the file's directory, lowercased, with what
/// Docker does not allow removed (docker-compose's rule).
pub fn default_project(file: &std::path::Path) -> String {
    let dir = std::fs::canonicalize(file)
        .ok()
        .and_then(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "default".into());
    let name: String = dir
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    if name.is_empty() {
        "default".into()
    } else {
        name
    }
}
