//! A project's plan: what its compose file declares against what runs, as actions, and their
//! execution through the engine in dependency order.
//!
//! What a project owns carries docker-compose's labels (`com.docker.compose.project`,
//! `.service`, `.container-number`, `.network`), and each container the hash of its service's
//! effective configuration (`com.docker.compose.config-hash`): a container is replaced only
//! when that hash changes, so a second `apply` of the same file does nothing.

use std::collections::BTreeMap;
use std::fmt;

use moat_engine::containers::{Records, Row, State};
use moat_engine::hostconfig::{self, HostConfig, RestartPolicy};
use moat_engine::lifecycle::Attach;
use moat_engine::run::CreateExtras;
use moat_engine::spec::{Network, RunOptions};
use moat_engine::{EngineError, Paths};
use sha2::Digest as _;

use crate::compose::{ComposeFile, Service};

/// docker-compose's label names.
pub const PROJECT: &str = "com.docker.compose.project";
/// See [`PROJECT`].
pub const SERVICE: &str = "com.docker.compose.service";
/// See [`PROJECT`].
pub const NUMBER: &str = "com.docker.compose.container-number";
/// See [`PROJECT`].
pub const HASH: &str = "com.docker.compose.config-hash";
/// See [`PROJECT`].
pub const NETWORK: &str = "com.docker.compose.network";

/// Errors of planning and applying.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The networks refused or failed.
    #[error(transparent)]
    Net(#[from] moat_net::NetError),
    /// The container records failed.
    #[error(transparent)]
    Records(#[from] moat_engine::containers::RecordError),
    /// A dependency that had to complete successfully did not.
    #[error("container {container} (a dependency with condition service_completed_successfully) exited with {code}")]
    Dependency {
        /// The dependency's container.
        container: String,
        /// Its exit code.
        code: i32,
    },
    /// A container that had to become healthy (a `service_healthy` dependency, a rolling
    /// update's new container) did not.
    #[error("container {container} {why}")]
    Unhealthy {
        /// The dependency's container.
        container: String,
        /// What it did instead.
        why: &'static str,
    },
    /// A container of a rolling update did not come up.
    #[error("service {service}: {message}")]
    Rollout {
        /// The service (or the container).
        service: String,
        /// What happened.
        message: String,
    },
    /// A rolling update failed and was rolled back.
    #[error("{cause}; the update was rolled back ({replaced} of {total} containers had been replaced, now as they were)")]
    RolledBack {
        /// Containers replaced before the failure.
        replaced: usize,
        /// Containers the update was to replace.
        total: usize,
        /// The failure.
        cause: Box<PlanError>,
    },
    /// A project name Compose would refuse.
    #[error("invalid project name {0:?}: lowercase letters, digits, '-' and '_', starting with a letter or digit")]
    BadProject(String),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A service's value the engine does not accept.
    #[error("services.{service}.{key}: {message}")]
    Value {
        /// The service.
        service: String,
        /// Its key.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// One step of a plan.
#[derive(Debug)]
pub enum Action {
    /// A network to make.
    CreateNetwork(moat_net::NetworkSpec),
    /// A volume to make (its name, its project).
    CreateVolume(String, String),
    /// A container to create and start.
    Create(Box<Desired>),
    /// A container whose configuration changed: removed, then created and started anew.
    Replace(Box<Desired>, String),
    /// A container that exists as declared but does not run (and what it waits for before
    /// it starts).
    Start(String, Vec<Await>),
    /// A container the file no longer declares.
    Remove(String),
    /// A network the file no longer declares.
    RemoveNetwork(String),
    /// A volume, with `--down -v`.
    RemoveVolume(String),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateNetwork(n) => write!(f, "+ network {}", n.name),
            Action::CreateVolume(v, _) => write!(f, "+ volume {v}"),
            Action::Create(d) => write!(f, "+ container {} (service {})", d.name, d.service),
            Action::Replace(d, _) => {
                write!(
                    f,
                    "~ container {} (service {}: configuration changed)",
                    d.name, d.service
                )
            }
            Action::Start(n, _) => write!(f, "> container {n} (not running: started)"),
            Action::Remove(n) => write!(f, "- container {n}"),
            Action::RemoveNetwork(n) => write!(f, "- network {n}"),
            Action::RemoveVolume(n) => write!(f, "- volume {n}"),
        }
    }
}

/// A container as the file declares it.
#[derive(Debug)]
pub struct Desired {
    /// `PROJECT-SERVICE-N`.
    pub name: String,
    /// Its service.
    pub service: String,
    /// What `run` would be given.
    pub opts: RunOptions,
    /// What it waits for before it starts (`depends_on` conditions).
    pub after: Vec<Await>,
    /// How its service's changed containers are replaced.
    pub rollout: crate::rollout::Rollout,
    /// The services its service depends on (any condition): made before it, never beside it.
    pub deps: Vec<String>,
}

/// A container a dependent waits for, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Await {
    /// To have exited 0 (`condition: service_completed_successfully`).
    Completed(String),
    /// To be healthy (`condition: service_healthy`).
    Healthy(String),
}

