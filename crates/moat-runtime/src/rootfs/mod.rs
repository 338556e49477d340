//! The container's root filesystem: propagation, the spec's mounts, device nodes, `pivot_root`,
//! masked and read-only paths. Runs in the init process, inside the new mount namespace.
//!
//! Order matters and follows runc: make `/` a slave (nothing we mount leaks to the host), bind the
//! rootfs onto itself (pivot_root needs a mount point), mount the spec's mounts in order with every
//! target resolved inside the rootfs, create devices, pivot, then mask and make read-only.

mod devices;
pub mod options;
pub mod safe;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::{LinuxDevice, Mount};
use rustix::fs::{Mode, OFlags};

pub use devices::default_devices;

/// Errors while building the root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// a mount failed
    #[error("mount {what} on {target}: {source}")]
    Mount {
        /// What was mounted (type or source).
        what: String,
        /// The target inside the container.
        target: PathBuf,
        /// The errno.
        source: nix::Error,
    },
    /// resolving a path inside the rootfs failed
    #[error("resolve {path} inside the rootfs: {source}")]
    Resolve {
        /// The path inside the container.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// a mount's options are invalid
    #[error("mount on {target}: {reason}")]
    Options {
        /// The mount's destination.
        target: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// creating a device node failed
    #[error("device {path}: {source}")]
    Device {
        /// The device path inside the container.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// pivot_root failed
    #[error("pivot_root into {rootfs}: {source}")]
    Pivot {
        /// The rootfs.
        rootfs: PathBuf,
        /// The errno.
        source: nix::Error,
    },
    /// unknown rootfs propagation
    #[error("unknown rootfsPropagation {0:?}")]
    Propagation(String),
}

/// How to mount cgroupfs inside the container, derived from the host's layout.
#[derive(Debug, Clone)]
pub enum CgroupMounts {
    /// cgroup v1 (also the host's hybrid layout): one hierarchy per entry.
    V1(Vec<crate::cgroups::V1Mount>),
    /// The unified hierarchy: the container's cgroup directory on the host.
    V2 {
        /// The container's cgroup directory on the host.
        host_dir: PathBuf,
    },
}

/// Everything the rootfs set-up needs to know.
#[derive(Debug, Clone)]
pub struct RootfsPlan {
    /// The rootfs on the host.
    pub rootfs: PathBuf,
    /// The bundle directory (relative bind sources are relative to it).
    pub bundle: PathBuf,
    /// The spec's mounts, in order.
    pub mounts: Vec<Mount>,
    /// Device nodes to create (defaults plus the spec's).
    pub devices: Vec<LinuxDevice>,
    /// `linux.rootfsPropagation`.
    pub propagation: Option<String>,
    /// Whether the container has a new user namespace (then devices are bind-mounted, not made).
    pub userns: bool,
    /// Whether the container has a new cgroup namespace.
    pub cgroupns: bool,
    /// How cgroupfs mounts are served.
    pub cgroups: CgroupMounts,
    /// `root.readonly`.
    pub readonly: bool,
    /// `linux.maskedPaths`.
    pub masked: Vec<String>,
    /// `linux.readonlyPaths`.
    pub readonly_paths: Vec<String>,
}

fn mnt(
    what: &str,
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    shown: &Path,
) -> Result<(), RootfsError> {
    mount(source, target, fstype, flags, data).map_err(|source| RootfsError::Mount {
        what: what.to_string(),
        target: shown.to_path_buf(),
        source,
    })
}

/// Mounts and devices, before pivot_root. The caller runs the createContainer hooks afterwards.
pub fn prepare(plan: &RootfsPlan) -> Result<(), RootfsError> {
    let prop = root_propagation(plan)?;
    // A slave (or private) `/` first: without it every mount below would propagate to the host.
    mnt(
        "propagation",
        None,
        Path::new("/"),
        None,
        prop,
        None,
        Path::new("/"),
    )?;
    // pivot_root refuses a shared new root, a shared parent of it, and a shared put_old (EINVAL).
    // Making the rootfs's parent mount private before binding the rootfs gives a private bind;
    // the requested propagation is applied to the new `/` after pivot_root (runc's order).
    let parent = mount_point_of(plan.rootfs.parent().unwrap_or(Path::new("/")));
    mnt(
        "propagation",
        None,
        &parent,
        None,
        MsFlags::MS_PRIVATE,
        None,
        Path::new("/"),
    )?;
    mnt(
        "rootfs bind",
        Some(&plan.rootfs),
        &plan.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
        Path::new("/"),
    )?;
    let root = rustix::fs::open(
        &plan.rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RootfsError::Resolve {
        path: plan.rootfs.clone(),
        source: e.into(),
    })?;
    for m in &plan.mounts {
        mount_one(plan, &root, m)?;
    }
    devices::create(&root, &plan.devices, plan.userns)?;
    devices::symlinks(&root);
    Ok(())
}

/// Re-resolves `dest` after something was mounted on it: the descriptor used as the mount target
/// still names the directory underneath, while remounts and propagation changes must name the
/// new mount's root.
fn reopen(root: &OwnedFd, dest: &Path) -> Result<OwnedFd, RootfsError> {
    safe::open_in_root(root.as_fd(), dest).map_err(|source| RootfsError::Resolve {
        path: dest.to_path_buf(),
        source,
    })
}

fn resolve_dir(root: &OwnedFd, dest: &Path) -> Result<OwnedFd, RootfsError> {
    safe::mkdir_all_in_root(root.as_fd(), dest).map_err(|source| RootfsError::Resolve {
        path: dest.to_path_buf(),
        source,
    })
}

fn mount_one(plan: &RootfsPlan, root: &OwnedFd, m: &Mount) -> Result<(), RootfsError> {
    let dest = m.destination();
    let opts = options::parse(m.options().as_deref().unwrap_or(&[])).map_err(|reason| {
        RootfsError::Options {
            target: dest.clone(),
            reason,
        }
    })?;
    let typ = m.typ().as_deref().unwrap_or("none");
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroups(plan, root, dest, &opts);
    }
    if opts.bind || typ == "bind" {
        if !opts.data.is_empty() {
            return Err(RootfsError::Options {
                target: dest.clone(),
                reason: format!("unsupported bind mount option(s) {:?}", opts.data),
            });
        }
        let src = m.source().clone().unwrap_or_default();
        let src = if src.is_absolute() {
            src
        } else {
            plan.bundle.join(src)
        };
        let target = if src.is_dir() {
            resolve_dir(root, dest)?
        } else {
            safe::create_file_in_root(root.as_fd(), dest).map_err(|source| {
                RootfsError::Resolve {
                    path: dest.clone(),
                    source,
                }
            })?
        };
        let t = safe::fd_path(&target);
        let base = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        let what = src.display().to_string();
        mnt(&what, Some(&src), &t, None, base, None, dest)?;
        let mounted = reopen(root, dest)?;
        let t = safe::fd_path(&mounted);
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            remount(&t, dest, extra, &what)?;
        }
        set_recursive_attrs(&mounted, dest, &opts)?;
        return propagate(&t, dest, &opts);
    }
    let target = resolve_dir(root, dest)?;
    let t = safe::fd_path(&target);
    // For tmpcopyup: a readable handle on what the image has there, before it is covered.
    let below = if opts.copy_up {
        Some(
            rustix::fs::open(
                &t,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| RootfsError::Resolve {
                path: dest.clone(),
                source: e.into(),
            })?,
        )
    } else {
        None
    };
    let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let data = opts.data();
    let res = mnt(
        typ,
        Some(&src),
        &t,
        Some(typ),
        opts.flags,
        data.as_deref(),
        dest,
    );
    match res {
        // sysfs cannot be mounted in a user namespace that does not own the network namespace
        // (the host's network): give the host's /sys read-only instead, as runc does.
        Err(RootfsError::Mount {
            source: nix::Error::EPERM,
            ..
        }) if typ == "sysfs" => {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
            mnt("/sys", Some(Path::new("/sys")), &t, None, flags, None, dest)?;
            let mounted = reopen(root, dest)?;
            let flags = opts.flags | MsFlags::MS_RDONLY;
            remount(&safe::fd_path(&mounted), dest, flags, "/sys")?;
        }
        other => other?,
    }
    let mounted = reopen(root, dest)?;
    if let Some(below) = below {
        let top = rustix::fs::open(
            safe::fd_path(&mounted),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootfsError::Resolve {
            path: dest.clone(),
            source: e.into(),
        })?;
        copy_tree(&below, &top).map_err(|source| RootfsError::Resolve {
            path: dest.clone(),
            source,
        })?;
    }
    set_recursive_attrs(&mounted, dest, &opts)?;
    propagate(&safe::fd_path(&mounted), dest, &opts)
}

