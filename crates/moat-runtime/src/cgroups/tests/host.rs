#![allow(clippy::unwrap_used)]

use super::*;

// ---------------------------------------------------------------------------------------------
// Real kernel (root only)

/// Removes the test cgroup even when an assertion fails, and kills the helper process first so
/// the rmdir can succeed.
struct Cleanup<'a> {
    cg: &'a Cgroup,
    child: Option<std::process::Child>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = self.cg.destroy() {
            eprintln!("cleanup of test cgroup failed: {e}");
        }
    }
}

/// Reads a control file of cgroup `name` in the hierarchy carrying `controller`.
fn read_back(cg: &Cgroup, name: &str, controller: &str, file: &str) -> String {
    let root = match cg.layout() {
        Layout::V1 { .. } => cg
            .layout()
            .hierarchy(controller)
            .unwrap()
            .mount_point
            .clone(),
        Layout::V2 { root } => root.clone(),
    };
    let text = std::fs::read_to_string(root.join(name).join(file)).unwrap();
    text.trim().to_string()
}

#[test]
fn host_cgroup_pids_limit_as_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping host_cgroup_pids_limit_as_root: needs root");
        return;
    }
    let layout = detect().unwrap();
    let pids_root = match &layout {
        Layout::V1 { .. } => PathBuf::from("/sys/fs/cgroup/pids"),
        Layout::V2 { root } => root.clone(),
    };
    if !pids_root.exists()
        || (layout.hierarchy("pids").is_none() && matches!(layout, Layout::V1 { .. }))
    {
        eprintln!(
            "skipping host_cgroup_pids_limit_as_root: {} missing",
            pids_root.display()
        );
        return;
    }
    let is_v1 = matches!(layout, Layout::V1 { .. });
    let name = format!("moat-test-{}", std::process::id());
    let cg = Cgroup::new(layout, Path::new(&format!("/{name}")), HostFs).unwrap();
    let mut guard = Cleanup {
        cg: &cg,
        child: None,
    };
    cg.create().unwrap();
    let mut pids = LinuxPids::default();
    pids.set_limit(5);
    let mut res = LinuxResources::default();
    res.set_pids(Some(pids));
    cg.apply(&res).unwrap();
    assert_eq!(read_back(&cg, &name, "pids", "pids.max"), "5");

    // The other common limits go through on the real kernel too (v1 write orders, cpuset).
    let mut res = full_resources();
    let mut mem = LinuxMemory::default();
    mem.set_limit(Some(64 << 20)).set_swap(Some(-1));
    res.set_memory(Some(mem)).set_block_io(None);
    let mut devices = vec![LinuxDeviceCgroup::default()];
    devices.extend(default_device_rules());
    res.set_devices(Some(devices));
    cg.apply(&res).unwrap();
    if is_v1 {
        assert_eq!(
            read_back(&cg, &name, "memory", "memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(read_back(&cg, &name, "cpu", "cpu.cfs_quota_us"), "50000");
    } else {
        assert_eq!(read_back(&cg, &name, "memory", "memory.max"), "67108864");
        assert_eq!(read_back(&cg, &name, "cpu", "cpu.max"), "50000 100000");
    }

    // A real process can be moved in (on v1 this needs the cpuset copy-down), listed, frozen.
    let child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    guard.child = Some(child);
    cg.add_pid(pid).unwrap();
    assert_eq!(cg.pids().unwrap(), [pid]);
    cg.freeze().unwrap();
    cg.thaw().unwrap();

    drop(guard);
    assert!(!pids_root.join(&name).exists());
}

/// The eBPF device filter really decides opens, tested on this host's cgroup2 mount (on a
/// hybrid host the unified hierarchy at /sys/fs/cgroup/unified takes device programs too).
#[test]
fn device_program_allows_and_denies_for_real() {
    use std::process::Command;
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
                m.lines()
                    .any(|l| l.split(' ').nth(4) == p.to_str() && l.contains(" - cgroup2 "))
            })
        });
    let Some(root) = root else {
        eprintln!("SKIP: no cgroup2 mount on this host");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let name = format!("/moat-bpf-test-{}", std::process::id());
    let cg = Cgroup::new(Layout::V2 { root: root.clone() }, Path::new(&name), HostFs).unwrap();
    struct Guard(Cgroup);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.destroy();
        }
    }
    let dir = root.join(name.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    let guard = Guard(cg);
    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_allow(false).set_access(Some("rwm".into()));
    let mut null = LinuxDeviceCgroup::default();
    null.set_allow(true)
        .set_typ(Some(LinuxDeviceType::C))
        .set_major(Some(1))
        .set_minor(Some(3))
        .set_access(Some("rw".into()));
    let mut res = LinuxResources::default();
    res.set_devices(Some(vec![deny_all, null]));
    guard
        .0
        .attach_devices(&dir, res.devices().as_deref().unwrap())
        .unwrap();
    // A shell that moves itself into the cgroup, then tries two devices.
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs; (: < /dev/null) 2>/dev/null && echo null-ok; (: < /dev/zero) 2>/dev/null || echo zero-denied",
            dir.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        "null-ok\nzero-denied\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
