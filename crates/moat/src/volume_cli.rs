//! `moat volume create | ls | inspect | rm | prune`, with Docker's output.

use std::path::Path;

use clap::Subcommand;
use moat_engine::volumes::Volumes;
use moat_engine::{EngineError, Paths};

/// `moat volume ...`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a generated name when none is given); prints its name.
    Create {
        /// Set a label KEY=VALUE; repeatable.
        #[arg(short, long)]
        label: Vec<String>,
        /// Volume name.
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes as JSON.
    Inspect {
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while a container uses one).
    #[command(alias = "remove")]
    Rm {
        /// Accepted for Docker's command line; a volume in use is still refused.
        #[arg(short, long)]
        force: bool,
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove the anonymous volumes no container uses (all unused ones with -a).
    Prune {
        /// Named volumes too.
        #[arg(short, long)]
        all: bool,
        /// Do not ask (moat never asks).
        #[arg(short, long)]
        force: bool,
    },
}

/// Runs a volume command; the exit code.
pub fn volume(root: &Path, cmd: &VolumeCommand) -> i32 {
    match run(root, cmd) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

fn run(root: &Path, cmd: &VolumeCommand) -> Result<i32, EngineError> {
    let paths = Paths::new(root);
    let vols = Volumes::open(&paths)?;
    match cmd {
        VolumeCommand::Create { label, name } => {
            let labels = label
                .iter()
                .map(|l| moat_engine::hostconfig::parse_label(l))
                .collect::<Result<Vec<_>, _>>()?;
            println!("{}", vols.create(name.as_deref(), &labels)?);
        }
        VolumeCommand::Ls { quiet } => {
            let all = vols.all()?;
            if !quiet {
                println!("{:<15} VOLUME NAME", "DRIVER");
            }
            for v in all {
                if *quiet {
                    println!("{}", v.name);
                } else {
                    println!("{:<15} {}", "local", v.name);
                }
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut out = vec![];
            let mut code = 0;
            for n in names {
                match vols.get(n)? {
                    Some(v) => out.push(vols.inspect(&v)),
                    None => {
                        log::error!("no such volume: {n}");
                        code = 1;
                    }
                }
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&out).unwrap_or_else(|_| "[]".into())
            );
            return Ok(code);
        }
        VolumeCommand::Rm { names, .. } => {
            let mut code = 0;
            for n in names {
                match vols.remove(n) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        log::error!("{e}");
                        code = 1;
                    }
                }
            }
            return Ok(code);
        }
        VolumeCommand::Prune { all, .. } => {
            println!("Deleted Volumes:");
            for v in vols.all()? {
                if (v.anonymous || *all) && vols.users(&v.name).is_empty() {
                    vols.remove(&v.name)?;
                    println!("{}", v.name);
                }
            }
        }
    }
    Ok(0)
}
