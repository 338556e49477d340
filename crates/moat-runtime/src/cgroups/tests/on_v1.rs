#![allow(clippy::unwrap_used)]

use super::*;

// ---------------------------------------------------------------------------------------------
// v1

/// A hybrid-host fake with the root of every hierarchy present and cpuset values at the root.
fn v1_fake() -> FakeFs {
    let fs = FakeFs::default();
    if let Layout::V1 { hierarchies } = hybrid() {
        for h in hierarchies {
            fs.dir(h.mount_point.to_str().unwrap());
        }
    }
    fs.file("/sys/fs/cgroup/cpuset/cpuset.cpus", "0-1\n")
        .file("/sys/fs/cgroup/cpuset/cpuset.mems", "0\n")
        .template("/sys/fs/cgroup/cpuset", "cpuset.cpus", "\n")
        .template("/sys/fs/cgroup/cpuset", "cpuset.mems", "\n")
        .template("/sys/fs/cgroup/memory", "memory.memsw.limit_in_bytes", "")
        .template("/sys/fs/cgroup/blkio", "blkio.weight", "");
    fs
}

fn v1_cgroup(fs: &FakeFs) -> Cgroup {
    let cg = Cgroup::new(hybrid(), Path::new("/moat/c1"), fs.clone()).unwrap();
    cg.create().unwrap();
    fs.take_writes();
    cg
}

#[test]
fn v1_create_makes_every_hierarchy_and_copies_cpuset_down() {
    let fs = v1_fake();
    let cg = Cgroup::new(hybrid(), Path::new("/moat/c1"), fs.clone()).unwrap();
    cg.create().unwrap();
    for dir in cg.dirs() {
        assert!(fs.has_dir(dir.to_str().unwrap()), "{}", dir.display());
    }
    assert_eq!(
        fs.take_writes(),
        [
            w("/sys/fs/cgroup/cpuset/moat/cpuset.cpus", "0-1"),
            w("/sys/fs/cgroup/cpuset/moat/cpuset.mems", "0"),
            w("/sys/fs/cgroup/cpuset/moat/c1/cpuset.cpus", "0-1"),
            w("/sys/fs/cgroup/cpuset/moat/c1/cpuset.mems", "0"),
        ]
    );
    // Values already set at an intermediate level are kept and inherited from there.
    fs.file("/sys/fs/cgroup/cpuset/moat/cpuset.cpus", "1\n");
    let cg2 = Cgroup::new(hybrid(), Path::new("/moat/c2"), fs.clone()).unwrap();
    cg2.create().unwrap();
    assert_eq!(
        fs.take_writes(),
        [
            w("/sys/fs/cgroup/cpuset/moat/c2/cpuset.cpus", "1"),
            w("/sys/fs/cgroup/cpuset/moat/c2/cpuset.mems", "0"),
        ]
    );
}

#[test]
fn v1_apply_writes_expected_files() {
    let fs = v1_fake();
    let cg = v1_cgroup(&fs);
    cg.apply(&full_resources()).unwrap();
    let m = "/sys/fs/cgroup/memory/moat/c1";
    let c = "/sys/fs/cgroup/cpu/moat/c1";
    let d = "/sys/fs/cgroup/devices/moat/c1";
    assert_eq!(
        fs.take_writes(),
        [
            w(&format!("{m}/memory.limit_in_bytes"), "104857600"),
            w(&format!("{m}/memory.memsw.limit_in_bytes"), "209715200"),
            w(&format!("{m}/memory.soft_limit_in_bytes"), "52428800"),
            w(&format!("{c}/cpu.shares"), "1024"),
            w(&format!("{c}/cpu.cfs_period_us"), "100000"),
            w(&format!("{c}/cpu.cfs_quota_us"), "50000"),
            w("/sys/fs/cgroup/cpuset/moat/c1/cpuset.cpus", "0"),
            w("/sys/fs/cgroup/cpuset/moat/c1/cpuset.mems", "0"),
            w("/sys/fs/cgroup/pids/moat/c1/pids.max", "64"),
            w("/sys/fs/cgroup/blkio/moat/c1/blkio.weight", "500"),
            w(&format!("{d}/devices.deny"), "a"),
            w(&format!("{d}/devices.deny"), "a *:* rwm"),
            w(&format!("{d}/devices.allow"), "c 1:3 rwm"),
            w(&format!("{d}/devices.allow"), "c 136:* rw"),
        ]
    );
}

