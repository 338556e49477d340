//! Healthchecks, as Docker runs them: a command run in the container every interval
//! (`HEALTHCHECK` in the image, `--health-*` flags, the API's `Config.Healthcheck`, compose's
//! `healthcheck:`), its results deciding the container's health: `starting`, then `healthy`
//! after a success, `unhealthy` after `retries` failures in a row (failures inside the start
//! period do not count).
//!
//! The effective check is kept in the container's directory as [`CONFIG_FILE`] (Docker's JSON
//! shape); the monitor's prober process (`monitor::prober`) runs it while the container runs
//! and keeps the state in [`STATE_FILE`], which `inspect`, `ps` and the API read.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Errors in healthcheck settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HealthError {
    /// a duration flag
    #[error("invalid {flag} {value:?}: a duration such as 30s, 1m30s or 500ms")]
    Duration {
        /// The flag or key.
        flag: &'static str,
        /// The text given.
        value: String,
    },
    /// a duration below Docker's minimum
    #[error("{flag} {value:?} is too short: at least 1ms (or 0 for the default)")]
    TooShort {
        /// The flag or key.
        flag: &'static str,
        /// The text given.
        value: String,
    },
    /// `--health-retries`
    #[error("invalid healthcheck retries {0}: 0 or more")]
    Retries(i64),
    /// `--no-healthcheck` with `--health-*`
    #[error("--no-healthcheck conflicts with --health-* options")]
    Conflict,
    /// A test whose first word is not one of Docker's.
    #[error("invalid healthcheck test {0:?}: [\"NONE\"], [\"CMD\", ARGS...] or [\"CMD-SHELL\", COMMAND]")]
    Test(Vec<String>),
}

/// The file in a container's directory holding its effective healthcheck.
pub const CONFIG_FILE: &str = "healthcheck.json";
/// The file in a container's directory holding its health while probed.
pub const STATE_FILE: &str = "health.json";

/// Docker's defaults.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// See [`DEFAULT_INTERVAL`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// See [`DEFAULT_INTERVAL`].
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
/// See [`DEFAULT_INTERVAL`].
pub const DEFAULT_RETRIES: u32 = 3;
/// Docker keeps this many results, each output cut to [`MAX_OUTPUT`] bytes.
pub const MAX_LOG: usize = 5;
/// See [`MAX_LOG`].
pub const MAX_OUTPUT: usize = 4096;

/// A healthcheck in Docker's JSON shape (durations in nanoseconds; 0 = the default, or the
/// image's value when merged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Healthcheck {
    /// `[]` (inherit), `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// Between two checks.
    pub interval: i64,
    /// A check running longer fails.
    pub timeout: i64,
    /// Failures in this time after the start do not count.
    pub start_period: i64,
    /// Between two checks during the start period.
    pub start_interval: i64,
    /// Failures in a row that make the container unhealthy.
    pub retries: i64,
}

impl Healthcheck {
    /// Docker's merge of a container's settings over its image's: each unset field (empty
    /// test, zero) takes the image's.
    pub fn merged(user: Option<&Healthcheck>, image: Option<&Healthcheck>) -> Option<Healthcheck> {
        let Some(image) = image else {
            return user.cloned();
        };
        let Some(user) = user else {
            return Some(image.clone());
        };
        let pick = |u: i64, i: i64| if u == 0 { i } else { u };
        Some(Healthcheck {
            test: if user.test.is_empty() {
                image.test.clone()
            } else {
                user.test.clone()
            },
            interval: pick(user.interval, image.interval),
            timeout: pick(user.timeout, image.timeout),
            start_period: pick(user.start_period, image.start_period),
            start_interval: pick(user.start_interval, image.start_interval),
            retries: pick(user.retries, image.retries),
        })
    }

    /// The image config's `Healthcheck`, if it has a usable one.
    pub fn of_image(config: &serde_json::Value) -> Option<Healthcheck> {
        let v = config.get("config").unwrap_or(config).get("Healthcheck")?;
        serde_json::from_value(v.clone()).ok()
    }

