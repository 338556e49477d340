//! Revisions: each project's applied declarations, numbered, so that `moat apply history`
//! lists them, `moat apply rollback` brings one back, and `moat serve`'s reconciler knows what
//! each project should be.
//!
//! A revision is what the declaration was made of: the file's text as written, the path it
//! was read from, the value of each variable its interpolation used, and what the files it
//! refers to held (each service's environment with its `env_file`s merged, and its secrets and
//! configs, copied into `<root>/apply/files/SHA256` and projected from there): the same
//! revision loads to the same services later, whatever the environment or those files then —
//! a rollback, and the reconciler, read nothing from the project's directory again.
//! `--down` records a revision that declares nothing: the project is no longer kept.
//!
//! Kept in `<root>/apply/revisions.db` (SQLite, WAL): one row per revision, numbered from 1 per
//! project; a new one is recorded only when it differs from the latest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use sha2::Digest as _;

use crate::compose::{ComposeError, ComposeFile};

/// Errors of the revision records.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    /// The database failed.
    #[error("revisions {path}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// Its directory could not be made.
    #[error("create {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No such revision.
    #[error("project {project} has no revision {number}")]
    NoRevision {
        /// The project.
        project: String,
        /// The number asked for.
        number: i64,
    },
    /// Nothing to roll back to.
    #[error("project {0} has no earlier revision to roll back to")]
    NothingEarlier(String),
    /// A stored declaration no longer loads (a file it refers to is gone or changed).
    #[error("revision {number} of project {project}: {source}")]
    Load {
        /// The project.
        project: String,
        /// The revision.
        number: i64,
        /// Why.
        source: Box<ComposeError>,
    },
}

/// One applied declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// Its number in the project (1, 2, ...).
    pub number: i64,
    /// When it was applied (RFC 3339).
    pub created: String,
    /// The file it was read from (empty for `--down`).
    pub path: PathBuf,
    /// The file's text (empty for `--down`).
    pub text: String,
    /// The variables interpolation used, with their values.
    pub vars: BTreeMap<String, String>,
    /// Its apply failed part-way (the project is as that failure left it, which the
    /// reconciler leaves alone until the next apply or rollback).
    pub failed: bool,
    /// What each service's referenced files held (see [`freeze`]).
    pub frozen: BTreeMap<String, Frozen>,
}

/// A service's referenced files as they were applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frozen {
    /// Its environment, env files merged, keys without a value resolved.
    pub environment: Option<crate::compose::Pairs>,
    /// Its secrets and configs (source copy, target, digest), from their copies under
    /// `<root>/apply/files/`.
    pub projected: Vec<(String, String, String)>,
}

/// Copies what `file`'s services project (secrets, configs) into `<root>/apply/files/`, named
/// by their digest, points the projections at those copies, and records in `rev` what each
/// service's files held.
pub fn freeze(
    root: &Path,
    file: &mut ComposeFile,
    rev: &mut Revision,
) -> Result<(), RevisionError> {
    let dir = root.join("apply").join("files");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RevisionError::Io { path, source }
    };
    for (name, s) in file.services.iter_mut() {
        for p in &mut s.projected {
            let copy = dir.join(&p.digest);
            if !copy.exists() {
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                let tmp = dir.join(format!(".{}.tmp", p.digest));
                std::fs::copy(&p.source, &tmp).map_err(io(Path::new(&p.source)))?;
                std::fs::rename(&tmp, &copy).map_err(io(&copy))?;
            }
            p.source = copy.to_string_lossy().into_owned();
        }
        rev.frozen.insert(
            name.clone(),
            Frozen {
                environment: s.environment.clone(),
                projected: s
                    .projected
                    .iter()
                    .map(|p| (p.source.clone(), p.target.clone(), p.digest.clone()))
                    .collect(),
            },
        );
    }
    Ok(())
}

impl Revision {
    /// Whether it declares nothing (`--down`).
    pub fn is_down(&self) -> bool {
        self.text.is_empty()
    }

    /// The declaration, parsed as it was applied, its services' files as they were then.
    pub fn load(&self, project: &str) -> Result<ComposeFile, RevisionError> {
        let lookup = |k: &str| self.vars.get(k).cloned();
        let err = |source| RevisionError::Load {
            project: project.to_string(),
            number: self.number,
            source: Box::new(source),
        };
        if self.frozen.is_empty() {
            return ComposeFile::load_text(&self.text, &self.path, &lookup).map_err(err);
        }
        // Not read again: what the revision froze stands in for the env files, secrets and
        // configs.
        let mut file = ComposeFile::parse(&self.text, &self.path, &lookup).map_err(err)?;
        for (name, s) in file.services.iter_mut() {
            if let Some(f) = self.frozen.get(name) {
                s.environment = f.environment.clone();
                s.env_file = None;
                s.projected = f
                    .projected
                    .iter()
                    .map(|(source, target, digest)| crate::files::Projected {
                        source: source.clone(),
                        target: target.clone(),
                        digest: digest.clone(),
                    })
                    .collect();
            }
        }
        Ok(file)
    }

