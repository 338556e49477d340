//! Unpacking a layer tar into a snapshot directory, safely, with OCI whiteouts turned into the
//! overlayfs form (a 0/0 character device for `.wh.NAME`, the `trusted.overlay.opaque` xattr for
//! `.wh..wh..opq`).
//!
//! Every entry is created relative to a descriptor of its parent directory, and the parent is
//! resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: an absolute path or `..` is
//! refused, and so is any path that passes through a symlink (one planted by an earlier entry
//! or layer to redirect a write out of the snapshot). Hard links must name an entry inside the
//! snapshot, resolved the same way. Nothing is ever joined as a string and opened.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};

/// Errors while unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// reading the archive failed
    #[error("read layer archive: {0}")]
    Read(io::Error),
    /// an entry would escape the snapshot or is malformed
    #[error("layer entry {path:?} refused: {reason}")]
    Refused {
        /// The entry's path as written in the archive.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// creating or writing an entry failed
    #[error("layer entry {path:?}: {op}: {source}")]
    Create {
        /// The entry's path.
        path: String,
        /// The failed operation.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// Opaque directory marker in OCI layers.
const OPAQUE: &[u8] = b".wh..wh..opq";
/// Whiteout prefix in OCI layers.
const WH: &[u8] = b".wh.";

/// Splits an archive path into normal components, refusing absolute paths and `..`.
fn components(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    let p = Path::new(OsStr::from_bytes(raw));
    let mut out = vec![];
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::RootDir => return Err("absolute path"),
            Component::ParentDir => return Err("'..' in path"),
            Component::Prefix(_) => return Err("path prefix"),
        }
    }
    Ok(out)
}

/// Bytes per write of a file's contents.
const WRITE_SIZE: usize = 1 << 20;

/// Copies `from` to `to` in writes of up to [`WRITE_SIZE`] (`io::copy` writes 8 KiB at a
/// time): fewer system calls, and a filesystem with large folios (ext4 here) takes a large
/// write in large folios.
fn copy_in_large_writes(
    from: &mut impl Read,
    to: &mut std::fs::File,
    buf: &mut Vec<u8>,
    shown: &str,
) -> Result<(), UnpackError> {
    use std::io::Write;
    loop {
        buf.clear();
        let n = (&mut *from)
            .take(WRITE_SIZE as u64)
            .read_to_end(buf)
            .map_err(UnpackError::Read)?;
        if n > 0 {
            to.write_all(buf)
                .map_err(|e| create_err(shown, "write", e))?;
        }
        if n < WRITE_SIZE {
            return Ok(());
        }
    }
}

struct Ctx {
    root: OwnedFd,
    /// Directories whose metadata is applied last (creating children changes a dir's mtime).
    dirs: Vec<(Vec<OsString>, u32, u32, u32, i64)>,
    /// The last parent resolved: archives list a directory's entries together, so most entries
    /// reuse it instead of resolving every component again.
    last: Option<(Vec<OsString>, OwnedFd)>,
    /// File contents go through this buffer, allocated at the first file.
    buf: Vec<u8>,
}

impl Ctx {
    /// The parent directory of `comps`, created (0755) where missing, never through a symlink.
    fn parent(&mut self, comps: &[OsString], shown: &str) -> Result<OwnedFd, UnpackError> {
        if let Some((cached, fd)) = &self.last {
            if cached.as_slice() == comps {
                return rustix::io::dup(fd).map_err(|e| create_err(shown, "dup", e));
            }
        }
        let fd = self.resolve(comps, shown)?;
        let copy = rustix::io::dup(&fd).map_err(|e| create_err(shown, "dup", e))?;
        self.last = Some((comps.to_vec(), copy));
        Ok(fd)
    }

    /// Forgets the cached parent when `path` names it or one of its ancestors: an entry that
    /// replaces a directory (by a symlink, say) must not leave a stale descriptor in use.
    fn invalidate(&mut self, path: &[OsString]) {
        if self
            .last
            .as_ref()
            .is_some_and(|(cached, _)| cached.starts_with(path))
        {
            self.last = None;
        }
    }

    fn resolve(&self, comps: &[OsString], shown: &str) -> Result<OwnedFd, UnpackError> {
        let mut cur = rustix::io::dup(&self.root).map_err(|e| create_err(shown, "dup", e))?;
        for c in comps {
            let open = |dir: &OwnedFd| {
                moat_openat2(
                    dir,
                    c.as_os_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
                )
            };
            cur = match open(&cur) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, c.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(create_err(shown, "mkdir parent", e)),
                    }
                    open(&cur).map_err(|e| create_err(shown, "open parent", e))?
                }
                Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::NOTDIR) => {
                    return Err(UnpackError::Refused {
                        path: shown.to_string(),
                        reason: "its parent is a symlink or not a directory (a write through a symlink would escape the layer)",
                    })
                }
                Err(e) => return Err(create_err(shown, "open parent", e)),
            };
        }
        Ok(cur)
    }
}

fn create_err(path: &str, op: &'static str, e: impl Into<io::Error>) -> UnpackError {
    UnpackError::Create {
        path: path.to_string(),
        op,
        source: e.into(),
    }
}

