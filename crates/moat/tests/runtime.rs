//! End-to-end tests of `moat runtime` with real containers (root only).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{can_run, cap_line, Ctr};
use serde_json::json;

#[test]
fn runs_as_pid_1_with_its_hostname() {
    if !can_run() {
        return;
    }
    let mut c = Ctr::new("pid1", &["sh", "-c", "echo pid=$$ host=$(hostname)"]);
    c.config["hostname"] = "box1".into();
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "pid=1 host=box1");
}

#[test]
fn exit_codes_are_propagated() {
    if !can_run() {
        return;
    }
    let c = Ctr::new("exit", &["sh", "-c", "exit 42"]);
    assert_eq!(c.run().0, 42);
}

#[test]
fn standard_mounts_and_devices_are_visible() {
    if !can_run() {
        return;
    }
    let c = Ctr::new(
        "mounts",
        &[
            "sh",
            "-c",
            "cat /proc/self/mountinfo; ls /dev; ls /dev/pts; ls /sys/fs/cgroup",
        ],
    );
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    for want in [
        " /proc ",
        " /dev ",
        " /dev/pts ",
        " /dev/shm ",
        " /sys ",
        " /sys/fs/cgroup ",
    ] {
        assert!(out.contains(want), "mount {want} missing in:\n{out}");
    }
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "fd", "stdin",
    ] {
        assert!(out.lines().any(|l| l == dev), "/dev/{dev} missing:\n{out}");
    }
    assert!(
        out.lines().any(|l| l == "memory" || l == "cgroup.procs"),
        "cgroupfs empty:\n{out}"
    );
}

#[test]
fn masked_and_readonly_paths_hold() {
    if !can_run() {
        return;
    }
    let c = Ctr::new(
        "masked",
        &["sh", "-c", "cat /proc/kcore | wc -c; echo 1 > /proc/sys/kernel/domainname && echo WROTE; touch /x && echo ROOTRW; true"],
    );
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().next(),
        Some("0"),
        "/proc/kcore not masked: {out}"
    );
    assert!(!out.contains("WROTE"), "/proc/sys writable: {out}");
    assert!(!out.contains("ROOTRW"), "read-only root writable: {out}");
}

#[test]
fn capabilities_are_exactly_the_configured_ones() {
    if !can_run() {
        return;
    }
    let mut c = Ctr::new("caps", &["sh", "-c", "grep Cap /proc/self/status"]);
    let set = json!(["CAP_CHOWN", "CAP_KILL"]);
    c.config["process"]["capabilities"] = json!({
        "bounding": set, "effective": set, "permitted": set, "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]
    });
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    // CAP_CHOWN is bit 0, CAP_KILL bit 5.
    assert_eq!(cap_line(&out, "CapEff"), Some(0x21), "{out}");
    assert_eq!(cap_line(&out, "CapBnd"), Some(0x21), "{out}");
    assert_eq!(cap_line(&out, "CapPrm"), Some(0x21), "{out}");
    assert_eq!(cap_line(&out, "CapInh"), Some(0x20), "{out}");
    assert_eq!(cap_line(&out, "CapAmb"), Some(0x20), "{out}");
}

#[test]
fn user_process_runs_as_configured_uid_with_no_new_privileges() {
    if !can_run() {
        return;
    }
    let mut c = Ctr::new(
        "user",
        &[
            "sh",
            "-c",
            "id -u; id -g; id -G; grep NoNewPrivs /proc/self/status; umask",
        ],
    );
    c.config["process"]["user"] =
        json!({"uid": 1234, "gid": 2345, "additionalGids": [3456], "umask": 23});
    c.config["process"]["noNewPrivileges"] = true.into();
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], &["1234", "2345"], "{out}");
    assert!(lines[2].contains("3456"), "{out}");
    assert!(lines[3].ends_with('1'), "{out}");
    assert_eq!(lines[4], "0027", "{out}");
}

