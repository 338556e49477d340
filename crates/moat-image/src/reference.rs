//! Image references as users type them: `NAME[:TAG]` (registry hosts and digests come with the
//! registry work). Names follow Docker's grammar: lowercase path components of `[a-z0-9._-]`
//! separated by `/`, an optional `host[:port]/` prefix, tags of `[A-Za-z0-9_.-]{1,128}`.

use std::fmt;
use std::str::FromStr;

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

/// A validated `name:tag`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    name: String,
    tag: String,
}

impl Reference {
    /// The repository name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tag (`latest` when none was given).
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ReferenceError::Invalid {
            reference: s.chars().take(300).collect(),
            reason,
        };
        if s.is_empty() || s.len() > 255 {
            return Err(bad("must be 1 to 255 characters"));
        }
        if s.contains('@') {
            return Err(bad("digest references are not supported here"));
        }
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let (name, tag) = match s.rfind(':') {
            Some(i) if !s[i..].contains('/') => (&s[..i], &s[i + 1..]),
            _ => (s, "latest"),
        };
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
        let mut parts: Vec<&str> = name.split('/').collect();
        let first = parts[0];
        let is_host =
            parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
        if is_host {
            let host_ok = first
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b));
            if !host_ok || first.starts_with(['.', '-', ':']) {
                return Err(bad("malformed registry host"));
            }
            parts.remove(0);
        }
        for p in &parts {
            let ok = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && p.as_bytes()[0].is_ascii_alphanumeric()
                && p.as_bytes()[p.len() - 1].is_ascii_alphanumeric();
            if !ok {
                return Err(bad("name components must be lowercase [a-z0-9._-], starting and ending alphanumeric"));
            }
        }
        Ok(Reference {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_tags_and_ports() {
        let r: Reference = "busybox".parse().unwrap();
        assert_eq!((r.name(), r.tag()), ("busybox", "latest"));
        let r: Reference = "my/app:v1.2".parse().unwrap();
        assert_eq!((r.name(), r.tag()), ("my/app", "v1.2"));
        let r: Reference = "127.0.0.1:5000/bb".parse().unwrap();
        assert_eq!((r.name(), r.tag()), ("127.0.0.1:5000/bb", "latest"));
        let r: Reference = "localhost:5000/a/b:t".parse().unwrap();
        assert_eq!(r.to_string(), "localhost:5000/a/b:t");
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
            "a b",
            "a/../b",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}
