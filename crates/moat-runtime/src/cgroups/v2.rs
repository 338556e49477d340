//! cgroup v2: a single directory, limits translated from OCI's v1-flavoured values.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::{nonzero, pids_value, wait_for, Cgroup, CgroupError};

pub(super) fn create(cg: &Cgroup, root: &Path) -> Result<(), CgroupError> {
    let mut level = root.to_path_buf();
    for component in cg.rel.components() {
        // A controller's files only appear in a child once every ancestor delegates it, so each
        // level above the leaf gets its controllers enabled before descending. The leaf itself
        // is left alone: enabling controllers there would forbid putting processes in it.
        enable_controllers(cg, &level)?;
        level = level.join(component);
        if !cg.exists(&level) {
            cg.create_dir_all(&level)?;
        }
    }
    Ok(())
}

/// Enables in `dir/cgroup.subtree_control` every controller `dir` has available.
///
/// One write per controller, and failures are only logged: a single refusal (e.g. `cpu` while a
/// realtime task sits in the root, or EBUSY in a non-root cgroup that holds processes) must not
/// stop the others. A limit that later needs a missing controller fails with the file's path.
fn enable_controllers(cg: &Cgroup, dir: &Path) -> Result<(), CgroupError> {
    let available = cg.read(&dir.join("cgroup.controllers"))?;
    let control = dir.join("cgroup.subtree_control");
    // Unreadable means we just try everything; the writes report any real problem.
    let enabled = cg.fs.read(&control).unwrap_or_default();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    for controller in available.split_whitespace() {
        if enabled.contains(&controller) {
            continue;
        }
        let value = format!("+{controller}");
        if let Err(e) = cg.fs.write(&control, &value) {
            log::warn!(
                "cgroup: cannot enable {controller} in {}: {e}",
                control.display()
            );
        }
    }
    Ok(())
}

/// Applies `res` to the cgroup directory `dir`.
///
/// Device rules are skipped: v2 has no devices.* files, device access is controlled by an eBPF
/// program attached to the cgroup, which moat does not install (yet).
pub(super) fn apply(cg: &Cgroup, dir: &Path, res: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(mem) = res.memory() {
        memory(cg, dir, mem)?;
    }
    if let Some(cpu) = res.cpu() {
        cpu_bandwidth(cg, dir, cpu)?;
        if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
            cg.write(&dir.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
            cg.write(&dir.join("cpuset.mems"), mems)?;
        }
    }
    if let Some(pids) = res.pids() {
        cg.write(&dir.join("pids.max"), &pids_value(pids.limit()))?;
    }
    if let Some(blkio) = res.block_io() {
        io_weight(cg, dir, blkio)?;
    }
    if let Some(rules) = res.devices().as_ref().filter(|d| !d.is_empty()) {
        cg.attach_devices(dir, rules)?;
    }
    if let Some(unified) = res.unified() {
        // Last, so explicit unified values win over the translated ones; sorted for a
        // deterministic order.
        let mut entries: Vec<(&String, &String)> = unified.iter().collect();
        entries.sort();
        for (key, value) in entries {
            if key.is_empty() || key.contains('/') || key == "." || key == ".." {
                return Err(CgroupError::InvalidUnifiedKey { key: key.clone() });
            }
            cg.write(&dir.join(key), value)?;
        }
    }
    Ok(())
}

