//! The image endpoints: list, inspect, history, pull (`POST /images/create`, Docker's JSON
//! progress), push, tag, remove. Image names hold slashes, so `/images/{*rest}` is split here.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as Ext};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use moat_image::{ImageStore, Reference};
use moat_registry::progress::{Progress, Status};
use moat_registry::{Client, ClientOptions, Credentials};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::containers::flag;
use crate::error::{blocking, ApiError};
use crate::state::State;

type St = Ext<Arc<State>>;

fn open(st: &State) -> Result<ImageStore, ApiError> {
    Ok(ImageStore::open(&st.paths.images())?)
}

/// `?filters=` of the image list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    filters: Option<String>,
}

/// Whether tag `t` (`repo:tag`) matches a `reference` filter (`repo`, `repo:tag`, with `*`).
fn reference_matches(pattern: &str, t: &str) -> bool {
    let (repo, _) = t.rsplit_once(':').unwrap_or((t, ""));
    let glob = |p: &str, s: &str| match p.split_once('*') {
        Some((a, b)) => s.starts_with(a) && s.ends_with(b) && s.len() >= a.len() + b.len(),
        None => p == s,
    };
    glob(pattern, t) || glob(pattern, repo)
}

/// `GET /images/json` (filters: `reference`, `dangling`).
pub async fn list(Ext(st): St, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let filters = crate::query::filters(q.filters.as_deref())?;
    let values = |k: &str| filters.get(k).cloned().unwrap_or_default();
    let references = values("reference");
    let dangling = values("dangling").first().map(|d| d == "true" || d == "1");
    blocking(move || {
        let store = open(&st)?;
        let mut out = vec![];
        for mut s in store.images()? {
            let tagged = s.row.tags.iter().any(|t| !t.contains('@'));
            if dangling.is_some_and(|d| d == tagged) {
                continue;
            }
            if !references.is_empty() {
                // As dockerd: only the matching tags are listed, and images with none are not.
                s.row.tags.retain(|t| {
                    !t.contains('@') && references.iter().any(|p| reference_matches(p, t))
                });
                if s.row.tags.is_empty() {
                    continue;
                }
            }
            let (_, config, _) = store.inspect(&s.row.id)?;
            let created = moat_engine::present::parse_rfc3339(&s.row.created).unwrap_or(0);
            out.push(moat_image::docker::summary(
                &s,
                created,
                &config["config"]["Labels"],
            ));
        }
        Ok(Json(Value::Array(out)))
    })
    .await
}

/// Query of the `/images/{name}/...` endpoints.
#[derive(Debug, Deserialize)]
pub struct NameQuery {
    repo: Option<String>,
    tag: Option<String>,
    force: Option<String>,
}

fn split<'a>(rest: &'a str, suffix: &str) -> Option<&'a str> {
    rest.strip_suffix(suffix).filter(|n| !n.is_empty())
}

/// `GET /images/{name}/json` and `/images/{name}/history`.
pub async fn get(Ext(st): St, Path(rest): Path<String>) -> Result<Response, ApiError> {
    if let Some(name) = split(&rest, "/json") {
        let name = name.to_string();
        return blocking(move || {
            let store = open(&st)?;
            let id = store
                .resolve(&name)
                .map_err(|_| ApiError::NoSuchImage(name.clone()))?;
            Ok(Json(moat_image::docker::inspect(&store, &id)?).into_response())
        })
        .await;
    }
    if let Some(name) = split(&rest, "/get") {
        return save_one(st, name).await;
    }
    if let Some(name) = split(&rest, "/history") {
        let name = name.to_string();
        return blocking(move || {
            let store = open(&st)?;
            let id = store
                .resolve(&name)
                .map_err(|_| ApiError::NoSuchImage(name.clone()))?;
            let (row, config, _) = store.inspect(&id)?;
            let hist = config["history"].as_array().cloned().unwrap_or_default();
            let out: Vec<Value> = hist
                .iter()
                .rev()
                .enumerate()
                .map(|(i, h)| {
                    json!({
                        "Id": if i == 0 { id.to_string() } else { "<missing>".into() },
                        "Created": moat_engine::present::parse_rfc3339(h["created"].as_str().unwrap_or("")).unwrap_or(0),
                        "CreatedBy": h["created_by"].as_str().unwrap_or(""),
                        "Tags": if i == 0 { json!(row.tags) } else { Value::Null },
                        "Size": 0,
                        "Comment": h["comment"].as_str().unwrap_or(""),
                    })
                })
                .collect();
            Ok(Json(Value::Array(out)).into_response())
        })
        .await;
    }
    Err(ApiError::NotFound(format!(
        "page not found: /images/{rest}"
    )))
}

