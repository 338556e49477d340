//! The agent's life as the guest's PID 1: boot mounts, the channel to the host, the container.
//!
//! Order matters: the initramfs is the kernel's `rootfs` mount, under which `pivot_root` is
//! refused (EINVAL), and moat-runtime pivots into the container's root. So the agent first moves
//! a fresh tmpfs over `/` and chroots into it (what `switch_root` does), then mounts the rest.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use moat_runtime::ops::create::CreateOptions;
use moat_runtime::{ContainerId, OpsError, Runtime};
use nix::mount::{mount, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};
use serde_json::Value;

use crate::proto::{self, Decoder, Frame, Kind, ProtoError};

/// Errors of the agent (written to the guest console, which the host keeps as a log).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// a boot mount failed
    #[error("mount {target}: {source}")]
    Mount {
        /// Where.
        target: String,
        /// The errno.
        source: nix::Error,
    },
    /// a system call failed
    #[error("{what}: {source}")]
    Sys {
        /// What was done.
        what: &'static str,
        /// The errno.
        source: nix::Error,
    },
    /// a file operation failed
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// no virtio-serial port with the agent's name
    #[error("no virtio-serial port named {0} in /sys/class/virtio-ports")]
    NoPort(&'static str),
    /// the channel broke or carried garbage
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// the container's config.json cannot be used in the guest
    #[error("config.json: {0}")]
    Config(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AgentError + 'a {
    move |source| AgentError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> AgentError {
    move |source| AgentError::Sys { what, source }
}

/// Where the container's bundle is mounted in the guest.
const BUNDLE: &str = "/run/bundle";
/// Where the container's root filesystem is mounted in the guest.
const ROOTFS: &str = "/run/rootfs";
/// Where the guest's own copy of the (rewritten) config.json lives.
const GUEST_BUNDLE: &str = "/run/container";
/// The guest runtime's state root; its seccomp cache is the host's precompiled program.
const RUNTIME_ROOT: &str = "/run/moat-runtime";
/// Where other shared host directories are mounted.
const SHARES: &str = "/run/shares";

/// The agent's entry point; only returns (with an exit code) when not PID 1.
pub fn main() -> i32 {
    if std::process::id() != 1 {
        eprintln!("moat-agent: this is the guest agent of VM containers: it runs as PID 1 of a VM");
        return 2;
    }
    if let Err(e) = run() {
        eprintln!("moat-agent: {e}");
    }
    power_off()
}

/// Ends the guest: the kernel reboots (`reboot=t`), which QEMU (`-no-reboot`) turns into its
/// exit. PID 1 must never return.
fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// The guest's uptime in milliseconds (the agent's steps, for `--debug`).
fn uptime_ms() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 * 1e3 + t.tv_nsec() as f64 / 1e6)
        .unwrap_or(0.0)
}

/// The agent's steps with their times, written to the console when the host asks (`--debug`).
#[derive(Debug, Default)]
struct Trace {
    steps: Vec<(&'static str, f64)>,
    on: bool,
}

impl Trace {
    fn step(&mut self, what: &'static str) {
        self.steps.push((what, uptime_ms()));
        if self.on {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for (what, at) in self.steps.drain(..) {
            eprintln!("moat-agent: {at:.1} ms: {what}");
        }
    }
}

/// With `--debug`, moat-runtime's own steps in the guest go to the console too (through a
/// descriptor of the agent's, never the container's stdio).
#[derive(Debug)]
struct ConsoleLog(File);

impl log::Log for ConsoleLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Debug
    }

