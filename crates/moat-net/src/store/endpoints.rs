//! The endpoints of running containers (their addresses, with the process holding each) and
//! their published ports: allocation, release, and the reclaiming of dead holders' rows.

use std::net::Ipv4Addr;
use std::path::Path;

use rusqlite::{params, Connection, TransactionBehavior};

use super::{sql_err, Endpoint, Holder, NetStore, Network, Port, StoreError};
use crate::ipam;

impl NetStore {
    pub(super) fn endpoints_held(&self) -> Result<Vec<(Endpoint, Holder)>, StoreError> {
        held(&self.conn, &self.path)
    }

    /// The endpoints whose holder is `alive`.
    pub fn endpoints(&self, alive: impl Fn(Holder) -> bool) -> Result<Vec<Endpoint>, StoreError> {
        Ok(self
            .endpoints_held()?
            .into_iter()
            .filter(|(_, h)| alive(*h))
            .map(|(e, _)| e)
            .collect())
    }

    /// The endpoints (and ports) whose holder is dead, removed from the records; returned so
    /// that the caller deletes their veths, with whether ports went too (their rules go then).
    pub fn reclaim(
        &mut self,
        alive: impl Fn(Holder) -> bool,
    ) -> Result<(Vec<Endpoint>, bool), StoreError> {
        let dead: Vec<(Endpoint, Holder)> = self
            .endpoints_held()?
            .into_iter()
            .filter(|(_, h)| !alive(*h))
            .collect();
        let holders = self.port_holders()?;
        // Nothing dead (every start asks): no write transaction.
        if dead.is_empty() && holders.iter().all(|h| alive(*h)) {
            return Ok((vec![], false));
        }
        let sql = sql_err(&self.path);
        let tx = self.conn.transaction().map_err(&sql)?;
        for (e, (pid, start)) in &dead {
            tx.execute(
                "DELETE FROM endpoints WHERE network_id = ?1 AND container_id = ?2 AND holder_pid = ?3 AND holder_start = ?4",
                params![e.network_id, e.container_id, pid, *start as i64],
            )
            .map_err(&sql)?;
        }
        let mut ports = false;
        for (pid, start) in holders.into_iter().filter(|h| !alive(*h)) {
            ports = true;
            tx.execute(
                "DELETE FROM ports WHERE holder_pid = ?1 AND holder_start = ?2",
                params![pid, start as i64],
            )
            .map_err(&sql)?;
        }
        tx.commit().map_err(&sql)?;
        Ok((dead.into_iter().map(|(e, _)| e).collect(), ports))
    }

