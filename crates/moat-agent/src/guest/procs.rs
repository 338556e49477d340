//! The processes the agent runs for the host: the container's init (stream 0) and `exec`'d
//! processes (streams 1, 2, ...), each started by a short-lived starter child through
//! moat-runtime, and relayed until it exits: output to the host, the host's input, signals and
//! terminal sizes to it.

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use moat_runtime::ops::create::CreateOptions;
use moat_runtime::ops::exec::ExecOptions;
use moat_runtime::{ContainerId, OpsError, Runtime};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use super::{sys, AgentError, Channel, GUEST_BUNDLE, RUNTIME_ROOT};
use crate::proto::{self, Frame, Kind};

/// The guest runtime's name for the container.
const CONTAINER: &str = "container";

/// What to start.
#[derive(Debug)]
pub(super) enum What {
    /// The container's init.
    Init {
        /// The host feeds its stdin.
        stdin: bool,
        /// It has a terminal.
        tty: bool,
    },
    /// Another process in the running container.
    Exec(proto::ExecStart),
}

/// A process the agent relays.
#[derive(Debug)]
pub(super) struct Proc {
    stream: u32,
    /// Its guest pid.
    pub pid: i32,
    stdin: Option<OwnedFd>,
    outputs: Vec<(OwnedFd, Kind)>,
    /// The pty master, for window sizes (`exec -t`).
    master: Option<OwnedFd>,
    code: Option<i32>,
    /// Poll rounds left for its output once it exited (descendants may hold the pipes).
    grace: u32,
}

fn failed(code: i32, message: impl Into<String>) -> proto::Failed {
    proto::Failed {
        code,
        message: message.into().replace('\n', " "),
    }
}

/// Starts `what` as stream `stream` through a starter child (moat-runtime forks; its heap and
/// its children's bookkeeping stay out of the agent).
pub(super) fn spawn(stream: u32, what: &What) -> Result<Proc, proto::Failed> {
    let sys = |what: &str| {
        let what = what.to_string();
        move |e: nix::Error| failed(125, format!("{what}: {e}"))
    };
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (stdin, tty) = match what {
        What::Init { stdin, tty } => (*stdin, *tty),
        What::Exec(e) => (true, e.tty),
    };
    // A terminal's master comes from the process's init chain over a console socket.
    let console = if tty {
        let path = PathBuf::from(format!("/run/console-{stream}.sock"));
        let _ = std::fs::remove_file(&path);
        let l =
            UnixListener::bind(&path).map_err(|e| failed(125, format!("console socket: {e}")))?;
        Some((l, path))
    } else {
        None
    };
    let pipes = if tty {
        None
    } else {
        Some((
            pipe2(cloexec).map_err(sys("pipe"))?,
            pipe2(cloexec).map_err(sys("pipe"))?,
            pipe2(cloexec).map_err(sys("pipe"))?,
        ))
    };
    let (rep_r, rep_w) = pipe2(cloexec).map_err(sys("pipe"))?;
    let pid_file = PathBuf::from(format!("/run/exec-{stream}.pid"));
    // SAFETY: the agent is single-threaded, so the child may run arbitrary code.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(rep_r);
            let msg = starter(
                what,
                stdin,
                pipes,
                console.as_ref().map(|c| c.1.as_path()),
                &pid_file,
            );
            let _ = File::from(rep_w).write_all(msg.as_bytes());
            // SAFETY: ends the starter without running atexit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(rep_w);
            let mut report = String::new();
            let _ = File::from(rep_r).read_to_string(&mut report);
            let _ = waitpid(child, None);
            let pid = match report.split_once(' ') {
                Some(("started", pid)) => pid.trim().parse::<i32>().unwrap_or(-1),
                Some(("failed", rest)) => {
                    let (code, message) = rest.split_once(' ').unwrap_or(("125", rest));
                    return Err(failed(code.parse().unwrap_or(125), message));
                }
                _ => -1,
            };
            if pid <= 0 {
                return Err(failed(125, "the agent's starter process died"));
            }
            let mut p = Proc {
                stream,
                pid,
                stdin: None,
                outputs: vec![],
                master: None,
                code: None,
                grace: 200,
            };
            if let Some(((_, in_w), (out_r, _), (err_r, _))) = pipes {
                p.stdin = stdin.then_some(in_w);
                p.outputs = vec![(out_r, Kind::Stdout), (err_r, Kind::Stderr)];
            }
            if let Some((listener, path)) = console {
                let master = receive_master(&listener);
                let _ = std::fs::remove_file(path);
                let master = master.map_err(|e| failed(125, format!("terminal: {e}")))?;
                let dup = |m: &OwnedFd| m.try_clone().map_err(|e| failed(125, format!("dup: {e}")));
                p.stdin = Some(dup(&master)?);
                p.master = Some(dup(&master)?);
                p.outputs = vec![(master, Kind::Stdout)];
            }
            Ok(p)
        }
    }
}

