//! Mounting a container's root filesystem: overlayfs with the image's snapshots as lower layers
//! and the container's own upper and work directories.
//!
//! The mount(2) data of overlayfs must fit in one page, which 128 absolute snapshot paths do not.
//! With the new mount API (Linux ≥ 6.8) each lower layer is one `lowerdir+` parameter, so there
//! is no limit. Older kernels get Docker's trick: short names under `<store>/l/` and a mount
//! done with the store as the working directory, so each layer costs ~28 bytes of the page.

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags, FsOpenFlags,
    MountAttrFlags, MoveMountFlags,
};

/// Errors mounting a rootfs.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// the overlay mount failed
    #[error("mount overlay on {target} ({layers} layers): {source}")]
    Overlay {
        /// The mount point.
        target: PathBuf,
        /// How many lower layers.
        layers: usize,
        /// The error.
        source: io::Error,
    },
    /// the image has no layers
    #[error("cannot mount an image without layers on {0}")]
    NoLayers(PathBuf),
}

/// One lower layer: its snapshot directory and its short link name under `<store>/l/`.
#[derive(Debug, Clone)]
pub struct Lower {
    /// Absolute snapshot directory.
    pub dir: PathBuf,
    /// Short link name (relative to the store root: `l/<name>`).
    pub link: String,
}

/// Mounts overlay(lowers top-first, upper, work) on `target`.
///
/// `volatile` (for a writable layer that no one needs after a crash: an `--rm` container's, as
/// Podman does) mounts with overlayfs' `volatile`: no sync of the upper filesystem at unmount
/// (on a busy disk that sync waits for every dirty page of the whole filesystem, and is on
/// every container's exit path). A kernel without the option gets the normal mount.
pub fn mount_overlay(
    store_root: &Path,
    lowers_top_first: &[Lower],
    upper: &Path,
    work: &Path,
    target: &Path,
    volatile: bool,
) -> Result<(), MountError> {
    if lowers_top_first.is_empty() {
        return Err(MountError::NoLayers(target.to_path_buf()));
    }
    let err = |source: io::Error| MountError::Overlay {
        target: target.to_path_buf(),
        layers: lowers_top_first.len(),
        source,
    };
    if volatile {
        // overlayfs leaves this behind at unmount and refuses to mount again while it is there
        // (the upper layer may be incomplete after a crash: for a volatile layer, no matter).
        match std::fs::remove_dir(work.join("work/incompat/volatile")) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
    }
    match new_api(lowers_top_first, upper, work, target, volatile) {
        Ok(()) => Ok(()),
        // EINVAL: a kernel without `lowerdir+`; fall back to the page-limited mount(2).
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOSYS) =>
        {
            mount_overlay_legacy(store_root, lowers_top_first, upper, work, target).map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

fn new_api(
    lowers: &[Lower],
    upper: &Path,
    work: &Path,
    target: &Path,
    volatile: bool,
) -> io::Result<()> {
    let ctx = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for l in lowers {
        fsconfig_set_string(&ctx, "lowerdir+", l.dir.as_path())?;
    }
    fsconfig_set_string(&ctx, "upperdir", upper)?;
    fsconfig_set_string(&ctx, "workdir", work)?;
    // Snapshot directories and the container's dirs are on the same filesystem: no xino needed.
    let _ = fsconfig_set_string(&ctx, "xino", "off");
    if volatile {
        // An unknown option (a kernel before 5.10) fails here alone: the mount goes on without.
        let _ = rustix::mount::fsconfig_set_flag(&ctx, "volatile");
    }
    fsconfig_create(&ctx)?;
    let mnt = fsmount(&ctx, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// The mount(2) data for the legacy path (relative `l/` names), exposed for tests.
pub fn legacy_data(lowers: &[Lower], upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = lowers.iter().map(|l| format!("l/{}", l.link)).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

/// The page-limited mount(2) path with short `l/` names (used when `lowerdir+` is missing).
pub fn mount_overlay_legacy(
    store_root: &Path,
    lowers: &[Lower],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> io::Result<()> {
    let data = legacy_data(lowers, upper, work);
    // The relative lower paths need the store as working directory; a child process changes its
    // own, so the caller's (process-wide) working directory is never touched.
    let status = std::process::Command::new("/bin/mount")
        .current_dir(store_root)
        .args(["-t", "overlay", "overlay", "-o", &data])
        .arg(target)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("mount(8) exited with {status}")))
    }
}

/// Unmounts a rootfs mounted with [`mount_overlay`] (absent is fine).
pub fn unmount(target: &Path) -> io::Result<()> {
    match rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_data_for_128_layers_fits_one_page() {
        let lowers: Vec<Lower> = (0..128)
            .map(|i| Lower {
                dir: PathBuf::from(format!("/var/lib/moat/image/snapshots/{i:064}")),
                link: format!("{i:026}"),
            })
            .collect();
        let data = legacy_data(
            &lowers,
            Path::new("/var/lib/moat/containers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef/upper"),
            Path::new("/var/lib/moat/containers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef/work"),
        );
        assert!(data.len() < 4096, "{} bytes", data.len());
    }
}
