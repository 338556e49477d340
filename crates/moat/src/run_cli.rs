//! `moat run` and `moat create`: a container from an image.

use std::path::Path;

use clap::Args;
use moat_engine::hostconfig::HostConfig;
use moat_engine::lifecycle::Attach;
use moat_engine::logs::Rotation;
use moat_engine::run::CreateExtras;
use moat_engine::spec::{Network, RunOptions};
use moat_engine::{EngineError, Paths};

/// `moat run` and `moat create`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Keep standard input open (the container reads moat's stdin).
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Container name.
    #[arg(long)]
    name: Option<String>,
    /// Log driver options: max-size=SIZE, max-file=N (json-file).
    #[arg(long)]
    log_opt: Vec<String>,
    #[command(flatten)]
    resources: ResourceArgs,
    /// Resource limit NAME=SOFT[:HARD]; repeatable.
    #[arg(long)]
    ulimit: Vec<String>,
    /// Add a capability (or ALL); repeatable.
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop a capability (or ALL); repeatable.
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Every capability and device, no seccomp, nothing masked.
    #[arg(long)]
    privileged: bool,
    /// Bind mount HOST-PATH:CONTAINER-PATH[:ro]; repeatable.
    #[arg(short = 'v', long)]
    volume: Vec<String>,
    /// Mount a tmpfs at PATH[:OPTIONS]; repeatable.
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Forward the signals moat receives to the container (attached runs); with false, a
    /// signal stops moat and the container runs on.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    sig_proxy: bool,
    /// Attach a mount: type=bind|volume|tmpfs,source=...,target=...[,readonly]; repeatable.
    #[arg(long)]
    mount: Vec<String>,
    /// Set a label KEY=VALUE; repeatable.
    #[arg(short = 'l', long)]
    label: Vec<String>,
    /// Read environment variables from a file; repeatable.
    #[arg(long)]
    env_file: Vec<std::path::PathBuf>,
    /// Signal that `stop` sends (default SIGTERM).
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL (default 10).
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Restart policy: no, always, unless-stopped, on-failure[:MAX].
    #[arg(long, default_value = "no")]
    restart: String,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass moat's own value); repeatable.
    #[arg(short, long)]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// User (name or uid, optionally :group).
    #[arg(short, long)]
    user: Option<String>,
    /// Container host name.
    #[arg(long)]
    hostname: Option<String>,
    /// Override the image's entrypoint ("" clears it).
    #[arg(long)]
    entrypoint: Option<String>,
    /// Network: bridge (the default), a user-defined network's name, none (loopback only),
    /// host, or container:NAME.
    #[arg(long, visible_alias = "net")]
    network: Option<String>,
    /// Healthcheck flags.
    #[command(flatten)]
    health: HealthArgs,
    /// Isolation: default or process (namespaces on the host kernel), vm or hyperv (a micro-VM
    /// with its own kernel).
    #[arg(long, default_value = "default")]
    isolation: String,
    /// Address on the network (user-defined networks).
    #[arg(long)]
    ip: Option<String>,
    /// MAC address (02:42:ac:11:00:02).
    #[arg(long)]
    mac_address: Option<String>,
    /// Another name of the container on its network.
    #[arg(long = "network-alias", visible_alias = "net-alias")]
    network_alias: Vec<String>,
    /// Publish a container's port: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// DNS server (the embedded DNS forwards to it on user-defined networks); repeatable.
    #[arg(long)]
    dns: Vec<String>,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    init: bool,
    /// Publish every port the image exposes on a port the kernel picks.
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Security options: seccomp=unconfined, no-new-privileges.
    #[arg(long)]
    security_opt: Vec<String>,
    /// The keys that detach from the container's terminal (Docker's syntax: `ctrl-p,ctrl-q`,
    /// the default).
    #[arg(long)]
    detach_keys: Option<String>,
    /// Pull the image before creating: missing (when not in the store), always, never.
    #[arg(long, default_value = "missing", value_parser = ["missing", "always", "never"])]
    pull: String,
    /// Image, then the command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    image_and_command: Vec<String>,
}

