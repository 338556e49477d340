//! Shared harness for the integration tests: a busybox bundle built from Debian's busybox-static,
//! a temporary state root, and guards that delete containers even when a test fails.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// True when the test can run (root, busybox present); otherwise prints why and returns false.
/// CI runs as root with the set-up script's packages, so there these never skip.
pub fn can_run() -> bool {
    if !nix_is_root() {
        eprintln!("SKIP: needs root (namespaces, mounts, cgroups)");
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIP: /bin/busybox missing: run scripts/setup.sh (installs busybox-static)");
        return false;
    }
    // Before anything the test starts (registries, servers, engines): all of it shares the
    // test thread's own network namespace.
    own_netns();
    true
}

fn nix_is_root() -> bool {
    // SAFETY-free: read our euid from /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

pub mod docker;
pub mod registry;

const PREFIX: &str = "moat-test-";

/// A temporary directory for one test's roots, named after this test process
/// (`moat-test-<pid>-...`), so that a later run can tell it from a live one's. The first call
/// of a process sweeps what dead test processes left ([`sweep_stale`]).
pub fn test_dir() -> tempfile::TempDir {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(sweep_stale);
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir()
        .unwrap()
}

/// A test killed outright (SIGKILL, a CI timeout) runs no Drop guard: its containers, monitors,
/// mounts and cgroups stay. They are removed here, through moat itself, for every test directory
/// whose process is gone.
pub fn sweep_stale() {
    let tmp = std::env::temp_dir();
    for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        // Engine roots: every container (its monitor, processes, cgroup, mount).
        if let Ok(out) = Command::new(MOAT)
            .arg("--root")
            .arg(&dir)
            .args(["ps", "-aq", "--no-trunc"])
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let ids: Vec<&str> = text.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new(MOAT)
                    .arg("--root")
                    .arg(&dir)
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        // Runtime roots (`Ctr`): every container of the state root.
        let state = dir.join("state");
        for c in std::fs::read_dir(&state).into_iter().flatten().flatten() {
            let id = c.file_name().to_string_lossy().into_owned();
            if !id.starts_with('@') {
                let _ = Command::new(MOAT)
                    .args(["runtime", "--root"])
                    .arg(&state)
                    .args(["delete", "--force", &id])
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A busybox rootfs shared (read-only use) by all tests of one test binary.
pub fn busybox_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        // Under cargo's per-target temp dir: reused across runs, removed by `cargo clean`.
        let final_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-rootfs");
        if final_dir.join("bin/sh").exists() {
            return final_dir;
        }
        let dir = final_dir.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "root"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
            }
        }
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
        std::fs::set_permissions(
            dir.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        // Another test binary may have won the race: keep theirs.
        if std::fs::rename(&dir, &final_dir).is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        final_dir
    })
}

/// One container under test: a bundle dir (config.json + rootfs symlink-free copy via bind of the
/// shared rootfs path), a private state root, a unique id; deleted on drop.
pub struct Ctr {
    pub id: String,
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub config: Value,
}