/// `DELETE /images/{name}`.
pub async fn delete(
    Ext(st): St,
    Path(name): Path<String>,
    Query(q): Query<NameQuery>,
) -> Result<Json<Value>, ApiError> {
    let force = flag(&q.force);
    blocking(move || {
        let mut store = open(&st)?;
        let id = store
            .resolve(&name)
            .map_err(|_| ApiError::NoSuchImage(name.clone()))?;
        // Untagging one of several tags leaves the image: allowed even while it is in use.
        let tags = store.db().image(&id)?.map(|r| r.tags).unwrap_or_default();
        let untag_only = tags.iter().filter(|t| !t.contains('@')).count() > 1
            && name
                .parse::<Reference>()
                .is_ok_and(|r| tags.contains(&r.to_string()));
        let users = if untag_only {
            vec![]
        } else {
            moat_engine::run::containers_using(&st.paths.root, &id)
        };
        if let Some(c) = users.first() {
            return Err(ApiError::Conflict(format!(
                "conflict: unable to remove repository reference {name:?} (must force) - container {} is using its referenced image {}",
                &c[..c.len().min(12)],
                id.short()
            )));
        }
        let lines = store.remove(&name, force)?;
        for l in &lines {
            match l.split_once(": ") {
                Some(("Untagged", t)) => st.events.emit("image", "untag", id.as_str(), &[("name", t)]),
                Some(("Deleted", d)) => st.events.emit("image", "delete", d, &[("name", &name)]),
                _ => {}
            }
        }
        Ok(Json(Value::Array(
            lines
                .iter()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| json!({ k: v }))
                .collect(),
        )))
    })
    .await
}

/// Credentials from `X-Registry-Auth` (base64url JSON: username, password).
fn registry_auth(headers: &HeaderMap) -> Option<Credentials> {
    let raw = headers.get("x-registry-auth")?.to_str().ok()?;
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(raw.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw.trim()))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw.trim()))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let username = v["username"].as_str().filter(|u| !u.is_empty())?;
    Some(Credentials {
        username: username.to_string(),
        password: v["password"].as_str().unwrap_or("").to_string(),
    })
}

/// Docker's JSON progress messages, one per line, into the response body.
struct JsonProgress(mpsc::UnboundedSender<Bytes>);

impl JsonProgress {
    fn send(&self, v: Value) {
        let _ = self.0.send(Bytes::from(v.to_string() + "\r\n"));
    }
}

impl Progress for JsonProgress {
    fn message(&self, text: &str) {
        match text.split_once(": Pulling from ") {
            Some((id, repo)) => {
                self.send(json!({"status": format!("Pulling from {repo}"), "id": id}))
            }
            None => self.send(json!({ "status": text })),
        }
    }

    fn layer(&self, id: &str, status: &Status) {
        let detail = match status {
            Status::Downloading { current, total } => json!({"current": current, "total": total}),
            _ => json!({}),
        };
        self.send(json!({"status": status.to_string(), "progressDetail": detail, "id": id}));
    }
}

/// A JSON-lines response fed by a blocking task; an error becomes Docker's error message.
fn progress_response(
    work: impl FnOnce(&JsonProgress) -> Result<(), String> + Send + 'static,
) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    tokio::task::spawn_blocking(move || {
        let p = JsonProgress(tx);
        if let Err(message) = work(&p) {
            p.send(json!({"errorDetail": {"message": message}, "error": message}));
        }
    });
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    let body = Body::from_stream(tokio_stream::StreamExt::map(
        stream,
        Ok::<_, std::io::Error>,
    ));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn connect(domain: &str, headers: &HeaderMap) -> Result<Client, String> {
    let opts = ClientOptions {
        credentials: registry_auth(headers),
        ..ClientOptions::default()
    };
    Client::connect(domain, &opts).map_err(|e| e.to_string())
}

/// `POST /images/create?fromImage=NAME&tag=TAG`: a pull (importing from `fromSrc` is not
/// supported yet).
#[derive(Debug, Deserialize)]
pub struct CreateQuery {
    #[serde(rename = "fromImage")]
    from_image: Option<String>,
    #[serde(rename = "fromSrc")]
    from_src: Option<String>,
    tag: Option<String>,
}

pub async fn create(
    Ext(st): St,
    Query(q): Query<CreateQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if q.from_src.is_some() {
        return Err(ApiError::BadParameter(
            "importing with fromSrc is not supported yet: use `moat import`".into(),
        ));
    }
    let Some(image) = q.from_image.filter(|i| !i.is_empty()) else {
        return Err(ApiError::BadParameter("fromImage is required".into()));
    };
    let name = match q.tag.as_deref() {
        Some(t) if t.starts_with("sha256:") => format!("{image}@{t}"),
        Some(t) if !t.is_empty() => format!("{image}:{t}"),
        _ => image,
    };
    let r: Reference = name
        .parse()
        .map_err(|e: moat_image::reference::ReferenceError| {
            ApiError::BadParameter(e.to_string())
        })?;
    Ok(progress_response(move |p| {
        let client = connect(r.domain(), &headers)?;
        let mut store = open(&st).map_err(|e| e.to_string())?;
        let platform = moat_registry::manifest::host_platform();
        moat_registry::pull::pull(&mut store, &client, &r, &platform, p)
            .map_err(|e| e.to_string())?;
        st.events
            .emit("image", "pull", &r.to_string(), &[("name", &r.to_string())]);
        Ok(())
    }))
}

