//! The process itself: what the init (and `exec`) does between entering the container and
//! `execve`: terminal, rlimits, oom_score_adj, capabilities, seccomp, user, no_new_privs, and the
//! close-on-exec sweep. Preparation happens while the process is still privileged; [`exec`]
//! drops the privileges in the one order that works and replaces the process.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::Process;

use super::{ioerr, perr, Failure, InitError};
use crate::capabilities::CapSets;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A process ready to exec.
#[derive(Debug)]
pub struct Prepared {
    caps: Option<CapSets>,
    filter: Option<crate::seccomp::Program>,
    env: Vec<String>,
    program: CString,
    /// What the user should be told (clamped rlimits): the caller relays it to the runtime.
    pub warnings: Vec<String>,
}

/// Everything that needs privileges or can fail with a config error, done before `Created` so
/// that `create` (and `exec`) report it: terminal, rlimits, oom_score_adj, capability and seccomp
/// parsing, the program lookup (with the container's PATH) and the cwd check.
pub fn prepare(
    process: &Process,
    seccomp: Option<&crate::seccomp::Program>,
    console: Option<RawFd>,
) -> Result<Prepared, Failure> {
    let f = |e: InitError| (e, 125);
    if process.terminal() == Some(true) {
        let sock = console.ok_or_else(|| {
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
    let mut warnings = vec![];
    if let Some(limits) = process.rlimits() {
        warnings = crate::rlimits::apply(limits).map_err(|e| f(e.into()))?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| f(ioerr(format!("oom_score_adj {adj}"))(e)))?;
    }
    let caps = match process.capabilities() {
        Some(c) => Some(CapSets::from_spec(c).map_err(|e| f(e.into()))?),
        None => None,
    };
    let filter = seccomp.cloned();
    let env = environment(
        process.env().as_deref().unwrap_or(&[]),
        process.user().uid(),
    );
    let program = lookup(
        &process.args().clone().unwrap_or_default(),
        &env,
        process.cwd(),
    )
    .map_err(|e| {
        // Docker's codes: 126 for a program that cannot be invoked, 127 for one not found.
        let code = if matches!(e, InitError::NotExecutable(_)) {
            126
        } else {
            127
        };
        (e, code)
    })?;
    enter_cwd(process.cwd()).map_err(f)?;

    Ok(Prepared {
        caps,
        filter,
        env,
        program,
        warnings,
    })
}

/// Drops privileges and execs `process`; returns only on failure (with Docker's exit code:
/// 126 for a program that cannot run, 127 for one that does not exist, 125 otherwise).
pub fn exec(p: &Prepared, process: &Process, preserve_fds: i32) -> Failure {
    match exec_inner(p, process, preserve_fds) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn exec_inner(
    p: &Prepared,
    process: &Process,
    preserve_fds: i32,
) -> Result<std::convert::Infallible, Failure> {
    let f = |e: InitError| (e, 125);
    let (caps, filter, env, program) = (&p.caps, &p.filter, &p.env, &p.program);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        process.user().umask().unwrap_or(0o022),
    ));
    // CVE-2024-21626: nothing of the runtime's may leak into the container. Done first, while
    // no seccomp profile can deny close_range and with its result checked.
    cloexec_from(3 + preserve_fds.max(0)).map_err(f)?;
    let nnp = process.no_new_privileges() == Some(true);
    if let Some(c) = caps {
        c.apply_bounding().map_err(|e| f(e.into()))?;
    }
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which we still hold here; the
    // profile must then allow the few syscalls that follow (setuid, capset, execve), as Docker's
    // does. With no_new_privs the filter goes on last, as late as possible.
    if let (Some(flt), false) = (filter, nnp) {
        flt.load().map_err(|e| f(e.into()))?;
    }
    switch_user(process.user()).map_err(f)?;
    if let Some(c) = caps {
        c.apply().map_err(|e| f(e.into()))?;
    }
    if nnp {
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(f(perr("no_new_privileges")(nix::Error::last())));
        }
        if let Some(flt) = filter {
            flt.load().map_err(|e| f(e.into()))?;
        }
    }
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
    let err = nix::unistd::execve(program, &args, &envc);
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

/// Marks every descriptor from `first` up close-on-exec: `close_range(CLOSE_RANGE_CLOEXEC)`, or
/// on kernels without it (< 5.11) a walk of /proc/self/fd.
fn cloexec_from(first: i32) -> Result<(), InitError> {
    // SAFETY: close_range takes plain integers; CLOSE_RANGE_CLOEXEC only sets descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let dir = std::fs::read_dir("/proc/self/fd").map_err(ioerr("list /proc/self/fd"))?;
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number only changes its flags (EBADF for the one the
        // directory listing itself used, which is already closed: ignored).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
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
        return Err(InitError::NotExecutable(name));
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
        assert!(matches!(e, InitError::NotExecutable(_)), "{e}");
        assert!(e.to_string().contains("permission denied"), "{e}");
    }

    #[test]
    fn home_is_added_only_when_missing() {
        assert!(environment(&["HOME=/x".into()], 0) == vec!["HOME=/x".to_string()]);
        assert!(environment(&[], 0).iter().any(|e| e.starts_with("HOME=")));
    }
}
