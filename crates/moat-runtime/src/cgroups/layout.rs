//! Which cgroup version the host runs, read from `/proc/self/mountinfo`.

use std::path::{Path, PathBuf};

use super::CgroupError;

/// Where cgroup v2 is conventionally mounted; only a cgroup2 mount *here* makes the host "v2".
const UNIFIED_MOUNT: &str = "/sys/fs/cgroup";

/// Super-block options of a v1 cgroup mount that are flags, not controller names.
const V1_FLAG_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "favordynmods",
    "none",
];

/// How the host's cgroup filesystems are arranged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Legacy (or hybrid) cgroups: one mount per controller group.
    V1 {
        /// Every mounted v1 hierarchy, in mountinfo order.
        hierarchies: Vec<Hierarchy>,
    },
    /// The unified hierarchy: a single cgroup2 tree.
    V2 {
        /// Mount point of the cgroup2 filesystem, normally `/sys/fs/cgroup`.
        root: PathBuf,
    },
}

/// One mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where the hierarchy is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub mount_point: PathBuf,
    /// Controllers bound to it, e.g. `["cpu", "cpuacct"]`, or `["name=systemd"]` for a named
    /// hierarchy without controllers.
    pub controllers: Vec<String>,
}

impl Hierarchy {
    /// Whether `controller` is bound to this hierarchy.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

impl Layout {
    /// Reads `/proc/self/mountinfo` and classifies it with [`parse_mountinfo`].
    pub fn detect() -> Result<Layout, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse_mountinfo(&text)
    }

    /// The v1 hierarchy that carries `controller`, if any (always `None` on v2).
    pub fn hierarchy(&self, controller: &str) -> Option<&Hierarchy> {
        match self {
            Layout::V1 { hierarchies } => hierarchies.iter().find(|h| h.has(controller)),
            Layout::V2 { .. } => None,
        }
    }
}

/// Reads `/proc/self/mountinfo` and classifies it; same as [`Layout::detect`].
pub fn detect() -> Result<Layout, CgroupError> {
    Layout::detect()
}

/// Classifies the cgroup mounts listed in mountinfo `text`.
///
/// Rules, in order:
/// - a cgroup2 mount at `/sys/fs/cgroup` → [`Layout::V2`];
/// - otherwise any v1 (`cgroup`) mounts → [`Layout::V1`]. This deliberately covers *hybrid*
///   hosts (v1 controllers plus a cgroup2 mount at `/sys/fs/cgroup/unified` that holds few or no
///   controllers): the v2 side is ignored, since the controllers that matter live in v1;
/// - otherwise a cgroup2 mount somewhere else → [`Layout::V2`] rooted there;
/// - otherwise [`CgroupError::NoCgroupMounts`].
///
/// The same v1 controller set mounted twice (bind mounts) keeps only its first mount.
pub fn parse_mountinfo(text: &str) -> Result<Layout, CgroupError> {
    let mut hierarchies: Vec<Hierarchy> = Vec::new();
    let mut other_v2: Option<PathBuf> = None;

    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let malformed = || CgroupError::MalformedMountinfo {
            line: line.to_string(),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Optional fields between the mount options and "-" vary in number, so locate the
        // separator instead of counting.
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(malformed)?;
        if sep < 6 {
            return Err(malformed());
        }
        let fstype = *fields.get(sep + 1).ok_or_else(malformed)?;
        let mount_point = PathBuf::from(unescape(fields[4]));
        match fstype {
            "cgroup2" => {
                if mount_point == Path::new(UNIFIED_MOUNT) {
                    return Ok(Layout::V2 { root: mount_point });
                }
                other_v2.get_or_insert(mount_point);
            }
            "cgroup" => {
                let super_opts = *fields.get(sep + 3).ok_or_else(malformed)?;
                let controllers: Vec<String> = super_opts
                    .split(',')
                    .filter(|o| !V1_FLAG_OPTIONS.contains(o))
                    .filter(|o| !o.contains('=') || o.starts_with("name="))
                    .map(str::to_string)
                    .collect();
                if controllers.is_empty()
                    || hierarchies.iter().any(|h| h.controllers == controllers)
                {
                    continue;
                }
                hierarchies.push(Hierarchy {
                    mount_point,
                    controllers,
                });
            }
            _ => {}
        }
    }

    if !hierarchies.is_empty() {
        Ok(Layout::V1 { hierarchies })
    } else if let Some(root) = other_v2 {
        Ok(Layout::V2 { root })
    } else {
        Err(CgroupError::NoCgroupMounts)
    }
}

/// Undoes mountinfo's octal escaping of space, tab, newline and backslash (`\040` etc.).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
