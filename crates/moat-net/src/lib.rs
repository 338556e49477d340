//! moat's networks: Docker's bridge networks for process containers.
//!
//! A network is a Linux bridge with the network's gateway address; a container joins it with a
//! veth pair (one end on the bridge, the other as `eth0` in the container's own network
//! namespace) and an address from the network's subnet. Egress is masqueraded and published
//! ports are DNAT'ed by nftables rules of moat's own table; connections to a published port
//! over the host's loopback go through a user-space proxy, and containers on user-defined
//! networks resolve each other's names through a DNS responder at 127.0.0.11, as Docker's.
//!
//! Lifecycle of a container's endpoints: [`Networks::attach`] when it starts (the namespace
//! is made and plumbed before the container's process exists; the runtime joins it), and
//! [`Networks::detach`] when it stops. The records of a holder that died without detaching
//! are reclaimed on the next attach (see [`store`]).
//!
//! The records live in `<root>/network/network.db`; the kernel's side (bridges, veths, rules)
//! is what a start or a network command makes of them.

mod attach;
pub mod dns;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod proxy;
pub mod store;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

pub use attach::Released;
pub use store::{Endpoint, NetStore, Network, NetworkSpec, Port, StoreError};

use netlink::{NetlinkError, Rtnl};

/// Errors of network operations.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The records refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The kernel refused a link, address or route.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The container's namespace could not be made.
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    /// The firewall rules could not be written.
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    /// A published port another container holds (not of the same group).
    #[error("Bind for {addr}:{port} failed: port is already allocated to container {holder}")]
    PortTaken {
        /// The host address.
        addr: Ipv4Addr,
        /// The port.
        port: u16,
        /// A container holding it.
        holder: String,
    },
    /// A published port could not be bound.
    #[error("Bind for {addr}:{port} failed: port is already allocated ({source})")]
    PortInUse {
        /// The host address.
        addr: Ipv4Addr,
        /// The port.
        port: u16,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// host and none are not networks a container attaches to.
    #[error("container cannot be connected to network {0}: it is not a bridge network")]
    NotBridge(String),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Where an engine root keeps its network state.
#[derive(Debug, Clone)]
pub struct Config {
    /// The engine root.
    pub root: PathBuf,
    /// Where containers' namespaces are pinned.
    pub netns_dir: PathBuf,
    /// The default bridge's device name and the nftables table's name: `moat0` and `moat` for
    /// the default root; names derived from the root's path otherwise, so two roots on one
    /// host never share a bridge or a table.
    pub bridge: String,
    /// See `bridge`.
    pub table: String,
}

impl Config {
    /// The configuration of the engine at `root` (`default`: the system's root).
    pub fn new(root: &Path, netns_dir: PathBuf, default: bool) -> Config {
        let (bridge, table) = if default {
            ("moat0".to_string(), "moat".to_string())
        } else {
            // FNV-1a of the path: stable and short enough for an interface name (15 bytes).
            let h = fnv1a(
                FNV_BASIS,
                root.as_os_str().as_encoded_bytes().iter().copied(),
            );
            let tag = format!("{:010x}", h & 0xff_ffff_ffff);
            (format!("mt{tag}"), format!("moat_{tag}"))
        };
        Config {
            root: root.to_path_buf(),
            netns_dir,
            bridge,
            table,
        }
    }

    /// The pinned namespace of container `id`.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir.join(id)
    }
}

/// What a container asks of one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Request {
    /// The network's name or id.
    pub network: String,
    /// `--ip`.
    pub ip: Option<Ipv4Addr>,
    /// `--mac-address`.
    pub mac: Option<[u8; 6]>,
    /// `--network-alias`.
    pub aliases: Vec<String>,
}

/// A port to publish (`-p`, `-P`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortRequest {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The host address (0.0.0.0: all).
    pub host_ip: Ipv4Addr,
    /// The host port; 0: one the kernel picks.
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// Containers of one group (a `moat apply` service's replicas) may publish the same host
    /// port: new connections are spread over them. Empty: the port is this container's alone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
}

/// A started container's network: its endpoints and the sockets its helper serves (the
/// published ports' listeners, and the DNS responder's sockets inside the namespace).
#[derive(Debug)]
pub struct Attached {
    /// Each network joined, with the endpoint there (the first one has the default route).
    pub endpoints: Vec<(Network, Endpoint)>,
    /// The published ports as bound.
    pub ports: Vec<Port>,
    /// Their listening sockets, in the host's namespace, in the order of `ports`.
    pub listeners: Vec<proxy::Listener>,
    /// The DNS responder's sockets at 127.0.0.11:53 in the container's namespace (user-defined
    /// networks only).
    pub dns: Option<dns::Sockets>,
}

