//! Registries misbehaving (connections cut mid-download, the registry killed mid-pull) and
//! interoperability with skopeo, both directions (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use common::registry::{engine_with_app, moat, ok, Auth, Proxy, Registry, CUT_ONCE, PASS, STALL};
use common::{busybox_rootfs, can_run, eventually, output_of, wait_or_dump, Engine, RunExt, MOAT};

fn skopeo(args: &[&str]) -> String {
    let out = output_of(Command::new("skopeo").args(args));
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Nothing half-written is left in the store: no temporary blob or snapshot.
fn assert_no_temporaries(e: &Engine) {
    let image = e.dir.path().join("image");
    let tmp_blobs = std::fs::read_dir(image.join("blobs/tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(tmp_blobs, 0, "temporary blobs left");
    let tmp_snaps = std::fs::read_dir(image.join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("tmp-"))
        .count();
    assert_eq!(tmp_snaps, 0, "temporary snapshots left");
    let out = ok(e, &["system", "check"]);
    assert!(out.contains("no problems"), "{out}");
}

/// An engine with `big:v1`: busybox plus 8 MB of random (incompressible) data, pushed to `reg`.
fn push_big(reg: &Registry) -> Engine {
    let e = Engine::new();
    let root = e.dir.path().join("bigroot");
    let st = Command::new("cp")
        .arg("-a")
        .arg(busybox_rootfs())
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    let mut data = vec![0u8; 8 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut data))
        .unwrap();
    std::fs::write(root.join("big"), &data).unwrap();
    ok(&e, &["import", root.to_str().unwrap(), &reg.name("big:v1")]);
    ok(&e, &["push", &reg.name("big:v1")]);
    e
}

#[test]
fn a_download_cut_mid_layer_is_retried() {
    if !can_run() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let _src = push_big(&reg);
    let proxy = Proxy::start(&reg.addr);
    proxy.mode.store(CUT_ONCE, Ordering::SeqCst);
    let dst = Engine::new();
    let out = ok(&dst, &["pull", &proxy.name("big:v1")]);
    assert!(out.contains("Pull complete"), "{out}");
    assert_eq!(
        proxy.mode.load(Ordering::SeqCst),
        PASS,
        "the connection was cut"
    );
    let (code, stdout, _) = dst.run(&[&proxy.name("big:v1"), "wc", "-c", "/big"]);
    assert_eq!((code, stdout.trim()), (0, "8388608 /big"));
    assert_no_temporaries(&dst);
}

#[test]
fn a_registry_killed_mid_pull_leaves_nothing_and_the_next_pull_completes() {
    if !can_run() {
        return;
    }
    let mut reg = Registry::start(Auth::None);
    let _src = push_big(&reg);
    let proxy = Proxy::start(&reg.addr);
    proxy.mode.store(STALL, Ordering::SeqCst);
    let dst = Engine::new();
    let child = Command::new(MOAT)
        .env("DOCKER_CONFIG", dst.dir.path().join("docker"))
        .arg("--root")
        .arg(dst.dir.path())
        .args(["pull", &proxy.name("big:v1")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the download to be under way", || {
        proxy.stalled.load(Ordering::SeqCst)
    });
    reg.stop();
    proxy.mode.store(PASS, Ordering::SeqCst); // the held connection closes; retries find no registry
    let status = wait_or_dump(child, "pull from a dead registry");
    assert!(!status.success());
    assert_no_temporaries(&dst);
    assert_eq!(ok(&dst, &["images", "-q"]), "", "no image is recorded");

    reg.restart();
    let out = ok(&dst, &["pull", &proxy.name("big:v1")]);
    assert!(out.contains("Pull complete"), "{out}");
    let (code, stdout, _) = dst.run(&[&proxy.name("big:v1"), "wc", "-c", "/big"]);
    assert_eq!((code, stdout.trim()), (0, "8388608 /big"));
    assert_no_temporaries(&dst);
}

#[test]
fn skopeo_reads_what_moat_pushes_and_moat_runs_what_skopeo_copies() {
    if !can_run() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let e = Engine::with_busybox();
    // moat → registry → skopeo.
    ok(&e, &["tag", "busybox", &reg.name("from-moat:v1")]);
    let out = ok(&e, &["push", &reg.name("from-moat:v1")]);
    let digest = out
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap()
        .to_string();
    let inspect: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}", reg.name("from-moat:v1")),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.as_str(), "{inspect}");
    assert_eq!(inspect["Architecture"], "amd64");
    let layout = e.dir.path().join("oci-layout");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}", reg.name("from-moat:v1")),
        &format!("oci:{}:v1", layout.display()),
    ]);
    assert!(layout.join("index.json").exists());

    // skopeo → registry → moat: an image moat has never seen (saved, then copied by skopeo).
    let archive = e.dir.path().join("bb.tar");
    ok(&e, &["tag", "busybox", "skopeo-src:v1"]);
    ok(
        &e,
        &["save", "-o", archive.to_str().unwrap(), "skopeo-src:v1"],
    );
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-compress",
        &format!("docker-archive:{}", archive.display()),
        &format!("docker://{}", reg.name("from-skopeo:v1")),
    ]);
    let dst = Engine::new();
    let out = ok(&dst, &["pull", &reg.name("from-skopeo:v1")]);
    assert!(out.contains("Pull complete"), "{out}");
    let (code, stdout, stderr) = dst.run(&[&reg.name("from-skopeo:v1"), "echo", "via skopeo"]);
    assert_eq!((code, stdout.as_str()), (0, "via skopeo\n"), "{stderr}");
    assert_no_temporaries(&dst);
}