#[test]
fn seccomp_denies_a_syscall_with_eperm() {
    if !can_run() {
        return;
    }
    let mut c = Ctr::new("seccomp", &["sh", "-c", "mkdir /tmp/x 2>&1; echo after"]);
    c.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]
    }));
    c.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("after"), "{out}");
}

#[test]
fn memory_limit_kills_an_allocating_process() {
    if !can_run() {
        return;
    }
    // ash keeps a command substitution's output in memory: 256 MiB cannot fit in 32 MiB.
    let mut c = Ctr::new(
        "oom",
        &[
            "sh",
            "-c",
            "x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    c.config["linux"]["resources"] = json!({"memory": {"limit": 33554432}});
    let (code, out, _err) = c.run();
    assert!(
        !out.contains("survived"),
        "allocation was not stopped: {out}"
    );
    assert_eq!(code, 137, "expected SIGKILL by the OOM killer");
}

#[test]
fn pids_limit_refuses_forks() {
    if !can_run() {
        return;
    }
    let mut c = Ctr::new(
        "pids",
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 2 & done; echo all-forked",
        ],
    );
    c.config["linux"]["resources"] = json!({"pids": {"limit": 5}});
    let (_code, out, err) = c.run();
    assert!(!out.contains("all-forked"), "{out}");
    assert!(err.contains("fork"), "{err}");
}

#[test]
fn rlimits_are_applied_and_clamped_to_the_host_hard_limit() {
    if !can_run() {
        return;
    }
    let host_hard: u64 = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4)?.parse().ok())
        .unwrap();
    let mut c = Ctr::new("rlimit", &["sh", "-c", "ulimit -Sn; ulimit -Hn; ulimit -c"]);
    c.config["process"]["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "soft": 1048576u64, "hard": 1048576u64},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
    ]);
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let expect = host_hard.min(1048576).to_string();
    assert_eq!(lines, vec![expect.as_str(), expect.as_str(), "0"], "{out}");
}

#[test]
fn user_namespace_root_is_unprivileged_outside() {
    if !can_run() {
        return;
    }
    let mut c = Ctr::new(
        "userns",
        &["sh", "-c", "id -u; cat /proc/self/uid_map; sleep 30"],
    );
    c.ns(&["pid", "ipc", "uts", "mount", "network", "user", "cgroup"]);
    c.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    c.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    c.create();
    let pid = c.state().unwrap()["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("100000"),
        "{uid_line}"
    );
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
}

