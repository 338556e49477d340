//! VM containers (`--isolation=vm`): the same bundle as a process container's, run by moat's
//! agent inside a micro-VM instead of by the runtime on the host (see the moat-vm crate).
//!
//! In the monitor, the starter forks a *driver* where a process container's init would be: it
//! boots the VM, has the agent start the container, and relays the guest's stdout and stderr
//! onto the monitor's pipes, so the monitor's pump, logs, attach and exit handling are the same
//! for both classes; the driver's exit code is the container's. `stop` and `kill` reach the
//! guest through the driver's control socket (`vm.sock` in the container's directory).
//!
//! The guest sees two shares: the container's rootfs (the same overlay a process container
//! gets), and `vm/` holding config.json and copies of the files it binds from the container's
//! directory (hosts, hostname, resolv.conf): not the directory itself, whose other files
//! (network plan, restart policy, logs) the host trusts.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_agent::proto;
use moat_vm::{Accel, Share, VmConfig};
use nix::sys::signal::Signal;
use nix::unistd::{fork, pipe2, ForkResult};
use serde_json::Value;

use crate::monitor::{Event, MonitorConfig};
use crate::{EngineError, Paths};

/// The driver's control socket, in the container's directory.
const CONTROL: &str = "vm.sock";
/// Why the VM ended without the container's own exit code (the driver leaves it for the
/// monitor's record).
const REASON: &str = "vm-exit-reason";
/// Guest memory when the container has no memory limit, MiB (QEMU backs it lazily).
const DEFAULT_MEMORY_MIB: u64 = 512;
/// Guest memory on top of a container's limit: the guest kernel and the agent, MiB.
const OVERHEAD_MIB: u64 = 64;
/// How long a VM may take from launch to a started container under software emulation.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// What `moat info` and `docker info` say about VM isolation: the default isolation, the
/// accelerator, and where the hypervisor, the guest kernel and the agent are (or why not).
pub fn info() -> Vec<(&'static str, String)> {
    let found = |r: Result<PathBuf, moat_vm::VmError>| match r {
        Ok(p) => p.display().to_string(),
        Err(e) => format!("missing: {e}"),
    };
    let default = match crate::hostconfig::parse_isolation("default") {
        Ok(true) => "vm".to_string(),
        Ok(false) => "process".to_string(),
        Err(e) => e.to_string(),
    };
    vec![
        ("Default Isolation", default),
        ("VM Accelerator", Accel::probe().as_str().to_string()),
        (
            "VM Hypervisor",
            found(moat_vm::qemu::Qemu::find().map(|q| q.binary)),
        ),
        (
            "VM Kernel",
            moat_vm::kernel::kernel().map_or_else(|e| format!("missing: {e}"), |k| k.describe()),
        ),
        ("VM Agent", found(moat_vm::assets::agent())),
        // What serves a VM container's writable layer (device nodes and fifos need virtio-fs).
        (
            "VM Rootfs Share",
            moat_vm::virtiofs::find().map_or_else(
                || "9p (no virtiofsd: mknod and mkfifo fail in the writable layer)".to_string(),
                |p| format!("virtio-fs ({})", p.display()),
            ),
        ),
    ]
}

/// The marker `create` leaves in a VM container's directory (its config's `moat.isolation`
/// annotation says the same for inspect): one stat on every start, stop and kill instead of
/// parsing the config (a millisecond of the start path).
pub const MARKER: &str = "isolation-vm";

/// Whether the container in `dir` is a VM container.
pub fn is_vm(dir: &Path) -> bool {
    dir.join(MARKER).exists()
}

/// Sends `sig` to the init of the running VM container in `dir`.
pub fn signal(dir: &Path, sig: Signal) -> Result<(), EngineError> {
    control(dir, &format!("signal {}", sig as i32))
}

/// The cgroup of a VM container's host processes (its driver, the VMM and their helpers),
/// where a process container's processes would be: `pause` freezes the whole VM, `stats`
/// reads what it costs the host.
pub(crate) fn cgroup(id: &str) -> Result<moat_runtime::cgroups::Cgroup, EngineError> {
    let cg = moat_runtime::cgroups::detect().and_then(|layout| {
        moat_runtime::cgroups::Cgroup::new(
            layout,
            Path::new(&format!("/moat/{id}")),
            moat_runtime::cgroups::HostFs,
        )
    });
    Ok(cg.map_err(moat_runtime::OpsError::from)?)
}

