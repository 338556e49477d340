//! The host side of one VM container: boots the VM, waits for the agent's greeting, starts the
//! container in the guest, then relays until it exits: the guest's stdout and stderr to two
//! descriptors, a stdin to the guest, and signals asked for on a control socket (`stop`,
//! `kill`). Its result is the container's exit code, or why the VM ended without one.
//!
//! Control socket protocol, one line per connection: `signal N` (to the container's init in
//! the guest) or `kill-vm` (the VMM itself, when the guest no longer answers), answered `ok`;
//! `top`, answered with the agent's [`proto::TopReply`] as one line of JSON; `exec`, followed
//! by the session's frames (see [`exec`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use moat_agent::proto::{self, Decoder, Frame, Kind, ProtoError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::vmm::{VmConfig, Vmm};
use crate::VmError;

mod dns;
pub mod exec;

/// A VM whose agent has started the container.
#[derive(Debug)]
pub struct Booted {
    child: Child,
    /// The virtio-fs daemons (they die with us, or when the VM is killed).
    daemons: Daemons,
    chan: UnixStream,
    decoder: Decoder,
    console: PathBuf,
    /// How long the boot may take (for the timeout's message).
    timeout: Duration,
    /// `exec` sessions, by stream.
    execs: Vec<exec::Session>,
    /// The guest's DNS relay.
    dns: dns::Dns,
    /// `top` requests waiting for the agent's answer, by stream.
    tops: Vec<(u32, UnixStream)>,
    next_stream: u32,
}

/// How a VM container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code (128+N for signal N; 137 when the VM died first).
    pub code: i32,
    /// Why there is no code of the container's own: the VM ended first.
    pub reason: Option<String>,
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> VmError {
    move |source| VmError::Sys { what, source }
}