/// A container with its labels.
type Labelled = (Row, BTreeMap<String, String>);

/// The project's containers that exist now, with their labels.
fn existing(paths: &Paths, project: &str) -> Result<Vec<Labelled>, PlanError> {
    let rows = Records::open(&paths.root)?.all()?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let labels: BTreeMap<String, String> = moat_engine::inspect::labels(paths, &r.id)
                .into_iter()
                .collect();
            (labels.get(PROJECT).map(String::as_str) == Some(project)).then_some((r, labels))
        })
        .collect())
}

/// The hash of a service's effective configuration (the file's service and the networks'
/// names it joins), recorded on its containers.
fn config_hash(file: &ComposeFile, name: &str, s: &Service) -> String {
    // Not `deploy`: scaling and the update's pace do not change a container.
    let s = Service {
        deploy: None,
        ..s.clone()
    };
    let doc = serde_json::json!({"service": s, "networks": file.service_network_settings(name)});
    hex::encode(sha2::Sha256::digest(doc.to_string().as_bytes()))
}

/// Refuses a project name Compose would refuse (`[a-z0-9][a-z0-9_-]*`): it names files under
/// the root, containers and networks.
pub fn check_project(name: &str) -> Result<(), PlanError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(PlanError::BadProject(name.to_string()))
    }
}

/// `PROJECT_NETWORK`, as docker-compose names them.
pub fn network_name(project: &str, net: &str) -> String {
    format!("{project}_{net}")
}

fn value_err<'a>(service: &'a str, key: &'static str) -> impl Fn(String) -> PlanError + 'a {
    move |message| PlanError::Value {
        service: service.to_string(),
        key,
        message,
    }
}

