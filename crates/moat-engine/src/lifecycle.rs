//! What happens to a created container: `start` (mount its rootfs, fork its monitor), the wait of
//! an attached caller (signals forwarded, as Docker's `--sig-proxy`), `stop`, `kill`, `rm` and
//! `wait`. Every operation works from the record, so it does not matter which `moat` process
//! created or started the container.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use moat_image::ImageStore;
use moat_runtime::selfclone::SealMounts;
use moat_runtime::{ContainerId, Runtime};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill as send, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::containers::{Records, Row, State};
use crate::logs::Rotation;
use crate::monitor::{Event, Handle, MonitorConfig};
use crate::{EngineError, Paths};

/// How the caller relates to a started container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// `-d`: the caller returns once it runs.
    Detached,
    /// The container's output goes to the caller too, who waits for the exit; with `stdin`
    /// (`-i`) the container reads the caller's standard input.
    Attached {
        /// `-i`.
        stdin: bool,
        /// `--sig-proxy` (Docker's default): the caller forwards the signals it receives to
        /// the container instead of dying of them.
        sig_proxy: bool,
    },
}

fn container_id(row: &Row) -> Result<ContainerId, EngineError> {
    row.id
        .parse()
        .map_err(|e: moat_runtime::id::IdError| EngineError::Spec(e.to_string()))
}

/// Starts a created or exited container: mounts its rootfs and forks its monitor, which starts
/// it. Returns the monitor's handle and the init's pid. The caller must be single-threaded
/// when attached (the container's output goes to its standard output and error).
pub fn start(paths: &Paths, row: &Row, mode: Attach) -> Result<(Handle, i32), EngineError> {
    start_with(paths, row, mode, None, None)
}

/// A monitor started ahead of its container's creation, for [`start_pending`] (see
/// [`crate::monitor::Pending`]).
///
/// Its command line names the container (`ps` shows whose monitor it is).
pub fn prespawn(paths: &Paths, id: &str) -> Result<crate::monitor::Pending, EngineError> {
    let mut args = monitor_args_head(paths);
    args.extend(["monitor".into(), "--pending".into(), id.into()]);
    let (exe, mounts) = sealed_exe()?;
    log::debug!("prespawn: sealed view open");
    let p = crate::monitor::prespawn(exe.as_fd(), &args, mounts);
    log::debug!("prespawn: monitor forked");
    p
}

/// [`start`] by a monitor from [`prespawn`].
pub fn start_pending(
    paths: &Paths,
    row: &Row,
    mode: Attach,
    pending: crate::monitor::Pending,
) -> Result<(Handle, i32), EngineError> {
    start_with(paths, row, mode, None, Some(pending))
}

/// The monitor and the runtime it forks run from a sealed view of this binary
/// (CVE-2019-5736): the caller itself never enters the container, so it need not re-execute
/// from one (an exec saved on `run`'s path), and whatever the binary's path on disk.
/// The view's mounts are closed once the monitor is under way (closing them waits).
fn sealed_exe() -> Result<(std::os::fd::OwnedFd, SealMounts), EngineError> {
    moat_runtime::selfclone::sealed_exe_with_mounts()
        .map_err(|e| EngineError::StartFailed(e.to_string()))
}

/// The monitor's command line up to its command: under the name `moat-monitor` the binary
/// parses only the monitor's options (see moat's main).
fn monitor_args_head(paths: &Paths) -> Vec<String> {
    let mut args = vec![
        "moat-monitor".to_string(),
        "--root".into(),
        paths.root.to_string_lossy().into_owned(),
    ];
    if log::log_enabled!(log::Level::Debug) {
        args.push("--debug".into());
    }
    args
}

/// Starts a container attached to `stdio` (its input, output and error: an API server's pipes
/// to a hijacked connection) instead of the caller's own; any thread may call it. The handle
/// reports the exit (`Event::Exited`) and ends when the monitor has cleaned up.
pub fn start_streams(
    paths: &Paths,
    row: &Row,
    stdin: bool,
    stdio: [std::os::fd::RawFd; 3],
) -> Result<(Handle, i32), EngineError> {
    start_with(
        paths,
        row,
        Attach::Attached {
            stdin,
            sig_proxy: false,
        },
        Some(stdio),
        None,
    )
}

