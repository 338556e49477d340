//! The OCI config of a container: the image's config (entrypoint, command, env, user, working
//! directory) merged with the user's flags over Docker's defaults.

use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use crate::defaults;
use crate::EngineError;

/// How the container's network is set up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// Its own network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
    /// Its own namespace, joined to bridge networks (Docker's default: the `bridge` network)
    /// as [`RunOptions::net`] says.
    #[default]
    Bridge,
    /// The namespace of another (running) container: its name or id.
    Container(String),
}

impl Network {
    /// Parses `--network` / `NetworkMode`: `none`, `host`, `container:NAME`, or a network's
    /// name (`bridge`, `default` or a user-defined one): `Bridge` and that network.
    pub fn parse(mode: &str) -> (Network, Option<String>) {
        match mode {
            "none" => (Network::None, None),
            "host" => (Network::Host, None),
            "" | "default" | "bridge" => (Network::Bridge, Some("bridge".into())),
            m => match m.strip_prefix("container:") {
                Some(c) => (Network::Container(c.into()), None),
                None => (Network::Bridge, Some(m.into())),
            },
        }
    }
}

/// What `moat run` was asked for.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Image name or id.
    pub image: String,
    /// Command (replaces the image's Cmd).
    pub cmd: Vec<String>,
    /// `--entrypoint` (replaces the image's Entrypoint and clears its Cmd).
    pub entrypoint: Option<Vec<String>>,
    /// `-e KEY=VALUE` (or `-e KEY`, taken from moat's environment).
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u user[:group]`.
    pub user: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--rm`.
    pub rm: bool,
    /// `--network`.
    pub network: Network,
    /// With [`Network::Bridge`]: the networks to join and the ports to publish (no network
    /// named: the default `bridge`).
    pub net: crate::network::Plan,
    /// `-P`: publish every port the image exposes.
    pub publish_all: bool,
    /// `--init`: moat's own init (`/sbin/docker-init`) as pid 1, the command its child.
    pub init: bool,
    /// `--read-only`.
    pub read_only: bool,
    /// `--security-opt seccomp=unconfined`: no seccomp filter.
    pub seccomp_unconfined: bool,
    /// `--security-opt no-new-privileges`.
    pub no_new_privileges: bool,
    /// Resources, capabilities, privileges, mounts, rlimits, labels, stop settings.
    pub host: crate::hostconfig::HostConfig,
    /// `-t`: a terminal, of this size (rows, columns) when known.
    pub tty: bool,
    /// The caller's terminal size for `-t`.
    pub tty_size: Option<(u16, u16)>,
    /// `--restart`.
    pub restart: crate::hostconfig::RestartPolicy,
    /// `--health-*`, `--no-healthcheck`, the API's `Config.Healthcheck`: merged over the
    /// image's `HEALTHCHECK`.
    pub healthcheck: Option<crate::health::Healthcheck>,
}

/// The program and arguments Docker would run.
pub fn command(image_config: &Value, opts: &RunOptions) -> Result<Vec<String>, EngineError> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (entrypoint, cmd) = match &opts.entrypoint {
        // --entrypoint also drops the image's Cmd, as Docker does.
        Some(ep) => (ep.clone(), opts.cmd.clone()),
        None => (
            strings(&image_config["Entrypoint"]),
            if opts.cmd.is_empty() {
                strings(&image_config["Cmd"])
            } else {
                opts.cmd.clone()
            },
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(EngineError::NoCommand(opts.image.clone()));
    }
    Ok(args)
}

/// A file of the image read with every path component resolved inside `rootfs` (an image's
/// `/etc/passwd` may be a symlink to `/etc/shadow` or anything else of the host's, so string
/// joining would read the host's file); empty when it is missing or unreadable.
fn read_in_root(rootfs: &Path, path: &str) -> String {
    use std::io::Read;
    let Ok(root) = std::fs::File::open(rootfs) else {
        return String::new();
    };
    let mut out = String::new();
    if let Ok(fd) =
        moat_runtime::rootfs::safe::open_in_root(std::os::fd::AsFd::as_fd(&root), Path::new(path))
    {
        // The descriptor is O_PATH: reopen it for reading through /proc (no path walk).
        let reopen = moat_runtime::rootfs::safe::fd_path(&fd);
        if let Ok(mut f) = std::fs::File::open(reopen) {
            let _ = f.read_to_string(&mut out);
        }
    }
    out
}

