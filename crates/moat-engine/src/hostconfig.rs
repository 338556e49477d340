//! What Docker calls the HostConfig: resources, capabilities, privileges, mounts, rlimits,
//! labels and the stop settings of a container. Parsed from Docker's flag syntax (with a clear
//! error naming the value), then applied to the OCI config `spec` builds.

use serde_json::{json, Value};

/// Errors in flag values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    /// a size such as `512m`
    #[error("invalid size {0:?}: a number of bytes with an optional b, k, m or g suffix")]
    Size(String),
    /// `--cpus`
    #[error("invalid --cpus {0:?}: a positive number such as 0.5 or 2")]
    Cpus(String),
    /// `--ulimit`
    #[error("invalid --ulimit {0:?}: NAME=SOFT[:HARD] with NAME one of {names}", names = ULIMITS.join(", "))]
    Ulimit(String),
    /// `--cap-add` / `--cap-drop`
    #[error("unknown capability {0:?}")]
    Capability(String),
    /// `-v` / `--mount`
    #[error("invalid volume {0:?}: HOST-PATH:CONTAINER-PATH[:ro|rw], NAME:CONTAINER-PATH[:ro|rw] or CONTAINER-PATH, with absolute paths")]
    Volume(String),
    /// `--tmpfs`
    #[error("invalid --tmpfs {0:?}: an absolute CONTAINER-PATH[:OPTIONS]")]
    Tmpfs(String),
    /// `--restart`
    #[error("invalid restart policy {0:?}: no, always, unless-stopped or on-failure[:MAX]")]
    Restart(String),
    /// `-l`
    #[error("invalid label {0:?}: KEY=VALUE")]
    Label(String),
    /// `--isolation`
    #[error("invalid isolation {0:?}: default, process, vm or hyperv")]
    Isolation(String),
    /// `--detach-keys`
    #[error("invalid detach keys {0:?}: comma-separated keys, each a character or ctrl-X (X: a-z, @, [, \\, ], ^, _)")]
    DetachKeys(String),
    /// a bind source that does not exist
    #[error("invalid volume: bind source path does not exist: {0}")]
    NoSource(String),
    /// `--mount`
    #[error("invalid --mount {mount:?}: {reason}")]
    Mount {
        /// The text given.
        mount: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The rlimits `--ulimit` knows (Docker's names).
pub const ULIMITS: [&str; 15] = [
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
];

/// A bind mount from `-v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Host path; for a volume its name ("" for a new anonymous one) until the volume is made.
    pub source: String,
    /// A named or anonymous volume rather than a host path.
    pub volume: bool,
    /// Container path.
    pub destination: String,
    /// `:ro`.
    pub readonly: bool,
}

/// The HostConfig flags of `run`/`create`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostConfig {
    /// `-m` bytes.
    pub memory: Option<i64>,
    /// `--memory-swap` bytes (memory + swap; -1 unlimited).
    pub memory_swap: Option<i64>,
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus`.
    pub cpuset_cpus: Option<String>,
    /// `--pids-limit` (-1 or 0: unlimited).
    pub pids_limit: Option<i64>,
    /// `--ulimit` (RLIMIT_* name, soft, hard).
    pub ulimits: Vec<(String, u64, u64)>,
    /// `--cap-add` (CAP_* names, or ALL).
    pub cap_add: Vec<String>,
    /// `--cap-drop` (CAP_* names, or ALL).
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `-v`.
    pub binds: Vec<Bind>,
    /// `--tmpfs` (container path, mount options).
    pub tmpfs: Vec<(String, String)>,
    /// `-l`.
    pub labels: Vec<(String, String)>,
    /// `--stop-signal`.
    pub stop_signal: Option<String>,
    /// `--stop-timeout` seconds.
    pub stop_timeout: Option<u64>,
    /// `--isolation`: the container runs in a micro-VM (`vm`, Docker's `hyperv`).
    pub vm: bool,
}

/// Annotation keys moat keeps its own settings under in the container's config.json.
pub const STOP_SIGNAL: &str = "moat.stop-signal";
/// See [`STOP_SIGNAL`].
pub const STOP_TIMEOUT: &str = "moat.stop-timeout";
/// See [`STOP_SIGNAL`]: `vm` for a VM container.
pub const ISOLATION: &str = "moat.isolation";

/// The environment variable naming the isolation of containers created without one
/// (`process`, the default, or `vm`), for the CLI and `moat serve` alike.
pub const DEFAULT_ISOLATION: &str = "MOAT_DEFAULT_ISOLATION";

/// Parses `--isolation` (Docker's values: `default`, `process`, `hyperv`; moat's `vm`): true
/// for a VM container. `default` (or nothing) is [`DEFAULT_ISOLATION`]'s value, else process.
pub fn parse_isolation(s: &str) -> Result<bool, FlagError> {
    match s {
        "" | "default" => match std::env::var(DEFAULT_ISOLATION) {
            Ok(d) if !d.is_empty() && d != "default" => parse_isolation(&d)
                .map_err(|_| FlagError::Isolation(format!("{d} (from {DEFAULT_ISOLATION})"))),
            _ => Ok(false),
        },
        "process" => Ok(false),
        "vm" | "hyperv" => Ok(true),
        other => Err(FlagError::Isolation(other.to_string())),
    }
}

/// Parses Docker's size syntax (`1024`, `512k`, `64m`, `1g`; `b` suffix allowed).
pub fn parse_size(s: &str) -> Result<i64, FlagError> {
    let err = || FlagError::Size(s.to_string());
    let lower = s.trim().to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| err())?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(err());
    }
    Ok((n * mult as f64) as i64)
}

/// Parses `--cpus`.
pub fn parse_cpus(s: &str) -> Result<f64, FlagError> {
    match s.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(FlagError::Cpus(s.to_string())),
    }
}

/// Parses `--ulimit NAME=SOFT[:HARD]` (a missing hard limit equals the soft one; -1 unlimited).
pub fn parse_ulimit(s: &str) -> Result<(String, u64, u64), FlagError> {
    let err = || FlagError::Ulimit(s.to_string());
    let (name, vals) = s.split_once('=').ok_or_else(err)?;
    if !ULIMITS.contains(&name) {
        return Err(err());
    }
    let num = |v: &str| -> Result<u64, FlagError> {
        if v == "-1" {
            return Ok(u64::MAX);
        }
        v.parse().map_err(|_| err())
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(vals)?, num(vals)?),
    };
    if soft > hard {
        return Err(err());
    }
    Ok((format!("RLIMIT_{}", name.to_ascii_uppercase()), soft, hard))
}

/// Normalizes a capability name (`net_admin`, `CAP_NET_ADMIN`, `ALL`) and checks it exists.
pub fn parse_capability(s: &str) -> Result<String, FlagError> {
    let up = s.to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let name = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if ALL_CAPABILITIES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(FlagError::Capability(s.to_string()))
    }
}

/// Parses `-v HOST-PATH:CONTAINER-PATH[:ro|rw]` (a bind mount), `-v NAME:CONTAINER-PATH[:ro|rw]`
/// (a named volume, made on first use) or `-v CONTAINER-PATH` (an anonymous volume).
pub fn parse_bind(s: &str) -> Result<Bind, FlagError> {
    let err = || FlagError::Volume(s.to_string());
    let parts: Vec<&str> = s.split(':').collect();
    let (source, destination, mode) = match parts.as_slice() {
        [d] => ("", *d, "rw"),
        [a, b] => (*a, *b, "rw"),
        [a, b, m] => (*a, *b, *m),
        _ => return Err(err()),
    };
    if !destination.starts_with('/') || destination == "/" {
        return Err(err());
    }
    let readonly = match mode {
        "ro" => true,
        "rw" => false,
        _ => return Err(err()),
    };
    let volume = !source.starts_with('/');
    if volume && !source.is_empty() && crate::containers::check_name(source).is_err() {
        return Err(err());
    }
    if !volume && !std::path::Path::new(source).exists() {
        return Err(FlagError::NoSource(source.to_string()));
    }
    Ok(Bind {
        source: source.into(),
        volume,
        destination: destination.into(),
        readonly,
    })
}

/// Docker's `--restart` policy: what the monitor does when the container exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Always, unless stopped by the user (`stop`, `kill`).
    Always,
    /// As `Always` (moat has no daemon that restarts containers at boot, where the two differ).
    UnlessStopped,
    /// After a non-zero exit, at most this many times (0: no limit).
    OnFailure(u32),
}

impl RestartPolicy {
    /// Parses `no`, `always`, `unless-stopped`, `on-failure[:MAX]` ("" is `no`).
    pub fn parse(s: &str) -> Result<RestartPolicy, FlagError> {
        let err = || FlagError::Restart(s.to_string());
        match s {
            "" | "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure(0)),
            other => match other.strip_prefix("on-failure:") {
                Some(n) => n.parse().map(RestartPolicy::OnFailure).map_err(|_| err()),
                None => Err(err()),
            },
        }
    }

    /// The policy as `parse` reads it.
    pub fn encode(&self) -> String {
        match self {
            RestartPolicy::No => "no".into(),
            RestartPolicy::Always => "always".into(),
            RestartPolicy::UnlessStopped => "unless-stopped".into(),
            RestartPolicy::OnFailure(0) => "on-failure".into(),
            RestartPolicy::OnFailure(n) => format!("on-failure:{n}"),
        }
    }

    /// Whether a container that exited with `code`, restarted `restarts` times so far, starts
    /// again; never after the user stopped it.
    pub fn restarts(&self, code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure(max) => code != 0 && (*max == 0 || restarts < *max),
        }
    }
}

/// What one `--mount` (or an API `HostConfig.Mounts` entry) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A bind mount or a volume (as `-v`).
    Bind(Bind),
    /// A tmpfs (as `--tmpfs`): the container path and the mount options.
    Tmpfs(String, String),
}

/// Parses Docker's `--mount type=bind|volume|tmpfs,source=...,target=...[,readonly]
/// [,tmpfs-size=...][,tmpfs-mode=...]` (`src`, `dst`, `destination`, `ro` too; `type` defaults
/// to volume, as Docker's).
pub fn parse_mount(s: &str) -> Result<Mount, FlagError> {
    let bad = |reason| FlagError::Mount {
        mount: s.to_string(),
        reason,
    };
    let (mut kind, mut source, mut target, mut readonly) = ("volume", "", "", false);
    let mut tmpfs_opts = vec![];
    for field in s.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "type" => kind = v,
            "source" | "src" => source = v,
            "target" | "destination" | "dst" => target = v,
            "readonly" | "ro" => {
                readonly = match v {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad("readonly takes true or false")),
                }
            }
            "tmpfs-size" => tmpfs_opts.push(format!("size={}", parse_size(v)?)),
            "tmpfs-mode" => tmpfs_opts.push(format!("mode={v}")),
            // Accepted as Docker does, with no effect here.
            "consistency" | "bind-propagation" | "volume-nocopy" => {}
            _ => {
                return Err(bad(
                    "unknown option (type, source, target, readonly, tmpfs-size, tmpfs-mode)",
                ))
            }
        }
    }
    if !target.starts_with('/') || target == "/" {
        return Err(bad("target must be an absolute path other than /"));
    }
    match kind {
        "bind" => {
            if !source.starts_with('/') {
                return Err(bad("a bind mount's source must be an absolute host path"));
            }
            if !std::path::Path::new(source).exists() {
                return Err(FlagError::NoSource(source.to_string()));
            }
            Ok(Mount::Bind(Bind {
                source: source.into(),
                volume: false,
                destination: target.into(),
                readonly,
            }))
        }
        "volume" => {
            if !source.is_empty() && crate::containers::check_name(source).is_err() {
                return Err(bad("a volume's source is a volume name"));
            }
            Ok(Mount::Bind(Bind {
                source: source.into(),
                volume: true,
                destination: target.into(),
                readonly,
            }))
        }
        "tmpfs" if source.is_empty() => Ok(Mount::Tmpfs(target.into(), tmpfs_opts.join(","))),
        "tmpfs" => Err(bad("a tmpfs has no source")),
        _ => Err(bad("type must be bind, volume or tmpfs")),
    }
}

