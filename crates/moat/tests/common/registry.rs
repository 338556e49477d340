//! Debian's `docker-registry` (the reference implementation of the distribution API), started on
//! a free loopback port in a temporary directory; stopped (and its files removed) when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the registry authenticates.
pub enum Auth {
    /// Anyone may pull and push.
    None,
    /// htpasswd basic auth with one user.
    Basic {
        user: &'static str,
        password: &'static str,
    },
    /// Bearer tokens from a token server at `realm`, signed by the key whose certificate is
    /// `cert` (PEM).
    Token {
        realm: String,
        service: &'static str,
        issuer: &'static str,
        cert: PathBuf,
    },
}

pub struct Registry {
    pub addr: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        assert!(
            Path::new("/usr/bin/docker-registry").exists(),
            "docker-registry missing: run scripts/setup.sh"
        );
        let dir = tempfile::Builder::new()
            .prefix("moat-registry-")
            .tempdir()
            .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Basic { user, password } => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd (apache2-utils) missing: run scripts/setup.sh");
                assert!(out.status.success());
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, &out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: moat-test\n    path: {}\n",
                    path.display()
                )
            }
            Auth::Token {
                realm,
                service,
                issuer,
                cert,
            } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth_yaml}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut r = Registry {
            addr,
            dir,
            child: None,
        };
        r.restart();
        r
    }

    /// (Re)starts the server on the same address and data; returns when it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.addr).is_err() {
            assert!(
                Instant::now() < until,
                "registry did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL, as a crash).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `ADDR/name`.
    pub fn name(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a [`Proxy`] does to the registry's answers past its first `LIMIT` bytes on a connection.
pub const PASS: u8 = 0;
/// Cuts the next connection that goes past the limit (once), then passes again.
pub const CUT_ONCE: u8 = 1;
/// Holds every connection that goes past the limit, sending nothing, until the mode changes;
/// then closes it.
pub const STALL: u8 = 2;
const LIMIT: u64 = 256 * 1024;

/// A TCP proxy in front of a registry that can break downloads mid-stream.
pub struct Proxy {
    pub addr: String,
    pub mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    /// Set once a connection is held by [`STALL`].
    pub stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port, forwarding to `upstream` (threads live as long as the
    /// test process; each ends with its connection).
    pub fn start(upstream: &str) -> Proxy {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mode = Arc::new(AtomicU8::new(PASS));
        let stalled = Arc::new(AtomicBool::new(false));
        let (m, s, up) = (mode.clone(), stalled.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let Ok(mut server) = TcpStream::connect(&up) else {
                    continue; // registry down: the client sees its connection closed
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let (m, s) = (m.clone(), s.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    let mut sent = 0u64;
                    loop {
                        let n = match server.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if sent + n as u64 > LIMIT {
                            match m.load(Ordering::SeqCst) {
                                CUT_ONCE => {
                                    m.store(PASS, Ordering::SeqCst);
                                    break;
                                }
                                STALL => {
                                    s.store(true, Ordering::SeqCst);
                                    while m.load(Ordering::SeqCst) == STALL {
                                        std::thread::sleep(Duration::from_millis(10));
                                    }
                                    break;
                                }
                                _ => {}
                            }
                        }
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy {
            addr,
            mode,
            stalled,
        }
    }

    /// `ADDR/name` through the proxy.
    pub fn name(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }
}
