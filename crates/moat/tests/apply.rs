//! `moat apply`: a compose file's project created, left alone when unchanged, changed service by
//! service, scaled, and removed; bad files refused with nothing changed.

#![allow(clippy::unwrap_used)]

mod common;

use common::{can_run, inspect, Engine};

const FILE: &str = r#"name: shop
services:
  web:
    image: busybox
    command: sh -c 'mkdir -p /www && echo hello from $$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www'
    ports: ["80"]
    deploy: {replicas: 2}
    depends_on: [db]
    stop_signal: KILL
  db:
    image: busybox
    command: sh -c 'echo $$ROLE > /data/role; exec sleep 600'
    environment:
      ROLE: ${ROLE:-primary}
    volumes: ["data:/data"]
    networks: [default, back]
    stop_signal: KILL
networks:
  back:
    internal: true
volumes:
  data:
"#;

fn write(e: &Engine, text: &str) -> std::path::PathBuf {
    common::write_compose(e, text)
}

/// `moat apply -f FILE` with `ROLE` set in its environment: its standard output.
fn apply_with_role(e: &Engine, file: &std::path::Path, role: &str) -> String {
    let out = std::process::Command::new(common::MOAT)
        .env("ROLE", role)
        .arg("--root")
        .arg(e.dir.path())
        .args(["apply", "-f"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn id(e: &Engine, name: &str) -> String {
    inspect(e, name)["Id"].as_str().unwrap().to_string()
}

#[test]
fn apply_converges_and_a_second_apply_changes_nothing() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let f = write(&e, FILE);
    let file = f.to_str().unwrap();
    let dry = e.ok(&["apply", "-f", file, "--dry-run"]);
    assert!(
        dry.contains("+ container shop-web-2") && dry.contains("+ network shop_back"),
        "{dry}"
    );
    assert_eq!(e.ok(&["ps", "-aq"]), "", "a dry run changes nothing");
    let out = e.ok(&["apply", "-f", file]);
    assert!(out.contains("6 changes"), "{out}");
    for c in ["shop-web-1", "shop-web-2", "shop-db-1"] {
        assert_eq!(inspect(&e, c)["State"]["Status"], "running", "{c}");
    }
    // Services reach each other by name on the project's default network; db's volume is the
    // project's.
    let script = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 web 80 | tail -1; cat /data/role 2>/dev/null; ping -c1 -W2 db >/dev/null && echo db-reachable";
    common::eventually("web answers by its service name", || {
        let (_, out, _) = common::RunExt::run(
            &e,
            &["--network", "shop_default", "busybox", "sh", "-c", script],
        );
        out.contains("hello from shop-web-") && out.contains("db-reachable")
    });
    assert!(e.ok(&["volume", "ls"]).contains("shop_data"));
    let web1 = id(&e, "shop-web-1");
    let db1 = id(&e, "shop-db-1");
    assert_eq!(
        e.ok(&["apply", "-f", file]).trim(),
        "project shop: no changes"
    );
    // One service's configuration changes: only its container is replaced.
    let text = apply_with_role(&e, &f, "replica");
    assert!(
        text.contains("1 change") && text.contains("~ container shop-db-1"),
        "{text}"
    );
    assert_ne!(id(&e, "shop-db-1"), db1);
    assert_eq!(id(&e, "shop-web-1"), web1);
    let role = e.ok(&["exec", "shop-db-1", "cat", "/data/role"]);
    assert_eq!(role.trim(), "replica");
    // Scaled down: the extra replica goes.
    let f2 = write(&e, &FILE.replace("replicas: 2", "replicas: 1"));
    let text = apply_with_role(&e, &f2, "replica");
    assert!(text.contains("- container shop-web-2"), "{text}");
    assert!(e.moat(&["inspect", "shop-web-2"]).status.code() != Some(0));
    // Down: containers and networks go; the volume only with -v.
    let out = e.ok(&["apply", "-f", file, "--down"]);
    assert!(out.contains("- network shop_default"), "{out}");
    assert_eq!(e.ok(&["ps", "-aq"]), "");
    assert!(!e.ok(&["network", "ls"]).contains("shop_"));
    assert!(e.ok(&["volume", "ls"]).contains("shop_data"));
    e.ok(&["apply", "-f", file, "--down", "-v"]);
    assert!(!e.ok(&["volume", "ls"]).contains("shop_data"));
}

#[test]
fn bad_files_are_refused_and_change_nothing() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    for (text, needle) in [
        ("services:\n  web:\n    image: busybox\n    imagee: x\n", "services.web: unknown field `imagee`"),
        ("services:\n  web:\n    image: busybox\n    ports: 8080\n", "services.web.ports"),
        ("services:\n  a: {image: busybox, depends_on: [b]}\n  b: {image: busybox, depends_on: [a]}\n", "cycle"),
        ("services:\n  a: {image: \"${NOPE:?is required}\"}\n", "NOPE"),
        ("services:\n  a: {image: busybox, healthcheck: {test: [x]}}\n", "services.a.healthcheck.test"),
        ("services:\n  a: {image: busybox, build: .}\n", "not supported"),
        ("services:\n  a: {image: busybox, restart: sometimes}\n", "services.a.restart"),
    ] {
        let f = write(&e, text);
        let out = e.moat(&["apply", "-f", f.to_str().unwrap(), "-p", "bad"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains(needle), "{text}: {err}");
        assert!(err.contains("compose.yaml"), "{err}");
        assert!(err.contains("line"), "the line is named: {err}");
    }
    // A project name is a file name under the root: only Compose's names.
    let f = write(&e, "services:\n  a: {image: busybox}\n");
    for bad in ["../escape", "/tmp/x", "Upper"] {
        let out = e.moat(&["apply", "-f", f.to_str().unwrap(), "-p", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {err}");
        assert!(err.contains("invalid project name"), "{bad}: {err}");
    }
    assert!(!e.dir.path().join("escape.lock").exists());
    assert_eq!(e.ok(&["ps", "-aq"]), "");
    assert!(!e.ok(&["network", "ls"]).contains("bad_"));
}

#[test]
fn secrets_and_configs_are_projected_and_a_changed_one_replaces_the_container() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let file = write(
        &e,
        "name: sec\nservices:\n  app:\n    image: busybox\n    command: sleep 600\n    \
         stop_signal: KILL\n    secrets: [pw, {source: pw, target: again}]\n    \
         configs: [{source: conf, target: /etc/app.conf}]\n\
         secrets:\n  pw:\n    file: pw.txt\nconfigs:\n  conf:\n    file: app.conf\n",
    );
    let dir = file.parent().unwrap().to_path_buf();
    std::fs::write(dir.join("pw.txt"), "first").unwrap();
    std::fs::write(dir.join("app.conf"), "level=1\n").unwrap();
    let f = file.to_str().unwrap();
    e.ok(&["apply", "-f", f]);
    let read = |p: &str| e.ok(&["exec", "sec-app-1", "cat", p]);
    assert_eq!(read("/run/secrets/pw"), "first");
    assert_eq!(read("/run/secrets/again"), "first");
    assert_eq!(read("/etc/app.conf"), "level=1\n");
    // Read-only in the container.
    let out = e.moat(&["exec", "sec-app-1", "sh", "-c", "echo x > /run/secrets/pw"]);
    assert_ne!(out.status.code(), Some(0));
    // A changed secret is a changed configuration: the container is replaced.
    let before = id(&e, "sec-app-1");
    std::fs::write(dir.join("pw.txt"), "second").unwrap();
    e.ok(&["apply", "-f", f]);
    assert_ne!(id(&e, "sec-app-1"), before);
    assert_eq!(read("/run/secrets/pw"), "second");
    e.ok(&["apply", "-f", f, "--down"]);
    assert_eq!(e.ok(&["ps", "-aq"]), "");
}

#[test]
fn a_dependency_that_must_complete_runs_to_its_end_first() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let compose = |init_cmd: &str| {
        format!(
            "name: seq\nservices:\n  init:\n    image: busybox\n    command: sh -c '{init_cmd}'\n    \
             volumes: [\"data:/data\"]\n  app:\n    image: busybox\n    \
             command: sh -c 'cat /data/seed; exec sleep 600'\n    stop_signal: KILL\n    \
             volumes: [\"data:/data\"]\n    depends_on:\n      init:\n        \
             condition: service_completed_successfully\nvolumes:\n  data:\n"
        )
    };
    // The seed is written slowly: the app sees it only if it started after init's end.
    let file = write(&e, &compose("sleep 1; echo seeded > /data/seed"));
    let f = file.to_str().unwrap();
    e.ok(&["apply", "-f", f]);
    common::eventually("the app's output", || {
        e.ok(&["logs", "seq-app-1"]).contains("seeded")
    });
    assert_eq!(inspect(&e, "seq-init-1")["State"]["ExitCode"], 0);
    // The job ran to completion: another apply does not run it again.
    assert!(e.ok(&["apply", "-f", f]).contains("no changes"));
    e.ok(&["apply", "-f", f, "--down", "-v"]);
    // A dependency that fails stops the apply before the app starts, naming it.
    let file = write(&e, &compose("exit 3"));
    let out = e.moat(&["apply", "-f", file.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("seq-init-1") && err.contains("exited with 3"),
        "{err}"
    );
    assert!(e.moat(&["inspect", "seq-app-1"]).status.code() != Some(0));
    e.ok(&["apply", "-f", file.to_str().unwrap(), "--down", "-v"]);
    assert_eq!(e.ok(&["ps", "-aq"]), "");
}

#[test]
fn a_dependency_that_must_be_healthy_is_waited_for() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    // Failures in the start period do not count: the db is ready after 1 s.
    let compose = |check: &str, start_period: &str| {
        format!(
            "name: hc\nservices:\n  db:\n    image: busybox\n    \
             command: sh -c 'sleep 1; touch /tmp/ready; exec sleep 600'\n    stop_signal: KILL\n    \
             healthcheck:\n      test: {check}\n      interval: 200ms\n      retries: 2\n      \
             start_period: {start_period}\n      start_interval: 100ms\n  \
             app:\n    image: busybox\n    command: sleep 600\n    stop_signal: KILL\n    \
             depends_on:\n      db:\n        condition: service_healthy\n"
        )
    };
    let file = write(&e, &compose("test -e /tmp/ready", "10s"));
    let f = file.to_str().unwrap();
    e.ok(&["apply", "-f", f]);
    // The app started only once the db's first successful check had ended.
    let db = inspect(&e, "hc-db-1");
    assert_eq!(db["State"]["Health"]["Status"], "healthy", "{db}");
    let ok_at = db["State"]["Health"]["Log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["ExitCode"] == 0)
        .unwrap()["End"]
        .as_str()
        .unwrap()
        .to_string();
    let app = inspect(&e, "hc-app-1");
    let started = app["State"]["StartedAt"].as_str().unwrap().to_string();
    assert!(
        started > ok_at,
        "app started {started}, db healthy at {ok_at}"
    );
    assert_eq!(
        db["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "test -e /tmp/ready"])
    );
    // A second apply changes nothing (the healthcheck is part of the service's hash).
    assert!(e.ok(&["apply", "-f", f]).contains("no changes"));
    e.ok(&["apply", "-f", f, "--down"]);
    // A dependency that turns unhealthy stops the apply before the app is made, naming it.
    let file = write(&e, &compose("\"false\"", "0s"));
    let out = e.moat(&["apply", "-f", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("hc-db-1") && err.contains("is unhealthy"),
        "{err}"
    );
    assert!(e.moat(&["inspect", "hc-app-1"]).status.code() != Some(0));
    e.ok(&["apply", "-f", file.to_str().unwrap(), "--down"]);
    assert_eq!(e.ok(&["ps", "-aq"]), "");
}

#[test]
fn revisions_are_kept_and_a_rollback_brings_one_back() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let compose = |role: &str| {
        format!(
            "name: rev\nservices:\n  db:\n    image: busybox\n    command: sleep 600\n    \
             stop_signal: KILL\n    environment: {{ROLE: \"{role}\", FROM: \"${{FROM_ENV:-unset}}\", PASSED: null}}\n"
        )
    };
    let role = |e: &Engine| {
        e.ok(&["exec", "rev-db-1", "sh", "-c", "echo $ROLE $FROM $PASSED"])
            .trim()
            .to_string()
    };
    let f = write(&e, &compose("one"));
    let file = f.to_str().unwrap();
    // The first revision is applied with a variable from the environment.
    let out = std::process::Command::new(common::MOAT)
        .env("FROM_ENV", "env-one")
        .env("PASSED", "passed-one")
        .arg("--root")
        .arg(e.dir.path())
        .args(["apply", "-f", file])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("revision 1"));
    assert_eq!(role(&e), "one env-one passed-one");
    // The same again records nothing new.
    let again = std::process::Command::new(common::MOAT)
        .env("FROM_ENV", "env-one")
        .env("PASSED", "passed-one")
        .arg("--root")
        .arg(e.dir.path())
        .args(["apply", "-f", file])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("no changes"),
        "{again:?}"
    );
    write(&e, &compose("two"));
    assert!(e.ok(&["apply", "-f", file]).contains("revision"));
    assert_eq!(role(&e), "two unset");
    let history = e.ok(&["apply", "history", "-p", "rev"]);
    let lines: Vec<&str> = history.lines().collect();
    assert!(lines[0].starts_with("REVISION"), "{history}");
    assert!(lines.iter().any(|l| l.starts_with("1 ")), "{history}");
    assert_eq!(lines.len(), 3, "{history}");
    assert!(
        lines[2].starts_with("2 ") && lines[2].contains("db"),
        "{history}"
    );
    // Back to the one before: its text and its variables' values as they were then.
    let out = e.ok(&["apply", "rollback", "-p", "rev"]);
    assert!(out.contains("back to revision"), "{out}");
    assert_eq!(role(&e), "one env-one passed-one");
    // A named revision; a missing one is refused, changing nothing.
    let newest = e.ok(&["apply", "history", "-p", "rev"]);
    let n: i64 = newest
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let bad = e.moat(&["apply", "rollback", "-p", "rev", "99"]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no revision 99"));
    assert_eq!(role(&e), "one env-one passed-one");
    e.ok(&["apply", "rollback", "-p", "rev", &(n - 1).to_string()]);
    assert_eq!(role(&e), "two unset");
    // Down is a revision too; rolling back from it brings the project back.
    e.ok(&["apply", "-f", file, "--down"]);
    assert_eq!(e.ok(&["ps", "-aq"]), "");
    e.ok(&["apply", "rollback", "-p", "rev"]);
    assert_eq!(role(&e), "two unset");
    e.ok(&["apply", "-f", file, "--down"]);
    assert_eq!(e.ok(&["ps", "-aq"]), "");
}

#[test]
fn each_key_reaches_its_containers_and_independent_services_start_together() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let text = "name: keys
services:
  app:
    image: busybox
    entrypoint: [\"/bin/sh\", \"-c\"]
    command: [\"pwd; echo $$GREETING; touch /x 2>/dev/null || echo read-only; grep CapBnd /proc/self/status; exec sleep 600\"]
    labels: {team: core}
    working_dir: /tmp
    read_only: true
    cap_add: [NET_ADMIN]
    cap_drop: [CHOWN]
    mem_limit: 64m
    cpus: 0.5
    stop_signal: KILL
    environment: {GREETING: \"${GREETING}\"}
  usr:
    image: busybox
    user: \"65534:65534\"
    command: sh -c 'id -u; exec sleep 600'
    stop_signal: KILL
    deploy: {replicas: 1}
";
    let f = write(&e, text);
    std::fs::write(f.with_file_name(".env"), "GREETING=from-dotenv\n").unwrap();
    let file = f.to_str().unwrap();
    e.ok(&["apply", "-f", file]);
    common::eventually("app's output", || {
        e.ok(&["logs", "keys-app-1"]).contains("CapBnd")
    });
    let logs = e.ok(&["logs", "keys-app-1"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines[0], "/tmp", "working_dir: {logs}");
    assert_eq!(lines[1], "from-dotenv", ".env: {logs}");
    assert_eq!(lines[2], "read-only", "read_only: {logs}");
    let bnd = u64::from_str_radix(lines[3].split_whitespace().last().unwrap(), 16).unwrap();
    assert!(bnd & (1 << 12) != 0, "cap_add NET_ADMIN: {logs}");
    assert!(bnd & 1 == 0, "cap_drop CHOWN: {logs}");
    let app = inspect(&e, "keys-app-1");
    assert_eq!(app["Config"]["Labels"]["team"], "core");
    assert_eq!(app["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(app["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(app["HostConfig"]["ReadonlyRootfs"], true);
    common::eventually("usr's output", || {
        e.ok(&["logs", "keys-usr-1"]).contains("65534")
    });
    // The two services do not depend on each other: made side by side.
    let started =
        |n: &str| moat_engine_time(inspect(&e, n)["State"]["StartedAt"].as_str().unwrap());
    let (a, u) = (started("keys-app-1"), started("keys-usr-1"));
    let created = |n: &str| moat_engine_time(inspect(&e, n)["Created"].as_str().unwrap());
    // Each was created before the other had started (one after the other, the second would
    // have been created after the first had started).
    assert!(
        created("keys-usr-1") < a && created("keys-app-1") < u,
        "made one after the other: app started {a}, usr started {u}"
    );
    // Scaled up: one more replica; the first is left as it is.
    let usr1 = inspect(&e, "keys-usr-1")["Id"].clone();
    let f = write(&e, &text.replace("replicas: 1", "replicas: 2"));
    let out = e.ok(&["apply", "-f", f.to_str().unwrap()]);
    assert!(
        out.contains("1 change") && out.contains("+ container keys-usr-2"),
        "{out}"
    );
    assert_eq!(inspect(&e, "keys-usr-1")["Id"], usr1);
    // A rolling update waits `delay` between its groups.
    let f = write(
        &e,
        &text
            .replace(
                "replicas: 1}",
                "replicas: 2, update_config: {parallelism: 1, delay: 1s}}",
            )
            .replace("exec sleep 600'", "exec sleep 601'"),
    );
    e.ok(&["apply", "-f", f.to_str().unwrap()]);
    let (s1, s2) = (started("keys-usr-1"), started("keys-usr-2"));
    assert!(
        (s2 - s1).abs() >= 1.0,
        "one second between the groups: {s1} {s2}"
    );
    // Down by the project's name alone (no file): its containers and networks go.
    std::fs::remove_file(&f).unwrap();
    e.ok(&["apply", "--down", "-p", "keys"]);
    assert_eq!(e.ok(&["ps", "-aq"]), "");
    assert!(!e.ok(&["network", "ls"]).contains("keys_"));
}

/// Seconds since the epoch of an RFC 3339 time (as `inspect` gives them).
fn moat_engine_time(t: &str) -> f64 {
    let out = std::process::Command::new("date")
        .args(["-d", t, "+%s.%N"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_rollback_brings_back_the_files_of_its_revision() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let f = write(
        &e,
        "name: frz\nservices:\n  db:\n    image: busybox\n    command: sleep 600\n    \
         stop_signal: KILL\n    env_file: app.env\n    secrets: [token]\n\
         secrets:\n  token:\n    file: token.txt\n",
    );
    let dir = f.parent().unwrap().to_path_buf();
    let set = |env: &str, token: &str| {
        std::fs::write(dir.join("app.env"), format!("FILEVAR={env}\n")).unwrap();
        std::fs::write(dir.join("token.txt"), token).unwrap();
    };
    let seen = |e: &Engine| {
        e.ok(&[
            "exec",
            "frz-db-1",
            "sh",
            "-c",
            "echo $FILEVAR $(cat /run/secrets/token)",
        ])
        .trim()
        .to_string()
    };
    set("f1", "secret-1");
    e.ok(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(seen(&e), "f1 secret-1");
    set("f2", "secret-2");
    e.ok(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(seen(&e), "f2 secret-2");
    // Revision 1 as it was: its env file's values and its secret's content, whatever the
    // files hold now (and even once they are gone).
    std::fs::remove_file(dir.join("token.txt")).unwrap();
    e.ok(&["apply", "rollback", "-p", "frz", "1"]);
    assert_eq!(seen(&e), "f1 secret-1");
    e.ok(&["down", "-p", "frz"]);
    assert_eq!(e.ok(&["ps", "-aq"]), "");
}
