//! moat's OCI runtime: turns a bundle (rootfs + config.json, per the OCI runtime spec) into an
//! isolated process.
//!
//! The lifecycle operations (`create`, `start`, `state`, `kill`, `delete`, `run`) live one per file
//! under [`ops`]; the init chain that builds the container (namespaces, rootfs, process set-up) is
//! split by stage under [`init`]. Kernel access that carries logic (cgroup files) sits behind small
//! traits so it can be unit-tested without root.

pub mod cgroups;
pub mod seccomp;
