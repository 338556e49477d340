//! Regression tests for known container-runtime escapes (root only). Each names its CVE.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use common::{can_run, host_mounted, Ctr};
use serde_json::json;

/// CVE-2019-5736: a container must not be able to reach the runtime's binary for writing through
/// /proc/<pid>/exe. The init must run from a sealed view of the binary, never from the host's
/// file: a lower-only overlayfs (the normal case, also when the state root lies inside the
/// binary's directory) or, as the fallback, a sealed memfd (forced here with MOAT_SEAL=memfd).
#[test]
fn cve_2019_5736_runtime_binary_cannot_be_overwritten() {
    if !can_run() {
        return;
    }
    for (name, state_inside_bin_dir, memfd) in [
        ("exe-overlay", false, false),
        ("exe-overlay-nested", true, false),
        ("exe-memfd", false, true),
    ] {
        // Run a copy of moat, so that even a broken guard cannot corrupt the binary under test.
        // (bin_dir first: dropped last, after the container's guard deleted the container.)
        let bin_dir = tempfile::tempdir().unwrap();
        let mut c = Ctr::new(name, &["sleep", "30"]);
        let copy = bin_dir.path().join("moat");
        std::fs::copy(common::MOAT, &copy).unwrap();
        if state_inside_bin_dir {
            c.root = bin_dir.path().join("state");
        }
        let before = std::fs::read(&copy).unwrap();
        let b = c.bundle().display().to_string();
        std::fs::write(
            c.bundle().join("config.json"),
            serde_json::to_vec(&c.config).unwrap(),
        )
        .unwrap();
        let st = std::process::Command::new(&copy)
            .env("MOAT_SEAL", if memfd { "memfd" } else { "overlay" })
            .arg("runtime")
            .arg("--root")
            .arg(&c.root)
            .args(["create", "--bundle", &b, &c.id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let pid = c.state().unwrap()["pid"].as_i64().unwrap();
        let exe = format!("/proc/{pid}/exe");
        let link = std::fs::read_link(&exe).unwrap().display().to_string();
        assert!(
            !link.starts_with(&bin_dir.path().display().to_string()),
            "init runs the host file {link}"
        );
        assert_eq!(link.starts_with("/memfd:moat"), memfd, "{name}: {link}");
        // The attack: hold the init's executable by an O_PATH descriptor, let the init exec the
        // user's program, then reopen the held file for writing.
        let held = hold(&exe);
        assert!(c.moat(&["start", &c.id]).status.success());
        assert!(
            overwrite(&held).is_err(),
            "{name}: the runtime's executable was writable"
        );
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            before,
            "{name}: binary changed"
        );
    }
}

/// The attack's first half: a process's executable held by an O_PATH descriptor.
fn hold(exe: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(exe)
        .unwrap()
}

/// The second half: the held file reopened for writing, and overwritten.
fn overwrite(held: &std::fs::File) -> std::io::Result<()> {
    let reopen = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(held));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&reopen)
        .and_then(|mut f| f.write_all(b"\x7fELF-overwritten"))
}

