//! What containers and images look like to Docker's clients: "N units ago", the STATUS text,
//! the summaries of `GET /containers/json` (shared by `moat ps` and the API).

use serde_json::{json, Value};

use crate::containers::{Row, State};
use crate::{lifecycle, Paths};

/// Docker's "N units ago".
pub fn human_ago(rfc3339: &str) -> String {
    let Some(then) = parse_rfc3339(rfc3339) else {
        return "N/A".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let s = (now - then).max(0);
    let (n, unit) = match s {
        0..=59 => {
            return if s < 2 {
                "Less than a second ago".into()
            } else {
                format!("{s} seconds ago")
            }
        }
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        86_400..=1_209_599 => (s / 86_400, "day"),
        1_209_600..=5_183_999 => (s / 604_800, "week"),
        5_184_000..=63_071_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    match n {
        1 if unit == "hour" => "About an hour ago".into(),
        1 => format!("About a {unit} ago"),
        _ => format!("{n} {unit}s ago"),
    }
}

/// Seconds since the epoch of an RFC 3339 time.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

/// Total memory of the host, in bytes (the limit of a container without one).
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The network interfaces of the network namespace of process `pid`, but loopback (as Docker
/// counts NET I/O): name, bytes received, bytes sent. None when that namespace is ours (the
/// host's: a `--network host` container, or the host-side driver of a VM container without a
/// network), whose counters are not the container's.
pub fn net_io(pid: i32) -> Vec<(String, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    if ns(&format!("/proc/{pid}/ns/net")).ok() == ns("/proc/self/ns/net").ok() {
        return vec![];
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    parse_net_dev(&text)
}

fn parse_net_dev(text: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (name != "lo" && f.len() >= 9).then(|| (name.to_string(), f[0], f[8]))
        })
        .collect()
}

/// Docker's STATUS column: `Created`, `Up 5 seconds (Paused)`, `Exited (0) 2 minutes ago`.
pub fn status(paths: &Paths, row: &Row) -> String {
    match row.effective().0 {
        State::Created => "Created".into(),
        State::Running => format!(
            "Up {}{}",
            human_ago(&row.started_at).replace(" ago", ""),
            if lifecycle::is_paused(paths, row) {
                " (Paused)".to_string()
            } else {
                crate::health::status_suffix(&paths.container_dir(&row.id))
            }
        ),
        State::Exited => format!("Exited ({}) {}", row.exit_code, human_ago(&row.finished_at)),
    }
}

/// Docker's `State` word: created, running, paused, exited.
pub fn state_word(paths: &Paths, row: &Row) -> &'static str {
    match row.effective().0 {
        State::Created => "created",
        State::Running if lifecycle::is_paused(paths, row) => "paused",
        State::Running => "running",
        State::Exited => "exited",
    }
}

/// One entry of `GET /containers/json`; `ports`: [`crate::network::published`], read once
/// for the whole list.
pub fn summary(paths: &Paths, row: &Row, ports: &[moat_net::Port]) -> Value {
    let inspect = crate::inspect::container(paths, row);
    json!({
        "Id": row.id,
        "Names": [format!("/{}", row.name)],
        "Image": row.image_ref,
        "ImageID": row.image,
        "Command": row.command.join(" "),
        "Created": parse_rfc3339(&row.created).unwrap_or(0),
        "Ports": crate::network::ports_json(ports, &row.id),
        "Labels": inspect["Config"]["Labels"],
        "State": state_word(paths, row),
        "Status": status(paths, row),
        "HostConfig": {"NetworkMode": inspect["HostConfig"]["NetworkMode"]},
        "NetworkSettings": {"Networks": inspect["NetworkSettings"]["Networks"]},
        "Mounts": inspect["Mounts"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counts_all_but_loopback() {
        let t = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n\
  eth0:    2048      10    0    0    0     0          0         0     1024       8    0    0    0     0       0          0\n";
        assert_eq!(parse_net_dev(t), vec![("eth0".to_string(), 2048, 1024)]);
    }

    #[test]
    fn ages_read_as_dockers() {
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01Z"), Some(86_401));
        assert_eq!(
            human_ago(&moat_image::store::now_rfc3339()),
            "Less than a second ago"
        );
        assert_eq!(human_ago("garbage"), "N/A");
    }
}
