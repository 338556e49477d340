//! The boot unit `contrib/systemd/moat.service` (root only): systemd accepts it, and what it
//! starts is `moat serve` as the unit says, stopping which leaves the containers running (the
//! unit signals the server alone: `KillMode=process`).
//!
//! This machine has no systemd as PID 1, so a boot with the unit is not tested; what a boot
//! relies on is: the unit parses, its command line serves the API, and `moat serve` restarts
//! the containers whose policy asks for it when it starts (tests/restart.rs).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{can_run, inspect, Engine};

/// The unit's text, with the installed binary's path replaced by the one under test.
fn unit() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/systemd/moat.service"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .replace("/usr/local/bin/moat", common::MOAT)
}

#[test]
fn systemd_accepts_the_unit() {
    if !can_run() {
        return;
    }
    let dir = common::test_dir();
    let file = dir.path().join("moat.service");
    std::fs::write(&file, unit()).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .expect("systemd-analyze (scripts/setup.sh installs systemd)");
    // Unknown keys and bad values are only warnings there: none may be printed.
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = unit();
    for line in [
        "KillMode=process",
        "Restart=always",
        "WantedBy=multi-user.target",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line}");
    }
}

#[test]
fn the_units_command_serves_and_stopping_it_leaves_containers_running() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&["run", "-d", "--name", "kept", "busybox", "sleep", "60"]);
    // The unit's ExecStart, with this engine's root and a socket of the test's own.
    let exec = unit()
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=").map(str::to_string))
        .unwrap();
    let mut words = exec.split_whitespace();
    let binary = words.next().unwrap().to_string();
    let sock = e.dir.path().join("api.sock");
    let args: Vec<String> = words
        .map(|w| {
            if w.starts_with("unix://") {
                format!("unix://{}", sock.display())
            } else {
                w.to_string()
            }
        })
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{exec}");
    let mut server = Command::new(&binary)
        .arg("--root")
        .arg(e.dir.path())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        if let Ok(mut s) = UnixStream::connect(&sock) {
            s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").unwrap();
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            break text;
        }
        assert!(Instant::now() < until, "the unit's command never listened");
        std::thread::sleep(Duration::from_millis(50));
    };
    // As systemd stops the unit: SIGTERM to the server alone.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = server.wait().unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.ends_with("OK"),
        "{answer}"
    );
    assert!(status.success() || status.code().is_none(), "{status:?}");
    assert_eq!(inspect(&e, "kept")["State"]["Running"], true);
    e.ok(&["rm", "-f", "kept"]);
}