fn start_with(
    paths: &Paths,
    row: &Row,
    mode: Attach,
    stdio: Option<[std::os::fd::RawFd; 3]>,
    pending: Option<crate::monitor::Pending>,
) -> Result<(Handle, i32), EngineError> {
    if row.effective().0 == State::Running {
        return Err(EngineError::Conflict(format!(
            "container {} is already running",
            row.name
        )));
    }
    let dir = paths.container_dir(&row.id);
    let rootfs = dir.join("rootfs");
    mount_rootfs(paths, row)?;
    log::debug!("start: rootfs mounted");
    // A runtime record left by a dead monitor would make the id look taken.
    let rt = Runtime::new(&paths.runtime_root);
    let cid = container_id(row)?;
    if rt.lookup(&cid).is_ok() {
        let _ = moat_runtime::ops::delete::delete(&rt, &cid, true);
    }
    let mut args = monitor_args_head(paths);
    args.extend(["monitor".into(), row.id.clone()]);
    if mode != Attach::Detached {
        args.push("--attach".into());
    }
    if matches!(mode, Attach::Attached { stdin: true, .. }) {
        args.push("--stdin".into());
    }
    if row.auto_remove {
        args.push("--rm".into());
    }
    if row.tty {
        args.push("--tty".into());
    }
    if !row.restart.is_empty() && row.restart != "no" {
        args.extend(["--restart".into(), row.restart.clone()]);
    }
    // A start by the user clears a stop by the user.
    let _ = std::fs::remove_file(
        paths
            .container_dir(&row.id)
            .join(crate::monitor::STOPPED_BY_USER),
    );
    args.extend(["--log-rotation".into(), row.log_rotation.clone()]);
    args.extend(["--name".into(), row.name.clone()]);
    args.extend(["--image".into(), row.image_ref.clone()]);
    // An attached caller blocks the signals it forwards before the container can run: one sent
    // as soon as the container's output shows must be forwarded by `wait_attached`, not kill us
    // (seen in CI: SIGTERM right after the container's first line). The monitor unblocks them.
    if matches!(
        mode,
        Attach::Attached {
            sig_proxy: true,
            ..
        }
    ) && stdio.is_none()
    {
        let _ = forwarded().thread_block();
    }
    let spawned = match pending {
        Some(p) => p.go(&args),
        None => sealed_exe().and_then(|(exe, mounts)| {
            let h = crate::monitor::spawn(exe.as_fd(), &args, stdio);
            drop(mounts);
            h
        }),
    };
    let mut handle = match spawned {
        Ok(h) => h,
        Err(e) => {
            let _ = moat_image::mount::unmount(&rootfs);
            return Err(e);
        }
    };
    match handle.next_event() {
        Some(Event::Started(pid)) => Ok((handle, pid)),
        Some(Event::Failed(code, message)) if code == 126 || code == 127 => {
            Err(EngineError::Command { message, code })
        }
        Some(Event::Failed(_, message)) => Err(EngineError::StartFailed(message)),
        _ => Err(EngineError::StartFailed(format!(
            "the monitor of {} ended before the container started",
            row.name
        ))),
    }
}

/// Mounts the container's overlay rootfs unless it is (by `create`, a running container, or a
/// monitor that died: the same layers, kept); true when mounted now (after a run ended, or a
/// reboot).
pub fn mount_rootfs(paths: &Paths, row: &Row) -> Result<bool, EngineError> {
    let dir = paths.container_dir(&row.id);
    let rootfs = dir.join("rootfs");
    if is_mount_point(&dir, &rootfs) {
        return Ok(false);
    }
    let store = ImageStore::open(&paths.images())?;
    let image: moat_image::Digest = row
        .image
        .parse()
        .map_err(|_| EngineError::NoImage(row.image.clone()))?;
    let lowers = store.lowers(&image)?;
    drop(store);
    moat_image::mount::mount_overlay(
        &paths.images(),
        &lowers,
        &dir.join("upper"),
        &dir.join("work"),
        &rootfs,
        row.auto_remove,
    )?;
    Ok(true)
}

