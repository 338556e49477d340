//! Named volumes (Docker's `local` driver): a directory `<root>/volumes/<name>/_data` that
//! outlives containers, recorded in the `volumes` table of the store's database. A volume named
//! in `-v NAME:/path` is created on first use; `-v /path` makes an anonymous one (64 hex), which
//! `rm -v` removes with its container. A volume a container uses is never removed.

use std::path::{Path, PathBuf};

use rusqlite::params;
use serde_json::{json, Value};

use crate::containers::RecordError;
use crate::{EngineError, Paths};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS volumes (
    name      TEXT PRIMARY KEY,
    created   TEXT NOT NULL,
    anonymous INTEGER NOT NULL DEFAULT 0,
    labels    TEXT NOT NULL DEFAULT '{}'
);
";

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// RFC 3339.
    pub created: String,
    /// Made by `-v /path` (removed by `rm -v`).
    pub anonymous: bool,
    /// `--label` values, as a JSON object.
    pub labels: String,
}

/// The volumes of an engine.
#[derive(Debug)]
pub struct Volumes {
    conn: rusqlite::Connection,
    paths: Paths,
}

fn sql(paths: &Paths) -> impl Fn(rusqlite::Error) -> EngineError + '_ {
    move |source| {
        EngineError::Records(RecordError::Sqlite {
            path: paths.images().join("moat.db"),
            source,
        })
    }
}

impl Volumes {
    /// Opens the volume table.
    pub fn open(paths: &Paths) -> Result<Volumes, EngineError> {
        std::fs::create_dir_all(paths.images()).map_err(|source| EngineError::Io {
            what: "create",
            path: paths.images(),
            source,
        })?;
        let conn = moat_image::db::connect(&paths.images().join("moat.db")).map_err(sql(paths))?;
        conn.execute_batch(SCHEMA).map_err(sql(paths))?;
        Ok(Volumes {
            conn,
            paths: paths.clone(),
        })
    }

    /// The directory a volume's data lives in.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.paths.root.join("volumes").join(name).join("_data")
    }

    /// Creates a volume (a generated anonymous one when `name` is None); an existing name is
    /// returned as it is, as Docker does. Returns the name.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: &[(String, String)],
    ) -> Result<String, EngineError> {
        let (name, anonymous) = match name {
            Some(n) => {
                crate::containers::check_name(n).map_err(|_| {
                    EngineError::Conflict(format!(
                        "invalid volume name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    ))
                })?;
                (n.to_string(), false)
            }
            None => (crate::run::new_id()?, true),
        };
        if self.get(&name)?.is_some() {
            return Ok(name);
        }
        let dir = self.mountpoint(&name);
        std::fs::create_dir_all(&dir).map_err(|source| EngineError::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let labels: serde_json::Map<String, Value> =
            labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        self.conn
            .execute(
                "INSERT OR IGNORE INTO volumes (name, created, anonymous, labels) VALUES (?1, ?2, ?3, ?4)",
                params![
                    name,
                    moat_runtime::state::now_rfc3339(),
                    anonymous,
                    Value::Object(labels).to_string()
                ],
            )
            .map_err(sql(&self.paths))?;
        Ok(name)
    }

    /// The volume called `name`.
    pub fn get(&self, name: &str) -> Result<Option<Volume>, EngineError> {
        Ok(self.query("WHERE name = ?1", params![name])?.pop())
    }

    /// Every volume, by name.
    pub fn all(&self) -> Result<Vec<Volume>, EngineError> {
        self.query("ORDER BY name", params![])
    }

    fn query(&self, tail: &str, args: impl rusqlite::Params) -> Result<Vec<Volume>, EngineError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT name, created, anonymous, labels FROM volumes {tail}"
            ))
            .map_err(sql(&self.paths))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok(Volume {
                    name: r.get(0)?,
                    created: r.get(1)?,
                    anonymous: r.get(2)?,
                    labels: r.get(3)?,
                })
            })
            .map_err(sql(&self.paths))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.paths))
    }

    /// Containers (ids) whose config mounts the volume.
    pub fn users(&self, name: &str) -> Vec<String> {
        let mp = self.mountpoint(name);
        let mut out = vec![];
        let dir = self.paths.root.join("containers");
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let fname = e.file_name().to_string_lossy().into_owned();
            if fname.starts_with('.') {
                continue;
            }
            if uses(&e.path().join("config.json"), &mp) {
                out.push(fname);
            }
        }
        out
    }

    /// Removes a volume and its data; refused while a container uses it.
    pub fn remove(&self, name: &str) -> Result<(), EngineError> {
        if self.get(name)?.is_none() {
            return Err(EngineError::Conflict(format!("no such volume: {name}")));
        }
        if let Some(c) = self.users(name).first() {
            return Err(EngineError::Conflict(format!(
                "remove {name}: volume is in use - [{c}]"
            )));
        }
        let dir = self.paths.root.join("volumes").join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(EngineError::Io {
                    what: "remove",
                    path: dir,
                    source,
                })
            }
        }
        self.conn
            .execute("DELETE FROM volumes WHERE name = ?1", params![name])
            .map_err(sql(&self.paths))?;
        Ok(())
    }

    /// Docker's `volume inspect` document.
    pub fn inspect(&self, v: &Volume) -> Value {
        json!({
            "CreatedAt": v.created,
            "Driver": "local",
            "Labels": serde_json::from_str::<Value>(&v.labels).unwrap_or(json!({})),
            "Mountpoint": self.mountpoint(&v.name),
            "Name": v.name,
            "Options": null,
            "Scope": "local",
        })
    }
}

/// Whether the OCI config at `config` bind-mounts `source`.
fn uses(config: &Path, source: &Path) -> bool {
    let Ok(bytes) = std::fs::read(config) else {
        return false;
    };
    let spec: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    spec["mounts"].as_array().is_some_and(|m| {
        m.iter()
            .any(|m| m["source"].as_str() == Some(&*source.to_string_lossy()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_remove() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path());
        let v = Volumes::open(&paths).unwrap();
        assert_eq!(v.create(Some("data"), &[]).unwrap(), "data");
        assert_eq!(v.create(Some("data"), &[]).unwrap(), "data", "idempotent");
        let anon = v.create(None, &[("a".into(), "b".into())]).unwrap();
        assert_eq!(anon.len(), 64);
        assert!(v.mountpoint("data").is_dir());
        assert_eq!(v.all().unwrap().len(), 2);
        assert!(v.get(&anon).unwrap().unwrap().anonymous);
        assert_eq!(
            v.inspect(&v.get(&anon).unwrap().unwrap())["Labels"]["a"],
            "b"
        );
        assert!(v.create(Some("bad/name"), &[]).is_err());
        v.remove("data").unwrap();
        assert!(!v.mountpoint("data").exists());
        assert!(v.remove("data").is_err());
    }
}
