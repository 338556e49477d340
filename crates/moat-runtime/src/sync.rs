//! The channel between the runtime (parent) and the init chain (children): a SOCK_SEQPACKET
//! socketpair carrying one JSON message per packet, so message boundaries survive without framing.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

/// Errors of the sync channel.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// cannot create the sync socketpair
    #[error("cannot create the sync socketpair: {0}")]
    Socketpair(nix::Error),
    /// sending on the sync socket failed
    #[error("sending {what} to the other stage failed: {source}")]
    Send {
        /// Which message.
        what: &'static str,
        /// The errno.
        source: nix::Error,
    },
    /// receiving on the sync socket failed
    #[error("receiving from the other stage failed: {0}")]
    Recv(nix::Error),
    /// the other end closed
    #[error("the other stage exited before {0}")]
    Closed(&'static str),
    /// a malformed message
    #[error("malformed sync message: {0}")]
    Malformed(serde_json::Error),
}

/// Messages between the stages. Children send the first group; the parent the second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Parent → stage 1: the cgroup is joined, go on.
    Go,
    /// Stage 1 → parent: write my uid/gid maps (I am in a new user namespace).
    MapIds,
    /// Parent → stage 1: the maps are written.
    IdsMapped,
    /// Stage 1 → parent: the container's init has this host pid.
    InitPid(i32),
    /// Init → parent: run the createRuntime hooks now (namespaces exist, before pivot_root).
    RunCreateRuntimeHooks,
    /// Parent → init: hooks done.
    HooksDone,
    /// Init → parent: everything is ready; I am waiting for `start`.
    Created,
    /// Parent → init: start now (used by `run`, which needs no fifo).
    Start,
    /// Child → parent: something the user should know (an rlimit was clamped).
    Warning(String),
    /// Child → parent: a stage failed.
    Error(String),
    /// Child → parent: the user's program cannot be run (with Docker's exit code: 126 cannot
    /// be invoked, 127 not found).
    CommandError(String, i32),
}

impl Msg {
    fn name(&self) -> &'static str {
        match self {
            Msg::Go => "Go",
            Msg::MapIds => "MapIds",
            Msg::IdsMapped => "IdsMapped",
            Msg::InitPid(_) => "InitPid",
            Msg::RunCreateRuntimeHooks => "RunCreateRuntimeHooks",
            Msg::HooksDone => "HooksDone",
            Msg::Created => "Created",
            Msg::Start => "Start",
            Msg::Warning(_) => "Warning",
            Msg::Error(_) => "Error",
            Msg::CommandError(..) => "CommandError",
        }
    }
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

/// Creates both ends (close-on-exec, so the container's process never inherits them).
pub fn pair() -> Result<(Channel, Channel), SyncError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(SyncError::Socketpair)?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    /// Sends one message.
    pub fn send(&self, msg: &Msg) -> Result<(), SyncError> {
        // Serializing a plain enum of strings and integers cannot fail.
        let data = serde_json::to_vec(msg).unwrap_or_default();
        loop {
            match send(self.fd.as_raw_fd(), &data, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(source) => {
                    return Err(SyncError::Send {
                        what: msg.name(),
                        source,
                    })
                }
            }
        }
    }

    /// Receives one message; `waiting_for` names what the caller expects, for the error.
    pub fn recv(&self, waiting_for: &'static str) -> Result<Msg, SyncError> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => break n,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(SyncError::Recv(e)),
            }
        };
        if n == 0 {
            return Err(SyncError::Closed(waiting_for));
        }
        serde_json::from_slice(&buf[..n]).map_err(SyncError::Malformed)
    }

    /// The raw descriptor (kept open across the init chain's forks).
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn messages_round_trip_and_close_is_reported() {
        let (a, b) = pair().unwrap();
        a.send(&Msg::InitPid(42)).unwrap();
        a.send(&Msg::Error("boom: /x".into())).unwrap();
        assert_eq!(b.recv("pid").unwrap(), Msg::InitPid(42));
        assert_eq!(b.recv("err").unwrap(), Msg::Error("boom: /x".into()));
        drop(a);
        assert!(matches!(
            b.recv("Created"),
            Err(SyncError::Closed("Created"))
        ));
    }
}
