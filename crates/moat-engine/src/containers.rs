//! Container records: one row per container in the `containers` table of the store's SQLite
//! database (`<root>/image/moat.db`, beside the image tables), so that every `moat` process, and
//! later the API server, sees the same containers.
//!
//! Lifecycle of a row: inserted `created` by `create`/`run`; the monitor sets it `running` with
//! the init's pid once the container started, and `exited` with the code and time when it ends
//! (or deletes it, for `--rm`); `rm` deletes it. Every change is one statement (one
//! transaction) under a busy timeout, so concurrent `moat` invocations serialize.
//!
//! A row that says `running` but whose monitor is gone (killed, crashed) is reported as exited
//! with that reason: [`Row::effective`].

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

/// Errors of the container records.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// the database failed
    #[error("container database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error.
        source: rusqlite::Error,
    },
    /// the database directory cannot be made
    #[error("create {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// no container matches
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// an id prefix matches more than one container
    #[error("multiple containers match {0:?}: give more of the id, or the name")]
    Ambiguous(String),
    /// the name is taken
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse {
        /// The name asked for.
        name: String,
        /// The container holding it.
        id: String,
    },
    /// the name is malformed
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    /// a stored state is unknown (the database was edited by hand)
    #[error("container database: unknown state {0:?}")]
    BadState(String),
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Made, never started (or being started).
    #[default]
    Created,
    /// Its process runs, watched by a monitor.
    Running,
    /// Its process ended (or its monitor died).
    Exited,
}

impl State {
    /// Docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
        }
    }

    fn parse(s: &str) -> Result<State, RecordError> {
        match s {
            "created" => Ok(State::Created),
            "running" => Ok(State::Running),
            "exited" => Ok(State::Exited),
            other => Err(RecordError::BadState(other.to_string())),
        }
    }
}

/// One container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    /// 64 hex digits.
    pub id: String,
    /// Unique name (without Docker's leading `/`).
    pub name: String,
    /// The image id (config digest).
    pub image: String,
    /// The image as the user named it.
    pub image_ref: String,
    /// The process's argv.
    pub command: Vec<String>,
    /// RFC 3339.
    pub created: String,
    /// Its state as last recorded.
    pub state: State,
    /// The init's host pid while running (0 otherwise).
    pub pid: i32,
    /// The monitor's pid and start time (to tell a dead monitor from a reused pid).
    pub monitor: (i32, u64),
    /// Exit code of the last run.
    pub exit_code: i32,
    /// RFC 3339, empty if never started.
    pub started_at: String,
    /// RFC 3339, empty if never ended.
    pub finished_at: String,
    /// Why the last start failed or the monitor died, if it did.
    pub error: String,
    /// `--rm`: the monitor removes it when it exits.
    pub auto_remove: bool,
    /// Log rotation (`logs::Rotation::encode`).
    pub log_rotation: String,
    /// `-t`: the process runs on a terminal.
    pub tty: bool,
    /// `--restart` policy (`no`, `always`, `unless-stopped`, `on-failure[:N]`).
    pub restart: String,
    /// Restarts by the policy since the container was last started (Docker's RestartCount).
    pub restart_count: u32,
}

impl Row {
    /// The state to show: `running` only while the monitor is alive. A container whose monitor
    /// was killed may still have processes (as with a dead conmon or shim); `rm -f` removes them.
    pub fn effective(&self) -> (State, String) {
        if self.state == State::Running && !self.monitor_alive() {
            return (
                State::Exited,
                format!("monitor (pid {}) died", self.monitor.0),
            );
        }
        (self.state, self.error.clone())
    }

