//! Address management, the pure part: which subnet a new network gets, which address a new
//! endpoint gets, and the MAC address that goes with it. The store applies these inside a
//! database transaction, so two `moat` processes never hand out the same address.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Where networks created without `--subnet` get theirs, in order, as Docker's default address
/// pools: 172.17-31.0.0/16, then 192.168.0-240.0/20.
pub fn pool() -> impl Iterator<Item = Ipv4Net> {
    let b16 = (17u8..=31).filter_map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok());
    let c20 = (0u8..16).filter_map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).ok());
    b16.chain(c20)
}

/// The first subnet of the pool that overlaps none of `used` (the namespace's routes and the
/// other networks' subnets).
pub fn free_subnet(used: &[Ipv4Net]) -> Option<Ipv4Net> {
    pool().find(|p| !used.iter().any(|u| overlaps(p, u)))
}

/// Whether two subnets share an address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The gateway a network gets by default: the subnet's first host address.
pub fn default_gateway(subnet: &Ipv4Net) -> Option<Ipv4Addr> {
    subnet.hosts().next()
}

/// The lowest host address of `subnet` that is not the gateway and not `taken`.
pub fn next_address(subnet: &Ipv4Net, gateway: Ipv4Addr, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    subnet.hosts().find(|a| *a != gateway && !taken.contains(a))
}

/// Whether `addr` may be asked for with `--ip` on `subnet`: a host address, not the gateway.
pub fn usable(subnet: &Ipv4Net, gateway: Ipv4Addr, addr: Ipv4Addr) -> bool {
    subnet.contains(&addr)
        && addr != gateway
        && addr != subnet.network()
        && addr != subnet.broadcast()
}

/// The MAC address for `addr`, as Docker derives it: 02:42 and the address's four bytes
/// (locally administered, unique on the bridge because the address is).
pub fn mac_for(addr: Ipv4Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (a unicast address: the multicast bit of the first byte clear).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    (mac[0] & 1 == 0).then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_skip_the_used_ones() {
        assert_eq!(free_subnet(&[]), Some(net("172.17.0.0/16")));
        // A host route inside 172.17/16 (docker0's, say) and a wider one over 172.18-19.
        let used = [net("172.17.0.1/32"), net("172.18.0.0/15")];
        assert_eq!(free_subnet(&used), Some(net("172.20.0.0/16")));
        // A default route (0.0.0.0/0) is not "used": it would cover everything.
        let all: Vec<Ipv4Net> = pool().collect();
        assert_eq!(free_subnet(&all), None);
        assert_eq!(pool().count(), 31);
    }

    #[test]
    fn addresses_are_handed_out_lowest_first_and_never_twice() {
        let s = net("10.0.0.0/29");
        let gw = default_gateway(&s).unwrap();
        assert_eq!(gw, Ipv4Addr::new(10, 0, 0, 1));
        let mut taken = vec![];
        while let Some(a) = next_address(&s, gw, &taken) {
            assert!(!taken.contains(&a));
            taken.push(a);
        }
        // .2 to .6: the network (.0), the gateway (.1) and the broadcast (.7) are never given.
        assert_eq!(taken.len(), 5);
        assert_eq!(taken[0], Ipv4Addr::new(10, 0, 0, 2));
        taken.retain(|a| *a != Ipv4Addr::new(10, 0, 0, 4));
        assert_eq!(
            next_address(&s, gw, &taken),
            Some(Ipv4Addr::new(10, 0, 0, 4))
        );
        assert!(!usable(&s, gw, Ipv4Addr::new(10, 0, 0, 7)));
        assert!(!usable(&s, gw, gw));
        assert!(usable(&s, gw, Ipv4Addr::new(10, 0, 0, 3)));
        assert!(!usable(&s, gw, Ipv4Addr::new(10, 0, 1, 3)));
    }

    #[test]
    fn macs() {
        let m = mac_for(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(format_mac(m), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02"), Some(m));
        assert_eq!(parse_mac("01:00:5e:00:00:01"), None, "multicast");
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("02:42:ac:11:00:zz"), None);
    }
}
