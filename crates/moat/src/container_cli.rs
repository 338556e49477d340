//! The container commands after `run`/`create`: `start`, `stop`, `kill`, `rm`, `ps`, `logs`,
//! `wait`, `inspect`, `rename`, with Docker's flags, output and exit codes (1 on error).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use moat_engine::containers::{Records, Row, State};
use moat_engine::lifecycle::{self, Attach};
use moat_engine::{EngineError, Paths};

/// `moat update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    resources: crate::run_cli::ResourceArgs,
    /// Restart policy: no, always, unless-stopped, on-failure[:N].
    #[arg(long)]
    restart: Option<String>,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `moat update`: new resource limits (applied at once to running containers) and restart
/// policy.
pub fn update(root: &Path, a: &UpdateArgs) -> i32 {
    let host = match a.resources.host() {
        Ok(h) => h,
        Err(e) => {
            log::error!("{e}");
            return 125;
        }
    };
    let restart = match a
        .restart
        .as_deref()
        .map(moat_engine::hostconfig::RestartPolicy::parse)
    {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            log::error!("{e}");
            return 125;
        }
        None => None,
    };
    let u = moat_engine::update::Update { host, restart };
    each(&Paths::new(root), &a.containers, |p, row| {
        moat_engine::update::update(p, row, &u)
    })
}