#[test]
fn lifecycle_create_start_state_kill_delete() {
    if !can_run() {
        return;
    }
    let c = Ctr::new("life", &["sleep", "60"]);
    let b = c.bundle().display().to_string();
    let pid_file = c.bundle().join("pid");
    let out = c.moat(&[
        "create",
        "--bundle",
        &b,
        "--pid-file",
        pid_file.to_str().unwrap(),
        &c.id,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = c.state().unwrap();
    assert_eq!(st["status"], "created");
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    // The user's program has not run yet: the init is still moat.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(comm.trim(), "sleep");
    let list = c.moat(&["list", "--format", "json"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&c.id));

    assert!(c.moat(&["start", &c.id]).status.success());
    assert_eq!(c.state().unwrap()["status"], "running");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep");
    // A running container cannot be started again nor deleted without --force.
    assert!(!c.moat(&["start", &c.id]).status.success());
    let out = c.moat(&["delete", &c.id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("running"));

    assert!(c.moat(&["kill", &c.id, "KILL"]).status.success());
    let mut stopped = false;
    for _ in 0..500 {
        if c.state().unwrap()["status"] == "stopped" {
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(stopped, "not stopped after SIGKILL");
    assert!(c.moat(&["delete", &c.id]).status.success());
    assert!(c.state().is_none(), "state survives delete");
    let cg = format!("/sys/fs/cgroup/pids/moat/{}", c.id);
    assert!(
        !std::path::Path::new(&cg).exists(),
        "cgroup {cg} left behind"
    );
}

#[test]
fn signals_are_forwarded_by_run() {
    if !can_run() {
        return;
    }
    let c = Ctr::new(
        "sig",
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; echo ready; while true; do sleep 0.05; done",
        ],
    );
    let b = c.bundle().display().to_string();
    std::fs::write(
        c.bundle().join("config.json"),
        serde_json::to_vec(&c.config).unwrap(),
    )
    .unwrap();
    let mut child = std::process::Command::new(common::MOAT)
        .arg("runtime")
        .arg("--root")
        .arg(&c.root)
        .args(["run", "--bundle", &b, &c.id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // SAFETY-free: signal the moat process by pid through kill(1).
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = common::wait_or_dump(child, "moat runtime run");
    assert_eq!(status.code(), Some(7));
}

#[test]
fn hooks_run_at_each_stage_with_state_on_stdin() {
    if !can_run() {
        return;
    }
    let mut c = Ctr::new("hooks", &["cat", "/tmp/started"]);
    c.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]
    }));
    let log = c.bundle().join("hooks.log");
    let host_hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $(cat | grep -o '\"status\":\"[a-z]*\"') >> {}", log.display())]});
    c.config["hooks"] = json!({
        "createRuntime": [host_hook("createRuntime")],
        "createContainer": [host_hook("createContainer")],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo startContainer-in-container > /tmp/started"]}],
        "poststart": [host_hook("poststart")],
        "poststop": [host_hook("poststop")]
    });
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "startContainer-in-container");
    let text = std::fs::read_to_string(&log).unwrap();
    let stages: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        stages,
        ["createRuntime", "createContainer", "poststart", "poststop"],
        "{text}"
    );
    assert!(
        text.contains("createRuntime \"status\":\"creating\""),
        "{text}"
    );
    assert!(text.contains("poststop \"status\":\"stopped\""), "{text}");
}

