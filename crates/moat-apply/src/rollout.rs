//! Rolling updates: a changed service's containers replaced `parallelism` at a time, in
//! `stop-first` or `start-first` order, with `failure_action` deciding what a container that
//! fails to come up does to the rest (`deploy.update_config`, as swarm services take it).
//!
//! A replaced container is never removed before the whole update succeeded: it is renamed out
//! of the way (`NAME-old-ID8`) and, once its successor is up, stopped and kept. At the end the
//! kept ones are removed; a `rollback` instead removes the successors, gives the old containers
//! their names back and starts them again, so the service returns to the configuration it ran
//! before, whatever the new one broke (an image that does not start, a failing healthcheck).
//! An apply killed half-way leaves `-old-` containers the file does not declare: the next
//! apply removes them.

use std::time::Duration;

use moat_engine::containers::{Records, State};
use moat_engine::lifecycle::Attach;
use moat_engine::Paths;

use crate::compose::UpdateConfig;
use crate::plan::{Desired, PlanError};

/// Which container goes first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// The old container stops, then the new one starts.
    #[default]
    StopFirst,
    /// The new container is up (healthy, with a healthcheck) before the old one stops.
    StartFirst,
}

/// What a container that fails to come up does to the update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop the update; what was replaced stays replaced.
    #[default]
    Pause,
    /// Go on with the others; the update reports the failures at its end.
    Continue,
    /// Stop the update and bring back every container it replaced.
    Rollback,
}

/// A service's rolling update settings, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// Containers at a time (0: all).
    pub parallelism: u32,
    /// Between two groups.
    pub delay: Duration,
    /// Which goes first.
    pub order: Order,
    /// What a failure does.
    pub on_failure: OnFailure,
    /// How long a new container without a healthcheck must keep running.
    pub monitor: Duration,
}

impl Default for Rollout {
    fn default() -> Rollout {
        Rollout {
            parallelism: 1,
            delay: Duration::ZERO,
            order: Order::StopFirst,
            on_failure: OnFailure::Pause,
            monitor: Duration::ZERO,
        }
    }
}

impl UpdateConfig {
    /// The settings checked; on error, the key at fault and why.
    pub fn rollout(&self) -> Result<Rollout, (&'static str, String)> {
        let d =
            |key: &'static str, v: &Option<String>| -> Result<Duration, (&'static str, String)> {
                match v.as_deref() {
                    None => Ok(Duration::ZERO),
                    Some(t) => moat_engine::health::parse_duration(key, t)
                        .map(|ns| Duration::from_nanos(ns as u64))
                        .map_err(|e| (key, e.to_string())),
                }
            };
        Ok(Rollout {
            parallelism: self.parallelism.unwrap_or(1),
            delay: d("delay", &self.delay)?,
            order: match self.order.as_deref() {
                None | Some("stop-first") => Order::StopFirst,
                Some("start-first") => Order::StartFirst,
                Some(o) => return Err(("order", format!("{o:?}: stop-first or start-first"))),
            },
            on_failure: match self.failure_action.as_deref() {
                None | Some("pause") => OnFailure::Pause,
                Some("continue") => OnFailure::Continue,
                Some("rollback") => OnFailure::Rollback,
                Some(a) => {
                    return Err((
                        "failure_action",
                        format!("{a:?}: pause, continue or rollback"),
                    ))
                }
            },
            monitor: d("monitor", &self.monitor)?,
        })
    }
}

/// One container replaced: its name, and the id of the old container, kept under another
/// name until the update ends.
#[derive(Debug)]
struct Replaced {
    name: String,
    old_id: String,
}

/// Replaces each `(desired, old container id)` of one service as `r` says; `report` is told of
/// each container replaced. Returns the first failure (after the rollback, with `rollback`).
pub fn run(
    paths: &Paths,
    items: Vec<(Desired, String)>,
    r: Rollout,
    report: &mut dyn FnMut(&str),
) -> Result<(), PlanError> {
    let size = if r.parallelism == 0 {
        items.len().max(1)
    } else {
        r.parallelism as usize
    };
    let mut done: Vec<Replaced> = vec![];
    let mut failures: Vec<PlanError> = vec![];
    let total = items.len();
    let mut items = items.into_iter().peekable();
    let mut first = true;
    while items.peek().is_some() {
        if !first && !r.delay.is_zero() {
            std::thread::sleep(r.delay);
        }
        first = false;
        let group: Vec<(Desired, String)> = items.by_ref().take(size).collect();
        let results = crate::plan::side_by_side(&group, |(d, old)| replace(paths, d, old, r));
        for res in results {
            match res {
                Ok(x) => {
                    report(&x.name);
                    done.push(x);
                }
                Err(e) => failures.push(e),
            }
        }
        if !failures.is_empty() && r.on_failure != OnFailure::Continue {
            break;
        }
    }
    if let Some(first) = failures.into_iter().next() {
        if r.on_failure == OnFailure::Rollback {
            // Every one is restored, whatever fails on the way; the failures are reported.
            let failed: Vec<String> = done
                .iter()
                .rev()
                .filter_map(|x| restore(paths, x).err().map(|e| format!("{}: {e}", x.name)))
                .collect();
            if !failed.is_empty() {
                return Err(PlanError::Rollout {
                    service: String::new(),
                    message: format!("{first}; the rollback failed for {}", failed.join("; ")),
                });
            }
            return Err(PlanError::RolledBack {
                replaced: done.len(),
                total,
                cause: Box::new(first),
            });
        }
        finish(paths, &done)?;
        return Err(first);
    }
    finish(paths, &done)
}

