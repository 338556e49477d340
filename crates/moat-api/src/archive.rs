//! `docker cp` through the API: `HEAD|GET|PUT /containers/{id}/archive?path=P`. The path is
//! resolved inside the container (symlinks cannot lead out), the container paused meanwhile;
//! GET streams a tar of the path, PUT extracts a tar into the directory the path names.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State as Ext};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use moat_engine::cp;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::containers::find;
use crate::error::{blocking, ApiError};
use crate::state::State;

type St = Ext<Arc<State>>;

/// `?path=&copyUIDGID=` of the archive endpoints.
#[derive(Debug, Deserialize)]
pub struct PathQuery {
    path: String,
    #[serde(rename = "copyUIDGID")]
    copy_uid_gid: Option<String>,
}

/// Docker's `X-Docker-Container-Path-Stat`: base64 of the path's stat as JSON.
fn stat_header(s: &cp::PathStat) -> HeaderValue {
    let v = json!({
        "name": s.name,
        "size": s.size,
        "mode": s.mode,
        "mtime": s.mtime,
        "linkTarget": s.link_target,
    });
    let b = base64::engine::general_purpose::STANDARD.encode(v.to_string());
    HeaderValue::from_str(&b).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A missing path is Docker's 404 "Could not find the file ... in container ...".
fn not_found(e: moat_engine::EngineError, path: &str, id: &str) -> ApiError {
    match &e {
        moat_engine::EngineError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            ApiError::NotFound(format!("Could not find the file {path} in container {id}"))
        }
        _ => e.into(),
    }
}

async fn stat_of(
    st: &Arc<State>,
    id: &str,
    path: &str,
) -> Result<(moat_engine::containers::Row, cp::PathStat), ApiError> {
    let row = find(st, id).await?;
    let (st2, r, p) = (st.clone(), row.clone(), path.to_string());
    let stat =
        blocking(move || cp::stat(&st2.paths, &r, &p).map_err(|e| not_found(e, &p, &r.name)))
            .await?;
    Ok((row, stat))
}

/// `HEAD /containers/{id}/archive`.
pub async fn head(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> Result<Response, ApiError> {
    let (_, stat) = stat_of(&st, &id, &q.path).await?;
    let mut r = StatusCode::OK.into_response();
    r.headers_mut()
        .insert("X-Docker-Container-Path-Stat", stat_header(&stat));
    Ok(r)
}

/// `GET /containers/{id}/archive`: a tar of the path.
pub async fn get(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> Result<Response, ApiError> {
    let (row, stat) = stat_of(&st, &id, &q.path).await?;
    let (tx, rx) = mpsc::channel(8);
    let path = q.path.clone();
    tokio::task::spawn_blocking(move || {
        let w = std::io::BufWriter::with_capacity(64 * 1024, crate::stream::BodyWriter(tx.clone()));
        if let Err(e) = cp::archive_out(&st.paths, &row, &path, w) {
            // The headers are gone: the client sees a truncated tar.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let mut r = (
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response();
    r.headers_mut()
        .insert("X-Docker-Container-Path-Stat", stat_header(&stat));
    Ok(r)
}

/// `PUT /containers/{id}/archive`: the body (a tar) extracted into the directory `path`.
pub async fn put(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let (row, stat) = stat_of(&st, &id, &q.path).await?;
    if stat.mode & (1 << 31) == 0 {
        return Err(ApiError::BadParameter(format!(
            "extraction point is not a directory: {}",
            q.path
        )));
    }
    let stream = tokio_stream::StreamExt::map(req.into_body().into_data_stream(), |r| {
        r.map_err(std::io::Error::other)
    });
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let path = q.path.clone();
    let keep_owner = crate::query::flag(&q.copy_uid_gid);
    blocking(move || {
        cp::extract_in(&st.paths, &row, &path, reader, keep_owner).map_err(|e| match e {
            moat_engine::EngineError::Conflict(m) => ApiError::BadParameter(m),
            e => e.into(),
        })
    })
    .await?;
    Ok(StatusCode::OK)
}
