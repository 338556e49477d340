//! `moat serve` driven by the real docker CLI (`DOCKER_HOST=unix://...`), unchanged (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::{docker, docker_cmd, docker_present, ok, Server};
use common::registry::{Auth, Registry};
use common::{can_run, output_of, Engine};

#[test]
fn docker_cli_runs_lists_logs_stops_and_removes() {
    if !can_run() || !docker_present() {
        return;
    }
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    let v = ok(
        &e,
        &s,
        &[
            "version",
            "--format",
            "{{.Server.APIVersion}} {{.Server.MinAPIVersion}}",
        ],
    );
    assert_eq!(v.trim(), "1.50 1.24");
    let info = ok(
        &e,
        &s,
        &["info", "--format", "{{.Images}} {{.Driver}} {{.OSType}}"],
    );
    assert_eq!(info.trim(), "1 overlay2 linux");
    assert!(ok(&e, &s, &["images"]).contains("busybox"));

    // Attached: stdout and stderr apart, the exit code back, the container removed (--rm).
    let out = docker(
        &e,
        &s,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // Standard input with -i.
    let mut child = docker_cmd(&e, &s)
        .args(["run", "-i", "--rm", "busybox", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"shout\n").unwrap();
    }
    let out = common::read_within(child.stdout.take().unwrap(), "docker run -i");
    assert!(common::wait_or_dump(child, "docker run -i").success());
    assert_eq!(out, "SHOUT\n");

    // Detached, then logs, logs -f, inspect, ps, stop, rm.
    let id = ok(
        &e,
        &s,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "busybox",
            "sh",
            "-c",
            "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    assert_eq!(id.trim().len(), 64, "{id}");
    common::eventually("the container's first line", || {
        ok(&e, &s, &["logs", "web"]).contains("ready")
    });
    let ps = ok(&e, &s, &["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.starts_with("web Up"), "{ps}");
    assert_eq!(
        ok(
            &e,
            &s,
            &["inspect", "-f", "{{.State.Status}} {{.Name}}", "web"]
        )
        .trim(),
        "running /web"
    );
    // exec: output, exit code, standard input, detached.
    assert_eq!(
        ok(&e, &s, &["exec", "web", "echo", "in", "web"]),
        "in web\n"
    );
    let out = docker(&e, &s, &["exec", "web", "sh", "-c", "echo e >&2; exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "e\n");
    assert_eq!(
        docker(&e, &s, &["exec", "web", "no-such-cmd"])
            .status
            .code(),
        Some(127)
    );
    ok(
        &e,
        &s,
        &["exec", "-d", "web", "sh", "-c", "echo bg > /tmp/bg"],
    );
    common::eventually("the detached exec's file", || {
        docker(&e, &s, &["exec", "web", "cat", "/tmp/bg"]).stdout == b"bg\n"
    });
    // exec -t: a pty in the container, one raw stream.
    let out = ok(
        &e,
        &s,
        &["exec", "-t", "web", "sh", "-c", "tty; echo $TERM"],
    );
    assert_eq!(out, "/dev/pts/0\r\nxterm\r\n");
    // exec -it from a real terminal (script): typed input reaches the shell, its code returns.
    let cmd = format!(
        "DOCKER_HOST=unix://{} DOCKER_CONFIG={} /usr/local/bin/docker exec -it web sh",
        s.sock.display(),
        e.dir.path().join("docker-cli").display()
    );
    let (code, out) = common::on_a_terminal(&cmd, "# ", b"echo typed $((2+3))\nexit 6\n");
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("typed 5"), "{out}");
    let follower = docker_cmd(&e, &s)
        .args(["logs", "-f", "web"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    ok(&e, &s, &["stop", "web"]);
    let mut follower = follower;
    let followed = common::read_within(follower.stdout.take().unwrap(), "docker logs -f");
    assert!(common::wait_or_dump(follower, "docker logs -f").success());
    assert_eq!(
        followed, "ready\nbye\n",
        "logs -f ends when the container does"
    );
    let ps = ok(&e, &s, &["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.starts_with("web Exited (0)"), "{ps}");
    ok(&e, &s, &["rm", "web"]);
    assert_eq!(ok(&e, &s, &["ps", "-aq"]), "");

    // Errors as dockerd's.
    let out = docker(&e, &s, &["rm", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such container: nope"));
    let out = docker(
        &e,
        &s,
        &["run", "--pull", "never", "--rm", "no-such-image", "true"],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such image"),
        "{out:?}"
    );
    let out = docker(&e, &s, &["run", "--rm", "busybox", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    let out = docker(
        &e,
        &s,
        &["run", "--rm", "--isolation", "kvm", "busybox", "true"],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid isolation"));
    ok(
        &e,
        &s,
        &["run", "-d", "--name", "killme", "busybox", "sleep", "60"],
    );
    ok(&e, &s, &["rm", "-f", "killme"]);
    assert_eq!(ok(&e, &s, &["ps", "-aq"]), "");
    drop(s);
    common::RunExt::assert_clean(&e);
}

#[test]
fn docker_cli_pulls_pushes_tags_and_removes_images() {
    if !can_run() || !docker_present() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    let image = reg.name("api/bb:v1");
    ok(&e, &s, &["tag", "busybox", &image]);
    let out = ok(&e, &s, &["push", &image]);
    assert!(
        out.contains("Pushed") && out.contains("digest: sha256:"),
        "{out}"
    );
    ok(&e, &s, &["rmi", &image]);

    let other = Engine::new();
    let s2 = Server::start(&other);
    let out = ok(&other, &s2, &["pull", &image]);
    assert!(
        out.contains("Pull complete") && out.contains("Downloaded newer image"),
        "{out}"
    );
    let out = ok(
        &other,
        &s2,
        &["run", "--rm", &image, "echo", "pulled through the API"],
    );
    assert_eq!(out, "pulled through the API\n");
    let out = ok(
        &other,
        &s2,
        &["image", "inspect", "-f", "{{index .RepoTags 0}}", &image],
    );
    assert_eq!(out.trim(), image);
    // docker run pulls a missing image itself (create answers 404, the CLI pulls, retries).
    let third = Engine::new();
    let s3 = Server::start(&third);
    let out = docker(&third, &s3, &["run", "--rm", &image, "echo", "auto-pulled"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "auto-pulled\n",
        "{out:?}"
    );
    let out = ok(&other, &s2, &["rmi", &image]);
    assert!(out.contains("Untagged") && out.contains("Deleted"), "{out}");
    let out = docker(&other, &s2, &["pull", &reg.name("api/none:v1")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );
}

#[test]
fn docker_cli_volume_commands() {
    if !can_run() || !docker_present() {
        return;
    }
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    assert_eq!(
        ok(&e, &s, &["volume", "create", "--label", "k=v", "data"]).trim(),
        "data"
    );
    let ls = ok(
        &e,
        &s,
        &["volume", "ls", "--format", "{{.Driver}} {{.Name}}"],
    );
    assert_eq!(ls.trim(), "local data");
    ok(
        &e,
        &s,
        &[
            "run",
            "--name",
            "writer",
            "-v",
            "data:/d",
            "busybox",
            "sh",
            "-c",
            "echo kept > /d/f",
        ],
    );
    let out = ok(
        &e,
        &s,
        &["run", "--rm", "-v", "data:/d", "busybox", "cat", "/d/f"],
    );
    assert_eq!(out, "kept\n");
    // --mount arrives as HostConfig.Mounts.
    let out = ok(
        &e,
        &s,
        &[
            "run",
            "--rm",
            "--mount",
            "type=volume,source=data,target=/m,readonly",
            "busybox",
            "sh",
            "-c",
            "cat /m/f; touch /m/x 2>/dev/null || echo ro",
        ],
    );
    assert_eq!(out, "kept\nro\n");
    let out = ok(
        &e,
        &s,
        &[
            "run",
            "--rm",
            "--mount",
            "type=tmpfs,target=/t",
            "busybox",
            "sh",
            "-c",
            "grep -c ' /t tmpfs' /proc/mounts",
        ],
    );
    assert_eq!(out, "1\n");
    let label = ok(
        &e,
        &s,
        &[
            "volume",
            "inspect",
            "-f",
            "{{.Labels.k}} {{.Scope}}",
            "data",
        ],
    );
    assert_eq!(label.trim(), "v local");
    let out = docker(&e, &s, &["volume", "rm", "data"]);
    assert_eq!(out.status.code(), Some(1), "in use by writer");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{out:?}"
    );
    ok(&e, &s, &["rm", "writer"]);
    ok(&e, &s, &["volume", "rm", "data"]);
    let out = docker(&e, &s, &["volume", "rm", "data"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such volume"),
        "{out:?}"
    );
    // An anonymous volume (-v /path) goes with prune once unused.
    ok(
        &e,
        &s,
        &["run", "--name", "anon", "-v", "/scratch", "busybox", "true"],
    );
    ok(&e, &s, &["rm", "anon"]);
    ok(&e, &s, &["volume", "create", "named"]);
    let out = ok(&e, &s, &["volume", "prune", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    let ls = ok(&e, &s, &["volume", "ls", "-q"]);
    assert_eq!(ls.trim(), "named", "named volumes stay, as Docker 23+");
}

#[test]
fn docker_py_suite() {
    if !can_run() || !docker_present() {
        return;
    }
    let py = output_of(Command::new("python3").args(["-c", "import docker, pytest"]));
    assert!(
        py.status.success(),
        "docker-py and pytest are missing: scripts/setup.sh installs them ({})",
        String::from_utf8_lossy(&py.stderr)
    );
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    let suite = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dockerpy");
    let out = output_of(
        Command::new("python3")
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", suite])
            .env("DOCKER_HOST", format!("unix://{}", s.sock.display()))
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    assert!(
        out.status.success(),
        "docker-py suite failed:\n{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(e.dir.path().join("serve.log")).unwrap_or_default()
    );
}

#[test]
fn fifty_concurrent_docker_runs_succeed_and_leave_nothing() {
    if !can_run() || !docker_present() {
        return;
    }
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    let children: Vec<(usize, Child)> = (0..50)
        .map(|i| {
            let child = docker_cmd(&e, &s)
                .args([
                    "run",
                    "--rm",
                    "busybox",
                    "sh",
                    "-c",
                    &format!("echo run {i}"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (i, child)
        })
        .collect();
    for (i, mut child) in children {
        let out = common::read_within(child.stdout.take().unwrap(), "docker run");
        let err = common::read_within(child.stderr.take().unwrap(), "docker run");
        let status = common::wait_or_dump(child, "docker run");
        assert!(status.success(), "run {i}: {status:?}: {err}");
        assert_eq!(out, format!("run {i}\n"));
    }
    assert_eq!(ok(&e, &s, &["ps", "-aq"]), "");
    drop(s);
    common::RunExt::assert_clean(&e);
}

#[test]
fn docker_cli_top_pause_rename_stats_commit_prune_df() {
    if !can_run() || !docker_present() {
        return;
    }
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    ok(
        &e,
        &s,
        &["run", "-d", "--name", "box", "busybox", "sleep", "100"],
    );
    let top = ok(&e, &s, &["top", "box"]);
    assert!(top.contains("PID") && top.contains("sleep 100"), "{top}");
    ok(&e, &s, &["pause", "box"]);
    let st = ok(&e, &s, &["ps", "--format", "{{.Status}}"]);
    assert!(st.contains("(Paused)"), "{st}");
    assert_eq!(
        ok(&e, &s, &["inspect", "-f", "{{.State.Paused}}", "box"]).trim(),
        "true"
    );
    ok(&e, &s, &["unpause", "box"]);
    ok(&e, &s, &["rename", "box", "box2"]);
    assert_eq!(ok(&e, &s, &["ps", "--format", "{{.Names}}"]).trim(), "box2");
    let stats = ok(
        &e,
        &s,
        &[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.PIDs}}",
            "box2",
        ],
    );
    assert_eq!(stats.trim(), "box2 1");
    let mem = ok(
        &e,
        &s,
        &["stats", "--no-stream", "--format", "{{.MemUsage}}", "box2"],
    );
    assert!(
        !mem.contains("EiB"),
        "no limit shows the host's memory: {mem}"
    );

    ok(
        &e,
        &s,
        &[
            "run",
            "--name",
            "writer",
            "busybox",
            "sh",
            "-c",
            "echo committed > /new",
        ],
    );
    let id = ok(
        &e,
        &s,
        &[
            "commit",
            "-c",
            r#"CMD ["cat", "/new"]"#,
            "-m",
            "a note",
            "writer",
            "made:v1",
        ],
    );
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(ok(&e, &s, &["run", "--rm", "made:v1"]), "committed\n");
    let hist = ok(&e, &s, &["history", "--format", "{{.Comment}}", "made:v1"]);
    assert!(hist.contains("a note"), "{hist}");

    let df = ok(
        &e,
        &s,
        &[
            "system",
            "df",
            "--format",
            "{{.Type}} {{.TotalCount}} {{.Active}}",
        ],
    );
    assert!(df.contains("Images 2 1"), "{df}");
    assert!(df.contains("Containers 2 1"), "{df}");
    let out = ok(&e, &s, &["container", "prune", "-f"]);
    assert!(out.contains("Deleted Containers"), "{out}");
    assert_eq!(
        ok(&e, &s, &["ps", "-a", "--format", "{{.Names}}"]).trim(),
        "box2"
    );
    ok(&e, &s, &["rmi", "made:v1"]);
    ok(&e, &s, &["image", "prune", "-f"]);
    ok(&e, &s, &["rm", "-f", "box2"]);
}

#[test]
fn docker_cli_cp_both_ways() {
    if !can_run() || !docker_present() {
        return;
    }
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    ok(&e, &s, &["run", "-d", "--name", "box", "busybox", "sh", "-c",
        "echo inside > /tmp/f; mkdir -p /tmp/d/sub; echo deep > /tmp/d/sub/x; mkdir /data; echo mine > /data/secret; ln -s /data /tmp/escape; touch /tmp/ready; sleep 100"]);
    common::eventually("the container's files", || {
        docker(&e, &s, &["exec", "box", "test", "-e", "/tmp/ready"])
            .status
            .success()
    });
    let host = e.dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    let h = |p: &str| host.join(p).display().to_string();
    ok(&e, &s, &["cp", "box:/tmp/f", &h("f")]);
    assert_eq!(std::fs::read_to_string(host.join("f")).unwrap(), "inside\n");
    ok(&e, &s, &["cp", "box:/tmp/d", &h("d")]);
    assert_eq!(
        std::fs::read_to_string(host.join("d/sub/x")).unwrap(),
        "deep\n"
    );
    std::fs::write(host.join("up"), "from host\n").unwrap();
    ok(&e, &s, &["cp", &h("up"), "box:/tmp/"]);
    assert_eq!(
        ok(&e, &s, &["exec", "box", "cat", "/tmp/up"]),
        "from host\n"
    );
    // Owned by root in the container unless -a (copyUIDGID), as dockerd does.
    std::os::unix::fs::chown(host.join("up"), Some(1234), Some(2345)).unwrap();
    ok(&e, &s, &["cp", &h("up"), "box:/tmp/as-root"]);
    ok(&e, &s, &["cp", "-a", &h("up"), "box:/tmp/as-owner"]);
    let owners = ok(
        &e,
        &s,
        &[
            "exec",
            "box",
            "stat",
            "-c",
            "%u:%g",
            "/tmp/as-root",
            "/tmp/as-owner",
        ],
    );
    assert_eq!(owners, "0:0\n1234:2345\n");
    ok(&e, &s, &["cp", &h("up"), "box:/tmp/renamed"]);
    assert_eq!(
        ok(&e, &s, &["exec", "box", "cat", "/tmp/renamed"]),
        "from host\n"
    );
    ok(&e, &s, &["cp", &h("d"), "box:/tmp/d2"]);
    assert_eq!(
        ok(&e, &s, &["exec", "box", "cat", "/tmp/d2/sub/x"]),
        "deep\n"
    );
    // An absolute symlink in the container resolves inside it (/data is the container's).
    ok(&e, &s, &["cp", "box:/tmp/escape/secret", &h("secret")]);
    assert_eq!(
        std::fs::read_to_string(host.join("secret")).unwrap(),
        "mine\n"
    );
    let out = docker(&e, &s, &["cp", "box:/nope", &h("x")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Could not find the file /nope"),
        "{out:?}"
    );
    ok(&e, &s, &["rm", "-f", "box"]);
}

#[test]
fn docker_cli_events() {
    if !can_run() || !docker_present() {
        return;
    }
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    // A live follower sees what happens after it started.
    let mut follower = docker_cmd(&e, &s)
        .args([
            "events",
            "--filter",
            "type=container",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        docker(
            &e,
            &s,
            &["run", "--name", "evt", "busybox", "sh", "-c", "exit 2"]
        )
        .status
        .code(),
        Some(2)
    );
    ok(&e, &s, &["rm", "evt"]);
    ok(&e, &s, &["volume", "create", "evv"]);
    ok(&e, &s, &["tag", "busybox", "evimg:v1"]);
    let out = ok(
        &e,
        &s,
        &[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 1)
            .to_string(),
            "--format",
            "{{.Type}} {{.Action}}",
        ],
    );
    for want in [
        "container create",
        "container start",
        "container die",
        "container destroy",
        "volume create",
        "image tag",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
    // A container of the command line's is seen by the server's clients too (one journal),
    // and the command line's `moat events` sees what the server did.
    e.ok(&[
        "run",
        "--rm",
        "--name",
        "clievt",
        "-l",
        "evlabel=yes",
        "--network",
        "none",
        "busybox",
        "true",
    ]);
    let cli = e.ok(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &common::now_arg(),
        "--filter",
        "type=volume",
    ]);
    assert!(cli.contains(" volume create evv"), "{cli}");
    // Container events carry the container's labels (compose filters its project's by them),
    // its destroy too.
    let labelled = e.ok(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &common::now_arg(),
        "--filter",
        "label=evlabel=yes",
        "--format",
        "{{.Action}}",
    ]);
    assert_eq!(
        labelled.lines().collect::<Vec<_>>(),
        ["create", "start", "die", "destroy"],
        "{labelled}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follower.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let live = common::read_within(follower.stdout.take().unwrap(), "docker events");
    let _ = follower.wait();
    assert!(
        live.contains("create evt") && live.contains("die evt") && live.contains("destroy evt"),
        "{live}"
    );
    assert!(
        live.contains("create clievt") && live.contains("die clievt"),
        "{live}"
    );
    assert!(!live.contains("volume"), "filtered to containers: {live}");

    // SIGTERM stops the server promptly even with an endless stream open.
    let mut held = docker_cmd(&e, &s)
        .arg("events")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut s = s;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let until = Instant::now() + Duration::from_secs(15);
    while s.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < until,
            "moat serve did not stop within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!s.sock.exists(), "the socket goes with the server");
    let _ = held.kill();
    let _ = held.wait();
}

#[test]
fn docker_compose_up_ps_logs_down() {
    if !can_run() || !docker_present() {
        return;
    }
    assert!(
        std::path::Path::new("/usr/bin/docker-compose").exists(),
        "docker-compose missing: scripts/setup.sh installs Debian's"
    );
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    let proj = e.dir.path().join("shop");
    std::fs::create_dir(&proj).unwrap();
    // The project's default network: the worker reaches the web service by its name.
    std::fs::write(
        proj.join("docker-compose.yml"),
        r#"version: "3"
services:
  web:
    image: busybox
    stop_grace_period: 1s
    command: sh -c 'mkdir -p /www && echo hello from web > /www/index.html && echo web up && exec httpd -f -p 80 -h /www'
  worker:
    image: busybox
    environment:
      ROLE: worker
    command: sh -c 'trap "exit 0" TERM; echo $$ROLE up; while true; do printf "GET / HTTP/1.0\r\n\r\n" | nc -w 2 web 80 | tail -1; sleep 0.2; done'
"#,
    )
    .unwrap();
    let compose = |args: &[&str]| {
        output_of(
            Command::new("/usr/bin/docker-compose")
                .current_dir(&proj)
                .env("DOCKER_HOST", format!("unix://{}", s.sock.display()))
                .env("DOCKER_CONFIG", e.dir.path().join("docker-cli"))
                .args(args)
                .stdin(Stdio::null()),
        )
    };
    let out = compose(&["up", "-d"]);
    assert!(out.status.success(), "{out:?}");
    let ps = compose(&["ps"]);
    let table = String::from_utf8_lossy(&ps.stdout).into_owned();
    assert!(
        table.contains("shop_web_1") && table.contains("shop_worker_1"),
        "{table}"
    );
    assert_eq!(table.matches(" Up ").count(), 2, "{table}");
    common::eventually(
        "both services' first lines, and web's page by its name",
        || {
            let logs =
                String::from_utf8_lossy(&compose(&["logs", "--no-color"]).stdout).into_owned();
            logs.contains("web up") && logs.contains("worker up") && logs.contains("hello from web")
        },
    );
    assert!(ok(&e, &s, &["network", "ls"]).contains("shop_default"));
    // A changed service is recreated (compose reads the image's ContainerConfig for that).
    let text = std::fs::read_to_string(proj.join("docker-compose.yml")).unwrap();
    std::fs::write(
        proj.join("docker-compose.yml"),
        text.replace("ROLE: worker", "ROLE: second"),
    )
    .unwrap();
    let out = compose(&["up", "-d"]);
    assert!(out.status.success(), "{out:?}");
    common::eventually("the recreated worker", || {
        String::from_utf8_lossy(&compose(&["logs", "--no-color", "worker"]).stdout)
            .contains("second up")
    });
    let out = compose(&["down"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(ok(&e, &s, &["ps", "-aq"]), "");
    assert!(!ok(&e, &s, &["network", "ls"]).contains("shop_default"));
}

#[test]
fn docker_cli_save_and_load() {
    if !can_run() || !docker_present() {
        return;
    }
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    ok(&e, &s, &["tag", "busybox", "keep:v1"]);
    let archive = e.dir.path().join("saved.tar");
    ok(
        &e,
        &s,
        &["save", "-o", archive.to_str().unwrap(), "keep:v1"],
    );
    assert!(std::fs::metadata(&archive).unwrap().len() > 1_000_000);
    let id = ok(&e, &s, &["images", "-q", "--no-trunc", "keep:v1"]);
    ok(&e, &s, &["rmi", "keep:v1", "busybox"]);
    assert_eq!(ok(&e, &s, &["images", "-q"]), "");
    let out = ok(&e, &s, &["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains("Loaded image: keep:v1"), "{out}");
    assert_eq!(
        ok(&e, &s, &["images", "-q", "--no-trunc", "keep:v1"]),
        id,
        "same image id"
    );
    assert_eq!(
        ok(&e, &s, &["run", "--rm", "keep:v1", "echo", "loaded"]),
        "loaded\n"
    );
    // Unknown names and garbage archives are refused clearly.
    let out = docker(
        &e,
        &s,
        &["save", "-o", archive.to_str().unwrap(), "nope:v1"],
    );
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(&archive, b"not a tar at all").unwrap();
    let out = docker(&e, &s, &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn docker_login_then_push_and_pull_with_basic_auth() {
    if !can_run() || !docker_present() {
        return;
    }
    let reg = Registry::start(Auth::Basic {
        user: "carol",
        password: "s3cret",
    });
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    let login = |password: &str| {
        let mut child = docker_cmd(&e, &s)
            .args(["login", "-u", "carol", "--password-stdin", &reg.addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = login("wrong");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unauthorized"),
        "{out:?}"
    );
    let out = login("s3cret");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"));
    // The CLI now sends the credentials (X-Registry-Auth) with push and pull.
    let image = reg.name("private/bb:v1");
    ok(&e, &s, &["tag", "busybox", &image]);
    let out = ok(&e, &s, &["push", &image]);
    assert!(out.contains("Pushed"), "{out}");
    ok(&e, &s, &["rmi", &image]);
    ok(&e, &s, &["pull", &image]);
    ok(&e, &s, &["logout", &reg.addr]);
    let out = docker(&e, &s, &["push", &image]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unauthorized")
            || String::from_utf8_lossy(&out.stderr).contains("unauthorized"),
        "{out:?}"
    );
}

#[test]
fn docker_cli_network_commands_and_published_ports() {
    if !can_run() || !docker_present() {
        return;
    }
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    let id = ok(
        &e,
        &s,
        &[
            "network",
            "create",
            "--subnet",
            "10.66.0.0/24",
            "--label",
            "team=a",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "apinet",
        ],
    );
    assert_eq!(id.trim().len(), 64, "{id}");
    let ls = ok(&e, &s, &["network", "ls"]);
    for n in ["apinet", "bridge", "host", "none"] {
        assert!(ls.contains(n), "{ls}");
    }
    let f = ok(&e, &s, &["network", "ls", "-q", "--filter", "label=team=a"]);
    assert_eq!(f.trim(), &id.trim()[..12]);
    let dup = docker(&e, &s, &["network", "create", "apinet"]);
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("already exists"),
        "{dup:?}"
    );
    ok(
        &e,
        &s,
        &[
            "run",
            "-d",
            "--name",
            "srv",
            "--network",
            "apinet",
            "--ip",
            "10.66.0.50",
            "-p",
            "127.0.0.1:18081:80",
            "busybox",
            "sh",
            "-c",
            "mkdir -p /w && echo api > /w/index.html && exec httpd -f -p 80 -h /w",
        ],
    );
    assert_eq!(ok(&e, &s, &["port", "srv", "80"]).trim(), "127.0.0.1:18081");
    let ip = ok(
        &e,
        &s,
        &[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.apinet.IPAddress}}",
            "srv",
        ],
    );
    assert_eq!(ip.trim(), "10.66.0.50");
    // The MTU option reaches the container's interface.
    let mtu = ok(
        &e,
        &s,
        &[
            "run",
            "--rm",
            "--network",
            "apinet",
            "busybox",
            "cat",
            "/sys/class/net/eth0/mtu",
        ],
    );
    assert_eq!(mtu.trim(), "1400");
    let inspect = ok(&e, &s, &["network", "inspect", "apinet"]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.66.0.0/24");
    assert!(inspect.contains("\"srv\""), "{inspect}");
    common::eventually("the published port answers", || {
        std::net::TcpStream::connect(("127.0.0.1", 18081)).is_ok_and(|mut c| {
            use std::io::{Read, Write};
            let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            out.ends_with("api\n")
        })
    });
    let busy = docker(&e, &s, &["network", "rm", "apinet"]);
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("active endpoints"),
        "{busy:?}"
    );
    // A stopped container is connected and disconnected for its next start.
    ok(&e, &s, &["create", "--name", "later", "busybox", "true"]);
    ok(&e, &s, &["network", "connect", "apinet", "later"]);
    let nets = ok(
        &e,
        &s,
        &[
            "inspect",
            "-f",
            "{{len .NetworkSettings.Networks}}",
            "later",
        ],
    );
    assert_eq!(nets.trim(), "2");
    ok(&e, &s, &["network", "disconnect", "apinet", "later"]);
    ok(&e, &s, &["rm", "-f", "srv", "later"]);
    ok(&e, &s, &["network", "rm", "apinet"]);
    let gone = docker(&e, &s, &["network", "inspect", "apinet"]);
    assert!(!gone.status.success());
    assert!(docker(&e, &s, &["network", "rm", "bridge"]).status.code() != Some(0));
    let pruned = ok(&e, &s, &["network", "prune", "-f"]);
    assert!(!pruned.contains("bridge"), "{pruned}");
}

#[test]
fn docker_cli_update_changes_limits_at_once_and_the_restart_policy() {
    if !can_run() || !docker_present() {
        return;
    }
    let e = Engine::with_busybox();
    let s = Server::start(&e);
    ok(
        &e,
        &s,
        &["run", "-d", "--name", "upd", "busybox", "sleep", "60"],
    );
    ok(
        &e,
        &s,
        &[
            "update",
            "--memory",
            "64m",
            "--memory-swap",
            "128m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "50",
            "--restart",
            "on-failure:3",
            "upd",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&e, &s, &["inspect", "upd"])).unwrap();
    let hc = &v[0]["HostConfig"];
    assert_eq!(hc["Memory"], 64 << 20, "{hc}");
    assert_eq!(hc["MemorySwap"], 128 << 20, "{hc}");
    assert_eq!(hc["NanoCpus"], 500_000_000, "{hc}");
    assert_eq!(hc["PidsLimit"], 50, "{hc}");
    assert_eq!(hc["RestartPolicy"]["Name"], "on-failure", "{hc}");
    assert_eq!(hc["RestartPolicy"]["MaximumRetryCount"], 3, "{hc}");
    // The running container's cgroup has the new limits now.
    let id = v[0]["Id"].as_str().unwrap();
    let cg = |ctl: &str, file: &str| {
        let v1 = format!("/sys/fs/cgroup/{ctl}/moat/{id}/{file}");
        std::fs::read_to_string(v1)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(
        cg("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(cg("pids", "pids.max"), "50");
    // Bad values are refused, nothing changed.
    let bad = docker(&e, &s, &["update", "--memory", "256m", "upd"]);
    assert!(!bad.status.success(), "{bad:?}");
    assert!(cg("memory", "memory.limit_in_bytes") == (64u64 << 20).to_string());
    ok(&e, &s, &["rm", "-f", "upd"]);
    // A new restart policy reaches a running container's monitor: it restarts on failure.
    ok(
        &e,
        &s,
        &[
            "run",
            "-d",
            "--name",
            "rst",
            "busybox",
            "sh",
            "-c",
            "sleep 1; exit 3",
        ],
    );
    e.ok(&["update", "--restart", "on-failure:2", "rst"]);
    common::eventually("two restarts", || {
        let v = common::inspect(&e, "rst");
        v["RestartCount"] == 2 && v["State"]["Status"] == "exited"
    });
}

#[test]
fn serve_restarts_what_the_restart_policy_keeps_running_after_a_reboot() {
    if !can_run() || !docker_present() {
        return;
    }
    let e = Engine::with_busybox();
    for (name, policy) in [
        ("al", "always"),
        ("us", "unless-stopped"),
        ("usstop", "unless-stopped"),
        ("plain", "no"),
    ] {
        e.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            "busybox",
            "sleep",
            "600",
        ]);
    }
    e.ok(&["stop", "-t", "1", "usstop"]);
    // A "reboot": every monitor and container process killed at once.
    let pids: Vec<i32> = ["al", "us", "plain"]
        .iter()
        .map(|n| common::inspect(&e, n)["State"]["Pid"].as_i64().unwrap() as i32)
        .collect();
    let root = e.dir.path().display().to_string();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(" monitor ") && cmd.contains(&root) {
            let pid: i32 = p.file_name().to_string_lossy().parse().unwrap();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    for p in pids.into_iter().filter(|p| *p > 1) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    common::eventually("all shown exited", || {
        ["al", "us", "plain"]
            .iter()
            .all(|n| common::inspect(&e, n)["State"]["Status"] == "exited")
    });
    // The engine comes back: always and unless-stopped (not stopped by the user) run again.
    let _s = Server::start(&e);
    common::eventually("restarted by policy", || {
        common::inspect(&e, "al")["State"]["Status"] == "running"
            && common::inspect(&e, "us")["State"]["Status"] == "running"
    });
    assert_eq!(common::inspect(&e, "usstop")["State"]["Status"], "exited");
    assert_eq!(common::inspect(&e, "plain")["State"]["Status"], "exited");
}