    fn digest(&self) -> String {
        let doc = serde_json::json!([self.path, self.text, self.vars, self.frozen]);
        hex::encode(sha2::Sha256::digest(doc.to_string().as_bytes()))
    }
}

/// The revision records of one engine root.
#[derive(Debug)]
pub struct Revisions {
    conn: Connection,
    path: PathBuf,
}

impl Revisions {
    /// Opens (creating) the records of `root`.
    pub fn open(root: &Path) -> Result<Revisions, RevisionError> {
        let dir = root.join("apply");
        std::fs::create_dir_all(&dir).map_err(|source| RevisionError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("revisions.db");
        let sql = |source| RevisionError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = moat_image::db::connect(&path).map_err(sql)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS revisions (
               project TEXT NOT NULL, number INTEGER NOT NULL, created TEXT NOT NULL,
               path TEXT NOT NULL, text TEXT NOT NULL, vars TEXT NOT NULL, digest TEXT NOT NULL,
               failed INTEGER NOT NULL DEFAULT 0, frozen TEXT NOT NULL DEFAULT '{}',
               PRIMARY KEY (project, number));",
        )
        .map_err(sql)?;
        // Records made before `failed` and `frozen` existed get the columns (an error says
        // one is there).
        let _ = conn
            .execute_batch("ALTER TABLE revisions ADD COLUMN failed INTEGER NOT NULL DEFAULT 0");
        let _ = conn
            .execute_batch("ALTER TABLE revisions ADD COLUMN frozen TEXT NOT NULL DEFAULT '{}'");
        Ok(Revisions { conn, path })
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> RevisionError + '_ {
        move |source| RevisionError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Records `rev` (its number and time are given here) unless it is the same as the
    /// project's latest; the number it has either way.
    pub fn record(&mut self, project: &str, rev: Revision) -> Result<i64, RevisionError> {
        let digest = rev.digest();
        let path = self.path.clone();
        let sql = move |source| RevisionError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&sql)?;
        let latest: Option<(i64, String)> = tx
            .query_row(
                "SELECT number, digest FROM revisions WHERE project = ?1 ORDER BY number DESC LIMIT 1",
                params![project],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(&sql)?;
        if let Some((n, d)) = &latest {
            if *d == digest {
                // The same declaration applied again: how it went this time.
                tx.execute(
                    "UPDATE revisions SET failed = ?3 WHERE project = ?1 AND number = ?2",
                    params![project, n, rev.failed],
                )
                .map_err(&sql)?;
                tx.commit().map_err(&sql)?;
                return Ok(*n);
            }
        }
        let number = latest.map_or(1, |(n, _)| n + 1);
        let vars = serde_json::to_string(&rev.vars).unwrap_or_else(|_| "{}".into());
        tx.execute(
            "INSERT INTO revisions (project, number, created, path, text, vars, digest, failed, frozen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                project,
                number,
                moat_runtime::state::now_rfc3339(),
                rev.path.to_string_lossy(),
                rev.text,
                vars,
                digest,
                rev.failed,
                serde_json::to_string(&rev.frozen).unwrap_or_else(|_| "{}".into())
            ],
        )
        .map_err(&sql)?;
        tx.commit().map_err(&sql)?;
        Ok(number)
    }