/// In the driver, first: makes the VM's cgroup and moves the (single-threaded) driver into it;
/// the VMM it starts is born there.
fn enter_cgroup(id: &str) -> Result<(), EngineError> {
    let cg = cgroup(id)?;
    cg.create()
        .and_then(|()| moat_runtime::cgroups::join_self(&cg.self_join_files()))
        .map_err(moat_runtime::OpsError::from)?;
    Ok(())
}

/// Removes the VM's cgroup once the VM is over (what is left in it is killed first: the VMM
/// dies with its driver, but not at the same instant).
pub(crate) fn remove_cgroup(id: &str) {
    let Ok(cg) = cgroup(id) else { return };
    let _ = cg.thaw();
    for pid in cg.pids().unwrap_or_default() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
    for _ in 0..100 {
        if cg.pids().map(|p| p.is_empty()).unwrap_or(true) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Err(e) = cg.destroy() {
        log::warn!("container {id}: the VM's cgroup: {e}");
    }
}

/// The processes of the running VM container in `dir`, as its guest sees them (`top`).
pub(crate) fn top(dir: &Path) -> Result<Vec<moat_runtime::procinfo::Process>, EngineError> {
    let (_dir, sock) = crate::socket_in(dir, CONTROL)?;
    Ok(moat_vm::driver::top(&sock)?.processes)
}

/// Kills the VM of the container in `dir` (its guest no longer answers).
pub fn kill_vm(dir: &Path) -> Result<(), EngineError> {
    control(dir, "kill-vm")
}

fn control(dir: &Path, request: &str) -> Result<(), EngineError> {
    let (_dir, sock) = crate::socket_in(dir, CONTROL)?;
    moat_vm::driver::control(&sock, request).map_err(EngineError::from)
}

/// A virtio-fs share's socket, to its virtiofsd, in the container's directory (the driver's
/// working directory: a socket's name is limited to 108 bytes).
fn virtiofs_socket(tag: &str) -> String {
    format!("vfs-{tag}.sock")
}

/// Where an API server leaves the size it was asked for, for the `moat exec` helper with the
/// pid appended (in the container's directory).
const EXEC_SIZE: &str = "exec-size-";

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The API's resize of a VM container's exec (`helper`: its `moat exec` process, which relays
/// to the guest's pty): the size is left for the helper, then SIGWINCH tells it to look.
pub(crate) fn resize_exec(
    dir: &Path,
    helper: u32,
    rows: u16,
    cols: u16,
) -> Result<(), EngineError> {
    let file = dir.join(format!("{EXEC_SIZE}{helper}"));
    let tmp = dir.join(format!(".{EXEC_SIZE}{helper}"));
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::Io { what, path, source }
    };
    std::fs::write(&tmp, format!("{rows} {cols}\n")).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, &file).map_err(io("rename", &tmp))?;
    let pid = i32::try_from(helper)
        .map_err(|_| EngineError::Conflict(format!("exec process {helper} is not running")))?;
    let signalled = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGWINCH);
    // A helper that ended meanwhile removed its file already (or never will): none is left for
    // a later process with the same pid.
    if signalled.is_err() {
        let _ = std::fs::remove_file(&file);
    }
    signalled.map_err(|source| EngineError::Sys {
        what: "signal the exec process",
        source,
    })
}

