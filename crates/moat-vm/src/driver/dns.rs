//! The host's end of the guest's DNS relay (see moat-agent's `guest::dns`): queries the guest
//! sent to 127.0.0.11 are asked of the embedded responder listening there in the container's
//! network namespace (the driver's own), under a transaction id of the driver's so that two
//! guest clients using the same id never get each other's answers.

use std::collections::VecDeque;
use std::net::UdpSocket;

use moat_agent::proto::{Frame, Kind};

use super::Booted;

/// Queries waiting for an answer, at most.
const PENDING: usize = 64;

/// The relay's state.
#[derive(Debug, Default)]
pub(super) struct Dns {
    pub(super) sock: Option<UdpSocket>,
    /// (our transaction id, the guest's query number, the guest client's transaction id).
    pending: VecDeque<(u16, u32, [u8; 2])>,
    next: u16,
}

impl Booted {
    /// A query from the guest, asked of the responder at 127.0.0.11:53.
    pub(super) fn dns_query(&mut self, f: Frame) {
        let mut payload = f.payload;
        if payload.len() < 12 {
            return;
        }
        let d = &mut self.dns;
        if d.sock.is_none() {
            d.sock = UdpSocket::bind("0.0.0.0:0")
                .and_then(|s| s.set_nonblocking(true).map(|_| s))
                .ok();
        }
        let Some(sock) = &d.sock else {
            return;
        };
        d.next = d.next.wrapping_add(1);
        let theirs = [payload[0], payload[1]];
        payload[..2].copy_from_slice(&d.next.to_be_bytes());
        if d.pending.len() == PENDING {
            d.pending.pop_front();
        }
        d.pending.push_back((d.next, f.stream, theirs));
        let _ = sock.send_to(&payload, "127.0.0.11:53");
    }

    /// The responder's answers, to the guest.
    pub(super) fn dns_answers(&mut self) {
        let mut buf = [0u8; 4096];
        let mut frames = vec![];
        if let Some(sock) = &self.dns.sock {
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                if n < 12 {
                    continue;
                }
                let ours = u16::from_be_bytes([buf[0], buf[1]]);
                let Some(i) = self.dns.pending.iter().position(|p| p.0 == ours) else {
                    continue;
                };
                if let Some((_, stream, theirs)) = self.dns.pending.remove(i) {
                    let mut payload = buf[..n].to_vec();
                    payload[..2].copy_from_slice(&theirs);
                    frames.push(Frame {
                        kind: Kind::DnsAnswer,
                        stream,
                        payload,
                    });
                }
            }
        }
        for f in frames {
            let _ = self.send(&f);
        }
    }
}
