//! Stage 2: the container's init. Builds the rootfs, sets the process up, reports `Created`,
//! waits for `start`, drops privileges and execs the user's program.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{setresgid, setresuid, Gid, Uid};

use super::{hook_state, InitConfig, InitError, StartSignal};
use crate::capabilities::CapSets;
use crate::rootfs;
use crate::sync::{Channel, Msg};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Entry of the init: never returns (it execs or exits).
pub fn run(cfg: &InitConfig, chan: &Channel) -> ! {
    let code = match init(cfg, chan) {
        Ok(never) => match never {},
        Err((e, code)) => {
            // Before `Created` the parent is listening; after it (create-then-start) it may be
            // gone, and the container's stderr is the only place left to say why.
            if chan.send(&Msg::Error(e.to_string())).is_err() {
                let _ = writeln!(std::io::stderr(), "moat: {e}");
            }
            code
        }
    };
    // SAFETY: _exit ends this forked child without running the runtime's atexit handlers.
    unsafe { libc::_exit(code) }
}

fn perr(what: impl Into<String>) -> impl FnOnce(nix::Error) -> InitError {
    let what = what.into();
    move |source| InitError::Process { what, source }
}

/// Exit code 125 for set-up failures, 126/127 for a program that cannot run (Docker's codes).
type Failure = (InitError, i32);