/// `exec` into the running VM container in `dir`: `process` (built from the container's own,
/// as for a process container) started by the agent; our stdin and (with a terminal) our
/// window size go to it, its output to our stdout and stderr. Its exit code (0 when detached).
pub fn exec(
    dir: &Path,
    process: &oci_spec::runtime::Process,
    req: &crate::exec::ExecRequest,
) -> Result<i32, EngineError> {
    let (_dir, sock) = crate::socket_in(dir, CONTROL)?;
    let start = proto::ExecStart {
        process: serde_json::to_value(process).map_err(|e| EngineError::Spec(e.to_string()))?,
        tty: req.tty,
    };
    // SIGWINCH is taken by a thread of ours: blocked before any thread starts.
    if req.tty {
        let mut winch = nix::sys::signal::SigSet::empty();
        winch.add(Signal::SIGWINCH);
        let _ = winch.thread_block();
    }
    let (client, _) = match moat_vm::driver::exec::Client::start(&sock, &start) {
        Ok(c) => c,
        Err(moat_vm::VmError::Command { code, message }) => {
            return Err(EngineError::Command { message, code })
        }
        Err(e) => return Err(e.into()),
    };
    if req.detach {
        return Ok(0);
    }
    let input = client.input()?;
    // Our terminal's size; without one (an API server's pipes), the size the server was asked
    // for (see [`resize_exec`]), each time SIGWINCH says it changed.
    let size_file = dir.join(format!("{EXEC_SIZE}{}", std::process::id()));
    let _removed = RemoveOnDrop(size_file.clone());
    let size = move || {
        crate::monitor::console::caller_size().or_else(|| {
            let text = std::fs::read_to_string(&size_file).ok()?;
            let (r, c) = text.trim().split_once(' ')?;
            Some((r.parse().ok()?, c.parse().ok()?))
        })
    };
    if req.tty {
        let (rows, cols) = size().unwrap_or((24, 80));
        let _ = input.resize(rows, cols);
        let winch_input = client.input()?;
        std::thread::spawn(move || {
            let mut winch = nix::sys::signal::SigSet::empty();
            winch.add(Signal::SIGWINCH);
            while winch.wait().is_ok() {
                if let Some((rows, cols)) = size() {
                    if winch_input.resize(rows, cols).is_err() {
                        break;
                    }
                }
            }
        });
    }
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = input.close_stdin();
                    break;
                }
                Ok(n) => {
                    if input.stdin(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let code = client.wait(&mut std::io::stdout(), &mut std::io::stderr())?;
    Ok(code)
}

/// The reason the last run's VM ended without an exit code, taken (read and removed).
pub(crate) fn take_reason(dir: &Path) -> Option<String> {
    let p = dir.join(REASON);
    let r = std::fs::read_to_string(&p).ok()?;
    let _ = std::fs::remove_file(&p);
    Some(r)
}

/// What a VM container cannot do, refused at create: the host's network (the guest has its
/// own kernel, so its own stack) and another container's namespace (not wired yet).
pub fn check_create(network: &crate::spec::Network) -> Result<(), EngineError> {
    use crate::spec::Network;
    match network {
        Network::None | Network::Bridge => Ok(()),
        Network::Host => Err(EngineError::NotForVm(
            "--network host (the guest has a kernel and a network stack of its own)",
        )),
        Network::Container(_) => Err(EngineError::NotForVm("--network container:NAME")),
    }
}

/// In the monitor's starter: forks the driver, which boots the VM and starts the container;
/// the event for the monitor (the driver's pid as the container's, or the failure).
pub(crate) fn start(cfg: &MonitorConfig, out: OwnedFd, err: OwnedFd) -> Event {
    let dir = cfg.paths.container_dir(cfg.id.as_str());
    let prepared = match prepare(&cfg.paths, &dir) {
        Ok(p) => p,
        Err(e) => return Event::Failed(125, e.to_string()),
    };
    let stdin = if cfg.stdin && !cfg.tty {
        nix::unistd::dup(std::io::stdin()).ok()
    } else {
        None
    };
    let (ready_r, ready_w) = match pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return Event::Failed(125, format!("pipe: {e}")),
    };
    // SAFETY: the starter is single-threaded (a fork of the single-threaded monitor).
    match unsafe { fork() } {
        Err(e) => Event::Failed(125, format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(ready_r);
            let code = drive(
                &dir,
                prepared,
                cfg.tty,
                stdin,
                out,
                err,
                File::from(ready_w),
            );
            // SAFETY: ends the driver without running atexit handlers.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop((ready_w, out, err, stdin));
            let mut line = String::new();
            let _ = File::from(ready_r).read_to_string(&mut line);
            match line.trim_end().split_once(' ') {
                Some(("started", _)) => Event::Started(child.as_raw()),
                Some(("failed", rest)) => {
                    let (code, msg) = rest.split_once(' ').unwrap_or(("125", rest));
                    Event::Failed(code.parse().unwrap_or(125), msg.to_string())
                }
                _ => Event::Failed(
                    125,
                    "the VM driver died before the container started".into(),
                ),
            }
        }
    }
}

