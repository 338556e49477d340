//! One registry, spoken to over the OCI distribution API (`/v2/`): connection (HTTPS, or plain
//! HTTP for insecure registries), authentication (anonymous, basic, or the bearer-token flow
//! announced by `WWW-Authenticate`), retries of transient failures, and the handful of calls a
//! pull and a push need.
//!
//! Lifecycle: [`Client::connect`] pings `/v2/` (learning the scheme and the auth challenge);
//! then each call is sent with the credentials its scope needs, re-authenticating once on 401.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_image::reference::DOCKER_HUB;
use moat_image::Digest;
use ureq::http::Response;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::{Agent, RequestBuilder};

use crate::credentials::Credentials;

/// The system's CA bundle (Debian's `ca-certificates`).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where per-registry CA certificates are looked for: `<dir>/<host[:port]>/*.crt`, as Docker's
/// `/etc/docker/certs.d` (which is searched too).
pub const CERTS_DIRS: &[&str] = &["/etc/moat/certs.d", "/etc/docker/certs.d"];
/// Attempts for a call that fails transiently (connection refused or reset, 5xx, 429).
const ATTEMPTS: u32 = 4;

/// Errors talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// neither HTTPS nor (when allowed) HTTP reached the registry
    #[error("registry {registry} is unreachable: {source}")]
    Unreachable {
        /// The registry.
        registry: String,
        /// The last error.
        source: ureq::Error,
    },
    /// a request failed in transport
    #[error("{method} {url}: {source}")]
    Http {
        /// The method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The error.
        source: ureq::Error,
    },
    /// the registry answered with an error status
    #[error("{method} {url}: {status} {message}")]
    Status {
        /// The method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The registry's error message.
        message: String,
    },
    /// the registry refused the credentials (or wants some)
    #[error("{registry}: unauthorized: {message}")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// What the registry or token server said.
        message: String,
    },
    /// the token server's answer was unusable
    #[error("token server {realm}: {message}")]
    Token {
        /// The realm URL.
        realm: String,
        /// What went wrong.
        message: String,
    },
    /// a CA certificate could not be read
    #[error("CA certificate {path}: {message}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// a local file to upload could not be opened
    #[error("open {path} for upload: {source}")]
    Upload {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// the registry's answer lacks something the protocol requires
    #[error("{url}: {message}")]
    Protocol {
        /// The URL.
        url: String,
        /// What is missing or wrong.
        message: String,
    },
}

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `Some(false)`: plain HTTP allowed and certificates not verified (`--tls-verify=false`);
    /// `Some(true)`: HTTPS verified even for loopback; `None`: Docker's default (verified HTTPS,
    /// except loopback registries, which may be plain HTTP).
    pub tls_verify: Option<bool>,
    /// Directories of per-registry CA certificates (default [`CERTS_DIRS`]).
    pub cert_dirs: Vec<PathBuf>,
    /// Credentials to use.
    pub credentials: Option<Credentials>,
}

/// The HTTP methods used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// A request body that can be sent again (after a 401 or a transient failure).
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// No body.
    Empty,
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A file, opened for each attempt.
    File(&'a Path),
}

/// An authentication challenge from `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`: send the credentials with every request.
    Basic,
    /// `Bearer realm=...,service=...`: get a token for each scope from `realm`.
    Bearer {
        /// The token server.
        realm: String,
        /// The service name to ask for.
        service: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header (`Bearer realm="...",service="...",scope="..."`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut map = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        map.insert(k.trim().to_ascii_lowercase(), v.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: map.remove("realm")?,
            service: map.remove("service"),
        }),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// `Authorization` values by scope (bearer tokens).
    tokens: HashMap<String, String>,
}

/// A connected registry.
#[derive(Debug, Clone)]
pub struct Client {
    agent: Agent,
    base: String,
    domain: String,
    credentials: Option<Credentials>,
    auth: Arc<Mutex<AuthState>>,
}

/// Docker treats loopback registries as insecure by default (they may speak plain HTTP).
fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    name == "localhost" || name.starts_with("127.") || name == "[::1]" || name == "::1"
}

fn load_roots(domain: &str, dirs: &[PathBuf]) -> Result<Vec<Certificate<'static>>, ClientError> {
    let mut certs = vec![];
    let mut add = |path: &Path, required: bool| -> Result<(), ClientError> {
        let pem = match std::fs::read(path) {
            Ok(p) => p,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ClientError::Cert {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
            }
        };
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => {
                    return Err(ClientError::Cert {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })
                }
            }
        }
        Ok(())
    };
    add(Path::new(SYSTEM_ROOTS), false)?;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir.join(domain)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        files.sort();
        for f in files {
            add(&f, true)?;
        }
    }
    Ok(certs)
}