/// CVE-2019-5736 through the engine: `moat run` itself does not re-execute from a sealed view
/// (it never enters the container), so the monitor it starts, and the runtime processes that
/// the monitor forks into the container, must: their executable is never the host's file.
#[test]
fn cve_2019_5736_a_monitor_runs_from_a_sealed_view() {
    if !can_run() {
        return;
    }
    let e = common::Engine::with_busybox();
    let bin_dir = tempfile::tempdir().unwrap();
    let copy = bin_dir.path().join("moat");
    std::fs::copy(common::MOAT, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    for (name, memfd) in [("overlay", false), ("memfd", true)] {
        let out = common::output_of(
            std::process::Command::new(&copy)
                .env("MOAT_SEAL", if memfd { "memfd" } else { "overlay" })
                .arg("--root")
                .arg(e.dir.path())
                .args(["run", "-d", "--network", "none", "--name", name])
                .args(["busybox", "sleep", "30"]),
        );
        assert!(out.status.success(), "{out:?}");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let monitor = common::monitor_of(&id).expect("the container's monitor");
        let exe = format!("/proc/{monitor}/exe");
        let link = std::fs::read_link(&exe).unwrap().display().to_string();
        assert!(
            !link.starts_with(&bin_dir.path().display().to_string()),
            "{name}: the monitor runs the host file {link}"
        );
        assert_eq!(link.starts_with("/memfd:moat"), memfd, "{name}: {link}");
        let held = hold(&exe);
        assert!(
            overwrite(&held).is_err(),
            "{name}: the monitor's executable was writable"
        );
        e.ok(&["rm", "-f", name]);
    }
    assert_eq!(std::fs::read(&copy).unwrap(), before, "binary changed");
    common::RunExt::assert_clean(&e);
}

/// CVE-2024-21626: no descriptor may leak into the container (runc leaked a host directory
/// descriptor), and a cwd reached through one (`/proc/self/fd/N`) must be refused. moat is started
/// with a host directory open as fd 7, not close-on-exec, as a careless caller would leave it.
#[test]
fn cve_2024_21626_no_fd_leak_and_cwd_escape_refused() {
    if !can_run() {
        return;
    }
    let run_with_fd7 = |c: &Ctr, extra: &[&str]| {
        std::fs::write(
            c.bundle().join("config.json"),
            serde_json::to_vec(&c.config).unwrap(),
        )
        .unwrap();
        let b = c.bundle().display().to_string();
        let root = c.root.display().to_string();
        let mut args = vec!["runtime", "--root", &root, "run", "--bundle", &b];
        args.extend_from_slice(extra);
        args.push(&c.id);
        common::output_of(
            std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg("exec 7</etc; exec \"$@\"")
                .arg("sh")
                .arg(common::MOAT)
                .args(&args),
        )
    };
    let c = Ctr::new(
        "fds",
        &[
            "sh",
            "-c",
            "ls -l /proc/self/fd/; test -e /proc/self/fd/7 && echo LEAKED-7; true",
        ],
    );
    let out = run_with_fd7(&c, &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("LEAKED-7"),
        "host descriptor leaked into the container:\n{text}"
    );
    for bad in ["socket:", "pipe:", "anon_inode", "/etc"] {
        assert!(
            !text.lines().any(|l| l.contains(" 7 -> ")
                || (l.contains(bad) && !l.contains(" 1 -> ") && !l.contains(" 2 -> "))),
            "leaked {bad}:\n{text}"
        );
    }
    // The inherited directory as cwd: chdir succeeds (the descriptor is open in the init until
    // exec), so only the getcwd check stands between the container and the host's /etc.
    let mut c = Ctr::new("cwd7", &["sh", "-c", "pwd; ls .."]);
    c.config["process"]["cwd"] = "/proc/self/fd/7".into();
    let out = run_with_fd7(&c, &[]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "cwd through a leaked fd accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CVE-2024-21626") || err.contains("cwd"),
        "{err}"
    );
    for n in 3..7 {
        let mut c = Ctr::new(&format!("cwd{n}"), &["sh", "-c", "pwd; ls .."]);
        c.config["process"]["cwd"] = format!("/proc/self/fd/{n}").into();
        let (code, out, _err) = c.run();
        assert_ne!(code, 0, "cwd /proc/self/fd/{n} accepted: {out}");
    }
    // --preserve-fds passes exactly the requested descriptors.
    let c = Ctr::new(
        "keep",
        &[
            "sh",
            "-c",
            "test -e /proc/self/fd/3 && echo HAS-3; test -e /proc/self/fd/7 && echo HAS-7; true",
        ],
    );
    std::fs::write(
        c.bundle().join("config.json"),
        serde_json::to_vec(&c.config).unwrap(),
    )
    .unwrap();
    let b = c.bundle().display().to_string();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("exec 3</etc 7</etc; exec \"$@\"")
        .arg("sh")
        .arg(common::MOAT)
        .args(["runtime", "--root"])
        .arg(&c.root)
        .args(["run", "--preserve-fds", "1", "--bundle", &b, &c.id]);
    let out = common::output_of(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "HAS-3",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CVE-2021-30465 class: a symlink in the image must not redirect a mount onto the host.
#[test]
fn mount_targets_resolve_inside_the_rootfs() {
    if !can_run() {
        return;
    }
    let host_dir = tempfile::tempdir().unwrap();
    let mut c = Ctr::with_own_rootfs("symlink", &["sh", "-c", "touch /evil/planted && echo ok"]);
    std::os::unix::fs::symlink(host_dir.path(), c.rootfs().join("evil")).unwrap();
    std::os::unix::fs::symlink("../../../../../../tmp", c.rootfs().join("up")).unwrap();
    let mounts = c.config["mounts"].as_array_mut().unwrap();
    mounts.push(
        json!({"destination": "/evil", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}),
    );
    mounts.push(json!({"destination": "/up/sub", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}));
    let (code, out, err) = c.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "ok");
    assert!(!host_mounted(host_dir.path()), "a mount landed on the host");
    assert_eq!(
        std::fs::read_dir(host_dir.path()).unwrap().count(),
        0,
        "the container wrote to the host"
    );
    assert!(!Path::new("/tmp/sub").exists() || !host_mounted(Path::new("/tmp/sub")));
    // The targets were created inside the rootfs instead.
    let inside = c.rootfs().join(host_dir.path().strip_prefix("/").unwrap());
    assert!(inside.is_dir(), "{inside:?} not created inside the rootfs");
    assert!(c.rootfs().join("tmp/sub").is_dir());
}

/// process.terminal with --console-socket: the pty master arrives over the socket (runc's
/// protocol) and the container's stdio is the pty.
#[test]
fn terminal_through_console_socket() {
    if !can_run() {
        return;
    }
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut c = Ctr::new("tty", &["sh", "-c", "tty; echo tty-ok"]);
    c.config["process"]["terminal"] = true.into();
    let sock_path = c.bundle().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let receiver = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 256];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|m| match m {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .unwrap();
        // SAFETY: the descriptor was just received over SCM_RIGHTS and is owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    let b = c.bundle().display().to_string();
    let sp = sock_path.display().to_string();
    let out = c.moat(&["create", "--bundle", &b, "--console-socket", &sp, &c.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let master = std::fs::File::from(receiver.join().unwrap());
    assert!(c.moat(&["start", &c.id]).status.success());
    let mut text = String::new();
    let mut m = master;
    let mut buf = [0u8; 1024];
    // Read until the slave side closes (EIO on Linux).
    while let Ok(n) = m.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if text.contains("tty-ok") {
            break;
        }
    }
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("tty-ok"), "{text}");
}
