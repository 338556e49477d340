//! Networks: bridges, endpoints, name resolution, published ports, isolation and clean-up.
//!
//! Every test runs in a network namespace of its own ([`Sandbox`]: the test's thread is moved
//! into a new one, and the moat processes it starts inherit it), so the bridges, veths and
//! nftables rules never touch the host's interfaces, and tests do not see each other's.
//! Traffic goes only to loopback and to addresses inside that namespace.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{can_run, inspect, Engine};

/// The calling test thread in a new network namespace with loopback up; and an "outside"
/// address (192.0.2.10, TEST-NET-1, on a veth of that namespace; no dummy module here) that stands for
/// the world beyond the host.
struct Sandbox;

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

impl Sandbox {
    fn enter() -> Sandbox {
        common::own_netns();
        for cmd in [
            "ip link add outside0 type veth peer name outside1",
            "ip link set outside1 up",
            "ip addr add 192.0.2.10/24 dev outside0",
            "ip link set outside0 up",
        ] {
            let ok = Command::new("sh").args(["-c", cmd]).status().unwrap();
            assert!(ok.success(), "{cmd}");
        }
        Sandbox
    }
}

fn engine() -> Option<(Sandbox, Engine)> {
    if !can_run() {
        return None;
    }
    let sb = Sandbox::enter();
    Some((sb, Engine::with_busybox()))
}

