//! Keeping it so: `moat serve`'s reconciler brings each project back to its latest revision
//! applied in full (see [`crate::revisions`]) every few seconds — a replica removed by hand is
//! made again, one updated by hand is replaced, a missing network or volume is made, a
//! container the declaration no longer has goes — and starts replicas that are not running
//! where the monitor's own restart policy would not: stopped or killed by hand under
//! `restart: always`, or left by a dead monitor under `always`/`unless-stopped`; `no` (compose's
//! default) and `on-failure` (the monitor's, with its maximum) are left alone. Starts back off
//! exponentially per container. Each correction is journaled as an event of type `project`
//! (`moat events`, the API's `/events`).
//!
//! `moat apply` holds the project's lock ([`lock`]) while it changes the project; the
//! reconciler skips a project whose lock is held (a rolling update's renamed old containers
//! are not its to remove).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use moat_engine::containers::{Records, State};
use moat_engine::hostconfig::RestartPolicy;
use moat_engine::Paths;

use crate::compose::ComposeFile;
use crate::plan::{Action, PlanError};

/// How often the reconciler looks.
pub const PERIOD: Duration = Duration::from_secs(2);
/// The back-off's first delay, doubled at each restart of the same container.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// The back-off's longest delay.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Running this long resets a container's back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// Takes project `project`'s lock (`<root>/apply/PROJECT.lock`): waiting for it (`moat
/// apply`), or `None` at once when another process holds it (the reconciler).
pub fn lock(
    root: &Path,
    project: &str,
    wait: bool,
) -> Result<Option<nix::fcntl::Flock<File>>, PlanError> {
    crate::plan::check_project(project)?;
    let dir = root.join("apply");
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| PlanError::Io { what, path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let path = dir.join(format!("{project}.lock"));
    let f = File::create(&path).map_err(io("open", &path))?;
    let arg = if wait {
        nix::fcntl::FlockArg::LockExclusive
    } else {
        nix::fcntl::FlockArg::LockExclusiveNonblock
    };
    match nix::fcntl::Flock::lock(f, arg) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::Error::EWOULDBLOCK)) if !wait => Ok(None),
        Err((_, e)) => Err(PlanError::Io {
            what: "lock",
            path,
            source: e.into(),
        }),
    }
}

/// How long after the last of `restarts` restarts in a row the next may come.
fn backoff(restarts: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1 << restarts.min(7))
        .min(BACKOFF_MAX)
}

/// A container's restarts by the reconciler: how many in a row, and the last one.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    restarts: u32,
    last: Option<Instant>,
}

/// The reconciler of one engine root.
#[derive(Debug)]
pub struct Reconciler {
    paths: Paths,
    backoff: HashMap<String, Backoff>,
}

impl Reconciler {
    /// The reconciler of the engine at `paths`.
    pub fn new(paths: Paths) -> Reconciler {
        Reconciler {
            paths,
            backoff: HashMap::new(),
        }
    }

    /// Runs until the process ends, a pass every [`PERIOD`]; failures are logged.
    pub fn run(mut self) -> ! {
        loop {
            std::thread::sleep(PERIOD);
            for (project, e) in self.pass() {
                log::warn!("reconciling project {project}: {e}");
            }
        }
    }

    /// One pass over every project kept: the corrections are made and journaled; what failed
    /// is returned by project.
    pub fn pass(&mut self) -> Vec<(String, PlanError)> {
        let failure = |message: String| PlanError::Rollout {
            service: String::new(),
            message,
        };
        let projects =
            match crate::revisions::Revisions::open(&self.paths.root).and_then(|r| r.live()) {
                Ok(l) => l,
                Err(e) => return vec![(String::new(), failure(e.to_string()))],
            };
        let mut failed = vec![];
        for (project, _) in projects {
            if let Err(e) = self.project(&project) {
                failed.push((project, e));
            }
        }
        failed
    }

