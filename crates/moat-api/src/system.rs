//! `/_ping`, `/version`, `/info`: what clients ask first, to negotiate the API version and show
//! the engine.

use std::sync::Arc;

use axum::extract::State as Ext;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use moat_engine::containers::{Records, State as CState};
use serde_json::{json, Value};

use crate::error::{blocking, ApiError};
use crate::state::State;
use crate::{API_VERSION, MIN_API_VERSION};

/// `GET|HEAD /_ping`: `OK`, with the headers clients negotiate from.
pub async fn ping() -> Response {
    let mut r = "OK".into_response();
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    r
}

fn uname() -> (String, String) {
    let u = nix::sys::utsname::uname().ok();
    let kernel = u
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let host = u
        .as_ref()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_default();
    (kernel, host)
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `GET /version`.
pub async fn version() -> Json<Value> {
    let (kernel, _) = uname();
    let v = env!("CARGO_PKG_VERSION");
    Json(json!({
        "Platform": {"Name": "moat"},
        "Components": [{
            "Name": "Engine",
            "Version": v,
            "Details": {
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux",
                "Arch": arch(),
                "KernelVersion": kernel,
            }
        }],
        "Version": v,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel,
        "BuildTime": "",
    }))
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

/// `GET /info`.
pub async fn info(Ext(st): Ext<Arc<State>>) -> Result<Json<Value>, ApiError> {
    let st2 = st.clone();
    let (rows, images, vm_info) = blocking(move || {
        let rows = Records::open(&st2.paths.root)?.all()?;
        let images = moat_image::ImageStore::open(&st2.paths.images())?
            .images()?
            .len();
        Ok((rows, images, moat_engine::vm::info()))
    })
    .await?;
    let running = rows
        .iter()
        .filter(|r| r.effective().0 == CState::Running)
        .count();
    let paused = rows
        .iter()
        .filter(|r| moat_engine::present::state_word(&st.paths, r) == "paused")
        .count();
    let (kernel, host) = uname();
    let v = env!("CARGO_PKG_VERSION");
    Ok(Json(json!({
        "ID": "moat",
        "Containers": rows.len(),
        "ContainersRunning": running - paused,
        "ContainersPaused": paused,
        "ContainersStopped": rows.len() - running,
        "Images": images,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "overlayfs"]],
        "Plugins": {"Volume": ["local"], "Network": ["host", "null"], "Authorization": null, "Log": ["json-file"]},
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": false,
        "Debug": false,
        "NFd": 0,
        "NGoroutines": 0,
        "SystemTime": moat_image::store::now_rfc3339(),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "2" } else { "1" },
        "NEventsListener": 0,
        "KernelVersion": kernel,
        "OperatingSystem": os_name(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": ["127.0.0.0/8"], "Mirrors": []},
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": moat_engine::present::host_memory(),
        "DockerRootDir": st.paths.root,
        "Name": host,
        "Labels": vm_info
            .iter()
            .map(|(k, v)| format!("moat.{}={v}", k.to_lowercase().replace(' ', "-")))
            .collect::<Vec<_>>(),
        "ExperimentalBuild": false,
        "ServerVersion": v,
        "Runtimes": {"moat": {"path": "moat-runtime"}},
        "DefaultRuntime": "moat",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": false,
        "Isolation": vm_info.first().map(|(_, v)| v.clone()).unwrap_or_default(),
        "InitBinary": "",
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Warnings": [],
    })))
}

/// The body of `POST /auth` (`docker login`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct AuthBody {
    username: String,
    password: String,
    serveraddress: String,
}

/// `POST /auth`: checks credentials with the registry (the client stores them itself).
pub async fn auth(axum::Json(b): axum::Json<AuthBody>) -> Result<Json<Value>, ApiError> {
    let domain = moat_registry::credentials::login_domain(Some(&b.serveraddress));
    let opts = moat_registry::ClientOptions {
        credentials: Some(moat_registry::Credentials {
            username: b.username,
            password: b.password,
        }),
        ..Default::default()
    };
    blocking(move || {
        let client = moat_registry::Client::connect(&domain, &opts)
            .map_err(|e| ApiError::BadParameter(e.to_string()))?;
        client.check_login().map_err(|e| match e {
            moat_registry::ClientError::Unauthorized { .. } => {
                ApiError::Unauthorized(e.to_string())
            }
            e => ApiError::BadParameter(e.to_string()),
        })
    })
    .await?;
    Ok(Json(
        json!({"Status": "Login Succeeded", "IdentityToken": ""}),
    ))
}