    /// The command to run: `None` when disabled (`NONE`, or no test at all).
    pub fn command(&self) -> Option<Vec<String>> {
        match self.test.first().map(String::as_str) {
            Some("CMD") if self.test.len() > 1 => Some(self.test[1..].to_vec()),
            Some("CMD-SHELL") if self.test.len() > 1 => Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                self.test[1..].join(" "),
            ]),
            _ => None,
        }
    }

    /// Refuses what Docker would refuse: an unknown test form, a duration under 1ms (other
    /// than 0), negative retries.
    pub fn validate(&self) -> Result<(), HealthError> {
        for (flag, ns) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
        ] {
            if ns != 0 && ns < 1_000_000 {
                return Err(HealthError::TooShort {
                    flag,
                    value: format!("{ns}ns"),
                });
            }
        }
        if self.retries < 0 {
            return Err(HealthError::Retries(self.retries));
        }
        match self.test.first().map(String::as_str) {
            None => Ok(()),
            Some("NONE") if self.test.len() == 1 => Ok(()),
            Some("CMD" | "CMD-SHELL") if self.test.len() > 1 => Ok(()),
            _ => Err(HealthError::Test(self.test.clone())),
        }
    }

    /// Interval, timeout, start period, start interval and retries with Docker's defaults.
    pub fn timing(&self) -> Timing {
        let d = |ns: i64, default: Duration| {
            if ns > 0 {
                Duration::from_nanos(ns as u64)
            } else {
                default
            }
        };
        Timing {
            interval: d(self.interval, DEFAULT_INTERVAL),
            timeout: d(self.timeout, DEFAULT_TIMEOUT),
            start_period: d(self.start_period, Duration::ZERO),
            start_interval: d(self.start_interval, DEFAULT_START_INTERVAL),
            retries: if self.retries > 0 {
                self.retries as u32
            } else {
                DEFAULT_RETRIES
            },
        }
    }
}

/// A healthcheck's timing, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Between two checks.
    pub interval: Duration,
    /// A check's limit.
    pub timeout: Duration,
    /// Failures after the start that do not count.
    pub start_period: Duration,
    /// Between two checks while starting in the start period.
    pub start_interval: Duration,
    /// Failures in a row that make it unhealthy.
    pub retries: u32,
}

impl Timing {
    /// How long to wait before the next check, `since_start` after the container started.
    pub fn next_wait(&self, status: Status, since_start: Duration) -> Duration {
        if status == Status::Starting && since_start < self.start_period {
            self.start_interval
        } else {
            self.interval
        }
    }
}

/// Parses a duration flag (Go's syntax as Docker takes it: `30s`, `1m30s`, `500ms`; `0`).
pub fn parse_duration(flag: &'static str, s: &str) -> Result<i64, HealthError> {
    let s = s.trim();
    if s == "0" {
        return Ok(0);
    }
    let d = humantime::parse_duration(s).map_err(|_| HealthError::Duration {
        flag,
        value: s.to_string(),
    })?;
    if !d.is_zero() && d < Duration::from_millis(1) {
        return Err(HealthError::TooShort {
            flag,
            value: s.to_string(),
        });
    }
    i64::try_from(d.as_nanos()).map_err(|_| HealthError::Duration {
        flag,
        value: s.to_string(),
    })
}

/// Docker's `--health-*` flags as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--health-cmd` (run by the container's shell: CMD-SHELL).
    pub cmd: Option<String>,
    /// `--health-interval`.
    pub interval: Option<String>,
    /// `--health-timeout`.
    pub timeout: Option<String>,
    /// `--health-start-period`.
    pub start_period: Option<String>,
    /// `--health-start-interval`.
    pub start_interval: Option<String>,
    /// `--health-retries`.
    pub retries: Option<i64>,
    /// `--no-healthcheck`.
    pub none: bool,
}

impl Flags {
    /// The container's own healthcheck (merged over the image's at create); `None` when no
    /// flag was given.
    pub fn healthcheck(&self) -> Result<Option<Healthcheck>, HealthError> {
        let given = self.cmd.is_some()
            || self.interval.is_some()
            || self.timeout.is_some()
            || self.start_period.is_some()
            || self.start_interval.is_some()
            || self.retries.is_some();
        if self.none {
            if given {
                return Err(HealthError::Conflict);
            }
            return Ok(Some(Healthcheck {
                test: vec!["NONE".into()],
                ..Default::default()
            }));
        }
        if !given {
            return Ok(None);
        }
        let d = |flag, v: &Option<String>| v.as_deref().map_or(Ok(0), |s| parse_duration(flag, s));
        let retries = self.retries.unwrap_or(0);
        if retries < 0 {
            return Err(HealthError::Retries(retries));
        }
        Ok(Some(Healthcheck {
            test: self
                .cmd
                .as_ref()
                .map(|c| vec!["CMD-SHELL".to_string(), c.clone()])
                .unwrap_or_default(),
            interval: d("--health-interval", &self.interval)?,
            timeout: d("--health-timeout", &self.timeout)?,
            start_period: d("--health-start-period", &self.start_period)?,
            start_interval: d("--health-start-interval", &self.start_interval)?,
            retries,
        }))
    }
}

