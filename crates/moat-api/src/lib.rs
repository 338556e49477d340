//! moat's Docker Engine API server (`moat serve`): the API the docker CLI, docker-py and
//! docker-compose speak, over the same engine library and state as the command line.
//!
//! - [`system`]: `_ping`, `version`, `info` (version negotiation as dockerd's).
//! - [`containers`]: create, start, stop, kill, wait, remove, logs, attach (hijacked).
//! - [`images`]: list, inspect, pull and push with Docker's JSON progress, tag, remove.
//! - [`state`]: what the server keeps between requests (parked attaches, exit watches).
//!
//! Versioned paths (`/v1.50/containers/json`) are served as their unversioned form; a version
//! outside [`MIN_API_VERSION`]..=[`API_VERSION`] is refused with 400, as dockerd does.

#![recursion_limit = "256"]

pub mod archive;
pub mod containers;
mod create;
pub mod error;
pub mod events;
pub mod exec;
pub mod images;
pub mod networks;
pub mod ops;
pub mod query;
pub mod state;
mod stream;
pub mod system;
pub mod volumes;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use moat_engine::Paths;
use tower_layer::Layer;

pub use error::ApiError;

/// The newest API version served (what the docker CLI 28.x asks for).
pub const API_VERSION: &str = "1.50";
/// The oldest API version served.
pub const MIN_API_VERSION: &str = "1.24";

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `unix:///path/to.sock`.
    Unix(PathBuf),
    /// `tcp://ADDR:PORT`.
    Tcp(std::net::SocketAddr),
}

/// Why a `-H` value is refused.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// not unix:// or tcp://
    #[error("invalid -H {0:?}: expected unix:///path or tcp://ADDR:PORT")]
    Invalid(String),
}

impl FromStr for Host {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix://") {
            if p.starts_with('/') {
                return Ok(Host::Unix(PathBuf::from(p)));
            }
        }
        if let Some(a) = s.strip_prefix("tcp://") {
            if let Ok(addr) = a.trim_end_matches('/').parse() {
                return Ok(Host::Tcp(addr));
            }
        }
        Err(HostError::Invalid(s.to_string()))
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// binding or serving failed
    #[error("{what} {target}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The address or path.
        target: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Parses `1.50` into (1, 50).
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Strips `/vX.Y` (refusing versions not served) and stamps `Api-Version` on every answer.
async fn versioned(mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some((v, tail)) = rest.split_once('/') {
            if let Some(asked) = parse_version(v) {
                let newest = parse_version(API_VERSION).unwrap_or((1, 50));
                let oldest = parse_version(MIN_API_VERSION).unwrap_or((1, 24));
                if asked > newest {
                    return ApiError::BadParameter(format!(
                        "client version {v} is too new. Maximum supported API version is {API_VERSION}"
                    ))
                    .into_response();
                }
                if asked < oldest {
                    return ApiError::BadParameter(format!(
                        "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
                    ))
                    .into_response();
                }
                let pq = match req.uri().query() {
                    Some(q) => format!("/{tail}?{q}"),
                    None => format!("/{tail}"),
                };
                if let Ok(uri) = Uri::builder().path_and_query(pq).build() {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
    // With --debug, each request's time to its answer's head (profiling the clients' calls).
    let timing = log::log_enabled!(log::Level::Debug).then(|| {
        (
            req.method().clone(),
            req.uri().clone(),
            std::time::Instant::now(),
        )
    });
    let mut resp = next.run(req).await;
    if let Some((method, uri, t0)) = timing {
        log::debug!(
            "api: {method} {uri} -> {} in {:.1} ms",
            resp.status().as_u16(),
            t0.elapsed().as_secs_f64() * 1000.0
        );
    }
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("moat/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    resp
}

async fn fallback(req: Request) -> ApiError {
    ApiError::NotFound(format!("page not found: {}", req.uri().path()))
}

/// The API's routes over `state`.
pub fn router(state: Arc<state::State>) -> Router {
    use containers as c;
    Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/events", get(events::events))
        .route("/auth", post(system::auth))
        .route("/containers/json", get(c::list))
        .route("/containers/create", post(c::create))
        .route("/containers/{id}/json", get(c::inspect))
        .route("/containers/{id}/start", post(c::start))
        .route("/containers/{id}/stop", post(c::stop))
        .route("/containers/{id}/restart", post(c::restart))
        .route("/containers/{id}/kill", post(c::kill))
        .route("/containers/{id}/wait", post(c::wait))
        .route("/containers/{id}/logs", get(c::logs))
        .route("/containers/{id}/attach", post(c::attach))
        .route("/containers/{id}/resize", post(c::resize))
        .route("/containers/{id}", delete(c::remove))
        .route("/containers/{id}/exec", post(exec::create))
        .route(
            "/containers/{id}/archive",
            get(archive::get).head(archive::head).put(archive::put),
        )
        .route("/containers/{id}/top", get(ops::top))
        .route("/containers/{id}/stats", get(ops::stats))
        .route("/containers/{id}/pause", post(ops::pause))
        .route("/containers/{id}/unpause", post(ops::unpause))
        .route("/containers/{id}/rename", post(ops::rename))
        .route("/containers/{id}/update", post(ops::update))
        .route("/containers/prune", post(ops::prune))
        .route("/commit", post(ops::commit))
        .route("/images/prune", post(ops::prune_images))
        .route("/images/get", get(images::save))
        .route("/images/load", post(images::load))
        .route("/system/df", get(ops::df))
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/images/json", get(images::list))
        .route("/images/create", post(images::create))
        .route(
            "/images/{*rest}",
            get(images::get).post(images::post).delete(images::delete),
        )
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route("/volumes/prune", post(volumes::prune))
        .route(
            "/volumes/{name}",
            get(volumes::inspect).delete(volumes::remove),
        )
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route("/networks/prune", post(networks::prune))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::remove),
        )
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .fallback(fallback)
        .with_state(state)
}

/// Serves the API on `hosts` until SIGINT or SIGTERM. Blocks.
pub fn serve(paths: Paths, hosts: &[Host]) -> Result<(), ServeError> {
    // What a crashed moat left of its containers' networks goes first (reported, not fatal).
    match moat_engine::network::open(&paths).map(|mut n| n.reconcile()) {
        Ok(Ok(gone)) if !gone.is_empty() => {
            log::info!(
                "removed {} network endpoints of containers whose monitor died",
                gone.len()
            )
        }
        Ok(Err(e)) => log::warn!("network clean-up: {e}"),
        Err(e) => log::warn!("network clean-up: {e}"),
        Ok(Ok(_)) => {}
    }
    // Containers whose restart policy says they run, and which do not (a reboot), start again,
    // as dockerd does when it starts.
    match moat_engine::lifecycle::restart_after_boot(&paths) {
        Ok(tried) => {
            for (name, r) in tried {
                match r {
                    Ok(()) => log::info!("restarted {name} (restart policy)"),
                    Err(e) => log::warn!("restart {name}: {e}"),
                }
            }
        }
        Err(e) => log::warn!("restart policies: {e}"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| ServeError::Io {
            what: "start",
            target: "runtime".into(),
            source,
        })?;
    let r = rt.block_on(serve_async(paths, hosts));
    // Streams still open (logs -f, events, attach) do not hold the exit up for long.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    r
}

fn io_err(
    what: &'static str,
    target: impl std::fmt::Display,
) -> impl FnOnce(std::io::Error) -> ServeError {
    let target = target.to_string();
    move |source| ServeError::Io {
        what,
        target,
        source,
    }
}

/// Binds a unix socket at `path`: a stale socket file is replaced; mode 0660, group `moat` when
/// that group exists (as the docker group gives access to dockerd's socket).
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, ServeError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir.display()))?;
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io_err("bind", path.display())(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another server is listening there",
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = tokio::net::UnixListener::bind(path).map_err(io_err("bind", path.display()))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
    if let Some(gid) = group_id("moat") {
        let _ = nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)));
    }
    Ok(l)
}

