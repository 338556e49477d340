//! The event journal: what happened to containers (and, through the API, images, volumes and
//! networks), as Docker's event messages, in one file per engine root that every `moat`
//! process appends to — the CLI, the monitors, the prober, `moat serve` — so that `moat events`
//! and the API's `GET /events` see a container started from the command line as one started
//! through the API.
//!
//! `<root>/events.jsonl`: one JSON document per line, each written with a single `write` on a
//! descriptor opened with `O_APPEND` (lines from concurrent writers never interleave). When it
//! passes [`ROTATE_AT`] bytes a writer renames it to `events.jsonl.1` (the one older
//! generation kept) under `<root>/events.lock`; readers following the file notice the new
//! inode and go on in the new file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The journal's file in the engine root.
pub const FILE: &str = "events.jsonl";
/// Past this size the journal is rotated (one older generation kept).
pub const ROTATE_AT: u64 = 4 << 20;

/// An engine root's journal.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

/// An event as Docker sends it (`Type`, `Action`, `Actor`, `time`, `timeNano`; the older
/// `status`, `id` and `from` for containers).
pub fn event(kind: &str, action: &str, id: &str, attributes: &[(&str, &str)]) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let attrs: HashMap<&str, &str> = attributes.iter().copied().collect();
    let mut v = json!({
        "Type": kind,
        "Action": action,
        "Actor": {"ID": id, "Attributes": attrs},
        "scope": "local",
        "time": now.as_secs(),
        "timeNano": now.as_nanos() as u64,
    });
    if kind == "container" {
        v["status"] = json!(action);
        v["id"] = json!(id);
        v["from"] = json!(attrs.get("image").copied().unwrap_or(""));
    }
    v
}

impl Journal {
    /// The journal of the engine rooted at `root`.
    pub fn new(root: &Path) -> Journal {
        Journal {
            path: root.join(FILE),
        }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an event (see [`event`]). Best effort: an engine whose journal cannot be
    /// written still runs its containers; the failure is logged.
    pub fn emit(&self, kind: &str, action: &str, id: &str, attributes: &[(&str, &str)]) {
        self.append(&event(kind, action, id, attributes));
    }

    /// Appends a document as one line.
    pub fn append(&self, doc: &Value) {
        let mut line = doc.to_string();
        line.push('\n');
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| {
                f.write_all(line.as_bytes())?;
                f.metadata()
            });
        match written {
            Ok(m) if m.len() > ROTATE_AT => self.rotate(),
            Ok(_) => {}
            Err(e) => log::warn!("event journal {}: {e}", self.path.display()),
        }
    }

    /// Moves the full journal aside, once (another writer may be doing the same).
    fn rotate(&self) {
        let lock = self.path.with_file_name("events.lock");
        let Ok(f) = File::create(&lock) else { return };
        let Ok(_held) = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive) else {
            return;
        };
        // Checked again under the lock: the first writer past the limit rotates.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() > ROTATE_AT) {
            let _ = std::fs::rename(&self.path, self.path.with_extension("jsonl.1"));
        }
    }

    /// Every event kept (the older generation first), oldest first.
    pub fn all(&self) -> Vec<Value> {
        let mut out = vec![];
        for p in [self.path.with_extension("jsonl.1"), self.path.clone()] {
            if let Ok(f) = File::open(&p) {
                out.extend(parse_lines(BufReader::new(f)));
            }
        }
        out
    }

    /// A reader of the events written from now on.
    pub fn follow(&self) -> Follower {
        let (ino, offset) = match std::fs::metadata(&self.path) {
            Ok(m) => (m.ino(), m.len()),
            Err(_) => (0, 0),
        };
        Follower {
            path: self.path.clone(),
            ino,
            offset,
            partial: String::new(),
        }
    }
}

fn parse_lines(r: impl BufRead) -> impl Iterator<Item = Value> {
    r.lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
}

/// Follows the journal: [`Follower::poll`] returns what was appended since the last call.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    ino: u64,
    offset: u64,
    /// A line whose end has not been written yet.
    partial: String,
}

impl Follower {
    /// The events appended since the last call (after a rotation: the rest of the old file,
    /// then the new one from its start).
    pub fn poll(&mut self) -> Vec<Value> {
        let mut out = vec![];
        let current = std::fs::metadata(&self.path).map(|m| m.ino()).unwrap_or(0);
        if current != self.ino && self.ino != 0 {
            // Rotated: finish the old generation first.
            out.extend(self.read_from(&self.path.with_extension("jsonl.1")));
            self.offset = 0;
            self.partial.clear();
        }
        self.ino = current;
        out.extend(self.read_from(&self.path.clone()));
        out
    }

