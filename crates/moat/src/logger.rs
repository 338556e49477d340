//! Logging for the runtime command line: text to stderr, or (with `--log FILE --log-format json`)
//! one JSON object per line, the format containerd and Podman read back from runc's log file.

use std::io::Write;
use std::sync::Mutex;

/// Where and how log lines go.
#[derive(Debug)]
pub struct Logger {
    file: Option<Mutex<std::fs::File>>,
    json: bool,
    level: log::LevelFilter,
}

impl Logger {
    /// Installs the logger; a log file that cannot be opened falls back to stderr.
    pub fn install(path: Option<&std::path::Path>, json: bool, debug: bool) {
        let file = path.and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        });
        Self::install_to(file, json, debug);
    }

    /// Installs the logger on a copy (close-on-exec) of the stderr this process started with,
    /// so that later redirections of descriptor 2 do not take the log lines along.
    pub fn install_on_stderr_copy(debug: bool) -> Option<std::os::fd::RawFd> {
        use std::os::fd::{AsFd, AsRawFd};
        let copy = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::fs::File::from);
        let fd = copy.as_ref().map(|f| f.as_raw_fd());
        Self::install_to(copy, false, debug);
        fd
    }

    fn install_to(file: Option<std::fs::File>, json: bool, debug: bool) {
        let file = file.map(Mutex::new);
        let level = if debug {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        };
        let logger = Box::new(Logger { file, json, level });
        if log::set_boxed_logger(logger).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = record.level().to_string().to_lowercase();
        let msg = record.args().to_string();
        let line = if self.json {
            serde_json::json!({
                "level": level,
                "msg": msg,
                "time": moat_runtime::state::now_rfc3339(),
            })
            .to_string()
        } else {
            // Debug lines carry the time since boot (CLOCK_MONOTONIC) in microseconds, so the
            // lines of the parent and of the init chain can be compared (startup profiling).
            if record.level() == log::Level::Debug {
                let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                    .map(|t| t.tv_sec() * 1_000_000 + t.tv_nsec() / 1000)
                    .unwrap_or(0);
                format!("moat: debug [{t} us pid {}]: {msg}", std::process::id())
            } else {
                format!("moat: {level}: {msg}")
            }
        };
        match &self.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = writeln!(f, "{line}");
                }
            }
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    fn flush(&self) {}
}
