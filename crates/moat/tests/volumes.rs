//! Named and anonymous volumes as a user types them (root only).
#![allow(clippy::unwrap_used)]

mod common;

use common::{can_run, Engine, RunExt};

#[test]
fn volumes_outlive_containers_and_are_never_removed_in_use() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    assert_eq!(
        e.ok(&["volume", "create", "--label", "k=v", "data"]),
        "data\n"
    );
    // Data written by one container is there for the next; :ro is read-only.
    e.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/d",
        "busybox",
        "sh",
        "-c",
        "echo kept > /d/f",
    ]);
    let out = e.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/d:ro",
        "busybox",
        "sh",
        "-c",
        "cat /d/f; touch /d/x 2>/dev/null || echo ro",
    ]);
    assert_eq!(out, "kept\nro\n");
    // A volume named in -v that does not exist yet is made.
    e.ok(&["run", "--rm", "-v", "auto:/a", "busybox", "true"]);
    let ls = e.ok(&["volume", "ls"]);
    assert!(
        ls.starts_with("DRIVER") && ls.contains("data") && ls.contains("auto"),
        "{ls}"
    );
    let v: serde_json::Value = serde_json::from_str(&e.ok(&["volume", "inspect", "data"])).unwrap();
    assert_eq!(v[0]["Labels"]["k"], "v");
    assert_eq!(v[0]["Driver"], "local");
    assert!(v[0]["Mountpoint"]
        .as_str()
        .unwrap()
        .ends_with("/volumes/data/_data"));

    // In use: refused, with the container named; rm -v takes the anonymous volume only.
    e.ok(&[
        "run", "-d", "--name", "user", "-v", "data:/d", "-v", "/cache", "busybox", "sleep", "30",
    ]);
    assert_eq!(e.ok(&["volume", "ls", "-q"]).lines().count(), 3);
    let out = e.moat(&["volume", "rm", "data"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    // system df counts the container, its image and the volumes in use.
    let df = e.ok(&["system", "df"]);
    let row = |kind: &str| -> Vec<String> {
        let l = df.lines().find(|l| l.starts_with(kind)).unwrap();
        l[kind.len()..]
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("Containers")[..2], ["1", "1"], "{df}");
    assert_eq!(row("Images")[..2], ["1", "1"], "{df}");
    assert_eq!(row("Local Volumes")[..2], ["3", "2"], "{df}");
    e.ok(&["rm", "-f", "-v", "user"]);
    let names = e.ok(&["volume", "ls", "-q"]);
    assert_eq!(names, "auto\ndata\n");
    // An --rm container's anonymous volume goes with it; a named one stays.
    e.ok(&[
        "run", "--rm", "-v", "/scratch", "-v", "data:/d", "busybox", "true",
    ]);
    common::eventually("anonymous volume removed", || {
        e.ok(&["volume", "ls", "-q"])
            == "auto
data
"
    });
    assert_eq!(e.ok(&["volume", "ls", "-q"]), "auto\ndata\n");
    // prune: anonymous ones only, unless -a.
    e.ok(&["volume", "prune", "-f"]);
    assert_eq!(e.ok(&["volume", "ls", "-q"]).lines().count(), 2);
    e.ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(e.ok(&["volume", "ls", "-q"]), "");
    assert!(!e.dir.path().join("volumes/data").exists());
    // Bad input.
    assert_eq!(e.moat(&["volume", "rm", "ghost"]).status.code(), Some(1));
    assert_eq!(
        e.moat(&["volume", "create", "bad/name"]).status.code(),
        Some(1)
    );
    assert_eq!(
        e.moat(&["volume", "inspect", "ghost"]).status.code(),
        Some(1)
    );
    e.assert_clean();
}