    /// Brings one project back to its latest fully applied revision, read under the
    /// project's lock (an apply that ran meanwhile recorded a newer one).
    fn project(&mut self, project: &str) -> Result<(), PlanError> {
        let Some(_held) = lock(&self.paths.root, project, false)? else {
            return Ok(());
        };
        let failure = |message: String| PlanError::Rollout {
            service: String::new(),
            message,
        };
        let live = crate::revisions::Revisions::open(&self.paths.root)
            .and_then(|r| r.live())
            .map_err(|e| failure(e.to_string()))?;
        let Some((_, rev)) = live.into_iter().find(|(p, _)| p == project) else {
            return Ok(());
        };
        let file = rev.load(project).map_err(|e| failure(e.to_string()))?;
        let actions = crate::plan::plan(&self.paths, project, &file, false, false)?;
        let mut todo = vec![];
        for a in actions {
            match &a {
                Action::Start(name, _) => {
                    if self.may_restart(project, &file, name)? {
                        todo.push(a);
                    }
                }
                // A container whose configuration differs from the revision's because the
                // files the revision reads (env files, secrets) changed since is the next
                // apply's to replace; one updated by hand is undone here.
                Action::Replace(_, old) => {
                    if moat_engine::update::updated(&self.paths, old) {
                        todo.push(a);
                    }
                }
                _ => todo.push(a),
            }
        }
        self.forget_settled()?;
        if todo.is_empty() {
            return Ok(());
        }
        let journal = moat_engine::events::Journal::new(&self.paths.root);
        crate::plan::execute(&self.paths, todo, &mut |a| {
            let text = a.to_string();
            log::info!("project {project}: {text}");
            journal.emit("project", "reconcile", project, &[("change", &text)]);
        })
    }

    /// Whether exited container `name` is restarted now: its service's policy allows it and its
    /// back-off has passed (counted as a restart then).
    fn may_restart(
        &mut self,
        project: &str,
        file: &ComposeFile,
        name: &str,
    ) -> Result<bool, PlanError> {
        let Some(service) = file.services.iter().find_map(|(s, def)| {
            let rest = name.strip_prefix(&format!("{project}-{s}-"))?;
            rest.parse::<u32>().ok().map(|_| def)
        }) else {
            return Ok(false);
        };
        let policy = service
            .restart
            .as_deref()
            .and_then(|r| RestartPolicy::parse(r).ok())
            .unwrap_or_default();
        let row = Records::open(&self.paths.root)?.find(name)?;
        let by_user = self
            .paths
            .container_dir(&row.id)
            .join(moat_engine::monitor::STOPPED_BY_USER)
            .exists();
        // The monitor restarts after exits as the policy says (and counts on-failure's
        // maximum): the reconciler restarts what it would not — a container stopped or killed
        // by hand under `always`, and any whose monitor is gone (its exit never handled).
        let allowed = match policy {
            RestartPolicy::No | RestartPolicy::OnFailure(_) => false,
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => !by_user,
        };
        if !allowed {
            return Ok(false);
        }
        let now = Instant::now();
        let b = self.backoff.entry(name.to_string()).or_insert(Backoff {
            restarts: 0,
            last: None,
        });
        if b.last
            .is_some_and(|l| now.duration_since(l) < backoff(b.restarts))
        {
            return Ok(false);
        }
        b.restarts += 1;
        b.last = Some(now);
        Ok(true)
    }

    /// Containers running for a while start their back-off afresh.
    fn forget_settled(&mut self) -> Result<(), PlanError> {
        if self.backoff.is_empty() {
            return Ok(());
        }
        let records = Records::open(&self.paths.root)?;
        self.backoff.retain(|name, b| {
            let running = records
                .find(name)
                .is_ok_and(|r| r.effective().0 == State::Running);
            !(running && b.last.is_some_and(|l| l.elapsed() >= BACKOFF_RESET))
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_up_to_a_minute() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(7), BACKOFF_MAX);
        assert_eq!(backoff(40), BACKOFF_MAX);
    }

    #[test]
    fn project_names_are_composes() {
        for ok in ["shop", "a1", "my_app-2"] {
            assert!(crate::plan::check_project(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "/abs", "Upper", "-x", "a b"] {
            assert!(crate::plan::check_project(bad).is_err(), "{bad}");
        }
    }
}