/// Parses `--tmpfs PATH[:OPTIONS]`.
pub fn parse_tmpfs(s: &str) -> Result<(String, String), FlagError> {
    let (path, opts) = s.split_once(':').unwrap_or((s, ""));
    if !path.starts_with('/') || path == "/" {
        return Err(FlagError::Tmpfs(s.to_string()));
    }
    Ok((path.to_string(), opts.to_string()))
}

/// Parses `-l KEY=VALUE` (a bare KEY gets an empty value, as Docker does).
pub fn parse_label(s: &str) -> Result<(String, String), FlagError> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    if k.is_empty() {
        return Err(FlagError::Label(s.to_string()));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Every capability the kernel knows, in bit order (`--privileged` and `--cap-add ALL` grant
/// those of them the host has: [`host_capabilities`]).
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

impl HostConfig {
    /// The capability set: Docker's defaults (or all, privileged), minus drops, plus adds
    /// (Docker applies ALL in a drop first, then the adds).
    pub fn capabilities(&self, defaults: &[&str]) -> Vec<String> {
        let all = || -> Vec<String> { host_capabilities() };
        let mut caps: Vec<String> = if self.privileged {
            all()
        } else {
            defaults.iter().map(|c| c.to_string()).collect()
        };
        if self.cap_drop.iter().any(|c| c == "ALL") {
            caps.clear();
        }
        caps.retain(|c| !self.cap_drop.contains(c));
        if self.cap_add.iter().any(|c| c == "ALL") {
            caps = all();
        }
        for c in &self.cap_add {
            if c != "ALL" && !caps.contains(c) {
                caps.push(c.clone());
            }
        }
        caps
    }

    /// Applies the resource limits that are set (memory, swap, CPUs, shares, cpuset, pids) to an
    /// OCI config document (also `update`'s: what is not set stays as it was).
    pub fn apply_resources(&self, doc: &mut Value) {
        let res = &mut doc["linux"]["resources"];
        if let Some(m) = self.memory {
            res["memory"]["limit"] = json!(m);
            // Docker: without --memory-swap the swap limit is twice the memory limit.
            res["memory"]["swap"] = json!(self.memory_swap.unwrap_or(m * 2));
        } else if let Some(s) = self.memory_swap {
            res["memory"]["swap"] = json!(s);
        }
        if let Some(c) = self.cpus {
            res["cpu"]["period"] = json!(100_000u64);
            res["cpu"]["quota"] = json!((c * 100_000.0) as i64);
        }
        if let Some(s) = self.cpu_shares {
            res["cpu"]["shares"] = json!(s);
        }
        if let Some(c) = &self.cpuset_cpus {
            res["cpu"]["cpus"] = json!(c);
        }
        if let Some(p) = self.pids_limit {
            res["pids"]["limit"] = json!(if p <= 0 { -1 } else { p });
        }
    }

    /// Applies resources, rlimits, mounts, annotations and privileges to an OCI config
    /// document built by `spec::build`.
    pub fn apply(&self, doc: &mut Value) {
        self.apply_resources(doc);
        if !self.ulimits.is_empty() {
            doc["process"]["rlimits"] = self
                .ulimits
                .iter()
                .map(|(t, s, h)| json!({"type": t, "soft": s, "hard": h}))
                .collect();
        }
        let mounts = doc["mounts"].as_array_mut();
        if let Some(mounts) = mounts {
            for b in &self.binds {
                let mut opts = vec!["rbind", "rprivate"];
                if b.readonly {
                    opts.push("ro");
                }
                mounts.push(json!({"destination": b.destination, "type": "bind",
                                   "source": b.source, "options": opts}));
            }
            for (path, o) in &self.tmpfs {
                let mut opts = vec!["nosuid".to_string(), "nodev".into(), "noexec".into()];
                opts.extend(o.split(',').filter(|x| !x.is_empty()).map(String::from));
                mounts.push(json!({"destination": path, "type": "tmpfs",
                                   "source": "tmpfs", "options": opts}));
            }
        }
        let mut annotations = serde_json::Map::new();
        for (k, v) in &self.labels {
            annotations.insert(k.clone(), json!(v));
        }
        if let Some(s) = &self.stop_signal {
            annotations.insert(STOP_SIGNAL.into(), json!(s));
        }
        if let Some(t) = self.stop_timeout {
            annotations.insert(STOP_TIMEOUT.into(), json!(t.to_string()));
        }
        if self.vm {
            annotations.insert(ISOLATION.into(), json!("vm"));
        }
        if !annotations.is_empty() {
            doc["annotations"] = Value::Object(annotations);
        }
        if self.privileged {
            // Docker's --privileged: every capability (set by the caller), no seccomp, nothing
            // masked or read-only, /sys writable, every device allowed and the host's device
            // nodes created in the container's /dev (its own devpts stays: no host terminal).
            if let Some(l) = doc["linux"].as_object_mut() {
                l.remove("seccomp");
                l.insert("maskedPaths".into(), json!([]));
                l.insert("readonlyPaths".into(), json!([]));
                l.insert("devices".into(), Value::Array(host_devices()));
            }
            doc["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
            if let Some(mounts) = doc["mounts"].as_array_mut() {
                for m in mounts.iter_mut() {
                    if m["destination"] == "/sys" {
                        m["options"] = json!(["nosuid", "noexec", "nodev"]);
                    }
                }
            }
        }
    }
}

/// "All capabilities": those of [`ALL_CAPABILITIES`] this process holds in its bounding set
/// (a host may lack some, e.g. CAP_SYS_RESOURCE, and asking for one it lacks fails the start).
pub fn host_capabilities() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapBnd:"))
                .and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// The host's device nodes under /dev (one level of subdirectories; not pts, shm, mqueue) as
/// OCI devices.
fn host_devices() -> Vec<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = vec![];
    let mut dirs = vec![(std::path::PathBuf::from("/dev"), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = md.file_type();
            let name = e.file_name();
            if ft.is_dir()
                && depth == 0
                && !["pts", "shm", "mqueue"].contains(&&*name.to_string_lossy())
            {
                dirs.push((path, 1));
            } else if ft.is_char_device() || ft.is_block_device() {
                let rdev = md.rdev();
                out.push(json!({
                    "path": path,
                    "type": if ft.is_char_device() { "c" } else { "b" },
                    "major": libc::major(rdev),
                    "minor": libc::minor(rdev),
                    "fileMode": md.mode() & 0o7777,
                    "uid": md.uid(),
                    "gid": md.gid(),
                }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_as_dockers() {
        assert_eq!(
            parse_mount("type=bind,source=/tmp,target=/data,readonly").unwrap(),
            Mount::Bind(Bind {
                source: "/tmp".into(),
                volume: false,
                destination: "/data".into(),
                readonly: true
            })
        );
        assert_eq!(
            parse_mount("src=vol1,dst=/v").unwrap(),
            Mount::Bind(Bind {
                source: "vol1".into(),
                volume: true,
                destination: "/v".into(),
                readonly: false
            })
        );
        assert_eq!(
            parse_mount("type=tmpfs,target=/run,tmpfs-size=1m,tmpfs-mode=1770").unwrap(),
            Mount::Tmpfs("/run".into(), "size=1048576,mode=1770".into())
        );
        for bad in [
            "type=bind,source=relative,target=/x",
            "type=bind,source=/no/such/dir/here,target=/x",
            "type=nfs,target=/x",
            "type=volume,target=relative",
            "type=tmpfs,source=x,target=/t",
            "type=bind,source=/tmp,target=/x,bogus=1",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_cpus_ulimits() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2mb"), Ok(2 << 20));
        for bad in ["", "x", "-1m", "1t"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_cpus("0.5"), Ok(0.5));
        assert!(parse_cpus("0").is_err() && parse_cpus("many").is_err());
        assert_eq!(
            parse_ulimit("nofile=1024:2048"),
            Ok(("RLIMIT_NOFILE".into(), 1024, 2048))
        );
        assert_eq!(
            parse_ulimit("core=-1"),
            Ok(("RLIMIT_CORE".into(), u64::MAX, u64::MAX))
        );
        for bad in ["nofile", "files=1", "nofile=2:1", "nofile=a"] {
            assert!(parse_ulimit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn capabilities_follow_docker() {
        assert_eq!(parse_capability("net_admin"), Ok("CAP_NET_ADMIN".into()));
        assert_eq!(
            parse_capability("CAP_SYS_ADMIN"),
            Ok("CAP_SYS_ADMIN".into())
        );
        assert!(parse_capability("CAP_FLY").is_err());
        let hc = HostConfig {
            cap_drop: vec!["CAP_CHOWN".into()],
            cap_add: vec!["CAP_NET_ADMIN".into()],
            ..Default::default()
        };
        let caps = hc.capabilities(&["CAP_CHOWN", "CAP_KILL"]);
        assert_eq!(caps, ["CAP_KILL", "CAP_NET_ADMIN"]);
        let hc = HostConfig {
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["CAP_KILL".into()],
            ..Default::default()
        };
        assert_eq!(hc.capabilities(&["CAP_CHOWN", "CAP_KILL"]), ["CAP_KILL"]);
        let hc = HostConfig {
            privileged: true,
            ..Default::default()
        };
        assert_eq!(hc.capabilities(&[]), host_capabilities());
        assert!(host_capabilities().contains(&"CAP_CHOWN".to_string()));
    }

    #[test]
    fn restart_policies() {
        for p in [
            "no",
            "always",
            "unless-stopped",
            "on-failure",
            "on-failure:3",
        ] {
            assert_eq!(RestartPolicy::parse(p).unwrap().encode(), p);
        }
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
        let f = RestartPolicy::OnFailure(2);
        assert!(f.restarts(1, 0, false) && f.restarts(1, 1, false) && !f.restarts(1, 2, false));
        assert!(!f.restarts(0, 0, false));
        assert!(RestartPolicy::Always.restarts(0, 99, false));
        assert!(!RestartPolicy::Always.restarts(1, 0, true));
        assert!(!RestartPolicy::No.restarts(1, 0, false));
    }

    #[test]
    fn binds_tmpfs_labels() {
        let b = parse_bind("/tmp:/data:ro").unwrap();
        assert_eq!(
            (b.source.as_str(), b.destination.as_str(), b.readonly),
            ("/tmp", "/data", true)
        );
        for bad in [
            "bad name:/data",
            "/tmp:rel",
            "/tmp:/",
            "/tmp:/d:rx",
            "rel",
            "a:b:c:d",
        ] {
            assert!(parse_bind(bad).is_err(), "{bad}");
        }
        let v = parse_bind("data:/d").unwrap();
        assert!(v.volume && v.source == "data");
        let anon = parse_bind("/cache").unwrap();
        assert!(anon.volume && anon.source.is_empty() && anon.destination == "/cache");
        assert_eq!(
            parse_bind("/no/such/dir:/d"),
            Err(FlagError::NoSource("/no/such/dir".into()))
        );
        assert_eq!(
            parse_tmpfs("/run:size=1m"),
            Ok(("/run".into(), "size=1m".into()))
        );
        assert!(parse_tmpfs("run").is_err());
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_label("=x").is_err());
    }

    #[test]
    fn apply_sets_resources_and_privileges() {
        let mut doc = json!({
            "process": {},
            "mounts": [{"destination": "/dev", "type": "tmpfs"}, {"destination": "/dev/pts", "type": "devpts"},
                       {"destination": "/sys", "type": "sysfs", "options": ["ro"]}],
            "linux": {"resources": {}, "maskedPaths": ["/proc/kcore"], "seccomp": {}},
        });
        let hc = HostConfig {
            memory: Some(64 << 20),
            cpus: Some(1.5),
            pids_limit: Some(0),
            ulimits: vec![("RLIMIT_NOFILE".into(), 10, 20)],
            labels: vec![("k".into(), "v".into())],
            stop_signal: Some("SIGINT".into()),
            privileged: true,
            ..Default::default()
        };
        hc.apply(&mut doc);
        let r = &doc["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(r["memory"]["swap"], 128 << 20);
        assert_eq!(r["cpu"]["quota"], 150_000);
        assert_eq!(r["pids"]["limit"], -1);
        assert_eq!(doc["process"]["rlimits"][0]["soft"], 10);
        assert_eq!(doc["annotations"]["k"], "v");
        assert_eq!(doc["annotations"][STOP_SIGNAL], "SIGINT");
        assert!(doc["linux"].get("seccomp").is_none());
        assert_eq!(doc["linux"]["maskedPaths"], json!([]));
        assert_eq!(
            doc["mounts"][2]["options"],
            json!(["nosuid", "noexec", "nodev"])
        );
        let devices = doc["linux"]["devices"].as_array().unwrap();
        assert!(devices
            .iter()
            .any(|d| d["path"] == "/dev/null" && d["type"] == "c"));
        assert!(!devices
            .iter()
            .any(|d| d["path"].as_str().unwrap().starts_with("/dev/pts/")));
    }
}
