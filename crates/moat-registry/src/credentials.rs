//! Registry credentials, kept where and as Docker keeps them: the `auths` map of
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`), each entry's `auth` being
//! base64 of `user:password`, so `docker login` and `moat login` see each other's logins.
//! Docker Hub's key is `https://index.docker.io/v1/`; any other registry's is its host[:port].
//! Every other key of the file is kept as it was.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

/// Docker Hub's key in `auths`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Why credentials could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// the file could not be read or written
    #[error("credentials file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// the file is not valid JSON
    #[error("credentials file {path} is not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// an entry's `auth` is not base64 of `user:password`
    #[error("credentials file {path}: the entry for {registry} is malformed (expected base64 of user:password)")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The registry.
        registry: String,
    },
}

/// A user name and password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `Authorization: Basic` value.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The credentials file.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    path: PathBuf,
}

/// The registry domain a login names (`https://host:port/v1/` → `host:port`; none, or any of
/// Docker Hub's names → `docker.io`), as `docker login SERVER` takes it.
pub fn login_domain(server: Option<&str>) -> String {
    let s = server
        .unwrap_or("")
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    match s.split('/').next().unwrap_or(s) {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => {
            moat_image::reference::DOCKER_HUB.to_string()
        }
        h => h.to_string(),
    }
}

/// The `auths` key of a registry domain.
pub fn key_of(domain: &str) -> String {
    if domain == moat_image::reference::DOCKER_HUB {
        DOCKER_HUB_KEY.to_string()
    } else {
        domain.to_string()
    }
}

impl CredentialStore {
    /// Docker's file: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn default_location() -> CredentialStore {
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".docker"),
        };
        CredentialStore::at(&dir.join("config.json"))
    }

    /// The file at `path`.
    pub fn at(path: &Path) -> CredentialStore {
        CredentialStore {
            path: path.to_path_buf(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Map<String, Value>, CredentialsError> {
        match fs::read(&self.path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
            Ok(b) => match serde_json::from_slice::<Value>(&b) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Ok(Map::new()),
                Err(source) => Err(CredentialsError::Json {
                    path: self.path.clone(),
                    source,
                }),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Map::new()),
            Err(source) => Err(CredentialsError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Writes the file whole (temporary file, then rename; mode 0600: it holds passwords).
    fn write(&self, doc: &Map<String, Value>) -> Result<(), CredentialsError> {
        use std::os::unix::fs::OpenOptionsExt;
        let e = |source| CredentialsError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(e)?;
        }
        let tmp = self
            .path
            .with_extension(format!("json.tmp-{}", std::process::id()));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(e)?;
        let body = serde_json::to_vec_pretty(doc).unwrap_or_default();
        let written = f.write_all(&body).and_then(|()| f.sync_all());
        if let Err(err) = written.and_then(|()| fs::rename(&tmp, &self.path)) {
            let _ = fs::remove_file(&tmp);
            return Err(e(err));
        }
        Ok(())
    }

    /// The stored credentials for a registry domain.
    pub fn get(&self, domain: &str) -> Result<Option<Credentials>, CredentialsError> {
        let doc = self.read()?;
        let key = key_of(domain);
        let Some(entry) = doc.get("auths").and_then(|a| a.get(&key)) else {
            return Ok(None);
        };
        let malformed = || CredentialsError::Malformed {
            path: self.path.clone(),
            registry: key.clone(),
        };
        if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| malformed())?;
            let raw = String::from_utf8(raw).map_err(|_| malformed())?;
            let (u, p) = raw.split_once(':').ok_or_else(malformed)?;
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
        // Older files keep the pair in clear.
        match (
            entry.get("username").and_then(Value::as_str),
            entry.get("password").and_then(Value::as_str),
        ) {
            (Some(u), Some(p)) => Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            })),
            _ => Ok(None),
        }
    }

    /// Stores credentials for a registry domain.
    pub fn set(&self, domain: &str, c: &Credentials) -> Result<(), CredentialsError> {
        let mut doc = self.read()?;
        let auths = doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let raw = format!("{}:{}", c.username, c.password);
        let entry = serde_json::json!({
            "auth": base64::engine::general_purpose::STANDARD.encode(raw)
        });
        if let Some(a) = auths.as_object_mut() {
            a.insert(key_of(domain), entry);
        }
        self.write(&doc)
    }

    /// Forgets a registry's credentials; tells whether there were any.
    pub fn remove(&self, domain: &str) -> Result<bool, CredentialsError> {
        let mut doc = self.read()?;
        let removed = doc
            .get_mut("auths")
            .and_then(Value::as_object_mut)
            .and_then(|a| a.remove(&key_of(domain)))
            .is_some();
        if removed {
            self.write(&doc)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_dockers_format_keeping_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(
            &path,
            r#"{"psFormat":"table {{.ID}}","auths":{"other:1":{"auth":"dTpw"}}}"#,
        )
        .unwrap();
        let s = CredentialStore::at(&path);
        let c = Credentials {
            username: "alice".into(),
            password: "s3:cret".into(),
        };
        s.set("127.0.0.1:5000", &c).unwrap();
        s.set("docker.io", &c).unwrap();
        let doc: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["psFormat"], "table {{.ID}}");
        // What `docker login` writes: base64("alice:s3:cret").
        assert_eq!(
            doc["auths"]["127.0.0.1:5000"]["auth"],
            "YWxpY2U6czM6Y3JldA=="
        );
        assert!(doc["auths"][DOCKER_HUB_KEY].is_object());
        assert_eq!(s.get("127.0.0.1:5000").unwrap(), Some(c.clone()));
        assert_eq!(s.get("other:1").unwrap().unwrap().username, "u");
        assert!(s.remove("127.0.0.1:5000").unwrap());
        assert!(!s.remove("127.0.0.1:5000").unwrap());
        assert_eq!(s.get("127.0.0.1:5000").unwrap(), None);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!format!("{c:?}").contains("s3:cret"));
    }

    #[test]
    fn login_servers_are_normalised() {
        assert_eq!(login_domain(None), "docker.io");
        assert_eq!(
            login_domain(Some("https://index.docker.io/v1/")),
            "docker.io"
        );
        assert_eq!(login_domain(Some("127.0.0.1:5000")), "127.0.0.1:5000");
        assert_eq!(
            login_domain(Some("http://localhost:5000/")),
            "localhost:5000"
        );
    }

    #[test]
    fn malformed_entries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, r#"{"auths":{"r:1":{"auth":"!!!"}}}"#).unwrap();
        let err = CredentialStore::at(&path)
            .get("r:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("r:1") && err.contains("malformed"), "{err}");
        fs::write(&path, "{").unwrap();
        assert!(CredentialStore::at(&path).get("r:1").is_err());
    }
}
