//! `moat serve` keeps what `moat apply` declared: replicas killed or removed by hand come back
//! (as their restart policy says), each correction an event; `--down` ends it (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::docker::Server;
use common::{can_run, eventually, inspect, Engine};

const FILE: &str = "name: rec
services:
  web:
    image: busybox
    command: sleep 600
    stop_signal: KILL
    restart: always
    deploy: {replicas: 2}
  once:
    image: busybox
    command: sleep 600
    stop_signal: KILL
";

fn state(e: &Engine, name: &str) -> String {
    let out = e.moat(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.Id}} {{.State.StartedAt}}",
        name,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_server_brings_back_what_was_killed_or_removed_by_hand() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let dir = e.dir.path().join("proj");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("compose.yaml");
    std::fs::write(&f, FILE).unwrap();
    let file = f.to_str().unwrap();
    e.ok(&["apply", "-f", file]);
    let _server = Server::start(&e);
    let before1 = state(&e, "rec-web-1");
    let id2 = inspect(&e, "rec-web-2")["Id"].as_str().unwrap().to_string();
    // Killed by hand: restarted (restart: always), the same container.
    e.ok(&["kill", "rec-web-1"]);
    // Removed by hand: made again.
    e.ok(&["rm", "-f", "rec-web-2"]);
    // Compose's default restart is "no": killed, it stays so.
    e.ok(&["kill", "rec-once-1"]);
    eventually("rec-web-1 running again", || {
        let s = state(&e, "rec-web-1");
        s.starts_with("running") && s != before1
    });
    eventually("rec-web-2 made again", || {
        let s = state(&e, "rec-web-2");
        s.starts_with("running") && !s.contains(&id2)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        state(&e, "rec-once-1").starts_with("exited"),
        "restart: no is respected"
    );
    // Changed by hand (its limits updated): replaced by one as declared.
    let id1 = inspect(&e, "rec-web-1")["Id"].as_str().unwrap().to_string();
    e.ok(&["update", "--memory", "64m", "rec-web-1"]);
    eventually("rec-web-1 replaced", || {
        let s = state(&e, "rec-web-1");
        s.starts_with("running") && !s.contains(&id1)
    });
    assert_eq!(inspect(&e, "rec-web-1")["HostConfig"]["Memory"], 0);
    // Each correction is an event.
    let now = common::now_arg();
    let events = e.ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        &now,
        "--filter",
        "type=project",
        "--format",
        "{{.Actor.ID}} {{.Action}} {{.Actor.Attributes.change}}",
    ]);
    assert!(
        events.contains("rec reconcile > container rec-web-1"),
        "{events}"
    );
    assert!(
        events.contains("rec reconcile + container rec-web-2"),
        "{events}"
    );
    assert!(
        events.contains("rec reconcile ~ container rec-web-1"),
        "{events}"
    );
    assert!(!events.contains("rec-once-1"), "{events}");
    // An update that fails and is rolled back leaves the revision before it in force: a
    // replica killed afterwards is still brought back.
    std::fs::write(
        &f,
        FILE.replace("command: sleep 600\n    stop_signal: KILL\n    restart: always", "command: /nonexistent\n    stop_signal: KILL\n    restart: always\n    deploy: {update_config: {failure_action: rollback}, replicas: 2}")
            .replace("    deploy: {replicas: 2}\n  once", "  once"),
    )
    .unwrap();
    let out = e.moat(&["apply", "-f", file]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rolled back"),
        "{out:?}"
    );
    let history = e.ok(&["apply", "history", "-p", "rec"]);
    assert!(
        history.lines().last().unwrap().contains("failed"),
        "{history}"
    );
    let before = state(&e, "rec-web-2");
    e.ok(&["kill", "rec-web-2"]);
    eventually("rec-web-2 running again after the failed update", || {
        let s = state(&e, "rec-web-2");
        s.starts_with("running") && s != before
    });
    std::fs::write(&f, FILE).unwrap();
    // Down: the project is no longer kept.
    e.ok(&["apply", "-f", file, "--down"]);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(e.ok(&["ps", "-aq"]), "", "nothing comes back after --down");
        std::thread::sleep(Duration::from_millis(500));
    }
}
