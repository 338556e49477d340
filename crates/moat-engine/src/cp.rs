//! `moat cp`: files between a container (running or not) and the host, both ways.
//!
//! Symlink-safe: a path in the container is resolved with `openat2(RESOLVE_IN_ROOT)` on its
//! root filesystem, so a symlink in the container (`/etc -> /host/etc`, `../../..`) resolves
//! inside it, never on the host; what is written into the container goes through the layer
//! unpacker's descriptor-relative, no-symlink path walk. A running container is paused
//! meanwhile, so it cannot swap a directory for a symlink between the check and the use
//! (CVE-2018-15664, the `docker cp` race).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use moat_runtime::rootfs::safe::open_in_root;
use moat_runtime::Runtime;

use crate::containers::{Row, State};
use crate::{EngineError, Paths};

/// Which way to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copy {
    /// Container path → host path.
    Out {
        /// In the container.
        src: String,
        /// On the host.
        dest: PathBuf,
    },
    /// Host path → container path.
    In {
        /// On the host.
        src: PathBuf,
        /// In the container.
        dest: String,
        /// `-a`: keep the host's owners; otherwise what is copied in belongs to root, as with
        /// Docker.
        keep_owner: bool,
    },
}

fn io_err(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> EngineError {
    let path = path.into();
    move |source| EngineError::Io { what, path, source }
}

/// Copies as asked; the container is paused (if running) and its rootfs mounted (if not) for
/// the time of the copy.
pub fn copy(paths: &Paths, row: &Row, what: &Copy) -> Result<(), EngineError> {
    with_root(paths, row, |root| match what {
        Copy::Out { src, dest } => copy_out(root, src, dest),
        Copy::In {
            src,
            dest,
            keep_owner,
        } => copy_in(root, src, dest, *keep_owner),
    })
}

/// Runs `f` on the container's root directory, the container paused (if running) and its
/// rootfs mounted (if not) meanwhile.
fn with_root<T>(
    paths: &Paths,
    row: &Row,
    f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    let mounted_now = crate::lifecycle::mount_rootfs(paths, row)?;
    let rt = Runtime::new(&paths.runtime_root);
    let cid = row
        .id
        .parse()
        .map_err(|e: moat_runtime::id::IdError| EngineError::Spec(e.to_string()))?;
    let paused = row.effective().0 == State::Running
        && !moat_runtime::ops::pause::paused(&rt, &cid)
        && moat_runtime::ops::pause::pause(&rt, &cid).is_ok();
    let rootfs = paths.container_dir(&row.id).join("rootfs");
    let result = File::open(&rootfs)
        .map_err(io_err("open", &rootfs))
        .and_then(|root| f(root.as_fd()));
    if paused {
        let _ = moat_runtime::ops::pause::resume(&rt, &cid);
    }
    if mounted_now && row.effective().0 != State::Running {
        let _ = moat_image::mount::unmount(&rootfs);
    }
    result
}

/// What Docker's `X-Docker-Container-Path-Stat` tells of a path in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    /// The last component.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Go's `os.FileMode` bits (type bits high, permissions low), as Docker sends them.
    pub mode: u32,
    /// Modification time, RFC 3339.
    pub mtime: String,
    /// A symlink's target (empty otherwise).
    pub link_target: String,
}

fn go_mode(md: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let ft = md.file_type();
    let perm = md.permissions().mode();
    let mut m = perm & 0o777;
    if ft.is_dir() {
        m |= 1 << 31;
    }
    if ft.is_symlink() {
        m |= 1 << 27;
    }
    if ft.is_block_device() {
        m |= 1 << 26;
    }
    if ft.is_char_device() {
        m |= (1 << 26) | (1 << 21);
    }
    if ft.is_fifo() {
        m |= 1 << 25;
    }
    if ft.is_socket() {
        m |= 1 << 24;
    }
    if perm & 0o4000 != 0 {
        m |= 1 << 23;
    }
    if perm & 0o2000 != 0 {
        m |= 1 << 22;
    }
    if perm & 0o1000 != 0 {
        m |= 1 << 20;
    }
    m
}