#[test]
fn v1_memory_raise_retries_in_swap_first_order() {
    let fs = v1_fake();
    let cg = v1_cgroup(&fs);
    let m = "/sys/fs/cgroup/memory/moat/c1";
    // The kernel refuses a limit above the current memsw: EINVAL, then memsw must go first.
    fs.fail_write(&format!("{m}/memory.limit_in_bytes"), libc::EINVAL);
    let mut mem = LinuxMemory::default();
    mem.set_limit(Some(1000)).set_swap(Some(2000));
    let mut res = LinuxResources::default();
    res.set_memory(Some(mem));
    cg.apply(&res).unwrap();
    assert_eq!(
        fs.take_writes(),
        [
            w(&format!("{m}/memory.memsw.limit_in_bytes"), "2000"),
            w(&format!("{m}/memory.limit_in_bytes"), "1000"),
        ]
    );
    // Other errors are reported with the path and value.
    fs.fail_write(&format!("{m}/memory.limit_in_bytes"), libc::EBUSY);
    let err = cg.apply(&res).unwrap_err();
    assert!(err.to_string().contains("memory.limit_in_bytes"), "{err}");
    assert!(err.to_string().contains("\"1000\""), "{err}");
}

#[test]
fn v1_memory_without_swap_accounting() {
    let fs = v1_fake();
    let cg = v1_cgroup(&fs);
    let m = "/sys/fs/cgroup/memory/moat/c1";
    fs.remove_dir(Path::new(m)).unwrap();
    fs.dir(m); // recreated without memsw: no swap accounting
    assert!(fs
        .get(&format!("{m}/memory.memsw.limit_in_bytes"))
        .is_some());
    // (the template re-adds memsw; drop it explicitly)
    fs.0.lock()
        .unwrap()
        .files
        .remove(Path::new(&format!("{m}/memory.memsw.limit_in_bytes")));

    let mut res = LinuxResources::default();
    for swap in [1000, -1] {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(1000)).set_swap(Some(swap));
        res.set_memory(Some(mem));
        cg.apply(&res).unwrap();
        assert_eq!(
            fs.take_writes(),
            [w(&format!("{m}/memory.limit_in_bytes"), "1000")]
        );
    }
    let mut mem = LinuxMemory::default();
    mem.set_limit(Some(1000)).set_swap(Some(3000));
    res.set_memory(Some(mem));
    let err = cg.apply(&res).unwrap_err();
    assert!(
        matches!(err, CgroupError::SwapUnsupported { swap: 3000, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("memory.memsw.limit_in_bytes"));

    let mut mem = LinuxMemory::default();
    mem.set_limit(Some(1000)).set_swap(Some(500));
    res.set_memory(Some(mem));
    assert!(matches!(
        cg.apply(&res),
        Err(CgroupError::SwapBelowLimit { .. })
    ));
}

#[test]
fn v1_blkio_falls_back_to_bfq_and_pids_unlimited() {
    let fs = v1_fake();
    let cg = v1_cgroup(&fs);
    let b = "/sys/fs/cgroup/blkio/moat/c1";
    fs.0.lock()
        .unwrap()
        .files
        .remove(Path::new(&format!("{b}/blkio.weight")));
    let mut blkio = LinuxBlockIo::default();
    blkio.set_weight(Some(300));
    let mut res = LinuxResources::default();
    res.set_block_io(Some(blkio));
    let err = cg.apply(&res).unwrap_err();
    assert!(matches!(
        err,
        CgroupError::NoBlkioWeightFile { weight: 300, .. }
    ));

    fs.file(&format!("{b}/blkio.bfq.weight"), "100");
    let mut pids = LinuxPids::default();
    pids.set_limit(0);
    res.set_pids(Some(pids));
    cg.apply(&res).unwrap();
    assert_eq!(
        fs.take_writes(),
        [
            w("/sys/fs/cgroup/pids/moat/c1/pids.max", "max"),
            w(&format!("{b}/blkio.bfq.weight"), "300"),
        ]
    );
}

#[test]
fn v1_missing_controller_and_unified_are_errors() {
    let layout = parse_mountinfo(PURE_V1).unwrap(); // no pids hierarchy
    let cg = Cgroup::new(layout, Path::new("/x"), FakeFs::default()).unwrap();
    let mut res = LinuxResources::default();
    res.set_pids(Some(LinuxPids::default()));
    let err = cg.apply(&res).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::MissingController {
                controller: "pids",
                ..
            }
        ),
        "{err}"
    );
    let mut res = LinuxResources::default();
    res.set_unified(Some(HashMap::from([(
        "memory.high".to_string(),
        "1".to_string(),
    )])));
    assert!(matches!(
        cg.apply(&res),
        Err(CgroupError::UnifiedOnV1 { .. })
    ));
}

