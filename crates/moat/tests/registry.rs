//! `moat pull | push | login | logout` against real registries started on 127.0.0.1 by the
//! tests (Debian's docker-registry), and interoperability with skopeo (root only).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output, Stdio};

use common::registry::{engine_with_app, moat, ok, Auth, Registry};
use common::{can_run, output_of, Engine, RunExt, MOAT};

fn fails(e: &Engine, args: &[&str]) -> String {
    let out = moat(e, args);
    assert_eq!(out.status.code(), Some(1), "moat {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_check_clean(e: &Engine) {
    let out = ok(e, &["system", "check"]);
    assert!(out.contains("no problems"), "{out}");
}

#[test]
fn push_pull_run_and_only_missing_layers_move() {
    if !can_run() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let src = engine_with_app();
    let base = reg.name("base:v1");
    let app = reg.name("team/app:v1");
    ok(&src, &["tag", "busybox", &base]);
    ok(&src, &["tag", "app:v1", &app]);

    let out = ok(&src, &["push", &base]);
    assert!(
        out.contains(&format!(
            "The push refers to repository [{}]",
            reg.name("base")
        )),
        "{out}"
    );
    assert!(out.contains(": Pushed"), "{out}");
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    // The app shares the base layer: it is mounted from the base repository, not uploaded.
    let out = ok(&src, &["push", &app]);
    assert_eq!(
        out.matches(": Pushed").count(),
        1,
        "only the new layer is uploaded: {out}"
    );
    assert!(out.contains(": Mounted from base"), "{out}");
    let out = ok(&src, &["push", &app]);
    assert_eq!(out.matches(": Layer already exists").count(), 2, "{out}");
    assert!(!out.contains(": Pushed"), "{out}");

    // A fresh engine pulls the base, then the app: only the app's own layer downloads.
    let dst = Engine::new();
    let out = ok(&dst, &["pull", &base]);
    assert!(out.contains("v1: Pulling from base"), "{out}");
    assert_eq!(out.matches(": Pull complete").count(), 1, "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {base}")),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with(&base),
        "the last line names the image: {out}"
    );
    let out = ok(&dst, &["pull", &app]);
    assert_eq!(out.matches(": Already exists").count(), 1, "{out}");
    assert_eq!(out.matches(": Pull complete").count(), 1, "{out}");
    let out = ok(&dst, &["pull", &app]);
    assert!(out.contains("Status: Image is up to date"), "{out}");
    assert!(!out.contains("Pull complete"), "{out}");

    // The same image ids as the source (config digests travel unchanged), and it runs.
    let id = |e: &Engine, n: &str| ok(e, &["images", "-q", "--no-trunc", n]);
    assert_eq!(id(&dst, &app), id(&src, &app));
    let (code, stdout, stderr) = dst.run(&[&app, "cat", "/app.txt"]);
    assert_eq!((code, stdout.as_str()), (0, "app-data\n"), "{stderr}");
    // Config travels too: the base's ENV from the import.
    let (_, env, _) = dst.run(&[&app, "sh", "-c", "echo $IMG"]);
    assert_eq!(env, "1\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&dst, &["image", "inspect", &app])).unwrap();
    let digests = inspect[0]["RepoDigests"].as_array().unwrap();
    assert_eq!(digests.len(), 1, "{inspect}");
    let pinned = digests[0].as_str().unwrap().to_string();
    assert!(pinned.starts_with(&format!("{}@sha256:", reg.name("team/app"))));
    assert_check_clean(&dst);

    // Removed, then pulled back by digest; a digest the registry lacks is an error naming it.
    ok(&dst, &["rmi", &app]);
    let out = ok(&dst, &["pull", &pinned]);
    assert!(out.contains("Pull complete"), "{out}");
    let (code, stdout, _) = dst.run(&[&pinned, "cat", "/app.txt"]);
    assert_eq!((code, stdout.as_str()), (0, "app-data\n"));
    let mut wrong = pinned.clone();
    let last = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(wrong.len() - 1.., last);
    let err = fails(&dst, &["pull", &wrong]);
    assert!(err.contains("not found") && err.contains(&wrong), "{err}");
    dst.assert_clean();
    assert_check_clean(&dst);
}

