//! The values a compose file's keys take (commands, key/value pairs, ports, networks,
//! `depends_on`, `healthcheck`, `deploy`), typed for serde; [`crate::compose`] puts them
//! together and checks the whole.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A string or a list of strings (`command`, `entrypoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    /// Split as a shell would (Compose splits on whitespace, keeping quotes).
    Line(String),
    /// As given.
    List(Vec<String>),
}

impl Command {
    /// The argument vector.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::List(v) => v.clone(),
            Command::Line(s) => split_words(s),
        }
    }
}

/// Splits a command line as a POSIX shell's word splitting does for quotes (no expansion).
fn split_words(s: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `environment` and `labels`: a list of `KEY=VALUE` or a map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Pairs {
    /// `- KEY=VALUE` (`- KEY` alone: from moat's environment).
    List(Vec<String>),
    /// `KEY: VALUE` (a null value: from moat's environment).
    Map(BTreeMap<String, Option<Scalar>>),
}

/// `x-moat:` of a service: what moat offers beyond the Compose specification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XMoat {
    /// `process` (the default) or `vm`: the service's containers run in micro-VMs.
    pub isolation: Option<String>,
}

/// `env_file`: one path or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvFiles {
    /// One file.
    One(String),
    /// Several, later ones winning.
    Many(Vec<String>),
}

impl EnvFiles {
    pub(crate) fn paths(&self) -> Vec<&str> {
        match self {
            EnvFiles::One(p) => vec![p.as_str()],
            EnvFiles::Many(l) => l.iter().map(String::as_str).collect(),
        }
    }
}

/// A YAML scalar written where a string is meant (`PORT: 8080`, `DEBUG: true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// A number.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

impl Pairs {
    /// `KEY=VALUE` entries (a key without a value is looked up with `lookup`; dropped when
    /// unset, as Docker drops `-e KEY`).
    pub fn entries(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        let mut out = vec![];
        match self {
            Pairs::List(l) => {
                for e in l {
                    match e.split_once('=') {
                        Some((k, v)) => out.push((k.to_string(), v.to_string())),
                        None => {
                            if let Some(v) = lookup(e) {
                                out.push((e.clone(), v));
                            }
                        }
                    }
                }
            }
            Pairs::Map(m) => {
                for (k, v) in m {
                    match v {
                        Some(v) => out.push((k.clone(), v.text())),
                        None => {
                            if let Some(v) = lookup(k) {
                                out.push((k.clone(), v));
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// A port: `"8080:80"`, `80`, `"127.0.0.1:8080:80/udp"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    /// The short syntax.
    Short(String),
    /// A bare container port.
    Number(u16),
}

impl PortSpec {
    /// As `-p` takes it.
    pub fn flag(&self) -> String {
        match self {
            PortSpec::Short(s) => s.clone(),
            PortSpec::Number(n) => n.to_string(),
        }
    }
}

/// A service's `networks`: names, or names with settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServiceNetworks {
    /// `- front`.
    List(Vec<String>),
    /// `front: {aliases: [...]}`.
    Map(BTreeMap<String, Option<ServiceNetwork>>),
}

/// A service's settings on one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetwork {
    /// More names of the service's containers there.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A fixed address (one replica only).
    pub ipv4_address: Option<String>,
}

/// `depends_on`: names, or names with a condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DependsOn {
    /// `- db`.
    List(Vec<String>),
    /// `db: {condition: service_started}`.
    Map(BTreeMap<String, Dependency>),
}

impl DependsOn {
    /// The services that must have completed successfully first.
    pub fn completed(&self) -> Vec<String> {
        self.with_condition("service_completed_successfully")
    }

    /// The services that must be healthy first (`condition: service_healthy`).
    pub fn healthy(&self) -> Vec<String> {
        self.with_condition("service_healthy")
    }

    /// The services depended on with `condition` (a plain list has none).
    fn with_condition(&self, condition: &str) -> Vec<String> {
        match self {
            DependsOn::List(_) => vec![],
            DependsOn::Map(m) => m
                .iter()
                .filter(|(_, c)| c.condition == condition)
                .map(|(n, _)| n.clone())
                .collect(),
        }
    }

    /// The services depended on.
    pub fn names(&self) -> Vec<String> {
        match self {
            DependsOn::List(l) => l.clone(),
            DependsOn::Map(m) => m.keys().cloned().collect(),
        }
    }
}

/// One dependency's condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// `service_started`, `service_healthy` (the dependency's containers must be healthy
    /// first) or `service_completed_successfully` (they must have exited 0 first).
    pub condition: String,
}

/// A service's `healthcheck`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckDef {
    /// A string (run by the container's shell) or Docker's list (`[CMD, ...]`,
    /// `[CMD-SHELL, command]`, `[NONE]`).
    pub test: Option<Command>,
    /// Durations as Docker takes them (`30s`, `1m30s`).
    pub interval: Option<String>,
    /// See `interval`.
    pub timeout: Option<String>,
    /// See `interval`.
    pub start_period: Option<String>,
    /// See `interval`.
    pub start_interval: Option<String>,
    /// Failures in a row that make a container unhealthy.
    pub retries: Option<i64>,
    /// `true`: no healthcheck, not even the image's.
    #[serde(default)]
    pub disable: bool,
}

impl HealthcheckDef {
    /// The engine's healthcheck; on error, the key at fault and why.
    pub fn healthcheck(&self) -> Result<moat_engine::health::Healthcheck, (&'static str, String)> {
        use moat_engine::health::{parse_duration, Healthcheck};
        if self.disable {
            return Ok(Healthcheck {
                test: vec!["NONE".into()],
                ..Default::default()
            });
        }
        let d = |key: &'static str, v: &Option<String>| {
            v.as_deref()
                .map_or(Ok(0), |t| parse_duration(key, t))
                .map_err(|e| (key, e.to_string()))
        };
        let check = Healthcheck {
            test: match &self.test {
                None => vec![],
                Some(Command::Line(l)) => vec!["CMD-SHELL".into(), l.clone()],
                Some(Command::List(v)) => v.clone(),
            },
            interval: d("interval", &self.interval)?,
            timeout: d("timeout", &self.timeout)?,
            start_period: d("start_period", &self.start_period)?,
            start_interval: d("start_interval", &self.start_interval)?,
            retries: self.retries.unwrap_or(0),
        };
        check.validate().map_err(|e| ("test", e.to_string()))?;
        Ok(check)
    }
}

/// `deploy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// How many containers.
    pub replicas: Option<u32>,
    /// How a changed service's containers are replaced.
    pub update_config: Option<UpdateConfig>,
}

/// `deploy.update_config`: a rolling update's pace, order and what a failure does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// Containers replaced at a time (default 1; 0: all at once).
    pub parallelism: Option<u32>,
    /// Between two groups (a duration: `10s`).
    pub delay: Option<String>,
    /// `stop-first` (the default: the old container stops, then the new one starts) or
    /// `start-first` (the new one runs, and is healthy when it has a healthcheck, before the
    /// old one stops).
    pub order: Option<String>,
    /// `pause` (the default: the update stops), `continue` or `rollback` (the replaced
    /// containers come back as they were).
    pub failure_action: Option<String>,
    /// How long a new container without a healthcheck must keep running to count as started
    /// (a duration; default 0: started is enough).
    pub monitor: Option<String>,
}
