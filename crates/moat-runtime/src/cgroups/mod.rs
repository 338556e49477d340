//! Container cgroups: create the cgroup, apply the OCI resource limits, move processes in,
//! freeze/thaw, and remove it again.
//!
//! Both cgroup v1 (including *hybrid* hosts, which are driven as v1) and the unified v2 hierarchy
//! are supported; see [`parse_mountinfo`] for how the layout is chosen. All kernel access goes
//! through [`CgroupFs`] so the logic is testable without root.
//!
//! The cgroup path is OCI's `linux.cgroupsPath` and is always taken relative to each hierarchy's
//! root (not to this process's own cgroup, which may be nested), matching runc for absolute paths.

pub mod devices_bpf;
mod fs;
mod layout;
mod v1;
mod v2;

#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

pub use fs::{CgroupFs, HostFs};
pub use layout::{detect, parse_mountinfo, Hierarchy, Layout};

/// How many times `rmdir` is retried on EBUSY: a just-killed container's processes may take a
/// moment to leave the cgroup.
const DESTROY_ATTEMPTS: u32 = 5;
/// How many times the freezer state is polled before giving up on a freeze.
const FREEZE_POLLS: u32 = 100;
/// Pause between retries/polls.
const RETRY_DELAY: Duration = Duration::from_millis(10);

/// Everything that can go wrong while managing a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// cannot read `path`
    #[error("cannot read {path}: {source}")]
    Read {
        /// File that could not be read.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// cannot write `value` to `path`
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// Control file that rejected the write.
        path: PathBuf,
        /// Value that was being written.
        value: String,
        /// Underlying error.
        source: io::Error,
    },
    /// cannot create cgroup directory `path`
    #[error("cannot create cgroup directory {path}: {source}")]
    CreateDir {
        /// Directory that could not be created.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// cannot remove cgroup directory `path`
    #[error("cannot remove cgroup directory {path}: {source}")]
    RemoveDir {
        /// Directory that could not be removed.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// malformed mountinfo line `line`
    #[error("malformed mountinfo line {line:?}")]
    MalformedMountinfo {
        /// The offending line.
        line: String,
    },
    /// no cgroup or cgroup2 filesystem is mounted
    #[error("no cgroup or cgroup2 filesystem is mounted (checked mountinfo)")]
    NoCgroupMounts,
    /// invalid cgroup path `path`: `reason`
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath {
        /// The rejected path.
        path: PathBuf,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// no mounted v1 hierarchy has the `controller` controller, needed for `what`
    #[error("no mounted cgroup v1 hierarchy has the {controller} controller, needed for {what}")]
    MissingController {
        /// Controller that is not mounted.
        controller: &'static str,
        /// What needed it.
        what: &'static str,
    },
    /// memory+swap limit `swap` requested but `path` is absent (no swap accounting)
    #[error(
        "memory+swap limit {swap} requested but {path} is absent (kernel has no swap accounting)"
    )]
    SwapUnsupported {
        /// The swap control file that does not exist.
        path: PathBuf,
        /// Requested OCI memory+swap limit.
        swap: i64,
    },
    /// memory+swap limit `swap` is below memory limit `limit`
    #[error("memory+swap limit {swap} is below memory limit {limit}")]
    SwapBelowLimit {
        /// Requested OCI memory+swap limit.
        swap: i64,
        /// Requested memory limit.
        limit: i64,
    },
    /// memory+swap limit `swap` needs a memory limit on cgroup v2
    #[error("memory+swap limit {swap} needs a memory limit on cgroup v2")]
    SwapWithoutLimit {
        /// Requested OCI memory+swap limit.
        swap: i64,
    },
    /// neither `path` nor `fallback` exists to set block-io weight `weight`
    #[error("neither {path} nor {fallback} exists to set block-io weight {weight}")]
    NoBlkioWeightFile {
        /// Preferred weight file.
        path: PathBuf,
        /// Fallback weight file.
        fallback: PathBuf,
        /// Requested weight.
        weight: u16,
    },
    /// unified resource key `key` is not a plain control-file name
    #[error("unified resource key {key:?} is not a plain control-file name")]
    InvalidUnifiedKey {
        /// The rejected key.
        key: String,
    },
    /// unified resources `keys` can only be applied on cgroup v2
    #[error("unified resources {keys} can only be applied on cgroup v2")]
    UnifiedOnV1 {
        /// The requested keys, comma-separated.
        keys: String,
    },
    /// invalid pid `line` in `path`
    #[error("invalid pid {line:?} in {path}")]
    ParsePid {
        /// The cgroup.procs file.
        path: PathBuf,
        /// The line that is not a pid.
        line: String,
    },
    /// refusing to add pid `pid` to a cgroup
    #[error("refusing to add pid {pid} to a cgroup: pids must be positive")]
    InvalidPid {
        /// The rejected pid.
        pid: i32,
    },
    /// attaching the device program failed
    #[error("cannot attach the device filter (eBPF) to cgroup {path}: {source}")]
    DeviceProgram {
        /// The cgroup directory.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// cgroup `path` is still `state` after waiting for it to freeze
    #[error("cgroup {path} is still {state:?} after waiting for it to freeze")]
    FreezeTimeout {
        /// The freezer state (v1) or events (v2) file.
        path: PathBuf,
        /// Last state read.
        state: String,
    },
}

/// Moves the calling (single-threaded) process into the cgroup whose
/// [`Cgroup::self_join_files`] are `files`. Used right after fork, where no `Cgroup` (and no
/// allocation-heavy work) is wanted.
pub fn join_self(files: &[PathBuf]) -> Result<(), CgroupError> {
    for f in files {
        std::fs::write(f, "0").map_err(|source| CgroupError::Write {
            path: f.clone(),
            value: "0".into(),
            source,
        })?;
    }
    Ok(())
}

/// A cgroup v1 hierarchy to mount inside the container (see [`Cgroup::mount_plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// Basename of the host mount point, e.g. `cpu,cpuacct` or `systemd`: the directory to use
    /// under the container's `/sys/fs/cgroup`.
    pub name: String,
    /// Controllers joined by `,`, e.g. `cpu,cpuacct` or `name=systemd`: the mount options.
    pub options: String,
    /// This cgroup's directory in that hierarchy on the host (for bind-mounting).
    pub host_dir: PathBuf,
}