/// `moat run`: the exit code (the container's, or Docker's 125/126/127).
pub fn run(root: &Path, a: &RunArgs) -> i32 {
    log::debug!("run: parsed");
    let Some((paths, opts, extras)) = prepare(root, a) else {
        return 125;
    };
    let mode = if a.detach {
        Attach::Detached
    } else {
        Attach::Attached {
            stdin: a.interactive,
            sig_proxy: a.sig_proxy,
        }
    };
    match with_pull(root, a, &opts.image, || {
        // -it on a terminal: ours goes raw (keys, Ctrl-C included, go to the container's
        // terminal) until the container exits; not while a pull prints its progress.
        let _raw = (a.tty && a.interactive && !a.detach)
            .then(RawMode::enter)
            .flatten();
        moat_engine::run::run(&paths, &opts, &extras, mode)
    }) {
        Ok((row, code)) => {
            if a.detach {
                println!("{}", row.id);
            }
            code
        }
        Err(e) => {
            log::error!("{e}");
            e.exit_code()
        }
    }
}

/// `moat create`: prints the new container's id.
pub fn create(root: &Path, a: &RunArgs) -> i32 {
    let Some((paths, opts, extras)) = prepare(root, a) else {
        return 125;
    };
    match with_pull(root, a, &opts.image, || {
        moat_engine::run::create(&paths, &opts, &extras)
    }) {
        Ok(row) => {
            println!("{}", row.id);
            0
        }
        Err(e) => {
            log::error!("{e}");
            125
        }
    }
}

/// Why `run`/`create` failed: the engine, or the pull it needed.
#[derive(Debug, thiserror::Error)]
enum RunFailure {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Pull(#[from] crate::registry_cli::RegistryCliError),
}

impl RunFailure {
    /// Docker's exit code: the engine's, or 125 for a failed pull.
    fn exit_code(&self) -> i32 {
        match self {
            RunFailure::Engine(e) => e.exit_code(),
            RunFailure::Pull(_) => 125,
        }
    }
}

/// Runs `f` with the image pulled as `--pull` says: before (`always`), or when `f` finds it
/// missing (`missing`, Docker's default: "Unable to find image ... locally").
fn with_pull<T>(
    root: &Path,
    a: &RunArgs,
    image: &str,
    f: impl Fn() -> Result<T, EngineError>,
) -> Result<T, RunFailure> {
    match a.pull.as_str() {
        "always" => {
            crate::registry_cli::pull_quietly(root, image)?;
            Ok(f()?)
        }
        "missing" => match f() {
            Err(EngineError::NoImage(_)) if image.parse::<moat_image::Reference>().is_ok() => {
                eprintln!("Unable to find image '{image}' locally");
                crate::registry_cli::pull_quietly(root, image)?;
                Ok(f()?)
            }
            other => Ok(other?),
        },
        _ => Ok(f()?),
    }
}

/// Checks the flags and turns them into the engine's options (errors are printed here).
fn prepare(root: &Path, a: &RunArgs) -> Option<(Paths, RunOptions, CreateExtras)> {
    let paths = Paths::new(root);
    if let Err(e) = std::fs::create_dir_all(&paths.runtime_root) {
        log::error!("create {}: {e}", paths.runtime_root.display());
        return None;
    }
    // No re-execution from a sealed copy here (CVE-2019-5736): this process never enters the
    // container, and the monitor that starts it is exec'd from a sealed view.
    let rotation = match Rotation::parse(&a.log_opt) {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return None;
        }
    };
    let (image, cmd) = match a.image_and_command.split_first() {
        Some((i, c)) => (i.clone(), c.to_vec()),
        None => return None,
    };
    let mut seccomp_unconfined = false;
    let mut no_new_privileges = false;
    for o in &a.security_opt {
        match o.as_str() {
            "seccomp=unconfined" | "seccomp:unconfined" => seccomp_unconfined = true,
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {
                no_new_privileges = true
            }
            "no-new-privileges=false" | "no-new-privileges:false" => no_new_privileges = false,
            other => {
                log::error!("--security-opt {other:?} is not supported (seccomp=unconfined, no-new-privileges)");
                return None;
            }
        }
    }
    let host = match host_config(a) {
        Ok(h) => h,
        Err(e) => {
            log::error!("{e}");
            return None;
        }
    };
    let restart = match moat_engine::hostconfig::RestartPolicy::parse(&a.restart) {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return None;
        }
    };
    if a.rm && restart != moat_engine::hostconfig::RestartPolicy::No {
        log::error!("Conflicting options: --restart and --rm");
        return None;
    }
    let mut env = vec![];
    for f in &a.env_file {
        match std::fs::read_to_string(f) {
            Ok(text) => env.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            ),
            Err(e) => {
                log::error!("open {}: {e}", f.display());
                return None;
            }
        }
    }
    env.extend(a.env.iter().cloned());
    let (network, net) = match net_plan(a) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("moat: {e}");
            return None;
        }
    };
    let opts = RunOptions {
        image,
        cmd,
        entrypoint: a.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                vec![]
            } else {
                vec![e.clone()]
            }
        }),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        rm: a.rm,
        network,
        net,
        publish_all: a.publish_all,
        init: a.init,
        read_only: a.read_only,
        seccomp_unconfined,
        no_new_privileges,
        host,
        tty: a.tty,
        tty_size: moat_engine::monitor::console::caller_size(),
        restart,
        healthcheck: match a.health.flags().healthcheck() {
            Ok(h) => h,
            Err(e) => {
                log::error!("{e}");
                return None;
            }
        },
    };
    if let Some(k) = &a.detach_keys {
        if let Err(e) = moat_engine::monitor::parse_detach_keys(k) {
            log::error!("{e}");
            return None;
        }
    }
    let extras = CreateExtras {
        name: a.name.clone(),
        rotation,
        detach_keys: a.detach_keys.clone(),
    };
    Some((paths, opts, extras))
}