/// The run options of replica `n` of service `name`.
fn desired(
    file: &ComposeFile,
    project: &str,
    name: &str,
    n: u32,
    hash: &str,
) -> Result<Desired, PlanError> {
    let s = &file.services[name];
    let env_lookup = |k: &str| std::env::var(k).ok();
    let mut host = HostConfig::default();
    let mut labels: Vec<(String, String)> = s
        .labels
        .as_ref()
        .map(|l| l.entries(&|_| None))
        .unwrap_or_default();
    labels.extend([
        (PROJECT.to_string(), project.to_string()),
        (SERVICE.into(), name.to_string()),
        (NUMBER.into(), n.to_string()),
        (HASH.into(), hash.to_string()),
    ]);
    host.labels = labels;
    // Capability names as `--cap-add`/`--cap-drop` take them (`CHOWN` or `CAP_CHOWN`, `ALL`).
    let caps = |key: &'static str, list: &[String]| -> Result<Vec<String>, PlanError> {
        list.iter()
            .map(|c| {
                hostconfig::parse_capability(c).map_err(|e| value_err(name, key)(e.to_string()))
            })
            .collect()
    };
    host.cap_add = caps("cap_add", &s.cap_add)?;
    host.cap_drop = caps("cap_drop", &s.cap_drop)?;
    if let Some(m) = &s.mem_limit {
        let text = match m {
            crate::compose::Scalar::Str(t) => t.clone(),
            crate::compose::Scalar::Int(i) => i.to_string(),
            crate::compose::Scalar::Bool(b) => b.to_string(),
        };
        host.memory = Some(
            hostconfig::parse_size(&text)
                .map_err(|e| value_err(name, "mem_limit")(e.to_string()))?,
        );
    }
    host.cpus = s.cpus;
    host.stop_signal = s.stop_signal.clone();
    if let Some(i) = s.x_moat.as_ref().and_then(|x| x.isolation.as_deref()) {
        host.vm = hostconfig::parse_isolation(i)
            .map_err(|e| value_err(name, "x-moat.isolation")(e.to_string()))?;
    }
    for v in &s.volumes {
        let mut b =
            hostconfig::parse_bind(v).map_err(|e| value_err(name, "volumes")(e.to_string()))?;
        // A named volume the file declares is the project's.
        if b.volume && file.volumes.contains_key(&b.source) {
            b.source = network_name(project, &b.source);
        }
        host.binds.push(b);
    }
    // Secrets and configs: read-only files, as the compose file resolved them.
    for p in &s.projected {
        host.binds.push(hostconfig::Bind {
            source: p.source.clone(),
            volume: false,
            destination: p.target.clone(),
            readonly: true,
        });
    }
    let restart = match &s.restart {
        Some(r) => {
            RestartPolicy::parse(r).map_err(|e| value_err(name, "restart")(e.to_string()))?
        }
        None => RestartPolicy::default(),
    };
    let mut plan = moat_engine::network::Plan::default();
    for (net, settings) in file.service_network_settings(name) {
        let mut aliases = vec![name.to_string()];
        aliases.extend(settings.aliases.iter().cloned());
        plan.networks.push(moat_net::Request {
            network: network_name(project, &net),
            ip: settings
                .ipv4_address
                .as_deref()
                .map(moat_engine::network::parse_ip)
                .transpose()
                .map_err(|e| value_err(name, "networks")(e.to_string()))?,
            mac: None,
            aliases,
        });
    }
    for p in &s.ports {
        plan.ports.extend(
            moat_engine::network::parse_publish(&p.flag())
                .map_err(|e| value_err(name, "ports")(e.to_string()))?,
        );
    }
    // The service's replicas share its fixed host ports (new connections spread over them),
    // which is also what lets a start-first update run old and new side by side.
    for p in &mut plan.ports {
        p.group = format!("{project}/{name}");
    }
    let container = format!("{project}-{name}-{n}");
    let replicas_of = |dep: &String| -> Vec<String> {
        let replicas = file.services[dep]
            .deploy
            .as_ref()
            .and_then(|d| d.replicas)
            .unwrap_or(1);
        (1..=replicas)
            .map(|k| format!("{project}-{dep}-{k}"))
            .collect()
    };
    let deps = s.depends_on.as_ref();
    let mut after: Vec<Await> = deps
        .map(|d| d.completed())
        .unwrap_or_default()
        .iter()
        .flat_map(replicas_of)
        .map(Await::Completed)
        .collect();
    after.extend(
        deps.map(|d| d.healthy())
            .unwrap_or_default()
            .iter()
            .flat_map(replicas_of)
            .map(Await::Healthy),
    );
    let healthcheck = s
        .healthcheck
        .as_ref()
        .map(|h| h.healthcheck())
        .transpose()
        .map_err(|(k, m)| value_err(name, "healthcheck")(format!("{k}: {m}")))?;
    let rollout = s
        .deploy
        .as_ref()
        .and_then(|d| d.update_config.as_ref())
        .map(|u| u.rollout())
        .transpose()
        .map_err(|(k, m)| value_err(name, "deploy.update_config")(format!("{k}: {m}")))?
        .unwrap_or_default();
    Ok(Desired {
        after,
        rollout,
        deps: s.depends_on.as_ref().map(|d| d.names()).unwrap_or_default(),
        name: container.clone(),
        service: name.to_string(),
        opts: RunOptions {
            image: s.image.clone().unwrap_or_default(),
            cmd: s.command.as_ref().map(|c| c.argv()).unwrap_or_default(),
            entrypoint: s.entrypoint.as_ref().map(|c| c.argv()),
            env: s
                .environment
                .as_ref()
                .map(|e| e.entries(&env_lookup))
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            workdir: s.working_dir.clone(),
            user: s.user.clone(),
            hostname: Some(s.hostname.clone().unwrap_or(container)),
            network: Network::Bridge,
            net: plan,
            read_only: s.read_only,
            init: s.init,
            host,
            restart,
            healthcheck,
            ..Default::default()
        },
    })
}

