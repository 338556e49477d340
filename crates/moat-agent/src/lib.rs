//! moat's guest agent and its protocol.
//!
//! A VM container runs in a micro-VM whose PID 1 is this agent ([`guest`]): it mounts the
//! container's bundle shared by the host, creates the container inside the guest with
//! moat-runtime (so namespaces, capabilities, seccomp and the rest apply as in a process
//! container, now behind a guest kernel as well), relays its stdio and exit status over one
//! virtio-serial port ([`proto`]), and powers the guest off when the container is done.

pub mod guest;
pub mod proto;
