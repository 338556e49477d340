//! `moat save` / `moat load` and interoperability with skopeo and umoci (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{busybox_rootfs, can_run, Engine};

/// Imports busybox as `bb:1`; returns the image id.
fn imported(e: &Engine) -> String {
    let tar = e.busybox_tar();
    e.ok(&[
        "import",
        "--change",
        "CMD [\"/bin/sh\"]",
        tar.to_str().unwrap(),
        "bb:1",
    ])
    .trim()
    .to_string()
}

/// Imports busybox as `bb:1`, saves it to `bb.tar` in the engine's directory and removes the
/// image: (its id, the archive's path).
fn saved_and_removed(e: &Engine) -> (String, String) {
    let id = imported(e);
    let archive = e.path("bb.tar");
    e.ok(&["save", "-o", &archive, "bb:1"]);
    e.ok(&["rmi", "bb:1"]);
    (id, archive)
}

fn tool(name: &str) -> bool {
    let ok = Command::new(name).arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIP: {name} is not installed (scripts/setup.sh installs it)");
    }
    ok
}

fn run(cmd: &mut Command) -> String {
    let out = common::output_of(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn save_then_load_round_trips_ids_and_tags() {
    if !can_run() {
        return;
    }
    let e = Engine::new();
    let (id, archive) = saved_and_removed(&e);
    assert_eq!(e.ok(&["images", "-q"]), "");
    assert_eq!(e.ok(&["load", "-i", &archive]).trim(), "Loaded image: bb:1");
    let ids = e.ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(ids.trim(), id, "the image id survives the round trip");
    assert_eq!(e.ok(&["system", "check"]).trim(), "ok: no problems found");
    // Loading twice is harmless.
    e.ok(&["load", "-i", &archive]);
    assert_eq!(e.ok(&["images", "-q"]).lines().count(), 1);
}

#[test]
fn skopeo_and_umoci_read_what_moat_saves_and_moat_loads_theirs() {
    if !can_run() || !tool("skopeo") || !tool("umoci") {
        return;
    }
    let e = Engine::new();
    imported(&e);
    let archive = e.path("bb.tar");
    e.ok(&["save", "-o", &archive, "bb:1"]);
    // skopeo reads it both as a docker-archive and as an OCI archive.
    let inspect =
        run(Command::new("skopeo").args(["inspect", &format!("docker-archive:{archive}")]));
    assert!(inspect.contains("\"Os\": \"linux\""), "{inspect}");
    let layout = e.path("layout");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci-archive:{archive}"),
        &format!("oci:{layout}:copied"),
    ]));
    // umoci unpacks what skopeo copied out of moat's archive: the same files.
    let bundle = e.path("bundle");
    run(Command::new("umoci").args(["unpack", "--image", &format!("{layout}:copied"), &bundle]));
    assert!(Path::new(&bundle).join("rootfs/bin/busybox").is_file());
    // moat loads an OCI layout written by skopeo (directory) ...
    let out = e.ok(&["load", "-i", &layout]);
    assert!(out.starts_with("Loaded image"), "{out}");
    // ... and one built by umoci (a bare tag name: loaded by id).
    let um = e.path("umoci-layout");
    run(Command::new("umoci").args(["init", "--layout", &um]));
    run(Command::new("umoci").args(["new", "--image", &format!("{um}:t1")]));
    let bin = busybox_rootfs().join("bin");
    run(Command::new("umoci").args([
        "insert",
        "--image",
        &format!("{um}:t1"),
        bin.to_str().unwrap(),
        "/bin",
    ]));
    let out = e.ok(&["load", "-i", &um]);
    assert!(out.starts_with("Loaded image ID: sha256:"), "{out}");
    let id = out.trim().rsplit(' ').next().unwrap().to_string();
    let json: serde_json::Value = serde_json::from_str(&e.ok(&["image", "inspect", &id])).unwrap();
    assert_eq!(json[0]["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(e.ok(&["system", "check"]).trim(), "ok: no problems found");
}

#[test]
fn bad_archives_are_refused_and_leave_nothing() {
    if !can_run() {
        return;
    }
    let e = Engine::new();
    // Not an image archive at all.
    let junk = e.path("junk.tar");
    let st = Command::new("tar")
        .args(["-cf", &junk, "-C", "/etc", "hostname"])
        .status()
        .unwrap();
    assert!(st.success());
    let out = e.moat(&["load", "-i", &junk]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a docker-archive"),
        "{out:?}"
    );
    // A docker-archive whose layer does not match its config's diff id.
    let (_, archive) = saved_and_removed(&e);
    let x = e.path("x");
    std::fs::create_dir_all(&x).unwrap();
    run(Command::new("tar").args(["-xf", &archive, "-C", &x]));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{x}/manifest.json")).unwrap())
            .unwrap();
    let layer = format!("{x}/{}", manifest[0]["Layers"][0].as_str().unwrap());
    let other = e.path("other.tar");
    run(Command::new("tar").args(["-cf", &other, "-C", "/etc", "hostname"]));
    std::fs::copy(&other, &layer).unwrap();
    std::fs::remove_file(format!("{x}/index.json")).unwrap();
    let refused_cleanly = |input: &str| {
        let out = e.moat(&["load", "-i", input]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("diff id"),
            "{out:?}"
        );
        assert_eq!(e.ok(&["images", "-q"]), "");
        let check = e.moat(&["system", "check"]);
        let text = String::from_utf8_lossy(&check.stdout).into_owned();
        assert!(
            !text.contains("damaged") && !text.contains("layer") && !text.contains("orphan"),
            "{text}"
        );
    };
    refused_cleanly(&x);
    // The same as a tar, with a large wrong layer: a tar's large files go straight into the
    // blob store while it streams by; the refused load removes them again.
    run(Command::new("tar").args(["-cf", &other, "-C", "/bin", "busybox"]));
    std::fs::copy(&other, &layer).unwrap();
    let bad = e.path("bad.tar");
    run(Command::new("tar").args(["-cf", &bad, "-C", &x, "."]));
    refused_cleanly(&bad);
    let left: Vec<_> = std::fs::read_dir(e.dir.path().join("image"))
        .unwrap()
        .flatten()
        .filter(|d| d.file_name().to_string_lossy().starts_with("load-tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A tar whose manifest names its layer through a hard link or a symbolic link to another
/// entry (docker's legacy layout links repeated layers; large files go straight into the blob
/// store, so the link must name the same blob) loads; a link out of the archive is refused.
#[test]
fn tar_archives_with_links_load_and_escapes_are_refused() {
    if !can_run() {
        return;
    }
    let e = Engine::new();
    let (id, archive) = saved_and_removed(&e);
    let x = e.path("x");
    std::fs::create_dir_all(&x).unwrap();
    run(Command::new("tar").args(["-xf", &archive, "-C", &x]));
    std::fs::remove_file(format!("{x}/index.json")).unwrap();
    let manifest_path = format!("{x}/manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let layer = manifest[0]["Layers"][0].as_str().unwrap().to_string();
    let with = |key: &str, value: &str| {
        let mut m = manifest.clone();
        if key == "Layers" {
            m[0]["Layers"][0] = value.into();
        } else {
            m[0][key] = value.into();
        }
        std::fs::write(&manifest_path, m.to_string()).unwrap();
        let t = e.path("t.tar");
        let _ = std::fs::remove_file(&t);
        run(Command::new("tar").args(["-cf", &t, "-C", &x, "."]));
        e.moat(&["load", "-i", &t])
    };
    // A hard link (GNU tar stores the second name of one inode as a link to the first).
    std::fs::create_dir_all(format!("{x}/hard")).unwrap();
    std::fs::hard_link(format!("{x}/{layer}"), format!("{x}/hard/layer.tar")).unwrap();
    let out = with("Layers", "hard/layer.tar");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(e.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    e.ok(&["rmi", "bb:1"]);
    std::fs::remove_dir_all(format!("{x}/hard")).unwrap();
    // A symbolic link, as docker's legacy layout writes them.
    std::fs::create_dir_all(format!("{x}/sym")).unwrap();
    std::os::unix::fs::symlink(format!("../{layer}"), format!("{x}/sym/layer.tar")).unwrap();
    let out = with("Layers", "sym/layer.tar");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(e.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    e.ok(&["rmi", "bb:1"]);
    // A config that is a link out of the archive: refused, nothing read from there.
    std::os::unix::fs::symlink("/etc/hostname", format!("{x}/evil.json")).unwrap();
    let out = with("Config", "evil.json");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("escapes the archive"),
        "{out:?}"
    );
    assert_eq!(e.ok(&["images", "-q"]), "");
    let check = e.moat(&["system", "check"]);
    assert!(
        !String::from_utf8_lossy(&check.stdout).contains("orphan"),
        "{check:?}"
    );
}