fn init(cfg: &InitConfig, chan: &Channel) -> Result<std::convert::Infallible, Failure> {
    let f = |e: InitError| (e, 125);
    // Our pid as the host sees it, for hooks: /proc is still the host's until pivot_root.
    let host_pid: i32 = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0);
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    rootfs::prepare(&cfg.rootfs).map_err(|e| f(e.into()))?;
    let hooks = cfg.bundle.spec.hooks().clone().unwrap_or_default();
    #[allow(deprecated)]
    let has_runtime_hooks = hooks
        .create_runtime()
        .as_ref()
        .is_some_and(|h| !h.is_empty())
        || hooks.prestart().as_ref().is_some_and(|h| !h.is_empty());
    if has_runtime_hooks {
        chan.send(&Msg::RunCreateRuntimeHooks)
            .map_err(|e| f(e.into()))?;
        match chan.recv("HooksDone").map_err(|e| f(e.into()))? {
            Msg::HooksDone => {}
            got => {
                return Err(f(InitError::Unexpected {
                    got,
                    expected: "HooksDone",
                }))
            }
        }
    }
    if let Some(h) = hooks.create_container() {
        let state = hook_state(cfg, host_pid, "created");
        crate::hooks::run("createContainer", h, &state).map_err(|e| f(e.into()))?;
    }
    rootfs::pivot(&cfg.rootfs.rootfs).map_err(|e| f(e.into()))?;
    rootfs::finish(&cfg.rootfs).map_err(|e| f(e.into()))?;

    let spec = &cfg.bundle.spec;
    let process = &cfg.bundle.process;
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).map_err(|e| f(perr(format!("hostname {h:?}"))(e)))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        let c = CString::new(d).unwrap_or_default();
        // SAFETY: `c` is a valid NUL-terminated string whose length is passed along.
        if unsafe { libc::setdomainname(c.as_ptr(), d.len()) } < 0 {
            return Err(f(perr(format!("domainname {d:?}"))(nix::Error::last())));
        }
    }
    let linux = spec.linux().clone().unwrap_or_default();
    for (k, v) in linux.sysctl().iter().flatten() {
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&path, v).map_err(|e| {
            f(perr(format!("sysctl {k}={v}"))(nix::Error::from_raw(
                e.raw_os_error().unwrap_or(0),
            )))
        })?;
    }
    if process.terminal() == Some(true) {
        let sock = cfg.console.as_ref().map(|s| s.as_raw_fd()).ok_or_else(|| {
            f(InitError::Exec {
                program: String::new(),
                reason: "process.terminal needs --console-socket".into(),
            })
        })?;
        let size = process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        crate::console::setup(sock, size).map_err(|e| f(e.into()))?;
    }
    if let Some(limits) = process.rlimits() {
        let _warnings = crate::rlimits::apply(limits).map_err(|e| f(e.into()))?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|e| {
            f(perr(format!("oom_score_adj {adj}"))(nix::Error::from_raw(
                e.raw_os_error().unwrap_or(0),
            )))
        })?;
    }
    let caps = match process.capabilities() {
        Some(c) => Some(CapSets::from_spec(c).map_err(|e| f(e.into()))?),
        None => None,
    };
    let filter = match linux.seccomp() {
        Some(s) => Some(crate::seccomp::Filter::from_spec(s).map_err(|e| f(e.into()))?),
        None => None,
    };
    let env = environment(
        process.env().as_deref().unwrap_or(&[]),
        process.user().uid(),
    );
    let program = lookup(
        &process.args().clone().unwrap_or_default(),
        &env,
        process.cwd(),
    )
    .map_err(|e| (e, 127))?;
    enter_cwd(process.cwd()).map_err(f)?;

    chan.send(&Msg::Created).map_err(|e| f(e.into()))?;
    match &cfg.start {
        StartSignal::Fifo(opath) => {
            // Reopen the fifo through /proc: the O_PATH descriptor was opened on the host side;
            // opening it for writing blocks until `start` opens it for reading.
            let p = format!("/proc/self/fd/{}", opath.as_raw_fd());
            let mut fifo = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|e| {
                    f(perr("open exec fifo")(nix::Error::from_raw(
                        e.raw_os_error().unwrap_or(0),
                    )))
                })?;
            fifo.write_all(b"0").map_err(|e| {
                f(perr("write exec fifo")(nix::Error::from_raw(
                    e.raw_os_error().unwrap_or(0),
                )))
            })?;
        }
        StartSignal::Channel => match chan.recv("Start").map_err(|e| f(e.into()))? {
            Msg::Start => {}
            got => {
                return Err(f(InitError::Unexpected {
                    got,
                    expected: "Start",
                }))
            }
        },
    }
    if let Some(h) = hooks.start_container() {
        let state = hook_state(cfg, host_pid, "running");
        crate::hooks::run("startContainer", h, &state).map_err(|e| f(e.into()))?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        process.user().umask().unwrap_or(0o022),
    ));
    let nnp = process.no_new_privileges() == Some(true);
    if let Some(c) = &caps {
        c.apply_bounding().map_err(|e| f(e.into()))?;
    }
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which we still hold here; the
    // profile must then allow the few syscalls that follow (setuid, capset, execve), as Docker's
    // does. With no_new_privs the filter goes on last, as late as possible.
    if let (Some(flt), false) = (&filter, nnp) {
        flt.load().map_err(|e| f(e.into()))?;
    }
    switch_user(process.user()).map_err(f)?;
    if let Some(c) = &caps {
        c.apply().map_err(|e| f(e.into()))?;
    }
    if nnp {
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(f(perr("no_new_privileges")(nix::Error::last())));
        }
        if let Some(flt) = &filter {
            flt.load().map_err(|e| f(e.into()))?;
        }
    }
    // CVE-2024-21626: nothing of the runtime's may leak into the container. Every descriptor
    // above stdio and the preserved ones is marked close-on-exec.
    let first = 3 + cfg.preserve_fds.max(0) as u32;
    // SAFETY: close_range takes plain integers; CLOSE_RANGE_CLOEXEC only sets flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let args: Vec<CString> = process
        .args()
        .iter()
        .flatten()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let envc: Vec<CString> = env
        .iter()
        .map(|e| CString::new(e.as_bytes()).unwrap_or_default())
        .collect();
    let err = nix::unistd::execve(&program, &args, &envc);
    let code = if matches!(err, Err(nix::Error::ENOENT)) {
        127
    } else {
        126
    };
    Err((
        InitError::Exec {
            program: program.to_string_lossy().into_owned(),
            reason: err.err().map(|e| e.desc().to_string()).unwrap_or_default(),
        },
        code,
    ))
}