type Pipes = ((OwnedFd, OwnedFd), (OwnedFd, OwnedFd), (OwnedFd, OwnedFd));

/// In the starter: stdio, then moat-runtime; the line for the agent.
fn starter(
    what: &What,
    stdin: bool,
    pipes: Option<Pipes>,
    console: Option<&Path>,
    pid_file: &Path,
) -> String {
    let stdio = (|| -> nix::Result<()> {
        let null = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|_| nix::Error::ENOENT)?;
        match &pipes {
            Some(((in_r, _), (_, out_w), (_, err_w))) => {
                if stdin {
                    nix::unistd::dup2_stdin(in_r)?;
                } else {
                    nix::unistd::dup2_stdin(&null)?;
                }
                nix::unistd::dup2_stdout(out_w)?;
                nix::unistd::dup2_stderr(err_w)
            }
            None => {
                nix::unistd::dup2_stdin(&null)?;
                nix::unistd::dup2_stdout(&null)?;
                nix::unistd::dup2_stderr(&null)
            }
        }
    })();
    drop(pipes);
    if let Err(e) = stdio {
        return format!("failed 125 dup2: {e}");
    }
    let rt = Runtime::new(RUNTIME_ROOT);
    let id: ContainerId = match CONTAINER.parse() {
        Ok(id) => id,
        Err(e) => return format!("failed 125 {e}"),
    };
    let result = match what {
        What::Init { .. } => {
            let opts = CreateOptions {
                bundle: PathBuf::from(GUEST_BUNDLE),
                console_socket: console.map(Path::to_path_buf),
                ..Default::default()
            };
            moat_runtime::ops::run::start_child(&rt, &id, &opts)
        }
        What::Exec(e) => {
            let process = match serde_json::from_value(e.process.clone()) {
                Ok(p) => p,
                Err(err) => return format!("failed 125 exec process: {err}"),
            };
            let opts = ExecOptions {
                process,
                pid_file: Some(pid_file.to_path_buf()),
                console_socket: console.map(Path::to_path_buf),
                preserve_fds: 0,
                detach: true,
            };
            moat_runtime::ops::exec::exec(&rt, &id, &opts).and_then(|_| {
                std::fs::read_to_string(pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
                    .ok_or_else(|| OpsError::ExecFailed("the exec'd process left no pid".into()))
            })
        }
    };
    match result {
        Ok(pid) => format!("started {pid}"),
        Err(OpsError::Command { message, code }) => {
            format!("failed {code} {}", message.replace('\n', " "))
        }
        Err(e) => format!("failed 125 {}", e.to_string().replace('\n', " ")),
    }
}

/// The pty master the process's init chain sent (already queued: it connected before the
/// exec reported the start).
fn receive_master(listener: &UnixListener) -> Result<OwnedFd, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let (conn, _) = listener
        .accept()
        .map_err(|e| format!("no connection: {e}"))?;
    let mut byte = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| e.to_string())?;
    for c in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us (SCM_RIGHTS).
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err("no descriptor received".into())
}

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, nix::pty::Winsize);