#[test]
fn v1_add_pid_pids_freeze_and_mount_plan() {
    let fs = v1_fake();
    let cg = v1_cgroup(&fs);
    cg.add_pid(42).unwrap();
    let writes = fs.take_writes();
    assert_eq!(writes.len(), 9);
    assert!(writes
        .iter()
        .all(|(p, v)| p.ends_with("/moat/c1/cgroup.procs") && v == "42"));
    assert!(matches!(
        cg.add_pid(0),
        Err(CgroupError::InvalidPid { pid: 0 })
    ));

    fs.file("/sys/fs/cgroup/pids/moat/c1/cgroup.procs", "42\n43\n");
    assert_eq!(cg.pids().unwrap(), [42, 43]);
    fs.file("/sys/fs/cgroup/pids/moat/c1/cgroup.procs", "42\nxyz\n");
    assert!(matches!(cg.pids(), Err(CgroupError::ParsePid { .. })));

    cg.freeze().unwrap();
    cg.thaw().unwrap();
    assert_eq!(
        fs.take_writes(),
        [
            w("/sys/fs/cgroup/freezer/moat/c1/freezer.state", "FROZEN"),
            w("/sys/fs/cgroup/freezer/moat/c1/freezer.state", "THAWED"),
        ]
    );

    let plan = cg.mount_plan();
    assert_eq!(plan.len(), 9);
    assert_eq!(
        plan[8],
        V1Mount {
            name: "systemd".to_string(),
            options: "name=systemd".to_string(),
            host_dir: PathBuf::from("/sys/fs/cgroup/systemd/moat/c1"),
        }
    );
}

#[test]
fn device_rule_format_and_defaults() {
    let rules = default_device_rules();
    let formatted: Vec<String> = rules.iter().map(crate::cgroups::v1::device_rule).collect();
    assert_eq!(formatted[0], "c *:* m");
    assert_eq!(formatted[1], "b *:* m");
    assert!(formatted.contains(&"c 1:3 rwm".to_string()));
    assert!(formatted.contains(&"c 136:* rwm".to_string()));
    assert!(rules.iter().all(|r| r.allow()));
    assert_eq!(
        crate::cgroups::v1::device_rule(&LinuxDeviceCgroup::default()),
        "a *:* rwm"
    );
}

// ---------------------------------------------------------------------------------------------
// destroy

#[test]
fn destroy_tolerates_missing_and_retries_busy() {
    let fs = v1_fake();
    // Never created: every rmdir hits ENOENT, which is success.
    let cg = Cgroup::new(hybrid(), Path::new("/moat/gone"), fs.clone()).unwrap();
    cg.destroy().unwrap();

    let cg = v1_cgroup(&fs);
    fs.fail_rmdir("/sys/fs/cgroup/pids/moat/c1", libc::EBUSY);
    fs.fail_rmdir("/sys/fs/cgroup/pids/moat/c1", libc::EBUSY);
    cg.destroy().unwrap();
    for dir in cg.dirs() {
        assert!(!fs.has_dir(dir.to_str().unwrap()));
    }
    // Only the leaf goes: the shared parent stays.
    assert!(fs.has_dir("/sys/fs/cgroup/pids/moat"));
    cg.destroy().unwrap();

    // Persistent EBUSY and other errors are reported, after trying every hierarchy.
    let cg = v1_cgroup(&fs);
    for _ in 0..DESTROY_ATTEMPTS {
        fs.fail_rmdir("/sys/fs/cgroup/memory/moat/c1", libc::EBUSY);
    }
    fs.fail_rmdir("/sys/fs/cgroup/pids/moat/c1", libc::EACCES);
    let err = cg.destroy().unwrap_err();
    assert!(
        err.to_string().contains("/sys/fs/cgroup/memory/moat/c1"),
        "{err}"
    );
    assert!(!fs.has_dir("/sys/fs/cgroup/cpu/moat/c1"));
    assert!(fs.has_dir("/sys/fs/cgroup/pids/moat/c1"));
}
