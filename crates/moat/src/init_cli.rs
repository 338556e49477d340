//! `docker-init`: a container's pid 1 with `--init` (Docker's tini): it runs the command as its
//! child, passes it every signal it gets, reaps every orphan the container leaves (a plain
//! command as pid 1 would leave zombies, and ignore SIGTERM for want of a handler), and exits
//! with the command's status. The moat binary itself, bind-mounted read-only at
//! `/sbin/docker-init`, started under that name.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{execvp, fork, ForkResult, Pid};

/// Runs `docker-init [--] CMD [ARGS...]`; the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut args: Vec<OsString> = args.into_iter().skip(1).collect();
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    let Ok(argv) = args
        .into_iter()
        .map(|a| CString::new(a.into_vec()))
        .collect::<Result<Vec<CString>, _>>()
    else {
        eprintln!("docker-init: an argument holds a NUL byte");
        return 126;
    };
    if argv.is_empty() {
        eprintln!("docker-init: usage: docker-init [--] COMMAND [ARGS...]");
        return 126;
    }
    // Every signal waits for us here (a blocked signal reaches even a namespace's init, which
    // has no handlers; SIGKILL and SIGSTOP cannot be blocked and need none).
    let all = SigSet::all();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None);
    // SAFETY: single-threaded here; the child only resets its mask and execs.
    let child = match unsafe { fork() } {
        Err(e) => {
            eprintln!("docker-init: fork: {e}");
            return 126;
        }
        Ok(ForkResult::Child) => {
            let _ = nix::sys::signal::sigprocmask(
                SigmaskHow::SIG_SETMASK,
                Some(&SigSet::empty()),
                None,
            );
            let e = match execvp(&argv[0], &argv) {
                Err(e) => e,
                Ok(never) => match never {},
            };
            eprintln!("docker-init: exec {:?}: {e}", argv[0]);
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(if e == nix::Error::ENOENT { 127 } else { 126 }) }
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    loop {
        let Ok(sig) = all.wait() else {
            continue;
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        if let Some(code) = reap(child) {
            return code;
        }
    }
}

/// Reaps every exited child; the command's exit code once it is among them.
fn reap(child: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) if p == child => code = Some(c),
            Ok(WaitStatus::Signaled(p, s, _)) if p == child => code = Some(128 + s as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(_) => {}
        }
    }
}