/// Removes whatever is at `name` in `dir` (a file, a symlink, or an empty directory), so the
/// entry can replace it; a non-empty directory stays when the new entry is a directory too.
fn clear(dir: &OwnedFd, name: &OsStr, new_is_dir: bool, shown: &str) -> Result<(), UnpackError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(create_err(shown, "stat", e)),
        Ok(st) => {
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            if is_dir && new_is_dir {
                return Ok(());
            }
            let flags = if is_dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            rustix::fs::unlinkat(dir, name, flags).map_err(|e| create_err(shown, "replace", e))
        }
    }
}

/// Unpacks an uncompressed image layer into `dest` (an existing, empty directory): OCI
/// whiteouts become overlayfs whiteouts.
pub fn unpack(reader: impl Read, dest: &Path) -> Result<(), UnpackError> {
    unpack_into(reader, dest, true)
}

/// Unpacks a plain tar stream (no whiteouts: a `.wh.` name is a file like any other) into the
/// existing directory `dest`, with the same refusals as a layer (`moat cp` into a container).
pub fn unpack_plain(reader: impl Read, dest: &Path) -> Result<(), UnpackError> {
    unpack_into(reader, dest, false)
}

fn unpack_into(reader: impl Read, dest: &Path, layer: bool) -> Result<(), UnpackError> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| create_err(&dest.display().to_string(), "open snapshot", e))?;
    let mut ctx = Ctx {
        root,
        dirs: vec![],
        last: None,
        buf: vec![],
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let comps = components(&raw).map_err(|reason| UnpackError::Refused {
            path: shown.clone(),
            reason,
        })?;
        let Some((name, parents)) = comps.split_last() else {
            continue; // "./" itself
        };
        ctx.invalidate(&comps);
        let parent = ctx.parent(parents, &shown)?;
        let nb = name.as_bytes();
        if layer && nb == OPAQUE {
            rustix::fs::fsetxattr(&parent, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                .map_err(|e| create_err(&shown, "mark opaque", e))?;
            continue;
        }
        if let Some(hidden) = nb.strip_prefix(WH).filter(|_| layer) {
            let hidden = OsStr::from_bytes(hidden);
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(UnpackError::Refused {
                    path: shown,
                    reason: "malformed whiteout",
                });
            }
            let mut hidden_path = parents.to_vec();
            hidden_path.push(hidden.to_os_string());
            ctx.invalidate(&hidden_path);
            clear(&parent, hidden, false, &shown)?;
            rustix::fs::mknodat(&parent, hidden, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(|e| create_err(&shown, "create whiteout", e))?;
            continue;
        }
        let header = entry.header().clone();
        let mode = header.mode().map_err(UnpackError::Read)? & 0o7777;
        let uid = header.uid().map_err(UnpackError::Read)? as u32;
        let gid = header.gid().map_err(UnpackError::Read)? as u32;
        let mtime = header.mtime().map_err(UnpackError::Read)? as i64;
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
            last_modification: Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
        };
        let xattrs = xattrs(&mut entry);
        let kind = header.entry_type();
        use tar::EntryType as E;
        match kind {
            E::Directory => {
                clear(&parent, name, true, &shown)?;
                match rustix::fs::mkdirat(&parent, name.as_os_str(), Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(create_err(&shown, "mkdir", e)),
                }
                let mut full = parents.to_vec();
                full.push(name.clone());
                if !xattrs.is_empty() {
                    let d = ctx.parent(&full, &shown)?;
                    set_xattrs(&d, &xattrs, &shown)?;
                }
                ctx.dirs.push((full, mode, uid, gid, mtime));
            }
            E::Regular | E::Continuous => {
                clear(&parent, name, false, &shown)?;
                let f = rustix::fs::openat(
                    &parent,
                    name.as_os_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| create_err(&shown, "create", e))?;
                let mut file = std::fs::File::from(f);
                copy_in_large_writes(&mut entry, &mut file, &mut ctx.buf, &shown)?;
                // chown before chmod: chown clears setuid/setgid bits.
                rustix::fs::fchown(
                    &file,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                )
                .map_err(|e| create_err(&shown, "chown", e))?;
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                    .map_err(|e| create_err(&shown, "chmod", e))?;
                set_xattrs(&file, &xattrs, &shown)?;
                rustix::fs::futimens(&file, &times)
                    .map_err(|e| create_err(&shown, "set times", e))?;
            }
            E::Symlink => {
                clear(&parent, name, false, &shown)?;
                let target = entry
                    .link_name_bytes()
                    .ok_or(UnpackError::Refused {
                        path: shown.clone(),
                        reason: "symlink without a target",
                    })?
                    .into_owned();
                // The target is stored as is: it is only ever resolved inside the container
                // (or by our own code with RESOLVE_IN_ROOT), never followed while unpacking.
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, name.as_os_str())
                    .map_err(|e| create_err(&shown, "symlink", e))?;
                owner_times(&parent, name, uid, gid, &times, &shown)?;
            }
            E::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or(UnpackError::Refused {
                        path: shown.clone(),
                        reason: "hard link without a target",
                    })?
                    .into_owned();
                let tcomps = components(&target).map_err(|reason| UnpackError::Refused {
                    path: shown.clone(),
                    reason: if reason == "absolute path" {
                        "hard link to an absolute path"
                    } else {
                        reason
                    },
                })?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(UnpackError::Refused {
                        path: shown,
                        reason: "hard link to the root",
                    });
                };
                let tparent = ctx.parent(tparents, &shown)?;
                clear(&parent, name, false, &shown)?;
                rustix::fs::linkat(
                    &tparent,
                    tname.as_os_str(),
                    &parent,
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| create_err(&shown, "hard link", e))?;
            }
            E::Char | E::Block | E::Fifo => {
                clear(&parent, name, false, &shown)?;
                let (ft, dev) = match kind {
                    E::Char | E::Block => {
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == E::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                    _ => (FileType::Fifo, 0),
                };
                rustix::fs::mknodat(
                    &parent,
                    name.as_os_str(),
                    ft,
                    Mode::from_raw_mode(mode),
                    dev,
                )
                .map_err(|e| create_err(&shown, "mknod", e))?;
                owner_times(&parent, name, uid, gid, &times, &shown)?;
                // mknod applied the umask and chown cleared set-id bits: set the mode last.
                rustix::fs::chmodat(
                    &parent,
                    name.as_os_str(),
                    Mode::from_raw_mode(mode),
                    AtFlags::empty(),
                )
                .map_err(|e| create_err(&shown, "chmod", e))?;
            }
            E::XGlobalHeader | E::XHeader | E::GNULongName | E::GNULongLink => {}
            _ => {
                return Err(UnpackError::Refused {
                    path: shown,
                    reason: "unsupported entry type (sparse or unknown)",
                })
            }
        }
    }
    // Deepest first, so a parent's mtime is set after its children are complete.
    ctx.dirs.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
    let dirs = std::mem::take(&mut ctx.dirs);
    for (comps, mode, uid, gid, mtime) in dirs {
        let shown = PathBuf::from_iter(&comps).display().to_string();
        let d = ctx.parent(&comps, &shown)?;
        rustix::fs::fchown(
            &d,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(|e| create_err(&shown, "chown", e))?;
        rustix::fs::fchmod(&d, Mode::from_raw_mode(mode))
            .map_err(|e| create_err(&shown, "chmod", e))?;
        let t = Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        };
        rustix::fs::futimens(
            &d,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
        )
        .map_err(|e| create_err(&shown, "set times", e))?;
    }
    Ok(())
}

