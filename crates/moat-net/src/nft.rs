//! The nftables rules of an engine root: masquerade for each bridge network's egress, the
//! isolation of `--internal` networks and of networks from each other, and the DNAT of
//! published ports. They live in one table of moat's own (`ip moat`, or `ip moat_<hash>` for
//! another `--root`), which is written whole from the records each time they change, in one
//! `nft -f` transaction: the kernel's rules are always exactly what the records say, and a
//! table left by a crashed moat is replaced by the next change rather than patched.
//!
//! The `nft` tool (nftables' own parser) writes the rules; moat never touches iptables
//! chains, so it neither depends on nor disturbs whichever iptables flavour the host uses.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::store::{Network, Port};

/// Errors of applying the rules.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be run.
    #[error("run nft (is the nftables package installed?): {0}")]
    Spawn(#[source] std::io::Error),
    /// `nft` refused the rules.
    #[error("nft refused moat's rules for table {table}: {stderr}")]
    Refused {
        /// The table.
        table: String,
        /// What nft said.
        stderr: String,
    },
    /// The host-wide lock could not be taken.
    #[error("lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The table's whole text for these networks and ports (`None`: there is nothing to write, and
/// the table goes).
pub fn ruleset(table: &str, networks: &[Network], ports: &[Port]) -> Option<String> {
    let bridges: Vec<&Network> = networks
        .iter()
        .filter(|n| n.driver == "bridge" && n.subnet.is_some())
        .collect();
    if bridges.is_empty() && ports.is_empty() {
        return None;
    }
    let mut t = String::new();
    let _ = writeln!(t, "table ip {table} {{");
    // Published ports: DNAT for packets to one of the host's addresses (from outside, and
    // from the host itself other than over loopback, which the proxy serves).
    let _ = writeln!(t, "  chain ports {{");
    // A port a group shares (rows in a row: the records are ordered by port) spreads new
    // connections at random over its containers.
    let ports: Vec<&Port> = ports.iter().filter(|p| p.ready).collect();
    let mut i = 0;
    while i < ports.len() {
        let p = ports[i];
        let same = ports[i..]
            .iter()
            .take_while(|q| {
                (&q.proto, q.host_ip, q.host_port) == (&p.proto, p.host_ip, p.host_port)
            })
            .count();
        let backends = &ports[i..i + same];
        i += same;
        let dst = if p.host_ip.is_unspecified() {
            String::new()
        } else if p.host_ip.is_loopback() {
            continue;
        } else {
            format!("ip daddr {} ", p.host_ip)
        };
        let to = if let [one] = backends {
            format!("to {}:{}", one.container_ip, one.container_port)
        } else {
            let map: Vec<String> = backends
                .iter()
                .enumerate()
                .map(|(k, b)| format!("{k} : {} . {}", b.container_ip, b.container_port))
                .collect();
            format!(
                "ip addr . port to numgen random mod {} map {{ {} }}",
                backends.len(),
                map.join(", ")
            )
        };
        let _ = writeln!(
            t,
            "    {dst}{proto} dport {hp} dnat {to}",
            proto = p.proto,
            hp = p.host_port,
        );
    }
    let _ = writeln!(t, "  }}");
    // Not from the bridges: a container reaching a published port through the host's address
    // goes to the proxy, which answers it from the host (a DNAT back into its own bridge would
    // have the reply bypass the translation).
    let from_bridges = if bridges.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = bridges.iter().map(|n| quote(&n.bridge)).collect();
        format!("iifname != {{ {} }} ", names.join(", "))
    };
    let _ = writeln!(
        t,
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    {from_bridges}fib daddr type local jump ports\n  }}"
    );
    let _ = writeln!(
        t,
        "  chain output {{\n    type nat hook output priority -100; policy accept;\n    ip daddr != 127.0.0.0/8 fib daddr type local jump ports\n  }}"
    );
    let _ = writeln!(
        t,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;"
    );
    for n in &bridges {
        if let (Some(s), false) = (n.subnet, n.internal) {
            let _ = writeln!(
                t,
                "    ip saddr {s} oifname != {br} masquerade",
                br = quote(&n.bridge)
            );
        }
    }
    let _ = writeln!(t, "  }}");
    let _ = writeln!(
        t,
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;"
    );
    for n in &bridges {
        let br = quote(&n.bridge);
        if n.internal {
            let _ = writeln!(t, "    iifname {br} oifname != {br} drop");
            let _ = writeln!(t, "    oifname {br} iifname != {br} drop");
        }
        // Networks do not route to one another (Docker's isolation): containers meet only on a
        // network they share.
        let others: Vec<String> = bridges
            .iter()
            .filter(|o| o.bridge != n.bridge)
            .map(|o| quote(&o.bridge))
            .collect();
        if !others.is_empty() {
            let _ = writeln!(
                t,
                "    iifname {br} oifname {{ {} }} drop",
                others.join(", ")
            );
        }
    }
    // Into a bridge from elsewhere only what answers the containers' own connections, or what
    // a published port's DNAT sends: forwarding is on, and nothing else routed to a subnet
    // (a LAN host with a route to it) reaches a container (Docker's rule since v28).
    for n in &bridges {
        let br = quote(&n.bridge);
        let _ = writeln!(
            t,
            "    oifname {br} iifname != {br} ct state established,related accept"
        );
        let _ = writeln!(t, "    oifname {br} iifname != {br} ct status dnat accept");
        let _ = writeln!(t, "    oifname {br} iifname != {br} drop");
    }
    let _ = writeln!(t, "  }}");
    let _ = writeln!(t, "}}");
    Some(t)
}