/// One container's cgroup, identified by its path relative to the hierarchy root(s).
#[derive(Debug)]
pub struct Cgroup {
    layout: Layout,
    /// The cgroup path without its leading `/`, e.g. `moat/abc`; never empty, never has `..`.
    rel: PathBuf,
    fs: Box<dyn CgroupFs>,
}

impl Cgroup {
    /// Prepares (without touching the kernel) the cgroup at `path` under `layout`.
    ///
    /// `path` is an OCI `cgroupsPath` such as `/moat/abc`; a relative path is taken under the
    /// root too. It must name something below the root and must not contain `..` or `.`, which
    /// could escape the cgroup filesystem.
    pub fn new(
        layout: Layout,
        path: &Path,
        fs: impl CgroupFs + 'static,
    ) -> Result<Self, CgroupError> {
        let invalid = |reason| CgroupError::InvalidPath {
            path: path.to_path_buf(),
            reason,
        };
        // Checked on the raw bytes: `Path::components` silently drops inner `.` components,
        // and a cgroupsPath that needs normalising is more likely a bug than intent.
        let mut rel = PathBuf::new();
        for part in path.as_os_str().as_bytes().split(|&b| b == b'/') {
            match part {
                b"" => {}
                b".." => return Err(invalid("contains \"..\"")),
                b"." => return Err(invalid("contains \".\"")),
                name => rel.push(OsStr::from_bytes(name)),
            }
        }
        if rel.as_os_str().is_empty() {
            return Err(invalid("names the root cgroup"));
        }
        Ok(Cgroup {
            layout,
            rel,
            fs: Box::new(fs),
        })
    }

