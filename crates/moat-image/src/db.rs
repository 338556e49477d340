//! Image metadata in SQLite: layers (one snapshot per distinct diff), images, the ordered layers
//! of each image, and tags. Every change is one transaction, and the database is opened with a
//! busy timeout, so concurrent `moat` processes serialize instead of corrupting it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::digest::Digest;

/// Errors of the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// the database failed
    #[error("image database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error.
        source: rusqlite::Error,
    },
    /// a stored digest is malformed (the database was edited by hand)
    #[error("image database {path}: stored digest {value:?} is malformed")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The value found.
        value: String,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS layers (
    diff_id   TEXT PRIMARY KEY,     -- sha256 of the uncompressed layer tar
    snapshot  TEXT NOT NULL UNIQUE, -- directory under snapshots/
    link      TEXT NOT NULL UNIQUE, -- short name under l/ (overlay mount data fits one page)
    size      INTEGER NOT NULL,     -- uncompressed bytes
    blob      TEXT NOT NULL,        -- the blob holding the layer as distributed
    blob_size INTEGER NOT NULL,
    media_type TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id       TEXT PRIMARY KEY,      -- config digest
    manifest TEXT NOT NULL,         -- manifest digest
    created  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS image_layers (
    image   TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    idx     INTEGER NOT NULL,       -- 0 = base
    diff_id TEXT NOT NULL REFERENCES layers(diff_id),
    PRIMARY KEY (image, idx)
);
CREATE TABLE IF NOT EXISTS tags (
    name  TEXT PRIMARY KEY,         -- repository:tag
    image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS blob_sources (
    blob       TEXT NOT NULL,       -- a blob pulled from or pushed to
    registry   TEXT NOT NULL,       -- this registry (host[:port])
    repository TEXT NOT NULL,       -- in this repository: a push elsewhere there can mount it
    PRIMARY KEY (blob, registry, repository)
);
CREATE INDEX IF NOT EXISTS image_layers_by_diff ON image_layers(diff_id);
CREATE INDEX IF NOT EXISTS tags_by_image ON tags(image);
";

/// A layer row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Snapshot directory name.
    pub snapshot: String,
    /// Short link name.
    pub link: String,
    /// Uncompressed size.
    pub size: u64,
    /// The distributed blob.
    pub blob: Digest,
    /// Its size.
    pub blob_size: u64,
    /// Its media type.
    pub media_type: String,
}

/// An image row with its tags and layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    /// Config digest (the image id).
    pub id: Digest,
    /// Manifest digest.
    pub manifest: Digest,
    /// Creation time (RFC 3339).
    pub created: String,
    /// `repository:tag` names.
    pub tags: Vec<String>,
    /// diff_ids, base first.
    pub layers: Vec<Digest>,
}

/// The open database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

/// Opens the store's SQLite database as every moat process must: WAL (readers never block the
/// writer), a 30 s busy timeout (concurrent `moat` processes wait for each other instead of
/// failing), foreign keys on, and synchronous=NORMAL (a commit is atomic and consistent; after
/// a power loss the last commits may be lost, never half-applied).
///
/// Closing does not checkpoint: by default the last connection to close copies the WAL into the
/// database with four fsyncs, and every `moat` command is a short process that would pay for it
/// (about 2.5 ms of a 25 ms `moat run` here). Instead, an open that finds the WAL above
/// [`WAL_LIMIT`] checkpoints and truncates it: without that the WAL grows without bound and
/// every open gets slower (seen: 45 ms runs after a few hundred).
pub fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;",
    )?;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_LIMIT) {
        // Best effort: a busy database is checkpointed by a later open.
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
    Ok(conn)
}

/// The WAL size above which an open checkpoints (256 KiB: a few dozen container starts).
pub const WAL_LIMIT: u64 = 256 * 1024;

impl Db {
    /// Opens (creating) `<root>/moat.db`.
    pub fn open(root: &Path) -> Result<Db, DbError> {
        let path = root.join("moat.db");
        let e = |source| DbError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = connect(&path).map_err(e)?;
        log::debug!("store: database connected");
        conn.execute_batch(SCHEMA).map_err(e)?;
        Ok(Db { conn, path })
    }

