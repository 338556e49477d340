//! Loading and validating an OCI bundle (`config.json` plus a root filesystem).
//!
//! Everything that can be checked without touching the kernel is checked here, in the parent,
//! so that a bad config fails before any namespace, cgroup or mount exists.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

/// Why a bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// cannot resolve the bundle directory
    #[error("cannot resolve bundle directory {path}: {source}")]
    BundleDir {
        /// The bundle path given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// cannot read or parse config.json
    #[error("cannot load {path}: {source}")]
    Load {
        /// Path of the config file.
        path: PathBuf,
        /// The parser's error.
        source: oci_spec::OciSpecError,
    },
    /// invalid configuration
    #[error("invalid {path}: {reason}")]
    Invalid {
        /// Path of the config file.
        path: PathBuf,
        /// What is wrong, naming the field.
        reason: String,
    },
}

/// A loaded bundle whose config passed validation.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute path of the bundle directory.
    pub dir: PathBuf,
    /// Absolute path of the root filesystem.
    pub rootfs: PathBuf,
    /// The parsed config.
    pub spec: Spec,
    /// The process to run (validation guarantees the config has one).
    pub process: Process,
}

impl Bundle {
    /// Loads `<dir>/config.json` and validates it.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let dir = std::fs::canonicalize(dir).map_err(|source| BundleError::BundleDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("config.json");
        let spec = Spec::load(&path).map_err(|source| BundleError::Load {
            path: path.clone(),
            source,
        })?;
        let invalid = |reason: String| BundleError::Invalid {
            path: path.clone(),
            reason,
        };
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| invalid("root is missing".into()))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            dir.join(root.path())
        };
        let rootfs = std::fs::canonicalize(&rootfs)
            .map_err(|e| invalid(format!("root.path {}: {e}", rootfs.display())))?;
        if !rootfs.is_dir() {
            return Err(invalid(format!(
                "root.path {} is not a directory",
                rootfs.display()
            )));
        }
        validate(&spec).map_err(invalid)?;
        let process = spec.process().clone().unwrap_or_default();
        Ok(Bundle {
            dir,
            rootfs,
            spec,
            process,
        })
    }

    /// Whether the config asks for a new user namespace (one without a path).
    pub fn new_user_namespace(&self) -> bool {
        namespaces(&self.spec)
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none())
    }
}

/// The namespaces of a spec (empty when there is no `linux` section).
pub fn namespaces(spec: &Spec) -> &[oci_spec::runtime::LinuxNamespace] {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or(&[])
}

/// Checks the parts of a config that do not need the kernel; the error names the field.
pub fn validate(spec: &Spec) -> Result<(), String> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| "process is missing".to_string())?;
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err("process.args must name a program".into()),
    }
    if !process.cwd().is_absolute() {
        return Err(format!(
            "process.cwd {:?} must be an absolute path",
            process.cwd()
        ));
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| "linux section is missing".to_string())?;
    let mut seen = HashSet::new();
    for ns in namespaces(spec) {
        if !seen.insert(ns.typ()) {
            return Err(format!("namespace {} is listed twice", ns.typ()));
        }
        if ns.typ() == LinuxNamespaceType::Time {
            return Err("time namespaces are not supported".into());
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                return Err(format!(
                    "namespace {} path {p:?} must be absolute",
                    ns.typ()
                ));
            }
        }
    }
    if !seen.contains(&LinuxNamespaceType::Mount) {
        return Err("a mount namespace is required (pivot_root needs one)".into());
    }
    let new_user = namespaces(spec)
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        && linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    if new_user && !has_maps {
        return Err("a new user namespace needs linux.uidMappings and linux.gidMappings".into());
    }
    if !new_user && (linux.uid_mappings().is_some() || linux.gid_mappings().is_some()) {
        let joins = seen.contains(&LinuxNamespaceType::User);
        if !joins {
            return Err("uidMappings/gidMappings are set but no user namespace is".into());
        }
    }
    let new_uts = namespaces(spec)
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Uts);
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !new_uts {
        return Err("hostname is set but there is no uts namespace".into());
    }
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        if !m.destination().is_absolute() {
            return Err(format!(
                "mount destination {:?} must be an absolute path",
                m.destination()
            ));
        }
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            if key.contains('/') || key.split('.').any(|p| p.is_empty() || p == "..") {
                return Err(format!("sysctl key {key:?} is malformed"));
            }
            check_sysctl_namespace(key, &seen)?;
        }
    }
    Ok(())
}