/// In the driver: enters the container's network namespace (QEMU, started from here, opens
/// its taps there) and wires each interface to a tap; the NICs and the guest's settings.
#[allow(clippy::type_complexity)]
fn wire_network(pin: &Path) -> Result<(Vec<(String, String)>, proto::Net), EngineError> {
    let ns = File::open(pin).map_err(|source| EngineError::Io {
        what: "open",
        path: pin.to_path_buf(),
        source,
    })?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
        EngineError::Sys {
            what: "enter the container's network namespace",
            source,
        }
    })?;
    let (links, gateway) = moat_vm::tap::links()?;
    for l in &links {
        moat_vm::tap::wire(l)?;
    }
    let nics = links
        .iter()
        .map(|l| (l.tap.clone(), l.mac.clone()))
        .collect();
    let ifaces = links
        .into_iter()
        .map(|l| proto::Iface {
            name: l.name,
            mac: l.mac,
            mtu: l.mtu,
            cidr: l.cidr,
        })
        .collect();
    Ok((nics, proto::Net { ifaces, gateway }))
}

/// In the driver (working in the container's directory, where the monitor listens on
/// `console.sock`): a pty whose master is sent to the monitor; its slave, raw (the guest's
/// terminal does the line discipline), becomes the driver's controlling terminal and fd 0, so
/// `resize` (which sizes the init's fd 0) reaches it and its SIGWINCH is the driver's cue.
fn host_pty() -> Result<OwnedFd, String> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| format!("open /dev/ptmx: {e}"))?;
    nix::pty::grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    nix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave: OwnedFd = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .map_err(|e| format!("open {name}: {e}"))?
        .into();
    let mut t = nix::sys::termios::tcgetattr(&slave).map_err(|e| format!("tcgetattr: {e}"))?;
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &t)
        .map_err(|e| format!("tcsetattr: {e}"))?;
    let sock = std::os::unix::net::UnixStream::connect("console.sock")
        .map_err(|e| format!("connect to the monitor's console.sock: {e}"))?;
    moat_runtime::console::send_master(sock.as_raw_fd(), &master, &name)
        .map_err(|e| e.to_string())?;
    drop(master);
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal); `slave` is an open tty.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!("TIOCSCTTY: {}", nix::Error::last()));
    }
    nix::unistd::dup2_stdin(&slave).map_err(|e| format!("dup2: {e}"))?;
    Ok(slave)
}

/// What the driver boots.
struct Prepared {
    vm: VmConfig,
    /// The container's pinned network namespace (bridge networks).
    netns: Option<PathBuf>,
    start: proto::Start,
}

