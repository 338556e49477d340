//! The VMM's confinement, as Firecracker's jailer does it: QEMU parses guest-controlled device
//! traffic, so a bug there must not hand the guest the host. Before it is exec'd, the VMM's
//! process gets mount, IPC and UTS namespaces of its own and `pivot_root`s into a tmpfs that
//! holds only what it needs — the system's read-only `/usr` (QEMU and its libraries), a few
//! device nodes, the kernel and initramfs, the console log, and this container's shares — so
//! the engine's root (other containers' filesystems, the databases) is not even in its view;
//! its capability bounding set keeps only what 9p passthrough and an existing tap need; no new
//! privileges. QEMU's own seccomp sandbox (`-sandbox on`) comes on top.
//!
//! Every path and string is prepared before the fork ([`Jail::new`]); in the child,
//! [`Jail::enter`] only makes system calls (fork in a possibly multi-threaded process).

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use crate::vmm::VmConfig;
use crate::VmError;

/// Capabilities the VMM keeps: 9p passthrough owns and moves files as the guest asks (chown,
/// DAC override and read-search, fowner, fsetid, mknod), and a tap made beforehand is attached
/// by name (net_admin).
const KEEP: [caps::Capability; 7] = [
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_DAC_READ_SEARCH,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_FSETID,
    caps::Capability::CAP_MKNOD,
    caps::Capability::CAP_NET_ADMIN,
];

/// The highest capability number the kernel may know (CAP_LAST_CAP is 40 on 6.x).
const LAST_CAP: u32 = 63;

#[derive(Debug)]
enum Op {
    Dir(CString),
    File(CString),
    Symlink(CString, CString),
    Bind {
        from: CString,
        to: CString,
        readonly: bool,
    },
}

/// A prepared jail.
#[derive(Debug)]
pub struct Jail {
    root: CString,
    ops: Vec<Op>,
    keep: Vec<u32>,
}

fn c(p: impl AsRef<std::ffi::OsStr>) -> Result<CString, VmError> {
    CString::new(p.as_ref().as_encoded_bytes()).map_err(|_| VmError::Net("NUL in a path".into()))
}

impl Jail {
    /// The jail for `cfg` built on the empty directory `root`, and `cfg` as the VMM sees it
    /// from inside (paths under the jail's root).
    pub fn new(root: &Path, cfg: &VmConfig) -> Result<(Jail, VmConfig), VmError> {
        let mut ops = vec![];
        let at = |p: &str| root.join(p.trim_start_matches('/'));
        let dir = |ops: &mut Vec<Op>, p: &str| -> Result<(), VmError> {
            ops.push(Op::Dir(c(at(p))?));
            Ok(())
        };
        for d in ["usr", "etc", "dev", "dev/net", "vm", "shares", "proc"] {
            dir(&mut ops, d)?;
        }
        ops.push(Op::Bind {
            from: c("/usr")?,
            to: c(at("usr"))?,
            readonly: true,
        });
        for (link, target) in [
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("bin", "usr/bin"),
        ] {
            ops.push(Op::Symlink(c(target)?, c(at(link))?));
        }
        let file = |ops: &mut Vec<Op>, from: &Path, to: &str, readonly: bool| {
            ops.push(Op::File(c(at(to))?));
            ops.push(Op::Bind {
                from: c(from)?,
                to: c(at(to))?,
                readonly,
            });
            Ok::<(), VmError>(())
        };
        if Path::new("/etc/ld.so.cache").exists() {
            file(
                &mut ops,
                Path::new("/etc/ld.so.cache"),
                "etc/ld.so.cache",
                true,
            )?;
        }
        let mut devices = vec!["null", "zero", "urandom", "random"];
        if !cfg.nics.is_empty() {
            devices.push("net/tun");
        }
        if cfg.accel == crate::Accel::Kvm {
            devices.push("kvm");
        }
        for d in devices {
            let host = Path::new("/dev").join(d);
            if host.exists() {
                file(&mut ops, &host, &format!("dev/{d}"), false)?;
            }
        }
        file(&mut ops, &cfg.kernel, "vm/kernel", true)?;
        file(&mut ops, &cfg.initrd, "vm/initrd", true)?;
        file(&mut ops, &cfg.console_log, "vm/console.log", false)?;
        let mut inside = cfg.clone();
        inside.kernel = PathBuf::from("/vm/kernel");
        inside.initrd = PathBuf::from("/vm/initrd");
        inside.console_log = PathBuf::from("/vm/console.log");
        for (sh, ish) in cfg.shares.iter().zip(inside.shares.iter_mut()) {
            // A virtio-fs share is its daemon's business: the VMM only needs the socket.
            if let Some(sock) = &sh.virtiofs {
                let to = format!("vm/{}.sock", sh.tag);
                file(&mut ops, sock, &to, false)?;
                ish.virtiofs = Some(PathBuf::from("/").join(to));
                continue;
            }
            let to = format!("shares/{}", sh.tag);
            dir(&mut ops, &to)?;
            ops.push(Op::Bind {
                from: c(&sh.path)?,
                to: c(at(&to))?,
                readonly: sh.readonly,
            });
            ish.path = PathBuf::from("/").join(to);
        }
        Ok((
            Jail {
                root: c(root)?,
                ops,
                keep: KEEP.iter().map(|k| u32::from(k.index())).collect(),
            },
            inside,
        ))
    }