/// `moat stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container (default: its --stop-timeout, or 10).
    #[arg(short = 't', long = "time", alias = "timeout")]
    time: Option<u64>,
    /// Signal to send first (default: its --stop-signal, or SIGTERM).
    #[arg(short, long)]
    signal: Option<String>,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `moat kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send.
    #[arg(short, long, default_value = "SIGKILL")]
    signal: String,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `moat rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill and remove a running container.
    #[arg(short, long)]
    force: bool,
    /// Remove the container's anonymous volumes too.
    #[arg(short, long)]
    volumes: bool,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `moat logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the output until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines ("all" for every line).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Prefix each line with its time.
    #[arg(short, long)]
    timestamps: bool,
    /// Only lines since this time (RFC 3339, Unix seconds, or a duration ago: 10m, 1h30m).
    #[arg(long)]
    since: Option<String>,
    /// Only lines before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Container.
    container: String,
}

/// A `--since`/`--until` value as RFC 3339 with nanoseconds in UTC (the log's own format, so
/// that the two compare as strings).
fn log_time(v: &str) -> Result<String, EngineError> {
    let bad = || {
        EngineError::Conflict(format!(
            "invalid time {v:?}: RFC 3339, Unix seconds, or a duration such as 10m"
        ))
    };
    let t = if let Ok(secs) = v.parse::<u64>() {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    } else if let Ok(d) = humantime::parse_duration(v) {
        std::time::SystemTime::now()
            .checked_sub(d)
            .ok_or_else(bad)?
    } else {
        humantime::parse_rfc3339_weak(v).map_err(|_| bad())?
    };
    Ok(humantime::format_rfc3339_nanos(t).to_string())
}

/// `moat container ...`.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers.
    #[command(alias = "ps", alias = "list")]
    Ls(crate::ps_cli::PsArgs),
    /// Remove containers.
    Rm(RmArgs),
    /// Start containers.
    Start(crate::attach_cli::StartArgs),
    /// Stop containers.
    Stop(StopArgs),
    /// Kill containers.
    Kill(KillArgs),
    /// Show a container's logs.
    Logs(LogsArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Wait for containers to exit; print their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show containers as JSON.
    Inspect {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
        /// Format each result with a Go template ({{.State.Status}}, {{json .Config}}, ...).
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Rename a container.
    Rename {
        /// Container.
        container: String,
        /// New name.
        new_name: String,
    },
    /// Make an image from a container's changes.
    Commit(CommitArgs),
    /// Pause containers.
    Pause {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Resume paused containers.
    Unpause {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart containers.
    Restart(StopArgs),
    /// Show a container's processes.
    Top {
        /// Container.
        container: String,
    },
    /// Show containers' resource usage.
    Stats(crate::ps_cli::StatsArgs),
    /// Copy files between a container and the host.
    Cp {
        /// Keep the owners of what is copied in (without it, it belongs to root).
        #[arg(short, long)]
        archive: bool,
        /// CONTAINER:PATH or a host path.
        src: String,
        /// CONTAINER:PATH or a host path.
        dest: String,
    },
    /// Remove every stopped container.
    Prune {
        /// Do not ask (moat never asks).
        #[arg(short, long)]
        force: bool,
    },
}

pub(crate) fn find(records: &Records, what: &str) -> Result<Row, EngineError> {
    Ok(records.find(what)?)
}

/// Applies `op` to every named container, printing what the user typed on success (Docker's
/// output); errors are printed and make the exit code 1, the others are still attempted.
pub(crate) fn each(
    paths: &Paths,
    names: &[String],
    mut op: impl FnMut(&Paths, &Row) -> Result<(), EngineError>,
) -> i32 {
    each_print(paths, names, |p, row| op(p, row).map(|()| None))
}

/// As [`each`], printing what `op` returns instead of the name when it returns something.
fn each_print(
    paths: &Paths,
    names: &[String],
    mut op: impl FnMut(&Paths, &Row) -> Result<Option<String>, EngineError>,
) -> i32 {
    let records = match Records::open(&paths.root) {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let mut code = 0;
    for n in names {
        match find(&records, n).and_then(|row| op(paths, &row)) {
            Ok(shown) => println!("{}", shown.as_deref().unwrap_or(n)),
            Err(e) => {
                log::error!("{e}");
                code = 1;
            }
        }
    }
    code
}

fn signal(s: &str) -> Result<nix::sys::signal::Signal, EngineError> {
    Ok(moat_runtime::ops::parse_signal(s)?)
}

/// `moat stop`.
pub fn stop(root: &Path, a: &StopArgs) -> i32 {
    each(&Paths::new(root), &a.containers, |p, row| {
        let (default_sig, default_time) = lifecycle::stop_settings(p, row);
        let sig = match &a.signal {
            Some(s) => signal(s)?,
            None => signal(&default_sig)?,
        };
        let time = a.time.map(Duration::from_secs).unwrap_or(default_time);
        lifecycle::stop(p, row, sig, time)
    })
}

/// `moat kill`.
pub fn kill(root: &Path, a: &KillArgs) -> i32 {
    let sig = match signal(&a.signal) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    each(&Paths::new(root), &a.containers, |p, row| {
        lifecycle::kill(p, row, sig)
    })
}

/// `moat rm`.
pub fn rm(root: &Path, a: &RmArgs) -> i32 {
    each(&Paths::new(root), &a.containers, |p, row| {
        lifecycle::remove(p, row, a.force, a.volumes)
    })
}

/// `moat wait`: prints each exit code.
pub fn wait(root: &Path, names: &[String]) -> i32 {
    each_print(&Paths::new(root), names, |p, row| {
        lifecycle::wait(p, row).map(|c| Some(c.to_string()))
    })
}

/// `moat rename`.
pub fn rename(root: &Path, what: &str, new_name: &str) -> i32 {
    let result = Records::open(root)
        .map_err(EngineError::from)
        .and_then(|r| {
            let row = find(&r, what)?;
            lifecycle::rename(&Paths::new(root), &row, new_name)
        });
    match result {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// `moat container prune`: removes every container that is not running.
pub fn prune(root: &Path) -> i32 {
    let paths = Paths::new(root);
    let rows = match Records::open(root).and_then(|r| r.all()) {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let mut code = 0;
    moat_engine::run::sweep_removed(&paths);
    println!("Deleted Containers:");
    for row in rows.iter().filter(|r| r.effective().0 != State::Running) {
        match lifecycle::remove(&paths, row, false, false) {
            Ok(()) => println!("{}", row.id),
            Err(e) => {
                log::error!("{e}");
                code = 1;
            }
        }
    }
    code
}

/// `moat logs`.
pub fn logs(root: &Path, a: &LogsArgs) -> i32 {
    match logs_inner(root, a) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

fn logs_inner(root: &Path, a: &LogsArgs) -> Result<(), EngineError> {
    let paths = Paths::new(root);
    let records = Records::open(root)?;
    let row = find(&records, &a.container)?;
    let path = moat_engine::logs::path(&paths.container_dir(&row.id), &row.id);
    let tail: Option<usize> = match a.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse().map_err(|_| {
            EngineError::Conflict(format!("invalid --tail {n:?}: a number or \"all\""))
        })?),
    };
    let since = a.since.as_deref().map(log_time).transpose()?;
    let until = a.until.as_deref().map(log_time).transpose()?;
    let entries: Vec<_> = moat_engine::logs::read_all(&path)?
        .into_iter()
        .filter(|e| since.as_ref().is_none_or(|s| e.time >= *s))
        .filter(|e| until.as_ref().is_none_or(|u| e.time < *u))
        .collect();
    let skip = tail.map_or(0, |n| entries.len().saturating_sub(n));
    let print = |e: &moat_engine::logs::Entry| {
        let text = if a.timestamps {
            format!("{} {}", e.time, e.log)
        } else {
            e.log.clone()
        };
        if e.stream == "stderr" {
            let _ = std::io::stderr().write_all(text.as_bytes());
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(text.as_bytes());
            let _ = o.flush();
        }
    };
    entries.iter().skip(skip).for_each(print);
    if !a.follow {
        return Ok(());
    }
    // Follow the current file from its end until the container is no longer running.
    let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    loop {
        let running = records
            .get(&row.id)?
            .is_some_and(|r| r.effective().0 == State::Running);
        // A rotation starts a new, shorter file.
        if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < offset {
            offset = 0;
        }
        let (more, next) = moat_engine::logs::read_from(&path, offset)?;
        offset = next;
        more.iter().for_each(print);
        if !running {
            let (more, _) = moat_engine::logs::read_from(&path, offset)?;
            more.iter().for_each(print);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `moat inspect` / `moat container inspect`: Docker's JSON shape, as an array.
pub fn inspect(root: &Path, names: &[String], format: Option<&str>) -> i32 {
    let paths = Paths::new(root);
    let records = match Records::open(root) {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let mut out = vec![];
    let mut code = 0;
    for n in names {
        match find(&records, n) {
            Ok(row) => out.push(moat_engine::inspect::container(&paths, &row)),
            Err(e) => {
                log::error!("{e}");
                code = 1;
            }
        }
    }
    match print_inspected(&out, format) {
        Ok(()) => code,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// Prints inspect documents: a JSON array, or each through the `--format` template.
pub fn print_inspected(
    docs: &[serde_json::Value],
    format: Option<&str>,
) -> Result<(), moat_engine::template::TemplateError> {
    let Some(tpl) = format else {
        println!(
            "{}",
            serde_json::to_string_pretty(docs).unwrap_or_else(|_| "[]".into())
        );
        return Ok(());
    };
    for d in docs {
        println!("{}", moat_engine::template::render(tpl, d)?);
    }
    Ok(())
}

/// `moat monitor ID` (hidden): the monitor process, exec'd by `start`, with its report pipe
/// on descriptor 3.
pub fn monitor(root: &Path, id: &str, f: &lifecycle::MonitorFlags) -> i32 {
    use std::os::fd::FromRawFd;
    let fd = moat_engine::monitor::REPORT_FD;
    // The descriptor must be ours: a user running `moat monitor` by hand gets an error.
    if nix::fcntl::fcntl(
        // SAFETY: only borrowed for the duration of the F_GETFD call.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_err()
    {
        log::error!("moat monitor is started by moat itself (no report pipe on fd {fd})");
        return 1;
    }
    // SAFETY: fd 3 is open (checked above) and nothing else in this process owns it.
    let report = unsafe { std::fs::File::from_raw_fd(fd) };
    let cfg = moat_engine::lifecycle::monitor_config(&Paths::new(root), id, f);
    match cfg {
        Ok(cfg) => moat_engine::monitor::serve(&cfg, report),
        Err(e) => {
            let mut report = report;
            let _ = report.write_all(
                moat_engine::monitor::Event::Failed(125, e.to_string())
                    .encode()
                    .as_bytes(),
            );
            1
        }
    }
}

/// `moat exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Run in the background.
    #[arg(short, long)]
    detach: bool,
    /// Keep standard input open.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable; repeatable.
    #[arg(short, long)]
    env: Vec<String>,
    /// User (name or uid, optionally :group).
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Container, then the command and its arguments.
    #[arg(required = true, num_args = 2.., trailing_var_arg = true, allow_hyphen_values = true)]
    container_and_command: Vec<String>,
}

