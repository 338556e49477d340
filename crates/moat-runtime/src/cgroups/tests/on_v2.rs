#![allow(clippy::unwrap_used)]

use super::*;

// ---------------------------------------------------------------------------------------------
// v2

const R: &str = "/sys/fs/cgroup";

fn v2_fake() -> FakeFs {
    let fs = FakeFs::default();
    fs.file(
        &format!("{R}/cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .file(&format!("{R}/cgroup.subtree_control"), "memory pids\n")
    .template(R, "cgroup.controllers", "cpuset cpu io memory pids\n")
    .template(R, "cgroup.subtree_control", "")
    .template(R, "memory.swap.max", "max")
    .template(R, "io.weight", "default 100");
    fs
}

#[test]
fn v2_create_enables_controllers_above_the_leaf() {
    let fs = v2_fake();
    let cg = Cgroup::new(v2(), Path::new("/moat/c1"), fs.clone()).unwrap();
    fs.fail_write(&format!("{R}/cgroup.subtree_control"), libc::EINVAL); // "+cpuset" refused
    cg.create().unwrap();
    assert!(fs.has_dir(&format!("{R}/moat/c1")));
    let st = format!("{R}/cgroup.subtree_control");
    let mst = format!("{R}/moat/cgroup.subtree_control");
    assert_eq!(
        fs.take_writes(),
        [
            // root: memory and pids already on; cpuset's failure doesn't stop the rest.
            w(&st, "+cpu"),
            w(&st, "+io"),
            w(&mst, "+cpuset"),
            w(&mst, "+cpu"),
            w(&mst, "+io"),
            w(&mst, "+memory"),
            w(&mst, "+pids"),
        ]
    );
}

#[test]
fn v2_apply_converts_values() {
    let fs = v2_fake();
    let cg = Cgroup::new(v2(), Path::new("/moat/c1"), fs.clone()).unwrap();
    cg.create().unwrap();
    fs.take_writes();
    cg.apply(&full_resources()).unwrap();
    let d = format!("{R}/moat/c1");
    assert_eq!(
        fs.take_writes(),
        [
            w(&format!("{d}/memory.swap.max"), "104857600"), // swap - limit
            w(&format!("{d}/memory.max"), "104857600"),
            w(&format!("{d}/memory.low"), "52428800"),
            w(&format!("{d}/cpu.weight"), "39"), // 1 + (1022 * 9999) / 262142
            w(&format!("{d}/cpu.max"), "50000 100000"),
            w(&format!("{d}/cpuset.cpus"), "0"),
            w(&format!("{d}/cpuset.mems"), "0"),
            w(&format!("{d}/pids.max"), "64"),
            w(&format!("{d}/io.weight"), "4950"), // 1 + (490 * 9999) / 990
        ]
    );
    // Device rules become one eBPF program on the container's cgroup, not file writes.
    let progs = fs.0.lock().unwrap().device_programs.clone();
    assert_eq!(progs.len(), 1);
    assert_eq!(progs[0].0, Path::new(&d));

    // BFQ takes the v1 value unconverted; unlimited values; unified last.
    fs.file(&format!("{d}/io.bfq.weight"), "100");
    let mut mem = LinuxMemory::default();
    mem.set_limit(Some(-1));
    let mut cpu = LinuxCpu::default();
    cpu.set_quota(Some(-1)).set_period(Some(20_000));
    let mut blkio = LinuxBlockIo::default();
    blkio.set_weight(Some(500));
    let mut pids = LinuxPids::default();
    pids.set_limit(-1);
    let mut res = LinuxResources::default();
    res.set_memory(Some(mem))
        .set_cpu(Some(cpu))
        .set_block_io(Some(blkio))
        .set_pids(Some(pids))
        .set_unified(Some(HashMap::from([(
            "memory.high".to_string(),
            "1000".to_string(),
        )])));
    cg.apply(&res).unwrap();
    assert_eq!(
        fs.take_writes(),
        [
            w(&format!("{d}/memory.swap.max"), "max"),
            w(&format!("{d}/memory.max"), "max"),
            w(&format!("{d}/cpu.max"), "max 20000"),
            w(&format!("{d}/pids.max"), "max"),
            w(&format!("{d}/io.bfq.weight"), "500"),
            w(&format!("{d}/memory.high"), "1000"),
        ]
    );
}

#[test]
fn v2_swap_and_unified_errors() {
    let fs = v2_fake();
    let cg = Cgroup::new(v2(), Path::new("/moat/c1"), fs.clone()).unwrap();
    cg.create().unwrap();
    let mem_res = |limit: Option<i64>, swap: Option<i64>| {
        let mut mem = LinuxMemory::default();
        mem.set_limit(limit).set_swap(swap);
        let mut res = LinuxResources::default();
        res.set_memory(Some(mem));
        res
    };
    assert!(matches!(
        cg.apply(&mem_res(None, Some(100))),
        Err(CgroupError::SwapWithoutLimit { swap: 100 })
    ));
    assert!(matches!(
        cg.apply(&mem_res(Some(200), Some(100))),
        Err(CgroupError::SwapBelowLimit { .. })
    ));
    // Without swap accounting, swap == limit (no swap) is fine, more is not.
    fs.0.lock()
        .unwrap()
        .files
        .remove(Path::new(&format!("{R}/moat/c1/memory.swap.max")));
    fs.take_writes();
    cg.apply(&mem_res(Some(200), Some(200))).unwrap();
    assert_eq!(
        fs.take_writes(),
        [w(&format!("{R}/moat/c1/memory.max"), "200")]
    );
    assert!(matches!(
        cg.apply(&mem_res(Some(200), Some(300))),
        Err(CgroupError::SwapUnsupported { swap: 300, .. })
    ));

    let mut res = LinuxResources::default();
    res.set_unified(Some(HashMap::from([(
        "../escape".to_string(),
        "1".to_string(),
    )])));
    assert!(matches!(
        cg.apply(&res),
        Err(CgroupError::InvalidUnifiedKey { .. })
    ));
}

#[test]
fn v2_freeze_waits_for_events_and_procs() {
    let fs = v2_fake();
    let cg = Cgroup::new(v2(), Path::new("/moat/c1"), fs.clone()).unwrap();
    cg.create().unwrap();
    let d = format!("{R}/moat/c1");
    fs.file(&format!("{d}/cgroup.events"), "populated 1\nfrozen 1\n");
    fs.take_writes();
    cg.freeze().unwrap();
    assert_eq!(fs.take_writes(), [w(&format!("{d}/cgroup.freeze"), "1")]);
    // The kernel never reports thawed: bounded wait, then an error naming the file.
    let err = cg.thaw().unwrap_err();
    assert!(matches!(err, CgroupError::FreezeTimeout { .. }), "{err}");
    assert!(err.to_string().contains("cgroup.events"));

    cg.add_pid(7).unwrap();
    assert_eq!(
        fs.take_writes().last(),
        Some(&w(&format!("{d}/cgroup.procs"), "7"))
    );
    assert!(cg.mount_plan().is_empty());
    cg.destroy().unwrap();
    assert!(!fs.has_dir(&d));
}

#[test]
fn conversions_match_runc() {
    assert_eq!(crate::cgroups::v2::shares_to_weight(2), 1);
    assert_eq!(crate::cgroups::v2::shares_to_weight(1024), 39);
    assert_eq!(crate::cgroups::v2::shares_to_weight(262_144), 10_000);
    assert_eq!(crate::cgroups::v2::shares_to_weight(1), 1); // clamped, no underflow
    assert_eq!(crate::cgroups::v2::shares_to_weight(u64::MAX), 10_000);
    assert_eq!(crate::cgroups::v2::blkio_to_io_weight(10), 1);
    assert_eq!(crate::cgroups::v2::blkio_to_io_weight(1000), 10_000);
    assert_eq!(crate::cgroups::v2::blkio_to_io_weight(0), 1);
}