/// Whether `path` is a mount point below `parent` (another device than its parent directory).
fn is_mount_point(parent: &Path, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(parent), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Docker's --sig-proxy set: the runtime's list, but a window size change is not the init's
/// business (its terminal is the container's own).
fn forwarded() -> SigSet {
    let mut set = SigSet::empty();
    for s in moat_runtime::ops::run::FORWARDED {
        if s != Signal::SIGWINCH {
            set.add(s);
        }
    }
    set
}

/// A container [`restart_after_boot`] tried: its name and the outcome.
pub type Restarted = (String, Result<(), EngineError>);

/// What a boot does for containers (Docker's daemon start): those with `--restart always`, and
/// those with `unless-stopped` that the user did not stop, that do not run (the machine
/// rebooted, or their monitor was killed) are started again. Returns each one tried, with the
/// outcome.
pub fn restart_after_boot(paths: &Paths) -> Result<Vec<Restarted>, EngineError> {
    use crate::hostconfig::RestartPolicy;
    let mut out = vec![];
    for row in Records::open(&paths.root)?.all()? {
        if row.effective().0 == State::Running || row.started_at.is_empty() {
            continue;
        }
        let stopped = paths
            .container_dir(&row.id)
            .join(crate::monitor::STOPPED_BY_USER)
            .exists();
        let go = match RestartPolicy::parse(&row.restart) {
            Ok(RestartPolicy::Always) => true,
            Ok(RestartPolicy::UnlessStopped) => !stopped,
            _ => false,
        };
        if go {
            let started = start(paths, &row, Attach::Detached).map(|_| ());
            out.push((row.name.clone(), started));
        }
    }
    Ok(out)
}

/// Resizes a running `-t` container's terminal (Docker's `resize`); a container without a
/// terminal is left as it is.
pub fn resize(row: &Row, rows: u16, cols: u16) -> Result<(), EngineError> {
    if row.effective().0 != State::Running {
        return Err(EngineError::Conflict(format!(
            "cannot resize container {}: it is not running",
            row.name
        )));
    }
    if !row.tty || rows == 0 || cols == 0 {
        return Ok(());
    }
    crate::monitor::console::resize(row.pid, rows, cols).map_err(|source| EngineError::Io {
        what: "resize the terminal of",
        path: format!("/proc/{}/fd/0", row.pid).into(),
        source,
    })
}

/// Waits, as an attached caller, for the container started with `handle`: forwards the
/// signals it receives to the init (pid `pid`) and returns the exit code once the monitor has
/// recorded it and cleaned up (with `--rm`, removed the container).
pub fn wait_attached(
    paths: &Paths,
    row: &Row,
    mut handle: Handle,
    pid: i32,
) -> Result<i32, EngineError> {
    // Blocked since `start` (so a signal sent as soon as the container runs is forwarded, not
    // fatal to us); read here through a signalfd, unblocked on the way out.
    let mut set = forwarded();
    // With a terminal, the caller's window changes are the container's too (SIGWINCH is
    // ignored by default: blocking it now loses none that matter).
    if row.tty {
        let mut winch = SigSet::empty();
        winch.add(Signal::SIGWINCH);
        let _ = winch.thread_block();
        set.add(Signal::SIGWINCH);
    }
    let sigfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok();
    let result = loop {
        let mut fds = vec![PollFd::new(handle.fd(), PollFlags::POLLIN)];
        if let Some(s) = &sigfd {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(source) => {
                break Err(EngineError::Sys {
                    what: "poll",
                    source,
                })
            }
        }
        let report = fds[0].revents().is_some_and(|r| !r.is_empty());
        drop(fds);
        if let Some(s) = &sigfd {
            while let Ok(Some(info)) = s.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGWINCH) => {
                        if let Some((r, c)) = crate::monitor::console::caller_size() {
                            let _ = crate::monitor::console::resize(pid, r, c);
                        }
                    }
                    Ok(sig) => {
                        let _ = send(Pid::from_raw(pid), sig);
                    }
                    Err(_) => {}
                }
            }
        }
        if report {
            match handle.next_event() {
                Some(Event::Exited(code)) => break Ok(code),
                // The detach keys: the container runs on without us (Docker's exit code 0).
                Some(Event::Detached) => break Ok(0),
                Some(_) => {}
                // The monitor died: what the record says, if anything.
                None => {
                    break Records::open(&paths.root)?
                        .get(&row.id)?
                        .map(|r| r.exit_code)
                        .ok_or_else(|| {
                            EngineError::StartFailed(format!("the monitor of {} died", row.name))
                        })
                }
            }
        }
    };
    let _ = set.thread_unblock();
    result
}