/// The plan that brings `project` to what `file` declares (`down`: to nothing; `volumes`:
/// with `down`, the project's volumes too).
pub fn plan(
    paths: &Paths,
    project: &str,
    file: &ComposeFile,
    down: bool,
    volumes: bool,
) -> Result<Vec<Action>, PlanError> {
    let mut actions = vec![];
    let have = existing(paths, project)?;
    let mut nets = moat_engine::network::open(paths)?;
    let project_nets: Vec<moat_net::Network> = nets
        .list()?
        .into_iter()
        .filter(|n| n.labels.get(PROJECT).map(String::as_str) == Some(project))
        .collect();
    let mut wanted: Vec<String> = vec![];
    if !down {
        // Networks the services use, then volumes, then containers in dependency order.
        let mut used: Vec<String> = vec![];
        for s in file.services.keys() {
            for n in file.service_networks(s) {
                if !used.contains(&n) {
                    used.push(n);
                }
            }
        }
        for n in &used {
            let full = network_name(project, n);
            if project_nets.iter().any(|x| x.name == full) {
                continue;
            }
            let def = file.networks.get(n).cloned().flatten().unwrap_or_default();
            let cfg = def.ipam.as_ref().and_then(|i| i.config.first());
            let mut labels: BTreeMap<String, String> = def
                .labels
                .as_ref()
                .map(|l| l.entries(&|_| None).into_iter().collect())
                .unwrap_or_default();
            labels.insert(PROJECT.into(), project.into());
            labels.insert(NETWORK.into(), n.clone());
            let bad = |k: &str, v: &str| PlanError::Value {
                service: String::new(),
                key: "networks",
                message: format!("network {n}: invalid {k} {v:?}"),
            };
            actions.push(Action::CreateNetwork(moat_net::NetworkSpec {
                name: full,
                driver: def.driver.clone().unwrap_or_default(),
                subnet: match cfg.and_then(|c| c.subnet.as_deref()) {
                    Some(s) => Some(s.parse().map_err(|_| bad("subnet", s))?),
                    None => None,
                },
                gateway: match cfg.and_then(|c| c.gateway.as_deref()) {
                    Some(g) => Some(g.parse().map_err(|_| bad("gateway", g))?),
                    None => None,
                },
                internal: def.internal,
                labels,
                options: BTreeMap::new(),
            }));
        }
        let vols = moat_engine::volumes::Volumes::open(paths)?;
        for v in file.volumes.keys() {
            let full = network_name(project, v);
            if vols.get(&full)?.is_none() {
                actions.push(Action::CreateVolume(full, project.to_string()));
            }
        }
        let order = file
            .order()
            .unwrap_or_else(|_| file.services.keys().cloned().collect());
        for name in order {
            let s = &file.services[&name];
            let hash = config_hash(file, &name, s);
            let replicas = s.deploy.as_ref().and_then(|d| d.replicas).unwrap_or(1);
            for n in 1..=replicas {
                let d = desired(file, project, &name, n, &hash)?;
                wanted.push(d.name.clone());
                match have.iter().find(|(r, _)| r.name == d.name) {
                    None => actions.push(Action::Create(Box::new(d))),
                    // Another configuration, or changed by hand since (`update`).
                    Some((r, l))
                        if l.get(HASH) != Some(&hash)
                            || moat_engine::update::updated(paths, &r.id) =>
                    {
                        actions.push(Action::Replace(Box::new(d), r.id.clone()))
                    }
                    // Not running: started again, unless it ran to completion (exit 0) and its
                    // policy does not restart it (a one-shot job is not re-run by each apply).
                    Some((r, _)) if r.effective().0 != State::Running => {
                        let completed = r.effective().0 == State::Exited
                            && r.exit_code == 0
                            && matches!(
                                d.opts.restart,
                                RestartPolicy::No | RestartPolicy::OnFailure(_)
                            );
                        if !completed {
                            actions.push(Action::Start(r.name.clone(), d.after))
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }
    for (r, _) in &have {
        if !wanted.contains(&r.name) {
            actions.push(Action::Remove(r.name.clone()));
        }
    }
    for n in &project_nets {
        let declared = !down
            && n.labels.get(NETWORK).is_some_and(|short| {
                file.services
                    .keys()
                    .any(|s| file.service_networks(s).contains(short))
            });
        if !declared {
            actions.push(Action::RemoveNetwork(n.name.clone()));
        }
    }
    if down && volumes {
        let vols = moat_engine::volumes::Volumes::open(paths)?;
        for v in file.volumes.keys() {
            let full = network_name(project, v);
            if vols.get(&full)?.is_some() {
                actions.push(Action::RemoveVolume(full));
            }
        }
    }
    Ok(actions)
}

/// Carries out `actions` in order (each prints as it is done, through `report`); stops at the
/// first failure, which is returned (what was done stays done: the next `apply` goes on from
/// there).
pub fn execute(
    paths: &Paths,
    actions: Vec<Action>,
    report: &mut dyn FnMut(&Action),
) -> Result<(), PlanError> {
    let mut actions = actions.into_iter().peekable();
    while let Some(a) = actions.next() {
        match &a {
            Action::CreateNetwork(spec) => {
                moat_engine::network::open(paths)?.create(spec)?;
            }
            Action::CreateVolume(name, project) => {
                moat_engine::volumes::Volumes::open(paths)?
                    .create(Some(name), &[(PROJECT.to_string(), project.clone())])?;
            }
            Action::Create(d) => {
                // New containers that do not depend on one another (a service's replicas,
                // services with no dependency between them; the plan is in dependency order)
                // are made a few at a time.
                let mut services = vec![d.service.clone()];
                let mut group = vec![a];
                while let Some(Action::Create(next)) = actions.peek() {
                    if next.deps.iter().any(|s| services.contains(s)) {
                        break;
                    }
                    services.push(next.service.clone());
                    group.extend(actions.next());
                }
                create_group(paths, group, report)?;
                continue;
            }
            Action::Replace(d, _) => {
                // The service's replacements (consecutive in the plan) are one rolling update.
                let service = d.service.clone();
                let mut group = vec![a];
                while let Some(Action::Replace(next, _)) = actions.peek() {
                    if next.service != service {
                        break;
                    }
                    group.extend(actions.next());
                }
                update(paths, group, report)?;
                continue;
            }
            Action::Start(name, after) => {
                wait_for(paths, after)?;
                let row = Records::open(&paths.root)?.find(name)?;
                moat_engine::lifecycle::start(paths, &row, Attach::Detached)?;
            }
            Action::Remove(name) => remove(paths, name)?,
            Action::RemoveNetwork(name) => {
                moat_engine::network::open(paths)?.remove(name)?;
            }
            Action::RemoveVolume(name) => {
                moat_engine::volumes::Volumes::open(paths)?.remove(name)?;
            }
        }
        report(&a);
    }
    Ok(())
}

/// Runs `f` on each of `items` at once, a thread each; the results in order (a thread that
/// panicked is an error).
pub(crate) fn side_by_side<I: Sync, T: Send>(
    items: &[I],
    f: impl Fn(&I) -> Result<T, PlanError> + Sync,
) -> Vec<Result<T, PlanError>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|i| s.spawn(|| f(i))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(PlanError::Rollout {
                        service: String::new(),
                        message: "a worker thread panicked".into(),
                    })
                })
            })
            .collect()
    })
}

