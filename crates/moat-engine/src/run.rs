//! `moat create` and `moat run`: a container from an image.
//!
//! The container's directory `<root>/containers/<id>/` is its OCI bundle: `config.json`, the
//! overlay root filesystem (`rootfs/`, over the image's snapshots, with `upper/` and `work/`,
//! mounted while it runs), the generated `hosts`, `hostname` and `resolv.conf`, and its log
//! `<id>-json.log`. Its record is a row of the container table.

use std::fs;
use std::path::{Path, PathBuf};

use moat_image::ImageStore;

use crate::containers::{Records, Row};
use crate::lifecycle::Attach;
use crate::logs::Rotation;
use crate::spec::{build, Context, Network, RunOptions};
use crate::{EngineError, Paths};

/// A new container id: 64 random hex digits, as Docker's.
pub fn new_id() -> Result<String, EngineError> {
    moat_runtime::id::random_hex(32).map_err(|source| EngineError::Io {
        what: "read",
        path: "/dev/urandom".into(),
        source,
    })
}

/// Removes a half-made container directory when dropped, unless disarmed.
struct Dir {
    path: PathBuf,
    armed: bool,
}

impl Drop for Dir {
    fn drop(&mut self) {
        if self.armed {
            let _ = moat_image::mount::unmount(&self.path.join("rootfs"));
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn write(path: &Path, data: &str) -> Result<(), EngineError> {
    fs::write(path, data).map_err(|source| EngineError::Io {
        what: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// What `create` needs beyond the run options.
#[derive(Debug, Clone, Default)]
pub struct CreateExtras {
    /// `--name` (generated when absent).
    pub name: Option<String>,
    /// `--log-opt` rotation.
    pub rotation: Rotation,
    /// `--detach-keys` (Docker's syntax) for the container's attached starts.
    pub detach_keys: Option<String>,
}

/// Creates a container (`moat create`, the first half of `run`): its directory with the OCI
/// bundle (config.json, rootfs/upper/work, hosts, hostname, resolv.conf) and its record, in state
/// `created`. Nothing is left behind when it fails.
pub fn create(paths: &Paths, opts: &RunOptions, extras: &CreateExtras) -> Result<Row, EngineError> {
    create_as(paths, opts, extras, new_id()?).map(|(row, _)| row)
}

/// [`create`] with the id chosen by the caller ([`new_id`]); also the records' connection it
/// used (see [`run`]).
fn create_as(
    paths: &Paths,
    opts: &RunOptions,
    extras: &CreateExtras,
    id: String,
) -> Result<(Row, Records), EngineError> {
    if opts.host.vm {
        crate::vm::check_create(&opts.network)?;
    }
    log::debug!("create: begin");
    let store = ImageStore::open(&paths.images())?;
    log::debug!("create: store open");
    let image = store.resolve(&opts.image).map_err(|e| match e {
        moat_image::StoreError::NoSuchImage(_) => EngineError::NoImage(opts.image.clone()),
        other => other.into(),
    })?;
    let (_row, config, _) = store.inspect(&image)?;
    log::debug!("create: image config read");
    let lowers = store.lowers(&image)?;
    log::debug!("create: image resolved");
    // The store's connection goes on as the records' (the same database): a second connect
    // and schema load cost ~1 ms here.
    let (conn, db_path) = store.into_db().into_connection();
    let records = Records::with_connection(conn, db_path)?;
    log::debug!("create: records open");
    let name = match &extras.name {
        Some(n) => {
            crate::containers::check_name(n)?;
            n.clone()
        }
        None => crate::containers::generated_name(&records, &id)?,
    };
    let path = paths.container_dir(&id);
    let rootfs = path.join("rootfs");
    let mut dir = Dir {
        path: path.clone(),
        armed: true,
    };
    for d in [&rootfs, &path.join("upper"), &path.join("work")] {
        fs::create_dir_all(d).map_err(|source| EngineError::Io {
            what: "create",
            path: d.clone(),
            source,
        })?;
    }
    // Which image the container uses: `rmi` refuses to remove it while the directory exists.
    write(&path.join("image.id"), image.as_str())?;
    if opts.host.vm {
        write(&path.join(crate::vm::MARKER), "")?;
    }
    if extras.detach_keys.is_some() {
        crate::monitor::save_detach_keys(&path, extras.detach_keys.as_deref())?;
    }
    // Mounted now, as Docker does at create: the user is resolved in the image's /etc/passwd.
    // It stays mounted until the container's first run ends (or `rm`).
    moat_image::mount::mount_overlay(
        &paths.images(),
        &lowers,
        &path.join("upper"),
        &path.join("work"),
        &rootfs,
        opts.rm,
    )?;
    log::debug!("create: rootfs mounted");
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    write(&path.join("hostname"), &format!("{hostname}\n"))?;
    write(
        &path.join("hosts"),
        &format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"),
    )?;
    let netns = network_plan(paths, &records, opts, &config, &id, &path)?;
    let embedded_dns = opts.network == Network::Bridge
        && crate::network::load(&path)
            .and_then(|p| p.networks.first().map(|n| n.network != "bridge"))
            .unwrap_or(false);
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut resolv = crate::network::resolv_conf(&host_resolv, embedded_dns, &opts.net.dns);
    // Only loopback resolvers on the host (systemd-resolved's stub): its upstreams, else
    // Docker's defaults, as dockerd does.
    if !resolv.lines().any(|l| l.starts_with("nameserver")) {
        let upstream = fs::read_to_string("/run/systemd/resolve/resolv.conf").unwrap_or_default();
        resolv = crate::network::resolv_conf(&upstream, false, &[]);
        if !resolv.lines().any(|l| l.starts_with("nameserver")) {
            resolv.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        }
    }
    write(&path.join("resolv.conf"), &resolv)?;
    // Volumes named in -v are made now (an existing one is used as it is).
    let mut opts = opts.clone();
    if opts.host.binds.iter().any(|b| b.volume) {
        let volumes = crate::volumes::Volumes::open(paths)?;
        for b in opts.host.binds.iter_mut().filter(|b| b.volume) {
            let name = volumes.create((!b.source.is_empty()).then_some(b.source.as_str()), &[])?;
            let dir = volumes.mountpoint(&name);
            // An empty volume gets the image's content at its mount point, as Docker's.
            crate::cp::copy_up(&rootfs, &b.destination, &dir)?;
            b.source = dir.to_string_lossy().into_owned();
            b.volume = false;
        }
    }
    let opts = &opts;
    let init = if opts.init {
        Some(init_binary(paths)?)
    } else {
        None
    };
    let spec = build(
        &config,
        opts,
        &Context {
            id: &id,
            rootfs: &rootfs,
            dir: &path,
            netns: netns.as_deref(),
            init: init.as_deref(),
        },
    )?;
    spec.save(path.join("config.json"))
        .map_err(|e| EngineError::Spec(e.to_string()))?;
    // The create event's labels, from the config in hand (not read back on `run`'s path).
    let labels = crate::inspect::labels_of(
        spec.annotations()
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let image_check = crate::health::Healthcheck::of_image(&config);
    if let Some(check) =
        crate::health::Healthcheck::merged(opts.healthcheck.as_ref(), image_check.as_ref())
    {
        check.validate()?;
        crate::health::save_config(&path, &check)?;
    }
    let row = Row {
        id: id.clone(),
        name,
        image: image.as_str().to_string(),
        image_ref: opts.image.clone(),
        // The user's command: `--init`'s own prefix is not shown, as Docker does not.
        command: spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default()
            .into_iter()
            .skip(if init.is_some() { 2 } else { 0 })
            .collect(),
        created: moat_runtime::state::now_rfc3339(),
        auto_remove: opts.rm,
        log_rotation: extras.rotation.encode(),
        tty: opts.tty,
        restart: opts.restart.encode(),
        ..Default::default()
    };
    let mut row = row;
    match records.insert(&row) {
        // A generated name another create took meanwhile (concurrent creates, as an API server
        // sees them): the id-suffixed form is unique.
        Err(crate::containers::RecordError::NameInUse { .. }) if extras.name.is_none() => {
            row.name = format!("{}_{}", row.name, &row.id[..8]);
            records.insert(&row)?;
        }
        other => other?,
    }
    dir.armed = false;
    crate::events::container_labelled(paths, "create", &row, &labels, &[]);
    Ok((row, records))
}

/// Runs a container (`create` + `start`). Detached: returns once it runs, with its id.
/// Attached: waits for it, forwarding signals, with its exit code (Docker's: the container's,
/// or 125/126/127 when it cannot start).
pub fn run(
    paths: &Paths,
    opts: &RunOptions,
    extras: &CreateExtras,
    mode: Attach,
) -> Result<(Row, i32), EngineError> {
    // The monitor is forked first and starts up (exec, its own set-up) on the other core while
    // the container is created here. Forked from this thread, not from one of its own: a new
    // thread took 1.6-3 ms to be scheduled on this machine's idle vCPU, and a fork then copied
    // a larger address space (measured A/B: 1.42 -> 1.33x crun). A failure to start it ahead
    // is not one: the start then spawns it as `start` does.
    let id = new_id()?;
    let ahead = crate::lifecycle::prespawn(paths, &id);
    let created = create_as(paths, opts, extras, id);
    let pending = match ahead {
        Ok(p) => Some(p),
        Err(e) => {
            log::debug!("run: no monitor ahead ({e})");
            None
        }
    };
    // The connection stays open until the run ends: while one is open, the monitor's
    // connections (at the start and at the exit) find SQLite's WAL index valid; the first
    // connection of all truncates and rebuilds it, and the truncation frees disk blocks, which
    // a filesystem mounted with `discard` pays for at once.
    let (row, _held) = created?;
    log::debug!("run: created {}", row.id);
    // Docker keeps a container that failed to start (unless --rm): the error is all to do.
    let (handle, pid) = match pending {
        Some(p) => crate::lifecycle::start_pending(paths, &row, mode, p)?,
        None => crate::lifecycle::start(paths, &row, mode)?,
    };
    if mode == Attach::Detached {
        return Ok((row, 0));
    }
    log::debug!("run: started, pid {pid}");
    let code = crate::lifecycle::wait_attached(paths, &row, handle, pid)?;
    log::debug!("run: exited with {code}");
    Ok((row, code))
}

/// `<root>/bin/docker-init`: a copy of this binary (which acts as an init under that name) for
/// `--init` containers to mount, made or refreshed when it differs from the running binary.
fn init_binary(paths: &Paths) -> Result<PathBuf, EngineError> {
    let target = paths.root.join("bin").join("docker-init");
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::Io { what, path, source }
    };
    let exe = Path::new("/proc/self/exe");
    let current = fs::read(exe).map_err(io("read", exe))?;
    if fs::read(&target).is_ok_and(|t| t == current) {
        return Ok(target);
    }
    let dir = paths.root.join("bin");
    fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let tmp = dir.join(format!(".docker-init.{}", std::process::id()));
    fs::write(&tmp, &current).map_err(io("write", &tmp))?;
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o555))
        .map_err(io("chmod", &tmp))?;
    fs::rename(&tmp, &target).map_err(io("rename", &tmp))?;
    Ok(target)
}

/// The container's network plan, checked (the networks exist, the container to share a
/// namespace with runs) and saved in its directory; the namespace it will join.
fn network_plan(
    paths: &Paths,
    records: &Records,
    opts: &RunOptions,
    image_config: &serde_json::Value,
    id: &str,
    dir: &Path,
) -> Result<Option<PathBuf>, EngineError> {
    match &opts.network {
        Network::None | Network::Host => Ok(None),
        Network::Container(target) => {
            let row = records.find(target)?;
            let (state, _) = row.effective();
            if row.pid <= 0 || state != crate::containers::State::Running {
                return Err(EngineError::Conflict(format!(
                    "cannot join network namespace of container {target}: it is not running"
                )));
            }
            crate::network::save(
                dir,
                &crate::network::Plan {
                    container: Some(target.clone()),
                    ..Default::default()
                },
            )?;
            let pin = crate::network::config(paths).netns_path(&row.id);
            Ok(Some(if pin.exists() {
                pin
            } else {
                PathBuf::from(format!("/proc/{}/ns/net", row.pid))
            }))
        }
        Network::Bridge => {
            let mut plan = opts.net.clone();
            if plan.networks.is_empty() {
                plan.networks.push(moat_net::Request {
                    network: "bridge".into(),
                    ..Default::default()
                });
            }
            if opts.publish_all {
                for p in crate::network::exposed(image_config) {
                    let dup = plan
                        .ports
                        .iter()
                        .any(|q| q.proto == p.proto && q.container_port == p.container_port);
                    if !dup {
                        plan.ports.push(p);
                    }
                }
            }
            // Each network must exist now, as Docker refuses at create (the default bridge
            // always does: its record is made at the first start, off the create path).
            if plan.networks.iter().any(|r| r.network != "bridge") {
                check_networks(paths, &mut plan)?;
            }
            crate::network::save(dir, &plan)?;
            Ok(Some(crate::network::config(paths).netns_path(id)))
        }
    }
}

/// The plan's networks exist and are bridge networks; named by their names from now on.
fn check_networks(paths: &Paths, plan: &mut crate::network::Plan) -> Result<(), EngineError> {
    let mut nets = crate::network::open(paths)?;
    for r in &mut plan.networks {
        let n = nets.get(&r.network)?;
        if n.driver != "bridge" {
            return Err(moat_net::NetError::NotBridge(n.name).into());
        }
        r.network = n.name;
    }
    Ok(())
}

/// How old a `.rm-<id>` directory must be before a sweep takes it (its monitor deletes it
/// within milliseconds of reporting the exit; older ones are what a monitor killed mid-way left).
pub const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Deletes the container directories nobody owns, at least [`ABANDONED_AFTER`] old (see
/// [`sweep`]); returns how many went. Run by `container prune`.
pub fn sweep_removed(paths: &Paths) -> usize {
    sweep(paths, ABANDONED_AFTER)
}

/// Deletes the container directories nobody owns once they are `min_age` old: `.rm-<id>` ones
/// whose monitor was killed between renaming and deleting them, and ones without a record (a
/// `create` killed between making the directory and recording it). Their rootfs mount and
/// network pin go first (a delete through a mounted rootfs would reach into the image's
/// layers). A directory younger than `min_age` may be a `create` under way, and is left.
/// Returns how many went.
pub fn sweep(paths: &Paths, min_age: std::time::Duration) -> usize {
    // Without the records, an unrecorded directory cannot be told from a recorded one.
    let known: Option<Vec<String>> = Records::open(&paths.root)
        .and_then(|r| r.all())
        .ok()
        .map(|rows| rows.into_iter().map(|r| r.id).collect());
    let now = std::time::SystemTime::now();
    let mut n = 0;
    for e in fs::read_dir(paths.root.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= min_age);
        let name = e.file_name().to_string_lossy().into_owned();
        let id = name.strip_prefix(".rm-").unwrap_or(&name).to_string();
        let orphan = name.starts_with(".rm-") || known.as_ref().is_some_and(|k| !k.contains(&id));
        if !(orphan && old) {
            continue;
        }
        moat_net::netns::remove(&crate::network::config(paths).netns_path(&id));
        let rootfs = e.path().join("rootfs");
        if moat_image::mount::unmount(&rootfs).is_ok() && fs::remove_dir_all(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// Containers (ids) whose directory says they use `image`.
pub fn containers_using(root: &Path, image: &moat_image::Digest) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(root.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        // `.rm-<id>`: a removed container's directory being deleted.
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| {
            fs::read_to_string(e.path().join("image.id")).is_ok_and(|s| s.trim() == image.as_str())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}
