//! `moat cp` both ways, and that a container's symlinks never lead it onto the host (root only).
#![allow(clippy::unwrap_used)]

mod common;

use common::{can_run, Engine, RunExt};

#[test]
fn cp_both_ways_is_symlink_safe() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let marker = format!("moat-cp-escape-{}", std::process::id());
    e.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /data/sub; echo hello > /data/sub/f; ln -s /etc /data/etclink; \
         ln -s ../../../../../../../tmp /data/up; echo ready; sleep 30",
    ]);
    common::eventually("ready", || e.ok(&["logs", "box"]).contains("ready"));
    let host = tempfile::tempdir().unwrap();
    let h = |p: &str| host.path().join(p);

    // Out: a directory keeps its symlinks as symlinks.
    e.ok(&["cp", "box:/data", &h("").display().to_string()]);
    assert_eq!(std::fs::read_to_string(h("data/sub/f")).unwrap(), "hello\n");
    assert_eq!(
        std::fs::read_link(h("data/etclink")).unwrap().to_str(),
        Some("/etc")
    );
    // A path through the container's absolute symlink is the container's file, not the host's.
    e.ok(&[
        "cp",
        "box:/data/etclink/passwd",
        &h("passwd").display().to_string(),
    ]);
    let passwd = std::fs::read_to_string(h("passwd")).unwrap();
    assert_eq!(
        passwd,
        std::fs::read_to_string(common::busybox_rootfs().join("etc/passwd")).unwrap()
    );

    // In: a file into a directory, and under a new name.
    std::fs::write(h("hostf"), "from host\n").unwrap();
    let hostf = h("hostf").display().to_string();
    e.ok(&["cp", &hostf, "box:/data/"]);
    e.ok(&["cp", &hostf, "box:/data/renamed"]);
    assert_eq!(
        e.ok(&["exec", "box", "cat", "/data/hostf", "/data/renamed"]),
        "from host\nfrom host\n"
    );
    // Through the container's `..` symlink: lands in the container's /tmp, not the host's.
    e.ok(&["cp", &hostf, &format!("box:/data/up/{marker}")]);
    assert!(
        !std::path::Path::new("/tmp").join(&marker).exists(),
        "cp wrote onto the host"
    );
    assert_eq!(
        e.ok(&["exec", "box", "cat", &format!("/tmp/{marker}")]),
        "from host\n"
    );
    // The container was paused for the copies and runs on.
    let st = common::inspect(&e, "box");
    assert_eq!(st["State"]["Status"], "running");

    // A stopped container: mounted for the copy, unmounted after.
    e.ok(&["stop", "-t", "0", "box"]);
    e.ok(&["cp", "box:/data/sub/f", &h("f2").display().to_string()]);
    assert_eq!(std::fs::read_to_string(h("f2")).unwrap(), "hello\n");
    let id = st["Id"].as_str().unwrap().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "rootfs left mounted");

    // Bad input.
    for args in [
        vec!["cp", "/etc/hostname", "/tmp/x"],
        vec!["cp", "ghost:/etc", "/tmp/x"],
        vec!["cp", "box:/no/such", &hostf],
        vec!["cp", "/no/such/file", "box:/data"],
    ] {
        assert_eq!(e.moat(&args).status.code(), Some(1), "{args:?}");
    }
    e.ok(&["rm", "box"]);
    e.assert_clean();
}

/// What is copied in belongs to root, as with `docker cp`; `-a` keeps the host's owners.
#[test]
fn cp_in_gives_files_to_root_unless_archive() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&["run", "-d", "--name", "own", "busybox", "sleep", "60"]);
    let dir = e.dir.path().join("owned");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/f"), "x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
    for p in [dir.clone(), dir.join("sub"), dir.join("sub/f")] {
        std::os::unix::fs::chown(&p, Some(1234), Some(2345)).unwrap();
    }
    std::os::unix::fs::lchown(dir.join("link"), Some(1234), Some(2345)).unwrap();
    let d = dir.to_str().unwrap();
    e.ok(&["cp", d, "own:/tmp/plain"]);
    e.ok(&["cp", "-a", d, "own:/tmp/kept"]);
    let owners = |p: &str| {
        e.ok(&["exec", "own", "sh", "-c", &format!("stat -c %u:%g {p} {p}/sub {p}/sub/f; stat -c %u:%g -L {p}/link; stat -c %u:%g {p}/link")])
    };
    assert_eq!(
        owners("/tmp/plain"),
        "0:0\n0:0\n0:0\n0:0\n0:0\n",
        "the link itself, not its target, too"
    );
    assert_eq!(
        owners("/tmp/kept"),
        "1234:2345\n1234:2345\n1234:2345\n0:0\n1234:2345\n"
    );
    e.ok(&["rm", "-f", "own"]);
    e.assert_clean();
}