    fn log(&self, r: &log::Record<'_>) {
        let line = format!("moat-agent: {:.1} ms: {}\n", uptime_ms(), r.args());
        let _ = (&self.0).write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn run() -> Result<(), AgentError> {
    let mut trace = Trace::default();
    trace.step("agent started");
    switch_root()?;
    boot_mounts()?;
    trace.step("mounted");
    let port = open_port()?;
    let mut chan = Channel::new(port);
    let uname = nix::sys::utsname::uname().map_err(sys("uname"))?;
    chan.send(&Frame::json(
        Kind::Hello,
        0,
        &proto::Hello {
            version: proto::VERSION,
            kernel: uname.release().to_string_lossy().into_owned(),
        },
    ))?;
    let f = chan.recv()?;
    if f.kind != Kind::Start {
        return Err(ProtoError::Unexpected {
            expected: "start",
            got: f.kind,
        }
        .into());
    }
    let start: proto::Start = f.parse()?;
    for share in &start.shares {
        let target = Path::new(SHARES).join(&share.tag);
        mount_9p(&share.tag, &target)?;
    }
    trace.on = start.debug;
    if start.debug {
        if let Ok(c) = File::options().write(true).open("/dev/console") {
            if log::set_boxed_logger(Box::new(ConsoleLog(c))).is_ok() {
                log::set_max_level(log::LevelFilter::Debug);
            }
        }
    }
    trace.step("start received, shares mounted");
    guest_config(&start)?;
    let cache = Path::new(RUNTIME_ROOT).join("@seccomp");
    std::fs::create_dir_all(RUNTIME_ROOT).map_err(io("mkdir", Path::new(RUNTIME_ROOT)))?;
    let _ = std::os::unix::fs::symlink(Path::new(BUNDLE).join(proto::SECCOMP_DIR), &cache);
    supervise(&mut chan, &start, &mut trace)
}

/// Moves a tmpfs over the initramfs and chroots into it (see the module comment).
fn switch_root() -> Result<(), AgentError> {
    let new = Path::new("/newroot");
    std::fs::create_dir_all(new).map_err(io("mkdir", new))?;
    do_mount("tmpfs", new, "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
    for d in ["proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(new.join(d)).map_err(io("mkdir", new))?;
    }
    std::env::set_current_dir(new).map_err(io("chdir", new))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(|source| {
        AgentError::Mount {
            target: "/ (move)".into(),
            source,
        }
    })?;
    nix::unistd::chroot(".").map_err(sys("chroot"))?;
    std::env::set_current_dir("/").map_err(io("chdir", Path::new("/")))?;
    Ok(())
}

fn do_mount(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), AgentError> {
    std::fs::create_dir_all(target).map_err(io("mkdir", target))?;
    mount(Some(src), target, Some(fstype), flags, data).map_err(|source| AgentError::Mount {
        target: target.display().to_string(),
        source,
    })
}

fn boot_mounts() -> Result<(), AgentError> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    do_mount("proc", Path::new("/proc"), "proc", nosuid, None)?;
    do_mount("sysfs", Path::new("/sys"), "sysfs", nosuid, None)?;
    do_mount(
        "devtmpfs",
        Path::new("/dev"),
        "devtmpfs",
        MsFlags::MS_NOSUID,
        None,
    )?;
    do_mount(
        "devpts",
        Path::new("/dev/pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    do_mount("tmpfs", Path::new("/dev/shm"), "tmpfs", nosuid, None)?;
    do_mount(
        "tmpfs",
        Path::new("/run"),
        "tmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    do_mount(
        "tmpfs",
        Path::new("/tmp"),
        "tmpfs",
        MsFlags::MS_NOSUID,
        None,
    )?;
    do_mount(
        "cgroup2",
        Path::new("/sys/fs/cgroup"),
        "cgroup2",
        nosuid,
        None,
    )?;
    mount_9p(proto::BUNDLE_TAG, Path::new(BUNDLE))?;
    mount_9p(proto::ROOTFS_TAG, Path::new(ROOTFS))
}

fn mount_9p(tag: &str, target: &Path) -> Result<(), AgentError> {
    // cache=mmap: shared writable mappings work (databases in containers), without loose
    // caching's stale views of files the host changes.
    do_mount(
        tag,
        target,
        "9p",
        MsFlags::empty(),
        Some("trans=virtio,version=9p2000.L,msize=262144,cache=mmap"),
    )
}

/// The virtio-serial port named [`proto::PORT_NAME`] (no udev here: found through sysfs).
fn open_port() -> Result<File, AgentError> {
    let class = Path::new("/sys/class/virtio-ports");
    let entries = std::fs::read_dir(class).map_err(io("read", class))?;
    for e in entries.flatten() {
        let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if name.trim() == proto::PORT_NAME {
            let dev = Path::new("/dev").join(e.file_name());
            return File::options()
                .read(true)
                .write(true)
                .open(&dev)
                .map_err(io("open", &dev));
        }
    }
    Err(AgentError::NoPort(proto::PORT_NAME))
}

/// Frames over the port.
struct Channel {
    port: File,
    decoder: Decoder,
}

impl Channel {
    fn new(port: File) -> Channel {
        Channel {
            port,
            decoder: Decoder::default(),
        }
    }

    fn send(&mut self, f: &Frame) -> Result<(), AgentError> {
        self.port.write_all(&f.encode()).map_err(ProtoError::from)?;
        Ok(())
    }

    /// Blocks for the next frame.
    fn recv(&mut self) -> Result<Frame, AgentError> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(f);
            }
            let n = self.port.read(&mut buf).map_err(ProtoError::from)?;
            if n == 0 {
                return Err(ProtoError::Io(std::io::ErrorKind::UnexpectedEof.into()).into());
            }
            self.decoder.push(&buf[..n]);
        }
    }
}

/// Writes the guest's config.json: the host's, with paths that make sense in the guest.
fn guest_config(start: &proto::Start) -> Result<(), AgentError> {
    let src = Path::new(BUNDLE).join("config.json");
    let text = std::fs::read(&src).map_err(io("read", &src))?;
    let mut doc: Value =
        serde_json::from_slice(&text).map_err(|e| AgentError::Config(e.to_string()))?;
    rewrite_config(&mut doc, start)?;
    let dir = Path::new(GUEST_BUNDLE);
    std::fs::create_dir_all(dir).map_err(io("mkdir", dir))?;
    let dst = dir.join("config.json");
    let bytes = serde_json::to_vec(&doc).map_err(|e| AgentError::Config(e.to_string()))?;
    std::fs::write(&dst, bytes).map_err(io("write", &dst))
}

/// The host's config.json made fit for the guest: the root and bind sources mapped into the
/// shares, no namespace paths (they name the host's namespaces), no hooks (host programs), no
/// cpuset (the VM's vCPUs are the limit).
pub fn rewrite_config(doc: &mut Value, start: &proto::Start) -> Result<(), AgentError> {
    doc["root"]["path"] = Value::from(ROOTFS);
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("hooks");
    }
    let map = |src: &str| -> Option<String> {
        let under = |base: &str, guest: &str| {
            let rest = src.strip_prefix(base)?;
            (rest.is_empty() || rest.starts_with('/')).then(|| format!("{guest}{rest}"))
        };
        under(&start.host_bundle, BUNDLE).or_else(|| {
            start
                .shares
                .iter()
                .find_map(|s| under(&s.host_path, &format!("{SHARES}/{}", s.tag)))
        })
    };
    if let Some(mounts) = doc["mounts"].as_array_mut() {
        for m in mounts.iter_mut() {
            let bind = m["type"] == "bind"
                || m["options"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"));
            if !bind {
                continue;
            }
            let src = m["source"].as_str().unwrap_or_default().to_string();
            let guest = map(&src).ok_or_else(|| {
                AgentError::Config(format!("bind source {src} is not shared with the VM"))
            })?;
            m["source"] = Value::from(guest);
        }
    }
    if let Some(ns) = doc["linux"]["namespaces"].as_array_mut() {
        for n in ns.iter_mut() {
            if let Some(o) = n.as_object_mut() {
                o.remove("path");
            }
        }
    }
    if let Some(cpu) = doc["linux"]["resources"]["cpu"].as_object_mut() {
        cpu.remove("cpus");
        cpu.remove("mems");
    }
    Ok(())
}

/// Creates the container, then relays its stdio and signals until it exits.
fn supervise(
    chan: &mut Channel,
    start: &proto::Start,
    trace: &mut Trace,
) -> Result<(), AgentError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block().map_err(sys("block SIGCHLD"))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(sys("signalfd"))?;
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (in_r, in_w) = pipe2(cloexec).map_err(sys("pipe"))?;
    let (out_r, out_w) = pipe2(cloexec).map_err(sys("pipe"))?;
    let (err_r, err_w) = pipe2(cloexec).map_err(sys("pipe"))?;
    let (rep_r, rep_w) = pipe2(cloexec).map_err(sys("pipe"))?;
    // SAFETY: the agent is single-threaded here, so the child may run arbitrary code.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop((in_w, out_r, err_r, rep_r));
            let msg = starter(start.stdin, in_r, out_w, err_w);
            let _ = File::from(rep_w).write_all(msg.as_bytes());
            // SAFETY: ends the starter without running atexit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop((in_r, out_w, err_w, rep_w));
            let mut report = String::new();
            let _ = File::from(rep_r).read_to_string(&mut report);
            let _ = waitpid(child, None);
            let pid = match report.split_once(' ') {
                Some(("started", pid)) => pid.trim().parse::<i32>().unwrap_or(-1),
                Some(("failed", rest)) => {
                    let (code, message) = rest.split_once(' ').unwrap_or(("125", rest));
                    let failed = proto::Failed {
                        code: code.parse().unwrap_or(125),
                        message: message.to_string(),
                    };
                    return chan.send(&Frame::json(Kind::Failed, 0, &failed));
                }
                _ => -1,
            };
            if pid <= 0 {
                let failed = proto::Failed {
                    code: 125,
                    message: "the agent's starter process died".into(),
                };
                return chan.send(&Frame::json(Kind::Failed, 0, &failed));
            }
            trace.step("container started");
            chan.send(&Frame::json(Kind::Started, 0, &proto::Started { pid }))?;
            let stdin = start.stdin.then_some(in_w);
            let code = relay(chan, pid, stdin, out_r, err_r, &sigfd)?;
            trace.step("container exited");
            // Everything the container wrote reaches the host before the exit is reported:
            // the host may end the VM as soon as it hears of it.
            nix::unistd::sync();
            chan.send(&Frame::json(Kind::Exit, 0, &proto::Exit { code }))
        }
    }
}

