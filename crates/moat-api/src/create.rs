//! `POST /containers/create`: Docker's container config (`Config` + `HostConfig`, as the
//! docker CLI, docker-py and compose send it) turned into the engine's run options.

use std::collections::HashMap;

use moat_engine::hostconfig::{self as h, HostConfig, RestartPolicy};
use moat_engine::logs::Rotation;
use moat_engine::run::CreateExtras;
use moat_engine::spec::{Network, RunOptions};
use serde::Deserialize;

use crate::error::ApiError;

/// The body of `POST /containers/create` (the fields moat acts on; others are ignored, as
/// dockerd ignores what does not apply).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    image: String,
    cmd: Option<StringOrList>,
    entrypoint: Option<StringOrList>,
    env: Option<Vec<String>>,
    working_dir: String,
    user: String,
    hostname: String,
    tty: bool,
    open_stdin: bool,
    labels: Option<HashMap<String, String>>,
    stop_signal: Option<String>,
    stop_timeout: Option<i64>,
    healthcheck: Option<moat_engine::health::Healthcheck>,
    host_config: Option<HostConfigBody>,
    networking_config: Option<NetworkingBody>,
}

/// `NetworkingConfig`: per network, the endpoint's settings (compose sends the service name
/// as an alias here).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkingBody {
    endpoints_config: Option<HashMap<String, EndpointBody>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct EndpointBody {
    aliases: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    ipam_config: Option<IpamBody>,
    mac_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IpamBody {
    #[serde(rename = "IPv4Address")]
    ipv4_address: String,
}

/// One `PortBindings` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PortBindingBody {
    host_ip: String,
    host_port: String,
}

/// `Cmd` and `Entrypoint` come as a list, or (older clients) as one string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    List(Vec<String>),
}