/// Applies `rro`-style recursive attributes with mount_setattr(AT_RECURSIVE).
fn set_recursive_attrs(
    mounted: &OwnedFd,
    dest: &Path,
    opts: &options::MountOptions,
) -> Result<(), RootfsError> {
    if opts.rec_set == 0 && opts.rec_clear == 0 {
        return Ok(());
    }
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: opts.rec_set,
        attr_clr: opts.rec_clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from a valid, initialised
    // struct laid out as the kernel's struct mount_attr; the path is a static C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            std::os::fd::AsRawFd::as_raw_fd(mounted),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(RootfsError::Mount {
            what: "recursive attributes".into(),
            target: dest.to_path_buf(),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

/// Copies a directory tree (files, directories, symlinks, with modes and owners) from `from`
/// into `to`, both open directories; used for tmpcopyup. Devices and sockets are skipped.
fn copy_tree(from: &OwnedFd, to: &OwnedFd) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, FileType};
    let entries = rustix::fs::Dir::read_from(from)?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let st = rustix::fs::statat(from, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
        let (uid, gid) = (
            Some(rustix::fs::Uid::from_raw(st.st_uid)),
            Some(rustix::fs::Gid::from_raw(st.st_gid)),
        );
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                rustix::fs::mkdirat(to, name, mode)?;
                let sub_from = rustix::fs::openat(
                    from,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let sub_to = rustix::fs::openat(
                    to,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                copy_tree(&sub_from, &sub_to)?;
                rustix::fs::fchown(&sub_to, uid, gid)?;
                rustix::fs::fchmod(&sub_to, mode)?;
            }
            FileType::RegularFile => {
                let src = rustix::fs::openat(
                    from,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let dst = rustix::fs::openat(
                    to,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                std::io::copy(
                    &mut std::fs::File::from(src),
                    &mut std::fs::File::from(rustix::io::dup(&dst)?),
                )?;
                rustix::fs::fchown(&dst, uid, gid)?;
                rustix::fs::fchmod(&dst, mode)?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(from, name, vec![])?;
                rustix::fs::symlinkat(target.as_c_str(), to, name)?;
                rustix::fs::chownat(to, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn propagate(t: &Path, dest: &Path, opts: &options::MountOptions) -> Result<(), RootfsError> {
    for p in &opts.propagation {
        mnt("propagation", None, t, None, *p, None, dest)?;
    }
    Ok(())
}

/// The flags a remount must keep: in a user namespace the kernel refuses to clear flags that the
/// mount was locked with (nosuid, nodev, noexec, atime flags).
fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

fn remount(t: &Path, dest: &Path, flags: MsFlags, what: &str) -> Result<(), RootfsError> {
    let flags = flags | locked_flags(t) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    mnt(what, None, t, None, flags, None, dest)
}

fn mount_cgroups(
    plan: &RootfsPlan,
    root: &OwnedFd,
    dest: &Path,
    opts: &options::MountOptions,
) -> Result<(), RootfsError> {
    let flags = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    match &plan.cgroups {
        CgroupMounts::V2 { host_dir } => {
            let fd = resolve_dir(root, dest)?;
            let t = safe::fd_path(&fd);
            if plan.cgroupns {
                mnt(
                    "cgroup2",
                    Some(Path::new("cgroup2")),
                    &t,
                    Some("cgroup2"),
                    flags,
                    None,
                    dest,
                )
            } else {
                let b = MsFlags::MS_BIND | MsFlags::MS_REC;
                mnt("cgroup2 bind", Some(host_dir), &t, None, b, None, dest)?;
                let mounted = reopen(root, dest)?;
                remount(&safe::fd_path(&mounted), dest, flags, "cgroup2")
            }
        }
        CgroupMounts::V1(hierarchies) => {
            let fd = resolve_dir(root, dest)?;
            let t = safe::fd_path(&fd);
            let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mnt(
                "tmpfs",
                Some(Path::new("tmpfs")),
                &t,
                Some("tmpfs"),
                tmpfs_flags,
                Some("mode=755"),
                dest,
            )?;
            for h in hierarchies {
                let sub = dest.join(&h.name);
                let sub_fd = resolve_dir(root, &sub)?;
                let st = safe::fd_path(&sub_fd);
                if plan.cgroupns {
                    // Inside a cgroup namespace the mount shows the container's cgroup as root.
                    let data = Some(h.options.as_str());
                    mnt(
                        "cgroup",
                        Some(Path::new("cgroup")),
                        &st,
                        Some("cgroup"),
                        flags,
                        data,
                        &sub,
                    )?;
                } else {
                    let b = MsFlags::MS_BIND | MsFlags::MS_REC;
                    mnt("cgroup bind", Some(&h.host_dir), &st, None, b, None, &sub)?;
                    let mounted = reopen(root, &sub)?;
                    remount(&safe::fd_path(&mounted), &sub, flags, "cgroup")?;
                }
            }
            if flags.contains(MsFlags::MS_RDONLY) {
                let mounted = reopen(root, dest)?;
                remount(&safe::fd_path(&mounted), dest, flags, "tmpfs")?;
            }
            Ok(())
        }
    }
}

/// The mount point of the mount that contains `path` (longest matching mount point in
/// /proc/self/mountinfo; `/` when nothing else matches).
fn mount_point_of(path: &Path) -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The propagation `rootfsPropagation` asks for (rslave by default).
fn root_propagation(plan: &RootfsPlan) -> Result<MsFlags, RootfsError> {
    match plan.propagation.as_deref() {
        None | Some("") => Ok(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        Some(p) => options::propagation(p).ok_or_else(|| RootfsError::Propagation(p.into())),
    }
}

/// Makes the rootfs the new `/`, detaches the old root, and gives `/` the requested propagation.
pub fn pivot(plan: &RootfsPlan) -> Result<(), RootfsError> {
    pivot_into(&plan.rootfs)?;
    let prop = root_propagation(plan)?;
    if !prop.contains(MsFlags::MS_PRIVATE) {
        let root = Path::new("/");
        mnt("propagation", None, root, None, prop, None, root)?;
    }
    Ok(())
}

fn pivot_into(rootfs: &Path) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Pivot {
        rootfs: rootfs.to_path_buf(),
        source,
    };
    nix::unistd::chdir(rootfs).map_err(err)?;
    // pivot_root(".", ".") stacks the old root on top of the new one, so no temporary directory
    // is needed inside the image (runc's trick); the old root is then unmounted lazily.
    nix::unistd::pivot_root(".", ".").map_err(err)?;
    // Slave first: the lazy unmount must not propagate to the host's mounts.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err)?;
    nix::unistd::chdir("/").map_err(err)
}

/// After pivot_root: masked paths, read-only paths, read-only root.
pub fn finish(plan: &RootfsPlan) -> Result<(), RootfsError> {
    for p in &plan.masked {
        let path = Path::new(p);
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if meta.is_dir() {
            let flags = MsFlags::MS_RDONLY;
            mnt(
                "tmpfs",
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                flags,
                Some("size=0"),
                path,
            )?;
        } else {
            let null = Some(Path::new("/dev/null"));
            mnt("/dev/null", null, path, None, MsFlags::MS_BIND, None, path)?;
        }
    }
    for p in &plan.readonly_paths {
        let path = Path::new(p);
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        let b = MsFlags::MS_BIND | MsFlags::MS_REC;
        mnt(p, Some(path), path, None, b, None, path)?;
        remount(path, path, MsFlags::MS_RDONLY | MsFlags::MS_REC, p)?;
    }
    if plan.readonly {
        remount(Path::new("/"), Path::new("/"), MsFlags::MS_RDONLY, "/")?;
    }
    Ok(())
}