    fn port_holders(&self) -> Result<Vec<Holder>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT holder_pid, holder_start FROM ports")
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, i32>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// Gives container `container_id` an address on `net` (`want`: `--ip`), held by `holder`,
    /// in one transaction: dead holders' addresses are reclaimed first, and no two containers
    /// get the same address, whichever process asks.
    #[allow(clippy::too_many_arguments)]
    pub fn allocate(
        &mut self,
        net: &Network,
        container_id: &str,
        container_name: &str,
        aliases: &[String],
        want: Option<Ipv4Addr>,
        veth: &str,
        holder: Holder,
        alive: impl Fn(Holder) -> bool,
    ) -> Result<(Endpoint, Vec<Endpoint>), StoreError> {
        let (Some(subnet), Some(gateway)) = (net.subnet, net.gateway) else {
            return Err(StoreError::Full(net.name.clone()));
        };
        let sql = sql_err(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&sql)?;
        // Read inside the write transaction: another process's allocation is either wholly
        // before it (and seen here) or wholly after it.
        let held = held(&tx, &self.path)?;
        let mut reclaimed = vec![];
        let mut taken = vec![];
        for (e, (pid, start)) in held {
            if e.network_id != net.id {
                continue;
            }
            // Its own row of a previous run (a restart after a crash) is replaced too.
            if !alive((pid, start)) || e.container_id == container_id {
                tx.execute(
                    "DELETE FROM endpoints WHERE network_id = ?1 AND container_id = ?2",
                    params![e.network_id, e.container_id],
                )
                .map_err(&sql)?;
                reclaimed.push(e);
            } else {
                taken.push(e.ip);
            }
        }
        let ip = match want {
            Some(ip) if !ipam::usable(&subnet, gateway, ip) => {
                return Err(StoreError::BadAddress {
                    ip,
                    network: net.name.clone(),
                    subnet,
                })
            }
            Some(ip) if taken.contains(&ip) => {
                return Err(StoreError::AddressInUse {
                    ip,
                    network: net.name.clone(),
                })
            }
            Some(ip) => ip,
            None => ipam::next_address(&subnet, gateway, &taken)
                .ok_or(StoreError::Full(net.name.clone()))?,
        };
        let ep = Endpoint {
            network_id: net.id.clone(),
            container_id: container_id.into(),
            container_name: container_name.into(),
            ip,
            mac: ipam::format_mac(ipam::mac_for(ip)),
            aliases: aliases.to_vec(),
            veth: veth.into(),
        };
        tx.execute(
            "INSERT INTO endpoints (network_id, container_id, container_name, ip, mac, aliases, veth, holder_pid, holder_start) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                ep.network_id,
                ep.container_id,
                ep.container_name,
                ep.ip.to_string(),
                ep.mac,
                serde_json::to_string(&ep.aliases).unwrap_or_else(|_| "[]".into()),
                ep.veth,
                holder.0,
                holder.1 as i64
            ],
        )
        .map_err(&sql)?;
        tx.commit().map_err(&sql)?;
        Ok((ep, reclaimed))
    }

    /// Sets the MAC address recorded for an endpoint (`--mac-address`).
    pub fn set_mac(&self, ep: &Endpoint) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE endpoints SET mac = ?1 WHERE network_id = ?2 AND container_id = ?3",
                params![ep.mac, ep.network_id, ep.container_id],
            )
            .map(|_| ())
            .map_err(self.sql())
    }

    /// Removes container `container_id`'s endpoints and ports (only those `holder` holds, when
    /// given: a monitor releasing after its container's exit must not take what the monitor
    /// of a new start already holds); returns the endpoints removed.
    pub fn release(
        &mut self,
        container_id: &str,
        holder: Option<Holder>,
    ) -> Result<Vec<Endpoint>, StoreError> {
        let sql = sql_err(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&sql)?;
        let eps: Vec<Endpoint> = held(&tx, &self.path)?
            .into_iter()
            .filter(|(e, h)| e.container_id == container_id && holder.is_none_or(|me| me == *h))
            .map(|(e, _)| e)
            .collect();
        let (pid, start) = holder.map_or((-1, -1), |(p, s)| (p, s as i64));
        let any = holder.is_none();
        tx.execute(
            "DELETE FROM endpoints WHERE container_id = ?1 AND (?2 OR (holder_pid = ?3 AND holder_start = ?4))",
            params![container_id, any, pid, start],
        )
        .map_err(&sql)?;
        tx.execute(
            "DELETE FROM ports WHERE container_id = ?1 AND (?2 OR (holder_pid = ?3 AND holder_start = ?4))",
            params![container_id, any, pid, start],
        )
        .map_err(&sql)?;
        tx.commit().map_err(&sql)?;
        Ok(eps)
    }

    /// Removes container `container_id`'s endpoint on network `network_id`; returns it.
    pub fn remove_endpoint(
        &mut self,
        network_id: &str,
        container_id: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        let ep = self
            .endpoints_held()?
            .into_iter()
            .map(|(e, _)| e)
            .find(|e| e.network_id == network_id && e.container_id == container_id);
        self.conn
            .execute(
                "DELETE FROM endpoints WHERE network_id = ?1 AND container_id = ?2",
                params![network_id, container_id],
            )
            .map_err(self.sql())?;
        Ok(ep)
    }

    /// Removes container `container_id`'s ports that go to `ip` (its endpoint there is gone);
    /// whether any did.
    pub fn remove_ports_to(
        &mut self,
        container_id: &str,
        ip: Ipv4Addr,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM ports WHERE container_id = ?1 AND container_ip = ?2",
                params![container_id, ip.to_string()],
            )
            .map_err(self.sql())?;
        Ok(n > 0)
    }

    /// Marks container `container_id`'s shared ports ready (or not); whether any changed.
    pub fn set_ports_ready(&mut self, container_id: &str, ready: bool) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE ports SET ready = ?2 WHERE container_id = ?1 AND grp != '' AND proto = 'tcp' AND ready != ?2",
                params![container_id, ready],
            )
            .map_err(self.sql())?;
        Ok(n > 0)
    }

    /// Records a container's published ports, held by `holder`.
    pub fn add_ports(&mut self, ports: &[Port], holder: Holder) -> Result<(), StoreError> {
        let sql = sql_err(&self.path);
        let tx = self.conn.transaction().map_err(&sql)?;
        for p in ports {
            tx.execute(
                "INSERT OR REPLACE INTO ports (container_id, proto, host_ip, host_port, container_ip, container_port, holder_pid, holder_start, grp, ready) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![p.container_id, p.proto, p.host_ip.to_string(), p.host_port, p.container_ip.to_string(), p.container_port, holder.0, holder.1 as i64, p.group, p.ready],
            )
            .map_err(&sql)?;
        }
        tx.commit().map_err(&sql)
    }

    /// Every published port, of every running container.
    pub fn ports(&self) -> Result<Vec<Port>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT container_id, proto, host_ip, host_port, container_ip, container_port, grp, ready FROM ports ORDER BY host_port, proto, host_ip, container_id")
            .map_err(self.sql())?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u16>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, u16>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, bool>(7)?,
                ))
            })
            .map_err(self.sql())?;
        let mut out = vec![];
        for row in rows {
            let (
                container_id,
                proto,
                host_ip,
                host_port,
                container_ip,
                container_port,
                group,
                ready,
            ) = row.map_err(self.sql())?;
            let addr = |what, s: String| {
                s.parse()
                    .map_err(|_| StoreError::Malformed { what, value: s })
            };
            out.push(Port {
                container_id,
                proto,
                host_ip: addr("host address", host_ip)?,
                host_port,
                container_ip: addr("container address", container_ip)?,
                container_port,
                group,
                ready,
            });
        }
        Ok(out)
    }
}