/// Docker's healthcheck flags on `run` and `create`.
#[derive(Debug, Args, Default)]
pub struct HealthArgs {
    /// Command to run to check health (by the container's /bin/sh).
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between checks (ms|s|m|h), default 30s.
    #[arg(long)]
    health_interval: Option<String>,
    /// Longest time a check may run (ms|s|m|h), default 30s.
    #[arg(long)]
    health_timeout: Option<String>,
    /// Failures in a row that make the container unhealthy, default 3.
    #[arg(long)]
    health_retries: Option<i64>,
    /// Start period in which failures do not count (ms|s|m|h).
    #[arg(long)]
    health_start_period: Option<String>,
    /// Time between checks during the start period (ms|s|m|h), default 5s.
    #[arg(long)]
    health_start_interval: Option<String>,
    /// Disable any healthcheck the image defines.
    #[arg(long)]
    no_healthcheck: bool,
}

impl HealthArgs {
    fn flags(&self) -> moat_engine::health::Flags {
        moat_engine::health::Flags {
            cmd: self.health_cmd.clone(),
            interval: self.health_interval.clone(),
            timeout: self.health_timeout.clone(),
            start_period: self.health_start_period.clone(),
            start_interval: self.health_start_interval.clone(),
            retries: self.health_retries,
            none: self.no_healthcheck,
        }
    }
}

/// The resource flags `run`, `create` and `update` share.
#[derive(Debug, Args, Default)]
pub struct ResourceArgs {
    /// Memory limit (e.g. 512m).
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Memory plus swap limit (-1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Number of CPUs (e.g. 0.5).
    #[arg(long)]
    cpus: Option<String>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long)]
    cpu_shares: Option<u64>,
    /// CPUs in which to allow execution (e.g. 0-1).
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Process limit (-1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
}

impl ResourceArgs {
    /// A host config with these resources (and nothing else) set, each value checked.
    pub fn host(&self) -> Result<HostConfig, String> {
        use moat_engine::hostconfig as h;
        let e = |e: h::FlagError| e.to_string();
        Ok(HostConfig {
            memory: self
                .memory
                .as_deref()
                .map(h::parse_size)
                .transpose()
                .map_err(e)?,
            memory_swap: match self.memory_swap.as_deref() {
                Some("-1") => Some(-1),
                Some(s) => Some(h::parse_size(s).map_err(e)?),
                None => None,
            },
            cpus: self
                .cpus
                .as_deref()
                .map(h::parse_cpus)
                .transpose()
                .map_err(e)?,
            cpu_shares: self.cpu_shares,
            cpuset_cpus: self.cpuset_cpus.clone(),
            pids_limit: self.pids_limit,
            ..Default::default()
        })
    }
}

