//! The network endpoints: list, inspect, create, remove, connect, disconnect, prune.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Ext};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{blocking, ApiError};
use crate::state::State;

type St = Ext<Arc<State>>;

fn body<T: for<'de> Deserialize<'de> + Default>(b: &Bytes) -> Result<T, ApiError> {
    if b.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(b)
        .map_err(|e| ApiError::BadParameter(format!("invalid JSON in the request body: {e}")))
}

/// `?filters=` of list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    filters: Option<String>,
}

/// `GET /networks` (filters: name (substring), id (prefix), driver, label, type).
pub async fn list(Ext(st): St, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let filters = crate::query::filters(q.filters.as_deref())?;
    blocking(move || {
        let mut nets = moat_engine::network::open(&st.paths)?;
        let eps = nets.endpoints()?;
        let want = |k: &str, ok: &dyn Fn(&str) -> bool| {
            filters.get(k).is_none_or(|vs| vs.iter().any(|v| ok(v)))
        };
        let out: Vec<Value> = nets
            .list()?
            .iter()
            .filter(|n| {
                want("name", &|v| n.name.contains(v))
                    && want("id", &|v| n.id.starts_with(v))
                    && want("driver", &|v| n.driver == v)
                    && want("type", &|v| (v == "builtin") == n.is_predefined())
                    && want("label", &|v| match v.split_once('=') {
                        Some((k, val)) => n.labels.get(k).is_some_and(|x| x == val),
                        None => n.labels.contains_key(v),
                    })
            })
            .map(|n| moat_net::inspect(n, &eps))
            .collect();
        Ok(Json(Value::Array(out)))
    })
    .await
}

/// `GET /networks/{id}`.
pub async fn inspect(Ext(st): St, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let mut nets = moat_engine::network::open(&st.paths)?;
        let eps = nets.endpoints()?;
        let n = nets.get(&id)?;
        Ok(Json(moat_net::inspect(&n, &eps)))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: String,
    internal: bool,
    #[serde(rename = "IPAM")]
    ipam: Option<IpamBody>,
    labels: Option<HashMap<String, String>>,
    options: Option<HashMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamBody {
    config: Option<Vec<IpamConfig>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfig {
    subnet: String,
    gateway: String,
}

/// `POST /networks/create`: 201 with the id; 409 for a name in use.
pub async fn create(Ext(st): St, b: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: CreateBody = body(&b)?;
    if b.name.is_empty() {
        return Err(ApiError::BadParameter("network name is empty".into()));
    }
    let cfg = b
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().find(|c| !c.subnet.contains(':')));
    let subnet = match cfg.as_ref().filter(|c| !c.subnet.is_empty()) {
        Some(c) => Some(c.subnet.parse().map_err(|_| {
            ApiError::BadParameter(format!("invalid subnet {:?}: expected CIDR", c.subnet))
        })?),
        None => None,
    };
    let gateway = match cfg.as_ref().filter(|c| !c.gateway.is_empty()) {
        Some(c) => Some(
            moat_engine::network::parse_ip(&c.gateway)
                .map_err(|e| ApiError::BadParameter(e.to_string()))?,
        ),
        None => None,
    };
    let spec = moat_net::NetworkSpec {
        name: b.name,
        driver: b.driver,
        subnet,
        gateway,
        internal: b.internal,
        labels: b
            .labels
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        options: b
            .options
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
    };
    blocking(move || {
        let mut nets = moat_engine::network::open(&st.paths)?;
        let n = nets.create(&spec)?;
        st.events.emit(
            "network",
            "create",
            &n.id,
            &[("name", &n.name), ("type", "bridge")],
        );
        Ok((
            StatusCode::CREATED,
            Json(json!({"Id": n.id, "Warning": ""})),
        ))
    })
    .await
}

/// `DELETE /networks/{id}`: 204; 404 unknown; 403 predefined or in use.
pub async fn remove(Ext(st): St, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let mut nets = moat_engine::network::open(&st.paths)?;
        let n = nets.remove(&id)?;
        st.events.emit(
            "network",
            "destroy",
            &n.id,
            &[("name", &n.name), ("type", "bridge")],
        );
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: String,
    endpoint_config: Option<EndpointConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct EndpointConfig {
    aliases: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    ipam_config: Option<EndpointIpam>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EndpointIpam {
    #[serde(rename = "IPv4Address")]
    ipv4_address: String,
}

/// `POST /networks/{id}/connect`: the container joins it from its next start.
pub async fn connect(
    Ext(st): St,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<StatusCode, ApiError> {
    let b: ConnectBody = body(&b)?;
    let row = crate::containers::find(&st, &b.container).await?;
    let ep = b.endpoint_config.unwrap_or_default();
    let ip = match ep.ipam_config.filter(|i| !i.ipv4_address.is_empty()) {
        Some(i) => Some(
            moat_engine::network::parse_ip(&i.ipv4_address)
                .map_err(|e| ApiError::BadParameter(e.to_string()))?,
        ),
        None => None,
    };
    blocking(move || {
        let req = moat_net::Request {
            network: id.clone(),
            ip,
            mac: None,
            aliases: ep.aliases.unwrap_or_default(),
        };
        moat_engine::network::connect(&st.paths, &row, req)?;
        st.events
            .emit("network", "connect", &id, &[("container", &row.id)]);
        Ok(StatusCode::OK)
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DisconnectBody {
    container: String,
}

/// `POST /networks/{id}/disconnect`.
pub async fn disconnect(
    Ext(st): St,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<StatusCode, ApiError> {
    let b: DisconnectBody = body(&b)?;
    let row = crate::containers::find(&st, &b.container).await?;
    blocking(move || {
        moat_engine::network::disconnect(&st.paths, &row, &id)?;
        st.events
            .emit("network", "disconnect", &id, &[("container", &row.id)]);
        Ok(StatusCode::OK)
    })
    .await
}

/// `POST /networks/prune`: the user-defined networks no container uses.
pub async fn prune(Ext(st): St) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let mut nets = moat_engine::network::open(&st.paths)?;
        nets.reconcile()?;
        let eps = nets.endpoints()?;
        let mut deleted = vec![];
        for n in nets.list()? {
            let used = eps.iter().any(|e| e.network_id == n.id)
                || !moat_engine::network::users(&st.paths, &n.name).is_empty();
            if !n.is_predefined() && !used && nets.remove(&n.id).is_ok() {
                deleted.push(n.name);
            }
        }
        Ok(Json(json!({"NetworksDeleted": deleted})))
    })
    .await
}