/// `moat exec`: the process's exit code; 126/127 when it cannot run, 1 for other errors.
pub fn exec(root: &Path, a: &ExecArgs) -> i32 {
    let (container, cmd) = match a.container_and_command.split_first() {
        Some((c, rest)) => (c, rest.to_vec()),
        None => return 1,
    };
    let paths = Paths::new(root);
    if let Err(e) = moat_runtime::selfclone::ensure_sealed() {
        log::error!("{e}");
        return 1;
    }
    // Without -i the process gets no input; detached, it holds none of our output either.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    if let Ok(null) = &null {
        if !a.interactive || a.detach {
            let _ = nix::unistd::dup2_stdin(null);
        }
        if a.detach {
            let _ = nix::unistd::dup2_stdout(null);
            let _ = nix::unistd::dup2_stderr(null);
        }
    }
    let req = moat_engine::exec::ExecRequest {
        cmd,
        env: a.env.clone(),
        user: a.user.clone(),
        workdir: a.workdir.clone(),
        detach: a.detach,
        tty: a.tty,
    };
    // -it on a terminal: ours goes raw (keys, Ctrl-C included, go to the exec's terminal).
    let _raw = (a.tty && a.interactive && !a.detach)
        .then(crate::run_cli::RawMode::enter)
        .flatten();
    let result = Records::open(root)
        .map_err(EngineError::from)
        .and_then(|r| find(&r, container))
        .and_then(|row| moat_engine::exec::exec(&paths, &row, &req));
    match result {
        Ok(code) => code,
        Err(EngineError::Command { message, code }) => {
            log::error!("{message}");
            code
        }
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// `moat commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Author.
    #[arg(short, long)]
    author: Option<String>,
    /// Apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL); repeatable.
    #[arg(short, long)]
    change: Vec<String>,
    /// Commit message.
    #[arg(short, long)]
    message: Option<String>,
    /// Pause the container during the commit.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pause: bool,
    /// Container.
    container: String,
    /// REPOSITORY[:TAG] for the new image.
    reference: Option<String>,
}

