//! The guest's network: loopback up, and each of the container's interfaces (found by MAC
//! among the VMM's NICs) renamed, sized and addressed as in the container's namespace on the
//! host, with the default route. Plain socket ioctls: a handful of calls at boot, no netlink
//! library in the agent.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use super::AgentError;
use crate::proto;

fn err(what: impl Into<String>) -> AgentError {
    AgentError::Config(format!("network: {}", what.into()))
}

/// An `ifreq` with `name` filled in.
fn ifreq(name: &str) -> Result<libc::ifreq, AgentError> {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= r.ifr_name.len() {
        return Err(err(format!("interface name {name:?} too long")));
    }
    for (d, s) in r.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(r)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; the bytes are copied.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(
    sock: &OwnedFd,
    req: libc::c_ulong,
    arg: *mut libc::c_void,
    what: &str,
) -> Result<(), AgentError> {
    // SAFETY: `arg` points to a live ifreq or rtentry of the kind `req` expects.
    if unsafe { libc::ioctl(sock.as_raw_fd(), req, arg) } < 0 {
        return Err(err(format!("{what}: {}", nix::Error::last())));
    }
    Ok(())
}

fn set_up(sock: &OwnedFd, name: &str) -> Result<(), AgentError> {
    let mut r = ifreq(name)?;
    ioctl(
        sock,
        libc::SIOCGIFFLAGS,
        (&mut r as *mut libc::ifreq).cast(),
        "get flags",
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(
        sock,
        libc::SIOCSIFFLAGS,
        (&mut r as *mut libc::ifreq).cast(),
        &format!("{name} up"),
    )
}

/// The guest's interface with `mac` (case-insensitive).
fn by_mac(mac: &str) -> Option<String> {
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .find_map(|e| {
            let addr = std::fs::read_to_string(e.path().join("address")).ok()?;
            addr.trim()
                .eq_ignore_ascii_case(mac)
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
}

/// Configures the guest's network (or only loopback).
pub(super) fn configure(net: Option<&proto::Net>) -> Result<(), AgentError> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| err(format!("socket: {e}")))?;
    set_up(&sock, "lo")?;
    let Some(net) = net else {
        return Ok(());
    };
    for i in &net.ifaces {
        let found = by_mac(&i.mac).ok_or_else(|| err(format!("no NIC with MAC {}", i.mac)))?;
        if found != i.name {
            let mut r = ifreq(&found)?;
            let new = ifreq(&i.name)?;
            r.ifr_ifru.ifru_newname = new.ifr_name;
            ioctl(
                &sock,
                libc::SIOCSIFNAME,
                (&mut r as *mut libc::ifreq).cast(),
                "rename",
            )?;
        }
        let mut r = ifreq(&i.name)?;
        r.ifr_ifru.ifru_mtu = i.mtu as libc::c_int;
        ioctl(
            &sock,
            libc::SIOCSIFMTU,
            (&mut r as *mut libc::ifreq).cast(),
            "set MTU",
        )?;
        let (ip, prefix) = i
            .cidr
            .split_once('/')
            .and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u32>().ok()?)))
            .filter(|(_, p)| *p <= 32)
            .ok_or_else(|| err(format!("bad address {}", i.cidr)))?;
        let mut r = ifreq(&i.name)?;
        r.ifr_ifru.ifru_addr = sockaddr(ip);
        ioctl(
            &sock,
            libc::SIOCSIFADDR,
            (&mut r as *mut libc::ifreq).cast(),
            "set address",
        )?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let mut r = ifreq(&i.name)?;
        r.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
        ioctl(
            &sock,
            libc::SIOCSIFNETMASK,
            (&mut r as *mut libc::ifreq).cast(),
            "set netmask",
        )?;
        set_up(&sock, &i.name)?;
    }
    if let Some(gw) = &net.gateway {
        let gw: Ipv4Addr = gw.parse().map_err(|_| err(format!("bad gateway {gw}")))?;
        // SAFETY: rtentry is plain old data; all zeroes is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        ioctl(
            &sock,
            libc::SIOCADDRT,
            (&mut rt as *mut libc::rtentry).cast(),
            "default route",
        )?;
    }
    Ok(())
}