/// `-1` (OCI "unlimited") is spelled `max` by v2.
fn limit_value(v: i64) -> String {
    if v == -1 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

fn memory(cg: &Cgroup, dir: &Path, mem: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = nonzero(mem.limit());
    let reservation = nonzero(mem.reservation());
    let swap = swap_max(limit, nonzero(mem.swap()))?;

    if let Some(swap_max) = swap {
        let path = dir.join("memory.swap.max");
        if cg.exists(&path) {
            cg.write(&path, &limit_value(swap_max))?;
        } else if swap_max != 0 && swap_max != -1 {
            // No swap accounting: "no swap" and "unlimited" already hold, anything else can't.
            return Err(CgroupError::SwapUnsupported {
                path,
                swap: mem.swap().unwrap_or(swap_max),
            });
        }
    }
    if let Some(l) = limit {
        cg.write(&dir.join("memory.max"), &limit_value(l))?;
    }
    if let Some(r) = reservation {
        cg.write(&dir.join("memory.low"), &limit_value(r))?;
    }
    Ok(())
}

/// Translates OCI's swap (memory+swap, v1 semantics) into v2's `memory.swap.max` (swap only),
/// following runc: `-1` stays unlimited, an unlimited memory limit with no swap value means
/// unlimited swap too, otherwise `swap - limit`.
fn swap_max(limit: Option<i64>, swap: Option<i64>) -> Result<Option<i64>, CgroupError> {
    match (limit, swap) {
        (Some(-1), None) => Ok(Some(-1)),
        (_, None) => Ok(None),
        (_, Some(-1)) => Ok(Some(-1)),
        (None | Some(-1), Some(s)) => Err(CgroupError::SwapWithoutLimit { swap: s }),
        (Some(l), Some(s)) if s < l => Err(CgroupError::SwapBelowLimit { swap: s, limit: l }),
        (Some(l), Some(s)) => Ok(Some(s - l)),
    }
}

/// runc's mapping of v1 cpu.shares (2..=262144, default 1024) onto v2 cpu.weight (1..=10000).
pub(super) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// runc's mapping of v1 blkio.weight (10..=1000) onto v2 io.weight (1..=10000).
pub(super) fn blkio_to_io_weight(weight: u16) -> u64 {
    let weight = u64::from(weight.clamp(10, 1000));
    1 + ((weight - 10) * 9999) / 990
}

fn cpu_bandwidth(cg: &Cgroup, dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(shares) = cpu.shares().filter(|&s| s != 0) {
        cg.write(
            &dir.join("cpu.weight"),
            &shares_to_weight(shares).to_string(),
        )?;
    }
    let quota = nonzero(cpu.quota());
    let period = cpu.period().filter(|&p| p != 0);
    if quota.is_none() && period.is_none() {
        return Ok(());
    }
    // cpu.max is "$QUOTA $PERIOD" in one write (so no ordering problem as on v1); a missing
    // or negative quota means unlimited, a missing period keeps the current one.
    let mut value = match quota {
        Some(q) if q > 0 => q.to_string(),
        _ => "max".to_string(),
    };
    if let Some(p) = period {
        value.push_str(&format!(" {p}"));
    }
    cg.write(&dir.join("cpu.max"), &value)
}

fn io_weight(cg: &Cgroup, dir: &Path, blkio: &LinuxBlockIo) -> Result<(), CgroupError> {
    let Some(weight) = blkio.weight().filter(|&w| w != 0) else {
        return Ok(());
    };
    // Like runc: BFQ's knob takes the v1 range as is; otherwise convert for io.weight.
    let bfq = dir.join("io.bfq.weight");
    if cg.exists(&bfq) {
        cg.write(&bfq, &weight.to_string())
    } else {
        let path = dir.join("io.weight");
        if !cg.exists(&path) {
            return Err(CgroupError::NoBlkioWeightFile {
                path,
                fallback: bfq,
                weight,
            });
        }
        cg.write(&path, &blkio_to_io_weight(weight).to_string())
    }
}

/// Whether cgroup.events reports the cgroup frozen.
pub(super) fn frozen(cg: &Cgroup, dir: &Path) -> bool {
    cg.read(&dir.join("cgroup.events")).is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_once(' ') == Some(("frozen", "1")))
    })
}

pub(super) fn set_freeze(cg: &Cgroup, dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    cg.write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
    // The freeze completes asynchronously; cgroup.events reports when it has.
    let events = dir.join("cgroup.events");
    if !cg.exists(&events) {
        return Ok(());
    }
    let want = if frozen { "1" } else { "0" };
    wait_for(cg, &events, |text| {
        text.lines()
            .any(|l| l.split_once(' ') == Some(("frozen", want)))
    })
}