    /// The layout this cgroup lives in.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// This cgroup's host directories: one per v1 hierarchy, or the single v2 directory.
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V1 { hierarchies } => hierarchies
                .iter()
                .map(|h| h.mount_point.join(&self.rel))
                .collect(),
            Layout::V2 { root } => vec![root.join(&self.rel)],
        }
    }

    /// Creates the cgroup directory (in every hierarchy on v1) and prepares its ancestors:
    /// cpuset values are copied down on v1, controllers are enabled in the ancestors'
    /// `cgroup.subtree_control` on v2.
    pub fn create(&self) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1 { hierarchies } => v1::create(self, hierarchies),
            Layout::V2 { root } => v2::create(self, root),
        }
    }

    /// Applies the OCI resource limits in `res`; unset values are left alone.
    ///
    /// Hugepage, network, rdma and per-device block-io limits are not implemented. On v2,
    /// device rules are skipped: they need an eBPF program rather than control files.
    pub fn apply(&self, res: &LinuxResources) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1 { .. } => v1::apply(self, res),
            Layout::V2 { root } => v2::apply(self, &root.join(&self.rel), res),
        }
    }

    /// Moves process `pid` (and, via `cgroup.procs`, its whole thread group) into the cgroup.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            // 0 would mean "the writing process" to the kernel: never what a caller means here.
            return Err(CgroupError::InvalidPid { pid });
        }
        let value = pid.to_string();
        for dir in self.dirs() {
            self.write(&dir.join("cgroup.procs"), &value)?;
        }
        Ok(())
    }

    /// The files a single-threaded process writes `0` into to move itself into this cgroup
    /// (see [`join_self`]). On v1 these are the `tasks` files: the kernel moves the writing
    /// thread without taking the global threadgroup lock for writing, whose RCU grace period
    /// made a `cgroup.procs` write from the parent cost up to ~20 ms on this kind of host (crun
    /// and runc pay it on every start). For a single-threaded process the thread is the process.
    /// On v2 it is `cgroup.procs`.
    pub fn self_join_files(&self) -> Vec<PathBuf> {
        let file = match self.layout {
            Layout::V1 { .. } => "tasks",
            Layout::V2 { .. } => "cgroup.procs",
        };
        self.dirs().into_iter().map(|d| d.join(file)).collect()
    }

    /// The processes currently in the cgroup (from the pids hierarchy on v1, or the first one
    /// when pids is not mounted).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let dir = match &self.layout {
            Layout::V1 { hierarchies } => {
                let h = self
                    .layout
                    .hierarchy("pids")
                    .or_else(|| hierarchies.first())
                    .ok_or(CgroupError::NoCgroupMounts)?;
                h.mount_point.join(&self.rel)
            }
            Layout::V2 { root } => root.join(&self.rel),
        };
        let path = dir.join("cgroup.procs");
        let text = self.read(&path)?;
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.parse::<i32>().map_err(|_| CgroupError::ParsePid {
                    path: path.clone(),
                    line: l.to_string(),
                })
            })
            .collect()
    }

    /// Freezes every process in the cgroup and waits until the kernel reports it frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1 { .. } => v1::set_freezer(self, true),
            Layout::V2 { root } => v2::set_freeze(self, &root.join(&self.rel), true),
        }
    }

    /// Resource usage now: CPU time (ns), memory in use and its limit (bytes; `u64::MAX` when
    /// unlimited), process count. Missing files read as 0.
    pub fn usage(&self) -> Usage {
        let num = |p: PathBuf| -> Option<u64> { self.read(&p).ok()?.trim().parse().ok() };
        match &self.layout {
            Layout::V1 { .. } => {
                let file = |ctl: &str, f: &str| {
                    self.layout
                        .hierarchy(ctl)
                        .map(|h| h.mount_point.join(&self.rel).join(f))
                };
                let (block_read, block_write) = file("blkio", "blkio.throttle.io_service_bytes")
                    .and_then(|p| self.read(&p).ok())
                    .map(|t| block_io(&t))
                    .unwrap_or((0, 0));
                Usage {
                    block_read,
                    block_write,
                    cpu_ns: file("cpuacct", "cpuacct.usage").and_then(num).unwrap_or(0),
                    memory: file("memory", "memory.usage_in_bytes")
                        .and_then(num)
                        .unwrap_or(0),
                    memory_limit: file("memory", "memory.limit_in_bytes")
                        .and_then(num)
                        .unwrap_or(u64::MAX),
                    pids: file("pids", "pids.current").and_then(num).unwrap_or(0),
                }
            }
            Layout::V2 { root } => {
                let dir = root.join(&self.rel);
                let cpu_us = self
                    .read(&dir.join("cpu.stat"))
                    .ok()
                    .and_then(|t| {
                        t.lines()
                            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                    })
                    .unwrap_or(0);
                let (block_read, block_write) = self
                    .read(&dir.join("io.stat"))
                    .map(|t| block_io(&t))
                    .unwrap_or((0, 0));
                Usage {
                    block_read,
                    block_write,
                    cpu_ns: cpu_us * 1000,
                    memory: num(dir.join("memory.current")).unwrap_or(0),
                    memory_limit: num(dir.join("memory.max")).unwrap_or(u64::MAX),
                    pids: num(dir.join("pids.current")).unwrap_or(0),
                }
            }
        }
    }

    /// Whether the cgroup is frozen (paused).
    pub fn is_frozen(&self) -> bool {
        match &self.layout {
            Layout::V1 { .. } => v1::frozen(self),
            Layout::V2 { root } => v2::frozen(self, &root.join(&self.rel)),
        }
    }

    /// Thaws a frozen cgroup.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1 { .. } => v1::set_freezer(self, false),
            Layout::V2 { root } => v2::set_freeze(self, &root.join(&self.rel), false),
        }
    }

    /// Removes the cgroup's leaf directory in every hierarchy. Missing directories are fine
    /// (destroy is idempotent); EBUSY is retried briefly since exiting processes may linger.
    /// Parents are left alone: they may be shared with other containers.
    ///
    /// Every directory is attempted; the first error is returned.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for dir in self.dirs() {
            if let Err(e) = self.remove_dir_retrying(&dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// For each v1 hierarchy, what the container init needs to mount it inside the container.
    /// Empty on v2, where the init mounts a fresh cgroup2 filesystem instead.
    pub fn mount_plan(&self) -> Vec<V1Mount> {
        let Layout::V1 { hierarchies } = &self.layout else {
            return Vec::new();
        };
        hierarchies
            .iter()
            .map(|h| V1Mount {
                name: h
                    .mount_point
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| h.controllers.join(",")),
                options: h.controllers.join(","),
                host_dir: h.mount_point.join(&self.rel),
            })
            .collect()
    }

    fn remove_dir_retrying(&self, dir: &Path) -> Result<(), CgroupError> {
        let mut attempt = 1;
        loop {
            match self.fs.remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < DESTROY_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(RETRY_DELAY);
                }
                Err(source) => {
                    return Err(CgroupError::RemoveDir {
                        path: dir.to_path_buf(),
                        source,
                    })
                }
            }
        }
    }

    /// Attaches the device program for `rules` to the v2 directory `dir`.
    fn attach_devices(&self, dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
        let insns = devices_bpf::program(rules);
        self.fs
            .attach_device_program(dir, &insns)
            .map_err(|source| CgroupError::DeviceProgram {
                path: dir.to_path_buf(),
                source,
            })
    }

    fn write(&self, path: &Path, value: &str) -> Result<(), CgroupError> {
        log::debug!("cgroup: {} <- {value:?}", path.display());
        self.fs
            .write(path, value)
            .map_err(|source| CgroupError::Write {
                path: path.to_path_buf(),
                value: value.to_string(),
                source,
            })
    }

    fn read(&self, path: &Path) -> Result<String, CgroupError> {
        self.fs.read(path).map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    fn create_dir_all(&self, path: &Path) -> Result<(), CgroupError> {
        self.fs
            .create_dir_all(path)
            .map_err(|source| CgroupError::CreateDir {
                path: path.to_path_buf(),
                source,
            })
    }

    fn exists(&self, path: &Path) -> bool {
        self.fs.exists(path)
    }
}