/// The flags of the hidden `moat monitor` command, as [`start`] gives them.
#[derive(Debug, Clone, Default)]
pub struct MonitorFlags {
    /// Copy output to the caller's stdout/stderr.
    pub attach: bool,
    /// The container reads the caller's stdin.
    pub stdin: bool,
    /// `--rm`.
    pub rm: bool,
    /// `-t`.
    pub tty: bool,
    /// `--restart` policy.
    pub restart: String,
    /// Encoded log rotation.
    pub log_rotation: String,
    /// The container's name when it started.
    pub name: String,
    /// Its image as the user named it.
    pub image: String,
}

/// The monitor's configuration, from the command line [`start`] gives it (no database access:
/// the monitor must not carry SQLite state into the forks that start the container).
pub fn monitor_config(
    paths: &Paths,
    id: &str,
    f: &MonitorFlags,
) -> Result<MonitorConfig, EngineError> {
    Ok(MonitorConfig {
        paths: paths.clone(),
        id: id
            .parse()
            .map_err(|e: moat_runtime::id::IdError| EngineError::Spec(e.to_string()))?,
        rotation: Rotation::decode(&f.log_rotation),
        auto_remove: f.rm,
        attach: f.attach,
        stdin: f.stdin,
        tty: f.tty,
        restart: crate::hostconfig::RestartPolicy::parse(&f.restart)?,
        name: f.name.clone(),
        image: f.image.clone(),
    })
}

/// Tells the monitor not to restart the container (its `--restart` policy).
fn mark_stopped_by_user(paths: &Paths, row: &Row) {
    let _ = std::fs::write(
        paths
            .container_dir(&row.id)
            .join(crate::monitor::STOPPED_BY_USER),
        "",
    );
}

/// Whether the running container is paused (frozen).
pub fn is_paused(paths: &Paths, row: &Row) -> bool {
    row.effective().0 == State::Running && cgroup_of(paths, row).is_ok_and(|cg| cg.is_frozen())
}

/// The cgroup of a running container's processes: the runtime's for a process container; for
/// a VM container, that of its driver and VMM on the host (the guest runs inside them, so
/// freezing it freezes the whole VM).
fn cgroup_of(paths: &Paths, row: &Row) -> Result<moat_runtime::cgroups::Cgroup, EngineError> {
    if crate::vm::is_vm(&paths.container_dir(&row.id)) {
        return crate::vm::cgroup(&row.id);
    }
    let rt = Runtime::new(&paths.runtime_root);
    Ok(moat_runtime::ops::pause::cgroup(&rt, &container_id(row)?)?)
}

fn cgroup_err(e: moat_runtime::cgroups::CgroupError) -> EngineError {
    moat_runtime::OpsError::from(e).into()
}

