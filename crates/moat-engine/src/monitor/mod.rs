//! The monitor: one small process per running container, as conmon is for Podman. It is the
//! parent (subreaper) of the container's init, holds the read ends of the container's stdout and
//! stderr, writes them to the json-file log (and to the caller's terminal while one is
//! attached), records the start and the exit in the container table, cleans up (runtime state,
//! cgroup, rootfs mount; everything for `--rm`), and outlives the `moat` command that started it.
//!
//! It is forked twice and exec'd: the intermediate process calls `setsid` and exits, so the
//! monitor belongs to no terminal session and is reparented to init (or the nearest subreaper),
//! and a Ctrl-C in the caller's terminal does not reach it; the exec gives it a clean process
//! (see [`spawn`]).
//!
//! It reports to its caller on a pipe, one line per event: `started PID`, then `exited CODE`, or
//! `failed CODE MESSAGE` when the container could not start.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use moat_runtime::ops::create::CreateOptions;
use moat_runtime::{ContainerId, OpsError, Runtime};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, ForkResult};

pub mod console;
mod prober;
mod pump;

use console::Console;
pub use pump::{parse_detach_keys, save_detach_keys, DetachKeys, DETACH_KEYS_FILE};
use pump::{pump, release_startup_memory, Streams};

use crate::containers::Records;
use crate::logs::{Rotation, Writer};
use crate::{EngineError, Paths};

/// What the monitor of one container needs.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Engine paths.
    pub paths: Paths,
    /// The container.
    pub id: ContainerId,
    /// Log rotation.
    pub rotation: Rotation,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// Copy the container's output to the caller's stdout and stderr too (not `-d`).
    pub attach: bool,
    /// Give the container the caller's stdin (`-i`); otherwise /dev/null.
    pub stdin: bool,
    /// The container has a terminal (`-t`): its master comes to the monitor over a socket.
    pub tty: bool,
    /// `--restart`.
    pub restart: crate::hostconfig::RestartPolicy,
    /// The container's name at its start (for its networks' name resolution).
    pub name: String,
    /// Its image as the user named it (for its events).
    pub image: String,
}

/// The descriptor of the monitor's log: a copy of the caller's stderr (the starter's runtime
/// warnings reach the caller through it, not the container's output); -1 when none.
static LOG_COPY: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Tells the monitor which descriptor its logger writes to (the binary sets the logger up), so
/// that a detached monitor lets go of the caller's stderr once the container runs: a caller
/// reading its own stderr to the end (`moat run -d ... 2>&1 | cat`) must not wait for the
/// container.
pub fn set_log_copy(fd: RawFd) {
    LOG_COPY.store(fd, std::sync::atomic::Ordering::Relaxed);
}

/// Points the logger's copy of the caller's stderr at /dev/null (the caller is gone, or was
/// never waiting): the monitor's later lines are lost, as a daemon's would be without a log.
pub(crate) fn release_log_copy() {
    let copy = log_copy();
    if copy > 2 {
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            // SAFETY: `copy` is the logger's open descriptor; dup2 swaps what it refers to
            // (the logger's File stays valid, now writing to /dev/null).
            unsafe { libc::dup2(null.as_raw_fd(), copy) };
        }
    }
}

/// The logger's descriptor set with [`set_log_copy`] (-1: none).
pub(crate) fn log_copy() -> RawFd {
    LOG_COPY.load(std::sync::atomic::Ordering::Relaxed)
}

/// The file `stop` and `kill` leave in the container's directory so that its monitor does not
/// restart it (Docker: a container stopped by the user stays stopped).
pub const STOPPED_BY_USER: &str = "stopped-by-user";

/// An event the monitor reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The container runs; its init's host pid.
    Started(i32),
    /// It could not start: Docker's exit code (125/126/127) and why.
    Failed(i32, String),
    /// It exited with this code (128+N for signal N), and the monitor has cleaned up.
    Exited(i32),
    /// The attached caller typed the detach keys: it may go; the container runs on.
    Detached,
}

