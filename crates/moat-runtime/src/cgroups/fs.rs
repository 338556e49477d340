//! The seam between cgroup logic and the kernel: every cgroup file access goes through
//! [`CgroupFs`], so the logic can be unit-tested against an in-memory fake without root.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

/// Minimal file operations the cgroup code needs. Paths are absolute host paths
/// (e.g. `/sys/fs/cgroup/pids/moat/abc/pids.max`).
///
/// `Send + Sync` so a [`super::Cgroup`] can be handed between threads.
pub trait CgroupFs: std::fmt::Debug + Send + Sync {
    /// Writes `value` to an existing control file in a single write, never creating it.
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Reads a whole control file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Creates a directory and any missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Removes one (empty) directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Attaches a cgroup device program (raw eBPF instructions) to the v2 cgroup `dir`.
    fn attach_device_program(&self, dir: &Path, insns: &[u64]) -> io::Result<()>;
}

/// The real kernel interface: plain file operations on the mounted cgroup filesystems.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFs;

impl CgroupFs for HostFs {
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // No `create`/`truncate`: control files always exist, and O_CREAT on cgroupfs would
        // turn a typo'd file name into a confusing EACCES/EPERM instead of ENOENT.
        let mut file = OpenOptions::new().write(true).open(path)?;
        // Each cgroup write is parsed as one unit by the kernel, so it must not be split.
        let written = file.write(value.as_bytes())?;
        if written != value.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {} bytes", value.len()),
            ));
        }
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn attach_device_program(&self, dir: &Path, insns: &[u64]) -> io::Result<()> {
        super::devices_bpf::attach(dir, insns)
    }
}