fn owner_times(
    parent: &OwnedFd,
    name: &OsStr,
    uid: u32,
    gid: u32,
    times: &Timestamps,
    shown: &str,
) -> Result<(), UnpackError> {
    rustix::fs::chownat(
        parent,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| create_err(shown, "chown", e))?;
    rustix::fs::utimensat(parent, name, times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| create_err(shown, "set times", e))
}

/// Extended attributes carried in PAX headers (`SCHILY.xattr.NAME`).
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return vec![];
    };
    exts.filter_map(|e| e.ok())
        .filter_map(|e| {
            let key = e.key_bytes().strip_prefix(b"SCHILY.xattr.")?.to_vec();
            Some((key, e.value_bytes().to_vec()))
        })
        .collect()
}

fn set_xattrs(
    fd: &impl AsFd,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    shown: &str,
) -> Result<(), UnpackError> {
    for (k, v) in xattrs {
        rustix::fs::fsetxattr(fd, OsStr::from_bytes(k), v, XattrFlags::empty())
            .map_err(|e| create_err(shown, "set xattr", e))?;
    }
    Ok(())
}

/// `openat2`, retried while the kernel answers `EAGAIN` (a confined walk it gave up because a
/// rename or mount happened on the system meanwhile).
fn moat_openat2(
    dir: &OwnedFd,
    path: &std::ffi::OsStr,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags, mode, resolve) {
            Err(rustix::io::Errno::AGAIN) if tries < 1000 => tries += 1,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Contents of every size around the write size arrive whole.
    #[test]
    fn large_writes_copy_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = vec![];
        for len in [
            0,
            1,
            WRITE_SIZE - 1,
            WRITE_SIZE,
            WRITE_SIZE + 1,
            3 * WRITE_SIZE + 7,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            let mut f = std::fs::File::create(&path).unwrap();
            // A reader handing out odd-sized pieces, as the tar reader does.
            let mut from = io::BufReader::with_capacity(4099, &data[..]);
            copy_in_large_writes(&mut from, &mut f, &mut buf, "f").unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "{len} bytes");
        }
    }

    /// A failed write (a full disk, say) names the entry and the write, not the archive.
    #[test]
    fn a_failed_write_names_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let mut read_only = std::fs::File::open(&path).unwrap();
        let err = copy_in_large_writes(&mut &b"data"[..], &mut read_only, &mut vec![], "usr/f")
            .unwrap_err();
        assert!(
            matches!(&err, UnpackError::Create { path, op: "write", .. } if path == "usr/f"),
            "{err:?}"
        );
    }
}