impl Event {
    /// The line that reports it.
    pub fn encode(&self) -> String {
        match self {
            Event::Started(pid) => format!("started {pid}\n"),
            Event::Failed(code, msg) => format!("failed {code} {}\n", msg.replace('\n', " ")),
            Event::Exited(code) => format!("exited {code}\n"),
            Event::Detached => "detached -\n".to_string(),
        }
    }

    fn decode(line: &str) -> Option<Event> {
        let line = line.trim_end_matches('\n');
        let (word, rest) = line.split_once(' ')?;
        match word {
            "started" => rest.parse().ok().map(Event::Started),
            "exited" => rest.parse().ok().map(Event::Exited),
            "detached" => Some(Event::Detached),
            "failed" => {
                let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
                Some(Event::Failed(code.parse().ok()?, msg.to_string()))
            }
            _ => None,
        }
    }
}

/// The caller's end of the monitor's report pipe.
#[derive(Debug)]
pub struct Handle {
    reader: BufReader<File>,
}

impl Handle {
    /// The next event; `None` when the monitor is gone without saying more (it died, or it is
    /// a detached monitor that no longer reports).
    pub fn next_event(&mut self) -> Option<Event> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(n) if n > 0 => Event::decode(&line),
            _ => None,
        }
    }

    /// The descriptor to poll for the next event.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.reader.get_ref().as_fd()
    }
}

/// The descriptor on which an exec'd monitor finds its report pipe.
pub const REPORT_FD: i32 = 3;

/// The descriptor on which a monitor started ahead ([`prespawn`]) reads its command line.
pub const CONTROL_FD: i32 = 4;

/// Starts the monitor of a created container whose rootfs is mounted: forks, and the monitor
/// execs `exe` (a descriptor of the `moat` binary, which must call [`serve`] for `args`) with
/// its report pipe on [`REPORT_FD`].
///
/// The monitor is exec'd rather than only forked: the caller may hold SQLite connections, and
/// SQLite's state must not cross a fork (the child would share the parent's file locks and
/// journal bookkeeping); a fresh image also keeps the monitor's private memory small.
pub fn spawn(
    exe: BorrowedFd<'_>,
    args: &[String],
    stdio: Option<[RawFd; 3]>,
) -> Result<Handle, EngineError> {
    spawn_with(exe, args, stdio, None)
}

/// A monitor started before its container exists (`run`: the exec and the monitor's start-up
/// overlap the container's creation, on the other core). It waits for its real command line
/// on [`CONTROL_FD`]: [`Pending::go`] gives it; dropping the `Pending` ends it (it exits
/// without a word when that pipe closes empty).
#[derive(Debug)]
pub struct Pending {
    handle: Handle,
    control: File,
    /// The sealed view's mounts, closed once the monitor has its command line (the close
    /// waits for an RCU grace period: it then overlaps with the monitor's work).
    mounts: moat_runtime::selfclone::SealMounts,
}

/// Starts a [`Pending`] monitor: `exe` as for [`spawn`], `args` its first command line (the
/// binary must read the real one with [`take_command_line`]).
pub fn prespawn(
    exe: BorrowedFd<'_>,
    args: &[String],
    mounts: moat_runtime::selfclone::SealMounts,
) -> Result<Pending, EngineError> {
    let (control_r, control_w) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| EngineError::Sys {
            what: "pipe",
            source,
        })?;
    let handle = spawn_with(exe, args, None, Some(control_r.as_fd()))?;
    Ok(Pending {
        handle,
        control: File::from(control_w),
        mounts,
    })
}

