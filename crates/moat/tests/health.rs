//! Healthchecks as Docker runs them: `--health-*` flags, an image's `HEALTHCHECK`, the status in
//! `ps` and `inspect`, timeouts, and the docker CLI through `moat serve` (root only).
#![allow(clippy::unwrap_used)]

mod common;

use common::docker::{docker, Server};
use common::{can_run, eventually, inspect, Engine, RunExt};

fn health(e: &Engine, name: &str) -> String {
    inspect(e, name)["State"]["Health"]["Status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn checks_make_a_container_unhealthy_then_healthy_and_stopped_unhealthy() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "none",
        "--health-cmd",
        "echo probing; test -e /tmp/ready",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "60",
    ]);
    // Starting until the first results; two failures in a row: unhealthy.
    assert!(e.ok(&["ps"]).contains("(health: starting)"));
    eventually("unhealthy", || health(&e, "web") == "unhealthy");
    assert!(e.ok(&["ps"]).contains("Up ") && e.ok(&["ps"]).contains("(unhealthy)"));
    let state = inspect(&e, "web")["State"]["Health"].clone();
    assert!(state["FailingStreak"].as_u64().unwrap() >= 2, "{state}");
    let last = &state["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 1, "{state}");
    assert_eq!(last["Output"], "probing\n", "{state}");
    // One success: healthy, the streak reset.
    e.ok(&["exec", "web", "touch", "/tmp/ready"]);
    eventually("healthy", || health(&e, "web") == "healthy");
    assert!(e.ok(&["ps"]).contains("(healthy)"));
    // Each change of health is an event.
    let now = common::now_arg();
    let changes = e.ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        &now,
        "--filter",
        "event=health_status",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]);
    assert_eq!(
        changes.lines().collect::<Vec<_>>(),
        ["health_status: unhealthy web", "health_status: healthy web"],
        "{changes}"
    );
    let doc = inspect(&e, "web");
    assert_eq!(doc["State"]["Health"]["FailingStreak"], 0);
    assert!(doc["State"]["Health"]["Log"].as_array().unwrap().len() <= 5);
    assert_eq!(
        doc["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "echo probing; test -e /tmp/ready"])
    );
    assert_eq!(doc["Config"]["Healthcheck"]["Interval"], 200_000_000);
    // Stopped: unhealthy, as Docker reports it; the checks stop with it.
    e.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(health(&e, "web"), "unhealthy");
    let log_len = inspect(&e, "web")["State"]["Health"]["Log"].clone();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(inspect(&e, "web")["State"]["Health"]["Log"], log_len);
    // A new start begins again at starting.
    e.ok(&["start", "web"]);
    let h = health(&e, "web");
    assert!(h == "starting" || h == "healthy", "{h}");
    e.ok(&["rm", "-f", "web"]);
    e.assert_clean();
}

#[test]
fn the_images_check_is_used_a_check_over_its_timeout_is_killed_and_none_disables_it() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let tar = e.busybox_tar();
    e.ok(&[
        "import",
        "--change",
        "HEALTHCHECK --interval=2s --timeout=300ms --retries=1 CMD touch /tmp/ran; sleep 7",
        tar.to_str().unwrap(),
        "slowcheck",
    ]);
    e.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--network",
        "none",
        "slowcheck",
        "sleep",
        "60",
    ]);
    eventually("a timed-out check", || health(&e, "slow") == "unhealthy");
    let state = inspect(&e, "slow")["State"]["Health"].clone();
    let entry = &state["Log"][0];
    assert_eq!(entry["ExitCode"], -1, "{state}");
    assert_eq!(
        entry["Output"], "Health check exceeded timeout (300ms)",
        "{state}"
    );
    // The check ran, and its process in the container was killed with it (the next check
    // starts 2 s later).
    e.ok(&["exec", "slow", "test", "-e", "/tmp/ran"]);
    let ps = e.ok(&["exec", "slow", "ps", "-o", "args"]);
    assert!(!ps.contains("sleep 7"), "{ps}");
    // The flags override the image's settings one by one (Docker's merge).
    e.ok(&[
        "create",
        "--name",
        "merged",
        "--health-retries",
        "4",
        "slowcheck",
        "true",
    ]);
    let check = inspect(&e, "merged")["Config"]["Healthcheck"].clone();
    assert_eq!(check["Retries"], 4, "{check}");
    assert_eq!(check["Interval"], 2_000_000_000u64, "{check}");
    assert_eq!(check["Test"][0], "CMD-SHELL", "{check}");
    // --no-healthcheck: no checks at all, and no health to show.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "none",
        "--network",
        "none",
        "--no-healthcheck",
        "slowcheck",
        "sleep",
        "60",
    ]);
    let doc = inspect(&e, "none");
    assert_eq!(
        doc["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["NONE"])
    );
    assert!(doc["State"].get("Health").is_none(), "{doc}");
    assert!(!e
        .ok(&["ps"])
        .lines()
        .any(|l| l.ends_with(" none") && l.contains("health")));
    e.ok(&["rm", "-f", "slow", "merged", "none"]);
    e.assert_clean();
}

#[test]
fn bad_healthcheck_flags_are_refused_and_leave_nothing() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    for (args, message) in [
        (
            &["--health-interval", "10"][..],
            "invalid --health-interval \"10\"",
        ),
        (
            &["--no-healthcheck", "--health-cmd", "true"],
            "--no-healthcheck conflicts",
        ),
        (&["--health-timeout", "10us"], "too short"),
        (&["--health-retries", "-1"], "retries -1"),
    ] {
        let mut all = vec!["run", "--network", "none"];
        all.extend_from_slice(args);
        all.extend(["busybox", "true"]);
        let out = e.moat(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    assert_eq!(e.ok(&["ps", "-aq"]), "");
    e.assert_clean();
}

#[test]
fn the_docker_cli_sets_and_reads_health() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    let out = docker(
        &e,
        &s,
        &[
            "run",
            "-d",
            "--name",
            "api",
            "--network",
            "none",
            "--health-cmd",
            "true",
            "--health-interval",
            "200ms",
            "busybox",
            "sleep",
            "60",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("docker sees healthy", || {
        let o = docker(
            &e,
            &s,
            &["inspect", "--format", "{{.State.Health.Status}}", "api"],
        );
        String::from_utf8_lossy(&o.stdout).trim() == "healthy"
    });
    let ps = docker(&e, &s, &["ps", "--format", "{{.Status}}"]);
    assert!(String::from_utf8_lossy(&ps.stdout).contains("(healthy)"));
    let o = docker(&e, &s, &["rm", "-f", "api"]);
    assert!(o.status.success());
    drop(s);
    e.assert_clean();
}

#[test]
fn an_unhealthy_container_keeps_its_own_published_port() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "sick",
        "-p",
        "18082:80",
        "--health-cmd",
        "false",
        "--health-interval",
        "100ms",
        "--health-retries",
        "1",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /www && echo up > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    eventually("unhealthy", || health(&e, "sick") == "unhealthy");
    // Health decides only a shared port's membership (a `moat apply` service's): a port of
    // its own keeps answering.
    for _ in 0..5 {
        let mut s = std::net::TcpStream::connect("127.0.0.1:18082").unwrap();
        use std::io::{Read, Write};
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.ends_with("up\n"), "{out}");
    }
    e.ok(&["rm", "-f", "sick"]);
    e.assert_clean();
}
