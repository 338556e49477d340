//! The user-space proxy of published ports, as Docker's `docker-proxy`: it holds the host's
//! port (so two containers cannot publish the same one, and a port some other program holds
//! is refused at start), and carries the connections the DNAT rules cannot: those to the
//! host's loopback addresses, which never pass the nat hooks in a way DNAT can rewrite.
//! Connections from elsewhere are DNAT'ed by the kernel and never reach it.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A bound published port.
#[derive(Debug)]
pub enum Listener {
    /// A TCP port.
    Tcp(TcpListener),
    /// A UDP port.
    Udp(UdpSocket),
}

impl Listener {
    /// Binds `proto` port `port` (0: the kernel picks) on `addr`.
    pub fn bind(proto: &str, addr: Ipv4Addr, port: u16) -> io::Result<Listener> {
        let at = SocketAddrV4::new(addr, port);
        match proto {
            "udp" => UdpSocket::bind(at).map(Listener::Udp),
            _ => TcpListener::bind(at).map(Listener::Tcp),
        }
    }

    /// Binds a port that other listeners of the same group hold too (`SO_REUSEPORT`: the
    /// kernel spreads new connections over them). With `net.ipv4.tcp_migrate_req` set (done
    /// here, best effort) connections waiting in a closing listener's queue move to another
    /// one rather than being reset, so a replica leaving the group drops none.
    ///
    /// `listen`: take connections at once; otherwise a TCP port is bound (reserved) but joins
    /// its group only at [`Listener::start_listening`].
    pub fn bind_shared(
        proto: &str,
        addr: Ipv4Addr,
        port: u16,
        listen: bool,
    ) -> io::Result<Listener> {
        use socket2::{Domain, Protocol, Socket, Type};
        let (ty, p) = match proto {
            "udp" => (Type::DGRAM, Protocol::UDP),
            _ => (Type::STREAM, Protocol::TCP),
        };
        let s = Socket::new(Domain::IPV4, ty.cloexec(), Some(p))?;
        s.set_reuse_port(true)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddrV4::new(addr, port).into())?;
        if proto == "udp" {
            return Ok(Listener::Udp(s.into()));
        }
        let _ = std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1");
        if listen {
            s.listen(BACKLOG)?;
        }
        Ok(Listener::Tcp(s.into()))
    }

    /// Listens on a bound TCP port (again, after [`Listener::stop_accepting`]).
    pub fn start_listening(&self) -> io::Result<()> {
        if let Listener::Tcp(l) = self {
            // SAFETY: listen on the listener's own open descriptor.
            if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(l), BACKLOG) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Stops taking new connections (a shared port's replica leaving the group): the accept
    /// loop ends; connections already carried go on.
    pub fn stop_accepting(&self) {
        if let Listener::Tcp(l) = self {
            // SAFETY: shutdown on the listener's own open descriptor.
            unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(l), libc::SHUT_RD) };
        }
    }

    /// A second handle on the same socket.
    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Udp(s) => Listener::Udp(s.try_clone()?),
        })
    }

    /// The port it is bound to.
    pub fn port(&self) -> u16 {
        let a = match self {
            Listener::Tcp(l) => l.local_addr(),
            Listener::Udp(s) => s.local_addr(),
        };
        a.map_or(0, |a| a.port())
    }
}

/// The listen backlog of a shared port.
const BACKLOG: i32 = 1024;

/// How long a UDP flow with no traffic is kept (Docker's proxy: 90 s).
const UDP_IDLE: Duration = Duration::from_secs(90);

/// Serves `listener`, forwarding to `to`, on threads of its own; returns at once.
pub fn serve(listener: Listener, to: SocketAddrV4) {
    match listener {
        Listener::Tcp(l) => {
            std::thread::spawn(move || loop {
                match l.accept() {
                    Ok((conn, _)) => {
                        std::thread::spawn(move || tcp(conn, to));
                    }
                    // Shut down (see `stop_accepting`): no longer listening.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                    Err(_) => {}
                }
            });
        }
        Listener::Udp(s) => {
            std::thread::spawn(move || udp(s, to));
        }
    }
}

fn tcp(client: TcpStream, to: SocketAddrV4) {
    let Ok(upstream) = TcpStream::connect_timeout(&to.into(), Duration::from_secs(10)) else {
        return;
    };
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let (mut c, mut u) = (client, upstream);
    let _ = io::copy(&mut u, &mut c);
    let _ = c.shutdown(Shutdown::Write);
    let _ = up.join();
}

fn udp(socket: UdpSocket, to: SocketAddrV4) {
    let socket = Arc::new(socket);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            return;
        };
        let existing = flows.lock().ok().and_then(|f| f.get(&from).cloned());
        let flow = match existing {
            Some(f) => f,
            None => {
                let Ok(up) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
                    continue;
                };
                if up.connect(to).is_err() || up.set_read_timeout(Some(UDP_IDLE)).is_err() {
                    continue;
                }
                let up = Arc::new(up);
                if let Ok(mut f) = flows.lock() {
                    f.insert(from, up.clone());
                }
                let (back, up2, flows2) = (socket.clone(), up.clone(), flows.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    // Replies go back to the client until the flow idles out.
                    while let Ok(n) = up2.recv(&mut buf) {
                        let _ = back.send_to(&buf[..n], from);
                    }
                    if let Ok(mut f) = flows2.lock() {
                        f.remove(&from);
                    }
                });
                up
            }
        };
        let _ = flow.send(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn tcp_and_udp_are_carried_both_ways() {
        // Echo servers on loopback stand for the container's ports.
        let tcp_echo = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let tcp_to = match tcp_echo.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        std::thread::spawn(move || {
            let (mut c, _) = tcp_echo.accept().unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            c.write_all(&buf).unwrap();
        });
        let udp_echo = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let udp_to = match udp_echo.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, from) = udp_echo.recv_from(&mut buf).unwrap();
            udp_echo.send_to(&buf[..n], from).unwrap();
        });
        let t = Listener::bind("tcp", Ipv4Addr::LOCALHOST, 0).unwrap();
        let u = Listener::bind("udp", Ipv4Addr::LOCALHOST, 0).unwrap();
        let (tp, up) = (t.port(), u.port());
        assert!(tp > 0 && up > 0);
        // A port in use is refused at bind, before anything starts.
        assert!(Listener::bind("tcp", Ipv4Addr::LOCALHOST, tp).is_err());
        serve(t, tcp_to);
        serve(u, udp_to);
        let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, tp)).unwrap();
        c.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello");
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(b"ping", (Ipv4Addr::LOCALHOST, up)).unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
    }
}