/// Docker's health words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No check has passed yet.
    #[default]
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` checks failed in a row (or the container stopped).
    Unhealthy,
}

impl Status {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// One check's result, as Docker's `State.Health.Log` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Probe {
    /// When it started (RFC 3339).
    pub start: String,
    /// When it ended.
    pub end: String,
    /// The command's exit code; -1 when it timed out or could not run.
    pub exit_code: i64,
    /// Its output (stdout and stderr), cut to [`MAX_OUTPUT`] bytes.
    pub output: String,
}

/// A container's health: Docker's `State.Health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// The word.
    pub status: Status,
    /// Failures in a row that counted.
    pub failing_streak: u32,
    /// The last [`MAX_LOG`] results, oldest first.
    pub log: VecDeque<Probe>,
}

impl Health {
    /// The state at a (re)start: starting, no streak; earlier results kept, as Docker does.
    pub fn restarted(mut self) -> Health {
        self.status = Status::Starting;
        self.failing_streak = 0;
        self
    }

    /// Takes a result (Docker's rules): a success makes it healthy; a failure counts unless
    /// the container is still starting inside its start period, and `retries` counted failures
    /// make it unhealthy. True when the status changed.
    pub fn record(&mut self, probe: Probe, in_start_period: bool, retries: u32) -> bool {
        let before = self.status;
        if probe.exit_code == 0 {
            self.failing_streak = 0;
            self.status = Status::Healthy;
        } else if !(self.status == Status::Starting && in_start_period) {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = Status::Unhealthy;
            }
        }
        self.log.push_back(probe);
        while self.log.len() > MAX_LOG {
            self.log.pop_front();
        }
        self.status != before
    }
}