/// How many containers of one service are made at once.
const CREATE_PARALLELISM: usize = 4;

/// Independent `Create` actions: the containers made [`CREATE_PARALLELISM`] at a time, each
/// once what it waits for is there; the first failure is returned once the others are done.
fn create_group(
    paths: &Paths,
    group: Vec<Action>,
    report: &mut dyn FnMut(&Action),
) -> Result<(), PlanError> {
    let mut first_error = None;
    for chunk in group.chunks(CREATE_PARALLELISM) {
        let results = side_by_side(chunk, |a| match a {
            Action::Create(d) => {
                wait_for(paths, &d.after).and_then(|()| create_and_start(paths, d))
            }
            _ => Ok(()),
        });
        for (a, r) in chunk.iter().zip(results) {
            match r {
                Ok(()) => report(a),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            break;
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One service's `Replace` actions as a rolling update (see [`crate::rollout`]).
fn update(
    paths: &Paths,
    group: Vec<Action>,
    report: &mut dyn FnMut(&Action),
) -> Result<(), PlanError> {
    let mut items = vec![];
    let mut shown = BTreeMap::new();
    let mut rollout = crate::rollout::Rollout::default();
    for a in group {
        if let Action::Replace(d, old) = a {
            wait_for(paths, &d.after)?;
            rollout = d.rollout;
            // What is reported: the action, rebuilt without its options.
            shown.insert(d.name.clone(), d.service.clone());
            items.push((*d, old));
        }
    }
    crate::rollout::run(paths, items, rollout, &mut |name| {
        if let Some(service) = shown.get(name) {
            report(&Action::Replace(
                Box::new(Desired {
                    name: name.to_string(),
                    service: service.clone(),
                    opts: RunOptions::default(),
                    after: vec![],
                    rollout,
                    deps: vec![],
                }),
                String::new(),
            ));
        }
    })
}

/// Waits for each dependency: to exit (an exit other than 0 stops the plan, naming it), or to
/// be healthy (unhealthy, stopped or without a healthcheck stops the plan).
fn wait_for(paths: &Paths, after: &[Await]) -> Result<(), PlanError> {
    for a in after {
        match a {
            Await::Completed(name) => {
                let row = Records::open(&paths.root)?.find(name)?;
                let code = moat_engine::lifecycle::wait(paths, &row)?;
                if code != 0 {
                    return Err(PlanError::Dependency {
                        container: name.clone(),
                        code,
                    });
                }
            }
            Await::Healthy(name) => healthy(paths, name)?,
        }
    }
    Ok(())
}

/// Waits until container `name` is healthy: unhealthy, stopped, without a healthcheck, or
/// still not healthy when its checks would all have run (start period, then `retries` checks
/// of interval + timeout, and as much again) is an error.
pub fn healthy(paths: &Paths, name: &str) -> Result<(), PlanError> {
    use moat_engine::health::Status;
    let row = Records::open(&paths.root)?.find(name)?;
    let dir = paths.container_dir(&row.id);
    let unhealthy = |why| PlanError::Unhealthy {
        container: name.to_string(),
        why,
    };
    let Some(check) = moat_engine::health::load_config(&dir).filter(|c| c.command().is_some())
    else {
        return Err(unhealthy("has no healthcheck"));
    };
    let t = check.timing();
    let limit = t.start_period + (t.interval + t.timeout) * (t.retries + 1) * 2;
    let until = std::time::Instant::now() + limit;
    loop {
        if std::time::Instant::now() > until {
            return Err(unhealthy("did not become healthy in time"));
        }
        let row = Records::open(&paths.root)?.find(name)?;
        if row.effective().0 != State::Running {
            return Err(unhealthy("is not running"));
        }
        match moat_engine::health::load(&dir).map(|h| h.status) {
            Some(Status::Healthy) => return Ok(()),
            Some(Status::Unhealthy) => return Err(unhealthy("is unhealthy")),
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

pub(crate) fn create_and_start(paths: &Paths, d: &Desired) -> Result<(), PlanError> {
    let row = moat_engine::run::create(
        paths,
        &d.opts,
        &CreateExtras {
            name: Some(d.name.clone()),
            ..Default::default()
        },
    )?;
    moat_engine::lifecycle::start(paths, &row, Attach::Detached)?;
    Ok(())
}

pub(crate) fn remove(paths: &Paths, what: &str) -> Result<(), PlanError> {
    let row = Records::open(&paths.root)?.find(what)?;
    if row.effective().0 == State::Running {
        moat_engine::lifecycle::stop_default(paths, &row)?;
    }
    let row = Records::open(&paths.root)?.find(what)?;
    moat_engine::lifecycle::remove(paths, &row, true, false)?;
    Ok(())
}