/// In the starter (a child of the agent): stdio on the pipes, then moat-runtime's create and
/// start; the line for the agent.
fn starter(stdin: bool, in_r: OwnedFd, out: OwnedFd, err: OwnedFd) -> String {
    let stdio = (|| -> nix::Result<()> {
        if stdin {
            nix::unistd::dup2_stdin(&in_r)?;
        } else {
            let null = File::open("/dev/null").map_err(|_| nix::Error::ENOENT)?;
            nix::unistd::dup2_stdin(&null)?;
        }
        nix::unistd::dup2_stdout(&out)?;
        nix::unistd::dup2_stderr(&err)
    })();
    drop((in_r, out, err));
    if let Err(e) = stdio {
        return format!("failed 125 dup2: {e}");
    }
    let rt = Runtime::new(RUNTIME_ROOT);
    let id: ContainerId = match "container".parse() {
        Ok(id) => id,
        Err(e) => return format!("failed 125 {e}"),
    };
    let opts = CreateOptions {
        bundle: PathBuf::from(GUEST_BUNDLE),
        ..Default::default()
    };
    match moat_runtime::ops::run::start_child(&rt, &id, &opts) {
        Ok(pid) => format!("started {pid}"),
        Err(OpsError::Command { message, code }) => {
            format!("failed {code} {}", message.replace('\n', " "))
        }
        Err(e) => format!("failed 125 {}", e.to_string().replace('\n', " ")),
    }
}

