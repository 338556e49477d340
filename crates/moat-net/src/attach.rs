//! A container's endpoints: made at its start ([`Networks::attach`]), undone at its stop
//! ([`Networks::detach`]), added and removed while it runs (`network connect`/`disconnect`),
//! and reclaimed when their holder died ([`Networks::reconcile`]).

use std::fs::File;
use std::path::Path;

use crate::netlink::{NetlinkError, Rtnl};
use crate::store::{self, Endpoint, Network, Port};
use crate::{
    alive, ensure_bridge_with, ipam, lock, me, netns, proxy, Attached, NetError, Networks,
    PortRequest, Request,
};

/// What [`Networks::release`] left to delete: the veths and the namespace pin.
#[derive(Debug)]
pub struct Released {
    pin: std::path::PathBuf,
    veths: Vec<String>,
}

impl Released {
    /// Deletes them.
    pub fn cleanup(self) -> Result<(), NetError> {
        netns::remove(&self.pin);
        let mut host = Rtnl::open()?;
        for v in &self.veths {
            host.delete(v)?;
        }
        Ok(())
    }
}

impl Networks {
    /// Starts container `id`'s network: a namespace pinned at [`Config::netns_path`], an
    /// endpoint on each requested network (the first one's gateway is the default route), the
    /// published ports bound and their rules written, and the DNS responder's sockets. On
    /// failure nothing is left (no record, link, rule or pin).
    ///
    /// `deferred`: the container's shared ports wait for [`Networks::set_ready`] (it has a
    /// healthcheck: it joins its group once healthy).
    pub fn attach(
        &mut self,
        id: &str,
        name: &str,
        requests: &[Request],
        ports: &[PortRequest],
        deferred: bool,
    ) -> Result<Attached, NetError> {
        let path = self.cfg.netns_path(id);
        let made = self.try_attach(id, name, requests, ports, deferred, &path);
        if made.is_err() {
            // What this attempt made: its rows, links and pin (nobody else's: a failed start
            // of a container is the only user of its id's names).
            let _ = self.detach(id, false);
        }
        made
    }

    fn try_attach(
        &mut self,
        id: &str,
        name: &str,
        requests: &[Request],
        ports: &[PortRequest],
        deferred: bool,
        path: &Path,
    ) -> Result<Attached, NetError> {
        // What dead monitors left goes first: their addresses may be handed out below, and
        // their published ports' rules must not send traffic to whoever gets them.
        self.reconcile()?;
        let mut nets = vec![];
        for r in requests {
            let net = self.get(&r.network)?;
            if net.driver != "bridge" {
                return Err(NetError::NotBridge(net.name));
            }
            nets.push(net);
        }
        let user_defined = nets.iter().any(|n| !n.is_default_bridge());
        // The namespace is made on a thread while the addresses are handed out.
        let mut host = Rtnl::open()?;
        let pending = netns::start(path, user_defined);
        // Waited for whatever happens: a namespace finished after the clean-up would stay.
        let allocated = self.allocate_all(id, name, nets, requests, &mut host);
        let made = pending.wait();
        let endpoints = allocated?;
        let (nsfd, mut inside, dns) = made?;
        log::debug!("network: namespace made");
        let mut routed_out = false;
        for (i, ((net, ep), req)) in endpoints.iter().zip(requests).enumerate() {
            let veth = &ep.veth;
            let mac = req.mac.unwrap_or_else(|| ipam::mac_for(ep.ip));
            let inner = format!("eth{i}");
            let _ = host.delete(veth);
            host.add_veth(veth, &inner, std::os::fd::AsFd::as_fd(&nsfd), mac, net.mtu)?;
            let br = host
                .index(&net.bridge)?
                .ok_or_else(|| NetlinkError::Refused {
                    what: format!("find bridge {}", net.bridge),
                    source: std::io::Error::from_raw_os_error(libc::ENODEV),
                })?;
            let v = host.index(veth)?.ok_or_else(|| NetlinkError::Refused {
                what: format!("find veth {veth}"),
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
            })?;
            host.set_up(v, Some(br), veth)?;
            let e = inside.index(&inner)?.ok_or_else(|| NetlinkError::Refused {
                what: format!("find {inner} in the container's namespace"),
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
            })?;
            let prefix = net.subnet.map_or(32, |s| s.prefix_len());
            inside.add_address(e, ep.ip, prefix, &inner)?;
            inside.set_up(e, None, &inner)?;
            // The default route goes through the first network that is not internal (an
            // internal network has no way out: no route beyond its subnet, as Docker's).
            if !routed_out && !net.internal {
                if let Some(gw) = net.gateway {
                    inside.add_default_route(gw)?;
                    routed_out = true;
                }
            }
        }
        let (bound, listeners) = self.publish(id, &endpoints, ports, deferred)?;
        Ok(Attached {
            endpoints,
            ports: bound,
            listeners,
            dns,
        })
    }

