//! `moat import | images | image inspect | tag | rmi` as a user types them (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::{busybox_rootfs, can_run, Engine, MOAT};

#[test]
fn import_list_tag_inspect_remove() {
    if !can_run() {
        return;
    }
    let e = Engine::new();
    let tar = e.busybox_tar();
    let id = e.ok(&[
        "import",
        "--change",
        "CMD [\"/bin/sh\"]",
        "--message",
        "hello",
        tar.to_str().unwrap(),
        "busybox:local",
    ]);
    let id = id.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    // From a directory and from standard input (gzip) too.
    e.ok(&["import", busybox_rootfs().to_str().unwrap(), "fromdir"]);
    let gz = Command::new("gzip")
        .arg("-c")
        .arg(&tar)
        .output()
        .unwrap()
        .stdout;
    let mut child = Command::new(MOAT)
        .arg("--root")
        .arg(e.dir.path())
        .args(["import", "-", "fromstdin:gz"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &gz).unwrap();
    drop(child.stdin.take());
    assert!(child.wait_with_output().unwrap().status.success());

    let list = e.ok(&["images"]);
    let header = list.lines().next().unwrap();
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(col), "{list}");
    }
    assert!(
        list.lines()
            .any(|l| l.starts_with("busybox ") && l.contains("local") && l.contains(&id[7..19])),
        "{list}"
    );
    assert!(
        list.contains("fromdir") && list.contains("fromstdin"),
        "{list}"
    );
    assert!(list.contains("MB"), "{list}");

    e.ok(&["tag", "busybox:local", "other/name:v2"]);
    let json: serde_json::Value =
        serde_json::from_str(&e.ok(&["image", "inspect", "other/name:v2"])).unwrap();
    assert_eq!(json[0]["Id"], id.as_str());
    assert_eq!(json[0]["Config"]["Cmd"][0], "/bin/sh");
    assert_eq!(json[0]["Comment"], "hello");
    assert_eq!(json[0]["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    let tags: Vec<&str> = json[0]["RepoTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, ["busybox:local", "other/name:v2"]);

    // By id with two tags: refused; by tag: untag only; last tag: deleted.
    let out = e.moat(&["rmi", &id[7..19]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be forced"));
    assert_eq!(
        e.ok(&["rmi", "busybox:local"]).trim(),
        "Untagged: busybox:local"
    );
    let out = e.ok(&["rmi", "other/name:v2"]);
    assert!(
        out.contains("Untagged: other/name:v2") && out.contains(&format!("Deleted: {id}")),
        "{out}"
    );
    assert!(!e.ok(&["images", "-q"]).contains(&id[7..19]));
}

#[test]
fn bad_input_is_refused_clearly_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let e = Engine::new();
    let out = e.moat(&["import", "/nonexistent.tar", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.tar"));
    let tar = e.busybox_tar();
    let out = e.moat(&["import", tar.to_str().unwrap(), "Bad:Name"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid reference"),
        "{out:?}"
    );
    let out = e.moat(&[
        "import",
        "--change",
        "RUN rm -rf /",
        tar.to_str().unwrap(),
        "x",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --change"));
    // A tar that is not a tar.
    let junk = e.dir.path().join("junk.tar");
    std::fs::write(&junk, vec![0x42u8; 4096]).unwrap();
    let out = e.moat(&["import", junk.to_str().unwrap(), "junk"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    for name in [
        "nope",
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let out = e.moat(&["rmi", name]);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("No such image"),
            "{out:?}"
        );
    }
    assert_eq!(e.ok(&["images", "-q"]), "");
    let snaps = std::fs::read_dir(e.dir.path().join("image/snapshots"))
        .unwrap()
        .count();
    assert_eq!(snaps, 0, "half-unpacked snapshot left behind");
}

#[test]
fn kill_9_during_import_leaves_only_orphans_that_repair_removes() {
    if !can_run() {
        return;
    }
    let e = Engine::new();
    // A layer big enough that imports are caught mid-way: busybox plus 24 MB of incompressible data.
    let src = e.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut data = vec![0u8; 24 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(src.join("blob.bin"), &data).unwrap();
    let tar = e.dir.path().join("big.tar.gz");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-czf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let mut killed = 0;
    for i in 0..12u64 {
        let mut child = Command::new(MOAT)
            .arg("--root")
            .arg(e.dir.path())
            .args(["import", tar.to_str().unwrap(), &format!("big:{i}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kills over the import's life (it takes a few hundred ms here).
        std::thread::sleep(std::time::Duration::from_millis(5 + (i * 37) % 300));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let out = e.moat(&["system", "check"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!text.contains("damaged"), "kill {i}: {text}");
        assert!(
            text.lines()
                .all(|l| l.starts_with("orphan:") || l.starts_with("ok:")),
            "kill {i}: {text}"
        );
    }
    assert!(
        killed > 0,
        "no import was interrupted: the test proves nothing"
    );
    let out = e.moat(&["system", "check", "--repair"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(e.ok(&["system", "check"]).trim(), "ok: no problems found");
    // The store still works: an import completes and every finished image is intact.
    e.ok(&["import", tar.to_str().unwrap(), "big:final"]);
    assert!(e.ok(&["images"]).contains("final"));
    assert_eq!(e.ok(&["system", "check"]).trim(), "ok: no problems found");
}

#[test]
fn history_prune_and_df() {
    if !can_run() {
        return;
    }
    let e = Engine::new();
    let tar = e.busybox_tar();
    e.ok(&[
        "import",
        "-m",
        "the comment",
        tar.to_str().unwrap(),
        "kept:1",
    ]);
    let dangling = e
        .ok(&["import", "--change", "CMD [\"x\"]", tar.to_str().unwrap()])
        .trim()
        .to_string();
    let hist = e.ok(&["image", "history", "kept:1"]);
    assert!(
        hist.lines().next().unwrap().contains("CREATED BY"),
        "{hist}"
    );
    assert!(
        hist.contains("moat import") && hist.contains("the comment") && hist.contains("MB"),
        "{hist}"
    );
    let df = e.ok(&["system", "df"]);
    assert!(
        df.lines()
            .any(|l| l.starts_with("Images") && l.contains(" 2 ")),
        "{df}"
    );
    let out = e.ok(&["image", "prune", "-f"]);
    assert!(out.contains(&dangling), "{out}");
    let ids = e.ok(&["images", "-q", "--no-trunc"]);
    assert!(
        !ids.contains(&dangling) && ids.lines().count() == 1,
        "{ids}"
    );
    // The shared layer stays for the kept image.
    assert!(e.ok(&["image", "inspect", "kept:1"]).contains("RootFS"));
}