/// Resolves `user[:group]` (names or numbers) against the image's /etc/passwd and /etc/group.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<(u32, u32, Vec<u32>), EngineError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd");
    let groups = read_in_root(rootfs, "etc/group");
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || (f[2] == user && user.parse::<u32>().is_ok())));
    let (uid, mut gid) = match (&entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().map_err(|_| EngineError::User(spec.into()))?,
            f[3].parse().map_err(|_| EngineError::User(spec.into()))?,
        ),
        (None, Ok(n)) => (n, 0),
        (None, Err(_)) => return Err(EngineError::User(spec.into())),
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| EngineError::User(spec.into()))?,
        };
    }
    // Supplementary groups: those listing the user by name (Docker adds them too).
    let name = entry.as_ref().map(|f| f[0]).unwrap_or("");
    let extra: Vec<u32> = groups
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && !name.is_empty() && f[3].split(',').any(|m| m == name))
        .filter_map(|f| f[2].parse().ok())
        .filter(|g| *g != gid)
        .collect();
    Ok((uid, gid, extra))
}

/// Everything the config needs besides the image and the options.
#[derive(Debug)]
pub struct Context<'a> {
    /// The container's id.
    pub id: &'a str,
    /// The mounted root filesystem (for user lookups).
    pub rootfs: &'a Path,
    /// The container's directory (holds hosts, hostname, resolv.conf).
    pub dir: &'a Path,
    /// The network namespace to join (a bridge container's pin, or another container's);
    /// `None` with [`Network::None`]: a new one.
    pub netns: Option<&'a Path>,
    /// With `--init`: the init binary to mount at [`INIT_PATH`].
    pub init: Option<&'a Path>,
}

/// Changes a container's saved OCI config (`<dir>/config.json`) with `edit`, which returns
/// whether it changed anything; a change is written whole to a temporary file and renamed over
/// the config, so a reader sees the old config or the new one.
pub fn edit_config(
    dir: &Path,
    edit: impl FnOnce(&mut Value) -> Result<bool, EngineError>,
) -> Result<(), EngineError> {
    let path = dir.join("config.json");
    let io = |what: &'static str| {
        let path = path.clone();
        move |source| EngineError::Io { what, path, source }
    };
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).map_err(io("read"))?)
        .map_err(|e| EngineError::Spec(format!("{}: {e}", path.display())))?;
    if !edit(&mut doc)? {
        return Ok(());
    }
    let tmp = dir.join("config.json.edit");
    let text = serde_json::to_vec(&doc).map_err(|e| EngineError::Spec(e.to_string()))?;
    std::fs::write(&tmp, text).map_err(io("write"))?;
    std::fs::rename(&tmp, &path).map_err(io("rename"))
}

