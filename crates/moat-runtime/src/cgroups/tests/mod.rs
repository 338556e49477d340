#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxPids,
    LinuxResources,
};

use super::*;

mod host;
mod on_v1;
mod on_v2;

// ---------------------------------------------------------------------------------------------
// In-memory fake of the cgroup filesystem.

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<PathBuf, String>,
    dirs: BTreeSet<PathBuf>,
    /// Every successful write, in order.
    writes: Vec<(PathBuf, String)>,
    /// errnos to fail the next writes to a path with, consumed front to back.
    fail_writes: HashMap<PathBuf, Vec<i32>>,
    /// errnos to fail the next rmdirs of a path with.
    fail_rmdir: HashMap<PathBuf, Vec<i32>>,
    /// (prefix, file, content): files the "kernel" creates in every new dir under prefix.
    templates: Vec<(PathBuf, &'static str, String)>,
    /// Device programs attached: (cgroup dir, instruction count).
    device_programs: Vec<(PathBuf, usize)>,
}

#[derive(Debug, Clone, Default)]
struct FakeFs(Arc<Mutex<State>>);

fn pop(map: &mut HashMap<PathBuf, Vec<i32>>, path: &Path) -> Option<io::Error> {
    let queue = map.get_mut(path)?;
    if queue.is_empty() {
        return None;
    }
    Some(io::Error::from_raw_os_error(queue.remove(0)))
}

impl CgroupFs for FakeFs {
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        if let Some(e) = pop(&mut s.fail_writes, path) {
            return Err(e);
        }
        if !path.parent().is_some_and(|p| s.dirs.contains(p)) {
            return Err(io::ErrorKind::NotFound.into());
        }
        s.files.insert(path.to_path_buf(), value.to_string());
        s.writes.push((path.to_path_buf(), value.to_string()));
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        let s = self.0.lock().unwrap();
        s.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        let mut todo: Vec<PathBuf> = path
            .ancestors()
            .filter(|a| !s.dirs.contains(*a))
            .map(Path::to_path_buf)
            .collect();
        todo.reverse();
        for dir in todo {
            let new_files: Vec<(PathBuf, String)> = s
                .templates
                .iter()
                .filter(|(prefix, _, _)| dir.starts_with(prefix) && dir != *prefix)
                .map(|(_, file, content)| (dir.join(file), content.clone()))
                .collect();
            s.files.extend(new_files);
            s.dirs.insert(dir);
        }
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        if let Some(e) = pop(&mut s.fail_rmdir, path) {
            return Err(e);
        }
        if !s.dirs.remove(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        s.files.retain(|f, _| !f.starts_with(path));
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.0.lock().unwrap();
        s.dirs.contains(path) || s.files.contains_key(path)
    }

    fn attach_device_program(&self, dir: &Path, insns: &[u64]) -> io::Result<()> {
        self.0
            .lock()
            .unwrap()
            .device_programs
            .push((dir.to_path_buf(), insns.len()));
        Ok(())
    }
}

impl FakeFs {
    fn dir(&self, path: &str) -> &Self {
        self.create_dir_all(Path::new(path)).unwrap();
        self
    }
    fn file(&self, path: &str, content: &str) -> &Self {
        let path = Path::new(path);
        self.create_dir_all(path.parent().unwrap()).unwrap();
        let mut s = self.0.lock().unwrap();
        s.files.insert(path.to_path_buf(), content.to_string());
        self
    }
    fn template(&self, prefix: &str, file: &'static str, content: &str) -> &Self {
        let mut s = self.0.lock().unwrap();
        s.templates
            .push((PathBuf::from(prefix), file, content.to_string()));
        self
    }
    fn fail_write(&self, path: &str, errno: i32) {
        let mut s = self.0.lock().unwrap();
        s.fail_writes
            .entry(PathBuf::from(path))
            .or_default()
            .push(errno);
    }
    fn fail_rmdir(&self, path: &str, errno: i32) {
        let mut s = self.0.lock().unwrap();
        s.fail_rmdir
            .entry(PathBuf::from(path))
            .or_default()
            .push(errno);
    }
    /// Writes so far as (path, value) strings, and forgets them.
    fn take_writes(&self) -> Vec<(String, String)> {
        let mut s = self.0.lock().unwrap();
        std::mem::take(&mut s.writes)
            .into_iter()
            .map(|(p, v)| (p.display().to_string(), v))
            .collect()
    }
    fn get(&self, path: &str) -> Option<String> {
        self.read(Path::new(path)).ok()
    }
    fn has_dir(&self, path: &str) -> bool {
        self.0.lock().unwrap().dirs.contains(Path::new(path))
    }
}

fn full_resources() -> LinuxResources {
    let mut mem = LinuxMemory::default();
    mem.set_limit(Some(100 << 20))
        .set_swap(Some(200 << 20))
        .set_reservation(Some(50 << 20));
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(Some(1024))
        .set_quota(Some(50_000))
        .set_period(Some(100_000))
        .set_cpus(Some("0".to_string()))
        .set_mems(Some("0".to_string()));
    let mut pids = LinuxPids::default();
    pids.set_limit(64);
    let mut blkio = LinuxBlockIo::default();
    blkio.set_weight(Some(500));
    let mut null = LinuxDeviceCgroup::default();
    null.set_allow(true)
        .set_typ(Some(LinuxDeviceType::C))
        .set_major(Some(1))
        .set_minor(Some(3))
        .set_access(Some("rwm".to_string()));
    let mut pts = LinuxDeviceCgroup::default();
    pts.set_allow(true)
        .set_typ(Some(LinuxDeviceType::C))
        .set_major(Some(136))
        .set_access(Some("rw".to_string()));
    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_access(Some("rwm".to_string()));

    let mut res = LinuxResources::default();
    res.set_memory(Some(mem))
        .set_cpu(Some(cpu))
        .set_pids(Some(pids))
        .set_block_io(Some(blkio))
        .set_devices(Some(vec![deny_all, null, pts]));
    res
}