impl Attached {
    /// Whether a helper process is needed (ports to proxy or names to resolve).
    pub fn needs_helper(&self) -> bool {
        !self.listeners.is_empty() || self.dns.is_some()
    }
}

/// The host-wide lock over the kernel's network state: choosing a subnet (against every
/// route, whichever engine made it) and rewriting rules are done under it.
#[derive(Debug)]
struct Lock(#[allow(dead_code)] nix::fcntl::Flock<File>);

const LOCK_PATH: &str = "/run/moat/net.lock";

fn lock() -> Result<Lock, NetError> {
    let path = Path::new(LOCK_PATH);
    let io = |what, source| NetError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| io("create", e))?;
    }
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| io("open", e))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map(Lock)
        .map_err(|(_, e)| io("lock", e.into()))
}

/// Whether the process `holder` names still runs (the same process: pids are reused).
pub fn alive(holder: store::Holder) -> bool {
    moat_runtime::state::proc_start_time(holder.0)
        .is_some_and(|(start, state)| start == holder.1 && state != 'Z' && state != 'X')
}

/// This process, as an endpoint holder.
pub fn me() -> store::Holder {
    let pid = std::process::id() as i32;
    (
        pid,
        moat_runtime::state::proc_start_time(pid).map_or(0, |(s, _)| s),
    )
}

fn now() -> String {
    moat_runtime::state::now_rfc3339()
}

/// The networks of one engine root.
#[derive(Debug)]
pub struct Networks {
    cfg: Config,
    store: NetStore,
}

