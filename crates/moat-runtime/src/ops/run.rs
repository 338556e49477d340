//! `run`: create, start, wait for the exit and delete, in one process (no fifo round trip).
//! Signals sent to `moat` are forwarded to the container's init, as `runc run` does.

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::launch::{launch, CreateOptions, StartKind};
use super::{OpsError, Runtime};
use crate::id::ContainerId;
use crate::sync::Msg;

/// The signals a foreground `run` forwards to the container's init.
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Runs container `id`; with `detach`, returns once it started (exit code 0). Otherwise waits
/// and returns its exit code (128+N for a signal), after deleting it.
pub fn run(
    rt: &Runtime,
    id: &ContainerId,
    opts: &CreateOptions,
    detach: bool,
) -> Result<i32, OpsError> {
    let set = forwarded_signals();
    if !detach {
        block(&set)?;
    }
    let pid = start_child(rt, id, opts)?;
    if detach {
        return Ok(0);
    }
    let code = wait_forwarding(&set, Pid::from_raw(pid))?;
    let _ = SigSet::thread_get_mask()
        .map(|_| nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None));
    // Whatever the init left (processes in a shared pid namespace) dies with the container.
    log::debug!("run {id}: exited with {code}");
    super::delete::delete(rt, id, true)?;
    log::debug!("run {id}: deleted");
    Ok(code)
}

/// Creates and starts container `id` for a caller that waits for it itself (an engine's
/// monitor); returns the init's host pid. The caller becomes the init's parent (a subreaper), so
/// it must reap it, and should block SIGCHLD first if it waits with signals.
pub fn start_child(rt: &Runtime, id: &ContainerId, opts: &CreateOptions) -> Result<i32, OpsError> {
    let launched = launch(rt, id, opts, StartKind::Channel)?;
    launched.chan.send(&Msg::Start)?;
    drop(launched.chan);
    super::start::run_poststart(&launched.record);
    Ok(launched.pid)
}

/// The signals a foreground `run` or `exec` forwards, plus SIGCHLD.
pub fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks `set` before forking: the signals are then queued for sigwait instead of killing us;
/// the init chain unblocks them for the container.
pub(crate) fn block(set: &SigSet) -> Result<(), OpsError> {
    set.thread_block().map_err(|e| OpsError::Sys {
        what: "block signals".into(),
        source: e,
    })
}

/// Waits for `pid` to exit, forwarding signals to it; returns its exit code (128+N for a
/// signal). Reaps everything else that exits meanwhile (orphans come to us as a subreaper).
pub(crate) fn wait_forwarding(set: &SigSet, pid: Pid) -> Result<i32, OpsError> {
    loop {
        let sig = set.wait().map_err(|e| OpsError::Sys {
            what: "wait for signals".into(),
            source: e,
        })?;
        if sig != Signal::SIGCHLD {
            let _ = kill(pid, sig);
            continue;
        }
        let mut done = None;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, c)) if p == pid => done = Some(c),
                Ok(WaitStatus::Signaled(p, s, _)) if p == pid => done = Some(128 + s as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if let Some(c) = done {
            return Ok(c);
        }
    }
}
