//! The network records: networks, the endpoints of running containers (their addresses) and
//! their published ports, in `<root>/network/network.db` (SQLite, WAL).
//!
//! An endpoint row exists while its container runs: it is added by the container's monitor
//! when it starts and removed when it stops. Each row names the process that holds it (the
//! monitor's pid and start time), so rows of a monitor that died without cleaning up (kill -9,
//! a crash, a reboot) are found and reclaimed the next time addresses are handed out: an
//! address is never given twice, and none is lost.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::ipam;

mod endpoints;

/// Errors of the network records.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("network database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database's directory could not be made.
    #[error("create {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// No network has that name or id.
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    /// An id prefix that fits several networks.
    #[error("network {0} is ambiguous: several networks have ids starting with it")]
    Ambiguous(String),
    /// The name is taken.
    #[error("network with name {0} already exists")]
    NameInUse(String),
    /// A name Docker would refuse.
    #[error("invalid network name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    /// The subnet overlaps another network's or a route's.
    #[error("invalid pool request: pool {0} overlaps with other one on this address space")]
    Overlap(Ipv4Net),
    /// Every pool subnet is in use.
    #[error("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")]
    PoolExhausted,
    /// The gateway is not a host address of the subnet.
    #[error("gateway {gateway} is not a host address of subnet {subnet}")]
    BadGateway {
        /// The gateway asked for.
        gateway: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// Every address of the subnet is taken.
    #[error("no available IPv4 addresses on network {0}")]
    Full(String),
    /// `--ip` outside the subnet, or the gateway.
    #[error("address {ip} is not usable on network {network} ({subnet})")]
    BadAddress {
        /// The address asked for.
        ip: Ipv4Addr,
        /// The network.
        network: String,
        /// Its subnet.
        subnet: Ipv4Net,
    },
    /// `--ip` of an address another container holds.
    #[error("address {ip} is already in use on network {network}")]
    AddressInUse {
        /// The address asked for.
        ip: Ipv4Addr,
        /// The network.
        network: String,
    },
    /// The network still has containers.
    #[error(
        "error while removing network: network {name} id {id} has active endpoints ({containers})"
    )]
    InUse {
        /// Its name.
        name: String,
        /// Its id.
        id: String,
        /// The containers attached.
        containers: String,
    },
    /// host, none and bridge stay.
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    /// Only the bridge driver makes networks.
    #[error("driver {0} is not supported: only \"bridge\" networks can be created")]
    Driver(String),
    /// A row that does not parse (a damaged database).
    #[error("network database: malformed {what} {value:?}")]
    Malformed {
        /// The column.
        what: &'static str,
        /// Its value.
        value: String,
    },
}

/// A network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 64 hex digits.
    pub id: String,
    /// Its name (unique).
    pub name: String,
    /// `bridge`, `host` or `null`.
    pub driver: String,
    /// Its IPv4 subnet (bridge networks).
    pub subnet: Option<Ipv4Net>,
    /// The bridge's address, the containers' default route.
    pub gateway: Option<Ipv4Addr>,
    /// The bridge device's name.
    pub bridge: String,
    /// `--internal`: no traffic leaves the bridge.
    pub internal: bool,
    /// The MTU of the bridge and the endpoints.
    pub mtu: u32,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
    /// `-o` driver options.
    pub options: BTreeMap<String, String>,
    /// RFC 3339.
    pub created: String,
}

impl Network {
    /// The default bridge (`bridge`): no name resolution between containers, as Docker's.
    pub fn is_default_bridge(&self) -> bool {
        self.name == "bridge"
    }

    /// host, none and bridge.
    pub fn is_predefined(&self) -> bool {
        matches!(self.name.as_str(), "bridge" | "host" | "none")
    }
}

/// What `network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NetworkSpec {
    /// Its name.
    pub name: String,
    /// `--driver` (bridge when empty).
    pub driver: String,
    /// `--subnet`.
    pub subnet: Option<Ipv4Net>,
    /// `--gateway`.
    pub gateway: Option<Ipv4Addr>,
    /// `--internal`.
    pub internal: bool,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `-o`: `com.docker.network.driver.mtu` is honoured.
    pub options: BTreeMap<String, String>,
}

/// A running container's place on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The network's id.
    pub network_id: String,
    /// The container's id.
    pub container_id: String,
    /// The container's name (resolvable on user-defined networks).
    pub container_name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC address.
    pub mac: String,
    /// `--network-alias`es (resolvable too).
    pub aliases: Vec<String>,
    /// The host-side veth.
    pub veth: String,
}

