//! The container endpoints: list, create, inspect, start, stop, restart, kill, wait, remove,
//! logs, attach, resize.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State as Ext};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use moat_engine::containers::{Records, Row, State as CState};
use moat_engine::lifecycle::{self, Attach};
use moat_engine::monitor::Event;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{blocking, ApiError};
pub use crate::query::flag;
use crate::state::{Parked, Phase, State};
use crate::stream;

type St = Ext<Arc<State>>;

/// The container named `what` (id, name or unique id prefix).
pub async fn find(st: &Arc<State>, what: &str) -> Result<Row, ApiError> {
    let root = st.paths.root.clone();
    let what = what.to_string();
    blocking(move || Ok(Records::open(&root)?.find(&what)?)).await
}

/// `GET /containers/json`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    all: Option<String>,
    filters: Option<String>,
}

pub async fn list(Ext(st): St, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let filters = crate::query::filters(q.filters.as_deref())?;
    let values = |k: &str| filters.get(k).cloned().unwrap_or_default();
    let (status, names, ids, labels) = (
        values("status"),
        values("name"),
        values("id"),
        values("label"),
    );
    let all = flag(&q.all) || !status.is_empty();
    let st2 = st.clone();
    let list = blocking(move || {
        let mut rows = Records::open(&st2.paths.root)?.all()?;
        rows.sort_by(|a, b| b.created.cmp(&a.created));
        let ports = moat_engine::network::published(&st2.paths);
        Ok(rows
            .iter()
            .filter(|r| all || r.effective().0 == CState::Running)
            .map(|r| moat_engine::present::summary(&st2.paths, r, &ports))
            .collect::<Vec<Value>>())
    })
    .await?;
    let keep = |c: &Value| {
        let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
        (status.is_empty() || status.contains(&s("State")))
            && (names.is_empty()
                || names.iter().any(|n| {
                    c["Names"][0].as_str().is_some_and(|have| {
                        have.trim_start_matches('/')
                            .contains(n.trim_start_matches('/'))
                    })
                }))
            && (ids.is_empty() || ids.iter().any(|i| s("Id").starts_with(i.as_str())))
            && labels.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => c["Labels"][k].as_str() == Some(v),
                None => !c["Labels"][l.as_str()].is_null(),
            })
    };
    Ok(Json(Value::Array(list.into_iter().filter(keep).collect())))
}

/// `POST /containers/create`.
#[derive(Debug, Deserialize)]
pub struct CreateQuery {
    name: Option<String>,
}

pub async fn create(
    Ext(st): St,
    Query(q): Query<CreateQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (opts, extras, warnings) = crate::create::options(&body, q.name.filter(|n| !n.is_empty()))?;
    let paths = st.paths.clone();
    let row = blocking(move || Ok(moat_engine::run::create(&paths, &opts, &extras)?)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": row.id, "Warnings": warnings})),
    ))
}

/// `GET /containers/{id}/json`.
pub async fn inspect(Ext(st): St, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let row = find(&st, &id).await?;
    let paths = st.paths.clone();
    Ok(Json(
        blocking(move || Ok(moat_engine::inspect::container(&paths, &row))).await?,
    ))
}

/// Follows a started container's monitor reports into its phase (for `wait`).
fn watch_exits(st: Arc<State>, row: Row, mut handle: moat_engine::monitor::Handle) {
    while let Some(ev) = handle.next_event() {
        match ev {
            Event::Started(_) => st.set_phase(&row.id, Phase::Running),
            // The monitor reports the exit after cleaning up: an --rm container is gone.
            Event::Exited(code) if row.auto_remove => st.set_phase(&row.id, Phase::Removed(code)),
            Event::Exited(code) => st.set_phase(&row.id, Phase::Exited(code)),
            Event::Failed(code, _) => st.set_phase(&row.id, Phase::Exited(code)),
            // Only a CLI's terminal types detach keys; the API's attach streams go on.
            Event::Detached => {}
        }
    }
    st.forget(&row.id);
}