impl Pending {
    /// Hands the monitor its command line (as [`spawn`]'s `args`); its handle.
    pub fn go(mut self, args: &[String]) -> Result<Handle, EngineError> {
        let line = args.join("\0");
        self.control
            .write_all(line.as_bytes())
            .map_err(|source| EngineError::Io {
                what: "write",
                path: PathBuf::from("the monitor's control pipe"),
                source,
            })?;
        drop(self.control);
        drop(self.mounts);
        Ok(self.handle)
    }
}

/// In a monitor started by [`prespawn`]: its command line, once given; `None` when the
/// starter gave up (the pipe closed empty) or [`CONTROL_FD`] is not a pipe of ours.
pub fn take_command_line() -> Option<Vec<String>> {
    use std::io::Read;
    // SAFETY: only borrowed for the duration of the F_GETFD call.
    let fd = unsafe { BorrowedFd::borrow_raw(CONTROL_FD) };
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).ok()?;
    // SAFETY: CONTROL_FD is open (checked above) and nothing else in this process owns it.
    let mut control = unsafe { File::from_raw_fd(CONTROL_FD) };
    let mut text = String::new();
    control.read_to_string(&mut text).ok()?;
    (!text.is_empty()).then(|| text.split('\0').map(str::to_string).collect())
}

/// [`spawn`], with `control` (when given) on [`CONTROL_FD`].
fn spawn_with(
    exe: BorrowedFd<'_>,
    args: &[String],
    stdio: Option<[RawFd; 3]>,
    control: Option<BorrowedFd<'_>>,
) -> Result<Handle, EngineError> {
    let sys = |what: &'static str| move |source| EngineError::Sys { what, source };
    let c = |s: &str| CString::new(s).map_err(|_| EngineError::Spec(format!("NUL in {s:?}")));
    // Copies above the descriptors the child sets up (0-2, REPORT_FD, CONTROL_FD), which
    // would otherwise replace them.
    let high = |fd: BorrowedFd<'_>| -> Result<OwnedFd, EngineError> {
        let n =
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10)).map_err(sys("dup"))?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(n) })
    };
    let exe = high(exe)?;
    let control = control.map(high).transpose()?;
    let args_c: Vec<CString> = args.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let (report_r, report_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let report_w = high(report_w.as_fd())?;
    let fds = ChildFds {
        exe: exe.as_raw_fd(),
        report: report_w.as_raw_fd(),
        control: control.as_ref().map(|c| c.as_raw_fd()),
        stdio,
    };
    // SAFETY: the child only calls async-signal-safe functions (setsid, fork, dup2,
    // close_range, execveat, _exit) on values prepared before the fork.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            // SAFETY: as above.
            unsafe { exec_monitor(&fds, &argv) }
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            let _ = waitpid(child, None);
            Ok(Handle {
                reader: BufReader::new(File::from(report_r)),
            })
        }
    }
}

/// The descriptors [`exec_monitor`] puts in place: all but `stdio`'s above 9.
struct ChildFds {
    exe: RawFd,
    report: RawFd,
    control: Option<RawFd>,
    stdio: Option<[RawFd; 3]>,
}

