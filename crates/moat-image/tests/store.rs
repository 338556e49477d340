//! Image store tests against the real filesystem (root: owners, device nodes, overlay mounts).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use moat_image::mount::{mount_overlay, mount_overlay_legacy, unmount};
use moat_image::store::ImportConfig;
use moat_image::{ImageStore, Reference};

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("SKIP: needs root (file owners, device nodes, overlay mounts)");
    }
    root
}

/// A tar entry written byte by byte, so that malicious names (absolute, `..`) can be made.
fn entry(out: &mut Vec<u8>, path: &[u8], kind: u8, link: &[u8], data: &[u8], mode: u32) {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path);
        old.linkname[..link.len()].copy_from_slice(link);
        old.linkflag = [kind];
    }
    h.set_mode(mode);
    h.set_uid(1000);
    h.set_gid(1001);
    h.set_mtime(1_600_000_000);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = ImageStore::open(&dir.path().join("image")).unwrap();
    (dir, s)
}

fn import(
    s: &mut ImageStore,
    tar: &[u8],
    tag: &str,
) -> Result<moat_image::Digest, moat_image::StoreError> {
    let r: Reference = tag.parse().unwrap();
    s.import_tar(tar, Some(&r), &ImportConfig::default())
}

fn snapshot(s: &ImageStore, tag: &str) -> std::path::PathBuf {
    let id = s.resolve(tag).unwrap();
    s.lowers(&id).unwrap()[0].dir.clone()
}

