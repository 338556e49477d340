//! The prober: a child of the monitor that runs the container's healthcheck (see
//! [`crate::health`]) every interval while the container runs, and writes its health.
//!
//! It is a process of its own rather than a thread of the monitor because the monitor reaps
//! every child that exits (it is a subreaper, see [`super::pump`]): the checks' `moat exec`
//! processes are the prober's children, so their exit codes are the prober's to collect. Each
//! check runs in a process group of its own, so that a check that outlives its timeout is
//! killed whole, its process in the container included (Docker kills it too). A check costs a
//! `moat exec`: the same path as the user's exec, for process and VM containers alike.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{fork, ForkResult};

use crate::health::{self, Health, Probe, Timing, MAX_OUTPUT};

/// A running prober; [`Prober::stop`] ends it.
#[derive(Debug)]
pub(super) struct Prober {
    pid: nix::unistd::Pid,
    /// Signals the prober itself, never a process that reused its pid (the monitor's reaper
    /// may collect it first).
    pidfd: OwnedFd,
    dir: PathBuf,
}

/// Starts the prober of the container in `dir` when it has an active healthcheck; the
/// container's health is `starting` from now.
///
/// Must be called while the monitor is single-threaded (the child runs ordinary code).
///
/// `attrs`: the container's name and image, for its `health_status` events.
pub(super) fn start(root: &Path, id: &str, dir: &Path, attrs: [(&str, &str); 2]) -> Option<Prober> {
    let check = health::load_config(dir)?;
    let cmd = check.command()?;
    let timing = check.timing();
    // Reset to `starting` by the monitor before the container was recorded running.
    let state = health::load(dir).unwrap_or_default();
    let parent = std::process::id();
    // SAFETY: the monitor is single-threaded here (documented above), so the child may run
    // arbitrary code; it never returns into the monitor's code.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            if std::os::unix::process::parent_id() != parent {
                // SAFETY: ends the child without running the monitor's exit paths.
                unsafe { libc::_exit(0) }
            }
            let _ = nix::sys::signal::SigSet::all().thread_unblock();
            let attrs = attrs.map(|(k, v)| (k.to_string(), v.to_string()));
            run(root, id, dir, &cmd, timing, state, &attrs);
        }
        Ok(ForkResult::Parent { child }) => match rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(child.as_raw())?,
            rustix::process::PidfdFlags::empty(),
        ) {
            Ok(pidfd) => Some(Prober {
                pid: child,
                pidfd,
                dir: dir.to_path_buf(),
            }),
            Err(e) => {
                log::warn!("container {id}: pidfd of its prober: {e}");
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                None
            }
        },
        Err(e) => {
            log::warn!("container {id}: cannot start its healthcheck: {e}");
            None
        }
    }
}

impl Prober {
    /// Ends the prober (the container has stopped) and leaves the health `unhealthy`, as
    /// Docker does for a stopped container.
    pub(super) fn stop(self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
        // Collected here, or by the monitor's reaper already (then ECHILD).
        let _ = nix::sys::wait::waitpid(self.pid, None);
        if let Some(mut h) = health::load(&self.dir) {
            h.status = health::Status::Unhealthy;
            let _ = health::save(&self.dir, &h);
        }
    }
}

/// The prober's life: wait, check, record; never returns.
fn run(
    root: &Path,
    id: &str,
    dir: &Path,
    cmd: &[String],
    timing: Timing,
    mut state: Health,
    attrs: &[(String, String); 2],
) -> ! {
    let started = Instant::now();
    loop {
        std::thread::sleep(timing.next_wait(state.status, started.elapsed()));
        // Docker judges the start period at the check's start.
        let in_start = started.elapsed() < timing.start_period;
        let result = check(root, id, cmd, timing.timeout);
        let changed = state.record(result, in_start, timing.retries);
        // Waiters read the state file (a rolling update, `service_healthy`): what a change
        // brings — the shared ports' group joined or left, the event — is done before it.
        if changed {
            log::debug!("container {id}: health {}", state.status.as_str());
            // A shared published port takes new connections only while healthy.
            let ready = state.status == health::Status::Healthy;
            let paths = crate::Paths::new(root);
            if let Err(e) = crate::network::set_ready(&paths, id, ready) {
                log::warn!("container {id}: published ports: {e}");
            }
            let attrs: Vec<(&str, &str)> = attrs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            crate::events::Journal::new(root).emit(
                "container",
                &format!("health_status: {}", state.status.as_str()),
                id,
                &attrs,
            );
        }
        let _ = health::save(dir, &state);
    }
}

/// Runs one check: `moat exec` of the command with its output (stdout and stderr, cut to
/// [`MAX_OUTPUT`]) collected; killed with its process group after `timeout`.
fn check(root: &Path, id: &str, cmd: &[String], timeout: Duration) -> Probe {
    let start = moat_runtime::state::now_rfc3339();
    let failed = |output: String| Probe {
        start: start.clone(),
        end: moat_runtime::state::now_rfc3339(),
        exit_code: -1,
        output,
    };
    let (r, w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return failed(format!("pipe: {e}")),
    };
    let w2 = match w.try_clone() {
        Ok(w2) => w2,
        Err(e) => return failed(format!("dup: {e}")),
    };
    let child = Command::new("/proc/self/exe")
        .arg0("moat")
        .arg("--root")
        .arg(root)
        .arg("exec")
        .arg(id)
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2))
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot run the check: {e}")),
    };
    let deadline = Instant::now() + timeout;
    let mut output = Vec::new();
    let mut reader = std::fs::File::from(r);
    let mut buf = [0u8; 4096];
    let timed_out = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break true;
        }
        let ms = PollTimeout::try_from(left.as_millis().min(60_000) as u32 + 1)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Err(_) => break false,
            Ok(_) => {}
        }
        match reader.read(&mut buf) {
            // Every writer is gone: the check (and anything it left holding its output) ended.
            Ok(0) | Err(_) => break false,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(output.len());
                output.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    };
    if timed_out {
        // The group: `moat exec` and the process it runs in the container.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        return failed(format!(
            "Health check exceeded timeout ({})",
            humantime::format_duration(timeout)
        ));
    }
    let code = match child.wait() {
        Ok(s) => s.code().map_or(-1, i64::from),
        Err(_) => -1,
    };
    Probe {
        start,
        end: moat_runtime::state::now_rfc3339(),
        exit_code: code,
        output: String::from_utf8_lossy(&output).into_owned(),
    }
}