/// The stat of `path` in the container (resolved inside it, as `copy` does).
pub fn stat(paths: &Paths, row: &Row, path: &str) -> Result<PathStat, EngineError> {
    with_root(paths, row, |root| {
        let fd =
            open_in_root(root, Path::new(path)).map_err(io_err("find in the container", path))?;
        let md = std::fs::metadata(fd_path(&fd)).map_err(io_err("stat", path))?;
        let mtime = md
            .modified()
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default();
        Ok(PathStat {
            name: base_name(path).to_string_lossy().into_owned(),
            size: md.len(),
            mode: go_mode(&md),
            mtime,
            link_target: String::new(),
        })
    })
}

/// Writes `path` of the container as a tar (its top entry named after the path's last
/// component) into `out`: `GET /containers/{id}/archive`.
pub fn archive_out(
    paths: &Paths,
    row: &Row,
    path: &str,
    out: impl io::Write,
) -> Result<(), EngineError> {
    with_root(paths, row, |root| {
        let fd =
            open_in_root(root, Path::new(path)).map_err(io_err("find in the container", path))?;
        archive(&fd_path(&fd), &base_name(path), out).map_err(io_err("archive", path))
    })
}

/// Extracts a tar stream into the container's directory `dir` (resolved inside it; the
/// entries through the layer unpacker's refusals): `PUT /containers/{id}/archive`.
pub fn extract_in(
    paths: &Paths,
    row: &Row,
    dir: &str,
    tar: impl io::Read,
    keep_owner: bool,
) -> Result<(), EngineError> {
    with_root(paths, row, |root| {
        let fd =
            open_in_root(root, Path::new(dir)).map_err(io_err("find in the container", dir))?;
        let into = fd_path(&fd);
        if !std::fs::metadata(&into).is_ok_and(|m| m.is_dir()) {
            return Err(io_err("copy into", dir)(
                io::ErrorKind::NotADirectory.into(),
            ));
        }
        // The top-level names the archive adds, to give them to root afterwards.
        let before: std::collections::HashSet<_> = std::fs::read_dir(&into)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        moat_image::unpack::unpack_plain(tar, &into)
            .map_err(|e| EngineError::Conflict(format!("copy into {dir}: {e}")))?;
        if !keep_owner {
            let added: Vec<PathBuf> = std::fs::read_dir(&into)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name())
                        .filter(|n| !before.contains(n))
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default();
            for n in added {
                chown_root(&fd, &n).map_err(io_err("chown what was copied into", dir))?;
            }
        }
        Ok(())
    })
}

/// A descriptor's path through /proc (reopening an `O_PATH` descriptor, no path walk).
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Docker's copy-up: a volume that is empty when a container first mounts it at `dest` gets
/// what the image has there (files, modes, owners). `rootfs` is the container's mounted root;
/// `dest` is resolved inside it (symlinks cannot lead out). Returns whether anything was copied.
pub fn copy_up(rootfs: &Path, dest: &str, volume: &Path) -> Result<bool, EngineError> {
    let empty = std::fs::read_dir(volume)
        .map_err(io_err("read", volume))?
        .next()
        .is_none();
    if !empty {
        return Ok(false);
    }
    let root = File::open(rootfs).map_err(io_err("open", rootfs))?;
    let Ok(resolved) = open_in_root(root.as_fd(), Path::new(dest)) else {
        // Nothing there in the image: nothing to copy.
        return Ok(false);
    };
    let from = fd_path(&resolved);
    if !std::fs::metadata(&from).is_ok_and(|m| m.is_dir()) {
        return Ok(false);
    }
    let to = volume.to_path_buf();
    piped(
        move |w| archive(&from, Path::new("."), w),
        |r| {
            let mut a = tar::Archive::new(r);
            a.set_preserve_permissions(true);
            a.set_preserve_ownerships(true);
            a.set_overwrite(true);
            a.unpack(&to)
                .map_err(io_err("copy the image's content into", &to))
        },
        Path::new(dest),
    )?;
    Ok(true)
}

/// Writes `src` (a host path, or a resolved descriptor's /proc path) as a tar whose top entry
/// is `name`, into `out`.
fn archive(src: &Path, name: &Path, out: impl io::Write) -> io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let md = std::fs::metadata(src)?;
    if md.is_dir() {
        b.append_dir_all(name, src)?;
    } else {
        let mut f = File::open(src)?;
        b.append_file(name, &mut f)?;
    }
    b.into_inner()?.flush()
}

