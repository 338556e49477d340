//! The guest kernel: the minimal one `scripts/vm-kernel.sh` builds (everything a VM container
//! needs built in), or, when that one is not built, a distribution's kernel such as Debian's
//! `linux-image-cloud-amd64`. A distribution kernel differs in three ways that matter here:
//! it is a compressed bzImage (QEMU's `microvm` boots it through its firmware), its virtio
//! drivers and virtio-fs are modules (the agent loads them from the initramfs before it mounts
//! anything: [`crate::assets::initramfs`] puts them there in dependency order), and it has no
//! 9p and no virtio-mmio devices on the command line (every share goes over virtio-fs, and the
//! guest finds its devices through ACPI).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::VmError;

/// Where scripts/vm-kernel.sh leaves the minimal kernel.
pub const DEFAULT_KERNEL: &str = "/var/cache/moat/kernel/vmlinux";

/// Modules a VM container cannot do without: the devices (virtio-mmio), the agent's channel
/// (a virtio-serial port) and the shares (virtio-fs).
const NEEDED: [&str; 3] = ["virtio_mmio", "virtio_console", "virtiofs"];
/// Modules loaded when the kernel has them: free page reporting, bridge networks, and the
/// overlay the guest's runtime seals itself with (it falls back to a memfd without).
const WANTED: [&str; 3] = ["virtio_balloon", "virtio_net", "overlay"];

/// What kind of kernel the guest boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An uncompressed vmlinux with everything built in (scripts/vm-kernel.sh).
    Minimal,
    /// A distribution's bzImage with its modules.
    Distro {
        /// Its release (`uname -r` in the guest).
        release: String,
        /// Modules to load, in order (dependencies first).
        modules: Vec<PathBuf>,
    },
}

/// The guest kernel and what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The kernel image.
    pub path: PathBuf,
    /// Its kind.
    pub kind: Kind,
}

impl Kernel {
    /// The kernel has neither 9p nor virtio-mmio devices from its command line: every share
    /// goes over virtio-fs and the VM describes its devices with ACPI.
    pub fn is_distro(&self) -> bool {
        matches!(self.kind, Kind::Distro { .. })
    }

    /// What `moat info` says of it.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Minimal => self.path.display().to_string(),
            Kind::Distro { release, modules } => format!(
                "{} (distribution kernel {release}, {} modules loaded from the initramfs, shares over virtio-fs)",
                self.path.display(),
                modules.len()
            ),
        }
    }
}

/// The guest kernel: `$MOAT_VM_KERNEL` (a vmlinux or a bzImage), else the minimal kernel at
/// [`DEFAULT_KERNEL`], else the newest distribution kernel in /boot whose modules are in
/// /lib/modules (a `cloud` flavour first: it is the smallest).
pub fn kernel() -> Result<Kernel, VmError> {
    find(
        std::env::var_os("MOAT_VM_KERNEL").map(PathBuf::from),
        Path::new(DEFAULT_KERNEL),
        Path::new("/boot"),
        Path::new("/lib/modules"),
    )
}

/// [`kernel`] with its places as arguments.
fn find(
    explicit: Option<PathBuf>,
    default: &Path,
    boot: &Path,
    modules_root: &Path,
) -> Result<Kernel, VmError> {
    if let Some(k) = explicit {
        if !k.is_file() {
            return Err(VmError::NoKernel(k));
        }
        return open(&k, modules_root);
    }
    if default.is_file() {
        return open(default, modules_root);
    }
    let mut found: Vec<(bool, Vec<u64>, PathBuf)> = std::fs::read_dir(boot)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Some((!release.contains("cloud"), version_key(&release), e.path()))
        })
        .collect();
    // Cloud flavours first, then the newest release.
    found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
    // The first candidate's reason, when none will do (a missing module says more than "no
    // kernel").
    let mut first_err = None;
    for (_, _, p) in found {
        match open(&p, modules_root) {
            Ok(k) => return Ok(k),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| VmError::NoKernel(default.to_path_buf())))
}

