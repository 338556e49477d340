//! VM containers (`--isolation=vm`): the same image and flags inside a micro-VM with its own
//! kernel, under QEMU's software emulation on this kind of host (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{can_run, eventually, inspect, Engine, RunExt, MOAT};

/// True when VM containers can run here: QEMU and the guest kernel (setup.sh installs and
/// builds both, so CI never skips); otherwise prints why.
pub fn vm_ready() -> bool {
    if !can_run() {
        return false;
    }
    let qemu = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("qemu-system-x86_64").is_file());
    if !qemu {
        eprintln!("SKIP: qemu-system-x86_64 missing: run scripts/setup.sh");
        return false;
    }
    let kernel =
        std::env::var("MOAT_VM_KERNEL").unwrap_or_else(|_| "/var/cache/moat/kernel/vmlinux".into());
    if !Path::new(&kernel).is_file() {
        eprintln!("SKIP: no guest kernel at {kernel}: run scripts/setup.sh (scripts/vm-kernel.sh)");
        return false;
    }
    true
}

/// Processes whose command line `is` says is theirs and names this engine's root.
fn processes(e: &Engine, is: impl Fn(&str) -> bool) -> usize {
    let root = e.dir.path().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            std::fs::read(p.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    is(&c) && c.contains(&root)
                })
                .unwrap_or(false)
        })
        .count()
}

/// VMM processes started for this engine root.
fn vmms(e: &Engine) -> usize {
    processes(e, |c| c.starts_with("/usr/bin/qemu-system"))
}

/// Nothing of any container left, no VMM either.
fn assert_clean(e: &Engine) {
    e.assert_clean();
    eventually("the VMMs to be gone", || vmms(e) == 0);
}

