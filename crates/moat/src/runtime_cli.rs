//! `moat runtime`: runc's command line over `moat_runtime::ops`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use moat_runtime::ops::{self, create::CreateOptions};
use moat_runtime::{ContainerId, OpsError, Runtime};

/// The runc-compatible OCI runtime.
#[derive(Debug, Parser)]
#[command(
    name = "moat-runtime",
    version,
    about = "moat's OCI runtime (runc-compatible)"
)]
pub struct RuntimeCli {
    /// Directory for the containers' state.
    #[arg(long, global = true, default_value = "/run/moat/runtime")]
    root: PathBuf,
    /// Log file (default: stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Debug logging.
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd for cgroups (not supported: moat manages cgroupfs directly).
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    command: RtCommand,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Bundle directory (holds config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Write the init's pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master (process.terminal).
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Pass descriptors 3..3+N to the container.
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Accepted for runc compatibility (moat always pivots).
    #[arg(long)]
    no_pivot: bool,
    /// Accepted for runc compatibility.
    #[arg(long)]
    no_new_keyring: bool,
    /// Container id.
    id: String,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// The process as an OCI process JSON file (instead of the flags below).
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Working directory.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short, long)]
    env: Vec<String>,
    /// uid[:gid].
    #[arg(short, long)]
    user: Option<String>,
    /// Supplementary group (repeatable).
    #[arg(short = 'g', long)]
    additional_gids: Vec<u32>,
    /// Add a capability (repeatable).
    #[arg(short, long)]
    cap: Vec<String>,
    /// Set no_new_privileges.
    #[arg(long)]
    no_new_privs: bool,
    /// Return once started.
    #[arg(short, long)]
    detach: bool,
    /// Write the process's pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Pass descriptors 3..3+N to the process.
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Accepted for runc compatibility.
    #[arg(long)]
    process_label: Option<String>,
    /// Accepted for runc compatibility.
    #[arg(long)]
    apparmor: Option<String>,
    /// Container id.
    id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum RtCommand {
    /// Create a container (its process waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Print a container's state as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal to a container.
    Kill {
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
        /// Container id.
        id: String,
        /// Signal (name or number).
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container.
    Delete {
        /// Kill it first if it runs.
        #[arg(short, long)]
        force: bool,
        /// Container id.
        id: String,
    },
    /// Run a new process inside a container.
    Exec(ExecArgs),
    /// Create and start a container, wait for it and delete it.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once started.
        #[arg(short, long)]
        detach: bool,
    },
    /// List containers.
    List {
        /// table or json.
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Ids only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a default config.json.
    Spec {
        /// Bundle directory.
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A config for rootless containers.
        #[arg(long)]
        rootless: bool,
    },
}

fn id(s: &str) -> Result<ContainerId, OpsError> {
    Ok(s.parse()?)
}

fn create_options(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
    }
}

