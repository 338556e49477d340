//! The agent's life as the guest's PID 1: boot mounts, the channel to the host, the container.
//!
//! Order matters: the initramfs is the kernel's `rootfs` mount, under which `pivot_root` is
//! refused (EINVAL), and moat-runtime pivots into the container's root. So the agent first moves
//! a fresh tmpfs over `/` and chroots into it (what `switch_root` does), then mounts the rest.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::proto::{self, Decoder, Frame, Kind, ProtoError};

mod config;
mod dns;
mod modules;
mod net;
mod procs;

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
    /// a kernel module would not load
    #[error("load module {module}: {source}")]
    Module {
        /// The module's file name.
        module: String,
        /// The errno.
        source: nix::Error,
    },
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
    modules::load()?;
    trace.step("modules loaded");
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
        mount_share(&share.tag, &target)?;
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
    net::configure(start.net.as_ref())?;
    trace.step("network configured");
    config::guest_config(&start)?;
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
    mount_share(proto::BUNDLE_TAG, Path::new(BUNDLE))?;
    mount_share(proto::ROOTFS_TAG, Path::new(ROOTFS))
}

/// Mounts the host's share `tag`: over virtio-fs when the host serves it so (the rootfs when
/// it has a virtiofsd: device nodes and fifos work there; every share for a distribution
/// kernel, which has no 9p), else over 9p. Whichever device carries the tag mounts.
fn mount_share(tag: &str, target: &Path) -> Result<(), AgentError> {
    let virtiofs = match do_mount(tag, target, "virtiofs", MsFlags::empty(), None) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    match mount_9p(tag, target) {
        // A kernel without 9p: what went wrong is virtio-fs's.
        Err(AgentError::Mount {
            source: nix::Error::ENODEV,
            ..
        }) => Err(virtiofs),
        r => r,
    }
}

fn mount_9p(tag: &str, target: &Path) -> Result<(), AgentError> {
    // cache=mmap: shared writable mappings work (databases in containers), without loose
    // caching's stale views of files the host changes. msize 64 KiB: the 9p buffers the guest
    // keeps cost 5 MiB less per VM than with 256 KiB (measured with bench/vm.sh).
    do_mount(
        tag,
        target,
        "9p",
        MsFlags::empty(),
        Some("trans=virtio,version=9p2000.L,msize=65536,cache=mmap"),
    )
}

/// The virtio-serial port named [`proto::PORT_NAME`] (no udev here: found through sysfs). A
/// port driver loaded as a module may name its ports a moment after it loaded: looked for
/// again for up to two seconds.
fn open_port() -> Result<File, AgentError> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match find_port() {
            Err(AgentError::NoPort(_)) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

fn find_port() -> Result<File, AgentError> {
    let class = Path::new("/sys/class/virtio-ports");
    let entries = match std::fs::read_dir(class) {
        Ok(e) => e,
        // No port driver bound yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(AgentError::NoPort(proto::PORT_NAME))
        }
        Err(e) => return Err(io("read", class)(e)),
    };
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

/// Starts the container's init, then relays it (and what the host execs) until it exits.
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
    let init = match procs::spawn(
        0,
        &procs::What::Init {
            stdin: start.stdin,
            tty: start.tty,
        },
    ) {
        Ok(p) => p,
        Err(failed) => return chan.send(&Frame::json(Kind::Failed, 0, &failed)),
    };
    trace.step("container started");
    chan.send(&Frame::json(
        Kind::Started,
        0,
        &proto::Started { pid: init.pid },
    ))?;
    let dns = start.net.as_ref().and_then(|_| dns::Relay::bind());
    let code = procs::relay(chan, vec![init], &sigfd, dns)?;
    trace.step("container exited");
    // Everything the container wrote reaches the host before the exit is reported: the host
    // may end the VM as soon as it hears of it.
    nix::unistd::sync();
    chan.send(&Frame::json(Kind::Exit, 0, &proto::Exit { code }))
}
