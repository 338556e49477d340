//! Parsing of OCI mount options (`"nosuid"`, `"rbind"`, `"mode=755"`, ...) into mount(2) flags.

use nix::mount::MsFlags;

/// Mount options split the way mount(2) wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount call itself.
    pub flags: MsFlags,
    /// Propagation changes applied after the mount (MS_SHARED, MS_SLAVE, ... with MS_REC).
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific data (`mode=755,size=65536k`).
    pub data: Vec<String>,
    /// A bind mount (`bind` or `rbind`).
    pub bind: bool,
    /// Recursive (`rbind`).
    pub recursive: bool,
    /// `MOUNT_ATTR_*` to set recursively with mount_setattr (`rro`, `rnosuid`, ...).
    pub rec_set: u64,
    /// `MOUNT_ATTR_*` to clear recursively (`rrw`, `rsuid`, ...).
    pub rec_clear: u64,
    /// `tmpcopyup`: copy what the image has at the target into the new tmpfs.
    pub copy_up: bool,
}

/// `MS_NOSYMFOLLOW` (Linux 5.10), missing from nix's flags.
pub const MS_NOSYMFOLLOW: u64 = 256;

/// `MOUNT_ATTR_*` bits (linux/mount.h).
pub mod attr {
    /// Read-only.
    pub const RDONLY: u64 = 0x1;
    /// No set-id.
    pub const NOSUID: u64 = 0x2;
    /// No devices.
    pub const NODEV: u64 = 0x4;
    /// No exec.
    pub const NOEXEC: u64 = 0x8;
    /// The atime field (a 2-bit value, cleared as a whole).
    pub const ATIME_MASK: u64 = 0x70;
    /// relatime.
    pub const RELATIME: u64 = 0x0;
    /// noatime.
    pub const NOATIME: u64 = 0x10;
    /// strictatime.
    pub const STRICTATIME: u64 = 0x20;
    /// nodiratime.
    pub const NODIRATIME: u64 = 0x80;
    /// nosymfollow.
    pub const NOSYMFOLLOW: u64 = 0x0020_0000;
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            propagation: vec![],
            data: vec![],
            bind: false,
            recursive: false,
            rec_set: 0,
            rec_clear: 0,
            copy_up: false,
        }
    }
}

impl MountOptions {
    /// The data string, or None when empty.
    pub fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// Parses the options of one mount; unknown options become filesystem data, as runc does.
pub fn parse(options: &[String]) -> Result<MountOptions, String> {
    let mut o = MountOptions::default();
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                o.bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                o.propagation
                    .push(propagation(opt).unwrap_or(MsFlags::MS_PRIVATE));
                continue;
            }
            "nosymfollow" => (MsFlags::from_bits_retain(MS_NOSYMFOLLOW), MsFlags::empty()),
            "symfollow" => (MsFlags::empty(), MsFlags::from_bits_retain(MS_NOSYMFOLLOW)),
            // Podman asks for the image's content to be copied up into a tmpfs.
            "tmpcopyup" => {
                o.copy_up = true;
                continue;
            }
            "notmpcopyup" => {
                o.copy_up = false;
                continue;
            }
            r if r.starts_with('r') && recursive_attr(r).is_some() => {
                let (set, clear) = recursive_attr(r).unwrap_or((0, 0));
                o.rec_set = (o.rec_set & !clear) | set;
                o.rec_clear = (o.rec_clear & !set) | clear;
                continue;
            }
            "idmap" | "ridmap" => {
                return Err(format!(
                    "mount option {opt:?} (id-mapped mounts) is not supported"
                ))
            }
            other => {
                o.data.push(other.to_string());
                continue;
            }
        };
        // On raw bits: `!` on the flags type would drop bits nix does not name (MS_NOSYMFOLLOW).
        o.flags = MsFlags::from_bits_retain((o.flags.bits() | set.bits()) & !clear.bits());
    }
    Ok(o)
}

/// The recursive mount attributes (`rro`, `rnosuid`, ...): (set, clear).
fn recursive_attr(name: &str) -> Option<(u64, u64)> {
    use attr::*;
    Some(match name {
        "rro" => (RDONLY, 0),
        "rrw" => (0, RDONLY),
        "rnosuid" => (NOSUID, 0),
        "rsuid" => (0, NOSUID),
        "rnodev" => (NODEV, 0),
        "rdev" => (0, NODEV),
        "rnoexec" => (NOEXEC, 0),
        "rexec" => (0, NOEXEC),
        "rnodiratime" => (NODIRATIME, 0),
        "rdiratime" => (0, NODIRATIME),
        "rrelatime" => (RELATIME, ATIME_MASK),
        "rnoatime" => (NOATIME, ATIME_MASK),
        "rstrictatime" => (STRICTATIME, ATIME_MASK),
        "rnosymfollow" => (NOSYMFOLLOW, 0),
        "rsymfollow" => (0, NOSYMFOLLOW),
        _ => return None,
    })
}

/// The propagation flags named by `rootfsPropagation` or a mount option.
pub fn propagation(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(opts: &[&str]) -> MountOptions {
        parse(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn docker_dev_tmpfs() {
        let o = p(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data().as_deref(), Some("mode=755,size=65536k"));
        assert!(!o.bind);
    }

    #[test]
    fn rbind_ro_with_propagation() {
        let o = p(&["rbind", "ro", "rprivate"]);
        assert!(o.bind && o.recursive);
        assert_eq!(
            o.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data(), None);
    }

    #[test]
    fn later_options_win() {
        assert_eq!(p(&["ro", "rw"]).flags, MsFlags::empty());
        assert_eq!(p(&["nosuid", "suid"]).flags, MsFlags::empty());
    }

    #[test]
    fn recursive_attributes_and_copy_up() {
        let o = p(&["rbind", "rro", "rnosuid", "tmpcopyup"]);
        assert_eq!(o.rec_set, attr::RDONLY | attr::NOSUID);
        assert!(o.copy_up);
        let o = p(&["rro", "rrw", "rnoatime"]);
        assert_eq!(o.rec_set, attr::NOATIME);
        assert_eq!(o.rec_clear, attr::RDONLY | attr::ATIME_MASK);
        assert_eq!(p(&["nosymfollow"]).flags.bits(), MS_NOSYMFOLLOW);
    }

    #[test]
    fn idmap_is_refused() {
        assert!(parse(&["idmap".to_string()]).unwrap_err().contains("idmap"));
    }
}