    /// The connection and the database's path, for another table's code to go on with (one
    /// connection per process saves a connect and a schema load: ~1 ms of `moat run`).
    pub fn into_connection(self) -> (Connection, PathBuf) {
        (self.conn, self.path)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> DbError + '_ {
        |source| DbError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn digest(&self, s: String) -> Result<Digest, DbError> {
        s.parse().map_err(|_| DbError::Corrupt {
            path: self.path.clone(),
            value: s,
        })
    }

    /// Whether a layer or an image (its config or manifest) refers to blob `d`.
    pub fn blob_in_use(&self, d: &Digest) -> Result<bool, DbError> {
        self.conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM layers WHERE blob = ?1)
                     OR EXISTS(SELECT 1 FROM images WHERE id = ?1 OR manifest = ?1)",
                params![d.as_str()],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// The layer with `diff_id`, if stored.
    pub fn layer(&self, diff_id: &Digest) -> Result<Option<LayerRow>, DbError> {
        let row = self
            .conn
            .query_row(
                "SELECT snapshot, link, size, blob, blob_size, media_type FROM layers WHERE diff_id = ?1",
                params![diff_id.as_str()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(self.err())?;
        let Some((snapshot, link, size, blob, blob_size, media_type)) = row else {
            return Ok(None);
        };
        Ok(Some(LayerRow {
            diff_id: diff_id.clone(),
            snapshot,
            link,
            size: size as u64,
            blob: self.digest(blob)?,
            blob_size: blob_size as u64,
            media_type,
        }))
    }

    /// Records a layer; an existing row for the same diff wins (another process unpacked it
    /// first): returns the row that is stored.
    pub fn add_layer(&self, l: &LayerRow) -> Result<LayerRow, DbError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO layers (diff_id, snapshot, link, size, blob, blob_size, media_type)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    l.diff_id.as_str(),
                    l.snapshot,
                    l.link,
                    l.size as i64,
                    l.blob.as_str(),
                    l.blob_size as i64,
                    l.media_type
                ],
            )
            .map_err(self.err())?;
        self.layer(&l.diff_id)?.ok_or_else(|| DbError::Sqlite {
            path: self.path.clone(),
            source: rusqlite::Error::QueryReturnedNoRows,
        })
    }

    /// Records an image, its layers and (optionally) a tag, in one transaction. A tag that named
    /// another image moves to this one.
    pub fn add_image(
        &mut self,
        id: &Digest,
        manifest: &Digest,
        created: &str,
        layers: &[Digest],
        tag: Option<&str>,
    ) -> Result<(), DbError> {
        let path = self.path.clone();
        let e = |source| DbError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(e)?;
        tx.execute(
            "INSERT OR IGNORE INTO images (id, manifest, created) VALUES (?1, ?2, ?3)",
            params![id.as_str(), manifest.as_str(), created],
        )
        .map_err(e)?;
        for (i, l) in layers.iter().enumerate() {
            tx.execute(
                "INSERT OR IGNORE INTO image_layers (image, idx, diff_id) VALUES (?1, ?2, ?3)",
                params![id.as_str(), i as i64, l.as_str()],
            )
            .map_err(e)?;
        }
        if let Some(t) = tag {
            tx.execute(
                "INSERT INTO tags (name, image) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET image = excluded.image",
                params![t, id.as_str()],
            )
            .map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    /// Remembers that `registry`'s `repository` has `blob` (for cross-repository mounts).
    pub fn add_blob_source(
        &self,
        blob: &Digest,
        registry: &str,
        repository: &str,
    ) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO blob_sources (blob, registry, repository) VALUES (?1, ?2, ?3)",
                params![blob.as_str(), registry, repository],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// The repositories of `registry` known to have `blob`.
    pub fn blob_sources(&self, blob: &Digest, registry: &str) -> Result<Vec<String>, DbError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT repository FROM blob_sources WHERE blob = ?1 AND registry = ?2 ORDER BY repository",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map(params![blob.as_str(), registry], |r| r.get::<_, String>(0))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Points `tag` at image `id`.
    pub fn set_tag(&self, tag: &str, id: &Digest) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT INTO tags (name, image) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET image = excluded.image",
                params![tag, id.as_str()],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Removes a tag; returns whether it existed.
    pub fn remove_tag(&self, tag: &str) -> Result<bool, DbError> {
        self.conn
            .execute("DELETE FROM tags WHERE name = ?1", params![tag])
            .map(|n| n > 0)
            .map_err(self.err())
    }

    /// The image a tag names.
    pub fn tag(&self, tag: &str) -> Result<Option<Digest>, DbError> {
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT image FROM tags WHERE name = ?1",
                params![tag],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        id.map(|s| self.digest(s)).transpose()
    }

    /// Image ids starting with `prefix` (hex, without `sha256:`).
    pub fn ids_with_prefix(&self, prefix: &str) -> Result<Vec<Digest>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT id FROM images WHERE substr(id, 8, ?2) = ?1")
            .map_err(self.err())?;
        let rows: Vec<String> = st
            .query_map(params![prefix, prefix.len() as i64], |r| r.get(0))
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        rows.into_iter().map(|s| self.digest(s)).collect()
    }

    /// One image with its tags and layers.
    pub fn image(&self, id: &Digest) -> Result<Option<ImageRow>, DbError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT manifest, created FROM images WHERE id = ?1",
                params![id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())?;
        let Some((manifest, created)) = row else {
            return Ok(None);
        };
        let strings = |sql: &str| -> Result<Vec<String>, DbError> {
            let mut st = self.conn.prepare(sql).map_err(self.err())?;
            let v = st
                .query_map(params![id.as_str()], |r| r.get(0))
                .map_err(self.err())?
                .collect::<Result<Vec<String>, _>>()
                .map_err(self.err())?;
            Ok(v)
        };
        let tags = strings("SELECT name FROM tags WHERE image = ?1 ORDER BY name")?;
        let layers = strings("SELECT diff_id FROM image_layers WHERE image = ?1 ORDER BY idx")?
            .into_iter()
            .map(|s| self.digest(s))
            .collect::<Result<_, _>>()?;
        Ok(Some(ImageRow {
            id: id.clone(),
            manifest: self.digest(manifest)?,
            created,
            tags,
            layers,
        }))
    }