#[test]
fn pull_and_push_errors_are_clear_and_leave_nothing() {
    if !can_run() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let e = Engine::with_busybox();
    let err = fails(&e, &["pull", &reg.name("nothing:here")]);
    assert!(
        err.contains(&format!(
            "manifest for {} not found",
            reg.name("nothing:here")
        )),
        "{err}"
    );
    let port = common::registry::free_port();
    let err = fails(&e, &["pull", &format!("127.0.0.1:{port}/x")]);
    assert!(
        err.contains(&format!("registry 127.0.0.1:{port} is unreachable")),
        "{err}"
    );
    let err = fails(&e, &["pull", "Bad/Name"]);
    assert!(err.contains("invalid reference"), "{err}");
    let err = fails(&e, &["push", &reg.name("not-local:v1")]);
    assert!(err.contains("No such image"), "{err}");
    ok(&e, &["tag", "busybox", &reg.name("bb:v1")]);
    let err = fails(
        &e,
        &[
            "push",
            &format!("{}@sha256:{}", reg.name("bb"), "0".repeat(64)),
        ],
    );
    assert!(err.contains("push a tag"), "{err}");
    // An HTTPS-only registry (certificates verified) is refused over plain HTTP.
    let err = fails(&e, &["pull", "--tls-verify", &reg.name("bb:v1")]);
    assert!(err.contains("unreachable"), "{err}");
    assert_check_clean(&e);
}