fn with_headers<B>(mut rb: RequestBuilder<B>, headers: &[(&str, &str)]) -> RequestBuilder<B> {
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb
}

/// The registry's error message from a response body (`{"errors":[{"code","message"}]}`).
fn error_message(resp: &mut Response<ureq::Body>) -> String {
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        if let Some(errs) = v["errors"].as_array() {
            let parts: Vec<String> = errs
                .iter()
                .map(|e| {
                    let code = e["code"]
                        .as_str()
                        .unwrap_or("")
                        .to_ascii_lowercase()
                        .replace('_', " ");
                    match e["message"].as_str() {
                        Some(m) if !m.is_empty() && m != code => format!("{code}: {m}"),
                        _ => code,
                    }
                })
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
        if let Some(m) = v["details"].as_str().or(v["message"].as_str()) {
            return m.to_string();
        }
    }
    text.trim().chars().take(200).collect()
}

fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_)
    )
}

impl Client {
    /// Connects to the registry `domain` (`docker.io`, `host:port`).
    pub fn connect(domain: &str, opts: &ClientOptions) -> Result<Client, ClientError> {
        let host = if domain == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            domain
        };
        let insecure = match opts.tls_verify {
            Some(v) => !v,
            None => is_loopback(host),
        };
        let dirs: Vec<PathBuf> = if opts.cert_dirs.is_empty() {
            CERTS_DIRS.iter().map(PathBuf::from).collect()
        } else {
            opts.cert_dirs.clone()
        };
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&load_roots(domain, &dirs)?))
            .disable_verification(insecure)
            .build();
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .user_agent(concat!("moat/", env!("CARGO_PKG_VERSION")))
            .build();
        let mut client = Client {
            agent: Agent::new_with_config(config),
            base: format!("https://{host}"),
            domain: domain.to_string(),
            credentials: opts.credentials.clone(),
            auth: Arc::default(),
        };
        // An insecure registry may speak plain HTTP: a failed handshake is an answer, not a
        // transient failure, so HTTPS is tried once before HTTP (with retries).
        let first = client.ping(if insecure { 1 } else { ATTEMPTS });
        let resp = match first {
            Ok(r) => r,
            Err(e) if insecure => {
                client.base = format!("http://{host}");
                log::debug!("{domain}: HTTPS failed ({e}), trying plain HTTP");
                client
                    .ping(ATTEMPTS)
                    .map_err(|source| ClientError::Unreachable {
                        registry: domain.to_string(),
                        source,
                    })?
            }
            Err(source) => {
                return Err(ClientError::Unreachable {
                    registry: domain.to_string(),
                    source,
                })
            }
        };
        if resp.status() == 401 {
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge);
            if let Ok(mut a) = client.auth.lock() {
                a.challenge = challenge;
            }
        }
        Ok(client)
    }

    fn ping(&self, attempts: u32) -> Result<Response<ureq::Body>, ureq::Error> {
        let mut last = None;
        for attempt in 0..attempts {
            match self.agent.get(format!("{}/v2/", self.base)).call() {
                Ok(r) => return Ok(r),
                Err(e) if transient(&e) && attempt + 1 < attempts => {
                    backoff(attempt);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ureq::Error::ConnectionFailed))
    }

    /// The registry's domain as references name it.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether the connection is plain HTTP.
    pub fn is_plain_http(&self) -> bool {
        self.base.starts_with("http://")
    }

    /// Checks that the credentials are accepted (`login`): `/v2/` with them, through the token
    /// flow when the registry uses one.
    pub fn check_login(&self) -> Result<(), ClientError> {
        let challenge = self.auth.lock().ok().and_then(|a| a.challenge.clone());
        match challenge {
            None => Ok(()),
            Some(Challenge::Basic) => {
                let mut r = self.request(Method::Get, "/v2/", "", &[], Body::Empty)?;
                match r.status().as_u16() {
                    200..=299 => Ok(()),
                    _ => Err(ClientError::Unauthorized {
                        registry: self.domain.clone(),
                        message: error_message(&mut r),
                    }),
                }
            }
            Some(Challenge::Bearer { realm, service }) => {
                self.fetch_token(&realm, service.as_deref(), "").map(|_| ())
            }
        }
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, ClientError> {
        let terr = |message: String| ClientError::Token {
            realm: realm.to_string(),
            message,
        };
        let mut rb = self.agent.get(realm);
        if let Some(s) = service {
            rb = rb.query("service", s);
        }
        // Several scopes (a cross-repository mount) go as several parameters, as Docker sends them.
        for sc in scope.split(' ').filter(|s| !s.is_empty()) {
            rb = rb.query("scope", sc);
        }
        if let Some(c) = &self.credentials {
            rb = rb.header("Authorization", c.basic());
        }
        let mut resp = rb.call().map_err(|e| terr(e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => {
                return Err(ClientError::Unauthorized {
                    registry: self.domain.clone(),
                    message: match error_message(&mut resp) {
                        m if m.is_empty() => "incorrect username or password".to_string(),
                        m => m,
                    },
                })
            }
            s => return Err(terr(format!("{s} {}", error_message(&mut resp)))),
        }
        let v: serde_json::Value = serde_json::from_str(
            &resp
                .body_mut()
                .with_config()
                .limit(1024 * 1024)
                .read_to_string()
                .map_err(|e| terr(e.to_string()))?,
        )
        .map_err(|e| terr(format!("answer is not JSON: {e}")))?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| terr("answer has no token".to_string()))
    }

    /// The `Authorization` value for `scope`, if any is known without asking.
    fn authorization(&self, scope: &str) -> Option<String> {
        let a = self.auth.lock().ok()?;
        match &a.challenge {
            Some(Challenge::Basic) => self.credentials.as_ref().map(Credentials::basic),
            Some(Challenge::Bearer { .. }) => a.tokens.get(scope).cloned(),
            None => None,
        }
    }

    /// Answers a 401: learns the challenge and gets a token for `scope`. Returns false when
    /// there is nothing new to try.
    fn authenticate(&self, scope: &str, header: Option<&str>) -> Result<bool, ClientError> {
        let challenge = header.and_then(parse_challenge);
        let Some(challenge) = challenge else {
            return Ok(false);
        };
        let token = match &challenge {
            Challenge::Basic => None,
            Challenge::Bearer { realm, service } => {
                Some(self.fetch_token(realm, service.as_deref(), scope)?)
            }
        };
        let mut a = self.auth.lock().map_err(|_| ClientError::Protocol {
            url: self.base.clone(),
            message: "authentication state poisoned".to_string(),
        })?;
        let had_basic = matches!(a.challenge, Some(Challenge::Basic));
        a.challenge = Some(challenge.clone());
        match token {
            Some(t) => {
                a.tokens.insert(scope.to_string(), t);
                Ok(true)
            }
            // Basic: worth a retry only when credentials exist and were not sent yet.
            None => Ok(self.credentials.is_some() && !had_basic),
        }
    }

    /// Sends a request (`target` is a path under the registry or an absolute URL from a
    /// `Location`), authenticating for `scope` and retrying transient failures. Error
    /// statuses other than 401 are returned as responses for the caller to judge.
    pub fn request(
        &self,
        method: Method,
        target: &str,
        scope: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Response<ureq::Body>, ClientError> {
        let url = if target.starts_with("http://") || target.starts_with("https://") {
            target.to_string()
        } else {
            format!("{}{target}", self.base)
        };
        let mut reauthed = false;
        let mut attempt = 0;
        loop {
            let auth = self.authorization(scope);
            let mut h: Vec<(&str, &str)> = headers.to_vec();
            if let Some(a) = &auth {
                h.push(("Authorization", a));
            }
            let sent = match (method, body) {
                (Method::Get, _) => with_headers(self.agent.get(&url), &h).call(),
                (Method::Head, _) => with_headers(self.agent.head(&url), &h).call(),
                (m, b) => {
                    let rb = if m == Method::Post {
                        self.agent.post(&url)
                    } else {
                        self.agent.put(&url)
                    };
                    let rb = with_headers(rb, &h);
                    match b {
                        Body::Empty => rb.send_empty(),
                        Body::Bytes(bytes) => rb.send(bytes),
                        Body::File(p) => {
                            let f = File::open(p).map_err(|source| ClientError::Upload {
                                path: p.to_path_buf(),
                                source,
                            })?;
                            rb.send(f)
                        }
                    }
                }
            };
            let resp = match sent {
                Ok(r) => r,
                Err(e) if transient(&e) && attempt + 1 < ATTEMPTS => {
                    log::debug!("{} {url}: {e}; retrying", method.as_str());
                    backoff(attempt);
                    attempt += 1;
                    continue;
                }
                Err(source) => {
                    return Err(ClientError::Http {
                        method: method.as_str(),
                        url,
                        source,
                    })
                }
            };
            let status = resp.status().as_u16();
            if status == 401 && !reauthed {
                reauthed = true;
                let header = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if self.authenticate(scope, header.as_deref())? {
                    continue;
                }
            }
            if status == 401 {
                let mut resp = resp;
                return Err(ClientError::Unauthorized {
                    registry: self.domain.clone(),
                    message: match error_message(&mut resp) {
                        m if m.is_empty() => "authentication required".to_string(),
                        m => m,
                    },
                });
            }
            if (status >= 500 || status == 429) && attempt + 1 < ATTEMPTS {
                log::debug!("{} {url}: {status}; retrying", method.as_str());
                backoff(attempt);
                attempt += 1;
                continue;
            }
            return Ok(resp);
        }
    }

    /// An error for an unexpected status, with the registry's message.
    pub fn status_error(method: Method, url: &str, mut resp: Response<ureq::Body>) -> ClientError {
        ClientError::Status {
            method: method.as_str(),
            url: url.to_string(),
            status: resp.status().as_u16(),
            message: error_message(&mut resp),
        }
    }

    /// Fetches a manifest: its bytes and `Content-Type`.
    pub fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: &str,
        limit: u64,
    ) -> Result<(Vec<u8>, String), ClientError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let scope = pull_scope(repo);
        let mut resp = self.request(
            Method::Get,
            &path,
            &scope,
            &[("Accept", accept)],
            Body::Empty,
        )?;
        if resp.status() != 200 {
            return Err(Client::status_error(Method::Get, &path, resp));
        }
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|source| ClientError::Http {
                method: "GET",
                url: path.clone(),
                source,
            })?;
        Ok((bytes, ct))
    }

    /// Opens a blob for reading (redirects followed; the caller verifies the digest).
    pub fn get_blob(&self, repo: &str, digest: &Digest) -> Result<impl Read + use<>, ClientError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.request(Method::Get, &path, &pull_scope(repo), &[], Body::Empty)?;
        if resp.status() != 200 {
            return Err(Client::status_error(Method::Get, &path, resp));
        }
        Ok(resp.into_body().into_with_config().limit(u64::MAX).reader())
    }

    /// Whether the repository has the blob.
    pub fn has_blob(&self, repo: &str, digest: &Digest) -> Result<bool, ClientError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.request(Method::Head, &path, &push_scope(repo), &[], Body::Empty)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(Client::status_error(Method::Head, &path, resp)),
        }
    }

    /// Starts an upload, first trying to mount the blob from `from` (another repository of
    /// the same registry that has it). Returns `None` when mounted, else the upload URL.
    pub fn start_upload(
        &self,
        repo: &str,
        mount: Option<(&Digest, &str)>,
    ) -> Result<Option<String>, ClientError> {
        let (path, scope) = match mount {
            Some((d, from)) => (
                format!("/v2/{repo}/blobs/uploads/?mount={d}&from={from}"),
                format!("{} repository:{from}:pull", push_scope(repo)),
            ),
            None => (format!("/v2/{repo}/blobs/uploads/"), push_scope(repo)),
        };
        let resp = self.request(Method::Post, &path, &scope, &[], Body::Empty)?;
        match resp.status().as_u16() {
            201 if mount.is_some() => Ok(None),
            202 => {
                let loc = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| ClientError::Protocol {
                        url: path.clone(),
                        message: "upload started without a Location".to_string(),
                    })?;
                Ok(Some(loc.to_string()))
            }
            _ => Err(Client::status_error(Method::Post, &path, resp)),
        }
    }

    /// Uploads a blob from a file in one request to the upload URL `location`.
    pub fn put_blob(
        &self,
        repo: &str,
        location: &str,
        digest: &Digest,
        file: &Path,
    ) -> Result<(), ClientError> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let resp = self.request(
            Method::Put,
            &url,
            &push_scope(repo),
            &[("Content-Type", "application/octet-stream")],
            Body::File(file),
        )?;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            _ => Err(Client::status_error(Method::Put, &url, resp)),
        }
    }

    /// Puts a manifest under `reference` (a tag or its digest); returns its digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, ClientError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self.request(
            Method::Put,
            &path,
            &push_scope(repo),
            &[("Content-Type", media_type)],
            Body::Bytes(bytes),
        )?;
        match resp.status().as_u16() {
            201 | 200 => Ok(Digest::of(bytes)),
            _ => Err(Client::status_error(Method::Put, &path, resp)),
        }
    }
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(200 << attempt.min(5)));
}

/// The token scope to read a repository.
pub fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// The token scope to write a repository.
pub fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1:1/t"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn loopback_registries_are_insecure_by_default() {
        for h in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry.example:5000",
            "10.0.0.1:5000",
            "localhost.example",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