/// In the forked child: a new session, a second fork (so the monitor is reparented away from
/// the caller and no terminal's signals reach it), `stdio` (when given: an API server's attach
/// pipes) on 0, 1 and 2, the report pipe on [`REPORT_FD`], the control pipe (when given) on
/// [`CONTROL_FD`], every other inherited descriptor closed at exec, and the exec of `exe`.
/// Never returns.
///
/// # Safety
/// Must be called in a freshly forked child of a process that may have been multi-threaded:
/// only async-signal-safe calls are made.
/// `argv` is NULL-terminated and points into C strings that outlive the call; the descriptors
/// are open, `exe`, `report` and `control` above 9, `stdio`'s none of 0, 1, 2, REPORT_FD or
/// CONTROL_FD (the caller's own descriptors are above those, as an API server's pipes are).
unsafe fn exec_monitor(fds: &ChildFds, argv: &[*const libc::c_char]) -> ! {
    // SAFETY: plain system calls on integers and on C strings that outlive them; nothing here
    // allocates or takes a lock.
    unsafe {
        if let Some(stdio) = fds.stdio {
            for (target, fd) in stdio.into_iter().enumerate() {
                if libc::dup2(fd, target as RawFd) != target as RawFd {
                    libc::_exit(1);
                }
            }
        }
        // The caller's blocked signals are its own business: the monitor starts with none.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::setsid();
        match libc::fork() {
            0 => {
                // dup2 clears close-on-exec on the copies (the monitor keeps them).
                let mut placed = libc::dup2(fds.report, REPORT_FD) == REPORT_FD;
                let mut first_closed = REPORT_FD + 1;
                if let Some(control) = fds.control {
                    placed &= libc::dup2(control, CONTROL_FD) == CONTROL_FD;
                    first_closed = CONTROL_FD + 1;
                }
                if placed {
                    libc::syscall(
                        libc::SYS_close_range,
                        first_closed as u32,
                        u32::MAX,
                        libc::CLOSE_RANGE_CLOEXEC,
                    );
                    // The environment as it is (`environ` is only read).
                    extern "C" {
                        static environ: *const *const libc::c_char;
                    }
                    libc::syscall(
                        libc::SYS_execveat,
                        fds.exe,
                        c"".as_ptr(),
                        argv.as_ptr(),
                        environ,
                        libc::AT_EMPTY_PATH,
                    );
                }
                libc::_exit(127)
            }
            -1 => libc::_exit(1),
            _ => libc::_exit(0),
        }
    }
}

/// The monitor's life, in the exec'd process; returns its exit code. `report` is the pipe on
/// [`REPORT_FD`].
pub fn serve(cfg: &MonitorConfig, mut report: File) -> i32 {
    // Writes to a caller that went away must fail with EPIPE, not kill us; blocking (rather
    // than ignoring) SIGPIPE keeps the container's own disposition at the default, since the
    // init chain resets the mask but would inherit an ignored disposition.
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGPIPE);
    let _ = set.thread_block();
    // The container's init comes back to us when the starter (its grandparent) exits.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    log::debug!("monitor: up");
    let marker = cfg
        .paths
        .container_dir(cfg.id.as_str())
        .join(STOPPED_BY_USER);
    let mut restarts = 0u32;
    // Every restart by the policy since this start, as Docker's RestartCount (`restarts`
    // restarts with the back-off).
    let mut total = 0u32;
    // The network of the last start, undone below.
    let mut last_net = None;
    let (code, error) = loop {
        let started = std::time::Instant::now();
        let (result, net) = run_networked(cfg, &mut report, total);
        let (code, error) = match result {
            Ok(code) => (code, None),
            Err((code, e)) => (code, Some(e.to_string())),
        };
        // `update --restart` may have changed the policy while it ran.
        let policy = std::fs::read_to_string(
            cfg.paths
                .container_dir(cfg.id.as_str())
                .join(crate::update::RESTART_POLICY),
        )
        .ok()
        .and_then(|p| crate::hostconfig::RestartPolicy::parse(p.trim()).ok())
        .unwrap_or(cfg.restart);
        if error.is_some() || !policy.restarts(code, restarts, marker.exists()) {
            last_net = net;
            break (code, error);
        }
        // This run's end, as Docker reports each exit of a restarting container.
        journal(cfg, "die", &[("exitCode", &code.to_string())]);
        let leftover = stop_network(cfg, net);
        cleanup_network(cfg, leftover);
        // Docker's back-off: 100 ms doubling per restart, reset after 10 s of running.
        if started.elapsed() >= std::time::Duration::from_secs(10) {
            restarts = 0;
        }
        let delay = std::time::Duration::from_millis(100 << restarts.min(9));
        restarts += 1;
        total += 1;
        let rt = Runtime::new(&cfg.paths.runtime_root);
        let _ = moat_runtime::ops::delete::delete(&rt, &cfg.id, true);
        std::thread::sleep(delay);
        if marker.exists() {
            break (code, None);
        }
    };
    log::debug!("monitor: container exited");
    // The network's records and ports go before the exit is reported (the next start may want
    // them at once), on a thread while the runtime state and the rootfs go (no fork follows);
    // the slow deletes (veths, the pin: tens of milliseconds in the kernel) after the report.
    let stopping = last_net.map(|n| {
        let c = cfg.clone();
        std::thread::spawn(move || stop_network(&c, Some(n)))
    });
    let mut volumes = vec![];
    // A VM that ended before its container leaves why, for the record (an exit, not a failed
    // start: the restart policy applied above as for any exit).
    let note = error
        .clone()
        .or_else(|| crate::vm::take_reason(&cfg.paths.container_dir(cfg.id.as_str())));
    let trash = finish(cfg, code, note.as_deref().unwrap_or(""), &mut volumes);
    let net_leftover = stopping.and_then(|t| t.join().ok().flatten());
    log::debug!("monitor: recorded");
    let event = match error {
        None => Event::Exited(code),
        Some(msg) => Event::Failed(code, msg),
    };
    let _ = report.write_all(event.encode().as_bytes());
    drop(report);
    log::debug!("monitor: reported");
    // The caller has its answer: it no longer waits on our copy of its stderr either (an API
    // server's attach stream ends at its end, which must not wait for the slow clean-up below:
    // the veth deletes cost a bridge network's `docker run` 17 ms).
    if !log::log_enabled!(log::Level::Debug) {
        release_log_copy();
    }
    // Journaled once the caller knows (off the exit's path).
    if matches!(event, Event::Exited(_)) {
        journal(cfg, "die", &[("exitCode", &code.to_string())]);
    }
    if cfg.auto_remove {
        journal(cfg, "destroy", &[]);
    }
    cleanup_network(cfg, net_leftover);
    if let Some(t) = trash {
        let _ = std::fs::remove_dir_all(t);
    }
    let _ = crate::lifecycle::remove_anonymous_volumes(&cfg.paths, &volumes);
    i32::from(matches!(event, Event::Failed(..)))
}