/// The settings of a config that moat does not apply yet, named by their JSON path, so that the
/// caller can warn instead of silently dropping them. AppArmor and SELinux labels count only
/// when the host has that LSM enabled (runc ignores them otherwise too).
pub fn unsupported(spec: &Spec) -> Vec<&'static str> {
    let mut out = vec![];
    if let Some(p) = spec.process() {
        let apparmor_on = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim() == "Y");
        let selinux_on = std::path::Path::new("/sys/fs/selinux/enforce").exists();
        if p.apparmor_profile().as_ref().is_some_and(|a| !a.is_empty()) && apparmor_on {
            out.push("process.apparmorProfile");
        }
        if p.selinux_label().as_ref().is_some_and(|a| !a.is_empty()) && selinux_on {
            out.push("process.selinuxLabel");
        }
        if p.io_priority().is_some() {
            out.push("process.ioPriority");
        }
        if p.scheduler().is_some() {
            out.push("process.scheduler");
        }
        if p.exec_cpu_affinity().is_some() {
            out.push("process.execCPUAffinity");
        }
    }
    let Some(linux) = spec.linux() else {
        return out;
    };
    if linux.personality().is_some() {
        out.push("linux.personality");
    }
    if linux.intel_rdt().is_some() {
        out.push("linux.intelRdt");
    }
    if linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty()) {
        out.push("linux.timeOffsets");
    }
    if linux.net_devices().as_ref().is_some_and(|t| !t.is_empty()) {
        out.push("linux.netDevices");
    }
    let Some(r) = linux.resources() else {
        return out;
    };
    if let Some(m) = r.memory() {
        if m.swappiness().is_some() {
            out.push("linux.resources.memory.swappiness");
        }
        if m.disable_oom_killer() == Some(true) {
            out.push("linux.resources.memory.disableOOMKiller");
        }
        #[allow(deprecated)]
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            out.push("linux.resources.memory.kernel");
        }
    }
    if let Some(c) = r.cpu() {
        if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
            out.push("linux.resources.cpu.realtime*");
        }
        if c.idle().is_some() {
            out.push("linux.resources.cpu.idle");
        }
    }
    if let Some(b) = r.block_io() {
        if b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
            || b.throttle_read_bps_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            || b.throttle_write_bps_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            || b.throttle_read_iops_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            || b.throttle_write_iops_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
        {
            out.push("linux.resources.blockIO (per-device weights and throttles)");
        }
    }
    if r.hugepage_limits().as_ref().is_some_and(|v| !v.is_empty()) {
        out.push("linux.resources.hugepageLimits");
    }
    if r.network().is_some() {
        out.push("linux.resources.network");
    }
    if r.rdma().as_ref().is_some_and(|v| !v.is_empty()) {
        out.push("linux.resources.rdma");
    }
    out
}

