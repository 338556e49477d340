//! `moat run`: a container from an image, in the foreground.
//!
//! The container's directory `<root>/containers/<id>/` is its OCI bundle: `config.json`, the
//! overlay root filesystem (`rootfs/`, over the image's snapshots, with `upper/` and `work/`),
//! and the generated `hosts`, `hostname` and `resolv.conf`. The runtime library runs it in this
//! process (no fork of another binary), and with `--rm` everything goes afterwards.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use moat_image::ImageStore;
use moat_runtime::ops::create::CreateOptions;
use moat_runtime::{ContainerId, OpsError, Runtime};

use crate::spec::{build, Context, RunOptions};
use crate::EngineError;

/// A new container id: 64 random hex digits, as Docker's.
pub fn new_id() -> Result<String, EngineError> {
    let mut b = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|source| EngineError::Io {
            what: "read",
            path: "/dev/urandom".into(),
            source,
        })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Unmounts and removes a container directory when dropped (always on failure; with `--rm`
/// after the run).
struct Dir {
    path: PathBuf,
    rootfs: PathBuf,
    mounted: bool,
    remove: bool,
}

impl Drop for Dir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = moat_image::mount::unmount(&self.rootfs);
        }
        if self.remove {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn write(path: &Path, data: &str) -> Result<(), EngineError> {
    fs::write(path, data).map_err(|source| EngineError::Io {
        what: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Runs a container; returns its exit code (Docker's: the container's, or 126/127 when its
/// command cannot be run).
pub fn run(root: &Path, runtime_root: &Path, opts: &RunOptions) -> Result<i32, EngineError> {
    let store = ImageStore::open(&root.join("image"))?;
    let image = store.resolve(&opts.image).map_err(|e| match e {
        moat_image::StoreError::NoSuchImage(_) => EngineError::NoImage(opts.image.clone()),
        other => other.into(),
    })?;
    let (_row, config, _) = store.inspect(&image)?;
    let lowers = store.lowers(&image)?;
    drop(store);

    let id = new_id()?;
    let path = root.join("containers").join(&id);
    let (rootfs, upper, work) = (path.join("rootfs"), path.join("upper"), path.join("work"));
    let mut dir = Dir {
        path: path.clone(),
        rootfs: rootfs.clone(),
        mounted: false,
        remove: true,
    };
    for d in [&rootfs, &upper, &work] {
        fs::create_dir_all(d).map_err(|source| EngineError::Io {
            what: "create",
            path: d.clone(),
            source,
        })?;
    }
    // Which image the container uses: `rmi` refuses to remove it while the directory exists.
    write(&path.join("image.id"), image.as_str())?;
    moat_image::mount::mount_overlay(&root.join("image"), &lowers, &upper, &work, &rootfs)?;
    dir.mounted = true;
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    write(&path.join("hostname"), &format!("{hostname}\n"))?;
    write(
        &path.join("hosts"),
        &format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"),
    )?;
    write(&path.join("resolv.conf"), &resolv_conf())?;
    let spec = build(
        &config,
        opts,
        &Context {
            id: &id,
            rootfs: &rootfs,
            dir: &path,
        },
    )?;
    spec.save(path.join("config.json"))
        .map_err(|e| EngineError::Spec(e.to_string()))?;

    let cid: ContainerId = id
        .parse()
        .map_err(|e: moat_runtime::id::IdError| EngineError::Spec(e.to_string()))?;
    let rt = Runtime::new(runtime_root);
    let result = moat_runtime::ops::run::run(
        &rt,
        &cid,
        &CreateOptions {
            bundle: path.clone(),
            ..Default::default()
        },
        false,
    );
    dir.remove = opts.rm;
    match result {
        Ok(code) => Ok(code),
        Err(OpsError::Command { message, code }) => Err(EngineError::Command { message, code }),
        Err(e) => Err(e.into()),
    }
}

/// The host's resolv.conf without loopback resolvers (unreachable from the container's own
/// network namespace), as Docker writes it.
fn resolv_conf() -> String {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let kept: Vec<&str> = host
        .lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            !(w.next() == Some("nameserver")
                && w.next()
                    .is_some_and(|a| a.starts_with("127.") || a == "::1"))
        })
        .collect();
    let mut out = kept.join("\n");
    out.push('\n');
    out
}

/// Containers (ids) whose directory says they use `image`.
pub fn containers_using(root: &Path, image: &moat_image::Digest) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(root.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            fs::read_to_string(e.path().join("image.id")).is_ok_and(|s| s.trim() == image.as_str())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}
