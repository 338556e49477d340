//! Engines use moat as their OCI runtime, unchanged (root only): Podman with
//! `--runtime moat-runtime`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{can_run, Engine, MOAT};

/// A private Podman (its own storage and run dirs) driving moat; removes everything on drop.
struct Podman {
    dir: tempfile::TempDir,
    runtime: PathBuf,
    had_libpod_cgroup: bool,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::tempdir().unwrap();
        // Engines call a runc-like program: the same binary under the name moat-runtime.
        let runtime = dir.path().join("moat-runtime");
        std::os::unix::fs::symlink(MOAT, &runtime).unwrap();
        Podman {
            dir,
            runtime,
            had_libpod_cgroup: Path::new("/sys/fs/cgroup/pids/libpod_parent").exists(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        common::output_of(
            Command::new("podman")
                .arg("--root")
                .arg(d.join("storage"))
                .arg("--runroot")
                .arg(d.join("run"))
                .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
                .arg("--runtime")
                .arg(&self.runtime)
                .args(args),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.cmd(&["system", "reset", "--force"]);
        if !self.had_libpod_cgroup {
            // Podman's own parent cgroup for conmon; remove it if this test made it.
            for h in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::remove_dir(h.path().join("libpod_parent/conmon"));
                let _ = std::fs::remove_dir(h.path().join("libpod_parent"));
            }
        }
    }
}

#[test]
fn podman_runs_containers_with_moat_as_runtime() {
    if !can_run() {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("SKIP: podman is not installed (scripts/setup.sh installs it)");
        return;
    }
    let p = Podman::new();
    let files = Engine::new(); // holds the tar (removed with it)
    let tar = files.busybox_tar();
    p.ok(&[
        "import",
        "--change",
        "CMD [\"/bin/sh\"]",
        tar.to_str().unwrap(),
        "moat-test/busybox:local",
    ]);
    // --network none: the test must not touch the host's network.
    let out = p.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--hostname",
        "pm",
        "moat-test/busybox:local",
        "sh",
        "-c",
        "echo hello $(hostname) $$",
    ]);
    assert_eq!(out.trim(), "hello pm 1");
    // Podman's default nofile (1048576) is above this host's hard limit: moat clamps it.
    let out = p.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "moat-test/busybox:local",
        "sh",
        "-c",
        "exit 0",
    ]);
    assert_eq!(out, "");
    let out = p.cmd(&[
        "run",
        "--rm",
        "--network",
        "none",
        "moat-test/busybox:local",
        "sh",
        "-c",
        "exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5));
    p.ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        "--network",
        "none",
        "moat-test/busybox:local",
        "sleep",
        "60",
    ]);
    let out = p.ok(&["exec", "bg", "sh", "-c", "echo exec $$"]);
    assert_eq!(out.trim(), "exec 2");
    let ps = p.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("bg Up"), "{ps}");
    p.ok(&["rm", "--force", "--time", "0", "bg"]);
    assert_eq!(p.ok(&["ps", "-a", "-q"]).trim(), "");
}