/// The numbers of a release (`6.1.0-56-cloud-amd64` → 6, 1, 0, 56), to order releases.
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Tells a vmlinux from a bzImage by its first bytes; a bzImage's modules are found by the
/// release its header names.
fn open(path: &Path, modules_root: &Path) -> Result<Kernel, VmError> {
    // The version string sits in the real-mode setup code, within its first 64 KiB.
    let mut head = Vec::with_capacity(64 * 1024);
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .map_err(crate::io_err("read", path))?;
    if head.starts_with(b"\x7fELF") {
        return Ok(Kernel {
            path: path.to_path_buf(),
            kind: Kind::Minimal,
        });
    }
    let release = bzimage_release(path, &head)?;
    let dir = modules_root.join(&release);
    let modules = modules(&dir)?;
    Ok(Kernel {
        path: path.to_path_buf(),
        kind: Kind::Distro { release, modules },
    })
}

/// The release a bzImage's setup header names (x86 boot protocol: "HdrS" at 0x202, the
/// version string's offset minus 0x200 at 0x20e).
fn bzimage_release(path: &Path, head: &[u8]) -> Result<String, VmError> {
    let not = || VmError::NotAKernel(path.to_path_buf());
    if head.get(0x202..0x206) != Some(b"HdrS") {
        return Err(not());
    }
    let at = head
        .get(0x20e..0x210)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize + 0x200)
        .ok_or_else(not)?;
    let text = head.get(at..).ok_or_else(not)?;
    let end = text
        .iter()
        .position(|&b| b == 0 || b == b' ')
        .ok_or_else(not)?;
    let release = std::str::from_utf8(&text[..end]).map_err(|_| not())?;
    // It names a directory under /lib/modules.
    if release.is_empty() || release.contains('/') || release.starts_with('.') {
        return Err(not());
    }
    Ok(release.to_string())
}

