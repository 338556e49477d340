//! What a VM boots besides its kernel ([`crate::kernel`]): an initramfs holding the agent as
//! `/init`, and for a distribution kernel the modules the agent loads first.
//!
//! The initramfs is made the first time a VM starts with a given agent and kernel, and cached
//! under the engine root by the agent's and the modules' paths, sizes and modification times
//! (a rebuilt agent gets a new one; hashing the binary at every start would cost more than
//! building it once).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{io_err, VmError};

/// The agent binary: `$MOAT_AGENT` (the `moat` binary sets it to its sibling `moat-agent` at
/// start-up, before it re-executes itself from a sealed copy whose path says nothing).
pub fn agent() -> Result<PathBuf, VmError> {
    let a = std::env::var_os("MOAT_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("moat-agent"));
    if a.is_file() {
        Ok(a)
    } else {
        Err(VmError::NoAgent(a))
    }
}

/// Where the initramfs holds a distribution kernel's modules, and the file naming them in
/// load order (one file name a line); the agent loads them before anything else.
pub const MODULES_DIR: &str = "modules";
/// See [`MODULES_DIR`].
pub const MODULES_ORDER: &str = "modules/order";

/// The initramfs for `agent` and the kernel modules `modules` (in load order), made under
/// `cache_dir` unless already there.
pub fn initramfs(agent: &Path, modules: &[PathBuf], cache_dir: &Path) -> Result<PathBuf, VmError> {
    let mut h = Sha256::new();
    for f in std::iter::once(agent).chain(modules.iter().map(PathBuf::as_path)) {
        let meta = std::fs::metadata(f).map_err(io_err("stat", f))?;
        h.update(f.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(meta.len().to_le_bytes());
        h.update(meta.mtime().to_le_bytes());
        h.update(meta.mtime_nsec().to_le_bytes());
    }
    let key = hex::encode(&h.finalize()[..8]);
    let out = cache_dir.join(format!("initramfs-{key}.cpio"));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(cache_dir).map_err(io_err("create", cache_dir))?;
    let bytes = std::fs::read(agent).map_err(io_err("read", agent))?;
    let mut mods = vec![];
    for m in modules {
        let name = m
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        mods.push((name, std::fs::read(m).map_err(io_err("read", m))?));
    }
    let tmp = cache_dir.join(format!(".initramfs-{key}.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&archive(&bytes, &mods)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &out)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        VmError::Io {
            what: "write",
            path: out.clone(),
            source: e,
        }
    })?;
    prune(cache_dir, &out);
    Ok(out)
}

/// Archives of earlier agents go once a new one is made, when they are older than
/// [`STALE`]: a start that chose one just before may still be about to boot from it (a VMM
/// that booted keeps its own mapping of the file).
fn prune(cache_dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p == keep || !name.starts_with("initramfs-") || !name.ends_with(".cpio") {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE);
        if old {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// How old an unused archive must be to go.
const STALE: std::time::Duration = std::time::Duration::from_secs(600);

/// A newc archive: the directories the agent mounts on, the agent as `/init`, and `modules`
/// (file name, contents) under [`MODULES_DIR`] with their order in [`MODULES_ORDER`].
fn archive(agent: &[u8], modules: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let total: usize = modules.iter().map(|(_, m)| m.len()).sum();
    let mut a = Newc {
        out: Vec::with_capacity(agent.len() + total + 4096),
        ino: 0,
    };
    for dir in ["dev", "proc", "sys", "run", "tmp", "newroot"] {
        a.dir(dir)?;
    }
    // /dev/console for the kernel to open as the agent's stdio before devtmpfs is mounted.
    a.ino += 1;
    cpio::NewcBuilder::new("dev/console")
        .ino(a.ino)
        .mode(0o020_600)
        .rdev_major(5)
        .rdev_minor(1)
        .write(&mut a.out, 0)
        .finish()?;
    a.file("init", 0o100_755, agent)?;
    if !modules.is_empty() {
        a.dir(MODULES_DIR)?;
        let mut order = String::new();
        for (name, bytes) in modules {
            a.file(&format!("{MODULES_DIR}/{name}"), 0o100_644, bytes)?;
            order.push_str(name);
            order.push('\n');
        }
        a.file(MODULES_ORDER, 0o100_644, order.as_bytes())?;
    }
    cpio::newc::trailer(&mut a.out)?;
    Ok(a.out)
}

/// A newc archive being written, each entry with the next inode number.
struct Newc {
    out: Vec<u8>,
    ino: u32,
}

impl Newc {
    fn dir(&mut self, name: &str) -> std::io::Result<()> {
        self.ino += 1;
        cpio::NewcBuilder::new(name)
            .ino(self.ino)
            .mode(0o040_755)
            .nlink(2)
            .write(&mut self.out, 0)
            .finish()?;
        Ok(())
    }

    fn file(&mut self, name: &str, mode: u32, bytes: &[u8]) -> std::io::Result<()> {
        self.ino += 1;
        let mut w = cpio::NewcBuilder::new(name)
            .ino(self.ino)
            .mode(mode)
            .write(&mut self.out, bytes.len() as u32);
        w.write_all(bytes)?;
        w.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;

    #[test]
    fn initramfs_holds_the_agent_and_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("moat-agent");
        std::fs::write(&agent, b"\x7fELF pretend").unwrap();
        let cache = dir.path().join("cache");
        let a = initramfs(&agent, &[], &cache).unwrap();
        let b = initramfs(&agent, &[], &cache).unwrap();
        assert_eq!(a, b);
        let bytes = std::fs::read(&a).unwrap();
        let mut r = cpio::NewcReader::new(&bytes[..]).unwrap();
        let mut names = vec![];
        loop {
            let e = r.entry();
            if e.is_trailer() {
                break;
            }
            names.push((e.name().to_string(), e.mode(), e.file_size()));
            r = cpio::NewcReader::new(r.finish().unwrap()).unwrap();
        }
        assert!(
            names.contains(&("init".to_string(), 0o100_755, 12)),
            "{names:?}"
        );
        assert!(names.iter().any(|(n, m, _)| n == "proc" && *m == 0o040_755));
        // A rebuilt agent gets a new archive; the old one goes once it is stale, not before.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&agent, b"\x7fELF rebuilt!").unwrap();
        let b = initramfs(&agent, &[], &cache).unwrap();
        assert_ne!(b, a);
        assert!(a.exists(), "a fresh earlier archive is kept");
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&agent, b"\x7fELF third one").unwrap();
        let c = initramfs(&agent, &[], &cache).unwrap();
        assert!(!a.exists(), "a stale archive goes");
        assert!(b.exists() && c.exists());
    }

    /// A distribution kernel's modules travel in the initramfs, their order beside them; the
    /// same agent with modules is another archive than without.
    #[test]
    fn modules_go_into_the_initramfs_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("moat-agent");
        std::fs::write(&agent, b"\x7fELF pretend").unwrap();
        let mods: Vec<PathBuf> = ["virtio_ring.ko", "virtio.ko"]
            .iter()
            .map(|n| {
                let p = dir.path().join(n);
                std::fs::write(&p, n.as_bytes()).unwrap();
                p
            })
            .collect();
        let cache = dir.path().join("cache");
        let plain = initramfs(&agent, &[], &cache).unwrap();
        let with = initramfs(&agent, &mods, &cache).unwrap();
        assert_ne!(plain, with);
        let bytes = std::fs::read(&with).unwrap();
        let mut r = cpio::NewcReader::new(&bytes[..]).unwrap();
        let mut files = vec![];
        loop {
            if r.entry().is_trailer() {
                break;
            }
            let name = r.entry().name().to_string();
            let mut body = vec![];
            r.read_to_end(&mut body).unwrap();
            files.push((name, String::from_utf8_lossy(&body).into_owned()));
            r = cpio::NewcReader::new(r.finish().unwrap()).unwrap();
        }
        assert!(files.contains(&("modules/virtio.ko".into(), "virtio.ko".into())));
        assert!(files.contains(&("modules/virtio_ring.ko".into(), "virtio_ring.ko".into())));
        assert!(
            files.contains(&(MODULES_ORDER.into(), "virtio_ring.ko\nvirtio.ko\n".into())),
            "{files:?}"
        );
    }
}
