//! The registry client against a scripted HTTP server on 127.0.0.1 (no root, no registry):
//! retries of transient failures, no retries of definite answers, the token flow's scopes.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use moat_registry::{Client, ClientError, ClientOptions, Credentials};

/// Serves `answer(request line, authorization)` to each connection; records the request lines.
fn serve(
    answer: impl Fn(&str, Option<&str>) -> (u16, Vec<(&'static str, String)>, String) + Send + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(vec![]));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            // (The client's first try is a TLS handshake: not HTTP, dropped.)
            if r.read_line(&mut first).is_err() || !first.contains("HTTP/1.1") {
                continue;
            }
            let mut auth = None;
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = Some(v.trim().to_string());
                    }
                }
            }
            let line = first.trim().to_string();
            log.lock().unwrap().push(line.clone());
            let (status, headers, body) = answer(&line, auth.as_deref());
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            let _ = conn.write_all(format!("{head}\r\n{body}").as_bytes());
        }
    });
    (addr, seen)
}

fn count(seen: &Arc<Mutex<Vec<String>>>, needle: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn server_errors_are_retried_and_definite_answers_are_not() {
    let failures = Arc::new(Mutex::new(2));
    let f = failures.clone();
    let (addr, seen) = serve(move |line, _| {
        if line.contains("/manifests/flaky") {
            let mut left = f.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return (503, vec![], "busy".into());
            }
            return (
                200,
                vec![("Content-Type", "application/json".into())],
                "{}".into(),
            );
        }
        if line.contains("/manifests/") {
            return (
                404,
                vec![],
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#.into(),
            );
        }
        (200, vec![], "{}".into())
    });
    let c = Client::connect(&addr, &ClientOptions::default()).unwrap();
    assert!(
        c.is_plain_http(),
        "a loopback registry speaking HTTP is used over HTTP"
    );
    let (body, _) = c.get_manifest("a", "flaky", "*/*", 1024).unwrap();
    assert_eq!(body, b"{}");
    assert_eq!(
        count(&seen, "/manifests/flaky"),
        3,
        "two 503s, then the answer"
    );
    let err = c.get_manifest("a", "gone", "*/*", 1024).unwrap_err();
    assert!(
        matches!(err, ClientError::Status { status: 404, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("manifest unknown"), "{err}");
    assert_eq!(count(&seen, "/manifests/gone"), 1, "a 404 is not retried");
}

#[test]
fn bearer_tokens_are_fetched_per_scope_with_the_credentials() {
    let (token_addr, token_seen) = serve(|line, auth| {
        if auth != Some("Basic dTpw") {
            return (
                401,
                vec![],
                r#"{"details":"incorrect username or password"}"#.into(),
            );
        }
        let scope = line
            .split("scope=")
            .nth(1)
            .unwrap_or("")
            .split([' ', '&'])
            .next()
            .unwrap_or("");
        (200, vec![], format!(r#"{{"token":"T-{scope}"}}"#))
    });
    let realm = format!("http://{token_addr}/token");
    let (addr, seen) = serve(move |line, auth| {
        let challenge = format!(r#"Bearer realm="{realm}",service="svc""#);
        match auth {
            Some(a) if a.starts_with("Bearer T-repository%3Aa%3Apull") => {
                (200, vec![], "{}".into())
            }
            _ if line.contains("/v2/ ") => {
                (401, vec![("WWW-Authenticate", challenge)], String::new())
            }
            _ => (401, vec![("WWW-Authenticate", challenge)], String::new()),
        }
    });
    let creds = |p: &str| ClientOptions {
        credentials: Some(Credentials {
            username: "u".into(),
            password: p.into(),
        }),
        ..ClientOptions::default()
    };
    let c = Client::connect(&addr, &creds("p")).unwrap();
    c.get_manifest("a", "t", "*/*", 1024).unwrap();
    c.get_manifest("a", "t2", "*/*", 1024).unwrap();
    assert_eq!(
        count(&token_seen, "scope=repository%3Aa%3Apull"),
        1,
        "the token is reused for its scope"
    );
    assert_eq!(count(&seen, "/manifests/t "), 2, "401, then with the token");
    let wrong = Client::connect(&addr, &creds("nope")).unwrap();
    let err = wrong.get_manifest("a", "t", "*/*", 1024).unwrap_err();
    assert!(
        matches!(&err, ClientError::Unauthorized { message, .. } if message.contains("incorrect username or password")),
        "{err}"
    );
    assert!(wrong.check_login().is_err());
    c.check_login().unwrap();
}
