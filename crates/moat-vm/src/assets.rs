//! What a VM boots: the guest kernel, and an initramfs holding the agent as `/init`.
//!
//! The kernel is built once by `scripts/vm-kernel.sh` (cached outside the work tree); the
//! initramfs is made from the agent binary the first time a VM starts with it, and cached
//! under the engine root by the agent's path, size and modification time (a rebuilt agent gets
//! a new one; hashing the binary at every start would cost more than building it once).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{io_err, VmError};

/// Where scripts/vm-kernel.sh leaves the kernel.
pub const DEFAULT_KERNEL: &str = "/var/cache/moat/kernel/vmlinux";

/// The guest kernel: `$MOAT_VM_KERNEL`, else [`DEFAULT_KERNEL`].
pub fn kernel() -> Result<PathBuf, VmError> {
    let k = std::env::var_os("MOAT_VM_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KERNEL));
    if k.is_file() {
        Ok(k)
    } else {
        Err(VmError::NoKernel(k))
    }
}

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

/// The initramfs for `agent`, made under `cache_dir` unless already there.
pub fn initramfs(agent: &Path, cache_dir: &Path) -> Result<PathBuf, VmError> {
    let meta = std::fs::metadata(agent).map_err(io_err("stat", agent))?;
    let mut h = Sha256::new();
    h.update(agent.as_os_str().as_encoded_bytes());
    h.update(meta.len().to_le_bytes());
    h.update(meta.mtime().to_le_bytes());
    h.update(meta.mtime_nsec().to_le_bytes());
    let key = hex::encode(&h.finalize()[..8]);
    let out = cache_dir.join(format!("initramfs-{key}.cpio"));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(cache_dir).map_err(io_err("create", cache_dir))?;
    let bytes = std::fs::read(agent).map_err(io_err("read", agent))?;
    let tmp = cache_dir.join(format!(".initramfs-{key}.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&archive(&bytes)?)?;
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

/// A newc archive: the directories the agent mounts on, and the agent as `/init`.
fn archive(agent: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(agent.len() + 4096);
    let mut ino = 1;
    for dir in ["dev", "proc", "sys", "run", "tmp", "newroot"] {
        let w = cpio::NewcBuilder::new(dir)
            .ino(ino)
            .mode(0o040_755)
            .nlink(2)
            .write(&mut out, 0);
        w.finish()?;
        ino += 1;
    }
    // /dev/console for the kernel to open as the agent's stdio before devtmpfs is mounted.
    let w = cpio::NewcBuilder::new("dev/console")
        .ino(ino)
        .mode(0o020_600)
        .rdev_major(5)
        .rdev_minor(1)
        .write(&mut out, 0);
    w.finish()?;
    ino += 1;
    let mut w = cpio::NewcBuilder::new("init")
        .ino(ino)
        .mode(0o100_755)
        .write(&mut out, agent.len() as u32);
    w.write_all(agent)?;
    w.finish()?;
    cpio::newc::trailer(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn initramfs_holds_the_agent_and_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("moat-agent");
        std::fs::write(&agent, b"\x7fELF pretend").unwrap();
        let cache = dir.path().join("cache");
        let a = initramfs(&agent, &cache).unwrap();
        let b = initramfs(&agent, &cache).unwrap();
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
        let b = initramfs(&agent, &cache).unwrap();
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
        let c = initramfs(&agent, &cache).unwrap();
        assert!(!a.exists(), "a stale archive goes");
        assert!(b.exists() && c.exists());
    }
}