/// Moves the container's output to the host and the host's input and signals to the container
/// until its init has exited and its output is closed; returns its exit code.
fn relay(
    chan: &mut Channel,
    pid: i32,
    mut stdin: Option<OwnedFd>,
    out: OwnedFd,
    err: OwnedFd,
    sigfd: &SignalFd,
) -> Result<i32, AgentError> {
    let mut outputs = vec![(out, Kind::Stdout), (err, Kind::Stderr)];
    let mut code = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut grace = 200;
    while code.is_none() || (!outputs.is_empty() && grace > 0) {
        let mut fds: Vec<PollFd<'_>> = outputs
            .iter()
            .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let n_out = fds.len();
        fds.push(PollFd::new(chan.port.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(sigfd.as_fd(), PollFlags::POLLIN));
        let timeout = if code.is_some() {
            grace -= 1;
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
        for (slot, (fd, kind)) in outputs.iter().enumerate() {
            if !ready[slot] {
                continue;
            }
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) | Err(_) => closed.push(slot),
                Ok(n) => chan.send(&Frame {
                    kind: *kind,
                    stream: 0,
                    payload: buf[..n].to_vec(),
                })?,
            }
        }
        for slot in closed.into_iter().rev() {
            outputs.remove(slot);
        }
        if ready[n_out] {
            let n = nix::unistd::read(&chan.port, &mut buf).map_err(sys("read port"))?;
            if n == 0 {
                // The host went away: nobody to report to; the container goes with the VM.
                return Ok(137);
            }
            chan.decoder.push(&buf[..n]);
            while let Some(f) = chan.decoder.next_frame()? {
                match f.kind {
                    Kind::Stdin => {
                        if let Some(fd) = &stdin {
                            if write_all(fd, &f.payload).is_err() {
                                stdin = None;
                            }
                        }
                    }
                    Kind::StdinClose => stdin = None,
                    Kind::Signal => {
                        let s: proto::Signal = f.parse()?;
                        if let Ok(sig) = Signal::try_from(s.signal) {
                            let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
                        }
                    }
                    _ => {}
                }
            }
        }
        if ready[n_out + 1] {
            while let Ok(Some(_)) = sigfd.read_signal() {}
        }
        if code.is_none() {
            code = reap(pid);
        }
    }
    Ok(code.unwrap_or(137))
}

