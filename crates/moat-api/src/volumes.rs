//! The volume endpoints: list, create, inspect, remove, prune.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Ext};
use axum::http::StatusCode;
use axum::Json;
use moat_engine::volumes::Volumes;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::containers::flag;
use crate::error::{blocking, ApiError};
use crate::state::State;

type St = Ext<Arc<State>>;

/// `GET /volumes`.
pub async fn list(Ext(st): St) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let v = Volumes::open(&st.paths)?;
        let all: Vec<Value> = v.all()?.iter().map(|x| v.inspect(x)).collect();
        Ok(Json(json!({"Volumes": all, "Warnings": []})))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: String,
    labels: Option<HashMap<String, String>>,
}

/// `POST /volumes/create`.
pub async fn create(Ext(st): St, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: CreateBody = if body.is_empty() {
        CreateBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadParameter(format!("invalid JSON in the request body: {e}")))?
    };
    if !(b.driver.is_empty() || b.driver == "local") {
        return Err(ApiError::BadParameter(format!(
            "volume driver {:?} is not supported (local only)",
            b.driver
        )));
    }
    blocking(move || {
        let v = Volumes::open(&st.paths)?;
        let labels: Vec<(String, String)> = b.labels.unwrap_or_default().into_iter().collect();
        let name = v
            .create((!b.name.is_empty()).then_some(b.name.as_str()), &labels)
            .map_err(|e| match e {
                moat_engine::EngineError::Conflict(m) => ApiError::BadParameter(m),
                e => e.into(),
            })?;
        let vol = v
            .get(&name)?
            .ok_or_else(|| ApiError::Task(format!("volume {name} vanished")))?;
        st.events
            .emit("volume", "create", &name, &[("driver", "local")]);
        Ok((StatusCode::CREATED, Json(v.inspect(&vol))))
    })
    .await
}

/// `GET /volumes/{name}`.
pub async fn inspect(Ext(st): St, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let v = Volumes::open(&st.paths)?;
        let vol = v
            .get(&name)?
            .ok_or_else(|| ApiError::NotFound(format!("get {name}: no such volume")))?;
        Ok(Json(v.inspect(&vol)))
    })
    .await
}

/// `?force=1` of remove.
#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    force: Option<String>,
}

/// `DELETE /volumes/{name}`: 204; 404 unknown (unless forced); 409 in use.
pub async fn remove(
    Ext(st): St,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let force = flag(&q.force);
    blocking(move || {
        let v = Volumes::open(&st.paths)?;
        if v.get(&name)?.is_none() {
            return if force {
                Ok(StatusCode::NO_CONTENT)
            } else {
                Err(ApiError::NotFound(format!("get {name}: no such volume")))
            };
        }
        v.remove(&name).map_err(|e| match e {
            moat_engine::EngineError::Conflict(m) => ApiError::Conflict(m),
            e => e.into(),
        })?;
        st.events
            .emit("volume", "destroy", &name, &[("driver", "local")]);
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `?filters={"all":["true"]}` of prune.
#[derive(Debug, Deserialize)]
pub struct PruneQuery {
    filters: Option<String>,
}

/// `POST /volumes/prune`: unused anonymous volumes (all unused ones with `all=true`), as
/// Docker 23+.
pub async fn prune(Ext(st): St, Query(q): Query<PruneQuery>) -> Result<Json<Value>, ApiError> {
    let all = crate::query::filters(q.filters.as_deref())?
        .get("all")
        .is_some_and(|v| v.iter().any(|x| x == "true" || x == "1"));
    blocking(move || {
        let v = Volumes::open(&st.paths)?;
        let mut deleted = vec![];
        for vol in v.all()? {
            if (all || vol.anonymous)
                && v.users(&vol.name).is_empty()
                && v.remove(&vol.name).is_ok()
            {
                deleted.push(vol.name);
            }
        }
        Ok(Json(
            json!({"VolumesDeleted": deleted, "SpaceReclaimed": 0}),
        ))
    })
    .await
}
