//! cgroup v1 (and hybrid hosts): one directory per mounted hierarchy.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources,
};

use super::{nonzero, pids_value, wait_for, Cgroup, CgroupError, Hierarchy};

/// Files a new cpuset cgroup starts with empty; tasks can't be attached (ENOSPC) until set.
const CPUSET_FILES: [&str; 2] = ["cpuset.cpus", "cpuset.mems"];

pub(super) fn create(cg: &Cgroup, hierarchies: &[Hierarchy]) -> Result<(), CgroupError> {
    for h in hierarchies {
        if h.has("cpuset") {
            create_cpuset(cg, h)?;
        } else {
            cg.create_dir_all(&h.mount_point.join(&cg.rel))?;
        }
    }
    Ok(())
}

/// Creates the cpuset directory one level at a time, filling each level's empty cpus/mems from
/// its parent. Existing levels are checked too: an earlier run or another tool may have left an
/// intermediate directory (e.g. `/moat`) with empty values, which would block every child.
fn create_cpuset(cg: &Cgroup, h: &Hierarchy) -> Result<(), CgroupError> {
    let mut parent = h.mount_point.clone();
    for component in cg.rel.components() {
        let dir = parent.join(component);
        if !cg.exists(&dir) {
            cg.create_dir_all(&dir)?;
        }
        for file in CPUSET_FILES {
            let own = cg.read(&dir.join(file))?;
            if !own.trim().is_empty() {
                continue;
            }
            let inherited = cg.read(&parent.join(file))?;
            let inherited = inherited.trim();
            if !inherited.is_empty() {
                cg.write(&dir.join(file), inherited)?;
            }
        }
        parent = dir;
    }
    Ok(())
}

pub(super) fn apply(cg: &Cgroup, res: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(unified) = res.unified().as_ref().filter(|u| !u.is_empty()) {
        let mut keys: Vec<&str> = unified.keys().map(String::as_str).collect();
        keys.sort_unstable();
        return Err(CgroupError::UnifiedOnV1 {
            keys: keys.join(","),
        });
    }
    if let Some(mem) = res.memory() {
        memory(cg, mem)?;
    }
    if let Some(cpu) = res.cpu() {
        cpu_bandwidth(cg, cpu)?;
        cpuset(cg, cpu)?;
    }
    if let Some(pids) = res.pids() {
        let dir = dir(cg, "pids", "a pids limit")?;
        cg.write(&dir.join("pids.max"), &pids_value(pids.limit()))?;
    }
    if let Some(blkio) = res.block_io() {
        block_io(cg, blkio)?;
    }
    if let Some(rules) = res.devices() {
        devices(cg, rules)?;
    }
    Ok(())
}

/// This cgroup's directory in the hierarchy carrying `controller`.
fn dir(cg: &Cgroup, controller: &'static str, what: &'static str) -> Result<PathBuf, CgroupError> {
    cg.layout
        .hierarchy(controller)
        .map(|h| h.mount_point.join(&cg.rel))
        .ok_or(CgroupError::MissingController { controller, what })
}

fn memory(cg: &Cgroup, mem: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = nonzero(mem.limit());
    let swap = nonzero(mem.swap());
    let reservation = nonzero(mem.reservation());
    if limit.is_none() && swap.is_none() && reservation.is_none() {
        return Ok(());
    }
    let dir = dir(cg, "memory", "memory limits")?;
    let limit_path = dir.join("memory.limit_in_bytes");
    let memsw_path = dir.join("memory.memsw.limit_in_bytes");

    if let (Some(l), Some(s)) = (limit, swap) {
        if l > 0 && s > 0 && s < l {
            return Err(CgroupError::SwapBelowLimit { swap: s, limit: l });
        }
    }
    // Without swap accounting (swapaccount=0) memsw doesn't exist. A swap value that asks for
    // "no extra swap" (== limit) or "unlimited" (-1) is then already what the kernel does, so it
    // is skipped; any other value can't be honoured and is an error rather than silently ignored.
    let swap = match swap {
        Some(s) if !cg.exists(&memsw_path) => {
            if s == -1 || Some(s) == limit {
                None
            } else {
                return Err(CgroupError::SwapUnsupported {
                    path: memsw_path,
                    swap: s,
                });
            }
        }
        other => other,
    };

    match (limit, swap) {
        (Some(l), Some(s)) => write_pair(
            cg,
            (&limit_path, &l.to_string()),
            (&memsw_path, &s.to_string()),
        )?,
        (Some(l), None) => cg.write(&limit_path, &l.to_string())?,
        (None, Some(s)) => cg.write(&memsw_path, &s.to_string())?,
        (None, None) => {}
    }
    if let Some(r) = reservation {
        cg.write(&dir.join("memory.soft_limit_in_bytes"), &r.to_string())?;
    }
    Ok(())
}