#[test]
fn unpacks_every_entry_type_with_metadata() {
    if !is_root() {
        return;
    }
    let (_d, mut s) = store();
    let mut t = vec![];
    entry(&mut t, b"./", b'5', b"", b"", 0o755);
    entry(&mut t, b"./bin/", b'5', b"", b"", 0o711);
    entry(&mut t, b"./bin/tool", b'0', b"", b"#!/bin/sh\n", 0o4755);
    entry(&mut t, b"./bin/alias", b'2', b"tool", b"", 0o777);
    entry(&mut t, b"./bin/hard", b'1', b"./bin/tool", b"", 0o755);
    entry(&mut t, b"./deep/er/file", b'0', b"", b"x", 0o600);
    entry(&mut t, b"./fifo", b'6', b"", b"", 0o640);
    let mut dev = tar::Header::new_ustar();
    dev.set_path("null").unwrap();
    dev.set_entry_type(tar::EntryType::Char);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    dev.set_mode(0o666);
    dev.set_uid(0);
    dev.set_gid(0);
    dev.set_mtime(0);
    dev.set_size(0);
    dev.set_cksum();
    t.extend_from_slice(dev.as_bytes());
    let t = finish(t);
    import(&mut s, &t, "all:types").unwrap();
    let snap = snapshot(&s, "all:types");
    let tool = std::fs::metadata(snap.join("bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid bit and mode");
    assert_eq!((tool.uid(), tool.gid()), (1000, 1001));
    assert_eq!(tool.mtime(), 1_600_000_000);
    assert_eq!(
        std::fs::read_link(snap.join("bin/alias")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        std::fs::metadata(snap.join("bin/hard")).unwrap().ino(),
        tool.ino()
    );
    assert_eq!(
        std::fs::metadata(snap.join("bin")).unwrap().mode() & 0o7777,
        0o711
    );
    assert_eq!(std::fs::read(snap.join("deep/er/file")).unwrap(), b"x");
    assert!(std::fs::metadata(snap.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let null = std::fs::metadata(snap.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
}

#[test]
fn whiteouts_become_overlayfs_whiteouts() {
    if !is_root() {
        return;
    }
    let (_d, mut s) = store();
    let mut t = vec![];
    entry(&mut t, b"etc/", b'5', b"", b"", 0o755);
    entry(&mut t, b"etc/.wh.gone", b'0', b"", b"", 0o644);
    entry(&mut t, b"opaque/", b'5', b"", b"", 0o755);
    entry(&mut t, b"opaque/.wh..wh..opq", b'0', b"", b"", 0o644);
    import(&mut s, &finish(t), "wh:1").unwrap();
    let snap = snapshot(&s, "wh:1");
    let gone = std::fs::symlink_metadata(snap.join("etc/gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(!snap.join("etc/.wh.gone").exists());
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(snap.join("opaque"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
}

#[test]
fn malicious_layers_are_refused_and_leave_nothing() {
    if !is_root() {
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    let o = outside.path().display().to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("absolute path", {
            let mut t = vec![];
            entry(
                &mut t,
                format!("{o}/abs").as_bytes(),
                b'0',
                b"",
                b"x",
                0o644,
            );
            finish(t)
        }),
        ("dotdot", {
            let mut t = vec![];
            entry(&mut t, b"a/../../escape", b'0', b"", b"x", 0o644);
            finish(t)
        }),
        ("write through a planted symlink", {
            let mut t = vec![];
            entry(&mut t, b"link", b'2', o.as_bytes(), b"", 0o777);
            entry(&mut t, b"link/evil", b'0', b"", b"x", 0o644);
            finish(t)
        }),
        ("relative symlink up and out", {
            let mut t = vec![];
            entry(
                &mut t,
                b"up",
                b'2',
                b"../../../../../../../../..",
                b"",
                0o777,
            );
            entry(
                &mut t,
                format!("up{o}/evil").as_bytes(),
                b'0',
                b"",
                b"x",
                0o644,
            );
            finish(t)
        }),
        ("hard link outside", {
            let mut t = vec![];
            entry(
                &mut t,
                b"h",
                b'1',
                format!("{o}/target").as_bytes(),
                b"",
                0o644,
            );
            finish(t)
        }),
        ("hard link with dotdot", {
            let mut t = vec![];
            entry(&mut t, b"h", b'1', b"../../etc/passwd", b"", 0o644);
            finish(t)
        }),
        ("hard link through a symlink", {
            let mut t = vec![];
            entry(&mut t, b"l", b'2', o.as_bytes(), b"", 0o777);
            entry(&mut t, b"h", b'1', b"l/target", b"", 0o644);
            finish(t)
        }),
    ];
    std::fs::write(outside.path().join("target"), b"secret").unwrap();
    for (name, tar) in cases {
        let (dir, mut s) = store();
        let err = import(&mut s, &tar, "bad:1").unwrap_err();
        assert!(
            err.to_string().contains("refused") || err.to_string().contains("escape"),
            "{name}: {err}"
        );
        let entries: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            entries,
            vec![std::ffi::OsString::from("target")],
            "{name}: wrote outside"
        );
        assert_eq!(
            std::fs::read(outside.path().join("target")).unwrap(),
            b"secret"
        );
        let snaps: Vec<_> = std::fs::read_dir(dir.path().join("image/snapshots"))
            .unwrap()
            .collect();
        assert!(snaps.is_empty(), "{name}: snapshot left behind");
        assert!(
            s.blobs().list().unwrap().is_empty(),
            "{name}: blob left behind"
        );
        assert!(
            s.blobs().temporaries().is_empty(),
            "{name}: temporary blob left behind"
        );
        assert!(s.images().unwrap().is_empty());
    }
}

fn simple_tar(file: &str, content: &[u8]) -> Vec<u8> {
    let mut t = vec![];
    entry(&mut t, file.as_bytes(), b'0', b"", content, 0o644);
    finish(t)
}

#[test]
fn compressed_layers_unpack_to_the_same_diff_and_layers_are_shared() {
    if !is_root() {
        return;
    }
    let (d, mut s) = store();
    let plain = simple_tar("hello", b"world");
    let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&plain[..], 3).unwrap();
    // Three different images (their configs differ) over one layer.
    let mut imp = |tar: &[u8], tag: &str| {
        let cfg = ImportConfig {
            cmd: Some(vec![tag.to_string()]),
            ..Default::default()
        };
        s.import_tar(tar, Some(&tag.parse().unwrap()), &cfg)
            .unwrap()
    };
    let a = imp(&plain, "a:1");
    let b = imp(&gz, "b:1");
    let c = imp(&zst, "c:1");
    assert!(a != b && b != c);
    let la = s.db().image(&a).unwrap().unwrap().layers;
    assert_eq!(la, s.db().image(&b).unwrap().unwrap().layers);
    assert_eq!(la, s.db().image(&c).unwrap().unwrap().layers);
    // One layer, one snapshot, shared by three images.
    assert_eq!(s.db().layers().unwrap().len(), 1);
    assert_eq!(
        std::fs::read_dir(d.path().join("image/snapshots"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(s.db().layer_users(&la[0]).unwrap(), 3);
    assert!(s.blobs().verify(&la[0]).unwrap());
    // Removing images keeps the layer until the last user goes.
    s.remove("a:1", false).unwrap();
    s.remove("b:1", false).unwrap();
    assert_eq!(s.db().layers().unwrap().len(), 1);
    let out = s.remove("c:1", false).unwrap();
    assert!(
        out.iter().any(|l| l.starts_with("Deleted: sha256:")),
        "{out:?}"
    );
    assert!(s.db().layers().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(d.path().join("image/snapshots"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(d.path().join("image/l")).unwrap().count(),
        0
    );
    assert!(
        s.blobs().list().unwrap().is_empty(),
        "{:?}",
        s.blobs().list()
    );
}

#[test]
fn tags_ids_and_multi_tag_removal() {
    if !is_root() {
        return;
    }
    let (_d, mut s) = store();
    let id = import(&mut s, &simple_tar("f", b"1"), "one:latest").unwrap();
    s.tag("one", &"two:v2".parse().unwrap()).unwrap();
    assert_eq!(s.resolve("two:v2").unwrap(), id);
    assert_eq!(s.resolve(&id.hex()[..12]).unwrap(), id);
    assert_eq!(s.resolve(id.as_str()).unwrap(), id);
    assert!(s
        .resolve("nope")
        .unwrap_err()
        .to_string()
        .contains("No such image: nope"));
    // By id with two tags: refused without force.
    let err = s.remove(&id.hex()[..12], false).unwrap_err();
    assert!(err.to_string().contains("must be forced"), "{err}");
    // By tag: only untags.
    assert_eq!(
        s.remove("two:v2", false).unwrap(),
        vec!["Untagged: two:v2".to_string()]
    );
    assert_eq!(s.resolve("one").unwrap(), id);
    let (row, config, manifest) = s.inspect(&id).unwrap();
    assert_eq!(row.tags, vec!["one:latest".to_string()]);
    assert_eq!(config["rootfs"]["diff_ids"][0], row.layers[0].as_str());
    assert_eq!(manifest["config"]["digest"], id.as_str());
}

#[test]
fn a_128_layer_image_mounts_with_both_mount_paths() {
    if !is_root() {
        return;
    }
    let (d, mut s) = store();
    let mut layers = vec![];
    for i in 0..128 {
        let id = import(
            &mut s,
            &simple_tar(&format!("layer-{i}"), format!("{i}").as_bytes()),
            &format!("l:{i}"),
        )
        .unwrap();
        let diff = s.db().image(&id).unwrap().unwrap().layers[0].clone();
        layers.push(s.db().layer(&diff).unwrap().unwrap());
    }
    let big = s
        .commit_image(
            &layers,
            Some(&"big:128".parse().unwrap()),
            &ImportConfig::default(),
            "test",
        )
        .unwrap();
    let lowers = s.lowers(&big).unwrap();
    assert_eq!(lowers.len(), 128);
    for (name, legacy) in [("new", false), ("legacy", true)] {
        let c = d.path().join(name);
        let (upper, work, target) = (c.join("upper"), c.join("work"), c.join("rootfs"));
        for p in [&upper, &work, &target] {
            std::fs::create_dir_all(p).unwrap();
        }
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = unmount(self.0);
            }
        }
        if legacy {
            mount_overlay_legacy(s.root(), &lowers, &upper, &work, &target).unwrap();
        } else {
            mount_overlay(s.root(), &lowers, &upper, &work, &target, false).unwrap();
        }
        let _guard = Unmount(&target);
        assert_eq!(
            std::fs::read_to_string(target.join("layer-0")).unwrap(),
            "0",
            "{name}"
        );
        assert_eq!(
            std::fs::read_to_string(target.join("layer-127")).unwrap(),
            "127",
            "{name}"
        );
        std::fs::write(target.join("new-file"), b"x").unwrap();
        assert!(
            upper.join("new-file").exists(),
            "{name}: writes go to the upper dir"
        );
        drop(_guard);
        assert!(!target.join("layer-0").exists(), "{name}: still mounted");
    }
    let _ = std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755));
}

#[test]
fn multi_layer_images_save_and_load_in_parallel() {
    if !is_root() {
        return;
    }
    let (d, mut s) = store();
    let mut layers = vec![];
    for i in 0..5 {
        let id = import(
            &mut s,
            &simple_tar(&format!("f{i}"), format!("{i}").as_bytes()),
            &format!("part:{i}"),
        )
        .unwrap();
        let diff = s.db().image(&id).unwrap().unwrap().layers[0].clone();
        layers.push(s.db().layer(&diff).unwrap().unwrap());
    }
    let id = s
        .commit_image(
            &layers,
            Some(&"multi:5".parse().unwrap()),
            &ImportConfig::default(),
            "test",
        )
        .unwrap();
    let archive = d.path().join("multi.tar");
    moat_image::archive::save(
        &s,
        &["multi:5".to_string()],
        std::fs::File::create(&archive).unwrap(),
    )
    .unwrap();
    // A fresh store loads it: five layers unpacked (concurrently), recorded in order.
    let mut s2 = ImageStore::open(&d.path().join("other")).unwrap();
    let loaded = moat_image::archive::load(&mut s2, Some(&archive)).unwrap();
    assert_eq!(loaded, vec![(id.clone(), vec!["multi:5".to_string()])]);
    let row = s2.db().image(&id).unwrap().unwrap();
    assert_eq!(
        row.layers,
        layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()
    );
    for (i, lower) in s2.lowers(&id).unwrap().iter().rev().enumerate() {
        assert_eq!(
            std::fs::read_to_string(lower.dir.join(format!("f{i}"))).unwrap(),
            i.to_string()
        );
    }
    assert!(moat_image::check::check(&s2).unwrap().is_empty());
}

#[test]
fn a_directory_replaced_by_a_symlink_is_not_written_through_a_stale_handle() {
    if !is_root() {
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    let o = outside.path().display().to_string();
    let (_d, mut s) = store();
    // "d/" is resolved (and cached) for d/a, then d is replaced by a symlink to the outside,
    // then d/b is written: it must be refused, not land in the old directory nor outside.
    let mut t = vec![];
    entry(&mut t, b"d/", b'5', b"", b"", 0o755);
    entry(&mut t, b"d/a", b'0', b"", b"1", 0o644);
    entry(&mut t, b"d/a", b'0', b"", b"2", 0o644);
    entry(&mut t, b"x", b'0', b"", b"", 0o644);
    entry(&mut t, b"d/.wh.a", b'0', b"", b"", 0o644);
    entry(&mut t, b"d", b'2', o.as_bytes(), b"", 0o777);
    entry(&mut t, b"d/b", b'0', b"", b"3", 0o644);
    let err = import(&mut s, &finish(t), "stale:1").unwrap_err();
    assert!(
        err.to_string().contains("refused") || err.to_string().contains("replace"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}