/// [`run`] after the network's start (endpoints, ports, the helper): a restarted container
/// gets a new namespace, as with Docker. The network, to stop with [`stop_network`].
fn run_networked(
    cfg: &MonitorConfig,
    report: &mut File,
    restarts: u32,
) -> (
    Result<i32, (i32, EngineError)>,
    Option<crate::network::Running>,
) {
    let id = cfg.id.as_str();
    if !cfg.paths.container_dir(id).join("network.json").exists() {
        return (run(cfg, report, restarts), None);
    }
    let name = if cfg.name.is_empty() {
        &id[..id.len().min(12)]
    } else {
        cfg.name.as_str()
    };
    match crate::network::start(&cfg.paths, id, name) {
        Ok(net) => (run(cfg, report, restarts), net),
        Err(e) => (Err((125, e)), None),
    }
}

/// Undoes a start's network, the fast half (logged, not fatal: `rm` cleans up what is left).
fn stop_network(
    cfg: &MonitorConfig,
    net: Option<crate::network::Running>,
) -> Option<moat_net::Released> {
    let n = net?;
    match crate::network::stop(&cfg.paths, cfg.id.as_str(), n) {
        Ok(left) => left,
        Err(e) => {
            log::warn!("container {}: network teardown: {e}", cfg.id.as_str());
            None
        }
    }
}

/// The slow half: the veths and the namespace pin deleted.
fn cleanup_network(cfg: &MonitorConfig, left: Option<moat_net::Released>) {
    if let Some(l) = left {
        if let Err(e) = l.cleanup() {
            log::warn!("container {}: network clean-up: {e}", cfg.id.as_str());
        }
    }
}