/// Writes two interdependent limits. The kernel checks each write against the *current* value
/// of the other (memsw >= limit; quota/period against the parent), so depending on whether the
/// limits go up or down only one order works. Like runc: try `first` then `second`, and on
/// EINVAL from `first` write `second` before retrying `first`.
fn write_pair(cg: &Cgroup, first: (&Path, &str), second: (&Path, &str)) -> Result<(), CgroupError> {
    log::debug!("cgroup: {} <- {:?}", first.0.display(), first.1);
    match cg.fs.write(first.0, first.1) {
        Ok(()) => cg.write(second.0, second.1),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            cg.write(second.0, second.1)?;
            cg.write(first.0, first.1)
        }
        Err(source) => Err(CgroupError::Write {
            path: first.0.to_path_buf(),
            value: first.1.to_string(),
            source,
        }),
    }
}

fn cpu_bandwidth(cg: &Cgroup, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    let shares = cpu.shares().filter(|&s| s != 0);
    let quota = nonzero(cpu.quota());
    let period = cpu.period().filter(|&p| p != 0);
    if shares.is_none() && quota.is_none() && period.is_none() {
        return Ok(());
    }
    let dir = dir(cg, "cpu", "cpu shares or quota")?;
    if let Some(s) = shares {
        cg.write(&dir.join("cpu.shares"), &s.to_string())?;
    }
    let period_path = dir.join("cpu.cfs_period_us");
    let quota_path = dir.join("cpu.cfs_quota_us");
    match (period, quota) {
        (Some(p), Some(q)) => write_pair(
            cg,
            (&period_path, &p.to_string()),
            (&quota_path, &q.to_string()),
        ),
        (Some(p), None) => cg.write(&period_path, &p.to_string()),
        (None, Some(q)) => cg.write(&quota_path, &q.to_string()),
        (None, None) => Ok(()),
    }
}

fn cpuset(cg: &Cgroup, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    let cpus = cpu.cpus().as_deref().filter(|s| !s.is_empty());
    let mems = cpu.mems().as_deref().filter(|s| !s.is_empty());
    if cpus.is_none() && mems.is_none() {
        return Ok(());
    }
    let dir = dir(cg, "cpuset", "cpuset cpus or mems")?;
    if let Some(cpus) = cpus {
        cg.write(&dir.join("cpuset.cpus"), cpus)?;
    }
    if let Some(mems) = mems {
        cg.write(&dir.join("cpuset.mems"), mems)?;
    }
    Ok(())
}

fn block_io(cg: &Cgroup, blkio: &LinuxBlockIo) -> Result<(), CgroupError> {
    let Some(weight) = blkio.weight().filter(|&w| w != 0) else {
        return Ok(());
    };
    let dir = dir(cg, "blkio", "a block-io weight")?;
    // CFQ exposes blkio.weight; kernels since 5.0 only have BFQ, whose knob is blkio.bfq.weight
    // with the same 10..=1000 range.
    let path = dir.join("blkio.weight");
    let fallback = dir.join("blkio.bfq.weight");
    let target = if cg.exists(&path) {
        path
    } else if cg.exists(&fallback) {
        fallback
    } else {
        return Err(CgroupError::NoBlkioWeightFile {
            path,
            fallback,
            weight,
        });
    };
    cg.write(&target, &weight.to_string())
}

/// Replaces the device allowlist: deny everything, then replay the rules in order (later rules
/// override earlier ones, as in OCI). Each rule is its own write; the kernel parses one per write.
///
/// Only the rules in the spec are written: default devices (`/dev/null`, ...) must be in the
/// spec, see [`super::default_device_rules`].
fn devices(cg: &Cgroup, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    let dir = dir(cg, "devices", "device rules")?;
    let deny = dir.join("devices.deny");
    let allow = dir.join("devices.allow");
    cg.write(&deny, "a")?;
    for rule in rules {
        let target = if rule.allow() { &allow } else { &deny };
        cg.write(target, &device_rule(rule))?;
    }
    Ok(())
}

/// Formats a rule as the v1 devices controller expects, e.g. `c 1:3 rwm` or `a *:* rwm`.
pub(super) fn device_rule(rule: &LinuxDeviceCgroup) -> String {
    let num = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
    format!(
        "{} {}:{} {}",
        rule.typ().unwrap_or(LinuxDeviceType::A).as_str(),
        num(rule.major()),
        num(rule.minor()),
        rule.access().as_deref().unwrap_or("rwm"),
    )
}

/// Whether the freezer reports the cgroup frozen.
pub(super) fn frozen(cg: &Cgroup) -> bool {
    dir(cg, "freezer", "freezing")
        .ok()
        .and_then(|d| cg.read(&d.join("freezer.state")).ok())
        .is_some_and(|s| s.trim() == "FROZEN")
}

pub(super) fn set_freezer(cg: &Cgroup, frozen: bool) -> Result<(), CgroupError> {
    let dir = dir(cg, "freezer", "freezing")?;
    let path = dir.join("freezer.state");
    let target = if frozen { "FROZEN" } else { "THAWED" };
    cg.write(&path, target)?;
    // Freezing is asynchronous: the state reads FREEZING until every task has stopped.
    wait_for(cg, &path, |s| s.trim() == target)
}
