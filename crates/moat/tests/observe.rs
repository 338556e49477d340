//! Looking at containers as a user types it: ps filters and formats, stats, logs by time
//! (root only).
#![allow(clippy::unwrap_used)]

mod common;

use common::{can_run, Engine, RunExt};

#[test]
fn ps_filters_and_formats() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run", "-d", "--name", "web1", "-l", "tier=web", "busybox", "sleep", "30",
    ]);
    e.moat(&["run", "--name", "job1", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(
        e.ok(&[
            "ps",
            "-a",
            "--filter",
            "status=exited",
            "--format",
            "{{.Names}}"
        ]),
        "job1\n"
    );
    assert_eq!(
        e.ok(&[
            "ps",
            "--filter",
            "label=tier=web",
            "--format",
            "{{.Names}} {{.State}}"
        ]),
        "web1 running\n"
    );
    assert_eq!(
        e.ok(&["ps", "-a", "--filter", "exited=3", "--format", "{{.Names}}"]),
        "job1\n"
    );
    assert_eq!(
        e.ok(&["ps", "-a", "--filter", "name=web", "-q"])
            .lines()
            .count(),
        1
    );
    // Same key: any; different keys: all.
    let both = e.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=web1",
        "--filter",
        "name=job1",
        "-q",
    ]);
    assert_eq!(both.lines().count(), 2);
    let none = e.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=web1",
        "--filter",
        "status=exited",
        "-q",
    ]);
    assert_eq!(none, "");
    let table = e.ok(&["ps", "-a", "--format", "table {{.Names}}\t{{.Image}}"]);
    assert!(table.starts_with("NAMES\tIMAGE\n"), "{table}");
    for bad in [
        ["--filter", "foo=bar"],
        ["--filter", "status=sleepy"],
        ["--format", "{{.Bogus}}"],
    ] {
        let out = e.moat(&["ps", bad[0], bad[1]]);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
    }
    e.ok(&["rm", "-f", "web1", "job1"]);
    e.assert_clean();
}

#[test]
fn stats_and_logs_by_time() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "--network",
        "none",
        "-m",
        "64m",
        "busybox",
        "sh",
        "-c",
        "while true; do :; done",
    ]);
    let out = e.ok(&["stats", "--no-stream", "busy"]);
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "PIDS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = lines.next().unwrap();
    assert!(row.contains("busy") && row.contains("/ 64.00MiB"), "{row}");
    let cpu: f64 = row
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(cpu > 20.0, "a busy loop uses CPU: {row}");
    // NET I/O counts the container's interfaces but loopback (none yet: 0B / 0B, as Docker
    // shows for --network none); BLOCK I/O comes from the blkio/io cgroup files.
    let cols: Vec<&str> = row
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cols[5], "0B / 0B", "{row}");
    assert!(cols[6].contains(" / "), "{row}");
    e.ok(&["rm", "-f", "busy"]);
    assert_eq!(
        e.moat(&["stats", "--no-stream", "busy"]).status.code(),
        Some(1)
    );

    e.ok(&[
        "run",
        "--name",
        "lg",
        "busybox",
        "sh",
        "-c",
        "echo one; sleep 1.5; echo two",
    ]);
    assert_eq!(e.ok(&["logs", "--since", "1s", "lg"]), "two\n");
    assert_eq!(e.ok(&["logs", "--until", "1s", "lg"]), "one\n");
    assert_eq!(
        e.ok(&["logs", "--since", "2020-01-01T00:00:00Z", "lg"]),
        "one\ntwo\n"
    );
    assert_eq!(e.ok(&["logs", "--since", "0", "lg"]), "one\ntwo\n");
    assert_eq!(
        e.moat(&["logs", "--since", "yesterday", "lg"])
            .status
            .code(),
        Some(1)
    );
    e.ok(&["rm", "lg"]);
    e.assert_clean();
}

#[test]
fn inspect_format_templates() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run", "-d", "--name", "fmt", "-l", "tier=web", "busybox", "sleep", "30",
    ]);
    let out = e.ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.Name}} {{json .Config.Cmd}} {{index .Config.Labels \"tier\"}}",
        "fmt",
    ]);
    assert_eq!(out, "running /fmt [\"sleep\",\"30\"] web\n");
    let out = e.ok(&[
        "container",
        "inspect",
        "--format",
        "{{.State.Running}}",
        "fmt",
    ]);
    assert_eq!(out, "true\n");
    let out = e.ok(&[
        "image",
        "inspect",
        "-f",
        "{{index .RepoTags 0}} {{.Os}}",
        "busybox",
    ]);
    assert_eq!(out, "busybox:latest linux\n");
    let bad = e.moat(&["inspect", "-f", "{{.Nope}}", "fmt"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("map has no entry for key \"Nope\""));
    e.ok(&["rm", "-f", "fmt"]);
}
