//! OCI hooks: programs run at lifecycle points with the container's state on stdin.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

/// Errors of a hook.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// the hook could not be started
    #[error("{stage} hook {path}: cannot start: {source}")]
    Spawn {
        /// Lifecycle stage.
        stage: &'static str,
        /// The hook's path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// the hook failed
    #[error("{stage} hook {path} failed: {status}")]
    Failed {
        /// Lifecycle stage.
        stage: &'static str,
        /// The hook's path.
        path: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// the hook timed out
    #[error("{stage} hook {path} timed out after {secs} s and was killed")]
    Timeout {
        /// Lifecycle stage.
        stage: &'static str,
        /// The hook's path.
        path: String,
        /// The timeout.
        secs: i64,
    },
}

/// Runs `hooks` in order, each with `state_json` on stdin; the first failure stops the rest.
pub fn run(stage: &'static str, hooks: &[Hook], state_json: &str) -> Result<(), HookError> {
    for h in hooks {
        run_one(stage, h, state_json)?;
    }
    Ok(())
}

fn run_one(stage: &'static str, h: &Hook, state_json: &str) -> Result<(), HookError> {
    let path = h.path().display().to_string();
    let mut cmd = Command::new(h.path());
    let args = h.args().clone().unwrap_or_default();
    // args[0] is the hook's argv[0], as in execve.
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        stage,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let deadline = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| (t, Instant::now() + Duration::from_secs(t as u64)));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Spawn {
                    stage,
                    path,
                    source,
                })
            }
        }
        if let Some((secs, at)) = deadline {
            if Instant::now() >= at {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout { stage, path, secs });
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if !status.success() {
        return Err(HookError::Failed {
            stage,
            path,
            status,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn hook_gets_state_on_stdin_args_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = hook(&format!(
            r#"{{"path":"/bin/sh","args":["sh","-c","cat > {} ; echo \"$1 $X\" >> {}","x","arg1"],"env":["X=envx"]}}"#,
            out.display(),
            out.display()
        ));
        run("poststart", &[h], r#"{"id":"c"}"#).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"c\"}arg1 envx\n"
        );
    }

    #[test]
    fn failure_and_timeout_are_reported() {
        let h = hook(r#"{"path":"/bin/false"}"#);
        assert!(matches!(
            run("createRuntime", &[h], "{}"),
            Err(HookError::Failed { .. })
        ));
        let h = hook(r#"{"path":"/bin/sleep","args":["sleep","5"],"timeout":1}"#);
        let t = Instant::now();
        assert!(matches!(
            run("prestart", &[h], "{}"),
            Err(HookError::Timeout { .. })
        ));
        assert!(t.elapsed() < Duration::from_secs(4));
        let h = hook(r#"{"path":"/nonexistent/hook"}"#);
        assert!(matches!(
            run("poststop", &[h], "{}"),
            Err(HookError::Spawn { .. })
        ));
    }
}