/// Sets (or, with `None`, clears) the detach keys of the container's next attached starts
/// (`start -a --detach-keys`); checked first.
pub fn set_detach_keys(paths: &Paths, row: &Row, keys: Option<&str>) -> Result<(), EngineError> {
    crate::monitor::save_detach_keys(&paths.container_dir(&row.id), keys)
}

/// Freezes every process of a running container (`pause`).
pub fn pause(paths: &Paths, row: &Row) -> Result<(), EngineError> {
    if row.effective().0 != State::Running {
        return Err(EngineError::Conflict(format!(
            "container {} is not running",
            row.id
        )));
    }
    if is_paused(paths, row) {
        return Err(EngineError::Conflict(format!(
            "container {} is already paused",
            row.id
        )));
    }
    cgroup_of(paths, row)?.freeze().map_err(cgroup_err)?;
    crate::events::container(paths, "pause", row, &[]);
    Ok(())
}

/// Thaws a paused container (`unpause`).
pub fn unpause(paths: &Paths, row: &Row) -> Result<(), EngineError> {
    if !is_paused(paths, row) {
        return Err(EngineError::Conflict(format!(
            "container {} is not paused",
            row.id
        )));
    }
    cgroup_of(paths, row)?.thaw().map_err(cgroup_err)?;
    crate::events::container(paths, "unpause", row, &[]);
    Ok(())
}

/// One process of a container, as `top` shows it.
pub use moat_runtime::procinfo::Process;

/// The processes of a running container (`top`): from its cgroup and /proc for a process
/// container (host pids); a VM container's from its guest, through the agent (guest pids).
pub fn top(paths: &Paths, row: &Row) -> Result<Vec<Process>, EngineError> {
    if row.effective().0 != State::Running {
        return Err(EngineError::Conflict(format!(
            "container {} is not running",
            row.id
        )));
    }
    let dir = paths.container_dir(&row.id);
    if crate::vm::is_vm(&dir) {
        // A frozen guest cannot answer.
        if is_paused(paths, row) {
            return Err(EngineError::Conflict(format!(
                "container {} is paused: its guest cannot list its processes until unpaused",
                row.name
            )));
        }
        return crate::vm::top(&dir);
    }
    let rt = Runtime::new(&paths.runtime_root);
    let mut pids = moat_runtime::ops::pause::pids(&rt, &container_id(row)?)?;
    pids.sort_unstable();
    Ok(pids
        .into_iter()
        .filter_map(moat_runtime::procinfo::read)
        .collect())
}

/// A running container's resource usage, with its CPU use over `window` as a percentage of
/// one CPU (Docker's CPU %: can exceed 100 on several cores).
pub fn stats(
    paths: &Paths,
    row: &Row,
    window: Duration,
) -> Result<(moat_runtime::cgroups::Usage, f64), EngineError> {
    if row.effective().0 != State::Running {
        return Err(EngineError::Conflict(format!(
            "container {} is not running",
            row.id
        )));
    }
    // A VM container's figures are its VM's: what it costs the host.
    let cg = cgroup_of(paths, row)?;
    let t0 = Instant::now();
    let first = cg.usage();
    std::thread::sleep(window);
    let second = cg.usage();
    let wall = t0.elapsed().as_nanos().max(1) as f64;
    let cpu = second.cpu_ns.saturating_sub(first.cpu_ns) as f64 / wall * 100.0;
    Ok((second, cpu))
}

/// Sends `sig` to a running container's init.
pub fn kill(paths: &Paths, row: &Row, sig: Signal) -> Result<(), EngineError> {
    if row.effective().0 != State::Running {
        return Err(EngineError::Conflict(format!(
            "cannot kill container: {}: container {} is not running",
            row.name, row.id
        )));
    }
    // As Docker: a paused container takes no signal but SIGKILL (which thaws it first: a VM's
    // frozen driver could not even pass the signal on).
    if is_paused(paths, row) {
        if sig != Signal::SIGKILL {
            return Err(EngineError::Conflict(format!(
                "cannot kill container: {}: container is paused, unpause the container before \
                 stopping or killing",
                row.name
            )));
        }
        let _ = cgroup_of(paths, row)?.thaw();
    }
    mark_stopped_by_user(paths, row);
    signal_init(paths, row, sig)
}

