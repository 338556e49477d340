//! Guard against CVE-2019-5736: a container that can reach the runtime's own executable (through
//! `/proc/<pid>/exe` of a runtime process inside its namespaces, or by making the runtime exec
//! `/proc/self/exe`) could open it for writing once the runtime exits and replace the host binary.
//!
//! Before any process of ours enters a container, the runtime re-executes itself from a sealed
//! view of its binary, so `/proc/<pid>/exe` never names a writable file:
//!
//! 1. preferred (zero-copy, as runc ≥ 1.2 does): the binary opened through a private, detached,
//!    read-only overlayfs whose only layers are lower layers. Overlayfs in "lower-only" mode has
//!    no way to write (unlike a read-only bind mount, it cannot be remounted read-write from the
//!    file) and the mount is attached nowhere, so nothing is left behind;
//! 2. fallback (kernels without the new mount API, or no privilege to mount): a copy in a memfd
//!    sealed against writes, as runc < 1.2 and crun do. It costs a copy of the binary per
//!    invocation, which on this kind of host is several milliseconds of the start-up.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use rustix::fs::{Mode, OFlags};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
    MountAttrFlags,
};

/// Errors of the self-clone.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    /// a step of sealing the binary failed
    #[error("seal the moat binary against CVE-2019-5736 ({step}): {source}")]
    Step {
        /// Which step.
        step: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn step(step: &'static str) -> impl FnOnce(std::io::Error) -> CloneError {
    move |source| CloneError::Step { step, source }
}

const SEALS: SealFlag = SealFlag::from_bits_truncate(
    SealFlag::F_SEAL_SEAL.bits()
        | SealFlag::F_SEAL_SHRINK.bits()
        | SealFlag::F_SEAL_GROW.bits()
        | SealFlag::F_SEAL_WRITE.bits(),
);

/// `OVERLAYFS_SUPER_MAGIC` from linux/magic.h.
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

/// Whether the running executable is already a sealed view: a write-sealed memfd, or a file on a
/// read-only overlayfs.
pub fn is_sealed() -> bool {
    let Ok(f) = File::open("/proc/self/exe") else {
        return false;
    };
    if let Ok(bits) = fcntl(&f, FcntlArg::F_GET_SEALS) {
        return SealFlag::from_bits_truncate(bits).contains(SEALS);
    }
    match rustix::fs::fstatfs(&f) {
        Ok(st) => {
            st.f_type == OVERLAYFS_MAGIC
                && rustix::fs::fstatvfs(&f)
                    .map(|v| v.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
                    .unwrap_or(false)
        }
        Err(_) => false,
    }
}

/// Re-executes the current process from a sealed view of its binary, with the same argv and
/// environment; returns Ok(()) at once when already sealed, and only returns otherwise on error.
pub fn ensure_sealed() -> Result<(), CloneError> {
    if is_sealed() {
        return Ok(());
    }
    let (exe, _mounts) = sealed_view()?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_encoded_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| step("argv")(std::io::Error::other(e)))?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .map_err(|e| step("environment")(std::io::Error::other(e)))?;
    let e = match nix::unistd::fexecve(exe.as_fd(), &args, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(step("fexecve")(e.into()))
}

/// A descriptor of a sealed view of the running binary, for a child to exec (`execveat` with
/// `AT_EMPTY_PATH`): a process that never enters a container itself (`moat run`'s caller)
/// need not re-execute, only what it starts must come from the sealed view. When the process
/// already runs from one, that same file.
pub fn sealed_exe() -> Result<OwnedFd, CloneError> {
    sealed_exe_with_mounts().map(|(exe, _)| exe)
}

/// The mounts behind a sealed view, detached from every namespace and reachable only through
/// these descriptors (the view's file keeps what it needs alive on its own). Closing the last
/// descriptor of a detached mount unmounts it and waits for an RCU grace period (0.1-2.2 ms
/// measured here, on `moat run`'s path before this existed), so a caller in a hurry drops
/// this once the process it exec'd from the view is under way.
#[derive(Debug, Default)]
pub struct SealMounts {
    _fds: Vec<OwnedFd>,
}

/// [`sealed_exe`], with the mounts of a new view to drop later.
pub fn sealed_exe_with_mounts() -> Result<(OwnedFd, SealMounts), CloneError> {
    if is_sealed() {
        let exe = rustix::fs::open(
            "/proc/self/exe",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| step("open /proc/self/exe")(e.into()))?;
        return Ok((exe, SealMounts::default()));
    }
    sealed_view()
}

/// A new sealed view: the overlayfs one, or the memfd copy where that fails.
fn sealed_view() -> Result<(OwnedFd, SealMounts), CloneError> {
    // MOAT_SEAL=memfd forces the fallback (tests cover both paths; a kernel whose overlayfs
    // misbehaves can be worked around the same way).
    let view = if std::env::var_os("MOAT_SEAL").is_some_and(|v| v == "memfd") {
        Err(step("overlay")(std::io::Error::other("MOAT_SEAL=memfd")))
    } else {
        overlay_view()
    };
    match view {
        Ok(fd) => Ok(fd),
        Err(e) => {
            log::debug!("overlayfs seal unavailable ({e}); copying into a sealed memfd");
            memfd_copy().map(|exe| (exe, SealMounts::default()))
        }
    }
}

/// The binary opened through a detached overlayfs made only of lower layers: the binary's own
/// directory on top, an empty tmpfs below (overlayfs needs two lower layers to run without an
/// upper one).
fn overlay_view() -> Result<(OwnedFd, SealMounts), CloneError> {
    let real: PathBuf = std::fs::read_link("/proc/self/exe").map_err(step("readlink"))?;
    let (dir, name) = match (real.parent(), real.file_name()) {
        (Some(d), Some(n)) => (d.to_path_buf(), n.to_os_string()),
        _ => return Err(step("binary path")(std::io::ErrorKind::InvalidInput.into())),
    };
    // The empty layer is a fresh detached tmpfs, reached through its descriptor: a directory
    // on disk could be inside the binary's directory (a binary in / or in the state root),
    // and overlayfs refuses overlapping layers (moat then fell back to a 6 MB memfd copy per
    // process, silently).
    let tmp =
        fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| step("fsopen tmpfs")(e.into()))?;
    let _ = fsconfig_set_string(&tmp, "size", "4k");
    fsconfig_create(&tmp).map_err(|e| step("fsconfig tmpfs")(e.into()))?;
    let empty_mnt = fsmount(
        &tmp,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY,
    )
    .map_err(|e| step("fsmount tmpfs")(e.into()))?;
    let empty = PathBuf::from(format!("/proc/self/fd/{}", empty_mnt.as_raw_fd()));
    let escape = |p: &Path| {
        String::from_utf8_lossy(p.as_os_str().as_bytes())
            .replace('\\', "\\\\")
            .replace(':', "\\:")
    };
    let ctx =
        fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| step("fsopen")(e.into()))?;
    let lower = format!("{}:{}", escape(&dir), escape(&empty));
    fsconfig_set_string(&ctx, "lowerdir", lower.as_str())
        .map_err(|e| step("fsconfig lowerdir")(e.into()))?;
    // xino only matters for inode numbers across filesystems; off avoids dmesg noise.
    let _ = fsconfig_set_string(&ctx, "xino", "off");
    fsconfig_create(&ctx).map_err(|e| step("fsconfig create")(e.into()))?;
    let mnt = fsmount(
        &ctx,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )
    .map_err(|e| step("fsmount")(e.into()))?;
    let exe = rustix::fs::openat(
        &mnt,
        name.as_os_str(),
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| step("open binary through overlayfs")(e.into()))?;
    Ok((
        exe,
        SealMounts {
            _fds: vec![mnt, empty_mnt],
        },
    ))
}

/// A copy of the binary in a memfd sealed against every change.
fn memfd_copy() -> Result<OwnedFd, CloneError> {
    let memfd: OwnedFd = memfd_create(c"moat", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .map_err(|e| step("memfd_create")(e.into()))?;
    let mut src = File::open("/proc/self/exe").map_err(step("open /proc/self/exe"))?;
    let mut dst = File::from(memfd);
    std::io::copy(&mut src, &mut dst).map_err(step("copy"))?;
    fcntl(&dst, FcntlArg::F_ADD_SEALS(SEALS)).map_err(|e| step("seal")(e.into()))?;
    Ok(OwnedFd::from(dst))
}