fn held(conn: &Connection, path: &Path) -> Result<Vec<(Endpoint, Holder)>, StoreError> {
    let sql = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let mut st = conn
        .prepare("SELECT network_id, container_id, container_name, ip, mac, aliases, veth, holder_pid, holder_start FROM endpoints ORDER BY ip")
            .map_err(&sql)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i32>(7)?,
                r.get::<_, i64>(8)?,
            ))
        })
        .map_err(&sql)?;
    let mut out = vec![];
    for row in rows {
        let (network_id, container_id, container_name, ip, mac, aliases, veth, pid, start) =
            row.map_err(&sql)?;
        out.push((
            Endpoint {
                network_id,
                container_id,
                container_name,
                ip: ip.parse().map_err(|_| StoreError::Malformed {
                    what: "address",
                    value: ip.clone(),
                })?,
                mac,
                aliases: serde_json::from_str(&aliases).map_err(|_| StoreError::Malformed {
                    what: "aliases",
                    value: aliases.clone(),
                })?,
                veth,
            },
            (pid, start as u64),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::NetworkSpec;
    use super::*;

    #[test]
    fn addresses_are_unique_and_dead_holders_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = NetStore::open(dir.path()).unwrap();
        let mut sp = NetworkSpec {
            name: "n".into(),
            ..Default::default()
        };
        sp.subnet = Some("10.1.0.0/30".parse().unwrap());
        let n = s.insert(&sp, &"a".repeat(64), "br-a", "now", &[]).unwrap();
        let live = |h: Holder| h.0 != 666;
        // A /30 has two host addresses, one of them the gateway: one container fits.
        let (e1, _) = s
            .allocate(&n, "c1", "one", &[], None, "v1", (666, 1), live)
            .unwrap();
        assert_eq!(e1.ip.to_string(), "10.1.0.2");
        assert_eq!(e1.mac, "02:42:0a:01:00:02");
        // c1's holder is dead: its address goes to c2, and c1's row is handed back.
        let (e2, reclaimed) = s
            .allocate(&n, "c2", "two", &[], None, "v2", (7, 1), live)
            .unwrap();
        assert_eq!(e2.ip, e1.ip);
        assert_eq!(reclaimed, vec![e1]);
        assert!(matches!(
            s.allocate(&n, "c3", "three", &[], None, "v3", (8, 1), live),
            Err(StoreError::Full(_))
        ));
        assert!(matches!(
            s.allocate(
                &n,
                "c3",
                "three",
                &[],
                Some("10.1.0.2".parse().unwrap()),
                "v3",
                (8, 1),
                live
            ),
            Err(StoreError::AddressInUse { .. })
        ));
        assert!(matches!(
            s.allocate(
                &n,
                "c3",
                "three",
                &[],
                Some("10.1.0.1".parse().unwrap()),
                "v3",
                (8, 1),
                live
            ),
            Err(StoreError::BadAddress { .. })
        ));
        assert!(matches!(s.delete(&n, live), Err(StoreError::InUse { .. })));
        // Only the holder's rows go when a holder is named.
        assert_eq!(s.release("c2", Some((9, 9))).unwrap().len(), 0);
        assert_eq!(s.release("c2", Some((7, 1))).unwrap().len(), 1);
        s.delete(&n, live).unwrap();
        assert!(s.list().unwrap().is_empty());
    }
}
