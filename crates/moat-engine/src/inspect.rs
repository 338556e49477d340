//! `inspect` of a container in the shape of Docker's `GET /containers/{id}/json`, the fields
//! tools read most (State, Config, HostConfig, Mounts, NetworkSettings), from the record and
//! the container's OCI config.

use serde_json::{json, Value};

use crate::containers::{Row, State};
use crate::Paths;

/// Docker's zero time, for times that did not happen.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn or_zero(t: &str) -> &str {
    if t.is_empty() {
        ZERO_TIME
    } else {
        t
    }
}

/// A container's labels (its config's annotations, moat's own excluded), sorted.
pub fn labels(paths: &Paths, id: &str) -> Vec<(String, String)> {
    let spec: Value = std::fs::read(paths.container_dir(id).join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let annotations = spec["annotations"].as_object();
    labels_of(
        annotations
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())),
    )
}

/// The labels among a config's annotations (moat's own excluded), sorted.
pub fn labels_of<'a>(
    annotations: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = annotations
        .filter(|(k, _)| !k.starts_with("moat."))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.sort();
    out
}

/// The container as Docker's API shows it.
pub fn container(paths: &Paths, row: &Row) -> Value {
    let dir = paths.container_dir(&row.id);
    let spec: Value = std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let process = &spec["process"];
    let (state, error) = row.effective();
    let running = state == State::Running;
    let paused = running && crate::lifecycle::is_paused(paths, row);
    let user = {
        let (u, g) = (&process["user"]["uid"], &process["user"]["gid"]);
        match (u.as_u64(), g.as_u64()) {
            (Some(0), Some(0)) | (None, _) => String::new(),
            (Some(u), Some(g)) => format!("{u}:{g}"),
            (Some(u), None) => u.to_string(),
        }
    };
    let (path, args) = match row.command.split_first() {
        Some((p, a)) => (p.clone(), a.to_vec()),
        None => (String::new(), vec![]),
    };
    let rotation = crate::logs::Rotation::decode(&row.log_rotation);
    let annotations = spec["annotations"].as_object().cloned().unwrap_or_default();
    let labels: serde_json::Map<String, Value> = annotations
        .iter()
        .filter(|(k, _)| !k.starts_with("moat."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let res = &spec["linux"]["resources"];
    let nano_cpus = match (res["cpu"]["quota"].as_i64(), res["cpu"]["period"].as_i64()) {
        (Some(q), Some(p)) if p > 0 => q * 1_000_000_000 / p,
        _ => 0,
    };
    let binds: Vec<String> = spec["mounts"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| {
                    m["type"] == "bind"
                        && !m["destination"].as_str().is_some_and(|d| {
                            ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"].contains(&d)
                        })
                })
                .map(|m| {
                    let ro = m["options"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|x| x == "ro"));
                    format!(
                        "{}:{}{}",
                        m["source"].as_str().unwrap_or(""),
                        m["destination"].as_str().unwrap_or(""),
                        if ro { ":ro" } else { "" }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut log_config = serde_json::Map::new();
    if let Some(s) = rotation.max_size {
        log_config.insert("max-size".into(), s.to_string().into());
        log_config.insert("max-file".into(), rotation.max_file.to_string().into());
    }
    let mut doc = json!({
        "Id": row.id,
        "Created": row.created,
        "Path": path,
        "Args": args,
        "State": {
            "Status": if paused { "paused" } else { state.as_str() },
            "Running": running,
            "Paused": paused,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": if running { row.pid } else { 0 },
            "ExitCode": row.exit_code,
            "Error": error,
            "StartedAt": or_zero(&row.started_at),
            "FinishedAt": or_zero(&row.finished_at),
        },
        "Image": row.image,
        "ResolvConfPath": dir.join("resolv.conf"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        "LogPath": crate::logs::path(&dir, &row.id),
        "Name": format!("/{}", row.name),
        "RestartCount": row.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {
            "AutoRemove": row.auto_remove,
            "RestartPolicy": {
                "Name": match crate::hostconfig::RestartPolicy::parse(&row.restart) {
                    Ok(crate::hostconfig::RestartPolicy::OnFailure(_)) => "on-failure".to_string(),
                    Ok(p) => p.encode(),
                    Err(_) => "no".into(),
                },
                "MaximumRetryCount": match crate::hostconfig::RestartPolicy::parse(&row.restart) {
                    Ok(crate::hostconfig::RestartPolicy::OnFailure(n)) => n,
                    _ => 0,
                },
            },
            "LogConfig": {"Type": "json-file", "Config": log_config},
            "NetworkMode": crate::network::mode(&dir, &spec),
            "PortBindings": crate::network::load(&dir).map(|p| crate::network::bindings(&p.ports)),
            "ReadonlyRootfs": spec["root"]["readonly"].as_bool().unwrap_or(false),
            "Init": spec["process"]["args"][0] == crate::spec::INIT_PATH,
            "Isolation": if spec["annotations"][crate::hostconfig::ISOLATION] == "vm" { "vm" } else { "" },
            "Memory": res["memory"]["limit"].as_i64().unwrap_or(0),
            "MemorySwap": res["memory"]["swap"].as_i64().unwrap_or(0),
            "NanoCpus": nano_cpus,
            "CpuShares": res["cpu"]["shares"].as_u64().unwrap_or(0),
            "CpusetCpus": res["cpu"]["cpus"].as_str().unwrap_or(""),
            "PidsLimit": res["pids"]["limit"].as_i64(),
            "Privileged": spec["linux"]["seccomp"].is_null() && spec["linux"]["maskedPaths"].as_array().is_some_and(|m| m.is_empty()),
            "Binds": binds,
        },
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "MergedDir": dir.join("rootfs"),
                "UpperDir": dir.join("upper"),
                "WorkDir": dir.join("work"),
            },
        },
        "Mounts": [],
        "Config": {
            "Hostname": spec["hostname"],
            "User": user,
            "Env": process["env"],
            "Cmd": row.command,
            "Image": row.image_ref,
            "WorkingDir": process["cwd"],
            "Tty": process["terminal"].as_bool().unwrap_or(false),
            "Labels": labels,
            "StopSignal": annotations.get(crate::hostconfig::STOP_SIGNAL).cloned().unwrap_or(Value::Null),
            "StopTimeout": annotations.get(crate::hostconfig::STOP_TIMEOUT).and_then(|t| t.as_str()?.parse::<u64>().ok()),
        },
        "NetworkSettings": crate::network::settings(paths, &row.id, running),
    });
    // Docker leaves both out for a container without a healthcheck.
    if let Some(check) = crate::health::load_config(&dir) {
        doc["Config"]["Healthcheck"] = json!(check);
    }
    if let Some(health) = crate::health::load(&dir) {
        doc["State"]["Health"] = json!(health);
    }
    doc
}
