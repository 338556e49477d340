//! A container's networking, the engine's side: the `--network`, `-p` and related flags
//! parsed into a plan (kept in the container's directory as `network.json`), the plan carried
//! out at each start by the monitor (endpoints, published ports, `/etc/hosts`, the helper that
//! proxies ports and answers DNS) and undone at each stop.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use moat_net::{Networks, PortRequest, Request};

use crate::{EngineError, Paths};

/// What a container asks of its networks: the networks to join (the first has the default
/// route), the ports to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The networks, each with its `--ip`, `--mac-address` and aliases.
    pub networks: Vec<Request>,
    /// `-p` (and `-P`, resolved against the image's exposed ports at create).
    pub ports: Vec<PortRequest>,
    /// `--dns`: the resolvers the embedded DNS forwards to (the host's when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::IpAddr>,
    /// `--network container:NAME`: the container whose namespace it joins (no networks then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

const PLAN: &str = "network.json";

/// Errors of the network flags.
#[derive(Debug, thiserror::Error)]
pub enum NetFlagError {
    /// A `-p` value that does not parse.
    #[error("invalid publish spec {0:?}: expected [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]")]
    Publish(String),
    /// A protocol other than tcp and udp.
    #[error("invalid protocol {proto:?} in {spec:?}: tcp or udp")]
    Proto {
        /// The protocol.
        proto: String,
        /// The whole value.
        spec: String,
    },
    /// A bad `--ip`.
    #[error("invalid IPv4 address {0:?}")]
    Ip(String),
    /// A bad `--mac-address`.
    #[error("invalid MAC address {0:?}")]
    Mac(String),
}

/// The netns pins' directory of an engine: tmpfs for the system's root (gone at reboot, as
/// the namespaces are), else inside the root.
pub fn config(paths: &Paths) -> moat_net::Config {
    let default = paths.root == Path::new("/var/lib/moat");
    let dir = if default {
        PathBuf::from("/run/moat/netns")
    } else {
        paths.root.join("netns")
    };
    moat_net::Config::new(&paths.root, dir, default)
}

/// Opens the networks of an engine.
pub fn open(paths: &Paths) -> Result<Networks, EngineError> {
    Ok(Networks::open(config(paths))?)
}

/// Parses `-p [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]` (ports or equal-length ranges).
pub fn parse_publish(spec: &str) -> Result<Vec<PortRequest>, NetFlagError> {
    let bad = || NetFlagError::Publish(spec.into());
    let (addr_ports, proto) = match spec.rsplit_once('/') {
        Some((a, p)) => (a, p),
        None => (spec, "tcp"),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(NetFlagError::Proto {
            proto: proto.into(),
            spec: spec.into(),
        });
    }
    let parts: Vec<&str> = addr_ports.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [i, h, c] => (*i, *h, *c),
        _ => return Err(bad()),
    };
    let host_ip: Ipv4Addr = if ip.is_empty() {
        Ipv4Addr::UNSPECIFIED
    } else {
        ip.parse().map_err(|_| bad())?
    };
    let range = |s: &str| -> Result<(u16, u16), NetFlagError> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let (a, b): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a == 0 || b < a {
            return Err(bad());
        }
        Ok((a, b))
    };
    let (c0, c1) = range(ctr)?;
    let hosts = if host.is_empty() {
        None
    } else {
        let (h0, h1) = range(host)?;
        if h1 - h0 != c1 - c0 {
            return Err(bad());
        }
        Some(h0)
    };
    Ok((c0..=c1)
        .map(|c| PortRequest {
            proto: proto.into(),
            host_ip,
            host_port: hosts.map_or(0, |h0| h0 + (c - c0)),
            container_port: c,
            group: String::new(),
        })
        .collect())
}

/// The image's exposed ports (`-P` publishes each on a port the kernel picks).
pub fn exposed(image_config: &serde_json::Value) -> Vec<PortRequest> {
    let mut out = vec![];
    if let Some(m) = image_config["config"]["ExposedPorts"].as_object() {
        for k in m.keys() {
            let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
            if let (Ok(p), "tcp" | "udp") = (port.parse::<u16>(), proto) {
                out.push(PortRequest {
                    proto: proto.into(),
                    host_ip: Ipv4Addr::UNSPECIFIED,
                    host_port: 0,
                    container_port: p,
                    group: String::new(),
                });
            }
        }
    }
    out
}