/// A group's id from /etc/group. Not getgrnam: moat is linked statically, and glibc's NSS
/// modules loaded into a static binary crash (seen: libnss_systemd in getgrnam_r).
fn group_id(name: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
        })
}

async fn serve_async(paths: Paths, hosts: &[Host]) -> Result<(), ServeError> {
    let state = Arc::new(state::State::new(paths));
    let app = axum::middleware::from_fn(versioned).layer(router(state));
    let mut tasks = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for h in hosts {
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match h {
            Host::Unix(p) => {
                let l = bind_unix(p)?;
                let p = p.clone();
                tasks.spawn(async move {
                    let r = axum::serve(l, axum::ServiceExt::<Request>::into_make_service(app))
                        .with_graceful_shutdown(shutdown)
                        .await;
                    let _ = std::fs::remove_file(&p);
                    r.map_err(io_err("serve", p.display()))
                });
            }
            Host::Tcp(a) => {
                let l = tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(io_err("bind", a))?;
                let a = *a;
                tasks.spawn(async move {
                    axum::serve(l, axum::ServiceExt::<Request>::into_make_service(app))
                        .with_graceful_shutdown(shutdown)
                        .await
                        .map_err(io_err("serve", a))
                });
            }
        }
    }
    log::info!("API listening on {hosts:?}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io_err("handle", "SIGTERM"))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        Some(r) = tasks.join_next() => {
            if let Ok(Err(e)) = r {
                return Err(e);
            }
        }
    }
    let _ = stop_tx.send(true);
    // Graceful: requests in flight finish; endless streams are cut after a grace period.
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), drain).await;
    for h in hosts {
        if let Host::Unix(p) = h {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse() {
        assert_eq!(
            "unix:///run/moat/moat.sock".parse::<Host>().unwrap(),
            Host::Unix("/run/moat/moat.sock".into())
        );
        assert_eq!(
            "tcp://127.0.0.1:2375".parse::<Host>().unwrap(),
            Host::Tcp("127.0.0.1:2375".parse().unwrap())
        );
        assert!("unix://relative".parse::<Host>().is_err());
        assert!("http://x".parse::<Host>().is_err());
    }

    #[test]
    fn groups_are_read_from_etc_group() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-here"), None);
    }

    #[test]
    fn versions_compare() {
        assert!(parse_version("1.50").unwrap() > parse_version("1.9").unwrap());
        assert_eq!(parse_version("x"), None);
    }
}
