//! `moat exec`: another process in a running container, built from the container's own process
//! (environment, capabilities, rlimits, seccomp) with Docker's `exec` flags applied, and run by
//! the runtime library in this process. Its output goes straight to the caller (Docker does not
//! log exec output either).

use moat_runtime::ops::exec::{process_for, ExecOptions, ExecOverrides};
use moat_runtime::{OpsError, Runtime};

use crate::containers::{Row, State};
use crate::{EngineError, Paths};

/// Docker's `exec` flags.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub cmd: Vec<String>,
    /// `-e KEY=VALUE` (or `-e KEY`, taken from moat's environment).
    pub env: Vec<String>,
    /// `-u user[:group]`, resolved in the container's /etc/passwd and /etc/group.
    pub user: Option<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-d`: return once it started.
    pub detach: bool,
    /// `-t`: a terminal (a pty in the container), copied to and from our stdio.
    pub tty: bool,
}

/// Runs the request in container `row`; its exit code (0 when detached).
pub fn exec(paths: &Paths, row: &Row, req: &ExecRequest) -> Result<i32, EngineError> {
    if row.effective().0 != State::Running {
        return Err(EngineError::Conflict(format!(
            "container {} is not running",
            row.id
        )));
    }
    if req.cmd.is_empty() {
        return Err(EngineError::Conflict(
            "exec needs a command to run".to_string(),
        ));
    }
    let dir = paths.container_dir(&row.id);
    let spec = oci_spec::runtime::Spec::load(dir.join("config.json"))
        .map_err(|e| EngineError::Spec(e.to_string()))?;
    if let Some(w) = &req.workdir {
        if !w.starts_with('/') {
            return Err(EngineError::Workdir(w.clone()));
        }
    }
    let (user, gids) = match &req.user {
        Some(u) => {
            let (uid, gid, gids) = crate::spec::resolve_user(&dir.join("rootfs"), u)?;
            (Some((uid, Some(gid))), gids)
        }
        None => (None, vec![]),
    };
    let env = req
        .env
        .iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e.clone())
            } else {
                std::env::var(e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect();
    let overrides = ExecOverrides {
        args: req.cmd.clone(),
        cwd: req.workdir.as_ref().map(Into::into),
        env,
        user,
        additional_gids: gids,
        ..Default::default()
    };
    let mut process = process_for(&spec, &overrides)?;
    if req.tty {
        if req.detach {
            return Err(EngineError::Conflict(
                "exec -d with -t is not supported: a detached exec has nobody at its terminal"
                    .to_string(),
            ));
        }
        process.set_terminal(Some(true));
        let mut env = process.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
            process.set_env(Some(env));
        }
    }
    // A non-root user holds no capabilities (only the bounding set stays), as in `run`.
    if process.user().uid() != 0 {
        if let Some(mut caps) = process.capabilities().clone() {
            caps.set_effective(Some(Default::default()));
            caps.set_permitted(Some(Default::default()));
            caps.set_inheritable(Some(Default::default()));
            caps.set_ambient(Some(Default::default()));
            process.set_capabilities(Some(caps));
        }
    }
    if crate::vm::is_vm(&dir) {
        return crate::vm::exec(&dir, &process, req);
    }
    let cid = row
        .id
        .parse()
        .map_err(|e: moat_runtime::id::IdError| EngineError::Spec(e.to_string()))?;
    let rt = Runtime::new(&paths.runtime_root);
    // A terminal: the process's pty master comes over a console socket (runc's protocol) and
    // is copied to and from our stdio by a thread while the runtime waits for the exit.
    let console = if req.tty {
        let path = std::env::temp_dir().join(format!("moat-exec-{}.sock", std::process::id()));
        Some(crate::monitor::console::Console::bind_path(&path)?)
    } else {
        None
    };
    let opts = ExecOptions {
        process,
        pid_file: None,
        console_socket: console.as_ref().map(|c| c.path.clone()),
        preserve_fds: 0,
        detach: req.detach,
    };
    // SIGWINCH is taken by a thread of ours, and the signals the runtime forwards (SIGCHLD
    // among them) by its wait: all blocked here, before the relay threads start, so that every
    // thread has them blocked (a process-directed SIGCHLD taken by a thread that left it
    // unblocked is discarded, and the wait never ends: seen as a hung `exec -t`). The exec'd
    // process's init chain resets its mask.
    if console.is_some() {
        let mut set = moat_runtime::ops::run::forwarded_signals();
        set.add(nix::sys::signal::Signal::SIGWINCH);
        let _ = set.thread_block();
    }
    let relay = console.map(|c| std::thread::spawn(move || relay_terminal(&c)));
    let result = match moat_runtime::ops::exec::exec(&rt, &cid, &opts) {
        Ok(code) => Ok(code),
        Err(OpsError::Command { message, code }) => Err(EngineError::Command { message, code }),
        Err(e) => Err(e.into()),
    };
    if let Some(r) = relay {
        // The output ends (EIO) once the process and everything holding its pty are gone; a
        // failed start never connects, and then the relay is not waited for.
        if result.is_ok() {
            let _ = r.join();
        }
    }
    result
}

/// Waits for SIGWINCH (blocked in every thread) and gives the pty `master` our terminal's size
/// each time.
fn follow_window(master: &std::os::fd::OwnedFd) {
    let mut winch = nix::sys::signal::SigSet::empty();
    winch.add(nix::sys::signal::Signal::SIGWINCH);
    while winch.wait().is_ok() {
        if let Some((rows, cols)) = crate::monitor::console::caller_size() {
            let _ = crate::monitor::console::set_size(std::os::fd::AsFd::as_fd(master), rows, cols);
        }
    }
}

/// The running exec'd process under `helper` (a `moat exec -t` child of an API server, in
/// container `container`): the nearest descendant whose standard input is a pseudo-terminal;
/// its terminal gets the size. A VM container's exec has its terminal in the guest: the helper
/// is told (see [`crate::vm::exec`]).
pub fn resize_exec(
    paths: &crate::Paths,
    container: &str,
    helper: u32,
    rows: u16,
    cols: u16,
) -> Result<(), EngineError> {
    use std::os::unix::fs::MetadataExt;
    let dir = paths.container_dir(container);
    if crate::vm::is_vm(&dir) {
        return crate::vm::resize_exec(&dir, helper, rows, cols);
    }
    let mut children: std::collections::HashMap<i32, Vec<i32>> = Default::default();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: fields count from the last ')'.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut queue: std::collections::VecDeque<i32> = children
        .get(&(helper as i32))
        .cloned()
        .unwrap_or_default()
        .into();
    while let Some(p) = queue.pop_front() {
        // Major 136..=143: Unix98 pseudo-terminal slaves.
        let pts = std::fs::metadata(format!("/proc/{p}/fd/0"))
            .is_ok_and(|m| (136..=143).contains(&libc::major(m.rdev())));
        if pts {
            return crate::monitor::console::resize(p, rows, cols).map_err(|source| {
                EngineError::Io {
                    what: "resize the terminal of",
                    path: format!("/proc/{p}/fd/0").into(),
                    source,
                }
            });
        }
        queue.extend(children.get(&p).cloned().unwrap_or_default());
    }
    Err(EngineError::Conflict(format!(
        "exec process {helper} has no terminal to resize (it ended, or runs without -t)"
    )))
}

/// Copies our stdin to the exec's pty master and the master to our stdout, until the master
/// reports the other side closed. The pty gets our terminal's size, when we have one.
fn relay_terminal(console: &crate::monitor::console::Console) {
    use std::io::{Read, Write};
    let Ok(master) = console.wait_master() else {
        return;
    };
    // Our terminal's size, or (an API server's pipes) a conventional 24x80.
    let (rows, cols) = crate::monitor::console::caller_size().unwrap_or((24, 80));
    let _ = crate::monitor::console::set_size(std::os::fd::AsFd::as_fd(&master), rows, cols);
    // The caller's window changes reach the process's terminal.
    if let Ok(m) = master.try_clone() {
        std::thread::spawn(move || follow_window(&m));
    }
    let mut out = std::fs::File::from(master);
    if let Ok(mut to) = out.try_clone() {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 8192];
    // EIO: the process side of the pty is closed (it exited).
    while let Ok(n) = out.read(&mut buf) {
        if n == 0 || stdout.write_all(&buf[..n]).is_err() {
            break;
        }
        let _ = stdout.flush();
    }
}