    /// In the forked child, before exec: the namespaces, the jail's mounts, the pivot, the
    /// capabilities. Only system calls on prepared values.
    ///
    /// # Safety
    /// Must run in a freshly forked child that execs (or exits) right after.
    pub unsafe fn enter(&self) -> std::io::Result<()> {
        // SAFETY: plain system calls on NUL-terminated strings prepared before the fork, which
        // outlive them; null pointers where the calls take optional arguments.
        unsafe {
            check(libc::unshare(
                libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS,
            ))?;
            private_mounts()?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.root.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0755,size=1m".as_ptr().cast(),
            ))?;
            for op in &self.ops {
                match op {
                    Op::Dir(p) => check(libc::mkdir(p.as_ptr(), 0o755))?,
                    Op::File(p) => {
                        let fd = libc::open(
                            p.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o600,
                        );
                        check(fd)?;
                        libc::close(fd);
                    }
                    Op::Symlink(target, p) => check(libc::symlink(target.as_ptr(), p.as_ptr()))?,
                    Op::Bind { from, to, readonly } => bind(from, to, *readonly)?,
                }
            }
            self.own_proc()?;
            check(libc::chdir(self.root.as_ptr()))?;
            check(
                libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
            )?;
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check(libc::chdir(c"/".as_ptr()))?;
            for cap in 0..=LAST_CAP {
                if !self.keep.contains(&cap) {
                    // EINVAL past the kernel's last capability: nothing to drop there.
                    libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
                }
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        }
        Ok(())
    }
}