fn quote(s: &str) -> String {
    format!("\"{s}\"")
}

/// Replaces the table with `text` (or deletes it), atomically.
pub fn apply(table: &str, text: Option<&str>) -> Result<(), NftError> {
    // Declaring the table first makes the delete succeed when it does not exist yet.
    let mut script = format!("table ip {table}\ndelete table ip {table}\n");
    if let Some(t) = text {
        script.push_str(t);
    }
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused {
            table: table.into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn net(name: &str, bridge: &str, subnet: &str, internal: bool) -> Network {
        Network {
            id: name.repeat(64 / name.len()),
            name: name.into(),
            driver: "bridge".into(),
            subnet: Some(subnet.parse().unwrap()),
            gateway: None,
            bridge: bridge.into(),
            internal,
            mtu: 1500,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            created: String::new(),
        }
    }

    #[test]
    fn rules_for_networks_and_ports() {
        assert_eq!(ruleset("moat", &[], &[]), None);
        let nets = [
            net("a", "moat0", "172.17.0.0/16", false),
            net("b", "br-b", "172.18.0.0/16", true),
        ];
        let ports = [
            Port {
                container_id: "c".into(),
                proto: "tcp".into(),
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 8080,
                container_ip: "172.17.0.2".parse().unwrap(),
                container_port: 80,
                group: String::new(),
                ready: true,
            },
            Port {
                container_id: "c".into(),
                proto: "udp".into(),
                host_ip: "127.0.0.1".parse().unwrap(),
                host_port: 53,
                container_ip: "172.17.0.2".parse().unwrap(),
                container_port: 53,
                group: String::new(),
                ready: true,
            },
            Port {
                container_id: "d1".into(),
                proto: "tcp".into(),
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 9000,
                container_ip: "172.17.0.3".parse().unwrap(),
                container_port: 80,
                group: "p/web".into(),
                ready: true,
            },
            Port {
                container_id: "d2".into(),
                proto: "tcp".into(),
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 9000,
                container_ip: "172.17.0.4".parse().unwrap(),
                container_port: 80,
                group: "p/web".into(),
                ready: true,
            },
            // Not ready yet (its healthcheck has not passed): no connection goes to it.
            Port {
                container_id: "d3".into(),
                proto: "tcp".into(),
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 9000,
                container_ip: "172.17.0.5".parse().unwrap(),
                container_port: 80,
                group: "p/web".into(),
                ready: false,
            },
        ];
        let t = ruleset("moat", &nets, &ports).unwrap();
        assert!(t.contains("tcp dport 8080 dnat to 172.17.0.2:80"), "{t}");
        // A shared port: new connections at random over its group.
        assert!(
            t.contains("tcp dport 9000 dnat ip addr . port to numgen random mod 2 map { 0 : 172.17.0.3 . 80, 1 : 172.17.0.4 . 80 }"),
            "{t}"
        );
        // Loopback-only ports are the proxy's.
        assert!(!t.contains("udp dport 53"), "{t}");
        assert!(!t.contains("172.17.0.5"), "{t}");
        assert!(t.contains("ip saddr 172.17.0.0/16 oifname != \"moat0\" masquerade"));
        // The internal network gets no masquerade, and traffic leaving it is dropped.
        assert!(!t.contains("172.18.0.0/16 oifname"), "{t}");
        assert!(t.contains("iifname \"br-b\" oifname != \"br-b\" drop"));
        assert!(t.contains("iifname \"moat0\" oifname { \"br-b\" } drop"));
        // Routed traffic into a bridge: only replies and published ports.
        assert!(t.contains("oifname \"moat0\" iifname != \"moat0\" ct status dnat accept"));
        assert!(t.contains("oifname \"moat0\" iifname != \"moat0\" drop"));
        assert!(t.contains("iifname != { \"moat0\", \"br-b\" } fib daddr type local jump ports"));
    }
}
