//! The embedded DNS responder of containers on user-defined networks, as Docker's: it answers
//! at 127.0.0.11:53 inside the container's namespace (its resolv.conf names only that), with
//! the addresses of the containers on the networks this one shares (by container name, short
//! id and `--network-alias`), and forwards every other question to the host's resolvers.
//!
//! Its sockets are bound inside the container's namespace (see `netns`) but served by a
//! helper in the host's, so forwarding reaches the host's resolvers even when they listen on
//! the host's loopback (systemd-resolved's 127.0.0.53).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use simple_dns::rdata::{RData, A};
use simple_dns::{Packet, PacketFlag, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};

/// The responder's address inside the container.
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// The responder's sockets.
#[derive(Debug)]
pub struct Sockets {
    /// UDP 127.0.0.11:53.
    pub udp: UdpSocket,
    /// TCP 127.0.0.11:53.
    pub tcp: TcpListener,
}

impl Sockets {
    /// Binds both in the calling thread's network namespace.
    pub fn bind() -> io::Result<Sockets> {
        Ok(Sockets {
            udp: UdpSocket::bind((ADDRESS, 53))?,
            tcp: TcpListener::bind((ADDRESS, 53))?,
        })
    }
}

/// Finds the addresses of a name (lower case, no trailing dot); empty: not one of ours.
pub type Lookup = Arc<dyn Fn(&str) -> Vec<Ipv4Addr> + Send + Sync>;

/// Answers of our own names live this long in caches (Docker's: 600 s; ours is short since
/// containers come and go).
const TTL: u32 = 10;

/// The reply to `query` when it asks for one of our names; `None`: forward it.
pub fn answer(query: &[u8], lookup: &Lookup) -> Option<Vec<u8>> {
    let q = Packet::parse(query).ok()?;
    let question = q.questions.first()?;
    let name = question
        .qname
        .to_string()
        .trim_end_matches('.')
        .to_lowercase();
    let addrs = lookup(&name);
    if addrs.is_empty() {
        return None;
    }
    let mut reply = Packet::new_reply(q.id());
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if q.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    reply.questions.push(question.clone());
    // A known name with no IPv6 address: an empty answer (NOERROR), not NXDOMAIN, so that
    // resolvers asking A and AAAA together keep the A answer.
    if matches!(question.qtype, QTYPE::TYPE(TYPE::A) | QTYPE::ANY) {
        for a in addrs {
            reply.answers.push(ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                TTL,
                RData::A(A {
                    address: u32::from(a),
                }),
            ));
        }
    }
    reply.build_bytes_vec().ok()
}

/// SERVFAIL for `query` (no resolver answered).
fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let q = Packet::parse(query).ok()?;
    let mut reply = Packet::new_reply(q.id());
    *reply.rcode_mut() = RCODE::ServerFailure;
    if let Some(question) = q.questions.first() {
        reply.questions.push(question.clone());
    }
    reply.build_bytes_vec().ok()
}

