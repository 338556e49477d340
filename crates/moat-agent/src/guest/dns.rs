//! 127.0.0.11 in the guest: user-defined networks give containers moat's embedded DNS at that
//! address, and it listens in the container's network namespace on the host, which the guest
//! cannot reach. The agent listens there instead and relays each UDP query over the channel;
//! the host's driver asks the real responder and sends the answer back.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};

use crate::proto::{Frame, Kind};

/// Queries waiting for an answer, at most (older ones are forgotten: the client retries).
const PENDING: usize = 64;

/// The guest's end of the DNS relay.
#[derive(Debug)]
pub(super) struct Relay {
    pub(super) sock: UdpSocket,
    pending: VecDeque<(u32, SocketAddr)>,
    next: u32,
}

impl Relay {
    /// Listens on 127.0.0.11:53 (UDP); `None` when that fails (no DNS relay, nothing else
    /// breaks).
    pub(super) fn bind() -> Option<Relay> {
        let sock = UdpSocket::bind("127.0.0.11:53").ok()?;
        sock.set_nonblocking(true).ok()?;
        Some(Relay {
            sock,
            pending: VecDeque::new(),
            next: 0,
        })
    }

    /// The queries that arrived, as frames for the host.
    pub(super) fn queries(&mut self) -> Vec<Frame> {
        let mut out = vec![];
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            self.next = self.next.wrapping_add(1);
            if self.pending.len() == PENDING {
                self.pending.pop_front();
            }
            self.pending.push_back((self.next, from));
            out.push(Frame {
                kind: Kind::DnsQuery,
                stream: self.next,
                payload: buf[..n].to_vec(),
            });
        }
        out
    }

    /// An answer from the host, to the client that asked.
    pub(super) fn answer(&mut self, f: &Frame) {
        if let Some(i) = self.pending.iter().position(|(id, _)| *id == f.stream) {
            if let Some((_, to)) = self.pending.remove(i) {
                let _ = self.sock.send_to(&f.payload, to);
            }
        }
    }
}