/// Starts `row`, attached to its parked attach streams if an attach came first.
async fn start_row(st: &Arc<State>, row: Row) -> Result<(), ApiError> {
    let parked = st.unpark(&row.id);
    let st2 = st.clone();
    blocking(move || {
        let paths = &st2.paths;
        let started = match &parked {
            Some(p) => lifecycle::start_streams(
                paths,
                &row,
                p.open_stdin,
                [
                    p.stdin.as_raw_fd(),
                    p.stdout.as_raw_fd(),
                    p.stderr.as_raw_fd(),
                ],
            ),
            None => lifecycle::start(paths, &row, Attach::Detached),
        };
        // Our copies of the attach ends go now: the connection ends when the monitor's do.
        drop(parked);
        let (handle, _pid) = started?;
        st2.set_phase(&row.id, Phase::Running);
        let st3 = st2.clone();
        std::thread::spawn(move || watch_exits(st3, row, handle));
        Ok(())
    })
    .await
}

/// `POST /containers/{id}/start`: 204, or 304 when it runs already.
pub async fn start(Ext(st): St, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let row = find(&st, &id).await?;
    if row.effective().0 == CState::Running {
        return Ok(StatusCode::NOT_MODIFIED);
    }
    start_row(&st, row).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?t=SECONDS&signal=SIG` of stop and restart.
#[derive(Debug, Deserialize)]
pub struct StopQuery {
    t: Option<i64>,
    signal: Option<String>,
}

async fn stop_row(st: &Arc<State>, row: &Row, q: &StopQuery) -> Result<(), ApiError> {
    let paths = st.paths.clone();
    let row = row.clone();
    let (t, sig) = (q.t, q.signal.clone());
    blocking(move || {
        let (default_sig, default_timeout) = lifecycle::stop_settings(&paths, &row);
        let sig = moat_runtime_signal(sig.as_deref().unwrap_or(&default_sig))?;
        let timeout = match t {
            Some(t) if t >= 0 => Duration::from_secs(t as u64),
            _ => default_timeout,
        };
        Ok(lifecycle::stop(&paths, &row, sig, timeout)?)
    })
    .await
}

fn moat_runtime_signal(s: &str) -> Result<nix::sys::signal::Signal, ApiError> {
    moat_runtime::ops::parse_signal(s).map_err(|e| ApiError::BadParameter(e.to_string()))
}

/// `POST /containers/{id}/stop`: 204, or 304 when not running.
pub async fn stop(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<StatusCode, ApiError> {
    let row = find(&st, &id).await?;
    if row.effective().0 != CState::Running {
        return Ok(StatusCode::NOT_MODIFIED);
    }
    stop_row(&st, &row, &q).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/restart`.
pub async fn restart(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<StatusCode, ApiError> {
    let row = find(&st, &id).await?;
    if row.effective().0 == CState::Running {
        stop_row(&st, &row, &q).await?;
    }
    let row = find(&st, &id).await?;
    start_row(&st, row).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?signal=SIG` of kill.
#[derive(Debug, Deserialize)]
pub struct KillQuery {
    signal: Option<String>,
}

/// `POST /containers/{id}/kill`: 204; 409 when not running.
pub async fn kill(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<KillQuery>,
) -> Result<StatusCode, ApiError> {
    let row = find(&st, &id).await?;
    if row.effective().0 != CState::Running {
        return Err(ApiError::Conflict(format!(
            "Cannot kill container: {id}: container {} is not running",
            row.id
        )));
    }
    let sig = moat_runtime_signal(q.signal.as_deref().unwrap_or("SIGKILL"))?;
    let paths = st.paths.clone();
    let r = row.clone();
    blocking(move || Ok(lifecycle::kill(&paths, &r, sig)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?force=1&v=1` of remove.
#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    force: Option<String>,
    v: Option<String>,
}

/// `DELETE /containers/{id}`.
pub async fn remove(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let row = find(&st, &id).await?;
    let (force, volumes) = (flag(&q.force), flag(&q.v));
    let paths = st.paths.clone();
    let r = row.clone();
    blocking(move || Ok(lifecycle::remove(&paths, &r, force, volumes)?)).await?;
    st.set_phase(&row.id, Phase::Removed(row.exit_code));
    st.forget(&row.id);
    Ok(StatusCode::NO_CONTENT)
}

/// `?condition=not-running|next-exit|removed` of wait.
#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    condition: Option<String>,
}

/// `POST /containers/{id}/wait`: the headers go at once (the wait is registered: a client may
/// start the container next), the body `{"StatusCode": N}` when the condition holds.
pub async fn wait(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let row = find(&st, &id).await?;
    let mut rx = st.phase(&row.id);
    let seen = *rx.borrow_and_update();
    let condition = q.condition.unwrap_or_else(|| "not-running".into());
    if !["not-running", "next-exit", "removed"].contains(&condition.as_str()) {
        return Err(ApiError::BadParameter(format!(
            "invalid condition: {condition:?}"
        )));
    }
    let root = st.paths.root.clone();
    let (tx, rx_body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        let code = wait_for(&root, &row, &condition, seen, &mut rx).await;
        let body = json!({"StatusCode": code, "Error": null}).to_string() + "\n";
        let _ = tx.send(Ok(Bytes::from(body))).await;
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx_body)),
    )
        .into_response())
}