/// The nameservers of a resolv.conf text (port 53).
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Asks the upstream resolvers in turn (UDP, 2 s each).
fn forward(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(s) = UdpSocket::bind(bind) else {
            continue;
        };
        if s.set_read_timeout(Some(Duration::from_secs(2))).is_err()
            || s.connect(up).is_err()
            || s.send(query).is_err()
        {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        if let Ok(n) = s.recv(&mut buf) {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

fn respond(query: &[u8], lookup: &Lookup, upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    answer(query, lookup)
        .or_else(|| forward(query, upstreams))
        .or_else(|| servfail(query))
}

/// Where forwarded questions go: asked at each one (the host's resolv.conf may change).
pub type Upstreams = Arc<dyn Fn() -> Vec<SocketAddr> + Send + Sync>;

/// The resolvers of the resolv.conf at `path`, read at each call.
pub fn from_resolv_conf(path: PathBuf) -> Upstreams {
    Arc::new(move || upstreams(&std::fs::read_to_string(&path).unwrap_or_default()))
}

/// Serves both sockets on threads of their own; returns at once.
pub fn serve(sockets: Sockets, lookup: Lookup, ups: Upstreams) {
    let Sockets { udp, tcp } = sockets;
    let ups2 = ups.clone();
    let lookup2 = lookup.clone();
    let udp = Arc::new(udp);
    // Questions in flight, UDP and TCP together: a container flooding its resolver gets
    // answers dropped beyond the bound, not threads without end in the host's cgroup.
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let busy2 = busy.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let Some(slot) = Slot::take(&busy) else {
                continue;
            };
            let query = buf[..n].to_vec();
            let (udp, lookup, ups) = (udp.clone(), lookup.clone(), ups.clone());
            // A slow upstream must not hold up the container's other questions.
            std::thread::spawn(move || {
                let _slot = slot;
                if let Some(r) = respond(&query, &lookup, &ups()) {
                    let _ = udp.send_to(&r, from);
                }
            });
        }
    });
    std::thread::spawn(move || {
        for conn in tcp.incoming().flatten() {
            let Some(slot) = Slot::take(&busy2) else {
                continue;
            };
            let (lookup, ups) = (lookup2.clone(), ups2.clone());
            std::thread::spawn(move || {
                let _slot = slot;
                let _ = tcp_session(conn, &lookup, &ups());
            });
        }
    });
}

/// The most questions (or TCP sessions) answered at once.
const IN_FLIGHT: usize = 64;

/// One of the [`IN_FLIGHT`] places, given back when dropped.
struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Slot {
    fn take(busy: &Arc<std::sync::atomic::AtomicUsize>) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        let taken = busy.fetch_add(1, Ordering::AcqRel);
        if taken >= IN_FLIGHT {
            busy.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(busy.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Questions over TCP: each prefixed with its 16-bit length.
fn tcp_session(mut c: TcpStream, lookup: &Lookup, upstreams: &[SocketAddr]) -> io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    loop {
        let mut len = [0u8; 2];
        c.read_exact(&mut len)?;
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        c.read_exact(&mut q)?;
        if let Some(r) = respond(&q, lookup, upstreams) {
            let n = u16::try_from(r.len()).unwrap_or(u16::MAX);
            c.write_all(&n.to_be_bytes())?;
            c.write_all(&r[..usize::from(n)])?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{Name, Question};

    fn query(name: &str, t: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(7);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(t),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn our_names_are_answered_and_others_are_not() {
        let lookup: Lookup = Arc::new(|n: &str| {
            if n == "web" {
                vec![Ipv4Addr::new(172, 18, 0, 2)]
            } else {
                vec![]
            }
        });
        let r = answer(&query("Web.", TYPE::A), &lookup).unwrap();
        let p = Packet::parse(&r).unwrap();
        assert_eq!(p.id(), 7);
        assert_eq!(p.answers.len(), 1);
        match &p.answers[0].rdata {
            RData::A(a) => assert_eq!(Ipv4Addr::from(a.address), Ipv4Addr::new(172, 18, 0, 2)),
            other => panic!("{other:?}"),
        }
        let r = answer(&query("web", TYPE::AAAA), &lookup).unwrap();
        let p = Packet::parse(&r).unwrap();
        assert_eq!((p.rcode(), p.answers.len()), (RCODE::NoError, 0));
        assert_eq!(answer(&query("example.com", TYPE::A), &lookup), None);
        assert_eq!(answer(b"garbage", &lookup), None);
        let f = servfail(&query("example.com", TYPE::A)).unwrap();
        assert_eq!(Packet::parse(&f).unwrap().rcode(), RCODE::ServerFailure);
    }

    #[test]
    fn upstreams_from_resolv_conf() {
        let u =
            upstreams("# x\nsearch a.b\nnameserver 10.0.0.2\nnameserver ::1\noptions ndots:0\n");
        assert_eq!(
            u,
            vec!["10.0.0.2:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }
}