fn w(path: &str, value: &str) -> (String, String) {
    (path.to_string(), value.to_string())
}

// ---------------------------------------------------------------------------------------------
// mountinfo

/// This development host: v1 controllers on a tmpfs plus a near-empty cgroup2 at `unified`.
const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

/// A systemd-era pure v1 host: co-mounted controllers, optional fields, flag options.
const PURE_V1: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory
30 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid shared:14 - cgroup cgroup rw,net_cls,net_prio
31 25 0:28 / /sys/fs/cgroup/cpuset rw,nosuid shared:15 - cgroup cgroup rw,cpuset,clone_children
40 22 0:28 / /mnt/again rw,nosuid shared:15 - cgroup cgroup rw,cpuset,clone_children
";

const PURE_V2: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

fn hierarchy(mount: &str, controllers: &[&str]) -> Hierarchy {
    Hierarchy {
        mount_point: PathBuf::from(mount),
        controllers: controllers.iter().map(|c| c.to_string()).collect(),
    }
}

#[test]
fn mountinfo_hybrid_is_v1_and_ignores_unified() {
    let Layout::V1 { hierarchies } = parse_mountinfo(HYBRID).unwrap() else {
        panic!("hybrid must be driven as v1");
    };
    let names: Vec<String> = hierarchies
        .iter()
        .map(|h| h.controllers.join(","))
        .collect();
    assert_eq!(
        names,
        [
            "cpu",
            "cpuacct",
            "cpuset",
            "memory",
            "devices",
            "freezer",
            "blkio",
            "pids",
            "name=systemd"
        ]
    );
    assert_eq!(hierarchies[7], hierarchy("/sys/fs/cgroup/pids", &["pids"]));
    assert!(hierarchies
        .iter()
        .all(|h| h.mount_point != Path::new("/sys/fs/cgroup/unified")));
}

#[test]
fn mountinfo_pure_v1_strips_flags_and_duplicates() {
    let layout = parse_mountinfo(PURE_V1).unwrap();
    let Layout::V1 { hierarchies } = &layout else {
        panic!("expected v1, got {layout:?}");
    };
    assert_eq!(
        hierarchies,
        &vec![
            hierarchy("/sys/fs/cgroup/systemd", &["name=systemd"]),
            hierarchy("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]),
            hierarchy("/sys/fs/cgroup/memory", &["memory"]),
            hierarchy("/sys/fs/cgroup/net_cls,net_prio", &["net_cls", "net_prio"]),
            hierarchy("/sys/fs/cgroup/cpuset", &["cpuset"]),
        ]
    );
    assert_eq!(
        layout.hierarchy("cpuacct").unwrap().mount_point,
        Path::new("/sys/fs/cgroup/cpu,cpuacct")
    );
    assert!(layout.hierarchy("pids").is_none());
}

#[test]
fn mountinfo_pure_v2() {
    assert_eq!(
        parse_mountinfo(PURE_V2).unwrap(),
        Layout::V2 {
            root: PathBuf::from("/sys/fs/cgroup")
        }
    );
}

#[test]
fn mountinfo_v2_elsewhere_escapes_and_errors() {
    let text = "50 1 0:40 / /run/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        parse_mountinfo(text).unwrap(),
        Layout::V2 {
            root: PathBuf::from("/run/my cgroup")
        }
    );
    assert!(matches!(
        parse_mountinfo("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"),
        Err(CgroupError::NoCgroupMounts)
    ));
    let err = parse_mountinfo("22 1 8:1 / / rw ext4 /dev/sda1 rw\n").unwrap_err();
    assert!(matches!(err, CgroupError::MalformedMountinfo { .. }));
    assert!(err.to_string().contains("22 1 8:1"), "{err}");
}

#[test]
fn detect_reads_this_host() {
    // Whatever the host is, it must classify without error (CI may be v1, v2 or hybrid).
    detect().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Paths

fn hybrid() -> Layout {
    parse_mountinfo(HYBRID).unwrap()
}

fn v2() -> Layout {
    parse_mountinfo(PURE_V2).unwrap()
}

#[test]
fn path_validation() {
    for bad in ["/a/../b", "..", "/", "", "./a", "a/./b"] {
        let err = Cgroup::new(hybrid(), Path::new(bad), FakeFs::default()).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidPath { .. }),
            "{bad:?}: {err}"
        );
    }
    let cg = Cgroup::new(v2(), Path::new("moat/x"), FakeFs::default()).unwrap();
    assert_eq!(cg.dirs(), [PathBuf::from("/sys/fs/cgroup/moat/x")]);
    let cg = Cgroup::new(v2(), Path::new("//moat///x/"), FakeFs::default()).unwrap();
    assert_eq!(cg.dirs(), [PathBuf::from("/sys/fs/cgroup/moat/x")]);
    let cg = Cgroup::new(hybrid(), Path::new("/moat/x"), FakeFs::default()).unwrap();
    assert_eq!(cg.dirs().len(), 9);
    assert_eq!(cg.dirs()[0], Path::new("/sys/fs/cgroup/cpu/moat/x"));
}

#[test]
fn block_io_sums_both_formats() {
    let v1 =
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:16 Read 100\n8:0 Total 12288\nTotal 12388\n";
    assert_eq!(block_io(v1), (4196, 8192));
    let v2 = "8:0 rbytes=1000 wbytes=2000 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=5 wbytes=0\n";
    assert_eq!(block_io(v2), (1005, 2000));
}