/// Waits for `condition`: from this server's phase watch when it started the container, else
/// by polling the record (a container started by the command line).
async fn wait_for(
    root: &std::path::Path,
    row: &Row,
    condition: &str,
    seen: Phase,
    rx: &mut tokio::sync::watch::Receiver<Phase>,
) -> i32 {
    let first_finish = row.finished_at.clone();
    // (The monitor records `running` before it reports the start, so once `start` answered,
    // the record says so.) The recorded state, not `effective()`: a container that exits at
    // once may have its exit recorded and its monitor gone between the caller's read of the
    // row and this check, and that row holds no exit code yet (docker-py's `run` of a
    // command exiting 3 was once told 0) — the loop below reads the record again.
    if condition == "not-running" && row.state != CState::Running {
        return row.exit_code;
    }
    loop {
        let now = *rx.borrow();
        match (condition, now) {
            ("removed", Phase::Removed(c)) => return c,
            ("removed", _) => {}
            (_, Phase::Exited(c) | Phase::Removed(c))
                if now != seen || condition == "not-running" =>
            {
                return c
            }
            _ => {}
        }
        let root2 = root.to_path_buf();
        let id = row.id.clone();
        let current = tokio::task::spawn_blocking(move || Records::open(&root2)?.get(&id))
            .await
            .ok()
            .and_then(Result::ok);
        match current {
            // Gone: removed (its exit code known only if this server saw the exit).
            Some(None) => return row.exit_code.max(now_code(now)),
            Some(Some(r))
                if condition != "removed"
                    && r.effective().0 == CState::Exited
                    && (r.finished_at != first_finish || condition == "not-running") =>
            {
                return r.exit_code
            }
            _ => {}
        }
        tokio::select! {
            _ = rx.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

fn now_code(p: Phase) -> i32 {
    match p {
        Phase::Exited(c) | Phase::Removed(c) => c,
        _ => 0,
    }
}

/// `GET /containers/{id}/logs` query.
#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    stdout: Option<String>,
    stderr: Option<String>,
    follow: Option<String>,
    timestamps: Option<String>,
    tail: Option<String>,
    since: Option<String>,
}

/// `GET /containers/{id}/logs`: multiplexed frames (raw for a terminal), followed with `follow`.
pub async fn logs(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let row = find(&st, &id).await?;
    let (want_out, want_err) = (flag(&q.stdout), flag(&q.stderr));
    let (follow, timestamps) = (flag(&q.follow), flag(&q.timestamps));
    let tail: Option<usize> = q.tail.as_deref().and_then(|t| t.parse().ok());
    let since: i64 = q
        .since
        .as_deref()
        .and_then(|s| s.split('.').next()?.parse().ok())
        .unwrap_or(0);
    let path = moat_engine::logs::path(&st.paths.container_dir(&row.id), &row.id);
    let root = st.paths.root.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let tty = row.tty;
    tokio::task::spawn_blocking(move || {
        let frame = |e: &moat_engine::logs::Entry| -> Option<Bytes> {
            let is_err = e.stream == "stderr";
            if (is_err && !want_err) || (!is_err && !want_out) {
                return None;
            }
            if since > 0 && moat_engine::present::parse_rfc3339(&e.time).unwrap_or(0) < since {
                return None;
            }
            let mut text = Vec::new();
            if timestamps {
                text.extend_from_slice(e.time.as_bytes());
                text.push(b' ');
            }
            text.extend_from_slice(e.log.as_bytes());
            Some(Bytes::from(if tty {
                text
            } else {
                stream::frame(if is_err { 2 } else { 1 }, &text)
            }))
        };
        // Opened once and kept: the follower reads to the end even if the log is removed.
        let mut file = std::fs::File::open(&path).ok();
        let read = |f: &Option<std::fs::File>, off: u64| match f {
            Some(f) => moat_engine::logs::read_open(f, &path, off).unwrap_or((vec![], off)),
            None => (vec![], off),
        };
        let (mut entries, mut offset) = read(&file, 0);
        if let Some(n) = tail {
            let skip = entries.len().saturating_sub(n);
            entries.drain(..skip);
        }
        for e in &entries {
            if let Some(b) = frame(e) {
                if tx.blocking_send(Ok(b)).is_err() {
                    return;
                }
            }
        }
        if !follow {
            return;
        }
        loop {
            let running = Records::open(&root)
                .ok()
                .and_then(|r| r.get(&row.id).ok().flatten())
                .is_some_and(|r| r.effective().0 == CState::Running);
            if file.is_none() {
                file = std::fs::File::open(&path).ok();
            }
            let (more, next) = read(&file, offset);
            offset = next;
            for e in &more {
                if let Some(b) = frame(e) {
                    if tx.blocking_send(Ok(b)).is_err() {
                        return;
                    }
                }
            }
            if !running && more.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let ct = if tty {
        stream::RAW
    } else {
        stream::MULTIPLEXED
    };
    Ok((
        [(header::CONTENT_TYPE, ct)],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

/// `POST /containers/{id}/attach` query.
#[derive(Debug, Deserialize)]
pub struct AttachQuery {
    stdin: Option<String>,
    stream: Option<String>,
}

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), ApiError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| ApiError::Sys {
        what: "pipe",
        source,
    })
}

/// `POST /containers/{id}/attach`: the connection is hijacked (`101 UPGRADED`, `Upgrade:
/// tcp`) and carries the container's output (multiplexed frames, raw for a terminal) and,
/// with `stdin=1`, the client's input. Before start (as `docker run` and `docker start -a`
/// attach), the container's stdio is parked for the start; a running container is reached
/// through its monitor's attach socket. The streams end when the container's monitor does.
pub async fn attach(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<AttachQuery>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let row = find(&st, &id).await?;
    if !flag(&q.stream) {
        return Err(ApiError::BadParameter(
            "attach without stream=1 (logs only) is not supported: use GET /containers/{id}/logs"
                .into(),
        ));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    if row.effective().0 == CState::Running {
        // The monitor's attach socket already speaks Docker's stream format: bytes pass as
        // they are, both ways.
        let paths = st.paths.clone();
        let tty = row.tty;
        let conn = blocking(move || Ok(moat_engine::attach::connect(&paths, &row)?)).await?;
        let conn = conn
            .set_nonblocking(true)
            .and_then(|_| tokio::net::UnixStream::from_std(conn))
            .map_err(|e| ApiError::Sys {
                what: "attach socket",
                source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let mut io = hyper_util::rt::TokioIo::new(up);
                let mut conn = conn;
                let _ = tokio::io::copy_bidirectional(&mut io, &mut conn).await;
            }
        });
        return Ok(upgraded(tty));
    }
    let open_stdin = flag(&q.stdin);
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = if row.tty {
        let w = out_w.try_clone().map_err(|e| ApiError::Sys {
            what: "dup",
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
        (None, w)
    } else {
        let (r, w) = pipe()?;
        (Some(r), w)
    };
    let (in_r, in_w) = if open_stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        let null = std::fs::File::open("/dev/null").map_err(|e| ApiError::Sys {
            what: "open /dev/null",
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
        (OwnedFd::from(null), None)
    };
    st.park(
        &row.id,
        Parked {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
            open_stdin,
        },
    );
    let tty = row.tty;
    tokio::spawn(async move {
        match upgrade.await {
            Ok(up) => {
                let io = hyper_util::rt::TokioIo::new(up);
                stream::pump(io, out_r, err_r, in_w, tty, std::future::ready(())).await
            }
            Err(e) => log::debug!("attach {}: upgrade failed: {e}", row.id),
        }
    });
    Ok(upgraded(tty))
}

/// The `101 UPGRADED` answer of a hijacked attach or exec.
pub(crate) fn upgraded(tty: bool) -> Response {
    let ct = if tty {
        stream::RAW
    } else {
        stream::MULTIPLEXED
    };
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONTENT_TYPE, ct)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .body(Body::empty())
        .unwrap_or_default()
}

/// `?h=ROWS&w=COLUMNS` of resize.
#[derive(Debug, Deserialize)]
pub struct ResizeQuery {
    h: Option<u16>,
    w: Option<u16>,
}

impl ResizeQuery {
    /// (rows, columns), 0 for what is missing.
    pub fn size(&self) -> (u16, u16) {
        (self.h.unwrap_or(0), self.w.unwrap_or(0))
    }
}

/// `POST /containers/{id}/resize`: the running `-t` container's terminal gets the size (its
/// foreground processes a SIGWINCH); 409 when it does not run.
pub async fn resize(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<ResizeQuery>,
) -> Result<StatusCode, ApiError> {
    let row = find(&st, &id).await?;
    blocking(move || {
        let (rows, cols) = q.size();
        moat_engine::lifecycle::resize(&row, rows, cols)?;
        Ok(StatusCode::OK)
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A container that exits at once: the row read before the wait says `running` with no
    /// exit code, and by the time the wait looks, the monitor has recorded the exit and gone.
    /// The wait answers the recorded code, not the stale row's.
    #[tokio::test]
    async fn not_running_answers_the_recorded_exit_of_a_monitor_already_gone() {
        let d = tempfile::tempdir().unwrap();
        let records = Records::open(d.path()).unwrap();
        let row = Row {
            id: "c0ffee".into(),
            name: "fast".into(),
            image: "sha256:aa".into(),
            image_ref: "busybox".into(),
            command: vec!["sh".into()],
            created: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        };
        records.insert(&row).unwrap();
        // A monitor that has ended: a child of ours, reaped.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id() as i32;
        gone.wait().unwrap();
        records
            .set_running("c0ffee", 42, (pid, 1), "t1", 0)
            .unwrap();
        let stale = records.get("c0ffee").unwrap().unwrap();
        records.set_exited("c0ffee", 3, "t2", "").unwrap();
        let (_tx, mut rx) = tokio::sync::watch::channel(Phase::Unknown);
        let code = tokio::time::timeout(
            Duration::from_secs(5),
            wait_for(d.path(), &stale, "not-running", Phase::Unknown, &mut rx),
        )
        .await
        .unwrap();
        assert_eq!(code, 3);
    }
}