impl Jail {
    /// Only the VMM's own `/proc/PID` (and `/proc/self`): QEMU's 9p reaches files through
    /// `/proc/self/fd/N` (chmod without following links), and a whole procfs would show the
    /// host's processes and, through their `root` links, the host's filesystem.
    ///
    /// # Safety
    /// As [`Jail::enter`]: system calls only; the paths are built in stack buffers.
    unsafe fn own_proc(&self) -> std::io::Result<()> {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        let mut digits = [0u8; 10];
        let mut n = pid;
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        digits[..len].reverse();
        let root = self.root.as_bytes();
        let mut src = [0u8; 32];
        let mut dst = [0u8; 4200];
        let mut selflink = [0u8; 4200];
        let mut target = [0u8; 16];
        let parts = |buf: &mut [u8], parts: &[&[u8]]| -> Option<()> {
            let mut at = 0;
            for p in parts {
                buf.get_mut(at..at + p.len())?.copy_from_slice(p);
                at += p.len();
            }
            *buf.get_mut(at)? = 0;
            Some(())
        };
        let too_long = || std::io::Error::from_raw_os_error(libc::ENAMETOOLONG);
        parts(&mut src, &[b"/proc/", &digits[..len]]).ok_or_else(too_long)?;
        parts(&mut dst, &[root, b"/proc/", &digits[..len]]).ok_or_else(too_long)?;
        parts(&mut selflink, &[root, b"/proc/self"]).ok_or_else(too_long)?;
        parts(&mut target, &[&digits[..len]]).ok_or_else(too_long)?;
        let check = |rc: libc::c_int| {
            if rc < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        let p = |b: &[u8]| b.as_ptr().cast::<libc::c_char>();
        // SAFETY: the buffers are NUL-terminated above and outlive the calls.
        unsafe {
            check(libc::mkdir(p(&dst), 0o555))?;
            check(libc::mount(
                p(&src),
                p(&dst),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                std::ptr::null(),
                p(&dst),
                std::ptr::null(),
                libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC,
                std::ptr::null(),
            ))?;
            check(libc::symlink(p(&target), p(&selflink)))?;
        }
        Ok(())
    }
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes every mount of the caller's mount namespace private, so that what it mounts next
/// never propagates to the host's.
///
/// # Safety
/// Only system calls: safe between fork and exec. The caller has its own mount namespace.
pub(crate) unsafe fn private_mounts() -> std::io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: a system call on a static string and null pointers where mount(2) takes none.
    check(unsafe {
        libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
}

/// Bind-mounts `from` (with what is mounted below it) on `to`, read-only when asked: the
/// whole tree, submounts included (a remount with `MS_RDONLY` would change only the top one,
/// and reset its other flags), by `mount_setattr(2)` with `AT_RECURSIVE`.
///
/// # Safety
/// Only system calls: safe between fork and exec.
pub(crate) unsafe fn bind(from: &CStr, to: &CStr, readonly: bool) -> std::io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: system calls on NUL-terminated strings the caller keeps alive, a properly sized
    // `mount_attr` on the stack, and null pointers where mount(2) takes none.
    unsafe {
        check(libc::mount(
            from.as_ptr(),
            to.as_ptr(),
            none,
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        if readonly {
            let attr = libc::mount_attr {
                attr_set: libc::MOUNT_ATTR_RDONLY,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            let rc = libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_RECURSIVE,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            );
            check(rc as libc::c_int)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::vmm::{Accel, Share};

    #[test]
    fn the_vmm_sees_only_its_own_paths() {
        let cfg = VmConfig {
            name: "c".into(),
            kernel: "/var/cache/moat/kernel/vmlinux".into(),
            initrd: "/var/lib/moat/vm/initramfs-1.cpio".into(),
            memory_mib: 512,
            vcpus: 1,
            shares: vec![
                Share {
                    tag: "rootfs".into(),
                    path: "/var/lib/moat/containers/abc/rootfs".into(),
                    readonly: false,
                    virtiofs: None,
                },
                Share {
                    tag: "vfs".into(),
                    path: "/var/lib/moat/containers/abc/rootfs".into(),
                    readonly: false,
                    virtiofs: Some("/var/lib/moat/containers/abc/vfs.sock".into()),
                },
            ],
            console_log: "/var/lib/moat/containers/abc/console.log".into(),
            nics: vec![],
            accel: Accel::Tcg,
            jail: None,
            acpi: false,
        };
        let (jail, inside) = Jail::new(Path::new("/j"), &cfg).unwrap();
        assert_eq!(inside.kernel, Path::new("/vm/kernel"));
        assert_eq!(inside.shares[0].path, Path::new("/shares/rootfs"));
        assert_eq!(inside.console_log, Path::new("/vm/console.log"));
        let binds: Vec<(String, String, bool)> = jail
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::Bind { from, to, readonly } => Some((
                    from.to_string_lossy().into_owned(),
                    to.to_string_lossy().into_owned(),
                    *readonly,
                )),
                _ => None,
            })
            .collect();
        assert!(binds.contains(&("/usr".into(), "/j/usr".into(), true)));
        assert!(binds.contains(&(
            "/var/lib/moat/containers/abc/rootfs".into(),
            "/j/shares/rootfs".into(),
            false
        )));
        // A virtio-fs share: only its daemon's socket enters the jail, not the directory.
        assert_eq!(inside.shares[1].virtiofs, Some("/vm/vfs.sock".into()));
        assert!(binds.contains(&(
            "/var/lib/moat/containers/abc/vfs.sock".into(),
            "/j/vm/vfs.sock".into(),
            false
        )));
        assert!(!binds.iter().any(|b| b.1 == "/j/shares/vfs"));
        // No tap, no KVM: neither device is in the jail; nothing of the engine root but the
        // container's own paths.
        assert!(!binds
            .iter()
            .any(|b| b.0 == "/dev/net/tun" || b.0 == "/dev/kvm"));
        assert!(binds.iter().all(|b| !b.0.starts_with("/var/lib/moat")
            || b.0.contains("/abc/")
            || b.0.contains("initramfs")));
    }
}