/// The network flags, checked: the mode and the plan (networks, ports).
fn net_plan(a: &RunArgs) -> Result<(Network, moat_engine::network::Plan), String> {
    use moat_engine::network as n;
    let mode = a.network.as_deref().unwrap_or("bridge");
    let (network, name) = Network::parse(mode);
    let mut plan = n::Plan::default();
    if let Some(name) = name {
        plan.networks.push(moat_net::Request {
            network: name,
            ip: a
                .ip
                .as_deref()
                .map(n::parse_ip)
                .transpose()
                .map_err(|e| e.to_string())?,
            mac: a
                .mac_address
                .as_deref()
                .map(n::parse_mac)
                .transpose()
                .map_err(|e| e.to_string())?,
            aliases: a.network_alias.clone(),
        });
    }
    for d in &a.dns {
        plan.dns.push(
            d.parse()
                .map_err(|_| format!("invalid DNS server address {d:?}"))?,
        );
    }
    for p in &a.publish {
        plan.ports
            .extend(n::parse_publish(p).map_err(|e| e.to_string())?);
    }
    if network != Network::Bridge && (!plan.ports.is_empty() || a.publish_all) {
        // Docker publishes nothing on host and none: say so rather than ignore it.
        eprintln!("WARNING: Published ports are discarded when using host, none or container network modes");
        plan.ports.clear();
    }
    Ok((network, plan))
}

/// The HostConfig flags, each value checked (the first bad one is the error).
fn host_config(a: &RunArgs) -> Result<HostConfig, String> {
    use moat_engine::hostconfig as h;
    let e = |e: h::FlagError| e.to_string();
    let stop_signal = match &a.stop_signal {
        Some(s) => {
            moat_runtime::ops::parse_signal(s).map_err(|e| format!("--stop-signal: {e}"))?;
            Some(s.clone())
        }
        None => None,
    };
    let cap_add: Vec<String> = a
        .cap_add
        .iter()
        .map(|c| h::parse_capability(c))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    // Only read when there is something to check (not on every run).
    let held = if cap_add.is_empty() {
        vec![]
    } else {
        h::host_capabilities()
    };
    if let Some(c) = cap_add.iter().find(|c| *c != "ALL" && !held.contains(c)) {
        return Err(format!(
            "--cap-add {c}: this host does not grant {c} (it is not in moat's bounding set)"
        ));
    }
    let base = a.resources.host()?;
    Ok(HostConfig {
        ulimits: a
            .ulimit
            .iter()
            .map(|u| h::parse_ulimit(u))
            .collect::<Result<_, _>>()
            .map_err(e)?,
        cap_add,
        cap_drop: a
            .cap_drop
            .iter()
            .map(|c| h::parse_capability(c))
            .collect::<Result<_, _>>()
            .map_err(e)?,
        privileged: a.privileged,
        binds: a
            .volume
            .iter()
            .map(|v| h::parse_bind(v))
            .collect::<Result<_, _>>()
            .map_err(e)?,
        tmpfs: a
            .tmpfs
            .iter()
            .map(|t| h::parse_tmpfs(t))
            .collect::<Result<_, _>>()
            .map_err(e)?,
        labels: a
            .label
            .iter()
            .map(|l| h::parse_label(l))
            .collect::<Result<_, _>>()
            .map_err(e)?,
        stop_signal,
        stop_timeout: a.stop_timeout,
        vm: h::parse_isolation(&a.isolation).map_err(e)?,
        ..base
    })
    .and_then(|mut hc| {
        for m in &a.mount {
            match h::parse_mount(m).map_err(e)? {
                h::Mount::Bind(b) => hc.binds.push(b),
                h::Mount::Tmpfs(path, opts) => hc.tmpfs.push((path, opts)),
            }
        }
        Ok(hc)
    })
}

/// The caller's terminal in raw mode; restored when dropped.
pub struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    /// Puts standard input's terminal in raw mode until dropped (None: not a terminal).
    pub fn enter() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}