/// Records the end and cleans up: the runtime's state and cgroup, the rootfs mount, and for
/// `--rm` the container's record. Returns the directory still to delete (an `--rm` container's,
/// renamed out of sight) and fills `volumes` with the volumes it used: both are dealt with
/// after the caller has been told, off the exit path.
fn finish(
    cfg: &MonitorConfig,
    code: i32,
    error: &str,
    volumes: &mut Vec<String>,
) -> Option<PathBuf> {
    // The database is opened on a thread while the runtime state goes and the rootfs is
    // unmounted (no fork follows, so a thread is fine here).
    let root = cfg.paths.root.clone();
    let opening = std::thread::spawn(move || Records::open(&root));
    // The rootfs is unmounted on another thread meanwhile (the two share nothing; each is mostly
    // the kernel's time).
    let dir = cfg.paths.container_dir(cfg.id.as_str());
    let rootfs = dir.join("rootfs");
    let unmounting = std::thread::spawn(move || {
        let _ = moat_image::mount::unmount(&rootfs);
        log::debug!("monitor: rootfs unmounted");
    });
    let rt = Runtime::new(&cfg.paths.runtime_root);
    // The init has exited (reaped by us): a plain delete needs no freeze-and-kill round. Only
    // when that fails (a start that failed half-way) is the container force-deleted.
    if crate::vm::is_vm(&dir) {
        crate::vm::remove_cgroup(cfg.id.as_str());
    } else if moat_runtime::ops::delete::delete(&rt, &cfg.id, false).is_err() {
        let _ = moat_runtime::ops::delete::delete(&rt, &cfg.id, true);
    }
    log::debug!("monitor: runtime state deleted");
    let _ = unmounting.join();
    let records = opening.join().ok()?.ok()?;
    if cfg.auto_remove {
        // Its anonymous volumes go with an --rm container, as with Docker (after the report).
        if cfg.paths.root.join("volumes").is_dir() {
            *volumes = crate::lifecycle::volumes_of(&cfg.paths, &dir);
        }
        // Renamed first (instant): `containers_using` and `ps` skip dot names.
        let trash = dir.with_file_name(format!(".rm-{}", cfg.id.as_str()));
        let trash = match std::fs::rename(&dir, &trash) {
            Ok(()) => trash,
            Err(_) => dir,
        };
        let _ = records.remove(cfg.id.as_str());
        Some(trash)
    } else {
        let _ = records.set_exited(
            cfg.id.as_str(),
            code,
            &moat_runtime::state::now_rfc3339(),
            error,
        );
        None
    }
}

