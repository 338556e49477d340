//! `--restart` policies, carried out by the container's monitor (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{can_run, eventually, Engine, RunExt};

#[test]
fn restart_policies_and_a_user_stop() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    // on-failure:2: the first run and two restarts, then it stays exited with its code.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 3",
    ]);
    eventually("three runs", || {
        e.ok(&["logs", "flaky"]) == "run\nrun\nrun\n"
    });
    eventually("exited", || {
        e.ok(&[
            "ps",
            "-a",
            "--filter",
            "name=flaky",
            "--format",
            "{{.State}}",
        ]) == "exited\n"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(e.ok(&["logs", "flaky"]), "run\nrun\nrun\n");
    assert_eq!(
        common::inspect(&e, "flaky")["RestartCount"],
        2,
        "Docker's RestartCount: restarts by the policy"
    );
    // A clean exit is not a failure.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "fine",
        "--restart",
        "on-failure",
        "busybox",
        "echo",
        "once",
    ]);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(e.ok(&["logs", "fine"]), "once\n");

    // always: restarted after each exit, until the user stops it.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "loop",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "echo tick; sleep 0.1",
    ]);
    eventually("restarts", || e.ok(&["logs", "loop"]).lines().count() >= 3);
    e.ok(&["stop", "-t", "1", "loop"]);
    eventually("stopped", || {
        e.ok(&[
            "ps",
            "-a",
            "--filter",
            "name=loop",
            "--format",
            "{{.State}}",
        ]) == "exited\n"
    });
    let n = e.ok(&["logs", "loop"]).lines().count();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        e.ok(&["logs", "loop"]).lines().count(),
        n,
        "restarted after a user stop"
    );
    // A start by the user brings the policy back.
    e.ok(&["start", "loop"]);
    eventually("restarts again", || {
        e.ok(&["logs", "loop"]).lines().count() >= n + 2
    });
    e.ok(&["rm", "-f", "loop", "flaky", "fine"]);

    // Bad input.
    let out = e.moat(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Conflicting options"));
    let out = e.moat(&["run", "--restart", "sometimes", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    e.assert_clean();
}

#[test]
fn a_killed_test_process_leaves_nothing_for_long() {
    if !can_run() {
        return;
    }
    // First: this process's own sweep has run (it would race with the root made below).
    let e = Engine::with_busybox();
    // A root named as a test process that is gone (a short-lived child's pid) with a running
    // container in it: what a SIGKILLed test leaves.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let stale = tempfile::Builder::new()
        .prefix(&format!("moat-test-{pid}-"))
        .tempdir()
        .unwrap()
        .keep();
    let moat = |args: &[&str]| {
        std::process::Command::new(common::MOAT)
            .arg("--root")
            .arg(&stale)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(moat(&["import", e.busybox_tar().to_str().unwrap(), "bb"])
        .status
        .success());
    assert!(moat(&["run", "-d", "--name", "left", "bb", "sleep", "60"])
        .status
        .success());
    let st: serde_json::Value = serde_json::from_slice(&moat(&["inspect", "left"]).stdout).unwrap();
    let cpid = st[0]["State"]["Pid"].as_i64().unwrap();

    common::sweep_stale();
    assert!(!stale.exists(), "stale root kept");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*stale.to_string_lossy()), "mount kept");
    eventually("container gone", || {
        !std::path::Path::new(&format!("/proc/{cpid}")).exists()
    });
}
