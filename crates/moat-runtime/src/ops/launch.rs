//! The parent's side of creating a container, shared by `create` and `run`.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType};
use rustix::fs::OFlags;

use super::{OpsError, Runtime};
use crate::bundle::{namespaces, Bundle};
use crate::cgroups::{Cgroup, HostFs, Layout};
use crate::id::ContainerId;
use crate::init::{hook_state, stage1, InitConfig, StartSignal};
use crate::rootfs::{default_devices, CgroupMounts, RootfsPlan};
use crate::state::{now_rfc3339, proc_start_time, Record};
use crate::sync::{self, Channel, Msg};

/// Options of `create` (and `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Where to write the init's pid.
    pub pid_file: Option<PathBuf>,
    /// Where to send the pty master (process.terminal).
    pub console_socket: Option<PathBuf>,
    /// Extra descriptors (3..3+N) passed to the container.
    pub preserve_fds: i32,
}

/// A container whose init reported `Created`.
#[derive(Debug)]
pub(crate) struct Launched {
    pub pid: i32,
    pub chan: Channel,
    pub record: Record,
}

/// Undoes a half-made container: kills what was forked, removes the cgroup and the state dir.
struct Cleanup<'a> {
    rt: &'a Runtime,
    id: &'a ContainerId,
    cgroup: &'a Cgroup,
    cgroup_made: bool,
    pids: Vec<i32>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for &p in &self.pids {
            let _ = nix::sys::signal::kill(Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
        }
        // Stage 1 first: once it is reaped, the init is re-parented to us (a subreaper).
        for &p in &self.pids {
            let _ = waitpid(Pid::from_raw(p), None);
        }
        if self.cgroup_made {
            let _ = self.cgroup.destroy();
        }
        let _ = self.rt.store.remove(self.id);
    }
}

fn write_maps(pid: i32, file: &str, maps: &[LinuxIdMapping]) -> Result<(), OpsError> {
    let text: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    std::fs::write(&path, text).map_err(|source| OpsError::Io {
        what: "write id map",
        path,
        source,
    })
}