/// The process environment, with HOME added from the container's /etc/passwd when missing
/// (as runc does), since many programs misbehave without it.
fn environment(env: &[String], uid: u32) -> Vec<String> {
    let mut out = env.to_vec();
    if !out.iter().any(|e| e.starts_with("HOME=")) {
        let home = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|p| {
                p.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
                })
            })
            .unwrap_or_else(|| "/".into());
        out.push(format!("HOME={home}"));
    }
    out
}

/// Finds args[0] the way execvp would, with the container's PATH.
fn lookup(args: &[String], env: &[String], cwd: &Path) -> Result<CString, InitError> {
    let name = args.first().cloned().unwrap_or_default();
    let not_found = |reason: &str| InitError::Exec {
        program: name.clone(),
        reason: reason.to_string(),
    };
    let candidates: Vec<PathBuf> = if name.contains('/') {
        vec![if Path::new(&name).is_absolute() {
            PathBuf::from(&name)
        } else {
            cwd.join(&name)
        }]
    } else {
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(&name))
            .collect()
    };
    let mut saw_unexecutable = false;
    for c in &candidates {
        match std::fs::metadata(c) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
                return CString::new(c.as_os_str().as_bytes())
                    .map_err(|_| not_found("contains NUL"));
            }
            Ok(_) => saw_unexecutable = true,
            Err(_) => {}
        }
    }
    if saw_unexecutable {
        return Err(not_found("permission denied (not an executable file)"));
    }
    Err(not_found(if name.contains('/') {
        "no such file or directory"
    } else {
        "executable file not found in $PATH"
    }))
}

/// Enters process.cwd and proves it is inside the root: a cwd reached through a leaked host
/// descriptor (`/proc/self/fd/N`) shows up in getcwd(2) as "(unreachable)/...".
fn enter_cwd(cwd: &Path) -> Result<(), InitError> {
    let shown = cwd.display().to_string();
    nix::unistd::chdir(cwd).map_err(perr(format!("cwd {shown}")))?;
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() && !p.starts_with("(unreachable)") => Ok(()),
        _ => Err(InitError::CwdEscape(shown)),
    }
}

fn switch_user(user: &oci_spec::runtime::User) -> Result<(), InitError> {
    let gids: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    // Drop the runtime's supplementary groups (or set the requested ones). In a user namespace
    // with setgroups denied this fails: only an explicit request is an error then.
    if let Err(e) = nix::unistd::setgroups(&gids) {
        if !gids.is_empty() {
            return Err(perr(format!("additionalGids {:?}", user.additional_gids()))(e));
        }
    }
    // Keep the permitted set across the uid change; apply() sets the final sets right after.
    // SAFETY: prctl with PR_SET_KEEPCAPS takes integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    setresgid(gid, gid, gid).map_err(perr(format!("gid {gid}")))?;
    setresuid(uid, uid, uid).map_err(perr(format!("uid {uid}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lookup_follows_path_and_reports_clearly() {
        let env = vec!["PATH=/nonexistent:/bin".to_string()];
        assert_eq!(
            lookup(&["sh".into()], &env, Path::new("/"))
                .unwrap()
                .to_str()
                .unwrap(),
            "/bin/sh"
        );
        let e = lookup(&["no-such-prog".into()], &env, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("not found in $PATH"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let e = lookup(&[plain.display().to_string()], &env, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{e}");
    }

    #[test]
    fn home_is_added_only_when_missing() {
        assert!(environment(&["HOME=/x".into()], 0) == vec!["HOME=/x".to_string()]);
        assert!(environment(&[], 0).iter().any(|e| e.starts_with("HOME=")));
    }
}
