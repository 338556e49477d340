//! Attaching to running containers: `moat attach` and `docker attach` through `moat serve`
//! (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::{can_run, eventually, inspect, Engine, RunExt, MOAT};

#[test]
fn attach_follows_a_running_container_to_its_exit() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "later",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "while [ ! -e /tmp/go ]; do sleep 0.1; done; echo to-out; echo to-err >&2; exit 3",
    ]);
    let child = Command::new(MOAT)
        .arg("--root")
        .arg(e.dir.path())
        .args(["attach", "later"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Attached before the output: it comes through, each stream to its own.
    eventually("the attach socket's client", || {
        std::fs::read_dir(e.dir.path().join("containers"))
            .unwrap()
            .flatten()
            .any(|d| d.path().join("attach.sock").exists())
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    e.ok(&["exec", "later", "touch", "/tmp/go"]);
    let mut child = child;
    let out = common::read_within(child.stdout.take().unwrap(), "attach's stdout");
    let err = common::read_within(child.stderr.take().unwrap(), "attach's stderr");
    let status = common::wait_or_dump(child, "moat attach");
    assert_eq!(status.code(), Some(3), "{out}{err}");
    assert_eq!(out, "to-out\n");
    assert_eq!(err, "to-err\n");
    // A stopped container cannot be attached to, as with Docker.
    let out = e.moat(&["attach", "later"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("start it first"));
    e.ok(&["rm", "later"]);
    e.assert_clean();
}

#[test]
fn attach_to_a_terminal_types_into_it_and_detaches_with_ctrl_p_ctrl_q() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    // It asks until it gets a line: what it prints after we attach tells us we are there.
    e.ok(&[
        "run",
        "-dit",
        "--name",
        "asker",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "while ! read -t 1 line; do echo prompt; done; echo got-$line; exit 5",
    ]);
    let root = e.dir.path().display();
    // The detach keys leave it running.
    let (code, out) = common::on_a_terminal(
        &format!("{MOAT} --root {root} attach asker"),
        "prompt",
        b"\x10\x11",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("read escape sequence"), "{out}");
    assert_eq!(inspect(&e, "asker")["State"]["Status"], "running");
    // Attached again: what we type reaches its terminal; attach returns its exit code.
    let (code, out) = common::on_a_terminal(
        &format!("{MOAT} --root {root} attach asker"),
        "prompt",
        b"typed\r",
    );
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("got-typed"), "{out}");
    e.ok(&["rm", "asker"]);
    e.assert_clean();
}

#[test]
fn docker_attach_reaches_a_running_container() {
    if !can_run() || !common::docker::docker_present() {
        return;
    }
    use common::docker::{docker_cmd, ok, Server};
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    ok(
        &e,
        &s,
        &[
            "run",
            "-d",
            "--name",
            "dattach",
            "busybox",
            "sh",
            "-c",
            "while [ ! -e /tmp/go ]; do sleep 0.1; done; echo via-api; echo err-api >&2; exit 4",
        ],
    );
    let mut child = docker_cmd(&e, &s)
        .args(["attach", "dattach"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    ok(&e, &s, &["exec", "dattach", "touch", "/tmp/go"]);
    let out = common::read_within(child.stdout.take().unwrap(), "docker attach's stdout");
    let err = common::read_within(child.stderr.take().unwrap(), "docker attach's stderr");
    let status = common::wait_or_dump(child, "docker attach");
    assert_eq!(status.code(), Some(4), "{out}{err}");
    assert_eq!(out, "via-api\n");
    assert!(err.contains("err-api"), "{err}");
    ok(&e, &s, &["rm", "dattach"]);
    drop(s);
    e.assert_clean();
}

#[test]
fn custom_detach_keys_for_run_start_and_attach() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let root = e.dir.path().display();
    let ticker = "while :; do echo prompt; sleep 0.3; done";
    // run -it --detach-keys: ctrl-x y leaves it running.
    let (code, out) = common::on_a_terminal(
        &format!(
            "{MOAT} --root {root} run -it --name dk --network none --detach-keys ctrl-x,y \
             busybox sh -c '{ticker}'"
        ),
        "prompt",
        b"\x18y",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(inspect(&e, "dk")["State"]["Status"], "running");
    // attach --detach-keys.
    let (code, out) = common::on_a_terminal(
        &format!("{MOAT} --root {root} attach --detach-keys ctrl-a,d dk"),
        "prompt",
        b"\x01d",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(inspect(&e, "dk")["State"]["Status"], "running");
    e.ok(&["stop", "-t", "0", "dk"]);
    // start -ai --detach-keys.
    let (code, out) = common::on_a_terminal(
        &format!("{MOAT} --root {root} start -ai --detach-keys z dk"),
        "prompt",
        b"z",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(inspect(&e, "dk")["State"]["Status"], "running");
    e.ok(&["rm", "-f", "dk"]);
    // Bad keys are refused before anything is made.
    let out = e.moat(&["run", "--rm", "--detach-keys", "ctrl-1", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid detach keys"));
    e.assert_clean();
}