impl StringOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) if s.is_empty() => vec![],
            StringOrList::One(s) => vec![s],
            StringOrList::List(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct HostConfigBody {
    auto_remove: bool,
    binds: Option<Vec<String>>,
    mounts: Option<Vec<MountBody>>,
    memory: i64,
    memory_swap: i64,
    nano_cpus: i64,
    cpu_shares: i64,
    cpuset_cpus: String,
    pids_limit: Option<i64>,
    ulimits: Option<Vec<UlimitBody>>,
    cap_add: Option<Vec<String>>,
    cap_drop: Option<Vec<String>>,
    privileged: bool,
    tmpfs: Option<HashMap<String, String>>,
    network_mode: String,
    port_bindings: Option<HashMap<String, Option<Vec<PortBindingBody>>>>,
    init: Option<bool>,
    dns: Option<Vec<String>>,
    publish_all_ports: bool,
    readonly_rootfs: bool,
    security_opt: Option<Vec<String>>,
    restart_policy: Option<RestartBody>,
    isolation: String,
    log_config: Option<LogConfigBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct MountBody {
    #[serde(rename = "Type")]
    kind: String,
    source: String,
    target: String,
    read_only: bool,
    tmpfs_options: Option<TmpfsBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TmpfsBody {
    size_bytes: i64,
    mode: u32,
}

impl MountBody {
    /// As the `--mount` it stands for (one validation for both).
    fn to_flag(&self) -> String {
        let mut f = format!("type={},target={}", self.kind, self.target);
        if !self.source.is_empty() {
            f += &format!(",source={}", self.source);
        }
        if self.read_only {
            f += ",readonly";
        }
        if let Some(t) = &self.tmpfs_options {
            if t.size_bytes > 0 {
                f += &format!(",tmpfs-size={}", t.size_bytes);
            }
            if t.mode != 0 {
                f += &format!(",tmpfs-mode={:o}", t.mode);
            }
        }
        f
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct UlimitBody {
    name: String,
    soft: i64,
    hard: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RestartBody {
    name: String,
    maximum_retry_count: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct LogConfigBody {
    #[serde(rename = "Type")]
    kind: String,
    config: Option<HashMap<String, String>>,
}

/// `NetworkMode`, `PortBindings` and `NetworkingConfig` as the engine's network plan.
fn net_plan(
    hc: &HostConfigBody,
    networking: Option<&NetworkingBody>,
) -> Result<(Network, moat_engine::network::Plan), ApiError> {
    use moat_engine::network as n;
    let (network, name) = Network::parse(&hc.network_mode);
    let mut plan = n::Plan::default();
    let endpoints = networking.and_then(|n| n.endpoints_config.as_ref());
    if let Some(name) = name {
        let ep = endpoints.and_then(|e| e.get(&name).or_else(|| e.values().next()));
        let mut req = moat_net::Request {
            network: name,
            ..Default::default()
        };
        if let Some(ep) = ep {
            req.aliases = ep.aliases.clone().unwrap_or_default();
            if let Some(ip) = ep
                .ipam_config
                .as_ref()
                .filter(|i| !i.ipv4_address.is_empty())
            {
                req.ip = Some(n::parse_ip(&ip.ipv4_address).map_err(bad)?);
            }
            if !ep.mac_address.is_empty() {
                req.mac = Some(n::parse_mac(&ep.mac_address).map_err(bad)?);
            }
        }
        plan.networks.push(req);
    }
    for d in hc.dns.iter().flatten() {
        plan.dns.push(
            d.parse()
                .map_err(|_| bad(format!("invalid DNS server address {d:?}")))?,
        );
    }
    for (port, bindings) in hc.port_bindings.iter().flatten() {
        for b in bindings.iter().flatten() {
            let ip = if b.host_ip.is_empty() || b.host_ip == "::" {
                String::new()
            } else {
                format!("{}:", b.host_ip)
            };
            let spec = format!("{ip}{}:{port}", b.host_port);
            plan.ports.extend(n::parse_publish(&spec).map_err(bad)?);
        }
    }
    Ok((network, plan))
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadParameter(e.to_string())
}

/// Parses a create body: the run options, the extras, and Docker's warnings.
pub fn options(
    body: &[u8],
    name: Option<String>,
) -> Result<(RunOptions, CreateExtras, Vec<String>), ApiError> {
    let b: CreateBody = serde_json::from_slice(body)
        .map_err(|e| bad(format!("invalid JSON in the request body: {e}")))?;
    if b.image.is_empty() {
        return Err(bad("no image was given (Config.Image is empty)"));
    }
    let hc = b.host_config.unwrap_or_default();
    let warnings = vec![];
    let vm = h::parse_isolation(&hc.isolation).map_err(bad)?;
    let (network, net) = net_plan(&hc, b.networking_config.as_ref())?;

    let mut seccomp_unconfined = false;
    let mut no_new_privileges = false;
    for o in hc.security_opt.iter().flatten() {
        match o.as_str() {
            "seccomp=unconfined" | "seccomp:unconfined" => seccomp_unconfined = true,
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {
                no_new_privileges = true
            }
            "no-new-privileges=false" | "no-new-privileges:false" => no_new_privileges = false,
            other => return Err(bad(format!("security option {other:?} is not supported"))),
        }
    }
    let restart = match hc.restart_policy {
        Some(r) if r.name == "on-failure" => RestartPolicy::OnFailure(r.maximum_retry_count),
        Some(r) => RestartPolicy::parse(&r.name).map_err(bad)?,
        None => RestartPolicy::No,
    };
    if hc.auto_remove && restart != RestartPolicy::No {
        return Err(bad(
            "conflicting options: cannot combine a restart policy with AutoRemove",
        ));
    }
    let rotation = match hc.log_config {
        Some(l) if !(l.kind.is_empty() || l.kind == "json-file") => {
            return Err(bad(format!(
                "log driver {:?} is not supported (json-file only)",
                l.kind
            )))
        }
        Some(l) => {
            let opts: Vec<String> = l
                .config
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            Rotation::parse(&opts).map_err(bad)?
        }
        None => Rotation::default(),
    };
    let cap = |v: Option<Vec<String>>| -> Result<Vec<String>, ApiError> {
        v.unwrap_or_default()
            .iter()
            .map(|c| h::parse_capability(c).map_err(bad))
            .collect()
    };
    let stop_signal = b.stop_signal.filter(|s| !s.is_empty());
    let host = HostConfig {
        memory: (hc.memory > 0).then_some(hc.memory),
        memory_swap: (hc.memory_swap != 0).then_some(hc.memory_swap),
        cpus: (hc.nano_cpus > 0).then(|| hc.nano_cpus as f64 / 1e9),
        cpu_shares: (hc.cpu_shares > 0).then_some(hc.cpu_shares as u64),
        cpuset_cpus: (!hc.cpuset_cpus.is_empty()).then_some(hc.cpuset_cpus),
        pids_limit: hc.pids_limit.filter(|p| *p != 0),
        ulimits: hc
            .ulimits
            .unwrap_or_default()
            .into_iter()
            .map(|u| h::parse_ulimit(&format!("{}={}:{}", u.name, u.soft, u.hard)).map_err(bad))
            .collect::<Result<_, _>>()?,
        cap_add: cap(hc.cap_add)?,
        cap_drop: cap(hc.cap_drop)?,
        privileged: hc.privileged,
        vm,
        binds: hc
            .binds
            .unwrap_or_default()
            .iter()
            .map(|s| h::parse_bind(s).map_err(bad))
            .collect::<Result<_, _>>()?,
        tmpfs: hc
            .tmpfs
            .unwrap_or_default()
            .into_iter()
            .map(|(p, o)| {
                h::parse_tmpfs(&if o.is_empty() {
                    p.clone()
                } else {
                    format!("{p}:{o}")
                })
                .map_err(bad)
            })
            .collect::<Result<_, _>>()?,
        labels: b.labels.unwrap_or_default().into_iter().collect(),
        stop_signal,
        stop_timeout: b.stop_timeout.and_then(|t| u64::try_from(t).ok()),
    };
    let mut host = host;
    for m in hc.mounts.unwrap_or_default() {
        match h::parse_mount(&m.to_flag()).map_err(bad)? {
            h::Mount::Bind(b) => host.binds.push(b),
            h::Mount::Tmpfs(path, opts) => host.tmpfs.push((path, opts)),
        }
    }
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let opts = RunOptions {
        image: b.image,
        cmd: b.cmd.map(StringOrList::into_vec).unwrap_or_default(),
        entrypoint: b.entrypoint.map(StringOrList::into_vec),
        env: b.env.unwrap_or_default(),
        workdir: nonempty(b.working_dir),
        user: nonempty(b.user),
        hostname: nonempty(b.hostname),
        rm: hc.auto_remove,
        network,
        net,
        publish_all: hc.publish_all_ports,
        init: hc.init.unwrap_or(false),
        read_only: hc.readonly_rootfs,
        seccomp_unconfined,
        no_new_privileges,
        host,
        tty: b.tty,
        tty_size: None,
        restart,
        healthcheck: b.healthcheck,
    };
    let _ = b.open_stdin;
    Ok((
        opts,
        CreateExtras {
            name,
            rotation,
            detach_keys: None,
        },
        warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_what_the_docker_cli_sends() {
        let body = br#"{"Image":"busybox","Cmd":["echo","hi"],"Env":["A=1"],"Tty":false,
            "Labels":{"k":"v"},"StopSignal":"SIGUSR1",
            "HostConfig":{"AutoRemove":true,"Memory":67108864,"NanoCpus":500000000,
            "NetworkMode":"none","Binds":["/tmp:/data:ro"],"CapDrop":["NET_RAW"],
            "Ulimits":[{"Name":"nofile","Soft":100,"Hard":200}],"Tmpfs":{"/run":""},
            "LogConfig":{"Type":"json-file","Config":{"max-size":"1m","max-file":"2"}}}}"#;
        let (o, extras, warnings) = options(body, Some("web".into())).unwrap();
        assert_eq!(o.image, "busybox");
        assert_eq!(o.cmd, ["echo", "hi"]);
        assert!(o.rm);
        assert_eq!(o.host.memory, Some(64 << 20));
        assert_eq!(o.host.cpus, Some(0.5));
        assert_eq!(o.host.binds[0].destination, "/data");
        assert_eq!(o.host.cap_drop, ["CAP_NET_RAW"]);
        assert_eq!(o.host.labels, [("k".to_string(), "v".to_string())]);
        assert_eq!(o.host.stop_signal.as_deref(), Some("SIGUSR1"));
        assert_eq!(extras.name.as_deref(), Some("web"));
        assert_eq!(extras.rotation.max_file, 2);
        assert!(warnings.is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_do_with_a_reason() {
        for (body, needle) in [
            (r#"{"Cmd":["x"]}"#, "no image"),
            (
                r#"{"Image":"b","HostConfig":{"Isolation":"kvm"}}"#,
                "invalid isolation",
            ),
            (
                r#"{"Image":"b","HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"x"}]}}}"#,
                "invalid publish spec",
            ),
            (
                r#"{"Image":"b","HostConfig":{"LogConfig":{"Type":"syslog"}}}"#,
                "json-file",
            ),
            (
                r#"{"Image":"b","HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#,
                "conflicting",
            ),
            ("{", "invalid JSON"),
        ] {
            let err = options(body.as_bytes(), None).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
        // A network's name, its endpoint settings and the port bindings become the plan (the
        // network's existence is the engine's to check at create).
        let (o, _, w) = options(
            br#"{"Image":"b","HostConfig":{"NetworkMode":"mynet","PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}]}},
                "NetworkingConfig":{"EndpointsConfig":{"mynet":{"Aliases":["web"],"IPAMConfig":{"IPv4Address":"10.1.0.9"}}}}}"#,
            None,
        )
        .unwrap();
        assert!(w.is_empty());
        assert_eq!(o.network, Network::Bridge);
        assert_eq!(o.net.networks[0].network, "mynet");
        assert_eq!(o.net.networks[0].aliases, ["web"]);
        assert_eq!(o.net.networks[0].ip, Some("10.1.0.9".parse().unwrap()));
        assert_eq!(
            (o.net.ports[0].host_port, o.net.ports[0].container_port),
            (8080, 80)
        );
    }
}