/// Sends `sig` to the container's init: through the runtime on the host, or through the VM's
/// driver to the guest.
fn signal_init(paths: &Paths, row: &Row, sig: Signal) -> Result<(), EngineError> {
    let dir = paths.container_dir(&row.id);
    if crate::vm::is_vm(&dir) {
        crate::vm::signal(&dir, sig)?;
    } else {
        let rt = Runtime::new(&paths.runtime_root);
        moat_runtime::ops::kill::kill(&rt, &container_id(row)?, sig, false)?;
    }
    crate::events::container(paths, "kill", row, &[("signal", &(sig as i32).to_string())]);
    Ok(())
}

/// The container's `--stop-signal` and `--stop-timeout` (Docker's defaults: SIGTERM, 10 s).
pub fn stop_settings(paths: &Paths, row: &Row) -> (String, Duration) {
    let annotations =
        oci_spec::runtime::Spec::load(paths.container_dir(&row.id).join("config.json"))
            .ok()
            .and_then(|s| s.annotations().clone())
            .unwrap_or_default();
    let sig = annotations
        .get(crate::hostconfig::STOP_SIGNAL)
        .cloned()
        .unwrap_or_else(|| "SIGTERM".into());
    let secs = annotations
        .get(crate::hostconfig::STOP_TIMEOUT)
        .and_then(|t| t.parse().ok())
        .unwrap_or(10);
    (sig, Duration::from_secs(secs))
}

/// Stops with the container's own stop signal and timeout (Docker's SIGTERM and 10 s unless
/// `--stop-signal`/`--stop-timeout` said otherwise).
pub fn stop_default(paths: &Paths, row: &Row) -> Result<(), EngineError> {
    let (sig, timeout) = stop_settings(paths, row);
    let sig = moat_runtime::ops::parse_signal(&sig)?;
    stop(paths, row, sig, timeout)
}

/// Stops a running container: `sig` (SIGTERM unless the image says otherwise), then SIGKILL
/// after `timeout`; returns once its monitor has recorded the exit. A container that is not
/// running is left as it is (as Docker does).
pub fn stop(paths: &Paths, row: &Row, sig: Signal, timeout: Duration) -> Result<(), EngineError> {
    if row.effective().0 != State::Running {
        return Ok(());
    }
    mark_stopped_by_user(paths, row);
    let dir = paths.container_dir(&row.id);
    let vm = crate::vm::is_vm(&dir);
    // A paused container cannot act on the signal: thawed first, as Docker does.
    if let Ok(cg) = cgroup_of(paths, row) {
        if cg.is_frozen() {
            let _ = cg.thaw();
        }
    }
    let stopped = |()| {
        crate::events::container(paths, "stop", row, &[]);
        Ok(())
    };
    let _ = signal_init(paths, row, sig);
    if wait_monitor(row, timeout) {
        return stopped(());
    }
    let _ = signal_init(paths, row, Signal::SIGKILL);
    if wait_monitor(row, Duration::from_secs(10)) {
        return stopped(());
    }
    // A guest that no longer answers loses its VM.
    if vm {
        let _ = crate::vm::kill_vm(&dir);
        if wait_monitor(row, Duration::from_secs(10)) {
            return stopped(());
        }
    }
    Err(EngineError::Conflict(format!(
        "container {} did not stop: its monitor (pid {}) is still there after SIGKILL",
        row.name, row.monitor.0
    )))
}

