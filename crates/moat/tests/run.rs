//! `moat run` as a user types it (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{can_run, inspect, Engine, RunExt, MOAT};

#[test]
fn runs_the_image_command_with_docker_defaults() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let (code, out, err) = e.run(&["busybox", "sh", "-c", "echo pid=$$ img=$IMG host=$(hostname) cwd=$(pwd); grep CapEff /proc/self/status; cat /etc/hostname; grep -c . /proc/net/dev"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("pid=1 img=1 host=") && lines[0].ends_with("cwd=/"),
        "{out}"
    );
    let host = lines[0]
        .split("host=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert_eq!(host.len(), 12, "hostname is the short id: {out}");
    // Docker's default capability set.
    assert_eq!(lines[1], "CapEff:\t00000000a80425fb", "{out}");
    assert_eq!(lines[2], host);
    // The default bridge network: the header lines, lo and eth0.
    assert_eq!(lines[3], "4", "{out}");
    e.assert_clean();
}

#[test]
fn flags_user_workdir_env_hostname_entrypoint_read_only() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let (code, out, err) = e.run(&[
        "-u",
        "1000:1001",
        "-w",
        "/tmp",
        "-e",
        "A=1",
        "-e",
        "IMG=over",
        "--hostname",
        "box",
        "busybox",
        "sh",
        "-c",
        "echo $(id -u):$(id -g) $(pwd) $A $IMG $(hostname); grep CapEff /proc/self/status",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "1000:1001 /tmp 1 over box\nCapEff:\t0000000000000000\n"
    );
    let (code, out, _) = e.run(&["--entrypoint", "echo", "busybox", "from", "entrypoint"]);
    assert_eq!((code, out.as_str()), (0, "from entrypoint\n"));
    let (code, out, _) = e.run(&[
        "--read-only",
        "busybox",
        "sh",
        "-c",
        "touch /x 2>/dev/null || echo ro",
    ]);
    assert_eq!((code, out.as_str()), (0, "ro\n"));
    // The image's CMD when none is given.
    let (code, _, _) = e.run(&["busybox"]);
    assert_eq!(code, 0);
    e.assert_clean();
}

#[test]
fn exit_codes_follow_docker() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    assert_eq!(e.run(&["busybox", "sh", "-c", "exit 42"]).0, 42);
    let (code, _, err) = e.run(&["busybox", "no-such-command"]);
    assert_eq!(code, 127);
    assert!(err.contains("no-such-command"), "{err}");
    let (code, _, err) = e.run(&["busybox", "/etc/passwd"]);
    assert_eq!(code, 126, "{err}");
    // (--pull never: tests reach no registry but their own on 127.0.0.1.)
    let (code, _, err) = e.run(&["--pull", "never", "no-such-image", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("No such image: no-such-image"), "{err}");
    // A user name is resolved in the image's /etc/passwd.
    let (code, out, err) = e.run(&["-u", "nobody", "busybox", "id", "-u"]);
    assert_eq!((code, out.as_str()), (0, "65534\n"), "{err}");
    let (code, _, err) = e.run(&["-u", "ghost", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("unable to find user ghost"), "{err}");
    let (code, _, err) = e.run(&["-w", "relative", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("absolute"), "{err}");
    e.assert_clean();
}

#[test]
fn writes_stay_in_the_container_layer() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let (code, _, err) = e.run(&[
        "busybox",
        "sh",
        "-c",
        "echo changed > /bin/marker; rm /bin/ls",
    ]);
    assert_eq!(code, 0, "{err}");
    // The next container starts from the untouched image.
    let (code, out, _) = e.run(&[
        "busybox",
        "sh",
        "-c",
        "test -e /bin/marker || echo clean; test -e /bin/ls && echo ls-back",
    ]);
    assert_eq!((code, out.as_str()), (0, "clean\nls-back\n"));
    e.assert_clean();
}

/// An `--rm` container's writable layer is mounted `volatile` (no sync of the host's filesystem
/// when it is unmounted: nobody needs it after a crash, as with Podman); a kept container's is
/// not, and comes back after a stop with its changes.
#[test]
fn only_an_rm_containers_layer_is_volatile() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let root_line = |out: &str| {
        out.lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap_or_else(|| panic!("no / in {out}"))
            .to_string()
    };
    let (code, out, err) = e.run(&["busybox", "cat", "/proc/self/mountinfo"]);
    assert_eq!(code, 0, "{err}");
    assert!(root_line(&out).contains("volatile"), "{out}");
    let out = e.ok(&[
        "run",
        "--name",
        "kept",
        "busybox",
        "sh",
        "-c",
        "echo one >> /f; cat /f /proc/self/mountinfo",
    ]);
    assert!(!root_line(&out).contains("volatile"), "{out}");
    assert!(out.starts_with("one\n"), "{out}");
    // Mounted again at the next start, with the first run's change.
    let out = e.ok(&["start", "-a", "kept"]);
    assert!(out.starts_with("one\none\n"), "{out}");
    e.ok(&["rm", "kept"]);
    e.assert_clean();
}

/// A relative `--root` names the same root for the monitor and the runtime, which work from
/// other directories.
#[test]
fn a_relative_root_works() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let (parent, name) = (
        e.dir.path().parent().unwrap(),
        e.dir.path().file_name().unwrap(),
    );
    let out = common::output_of(
        Command::new(MOAT)
            .current_dir(parent)
            .arg("--root")
            .arg(name)
            .args(["run", "--rm", "--network", "none", "busybox", "echo", "ok"]),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    e.assert_clean();
}

#[test]
fn an_image_in_use_is_not_removed_even_with_force() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let mut child = Command::new(MOAT)
        .arg("--root")
        .arg(e.dir.path())
        .args(["run", "--rm", "busybox", "sleep", "3"])
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if !e.ok(&["ps", "-q"]).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = e.moat(&["rmi", "busybox"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is being used by running container"), "{err}");
    let out = e.moat(&["rmi", "-f", "busybox"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "--force must not remove an image under a running container"
    );
    assert!(child.wait().unwrap().success());
    e.assert_clean();
    let out = e.moat(&["rmi", "busybox"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn docker_default_seccomp_profile_and_security_opts() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    // Confined by default: a user namespace (no capability needed) is refused by the profile,
    // while ordinary work (fork, exec, files, sockets) goes on.
    let (code, out, err) = e.run(&["busybox", "sh", "-c", "grep Seccomp: /proc/self/status; unshare -U true 2>/dev/null || echo unshare-denied; ls /bin | wc -l; nc 127.0.0.1 9 </dev/null 2>/dev/null; echo alive"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Seccomp:\t2", "{out}");
    assert_eq!(lines[1], "unshare-denied", "{out}");
    assert!(lines[2].parse::<u32>().unwrap() > 100, "{out}");
    assert_eq!(lines.last(), Some(&"alive"), "{out}");
    let (code, out, _) = e.run(&[
        "--security-opt",
        "seccomp=unconfined",
        "busybox",
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; unshare -U true && echo unshare-ok",
    ]);
    assert_eq!((code, out.as_str()), (0, "Seccomp:\t0\nunshare-ok\n"));
    let (code, out, _) = e.run(&[
        "--security-opt",
        "no-new-privileges",
        "busybox",
        "grep",
        "NoNewPrivs",
        "/proc/self/status",
    ]);
    assert_eq!((code, out.as_str()), (0, "NoNewPrivs:\t1\n"));
    let (code, _, err) = e.run(&["--security-opt", "apparmor=foo", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("not supported"), "{err}");
}

#[test]
fn resources_capabilities_mounts_and_privileged() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), "from-host\n").unwrap();
    let bind = format!("{}:/data:ro", src.path().display());
    let envfile = e.path("env.list");
    std::fs::write(&envfile, "# comment\nFROMFILE=yes\n\nOVER=file\n").unwrap();
    let (code, out, err) = e.run(&[
        "-m",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "--ulimit",
        "nofile=100:200",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "net_admin",
        "-v",
        &bind,
        "--tmpfs",
        "/scratch:size=1m",
        "--env-file",
        &envfile,
        "-e",
        "OVER=flag",
        "busybox",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us \
         /sys/fs/cgroup/pids/pids.max; ulimit -n; grep CapEff /proc/self/status; cat /data/f; \
         touch /data/x 2>/dev/null || echo ro; grep -c ' /scratch tmpfs' /proc/mounts; \
         echo $FROMFILE $OVER",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "67108864\n50000\n50\n100\nCapEff:\t0000000000001000\nfrom-host\nro\n1\nyes flag\n"
    );
    // --privileged: every capability the host has, no seccomp, host devices, its own devpts.
    let (code, out, err) = e.run(&[
        "--privileged",
        "busybox",
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; test -c /dev/kmsg && echo kmsg; ls /dev/pts",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "Seccomp:\t0\nkmsg\nptmx\n"),
        "{err}"
    );
    // Bad values: a clear error naming the value, exit 125, nothing left.
    for (args, msg) in [
        (vec!["-m", "lots"], "invalid size \"lots\""),
        (vec!["--cpus", "0"], "invalid --cpus"),
        (vec!["--ulimit", "files=1"], "invalid --ulimit"),
        (vec!["--cap-add", "CAP_FLY"], "unknown capability"),
        (
            vec!["-v", "/no/such/dir:/x"],
            "does not exist: /no/such/dir",
        ),
        (vec!["-v", "bad name:/x"], "invalid volume \"bad name:/x\""),
        (vec!["--stop-signal", "SIGNOPE"], "--stop-signal"),
    ] {
        let mut all = args.clone();
        all.extend(["busybox", "true"]);
        let (code, _, err) = e.run(&all);
        assert_eq!(code, 125, "{args:?}");
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    e.assert_clean();
}

/// A container starts with a fresh signal state, whatever its starter ignored: `moat run` from a
/// background job of a script (SIGINT, SIGQUIT ignored) or from nohup (SIGHUP) must not hand
/// that on, or a shell in the container could not even trap SIGINT (POSIX).
#[test]
fn ignored_signals_are_not_inherited() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let out = common::output_of(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap '' INT QUIT HUP TERM; exec {} --root {} run --rm busybox grep -E '^Sig(Ign|Blk)' /proc/self/status",
                common::MOAT,
                e.dir.path().display()
            )),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
    assert!(text.contains("SigIgn:\t0000000000000000"), "{text}");
    e.assert_clean();
}

/// A container's own network namespace has `lo` up, as Docker's: services on localhost work
/// even with `--network none`.
#[test]
fn loopback_is_up() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let (code, out, err) = e.run(&[
        "busybox",
        "sh",
        "-c",
        "cat /sys/class/net/lo/flags; ping -c1 -W2 127.0.0.1 >/dev/null && echo reached",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "0x9\nreached\n", "IFF_UP|IFF_LOOPBACK");
}

/// `--debug` lines of the monitor and the runtime go to moat's stderr, never into the
/// container's output or its log.
#[test]
fn debug_lines_stay_out_of_the_container_output() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let out = e.moat(&[
        "--debug",
        "run",
        "--name",
        "dbg",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("err\n"), "{stderr}");
    let logs = e.moat(&["logs", "dbg"]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "out\n");
    assert_eq!(
        String::from_utf8_lossy(&logs.stderr),
        "err\n",
        "no debug line in the log"
    );
    e.ok(&["rm", "dbg"]);
}

/// `--sig-proxy=false`: a signal to an attached `moat run` stops moat, not the container.
#[test]
fn without_sig_proxy_a_signal_stops_moat_and_the_container_runs_on() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let child = std::process::Command::new(common::MOAT)
        .arg("--root")
        .arg(e.dir.path())
        .args([
            "run",
            "--name",
            "sp",
            "--sig-proxy=false",
            "busybox",
            "sh",
            "-c",
        ])
        .arg("trap 'echo forwarded; exit 3' TERM; echo ready; while true; do sleep 0.1; done")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::eventually("the container's first line", || {
        String::from_utf8_lossy(&e.moat(&["logs", "sp"]).stdout).contains("ready")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = common::wait_or_dump(child, "moat run --sig-proxy=false");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(15),
        "moat died of the signal: {status:?}"
    );
    let st = common::inspect(&e, "sp");
    assert_eq!(st["State"]["Status"], "running", "the container runs on");
    assert!(!String::from_utf8_lossy(&e.moat(&["logs", "sp"]).stdout).contains("forwarded"));
    e.ok(&["rm", "-f", "sp"]);
}

#[test]
fn init_is_pid_1_forwards_signals_and_reaps() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    // The command is the init's child; pid 1 is moat's init.
    let (code, out, err) = e.run(&[
        "--init",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo $$; cat /proc/1/cmdline | tr '\\0' ' '; exit 7",
    ]);
    assert_eq!(code, 7, "{err}");
    let mut lines = out.lines();
    assert_ne!(lines.next(), Some("1"), "{out}");
    assert_eq!(
        lines.next().map(str::trim),
        Some("/sbin/docker-init -- sh -c echo $$; cat /proc/1/cmdline | tr '\\0' ' '; exit 7"),
        "{out}"
    );
    // SIGTERM reaches a command that has no handler of its own through the init: stop is quick.
    e.ok(&[
        "run", "-d", "--init", "--name", "sleeper", "busybox", "sleep", "60",
    ]);
    let v = inspect(&e, "sleeper");
    assert_eq!(v["HostConfig"]["Init"], true, "{v}");
    assert_eq!(v["Config"]["Cmd"], serde_json::json!(["sleep", "60"]));
    let t = std::time::Instant::now();
    e.ok(&["stop", "sleeper"]);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(inspect(&e, "sleeper")["State"]["ExitCode"], 143);
    // Orphans are reaped: no zombie is left behind by a background child whose parent exited.
    let (_, out, _) = e.run(&[
        "--init",
        "busybox",
        "sh",
        "-c",
        "sh -c 'sleep 0.2 &' ; sleep 0.6; ps -o stat | grep -c Z || true",
    ]);
    assert_eq!(out.trim(), "0", "{out}");
    e.ok(&["rm", "-f", "sleeper"]);
}