impl Networks {
    /// Opens the records of `cfg.root`.
    pub fn open(cfg: Config) -> Result<Networks, NetError> {
        let store = NetStore::open(&cfg.root)?;
        Ok(Networks { cfg, store })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The predefined networks exist: `host`, `none`, and `bridge` (whose subnet is chosen,
    /// under the host-wide lock, the first time).
    fn ensure_predefined(&mut self) -> Result<(), NetError> {
        let have = self.store.list()?;
        if !have.iter().any(|n| n.name == "host") || !have.iter().any(|n| n.name == "none") {
            let ids = [random_id()?, random_id()?];
            self.store.ensure_plain(&now(), [&ids[0], &ids[1]])?;
        }
        if !have.iter().any(|n| n.name == "bridge") {
            let _lock = lock()?;
            let used = routed()?;
            let spec = NetworkSpec {
                name: "bridge".into(),
                options: BTreeMap::from([
                    (
                        "com.docker.network.bridge.default_bridge".to_string(),
                        "true".to_string(),
                    ),
                    (
                        "com.docker.network.bridge.name".to_string(),
                        self.cfg.bridge.clone(),
                    ),
                ]),
                ..Default::default()
            };
            let bridge = self.cfg.bridge.clone();
            match self
                .store
                .insert(&spec, &random_id()?, &bridge, &now(), &used)
            {
                // Another process made it meanwhile.
                Err(StoreError::NameInUse(_)) => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Every network, by name.
    pub fn list(&mut self) -> Result<Vec<Network>, NetError> {
        self.ensure_predefined()?;
        Ok(self.store.list()?)
    }

    /// The network named `key` (or with that id, or id prefix).
    pub fn get(&mut self, key: &str) -> Result<Network, NetError> {
        match self.store.get(key) {
            Err(StoreError::NoSuchNetwork(_)) => {
                self.ensure_predefined()?;
                Ok(self.store.get(key)?)
            }
            other => Ok(other?),
        }
    }

    /// The endpoints of running containers.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, NetError> {
        Ok(self.store.endpoints(alive)?)
    }

    /// The published ports of running containers (not those a dead monitor left in the
    /// records until the next reconcile: a port comes with its container's endpoints).
    pub fn ports(&self) -> Result<Vec<Port>, NetError> {
        let live = self.store.endpoints(alive)?;
        Ok(self
            .store
            .ports()?
            .into_iter()
            .filter(|p| live.iter().any(|e| e.container_id == p.container_id))
            .collect())
    }

    /// `network create`: the record, then the bridge and the rules.
    pub fn create(&mut self, spec: &NetworkSpec) -> Result<Network, NetError> {
        self.ensure_predefined()?;
        let _lock = lock()?;
        let used = routed()?;
        let id = random_id()?;
        let bridge = format!("br-{}", &id[..12]);
        let net = self.store.insert(spec, &id, &bridge, &now(), &used)?;
        let made = ensure_bridge(&net).and_then(|()| self.write_rules());
        if let Err(e) = made {
            let mut rtnl = Rtnl::open()?;
            let _ = rtnl.delete(&bridge);
            let _ = self.store.delete(&net, |_| false);
            return Err(e);
        }
        Ok(net)
    }

    /// `network rm`: refused while containers run on it.
    pub fn remove(&mut self, key: &str) -> Result<Network, NetError> {
        let net = self.get(key)?;
        let _lock = lock()?;
        if net.is_predefined() {
            return Err(StoreError::Predefined(net.name).into());
        }
        let users: Vec<String> = self
            .store
            .endpoints(alive)?
            .into_iter()
            .filter(|e| e.network_id == net.id)
            .map(|e| e.container_name)
            .collect();
        if !users.is_empty() {
            return Err(StoreError::InUse {
                name: net.name,
                id: net.id,
                containers: users.join(", "),
            }
            .into());
        }
        // The bridge first, then the record: a crash in between leaves a record whose bridge
        // the next use makes again (or `rm` finishes), never a bridge nobody knows of.
        Rtnl::open()?.delete(&net.bridge)?;
        self.store.delete(&net, alive)?;
        self.write_rules()?;
        Ok(net)
    }

    /// Removes the kernel's side of every network (bridges, rules) and the records of all but
    /// the predefined ones: what an engine root's removal does. Containers must be gone.
    pub fn teardown(&mut self) -> Result<(), NetError> {
        let _lock = lock()?;
        let mut rtnl = Rtnl::open()?;
        for n in self.store.list()? {
            if !n.bridge.is_empty() {
                rtnl.delete(&n.bridge)?;
            }
        }
        nft::apply(&self.cfg.table, None)?;
        Ok(())
    }

    /// Rewrites the root's nftables table from the records (under the lock).
    fn write_rules(&self) -> Result<(), NetError> {
        let nets = self.store.list()?;
        let ports = self.store.ports()?;
        let text = nft::ruleset(&self.cfg.table, &nets, &ports);
        if text.is_some() {
            enable_forwarding()?;
        }
        nft::apply(&self.cfg.table, text.as_deref())?;
        Ok(())
    }
}

/// Docker's `network inspect` document of `net` with its running containers' endpoints.
pub fn inspect(net: &Network, endpoints: &[Endpoint]) -> serde_json::Value {
    let containers: serde_json::Map<String, serde_json::Value> = endpoints
        .iter()
        .filter(|e| e.network_id == net.id)
        .map(|e| {
            let prefix = net.subnet.map_or(32, |s| s.prefix_len());
            (
                e.container_id.clone(),
                serde_json::json!({
                    "Name": e.container_name,
                    "EndpointID": endpoint_id(e),
                    "MacAddress": e.mac,
                    "IPv4Address": format!("{}/{prefix}", e.ip),
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    let config: Vec<serde_json::Value> = match (net.subnet, net.gateway) {
        (Some(s), Some(g)) => {
            vec![serde_json::json!({"Subnet": s.to_string(), "Gateway": g.to_string()})]
        }
        _ => vec![],
    };
    serde_json::json!({
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": "local",
        "Driver": net.driver,
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": net.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": net.options,
        "Labels": net.labels,
    })
}

/// An endpoint's id: stable for the endpoint's life (a digest of its network, container and
/// address), 64 hex digits as Docker's.
pub fn endpoint_id(e: &Endpoint) -> String {
    let mut h = FNV_BASIS;
    let mut out = String::new();
    for round in 0..4u8 {
        let bytes = e.network_id.bytes().chain(e.container_id.bytes());
        h = fnv1a(h, bytes.chain(e.ip.octets()).chain([round]));
        out.push_str(&format!("{h:016x}"));
    }
    out
}

const FNV_BASIS: u64 = 0xcbf29ce484222325;

/// FNV-1a over `bytes` from `h`: short stable names, not security.
fn fnv1a(h: u64, bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

/// The name lookup of container `id`'s DNS responder: the running containers on the
/// user-defined networks it is on now (`network connect` adds some while it runs) by name,
/// 12-digit or full id, and alias. The records are read at each question (containers come and
/// go); a failure answers nothing.
pub fn resolver(cfg: Config, id: String) -> dns::Lookup {
    std::sync::Arc::new(move |name: &str| {
        let Ok(store) = NetStore::open(&cfg.root) else {
            return vec![];
        };
        let default = store.get("bridge").map(|n| n.id).unwrap_or_default();
        let eps = store.endpoints(alive).unwrap_or_default();
        let mine: Vec<&str> = eps
            .iter()
            .filter(|e| e.container_id == id && e.network_id != default)
            .map(|e| e.network_id.as_str())
            .collect();
        eps.iter()
            .filter(|e| mine.contains(&e.network_id.as_str()))
            .filter(|e| {
                e.container_name.eq_ignore_ascii_case(name)
                    || e.container_id == name
                    || (name.len() == 12 && e.container_id.starts_with(name))
                    || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
            })
            .map(|e| e.ip)
            .collect()
    })
}

/// A new 64-hex-digit id.
fn random_id() -> Result<String, NetError> {
    moat_runtime::id::random_hex(32).map_err(|source| NetError::Io {
        what: "read",
        path: "/dev/urandom".into(),
        source,
    })
}

/// The subnets of the calling thread's namespace's routes (default routes excluded).
fn routed() -> Result<Vec<Ipv4Net>, NetError> {
    let mut rtnl = Rtnl::open()?;
    Ok(rtnl
        .routes()?
        .into_iter()
        .filter(|(_, len)| *len > 0)
        .filter_map(|(a, len)| Ipv4Net::new(a, len).ok())
        .collect())
}

fn ensure_bridge(net: &Network) -> Result<(), NetError> {
    ensure_bridge_with(&mut Rtnl::open()?, net).map(|_| ())
}

/// The network's bridge exists, has its gateway address and is up: made when missing (after a
/// reboot, or for the first container of the default network); `Ok(true)` then, and the
/// caller rewrites the rules (a reboot took them too).
///
/// The bridge has a MAC address of its own (as Docker gives its bridges): a bridge without one
/// takes the lowest of its ports' and changes it as containers come and go, and the
/// containers, whose neighbour tables still hold the old one for the gateway, then lose their
/// replies to the host (connections to published ports hang for seconds) until they ask again.
fn ensure_bridge_with(rtnl: &mut Rtnl, net: &Network) -> Result<bool, NetError> {
    let mac = bridge_mac(net);
    if let Some((index, current)) = rtnl.index_and_mac(&net.bridge)? {
        // A bridge made before moat set its address: set once (and kept from then on).
        if current != mac {
            rtnl.set_mac(index, mac, &net.bridge)?;
        }
        return Ok(false);
    }
    match rtnl.add_bridge(&net.bridge, net.mtu, mac) {
        Err(e) if e.errno() == Some(libc::EEXIST) => {}
        other => other?,
    }
    let index = rtnl
        .index(&net.bridge)?
        .ok_or_else(|| NetlinkError::Refused {
            what: format!("find bridge {}", net.bridge),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })?;
    if let (Some(gw), Some(s)) = (net.gateway, net.subnet) {
        rtnl.add_address(index, gw, s.prefix_len(), &net.bridge)?;
    }
    rtnl.set_up(index, None, &net.bridge)?;
    Ok(true)
}

/// The bridge's own MAC address: derived from its gateway's address (no container has that
/// address, so none has that MAC), else from its name.
fn bridge_mac(net: &Network) -> [u8; 6] {
    match net.gateway {
        Some(gw) => ipam::mac_for(gw),
        None => {
            let h = net
                .bridge
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            ipam::mac_for(std::net::Ipv4Addr::from(h))
        }
    }
}

/// Routing between the bridges and the host's interfaces, as Docker turns it on.
fn enable_forwarding() -> Result<(), NetError> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|source| NetError::Io {
        what: "write",
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_per_root() {
        let d = Config::new(Path::new("/var/lib/moat"), "/run/moat/netns".into(), true);
        assert_eq!((d.bridge.as_str(), d.table.as_str()), ("moat0", "moat"));
        let a = Config::new(Path::new("/tmp/a"), "/tmp/a/netns".into(), false);
        let b = Config::new(Path::new("/tmp/b"), "/tmp/b/netns".into(), false);
        assert_ne!(a.bridge, b.bridge);
        assert!(a.bridge.len() <= 15, "{}", a.bridge);
        assert_eq!(a.netns_path("x"), Path::new("/tmp/a/netns/x"));
    }

    #[test]
    fn holders() {
        assert!(alive(me()));
        assert!(!alive((me().0, me().1 + 1)));
        assert!(!alive((0, 0)));
    }
}