/// Waits until the container's monitor is gone (it exits after recording the exit and cleaning
/// up); false on timeout.
fn wait_monitor(row: &Row, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while row.monitor_alive() {
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Removes a container (`rm`): refused while it runs unless `force` (then killed first).
/// With `volumes` (`rm -v`), the anonymous volumes it used go too.
pub fn remove(paths: &Paths, row: &Row, force: bool, volumes: bool) -> Result<(), EngineError> {
    if row.effective().0 == State::Running {
        if !force {
            return Err(EngineError::Conflict(format!(
                "cannot remove container \"/{}\": container is running: stop the container \
                 before removing or force remove",
                row.name
            )));
        }
        stop(paths, row, Signal::SIGKILL, Duration::from_secs(10))?;
    }
    let records = Records::open(&paths.root)?;
    // An --rm container's monitor removes it itself.
    if records.get(&row.id)?.is_none() {
        return Ok(());
    }
    let rt = Runtime::new(&paths.runtime_root);
    let cid = container_id(row)?;
    if rt.lookup(&cid).is_ok() {
        moat_runtime::ops::delete::delete(&rt, &cid, true)?;
    }
    let dir = paths.container_dir(&row.id);
    // A VM container's monitor that died left its VM's cgroup.
    if crate::vm::is_vm(&dir) {
        crate::vm::remove_cgroup(&row.id);
    }
    let labels = crate::inspect::labels(paths, &row.id);
    let used = if volumes {
        volumes_of(paths, &dir)
    } else {
        vec![]
    };
    let rootfs = dir.join("rootfs");
    moat_image::mount::unmount(&rootfs).map_err(|source| EngineError::Io {
        what: "unmount",
        path: rootfs.clone(),
        source,
    })?;
    // A monitor that died (kill -9) left its network: endpoints, veths, the namespace pin.
    if crate::network::load(&dir).is_some() {
        crate::network::open(paths)?.detach(&row.id, false)?;
    }
    if let Err(source) = std::fs::remove_dir_all(&dir) {
        if source.kind() != std::io::ErrorKind::NotFound {
            return Err(EngineError::Io {
                what: "remove",
                path: dir,
                source,
            });
        }
    }
    records.remove(&row.id)?;
    crate::events::container_labelled(paths, "destroy", row, &labels, &[]);
    remove_anonymous_volumes(paths, &used)
}

/// Renames a container (`rename`).
pub fn rename(paths: &Paths, row: &Row, name: &str) -> Result<(), EngineError> {
    Records::open(&paths.root)?.rename(&row.id, name)?;
    let renamed = Row {
        name: name.to_string(),
        ..row.clone()
    };
    crate::events::container(paths, "rename", &renamed, &[("oldName", &row.name)]);
    Ok(())
}

/// Removes those of `names` that are anonymous volumes (one still used by another container
/// is kept, as Docker does).
pub(crate) fn remove_anonymous_volumes(paths: &Paths, names: &[String]) -> Result<(), EngineError> {
    if names.is_empty() {
        return Ok(());
    }
    let vols = crate::volumes::Volumes::open(paths)?;
    for name in names {
        if vols.get(name)?.is_some_and(|v| v.anonymous) {
            let _ = vols.remove(name);
        }
    }
    Ok(())
}

/// The names of the volumes a container's config mounts.
pub(crate) fn volumes_of(paths: &Paths, dir: &Path) -> Vec<String> {
    let prefix = paths.root.join("volumes");
    let spec: serde_json::Value = std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    spec["mounts"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| {
                    let src = Path::new(m["source"].as_str()?);
                    let rest = src.strip_prefix(&prefix).ok()?;
                    let mut parts = rest.components();
                    let name = parts.next()?.as_os_str().to_str()?.to_string();
                    (parts.as_path() == Path::new("_data")).then_some(name)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Blocks until the container has exited (one never started is waited for, as Docker does);
/// its exit code (`moat wait`).
pub fn wait(paths: &Paths, row: &Row) -> Result<i32, EngineError> {
    let records = Records::open(&paths.root)?;
    let mut row = row.clone();
    while row.effective().0 != State::Exited {
        std::thread::sleep(Duration::from_millis(20));
        match records.get(&row.id)? {
            Some(r) => row = r,
            // Removed meanwhile (--rm): it exited; its code went with it.
            None => break,
        }
    }
    Ok(row.exit_code)
}
