//! `secrets` and `configs`: the per-container configuration an image does not carry, projected
//! into a service's containers as read-only files at start: a secret at `/run/secrets/NAME`
//! (or its `target` under it), a config at `/NAME` (or its absolute `target`). Their content is
//! a file beside the compose file (`file:`), read when the file is loaded: its digest is part of
//! the service's configuration, so a changed secret replaces the containers that use it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::compose::ComposeError;

/// A top-level secret or config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDef {
    /// Its content's file, relative to the compose file.
    pub file: Option<String>,
}

/// A service's use of one: its name, or `{source, target}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FileRef {
    /// The secret or config of that name, at its default place.
    Short(String),
    /// With a place of its own.
    Long(LongRef),
}

/// `{source, target}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongRef {
    /// The secret's or config's name.
    pub source: String,
    /// Where it appears.
    pub target: Option<String>,
}

impl FileRef {
    fn parts(&self) -> (&str, Option<&str>) {
        match self {
            FileRef::Short(s) => (s, None),
            FileRef::Long(l) => (&l.source, l.target.as_deref()),
        }
    }
}

/// A file projected into a service's containers, resolved at load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projected {
    /// The host file (absolute); not part of the configuration's hash, its digest is.
    #[serde(skip_serializing)]
    pub source: String,
    /// Where it appears in the container.
    pub target: String,
    /// sha256 of its content.
    pub digest: String,
}

/// Which kind, for defaults and messages.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `secrets`: under /run/secrets.
    Secret,
    /// `configs`: at the root.
    Config,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Secret => "secrets",
            Kind::Config => "configs",
        }
    }
}

/// `refs` of service `service`, resolved against the top-level `defs` (files relative to
/// `dir`); errors name the key.
pub fn resolve(
    kind: Kind,
    service: &str,
    refs: &[FileRef],
    defs: &BTreeMap<String, FileDef>,
    dir: &Path,
    compose: &Path,
) -> Result<Vec<Projected>, ComposeError> {
    let mut out = vec![];
    for r in refs {
        let (name, target) = r.parts();
        let reference = |message: String| ComposeError::Reference {
            path: compose.to_path_buf(),
            key: format!("services.{service}.{}", kind.key()),
            message,
        };
        let def = defs.get(name).ok_or_else(|| {
            reference(format!(
                "{name:?} is not declared under top-level {}",
                kind.key()
            ))
        })?;
        let file = def
            .file
            .as_deref()
            .ok_or_else(|| reference(format!("{name:?} has no file (only file: is supported)")))?;
        let path = dir.join(file);
        let bytes = std::fs::read(&path).map_err(|source| ComposeError::Read {
            path: path.clone(),
            source,
        })?;
        let path = std::fs::canonicalize(&path).map_err(|source| ComposeError::Read {
            path: path.clone(),
            source,
        })?;
        let target = match (kind, target) {
            (Kind::Secret, Some(t)) if t.starts_with('/') => t.to_string(),
            (Kind::Secret, t) => format!("/run/secrets/{}", t.unwrap_or(name)),
            (Kind::Config, Some(t)) if t.starts_with('/') => t.to_string(),
            (Kind::Config, Some(t)) => format!("/{t}"),
            (Kind::Config, None) => format!("/{name}"),
        };
        if target.split('/').any(|c| c == "..") {
            return Err(reference(format!("target {target:?} leaves its directory")));
        }
        out.push(Projected {
            source: path.to_string_lossy().into_owned(),
            target,
            digest: hex::encode(sha2::Sha256::digest(&bytes)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn secrets_and_configs_land_where_compose_puts_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw.txt"), "s3cret").unwrap();
        let defs: BTreeMap<String, FileDef> = [(
            "db_pw".to_string(),
            FileDef {
                file: Some("pw.txt".into()),
            },
        )]
        .into();
        let c = dir.path().join("compose.yaml");
        let refs = [
            FileRef::Short("db_pw".into()),
            FileRef::Long(LongRef {
                source: "db_pw".into(),
                target: Some("other".into()),
            }),
        ];
        let s = resolve(Kind::Secret, "web", &refs, &defs, dir.path(), &c).unwrap();
        assert_eq!(s[0].target, "/run/secrets/db_pw");
        assert_eq!(s[1].target, "/run/secrets/other");
        assert!(s[0].source.ends_with("/pw.txt"));
        assert_eq!(s[0].digest, hex::encode(sha2::Sha256::digest(b"s3cret")));
        let c2 = resolve(Kind::Config, "web", &refs[..1], &defs, dir.path(), &c).unwrap();
        assert_eq!(c2[0].target, "/db_pw");
        // Undeclared, fileless and escaping references are errors naming the key.
        let e = resolve(
            Kind::Secret,
            "web",
            &[FileRef::Short("nope".into())],
            &defs,
            dir.path(),
            &c,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("services.web.secrets") && e.contains("nope"),
            "{e}"
        );
        let bad = [FileRef::Long(LongRef {
            source: "db_pw".into(),
            target: Some("../etc/passwd".into()),
        })];
        assert!(resolve(Kind::Config, "web", &bad, &defs, dir.path(), &c).is_err());
    }
}
