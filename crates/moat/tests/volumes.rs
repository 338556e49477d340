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

#[test]
fn mount_flag_binds_volumes_and_tmpfs() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let host = e.dir.path().join("hostdir");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), "from host\n").unwrap();
    let bind = format!("type=bind,source={},target=/b,readonly", host.display());
    let (code, out, err) = e.run(&[
        "--mount",
        &bind,
        "busybox",
        "sh",
        "-c",
        "cat /b/in; touch /b/x 2>/dev/null || echo read-only",
    ]);
    assert_eq!((code, out.as_str()), (0, "from host\nread-only\n"), "{err}");
    let (code, _, err) = e.run(&[
        "--mount",
        "type=volume,source=mv,target=/m",
        "busybox",
        "sh",
        "-c",
        "echo kept > /m/f",
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = e.run(&["--mount", "src=mv,dst=/m", "busybox", "cat", "/m/f"]);
    assert_eq!(out, "kept\n");
    let (code, out, err) = e.run(&[
        "--mount",
        "type=tmpfs,target=/t,tmpfs-size=1m",
        "busybox",
        "sh",
        "-c",
        "grep ' /t ' /proc/mounts",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("tmpfs /t tmpfs") && out.contains("size=1024k"),
        "{out}"
    );
    let out = e.moat(&[
        "run",
        "--rm",
        "--mount",
        "type=nfs,target=/x",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --mount"));
    e.assert_clean();
}

#[test]
fn an_empty_volume_gets_the_images_content_once() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    // A new named volume over /etc: the image's files are copied up, with their modes.
    let (code, out, err) = e.run(&[
        "--network",
        "none",
        "-v",
        "seeded:/etc",
        "busybox",
        "sh",
        "-c",
        "grep -c root /etc/group; stat -c %a /etc/passwd; rm /etc/group",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1\n644\n", "{out}");
    // Not empty any more: nothing is copied again (the removed file stays removed).
    let (_, out, _) = e.run(&[
        "--network",
        "none",
        "-v",
        "seeded:/etc",
        "busybox",
        "sh",
        "-c",
        "test -e /etc/group && echo back || echo gone; test -e /etc/passwd && echo kept",
    ]);
    assert_eq!(out, "gone\nkept\n", "{out}");
    // An anonymous volume over a path the image lacks stays empty.
    let (_, out, _) = e.run(&[
        "--network",
        "none",
        "-v",
        "/fresh",
        "busybox",
        "ls",
        "-A",
        "/fresh",
    ]);
    assert_eq!(out, "", "{out}");
}