/// Runs the command; returns the process exit code.
pub fn main(cli: RuntimeCli) -> i32 {
    moat_runtime_logger(&cli);
    log::debug!(
        "cli: parsed (sealed copy: {})",
        moat_runtime::selfclone::is_sealed()
    );
    if cli.systemd_cgroup {
        log::error!("--systemd-cgroup is not supported: moat manages cgroupfs directly");
        return 1;
    }
    // Before any of our processes enters a container, run from a sealed copy (CVE-2019-5736).
    if matches!(
        cli.command,
        RtCommand::Create(_) | RtCommand::Run { .. } | RtCommand::Exec(_)
    ) {
        if let Err(e) = moat_runtime::selfclone::ensure_sealed() {
            log::error!("{e}");
            return 1;
        }
    }
    log::debug!("cli: ready");
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

fn moat_runtime_logger(cli: &RuntimeCli) {
    crate::logger::Logger::install(cli.log.as_deref(), cli.log_format == "json", cli.debug);
}

fn dispatch(cli: &RuntimeCli) -> Result<i32, OpsError> {
    let rt = Runtime::new(&cli.root);
    match &cli.command {
        RtCommand::Create(a) => {
            ops::create::create(&rt, &id(&a.id)?, &create_options(a))?;
        }
        RtCommand::Start { id: i } => ops::start::start(&rt, &id(i)?)?,
        RtCommand::State { id: i } => {
            let st = ops::state::state(&rt, &id(i)?)?;
            println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
        }
        RtCommand::Kill { all, id: i, signal } => {
            ops::kill::kill(&rt, &id(i)?, ops::parse_signal(signal)?, *all)?
        }
        RtCommand::Delete { force, id: i } => ops::delete::delete(&rt, &id(i)?, *force)?,
        RtCommand::Exec(a) => return exec(&rt, a),
        RtCommand::Run { create, detach } => {
            return ops::run::run(&rt, &id(&create.id)?, &create_options(create), *detach);
        }
        RtCommand::List { format, quiet } => {
            let entries = ops::list::list(&rt)?;
            if *quiet {
                for e in &entries {
                    println!("{}", e.id);
                }
            } else if format == "json" {
                println!("{}", serde_json::to_string(&entries).unwrap_or_default());
            } else {
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<30} OWNER",
                    "ID", "PID", "STATUS", "BUNDLE", "CREATED"
                );
                for e in &entries {
                    println!(
                        "{:<20} {:<8} {:<10} {:<40} {:<30} {}",
                        e.id,
                        e.pid,
                        e.status,
                        e.bundle.display(),
                        e.created,
                        e.owner
                    );
                }
            }
        }
        RtCommand::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(OpsError::Io {
                    what: "refusing to overwrite",
                    path,
                    source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                });
            }
            let spec = ops::spec::default_spec(*rootless);
            let text = serde_json::to_string_pretty(&spec).unwrap_or_default();
            std::fs::write(&path, text).map_err(|source| OpsError::Io {
                what: "write",
                path,
                source,
            })?;
        }
    }
    Ok(0)
}

fn exec(rt: &Runtime, a: &ExecArgs) -> Result<i32, OpsError> {
    use ops::exec::{exec, process_for, ExecOptions, ExecOverrides};
    let id = id(&a.id)?;
    let process = match &a.process {
        Some(path) => {
            let text = std::fs::read(path).map_err(|source| OpsError::Io {
                what: "read process file",
                path: path.clone(),
                source,
            })?;
            serde_json::from_slice(&text).map_err(|source| OpsError::ProcessFile {
                path: path.clone(),
                source,
            })?
        }
        None => {
            let user = match &a.user {
                None => None,
                Some(u) => {
                    let bad = || OpsError::BadUser(u.clone());
                    let (uid, gid) = match u.split_once(':') {
                        Some((a, b)) => (a, Some(b)),
                        None => (u.as_str(), None),
                    };
                    let uid = uid.parse().map_err(|_| bad())?;
                    let gid = gid.map(|g| g.parse().map_err(|_| bad())).transpose()?;
                    Some((uid, gid))
                }
            };
            let (record, _) = rt.lookup(&id)?;
            process_for(
                &record.config,
                &ExecOverrides {
                    args: a.command.clone(),
                    tty: a.tty,
                    cwd: a.cwd.clone(),
                    env: a.env.clone(),
                    user,
                    additional_gids: a.additional_gids.clone(),
                    caps: a.cap.clone(),
                    no_new_privs: a.no_new_privs,
                },
            )?
        }
    };
    exec(
        rt,
        &id,
        &ExecOptions {
            process,
            pid_file: a.pid_file.clone(),
            console_socket: a.console_socket.clone(),
            preserve_fds: a.preserve_fds,
            detach: a.detach,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        RuntimeCli::command().debug_assert();
    }

    #[test]
    fn runc_style_invocations_parse() {
        let cli = RuntimeCli::try_parse_from([
            "moat-runtime",
            "--root",
            "/r",
            "--log",
            "/l.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "--console-socket",
            "/c",
            "id1",
        ])
        .unwrap();
        assert!(matches!(cli.command, RtCommand::Create(ref a) if a.id == "id1"));
        let cli = RuntimeCli::try_parse_from(["moat-runtime", "kill", "id1", "KILL"]).unwrap();
        assert!(matches!(cli.command, RtCommand::Kill { ref signal, .. } if signal == "KILL"));
        let cli = RuntimeCli::try_parse_from(["moat-runtime", "spec", "--rootless"]).unwrap();
        assert!(matches!(
            cli.command,
            RtCommand::Spec { rootless: true, .. }
        ));
    }
}
