//! Stage 2: the container's init. Builds the rootfs, sets the process up, reports `Created`,
//! waits for `start`, drops privileges and execs the user's program.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;

use super::{hook_state, ioerr, perr, Failure, InitConfig, InitError, StartSignal};
use crate::rootfs;
use crate::sync::{Channel, Msg};

/// Entry of the init: never returns (it execs or exits).
pub fn run(cfg: &InitConfig, chan: &Channel) -> ! {
    let code = match init(cfg, chan) {
        Ok(never) => match never {},
        Err((e, code)) => {
            // Before `Created` the parent is listening; after it (create-then-start) it may be
            // gone, and the container's stderr is the only place left to say why.
            let msg = if code == 126 || code == 127 {
                Msg::CommandError(e.to_string(), code)
            } else {
                Msg::Error(e.to_string())
            };
            if chan.send(&msg).is_err() {
                let _ = writeln!(std::io::stderr(), "moat: {e}");
            }
            code
        }
    };
    // SAFETY: _exit ends this forked child without running the runtime's atexit handlers.
    unsafe { libc::_exit(code) }
}

fn init(cfg: &InitConfig, chan: &Channel) -> Result<std::convert::Infallible, Failure> {
    let f = |e: InitError| (e, 125);
    // Our pid as the host sees it, for hooks: /proc is still the host's until pivot_root.
    let host_pid: i32 = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0);
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    log::debug!("init: started");
    rootfs::prepare(&cfg.rootfs).map_err(|e| f(e.into()))?;
    log::debug!("init: mounts done");
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
        let state = hook_state(cfg, host_pid, "creating");
        crate::hooks::run("createContainer", h, &state).map_err(|e| f(e.into()))?;
    }
    rootfs::pivot(&cfg.rootfs).map_err(|e| f(e.into()))?;
    log::debug!("init: pivoted");

    let spec = &cfg.bundle.spec;
    let process = &cfg.bundle.process;
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).map_err(|e| f(perr(format!("hostname {h:?}"))(e)))?;
    }
    // A network namespace of its own starts with `lo` down; Docker's containers have it up
    // (services on localhost work even with --network none).
    let own_netns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Network && n.path().is_none()
            })
        });
    if own_netns {
        loopback_up().map_err(|e| f(perr("bring up lo")(e)))?;
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
        std::fs::write(&path, v).map_err(|e| f(ioerr(format!("sysctl {k}={v}"))(e)))?;
    }
    // Masking and read-only paths come after the sysctls, which write under /proc/sys.
    rootfs::finish(&cfg.rootfs).map_err(|e| f(e.into()))?;
    let console = cfg.console.as_ref().map(|s| s.as_raw_fd());
    let prepared = super::process::prepare(process, cfg.seccomp.as_ref(), console)?;
    for w in &prepared.warnings {
        chan.send(&Msg::Warning(w.clone()))
            .map_err(|e| f(e.into()))?;
    }
    chan.send(&Msg::Created).map_err(|e| f(e.into()))?;
    match &cfg.start {
        StartSignal::Fifo(opath) => {
            // Reopen the fifo through /proc: the O_PATH descriptor was opened on the host side;
            // opening it for writing blocks until `start` opens it for reading.
            let p = format!("/proc/self/fd/{}", opath.as_raw_fd());
            let mut fifo = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|e| f(ioerr("open exec fifo")(e)))?;
            fifo.write_all(b"0")
                .map_err(|e| f(ioerr("write exec fifo")(e)))?;
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
        let state = hook_state(cfg, host_pid, "created");
        crate::hooks::run("startContainer", h, &state).map_err(|e| f(e.into()))?;
    }
    Err(super::process::exec(&prepared, process, cfg.preserve_fds))
}

/// Sets the loopback interface up (`SIOCSIFFLAGS` with `IFF_UP`), in the current network
/// namespace.
fn loopback_up() -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: an all-zero ifreq is a valid value; the name is copied within its 16 bytes.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own, on a socket we hold.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(nix::Error::last());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(nix::Error::last());
        }
    }
    Ok(())
}