#[test]
fn basic_auth_login_logout_in_dockers_config() {
    if !can_run() {
        return;
    }
    let reg = Registry::start(Auth::Basic {
        user: "alice",
        password: "wonder land",
    });
    let e = Engine::with_busybox();
    let image = reg.name("private/bb:v1");
    ok(&e, &["tag", "busybox", &image]);
    let err = fails(&e, &["push", &image]);
    assert!(err.contains("unauthorized"), "{err}");
    let config = e.dir.path().join("docker/config.json");

    // Wrong password: refused, nothing stored.
    let login = |user: &str, password: &str| {
        let out = login(&e, &reg.addr, user, password, &[]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = login("alice", "wrong");
    assert_eq!(code, Some(1));
    assert!(err.contains("unauthorized"), "{err}");
    assert!(!config.exists(), "a refused login stores nothing");

    let (code, out, err) = login("alice", "wonder land");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Login Succeeded"), "{out}");
    // Docker's format: auths[host].auth = base64("user:password").
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(doc["auths"][&reg.addr]["auth"], "YWxpY2U6d29uZGVyIGxhbmQ=");

    let out = ok(&e, &["push", &image]);
    assert!(out.contains("Pushed"), "{out}");
    let other = Engine::new();
    std::fs::create_dir_all(other.dir.path().join("docker")).unwrap();
    std::fs::copy(&config, other.dir.path().join("docker/config.json")).unwrap();
    let out = ok(&other, &["pull", &image]);
    assert!(out.contains("Pull complete"), "{out}");

    let out = ok(&e, &["logout", &reg.addr]);
    assert!(
        out.contains(&format!("Removing login credentials for {}", reg.addr)),
        "{out}"
    );
    let err = fails(&e, &["pull", &image]);
    assert!(err.contains("unauthorized"), "{err}");
    // Without a terminal and without -u, login says what to do.
    let out = output_of(
        Command::new(MOAT)
            .env("DOCKER_CONFIG", e.dir.path().join("docker"))
            .args(["login", &reg.addr])
            .stdin(Stdio::null()),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-TTY"));
}

/// Pipes `password` to `moat login -u USER --password-stdin SERVER [extra]`.
fn login(e: &Engine, server: &str, user: &str, password: &str, extra: &[&str]) -> Output {
    let mut child = Command::new(MOAT)
        .env("DOCKER_CONFIG", e.dir.path().join("docker"))
        .args(["--root", e.dir.path().to_str().unwrap()])
        .args(["login", "-u", user, "--password-stdin", server])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn bearer_token_flow_over_verified_https() {
    if !can_run() {
        return;
    }
    let e = Engine::with_busybox();
    let tokens = common::registry::TokenServer::start(e.dir.path(), "bob", "builder");
    let tls = common::registry::server_cert(e.dir.path());
    let reg = Registry::start_with(tokens.auth(), Some(&tls));
    let image = reg.name("team/bb:v1");
    ok(&e, &["tag", "busybox", &image]);

    // Verified HTTPS needs the registry's CA: without it the certificate is refused; with it
    // in a per-registry directory (as /etc/docker/certs.d/HOST:PORT/ca.crt) it is trusted.
    let err = fails(&e, &["push", "--tls-verify=true", &image]);
    assert!(
        err.contains("unreachable") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    let certs = e.dir.path().join("certs.d");
    std::fs::create_dir_all(certs.join(&reg.addr)).unwrap();
    std::fs::copy(&tls.ca, certs.join(&reg.addr).join("ca.crt")).unwrap();
    let verified = ["--tls-verify=true", "--cert-dir", certs.to_str().unwrap()];

    // Anonymous: the token server refuses, and the error says so.
    let err = fails(&e, &[&["push"][..], &verified[..], &[&image]].concat());
    assert!(err.contains("unauthorized"), "{err}");
    let out = login(&e, &reg.addr, "bob", "wrong", &verified);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("incorrect username or password"));
    let out = login(&e, &reg.addr, "bob", "builder", &verified);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = ok(&e, &[&["push"][..], &verified[..], &[&image]].concat());
    assert!(out.contains("Pushed"), "{out}");
    // A second repository: the shared layer is mounted (a token for both scopes).
    let other = reg.name("team/copy:v1");
    ok(&e, &["tag", "busybox", &other]);
    let out = ok(&e, &[&["push"][..], &verified[..], &[&other]].concat());
    assert!(out.contains("Mounted from team/bb"), "{out}");

    // A fresh engine with the same login pulls through the same flow.
    let dst = Engine::new();
    std::fs::create_dir_all(dst.dir.path().join("docker")).unwrap();
    std::fs::copy(
        e.dir.path().join("docker/config.json"),
        dst.dir.path().join("docker/config.json"),
    )
    .unwrap();
    let out = ok(&dst, &[&["pull"][..], &verified[..], &[&image]].concat());
    assert!(out.contains("Pull complete"), "{out}");
    let (code, stdout, _) = dst.run(&[&image, "echo", "tls+token"]);
    assert_eq!((code, stdout.as_str()), (0, "tls+token\n"));
    let (code, stdout, _) = e.run(&[&image, "echo", "tls+token"]);
    assert_eq!((code, stdout.as_str()), (0, "tls+token\n"));
    // Loopback registries are insecure by default, as Docker's: no --tls-verify needed.
    ok(&e, &["pull", &image]);
}

#[test]
fn run_pulls_a_missing_image_as_docker_does() {
    if !can_run() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let src = Engine::with_busybox();
    let image = reg.name("bb:v1");
    ok(&src, &["tag", "busybox", &image]);
    ok(&src, &["push", &image]);

    let e = Engine::new();
    let out = moat(&e, &["run", "--rm", "--pull", "never", &image, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such image"));
    let out = moat(&e, &["run", "--rm", &image, "echo", "pulled for run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pulled for run\n",
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("Unable to find image '{image}' locally")),
        "{stderr}"
    );
    assert!(stderr.contains("Pull complete"), "{stderr}");
    // Present now: no pull; --pull always asks the registry again (up to date).
    let out = moat(&e, &["run", "--rm", &image, "true"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let out = moat(&e, &["create", "--pull", "always", &image, "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Image is up to date"));
    // A reference no registry has: the pull's error, and Docker's 125.
    let out = moat(&e, &["run", "--rm", &reg.name("nope:v1"), "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
