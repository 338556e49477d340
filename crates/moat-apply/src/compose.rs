//! The Compose-specification file, as far as `moat apply` carries it out: parsed strictly
//! (an unknown key is an error naming its path and line; a key of the specification that moat
//! does not carry out yet is refused by name, never silently ignored), interpolated first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::interpolate::{dotenv, interpolate, InterpolateError};

/// Why a compose file is refused.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Interpolation failed.
    #[error("{path}: {source}")]
    Interpolate {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: InterpolateError,
    },
    /// YAML that does not fit the specification (unknown key, wrong type).
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key's path (`services.web.ports`).
        key: String,
        /// What is wrong, with the line and column.
        message: String,
    },
    /// A key of the specification moat does not carry out yet.
    #[error("{path}: {key}: not supported by moat apply yet{at}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The key's path.
        key: String,
        /// ` (line N)` where the key is, when found.
        at: String,
    },
    /// A reference to something not declared, or a cycle.
    #[error("{path}: {key}: {message}")]
    Reference {
        /// The file.
        path: PathBuf,
        /// The key's path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ComposeError {
    /// Names the line of the key a check after parsing found at fault (the parser's own
    /// errors carry theirs).
    fn at_line(self, text: &str) -> ComposeError {
        let line = |key: &str| {
            locate(text, key.split(": ").next().unwrap_or(key))
                .map_or(String::new(), |n| format!(" (line {n})"))
        };
        match self {
            ComposeError::Reference { path, key, message } => {
                let at = line(&key);
                ComposeError::Reference {
                    path,
                    message: format!("{message}{at}"),
                    key,
                }
            }
            ComposeError::Unsupported { path, key, .. } => ComposeError::Unsupported {
                at: line(&key),
                path,
                key,
            },
            other => other,
        }
    }
}

/// The line (from 1) of key `path` (`services.web.depends_on`) in block-style YAML `text`: the
/// deepest of its components found, each looked for among the lines indented under the one
/// before (a flow-style value, `{...}`, gives its parent's line).
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (mut from, mut to, mut found) = (0, lines.len(), None);
    let mut parent_indent: Option<usize> = None;
    for part in path.split('.') {
        let hit = (from..to).find(|&i| {
            let l = lines[i];
            let t = l.trim_start();
            parent_indent.is_none_or(|p| indent(l) > p)
                && (t.starts_with(&format!("{part}:")) || t.starts_with(&format!("\"{part}\":")))
        });
        let Some(i) = hit else { break };
        found = Some(i + 1);
        let own = indent(lines[i]);
        parent_indent = Some(own);
        from = i + 1;
        to = (from..lines.len())
            .find(|&j| !lines[j].trim().is_empty() && indent(lines[j]) <= own)
            .unwrap_or(lines.len());
    }
    found
}

pub use crate::values::*;