    fn read_from(&mut self, path: &Path) -> Vec<Value> {
        let Ok(mut f) = File::open(path) else {
            return vec![];
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return vec![];
        }
        let mut text = String::new();
        if f.read_to_string(&mut text).is_err() {
            return vec![];
        }
        self.offset += text.len() as u64;
        self.partial.push_str(&text);
        let mut out = vec![];
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            if let Ok(v) = serde_json::from_str(line.trim_end()) {
                out.push(v);
            }
        }
        out
    }

    /// Waits up to `limit` for events, polling every 50 ms.
    pub fn wait(&mut self, limit: Duration) -> Vec<Value> {
        let until = std::time::Instant::now() + limit;
        loop {
            let got = self.poll();
            if !got.is_empty() || std::time::Instant::now() >= until {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether event `e` passes Docker's `filters` (`type`, `event`, `container`/`image`/`volume`/
/// `network` by id, id prefix or name, `label`).
pub fn matches(e: &Value, filters: &HashMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(k, wanted)| {
        let attr = |name: &str| {
            e["Actor"]["Attributes"][name]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        let have: Vec<String> = match k.as_str() {
            "type" => vec![e["Type"].as_str().unwrap_or("").to_string()],
            "event" => {
                // `health_status: healthy` matches `health_status` too, as Docker's.
                let a = e["Action"].as_str().unwrap_or("").to_string();
                let head = a.split(':').next().unwrap_or("").to_string();
                vec![a, head]
            }
            "container" | "image" | "volume" | "network" => {
                if e["Type"] != k.as_str() {
                    return false;
                }
                vec![
                    e["Actor"]["ID"].as_str().unwrap_or("").to_string(),
                    attr("name"),
                ]
            }
            "label" => {
                return wanted.iter().any(|w| match w.split_once('=') {
                    Some((lk, lv)) => attr(lk) == lv,
                    None => e["Actor"]["Attributes"].get(w.as_str()).is_some(),
                })
            }
            _ => return true,
        };
        wanted.iter().any(|w| {
            have.iter()
                .any(|h| !h.is_empty() && (h == w || h.starts_with(w.as_str())))
        })
    })
}

/// An event's time in seconds (with the fraction).
pub fn seconds(e: &Value) -> f64 {
    e["timeNano"]
        .as_u64()
        .map(|n| n as f64 / 1e9)
        .or_else(|| e["time"].as_f64())
        .unwrap_or(0.0)
}

/// Journals container event `action` of `row` with Docker's attributes (its labels, image,
/// name) and `extra`.
pub fn container(
    paths: &crate::Paths,
    action: &str,
    row: &crate::containers::Row,
    extra: &[(&str, &str)],
) {
    let labels = crate::inspect::labels(paths, &row.id);
    container_labelled(paths, action, row, &labels, extra);
}

/// As [`container`], with the labels given (read before the container's directory went).
pub fn container_labelled(
    paths: &crate::Paths,
    action: &str,
    row: &crate::containers::Row,
    labels: &[(String, String)],
    extra: &[(&str, &str)],
) {
    let mut attrs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    attrs.extend([
        ("image", row.image_ref.as_str()),
        ("name", row.name.as_str()),
    ]);
    attrs.extend_from_slice(extra);
    Journal::new(&paths.root).emit("container", action, &row.id, &attrs);
}

/// Docker's `--since`/`--until` value: Unix seconds (with a fraction), an RFC 3339 time, or a
/// duration before now (`10m`).
pub fn parse_time(s: &str) -> Option<f64> {
    if let Ok(n) = s.parse::<f64>() {
        return Some(n);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64());
    }
    let d = humantime::parse_duration(s).ok()?;
    SystemTime::now()
        .checked_sub(d)?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

/// The docker CLI's line for an event: `TIME TYPE ACTION ID (k=v, ...)`.
pub fn line(e: &Value) -> String {
    let nanos = e["timeNano"].as_u64().unwrap_or(0);
    let t = UNIX_EPOCH + Duration::from_nanos(nanos);
    let mut attrs: Vec<(String, String)> = e["Actor"]["Attributes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    attrs.sort();
    let attrs: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{} {} {} {} ({})",
        humantime::format_rfc3339_nanos(t),
        e["Type"].as_str().unwrap_or(""),
        e["Action"].as_str().unwrap_or(""),
        e["Actor"]["ID"].as_str().unwrap_or(""),
        attrs.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_events_are_read_followed_and_filtered() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::new(d.path());
        j.emit(
            "container",
            "create",
            "abc",
            &[("name", "web"), ("image", "busybox")],
        );
        let mut f = j.follow();
        assert!(f.poll().is_empty());
        j.emit("container", "start", "abc", &[("name", "web")]);
        j.emit("image", "tag", "sha256:1", &[("name", "x:1")]);
        let got = f.poll();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["Action"], "start");
        assert_eq!(got[0]["status"], "start");
        assert_eq!(j.all().len(), 3);
        let filters: HashMap<String, Vec<String>> =
            [("container".to_string(), vec!["web".to_string()])].into();
        let kept: Vec<_> = j
            .all()
            .into_iter()
            .filter(|e| matches(e, &filters))
            .collect();
        assert_eq!(kept.len(), 2);
        let filters: HashMap<String, Vec<String>> =
            [("event".to_string(), vec!["health_status".to_string()])].into();
        j.emit("container", "health_status: healthy", "abc", &[]);
        assert_eq!(f.poll().iter().filter(|e| matches(e, &filters)).count(), 1);
        assert!(line(&got[0]).contains(" container start abc (name=web)"));
    }

    #[test]
    fn a_rotated_journal_is_followed_into_its_new_file() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::new(d.path());
        j.emit("container", "create", "a", &[]);
        let mut f = j.follow();
        j.emit("container", "start", "a", &[]);
        // Rotation as a writer past the limit does it.
        std::fs::rename(j.path(), j.path().with_extension("jsonl.1")).unwrap();
        j.emit("container", "die", "a", &[("exitCode", "0")]);
        let got: Vec<String> = f
            .poll()
            .iter()
            .map(|e| e["Action"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, ["start", "die"]);
        assert_eq!(j.all().len(), 3);
    }

    #[test]
    fn times_as_docker_takes_them() {
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000.5));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000.0));
        let ago = parse_time("10m").unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - ago - 600.0).abs() < 5.0);
        assert_eq!(parse_time("soon"), None);
    }
}
