//! `moat run` and `moat create`: a container from an image.

use std::path::Path;

use clap::Args;
use moat_engine::lifecycle::Attach;
use moat_engine::logs::Rotation;
use moat_engine::run::CreateExtras;
use moat_engine::spec::{Network, RunOptions};
use moat_engine::Paths;

/// `moat run` and `moat create`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Keep standard input open (the container reads moat's stdin).
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal (not supported yet).
    #[arg(short, long)]
    tty: bool,
    /// Container name.
    #[arg(long)]
    name: Option<String>,
    /// Log driver options: max-size=SIZE, max-file=N (json-file).
    #[arg(long)]
    log_opt: Vec<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass moat's own value); repeatable.
    #[arg(short, long)]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// User (name or uid, optionally :group).
    #[arg(short, long)]
    user: Option<String>,
    /// Container host name.
    #[arg(long)]
    hostname: Option<String>,
    /// Override the image's entrypoint ("" clears it).
    #[arg(long)]
    entrypoint: Option<String>,
    /// Network: none (loopback only, the default until bridge networks land) or host.
    #[arg(long, default_value = "none", value_parser = ["none", "host"])]
    network: String,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Security options: seccomp=unconfined, no-new-privileges.
    #[arg(long)]
    security_opt: Vec<String>,
    /// Image, then the command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    image_and_command: Vec<String>,
}

/// `moat run`: the exit code (the container's, or Docker's 125/126/127).
pub fn run(root: &Path, a: &RunArgs) -> i32 {
    let Some((paths, opts, extras)) = prepare(root, a) else {
        return 125;
    };
    let mode = if a.detach {
        Attach::Detached
    } else {
        Attach::Attached {
            stdin: a.interactive,
        }
    };
    match moat_engine::run::run(&paths, &opts, &extras, mode) {
        Ok((row, code)) => {
            if a.detach {
                println!("{}", row.id);
            }
            code
        }
        Err(e) => {
            log::error!("{e}");
            e.exit_code()
        }
    }
}

/// `moat create`: prints the new container's id.
pub fn create(root: &Path, a: &RunArgs) -> i32 {
    let Some((paths, opts, extras)) = prepare(root, a) else {
        return 125;
    };
    match moat_engine::run::create(&paths, &opts, &extras) {
        Ok(row) => {
            println!("{}", row.id);
            0
        }
        Err(e) => {
            log::error!("{e}");
            125
        }
    }
}

/// Checks the flags and turns them into the engine's options (errors are printed here).
fn prepare(root: &Path, a: &RunArgs) -> Option<(Paths, RunOptions, CreateExtras)> {
    let paths = Paths::new(root);
    if let Err(e) = std::fs::create_dir_all(&paths.runtime_root) {
        log::error!("create {}: {e}", paths.runtime_root.display());
        return None;
    }
    // Before any of our processes enters a container, run from a sealed copy (CVE-2019-5736).
    if let Err(e) = moat_runtime::selfclone::ensure_sealed() {
        log::error!("{e}");
        return None;
    }
    if a.tty {
        log::error!("-t/--tty is not supported yet: run without it (output is still streamed)");
        return None;
    }
    let rotation = match Rotation::parse(&a.log_opt) {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return None;
        }
    };
    let (image, cmd) = match a.image_and_command.split_first() {
        Some((i, c)) => (i.clone(), c.to_vec()),
        None => return None,
    };
    let mut seccomp_unconfined = false;
    let mut no_new_privileges = false;
    for o in &a.security_opt {
        match o.as_str() {
            "seccomp=unconfined" | "seccomp:unconfined" => seccomp_unconfined = true,
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {
                no_new_privileges = true
            }
            "no-new-privileges=false" | "no-new-privileges:false" => no_new_privileges = false,
            other => {
                log::error!("--security-opt {other:?} is not supported (seccomp=unconfined, no-new-privileges)");
                return None;
            }
        }
    }
    let opts = RunOptions {
        image,
        cmd,
        entrypoint: a.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                vec![]
            } else {
                vec![e.clone()]
            }
        }),
        env: a.env.clone(),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        rm: a.rm,
        network: if a.network == "host" {
            Network::Host
        } else {
            Network::None
        },
        read_only: a.read_only,
        seccomp_unconfined,
        no_new_privileges,
    };
    let extras = CreateExtras {
        name: a.name.clone(),
        rotation,
    };
    Some((paths, opts, extras))
}