/// The guest's shares and the VM's size from the container's config.json.
fn prepare(paths: &Paths, dir: &Path) -> Result<Prepared, EngineError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::Io { what, path, source }
    };
    let config = dir.join("config.json");
    let text = std::fs::read(&config).map_err(io("read", &config))?;
    let doc: Value = serde_json::from_slice(&text).map_err(|e| EngineError::Spec(e.to_string()))?;
    let (memory_mib, vcpus) = size(&doc);
    // A bridge network: the monitor has made and pinned the container's namespace by now.
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let netns = crate::network::load(dir)
        .filter(|p| p.container.is_none() && !p.networks.is_empty())
        .map(|_| crate::network::config(paths).netns_path(&id));
    let guest = dir.join("vm");
    std::fs::create_dir_all(&guest).map_err(io("create", &guest))?;
    let host_bundle = dir.to_string_lossy().into_owned();
    let mut shares = vec![];
    let kernel = moat_vm::kernel::kernel()?;
    let virtiofsd = moat_vm::virtiofs::find();
    if kernel.is_distro() && virtiofsd.is_none() {
        return Err(moat_vm::VmError::NoVirtiofsd(kernel.path.clone()).into());
    }
    // The writable layer goes over virtio-fs when a virtiofsd is installed (device nodes and
    // fifos can be made there; QEMU's 9p refuses them); every share does with a distribution
    // kernel (it has no 9p). The rest over 9p: no daemon per share.
    let share = |tag: &str, path: PathBuf, readonly: bool| Share {
        virtiofs: (kernel.is_distro() || (tag == proto::ROOTFS_TAG && virtiofsd.is_some()))
            .then(|| PathBuf::from(virtiofs_socket(tag))),
        tag: tag.to_string(),
        path,
        readonly,
    };
    let mut vm_shares = vec![
        share(proto::BUNDLE_TAG, guest.clone(), true),
        share(proto::ROOTFS_TAG, dir.join("rootfs"), false),
    ];
    for m in doc["mounts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let bind = proto::is_bind_mount(m);
        let Some(src) = m["source"].as_str().filter(|_| bind) else {
            continue;
        };
        let src = Path::new(src);
        if let Ok(rel) = src.strip_prefix(dir) {
            // A file of the container's own (hosts, hostname, resolv.conf): copied.
            let name = rel.to_string_lossy();
            if rel.components().count() != 1 || !src.is_file() {
                return Err(EngineError::NotForVm(
                    "binds of the container's directories",
                ));
            }
            let to = guest.join(&*name);
            std::fs::copy(src, &to).map_err(io("copy", src))?;
        } else if src.is_dir() {
            let tag = format!("s{}", shares.len());
            let readonly = m["options"]
                .as_array()
                .is_some_and(|o| o.iter().any(|x| x == "ro"));
            vm_shares.push(share(&tag, src.to_path_buf(), readonly));
            shares.push(proto::Share {
                tag,
                host_path: src.to_string_lossy().into_owned(),
            });
        } else {
            return Err(EngineError::NotForVm("bind mounts of single host files"));
        }
    }
    std::fs::write(guest.join("config.json"), &text).map_err(io("write", &guest))?;
    // The VMM's jail is built on this empty directory, in its own mount namespace.
    let jail = dir.join("jail");
    std::fs::create_dir_all(&jail).map_err(io("create", &jail))?;
    precompile_seccomp(paths, &text, &guest)?;
    let agent = moat_vm::assets::agent()?;
    let modules = match &kernel.kind {
        moat_vm::kernel::Kind::Distro { modules, .. } => modules.as_slice(),
        moat_vm::kernel::Kind::Minimal => &[],
    };
    let initrd = moat_vm::assets::initramfs(&agent, modules, &paths.root.join("vm"))?;
    Ok(Prepared {
        vm: VmConfig {
            name: dir.display().to_string(),
            kernel: kernel.path.clone(),
            initrd,
            memory_mib,
            vcpus,
            shares: vm_shares,
            console_log: dir.join("console.log"),
            nics: vec![],
            jail: Some(jail),
            accel: Accel::probe(),
            acpi: kernel.is_distro(),
        },
        netns,
        start: proto::Start {
            host_bundle,
            shares,
            stdin: false,
            tty: false,
            net: None,
            debug: log::log_enabled!(log::Level::Debug),
        },
    })
}

/// The container's seccomp program compiled on the host (cached with the process containers'
/// programs) and left in the guest's share under the runtime's cache name: libseccomp's
/// compile costs about 100 ms under software emulation, reading the program none.
fn precompile_seccomp(paths: &Paths, config: &[u8], guest: &Path) -> Result<(), EngineError> {
    let spec: oci_spec::runtime::Spec =
        serde_json::from_slice(config).map_err(|e| EngineError::Spec(e.to_string()))?;
    let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
        return Ok(());
    };
    let rt = moat_runtime::Runtime::new(&paths.runtime_root);
    let program = rt.seccomp(Some(&seccomp))?;
    let dir = guest.join(proto::SECCOMP_DIR);
    let io = |source| EngineError::Io {
        what: "write",
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    if let Some(p) = program {
        let name = moat_runtime::seccomp::Program::cache_name(&seccomp);
        std::fs::write(dir.join(name), p.bpf()).map_err(io)?;
    }
    Ok(())
}

/// The VM's memory (MiB) and vCPUs from the container's limits: `--memory` plus the guest's
/// own overhead, `--cpus` rounded up.
fn size(doc: &Value) -> (u64, u32) {
    let res = &doc["linux"]["resources"];
    let memory = res["memory"]["limit"]
        .as_i64()
        .filter(|m| *m > 0)
        .map_or(DEFAULT_MEMORY_MIB, |m| {
            (m as u64).div_ceil(1 << 20) + OVERHEAD_MIB
        });
    let vcpus = match (res["cpu"]["quota"].as_i64(), res["cpu"]["period"].as_u64()) {
        (Some(q), Some(p)) if q > 0 && p > 0 => (q as u64).div_ceil(p).max(1) as u32,
        _ => 1,
    };
    (memory, vcpus)
}