/// The container's effective healthcheck, if it has one (disabled ones included: `inspect`
/// shows them).
pub fn load_config(dir: &Path) -> Option<Healthcheck> {
    let data = std::fs::read(dir.join(CONFIG_FILE)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Keeps the effective healthcheck in the container's directory.
pub fn save_config(dir: &Path, check: &Healthcheck) -> Result<(), crate::EngineError> {
    let path = dir.join(CONFIG_FILE);
    let data = serde_json::to_vec(check).map_err(|e| crate::EngineError::Spec(e.to_string()))?;
    std::fs::write(&path, data).map_err(|source| crate::EngineError::Io {
        what: "write",
        path,
        source,
    })
}

/// The container's health as last written, if it is probed.
pub fn load(dir: &Path) -> Option<Health> {
    let data = std::fs::read(dir.join(STATE_FILE)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Writes the health whole (a new file renamed over the old: readers never see half).
pub fn save(dir: &Path, health: &Health) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let data = serde_json::to_vec(health).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dir.join(STATE_FILE))
}

/// At a (re)start, before the container is recorded running: its health starts again at
/// `starting` (a reader must never see what the last run left, healthy or not).
pub fn reset(dir: &Path) {
    if load_config(dir).and_then(|c| c.command()).is_some() {
        let state = load(dir).unwrap_or_default().restarted();
        if let Err(e) = save(dir, &state) {
            log::warn!("{}: cannot write its health: {e}", dir.display());
        }
    }
}

/// What `ps` adds to a running container's status: ` (healthy)`, ` (health: starting)`,
/// ` (unhealthy)`; empty without a healthcheck.
pub fn status_suffix(dir: &Path) -> String {
    match load(dir).map(|h| h.status) {
        Some(Status::Starting) => " (health: starting)".into(),
        Some(s) => format!(" ({})", s.as_str()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(code: i64) -> Probe {
        Probe {
            start: "s".into(),
            end: "e".into(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn a_success_makes_it_healthy_and_retries_failures_unhealthy() {
        let mut h = Health::default();
        assert!(!h.record(probe(1), false, 3));
        assert!(!h.record(probe(1), false, 3));
        assert_eq!((h.status, h.failing_streak), (Status::Starting, 2));
        assert!(h.record(probe(0), false, 3));
        assert_eq!((h.status, h.failing_streak), (Status::Healthy, 0));
        for _ in 0..2 {
            assert!(!h.record(probe(2), false, 3));
        }
        assert_eq!(h.status, Status::Healthy);
        assert!(h.record(probe(-1), false, 3));
        assert_eq!((h.status, h.failing_streak), (Status::Unhealthy, 3));
        assert_eq!(h.log.len(), MAX_LOG);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_until_a_success() {
        let mut h = Health::default();
        for _ in 0..10 {
            h.record(probe(1), true, 1);
        }
        assert_eq!((h.status, h.failing_streak), (Status::Starting, 0));
        h.record(probe(0), true, 1);
        // Healthy once: later failures count, start period or not.
        h.record(probe(1), true, 1);
        assert_eq!(h.status, Status::Unhealthy);
        let h = h.restarted();
        assert_eq!((h.status, h.failing_streak), (Status::Starting, 0));
        assert_eq!(h.log.len(), MAX_LOG);
    }

    #[test]
    fn merge_takes_the_images_values_for_what_is_unset() {
        let image = Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: 5,
            retries: 7,
            ..Default::default()
        };
        let user = Healthcheck {
            interval: 9,
            ..Default::default()
        };
        let m = Healthcheck::merged(Some(&user), Some(&image)).unwrap();
        assert_eq!(
            (m.test.clone(), m.interval, m.retries),
            (image.test.clone(), 9, 7)
        );
        assert_eq!(Healthcheck::merged(None, Some(&image)), Some(image.clone()));
        assert_eq!(Healthcheck::merged(None, None), None);
        let none = Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        };
        let m = Healthcheck::merged(Some(&none), Some(&image)).unwrap();
        assert_eq!(m.command(), None);
    }

    #[test]
    fn commands_and_bad_tests() {
        let t = |v: &[&str]| Healthcheck {
            test: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(
            t(&["CMD-SHELL", "curl -f x || exit 1"]).command(),
            Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "curl -f x || exit 1".into()
            ])
        );
        assert_eq!(
            t(&["CMD", "a", "b"]).command(),
            Some(vec!["a".into(), "b".into()])
        );
        for bad in [&["CMD"][..], &["NONE", "x"], &["echo", "hi"]] {
            assert!(t(bad).validate().is_err(), "{bad:?}");
        }
        assert!(t(&[]).validate().is_ok());
    }

    #[test]
    fn flags_as_docker_takes_them() {
        assert_eq!(Flags::default().healthcheck(), Ok(None));
        let f = Flags {
            cmd: Some("wget -q localhost || exit 1".into()),
            interval: Some("2s".into()),
            retries: Some(5),
            ..Default::default()
        };
        let h = f.healthcheck().unwrap().unwrap();
        assert_eq!(h.test, ["CMD-SHELL", "wget -q localhost || exit 1"]);
        assert_eq!((h.interval, h.timeout, h.retries), (2_000_000_000, 0, 5));
        let none = Flags {
            none: true,
            ..Default::default()
        };
        assert_eq!(none.healthcheck().unwrap().unwrap().test, ["NONE"]);
        let both = Flags {
            interval: Some("1s".into()),
            ..none
        };
        assert_eq!(both.healthcheck(), Err(HealthError::Conflict));
        let bad = Flags {
            retries: Some(-1),
            ..Default::default()
        };
        assert_eq!(bad.healthcheck(), Err(HealthError::Retries(-1)));
    }

    #[test]
    fn durations_and_timing() {
        assert_eq!(
            parse_duration("--health-interval", "1m30s"),
            Ok(90_000_000_000)
        );
        assert_eq!(
            parse_duration("--health-interval", "250ms"),
            Ok(250_000_000)
        );
        assert_eq!(parse_duration("--health-interval", "0"), Ok(0));
        assert_eq!(parse_duration("--health-interval", "0s"), Ok(0));
        assert!(parse_duration("--health-interval", "10").is_err());
        assert!(parse_duration("--health-timeout", "1us").is_err());
        let t = Healthcheck {
            start_period: 10_000_000_000,
            ..Default::default()
        }
        .timing();
        assert_eq!((t.interval, t.retries), (DEFAULT_INTERVAL, DEFAULT_RETRIES));
        assert_eq!(
            t.next_wait(Status::Starting, Duration::from_secs(1)),
            DEFAULT_START_INTERVAL
        );
        assert_eq!(
            t.next_wait(Status::Healthy, Duration::from_secs(1)),
            DEFAULT_INTERVAL
        );
        assert_eq!(
            t.next_wait(Status::Starting, Duration::from_secs(11)),
            DEFAULT_INTERVAL
        );
    }

    #[test]
    fn state_in_dockers_shape() {
        let mut h = Health::default();
        h.record(probe(0), false, 3);
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["Status"], "healthy");
        assert_eq!(v["FailingStreak"], 0);
        assert_eq!(v["Log"][0]["ExitCode"], 0);
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &h).unwrap();
        assert_eq!(load(dir.path()), Some(h));
        assert_eq!(status_suffix(dir.path()), " (healthy)");
    }
}
