//! `moat serve` for the docker CLI: the server on a unix socket in an engine's directory and
//! the CLI pointed at it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{output_of, Engine, MOAT};

/// `moat serve` on a unix socket in the engine's directory; stopped (SIGTERM) when dropped.
pub struct Server {
    pub child: Child,
    pub sock: PathBuf,
}

impl Server {
    pub fn start(e: &Engine) -> Server {
        let sock = e.dir.path().join("moat.sock");
        let child = Command::new(MOAT)
            .arg("--root")
            .arg(e.dir.path())
            .arg("serve")
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(e.dir.path().join("serve.log")).unwrap())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < until, "moat serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, sock }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// The docker CLI set up for the server, with its own (empty) config directory.
pub fn docker_cmd(e: &Engine, s: &Server) -> Command {
    let mut c = Command::new("/usr/local/bin/docker");
    c.env("DOCKER_HOST", format!("unix://{}", s.sock.display()))
        .env("DOCKER_CONFIG", e.dir.path().join("docker-cli"));
    c
}

/// `docker ARGS` against the server.
pub fn docker(e: &Engine, s: &Server, args: &[&str]) -> Output {
    output_of(docker_cmd(e, s).args(args).stdin(Stdio::null()))
}

pub fn ok(e: &Engine, s: &Server, args: &[&str]) -> String {
    let out = docker(e, s, args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn docker_present() -> bool {
    let ok = std::path::Path::new("/usr/local/bin/docker").exists();
    assert!(ok, "the docker CLI is missing at /usr/local/bin/docker");
    ok
}
