//! moat's engine: containers made from images, over the image store (`moat-image`) and the OCI
//! runtime library (`moat-runtime`). This first slice runs a container in the foreground
//! (`moat run`); the monitor, detached containers and the container commands come next.

pub mod defaults;
pub mod run;
pub mod seccomp;
pub mod spec;

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// image store failure
    #[error(transparent)]
    Store(#[from] moat_image::StoreError),
    /// rootfs mount failure
    #[error(transparent)]
    Mount(#[from] moat_image::mount::MountError),
    /// runtime failure
    #[error(transparent)]
    Runtime(#[from] moat_runtime::OpsError),
    /// no such image locally (there is no registry to pull from yet)
    #[error("Unable to find image '{0}' locally")]
    NoImage(String),
    /// neither the image nor the command line gives a command
    #[error("no command specified: image {0} has no Cmd or Entrypoint, and none was given")]
    NoCommand(String),
    /// the user cannot be resolved
    #[error("unable to find user {0}: no matching entries in passwd file")]
    User(String),
    /// a relative working directory
    #[error("the working directory '{0}' is invalid, it needs to be an absolute path")]
    Workdir(String),
    /// the generated config is invalid
    #[error("container config: {0}")]
    Spec(String),
    /// the container's command cannot be run
    #[error("{message}")]
    Command {
        /// What the runtime said (names the program).
        message: String,
        /// 126 or 127.
        code: i32,
    },
    /// file operation failed
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl EngineError {
    /// Docker's exit code for this failure: 126/127 for a command that cannot run, 125 for
    /// moat's own failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Command { code, .. } => *code,
            _ => 125,
        }
    }
}