#[test]
fn runs_the_command_in_its_own_kernel_with_the_containers_defaults() {
    if !vm_ready() {
        return;
    }
    let e = Engine::with_busybox();
    let host = String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let (code, out, err) = e.run(&[
        "--isolation=vm",
        "-e",
        "X=from-env",
        "-w",
        "/tmp",
        "busybox",
        "sh",
        "-c",
        "uname -r; echo $X $IMG $(pwd) pid=$$; grep CapEff /proc/self/status; echo to-stderr >&2; \
         mkfifo /tmp/fifo && mknod /tmp/null c 1 3 && echo x > /tmp/null && ls -l /tmp; exit 3",
    ]);
    assert_eq!(code, 3, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(
        lines[0],
        host.trim(),
        "the guest runs its own kernel: {out}"
    );
    assert_eq!(lines[1], "from-env 1 /tmp pid=1", "{out}");
    // Inside the guest the container still gets Docker's default capability set.
    assert_eq!(lines[2], "CapEff:\t00000000a80425fb", "{out}");
    assert!(err.contains("to-stderr"), "{err}");
    // A fifo and a device node in the writable layer (virtio-fs: QEMU's 9p refuses them).
    assert!(
        out.contains("prw-r--r--") && out.contains("crw-r--r--"),
        "{out}"
    );
    // A command that does not exist: Docker's 127, as for a process container.
    let (code, _, err) = e.run(&["--isolation=vm", "busybox", "no-such-command"]);
    assert_eq!(code, 127, "{err}");
    assert_clean(&e);
}

#[test]
fn stdin_bind_mounts_and_memory_follow_the_flags() {
    if !vm_ready() {
        return;
    }
    let e = Engine::with_busybox();
    let data = e.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(format!("{data}/in.txt"), "from the host\n").unwrap();
    let bind = format!("{data}:/data");
    let (code, text, err) = e.with_input(
        &[
            "run",
            "--rm",
            "-i",
            "--isolation",
            "vm",
            "-m",
            "64m",
            "-v",
            &bind,
            "busybox",
            "sh",
            "-c",
            "read line; echo got:$line; cat /data/in.txt; echo from the guest > /data/out.txt; \
             grep MemTotal /proc/meminfo; cat /sys/fs/cgroup/memory.max",
        ],
        b"typed\n",
    );
    assert_eq!(code, 0, "{text}{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "got:typed", "{text}");
    assert_eq!(lines[1], "from the host", "{text}");
    assert_eq!(
        std::fs::read_to_string(format!("{data}/out.txt")).unwrap(),
        "from the guest\n"
    );
    // The VM is sized from the limit (64 MiB plus the guest's own), and the limit holds inside.
    let kb: u64 = lines[2].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(kb < 160 * 1024, "VM memory follows -m: {text}");
    assert_eq!(lines[3], "67108864", "{text}");
    // Memory beyond the limit kills the process, not the host.
    let (code, _, err) = e.run(&[
        "--isolation=vm",
        "-m",
        "32m",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=60M count=1",
    ]);
    assert_eq!(code, 137, "{err}");
    assert_clean(&e);
}

#[test]
fn stdin_streams_through_the_guests_few_receive_buffers() {
    if !vm_ready() {
        return;
    }
    let e = Engine::with_busybox();
    // 4 MiB of stdin, 16 times what the guest's port queue holds in flight (64 pages: the
    // minimal kernel's vm/patches/virtio-console-rx-buffers.patch), hashed inside.
    let input: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let expected = {
        let path = e.path("input");
        std::fs::write(&path, &input).unwrap();
        let out = Command::new("sha256sum").arg(&path).output().unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    };
    let (code, text, err) = e.with_input(
        &[
            "run",
            "--rm",
            "-i",
            "--isolation=vm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "sha256sum; uname -r; grep '^Slab:' /proc/meminfo",
        ],
        &input,
    );
    assert_eq!(code, 0, "{text}{err}");
    let line = |i: usize| {
        text.lines()
            .nth(i)
            .unwrap_or_else(|| panic!("line {i}: {text}{err}"))
    };
    assert!(
        line(0).starts_with(&expected),
        "stdin arrived whole: {text}"
    );
    // The minimal kernel's slab was 12.3 MiB with full receive queues (2 x 1024 pages of
    // virtio-console buffers); a distribution kernel (no patch) is not held to it.
    if !line(1).ends_with("-amd64") {
        let kb: u64 = line(2)
            .split_whitespace()
            .nth(1)
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("no Slab: {text}"));
        assert!(
            kb < 8 * 1024,
            "the guest's receive buffers (an unpatched kernel? rebuild it with \
             scripts/vm-kernel.sh): {text}"
        );
    }
    assert_clean(&e);
}

#[test]
fn stop_kill_and_a_crashed_vmm_are_reported() {
    if !vm_ready() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "vmsleep",
        "--isolation",
        "vm",
        "busybox",
        "sh",
        "-c",
        "trap 'echo bye; exit 7' TERM; echo ready; while true; do sleep 1; done",
    ]);
    eventually("the guest to run the command", || {
        e.ok(&["logs", "vmsleep"]).contains("ready")
    });
    let i = inspect(&e, "vmsleep");
    assert_eq!(i["HostConfig"]["Isolation"], "vm", "{i}");
    assert_eq!(i["State"]["Status"], "running");
    // `top` lists what runs in the guest (guest pids: the shell is pid 1's child there).
    let top = e.ok(&["top", "vmsleep"]);
    assert!(top.contains("trap 'echo bye; exit 7' TERM"), "{top}");
    let out = e.moat(&["update", "--memory", "128m", "vmsleep"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("while running"),
        "{out:?}"
    );
    e.ok(&["stop", "vmsleep"]);
    let i = inspect(&e, "vmsleep");
    assert_eq!(i["State"]["ExitCode"], 7, "the trap ran in the guest: {i}");
    assert!(e.ok(&["logs", "vmsleep"]).contains("bye"));
    // Stopped, it takes new limits: the next VM is sized by them.
    e.ok(&["update", "--memory", "96m", "vmsleep"]);
    // Started again (a new VM), then killed.
    e.ok(&["start", "vmsleep"]);
    eventually("the second start", || {
        e.ok(&["logs", "vmsleep"]).matches("ready").count() == 2
    });
    assert_eq!(
        e.ok(&["exec", "vmsleep", "cat", "/sys/fs/cgroup/memory.max"]),
        "100663296\n"
    );
    e.ok(&["kill", "vmsleep"]);
    eventually("the kill", || {
        inspect(&e, "vmsleep")["State"]["Status"] == "exited"
    });
    assert_eq!(inspect(&e, "vmsleep")["State"]["ExitCode"], 137);
    // The VMM dies under the container: it is an exited container with the reason, and
    // nothing of it is left running.
    e.ok(&["start", "vmsleep"]);
    eventually("the third start", || {
        e.ok(&["logs", "vmsleep"]).matches("ready").count() == 3
    });
    let driver = inspect(&e, "vmsleep")["State"]["Pid"].as_i64().unwrap();
    assert!(driver > 0);
    let children =
        std::fs::read_to_string(format!("/proc/{driver}/task/{driver}/children")).unwrap();
    let comm = |pid: &i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let children: Vec<i32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let qemu = *children
        .iter()
        .find(|p| comm(p).starts_with("qemu"))
        .unwrap();
    // The rootfs's virtio-fs daemon runs sandboxed in a mount namespace of its own too.
    let vfsd = *children
        .iter()
        .find(|p| comm(p).starts_with("virtiofsd"))
        .unwrap();
    // The VMM is confined: its own mount namespace whose root holds only what it needs, a
    // capability bounding set of seven, no new privileges, and a seccomp filter.
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_ne!(ns(qemu), ns(std::process::id() as i32));
    assert_ne!(ns(vfsd), ns(std::process::id() as i32));
    let mut root: Vec<String> = std::fs::read_dir(format!("/proc/{qemu}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    root.sort();
    assert_eq!(
        root,
        ["bin", "dev", "etc", "lib", "lib64", "proc", "shares", "usr", "vm"],
        "the VMM's root"
    );
    let status = std::fs::read_to_string(format!("/proc/{qemu}/status")).unwrap();
    assert_eq!(
        common::cap_line(&status, "CapBnd"),
        Some(0x800_101f),
        "{status}"
    );
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    // Its procfs is its own process only.
    let procs: Vec<String> = std::fs::read_dir(format!("/proc/{qemu}/root/proc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(procs.len(), 2, "{procs:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(qemu), nix::sys::signal::SIGKILL).unwrap();
    eventually("the crash to be recorded", || {
        inspect(&e, "vmsleep")["State"]["Status"] == "exited"
    });
    let i = inspect(&e, "vmsleep");
    assert_eq!(i["State"]["ExitCode"], 137, "{i}");
    assert!(
        i["State"]["Error"]
            .as_str()
            .unwrap()
            .contains("VM exited before the container"),
        "{i}"
    );
    assert!(!e
        .dir
        .path()
        .join("containers")
        .read_dir()
        .unwrap()
        .flatten()
        .any(|c| c.path().join("vm.sock").exists()));
    e.ok(&["rm", "vmsleep"]);
    assert_clean(&e);
}

#[test]
fn what_vm_containers_cannot_do_yet_is_refused_at_create() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    for (args, needle) in [
        (
            &["--isolation=vm", "--network", "host", "busybox"][..],
            "--network host",
        ),
        (&["--isolation=kvm", "busybox"][..], "invalid isolation"),
    ] {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        let out = e.moat(&all);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_clean(&e);
}

/// `pause` freezes a VM container's whole VM (its driver and VMM live in a cgroup of their
/// own on the host), `unpause` thaws it, `stats` shows what the VM costs the host (no network
/// counters of the host's for a container without a network), `top` the guest's processes
/// (refused while paused); the cgroup goes with the container.
#[test]
fn pause_unpause_stats_and_top_act_on_the_vm() {
    if !vm_ready() {
        return;
    }
    let e = Engine::with_busybox();
    let id = e
        .ok(&[
            "run",
            "-d",
            "--isolation=vm",
            "--network",
            "none",
            "--name",
            "ticker",
            "busybox",
            "sh",
            "-c",
            "while true; do echo tick; sleep 0.1; done",
        ])
        .trim()
        .to_string();
    let lines = || e.ok(&["logs", "ticker"]).lines().count();
    eventually("the guest to tick", || lines() > 2);
    let cgroup = format!("/sys/fs/cgroup/memory/moat/{id}");
    assert!(Path::new(&cgroup).is_dir(), "no cgroup {cgroup}");
    e.ok(&["pause", "ticker"]);
    assert_eq!(inspect(&e, "ticker")["State"]["Status"], "paused");
    assert!(e.ok(&["ps"]).contains("(Paused)"));
    let frozen = lines();
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(lines(), frozen, "the guest ran while paused");
    let out = e.moat(&["pause", "ticker"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already paused"));
    e.ok(&["unpause", "ticker"]);
    eventually("the guest to tick again", || lines() > frozen + 2);
    // CONTAINER ID  NAME  CPU %  MEM USAGE / LIMIT  MEM %  NET I/O  BLOCK I/O  PIDS
    let stats = e.ok(&["stats", "--no-stream", "ticker"]);
    let row: Vec<&str> = stats
        .lines()
        .find(|l| l.contains("ticker"))
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert!(!row[3].starts_with("0B"), "{stats}");
    assert_eq!(row[5], "0B / 0B", "{stats}");
    // `top` lists the guest's processes (the agent reads the guest's /proc): the container's
    // shell and its sleeps, not the host's driver and VMM.
    let top = e.ok(&["top", "ticker"]);
    assert!(top.lines().next().unwrap().contains("PID"), "{top}");
    assert!(
        top.contains("while true; do echo tick; sleep 0.1; done"),
        "{top}"
    );
    assert!(!top.contains("qemu"), "{top}");
    // Stopped while paused: thawed first, then stopped as usual.
    e.ok(&["pause", "ticker"]);
    let out = e.moat(&["top", "ticker"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is paused"),
        "{out:?}"
    );
    // As Docker: a paused container takes no signal but SIGKILL.
    let out = e.moat(&["kill", "-s", "TERM", "ticker"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unpause the container"),
        "{out:?}"
    );
    e.ok(&["stop", "-t", "1", "ticker"]);
    e.ok(&["rm", "ticker"]);
    assert!(!Path::new(&cgroup).exists(), "{cgroup} left");
    assert_clean(&e);
}

#[test]
fn the_docker_cli_runs_a_vm_container_through_the_api() {
    if !vm_ready() || !common::docker::docker_present() {
        return;
    }
    use common::docker::{docker, ok, Server};
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    let host = String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    // Docker's own name for the class (Windows' Hyper-V isolation) selects a VM.
    let out = ok(
        &e,
        &s,
        &[
            "run",
            "--rm",
            "--isolation",
            "hyperv",
            "busybox",
            "uname",
            "-r",
        ],
    );
    assert!(!out.trim().is_empty() && out.trim() != host.trim(), "{out}");
    ok(
        &e,
        &s,
        &[
            "run",
            "-d",
            "--name",
            "apivm",
            "--isolation",
            "vm",
            "busybox",
            "sleep",
            "600",
        ],
    );
    assert_eq!(
        ok(
            &e,
            &s,
            &[
                "inspect",
                "-f",
                "{{.HostConfig.Isolation}} {{.State.Status}}",
                "apivm"
            ]
        )
        .trim(),
        "vm running"
    );
    assert_eq!(
        ok(
            &e,
            &s,
            &[
                "exec",
                "apivm",
                "sh",
                "-c",
                "echo from-exec; cat /proc/1/cmdline"
            ]
        ),
        "from-exec\nsleep\u{0}600\u{0}"
    );
    // `docker exec -t` on a terminal: the CLI sizes the exec through the API, and the size
    // reaches the guest's terminal (its own pty, not a host process's).
    let (code, out) = common::on_a_terminal(
        &format!(
            "stty rows 33 cols 101; DOCKER_HOST=unix://{} DOCKER_CONFIG={} \
             /usr/local/bin/docker exec -t apivm sh -c 'sleep 1; stty size'",
            s.sock.display(),
            e.dir.path().join("docker-cli").display()
        ),
        "",
        b"",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("33 101"), "{out}");
    let out = docker(&e, &s, &["rm", "-f", "apivm"]);
    assert!(out.status.success(), "{out:?}");
    drop(s);
    assert_clean(&e);
}

#[test]
fn exec_and_terminals_reach_the_guest() {
    if !vm_ready() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "vmexec",
        "--isolation=vm",
        "busybox",
        "sleep",
        "600",
    ]);
    // Output, stderr, exit code, the container's environment, and flags.
    let out = e.moat(&[
        "exec",
        "-e",
        "Y=2",
        "-w",
        "/tmp",
        "vmexec",
        "sh",
        "-c",
        "echo $IMG $Y $(pwd) $(cat /proc/1/cmdline | tr '\\0' ' '); echo oops >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 2 /tmp sleep 600\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    // Docker's 127 for a missing command; -d returns at once and the process runs on.
    assert_eq!(
        e.moat(&["exec", "vmexec", "no-such"]).status.code(),
        Some(127)
    );
    e.ok(&["exec", "-d", "vmexec", "sleep", "30"]);
    assert!(e.ok(&["exec", "vmexec", "ps"]).contains("sleep 30"));
    // Standard input with -i.
    let (code, text, err) = e.with_input(
        &["exec", "-i", "vmexec", "sh", "-c", "tr a-z A-Z"],
        b"shout\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(text, "SHOUT\n");
    // exec -it on a real terminal: the guest's pty has the caller's size.
    let root = e.dir.path().display();
    let (code, out) = common::on_a_terminal(
        &format!("stty rows 33 cols 99; {MOAT} --root {root} exec -it vmexec sh"),
        "# ",
        b"stty size; exit 5\r",
    );
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("33 99"), "{out}");
    e.ok(&["rm", "-f", "vmexec"]);
    // run -it: the container's own terminal, through the host's pty to the guest's.
    let (code, out) = common::on_a_terminal(
        &format!(
            "stty rows 21 cols 77; {MOAT} --root {root} run --rm -it --isolation=vm busybox sh"
        ),
        "# ",
        b"stty size; tty; exit 6\r",
    );
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("21 77") && out.contains("/dev/pts/0"), "{out}");
    assert_clean(&e);
}

/// GET `path` from 127.0.0.1:`port` (the body, once the server answers; retried while the
/// guest's server is not up yet).
fn http_get(port: u16, path: &str) -> String {
    use std::io::Read;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let got = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut c| {
            c.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
            c.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
            let mut text = String::new();
            c.read_to_string(&mut text)?;
            Ok(text)
        });
        match got {
            Ok(t) if t.contains("200 OK") => return t,
            _ if std::time::Instant::now() > until => panic!("no answer on port {port}: {got:?}"),
            _ => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

#[test]
fn bridge_networks_published_ports_and_names_reach_the_guest() {
    if !vm_ready() {
        return;
    }
    let e = Engine::with_busybox();
    // The default bridge, a published port: the guest has the container's address and MAC.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "vmweb",
        "--isolation=vm",
        "-p",
        "18080:80",
        "busybox",
        "sh",
        "-c",
        "echo hello-from-the-guest > /tmp/index.html; ip -o -4 addr show eth0; \
         ip link show eth0; httpd -f -p 80 -h /tmp",
    ]);
    let body = http_get(18080, "/index.html");
    assert!(body.ends_with("hello-from-the-guest\n"), "{body}");
    let i = inspect(&e, "vmweb");
    let ip = i["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let mac = i["NetworkSettings"]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let logs = e.ok(&["logs", "vmweb"]);
    assert!(logs.contains(&format!("inet {ip}/")), "{logs}");
    assert!(logs.contains(&mac), "{logs}");
    // A process container on the same bridge reaches the guest by its address.
    let (code, out, err) = e.run(&[
        "busybox",
        "wget",
        "-qO-",
        &format!("http://{ip}/index.html"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello-from-the-guest\n");
    e.ok(&["rm", "-f", "vmweb"]);
    // A user-defined network: the guest resolves containers by name through 127.0.0.11.
    e.ok(&["network", "create", "vmnet"]);
    e.ok(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "vmnet",
        "busybox",
        "sleep",
        "600",
    ]);
    let (code, out, err) = e.run(&[
        "--isolation=vm",
        "--network",
        "vmnet",
        "busybox",
        "sh",
        "-c",
        // Over TCP too (RFC 1035's 2-byte length first): a query for `peer`, type A, by hand.
        "nslookup peer 127.0.0.11 | grep Address; ping -c1 -W5 peer >/dev/null && echo reached; \
         printf '\\000\\026\\022\\064\\001\\000\\000\\001\\000\\000\\000\\000\\000\\000\\004peer\\000\\000\\001\\000\\001' \
         | nc -w 3 127.0.0.11 53 | od -An -tu1 | tr -s ' \\n' ' ' | sed 's/^/tcp:/; s/$/ /'",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let peer_ip = inspect(&e, "peer")["NetworkSettings"]["Networks"]["vmnet"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(out.contains(&format!("Address: {peer_ip}")), "{out}");
    assert!(out.contains("reached"), "{out}");
    let tcp = out
        .lines()
        .find(|l| l.starts_with("tcp:"))
        .unwrap_or_default();
    assert!(
        tcp.starts_with("tcp: 0 ") && tcp.contains(&format!(" {} ", peer_ip.replace('.', " "))),
        "the TCP answer (length first) holds the address: {out}"
    );
    e.ok(&["rm", "-f", "peer"]);
    e.ok(&["network", "rm", "vmnet"]);
    assert_clean(&e);
}

#[test]
fn info_names_the_accelerator_and_the_default_isolation_is_configurable() {
    if !vm_ready() {
        return;
    }
    let e = Engine::with_busybox();
    let info = e.ok(&["info"]);
    assert!(info.contains("Default Isolation: process"), "{info}");
    let accel = if std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .split_whitespace()
        .any(|f| f == "vmx" || f == "svm")
    {
        "kvm"
    } else {
        "tcg"
    };
    assert!(info.contains(&format!("VM Accelerator: {accel}")), "{info}");
    assert!(info.contains("VM Kernel: /"), "{info}");
    assert!(info.contains("VM Rootfs Share: virtio-fs (/"), "{info}");
    let host = String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let with_default = |args: &[&str]| {
        let out = Command::new(MOAT)
            .env("MOAT_DEFAULT_ISOLATION", "vm")
            .arg("--root")
            .arg(e.dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // Containers created without --isolation get the default; --isolation process overrides it.
    let vm = with_default(&["run", "--rm", "busybox", "uname", "-r"]);
    assert_ne!(vm.trim(), host.trim());
    let process = with_default(&[
        "run",
        "--rm",
        "--isolation",
        "process",
        "busybox",
        "uname",
        "-r",
    ]);
    assert_eq!(process.trim(), host.trim());
    assert!(with_default(&["info"]).contains("Default Isolation: vm"));
    assert_clean(&e);
}

#[test]
fn apply_runs_a_service_in_vms_with_x_moat_isolation() {
    if !vm_ready() {
        return;
    }
    let e = Engine::with_busybox();
    let dir = e.dir.path().join("proj");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.env"), "GREETING=from-the-env-file\n").unwrap();
    let file = dir.join("compose.yaml");
    std::fs::write(
        &file,
        "name: vmapp\nservices:\n  guest:\n    image: busybox\n    command: sleep 600\n    \
         env_file: app.env\n    x-moat:\n      isolation: vm\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    e.ok(&["apply", "-f", f]);
    let i = inspect(&e, "vmapp-guest-1");
    assert_eq!(i["HostConfig"]["Isolation"], "vm", "{i}");
    let host = String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let out = e.ok(&[
        "exec",
        "vmapp-guest-1",
        "sh",
        "-c",
        "uname -r; echo $GREETING",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], host.trim(), "{out}");
    assert_eq!(lines[1], "from-the-env-file", "{out}");
    // A second apply changes nothing; --down removes it all.
    assert!(e
        .ok(&["apply", "-f", f])
        .contains("project vmapp: no changes"));
    e.ok(&["apply", "-f", f, "--down"]);
    assert_clean(&e);
}

/// Debian's cloud kernel when installed (setup.sh installs it, so CI never skips); otherwise
/// prints why.
fn cloud_kernel() -> Option<(std::path::PathBuf, String)> {
    let found = std::fs::read_dir("/boot").ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let release = name.strip_prefix("vmlinuz-")?.to_string();
        (release.ends_with("-cloud-amd64") && Path::new("/lib/modules").join(&release).is_dir())
            .then(|| (e.path(), release))
    });
    if found.is_none() {
        eprintln!(
            "SKIP: no Debian cloud kernel in /boot: run scripts/setup.sh (linux-image-cloud-amd64)"
        );
    }
    found
}

/// `moat --root ROOT <args>` booting `kernel`.
fn with_kernel(e: &Engine, kernel: &Path, args: &[&str]) -> (i32, String, String) {
    let out = common::output_of(
        Command::new(MOAT)
            .env("MOAT_VM_KERNEL", kernel)
            .arg("--root")
            .arg(e.dir.path())
            .args(args),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tmpfs mounted for a test, unmounted (lazily) when dropped, even if the test fails.
struct TmpfsAt(String);

impl TmpfsAt {
    fn mount(at: &str) -> TmpfsAt {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", at])
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {at}");
        TmpfsAt(at.to_string())
    }
}

impl Drop for TmpfsAt {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", &self.0]).status();
    }
}

/// virtiofsd processes serving a directory of this engine's root.
fn virtiofsds(e: &Engine) -> usize {
    processes(e, |c| c.contains("virtiofsd"))
}

/// Without the minimal kernel, a distribution's kernel (Debian's cloud kernel) runs VM
/// containers: its virtio drivers and virtio-fs are modules the agent loads from the
/// initramfs, and it has no 9p, so every share goes over virtio-fs — a read-only one refused
/// by the host even to a guest that remounts it writable.
#[test]
fn a_distribution_kernel_loads_its_modules_and_shares_over_virtio_fs() {
    if !vm_ready() {
        return;
    }
    let Some((kernel, release)) = cloud_kernel() else {
        return;
    };
    let e = Engine::with_busybox();
    let (_, info, _) = with_kernel(&e, &kernel, &["info"]);
    assert!(
        info.contains(&format!("distribution kernel {release}")),
        "{info}"
    );
    let (data, ro) = (e.path("data"), e.path("ro"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(format!("{ro}/sub")).unwrap();
    std::fs::write(format!("{data}/in.txt"), "from the host\n").unwrap();
    // A filesystem mounted inside the read-only share is read-only to the guest as well.
    let sub = TmpfsAt::mount(&format!("{ro}/sub"));
    let (code, out, err) = with_kernel(
        &e,
        &kernel,
        &[
            "run",
            "--rm",
            "--privileged",
            "--isolation=vm",
            "-v",
            &format!("{data}:/data"),
            "-v",
            &format!("{ro}:/ro:ro"),
            "busybox",
            "sh",
            "-c",
            "uname -r; cat /data/in.txt; echo from the guest > /data/out.txt; \
             mount -o remount,rw /ro && echo remounted; echo x > /ro/x || echo refused; \
             echo x > /ro/sub/x || echo refused below; \
             mkfifo /tmp/f && echo fifo; exit 4",
        ],
    );
    assert_eq!(code, 4, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], release, "{out}");
    assert_eq!(lines[1], "from the host", "{out}");
    assert!(lines.contains(&"remounted"), "the guest may remount: {out}");
    assert!(lines.contains(&"refused"), "the host refuses: {out}");
    assert!(
        lines.contains(&"refused below"),
        "also in a submount: {out}"
    );
    assert!(!Path::new(&format!("{ro}/sub/x")).exists());
    drop(sub);
    assert!(lines.contains(&"fifo"), "{out}");
    assert!(!Path::new(&format!("{ro}/x")).exists());
    assert_eq!(
        std::fs::read_to_string(format!("{data}/out.txt")).unwrap(),
        "from the guest\n"
    );
    // exec into a running one, and its stop.
    let (code, _, err) = with_kernel(
        &e,
        &kernel,
        &[
            "run",
            "-d",
            "--name",
            "k1",
            "--isolation=vm",
            "busybox",
            "sleep",
            "300",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = with_kernel(&e, &kernel, &["exec", "k1", "uname", "-r"]);
    assert_eq!((code, out.trim()), (0, release.as_str()), "{err}");
    e.ok(&["rm", "-f", "k1"]);
    // Something that is not a kernel: a clear error, nothing left.
    let (code, _, err) = with_kernel(
        &e,
        Path::new("/etc/hostname"),
        &["run", "--rm", "--isolation=vm", "busybox", "true"],
    );
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("/etc/hostname is not a guest kernel"), "{err}");
    assert_clean(&e);
    eventually("the virtiofsds to be gone", || virtiofsds(&e) == 0);
}
