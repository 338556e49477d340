//! `moat exec`: another process in a running container, built from the container's own process
//! (environment, capabilities, rlimits, seccomp) with Docker's `exec` flags applied, and run by
//! the runtime library in this process. Its output goes straight to the caller (Docker does not
//! log exec output either).

use moat_runtime::ops::exec::{process_for, ExecOptions, ExecOverrides};
use moat_runtime::{OpsError, Runtime};

use crate::containers::{Row, State};
use crate::{EngineError, Paths};

/// Docker's `exec` flags.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub cmd: Vec<String>,
    /// `-e KEY=VALUE` (or `-e KEY`, taken from moat's environment).
    pub env: Vec<String>,
    /// `-u user[:group]`, resolved in the container's /etc/passwd and /etc/group.
    pub user: Option<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-d`: return once it started.
    pub detach: bool,
}

/// Runs the request in container `row`; its exit code (0 when detached).
pub fn exec(paths: &Paths, row: &Row, req: &ExecRequest) -> Result<i32, EngineError> {
    if row.effective().0 != State::Running {
        return Err(EngineError::Conflict(format!(
            "container {} is not running",
            row.id
        )));
    }
    if req.cmd.is_empty() {
        return Err(EngineError::Conflict(
            "exec needs a command to run".to_string(),
        ));
    }
    let dir = paths.container_dir(&row.id);
    let spec = oci_spec::runtime::Spec::load(dir.join("config.json"))
        .map_err(|e| EngineError::Spec(e.to_string()))?;
    if let Some(w) = &req.workdir {
        if !w.starts_with('/') {
            return Err(EngineError::Workdir(w.clone()));
        }
    }
    let (user, gids) = match &req.user {
        Some(u) => {
            let (uid, gid, gids) = crate::spec::resolve_user(&dir.join("rootfs"), u)?;
            (Some((uid, Some(gid))), gids)
        }
        None => (None, vec![]),
    };
    let env = req
        .env
        .iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e.clone())
            } else {
                std::env::var(e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect();
    let overrides = ExecOverrides {
        args: req.cmd.clone(),
        cwd: req.workdir.as_ref().map(Into::into),
        env,
        user,
        additional_gids: gids,
        ..Default::default()
    };
    let mut process = process_for(&spec, &overrides)?;
    // A non-root user holds no capabilities (only the bounding set stays), as in `run`.
    if process.user().uid() != 0 {
        if let Some(mut caps) = process.capabilities().clone() {
            caps.set_effective(Some(Default::default()));
            caps.set_permitted(Some(Default::default()));
            caps.set_inheritable(Some(Default::default()));
            caps.set_ambient(Some(Default::default()));
            process.set_capabilities(Some(caps));
        }
    }
    let cid = row
        .id
        .parse()
        .map_err(|e: moat_runtime::id::IdError| EngineError::Spec(e.to_string()))?;
    let rt = Runtime::new(&paths.runtime_root);
    let opts = ExecOptions {
        process,
        pid_file: None,
        console_socket: None,
        preserve_fds: 0,
        detach: req.detach,
    };
    match moat_runtime::ops::exec::exec(&rt, &cid, &opts) {
        Ok(code) => Ok(code),
        Err(OpsError::Command { message, code }) => Err(EngineError::Command { message, code }),
        Err(e) => Err(e.into()),
    }
}
