//! `moat apply`'s rolling updates (`deploy.update_config`): start-first keeps every replica
//! serving, a broken update rolls back, the default pauses (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{can_run, inspect, Engine};

fn write(e: &Engine, text: &str) -> std::path::PathBuf {
    common::write_compose(e, text)
}

/// A web service of 3 replicas answering with `VERSION`, healthy once its page exists.
fn file(version: &str, command: &str, update: &str) -> String {
    format!(
        "name: roll\nservices:\n  web:\n    image: busybox\n    \
         command: {command}\n    environment: {{VERSION: \"{version}\"}}\n    stop_signal: KILL\n    \
         healthcheck: {{test: \"test -e /www/index.html\", interval: 100ms, retries: 2}}\n    \
         deploy:\n      replicas: 3\n      update_config: {update}\n"
    )
}

const SERVE: &str =
    "sh -c 'mkdir -p /www && echo $$VERSION > /www/index.html && exec httpd -f -p 80 -h /www'";

fn ids(e: &Engine) -> Vec<String> {
    (1..=3)
        .map(|k| {
            inspect(e, &format!("roll-web-{k}"))["Id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn running_web(e: &Engine) -> usize {
    running_in(e.dir.path())
}

/// The replaced (renamed) replicas of `roll-web` still running in the engine at `root`.
fn old_running_in(root: &std::path::Path) -> usize {
    let out = std::process::Command::new(common::MOAT)
        .arg("--root")
        .arg(root)
        .args(["ps", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("roll-web-") && l.contains("-old-"))
        .count()
}

/// The healthy replicas of `roll-web` in the engine at `root` (a replaced one, renamed
/// `roll-web-N-old-...`, counts while it runs healthy).
fn running_in(root: &std::path::Path) -> usize {
    let out = std::process::Command::new(common::MOAT)
        .arg("--root")
        .arg(root)
        .args(["ps", "--format", "{{.Names}} {{.Status}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("roll-web-") && l.contains("(healthy)"))
        .count()
}

#[test]
fn start_first_replaces_every_replica_without_ever_running_fewer() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let update = "{parallelism: 1, order: start-first}";
    let f = write(&e, &file("v1", SERVE, update));
    e.ok(&["apply", "-f", f.to_str().unwrap()]);
    common::eventually("3 healthy replicas", || running_web(&e) == 3);
    let before = ids(&e);
    // While the update runs, a watcher counts the healthy replicas.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let root = e.dir.path().to_path_buf();
        std::thread::spawn(move || {
            let (mut least, mut replacing) = (usize::MAX, 0);
            while !stop.load(Ordering::SeqCst) {
                least = least.min(running_in(&root));
                replacing = replacing.max(old_running_in(&root));
            }
            (least, replacing)
        })
    };
    let f = write(&e, &file("v2", SERVE, update));
    let out = e.ok(&["apply", "-f", f.to_str().unwrap()]);
    stop.store(true, Ordering::SeqCst);
    let (least, replacing) = watcher.join().unwrap();
    // parallelism 1: one replica replaced at a time (its old container runs, renamed, until
    // its successor is healthy).
    assert_eq!(
        replacing, 1,
        "replicas being replaced at once (0: the watcher never saw one)"
    );
    assert!(out.contains("3 changes"), "{out}");
    assert!(
        least >= 3,
        "only {least} replicas were healthy at one point of a start-first update"
    );
    let after = ids(&e);
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old, new);
    }
    for k in 1..=3 {
        let name = format!("roll-web-{k}");
        let page = e.ok(&["exec", &name, "cat", "/www/index.html"]);
        assert_eq!(page.trim(), "v2");
        assert_eq!(inspect(&e, &name)["State"]["Health"]["Status"], "healthy");
    }
    // The old containers are gone; nothing is left under another name.
    let all = e.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(all.lines().count(), 3, "{all}");
    assert!(e
        .ok(&["apply", "-f", f.to_str().unwrap()])
        .contains("no changes"));
    e.ok(&["apply", "-f", f.to_str().unwrap(), "--down"]);
    assert_eq!(e.ok(&["ps", "-aq"]), "");
}

#[test]
fn a_broken_update_rolls_back_and_the_default_pauses() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let rollback = "{parallelism: 2, order: start-first, failure_action: rollback}";
    let good = write(&e, &file("v1", SERVE, rollback));
    let good_text = std::fs::read_to_string(&good).unwrap();
    e.ok(&["apply", "-f", good.to_str().unwrap()]);
    common::eventually("3 healthy replicas", || running_web(&e) == 3);
    let before = ids(&e);
    // The new version never becomes healthy (it has no page): the update stops and the
    // replicas it had replaced come back.
    let broken = "sh -c 'exec httpd -f -p 80 -h /'";
    let f = write(&e, &file("v2", broken, rollback));
    let out = e.moat(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("is unhealthy") && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(ids(&e), before, "the old replicas, under their names");
    common::eventually("3 healthy replicas again", || running_web(&e) == 3);
    let all = e.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(all.lines().count(), 3, "{all}");
    // The project is as the good file says: applying it again changes nothing.
    let good = write(&e, &good_text);
    assert!(e
        .ok(&["apply", "-f", good.to_str().unwrap()])
        .contains("no changes"));
    // A broken image (nothing in it runs): the update stops and rolls back too.
    let empty = e.dir.path().join("empty.tar");
    let st = std::process::Command::new("tar")
        .args(["-cf", empty.to_str().unwrap(), "-T", "/dev/null"])
        .status()
        .unwrap();
    assert!(st.success());
    e.ok(&["import", empty.to_str().unwrap(), "broken:v2"]);
    let f = write(
        &e,
        &file("v2", SERVE, rollback).replace("image: busybox", "image: broken:v2"),
    );
    let out = e.moat(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("executable file not found"), "{err}");
    assert_eq!(ids(&e), before, "the old replicas, under their names");
    common::eventually("3 healthy replicas again", || running_web(&e) == 3);
    let good = write(&e, &good_text);
    assert!(e
        .ok(&["apply", "-f", good.to_str().unwrap()])
        .contains("no changes"));
    // The default (stop-first, pause): the first replica fails, comes back as it was, and the
    // update stops there.
    let f = write(&e, &file("v2", "sh -c 'exit 3'", "{parallelism: 1}"));
    let out = e.moat(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("roll-web-1"), "{err}");
    assert_eq!(ids(&e), before);
    common::eventually("3 healthy replicas again", || running_web(&e) == 3);
    e.ok(&["apply", "-f", good.to_str().unwrap(), "--down"]);
    assert_eq!(e.ok(&["ps", "-aq"]), "");
}

/// One HTTP/1.0 GET of `/` at `addr`: the body's last line, or why it failed.
fn get(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    match out.lines().last() {
        Some(l) if out.starts_with("HTTP/1.") && out.contains(" 200 ") => Ok(l.to_string()),
        _ => Err(format!("answer: {out:?}")),
    }
}

#[test]
fn replicas_share_a_published_port_and_a_start_first_update_drops_no_request() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let serve = "sh -c 'mkdir -p /www && echo $$VERSION $$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www'";
    let text = |version: &str| {
        // Healthy when it serves (not merely when its page exists).
        file(version, serve, "{parallelism: 1, order: start-first}")
            .replace(
                "    stop_signal: KILL\n",
                "    stop_signal: KILL\n    ports: [\"18080:80\"]\n",
            )
            .replace(
                "test -e /www/index.html",
                "wget -q -O /dev/null http://127.0.0.1/",
            )
    };
    let f = write(&e, &text("v1"));
    e.ok(&["apply", "-f", f.to_str().unwrap()]);
    common::eventually("3 healthy replicas", || running_web(&e) == 3);
    // Two ways in: the host's loopback (the replicas' proxies, one port shared by all three)
    // and the bridge's gateway address, a local address of the host (the DNAT rule).
    let net = e.ok(&["network", "inspect", "roll_default"]);
    let net: serde_json::Value = serde_json::from_str(&net).unwrap();
    let gateway = net[0]["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap()
        .to_string();
    let addrs = ["127.0.0.1:18080".to_string(), format!("{gateway}:18080")];
    // New connections are spread over the replicas, on both ways in.
    for a in &addrs {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..60 {
            seen.insert(get(a).unwrap());
        }
        assert!(seen.len() >= 2, "{a}: always the same replica: {seen:?}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        let addrs = addrs.clone();
        std::thread::spawn(move || {
            let (mut answers, mut failures) = (vec![], vec![]);
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                match get(&addrs[k % 2]) {
                    Ok(a) => answers.push(a),
                    Err(e) => failures.push(format!("{}: {e}", addrs[k % 2])),
                }
                k += 1;
            }
            (answers, failures)
        })
    };
    let f = write(&e, &text("v2"));
    let out = e.ok(&["apply", "-f", f.to_str().unwrap()]);
    // A moment of the new version alone.
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (answers, failures) = client.join().unwrap();
    assert!(out.contains("3 changes"), "{out}");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the update: {:?}",
        failures.len(),
        answers.len() + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(answers.iter().any(|a| a.starts_with("v1 ")), "no v1 answer");
    assert!(
        answers.last().unwrap().starts_with("v2 "),
        "{:?}",
        answers.last()
    );
    // A port the service holds is refused to anything else.
    let (code, _, err) =
        common::RunExt::run(&e, &["-d", "-p", "18080:80", "busybox", "sleep", "5"]);
    assert_eq!(code, 125, "{err}");
    assert!(
        err.contains("18080") && err.contains("already allocated"),
        "{err}"
    );
    e.ok(&["apply", "-f", f.to_str().unwrap(), "--down"]);
    assert_eq!(e.ok(&["ps", "-aq"]), "");
}
