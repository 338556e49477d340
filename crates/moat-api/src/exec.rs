//! The exec endpoints: create (`POST /containers/{id}/exec`), start (hijacked, or detached),
//! inspect, resize. The process runs through `moat exec` in a child process (the runtime forks
//! and joins namespaces, which a multi-threaded server must not do itself), its standard
//! streams on pipes to the connection; its exit code is recorded before the connection closes,
//! so the client's inspect that follows sees it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State as Ext};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use moat_engine::containers::State as CState;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::containers::{find, pipe, upgraded};
use crate::error::{blocking, ApiError};
use crate::state::State;
use crate::stream;

type St = Ext<Arc<State>>;

/// An exec instance.
#[derive(Debug, Clone)]
pub struct Exec {
    container: String,
    cmd: Vec<String>,
    env: Vec<String>,
    user: String,
    workdir: String,
    stdin: bool,
    tty: bool,
    running: bool,
    exit_code: Option<i32>,
    pid: u32,
}

/// Exec instances by id.
#[derive(Debug, Default)]
pub struct Execs(Mutex<HashMap<String, Exec>>);

impl Execs {
    fn get(&self, id: &str) -> Result<Exec, ApiError> {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned())
            .ok_or_else(|| ApiError::NotFound(format!("No such exec instance: {id}")))
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Exec)) {
        if let Ok(mut m) = self.0.lock() {
            if let Some(e) = m.get_mut(id) {
                f(e);
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    attach_stdin: bool,
    tty: bool,
    cmd: Vec<String>,
    env: Option<Vec<String>>,
    user: String,
    working_dir: String,
    privileged: bool,
}

/// `POST /containers/{id}/exec`.
pub async fn create(
    Ext(st): St,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadParameter(format!("invalid JSON in the request body: {e}")))?;
    let row = crate::containers::find(&st, &id).await?;
    if row.effective().0 != CState::Running {
        return Err(ApiError::Conflict(format!(
            "container {} is not running",
            row.id
        )));
    }
    if b.cmd.is_empty() {
        return Err(ApiError::BadParameter("no exec command specified".into()));
    }
    if b.privileged {
        return Err(ApiError::BadParameter(
            "privileged exec is not supported yet".into(),
        ));
    }
    let exec_id = moat_engine::run::new_id()?;
    if let Ok(mut m) = st.execs.0.lock() {
        m.insert(
            exec_id.clone(),
            Exec {
                container: row.id,
                cmd: b.cmd,
                env: b.env.unwrap_or_default(),
                user: b.user,
                workdir: b.working_dir,
                stdin: b.attach_stdin,
                tty: b.tty,
                running: false,
                exit_code: None,
                pid: 0,
            },
        );
    }
    Ok((StatusCode::CREATED, Json(json!({ "Id": exec_id }))))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
}

/// The `moat exec` command line for an exec instance.
fn command(st: &State, e: &Exec, detach: bool) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("/proc/self/exe");
    c.arg("--root").arg(&st.paths.root).arg("exec");
    if e.stdin && !detach {
        c.arg("-i");
    }
    if e.tty && !detach {
        c.arg("-t");
    }
    for v in &e.env {
        c.arg("-e").arg(v);
    }
    if !e.user.is_empty() {
        c.arg("-u").arg(&e.user);
    }
    if !e.workdir.is_empty() {
        c.arg("-w").arg(&e.workdir);
    }
    c.arg(&e.container).args(&e.cmd);
    c.kill_on_drop(false);
    c
}

/// `POST /exec/{id}/start`.
pub async fn start(
    Ext(st): St,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let e = st.execs.get(&id)?;
    if e.running || e.exit_code.is_some() {
        return Err(ApiError::Conflict(format!("exec {id} has already run")));
    }
    let body = axum::body::to_bytes(std::mem::take(req.body_mut()), 64 * 1024)
        .await
        .map_err(|err| ApiError::BadParameter(err.to_string()))?;
    let b: StartBody = if body.is_empty() {
        StartBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::BadParameter(format!("invalid JSON in the request body: {err}"))
        })?
    };
    find(&st, &e.container).await?;
    if b.detach {
        let mut c = command(&st, &e, true);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().map_err(|err| ApiError::Task(err.to_string()))?;
        st.execs.update(&id, |x| {
            x.running = true;
            x.pid = child.id().unwrap_or(0);
        });
        let st2 = st.clone();
        tokio::spawn(async move {
            let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
            st2.execs.update(&id, |x| {
                x.running = false;
                x.exit_code = Some(code);
            });
        });
        return Ok(StatusCode::OK.into_response());
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let (out_r, out_w) = pipe()?;
    // With a terminal everything comes through the pty (one raw stream); moat's own errors
    // join it.
    let (err_r, err_w) = if e.tty {
        let w = out_w
            .try_clone()
            .map_err(|err| ApiError::Task(err.to_string()))?;
        (None, w)
    } else {
        let (r, w) = pipe()?;
        (Some(r), w)
    };
    let (in_r, in_w) = if e.stdin {
        let (r, w) = pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let mut c = command(&st, &e, false);
    c.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
    match in_r {
        Some(r) => c.stdin(Stdio::from(r)),
        None => c.stdin(Stdio::null()),
    };
    let tty = e.tty;
    let mut child = c.spawn().map_err(|err| ApiError::Task(err.to_string()))?;
    // `c` holds the parent's copies of the child's ends: dropped here, so the output ends
    // when the process (and whatever it left holding them) does.
    drop(c);
    st.execs.update(&id, |x| {
        x.running = true;
        x.pid = child.id().unwrap_or(0);
    });
    let st2 = st.clone();
    let finish = async move {
        let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
        st2.execs.update(&id, |x| {
            x.running = false;
            x.exit_code = Some(code);
        });
    };
    tokio::spawn(async move {
        match upgrade.await {
            Ok(up) => {
                let io = hyper_util::rt::TokioIo::new(up);
                stream::pump(io, out_r, err_r, in_w, tty, finish).await
            }
            Err(err) => {
                log::debug!("exec: upgrade failed: {err}");
                finish.await
            }
        }
    });
    Ok(upgraded(tty))
}

/// `GET /exec/{id}/json`.
pub async fn inspect(Ext(st): St, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let e = st.execs.get(&id)?;
    Ok(Json(json!({
        "ID": id,
        "Running": e.running,
        "ExitCode": e.exit_code,
        "ProcessConfig": {
            "entrypoint": e.cmd.first(),
            "arguments": e.cmd.get(1..).unwrap_or_default(),
            "tty": e.tty,
            "user": e.user,
            "privileged": false,
        },
        "OpenStdin": e.stdin,
        "OpenStderr": true,
        "OpenStdout": true,
        "CanRemove": false,
        "ContainerID": e.container,
        "DetachKeys": "",
        "Pid": e.pid,
    })))
}

/// `POST /exec/{id}/resize?h=&w=`: the running exec's terminal gets the size.
pub async fn resize(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<crate::containers::ResizeQuery>,
) -> Result<StatusCode, ApiError> {
    let e = st.execs.get(&id)?;
    let (rows, cols) = q.size();
    if !e.tty || rows == 0 || cols == 0 {
        return Ok(StatusCode::OK);
    }
    if e.pid == 0 || !e.running {
        return Err(ApiError::Conflict(format!("exec {id} is not running")));
    }
    blocking(move || {
        moat_engine::exec::resize_exec(&st.paths, &e.container, e.pid, rows, cols)?;
        Ok(StatusCode::OK)
    })
    .await
}