/// Claims the id, creates the cgroup and forks the init chain; returns once the init reports
/// `Created` (or fails, leaving nothing behind).
pub(crate) fn launch(
    rt: &Runtime,
    id: &ContainerId,
    opts: &CreateOptions,
    start: StartKind,
) -> Result<Launched, OpsError> {
    log::debug!("launch {id}: start");
    let bundle = Bundle::load(&opts.bundle)?;
    for field in crate::bundle::unsupported(&bundle.spec) {
        log::warn!("{field} is set in the config but not supported yet: ignored");
    }
    let linux = bundle.spec.linux().clone().unwrap_or_default();
    let cg_path = linux
        .cgroups_path()
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/moat/{id}")));
    let cgroup = Cgroup::new(Layout::detect()?, &cg_path, HostFs)?;
    rt.store.claim(id)?;
    let mut guard = Cleanup {
        rt,
        id,
        cgroup: &cgroup,
        cgroup_made: false,
        pids: vec![],
        armed: true,
    };
    log::debug!("launch {id}: bundle loaded, id claimed");
    // Set first: a create that fails half-way has made directories too.
    guard.cgroup_made = true;
    cgroup.create()?;
    cgroup.apply(&resources(&linux))?;
    log::debug!("launch {id}: cgroup ready");
    let start = match start {
        StartKind::Fifo => {
            let fifo = rt.store.fifo(id);
            let sys = |e| OpsError::Sys {
                what: format!("mkfifo {}", fifo.display()),
                source: e,
            };
            nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622)).map_err(sys)?;
            // The init reopens it as the container's root, which in a user namespace is an
            // unprivileged host uid (the state directory itself stays 0700, root only).
            let (uid, gid) = (
                host_id(linux.uid_mappings().as_deref()),
                host_id(linux.gid_mappings().as_deref()),
            );
            nix::unistd::chown(&fifo, uid.map(Uid::from_raw), gid.map(Gid::from_raw))
                .map_err(sys)?;
            let fd: OwnedFd = rustix::fs::open(
                &fifo,
                OFlags::PATH | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| OpsError::Io {
                what: "open",
                path: fifo.clone(),
                source: e.into(),
            })?;
            StartSignal::Fifo(fd)
        }
        StartKind::Channel => StartSignal::Channel,
    };
    let console = match (&opts.console_socket, bundle.process.terminal()) {
        (Some(p), Some(true)) => Some(crate::console::connect(p)?),
        _ => None,
    };
    let nss = namespaces(&bundle.spec).to_vec();
    let is_new = |t| nss.iter().any(|n| n.typ() == t && n.path().is_none());
    let userns = is_new(LinuxNamespaceType::User);
    let mut devices = default_devices();
    for d in linux.devices().iter().flatten() {
        devices.retain(|x| x.path() != d.path());
        devices.push(d.clone());
    }
    let cgroups = match cgroup.layout() {
        Layout::V1 { .. } => CgroupMounts::V1(cgroup.mount_plan()),
        Layout::V2 { .. } => CgroupMounts::V2 {
            host_dir: cgroup.dirs().into_iter().next().unwrap_or_default(),
        },
    };
    let cfg = InitConfig {
        id: id.to_string(),
        rootfs: RootfsPlan {
            rootfs: bundle.rootfs.clone(),
            bundle: bundle.dir.clone(),
            mounts: bundle.spec.mounts().clone().unwrap_or_default(),
            devices,
            propagation: linux.rootfs_propagation().clone(),
            userns,
            cgroupns: is_new(LinuxNamespaceType::Cgroup),
            cgroups,
            readonly: bundle.spec.root().as_ref().and_then(|r| r.readonly()) == Some(true),
            masked: linux.masked_paths().clone().unwrap_or_default(),
            readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
        },
        namespaces: nss,
        bundle,
        start,
        console,
        preserve_fds: opts.preserve_fds,
        cgroup_join: cgroup.self_join_files(),
        seccomp: rt.seccomp(linux.seccomp().as_ref())?,
    };
    // Orphans of the chain (the init, once stage 1 exits) come back to us, so we can reap them.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let (parent, child) = sync::pair()?;
    // SAFETY: the moat binary is single-threaded when it creates a container, so the child may
    // run arbitrary code after fork.
    let stage1_pid = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(parent);
            stage1::run(&cfg, &child)
        }
        Ok(ForkResult::Parent { child }) => child.as_raw(),
        Err(e) => {
            return Err(OpsError::Sys {
                what: "fork".into(),
                source: e,
            })
        }
    };
    drop(child);
    log::debug!("launch {id}: stage 1 forked");
    guard.pids.push(stage1_pid);
    parent.send(&Msg::Go)?;
    let mut init_pid = 0;
    loop {
        match parent.recv("Created") {
            Ok(Msg::MapIds) => {
                // setgroups must be denied before an unprivileged writer may set gid_map.
                if !nix::unistd::geteuid().is_root() {
                    let p = PathBuf::from(format!("/proc/{stage1_pid}/setgroups"));
                    std::fs::write(&p, "deny").map_err(|source| OpsError::Io {
                        what: "write",
                        path: p,
                        source,
                    })?;
                }
                write_maps(
                    stage1_pid,
                    "uid_map",
                    linux.uid_mappings().as_deref().unwrap_or(&[]),
                )?;
                write_maps(
                    stage1_pid,
                    "gid_map",
                    linux.gid_mappings().as_deref().unwrap_or(&[]),
                )?;
                parent.send(&Msg::IdsMapped)?;
            }
            Ok(Msg::InitPid(p)) => {
                init_pid = p;
                let _ = waitpid(Pid::from_raw(stage1_pid), None);
                // Reaped: its pid may be reused, so the cleanup must not signal it any more.
                guard.pids = vec![p];
            }
            Ok(Msg::Warning(w)) => log::warn!("{w}"),
            Ok(Msg::RunCreateRuntimeHooks) => {
                let hooks = cfg.bundle.spec.hooks().clone().unwrap_or_default();
                let state = hook_state(&cfg, init_pid, "creating");
                #[allow(deprecated)]
                let prestart = hooks.prestart().clone().unwrap_or_default();
                crate::hooks::run("prestart", &prestart, &state)?;
                let create_runtime = hooks.create_runtime().clone().unwrap_or_default();
                crate::hooks::run("createRuntime", &create_runtime, &state)?;
                parent.send(&Msg::HooksDone)?;
            }
            // The init reports only after its pid is out (`fork_reporting_pid`); pid 0 here
            // would make `run` wait for a process that is not there.
            Ok(Msg::Created) if init_pid == 0 => {
                return Err(OpsError::Protocol {
                    got: "Created".into(),
                    expected: "InitPid",
                })
            }
            Ok(Msg::Created) => {
                log::debug!("launch {id}: init reports Created");
                break;
            }
            Ok(Msg::Error(e)) => return Err(OpsError::Init(e)),
            Ok(Msg::CommandError(message, code)) => {
                return Err(OpsError::Command { message, code })
            }
            Ok(got) => {
                return Err(OpsError::Protocol {
                    got: format!("{got:?}"),
                    expected: "Created",
                })
            }
            Err(e) => return Err(e.into()),
        }
    }
    let record = Record {
        id: id.to_string(),
        pid: init_pid,
        pid_start_time: proc_start_time(init_pid).map(|(s, _)| s).unwrap_or(0),
        bundle: cfg.bundle.dir.clone(),
        rootfs: cfg.bundle.rootfs.clone(),
        created: now_rfc3339(),
        owner: nix::unistd::geteuid().as_raw(),
        cgroup_path: cg_path,
        config: cfg.bundle.spec.clone(),
    };
    rt.store.save(id, &record)?;
    if let Some(p) = &opts.pid_file {
        write_pid_file(p, init_pid)?;
    }
    guard.armed = false;
    Ok(Launched {
        pid: init_pid,
        chan: parent,
        record,
    })
}

/// The config's resources with the device rules every runtime adds: deny everything, then the
/// config's own rules, then the standard devices and the config's device nodes (as runc does).
fn resources(linux: &oci_spec::runtime::Linux) -> oci_spec::runtime::LinuxResources {
    let mut res = linux.resources().clone().unwrap_or_default();
    let mut deny_all = oci_spec::runtime::LinuxDeviceCgroup::default();
    deny_all.set_allow(false).set_access(Some("rwm".into()));
    let mut rules = vec![deny_all];
    rules.extend(res.devices().clone().unwrap_or_default());
    rules.extend(crate::cgroups::default_device_rules());
    rules.extend(linux.devices().iter().flatten().map(Into::into));
    res.set_devices(Some(rules));
    res
}

/// The host id that container id 0 maps to (None without a mapping for 0).
fn host_id(maps: Option<&[LinuxIdMapping]>) -> Option<u32> {
    maps?
        .iter()
        .find(|m| m.container_id() == 0)
        .map(|m| m.host_id())
}

/// How the init will be told to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartKind {
    /// A later `start` command (create).
    Fifo,
    /// The same process (run).
    Channel,
}

/// Writes the pid file atomically (engines poll it and must never read half a number).
pub(crate) fn write_pid_file(path: &std::path::Path, pid: i32) -> Result<(), OpsError> {
    let tmp = path.with_extension("moat-tmp");
    let io = |what, source| OpsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, pid.to_string()).map_err(|e| io("write pid file", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("write pid file", e))
}
