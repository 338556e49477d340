//! The container lifecycle as a user types it: run -d, ps, logs, stop, start, kill, wait, rm,
//! inspect, rename, create, and the monitor that outlives the command (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{can_run, eventually, inspect, output_of, Engine, RunExt, MOAT};

#[test]
fn detached_container_lifecycle() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let script = "trap 'echo bye; exit 3' TERM; echo out; echo err >&2; \
                  while true; do sleep 0.05; done";
    let id = e.ok(&["run", "-d", "--name", "web", "busybox", "sh", "-c", script]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");

    // Listed while running, by id prefix, name and -q.
    let ps = e.ok(&["ps"]);
    let header = ps.lines().next().unwrap();
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "NAMES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let line = ps.lines().nth(1).unwrap();
    assert!(line.starts_with(&id[..12]) && line.contains("Up ") && line.ends_with("web"));
    assert_eq!(e.ok(&["ps", "-q"]).trim(), &id[..12]);
    assert_eq!(e.ok(&["ps", "-q", "--no-trunc"]).trim(), id);

    let st = inspect(&e, &id[..8]);
    assert_eq!(st["Name"], "/web");
    assert_eq!(st["State"]["Status"], "running");
    let pid = st["State"]["Pid"].as_i64().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    // Logs, with streams kept apart.
    eventually("logs", || e.ok(&["logs", "web"]).contains("out"));
    let out = e.moat(&["logs", "web"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let ts = e.ok(&["logs", "-t", "--tail", "2", "web"]);
    assert!(ts.starts_with("20") && ts.contains("Z out"), "{ts}");

    // rm of a running container is refused, and kill/stop reach it.
    let out = e.moat(&["rm", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("container is running"));
    assert_eq!(e.ok(&["stop", "web"]).trim(), "web");
    let st = inspect(&e, "web");
    assert_eq!(st["State"]["Status"], "exited");
    assert_eq!(st["State"]["ExitCode"], 3);
    assert!(e.ok(&["ps"]).lines().count() == 1);
    assert!(e.ok(&["ps", "-a"]).contains("Exited (3)"));
    assert!(e.ok(&["logs", "web"]).contains("bye"));
    // Stopped: no mount, no process, no runtime state.
    let root = e.dir.path().display().to_string();
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&format!("{root}/containers/{id}/rootfs")));

    // Started again: same container, logs appended; kill gives 128+9.
    assert_eq!(e.ok(&["start", "web"]).trim(), "web");
    assert_eq!(inspect(&e, "web")["State"]["Status"], "running");
    e.ok(&["kill", "web"]);
    assert_eq!(e.ok(&["wait", "web"]).trim(), "137");
    assert_eq!(e.ok(&["logs", "web"]).matches("out").count(), 2);
    let out = e.moat(&["kill", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not running"));

    e.ok(&["rename", "web", "web2"]);
    assert_eq!(inspect(&e, "web2")["Id"], id);
    assert_eq!(e.ok(&["rm", "web2"]).trim(), "web2");
    e.assert_clean();
}

#[test]
fn names_create_start_attach_and_bad_input() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let id = e.ok(&[
        "create",
        "--name",
        "job",
        "busybox",
        "sh",
        "-c",
        "echo hi; exit 4",
    ]);
    assert_eq!(inspect(&e, "job")["State"]["Status"], "created");
    assert!(e.ok(&["ps", "-a"]).contains("Created"));
    // A name in use, a bad name, an unknown container, an unknown image: clear errors, and
    // nothing new is left.
    let out = e.moat(&["run", "--name", "job", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"/job\" is already in use"));
    let out = e.moat(&["run", "--name", "bad/name", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid container name"));
    let out = e.moat(&["create", "--pull", "never", "nosuchimage"]);
    assert_eq!(out.status.code(), Some(125));
    for cmd in ["start", "stop", "kill", "rm", "wait", "logs", "inspect"] {
        let out = e.moat(&[cmd, "ghost"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("No such"),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = e.moat(&["run", "--log-opt", "max-size=big", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(e.ok(&["ps", "-aq"]).lines().count(), 1);
    assert_eq!(
        std::fs::read_dir(e.dir.path().join("containers"))
            .unwrap()
            .count(),
        1
    );

    // start -a attaches: the output and the exit code.
    let out = e.moat(&["start", "-a", id.trim()]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    // A kept foreground run: its logs stay after it exits.
    let out = e.moat(&["run", "--name", "fg", "busybox", "sh", "-c", "echo kept"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
    assert_eq!(e.ok(&["logs", "fg"]), "kept\n");
    // A container that cannot start is kept (as Docker does) with its error, exit 127.
    let out = e.moat(&["run", "--name", "broken", "busybox", "nosuch"]);
    assert_eq!(out.status.code(), Some(127));
    let st = inspect(&e, "broken");
    assert_eq!(st["State"]["ExitCode"], 127);
    assert!(st["State"]["Error"].as_str().unwrap().contains("nosuch"));
    // What a monitor killed between renaming an --rm container's directory and deleting it
    // leaves (`.rm-<id>`) goes with prune once old enough; a fresh one (its monitor at work)
    // stays.
    let containers = e.dir.path().join("containers");
    let stale = containers.join(".rm-0123456789abcdef");
    let fresh = containers.join(".rm-fedcba9876543210");
    for d in [&stale, &fresh] {
        std::fs::create_dir_all(d.join("upper/etc")).unwrap();
    }
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    e.ok(&["container", "prune", "-f"]);
    assert!(!stale.exists(), "an abandoned .rm- directory is swept");
    assert!(fresh.exists(), "a fresh one is its monitor's");
    std::fs::remove_dir_all(&fresh).unwrap();
    e.assert_clean();
}

#[test]
fn interactive_stdin_and_signal_proxy() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    // -i: the container reads moat's stdin.
    let mut child = Command::new(MOAT)
        .arg("--root")
        .arg(e.dir.path())
        .args(["run", "--rm", "-i", "busybox", "sh", "-c", "tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = common::read_within(child.stdout.take().unwrap(), "moat's output");
    assert_eq!(out, "HELLO\n");
    assert!(common::wait_or_dump(child, "run -i").success());

    // A signal to the attached moat goes to the container (Docker's --sig-proxy).
    let mut child = Command::new(MOAT)
        .arg("--root")
        .arg(e.dir.path())
        .args([
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-term; exit 9' TERM; echo ready; while true; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    stdout.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let rest = common::read_within(stdout, "run after SIGTERM");
    assert_eq!(rest, "got-term\n");
    assert_eq!(common::wait_or_dump(child, "run").code(), Some(9));
    e.assert_clean();
}

#[test]
fn the_monitor_outlives_the_command_and_its_death_is_reported() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    // A foreground run whose moat command is killed: the container keeps running under its
    // monitor, as with Docker and Podman.
    let mut child = Command::new(MOAT)
        .arg("--root")
        .arg(e.dir.path())
        .args(["run", "--name", "orphan", "busybox", "sleep", "30"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    eventually("running", || e.ok(&["ps", "-q"]).lines().count() == 1);
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let st = inspect(&e, "orphan");
    assert_eq!(st["State"]["Status"], "running");

    // A monitor killed with SIGKILL: the container is shown exited, with the reason.
    let mpid = common::monitor_of(st["Id"].as_str().unwrap()).expect("a monitor process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(mpid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("exited", || {
        inspect(&e, "orphan")["State"]["Status"] == "exited"
    });
    let st = inspect(&e, "orphan");
    assert!(
        st["State"]["Error"].as_str().unwrap().contains("monitor"),
        "{st}"
    );
    // rm cleans up what the dead monitor left (its container process, cgroup, mount).
    e.ok(&["rm", "-f", "orphan"]);
    e.assert_clean();
    // The container process went with rm.
    let pid = st["State"]["Pid"].as_i64().unwrap_or(0);
    if pid > 0 {
        eventually("container gone", || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
    }
}

#[test]
fn logs_rotate_by_size_and_follow() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let id = e.ok(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=2",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 300 ]; do echo line$i; i=$((i+1)); done; sleep 0.3; echo last",
    ]);
    let id = id.trim().to_string();
    // -f follows until the container exits, and ends with its last line.
    let out = e.ok(&["logs", "-f", &id]);
    assert!(out.ends_with("last\n"), "{out}");
    let dir = e.dir.path().join("containers").join(&id);
    let log = dir.join(format!("{id}-json.log"));
    assert!(std::fs::metadata(&log).unwrap().len() <= 2048);
    assert!(dir.join(format!("{id}-json.log.1")).exists());
    assert!(!dir.join(format!("{id}-json.log.2")).exists());
    // Docker's json-file lines.
    let first = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(v["stream"], "stdout");
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    let all = e.ok(&["logs", &id]);
    assert!(!all.contains("line0\n"), "rotated away");
    assert!(all.contains("line299\n"));
    e.ok(&["rm", &id]);
    e.assert_clean();
}

#[test]
fn exec_runs_in_the_container_with_docker_flags() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "30"]);
    // Same namespaces and root as the container's init.
    let st = inspect(&e, "box");
    let pid = st["State"]["Pid"].as_i64().unwrap();
    let init_mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    let out = e.ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "echo $$; readlink /proc/1/exe; readlink /proc/self/ns/mnt",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "1", "the exec'd process is not the init");
    assert_eq!(lines[1], "/bin/busybox");
    assert_eq!(lines[2], init_mnt.to_string_lossy());

    let out = e.ok(&[
        "exec",
        "-e",
        "FOO=bar",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "box",
        "sh",
        "-c",
        "id -u; pwd; echo $FOO; grep CapEff /proc/self/status",
    ]);
    assert_eq!(out, "65534\n/tmp\nbar\nCapEff:\t0000000000000000\n");
    assert_eq!(
        e.moat(&["exec", "box", "sh", "-c", "exit 5"]).status.code(),
        Some(5)
    );
    let out = e.moat(&["exec", "box", "no-such-cmd"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-cmd"));
    assert_eq!(
        e.moat(&["exec", "box", "/etc/passwd"]).status.code(),
        Some(126)
    );
    assert_eq!(
        e.moat(&["exec", "-w", "rel", "box", "true"]).status.code(),
        Some(1)
    );

    // -i passes stdin; -d returns at once and the process runs on.
    let (code, out, err) = e.with_input(&["exec", "-i", "box", "tr", "a-z", "A-Z"], b"abc\n");
    assert_eq!((code, out.as_str()), (0, "ABC\n"), "{err}");
    e.ok(&[
        "exec",
        "-d",
        "box",
        "sh",
        "-c",
        "sleep 0.2; touch /tmp/done",
    ]);
    eventually("detached exec", || {
        e.moat(&["exec", "box", "test", "-e", "/tmp/done"])
            .status
            .success()
    });

    // Not running: a clear error, exit 1.
    e.ok(&["stop", "-t", "0", "box"]);
    let out = e.moat(&["exec", "box", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not running"));
    e.ok(&["rm", "box"]);
    e.assert_clean();
}

#[test]
fn stop_signal_timeout_and_labels_are_kept() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "-l",
        "tier=web",
        "--stop-signal",
        "SIGUSR1",
        "--stop-timeout",
        "5",
        "busybox",
        "sh",
        "-c",
        "trap 'echo usr1; exit 0' USR1; echo ready; while true; do sleep 0.05; done",
    ]);
    let st = inspect(&e, "svc");
    assert_eq!(st["Config"]["Labels"]["tier"], "web");
    assert_eq!(st["Config"]["StopSignal"], "SIGUSR1");
    assert_eq!(st["Config"]["StopTimeout"], 5);
    eventually("trap set", || e.ok(&["logs", "svc"]).contains("ready"));
    e.ok(&["stop", "svc"]);
    assert!(e.ok(&["logs", "svc"]).contains("usr1"));
    assert_eq!(inspect(&e, "svc")["State"]["ExitCode"], 0);
    e.ok(&["rm", "svc"]);
    e.assert_clean();
}

/// `moat ... ` run under `script` (a real pty as moat's terminal), with `input` typed after
/// `delay`: (exit code, what the terminal showed).
/// `moat ARGS` on a real terminal ([`common::on_a_terminal`]).
fn on_a_terminal(e: &Engine, args: &str, ready: &str, input: &[u8]) -> (i32, String) {
    let cmd = format!("{MOAT} --root {} {args}", e.dir.path().display());
    common::on_a_terminal(&cmd, ready, input)
}

#[test]
fn terminals_with_t_and_it() {
    if !can_run() {
        return;
    }
    if Command::new("script").arg("--version").output().is_err() {
        panic!("script (util-linux's bsdutils) is missing: scripts/setup.sh installs it");
    }
    let e = Engine::with_busybox();
    // -t: the process's stdio is a terminal; TERM is set as Docker does; output is logged.
    let out = e.ok(&[
        "run",
        "--name",
        "tty",
        "-t",
        "busybox",
        "sh",
        "-c",
        "tty; echo $TERM",
    ]);
    assert_eq!(out, "/dev/pts/0\r\nxterm\r\n");
    assert_eq!(e.ok(&["logs", "tty"]), "/dev/pts/0\r\nxterm\r\n");
    assert_eq!(inspect(&e, "tty")["Config"]["Tty"], true);
    e.ok(&["rm", "tty"]);

    // -it on a real terminal: typed input reaches the container, its exit code comes back.
    let (code, out) = on_a_terminal(
        &e,
        "run --rm -it busybox sh -c 'echo ask; read x; echo got:$x; exit 4'",
        "ask",
        b"abc\n",
    );
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("got:abc"), "{out}");
    // Ctrl-C is a key like any other: it reaches the container's terminal as SIGINT.
    let (code, out) = on_a_terminal(
        &e,
        "run --rm -it busybox sh -c 'trap \"echo interrupted; exit 7\" INT; echo ready; \
         while true; do sleep 0.1; done'",
        "ready",
        b"\x03",
    );
    assert_eq!(code, 7, "{out}");
    assert!(out.contains("interrupted"), "{out}");
    // exec -t and -it: a pty of its own in the running container.
    e.ok(&["run", "-d", "--name", "shell", "busybox", "sleep", "100"]);
    assert_eq!(
        e.ok(&["exec", "-t", "shell", "sh", "-c", "tty; stty size"]),
        "/dev/pts/0\r\n24 80\r\n",
        "no terminal of ours: 24x80"
    );
    let (code, out) = on_a_terminal(
        &e,
        "exec -it shell sh",
        "# ",
        b"echo typed $((2+3))\nexit 6\n",
    );
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("typed 5"), "{out}");
    e.ok(&["rm", "-f", "shell"]);
    e.assert_clean();
}

fn layers(e: &Engine, image: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&e.ok(&["image", "inspect", image])).unwrap();
    v[0]["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn snapshots(e: &Engine) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut v: Vec<(String, u64)> = std::fs::read_dir(e.dir.path().join("image/snapshots"))
        .unwrap()
        .flatten()
        .filter(|d| !d.file_name().to_string_lossy().starts_with("tmp"))
        .map(|d| {
            (
                d.file_name().to_string_lossy().into_owned(),
                d.metadata().unwrap().ino(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn commit_makes_exactly_one_layer_over_the_referenced_base() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let base_layers = layers(&e, "busybox");
    let before = snapshots(&e);
    e.ok(&[
        "run",
        "-d",
        "--name",
        "src",
        "busybox",
        "sh",
        "-c",
        "echo new > /etc/added; rm /bin/ls; mkdir -p /opt/x; echo ready; \
         while true; do sleep 0.05; done",
    ]);
    eventually("changes made", || e.ok(&["logs", "src"]).contains("ready"));
    let id = e.ok(&[
        "commit",
        "-m",
        "my change",
        "-a",
        "me",
        "-c",
        "ENV COMMITTED=1",
        "src",
        "derived:1",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    // The container was paused for the commit and runs on.
    assert_eq!(inspect(&e, "src")["State"]["Status"], "running");

    // Exactly one new layer; the base's layers are the same digests and the same snapshot
    // directories (same inodes: referenced, not copied).
    let new_layers = layers(&e, "derived:1");
    assert_eq!(new_layers.len(), base_layers.len() + 1);
    assert_eq!(new_layers[..base_layers.len()], base_layers[..]);
    let after = snapshots(&e);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    for s in &before {
        assert!(after.contains(s), "base snapshot {s:?} changed");
    }
    // A container of the new image sees the change, deletions included.
    let out = e.ok(&[
        "run", "--rm", "derived:1", "sh", "-c",
        "cat /etc/added; test -e /bin/ls || echo ls-gone; echo $COMMITTED; test -d /opt/x && echo dir",
    ]);
    assert_eq!(out, "new\nls-gone\n1\ndir\n");
    let history = e.ok(&["image", "history", "derived:1"]);
    assert!(history.contains("my change"), "{history}");
    // As Docker's: the new image keeps the container's command, environment, working directory
    // and labels (not the runtime's HOSTNAME).
    e.ok(&[
        "run",
        "--name",
        "cfg",
        "-e",
        "FROM_RUN=yes",
        "-w",
        "/tmp",
        "-l",
        "kind=made",
        "busybox",
        "sh",
        "-c",
        "echo from $FROM_RUN in $(pwd)",
    ]);
    e.ok(&["commit", "cfg", "derived:2"]);
    assert_eq!(e.ok(&["run", "--rm", "derived:2"]), "from yes in /tmp\n");
    let img: serde_json::Value =
        serde_json::from_str(&e.ok(&["image", "inspect", "derived:2"])).unwrap();
    let cfg = &img[0]["Config"];
    assert_eq!(cfg["Labels"]["kind"], "made");
    assert!(!cfg["Env"].to_string().contains("HOSTNAME="), "{cfg}");
    e.ok(&["rm", "cfg"]);
    // The base image is untouched.
    let out = e.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "test -e /bin/ls && echo ls-here",
    ]);
    assert_eq!(out, "ls-here\n");
    // Bad input: an unknown container, a bad reference.
    assert_eq!(e.moat(&["commit", "ghost", "x:1"]).status.code(), Some(1));
    let out = e.moat(&["commit", "src", "Bad Name"]);
    assert_eq!(out.status.code(), Some(1));
    e.ok(&["rm", "-f", "src"]);
    e.assert_clean();
}

#[test]
fn pause_unpause_top_restart() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "pz",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/tick; sleep 0.02; done",
    ]);
    let top = e.ok(&["top", "pz"]);
    assert!(top.starts_with("UID"), "{top}");
    assert!(top.contains("while true"), "{top}");
    e.ok(&["pause", "pz"]);
    assert_eq!(inspect(&e, "pz")["State"]["Status"], "paused");
    assert!(e.ok(&["ps"]).contains("(Paused)"));
    let tick = |e: &Engine| e.ok(&["exec", "pz", "cat", "/tmp/tick"]);
    assert_eq!(
        e.moat(&["pause", "pz"]).status.code(),
        Some(1),
        "already paused"
    );
    e.ok(&["unpause", "pz"]);
    let t1 = tick(&e);
    std::thread::sleep(Duration::from_millis(100));
    assert_ne!(tick(&e), t1, "runs again after unpause");
    assert_eq!(
        e.moat(&["unpause", "pz"]).status.code(),
        Some(1),
        "not paused"
    );
    // A paused container still stops.
    e.ok(&["pause", "pz"]);
    let pid1 = inspect(&e, "pz")["State"]["Pid"].as_i64().unwrap();
    e.ok(&["restart", "-t", "1", "pz"]);
    let st = inspect(&e, "pz");
    assert_eq!(st["State"]["Status"], "running");
    assert_ne!(st["State"]["Pid"].as_i64().unwrap(), pid1);
    e.ok(&["rm", "-f", "pz"]);
    e.assert_clean();
}

#[test]
fn a_detached_run_lets_go_of_the_callers_output() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    // Both of the caller's streams are pipes read to their end (as `2>&1 | cat` or a CI
    // runner does): the command must end when the container runs, not when it exits.
    let t = Instant::now();
    let out = output_of(
        Command::new(common::MOAT)
            .arg("--root")
            .arg(e.dir.path())
            // A published port: the monitor's port helper must let go too.
            .args([
                "run", "-d", "--name", "long", "-p", "80", "busybox", "sleep", "60",
            ]),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    e.ok(&["rm", "-f", "long"]);
}

#[test]
fn a_terminal_follows_the_callers_window() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    // The caller's terminal: a pty made by python; its size changes while the container runs,
    // which sends the caller SIGWINCH, as a terminal emulator's resize does.
    let script = r#"
import os, time, fcntl, termios, struct, sys
fd, slave = os.openpty()
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 60, 0, 0))
pid = os.fork()
if pid == 0:
    os.close(fd)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for n in (0, 1, 2):
        os.dup2(slave, n)
    os.execv(sys.argv[1], ["moat", "--root", sys.argv[2], "run", "--rm", "-t", "busybox", "sh", "-c", "stty size; sleep 1; stty size"])
os.close(slave)
time.sleep(0.5)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
out = b""
while True:
    try:
        d = os.read(fd, 1024)
    except OSError:
        break
    if not d:
        break
    out += d
os.waitpid(pid, 0)
sys.stdout.write(out.decode())
"#;
    let out = output_of(
        Command::new("python3")
            .args(["-c", script, MOAT])
            .arg(e.dir.path()),
    );
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert_eq!(text, "20 60\n40 120\n", "{out:?}");
    // `exec -t` too.
    e.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "60"]);
    let exec_script = script.replace(
        r#""run", "--rm", "-t", "busybox","#,
        r#""exec", "-t", "box","#,
    );
    let out = output_of(
        Command::new("python3")
            .args(["-c", &exec_script, MOAT])
            .arg(e.dir.path()),
    );
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert_eq!(text, "20 60\n40 120\n", "{out:?}");
    e.ok(&["rm", "-f", "box"]);
}

#[test]
fn detach_keys_leave_the_container_running() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    // `run -it` on a python-made terminal; ctrl-p ctrl-q once the shell answered.
    let script = r#"
import os, time, fcntl, termios, sys
fd, slave = os.openpty()
pid = os.fork()
if pid == 0:
    os.close(fd)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for n in (0, 1, 2):
        os.dup2(slave, n)
    os.execv(sys.argv[1], ["moat", "--root", sys.argv[2], "run", "-it", "--name", "det", "busybox", "sh"])
os.close(slave)
out = b""
os.write(fd, b"echo ready-$((40+2))\r")
deadline = time.time() + 20
while b"ready-42" not in out and time.time() < deadline:
    out += os.read(fd, 1024)
os.write(fd, b"\x10\x11")
# The command must end; a second try is reported (seen once under a loaded full run), and a
# third never made: the test fails rather than hang.
for attempt in range(2):
    deadline = time.time() + 10
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("exit", os.waitstatus_to_exitcode(status), "attempt", attempt)
            sys.exit(0)
        time.sleep(0.05)
    os.write(fd, b"\x10\x11")
os.kill(pid, 9)
print("still attached")
"#;
    let out = output_of(
        Command::new("python3")
            .args(["-c", script, MOAT])
            .arg(e.dir.path()),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("exit 0"), "{out:?}");
    if !text.contains("attempt 0") {
        eprintln!("NOTE: the detach keys took a second try: {text}");
    }
    assert_eq!(inspect(&e, "det")["State"]["Status"], "running");
    // Still usable: another exec answers.
    assert_eq!(e.ok(&["exec", "det", "echo", "alive"]).trim(), "alive");
    e.ok(&["rm", "-f", "det"]);
}

#[test]
fn reset_cleans_a_container_directory_without_its_record() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&["create", "--name", "half", "busybox", "true"]);
    // What a `create` killed between mounting the rootfs and recording the row leaves.
    let db = e.dir.path().join("image/moat.db");
    let out = output_of(Command::new("python3").args([
        "-c",
        "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM containers'); c.commit()",
        db.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(e.ok(&["ps", "-aq"]), "");
    let root = e.dir.path().display().to_string();
    assert!(std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&root));
    e.ok(&["system", "reset", "--force"]);
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&root));
}
