//! moat's engine: containers made from images, over the image store (`moat-image`) and the OCI
//! runtime library (`moat-runtime`): their records ([`containers`]), their directories and
//! lifecycle ([`lifecycle`]), the monitor that watches each running one ([`monitor`]) and their
//! logs ([`logs`]).

use std::path::{Path, PathBuf};

pub mod attach;
pub mod commit;
pub mod containers;
pub mod cp;
pub mod defaults;
pub mod events;
pub mod exec;
pub mod health;
pub mod hostconfig;
pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod monitor;
pub mod network;
pub mod present;
pub mod run;
pub mod seccomp;
pub mod spec;
pub mod template;
pub mod update;
pub mod vm;
pub mod volumes;

/// Where an engine keeps things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The engine root (`--root`, default `/var/lib/moat`): images, containers, the database.
    pub root: PathBuf,
    /// The runtime's state: `/run/moat/runtime` for the default root (tmpfs: gone at reboot, as
    /// the processes are), else inside the root.
    pub runtime_root: PathBuf,
}

impl Paths {
    /// The paths of the engine rooted at `root`.
    pub fn new(root: &Path) -> Paths {
        let runtime_root = if root == Path::new("/var/lib/moat") {
            PathBuf::from("/run/moat/runtime")
        } else {
            root.join("run")
        };
        Paths {
            root: root.to_path_buf(),
            runtime_root,
        }
    }

    /// The image store's root.
    pub fn images(&self) -> PathBuf {
        self.root.join("image")
    }

    /// The directory (and OCI bundle) of container `id`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
}

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
    /// no such image in the local store
    #[error("No such image: {0}")]
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
    /// container record failure
    #[error(transparent)]
    Records(#[from] containers::RecordError),
    /// a flag's value is malformed
    #[error(transparent)]
    Flag(#[from] hostconfig::FlagError),
    /// container log failure
    #[error(transparent)]
    Logs(#[from] logs::LogError),
    /// a system call failed
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The errno.
        source: nix::Error,
    },
    /// the container did not start
    #[error("failed to start the container: {0}")]
    StartFailed(String),
    /// the container is not in a state that allows the operation
    #[error("{0}")]
    Conflict(String),
    /// the container's command cannot be run
    #[error("{message}")]
    Command {
        /// What the runtime said (names the program).
        message: String,
        /// 126 or 127.
        code: i32,
    },
    /// network failure
    #[error(transparent)]
    Net(#[from] moat_net::NetError),
    /// VM isolation failure
    #[error(transparent)]
    Vm(#[from] moat_vm::VmError),
    /// what VM containers cannot do yet
    #[error("VM containers (--isolation=vm) do not support {0} yet")]
    NotForVm(&'static str),
    /// a network flag's value is malformed
    #[error(transparent)]
    NetFlag(#[from] network::NetFlagError),
    /// a healthcheck setting is malformed
    #[error(transparent)]
    Health(#[from] health::HealthError),
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

/// A socket named `name` in directory `dir`, as a path to connect to: through the directory's
/// descriptor (`/proc/self/fd/N/name`), since a socket path is limited to 108 bytes and an
/// engine root can be deep. The directory must stay open (the returned `File`) until
/// connected.
pub(crate) fn socket_in(
    dir: &std::path::Path,
    name: &str,
) -> Result<(std::fs::File, std::path::PathBuf), EngineError> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dir).map_err(|source| EngineError::Io {
        what: "open",
        path: dir.to_path_buf(),
        source,
    })?;
    let path = std::path::PathBuf::from(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()));
    Ok((d, path))
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