/// A service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Image (required: moat apply does not build).
    pub image: Option<String>,
    /// Replaces the image's Cmd.
    pub command: Option<Command>,
    /// Replaces the image's Entrypoint.
    pub entrypoint: Option<Command>,
    /// Environment.
    pub environment: Option<Pairs>,
    /// Files of `KEY=VALUE` lines (relative to the compose file) under `environment`, which
    /// wins; merged into `environment` when the file is loaded.
    #[serde(default, skip_serializing)]
    pub env_file: Option<EnvFiles>,
    /// Labels of the containers.
    pub labels: Option<Pairs>,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Networks (the project's `default` when absent).
    pub networks: Option<ServiceNetworks>,
    /// `HOST:CONTAINER[:ro]` or `VOLUME:CONTAINER[:ro]`.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-w`.
    pub working_dir: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--read-only`.
    #[serde(default)]
    pub read_only: bool,
    /// `--init`.
    #[serde(default)]
    pub init: bool,
    /// `--restart`.
    pub restart: Option<String>,
    /// `--cap-add`.
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `-m`.
    pub mem_limit: Option<Scalar>,
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// Start order.
    pub depends_on: Option<DependsOn>,
    /// Replicas.
    pub deploy: Option<Deploy>,
    /// `--stop-signal`.
    pub stop_signal: Option<String>,
    /// moat's own extensions of a service.
    #[serde(rename = "x-moat")]
    pub x_moat: Option<XMoat>,
    /// `healthcheck` (over the image's `HEALTHCHECK`).
    pub healthcheck: Option<HealthcheckDef>,
    /// A key of the specification not carried out: kept to be refused by name.
    #[serde(default, skip_serializing)]
    pub build: Option<serde_yaml_ng::Value>,
    /// Secrets projected into the containers (`/run/secrets/...`).
    #[serde(default, skip_serializing)]
    pub secrets: Vec<crate::files::FileRef>,
    /// Configs projected into the containers.
    #[serde(default, skip_serializing)]
    pub configs: Vec<crate::files::FileRef>,
    /// `secrets` and `configs` resolved at load (their digests are part of the hash).
    #[serde(default, skip_deserializing)]
    pub projected: Vec<crate::files::Projected>,
}

/// A top-level network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDef {
    /// bridge only.
    pub driver: Option<String>,
    /// `--internal`.
    #[serde(default)]
    pub internal: bool,
    /// Subnets.
    pub ipam: Option<Ipam>,
    /// Labels.
    pub labels: Option<Pairs>,
}

/// `ipam`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipam {
    /// Ignored driver name (`default`).
    pub driver: Option<String>,
    /// Subnets.
    #[serde(default)]
    pub config: Vec<IpamConfig>,
}

/// One subnet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamConfig {
    /// CIDR.
    pub subnet: Option<String>,
    /// Gateway.
    pub gateway: Option<String>,
}

/// A top-level volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeDef {
    /// `local` only.
    pub driver: Option<String>,
    /// Labels.
    pub labels: Option<Pairs>,
}

/// A compose file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComposeFile {
    /// Obsolete, accepted.
    pub version: Option<String>,
    /// The project's name.
    pub name: Option<String>,
    /// Services.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// Networks (`null` values: defaults).
    #[serde(default)]
    pub networks: BTreeMap<String, Option<NetworkDef>>,
    /// Volumes.
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<VolumeDef>>,
    /// Secrets (`file:`).
    #[serde(default)]
    pub secrets: BTreeMap<String, crate::files::FileDef>,
    /// Configs (`file:`).
    #[serde(default)]
    pub configs: BTreeMap<String, crate::files::FileDef>,
    /// `x-*` extensions (and unknown keys, refused after parsing).
    #[serde(flatten, skip_serializing)]
    pub extensions: BTreeMap<String, serde_yaml_ng::Value>,
}

impl ComposeFile {
    /// Reads, interpolates (environment, then `.env` beside the file) and checks `path`.
    pub fn load(path: &Path) -> Result<ComposeFile, ComposeError> {
        Ok(crate::revisions::capture(path, &Self::variables(path))?.0)
    }

    /// The variables a file at `path` is interpolated with: the environment, then `.env`
    /// beside it.
    pub fn variables(path: &Path) -> impl Fn(&str) -> Option<String> {
        let env_file = path.parent().unwrap_or(Path::new(".")).join(".env");
        let dot = std::fs::read_to_string(env_file)
            .map(|t| dotenv(&t))
            .unwrap_or_default();
        move |k: &str| {
            std::env::var(k)
                .ok()
                .or_else(|| dot.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        }
    }

    /// Interpolates `text` with `lookup`, checks it, and reads what it refers to beside
    /// `path` (env files, secrets, configs).
    pub fn load_text(
        text: &str,
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ComposeFile, ComposeError> {
        let mut file = Self::parse(text, path, lookup)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        file.merge_env_files(dir)?;
        // Keys without a value take the environment's now (a revision records them with the
        // interpolation's variables, and the service's hash covers them), not whichever
        // environment a later plan runs in (`moat serve`'s).
        for s in file.services.values_mut() {
            if let Some(env) = &s.environment {
                let resolved = env
                    .entries(lookup)
                    .into_iter()
                    .map(|(k, v)| (k, Some(Scalar::Str(v))))
                    .collect();
                s.environment = Some(Pairs::Map(resolved));
            }
        }
        for (name, s) in file.services.iter_mut() {
            use crate::files::{resolve, Kind};
            let mut p = resolve(Kind::Secret, name, &s.secrets, &file.secrets, dir, path)?;
            p.extend(resolve(
                Kind::Config,
                name,
                &s.configs,
                &file.configs,
                dir,
                path,
            )?);
            s.projected = p;
        }
        Ok(file)
    }

    /// Each service's `env_file`s read (relative to `dir`) and merged under its
    /// `environment`: the files in order, then `environment` over them, as Compose does.
    fn merge_env_files(&mut self, dir: &Path) -> Result<(), ComposeError> {
        for s in self.services.values_mut() {
            let Some(files) = s.env_file.take() else {
                continue;
            };
            let mut merged: BTreeMap<String, Option<Scalar>> = BTreeMap::new();
            for f in files.paths() {
                let p = dir.join(f);
                let text = std::fs::read_to_string(&p)
                    .map_err(|source| ComposeError::Read { path: p, source })?;
                for (k, v) in dotenv(&text) {
                    merged.insert(k, Some(Scalar::Str(v)));
                }
            }
            match s.environment.take() {
                Some(Pairs::Map(m)) => merged.extend(m),
                Some(Pairs::List(l)) => {
                    for e in l {
                        match e.split_once('=') {
                            Some((k, v)) => merged.insert(k.into(), Some(Scalar::Str(v.into()))),
                            None => merged.insert(e, None),
                        };
                    }
                }
                None => {}
            }
            s.environment = Some(Pairs::Map(merged));
        }
        Ok(())
    }

    /// Parses `text` (named `path` in errors).
    pub fn parse(
        text: &str,
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ComposeFile, ComposeError> {
        let text = interpolate(text, lookup).map_err(|source| ComposeError::Interpolate {
            path: path.to_path_buf(),
            source,
        })?;
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        let file: ComposeFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let message = match inner.location() {
                Some(l) => format!("{inner} (line {}, column {})", l.line(), l.column()),
                None => inner.to_string(),
            };
            ComposeError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            }
        })?;
        file.check(path).map_err(|e| e.at_line(&text))?;
        Ok(file)
    }

    /// What typing cannot say: unknown top-level keys, unsupported keys, references, cycles.
    fn check(&self, path: &Path) -> Result<(), ComposeError> {
        let err = |key: String, message: String| ComposeError::Reference {
            path: path.to_path_buf(),
            key,
            message,
        };
        let unsupported = |key: String| ComposeError::Unsupported {
            path: path.to_path_buf(),
            key,
            at: String::new(),
        };
        for k in self.extensions.keys() {
            if !k.starts_with("x-") {
                return Err(ComposeError::Invalid {
                    path: path.to_path_buf(),
                    key: k.clone(),
                    message: "unknown top-level key (expected services, networks, volumes, name, version or x-*)".into(),
                });
            }
        }
        if self.services.is_empty() {
            return Err(err("services".into(), "no services declared".into()));
        }
        for (name, s) in &self.services {
            let key = |k: &str| format!("services.{name}.{k}");
            if s.build.is_some() {
                return Err(unsupported(key("build")));
            }
            if let Some(r) = &s.restart {
                moat_engine::hostconfig::RestartPolicy::parse(r)
                    .map_err(|e| err(key("restart"), e.to_string()))?;
            }
            if let Some(u) = s.deploy.as_ref().and_then(|d| d.update_config.as_ref()) {
                u.rollout().map_err(|(k, message)| {
                    err(key(&format!("deploy.update_config.{k}")), message)
                })?;
            }
            if let Some(h) = &s.healthcheck {
                h.healthcheck()
                    .map_err(|(k, message)| err(key(&format!("healthcheck.{k}")), message))?;
            }
            if s.image.is_none() {
                return Err(err(
                    key("image"),
                    "an image is required (moat apply does not build)".into(),
                ));
            }
            if let Some(DependsOn::Map(m)) = &s.depends_on {
                for (d, c) in m {
                    if !matches!(
                        c.condition.as_str(),
                        "service_started" | "service_healthy" | "service_completed_successfully"
                    ) {
                        return Err(unsupported(format!(
                            "services.{name}.depends_on.{d}.condition: {}",
                            c.condition
                        )));
                    }
                }
            }
            for d in s.depends_on.iter().flat_map(DependsOn::names) {
                if !self.services.contains_key(&d) {
                    return Err(err(
                        key("depends_on"),
                        format!("service {d} is not declared"),
                    ));
                }
            }
            for n in self.service_networks(name) {
                if n != "default" && !self.networks.contains_key(&n) {
                    return Err(err(key("networks"), format!("network {n} is not declared")));
                }
            }
        }
        self.order().map(|_| ()).map_err(|cycle| {
            err(
                format!(
                    "services.{}.depends_on",
                    cycle.first().map_or("", String::as_str)
                ),
                format!("a cycle: {}", cycle.join(" -> ")),
            )
        })
    }

    /// The networks service `name` joins, with their settings (`default` when none is named).
    pub fn service_networks(&self, name: &str) -> Vec<String> {
        self.service_network_settings(name)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    /// As [`ComposeFile::service_networks`], with each network's settings.
    pub fn service_network_settings(&self, name: &str) -> Vec<(String, ServiceNetwork)> {
        match self.services.get(name).and_then(|s| s.networks.as_ref()) {
            None => vec![("default".into(), ServiceNetwork::default())],
            Some(ServiceNetworks::List(l)) => l
                .iter()
                .map(|n| (n.clone(), ServiceNetwork::default()))
                .collect(),
            Some(ServiceNetworks::Map(m)) => m
                .iter()
                .map(|(n, s)| (n.clone(), s.clone().unwrap_or_default()))
                .collect(),
        }
    }

    /// The services in start order (dependencies first); `Err` with a cycle.
    pub fn order(&self) -> Result<Vec<String>, Vec<String>> {
        let mut done: Vec<String> = vec![];
        let mut stack: Vec<String> = vec![];
        fn visit(
            f: &ComposeFile,
            s: &str,
            done: &mut Vec<String>,
            stack: &mut Vec<String>,
        ) -> Result<(), Vec<String>> {
            if done.iter().any(|d| d == s) {
                return Ok(());
            }
            if let Some(at) = stack.iter().position(|x| x == s) {
                let mut cycle = stack[at..].to_vec();
                cycle.push(s.to_string());
                return Err(cycle);
            }
            stack.push(s.to_string());
            let deps = f.services.get(s).and_then(|x| x.depends_on.clone());
            for d in deps.iter().flat_map(DependsOn::names) {
                visit(f, &d, done, stack)?;
            }
            stack.pop();
            done.push(s.to_string());
            Ok(())
        }
        for s in self.services.keys() {
            visit(self, s, &mut done, &mut stack)?;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ComposeFile, ComposeError> {
        ComposeFile::parse(text, Path::new("c.yaml"), &|k| {
            (k == "TAG").then(|| "7".to_string())
        })
    }

    #[test]
    fn a_file_with_the_supported_keys() {
        let f = parse(
            "name: shop\nx-common: &c\n  restart: always\nservices:\n  web:\n    image: busybox:${TAG}\n    command: sh -c 'echo \"a b\"'\n    environment:\n      A: 1\n      B: \"two\"\n    ports: [\"8080:80\", 9000]\n    networks:\n      front:\n        aliases: [www]\n    depends_on: [db]\n    deploy: {replicas: 3}\n  db:\n    image: busybox\n    environment: [X=1]\nnetworks:\n  front:\n    internal: true\n",
        )
        .unwrap();
        let web = &f.services["web"];
        assert_eq!(web.image.as_deref(), Some("busybox:7"));
        assert_eq!(
            web.command.as_ref().unwrap().argv(),
            ["sh", "-c", "echo \"a b\""]
        );
        assert_eq!(
            web.environment.as_ref().unwrap().entries(&|_| None),
            [
                ("A".to_string(), "1".to_string()),
                ("B".into(), "two".into())
            ]
        );
        assert_eq!(web.ports[1].flag(), "9000");
        assert_eq!(f.service_network_settings("web")[0].1.aliases, ["www"]);
        assert_eq!(f.service_networks("db"), ["default"]);
        assert_eq!(f.order().unwrap(), ["db", "web"]);
        assert_eq!(web.deploy.as_ref().unwrap().replicas, Some(3));
    }

    #[test]
    fn env_files_lie_under_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.env"),
            "# comment\nA=from-file\nB=file\nexport C=c\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("more.env"), "B=second-file\n").unwrap();
        let compose = dir.path().join("compose.yaml");
        std::fs::write(
            &compose,
            "services:\n  web:\n    image: busybox\n    env_file: [base.env, more.env]\n    environment:\n      - A=from-environment\n",
        )
        .unwrap();
        let f = ComposeFile::load(&compose).unwrap();
        let env = f.services["web"]
            .environment
            .as_ref()
            .unwrap()
            .entries(&|_| None);
        assert_eq!(
            env,
            vec![
                ("A".to_string(), "from-environment".to_string()),
                ("B".into(), "second-file".into()),
                ("C".into(), "c".into()),
            ]
        );
        // A missing file is an error naming it.
        std::fs::write(
            &compose,
            "services:\n  web:\n    image: busybox\n    env_file: nope.env\n",
        )
        .unwrap();
        let e = ComposeFile::load(&compose).unwrap_err().to_string();
        assert!(e.contains("nope.env"), "{e}");
    }

    #[test]
    fn bad_files_are_refused_by_key_and_line() {
        let e = parse("services:\n  web:\n    image: x\n    imagee: y\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("services.web") && e.contains("imagee") && e.contains("line 4"),
            "{e}"
        );
        let e = parse("services:\n  web:\n    image: x\n    ports: {a: 1}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("services.web.ports"), "{e}");
        let e = parse("services:\n  web:\n    image: x\n    healthcheck: {test: [x]}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("services.web.healthcheck.test"), "{e}");
        let e = parse("services:\n  web:\n    image: x\n    healthcheck: {interval: 10}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("services.web.healthcheck"), "{e}");
        let e = parse(
            "services:\n  web:\n    image: x\n    healthcheck: {test: \"true\", intervall: 1s}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("intervall"), "{e}");
        let f = parse(
            "services:\n  web:\n    image: x\n    healthcheck:\n      test: wget -q localhost\n      interval: 1m30s\n      retries: 2\n  db:\n    image: x\n    healthcheck: {disable: true}\n",
        )
        .unwrap();
        let h = f.services["web"]
            .healthcheck
            .as_ref()
            .unwrap()
            .healthcheck()
            .unwrap();
        assert_eq!(h.test, ["CMD-SHELL", "wget -q localhost"]);
        assert_eq!((h.interval, h.retries), (90_000_000_000, 2));
        let h = f.services["db"]
            .healthcheck
            .as_ref()
            .unwrap()
            .healthcheck()
            .unwrap();
        assert_eq!(h.test, ["NONE"]);
        let e = parse("service:\n  web: {image: x}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown top-level key"), "{e}");
        let e = parse(
            "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cycle"), "{e}");
        assert!(
            e.contains("services.a.depends_on") && e.contains("(line 2)"),
            "{e}"
        );
        let e = parse("services:\n  web:\n    image: x\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 1y2\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("services.web.healthcheck.interval") && e.contains("(line 6)"),
            "{e}"
        );
        let e = parse("services:\n  web:\n    image: x\n    build: .\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("services.web.build") && e.contains("(line 4)"),
            "{e}"
        );
        let e = parse("services:\n  a: {image: x, networks: [nope]}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("network nope is not declared"), "{e}");
        let e = parse("services:\n  a: {image: \"${NOPE:?must be set}\"}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("NOPE") && e.contains("must be set"), "{e}");
        let e = parse("services:\n  a: {command: x}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("image is required"), "{e}");
    }
}
