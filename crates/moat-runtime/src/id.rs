//! Container identities.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid container id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// container id is empty
    #[error("container id is empty")]
    Empty,
    /// container id is longer than 1024 bytes
    #[error("container id {0:?}... is longer than 1024 bytes")]
    TooLong(String),
    /// container id has a character outside [A-Za-z0-9_.+-]
    #[error("container id {id:?} has {ch:?}: only letters, digits and _ . + - are allowed")]
    BadChar {
        /// The rejected id.
        id: String,
        /// The first character that is not allowed.
        ch: char,
    },
    /// container id must not be . or ..
    #[error("container id {0:?} is not allowed")]
    Reserved(String),
}

/// `bytes` random bytes from the kernel as lowercase hex: Docker's 64-digit ids (32 bytes) for
/// containers and networks.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A validated container id: safe to use as a single path component (it names the state directory)
/// and as a cgroup leaf. The accepted alphabet is runc's (`^[\w+-\.]+$`), so ids chosen by Docker,
/// Podman and containerd all fit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContainerId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > 1024 {
            return Err(IdError::TooLong(s.chars().take(32).collect()));
        }
        if s == "." || s == ".." {
            return Err(IdError::Reserved(s.to_string()));
        }
        if let Some(ch) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-')))
        {
            return Err(IdError::BadChar {
                id: s.to_string(),
                ch,
            });
        }
        Ok(ContainerId(s.to_string()))
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_engine_style_ids() {
        for id in ["abc", "a1b2c3d4e5f6", "my_ctr.v1+x-2", "0123456789abcdef"] {
            assert_eq!(
                id.parse::<ContainerId>().map(|c| c.to_string()),
                Ok(id.into())
            );
        }
    }

    #[test]
    fn rejects_path_tricks_and_junk() {
        assert_eq!("".parse::<ContainerId>(), Err(IdError::Empty));
        assert_eq!(
            "..".parse::<ContainerId>(),
            Err(IdError::Reserved("..".into()))
        );
        assert!(matches!(
            "a/b".parse::<ContainerId>(),
            Err(IdError::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            "a b".parse::<ContainerId>(),
            Err(IdError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            "x".repeat(1025).parse::<ContainerId>(),
            Err(IdError::TooLong(_))
        ));
    }
}
