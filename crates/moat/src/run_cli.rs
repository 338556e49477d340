//! `moat run`: a container from an image, in the foreground.

use std::path::{Path, PathBuf};

use clap::Args;
use moat_engine::spec::{Network, RunOptions};

/// `moat run`.
#[derive(Debug, Args)]
pub struct RunArgs {
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

/// Where the runtime keeps its state for an engine rooted at `root`: `/run/moat/runtime` for
/// the default root (tmpfs: gone at reboot, as the processes are), else inside `root`.
pub fn runtime_root(root: &Path) -> PathBuf {
    if root == Path::new("/var/lib/moat") {
        PathBuf::from("/run/moat/runtime")
    } else {
        root.join("run")
    }
}

/// Runs the container; returns the exit code (the container's, or Docker's 125/126/127).
pub fn run(root: &Path, a: &RunArgs) -> i32 {
    let rt_root = runtime_root(root);
    if let Err(e) = std::fs::create_dir_all(&rt_root) {
        log::error!("create {}: {e}", rt_root.display());
        return 125;
    }
    // Before any of our processes enters a container, run from a sealed copy (CVE-2019-5736).
    if let Err(e) = moat_runtime::selfclone::ensure_sealed(&rt_root) {
        log::error!("{e}");
        return 125;
    }
    if !a.rm {
        // Without container records there would be no `ps` to find a kept container nor `rm`
        // to remove it: refuse rather than leave directories behind.
        log::error!(
            "moat run currently needs --rm: kept and detached containers come with container records (ps, rm, logs)"
        );
        return 125;
    }
    let (image, cmd) = match a.image_and_command.split_first() {
        Some((i, c)) => (i.clone(), c.to_vec()),
        None => return 125,
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
                return 125;
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
    match moat_engine::run::run(root, &rt_root, &opts) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            e.exit_code()
        }
    }
}
