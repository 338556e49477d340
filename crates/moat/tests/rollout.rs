//! `moat apply`'s rolling updates (`deploy.update_config`): start-first keeps every replica
//! serving, a broken update rolls back, the default pauses (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{can_run, inspect, Engine};

fn write(e: &Engine, text: &str) -> std::path::PathBuf {
    let dir = e.dir.path().join("proj");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("compose.yaml");
    std::fs::write(&f, text).unwrap();
    f
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
            let mut least = usize::MAX;
            while !stop.load(Ordering::SeqCst) {
                least = least.min(running_in(&root));
            }
            least
        })
    };
    let f = write(&e, &file("v2", SERVE, update));
    let out = e.ok(&["apply", "-f", f.to_str().unwrap()]);
    stop.store(true, Ordering::SeqCst);
    let least = watcher.join().unwrap();
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