/// A layer is stored once, under the blob of the first image that brought it; another image
/// naming the same layer by another blob (the same tar compressed otherwise) does not download
/// it again, and still pushes to a registry that has neither blob: its manifest then names the
/// stored blob, as Docker's push does, and the image keeps its id wherever it is pulled.
#[test]
fn a_layer_stored_under_another_blob_still_pushes() {
    if !can_run() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let src = engine_with_app();
    let (base, app_src, app) = (
        reg.name("base:v1"),
        reg.name("app-src:v1"),
        reg.name("app:v1"),
    );
    ok(&src, &["tag", "busybox", &base]);
    ok(&src, &["push", &base]);
    ok(&src, &["tag", "app:v1", &app_src]);
    ok(&src, &["push", &app_src]);
    // The app recompressed by skopeo (zstd, OCI manifest): the same diff ids, other blobs,
    // its base layer's among them.
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        "--dest-compress-format",
        "zstd",
        &format!("docker://{app_src}"),
        &format!("docker://{app}"),
    ]);
    let e = Engine::new();
    ok(&e, &["pull", &base]);
    let out = ok(&e, &["pull", &app]);
    assert!(
        out.contains("Already exists"),
        "the base layer is not fetched again: {out}"
    );
    // A registry with none of the blobs.
    let other = Registry::start(Auth::None);
    let moved = other.name("moved/app:v1");
    ok(&e, &["tag", &app, &moved]);
    let out = ok(&e, &["push", &moved]);
    assert!(out.contains("digest: sha256:"), "{out}");
    let id = |e: &Engine, name: &str| ok(e, &["image", "inspect", "-f", "{{.Id}}", name]);
    let dst = Engine::new();
    ok(&dst, &["pull", &moved]);
    assert_eq!(id(&dst, &moved), id(&e, &app), "the image keeps its id");
    let (code, stdout, stderr) = dst.run(&[&moved, "cat", "/app.txt"]);
    assert_eq!((code, stdout.as_str()), (0, "app-data\n"), "{stderr}");
    // skopeo reads the rewritten manifest too.
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{moved}"),
    ]);
    assert_no_temporaries(&e);
    assert_no_temporaries(&dst);
}

#[test]
fn a_corrupted_blob_is_refused_naming_it() {
    if !can_run() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let _src = push_big(&reg);
    let dst = Engine::new();
    // The layer's digest, from the registry's manifest (through moat: pull, inspect, remove).
    ok(&dst, &["pull", &reg.name("big:v1")]);
    let layer = {
        let m = std::fs::read_dir(dst.dir.path().join("image/blobs/sha256"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        format!("sha256:{}", m.file_name().unwrap().to_string_lossy())
    };
    ok(&dst, &["rmi", &reg.name("big:v1")]);
    // The registry now serves other bytes under that digest.
    let file = reg.blob_file(&layer);
    let mut data = std::fs::read(&file).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&file, data).unwrap();
    let out = moat(&dst, &["pull", &reg.name("big:v1")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&layer), "the error names the blob: {err}");
    assert_no_temporaries(&dst);
    assert_eq!(ok(&dst, &["images", "-q"]), "");
}
