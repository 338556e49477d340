//! More container endpoints: top, stats, pause, unpause, rename, prune, commit; image prune;
//! and `GET /system/df`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as Ext};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use moat_engine::containers::{Records, Row, State as CState};
use moat_engine::lifecycle;
use moat_image::commit::CommitOptions;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::containers::{find, flag};
use crate::error::{blocking, ApiError};
use crate::state::State;

type St = Ext<Arc<State>>;

fn running_or_conflict(row: &Row) -> Result<(), ApiError> {
    if row.effective().0 == CState::Running {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "Container {} is not running",
            row.id
        )))
    }
}

/// `GET /containers/{id}/top`.
pub async fn top(Ext(st): St, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let row = find(&st, &id).await?;
    running_or_conflict(&row)?;
    blocking(move || {
        let procs = lifecycle::top(&st.paths, &row)?;
        let rows: Vec<Value> = procs
            .iter()
            .map(|p| {
                json!([
                    p.uid.to_string(),
                    p.pid.to_string(),
                    p.ppid.to_string(),
                    "0",
                    "",
                    "?",
                    format!(
                        "{:02}:{:02}:{:02}",
                        p.cpu_secs / 3600,
                        p.cpu_secs / 60 % 60,
                        p.cpu_secs % 60
                    ),
                    p.cmd
                ])
            })
            .collect();
        Ok(Json(json!({
            "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
            "Processes": rows,
        })))
    })
    .await
}

/// `POST /containers/{id}/pause`.
pub async fn pause(Ext(st): St, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let row = find(&st, &id).await?;
    running_or_conflict(&row)?;
    let st2 = st.clone();
    let r = row.clone();
    blocking(move || Ok(lifecycle::pause(&st2.paths, &r)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/unpause`.
pub async fn unpause(Ext(st): St, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let row = find(&st, &id).await?;
    let st2 = st.clone();
    let r = row.clone();
    blocking(move || Ok(lifecycle::unpause(&st2.paths, &r)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?name=` of rename.
#[derive(Debug, Deserialize)]
pub struct RenameQuery {
    name: String,
}

/// The body of `POST /containers/{id}/update` (zero and empty values: unchanged, as the docker
/// CLI sends every field).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateBody {
    memory: i64,
    memory_swap: i64,
    nano_cpus: i64,
    cpu_shares: i64,
    cpuset_cpus: String,
    pids_limit: Option<i64>,
    restart_policy: Option<UpdateRestart>,
}

/// `RestartPolicy` of an update.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateRestart {
    name: String,
    maximum_retry_count: u32,
}

/// `POST /containers/{id}/update`: resources (applied at once to a running container) and the
/// restart policy.
pub async fn update(
    Ext(st): St,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: UpdateBody = if body.is_empty() {
        UpdateBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadParameter(format!("invalid JSON in the request body: {e}")))?
    };
    let row = find(&st, &id).await?;
    let restart = match b.restart_policy.as_ref().filter(|r| !r.name.is_empty()) {
        Some(r) => Some(
            moat_engine::hostconfig::RestartPolicy::parse(&if r.name == "on-failure"
                && r.maximum_retry_count > 0
            {
                format!("on-failure:{}", r.maximum_retry_count)
            } else {
                r.name.clone()
            })
            .map_err(|e| ApiError::BadParameter(e.to_string()))?,
        ),
        None => None,
    };
    let host = moat_engine::hostconfig::HostConfig {
        memory: (b.memory > 0).then_some(b.memory),
        memory_swap: (b.memory_swap != 0).then_some(b.memory_swap),
        cpus: (b.nano_cpus > 0).then(|| b.nano_cpus as f64 / 1e9),
        cpu_shares: (b.cpu_shares > 0).then_some(b.cpu_shares as u64),
        cpuset_cpus: (!b.cpuset_cpus.is_empty()).then_some(b.cpuset_cpus),
        pids_limit: b.pids_limit.filter(|p| *p != 0),
        ..Default::default()
    };
    let st2 = st.clone();
    let r = row.clone();
    blocking(move || {
        let u = moat_engine::update::Update { host, restart };
        Ok(moat_engine::update::update(&st2.paths, &r, &u)?)
    })
    .await?;
    Ok(Json(json!({"Warnings": []})))
}