/// Boots `cfg` with `vmm` and has the agent start the container described by `start`; fails
/// with Docker's exit code (125, or the agent's 126/127 for a command that cannot run) and why.
pub fn boot(
    vmm: &dyn Vmm,
    cfg: &VmConfig,
    start: &proto::Start,
    timeout: Duration,
) -> Result<Booted, (i32, VmError)> {
    let e125 = |e: VmError| (125, e);
    let (ours, theirs) = UnixStream::pair()
        .map_err(crate::io_err("socketpair", Path::new("agent")))
        .map_err(e125)?;
    let t0 = Instant::now();
    // The virtio-fs shares' daemons first (they listen before QEMU connects).
    let mut cfg = cfg.clone();
    // Killed and reaped if the boot fails (dropped), or with the VM.
    let mut daemons = Daemons(vec![]);
    if cfg.shares.iter().any(|sh| sh.virtiofs.is_some()) {
        let binary = crate::virtiofs::find().ok_or_else(|| {
            e125(crate::io_err("find", Path::new("virtiofsd"))(
                std::io::ErrorKind::NotFound.into(),
            ))
        })?;
        let cwd = std::env::current_dir()
            .map_err(crate::io_err("read", Path::new(".")))
            .map_err(e125)?;
        for sh in cfg.shares.iter_mut() {
            let Some(sock) = sh.virtiofs.take() else {
                continue;
            };
            let daemon = crate::virtiofs::serve(&binary, &sh.path, &sock, sh.readonly);
            daemons.0.push(daemon.map_err(e125)?);
            sh.virtiofs = Some(cwd.join(&sock));
        }
    }
    let cfg = &cfg;
    let child = vmm.launch(cfg, OwnedFd::from(theirs)).map_err(e125)?;
    log::debug!(
        "vm: VMM launched (pid {}) in {:?}",
        child.id(),
        t0.elapsed()
    );
    let mut vm = Booted {
        child,
        daemons,
        chan: ours,
        decoder: Decoder::default(),
        console: cfg.console_log.clone(),
        timeout,
        execs: vec![],
        dns: dns::Dns::default(),
        tops: vec![],
        next_stream: 0,
    };
    let until = Instant::now() + timeout;
    let result = (|| {
        let hello = vm.expect(Kind::Hello, "the agent's hello", until)?;
        let hello: proto::Hello = hello.parse()?;
        if hello.version != proto::VERSION {
            return Err(ProtoError::Version(hello.version).into());
        }
        log::debug!(
            "vm: agent up (kernel {}) after {:?}",
            hello.kernel,
            t0.elapsed()
        );
        vm.send(&Frame::json(Kind::Start, 0, start))?;
        let f = vm.expect(Kind::Started, "the container's start", until)?;
        log::debug!(
            "vm: container started in the guest after {:?}",
            t0.elapsed()
        );
        f.parse::<proto::Started>()?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(vm),
        Err(e) => {
            vm.kill();
            Err(match e {
                VmError::Command { code, .. } => (code, e),
                e => (125, e),
            })
        }
    }
}

/// A VM's virtio-fs daemons: killed and reaped when dropped (a boot that failed) or stopped.
#[derive(Debug)]
struct Daemons(Vec<Child>);

impl Daemons {
    fn stop(&mut self) {
        for mut d in self.0.drain(..) {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Booted {
    /// The VMM's pid.
    pub fn vmm_pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn send(&mut self, f: &Frame) -> Result<(), VmError> {
        self.chan.write_all(&f.encode()).map_err(ProtoError::from)?;
        Ok(())
    }

    /// Waits for a frame of `kind` (a `Failed` frame is the start's failure).
    fn expect(&mut self, kind: Kind, what: &'static str, until: Instant) -> Result<Frame, VmError> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                if f.kind == kind {
                    return Ok(f);
                }
                if f.kind == Kind::Failed {
                    let failed: proto::Failed = f.parse()?;
                    return Err(VmError::Command {
                        code: failed.code,
                        message: failed.message,
                    });
                }
                return Err(ProtoError::Unexpected {
                    expected: what,
                    got: f.kind,
                }
                .into());
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(VmError::Timeout(
                    self.timeout.as_secs(),
                    self.console.clone(),
                ));
            }
            if let Some(status) = self.child.try_wait().ok().flatten() {
                return Err(VmError::EarlyExit {
                    status: status.to_string(),
                    console: console_tail(&self.console),
                });
            }
            // Short polls: the VMM's early death is noticed while waiting.
            let mut fds = [PollFd::new(self.chan.as_fd(), PollFlags::POLLIN)];
            let slice = left.min(Duration::from_millis(50));
            match poll(
                &mut fds,
                PollTimeout::try_from(slice).unwrap_or(PollTimeout::ZERO),
            ) {
                Ok(0) | Err(nix::Error::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(sys("poll")(e)),
            }
            let n = self.chan.read(&mut buf).map_err(ProtoError::from)?;
            if n == 0 {
                // The VMM closed its end: it is exiting; its status says more.
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(VmError::EarlyExit {
                    status,
                    console: console_tail(&self.console),
                });
            }
            self.decoder.push(&buf[..n]);
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.daemons.stop();
    }

    /// Relays until the container has exited and the VM is gone. `stdin` (when given) feeds
    /// the container's stdin; its output goes to `out` and `err`; `control` takes signals and
    /// `exec` sessions.
    pub fn relay(mut self, stdio: HostStdio, control: UnixListener) -> Outcome {
        let HostStdio {
            mut stdin,
            out,
            err,
            tty,
        } = stdio;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        if tty.is_some() {
            mask.add(Signal::SIGWINCH);
        }
        let _ = mask.thread_block();
        let sigfd =
            SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok();
        let _ = control.set_nonblocking(true);
        let mut buf = vec![0u8; 64 * 1024];
        let mut code = None;
        let mut reason = None;
        let mut vm_status = None;
        while code.is_none() && vm_status.is_none() {
            // Slots: the channel, the control socket, the signals, stdin, the DNS relay, then exec
            // sessions.
            let mut fds = vec![
                PollFd::new(self.chan.as_fd(), PollFlags::POLLIN),
                PollFd::new(control.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(s) = &sigfd {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            } else {
                fds.push(PollFd::new(control.as_fd(), PollFlags::empty()));
            }
            if let Some(i) = &stdin {
                fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
            } else {
                fds.push(PollFd::new(control.as_fd(), PollFlags::empty()));
            }
            match &self.dns.sock {
                Some(d) => fds.push(PollFd::new(d.as_fd(), PollFlags::POLLIN)),
                None => fds.push(PollFd::new(control.as_fd(), PollFlags::empty())),
            }
            for e in &self.execs {
                fds.push(PollFd::new(e.conn.as_fd(), PollFlags::POLLIN));
            }
            // Without a signalfd the VMM's exit is polled for.
            let timeout = if sigfd.is_some() {
                PollTimeout::NONE
            } else {
                PollTimeout::from(100u16)
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(_) => break,
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if ready[0] {
                match self.chan.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        // The VMM closed the channel: it is going; its status is below.
                        vm_status = self.child.wait().ok().map(|s| s.to_string());
                    }
                    Ok(n) => {
                        self.decoder.push(&buf[..n]);
                        loop {
                            match self.decoder.next_frame() {
                                Ok(Some(f)) if f.kind == Kind::DnsQuery => self.dns_query(f),
                                Ok(Some(f)) if f.kind == Kind::TopReply => self.top_reply(f),
                                Ok(Some(f)) if f.stream != 0 => self.route_to_session(f),
                                Ok(Some(f)) => match f.kind {
                                    Kind::Stdout => {
                                        let _ = moat_runtime::console::write_all(&out, &f.payload);
                                    }
                                    Kind::Stderr => {
                                        let _ = moat_runtime::console::write_all(&err, &f.payload);
                                    }
                                    Kind::Exit => {
                                        code = f.parse::<proto::Exit>().ok().map(|e| e.code);
                                    }
                                    _ => {}
                                },
                                Ok(None) => break,
                                Err(e) => {
                                    reason = Some(e.to_string());
                                    self.kill();
                                    vm_status = Some("killed".into());
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            if ready[1] {
                self.serve_control(&control);
            }
            if sigfd.is_some() && ready[2] {
                let mut winch = false;
                if let Some(s) = &sigfd {
                    while let Ok(Some(info)) = s.read_signal() {
                        winch |= info.ssi_signo == Signal::SIGWINCH as u32;
                    }
                }
                // The host side of the terminal was resized: so is the guest's.
                if let (true, Some(t)) = (winch, &tty) {
                    if let Some((rows, cols)) = window_size(t) {
                        let _ =
                            self.send(&Frame::json(Kind::Resize, 0, &proto::Resize { rows, cols }));
                    }
                }
            }
            if vm_status.is_none() {
                if let Ok(Some(st)) = self.child.try_wait() {
                    vm_status = Some(st.to_string());
                }
            }
            if stdin.is_some() && ready[3] {
                let n = stdin
                    .as_ref()
                    .map(|i| nix::unistd::read(i, &mut buf))
                    .unwrap_or(Ok(0));
                let frame = match n {
                    Ok(0) | Err(_) => {
                        stdin = None;
                        Frame {
                            kind: Kind::StdinClose,
                            stream: 0,
                            payload: vec![],
                        }
                    }
                    Ok(n) => Frame {
                        kind: Kind::Stdin,
                        stream: 0,
                        payload: buf[..n].to_vec(),
                    },
                };
                let _ = self.send(&frame);
            }
            if self.dns.sock.is_some() && ready[4] {
                self.dns_answers();
            }
            let ready_execs: Vec<u32> = self
                .execs
                .iter()
                .zip(ready.iter().skip(5))
                .filter(|(_, r)| **r)
                .map(|(e, _)| e.stream)
                .collect();
            for stream in ready_execs {
                self.route_from_session(stream, &mut buf);
            }
        }
        // Exec sessions end with the container (their clients see the end of the stream).
        self.execs.clear();
        match code {
            Some(code) => {
                log::debug!("vm: the container exited ({code})");
                // The agent synced the guest's writes before it reported the exit: nothing in
                // the guest is worth its power-off sequence (a third of a second under TCG).
                self.kill();
                log::debug!("vm: VMM gone");
                if log::log_enabled!(log::Level::Debug) {
                    for l in std::fs::read_to_string(&self.console)
                        .unwrap_or_default()
                        .lines()
                    {
                        log::debug!("vm console: {l}");
                    }
                }
                Outcome { code, reason: None }
            }
            None => {
                self.kill();
                let status = vm_status.unwrap_or_else(|| "unknown".into());
                let why = reason
                    .unwrap_or_else(|| format!("the VM exited before the container ({status})"));
                let tail = console_tail(&self.console);
                let why = if tail.is_empty() {
                    why
                } else {
                    format!("{why}; its console: {tail}")
                };
                Outcome {
                    code: 137,
                    reason: Some(why),
                }
            }
        }
    }

    /// The agent's answer to a `top` request: to the connection that asked.
    fn top_reply(&mut self, f: Frame) {
        if let Some(i) = self.tops.iter().position(|(s, _)| *s == f.stream) {
            let (_, mut conn) = self.tops.remove(i);
            let mut line = f.payload;
            line.push(b'\n');
            let _ = conn.write_all(&line);
        }
    }

    fn serve_control(&mut self, control: &UnixListener) {
        while let Ok((conn, _)) = control.accept() {
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            // Byte by byte: what follows an `exec` line is the session's frames.
            let line = read_line(&conn);
            let answer = match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["exec"] => {
                    let _ = conn.set_read_timeout(None);
                    self.next_stream += 1;
                    self.execs.push(exec::Session::new(self.next_stream, conn));
                    continue;
                }
                ["signal", n] => match n.parse::<i32>() {
                    Ok(signal) => {
                        let f = Frame::json(Kind::Signal, 0, &proto::Signal { signal });
                        match self.send(&f) {
                            Ok(()) => "ok".to_string(),
                            Err(e) => format!("error {e}"),
                        }
                    }
                    Err(_) => format!("error bad signal {n:?}"),
                },
                ["kill-vm"] => {
                    let _ = self.child.kill();
                    "ok".to_string()
                }
                ["top"] => {
                    self.next_stream += 1;
                    let f = Frame {
                        kind: Kind::Top,
                        stream: self.next_stream,
                        payload: b"{}".to_vec(),
                    };
                    match self.send(&f) {
                        Ok(()) => {
                            // Answered when the agent's reply comes (a paused VM's once it
                            // is thawed: the client's read has timed out by then). A guest
                            // that never answers keeps only the last few waiting.
                            if self.tops.len() >= 8 {
                                self.tops.remove(0);
                            }
                            self.tops.push((self.next_stream, conn));
                            continue;
                        }
                        Err(e) => format!("error {e}"),
                    }
                }
                _ => format!("error unknown request {:?}", line.trim()),
            };
            let _ = (&conn).write_all(format!("{answer}\n").as_bytes());
        }
    }
}

/// The container's stdio on the host.
#[derive(Debug)]
pub struct HostStdio {
    /// Feeds the container's stdin (with a terminal: the host side of the pty).
    pub stdin: Option<OwnedFd>,
    /// Where its stdout goes.
    pub out: OwnedFd,
    /// Where its stderr goes.
    pub err: OwnedFd,
    /// With a terminal: the host side of the pty, the driver's controlling terminal, whose
    /// size changes (SIGWINCH) are passed on to the guest's.
    pub tty: Option<OwnedFd>,
}

/// A terminal's size (rows, columns).
fn window_size(fd: &OwnedFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into `ws`, which outlives the call; `fd` is open.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            libc::TIOCGWINSZ,
            &mut ws,
        )
    };
    (rc == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// One line (without its newline), read a byte at a time so nothing after it is consumed.
fn read_line(mut conn: &UnixStream) -> String {
    let mut line = vec![];
    let mut b = [0u8; 1];
    while line.len() < 256 {
        match conn.read(&mut b) {
            Ok(1) if b[0] != b'\n' => line.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Sends one control request to the driver listening at `socket`; its answer.
pub fn control(socket: &Path, request: &str) -> Result<(), VmError> {
    match ask(socket, request)?.as_str() {
        "ok" => Ok(()),
        other => Err(refused(socket, other)),
    }
}

/// The container's processes in the guest (`top`), by the agent.
pub fn top(socket: &Path) -> Result<proto::TopReply, VmError> {
    let answer = ask(socket, "top")?;
    serde_json::from_str(&answer).map_err(|_| refused(socket, &answer))
}

fn refused(socket: &Path, answer: &str) -> VmError {
    VmError::Io {
        what: "control request refused by",
        path: socket.to_path_buf(),
        source: std::io::Error::other(answer.to_string()),
    }
}

/// One request line to the driver; its one-line answer.
fn ask(socket: &Path, request: &str) -> Result<String, VmError> {
    let io = |what| crate::io_err(what, socket);
    let mut conn = UnixStream::connect(socket).map_err(io("connect to"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io("configure"))?;
    conn.write_all(format!("{request}\n").as_bytes())
        .map_err(io("write to"))?;
    let mut answer = String::new();
    BufReader::new(&conn)
        .read_line(&mut answer)
        .map_err(io("read from"))?;
    Ok(answer.trim().to_string())
}

/// The last lines of the guest's console, on one line.
fn console_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}