#[test]
fn bad_input_gets_a_clear_error_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    // Unknown program: create fails, naming it, and the id is free again.
    let c = Ctr::new("badprog", &["/no/such/program"]);
    let b = c.bundle().display().to_string();
    let out = c.moat(&["create", "--bundle", &b, &c.id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/program"), "{err}");
    assert!(c.state().is_none(), "state left after a failed create");
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/pids/moat/{}", c.id)).exists());
    // Bad id, missing bundle.
    let out = c.moat(&["create", "--bundle", &b, "a/b"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("container id"));
    let out = c.moat(&["create", "--bundle", "/nonexistent-bundle", "x1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-bundle"));
    // An id in use.
    let c2 = Ctr::new("dup", &["sleep", "30"]);
    c2.create();
    let b2 = c2.bundle().display().to_string();
    let out = c2.moat(&["create", "--bundle", &b2, &c2.id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[test]
fn exec_joins_a_running_container() {
    if !can_run() {
        return;
    }
    let mut c = Ctr::new("exec", &["sleep", "60"]);
    c.config["hostname"] = "exechost".into();
    let b = c.bundle().display().to_string();
    assert!(c
        .moat(&["run", "--detach", "--bundle", &b, &c.id])
        .status
        .success());
    let out = c.moat(&[
        "exec",
        &c.id,
        "sh",
        "-c",
        "echo pid=$$ host=$(hostname) uid=$(id -u)",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pid=2 host=exechost uid=0"
    );
    let out = c.moat(&[
        "exec",
        "--user",
        "1000:1001",
        "--env",
        "X=42",
        &c.id,
        "sh",
        "-c",
        "echo $(id -u):$(id -g) $X",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1000:1001 42");
    let out = c.moat(&["exec", &c.id, "sh", "-c", "exit 9"]);
    assert_eq!(out.status.code(), Some(9));
    let out = c.moat(&["exec", &c.id, "/no/such/binary"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/binary"));
    assert!(c.moat(&["kill", &c.id, "KILL"]).status.success());
    for _ in 0..500 {
        if c.state().unwrap()["status"] == "stopped" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = c.moat(&["exec", &c.id, "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopped"),
        "{out:?}"
    );
}

#[test]
fn namespaces_are_joined_by_path() {
    if !can_run() {
        return;
    }
    let mut a = Ctr::new("nsa", &["sleep", "60"]);
    a.config["hostname"] = "shared-uts".into();
    a.create();
    let pid = a.state().unwrap()["pid"].as_i64().unwrap();
    let mut b = Ctr::new("nsb", &["hostname"]);
    b.config["hostname"] = serde_json::Value::Null;
    b.config["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
        {"type": "uts", "path": format!("/proc/{pid}/ns/uts")},
        {"type": "network", "path": format!("/proc/{pid}/ns/net")}
    ]);
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "shared-uts");
}

#[test]
fn sysctl_oom_score_adj_devices_and_cpu_limits_are_applied() {
    if !can_run() {
        return;
    }
    let mut c = Ctr::new(
        "knobs",
        &["sh", "-c", "cat /proc/sys/kernel/msgmax /proc/self/oom_score_adj; ls -ln /dev/mynull | cut -c1-10; \
          stat -c '%t:%T' /dev/mynull; cat /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us \
          /sys/fs/cgroup/cpuset/cpuset.cpus /proc/sys/kernel/domainname"],
    );
    c.config["linux"]["sysctl"] = json!({"kernel.msgmax": "4242"});
    c.config["process"]["oomScoreAdj"] = 500.into();
    c.config["domainname"] = "moat.test".into();
    c.config["linux"]["devices"] =
        json!([{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 416}]);
    c.config["linux"]["resources"] = json!({"cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
        "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]});
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "4242",
            "500",
            "crw-r-----",
            "1:3",
            "512",
            "50000",
            "0",
            "moat.test"
        ],
        "{out}"
    );
}

#[test]
fn json_log_records_the_error_for_engines() {
    if !can_run() {
        return;
    }
    let c = Ctr::new("log", &["/no/such/program"]);
    let log = c.bundle().join("log.json");
    let b = c.bundle().display().to_string();
    let l = log.display().to_string();
    let out = c.moat(&[
        "--log",
        &l,
        "--log-format",
        "json",
        "create",
        "--bundle",
        &b,
        &c.id,
    ]);
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(
        last["msg"].as_str().unwrap().contains("/no/such/program"),
        "{text}"
    );
    assert!(last["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn rootfs_propagation_shared_and_private_are_honoured() {
    if !can_run() {
        return;
    }
    for (prop, want) in [("rshared", true), ("rprivate", false), ("rslave", false)] {
        let mut c = Ctr::new(
            &format!("prop-{prop}"),
            &["sh", "-c", "awk '$5 == \"/\"' /proc/self/mountinfo"],
        );
        c.config["linux"]["rootfsPropagation"] = prop.into();
        let (code, out, err) = c.run();
        assert_eq!(code, 0, "{prop}: {err}");
        assert_eq!(out.contains("shared:"), want, "{prop}: {out}");
    }
}

#[test]
fn tmpcopyup_recursive_readonly_and_bad_bind_options() {
    if !can_run() {
        return;
    }
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), b"host\n").unwrap();
    let mut c = Ctr::new(
        "mntopts",
        &["sh", "-c", "cat /etc/passwd | head -1; echo x > /etc/new && echo etc-writable; cat /data/f; echo y > /data/g || echo data-ro"],
    );
    let mounts = c.config["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/etc", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "tmpcopyup"]}));
    mounts.push(json!({"destination": "/data", "type": "bind", "source": host.path(), "options": ["rbind", "rro"]}));
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "root:x:0:0:root:/root:/bin/sh",
            "etc-writable",
            "host",
            "data-ro"
        ],
        "{out}"
    );
    assert!(!host.path().join("g").exists());
    // An option a bind mount cannot take is an error, not silently dropped.
    let mut c = Ctr::new("badbind", &["true"]);
    c.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/data", "type": "bind", "source": host.path(), "options": ["rbind", "size=1m"]
    }));
    let (code, _out, err) = c.run();
    assert_ne!(code, 0);
    assert!(err.contains("unsupported bind mount option"), "{err}");
}