/// Runs `produce` on a thread writing into a pipe while `consume` reads it.
fn piped(
    produce: impl FnOnce(io::PipeWriter) -> io::Result<()> + Send + 'static,
    consume: impl FnOnce(io::PipeReader) -> Result<(), EngineError>,
    what: &Path,
) -> Result<(), EngineError> {
    let (r, w) = io::pipe().map_err(io_err("create pipe for", what))?;
    let producer = std::thread::spawn(move || produce(w));
    let consumed = consume(r);
    match producer.join() {
        Ok(Ok(())) => consumed,
        Ok(Err(e)) if consumed.is_ok() || e.kind() != io::ErrorKind::BrokenPipe => {
            Err(io_err("archive", what)(e))
        }
        Ok(Err(_)) => consumed,
        Err(_) => Err(io_err("archive", what)(io::Error::other(
            "archiver panicked",
        ))),
    }
}

/// Where a copy lands: an existing directory receives the source under its own name; anything
/// else names the copy, in its (existing) parent directory.
fn target(dest_is_dir: bool, dest: &Path, src_name: &Path) -> (PathBuf, PathBuf) {
    if dest_is_dir {
        (dest.to_path_buf(), src_name.to_path_buf())
    } else {
        let parent = dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| "/".into());
        let name = dest
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| src_name.into());
        (parent, name)
    }
}

fn base_name(p: &str) -> PathBuf {
    Path::new(p)
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| "rootfs".into())
}

fn copy_out(root: std::os::fd::BorrowedFd<'_>, src: &str, dest: &Path) -> Result<(), EngineError> {
    let resolved =
        open_in_root(root, Path::new(src)).map_err(io_err("find in the container", src))?;
    let (dir, name) = target(dest.is_dir(), dest, &base_name(src));
    if !dir.is_dir() {
        return Err(io_err("copy to", &dir)(io::ErrorKind::NotFound.into()));
    }
    let from = fd_path(&resolved);
    piped(
        move |w| archive(&from, &name, w),
        |r| {
            let mut a = tar::Archive::new(r);
            a.set_preserve_permissions(true);
            a.set_overwrite(true);
            // The tar crate refuses entries that would leave `dir` (`..`, absolute paths,
            // through a symlink the archive made).
            a.unpack(&dir).map_err(io_err("extract into", &dir))
        },
        Path::new(src),
    )
}

fn copy_in(
    root: std::os::fd::BorrowedFd<'_>,
    src: &Path,
    dest: &str,
    keep_owner: bool,
) -> Result<(), EngineError> {
    std::fs::symlink_metadata(src).map_err(io_err("copy", src))?;
    let src_name = src
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| "rootfs".into());
    let existing = open_in_root(root, Path::new(dest)).ok();
    let dest_is_dir = existing
        .as_ref()
        .is_some_and(|fd| std::fs::metadata(fd_path(fd)).is_ok_and(|m| m.is_dir()));
    let (dir, name) = target(dest_is_dir, Path::new(dest), &src_name);
    let dir_fd = open_in_root(root, &dir).map_err(io_err("find in the container", &dir))?;
    if !std::fs::metadata(fd_path(&dir_fd)).is_ok_and(|m| m.is_dir()) {
        return Err(io_err("copy into", &dir)(
            io::ErrorKind::NotADirectory.into(),
        ));
    }
    let from = src.to_path_buf();
    let into = fd_path(&dir_fd);
    let top = name.clone();
    piped(
        move |w| archive(&from, &name, w),
        |r| {
            moat_image::unpack::unpack_plain(r, &into)
                .map_err(|e| EngineError::Conflict(format!("copy into {dest}: {e}")))
        },
        src,
    )?;
    if !keep_owner {
        chown_root(&dir_fd, &top).map_err(io_err("chown what was copied into", dest))?;
    }
    Ok(())
}

/// Gives `name` (below the directory `dir`) and everything under it to root (0:0), never
/// following a symlink: what `docker cp` does without `-a`.
fn chown_root(dir: &OwnedFd, name: &Path) -> io::Result<()> {
    use rustix::fs::{chownat, openat, AtFlags, Gid, Mode, OFlags, Uid};
    let root = (Some(Uid::ROOT), Some(Gid::ROOT));
    chownat(dir, name, root.0, root.1, AtFlags::SYMLINK_NOFOLLOW)?;
    let Ok(sub) = openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return Ok(()); // not a directory (or a symlink): done
    };
    let entries: Vec<PathBuf> = std::fs::read_dir(fd_path(&sub))?
        .flatten()
        .map(|e| PathBuf::from(e.file_name()))
        .collect();
    for e in entries {
        chown_root(&sub, &e)?;
    }
    Ok(())
}