    /// An address on each network (and its bridge ready), in order.
    fn allocate_all(
        &mut self,
        id: &str,
        name: &str,
        nets: Vec<Network>,
        requests: &[Request],
        host: &mut Rtnl,
    ) -> Result<Vec<(Network, Endpoint)>, NetError> {
        let mut endpoints = vec![];
        let mut made = false;
        for (i, (net, req)) in nets.into_iter().zip(requests).enumerate() {
            let veth = format!("mv{}{i}", &id[..id.len().min(11)]);
            let (mut ep, reclaimed) =
                self.store
                    .allocate(&net, id, name, &req.aliases, req.ip, &veth, me(), alive)?;
            // A dead holder's veth (its namespace pin may have outlived it) goes now.
            for r in reclaimed {
                let _ = host.delete(&r.veth);
            }
            made |= ensure_bridge_with(host, &net)?;
            if let Some(mac) = req.mac {
                ep.mac = ipam::format_mac(mac);
                self.store.set_mac(&ep)?;
            }
            endpoints.push((net, ep));
        }
        if made {
            // A bridge made now has no rules yet (its network's first container, or the
            // first start after a reboot): egress needs its masquerade.
            let _lock = lock()?;
            self.write_rules()?;
        }
        log::debug!("network: addresses allocated, bridges ready");
        Ok(endpoints)
    }

    /// Binds the published ports (so that a port another program holds is refused before the
    /// container starts) and writes their rules.
    fn publish(
        &mut self,
        id: &str,
        endpoints: &[(Network, Endpoint)],
        ports: &[PortRequest],
        deferred: bool,
    ) -> Result<(Vec<Port>, Vec<proxy::Listener>), NetError> {
        let Some((_, ep)) = endpoints.first() else {
            return Ok((vec![], vec![]));
        };
        if ports.is_empty() {
            return Ok((vec![], vec![]));
        }
        let mut bound = vec![];
        let mut listeners = vec![];
        // A shared port is checked against the records and bound under the lock: two groups
        // must not both find it free.
        let shared = ports
            .iter()
            .any(|p| !p.group.is_empty() && p.host_port != 0);
        let mut lock_held = if shared { Some(lock()?) } else { None };
        let held = if shared { self.store.ports()? } else { vec![] };
        for p in ports {
            let share = !p.group.is_empty() && p.host_port != 0;
            if share {
                if let Some(other) = held.iter().find(|h| {
                    h.proto == p.proto
                        && h.host_port == p.host_port
                        && (h.host_ip == p.host_ip
                            || h.host_ip.is_unspecified()
                            || p.host_ip.is_unspecified())
                        && h.group != p.group
                }) {
                    return Err(NetError::PortTaken {
                        addr: p.host_ip,
                        port: p.host_port,
                        holder: other.container_id.chars().take(12).collect(),
                    });
                }
            }
            // Only TCP waits: a UDP socket in the group takes datagrams once bound.
            let wait = share && deferred && p.proto == "tcp";
            let l = if share {
                proxy::Listener::bind_shared(&p.proto, p.host_ip, p.host_port, !wait)
            } else {
                proxy::Listener::bind(&p.proto, p.host_ip, p.host_port)
            }
            .map_err(|source| NetError::PortInUse {
                addr: p.host_ip,
                port: p.host_port,
                source,
            })?;
            bound.push(Port {
                container_id: id.into(),
                proto: p.proto.clone(),
                host_ip: p.host_ip,
                host_port: l.port(),
                container_ip: ep.ip,
                container_port: p.container_port,
                group: if share {
                    p.group.clone()
                } else {
                    String::new()
                },
                ready: !wait,
            });
            listeners.push(l);
        }
        let _lock = match lock_held.take() {
            Some(l) => l,
            None => lock()?,
        };
        self.store.add_ports(&bound, me())?;
        self.write_rules()?;
        Ok((bound, listeners))
    }

    /// Ends container `id`'s network: its records, its veths, its published ports' rules and
    /// its namespace pin. `mine`: only what this process holds (a monitor after its
    /// container's exit: a new start may already have taken over, and its endpoints, veths
    /// and pin are left alone); otherwise whatever is there (`rm` after a monitor died).
    pub fn detach(&mut self, id: &str, mine: bool) -> Result<(), NetError> {
        match self.release(id, mine)? {
            Some(r) => r.cleanup(),
            None => Ok(()),
        }
    }

    /// The fast half of [`Networks::detach`], for the exit path: the records and the port
    /// rules go (the addresses and ports are free for the next start at once) and the host's
    /// veths are set down (off the bridge's forwarding, so a reused address has no twin);
    /// deleting the veths and the pin, which takes the kernel tens of milliseconds, is left
    /// to [`Released::cleanup`]. `None`: nothing of this process's was there.
    pub fn release(&mut self, id: &str, mine: bool) -> Result<Option<Released>, NetError> {
        let holder = mine.then(me);
        let had_ports = self.store.ports()?.iter().any(|p| p.container_id == id);
        let eps = self.store.release(id, holder)?;
        if mine && eps.is_empty() {
            return Ok(None);
        }
        let mut host = Rtnl::open()?;
        for e in &eps {
            if let Some(i) = host.index(&e.veth)? {
                let _ = host.set_down(i, &e.veth);
            }
        }
        if had_ports {
            let _lock = lock()?;
            self.write_rules()?;
        }
        Ok(Some(Released {
            pin: self.cfg.netns_path(id),
            veths: eps.into_iter().map(|e| e.veth).collect(),
        }))
    }