/// Relays every process until the init (stream 0) has exited and its output is drained; its
/// exit code. Execs are started as the host asks.
pub(super) fn relay(
    chan: &mut Channel,
    mut procs: Vec<Proc>,
    sigfd: &SignalFd,
    mut dns: Option<super::dns::Relay>,
) -> Result<i32, AgentError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let draining = procs.iter().any(|p| p.code.is_some());
        let mut fds: Vec<PollFd<'_>> = vec![];
        let mut slots = vec![];
        for (i, p) in procs.iter().enumerate() {
            for (j, (fd, _)) in p.outputs.iter().enumerate() {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                slots.push((i, j));
            }
        }
        let n_out = fds.len();
        fds.push(PollFd::new(chan.port.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(sigfd.as_fd(), PollFlags::POLLIN));
        if let Some(d) = &dns {
            for fd in d.fds() {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
        }
        let timeout = if draining {
            PollTimeout::from(10u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(sys("poll")(e)),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut closed = vec![];
        for (slot, &(i, j)) in slots.iter().enumerate() {
            if !ready[slot] {
                continue;
            }
            let p = &procs[i];
            let (fd, kind) = &p.outputs[j];
            match nix::unistd::read(fd, &mut buf) {
                // EIO on a pty master: its last user is gone.
                Ok(0) | Err(_) => closed.push((i, j)),
                Ok(n) => chan.send(&Frame {
                    kind: *kind,
                    stream: p.stream,
                    payload: buf[..n].to_vec(),
                })?,
            }
        }
        for (i, j) in closed.into_iter().rev() {
            procs[i].outputs.remove(j);
        }
        if ready[n_out] {
            let n = nix::unistd::read(&chan.port, &mut buf).map_err(sys("read port"))?;
            if n == 0 {
                // The host went away: nobody to report to; the container goes with the VM.
                return Ok(137);
            }
            chan.decoder.push(&buf[..n]);
            while let Some(f) = chan.decoder.next_frame()? {
                if f.kind == Kind::DnsAnswer {
                    if let Some(d) = &mut dns {
                        d.answer(&f);
                    }
                    continue;
                }
                if f.kind == Kind::Top {
                    // The container's pid namespace is its init's (stream 0).
                    let mut processes = procs
                        .iter()
                        .find(|p| p.stream == 0)
                        .map(|init| moat_runtime::procinfo::in_pid_namespace_of(init.pid))
                        .unwrap_or_default();
                    // Bounded, so the answer fits one frame whatever runs (a frame over the
                    // limit is a protocol error that ends the VM).
                    processes.truncate(proto::TOP_MAX_PROCESSES);
                    for p in &mut processes {
                        if p.cmd.len() > proto::TOP_MAX_CMD {
                            let mut end = proto::TOP_MAX_CMD;
                            while !p.cmd.is_char_boundary(end) {
                                end -= 1;
                            }
                            p.cmd.truncate(end);
                        }
                    }
                    let reply = proto::TopReply { processes };
                    chan.send(&Frame::json(Kind::TopReply, f.stream, &reply))?;
                    continue;
                }
                handle(chan, &mut procs, f)?;
            }
        }
        if ready[n_out + 1] {
            while let Ok(Some(_)) = sigfd.read_signal() {}
        }
        if let Some(d) = &mut dns {
            for q in d.ready(ready.get(n_out + 2..).unwrap_or_default()) {
                chan.send(&q)?;
            }
        }
        reap(&mut procs);
        // Ended processes whose output is drained (or whose descendants kept it too long).
        let mut i = 0;
        while i < procs.len() {
            let p = &mut procs[i];
            if let Some(code) = p.code {
                p.grace = p.grace.saturating_sub(1);
                if p.outputs.is_empty() || p.grace == 0 {
                    if p.stream == 0 {
                        return Ok(code);
                    }
                    chan.send(&Frame::json(Kind::Exit, p.stream, &proto::Exit { code }))?;
                    procs.remove(i);
                    continue;
                }
            }
            i += 1;
        }
    }
}

/// One frame from the host.
fn handle(chan: &mut Channel, procs: &mut Vec<Proc>, f: Frame) -> Result<(), AgentError> {
    if f.kind == Kind::Exec {
        let req: proto::ExecStart = f.parse()?;
        match spawn(f.stream, &What::Exec(req)) {
            Ok(p) => {
                chan.send(&Frame::json(
                    Kind::Started,
                    f.stream,
                    &proto::Started { pid: p.pid },
                ))?;
                procs.push(p);
            }
            Err(e) => chan.send(&Frame::json(Kind::Failed, f.stream, &e))?,
        }
        return Ok(());
    }
    let Some(p) = procs.iter_mut().find(|p| p.stream == f.stream) else {
        return Ok(());
    };
    match f.kind {
        Kind::Stdin => {
            if let Some(fd) = &p.stdin {
                if moat_runtime::console::write_all(fd, &f.payload).is_err() {
                    p.stdin = None;
                }
            }
        }
        // A terminal has no end of file to close: its master stays (it is the output).
        Kind::StdinClose if p.master.is_none() => p.stdin = None,
        Kind::Signal => {
            let s: proto::Signal = f.parse()?;
            if let Ok(sig) = Signal::try_from(s.signal) {
                let _ = nix::sys::signal::kill(Pid::from_raw(p.pid), sig);
            }
        }
        Kind::Resize => {
            let r: proto::Resize = f.parse()?;
            if let Some(m) = &p.master {
                let ws = nix::pty::Winsize {
                    ws_row: r.rows,
                    ws_col: r.cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: `m` is an open pty master and `ws` a valid Winsize for TIOCSWINSZ.
                let _ = unsafe { set_winsize(m.as_raw_fd(), &ws) };
            }
        }
        _ => {}
    }
    Ok(())
}

/// Reaps whatever exited (PID 1 inherits every orphan) and records the exit codes of ours.
fn reap(procs: &mut [Proc]) {
    loop {
        let (pid, code) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) => (p.as_raw(), c),
            Ok(WaitStatus::Signaled(p, s, _)) => (p.as_raw(), 128 + s as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        };
        if let Some(p) = procs.iter_mut().find(|p| p.pid == pid) {
            p.code = Some(code);
        }
    }
}