impl Ctr {
    /// A container whose config is `moat runtime spec`'s default with terminal off and `args`.
    pub fn new(name: &str, args: &[&str]) -> Ctr {
        let dir = test_dir();
        let root = dir.path().join("state");
        let out = Command::new(MOAT)
            .args(["runtime", "spec", "--bundle"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        config["root"]["path"] = busybox_rootfs().display().to_string().into();
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
        let id = format!("{name}-{}", std::process::id());
        Ctr {
            id,
            dir,
            root,
            config,
        }
    }

    /// A container with its own writable rootfs copy (for tests that plant files).
    pub fn with_own_rootfs(name: &str, args: &[&str]) -> Ctr {
        let mut c = Ctr::new(name, args);
        let rootfs = c.dir.path().join("rootfs");
        let st = Command::new("cp")
            .arg("-a")
            .arg(busybox_rootfs())
            .arg(&rootfs)
            .status()
            .unwrap();
        assert!(st.success());
        c.config["root"]["path"] = "rootfs".into();
        c.config["root"]["readonly"] = false.into();
        c
    }

    pub fn rootfs(&self) -> PathBuf {
        let p = self.config["root"]["path"].as_str().unwrap();
        if p.starts_with('/') {
            PathBuf::from(p)
        } else {
            self.dir.path().join(p)
        }
    }

    pub fn bundle(&self) -> &Path {
        self.dir.path()
    }

    fn write_config(&self) {
        std::fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }

    /// `moat runtime --root R <args...>`. Output goes through files, not pipes: a created
    /// container inherits moat's stdio and would hold a pipe open until it exits.
    pub fn moat(&self, args: &[&str]) -> Output {
        self.write_config();
        output_of(
            Command::new(MOAT)
                .arg("runtime")
                .arg("--root")
                .arg(&self.root)
                .args(args),
        )
    }

    /// `run` in the foreground; returns (exit code, stdout, stderr).
    pub fn run(&self) -> (i32, String, String) {
        let b = self.bundle().display().to_string();
        let out = self.moat(&["run", "--bundle", &b, &self.id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `create`; panics with moat's stderr on failure.
    pub fn create(&self) {
        let b = self.bundle().display().to_string();
        let out = self.moat(&["create", "--bundle", &b, &self.id]);
        assert!(
            out.status.success(),
            "create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `state` as JSON (None when moat fails, e.g. the container is gone).
    pub fn state(&self) -> Option<Value> {
        let out = self.moat(&["state", &self.id]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn ns(&mut self, kinds: &[&str]) {
        self.config["linux"]["namespaces"] = kinds
            .iter()
            .map(|k| serde_json::json!({"type": k}))
            .collect();
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        // Whatever the test did, leave no container, cgroup or state behind.
        let _ = Command::new(MOAT)
            .arg("runtime")
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", &self.id])
            .output();
    }
}

/// Reads `r` to its end on a thread; panics if that takes longer than [`HANG`] (a test reading
/// a pipe must not stall the run when what holds the pipe's other end hangs).
pub fn read_within(r: impl std::io::Read + Send + 'static, what: &str) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = r;
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("reading {what} hung for {HANG:?}"))
}

/// Runs `cmd` with its output going through files, not pipes (a container started by it may
/// inherit them and hold a pipe open until it exits), failing the test if it hangs
/// ([`wait_or_dump`]).
pub fn output_of(cmd: &mut Command) -> Output {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap();
    let status = wait_or_dump(child, &format!("{cmd:?}"));
    Output {
        status,
        stdout: read_all(out),
        stderr: read_all(err),
    }
}

fn read_all(mut f: std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut v = vec![];
    f.rewind().unwrap();
    f.read_to_end(&mut v).unwrap();
    v
}

/// How long one moat command may take in a test before it counts as hung.
pub const HANG: Duration = Duration::from_secs(120);

/// Waits for `child`; if it runs longer than [`HANG`], prints what every process of its tree
/// is blocked in (state, wchan, kernel stack), kills the tree and panics. A hang then fails one
/// test with the evidence, instead of stalling the whole run until CI's time limit.
pub fn wait_or_dump(mut child: Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + HANG;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let tree = descendants(child.id());
    let mut report = format!("{what} hung for {HANG:?}; its processes:\n");
    for pid in &tree {
        let read =
            |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
        report += &format!(
            "pid {pid}: {} wchan={} cmdline={:?}\n{}\n{}",
            read("stat").split(')').nth(1).unwrap_or("").trim(),
            read("wchan"),
            read("cmdline").replace('\0', " "),
            read("status")
                .lines()
                .filter(|l| l.starts_with("Sig") || l.starts_with("Cap") || l.starts_with("NSpid"))
                .collect::<Vec<_>>()
                .join("\n"),
            read("stack"),
        );
    }
    for pid in tree.iter().rev() {
        let _ = nix_kill(*pid);
    }
    let _ = child.wait();
    panic!("{report}");
}

/// `pid` and every process below it, parents first.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        out.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
        i += 1;
    }
    out
}

fn nix_kill(pid: u32) -> nix::Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
}

/// The CapEff mask printed by `grep CapEff /proc/self/status` in a container.
pub fn cap_line(out: &str, name: &str) -> Option<u64> {
    out.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
}

/// Whether `path` is a mount point in the host's mount table.
pub fn host_mounted(path: &Path) -> bool {
    let p = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(p.as_str()))
}

/// An engine root in a temporary directory, driven through the `moat` command line. Dropping
/// it force-removes every container it still has (a failed test leaves no monitor, mount or
/// cgroup behind).
pub struct Engine {
    pub dir: tempfile::TempDir,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Every container (running ones killed), and the networks' bridges, rules and
        // namespace pins: nothing of the engine outlives the test.
        let _ = Command::new(MOAT)
            .arg("--root")
            .arg(self.dir.path())
            .args(["system", "reset", "--force"])
            .output();
    }
}

pub trait RunExt {
    fn run(&self, args: &[&str]) -> (i32, String, String);
    fn assert_clean(&self);
}

impl RunExt for Engine {
    /// `moat run --rm <args>`: (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        let out = self.moat(&all);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Nothing of any container is left: no record, directory, mount, runtime state, cgroup
    /// or monitor.
    fn assert_clean(&self) {
        assert_eq!(self.ok(&["ps", "-aq"]), "", "container records left");
        // An --rm container's monitor deletes its (renamed) directory and exits just after
        // reporting the exit: allow it a moment.
        let count = || {
            std::fs::read_dir(self.dir.path().join("containers"))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        let until = Instant::now() + Duration::from_secs(5);
        while count() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(count(), 0, "container directories left");
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&root), "mounts left under {root}");
        let state = std::fs::read_dir(self.dir.path().join("run"))
            .map(|d| {
                d.filter(|e| {
                    !e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with('@')
                })
                .count()
            })
            .unwrap_or(0);
        assert_eq!(state, 0, "runtime state left");
        let monitors = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter(|e| {
                    std::fs::read(e.path().join("cmdline"))
                        .map(|c| {
                            let c = String::from_utf8_lossy(&c).replace('\0', " ");
                            c.contains(" monitor ") && c.contains(&root)
                        })
                        .unwrap_or(false)
                })
                .count()
        };
        let until = Instant::now() + Duration::from_secs(5);
        while monitors() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(monitors(), 0, "monitors left");
    }
}

/// Moves the calling test thread into a network namespace of its own (once per thread), with
/// loopback up. Everything the test starts from this thread (moat, its monitors, registries,
/// the docker CLI) inherits it, so containers' bridges, veths and nftables rules never reach
/// the host's interfaces, and tests running side by side never see each other's.
pub fn own_netns() {
    thread_local!(static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if DONE.with(|d| d.replace(true)) {
        return;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare CLONE_NEWNET");
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip link set lo up");
    assert!(up.success(), "ip link set lo up");
}

impl Engine {
    /// An engine in a fresh root; the calling thread gets a network namespace of its own
    /// ([`own_netns`]).
    pub fn new() -> Engine {
        own_netns();
        Engine { dir: test_dir() }
    }

    /// An engine with busybox imported as `busybox` (CMD sh, ENV IMG=1).
    pub fn with_busybox() -> Engine {
        let e = Engine::new();
        let tar = e.busybox_tar();
        e.ok(&[
            "import",
            "--change",
            "CMD [\"/bin/sh\"]",
            "--change",
            "ENV IMG=1",
            tar.to_str().unwrap(),
            "busybox",
        ]);
        e
    }

    /// `moat --root DIR <args>`.
    pub fn moat(&self, args: &[&str]) -> Output {
        output_of(
            Command::new(MOAT)
                .arg("--root")
                .arg(self.dir.path())
                .args(args),
        )
    }

    /// `moat ...` with `input` on its standard input (then closed): (exit code, stdout,
    /// stderr); a hang fails the test with the processes' state.
    pub fn with_input(&self, args: &[&str], input: &[u8]) -> (i32, String, String) {
        use std::io::Write;
        let mut child = Command::new(MOAT)
            .arg("--root")
            .arg(self.dir.path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Written from a thread: a large input that moat stops reading must end in the readers'
        // time limit (with the processes' state), not block here; a moat gone early (a broken
        // pipe) shows its own error.
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || match stdin.write_all(&input) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
            _ => Ok(()),
        });
        let out = read_within(child.stdout.take().unwrap(), "moat's stdout");
        let err = read_within(child.stderr.take().unwrap(), "moat's stderr");
        let code = wait_or_dump(child, &format!("moat {args:?}"))
            .code()
            .unwrap_or(-1);
        writer
            .join()
            .expect("stdin writer")
            .expect("write moat's stdin");
        (code, out, err)
    }

    /// `moat ...` that must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.moat(args);
        assert!(
            out.status.success(),
            "moat {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A path inside the engine's temporary directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The busybox rootfs as a tar file.
    pub fn busybox_tar(&self) -> PathBuf {
        let tar = self.dir.path().join("busybox.tar");
        if !tar.exists() {
            let st = Command::new("tar")
                .arg("-C")
                .arg(busybox_rootfs())
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .status()
                .unwrap();
            assert!(st.success());
        }
        tar
    }
}

/// Polls `cond` every 20 ms for up to 15 s; panics naming `what` if it never holds.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `moat inspect NAME`'s first (only) document.
pub fn inspect(e: &Engine, name: &str) -> Value {
    let v: Value = serde_json::from_str(&e.ok(&["inspect", name])).unwrap();
    v[0].clone()
}

/// Runs the shell command `cmd` under `script` (a real terminal) and types `input` once `ready` has shown
/// in its output: a key whose effect depends on the container being ready (Ctrl-C to a shell
/// that must first set its trap: pid 1 ignores a SIGINT it has no handler for) is never typed
/// early, however slow the machine. Our end of the terminal's input stays open until the
/// command ends (closing it would make script send an end-of-file).
pub fn on_a_terminal(cmd: &str, ready: &str, input: &[u8]) -> (i32, String) {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let mut child = Command::new("script")
        .args(["-qefc", cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut stdout = child.stdout.take().unwrap();
    let collector = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let text =
        |seen: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let until = std::time::Instant::now() + HANG;
    while !text(&seen).contains(ready) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    let code = wait_or_dump(child, cmd).code().unwrap_or(-1);
    drop(stdin);
    let _ = collector.join();
    (code, text(&seen))
}

/// Now, as the `--until` of `moat events` takes it (Unix seconds, milliseconds).
pub fn now_arg() -> String {
    format!(
        "{:.3}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    )
}

/// Writes `text` as the engine's project file `proj/compose.yaml`; its path.
pub fn write_compose(e: &Engine, text: &str) -> PathBuf {
    let dir = e.dir.path().join("proj");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("compose.yaml");
    std::fs::write(&f, text).unwrap();
    f
}

/// The pid of the monitor of container `id` (the process exec'd as `moat-monitor ... monitor ID`).
pub fn monitor_of(id: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find(|p| {
            std::fs::read(p.path().join("cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c).replace('\0', " ");
                c.starts_with("moat-monitor ") && c.contains(" monitor ") && c.contains(id)
            })
        })?
        .file_name()
        .to_string_lossy()
        .parse()
        .ok()
}
