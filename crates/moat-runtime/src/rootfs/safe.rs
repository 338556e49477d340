//! Path resolution confined to the container's root.
//!
//! Every mount target, device node and masked path is resolved with `openat2(RESOLVE_IN_ROOT)`
//! relative to a descriptor of the rootfs, never by joining strings: a symlink planted in the image
//! (`/etc/evil -> /host/dir`, or `../../..`) then resolves inside the rootfs, so a mount can never be
//! redirected onto the host (the CVE-2021-30465 class, runc's symlink-exchange race). Mounts then
//! target the resolved descriptor through `/proc/self/fd/N`, so the path is not looked up twice.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{mkdirat, Mode, OFlags, ResolveFlags};

/// `openat2`, retried while it fails with `EAGAIN`: with `RESOLVE_IN_ROOT` the kernel gives up
/// a walk through `..` when any rename or mount happened on the system meanwhile (seen on a
/// busy host: "resolve /up/sub inside the rootfs: Resource temporarily unavailable").
pub fn openat2<P: rustix::path::Arg + Copy>(
    dir: impl AsFd,
    path: P,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let dir = dir.as_fd();
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags, mode, resolve) {
            Err(rustix::io::Errno::AGAIN) if tries < 1000 => tries += 1,
            other => return other,
        }
    }
}

fn resolve_flags() -> ResolveFlags {
    // NO_MAGICLINKS: a /proc/self/fd/N link in the image must not lead out of the root either.
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// Opens `path` (interpreted inside `root`) with `O_PATH`.
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    let rel = relative(path)?;
    openat2(
        root,
        &rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        resolve_flags(),
    )
    .map_err(io::Error::from)
}

/// Resolves `path` inside `root`, creating missing directories (mode 0755) on the way, and returns
/// an `O_PATH` descriptor of the final directory. A dangling symlink on the way is followed the way
/// the kernel would inside the root, and its target is created there (as runc does for images
/// whose `/var/run -> /run` points at nothing yet).
pub fn mkdir_all_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    let mut rel = relative(path)?;
    // Each restart follows one dangling symlink; 40 is the kernel's own symlink limit.
    'restart: for _ in 0..40 {
        let mut cur = rustix::io::dup(root).map_err(io::Error::from)?;
        let mut prefix = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for (i, comp) in comps.iter().enumerate() {
            prefix.push(comp);
            let open = |p: &Path| {
                openat2(
                    root,
                    p,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    resolve_flags(),
                )
            };
            cur = match open(&prefix) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => {
                    // `cur` is the already-resolved parent inside the root: mkdirat cannot escape.
                    match mkdirat(&cur, comp.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) => open(&prefix).map_err(io::Error::from)?,
                        Err(rustix::io::Errno::EXIST) => {
                            // A dangling symlink: continue from its target, inside the root.
                            let target = rustix::fs::readlinkat(&cur, comp.as_os_str(), vec![])
                                .map_err(io::Error::from)?;
                            let target =
                                PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
                            let mut next = match prefix.parent() {
                                Some(parent) if !target.is_absolute() => parent.join(target),
                                _ => target,
                            };
                            for rest in &comps[i + 1..] {
                                next.push(rest);
                            }
                            rel = relative(&next)?;
                            continue 'restart;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            };
        }
        return Ok(cur);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: too many levels of symbolic links", path.display()),
    ))
}

/// Resolves `path` inside `root`, creating it as an empty regular file (and its parents) when
/// missing, and returns an `O_PATH` descriptor of it: the target of a file bind mount.
pub fn create_file_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    let rel = relative(path)?;
    if let Some(parent) = rel.parent() {
        if !parent.as_os_str().is_empty() {
            mkdir_all_in_root(root, parent)?;
        }
    }
    match open_in_root(root, &rel) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    drop(
        openat2(
            root,
            &rel,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
            resolve_flags(),
        )
        .map_err(io::Error::from)?,
    );
    open_in_root(root, &rel)
}

/// The `/proc/self/fd/N` path through which a mount targets a resolved descriptor.
pub fn fd_path(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// `path` relative to the root, with `..` resolved lexically and clamped at the root, exactly as
/// `RESOLVE_IN_ROOT` treats it.
fn relative(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        let fd =
            rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        (dir, fd)
    }

    #[test]
    fn absolute_symlink_resolves_inside_the_root() {
        let (dir, fd) = root();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), dir.path().join("evil")).unwrap();
        mkdir_all_in_root(fd.as_fd(), Path::new("/evil/sub")).unwrap();
        // The directory was made inside the root at the symlink's target path, not outside.
        assert!(!outside.path().join("sub").exists());
        assert!(dir
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("sub")
            .is_dir());
    }

    #[test]
    fn dotdot_symlink_is_clamped_to_the_root() {
        let (dir, fd) = root();
        symlink("../../../../../", dir.path().join("up")).unwrap();
        let f = create_file_in_root(fd.as_fd(), Path::new("/up/etc/marker")).unwrap();
        drop(f);
        assert!(dir.path().join("etc/marker").is_file());
    }

    #[test]
    fn dotdot_in_the_path_is_clamped_at_the_root() {
        let (dir, fd) = root();
        mkdir_all_in_root(fd.as_fd(), Path::new("/a/../../../b")).unwrap();
        assert!(dir.path().join("b").is_dir());
    }

    #[test]
    fn symlink_loops_end_with_an_error() {
        let (dir, fd) = root();
        symlink("/l2", dir.path().join("l1")).unwrap();
        symlink("/l1", dir.path().join("l2")).unwrap();
        assert!(mkdir_all_in_root(fd.as_fd(), Path::new("/l1/x")).is_err());
    }

    #[test]
    fn existing_file_is_reused() {
        let (dir, fd) = root();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        create_file_in_root(fd.as_fd(), Path::new("/f")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"x");
    }
}