/// A published port of a running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// The container's id.
    pub container_id: String,
    /// `tcp` or `udp`.
    pub proto: String,
    /// The host address it is published on (0.0.0.0: all).
    pub host_ip: Ipv4Addr,
    /// The host port.
    pub host_port: u16,
    /// The container's address it goes to.
    pub container_ip: Ipv4Addr,
    /// The container's port.
    pub container_port: u16,
    /// The group sharing the host port (empty: none, see [`crate::PortRequest::group`]).
    #[serde(default)]
    pub group: String,
    /// Whether new connections may come to it: a shared port's container joins when it is
    /// ready (healthy, when it has a healthcheck) and leaves before it stops.
    #[serde(default = "yes")]
    pub ready: bool,
}

fn yes() -> bool {
    true
}

/// The process holding an endpoint: a pid and its start time (pids are reused).
pub type Holder = (i32, u64);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS networks (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, driver TEXT NOT NULL, subnet TEXT,
  gateway TEXT, bridge TEXT NOT NULL, internal INTEGER NOT NULL, mtu INTEGER NOT NULL,
  labels TEXT NOT NULL, options TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
  network_id TEXT NOT NULL REFERENCES networks(id), container_id TEXT NOT NULL,
  container_name TEXT NOT NULL, ip TEXT NOT NULL, mac TEXT NOT NULL, aliases TEXT NOT NULL,
  veth TEXT NOT NULL, holder_pid INTEGER NOT NULL, holder_start INTEGER NOT NULL,
  PRIMARY KEY (network_id, container_id), UNIQUE (network_id, ip));
CREATE TABLE IF NOT EXISTS ports (
  container_id TEXT NOT NULL, proto TEXT NOT NULL, host_ip TEXT NOT NULL,
  host_port INTEGER NOT NULL, container_ip TEXT NOT NULL, container_port INTEGER NOT NULL,
  holder_pid INTEGER NOT NULL, holder_start INTEGER NOT NULL, grp TEXT NOT NULL DEFAULT '',
  ready INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (proto, host_ip, host_port, container_id));
";

/// Version 1's ports had one row per host port: version 2 lets a group share one. The rows
/// are copied (they are the running containers' ports).
const TO_V2: &str = "
CREATE TABLE ports_v2 (
  container_id TEXT NOT NULL, proto TEXT NOT NULL, host_ip TEXT NOT NULL,
  host_port INTEGER NOT NULL, container_ip TEXT NOT NULL, container_port INTEGER NOT NULL,
  holder_pid INTEGER NOT NULL, holder_start INTEGER NOT NULL, grp TEXT NOT NULL DEFAULT '',
  ready INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (proto, host_ip, host_port, container_id));
INSERT INTO ports_v2 SELECT container_id, proto, host_ip, host_port, container_ip,
  container_port, holder_pid, holder_start, '', 1 FROM ports;
DROP TABLE ports;
ALTER TABLE ports_v2 RENAME TO ports;
";

/// The schema's version (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;

/// The network records of one engine root.
#[derive(Debug)]
pub struct NetStore {
    conn: Connection,
    path: PathBuf,
}

/// The mapper of SQLite errors to [`StoreError::Sqlite`] naming the database (owning its path,
/// so that it outlives a borrow of the connection).
fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Sqlite {
        path: path.clone(),
        source,
    }
}

/// Docker's rule for network names.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName(name.into()))
    }
}