/// `POST /images/{name}/tag?repo=&tag=` and `POST /images/{name}/push?tag=`.
pub async fn post(
    Ext(st): St,
    Path(rest): Path<String>,
    Query(q): Query<NameQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(name) = split(&rest, "/tag") {
        let name = name.to_string();
        let repo = q.repo.unwrap_or_default();
        let target = match q.tag.as_deref() {
            Some(t) if !t.is_empty() => format!("{repo}:{t}"),
            _ => repo,
        };
        let target: Reference =
            target
                .parse()
                .map_err(|e: moat_image::reference::ReferenceError| {
                    ApiError::BadParameter(e.to_string())
                })?;
        let st2 = st.clone();
        let t = target.clone();
        let id = blocking(move || {
            let store = open(&st2)?;
            let id = store
                .resolve(&name)
                .map_err(|_| ApiError::NoSuchImage(name.clone()))?;
            store.tag(&name, &t)?;
            Ok(id)
        })
        .await?;
        st.events.emit(
            "image",
            "tag",
            id.as_str(),
            &[("name", &target.to_string())],
        );
        return Ok(StatusCode::CREATED.into_response());
    }
    if let Some(name) = split(&rest, "/push") {
        let full = match q.tag.as_deref() {
            Some(t) if !t.is_empty() => format!("{name}:{t}"),
            _ => name.to_string(),
        };
        let r: Reference = full
            .parse()
            .map_err(|e: moat_image::reference::ReferenceError| {
                ApiError::BadParameter(e.to_string())
            })?;
        {
            let st = st.clone();
            let shown = r.to_string();
            blocking(move || {
                open(&st)?
                    .resolve(&shown)
                    .map_err(|_| ApiError::NoSuchImage(shown.clone()))
            })
            .await?;
        }
        return Ok(progress_response(move |p| {
            let client = connect(r.domain(), &headers)?;
            let mut store = open(&st).map_err(|e| e.to_string())?;
            moat_registry::push::push(&mut store, &client, &r, p).map_err(|e| e.to_string())?;
            st.events
                .emit("image", "push", &r.to_string(), &[("name", &r.to_string())]);
            Ok(())
        }));
    }
    Err(ApiError::NotFound(format!(
        "page not found: /images/{rest}"
    )))
}

/// A tar of `names` (docker-archive and OCI layout in one), streamed.
async fn save_response(st: Arc<State>, names: Vec<String>) -> Result<Response, ApiError> {
    if names.is_empty() {
        return Err(ApiError::BadParameter("no image names given".into()));
    }
    {
        let (st, names) = (st.clone(), names.clone());
        blocking(move || {
            let store = open(&st)?;
            for n in &names {
                store
                    .resolve(n)
                    .map_err(|_| ApiError::NoSuchImage(n.clone()))?;
            }
            Ok(())
        })
        .await?;
    }
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let w =
            std::io::BufWriter::with_capacity(256 * 1024, crate::stream::BodyWriter(tx.clone()));
        let saved = open(&st).map_err(|e| e.to_string()).and_then(|store| {
            moat_image::archive::save(&store, &names, w).map_err(|e| e.to_string())
        });
        if let Err(e) = saved {
            // The headers are gone: the client sees a truncated archive.
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

/// `GET /images/get?names=A&names=B` (`docker save`).
pub async fn save(Ext(st): St, uri: axum::http::Uri) -> Result<Response, ApiError> {
    let names: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "names")
        .map(|(_, v)| percent_decode(v))
        .collect();
    save_response(st, names).await
}

/// `GET /images/{name}/get`: one image's archive.
pub async fn save_one(st: Arc<State>, name: &str) -> Result<Response, ApiError> {
    save_response(st, vec![name.to_string()]).await
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
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

/// `POST /images/load` (`docker load`): the body is a docker-archive or OCI layout tar. (`quiet`
/// only silences progress, which this load does not send: the "Loaded image" lines answer it.)
pub async fn load(Ext(st): St, req: axum::extract::Request) -> Result<Response, ApiError> {
    let stream = tokio_stream::StreamExt::map(req.into_body().into_data_stream(), |r| {
        r.map_err(std::io::Error::other)
    });
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let loaded = blocking(move || {
        let mut store = open(&st)?;
        moat_image::archive::load_tar(&mut store, reader)
            .map_err(|e| ApiError::BadParameter(e.to_string()))
    })
    .await?;
    let mut lines = String::new();
    for (id, tags) in loaded {
        if tags.is_empty() {
            lines += &json!({"stream": format!("Loaded image ID: {id}\n")}).to_string();
            lines.push('\n');
        }
        for t in tags {
            lines += &json!({"stream": format!("Loaded image: {t}\n")}).to_string();
            lines.push('\n');
        }
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], lines).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filters_match_as_dockerd() {
        assert!(reference_matches("busybox", "busybox:latest"));
        assert!(reference_matches("busybox:latest", "busybox:latest"));
        assert!(!reference_matches("busybox:v2", "busybox:latest"));
        assert!(reference_matches(
            "127.0.0.1:5000/*",
            "127.0.0.1:5000/app:v1"
        ));
        assert!(!reference_matches("other", "busybox:latest"));
    }
}