/// Sets up the container's stdio, has a short-lived child (the starter) start it, then pumps
/// its output into the log until it exits; returns its exit code, or Docker's code for a failed
/// start with the error.
///
/// The start-up (bundle parsing, cgroups, seccomp, the fork chain) runs in the starter, so its heap and its deep stack die with it instead of staying resident in the
/// monitor for the container's whole life.
fn run(cfg: &MonitorConfig, report: &mut File, restarts: u32) -> Result<i32, (i32, EngineError)> {
    let e125 = |e: EngineError| (125, e);
    let sys = |what: &'static str| move |source| (125, EngineError::Sys { what, source });
    let dir = cfg.paths.container_dir(cfg.id.as_str());
    let mut log = Writer::open(&crate::logs::path(&dir, cfg.id.as_str()), cfg.rotation)
        .map_err(|e| e125(e.into()))?;
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|source| {
            e125(EngineError::Io {
                what: "open",
                path: "/dev/null".into(),
                source,
            })
        })?;
    // The caller's terminal (or files), kept aside for attached output.
    let attached: Option<[OwnedFd; 2]> = if cfg.attach {
        let out = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(io_err("dup", "stdout"))?;
        let err = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(io_err("dup", "stderr"))?;
        Some([out, err])
    } else {
        None
    };
    // -it: the caller's stdin goes to the terminal through us.
    let caller_in: Option<OwnedFd> = if cfg.tty && cfg.stdin {
        Some(
            std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(io_err("dup", "stdin"))?,
        )
    } else {
        None
    };
    let console = if cfg.tty {
        Some(Console::bind(&dir).map_err(e125)?)
    } else {
        None
    };
    // Later clients attach here (`moat attach`, the API's attach of a running container); the
    // socket is named relative to the container's directory, our working directory from here.
    std::env::set_current_dir(&dir).map_err(io_err("enter", "the container directory"))?;
    let attach =
        crate::attach::Server::bind(cfg.tty).map_err(io_err("listen on", crate::attach::SOCKET))?;
    crate::health::reset(&dir);
    // A VM container's driver takes the init's place (see crate::vm).
    let vm = crate::vm::is_vm(&dir);
    let (out_r, out_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let (started_r, started_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    log::debug!("monitor: starting the container");
    // SAFETY: the monitor is single-threaded, so the child may run arbitrary code.
    let starter = match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop((out_r, err_r, started_r));
            let event = if vm {
                crate::vm::start(cfg, out_w, err_w)
            } else {
                start(cfg, &null, out_w, err_w, console.as_ref().map(|c| &*c.path))
            };
            let _ = File::from(started_w).write_all(event.encode().as_bytes());
            // SAFETY: ends the starter without running atexit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    drop((out_w, err_w, started_w));
    // Our own stdio is /dev/null from here: only the container holds the pipes' write ends
    // (they reach end of file when it is done with them), and a detached caller's terminal
    // or pipe is released.
    let _ = nix::unistd::dup2_stdin(&null);
    let _ = nix::unistd::dup2_stdout(&null);
    // With --debug the monitor's own lines keep going to the caller's stderr (profiling); an
    // attached caller gets the monitor's later warnings too (it waits for the exit anyway).
    if !log::log_enabled!(log::Level::Debug) {
        let _ = nix::unistd::dup2_stderr(&null);
        if !cfg.attach {
            release_log_copy();
        }
    }
    // The database is opened while the starter works on the other core: here, after the
    // forks (the starter, the VM driver it forks and the network helper never exec, so a
    // connection opened before them would stay open in them for the container's life), and
    // not on a thread (a joined thread's cached stack stays resident: ~80 KB per monitor).
    let opened = Records::open(&cfg.paths.root);
    // Its word first, then the reaping: the starter's exit (its heap, its mappings) is off the
    // start's path.
    let event = Handle {
        reader: BufReader::new(File::from(started_r)),
    }
    .next_event();
    log::debug!("monitor: the starter reported");
    let _ = waitpid(starter, None);
    let pid = match event {
        Some(Event::Started(pid)) => pid,
        Some(Event::Failed(code, message)) if code == 126 || code == 127 => {
            return Err((code, EngineError::Command { message, code }))
        }
        Some(Event::Failed(_, message)) => return Err(e125(EngineError::StartFailed(message))),
        _ => {
            return Err(e125(EngineError::StartFailed(
                "the starter process died".into(),
            )))
        }
    };
    let me = std::process::id() as i32;
    let my_start = moat_runtime::state::proc_start_time(me).map_or(0, |(s, _)| s);
    let recorded = opened.map_err(EngineError::from).and_then(|records| {
        records
            .set_running(
                cfg.id.as_str(),
                pid,
                (me, my_start),
                &moat_runtime::state::now_rfc3339(),
                restarts,
            )
            .map_err(EngineError::from)
    });
    // A container nobody can see must not run: the clean-up kills it.
    recorded.map_err(e125)?;
    log::debug!("monitor: running recorded");
    let mut outputs = vec![(out_r, 0), (err_r, 1)];
    let mut input = None;
    let mut tty_in = None;
    if let Some(c) = &console {
        let master = c.master().map_err(e125)?;
        tty_in = master.try_clone().ok();
        if let Some(from) = caller_in {
            let to = master.try_clone().map_err(io_err("dup", "pty master"))?;
            input = Some((from, to));
        }
        outputs.insert(0, (master, 0));
    }
    drop(console);
    let _ = report.write_all(Event::Started(pid).encode().as_bytes());
    // Journaled once the caller knows (off the start's path).
    journal(cfg, "start", &[]);
    release_startup_memory();
    let streams = Streams {
        outputs,
        attached,
        input,
        detach: report.try_clone().ok(),
        attach: Some(attach),
        tty_in,
        // `run`/`start --detach-keys` left them for this start.
        detach_keys: std::fs::read_to_string(DETACH_KEYS_FILE)
            .ok()
            .and_then(|k| parse_detach_keys(k.trim()).ok())
            .unwrap_or_default(),
    };
    // Still single-threaded here: the prober is forked.
    let prober = prober::start(
        &cfg.paths.root,
        cfg.id.as_str(),
        &dir,
        [("image", &cfg.image), ("name", &cfg.name)],
    );
    log::debug!("monitor: pumping");
    let code = pump(pid, streams, &mut log);
    if let Some(p) = prober {
        p.stop();
    }
    Ok(code)
}

/// In the starter: the container's stdio and the start; what happened, for the monitor.
fn start(
    cfg: &MonitorConfig,
    null: &File,
    out: OwnedFd,
    err: OwnedFd,
    console: Option<&Path>,
) -> Event {
    let stdio = (|| {
        // With a terminal the init's stdio is the pty; the caller's input comes through us.
        if !cfg.stdin || cfg.tty {
            nix::unistd::dup2_stdin(null)?;
        }
        nix::unistd::dup2_stdout(&out)?;
        nix::unistd::dup2_stderr(&err)
    })();
    drop((out, err));
    if let Err(e) = stdio {
        return Event::Failed(125, format!("dup2: {e}"));
    }
    let rt = Runtime::new(&cfg.paths.runtime_root);
    let opts = CreateOptions {
        bundle: cfg.paths.container_dir(cfg.id.as_str()),
        console_socket: console.map(Path::to_path_buf),
        ..Default::default()
    };
    let pid = match moat_runtime::ops::run::start_child(&rt, &cfg.id, &opts) {
        Ok(pid) => pid,
        Err(OpsError::Command { message, code }) => return Event::Failed(code, message),
        Err(e) => return Event::Failed(125, e.to_string()),
    };
    Event::Started(pid)
}

/// Journals a container event (the monitor has no database access: the name and image come on
/// its command line).
fn journal(cfg: &MonitorConfig, action: &str, extra: &[(&str, &str)]) {
    // The container's labels, read once (an `--rm` container's directory goes before its
    // last event).
    static LABELS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| crate::inspect::labels(&cfg.paths, cfg.id.as_str()));
    let mut attrs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    attrs.extend([("image", cfg.image.as_str()), ("name", cfg.name.as_str())]);
    attrs.extend_from_slice(extra);
    crate::events::Journal::new(&cfg.paths.root).emit("container", action, cfg.id.as_str(), &attrs);
}

fn io_err(what: &'static str, name: &'static str) -> impl Fn(std::io::Error) -> (i32, EngineError) {
    move |source| {
        (
            125,
            EngineError::Io {
                what,
                path: PathBuf::from(name),
                source,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        for e in [
            Event::Started(42),
            Event::Exited(137),
            Event::Failed(127, "exec: \"nope\": not found\nsecond line".into()),
            Event::Detached,
        ] {
            let back = Event::decode(&e.encode()).unwrap();
            match (&e, &back) {
                (Event::Failed(c, m), Event::Failed(c2, m2)) => {
                    assert_eq!(c, c2);
                    assert_eq!(m.replace('\n', " "), *m2);
                }
                _ => assert_eq!(e, back),
            }
        }
        assert_eq!(Event::decode("garbage"), None);
    }
}