impl NetStore {
    /// Opens (creating) the records of `root`.
    pub fn open(root: &Path) -> Result<NetStore, StoreError> {
        let dir = root.join("network");
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("network.db");
        let conn = moat_image::db::connect(&path).map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let store = NetStore { conn, path };
        // The schema once (user_version marks it): an open is on every bridge start's path.
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(store.sql())?;
        if version < SCHEMA_VERSION {
            let batch = if version == 1 {
                format!("BEGIN IMMEDIATE; {TO_V2} COMMIT;")
            } else {
                SCHEMA.to_string()
            };
            store.conn.execute_batch(&batch).map_err(store.sql())?;
            store
                .conn
                .execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
                .map_err(store.sql())?;
        }
        Ok(store)
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError {
        sql_err(&self.path)
    }

    /// Every network, by name.
    pub fn list(&self) -> Result<Vec<Network>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, name, driver, subnet, gateway, bridge, internal, mtu, labels, options, created FROM networks ORDER BY name")
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, bool>(6)?,
                    r.get::<_, u32>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, String>(9)?,
                    r.get::<_, String>(10)?,
                ))
            })
            .map_err(self.sql())?;
        let mut out = vec![];
        for row in rows {
            let (
                id,
                name,
                driver,
                subnet,
                gateway,
                bridge,
                internal,
                mtu,
                labels,
                options,
                created,
            ) = row.map_err(self.sql())?;
            let parse_map = |what, s: String| {
                serde_json::from_str(&s).map_err(|_| StoreError::Malformed { what, value: s })
            };
            out.push(Network {
                id,
                name,
                driver,
                subnet: subnet
                    .map(|s| {
                        s.parse().map_err(|_| StoreError::Malformed {
                            what: "subnet",
                            value: s,
                        })
                    })
                    .transpose()?,
                gateway: gateway
                    .map(|s| {
                        s.parse().map_err(|_| StoreError::Malformed {
                            what: "gateway",
                            value: s,
                        })
                    })
                    .transpose()?,
                bridge,
                internal,
                mtu,
                labels: parse_map("labels", labels)?,
                options: parse_map("options", options)?,
                created,
            });
        }
        Ok(out)
    }

    /// The network named `key`, or with that id or unique id prefix.
    pub fn get(&self, key: &str) -> Result<Network, StoreError> {
        let all = self.list()?;
        if let Some(n) = all.iter().find(|n| n.name == key || n.id == key) {
            return Ok(n.clone());
        }
        let mut by_prefix = all
            .into_iter()
            .filter(|n| !key.is_empty() && n.id.starts_with(key));
        match (by_prefix.next(), by_prefix.next()) {
            (Some(n), None) => Ok(n),
            (Some(_), Some(_)) => Err(StoreError::Ambiguous(key.into())),
            _ => Err(StoreError::NoSuchNetwork(key.into())),
        }
    }

    /// Inserts a network; `used` are the subnets already routed in the namespace (the caller
    /// holds the host-wide network lock, so no other process picks the same one meanwhile).
    pub fn insert(
        &mut self,
        spec: &NetworkSpec,
        id: &str,
        bridge: &str,
        created: &str,
        used: &[Ipv4Net],
    ) -> Result<Network, StoreError> {
        check_name(&spec.name)?;
        let driver = if spec.driver.is_empty() {
            "bridge"
        } else {
            spec.driver.as_str()
        };
        if driver != "bridge" {
            return Err(StoreError::Driver(driver.into()));
        }
        let sql = sql_err(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&sql)?;
        let exists: Option<String> = tx
            .query_row(
                "SELECT id FROM networks WHERE name = ?1",
                [&spec.name],
                |r| r.get(0),
            )
            .optional()
            .map_err(&sql)?;
        if exists.is_some() {
            return Err(StoreError::NameInUse(spec.name.clone()));
        }
        let mut taken: Vec<Ipv4Net> = used.to_vec();
        let mut st = tx
            .prepare("SELECT subnet FROM networks WHERE subnet IS NOT NULL")
            .map_err(&sql)?;
        let subnets = st.query_map([], |r| r.get::<_, String>(0)).map_err(&sql)?;
        for s in subnets {
            if let Ok(n) = s.map_err(&sql)?.parse() {
                taken.push(n);
            }
        }
        drop(st);
        let subnet = match spec.subnet {
            Some(s) => {
                let s = s.trunc();
                if taken.iter().any(|t| ipam::overlaps(&s, t)) {
                    return Err(StoreError::Overlap(s));
                }
                s
            }
            None => ipam::free_subnet(&taken).ok_or(StoreError::PoolExhausted)?,
        };
        let gateway = match spec.gateway {
            Some(g) if ipam::usable(&subnet, Ipv4Addr::UNSPECIFIED, g) => g,
            Some(g) => return Err(StoreError::BadGateway { gateway: g, subnet }),
            None => ipam::default_gateway(&subnet).ok_or(StoreError::Full(spec.name.clone()))?,
        };
        let mtu = spec
            .options
            .get("com.docker.network.driver.mtu")
            .and_then(|m| m.parse().ok())
            .unwrap_or(1500);
        let net = Network {
            id: id.into(),
            name: spec.name.clone(),
            driver: driver.into(),
            subnet: Some(subnet),
            gateway: Some(gateway),
            bridge: bridge.into(),
            internal: spec.internal,
            mtu,
            labels: spec.labels.clone(),
            options: spec.options.clone(),
            created: created.into(),
        };
        insert_row(&tx, &net).map_err(&sql)?;
        tx.commit().map_err(&sql)?;
        Ok(net)
    }

    /// Inserts `host` and `none` (no addresses) when missing.
    pub fn ensure_plain(&self, created: &str, ids: [&str; 2]) -> Result<(), StoreError> {
        for (name, driver, id) in [("host", "host", ids[0]), ("none", "null", ids[1])] {
            let net = Network {
                id: id.into(),
                name: name.into(),
                driver: driver.into(),
                subnet: None,
                gateway: None,
                bridge: String::new(),
                internal: false,
                mtu: 0,
                labels: BTreeMap::new(),
                options: BTreeMap::new(),
                created: created.into(),
            };
            let missing: bool = self
                .conn
                .query_row(
                    "SELECT COUNT(*) = 0 FROM networks WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .map_err(self.sql())?;
            if missing {
                match insert_row(&self.conn, &net) {
                    // Another process inserted it meanwhile.
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::ConstraintViolation => {}
                    other => {
                        other.map_err(self.sql())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes network `id` (no endpoints may be left).
    pub fn delete(
        &mut self,
        net: &Network,
        alive: impl Fn(Holder) -> bool,
    ) -> Result<(), StoreError> {
        if net.is_predefined() {
            return Err(StoreError::Predefined(net.name.clone()));
        }
        let eps: Vec<Endpoint> = self
            .endpoints_held()?
            .into_iter()
            .filter(|(e, h)| e.network_id == net.id && alive(*h))
            .map(|(e, _)| e)
            .collect();
        if !eps.is_empty() {
            return Err(StoreError::InUse {
                name: net.name.clone(),
                id: net.id.clone(),
                containers: eps
                    .iter()
                    .map(|e| e.container_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let sql = sql_err(&self.path);
        let tx = self.conn.transaction().map_err(&sql)?;
        tx.execute("DELETE FROM endpoints WHERE network_id = ?1", [&net.id])
            .map_err(&sql)?;
        tx.execute("DELETE FROM networks WHERE id = ?1", [&net.id])
            .map_err(&sql)?;
        tx.commit().map_err(&sql)
    }
}

fn insert_row(conn: &Connection, n: &Network) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO networks (id, name, driver, subnet, gateway, bridge, internal, mtu, labels, options, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            n.id,
            n.name,
            n.driver,
            n.subnet.map(|s| s.to_string()),
            n.gateway.map(|g| g.to_string()),
            n.bridge,
            n.internal,
            n.mtu,
            serde_json::to_string(&n.labels).unwrap_or_else(|_| "{}".into()),
            serde_json::to_string(&n.options).unwrap_or_else(|_| "{}".into()),
            n.created
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn networks_get_distinct_subnets_and_refuse_overlaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = NetStore::open(dir.path()).unwrap();
        let used = ["172.17.0.0/16".parse().unwrap()];
        let a = s
            .insert(&spec("a"), &"a".repeat(64), "br-a", "now", &used)
            .unwrap();
        assert_eq!(a.subnet.unwrap().to_string(), "172.18.0.0/16");
        assert_eq!(a.gateway.unwrap().to_string(), "172.18.0.1");
        let b = s
            .insert(&spec("b"), &"b".repeat(64), "br-b", "now", &used)
            .unwrap();
        assert_eq!(b.subnet.unwrap().to_string(), "172.19.0.0/16");
        assert!(matches!(
            s.insert(&spec("a"), &"c".repeat(64), "br-c", "now", &[]),
            Err(StoreError::NameInUse(_))
        ));
        let mut over = spec("c");
        over.subnet = Some("172.18.5.0/24".parse().unwrap());
        assert!(matches!(
            s.insert(&over, &"c".repeat(64), "br-c", "now", &[]),
            Err(StoreError::Overlap(_))
        ));
        let mut gw = spec("d");
        gw.subnet = Some("10.9.0.0/24".parse().unwrap());
        gw.gateway = Some("10.9.1.1".parse().unwrap());
        assert!(matches!(
            s.insert(&gw, &"d".repeat(64), "br-d", "now", &[]),
            Err(StoreError::BadGateway { .. })
        ));
        assert!(matches!(
            s.insert(&spec("-x"), &"e".repeat(64), "br-e", "now", &[]),
            Err(StoreError::BadName(_))
        ));
        assert_eq!(s.get("bbbb").unwrap().name, "b");
        assert!(matches!(s.get("nope"), Err(StoreError::NoSuchNetwork(_))));
        // Nothing half-made by the refusals.
        assert_eq!(s.list().unwrap().len(), 2);
    }
}
