//! moat's OCI runtime: turns a bundle (rootfs + config.json, per the OCI runtime spec) into an
//! isolated process.
//!
//! The lifecycle operations (`create`, `start`, `state`, `kill`, `delete`, `run`) live one per file
//! under [`ops`]; the init chain that builds the container (namespaces, rootfs, process set-up) is
//! split by stage under [`init`]. Kernel access that carries logic (cgroup files) sits behind small
//! traits so it can be unit-tested without root.

pub mod bundle;
pub mod capabilities;
pub mod cgroups;
pub mod console;
pub mod hooks;
pub mod id;
pub mod init;
pub mod ops;
pub mod procinfo;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod selfclone;
pub mod state;
pub mod sync;

pub use id::ContainerId;
pub use ops::{OpsError, Runtime};