/// Where `--init`'s init is mounted in the container (Docker's path).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// Builds the OCI config.
pub fn build(
    image_config: &Value,
    opts: &RunOptions,
    ctx: &Context<'_>,
) -> Result<Spec, EngineError> {
    let cfg = &image_config["config"];
    let mut args = command(cfg, opts)?;
    if ctx.init.is_some() {
        args.splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
    }
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| ctx.id[..12].to_string());
    let mut env: Vec<String> = cfg["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, defaults::PATH.to_string());
    }
    env.push(format!("HOSTNAME={hostname}"));
    if opts.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    for e in &opts.env {
        let kv = if e.contains('=') {
            e.clone()
        } else {
            match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue, // Docker drops `-e NAME` when NAME is unset.
            }
        };
        let key = kv.split('=').next().unwrap_or_default().to_string();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(kv);
    }
    let user_spec = opts
        .user
        .clone()
        .or_else(|| {
            cfg["User"]
                .as_str()
                .filter(|u| !u.is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| "0".into());
    let (uid, gid, extra) = resolve_user(ctx.rootfs, &user_spec)?;
    let cwd = opts
        .workdir
        .clone()
        .or_else(|| {
            cfg["WorkingDir"]
                .as_str()
                .filter(|w| !w.is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(EngineError::Workdir(cwd));
    }
    let caps = json!(opts.host.capabilities(&defaults::CAPABILITIES));
    // A non-root user keeps only the bounding set, as under Docker (CapEff and CapPrm 0).
    let held = if uid == 0 { caps.clone() } else { json!([]) };
    let mut mounts: Vec<Value> = defaults::mounts()
        .into_iter()
        .map(|(d, t, s, o)| json!({"destination": d, "type": t, "source": s, "options": o}))
        .collect();
    for f in ["hosts", "hostname", "resolv.conf"] {
        mounts.push(json!({
            "destination": format!("/etc/{f}"), "type": "bind",
            "source": ctx.dir.join(f), "options": ["rbind", "rprivate"]
        }));
    }
    if let Some(init) = ctx.init {
        // Read-only: the container runs the file but can never write it (CVE-2019-5736's
        // lesson for any host binary a container executes).
        mounts.push(json!({
            "destination": INIT_PATH, "type": "bind",
            "source": init, "options": ["bind", "ro", "nosuid", "nodev", "rprivate"]
        }));
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    match (&opts.network, ctx.netns) {
        (Network::Host, _) => {}
        (_, Some(path)) => namespaces.push(json!({"type": "network", "path": path})),
        (_, None) => namespaces.push(json!({"type": "network"})),
    }
    let doc = json!({
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs", "readonly": opts.read_only},
        "hostname": hostname,
        "process": {
            "terminal": opts.tty,
            "user": {"uid": uid, "gid": gid, "additionalGids": extra},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": held, "permitted": held},
            "noNewPrivileges": opts.no_new_privileges,
        },
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": defaults::MASKED_PATHS,
            "readonlyPaths": defaults::READONLY_PATHS,
            "cgroupsPath": format!("/moat/{}", ctx.id),
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
        },
    });
    let mut doc = doc;
    if !opts.seccomp_unconfined && !opts.host.privileged {
        doc["linux"]["seccomp"] = crate::seccomp::default_profile();
    }
    opts.host.apply(&mut doc);
    if let (true, Some((rows, cols))) = (opts.tty, opts.tty_size) {
        doc["process"]["consoleSize"] = json!({"height": rows, "width": cols});
    }
    serde_json::from_value(doc).map_err(|e| EngineError::Spec(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_follows_docker_rules() {
        let img = json!({"Entrypoint": ["/ep"], "Cmd": ["default"]});
        let o = |cmd: &[&str], ep: Option<&[&str]>| RunOptions {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            entrypoint: ep.map(|e| e.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        assert_eq!(command(&img, &o(&[], None)).unwrap(), ["/ep", "default"]);
        assert_eq!(command(&img, &o(&["x"], None)).unwrap(), ["/ep", "x"]);
        assert_eq!(
            command(&img, &o(&[], Some(&["/other"]))).unwrap(),
            ["/other"]
        );
        assert_eq!(command(&img, &o(&["y"], Some(&[]))).unwrap(), ["y"]);
        assert!(command(&json!({}), &o(&[], None)).is_err());
    }

    #[test]
    fn users_resolve_by_name_and_number() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nbob:x:1000:\nwheel:x:10:bob\n",
        )
        .unwrap();
        assert_eq!(
            resolve_user(dir.path(), "bob").unwrap(),
            (1000, 1000, vec![10])
        );
        assert_eq!(
            resolve_user(dir.path(), "1000:wheel").unwrap(),
            (1000, 10, vec![])
        );
        assert_eq!(
            resolve_user(dir.path(), "4242:4343").unwrap(),
            (4242, 4343, vec![])
        );
        assert!(resolve_user(dir.path(), "nobody-here").is_err());
        // An image whose passwd is a symlink to the host's file: resolved inside the image,
        // where it does not exist, so the host's users are not visible.
        let evil = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(evil.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", evil.path().join("etc/passwd")).unwrap();
        assert!(resolve_user(evil.path(), "root").is_err());
        assert!(resolve_user(dir.path(), "bob:nogroup").is_err());
    }
}
