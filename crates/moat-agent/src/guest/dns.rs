//! 127.0.0.11 in the guest: user-defined networks give containers moat's embedded DNS at that
//! address, and it listens in the container's network namespace on the host, which the guest
//! cannot reach. The agent listens there instead and relays each query over the channel; the
//! host's driver asks the real responder and sends the answer back. UDP, and TCP (RFC 1035
//! 4.2.2: each message after its 2-byte length; what resolvers fall back to for a truncated
//! answer): a TCP query travels the same way, its answer is written back on its connection.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use crate::proto::{Frame, Kind};

/// Queries waiting for an answer, at most (older ones are forgotten: the client retries).
const PENDING: usize = 64;
/// TCP clients at once (more wait in the listener's backlog).
const CONNECTIONS: usize = 16;
/// The largest DNS message (its length is 16 bits).
const MAX_MESSAGE: usize = 65535;

/// Where an answer goes.
#[derive(Debug, Clone, Copy)]
enum To {
    Udp(SocketAddr),
    /// A TCP connection, by its number.
    Tcp(u32),
}

/// A TCP client: what it sent that is not a whole message yet.
#[derive(Debug)]
struct Conn {
    id: u32,
    stream: TcpStream,
    buf: Vec<u8>,
    /// It shut its side (as `nc` does at the end of its input): no more reads, answers still
    /// go; closed once none is owed.
    eof: bool,
}

/// The guest's end of the DNS relay.
#[derive(Debug)]
pub(super) struct Relay {
    sock: UdpSocket,
    tcp: Option<TcpListener>,
    conns: Vec<Conn>,
    pending: VecDeque<(u32, To)>,
    next: u32,
}

impl Relay {
    /// Listens on 127.0.0.11:53 (UDP, and TCP when it can); `None` when UDP fails (no DNS
    /// relay, nothing else breaks).
    pub(super) fn bind() -> Option<Relay> {
        let sock = UdpSocket::bind("127.0.0.11:53").ok()?;
        sock.set_nonblocking(true).ok()?;
        let tcp = TcpListener::bind("127.0.0.11:53")
            .ok()
            .filter(|l| l.set_nonblocking(true).is_ok());
        Some(Relay {
            sock,
            tcp,
            conns: vec![],
            pending: VecDeque::new(),
            next: 0,
        })
    }

    /// The descriptors to poll for reading, in the order [`Relay::ready`] takes their state.
    pub(super) fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = vec![self.sock.as_fd()];
        fds.extend(self.tcp.as_ref().map(|l| l.as_fd()));
        fds.extend(
            self.conns
                .iter()
                .filter(|c| !c.eof)
                .map(|c| c.stream.as_fd()),
        );
        fds
    }

    /// What the descriptors of [`Relay::fds`] that are ready (`ready`, same order) brought:
    /// queries, as frames for the host.
    pub(super) fn ready(&mut self, ready: &[bool]) -> Vec<Frame> {
        let mut out = vec![];
        let mut at = 0;
        if ready.first().copied().unwrap_or(false) {
            self.udp_queries(&mut out);
        }
        at += 1;
        if self.tcp.is_some() {
            if ready.get(at).copied().unwrap_or(false) {
                self.accept();
            }
            at += 1;
        }
        let mut closed = vec![];
        for (i, c) in self.conns.iter_mut().filter(|c| !c.eof).enumerate() {
            if !ready.get(at + i).copied().unwrap_or(false) {
                continue;
            }
            let mut chunk = [0u8; 4096];
            match c.stream.read(&mut chunk) {
                Ok(0) => c.eof = true,
                Err(_) => closed.push(c.id),
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
            }
            while c.buf.len() >= 2 {
                let len = u16::from_be_bytes([c.buf[0], c.buf[1]]) as usize;
                if c.buf.len() < 2 + len {
                    break;
                }
                let msg: Vec<u8> = c.buf.drain(..2 + len).skip(2).collect();
                self.next = self.next.wrapping_add(1);
                Self::remember(&mut self.pending, self.next, To::Tcp(c.id));
                out.push(Frame {
                    kind: Kind::DnsQuery,
                    stream: self.next,
                    payload: msg,
                });
            }
        }
        let pending = &self.pending;
        self.conns
            .retain(|c| !closed.contains(&c.id) && (!c.eof || Self::owed(pending, c.id)));
        out
    }

    /// Whether an answer is still owed to TCP connection `id`.
    fn owed(pending: &VecDeque<(u32, To)>, id: u32) -> bool {
        pending
            .iter()
            .any(|(_, to)| matches!(to, To::Tcp(c) if *c == id))
    }

    fn remember(pending: &mut VecDeque<(u32, To)>, id: u32, to: To) {
        if pending.len() == PENDING {
            pending.pop_front();
        }
        pending.push_back((id, to));
    }

    fn udp_queries(&mut self, out: &mut Vec<Frame>) {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            self.next = self.next.wrapping_add(1);
            Self::remember(&mut self.pending, self.next, To::Udp(from));
            out.push(Frame {
                kind: Kind::DnsQuery,
                stream: self.next,
                payload: buf[..n].to_vec(),
            });
        }
    }

    fn accept(&mut self) {
        let Some(l) = &self.tcp else {
            return;
        };
        while let Ok((stream, _)) = l.accept() {
            if self.conns.len() == CONNECTIONS {
                // Room from one that is done sending, else this one is dropped (it retries).
                match self.conns.iter().position(|c| c.eof) {
                    Some(i) => {
                        self.conns.remove(i);
                    }
                    None => continue,
                }
            }
            // Read only when poll says so; an answer is written at once, a stuck client
            // given a second at most (the agent's loop must not hang on it).
            if stream.set_nonblocking(false).is_err()
                || stream
                    .set_write_timeout(Some(Duration::from_secs(1)))
                    .is_err()
            {
                continue;
            }
            self.next = self.next.wrapping_add(1);
            self.conns.push(Conn {
                id: self.next,
                stream,
                buf: vec![],
                eof: false,
            });
        }
    }

    /// An answer from the host, to the client that asked.
    pub(super) fn answer(&mut self, f: &Frame) {
        let Some(i) = self.pending.iter().position(|(id, _)| *id == f.stream) else {
            return;
        };
        match self.pending.remove(i).map(|(_, to)| to) {
            Some(To::Udp(to)) => {
                let _ = self.sock.send_to(&f.payload, to);
            }
            Some(To::Tcp(id)) if f.payload.len() <= MAX_MESSAGE => {
                if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
                    let mut msg = (f.payload.len() as u16).to_be_bytes().to_vec();
                    msg.extend_from_slice(&f.payload);
                    let _ = c.stream.write_all(&msg);
                }
                let pending = &self.pending;
                self.conns
                    .retain(|c| c.id != id || !c.eof || Self::owed(pending, id));
            }
            _ => {}
        }
    }
}
