//! Image references as users type them, parsed and normalised as Docker does:
//! `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`. Path components are lowercase `[a-z0-9._-]` separated by
//! `/`; tags are `[A-Za-z0-9_.-]{1,128}`; the first component is a registry host when it has a
//! `.` or a `:` or is `localhost`. No host means Docker Hub: `busybox` is
//! `docker.io/library/busybox:latest`, shown (and stored in tags) in its short "familiar" form.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Docker Hub's canonical domain.
pub const DOCKER_HUB: &str = "docker.io";

/// Why a reference is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// the reference is malformed
    #[error("invalid reference {reference:?}: {reason}")]
    Invalid {
        /// The text given.
        reference: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A validated, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The repository in familiar form: `busybox`, `me/app`, `127.0.0.1:5000/bb`.
    pub fn name(&self) -> String {
        if self.domain == DOCKER_HUB {
            match self.path.strip_prefix("library/") {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// The registry host (`docker.io`, `127.0.0.1:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within its registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The fully qualified repository: `docker.io/library/busybox`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag: `latest` when neither a tag nor a digest was given; none for `NAME@DIGEST`.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest of `NAME@DIGEST`.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        format!("{}:{tag}", self.name()).parse()
    }

    /// The same repository pinned to `digest` (and no tag): Docker's "repo digest".
    pub fn with_digest(&self, digest: &Digest) -> Reference {
        Reference {
            digest: Some(digest.clone()),
            tag: None,
            ..self.clone()
        }
    }

    /// What a registry's manifest endpoint takes: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ReferenceError::Invalid {
            reference: s.chars().take(300).collect(),
            reason,
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| bad("digest must be sha256:<64 hex digits>"))?,
                ),
            ),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if name.is_empty() || name.len() > 255 {
            return Err(bad("name must be 1 to 255 characters"));
        }
        if let Some(tag) = tag {
            if tag.is_empty()
                || tag.len() > 128
                || tag.starts_with(['.', '-'])
                || !tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            {
                return Err(bad(
                    "tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                let host_ok = first
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
                if !host_ok || first.starts_with(['.', '-', ':']) {
                    return Err(bad("malformed registry host"));
                }
                let domain = if first == "index.docker.io" {
                    DOCKER_HUB
                } else {
                    first
                };
                (domain.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        for p in path.split('/') {
            let ok = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && p.as_bytes()[0].is_ascii_alphanumeric()
                && p.as_bytes()[p.len() - 1].is_ascii_alphanumeric();
            if !ok {
                return Err(bad(
                    "repository name components must be lowercase [a-z0-9._-], starting and ending alphanumeric",
                ));
            }
        }
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    /// The familiar form, as stored in tags: `name:tag`, `name@digest` or `name:tag@digest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_names_tags_and_ports() {
        let r: Reference = "busybox".parse().unwrap();
        assert_eq!((r.name().as_str(), r.tag()), ("busybox", Some("latest")));
        assert_eq!(r.full_name(), "docker.io/library/busybox");
        let r: Reference = "my/app:v1.2".parse().unwrap();
        assert_eq!((r.name().as_str(), r.tag()), ("my/app", Some("v1.2")));
        assert_eq!(r.path(), "my/app");
        let r: Reference = "127.0.0.1:5000/bb".parse().unwrap();
        assert_eq!((r.domain(), r.path()), ("127.0.0.1:5000", "bb"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/bb:latest");
        let r: Reference = "localhost:5000/a/b:t".parse().unwrap();
        assert_eq!(r.to_string(), "localhost:5000/a/b:t");
        let r: Reference = "localhost/a".parse().unwrap();
        assert_eq!(r.domain(), "localhost");
    }

    #[test]
    fn normalises_docker_hub_names_as_docker_does() {
        for long in [
            "docker.io/library/busybox:latest",
            "index.docker.io/library/busybox",
            "docker.io/busybox",
            "library/busybox",
        ] {
            let r: Reference = long.parse().unwrap();
            assert_eq!(r.to_string(), "busybox:latest", "{long}");
            assert_eq!(r.full_name(), "docker.io/library/busybox");
        }
        let r: Reference = "docker.io/me/app".parse().unwrap();
        assert_eq!(r.to_string(), "me/app:latest");
    }

    #[test]
    fn digests_pin_a_reference() {
        let r: Reference = format!("busybox@{D}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().as_str(), D);
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.to_string(), format!("busybox@{D}"));
        let r: Reference = format!("127.0.0.1:5000/bb:v1@{D}").parse().unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_ref(), D);
        let pinned = r.with_tag("x").unwrap().with_digest(&D.parse().unwrap());
        assert_eq!(pinned.to_string(), format!("127.0.0.1:5000/bb@{D}"));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER",
            "a:",
            "a:-x",
            "a//b",
            "-a",
            "a@sha256:00",
            "a@md5:0123",
            "a b",
            "a/../b",
            ":tag",
            "@sha256:0",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}
