//! Being attached to a container: `moat attach` (the running container's output here and,
//! for a terminal, our keys there, until it exits: its exit code) and `moat start` (with
//! `-a`/`-i`, the same from the start).

use std::path::Path;

use clap::Args;
use moat_engine::containers::{Records, State};
use moat_engine::lifecycle::{self, Attach};
use moat_engine::{EngineError, Paths};

/// `moat attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach standard input (a terminal's keys stay here).
    #[arg(long)]
    no_stdin: bool,
    /// The keys that detach (Docker's syntax, ctrl-p,ctrl-q by default).
    #[arg(long)]
    detach_keys: Option<String>,
    /// The container.
    container: String,
}

/// Runs `moat attach`; the container's exit code, 0 when detached with the detach keys.
pub fn attach(root: &Path, a: &AttachArgs) -> i32 {
    let paths = Paths::new(root);
    let row = match Records::open(root)
        .and_then(|r| r.find(&a.container))
        .map_err(EngineError::from)
    {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let stdin = !a.no_stdin;
    // A terminal's keys, ctrl-c included, go to the container's terminal.
    let _raw = (row.tty && stdin)
        .then(crate::run_cli::RawMode::enter)
        .flatten();
    match moat_engine::attach::attach(&paths, &row, stdin, a.detach_keys.as_deref()) {
        Ok(Some(code)) => code,
        Ok(None) => {
            drop(_raw);
            eprintln!("read escape sequence");
            0
        }
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// `moat start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach to the container's output and wait for it (one container only).
    #[arg(short, long)]
    attach: bool,
    /// Attach standard input (implies --attach).
    #[arg(short, long)]
    interactive: bool,
    /// The keys that detach from the container's terminal (Docker's syntax, ctrl-p,ctrl-q by
    /// default).
    #[arg(long)]
    detach_keys: Option<String>,
    /// Containers (name, id or id prefix).
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `moat start`.
pub fn start(root: &Path, a: &StartArgs) -> i32 {
    let paths = Paths::new(root);
    if let Err(e) = std::fs::create_dir_all(&paths.runtime_root)
        .map_err(|e| e.to_string())
        .and_then(|_| moat_runtime::selfclone::ensure_sealed().map_err(|e| e.to_string()))
    {
        log::error!("{e}");
        return 1;
    }
    let attach = a.attach || a.interactive;
    if attach && a.containers.len() > 1 {
        log::error!("you cannot attach to more than one container at once");
        return 1;
    }
    if !attach {
        return crate::container_cli::each(&paths, &a.containers, |p, row| {
            if row.effective().0 == State::Running {
                return Ok(());
            }
            lifecycle::start(p, row, Attach::Detached).map(|_| ())
        });
    }
    let result = Records::open(&paths.root)
        .map_err(EngineError::from)
        .and_then(|r| crate::container_cli::find(&r, &a.containers[0]))
        .and_then(|row| {
            if row.effective().0 != State::Running {
                lifecycle::set_detach_keys(&paths, &row, a.detach_keys.as_deref())?;
            }
            let mode = Attach::Attached {
                stdin: a.interactive,
                sig_proxy: true,
            };
            // A terminal's keys, ctrl-c and the detach keys included, go to the container.
            let _raw = (a.interactive && row.tty)
                .then(crate::run_cli::RawMode::enter)
                .flatten();
            let (handle, pid) = lifecycle::start(&paths, &row, mode)?;
            lifecycle::wait_attached(&paths, &row, handle, pid)
        });
    match result {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}
