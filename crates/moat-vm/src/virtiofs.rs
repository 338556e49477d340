//! virtio-fs shares: a `virtiofsd` per share, serving a host directory to the guest over a
//! vhost-user socket. The container's root filesystem goes this way when a virtiofsd is
//! installed: QEMU's own 9p server refuses to create device nodes and fifos since its fix for
//! CVE-2023-2861 (it may not open special files, and it opens what it creates to set its mode),
//! so `mkfifo` and `mknod` in a VM container's writable layer failed with ENXIO; virtiofsd
//! creates them with the host's kernel.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::VmError;

/// The installed virtiofsd: Debian 13's Rust one, or the C one Debian 12's QEMU ships.
/// `MOAT_VIRTIOFSD` names another; set to something that is not a file (`none`), it turns
/// virtio-fs off (9p for every share).
pub fn find() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("MOAT_VIRTIOFSD") {
        let p = PathBuf::from(v);
        return p.is_file().then_some(p);
    }
    ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.is_file())
}

/// Serves `dir` on `socket` (a path short enough for a socket's name: relative to the working
/// directory) with `binary`; the daemon dies with its parent. It listens on a socket we bind
/// (`--fd`), so QEMU may connect as soon as this returns.
///
/// A `readonly` share is enforced on the host, not left to the guest's mount options (the
/// guest is what we do not trust): the daemon starts in a mount namespace of its own where
/// `dir` is a recursive, read-only bind mount of itself, what is mounted below it included
/// (Debian 12's virtiofsd has no read-only option), so every write it is asked for fails
/// with EROFS.
pub fn serve(binary: &Path, dir: &Path, socket: &Path, readonly: bool) -> Result<Child, VmError> {
    let ro_dir = if readonly {
        Some(
            std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
                crate::io_err("share", dir)(std::io::ErrorKind::InvalidInput.into())
            })?,
        )
    } else {
        None
    };
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(crate::io_err("listen on", socket))?;
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new(binary);
    let rust = binary.ends_with("libexec/virtiofsd");
    if rust {
        cmd.arg("--shared-dir").arg(dir);
        cmd.args(["--fd=3", "--cache=auto", "--sandbox=namespace", "--xattr"]);
    } else {
        cmd.arg("-o").arg(format!("source={}", dir.display()));
        cmd.args([
            "--fd=3",
            "-o",
            "cache=auto",
            "-o",
            "sandbox=namespace",
            "-o",
            "xattr",
        ]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls, on integers and on a string prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(d) = &ro_dir {
                read_only_view(d)?;
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 clears close-on-exec on the copy; a listener that already is fd 3 needs
            // the flag cleared by hand.
            let placed = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, 3) == 3
            };
            if !placed {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| match readonly {
        // The read-only view is set up in the child: say which share it was for.
        true => crate::io_err("start a read-only virtiofsd for", dir)(e),
        false => crate::io_err("start", binary)(e),
    })?;
    drop(listener);
    Ok(child)
}

/// In a new mount namespace (of the calling, forked process): `dir` bind-mounted over itself
/// read-only, the change kept from the host's namespace.
///
/// # Safety
/// Called between fork and exec: system calls only.
unsafe fn read_only_view(dir: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: system calls only, on a string the caller keeps alive; the namespace is new.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        crate::jail::private_mounts()?;
        crate::jail::bind(dir, dir, true)
    }
}