/// Polls `path` until `done` accepts its contents, for freezer transitions that the kernel
/// completes asynchronously.
fn wait_for(cg: &Cgroup, path: &Path, done: impl Fn(&str) -> bool) -> Result<(), CgroupError> {
    let mut last = String::new();
    for _ in 0..FREEZE_POLLS {
        last = cg.read(path)?;
        if done(&last) {
            return Ok(());
        }
        std::thread::sleep(RETRY_DELAY);
    }
    Err(CgroupError::FreezeTimeout {
        path: path.to_path_buf(),
        state: last.trim().to_string(),
    })
}

/// A cgroup's resource usage at one moment ([`Cgroup::usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// CPU time used, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, bytes.
    pub memory: u64,
    /// Memory limit, bytes (`u64::MAX`: none).
    pub memory_limit: u64,
    /// Processes.
    pub pids: u64,
    /// Bytes read from block devices.
    pub block_read: u64,
    /// Bytes written to block devices.
    pub block_write: u64,
}

/// Sums the read and write bytes of cgroup v1's `blkio.throttle.io_service_bytes`
/// (`MAJ:MIN Read N` lines) or v2's `io.stat` (`MAJ:MIN rbytes=N wbytes=N ...`).
fn block_io(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let _dev = f.next();
        match (f.next(), f.next()) {
            (Some("Read"), Some(n)) => r += n.parse::<u64>().unwrap_or(0),
            (Some("Write"), Some(n)) => w += n.parse::<u64>().unwrap_or(0),
            _ => {
                for kv in line.split_whitespace() {
                    match kv.split_once('=') {
                        Some(("rbytes", n)) => r += n.parse::<u64>().unwrap_or(0),
                        Some(("wbytes", n)) => w += n.parse::<u64>().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        }
    }
    (r, w)
}

/// The device rules every container needs (runc's defaults): `mknod` of any device, and
/// read/write/mknod of `/dev/{null,zero,full,random,urandom,tty,ptmx}` and `/dev/pts/*`.
///
/// [`Cgroup::apply`] writes only the spec's rules after denying everything, so a caller that
/// builds the spec itself should append these (spec rules are applied in order, so append them
/// after a leading "deny all").
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    let rule = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true)
            .set_typ(Some(typ))
            .set_major(major)
            .set_minor(minor)
            .set_access(Some(access.to_string()));
        r
    };
    vec![
        rule(C, None, None, "m"),
        rule(B, None, None, "m"),
        rule(C, Some(1), Some(3), "rwm"), // /dev/null
        rule(C, Some(1), Some(8), "rwm"), // /dev/random
        rule(C, Some(1), Some(7), "rwm"), // /dev/full
        rule(C, Some(5), Some(0), "rwm"), // /dev/tty
        rule(C, Some(1), Some(5), "rwm"), // /dev/zero
        rule(C, Some(1), Some(9), "rwm"), // /dev/urandom
        rule(C, Some(136), None, "rwm"),  // /dev/pts/*
        rule(C, Some(5), Some(2), "rwm"), // /dev/ptmx
    ]
}

/// OCI leaves "unset" ambiguous for some numeric limits; like runc, 0 means "don't touch"
/// (a literal 0 memory limit would make the container unusable anyway).
fn nonzero(v: Option<i64>) -> Option<i64> {
    v.filter(|&v| v != 0)
}

/// Formats a pids limit: the kernel spells "unlimited" as `max`, OCI as any value <= 0.
fn pids_value(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}