/// The driver's life: the VM up, the container started, then the relay; its exit code is the
/// container's.
fn drive(
    dir: &Path,
    mut p: Prepared,
    tty: bool,
    stdin: Option<OwnedFd>,
    out: OwnedFd,
    err: OwnedFd,
    mut ready: File,
) -> i32 {
    let fail = |ready: &mut File, code: i32, msg: String| {
        let _ = ready.write_all(format!("failed {code} {}\n", msg.replace('\n', " ")).as_bytes());
        code
    };
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Err(e) = enter_cgroup(&id) {
        return fail(&mut ready, 125, format!("the VM's cgroup: {e}"));
    }
    // The socket is bound by a relative name from inside the directory (108-byte limit).
    if let Err(e) = std::env::set_current_dir(dir) {
        return fail(&mut ready, 125, format!("enter {}: {e}", dir.display()));
    }
    let _ = std::fs::remove_file(CONTROL);
    let _ = std::fs::remove_file(REASON);
    let control = match UnixListener::bind(CONTROL) {
        Ok(l) => l,
        Err(e) => {
            return fail(
                &mut ready,
                125,
                format!("listen on {}/{CONTROL}: {e}", dir.display()),
            )
        }
    };
    if let Some(pin) = &p.netns {
        match wire_network(pin) {
            Ok((nics, net)) => {
                p.vm.nics = nics;
                p.start.net = Some(net);
            }
            Err(e) => return fail(&mut ready, 125, e.to_string()),
        }
    }
    p.start.stdin = stdin.is_some();
    p.start.tty = tty;
    // A terminal: a pty on the host too, whose master goes to the monitor as a process
    // container's would (its pump, detach keys and resize work unchanged); the driver relays
    // its other side to the guest's terminal.
    let stdio = if tty {
        match host_pty() {
            Ok(slave) => {
                drop((out, err, stdin));
                let dup = || slave.try_clone();
                match (dup(), dup(), dup()) {
                    (Ok(a), Ok(b), Ok(c)) => moat_vm::driver::HostStdio {
                        stdin: Some(a),
                        out: b,
                        err: c,
                        tty: Some(slave),
                    },
                    _ => return fail(&mut ready, 125, "dup the terminal".into()),
                }
            }
            Err(e) => return fail(&mut ready, 125, format!("terminal: {e}")),
        }
    } else {
        moat_vm::driver::HostStdio {
            stdin,
            out,
            err,
            tty: None,
        }
    };
    let vmm = match moat_vm::qemu::Qemu::find() {
        Ok(q) => q,
        Err(e) => return fail(&mut ready, 125, e.to_string()),
    };
    let sockets = || {
        let _ = std::fs::remove_file(CONTROL);
        for sh in &p.vm.shares {
            if let Some(sock) = &sh.virtiofs {
                let _ = std::fs::remove_file(sock);
            }
        }
    };
    let booted = match moat_vm::driver::boot(&vmm, &p.vm, &p.start, BOOT_TIMEOUT) {
        Ok(b) => b,
        Err((code, e)) => {
            sockets();
            return fail(&mut ready, code, e.to_string());
        }
    };
    let _ = ready.write_all(format!("started {}\n", booted.vmm_pid()).as_bytes());
    drop(ready);
    let outcome = booted.relay(stdio, control);
    sockets();
    if let Some(r) = &outcome.reason {
        let _ = std::fs::write(REASON, r);
    }
    outcome.code
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vm_size_follows_the_limits() {
        assert_eq!(size(&json!({})), (DEFAULT_MEMORY_MIB, 1));
        let doc = json!({"linux": {"resources": {
            "memory": {"limit": 256i64 << 20},
            "cpu": {"quota": 150_000, "period": 100_000}}}});
        assert_eq!(size(&doc), (256 + OVERHEAD_MIB, 2));
    }

    #[test]
    fn isolation_flag_values() {
        use crate::hostconfig::parse_isolation;
        assert!(!parse_isolation("default").unwrap_or(true));
        assert!(!parse_isolation("process").unwrap_or(true));
        assert!(parse_isolation("vm").unwrap_or(false));
        assert!(parse_isolation("hyperv").unwrap_or(false));
        assert!(parse_isolation("kvm").is_err());
    }
}