/// Parses `--ip`.
pub fn parse_ip(s: &str) -> Result<Ipv4Addr, NetFlagError> {
    s.parse().map_err(|_| NetFlagError::Ip(s.into()))
}

/// Parses `--mac-address`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetFlagError> {
    moat_net::ipam::parse_mac(s).ok_or_else(|| NetFlagError::Mac(s.into()))
}

/// Saves the plan in the container's directory.
pub fn save(dir: &Path, plan: &Plan) -> Result<(), EngineError> {
    let path = dir.join(PLAN);
    let text = serde_json::to_string(plan).map_err(|e| EngineError::Spec(e.to_string()))?;
    fs::write(&path, text).map_err(|source| EngineError::Io {
        what: "write",
        path,
        source,
    })
}

/// The plan of a container (`None`: it has no network of its own to set up).
pub fn load(dir: &Path) -> Option<Plan> {
    let text = fs::read_to_string(dir.join(PLAN)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The lines of a resolv.conf for a container: the host's resolvers (but loopback ones,
/// unreachable from the container) or the `--dns` ones, or, on a user-defined network, the
/// embedded DNS (which forwards to those) with the host's search domains and options, as
/// Docker writes them.
pub fn resolv_conf(host: &str, embedded: bool, dns: &[std::net::IpAddr]) -> String {
    let mut out: Vec<String> = vec![];
    if embedded {
        out.push(format!("nameserver {}", moat_net::dns::ADDRESS));
    } else {
        out.extend(dns.iter().map(|a| format!("nameserver {a}")));
    }
    let embedded = embedded || !dns.is_empty();
    for l in host.lines() {
        let mut w = l.split_whitespace();
        let first = w.next();
        let loopback = first == Some("nameserver")
            && w.next()
                .is_some_and(|a| a.starts_with("127.") || a == "::1");
        if first == Some("nameserver") && (embedded || loopback) {
            continue;
        }
        out.push(l.to_string());
    }
    if out.first().is_some_and(|l| l.ends_with(" 127.0.0.11"))
        && !host.lines().any(|l| l.trim_start().starts_with("options"))
    {
        out.push("options ndots:0".into());
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// The /etc/hosts of a container with these addresses.
pub fn hosts(hostname: &str, addrs: &[Ipv4Addr]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    match addrs.first() {
        Some(a) => s.push_str(&format!("{a}\t{hostname}\n")),
        None => s.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    s
}

/// The containers (ids) whose plan names network `name`, running or not: a network they use
/// is not pruned.
pub fn users(paths: &Paths, name: &str) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(paths.root.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| load(&e.path()).is_some_and(|p| p.networks.iter().any(|n| n.network == name)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// `network connect`: container `row` joins network `req.network`: a running one at once
/// (one more interface), any from its next start.
pub fn connect(
    paths: &Paths,
    row: &crate::containers::Row,
    mut req: Request,
) -> Result<(), EngineError> {
    let dir = paths.container_dir(&row.id);
    let net = open(paths)?.get(&req.network)?;
    if net.driver != "bridge" {
        return Err(moat_net::NetError::NotBridge(net.name).into());
    }
    let mut plan = match load(&dir) {
        Some(p) if p.container.is_none() => p,
        _ => {
            return Err(EngineError::Conflict(format!(
                "container {} cannot be connected to network {}: its network mode is host, none or another container's",
                row.name, net.name
            )))
        }
    };
    if plan.networks.iter().any(|n| n.network == net.name) {
        return Err(EngineError::Conflict(format!(
            "endpoint with name {} already exists in network {}",
            row.name, net.name
        )));
    }
    req.network = net.name;
    // A running container joins now too, its monitor holding the endpoint.
    if row.effective().0 == crate::containers::State::Running {
        open(paths)?.attach_running(&row.id, &row.name, &req, row.monitor)?;
    }
    plan.networks.push(req);
    save(&dir, &plan)
}

/// `network disconnect`: the container leaves network `network` (a running one at once).
pub fn disconnect(
    paths: &Paths,
    row: &crate::containers::Row,
    network: &str,
) -> Result<(), EngineError> {
    let dir = paths.container_dir(&row.id);
    let net = open(paths)?.get(network)?;
    let mut plan = load(&dir).unwrap_or_default();
    let before = plan.networks.len();
    plan.networks.retain(|n| n.network != net.name);
    if plan.networks.len() == before {
        return Err(EngineError::Conflict(format!(
            "container {} is not connected to network {}",
            row.name, net.name
        )));
    }
    if row.effective().0 == crate::containers::State::Running {
        open(paths)?.detach_running(&row.id, &net.name)?;
    }
    save(&dir, &plan)
}

/// `moat system reset`'s network part: every bridge, rule and namespace pin of the root gone
/// (its containers must be removed first).
pub fn teardown(paths: &Paths) -> Result<(), EngineError> {
    let cfg = config(paths);
    let mut nets = Networks::open(cfg.clone())?;
    nets.teardown()?;
    for e in fs::read_dir(&cfg.netns_dir).into_iter().flatten().flatten() {
        moat_net::netns::remove(&e.path());
    }
    Ok(())
}

/// The published ports of every running container of the engine (none when the records
/// cannot be read: `ps` still lists).
pub fn published(paths: &Paths) -> Vec<moat_net::Port> {
    open(paths).and_then(|n| Ok(n.ports()?)).unwrap_or_default()
}

/// `ps`'s PORTS cell for container `id`: `0.0.0.0:8080->80/tcp, ...`.
pub fn ports_text(ports: &[moat_net::Port], id: &str) -> String {
    ports
        .iter()
        .filter(|p| p.container_id == id)
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip, p.host_port, p.container_port, p.proto
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Ports` of the API's container list for container `id`.
pub fn ports_json(ports: &[moat_net::Port], id: &str) -> serde_json::Value {
    ports
        .iter()
        .filter(|p| p.container_id == id)
        .map(|p| {
            serde_json::json!({
                "IP": p.host_ip.to_string(),
                "PrivatePort": p.container_port,
                "PublicPort": p.host_port,
                "Type": p.proto,
            })
        })
        .collect()
}

/// `HostConfig.PortBindings` of a plan's ports (host port "" for one the kernel picks).
pub fn bindings(ports: &[PortRequest]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for p in ports {
        let key = format!("{}/{}", p.container_port, p.proto);
        let host_ip = if p.host_ip.is_unspecified() {
            String::new()
        } else {
            p.host_ip.to_string()
        };
        let port = if p.host_port == 0 {
            String::new()
        } else {
            p.host_port.to_string()
        };
        let e = serde_json::json!({"HostIp": host_ip, "HostPort": port});
        match m.get_mut(&key).and_then(|v| v.as_array_mut()) {
            Some(l) => l.push(e),
            None => {
                m.insert(key, serde_json::json!([e]));
            }
        }
    }
    serde_json::Value::Object(m)
}

/// `HostConfig.NetworkMode` of a container: a network's name, `container:NAME`, `none` or
/// `host` (from its plan, or its OCI config for the latter two).
pub fn mode(dir: &Path, spec: &serde_json::Value) -> String {
    if let Some(p) = load(dir) {
        if let Some(c) = p.container {
            return format!("container:{c}");
        }
        if let Some(n) = p.networks.first() {
            return n.network.clone();
        }
    }
    let own = spec["linux"]["namespaces"]
        .as_array()
        .is_some_and(|n| n.iter().any(|n| n["type"] == "network"));
    if own { "none" } else { "host" }.into()
}

/// Docker's `NetworkSettings` of a container: its networks (with the address while it runs),
/// its published ports, and (for the first network) the legacy top-level address fields.
pub fn settings(paths: &Paths, id: &str, running: bool) -> serde_json::Value {
    use serde_json::json;
    let dir = paths.container_dir(id);
    let plan = load(&dir).unwrap_or_default();
    let (eps, ports, all) = match (running, open(paths)) {
        (true, Ok(mut n)) => (
            n.endpoints().unwrap_or_default(),
            n.ports().unwrap_or_default(),
            n.list().unwrap_or_default(),
        ),
        _ => (vec![], vec![], vec![]),
    };
    let mut networks = serde_json::Map::new();
    let mut first = None;
    for r in &plan.networks {
        let net = all.iter().find(|n| n.name == r.network);
        let ep = net.and_then(|n| {
            eps.iter()
                .find(|e| e.network_id == n.id && e.container_id == id)
        });
        let prefix = net.and_then(|n| n.subnet).map_or(0, |s| s.prefix_len());
        let v = json!({
            "IPAMConfig": r.ip.map(|ip| json!({"IPv4Address": ip.to_string()})),
            "Links": null,
            "Aliases": if r.aliases.is_empty() { serde_json::Value::Null } else { json!(r.aliases) },
            "MacAddress": ep.map_or(String::new(), |e| e.mac.clone()),
            "NetworkID": net.map_or(String::new(), |n| n.id.clone()),
            "EndpointID": ep.map_or(String::new(), moat_net::endpoint_id),
            "Gateway": match (ep, net.and_then(|n| n.gateway)) { (Some(_), Some(g)) => g.to_string(), _ => String::new() },
            "IPAddress": ep.map_or(String::new(), |e| e.ip.to_string()),
            "IPPrefixLen": if ep.is_some() { prefix } else { 0 },
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "DNSNames": ep.map(|e| {
                let mut names = vec![e.container_name.clone()];
                names.extend(e.aliases.iter().cloned());
                names.push(id[..12].to_string());
                names
            }),
        });
        if first.is_none() {
            first = Some(v.clone());
        }
        networks.insert(r.network.clone(), v);
    }
    let mut published = serde_json::Map::new();
    for p in plan.ports.iter() {
        published.insert(
            format!("{}/{}", p.container_port, p.proto),
            serde_json::Value::Null,
        );
    }
    for p in ports.iter().filter(|p| p.container_id == id) {
        let key = format!("{}/{}", p.container_port, p.proto);
        let entry = json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()});
        match published.get_mut(&key).and_then(|v| v.as_array_mut()) {
            Some(list) => list.push(entry),
            None => {
                published.insert(key, json!([entry]));
            }
        }
    }
    let f = first.unwrap_or(serde_json::Value::Null);
    let sandbox = if running && !plan.networks.is_empty() {
        config(paths).netns_path(id).display().to_string()
    } else {
        String::new()
    };
    json!({
        "Bridge": "",
        "SandboxID": "",
        "SandboxKey": sandbox,
        "Ports": published,
        "IPAddress": f["IPAddress"].as_str().unwrap_or(""),
        "IPPrefixLen": f["IPPrefixLen"].as_u64().unwrap_or(0),
        "Gateway": f["Gateway"].as_str().unwrap_or(""),
        "MacAddress": f["MacAddress"].as_str().unwrap_or(""),
        "Networks": networks,
    })
}

/// A started container's network, for its monitor to undo.
#[derive(Debug)]
pub struct Running {
    helper: Option<nix::unistd::Pid>,
}

/// At a start: the plan carried out for container `id` (name `name`), its /etc/hosts
/// rewritten with its address, and a helper process forked to proxy ports and answer DNS.
/// `None` when the container has no network plan (none, host, container:).
pub fn start(paths: &Paths, id: &str, name: &str) -> Result<Option<Running>, EngineError> {
    let dir = paths.container_dir(id);
    let Some(plan) = load(&dir) else {
        return Ok(None);
    };
    if let Some(target) = &plan.container {
        join_target(paths, &dir, target)?;
        return Ok(None);
    }
    if plan.networks.is_empty() {
        return Ok(None);
    }
    let mut nets = open(paths)?;
    log::debug!("network: records open");
    // With a healthcheck, shared ports wait for the container to be healthy.
    let deferred = crate::health::load_config(&dir)
        .and_then(|c| c.command())
        .is_some();
    let attached = nets.attach(id, name, &plan.networks, &plan.ports, deferred)?;
    drop(nets);
    log::debug!("network: attached");
    // Whatever fails from here undoes the attach (nothing is left for a start that failed).
    let finished = finish_start(paths, id, &dir, attached, &plan);
    if finished.is_err() {
        if let Ok(mut n) = open(paths) {
            let _ = n.detach(id, true);
        }
    }
    finished.map(Some)
}

/// `--network container:NAME` at each start: the namespace of `target` as it runs now (its
/// pin, or its init's), written into the config the runtime reads. A namespace found at
/// create could belong to another process by now (pids are reused); a target that does not
/// run is refused, as Docker does.
fn join_target(paths: &Paths, dir: &Path, target: &str) -> Result<(), EngineError> {
    let row = crate::containers::Records::open(&paths.root)?.find(target)?;
    if row.effective().0 != crate::containers::State::Running || row.pid <= 0 {
        return Err(EngineError::Conflict(format!(
            "cannot join network namespace of container {target}: it is not running"
        )));
    }
    let pin = config(paths).netns_path(&row.id);
    let ns = if pin.exists() {
        pin
    } else {
        PathBuf::from(format!("/proc/{}/ns/net", row.pid))
    };
    crate::spec::edit_config(dir, |doc| {
        if let Some(list) = doc["linux"]["namespaces"].as_array_mut() {
            for n in list.iter_mut().filter(|n| n["type"] == "network") {
                n["path"] = serde_json::json!(ns);
            }
        }
        Ok(true)
    })
}

/// The rest of a start once attached: /etc/hosts, and the helper when ports or names need one.
fn finish_start(
    paths: &Paths,
    id: &str,
    dir: &Path,
    attached: moat_net::Attached,
    plan: &Plan,
) -> Result<Running, EngineError> {
    let hostname = fs::read_to_string(dir.join("hostname")).unwrap_or_default();
    let addrs: Vec<Ipv4Addr> = attached.endpoints.iter().map(|(_, e)| e.ip).collect();
    let hosts_path = dir.join("hosts");
    fs::write(&hosts_path, hosts(hostname.trim(), &addrs)).map_err(|source| EngineError::Io {
        what: "write",
        path: hosts_path,
        source,
    })?;
    let helper = if attached.needs_helper() {
        let pid = fork_helper(paths, id, attached, &plan.dns)?;
        // For `drain`, from other processes: the pid with its start time (pids are reused).
        if let Some((start, _)) = moat_runtime::state::proc_start_time(pid.as_raw()) {
            let _ = fs::write(dir.join(HELPER), format!("{} {start}", pid.as_raw()));
        }
        Some(pid)
    } else {
        None
    };
    Ok(Running { helper })
}

/// The file in a container's directory naming its network helper: `PID START-TIME`.
const HELPER: &str = "net-helper";

/// Puts running container `id` into the groups of its shared published ports (`ready`: it is
/// healthy) or takes it out (unhealthy, or about to stop, as a rolling update's old replica):
/// the rules send new connections from outside to the group's ready containers only, and its
/// helper listens on the host ports or stops accepting (queued connections move to the
/// others' listeners); connections under way go on. Whether anything changed.
pub fn set_ready(paths: &Paths, id: &str, ready: bool) -> Result<bool, EngineError> {
    let changed = open(paths)?.set_ready(id, ready)?;
    if !changed {
        return Ok(false);
    }
    let text = fs::read_to_string(paths.container_dir(id).join(HELPER)).unwrap_or_default();
    let mut words = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    if let (Some(Some(pid)), Some(Some(start))) = (words.next(), words.next()) {
        let pid = pid as i32;
        if moat_runtime::state::proc_start_time(pid).map(|(s, _)| s) == Some(start) {
            let signal = if ready {
                nix::sys::signal::Signal::SIGUSR2
            } else {
                nix::sys::signal::Signal::SIGUSR1
            };
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }
    Ok(changed)
}

/// At a stop, before the exit is reported: the helper ended (the ports it held are free), the
/// endpoints and port rules released. What is left to delete (veths, the pin) is returned for
/// after the report.
pub fn stop(
    paths: &Paths,
    id: &str,
    running: Running,
) -> Result<Option<moat_net::Released>, EngineError> {
    if let Some(pid) = running.helper {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        let _ = fs::remove_file(paths.container_dir(id).join(HELPER));
    }
    Ok(open(paths)?.release(id, true)?)
}

/// Forks the helper: it serves the published ports and the DNS responder on threads until it
/// is killed (or its monitor dies: it gets SIGKILL then).
fn fork_helper(
    paths: &Paths,
    id: &str,
    attached: moat_net::Attached,
    dns: &[std::net::IpAddr],
) -> Result<nix::unistd::Pid, EngineError> {
    // A container only on internal networks has no way out, its questions included (the
    // resolver forwarding them would leak what it asks: CVE-2024-29018): ours are answered,
    // the rest fail.
    let internal_only = attached.endpoints.iter().all(|(n, _)| n.internal);
    let upstreams: moat_net::dns::Upstreams = if internal_only {
        std::sync::Arc::new(Vec::new)
    } else if dns.is_empty() {
        moat_net::dns::from_resolv_conf(PathBuf::from("/etc/resolv.conf"))
    } else {
        let fixed: Vec<std::net::SocketAddr> = dns
            .iter()
            .map(|a| std::net::SocketAddr::new(*a, 53))
            .collect();
        std::sync::Arc::new(move || fixed.clone())
    };
    let root = paths.root.clone();
    let id = id.to_string();
    let monitor = nix::unistd::getpid();
    // SAFETY: the monitor is single-threaded here (the namespace's thread has been joined),
    // so the child may allocate and start threads of its own.
    match unsafe { nix::unistd::fork() } {
        Err(source) => Err(EngineError::Sys {
            what: "fork the network helper",
            source,
        }),
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(child),
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            // The monitor may have died before the request took: then nobody would end us.
            if nix::unistd::getppid() != monitor {
                // SAFETY: ends the forked helper without running the monitor's exit handlers.
                unsafe { libc::_exit(0) };
            }
            // The caller's terminal or pipes, and the monitor's report pipe, are not the
            // helper's to hold open (a reader waiting for their end would wait for it too).
            if let Ok(null) = fs::File::options().read(true).write(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
                let _ = nix::unistd::dup2_stderr(&null);
                // The monitor's log is a copy of the caller's stderr: not the helper's either.
                crate::monitor::release_log_copy();
            }
            // SAFETY: closes the report pipe's descriptor, which nothing here owns.
            unsafe { libc::close(crate::monitor::REPORT_FD) };
            let moat_net::Attached {
                ports,
                listeners,
                dns,
                ..
            } = attached;
            // `set_ready` signals (SIGUSR2: listen, SIGUSR1: stop accepting) are taken by
            // this thread: blocked before the others start.
            use nix::sys::signal::Signal;
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(Signal::SIGUSR1);
            set.add(Signal::SIGUSR2);
            let _ = set.thread_block();
            // Each shared TCP port: its listener, where it goes, whether it is served now (a
            // deferred one is bound but waits for SIGUSR2). The others are served for good.
            let mut kept: Vec<(moat_net::proxy::Listener, SocketAddrV4, bool)> = vec![];
            for (p, l) in ports.iter().zip(listeners) {
                let to = SocketAddrV4::new(p.container_ip, p.container_port);
                if !p.group.is_empty() && p.proto == "tcp" {
                    match l.try_clone() {
                        Ok(c) => kept.push((c, to, p.ready)),
                        Err(_) => continue,
                    }
                }
                if p.ready {
                    moat_net::proxy::serve(l, to);
                }
            }
            if let Some(s) = dns {
                let lookup = moat_net::resolver(config(&Paths::new(&root)), id);
                moat_net::dns::serve(s, lookup, upstreams);
            }
            loop {
                match set.wait() {
                    Ok(Signal::SIGUSR2) => {
                        for (l, to, served) in kept.iter_mut().filter(|k| !k.2) {
                            if let (Ok(()), Ok(c)) = (l.start_listening(), l.try_clone()) {
                                moat_net::proxy::serve(c, *to);
                                *served = true;
                            }
                        }
                    }
                    Ok(_) => {
                        for (l, _, served) in kept.iter_mut() {
                            l.stop_accepting();
                            *served = false;
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            p,
            vec![PortRequest {
                proto: "tcp".into(),
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 8080,
                container_port: 80,
                group: String::new(),
            }]
        );
        let p = parse_publish("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(
            (p[0].host_ip, p[0].proto.as_str()),
            (Ipv4Addr::LOCALHOST, "udp")
        );
        assert_eq!(parse_publish("80").unwrap()[0].host_port, 0);
        let r = parse_publish("9000-9001:80-81").unwrap();
        assert_eq!(
            r.iter()
                .map(|p| (p.host_port, p.container_port))
                .collect::<Vec<_>>(),
            vec![(9000, 80), (9001, 81)]
        );
        for bad in [
            "",
            "a:80",
            "1:2:3:4",
            "80/sctp",
            "9000-9002:80-81",
            "0",
            "70000",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolv_conf_for_each_kind_of_network() {
        let host = "search example.org\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n";
        assert_eq!(
            resolv_conf(host, false, &[]),
            "search example.org\nnameserver 10.0.0.2\n"
        );
        // --dns replaces the host's resolvers, or is where the embedded DNS forwards.
        let dns = ["10.9.9.9".parse().unwrap()];
        assert_eq!(
            resolv_conf(host, false, &dns),
            "nameserver 10.9.9.9\nsearch example.org\n"
        );
        assert_eq!(resolv_conf(host, true, &dns), resolv_conf(host, true, &[]));
        assert_eq!(
            resolv_conf(host, true, &[]),
            "nameserver 127.0.0.11\nsearch example.org\noptions ndots:0\n"
        );
    }

    #[test]
    fn exposed_ports() {
        let cfg = serde_json::json!({"config": {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "x/tcp": {}}}});
        let mut e: Vec<u16> = exposed(&cfg).iter().map(|p| p.container_port).collect();
        e.sort();
        assert_eq!(e, vec![53, 80]);
    }
}
