//! `moat attach`: the running container's output here (and, for a terminal, our keys there)
//! until it exits; its exit code.

use std::path::Path;

use clap::Args;
use moat_engine::containers::Records;
use moat_engine::{EngineError, Paths};

/// `moat attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach standard input (a terminal's keys stay here).
    #[arg(long)]
    no_stdin: bool,
    /// The container.
    container: String,
}

/// Runs `moat attach`; the container's exit code, 0 when detached with ctrl-p ctrl-q.
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
    match moat_engine::attach::attach(&paths, &row, stdin) {
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
