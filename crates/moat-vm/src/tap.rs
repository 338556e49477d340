//! A VM container's network: the container's network namespace is made by moat-net as for a
//! process container (veths `eth0`, `eth1`... with their addresses, the default route, published
//! ports' rules outside). Inside it, each `ethN` is wired to a tap device `tapN` that QEMU
//! serves as the guest's NIC with the same MAC, with tc redirects both ways (as Kata
//! Containers' `tcfilter` model does): frames pass between the veth and the VM untouched, so
//! the guest, given the address, is the endpoint.
//!
//! The caller has entered the namespace (QEMU started from there opens the taps by name); the
//! work is done with iproute2's `ip` and `tc`, as nftables' rules are with `nft`.

use std::process::Command;

use serde_json::Value;

use crate::VmError;

/// One interface of the container's namespace, as the guest must configure it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its name (`eth0`).
    pub name: String,
    /// The tap wired to it (`tap0`).
    pub tap: String,
    /// MAC address.
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// IPv4 address and prefix length (`172.17.0.2/16`).
    pub cidr: String,
}

fn run(args: &[&str]) -> Result<String, VmError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(crate::io_err("run", std::path::Path::new(args[0])))?;
    if !out.status.success() {
        return Err(VmError::Net(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `ethN` links of the current namespace and the default gateway, from `ip -j`.
pub fn links() -> Result<(Vec<Link>, Option<String>), VmError> {
    let addrs = run(&["ip", "-j", "addr", "show"])?;
    let routes = run(&["ip", "-j", "route", "show", "default"])?;
    parse(&addrs, &routes)
}

/// [`links`]' parsing, from `ip -j addr show` and `ip -j route show default`.
pub fn parse(addrs: &str, routes: &str) -> Result<(Vec<Link>, Option<String>), VmError> {
    let bad = |e: serde_json::Error| VmError::Net(format!("ip -j: {e}"));
    let addrs: Vec<Value> = serde_json::from_str(addrs).map_err(bad)?;
    let routes: Vec<Value> = serde_json::from_str(routes).map_err(bad)?;
    let mut links = vec![];
    for a in &addrs {
        let name = a["ifname"].as_str().unwrap_or_default();
        let Some(n) = name.strip_prefix("eth").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Some(inet) = a["addr_info"]
            .as_array()
            .and_then(|i| i.iter().find(|x| x["family"] == "inet"))
        else {
            continue;
        };
        links.push(Link {
            name: name.to_string(),
            tap: format!("tap{n}"),
            mac: a["address"].as_str().unwrap_or_default().to_string(),
            mtu: a["mtu"].as_u64().unwrap_or(1500) as u32,
            cidr: format!(
                "{}/{}",
                inet["local"].as_str().unwrap_or_default(),
                inet["prefixlen"].as_u64().unwrap_or(32)
            ),
        });
    }
    links.sort_by(|a, b| a.name.cmp(&b.name));
    let gateway = routes
        .first()
        .and_then(|r| r["gateway"].as_str())
        .map(String::from);
    Ok((links, gateway))
}

/// Makes `link.tap` and redirects every frame between it and `link.name`, both ways.
pub fn wire(link: &Link) -> Result<(), VmError> {
    let mtu = link.mtu.to_string();
    run(&["ip", "tuntap", "add", &link.tap, "mode", "tap"])?;
    run(&["ip", "link", "set", &link.tap, "mtu", &mtu, "up"])?;
    for (from, to) in [(&link.name, &link.tap), (&link.tap, &link.name)] {
        run(&["tc", "qdisc", "add", "dev", from, "ingress"])?;
        run(&[
            "tc", "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32",
            "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn links_and_gateway_from_ip_json() {
        let addrs = r#"[{"ifname":"lo","address":"00:00:00:00:00:00","mtu":65536,"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
            {"ifname":"eth1","address":"02:42:ac:12:00:05","mtu":1400,"addr_info":[{"family":"inet","local":"172.18.0.5","prefixlen":16}]},
            {"ifname":"eth0","address":"02:42:ac:11:00:02","mtu":1500,"addr_info":[{"family":"inet6","local":"fe80::1","prefixlen":64},{"family":"inet","local":"172.17.0.2","prefixlen":16}]}]"#;
        let routes = r#"[{"dst":"default","gateway":"172.17.0.1","dev":"eth0"}]"#;
        let (links, gw) = parse(addrs, routes).unwrap();
        assert_eq!(gw.as_deref(), Some("172.17.0.1"));
        assert_eq!(links.len(), 2);
        assert_eq!(
            links[0],
            Link {
                name: "eth0".into(),
                tap: "tap0".into(),
                mac: "02:42:ac:11:00:02".into(),
                mtu: 1500,
                cidr: "172.17.0.2/16".into(),
            }
        );
        assert_eq!(links[1].mtu, 1400);
        assert_eq!(parse("[]", "[]").unwrap(), (vec![], None));
        assert!(parse("nope", "[]").is_err());
    }
}