    /// The digests a one-column query returns.
    fn digests(&self, sql: &str) -> Result<Vec<Digest>, DbError> {
        let mut st = self.conn.prepare(sql).map_err(self.err())?;
        let rows: Vec<String> = st
            .query_map([], |r| r.get(0))
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        rows.into_iter().map(|s| self.digest(s)).collect()
    }

    /// Every image, newest first.
    pub fn images(&self) -> Result<Vec<ImageRow>, DbError> {
        let mut out = vec![];
        for id in self.digests("SELECT id FROM images ORDER BY created DESC, id")? {
            if let Some(row) = self.image(&id)? {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// Removes an image row (its layer list and tags go with it); returns the layers that no
    /// image uses any more, which the caller then deletes. One transaction.
    pub fn remove_image(&mut self, id: &Digest) -> Result<Vec<LayerRow>, DbError> {
        let path = self.path.clone();
        let e = |source| DbError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(e)?;
        tx.execute("DELETE FROM images WHERE id = ?1", params![id.as_str()])
            .map_err(e)?;
        let orphans: Vec<String> = {
            let mut st = tx
                .prepare("SELECT diff_id FROM layers WHERE diff_id NOT IN (SELECT diff_id FROM image_layers)")
                .map_err(e)?;
            let v = st
                .query_map([], |r| r.get(0))
                .map_err(e)?
                .collect::<Result<_, _>>()
                .map_err(e)?;
            v
        };
        tx.commit().map_err(e)?;
        let mut out = vec![];
        for d in orphans {
            if let Some(l) = self.layer(&self.digest(d)?)? {
                out.push(l);
            }
        }
        Ok(out)
    }

    /// Deletes a layer row (after its files are gone).
    pub fn remove_layer(&self, diff_id: &Digest) -> Result<(), DbError> {
        self.conn
            .execute(
                "DELETE FROM layers WHERE diff_id = ?1",
                params![diff_id.as_str()],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Every layer row.
    pub fn layers(&self) -> Result<Vec<LayerRow>, DbError> {
        let mut out = vec![];
        for id in self.digests("SELECT diff_id FROM layers ORDER BY diff_id")? {
            if let Some(l) = self.layer(&id)? {
                out.push(l);
            }
        }
        Ok(out)
    }

    /// How many images use each layer.
    pub fn layer_users(&self, diff_id: &Digest) -> Result<u64, DbError> {
        self.conn
            .query_row(
                "SELECT COUNT(DISTINCT image) FROM image_layers WHERE diff_id = ?1",
                params![diff_id.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(self.err())
    }
}