/// `POST /containers/{id}/rename?name=NEW`.
pub async fn rename(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<RenameQuery>,
) -> Result<StatusCode, ApiError> {
    let row = find(&st, &id).await?;
    let st2 = st.clone();
    blocking(move || {
        moat_engine::containers::check_name(&q.name)?;
        Ok(lifecycle::rename(&st2.paths, &row, &q.name)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/prune`: every container not running.
pub async fn prune(Ext(st): St) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let mut deleted = vec![];
        moat_engine::run::sweep_removed(&st.paths);
        for row in Records::open(&st.paths.root)?.all()? {
            if row.effective().0 != CState::Running
                && lifecycle::remove(&st.paths, &row, false, false).is_ok()
            {
                deleted.push(row.id);
            }
        }
        Ok(Json(
            json!({"ContainersDeleted": deleted, "SpaceReclaimed": 0}),
        ))
    })
    .await
}

/// `?stream=0|1&one-shot=` of stats.
#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    stream: Option<String>,
}

/// One sample in Docker's stats shape (the fields the CLI computes its columns from).
fn sample(
    row: &Row,
    usage: &moat_runtime::cgroups::Usage,
    pre_cpu: u64,
    system: u64,
    pre_system: u64,
) -> Value {
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // No limit (cgroup v1 says 2^63 rounded to a page): the host's memory, as Docker shows.
    let limit = usage.memory_limit.min(moat_engine::present::host_memory());
    json!({
        "read": moat_image::store::now_rfc3339(),
        "preread": "0001-01-01T00:00:00Z",
        "id": row.id,
        "name": format!("/{}", row.name),
        "pids_stats": {"current": usage.pids},
        "cpu_stats": {
            "cpu_usage": {"total_usage": usage.cpu_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": system,
            "online_cpus": ncpu,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        },
        "precpu_stats": {
            "cpu_usage": {"total_usage": pre_cpu, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": pre_system,
            "online_cpus": ncpu,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        },
        "memory_stats": {"usage": usage.memory, "limit": limit, "stats": {}},
        "blkio_stats": {"io_service_bytes_recursive": [
            {"major": 0, "minor": 0, "op": "read", "value": usage.block_read},
            {"major": 0, "minor": 0, "op": "write", "value": usage.block_write},
        ]},
        "networks": moat_engine::present::net_io(row.pid)
            .into_iter()
            .map(|(name, rx, tx)| (name, json!({"rx_bytes": rx, "tx_bytes": tx})))
            .collect::<serde_json::Map<String, Value>>(),
    })
}

/// The host's total CPU time in nanoseconds (`/proc/stat`), as Docker's `system_cpu_usage`.
fn system_cpu_ns() -> u64 {
    let ticks: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .take(7)
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum()
            })
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    ticks * 10_000_000
}

/// `GET /containers/{id}/stats`: one sample (`stream=0`), or one per second.
pub async fn stats(
    Ext(st): St,
    Path(id): Path<String>,
    Query(q): Query<StatsQuery>,
) -> Result<Response, ApiError> {
    let row = find(&st, &id).await?;
    let stream = q.stream.as_deref().is_none_or(|s| s == "1" || s == "true");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::task::spawn_blocking(move || {
        let paths = &st.paths;
        let mut pre = (0u64, 0u64);
        loop {
            let sys0 = system_cpu_ns();
            let (usage, _) = match lifecycle::stats(paths, &row, Duration::from_millis(100)) {
                Ok(u) => u,
                // Not running (any more): Docker sends zeroes and ends.
                Err(_) => (Default::default(), 0.0),
            };
            let sys = system_cpu_ns().max(sys0);
            let (pre_cpu, pre_sys) = if pre == (0, 0) {
                (usage.cpu_ns, sys0)
            } else {
                pre
            };
            let v = sample(&row, &usage, pre_cpu, sys, pre_sys);
            pre = (usage.cpu_ns, sys);
            if tx
                .blocking_send(Ok(Bytes::from(v.to_string() + "\n")))
                .is_err()
                || !stream
            {
                return;
            }
            let alive = Records::open(&paths.root)
                .ok()
                .and_then(|r| r.get(&row.id).ok().flatten())
                .is_some_and(|r| r.effective().0 == CState::Running);
            if !alive {
                return;
            }
            std::thread::sleep(Duration::from_millis(900));
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

/// `POST /commit` query.
#[derive(Debug, Deserialize)]
pub struct CommitQuery {
    container: String,
    repo: Option<String>,
    tag: Option<String>,
    comment: Option<String>,
    author: Option<String>,
    pause: Option<String>,
    changes: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CommitBody {
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: Option<HashMap<String, String>>,
}

/// `POST /commit?container=&repo=&tag=`: the container's writable layer as a new image.
pub async fn commit(
    Ext(st): St,
    Query(q): Query<CommitQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: CommitBody = if body.is_empty() || body.as_ref() == b"null" {
        CommitBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadParameter(format!("invalid JSON in the request body: {e}")))?
    };
    let row = find(&st, &q.container).await?;
    let reference = match (
        q.repo.filter(|r| !r.is_empty()),
        q.tag.filter(|t| !t.is_empty()),
    ) {
        (Some(r), Some(t)) => Some(format!("{r}:{t}")),
        (Some(r), None) => Some(r),
        _ => None,
    };
    // `changes` (Dockerfile instructions, one per line) over the body's config.
    let list: Vec<String> = q
        .changes
        .as_deref()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    let mut config = moat_image::changes::parse(&list, q.comment.filter(|c| !c.is_empty()))
        .map_err(|e| ApiError::BadParameter(e.to_string()))?;
    config.cmd = config.cmd.or(b.cmd);
    config.entrypoint = config.entrypoint.or(b.entrypoint);
    config.env.extend(b.env.unwrap_or_default());
    config.working_dir = config
        .working_dir
        .or(b.working_dir.filter(|w| !w.is_empty()));
    config.user = config.user.or(b.user.filter(|u| !u.is_empty()));
    config.labels.extend(b.labels.unwrap_or_default());
    let opts = CommitOptions {
        config,
        author: q.author.filter(|a| !a.is_empty()),
    };
    let pause = q.pause.is_none() || flag(&q.pause);
    let id = blocking(move || {
        Ok(moat_engine::commit::commit(
            &st.paths,
            &row,
            reference.as_deref(),
            &opts,
            pause,
        )?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "Id": id.as_str() }))))
}

/// `POST /images/prune`: images without tags that no container uses.
pub async fn prune_images(Ext(st): St) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let mut store = moat_image::ImageStore::open(&st.paths.images())?;
        let mut deleted = vec![];
        for img in store.images()? {
            let untagged = img.row.tags.iter().all(|t| t.contains('@'));
            if untagged
                && moat_engine::run::containers_using(&st.paths.root, &img.row.id).is_empty()
            {
                if let Ok(lines) = store.remove(img.row.id.as_str(), true) {
                    deleted.extend(
                        lines
                            .iter()
                            .filter_map(|l| l.split_once(": "))
                            .map(|(k, v)| json!({ k: v })),
                    );
                }
            }
        }
        Ok(Json(json!({"ImagesDeleted": deleted, "SpaceReclaimed": 0})))
    })
    .await
}

/// `GET /system/df`.
pub async fn df(Ext(st): St) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let store = moat_image::ImageStore::open(&st.paths.images())?;
        let rows = Records::open(&st.paths.root)?.all()?;
        let mut images = vec![];
        for s in store.images()? {
            let (_, config, _) = store.inspect(&s.row.id)?;
            let created = moat_engine::present::parse_rfc3339(&s.row.created).unwrap_or(0);
            let mut v = moat_image::docker::summary(&s, created, &config["config"]["Labels"]);
            v["Containers"] = json!(rows.iter().filter(|r| r.image == s.row.id.as_str()).count());
            images.push(v);
        }
        let ports = moat_engine::network::published(&st.paths);
        let containers: Vec<Value> = rows
            .iter()
            .map(|r| moat_engine::present::summary(&st.paths, r, &ports))
            .collect();
        let vols = moat_engine::volumes::Volumes::open(&st.paths)?;
        let volumes: Vec<Value> = vols
            .all()?
            .iter()
            .map(|v| {
                let mut x = vols.inspect(v);
                x["UsageData"] = json!({"Size": -1, "RefCount": vols.users(&v.name).len()});
                x
            })
            .collect();
        let layers: u64 = store.db().layers()?.iter().map(|l| l.size).sum();
        Ok(Json(json!({
            "LayersSize": layers,
            "Images": images,
            "Containers": containers,
            "Volumes": volumes,
            "BuildCache": [],
        })))
    })
    .await
}