/// Reaps whatever exited (PID 1 inherits every orphan); the init's exit code once it has.
fn reap(pid: i32) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) if p.as_raw() == pid => code = Some(c),
            Ok(WaitStatus::Signaled(p, s, _)) if p.as_raw() == pid => code = Some(128 + s as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(_) => {}
        }
    }
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn config_paths_are_mapped_into_the_guest() {
        let start = proto::Start {
            host_bundle: "/var/lib/moat/containers/abc".into(),
            shares: vec![proto::Share {
                tag: "s0".into(),
                host_path: "/srv/data".into(),
            }],
            stdin: false,
            debug: false,
        };
        let mut doc = json!({
            "root": {"path": "rootfs"},
            "hooks": {"prestart": []},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind",
                 "source": "/var/lib/moat/containers/abc/hosts", "options": ["rbind"]},
                {"destination": "/data", "type": "bind", "source": "/srv/data/sub",
                 "options": ["rbind", "ro"]}
            ],
            "linux": {"namespaces": [{"type": "network", "path": "/run/netns/x"}, {"type": "pid"}],
                      "resources": {"cpu": {"cpus": "0-1", "shares": 512}}}
        });
        rewrite_config(&mut doc, &start).unwrap();
        assert_eq!(doc["root"]["path"], "/run/rootfs");
        assert!(doc.get("hooks").is_none());
        assert_eq!(doc["mounts"][1]["source"], "/run/bundle/hosts");
        assert_eq!(doc["mounts"][2]["source"], "/run/shares/s0/sub");
        assert_eq!(doc["linux"]["namespaces"][0], json!({"type": "network"}));
        assert_eq!(doc["linux"]["resources"]["cpu"], json!({"shares": 512}));
        // A bind whose source is not shared is refused, not silently dropped; a look-alike
        // prefix is not a match.
        let mut bad = json!({"mounts": [{"destination": "/x", "type": "bind",
                                         "source": "/srv/database"}]});
        assert!(rewrite_config(&mut bad, &start).is_err());
    }
}
