//! Dockerfile instructions applied to an image config, as `docker import --change`,
//! `docker commit --change` and the API's `changes` parameter take them: CMD, ENTRYPOINT, ENV,
//! WORKDIR, USER, LABEL, EXPOSE, HEALTHCHECK.

use crate::store::ImportConfig;

/// Why an instruction is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    /// not one of the supported instructions, or malformed
    #[error("invalid change {0:?}: expected CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE or HEALTHCHECK")]
    Unsupported(String),
}

/// Parses `docker import --change` instructions.
pub fn parse(list: &[String], message: Option<String>) -> Result<ImportConfig, ChangeError> {
    let mut cfg = ImportConfig {
        message,
        ..Default::default()
    };
    for c in list {
        let (instr, rest) = c
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((c.trim(), ""));
        let rest = rest.trim();
        let words = || -> Vec<String> {
            serde_json::from_str::<Vec<String>>(rest)
                .unwrap_or_else(|_| vec!["/bin/sh".into(), "-c".into(), rest.to_string()])
        };
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => cfg.cmd = Some(words()),
            "ENTRYPOINT" => cfg.entrypoint = Some(words()),
            "ENV" => {
                let kv = match rest.split_once('=') {
                    Some((k, v)) if !k.contains(char::is_whitespace) => format!("{k}={v}"),
                    _ => match rest.split_once(char::is_whitespace) {
                        Some((k, v)) => format!("{k}={}", v.trim()),
                        None => return Err(ChangeError::Unsupported(c.clone())),
                    },
                };
                cfg.env.push(kv);
            }
            "WORKDIR" if !rest.is_empty() => cfg.working_dir = Some(rest.to_string()),
            "USER" if !rest.is_empty() => cfg.user = Some(rest.to_string()),
            "LABEL" => {
                let (k, v) = rest
                    .split_once('=')
                    .ok_or_else(|| ChangeError::Unsupported(c.clone()))?;
                cfg.labels
                    .push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
            }
            "EXPOSE" if !rest.is_empty() => {
                for p in rest.split_whitespace() {
                    let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                    let proto = proto.to_ascii_lowercase();
                    if port.parse::<u16>().map_or(true, |n| n == 0)
                        || !matches!(proto.as_str(), "tcp" | "udp" | "sctp")
                    {
                        return Err(ChangeError::Unsupported(c.clone()));
                    }
                    cfg.exposed_ports.push(format!("{port}/{proto}"));
                }
            }
            "HEALTHCHECK" => {
                cfg.healthcheck =
                    Some(healthcheck(rest).ok_or_else(|| ChangeError::Unsupported(c.clone()))?)
            }
            _ => return Err(ChangeError::Unsupported(c.clone())),
        }
    }
    Ok(cfg)
}

/// `HEALTHCHECK [--interval=D] [--timeout=D] [--start-period=D] [--start-interval=D]
/// [--retries=N] CMD command` or `HEALTHCHECK NONE`, as Docker's JSON (`None`: malformed).
fn healthcheck(rest: &str) -> Option<serde_json::Value> {
    let mut check = serde_json::json!({});
    let mut rest = rest.trim_start();
    while let Some(opt) = rest.strip_prefix("--") {
        let (word, tail) = opt.split_once(char::is_whitespace).unwrap_or((opt, ""));
        let (key, value) = word.split_once('=')?;
        let field = match key {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => {
                check["Retries"] = value.parse::<u32>().ok()?.into();
                rest = tail.trim_start();
                continue;
            }
            _ => return None,
        };
        let d = humantime::parse_duration(value).ok()?;
        check[field] = u64::try_from(d.as_nanos()).ok()?.into();
        rest = tail.trim_start();
    }
    let (kind, cmd) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let cmd = cmd.trim();
    check["Test"] = match kind.to_ascii_uppercase().as_str() {
        "NONE" if cmd.is_empty() => serde_json::json!(["NONE"]),
        "CMD" if !cmd.is_empty() => match serde_json::from_str::<Vec<String>>(cmd) {
            Ok(v) if !v.is_empty() => std::iter::once("CMD".to_string()).chain(v).collect(),
            Ok(_) => return None,
            Err(_) => serde_json::json!(["CMD-SHELL", cmd]),
        },
        _ => return None,
    };
    Some(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dockers_instructions() {
        let cfg = parse(
            &[
                r#"CMD ["cat", "/x"]"#.into(),
                "ENTRYPOINT echo hi".into(),
                "ENV A=1".into(),
                "ENV B two".into(),
                "WORKDIR /w".into(),
                r#"LABEL k="v""#.into(),
                "EXPOSE 80 53/udp".into(),
            ],
            Some("m".into()),
        )
        .unwrap();
        assert_eq!(cfg.cmd, Some(vec!["cat".to_string(), "/x".to_string()]));
        assert_eq!(
            cfg.entrypoint,
            Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(cfg.env, ["A=1", "B=two"]);
        assert_eq!(cfg.labels, [("k".to_string(), "v".to_string())]);
        assert_eq!(cfg.message.as_deref(), Some("m"));
        assert_eq!(cfg.exposed_ports, ["80/tcp", "53/udp"]);
        assert!(parse(&["RUN x".into()], None).is_err());
        let h = |s: &str| parse(&[s.into()], None).map(|c| c.healthcheck.unwrap());
        assert_eq!(
            h("HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost || exit 1").unwrap(),
            serde_json::json!({"Interval": 5_000_000_000u64, "Retries": 2,
                "Test": ["CMD-SHELL", "wget -q localhost || exit 1"]})
        );
        assert_eq!(
            h(r#"HEALTHCHECK CMD ["true", "x"]"#).unwrap()["Test"],
            serde_json::json!(["CMD", "true", "x"])
        );
        assert_eq!(
            h("HEALTHCHECK NONE").unwrap()["Test"],
            serde_json::json!(["NONE"])
        );
        for bad in [
            "HEALTHCHECK",
            "HEALTHCHECK --bogus=1 CMD x",
            "HEALTHCHECK --interval=x CMD y",
            "HEALTHCHECK CMD []",
        ] {
            assert!(h(bad).is_err(), "{bad}");
        }
        assert!(parse(&["EXPOSE 0".into()], None).is_err());
        assert!(parse(&["EXPOSE 80/http".into()], None).is_err());
    }
}