    /// `network connect` of a running container: one more endpoint in its pinned namespace
    /// (the next free `ethN`), held by its monitor (`holder`), so that its stop releases it.
    pub fn attach_running(
        &mut self,
        id: &str,
        name: &str,
        req: &Request,
        holder: store::Holder,
    ) -> Result<Endpoint, NetError> {
        let net = self.get(&req.network)?;
        if net.driver != "bridge" {
            return Err(NetError::NotBridge(net.name));
        }
        let mut inside = netns::socket_in(&self.cfg.netns_path(id))?;
        let mut k = 0;
        while inside.index(&format!("eth{k}"))?.is_some() {
            k += 1;
        }
        let inner = format!("eth{k}");
        let veth = format!("mv{}{k}", &id[..id.len().min(11)]);
        let (mut ep, _) =
            self.store
                .allocate(&net, id, name, &req.aliases, req.ip, &veth, holder, alive)?;
        let mut host = Rtnl::open()?;
        let plumbed = (|| -> Result<(), NetError> {
            if ensure_bridge_with(&mut host, &net)? {
                let _lock = lock()?;
                self.write_rules()?;
            }
            let mac = req.mac.unwrap_or_else(|| ipam::mac_for(ep.ip));
            if req.mac.is_some() {
                ep.mac = ipam::format_mac(mac);
                self.store.set_mac(&ep)?;
            }
            let nsfile = File::open(self.cfg.netns_path(id)).map_err(|source| NetError::Io {
                what: "open",
                path: self.cfg.netns_path(id),
                source,
            })?;
            host.add_veth(
                &veth,
                &inner,
                std::os::fd::AsFd::as_fd(&nsfile),
                mac,
                net.mtu,
            )?;
            let missing = |what: String| NetlinkError::Refused {
                what,
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
            };
            let br = host
                .index(&net.bridge)?
                .ok_or_else(|| missing(format!("find bridge {}", net.bridge)))?;
            let v = host
                .index(&veth)?
                .ok_or_else(|| missing(format!("find veth {veth}")))?;
            host.set_up(v, Some(br), &veth)?;
            let e = inside
                .index(&inner)?
                .ok_or_else(|| missing(format!("find {inner} in the container's namespace")))?;
            let prefix = net.subnet.map_or(32, |s| s.prefix_len());
            inside.add_address(e, ep.ip, prefix, &inner)?;
            inside.set_up(e, None, &inner)?;
            Ok(())
        })();
        if let Err(e) = plumbed {
            let _ = host.delete(&veth);
            let _ = self.store.remove_endpoint(&net.id, id);
            return Err(e);
        }
        Ok(ep)
    }

    /// `network disconnect` of a running container: its endpoint on `network` goes.
    pub fn detach_running(&mut self, id: &str, network: &str) -> Result<(), NetError> {
        let net = self.get(network)?;
        if let Some(ep) = self.store.remove_endpoint(&net.id, id)? {
            Rtnl::open()?.delete(&ep.veth)?;
            // Its published ports went to that address, which the next container may get.
            if self.store.remove_ports_to(id, ep.ip)? {
                let _lock = lock()?;
                self.write_rules()?;
            }
        }
        Ok(())
    }

    /// Puts a running container's shared ports in its group's rules (`ready`), or takes them
    /// out (unhealthy, or about to stop: new connections from outside go to the others); its
    /// helper's listeners are the caller's to open or close. Whether anything changed.
    pub fn set_ready(&mut self, id: &str, ready: bool) -> Result<bool, NetError> {
        let _lock = lock()?;
        let changed = self.store.set_ports_ready(id, ready)?;
        if changed {
            self.write_rules()?;
        }
        Ok(changed)
    }

    /// Cleans up after holders that died without detaching (a monitor killed with SIGKILL, a
    /// crash, a reboot): their records go, their veths and namespace pins go, and the rules are
    /// rewritten when their ports went. Returns the endpoints reclaimed. Run by `network ls`,
    /// `network prune` and when `moat serve` starts.
    pub fn reconcile(&mut self) -> Result<Vec<Endpoint>, NetError> {
        let (dead, ports) = self.store.reclaim(alive)?;
        if dead.is_empty() && !ports {
            return Ok(dead);
        }
        let live = self.store.endpoints(alive)?;
        let mut host = Rtnl::open()?;
        for e in &dead {
            host.delete(&e.veth)?;
            if !live.iter().any(|l| l.container_id == e.container_id) {
                netns::remove(&self.cfg.netns_path(&e.container_id));
            }
        }
        if ports {
            let _lock = lock()?;
            self.write_rules()?;
        }
        Ok(dead)
    }
}