/// `moat commit`: prints the new image's id.
pub fn commit(root: &Path, a: &CommitArgs) -> i32 {
    let paths = Paths::new(root);
    let config = match crate::image_cli::changes(&a.change, a.message.clone()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let opts = moat_image::commit::CommitOptions {
        config,
        author: a.author.clone(),
    };
    let result = Records::open(root)
        .map_err(EngineError::from)
        .and_then(|r| find(&r, &a.container))
        .and_then(|row| {
            moat_engine::commit::commit(&paths, &row, a.reference.as_deref(), &opts, a.pause)
        });
    match result {
        Ok(id) => {
            println!("{id}");
            0
        }
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// `moat pause`.
pub fn pause(root: &Path, names: &[String]) -> i32 {
    each(&Paths::new(root), names, lifecycle::pause)
}

/// `moat unpause`.
pub fn unpause(root: &Path, names: &[String]) -> i32 {
    each(&Paths::new(root), names, lifecycle::unpause)
}

/// `moat restart`: stop (as `stop` does) then start, detached.
pub fn restart(root: &Path, a: &StopArgs) -> i32 {
    each(&Paths::new(root), &a.containers, |p, row| {
        let (default_sig, default_time) = lifecycle::stop_settings(p, row);
        let sig = signal(a.signal.as_deref().unwrap_or(&default_sig))?;
        let time = a.time.map(Duration::from_secs).unwrap_or(default_time);
        lifecycle::stop(p, row, sig, time)?;
        // The record changed under us (exited, unmounted): start from the fresh one.
        let fresh = find(&Records::open(&p.root)?, &row.id)?;
        lifecycle::start(p, &fresh, Attach::Detached).map(|_| ())
    })
}

/// `moat top`: Docker's default columns (UID PID PPID C STIME TTY TIME CMD, simplified).
pub fn top(root: &Path, container: &str) -> i32 {
    let paths = Paths::new(root);
    let result = Records::open(root)
        .map_err(EngineError::from)
        .and_then(|r| find(&r, container))
        .and_then(|row| lifecycle::top(&paths, &row));
    match result {
        Ok(procs) => {
            println!(
                "{:<10} {:<10} {:<10} {:<10} CMD",
                "UID", "PID", "PPID", "TIME"
            );
            for p in procs {
                let t = p.cpu_secs;
                println!(
                    "{:<10} {:<10} {:<10} {:<10} {}",
                    p.uid,
                    p.pid,
                    p.ppid,
                    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60),
                    p.cmd
                );
            }
            0
        }
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// `moat cp CONTAINER:SRC DEST` or `moat cp SRC CONTAINER:DEST`.
pub fn cp(root: &Path, src: &str, dest: &str, archive: bool) -> i32 {
    // "NAME:PATH" names a container path; a host path with a colon can be given as ./a:b.
    let split = |s: &str| -> Option<(String, String)> {
        if s.starts_with('/') || s.starts_with('.') {
            return None;
        }
        s.split_once(':').map(|(c, p)| {
            (
                c.to_string(),
                if p.is_empty() {
                    "/".into()
                } else {
                    p.to_string()
                },
            )
        })
    };
    let (container, what) = match (split(src), split(dest)) {
        (Some((c, p)), None) => (
            c,
            moat_engine::cp::Copy::Out {
                src: p,
                dest: dest.into(),
            },
        ),
        (None, Some((c, p))) => (
            c,
            moat_engine::cp::Copy::In {
                src: src.into(),
                dest: p,
                keep_owner: archive,
            },
        ),
        _ => {
            log::error!(
                "copying between containers or between host paths is not supported: \
                 one of SRC and DEST must be CONTAINER:PATH"
            );
            return 1;
        }
    };
    let paths = Paths::new(root);
    let result = Records::open(root)
        .map_err(EngineError::from)
        .and_then(|r| find(&r, &container))
        .and_then(|row| moat_engine::cp::copy(&paths, &row, &what));
    match result {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}
