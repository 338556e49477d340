//! Debian's `docker-registry` (the reference implementation of the distribution API), started on
//! a free loopback port in a temporary directory; stopped (and its files removed) when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An engine with `busybox` imported and `app` committed over it (one more layer).
pub fn engine_with_app() -> super::Engine {
    let e = super::Engine::with_busybox();
    ok(
        &e,
        &[
            "run",
            "--name",
            "mk",
            "busybox",
            "sh",
            "-c",
            "echo app-data > /app.txt",
        ],
    );
    ok(&e, &["commit", "mk", "app:v1"]);
    ok(&e, &["rm", "mk"]);
    e
}

/// `moat --root ROOT ARGS` with the engine's own Docker config directory (never the user's
/// credentials).
pub fn moat(e: &super::Engine, args: &[&str]) -> std::process::Output {
    super::output_of(
        Command::new(super::MOAT)
            .env("DOCKER_CONFIG", e.dir.path().join("docker"))
            .arg("--root")
            .arg(e.dir.path())
            .args(args),
    )
}

/// [`moat`] that must succeed; its standard output.
pub fn ok(e: &super::Engine, args: &[&str]) -> String {
    let out = moat(e, args);
    assert!(
        out.status.success(),
        "moat {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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

/// A certificate for 127.0.0.1, its key and the CA that signed it (PEM files).
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server certificate for IP 127.0.0.1 that it signed, in `dir` (openssl).
pub fn server_cert(dir: &Path) -> Cert {
    let ca = self_signed(dir, "test-ca");
    let p = |n: &str| dir.join(n).display().to_string();
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("test-ca.crt"),
        "-CAkey",
        &p("test-ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("server.ext"),
        "-out",
        &p("server.crt"),
    ]);
    Cert {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        ca: ca.cert,
    }
}

/// Makes a self-signed RSA certificate valid for IP 127.0.0.1 in `dir` (openssl).
pub fn self_signed(dir: &Path, name: &str) -> Cert {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={name}"))
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Cert {
        ca: cert.clone(),
        cert,
        key,
    }
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
        Registry::start_with(auth, None)
    }

    /// A registry serving HTTPS with `tls`'s certificate.
    pub fn start_with(auth: Auth, tls: Option<&Cert>) -> Registry {
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
        let tls_yaml = tls
            .map(|c| {
                format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    c.cert.display(),
                    c.key.display()
                )
            })
            .unwrap_or_default();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls_yaml}{auth_yaml}",
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

    /// The file holding blob `digest` (`sha256:<hex>`) in the registry's storage (the
    /// reference implementation's filesystem layout).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
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

/// A token server for the registry's bearer-token flow (Docker's distribution token spec): it
/// checks basic credentials and answers with a JWT (RS256, signed by `openssl` with a
/// self-signed certificate the registry trusts, sent in the `x5c` header) granting the scopes
/// asked for. Unknown credentials get 401.
pub struct TokenServer {
    pub realm: String,
    pub cert: Cert,
    pub service: &'static str,
    pub issuer: &'static str,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?');
                out.push(h);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    pub fn start(dir: &Path, user: &'static str, password: &'static str) -> TokenServer {
        use base64::Engine as _;
        use std::io::{BufRead, BufReader, Write};
        let cert = self_signed(dir, "token-signer");
        let pem = std::fs::read_to_string(&cert.cert).unwrap();
        let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let (service, issuer) = ("moat-test-registry", "moat-test-issuer");
        let key = cert.key.clone();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        std::thread::spawn(move || {
            let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let mut auth = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            auth = Some(v.trim().to_string());
                        }
                    }
                }
                let target = first.split_whitespace().nth(1).unwrap_or("");
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let scopes: Vec<String> = query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .filter(|(k, _)| *k == "scope")
                    .map(|(_, v)| percent_decode(v))
                    .collect();
                if auth.as_deref() != Some(expected.as_str()) {
                    let body = r#"{"details":"incorrect username or password"}"#;
                    let _ = write!(
                        conn,
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    continue;
                }
                let access: Vec<serde_json::Value> = scopes
                    .iter()
                    .flat_map(|s| s.split(' '))
                    .filter_map(|s| {
                        let mut p = s.splitn(3, ':');
                        let (t, n, a) = (p.next()?, p.next()?, p.next()?);
                        Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [der_b64]});
                let claims = serde_json::json!({
                    "iss": issuer, "sub": user, "aud": service,
                    "exp": now + 300, "nbf": now - 10, "iat": now,
                    "jti": format!("{now}-{}", access.len()), "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    url.encode(header.to_string()),
                    url.encode(claims.to_string())
                );
                let mut sign = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                sign.stdin
                    .take()
                    .unwrap()
                    .write_all(signing_input.as_bytes())
                    .unwrap();
                let sig = sign.wait_with_output().unwrap().stdout;
                let token = format!("{signing_input}.{}", url.encode(sig));
                let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer {
            realm,
            cert,
            service,
            issuer,
        }
    }

    /// The registry's auth settings for this server.
    pub fn auth(&self) -> Auth {
        Auth::Token {
            realm: self.realm.clone(),
            service: self.service,
            issuer: self.issuer,
            cert: self.cert.cert.clone(),
        }
    }
}