    /// The project's revisions, oldest first.
    pub fn list(&self, project: &str) -> Result<Vec<Revision>, RevisionError> {
        let mut st = self
            .conn
            .prepare("SELECT number, created, path, text, vars, failed, frozen FROM revisions WHERE project = ?1 ORDER BY number")
            .map_err(self.sql())?;
        let rows = st
            .query_map(params![project], |r| {
                Ok(Revision {
                    number: r.get(0)?,
                    created: r.get(1)?,
                    path: PathBuf::from(r.get::<_, String>(2)?),
                    text: r.get(3)?,
                    vars: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
                    failed: r.get(5)?,
                    frozen: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    /// Revision `number` of the project.
    pub fn get(&self, project: &str, number: i64) -> Result<Revision, RevisionError> {
        self.list(project)?
            .into_iter()
            .find(|r| r.number == number)
            .ok_or_else(|| RevisionError::NoRevision {
                project: project.to_string(),
                number,
            })
    }

    /// The revision a rollback without a number goes back to: the one before the latest.
    pub fn previous(&self, project: &str) -> Result<Revision, RevisionError> {
        let mut all = self.list(project)?;
        all.pop();
        all.pop()
            .ok_or_else(|| RevisionError::NothingEarlier(project.to_string()))
    }

    /// Every project whose latest revision applied in full declares something, with that
    /// revision: what the reconciler keeps (an apply that failed — rolled back, or paused —
    /// leaves the one before it in force).
    pub fn live(&self) -> Result<Vec<(String, Revision)>, RevisionError> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT project FROM revisions ORDER BY project")
            .map_err(self.sql())?;
        let projects: Vec<String> = st
            .query_map([], |r| r.get(0))
            .map_err(self.sql())?
            .collect::<Result<_, _>>()
            .map_err(self.sql())?;
        let mut out = vec![];
        for p in projects {
            let good = self.list(&p)?.into_iter().rev().find(|r| !r.failed);
            if let Some(last) = good.filter(|r| !r.is_down()) {
                out.push((p, last));
            }
        }
        Ok(out)
    }
}

/// The revision of a declaration read from `path`: its text, and the variables `lookup` gave
/// while it was interpolated.
pub fn capture(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(ComposeFile, Revision), ComposeError> {
    let text = std::fs::read_to_string(path).map_err(|source| ComposeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let used = std::cell::RefCell::new(BTreeMap::new());
    let recording = |k: &str| {
        let v = lookup(k);
        if let Some(v) = &v {
            used.borrow_mut().insert(k.to_string(), v.clone());
        }
        v
    };
    let file = ComposeFile::load_text(&text, &path, &recording)?;
    Ok((
        file,
        Revision {
            number: 0,
            created: String::new(),
            path,
            text,
            vars: used.into_inner(),
            failed: false,
            frozen: BTreeMap::new(),
        },
    ))
}

/// The revision `--down` records.
pub fn down() -> Revision {
    Revision {
        number: 0,
        created: String::new(),
        path: PathBuf::new(),
        text: String::new(),
        vars: BTreeMap::new(),
        failed: false,
        frozen: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_numbered_deduplicated_and_reloaded_as_applied() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("compose.yaml");
        std::fs::write(&f, "services:\n  web:\n    image: busybox:${TAG}\n").unwrap();
        let env = |k: &str| (k == "TAG").then(|| "1.36".to_string());
        let (file, rev) = capture(&f, &env).unwrap();
        assert_eq!(file.services["web"].image.as_deref(), Some("busybox:1.36"));
        assert_eq!(rev.vars.get("TAG").map(String::as_str), Some("1.36"));
        let mut r = Revisions::open(d.path()).unwrap();
        assert_eq!(r.record("p", rev.clone()).unwrap(), 1);
        // The same again: no new revision.
        assert_eq!(r.record("p", rev.clone()).unwrap(), 1);
        let env2 = |k: &str| (k == "TAG").then(|| "1.37".to_string());
        let (_, rev2) = capture(&f, &env2).unwrap();
        assert_eq!(r.record("p", rev2).unwrap(), 2);
        // Reloaded with the values it was applied with, whatever the environment now.
        let prev = r.previous("p").unwrap();
        assert_eq!(prev.number, 1);
        let again = prev.load("p").unwrap();
        assert_eq!(again.services["web"].image.as_deref(), Some("busybox:1.36"));
        assert_eq!(r.live().unwrap().len(), 1);
        // A failed apply is recorded, and the project is left alone while it is the latest.
        let failed = Revision {
            failed: true,
            ..prev.clone()
        };
        assert_eq!(r.record("p", failed).unwrap(), 3);
        assert_eq!(
            r.live().unwrap()[0].1.number,
            2,
            "the last one applied in full"
        );
        assert_eq!(r.record("p", prev.clone()).unwrap(), 3);
        assert_eq!(r.live().unwrap().len(), 1);
        assert_eq!(r.record("p", down()).unwrap(), 4);
        assert!(r.live().unwrap().is_empty());
        assert_eq!(r.list("p").unwrap().len(), 4);
        assert!(matches!(
            r.get("p", 9),
            Err(RevisionError::NoRevision { number: 9, .. })
        ));
        assert!(matches!(
            r.previous("other"),
            Err(RevisionError::NothingEarlier(_))
        ));
    }
}