/// A sysctl may only be set when it belongs to a namespace the container has (runc's rule):
/// otherwise the write would change the host.
fn check_sysctl_namespace(key: &str, ns: &HashSet<LinuxNamespaceType>) -> Result<(), String> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let needed = if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        LinuxNamespaceType::Ipc
    } else if key.starts_with("net.") {
        LinuxNamespaceType::Network
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        return Err(format!(
            "sysctl {key:?}: use the hostname/domainname fields instead"
        ));
    } else {
        return Err(format!(
            "sysctl {key:?} is not namespaced: setting it would change the host"
        ));
    };
    if !ns.contains(&needed) {
        return Err(format!("sysctl {key:?} needs a {needed} namespace"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_json(extra: &str) -> Spec {
        let json = format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},
              "process":{{"args":["/bin/true"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
              "linux":{{"namespaces":[{{"type":"mount"}},{{"type":"pid"}}]}} {extra}}}"#
        );
        #[allow(clippy::unwrap_used)]
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn minimal_config_is_valid() {
        assert_eq!(validate(&spec_json("")), Ok(()));
    }

    #[test]
    fn hostname_without_uts_is_refused() {
        let err = validate(&spec_json(r#","hostname":"x""#)).unwrap_err();
        assert!(err.contains("uts"), "{err}");
    }

    #[test]
    fn relative_cwd_and_empty_args_are_refused() {
        let mut spec = spec_json("");
        let mut p = spec.process().clone().unwrap_or_default();
        p.set_cwd("rel".into());
        spec.set_process(Some(p.clone()));
        assert!(validate(&spec).unwrap_err().contains("cwd"));
        p.set_cwd("/".into());
        p.set_args(Some(vec![]));
        spec.set_process(Some(p));
        assert!(validate(&spec).unwrap_err().contains("args"));
    }

    #[test]
    fn user_namespace_needs_mappings() {
        let mut spec = spec_json("");
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut ns = linux.namespaces().clone().unwrap_or_default();
        ns.push(serde_json::from_str(r#"{"type":"user"}"#).unwrap_or_default());
        linux.set_namespaces(Some(ns));
        spec.set_linux(Some(linux));
        assert!(validate(&spec).unwrap_err().contains("uidMappings"));
    }

    #[test]
    fn duplicate_namespace_and_missing_mount_ns_are_refused() {
        let mut spec = spec_json("");
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_namespaces(Some(vec![
            serde_json::from_str(r#"{"type":"pid"}"#).unwrap_or_default(),
            serde_json::from_str(r#"{"type":"pid"}"#).unwrap_or_default(),
        ]));
        spec.set_linux(Some(linux.clone()));
        assert!(validate(&spec).unwrap_err().contains("twice"));
        linux.set_namespaces(Some(vec![]));
        spec.set_linux(Some(linux));
        assert!(validate(&spec).unwrap_err().contains("mount namespace"));
    }

    #[test]
    fn bad_sysctl_key_is_refused() {
        let mut spec = spec_json("");
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_sysctl(Some([("net/../x".to_string(), "1".to_string())].into()));
        spec.set_linux(Some(linux));
        assert!(validate(&spec).unwrap_err().contains("sysctl"));
    }
}

#[cfg(test)]
mod sysctl_tests {
    use super::*;

    #[test]
    fn unapplied_settings_are_named() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","process":{"args":["x"],"cwd":"/","user":{"uid":0,"gid":0},
                "scheduler":{"policy":"SCHED_OTHER"}},
              "linux":{"personality":{"domain":"LINUX"},
                "resources":{"memory":{"limit":1,"swappiness":10},"hugepageLimits":[{"pageSize":"2MB","limit":1}]}}}"#,
        )
        .unwrap();
        assert_eq!(
            unsupported(&spec),
            [
                "process.scheduler",
                "linux.personality",
                "linux.resources.memory.swappiness",
                "linux.resources.hugepageLimits"
            ]
        );
        assert!(unsupported(&crate::ops::spec::default_spec(false)).is_empty());
    }

    #[test]
    fn sysctls_need_their_namespace() {
        let ns = |t: &[LinuxNamespaceType]| t.iter().copied().collect::<HashSet<_>>();
        use LinuxNamespaceType::{Ipc, Network};
        assert_eq!(
            check_sysctl_namespace("net.ipv4.ip_forward", &ns(&[Network])),
            Ok(())
        );
        assert!(check_sysctl_namespace("net.ipv4.ip_forward", &ns(&[Ipc])).is_err());
        assert_eq!(check_sysctl_namespace("kernel.msgmax", &ns(&[Ipc])), Ok(()));
        assert_eq!(
            check_sysctl_namespace("fs.mqueue.msg_max", &ns(&[Ipc])),
            Ok(())
        );
        assert!(check_sysctl_namespace("kernel.msgmax", &ns(&[Network])).is_err());
        assert!(
            check_sysctl_namespace("vm.swappiness", &ns(&[Ipc, Network]))
                .unwrap_err()
                .contains("host")
        );
        assert!(check_sysctl_namespace("kernel.hostname", &ns(&[])).is_err());
    }
}
