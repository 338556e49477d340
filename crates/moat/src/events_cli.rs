//! `moat events` (and `moat system events`): the engine's events as the docker CLI prints them,
//! past ones from `--since`, then new ones as they come until `--until` (or forever).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use moat_engine::events::{self, Journal};

/// `moat events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show events since this time (Unix seconds, RFC 3339, or a duration before now: 10m).
    #[arg(long)]
    since: Option<String>,
    /// Stop at this time (same forms); without it, follow until interrupted.
    #[arg(long)]
    until: Option<String>,
    /// Filter (type=, event=, container=, image=, volume=, network=, label=); repeatable.
    #[arg(short, long)]
    filter: Vec<String>,
    /// Go template for each event, or `json`.
    #[arg(long)]
    format: Option<String>,
}

/// `moat events`: 0, or 1 for bad arguments.
pub fn events(root: &Path, a: &EventsArgs) -> i32 {
    let parse = |what: &str, v: &Option<String>| -> Result<Option<f64>, String> {
        v.as_deref()
            .map(|s| events::parse_time(s).ok_or(format!("invalid {what} value {s:?}")))
            .transpose()
    };
    let (since, until) = match (parse("--since", &a.since), parse("--until", &a.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("{e}");
            return 1;
        }
    };
    let mut filters: HashMap<String, Vec<String>> = HashMap::new();
    for f in &a.filter {
        match f.split_once('=') {
            Some((k, v)) => filters
                .entry(k.to_string())
                .or_default()
                .push(v.to_string()),
            None => {
                log::error!("invalid filter {f:?}: KEY=VALUE");
                return 1;
            }
        }
    }
    let journal = Journal::new(root);
    let mut follower = journal.follow();
    let show = |e: &serde_json::Value| -> bool {
        let t = events::seconds(e);
        if since.is_some_and(|s| t < s.floor()) || until.is_some_and(|u| t > u) {
            return true;
        }
        if !events::matches(e, &filters) {
            return true;
        }
        let text = match a.format.as_deref() {
            None => events::line(e),
            Some("json") | Some("{{json .}}") => e.to_string(),
            Some(tpl) => match moat_engine::template::render(tpl, e) {
                Ok(t) => t,
                Err(err) => {
                    log::error!("{err}");
                    return false;
                }
            },
        };
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
    };
    // The follower started before the past was read: what both saw is shown once.
    let mut shown_until = 0u64;
    if since.is_some() {
        for e in journal.all() {
            shown_until = shown_until.max(e["timeNano"].as_u64().unwrap_or(0));
            if !show(&e) {
                return 0;
            }
        }
    }
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    };
    loop {
        if until.is_some_and(|u| now() > u) {
            return 0;
        }
        for e in follower.wait(Duration::from_millis(200)) {
            if e["timeNano"].as_u64().unwrap_or(0) <= shown_until {
                continue;
            }
            if !show(&e) {
                return 0;
            }
        }
    }
}