/// The modules of [`NEEDED`] and [`WANTED`] that are not built in, with what they depend on,
/// in load order (from `modules.dep` and `modules.builtin` in `dir`).
fn modules(dir: &Path) -> Result<Vec<PathBuf>, VmError> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|source| VmError::NoModules {
            dir: dir.to_path_buf(),
            source,
        })
    };
    let dep = read("modules.dep")?;
    let builtin = read("modules.builtin").unwrap_or_default();
    let name_of = |path: &str| {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split('.').next().unwrap_or(file).replace('-', "_")
    };
    let built_in: Vec<String> = builtin.lines().map(name_of).collect();
    let deps: Vec<(String, &str, Vec<&str>)> = dep
        .lines()
        .filter_map(|l| {
            let (m, rest) = l.split_once(':')?;
            Some((name_of(m), m, rest.split_whitespace().collect()))
        })
        .collect();
    let mut order: Vec<PathBuf> = vec![];
    for (want, needed) in NEEDED
        .iter()
        .map(|m| (m, true))
        .chain(WANTED.iter().map(|m| (m, false)))
    {
        if built_in.iter().any(|b| b == want) {
            continue;
        }
        let Some((_, path, needs)) = deps.iter().find(|(n, _, _)| n == want) else {
            if needed {
                return Err(VmError::MissingModule {
                    module: want.to_string(),
                    dir: dir.to_path_buf(),
                });
            }
            continue;
        };
        // modules.dep lists a module's dependencies so that the last loads first.
        for m in needs.iter().rev().chain(std::iter::once(path)) {
            // The agent hands the file to finit_module as it is: a compressed one (.ko.xz,
            // .ko.zst: other distributions' choice, not Debian 12's) would fail every boot.
            if !m.ends_with(".ko") {
                return Err(VmError::CompressedModule(dir.join(m)));
            }
            let p = dir.join(m);
            if !order.contains(&p) {
                order.push(p);
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A bzImage header naming `release`.
    fn bzimage(release: &str) -> Vec<u8> {
        // As Debian's: the string 17 KiB in.
        let mut b = vec![0u8; 0x5000];
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x20e..0x210].copy_from_slice(&(0x44c0u16 - 0x200).to_le_bytes());
        let s = format!("{release} (debian-kernel@lists.debian.org) #1 SMP\0");
        b[0x44c0..0x44c0 + s.len()].copy_from_slice(s.as_bytes());
        b
    }

    fn modules_dir(root: &Path, release: &str, dep: &str, builtin: &str) {
        let d = root.join(release);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("modules.dep"), dep).unwrap();
        std::fs::write(d.join("modules.builtin"), builtin).unwrap();
    }

    const DEP: &str = "kernel/fs/fuse/fuse.ko:\n\
        kernel/fs/fuse/virtiofs.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/fs/fuse/fuse.ko\n\
        kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
        kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
        kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
        kernel/drivers/virtio/virtio.ko:\nkernel/drivers/virtio/virtio_ring.ko:\n\
        kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\nkernel/net/core/failover.ko:\n";

    #[test]
    fn modules_load_dependencies_first_and_skip_built_ins() {
        let dir = tempfile::tempdir().unwrap();
        modules_dir(
            dir.path(),
            "6.1.0-9-cloud-amd64",
            DEP,
            "kernel/fs/overlayfs/overlay.ko\n",
        );
        let got = modules(&dir.path().join("6.1.0-9-cloud-amd64")).unwrap();
        let names: Vec<String> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "virtio_ring.ko",
                "virtio.ko",
                "virtio_mmio.ko",
                "virtio_console.ko",
                "fuse.ko",
                "virtiofs.ko",
                "failover.ko",
                "net_failover.ko",
                "virtio_net.ko"
            ]
        );
        // Without virtio-fs the kernel cannot serve a VM container: said, naming it.
        let no_fs = DEP.replace("kernel/fs/fuse/virtiofs.ko", "kernel/fs/fuse/other.ko");
        modules_dir(dir.path(), "old", &no_fs, "");
        let err = modules(&dir.path().join("old")).unwrap_err().to_string();
        assert!(err.contains("virtiofs"), "{err}");
        // Compressed modules: refused at once, naming the file.
        modules_dir(dir.path(), "xz", &DEP.replace(".ko", ".ko.xz"), "");
        let err = modules(&dir.path().join("xz")).unwrap_err().to_string();
        assert!(err.contains("virtio_ring.ko.xz"), "{err}");
    }

    #[test]
    fn the_minimal_kernel_first_then_a_cloud_kernel_from_boot() {
        let dir = tempfile::tempdir().unwrap();
        let (boot, mods) = (dir.path().join("boot"), dir.path().join("modules"));
        std::fs::create_dir_all(&boot).unwrap();
        let default = dir.path().join("vmlinux");
        // Nothing at all: the error names the minimal kernel's place.
        let err = find(None, &default, &boot, &mods).unwrap_err();
        assert!(
            matches!(err, VmError::NoKernel(ref p) if p == &default),
            "{err}"
        );
        // Distribution kernels: a cloud one is preferred, the newest of them; one without its
        // modules is passed over.
        for r in [
            "6.1.0-9-amd64",
            "6.1.0-9-cloud-amd64",
            "6.1.0-10-cloud-amd64",
            "6.1.0-12-cloud-amd64",
        ] {
            std::fs::write(boot.join(format!("vmlinuz-{r}")), bzimage(r)).unwrap();
        }
        // No kernel has its modules: the first one's reason is the error, not "no kernel".
        let err = find(None, &default, &boot, &mods).unwrap_err();
        assert!(matches!(err, VmError::NoModules { .. }), "{err}");
        for r in [
            "6.1.0-9-amd64",
            "6.1.0-9-cloud-amd64",
            "6.1.0-10-cloud-amd64",
        ] {
            modules_dir(&mods, r, DEP, "");
        }
        let k = find(None, &default, &boot, &mods).unwrap();
        assert_eq!(k.path, boot.join("vmlinuz-6.1.0-10-cloud-amd64"));
        assert!(k.is_distro());
        assert!(
            matches!(&k.kind, Kind::Distro { release, modules } if release == "6.1.0-10-cloud-amd64" && modules.len() == 9),
            "{k:?}"
        );
        // The minimal kernel, once built, wins.
        std::fs::write(&default, b"\x7fELF...").unwrap();
        let k = find(None, &default, &boot, &mods).unwrap();
        assert_eq!(
            (k.path.as_path(), &k.kind),
            (default.as_path(), &Kind::Minimal)
        );
        // An explicit choice wins over both, and must be a kernel.
        let explicit = boot.join("vmlinuz-6.1.0-9-amd64");
        let k = find(Some(explicit.clone()), &default, &boot, &mods).unwrap();
        assert_eq!(k.path, explicit);
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not a kernel").unwrap();
        let err = find(Some(junk), &default, &boot, &mods).unwrap_err();
        assert!(matches!(err, VmError::NotAKernel(_)), "{err}");
        let err = find(
            Some(boot.join("vmlinuz-6.1.0-12-cloud-amd64")),
            &default,
            &boot,
            &mods,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("6.1.0-12-cloud-amd64"), "{err}");
    }
}