/// The body of an HTTP GET of `/` at `addr:port`.
fn http_get(addr: Ipv4Addr, port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

fn links() -> String {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `get HOST PORT` for container scripts: the body of an HTTP GET of `/`, over busybox nc with
/// a timeout (Debian's busybox-static 1.35 wget crashes with `-T`, on the host as well).
const GET: &str =
    "get() { printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $1 $2 | sed '1,/^\\r$/d'; }; ";

/// A web server container (busybox httpd serving `body` at /), detached.
fn web(e: &Engine, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "busybox",
        "sh",
        "-c",
        "mkdir -p /www && echo hello from $HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    e.ok(&args);
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name_and_alias() {
    let Some((_sb, e)) = engine() else { return };
    e.ok(&["network", "create", "appnet"]);
    web(
        &e,
        "web",
        &[
            "--network",
            "appnet",
            "--network-alias",
            "www",
            "--hostname",
            "w1",
        ],
    );
    let (code, out, err) = common::RunExt::run(
        &e,
        &[
            "--network",
            "appnet",
            "busybox",
            "sh",
            "-c",
            &format!("{GET}cat /etc/resolv.conf; for n in web www; do get $n 80 || echo fail $n; done; ping -c1 -W2 web >/dev/null && echo pinged"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nameserver 127.0.0.11"), "{out}");
    assert_eq!(out.matches("hello from w1").count(), 2, "{out}");
    assert!(out.contains("pinged"), "{out}");
    // An unknown name is not ours: forwarded, and (no resolver here) not found.
    let (_, out, _) = common::RunExt::run(
        &e,
        &[
            "--network",
            "appnet",
            "busybox",
            "sh",
            "-c",
            "nslookup nosuchname.invalid || echo unresolved",
        ],
    );
    assert!(out.contains("unresolved"), "{out}");
    let v = inspect(&e, "web");
    let ip = v["NetworkSettings"]["Networks"]["appnet"]["IPAddress"]
        .as_str()
        .unwrap();
    assert!(ip.starts_with("172.") || ip.starts_with("192.168."), "{v}");
    assert_eq!(v["HostConfig"]["NetworkMode"], "appnet");
}

#[test]
fn the_default_bridge_gives_an_address_and_a_way_out_but_no_names() {
    let Some((_sb, e)) = engine() else { return };
    // The "outside" server: a listener on the namespace's dummy address.
    let l = std::net::TcpListener::bind((OUTSIDE, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.write_all(b"HTTP/1.0 200 OK\r\n\r\noutside\n").unwrap();
    });
    let (code, out, err) = common::RunExt::run(
        &e,
        &[
            "busybox",
            "sh",
            "-c",
            &format!("{GET}ip -o -4 addr show eth0; get {OUTSIDE} {port}"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("inet 172.17.0.2/16") || out.contains("inet 172."),
        "{out}"
    );
    assert!(out.contains("outside"), "{out}");
    server.join().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&e.ok(&["network", "inspect", "bridge"])).unwrap();
    assert_eq!(v[0]["Driver"], "bridge");
    assert_eq!(
        v[0]["Options"]["com.docker.network.bridge.default_bridge"],
        "true"
    );
}

/// A "world" beyond the host: a process in a network namespace of its own, joined to the
/// test's by a veth (198.18.0.1 here, 198.18.0.2 there), running a TCP server on port 8000 that
/// answers with the address the connection came from. Killed on drop.
struct World(std::process::Child);

impl World {
    fn start() -> World {
        let script = "ip link set lo up; while ! ip link show w1 >/dev/null 2>&1; do sleep 0.02; done; \
            ip addr add 198.18.0.2/24 dev w1; ip link set w1 up; \
            exec python3 -c 'import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"198.18.0.2\", 8000)); s.listen()\nwhile True:\n  c, a = s.accept(); c.recv(1024); c.sendall(b\"HTTP/1.0 200 OK\\r\\n\\r\\nfrom \" + a[0].encode() + b\"\\n\"); c.close()'";
        let child = Command::new("unshare")
            .args(["--net", "sh", "-c", script])
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        // The link goes into the child's namespace only once unshare has made it (until then
        // the pid is still in ours).
        let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        common::eventually("the world's namespace", || {
            std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|n| n != mine)
        });
        for cmd in [
            format!("ip link add w0 type veth peer name w1 netns {pid}"),
            "ip addr add 198.18.0.1/24 dev w0".into(),
            "ip link set w0 up".into(),
        ] {
            let ok = Command::new("sh").args(["-c", &cmd]).status().unwrap();
            assert!(ok.success(), "{cmd}");
        }
        World(child)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn egress_is_forwarded_and_masqueraded() {
    let Some((_sb, e)) = engine() else { return };
    let world = World::start();
    common::eventually("the world's server", || {
        http_get(Ipv4Addr::new(198, 18, 0, 2), 8000).is_ok()
    });
    // The world sees the host's address, not the container's: masquerade.
    let (code, out, err) = common::RunExt::run(
        &e,
        &["busybox", "sh", "-c", &format!("{GET}get 198.18.0.2 8000")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "from 198.18.0.1\n");
    e.ok(&["network", "create", "--internal", "closed"]);
    let (_, out, _) = common::RunExt::run(
        &e,
        &[
            "--network",
            "closed",
            "busybox",
            "sh",
            "-c",
            &format!("{GET}get 198.18.0.2 8000 | grep -q from && echo reached || echo blocked"),
        ],
    );
    assert_eq!(out, "blocked\n");
    // From the world: a published port answers (DNAT); the container's address itself, routed
    // to, does not (forwarding is on, but only replies and published ports go into a bridge).
    web(&e, "exposed", &["--hostname", "x1", "-p", "18200:80"]);
    let ip = inspect(&e, "exposed")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let from_world = |addr: &str, port: u16| {
        let py = format!(
            "import socket\ns=socket.create_connection(('{addr}', {port}), timeout=2)\ns.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\nprint(s.recv(4096).decode().split('\\r\\n\\r\\n')[-1], end='')"
        );
        let pid = world.0.id().to_string();
        Command::new("nsenter")
            .args(["-t", &pid, "-n", "sh", "-c"])
            .arg(format!(
                "ip route replace 172.16.0.0/12 via 198.18.0.1; python3 -c \"{py}\""
            ))
            .output()
            .unwrap()
    };
    common::eventually("the published port from the world", || {
        String::from_utf8_lossy(&from_world("198.18.0.1", 18200).stdout).contains("hello from x1")
    });
    let direct = from_world(&ip, 80);
    assert!(
        !String::from_utf8_lossy(&direct.stdout).contains("hello"),
        "routed straight to {ip}: {direct:?}"
    );
}

#[test]
fn internal_networks_have_no_way_out_and_none_has_only_loopback() {
    let Some((_sb, e)) = engine() else { return };
    e.ok(&["network", "create", "--internal", "sealed"]);
    let l = std::net::TcpListener::bind((OUTSIDE, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let (_, out, _) = common::RunExt::run(
        &e,
        &[
            "--network",
            "sealed",
            "busybox",
            "sh",
            "-c",
            &format!("{GET}get {OUTSIDE} {port} | grep -q . && echo reached || echo blocked"),
        ],
    );
    assert!(out.contains("blocked"), "{out}");
    let (code, out, err) = common::RunExt::run(
        &e,
        &["--network", "none", "busybox", "sh", "-c", "ip -o link"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(": lo:"), "{out}");
}

#[test]
fn a_published_port_answers_from_the_host_and_removal_leaves_nothing() {
    let Some((_sb, e)) = engine() else { return };
    e.ok(&["network", "create", "pub"]);
    web(
        &e,
        "site",
        &[
            "--network",
            "pub",
            "--hostname",
            "s1",
            "-p",
            "18080:80",
            "-p",
            "127.0.0.1::80",
        ],
    );
    let ports = e.ok(&["port", "site"]);
    assert!(ports.contains("80/tcp -> 0.0.0.0:18080"), "{ports}");
    let picked: u16 = ports
        .lines()
        .find_map(|l| l.strip_prefix("80/tcp -> 127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{ports}"));
    common::eventually("httpd up", || http_get(Ipv4Addr::LOCALHOST, 18080).is_ok());
    // Over loopback: the proxy; to the host's other address: the DNAT rule.
    assert_eq!(
        http_get(Ipv4Addr::LOCALHOST, 18080).unwrap(),
        "hello from s1\n"
    );
    assert_eq!(http_get(OUTSIDE, 18080).unwrap(), "hello from s1\n");
    assert_eq!(
        http_get(Ipv4Addr::LOCALHOST, picked).unwrap(),
        "hello from s1\n"
    );
    // The port is taken: a second container asking for it is refused, and leaves nothing.
    let out = e.moat(&[
        "run",
        "-d",
        "--network",
        "pub",
        "-p",
        "18080:80",
        "busybox",
        "sleep",
        "9",
    ]);
    assert!(!out.status.success());
    let v = inspect(&e, "site");
    assert_eq!(
        v["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"], "18080",
        "{v}"
    );
    e.ok(&["rm", "-f", "site"]);
    e.moat(&["container", "prune", "-f"]);
    // The monitor deletes the veth just after reporting the exit.
    common::eventually("the veth to go", || !links().contains("mv"));
    let rules = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains("dport 18080"), "{rules}");
    assert!(http_get(Ipv4Addr::LOCALHOST, 18080).is_err());
    let net: serde_json::Value =
        serde_json::from_str(&e.ok(&["network", "inspect", "pub"])).unwrap();
    assert_eq!(net[0]["Containers"], serde_json::json!({}));
    let bridge = format!("br-{}", &net[0]["Id"].as_str().unwrap()[..12]);
    assert!(links().contains(&bridge));
    e.ok(&["network", "rm", "pub"]);
    assert!(!links().contains(&bridge), "{}", links());
}

#[test]
fn concurrent_starts_never_share_an_address() {
    let Some((_sb, e)) = engine() else { return };
    e.ok(&["network", "create", "--subnet", "10.77.0.0/24", "crowd"]);
    let e = std::sync::Arc::new(e);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let e = e.clone();
            std::thread::spawn(move || {
                let name = format!("c{i}");
                e.ok(&[
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "--network",
                    "crowd",
                    "busybox",
                    "sleep",
                    "60",
                ]);
                name
            })
        })
        .collect();
    let names: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut ips: Vec<String> = names
        .iter()
        .map(|n| {
            inspect(&e, n)["NetworkSettings"]["Networks"]["crowd"]["IPAddress"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8, "{ips:?}");
    assert!(ips.iter().all(|ip| ip.starts_with("10.77.0.")), "{ips:?}");
    // A requested address that is taken is refused; a free one is given.
    let out = e.moat(&[
        "run",
        "--rm",
        "--network",
        "crowd",
        "--ip",
        &ips[0],
        "busybox",
        "true",
    ]);
    assert!(!out.status.success());
    let (code, out, err) = common::RunExt::run(
        &*e,
        &[
            "--network",
            "crowd",
            "--ip",
            "10.77.0.200",
            "busybox",
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "eth0",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10.77.0.200/24"), "{out}");
    // A network in use is not removed; bad requests are refused clearly.
    let out = e.moat(&["network", "rm", "crowd"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("active endpoints"));
    let out = e.moat(&["network", "create", "--subnet", "10.77.0.0/16", "overlap"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("overlaps"),
        "{out:?}"
    );
    let out = e.moat(&["run", "--rm", "--network", "nosuchnet", "busybox", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("network nosuchnet not found"));
}

#[test]
fn a_container_can_join_another_ones_namespace() {
    let Some((_sb, e)) = engine() else { return };
    web(&e, "host1", &["--hostname", "h1"]);
    common::eventually("httpd up", || {
        let script = format!("{GET}get 127.0.0.1 80");
        let args = [
            "--network",
            "container:host1",
            "busybox",
            "sh",
            "-c",
            &script,
        ];
        common::RunExt::run(&e, &args).1.contains("hello from h1")
    });
    let v = inspect(&e, "host1");
    assert!(
        v["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap()
            .starts_with("172."),
        "{v}"
    );
    // The namespace is the target's as it runs at each start: refused while it is stopped,
    // joined again (its new namespace) once it runs.
    let script = format!("{GET}get 127.0.0.1 80");
    e.ok(&[
        "create",
        "--name",
        "joined",
        "--network",
        "container:host1",
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    e.ok(&["stop", "-t", "1", "host1"]);
    let refused = e.moat(&["start", "-a", "joined"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not running"),
        "{refused:?}"
    );
    e.ok(&["start", "host1"]);
    common::eventually("the joined container reaches the restarted target", || {
        e.moat(&["start", "-a", "joined"])
            .stdout
            .ends_with(b"hello from h1\n")
    });
}

/// A resolver standing for the world's (on 127.0.0.1:53 of the test's namespace): answers every
/// A question with 198.51.100.7. Serves until the test ends.
fn fake_upstream() {
    let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 53)).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            // The question ends at the name's zero byte plus type and class.
            let mut end = 12;
            while end < n && buf[end] != 0 {
                end += usize::from(buf[end]) + 1;
            }
            end += 5;
            if end > n {
                continue;
            }
            let mut r = buf[..end].to_vec();
            r[2] = 0x81; // response, recursion desired
            r[3] = 0x80; // recursion available, no error
            r[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]); // one answer
                                                           // The answer: a pointer to the question's name, A, IN, TTL 60, 4 bytes.
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 51, 100, 7]);
            let _ = s.send_to(&r, from);
        }
    });
}

#[test]
fn other_names_are_forwarded_to_the_resolvers() {
    let Some((_sb, e)) = engine() else { return };
    fake_upstream();
    e.ok(&["network", "create", "fwd"]);
    // On a user-defined network: the embedded DNS forwards to --dns; on the default bridge
    // the container asks --dns itself (here: unreachable from its namespace, so only the
    // resolv.conf is checked).
    let (code, out, err) = common::RunExt::run(
        &e,
        &[
            "--network",
            "fwd",
            "--dns",
            "127.0.0.1",
            "busybox",
            "sh",
            "-c",
            "cat /etc/resolv.conf; nslookup www.example.test",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("nameserver 127.0.0.11\n"), "{out}");
    assert!(out.contains("198.51.100.7"), "{out}");
    let (_, out, _) = common::RunExt::run(
        &e,
        &["--dns", "10.1.2.3", "busybox", "cat", "/etc/resolv.conf"],
    );
    assert!(out.starts_with("nameserver 10.1.2.3\n"), "{out}");
}

#[test]
fn what_a_killed_monitor_left_is_reclaimed() {
    let Some((_sb, e)) = engine() else { return };
    e.ok(&["network", "create", "--subnet", "10.88.5.0/30", "tiny"]);
    web(&e, "victim", &["--network", "tiny", "-p", "18090:80"]);
    let id = inspect(&e, "victim")["Id"].as_str().unwrap().to_string();
    let mpid = common::monitor_of(&id).expect("a monitor process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(mpid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    common::eventually("the monitor gone", || {
        !std::path::Path::new(&format!("/proc/{mpid}")).exists()
    });
    assert!(links().contains("mv"), "{}", links());
    // The next look at the networks cleans up: veth, rules, the endpoint.
    e.ok(&["network", "ls"]);
    assert!(!links().contains("mv"), "{}", links());
    let rules = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("dport 18090"));
    let net: serde_json::Value =
        serde_json::from_str(&e.ok(&["network", "inspect", "tiny"])).unwrap();
    assert_eq!(net[0]["Containers"], serde_json::json!({}));
    // The /30's one address is free again.
    e.ok(&["rm", "-f", "victim"]);
    let (code, _, err) = common::RunExt::run(&e, &["--network", "tiny", "busybox", "true"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_running_container_is_connected_and_disconnected() {
    let Some((_sb, e)) = engine() else { return };
    e.ok(&["network", "create", "front"]);
    e.ok(&["network", "create", "back"]);
    web(&e, "db", &["--network", "back", "--hostname", "d1"]);
    e.ok(&[
        "run",
        "-d",
        "--name",
        "app",
        "--network",
        "front",
        "busybox",
        "sleep",
        "60",
    ]);
    let ifaces = || e.ok(&["exec", "app", "ip", "-o", "-4", "addr"]);
    assert!(!ifaces().contains("eth1"), "{}", ifaces());
    // back is not reachable from front; connected, db is there by name.
    e.ok(&[
        "network",
        "connect",
        "--alias",
        "application",
        "back",
        "app",
    ]);
    assert!(ifaces().contains("eth1"), "{}", ifaces());
    let script = format!("{GET}get db 80");
    common::eventually("db by name over the new interface", || {
        e.ok(&["exec", "app", "sh", "-c", &script])
            .contains("hello from d1")
    });
    let v = inspect(&e, "app");
    assert!(
        v["NetworkSettings"]["Networks"]["back"]["IPAddress"]
            .as_str()
            .is_some_and(|a| !a.is_empty()),
        "{v}"
    );
    // Disconnected: the interface goes, and the network can be removed once db is gone.
    e.ok(&["network", "disconnect", "back", "app"]);
    assert!(!ifaces().contains("eth1"), "{}", ifaces());
    e.ok(&["rm", "-f", "db"]);
    e.ok(&["network", "rm", "back"]);
    e.ok(&["rm", "-f", "app"]);
}

#[test]
fn publish_all_mac_gateway_and_prune() {
    let Some((_sb, e)) = engine() else { return };
    let tar = e.busybox_tar();
    e.ok(&[
        "import",
        "--change",
        "CMD [\"/bin/sh\"]",
        "--change",
        "EXPOSE 80",
        tar.to_str().unwrap(),
        "exposed",
    ]);
    e.ok(&[
        "network",
        "create",
        "--subnet",
        "10.99.0.0/24",
        "--gateway",
        "10.99.0.254",
        "gw",
    ]);
    e.ok(&[
        "run", "-d", "--name", "pa", "-P", "--network", "gw", "--mac-address",
        "02:00:00:aa:bb:cc", "--hostname", "p1", "exposed", "sh", "-c",
        "mkdir -p /www && echo hello from $HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    let ports = e.ok(&["port", "pa", "80"]);
    let port: u16 = ports
        .trim()
        .strip_prefix("0.0.0.0:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{ports}"));
    common::eventually("the -P port answers", || {
        http_get(Ipv4Addr::LOCALHOST, port).is_ok_and(|b| b == "hello from p1\n")
    });
    let inside = e.ok(&[
        "exec",
        "pa",
        "sh",
        "-c",
        "cat /sys/class/net/eth0/address; ip route",
    ]);
    assert!(inside.contains("02:00:00:aa:bb:cc"), "{inside}");
    assert!(inside.contains("default via 10.99.0.254"), "{inside}");
    let v = inspect(&e, "pa");
    assert_eq!(
        v["NetworkSettings"]["Networks"]["gw"]["MacAddress"],
        "02:00:00:aa:bb:cc"
    );
    assert_eq!(
        v["NetworkSettings"]["Networks"]["gw"]["Gateway"],
        "10.99.0.254"
    );
    // prune: an unused network goes; one a (stopped) container names stays.
    e.ok(&["network", "create", "unused"]);
    e.ok(&["stop", "-t", "1", "pa"]);
    let out = e.ok(&["network", "prune", "-f"]);
    assert!(out.contains("unused") && !out.contains("gw"), "{out}");
    let ls = e.ok(&["network", "ls"]);
    assert!(ls.contains(" gw ") && !ls.contains("unused"), "{ls}");
}

/// The bridge's MAC address and how the kernel got it (3: set, so it never follows its ports).
fn bridge_mac() -> (String, String) {
    // /sys/class/net shows the namespace sysfs was mounted in, not the test's: asked from a
    // shell that mounts its own.
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t sysfs sysfs /sys && b=$(ip -o link show type bridge | cut -d: -f2 | tr -d ' ') && cat /sys/class/net/$b/address /sys/class/net/$b/addr_assign_type"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(String::from);
    match (lines.next(), lines.next()) {
        (Some(a), Some(t)) => (a, t),
        _ => panic!("no bridge: {text} {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[test]
fn the_bridge_keeps_its_address_as_containers_come_and_go() {
    let Some((_sb, e)) = engine() else { return };
    // A bridge takes its lowest port's MAC unless it has one of its own; when that changes,
    // the containers' neighbour entries for the gateway go stale and their replies to the
    // host are lost (connections to published ports hang).
    web(&e, "steady", &["-p", "18081:80"]);
    let gateway: Ipv4Addr = "172.17.0.1".parse().unwrap();
    common::eventually("the web server", || {
        http_get(gateway, 18081).is_ok_and(|b| b.contains("hello from"))
    });
    let first = http_get(gateway, 18081).unwrap();
    let (mac, assigned) = bridge_mac();
    assert_eq!(assigned, "3", "the bridge's MAC is its own");
    assert_eq!(mac, "02:42:ac:11:00:01");
    for n in ["c1", "c2", "c3"] {
        web(&e, n, &[]);
    }
    e.ok(&["rm", "-f", "c1", "c2", "c3"]);
    assert_eq!(bridge_mac().0, mac);
    // The first container still answers the host at once.
    let again = http_get(gateway, 18081).unwrap();
    assert_eq!(again, first);
    e.ok(&["rm", "-f", "steady"]);
}