/// The old containers of a successful update removed.
fn finish(paths: &Paths, done: &[Replaced]) -> Result<(), PlanError> {
    for x in done {
        crate::plan::remove(paths, &x.old_id)?;
    }
    Ok(())
}

/// Replaces one container; on failure, the old one is back as it was (name, running) and the
/// new one gone.
fn replace(paths: &Paths, d: &Desired, old_id: &str, r: Rollout) -> Result<Replaced, PlanError> {
    let records = Records::open(&paths.root)?;
    let old = records.find(old_id)?;
    let was_running = old.effective().0 == State::Running;
    let parked = format!("{}-old-{}", d.name, &old.id[..8.min(old.id.len())]);
    if r.order == Order::StopFirst && was_running {
        retire(paths, &old)?;
    }
    moat_engine::lifecycle::rename(paths, &old, &parked)?;
    let x = Replaced {
        name: d.name.clone(),
        old_id: old.id.clone(),
    };
    log::debug!("rollout: starting the new {}", d.name);
    let started = crate::plan::create_and_start(paths, d).and_then(|()| up(paths, &d.name, r));
    log::debug!("rollout: the new {} is up: {}", d.name, started.is_ok());
    if let Err(e) = started {
        let _ = crate::plan::remove(paths, &d.name);
        if let Err(r) = restore_old(paths, &x, was_running) {
            return Err(PlanError::Rollout {
                service: d.service.clone(),
                message: format!("{e}; restoring {} failed: {r}", d.name),
            });
        }
        return Err(e);
    }
    if r.order == Order::StartFirst && was_running {
        let old = Records::open(&paths.root)?.find(&x.old_id)?;
        retire(paths, &old)?;
    }
    Ok(x)
}

/// How long a drained container's connections under way get before it is stopped.
const DRAIN_GRACE: Duration = Duration::from_millis(300);

/// Stops an old container, first taking it out of its published ports (new connections go to
/// the service's other containers) and giving the connections under way a moment to end.
fn retire(paths: &Paths, old: &moat_engine::containers::Row) -> Result<(), PlanError> {
    log::debug!("rollout: draining {}", old.name);
    if moat_engine::network::set_ready(paths, &old.id, false)? {
        std::thread::sleep(DRAIN_GRACE);
    }
    log::debug!("rollout: stopping {}", old.name);
    moat_engine::lifecycle::stop_default(paths, old)?;
    log::debug!("rollout: stopped {}", old.name);
    Ok(())
}

/// Whether new container `name` came up: healthy when it has a healthcheck, else still
/// running after the monitor period.
fn up(paths: &Paths, name: &str, r: Rollout) -> Result<(), PlanError> {
    let row = Records::open(&paths.root)?.find(name)?;
    let checked = moat_engine::health::load_config(&paths.container_dir(&row.id))
        .and_then(|c| c.command())
        .is_some();
    if checked {
        return crate::plan::healthy(paths, name);
    }
    std::thread::sleep(r.monitor);
    let row = Records::open(&paths.root)?.find(name)?;
    if row.effective().0 != State::Running {
        return Err(PlanError::Rollout {
            service: name.to_string(),
            message: format!("container {name} exited with {}", row.exit_code),
        });
    }
    Ok(())
}

/// A rollback of one replaced container: its successor removed, the old one back.
fn restore(paths: &Paths, x: &Replaced) -> Result<(), PlanError> {
    crate::plan::remove(paths, &x.name)?;
    restore_old(paths, x, true)
}

fn restore_old(paths: &Paths, x: &Replaced, start: bool) -> Result<(), PlanError> {
    let records = Records::open(&paths.root)?;
    let parked = records.find(&x.old_id)?;
    moat_engine::lifecycle::rename(paths, &parked, &x.name)?;
    let row = records.find(&x.old_id)?;
    if start && row.effective().0 != State::Running {
        moat_engine::lifecycle::start(paths, &row, Attach::Detached)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_with_defaults_and_bad_values() {
        assert_eq!(UpdateConfig::default().rollout(), Ok(Rollout::default()));
        let c = UpdateConfig {
            parallelism: Some(2),
            delay: Some("1s".into()),
            order: Some("start-first".into()),
            failure_action: Some("rollback".into()),
            monitor: Some("500ms".into()),
        };
        let r = c.rollout().unwrap();
        assert_eq!(r.parallelism, 2);
        assert_eq!(r.delay, Duration::from_secs(1));
        assert_eq!(
            (r.order, r.on_failure),
            (Order::StartFirst, OnFailure::Rollback)
        );
        assert_eq!(r.monitor, Duration::from_millis(500));
        let bad = |c: UpdateConfig| c.rollout().unwrap_err().0;
        assert_eq!(
            bad(UpdateConfig {
                order: Some("random".into()),
                ..Default::default()
            }),
            "order"
        );
        assert_eq!(
            bad(UpdateConfig {
                failure_action: Some("retry".into()),
                ..Default::default()
            }),
            "failure_action"
        );
        assert_eq!(
            bad(UpdateConfig {
                delay: Some("soon".into()),
                ..Default::default()
            }),
            "delay"
        );
    }
}