    /// Whether the monitor recorded for this row is still the same live process.
    pub fn monitor_alive(&self) -> bool {
        let (pid, start) = self.monitor;
        pid > 0
            && moat_runtime::state::proc_start_time(pid)
                .is_some_and(|(s, st)| s == start && st != 'Z' && st != 'X')
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS containers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    image         TEXT NOT NULL,     -- image id (config digest)
    image_ref     TEXT NOT NULL,     -- as the user named it
    command       TEXT NOT NULL,     -- JSON array
    created       TEXT NOT NULL,
    state         TEXT NOT NULL,     -- created | running | exited
    pid           INTEGER NOT NULL DEFAULT 0,
    monitor_pid   INTEGER NOT NULL DEFAULT 0,
    monitor_start INTEGER NOT NULL DEFAULT 0,
    exit_code     INTEGER NOT NULL DEFAULT 0,
    started_at    TEXT NOT NULL DEFAULT '',
    finished_at   TEXT NOT NULL DEFAULT '',
    error         TEXT NOT NULL DEFAULT '',
    auto_remove   INTEGER NOT NULL DEFAULT 0,
    log_rotation  TEXT NOT NULL DEFAULT '',
    tty           INTEGER NOT NULL DEFAULT 0,
    restart       TEXT NOT NULL DEFAULT 'no',
    restart_count INTEGER NOT NULL DEFAULT 0
);
-- No index by image: each one costs every create and remove another page in the WAL (9 frames
-- per `run --rm` with it, 7 without), and `rmi`'s look-up scans a table of a few rows.
DROP INDEX IF EXISTS containers_by_image;
";

const COLUMNS: &str = "id, name, image, image_ref, command, created, state, pid, monitor_pid, \
                       monitor_start, exit_code, started_at, finished_at, error, auto_remove, \
                       log_rotation, tty, restart, restart_count";

/// The container table.
#[derive(Debug)]
pub struct Records {
    conn: Connection,
    path: PathBuf,
}

impl Records {
    /// Opens (creating if needed) the records in the store database under engine root `root`.
    pub fn open(root: &Path) -> Result<Records, RecordError> {
        let dir = root.join("image");
        let path = dir.join("moat.db");
        let sql = |source| RecordError::Sqlite {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(|source| RecordError::Io {
            path: dir.clone(),
            source,
        })?;
        let conn = moat_image::db::connect(&path).map_err(sql)?;
        Records::with_connection(conn, path)
    }

    /// The records over `conn`, a connection to the store database at `path` opened by
    /// [`moat_image::db::connect`] (the image store's, handed on: [`moat_image::db::Db::into_connection`]).
    pub fn with_connection(conn: Connection, path: PathBuf) -> Result<Records, RecordError> {
        let sql = |source| RecordError::Sqlite {
            path: path.clone(),
            source,
        };
        // The table as this version makes it is there, and the old index gone: one look at
        // the schema instead of the batch below (which SQLite parses every time).
        let current: String = conn
            .query_row(
                "SELECT group_concat(name || ':' || (sql LIKE '%restart_count%'), ',') \
                 FROM sqlite_master WHERE name IN ('containers', 'containers_by_image')",
                [],
                |r| r.get::<_, Option<String>>(0),
            )
            .map_err(sql)?
            .unwrap_or_default();
        if current == "containers:1" {
            return Ok(Records { conn, path });
        }
        conn.execute_batch(SCHEMA).map_err(sql)?;
        // Tables made before a column existed get it (CREATE TABLE IF NOT EXISTS keeps theirs).
        let have: Vec<String> = {
            let mut st = conn
                .prepare("SELECT name FROM pragma_table_info('containers')")
                .map_err(sql)?;
            let names = st.query_map([], |r| r.get(0)).map_err(sql)?;
            names.collect::<Result<_, _>>().map_err(sql)?
        };
        // A column added here must also be what `with_connection`'s one-query check looks
        // for (today the last one, restart_count): else old tables would skip this.
        for (column, decl) in [
            ("tty", "INTEGER NOT NULL DEFAULT 0"),
            ("restart", "TEXT NOT NULL DEFAULT 'no'"),
            ("restart_count", "INTEGER NOT NULL DEFAULT 0"),
        ] {
            if !have.iter().any(|h| h == column) {
                conn.execute_batch(&format!(
                    "ALTER TABLE containers ADD COLUMN {column} {decl}"
                ))
                .map_err(sql)?;
            }
        }
        Ok(Records { conn, path })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> RecordError + '_ {
        |source| RecordError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Adds a new container in state `created`; refuses a name already in use.
    pub fn insert(&self, row: &Row) -> Result<(), RecordError> {
        check_name(&row.name)?;
        if let Some(other) = self.by_name(&row.name)? {
            return Err(RecordError::NameInUse {
                name: row.name.clone(),
                id: other.id,
            });
        }
        let command = serde_json::to_string(&row.command).unwrap_or_else(|_| "[]".into());
        let res = self.conn.execute(
            &format!(
                "INSERT INTO containers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                 ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
            ),
            params![
                row.id,
                row.name,
                row.image,
                row.image_ref,
                command,
                row.created,
                row.state.as_str(),
                row.pid,
                row.monitor.0,
                row.monitor.1 as i64,
                row.exit_code,
                row.started_at,
                row.finished_at,
                row.error,
                row.auto_remove,
                row.log_rotation,
                row.tty,
                row.restart,
                row.restart_count,
            ],
        );
        match res {
            Ok(_) => Ok(()),
            // Another process took the name between the check and the insert.
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(RecordError::NameInUse {
                    name: row.name.clone(),
                    id: self.by_name(&row.name)?.map(|r| r.id).unwrap_or_default(),
                })
            }
            Err(e) => Err(self.err()(e)),
        }
    }

    /// Records that the container runs: its init's pid, its monitor, the start time, and how
    /// many times the policy restarted it since the user started it.
    pub fn set_running(
        &self,
        id: &str,
        pid: i32,
        monitor: (i32, u64),
        started_at: &str,
        restarts: u32,
    ) -> Result<(), RecordError> {
        self.conn
            .execute(
                "UPDATE containers SET state = 'running', pid = ?2, monitor_pid = ?3, \
                 monitor_start = ?4, started_at = ?5, error = '', exit_code = 0, \
                 restart_count = ?6 WHERE id = ?1",
                params![id, pid, monitor.0, monitor.1 as i64, started_at, restarts],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records the end of a run (or a failed start, with `error`).
    pub fn set_exited(
        &self,
        id: &str,
        code: i32,
        finished_at: &str,
        error: &str,
    ) -> Result<(), RecordError> {
        self.conn
            .execute(
                "UPDATE containers SET state = 'exited', pid = 0, monitor_pid = 0, \
                 monitor_start = 0, exit_code = ?2, finished_at = ?3, error = ?4 WHERE id = ?1",
                params![id, code, finished_at, error],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Removes the row.
    pub fn remove(&self, id: &str) -> Result<(), RecordError> {
        self.conn
            .execute("DELETE FROM containers WHERE id = ?1", params![id])
            .map_err(self.err())?;
        Ok(())
    }

    /// Sets the restart policy (`update --restart`), encoded as
    /// [`crate::hostconfig::RestartPolicy::encode`].
    pub fn set_restart(&self, id: &str, restart: &str) -> Result<(), RecordError> {
        self.conn
            .execute(
                "UPDATE containers SET restart = ?2 WHERE id = ?1",
                params![id, restart],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Renames a container; refuses a name in use.
    pub fn rename(&self, id: &str, name: &str) -> Result<(), RecordError> {
        check_name(name)?;
        if let Some(other) = self.by_name(name)? {
            return Err(RecordError::NameInUse {
                name: name.to_string(),
                id: other.id,
            });
        }
        self.conn
            .execute(
                "UPDATE containers SET name = ?2 WHERE id = ?1",
                params![id, name],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Every container, newest first.
    pub fn all(&self) -> Result<Vec<Row>, RecordError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM containers ORDER BY created DESC, id"),
            params![],
        )
    }

    /// The container with exactly this id.
    pub fn get(&self, id: &str) -> Result<Option<Row>, RecordError> {
        Ok(self
            .query(
                &format!("SELECT {COLUMNS} FROM containers WHERE id = ?1"),
                params![id],
            )?
            .pop())
    }

    fn by_name(&self, name: &str) -> Result<Option<Row>, RecordError> {
        Ok(self
            .query(
                &format!("SELECT {COLUMNS} FROM containers WHERE name = ?1"),
                params![name],
            )?
            .pop())
    }

    /// A container by what a user types, as Docker resolves it: the full id, then the name
    /// (with or without a leading `/`), then a unique id prefix.
    pub fn find(&self, what: &str) -> Result<Row, RecordError> {
        if let Some(r) = self.get(what)? {
            return Ok(r);
        }
        if let Some(r) = self.by_name(what.strip_prefix('/').unwrap_or(what))? {
            return Ok(r);
        }
        let hex = !what.is_empty() && what.bytes().all(|b| b.is_ascii_hexdigit());
        if hex {
            let mut found = self.query(
                &format!("SELECT {COLUMNS} FROM containers WHERE substr(id, 1, ?2) = ?1"),
                params![what.to_ascii_lowercase(), what.len() as i64],
            )?;
            match found.len() {
                1 => return Ok(found.remove(0)),
                0 => {}
                _ => return Err(RecordError::Ambiguous(what.to_string())),
            }
        }
        Err(RecordError::NoSuchContainer(what.to_string()))
    }

    /// Ids of the containers made from `image`.
    pub fn using_image(&self, image: &str) -> Result<Vec<String>, RecordError> {
        Ok(self
            .query(
                &format!("SELECT {COLUMNS} FROM containers WHERE image = ?1 ORDER BY id"),
                params![image],
            )?
            .into_iter()
            .map(|r| r.id)
            .collect())
    }

    fn query(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Row>, RecordError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err())?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    Row {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        image: r.get(2)?,
                        image_ref: r.get(3)?,
                        command: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
                        created: r.get(5)?,
                        state: State::Created,
                        pid: r.get(7)?,
                        monitor: (r.get(8)?, r.get::<_, i64>(9)? as u64),
                        exit_code: r.get(10)?,
                        started_at: r.get(11)?,
                        finished_at: r.get(12)?,
                        error: r.get(13)?,
                        auto_remove: r.get(14)?,
                        log_rotation: r.get(15)?,
                        tty: r.get(16)?,
                        restart: r.get(17)?,
                        restart_count: r.get(18)?,
                    },
                    r.get::<_, String>(6)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = vec![];
        for row in rows {
            let (mut row, state) = row.map_err(self.err())?;
            row.state = State::parse(&state)?;
            out.push(row);
        }
        Ok(out)
    }
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check_name(name: &str) -> Result<(), RecordError> {
    let b = name.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(RecordError::BadName(name.to_string()))
    }
}

const ADJECTIVES: [&str; 24] = [
    "agile", "bold", "brave", "calm", "clever", "crisp", "eager", "fair", "gentle", "happy",
    "keen", "kind", "lucid", "merry", "nimble", "proud", "quick", "quiet", "sharp", "steady",
    "swift", "tidy", "vivid", "witty",
];
const NOUNS: [&str; 24] = [
    "badger", "beaver", "crane", "dolphin", "falcon", "ferret", "gecko", "heron", "ibis", "jackal",
    "koala", "lemur", "lynx", "marten", "newt", "otter", "panda", "puffin", "raven", "stoat",
    "tapir", "vole", "walrus", "wombat",
];

/// A Docker-style generated name (`adjective_animal`) from the container id, with a suffix
/// from more of the id when taken.
pub fn generated_name(records: &Records, id: &str) -> Result<String, RecordError> {
    let byte = |i: usize| usize::from_str_radix(id.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0);
    let base = format!(
        "{}_{}",
        ADJECTIVES[byte(0) % ADJECTIVES.len()],
        NOUNS[byte(2) % NOUNS.len()]
    );
    if records.by_name(&base)?.is_none() {
        return Ok(base);
    }
    Ok(format!("{base}_{}", &id[..id.len().min(8)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str) -> Row {
        Row {
            id: id.into(),
            name: name.into(),
            image: "sha256:aa".into(),
            image_ref: "busybox".into(),
            command: vec!["sh".into()],
            created: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        }
    }

    #[test]
    fn insert_find_update_remove() {
        let d = tempfile::tempdir().unwrap();
        let r = Records::open(d.path()).unwrap();
        r.insert(&row("abc123", "web")).unwrap();
        r.insert(&row("abd456", "db")).unwrap();
        assert_eq!(r.find("web").unwrap().id, "abc123");
        assert_eq!(r.find("/db").unwrap().id, "abd456");
        assert_eq!(r.find("abc").unwrap().name, "web");
        assert!(matches!(r.find("ab"), Err(RecordError::Ambiguous(_))));
        assert!(matches!(
            r.find("zzz"),
            Err(RecordError::NoSuchContainer(_))
        ));
        let e = r.insert(&row("ffff", "web")).unwrap_err();
        assert!(e.to_string().contains("\"/web\" is already in use"), "{e}");
        r.set_running("abc123", 42, (0, 0), "t1", 2).unwrap();
        let got = r.find("web").unwrap();
        assert_eq!((got.state, got.pid), (State::Running, 42));
        // No monitor: shown as exited, with the reason.
        assert_eq!(got.effective().0, State::Exited);
        r.set_exited("abc123", 3, "t2", "").unwrap();
        let got = r.find("web").unwrap();
        assert_eq!((got.state, got.exit_code, got.pid), (State::Exited, 3, 0));
        r.rename("abc123", "web2").unwrap();
        assert!(r.rename("abc123", "db").is_err());
        assert_eq!(r.using_image("sha256:aa").unwrap().len(), 2);
        r.remove("abc123").unwrap();
        assert_eq!(r.all().unwrap().len(), 1);
    }

    /// A database of an older moat (no restart columns, the old index) is brought up to date
    /// on open, also through a connection handed on by the image store; a current one is
    /// left as it is.
    #[test]
    fn an_old_table_is_upgraded_whichever_way_it_is_opened() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("image/moat.db");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let old = |sql_extra: &str| {
            let c = moat_image::db::connect(&path).unwrap();
            c.execute_batch(&format!(
                "DROP TABLE IF EXISTS containers; CREATE TABLE containers (id TEXT PRIMARY KEY, \
                 name TEXT NOT NULL UNIQUE, image TEXT NOT NULL, image_ref TEXT NOT NULL, \
                 command TEXT NOT NULL, created TEXT NOT NULL, state TEXT NOT NULL, \
                 pid INTEGER NOT NULL DEFAULT 0, monitor_pid INTEGER NOT NULL DEFAULT 0, \
                 monitor_start INTEGER NOT NULL DEFAULT 0, exit_code INTEGER NOT NULL DEFAULT 0, \
                 started_at TEXT NOT NULL DEFAULT '', finished_at TEXT NOT NULL DEFAULT '', \
                 error TEXT NOT NULL DEFAULT '', auto_remove INTEGER NOT NULL DEFAULT 0, \
                 log_rotation TEXT NOT NULL DEFAULT ''); {sql_extra}"
            ))
            .unwrap();
        };
        let index = |c: &Connection| -> i64 {
            c.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'containers_by_image'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        old("CREATE INDEX containers_by_image ON containers(image);");
        let r = Records::open(d.path()).unwrap();
        // The insert names every column, the new ones included.
        r.insert(&row("abc123", "web")).unwrap();
        assert_eq!(r.find("web").unwrap().restart_count, 0);
        assert_eq!(index(&r.conn), 0);
        drop(r);
        old("");
        let conn = moat_image::db::connect(&path).unwrap();
        let r = Records::with_connection(conn, path.clone()).unwrap();
        r.insert(&row("abc123", "web")).unwrap();
        r.set_running("abc123", 42, (0, 0), "t1", 2).unwrap();
        assert_eq!(r.find("web").unwrap().restart_count, 2);
        // Current: the fast path keeps the rows.
        drop(r);
        let r = Records::open(d.path()).unwrap();
        assert_eq!(r.find("web").unwrap().pid, 42);
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(check_name("web-1.a_b").is_ok());
        for bad in ["", "a", "-x", "a b", "a/b", "_x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let d = tempfile::tempdir().unwrap();
        let r = Records::open(d.path()).unwrap();
        let id = "0a1b2c3d4e5f";
        let n = generated_name(&r, id).unwrap();
        check_name(&n).unwrap();
        r.insert(&row(id, &n)).unwrap();
        let n2 = generated_name(&r, id).unwrap();
        assert_ne!(n, n2);
        check_name(&n2).unwrap();
    }
}
