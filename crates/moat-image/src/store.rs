//! The image store: blobs, layer snapshots and metadata under one root (default
//! `/var/lib/moat/image`):
//!
//! ```text
//! <root>/moat.db                 SQLite: layers, images, image_layers, tags
//! <root>/blobs/sha256/<hex>      content-addressed blobs (layers, configs, manifests)
//! <root>/blobs/tmp/              blobs being written
//! <root>/snapshots/<diff hex>/   one unpacked tree per distinct layer (overlayfs whiteouts)
//! <root>/snapshots/tmp-*/        layers being unpacked
//! <root>/l/<26 chars>            short symlinks to snapshots (overlay mount data fits a page)
//! ```
//!
//! A layer is unpacked into a temporary directory and renamed into place only when complete,
//! then recorded; a crash leaves temporaries (and at worst an unrecorded snapshot), which
//! `system check --repair` removes.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::blobs::{BlobError, BlobStore};
use crate::db::{Db, DbError, ImageRow, LayerRow};
use crate::digest::Digest;
use crate::layer_stream::{Unpacked, Unpacker};
use crate::mount::Lower;
use crate::reference::{Reference, ReferenceError};
use crate::unpack::UnpackError;

/// OCI media types used by the store.
pub mod media {
    /// Uncompressed layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// gzip layer.
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// zstd layer.
    pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
}

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// blob store failure
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// metadata failure
    #[error(transparent)]
    Db(#[from] DbError),
    /// unpack failure
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// bad reference
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// file operation failed
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// no such image
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// ambiguous id prefix
    #[error("image id prefix {0:?} matches more than one image")]
    Ambiguous(String),
    /// image has several tags
    #[error("conflict: unable to delete {id} (must be forced) - image is referenced in multiple repositories")]
    MultipleTags {
        /// The image's short id.
        id: String,
    },
    /// a config or manifest blob is not valid JSON
    #[error("image {id}: {what} is not valid JSON: {source}")]
    BadJson {
        /// The image.
        id: Digest,
        /// Which document.
        what: &'static str,
        /// The parser's error.
        source: serde_json::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What `docker import --change` can set, and the history comment.
#[derive(Debug, Clone, Default)]
pub struct ImportConfig {
    /// `CMD`.
    pub cmd: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    pub entrypoint: Option<Vec<String>>,
    /// `ENV` entries.
    pub env: Vec<String>,
    /// `WORKDIR`.
    pub working_dir: Option<String>,
    /// `USER`.
    pub user: Option<String>,
    /// `LABEL` entries.
    pub labels: Vec<(String, String)>,
    /// `EXPOSE`d ports, as `PORT/PROTO`.
    pub exposed_ports: Vec<String>,
    /// `HEALTHCHECK`, in Docker's JSON shape (`Test`, durations in nanoseconds, `Retries`).
    pub healthcheck: Option<Value>,
    /// History comment (`-m`).
    pub message: Option<String>,
}

/// The stored blob a layer is distributed as (what `save` and `push` send).
#[derive(Debug, Clone)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
}

/// A summary row for `moat images`.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// The image row.
    pub row: ImageRow,
    /// Total uncompressed size of its layers.
    pub size: u64,
}

/// The store.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    db: Db,
    /// flock on `<root>/store.lock`: shared for normal use, exclusive for `system check
    /// --repair`, so a repair never removes the temporaries of a write in progress (a killed
    /// process's lock goes with it).
    _lock: fs::File,
}

/// A layer to add: a file (a blob to store, checked against the digest when given), or a blob
/// already stored (a `load` streams an archive's layers straight into the blob store).
#[derive(Debug, Clone)]
pub enum LayerInput {
    /// A layer file.
    File(PathBuf, Option<Digest>),
    /// A stored blob.
    Blob(Digest),
}

impl ImageStore {
    /// Opens (creating) the store at `root`, shared with other `moat` processes.
    pub fn open(root: &Path) -> Result<ImageStore, StoreError> {
        Self::open_locked(root, rustix::fs::FlockOperation::LockShared)
    }

    /// Opens the store with no other user (waits for them): for repairs.
    pub fn open_exclusive(root: &Path) -> Result<ImageStore, StoreError> {
        Self::open_locked(root, rustix::fs::FlockOperation::LockExclusive)
    }

    fn open_locked(root: &Path, op: rustix::fs::FlockOperation) -> Result<ImageStore, StoreError> {
        for d in [root.to_path_buf(), root.join("snapshots"), root.join("l")] {
            fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        }
        let lock_path = root.join("store.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        rustix::fs::flock(&lock, op).map_err(|e| io_err("lock", &lock_path)(e.into()))?;
        log::debug!("store: locked");
        let blobs = BlobStore::open(root)?;
        log::debug!("store: blobs open");
        let db = Db::open(root)?;
        log::debug!("store: database open");
        Ok(ImageStore {
            root: root.to_path_buf(),
            blobs,
            db,
            _lock: lock,
        })
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The metadata database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Closes the store but for its database connection (see [`Db::into_connection`]).
    pub fn into_db(self) -> Db {
        self.db
    }

    /// The layer unpacker of this store (usable from worker threads).
    pub fn unpacker(&self) -> Unpacker<'_> {
        Unpacker {
            blobs: &self.blobs,
            snaps: self.root.join("snapshots"),
        }
    }

    /// Stores layer files (as distributed) as blobs and unpacks them, one per core at a time:
    /// the expensive part of loading a multi-layer image. `expected` digests are verified.
    /// Recording stays serial and in order (one database connection); on any error the
    /// unpacked temporaries are removed.
    pub fn add_layer_files(&self, files: &[LayerInput]) -> Result<Vec<LayerRow>, StoreError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        let unpacker = self.unpacker();
        let next = AtomicUsize::new(0);
        let slots: Mutex<Vec<Option<Result<Unpacked, StoreError>>>> =
            Mutex::new((0..files.len()).map(|_| None).collect());
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(files.len());
        // Only the unpacker crosses into the workers (the database connection cannot).
        let unpacker = &unpacker;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(input) = files.get(i) else {
                        break;
                    };
                    let r = match input {
                        LayerInput::File(path, expected) => unpacker.file(path, expected.as_ref()),
                        LayerInput::Blob(digest) => unpacker.blob(digest),
                    };
                    if let Ok(mut v) = slots.lock() {
                        v[i] = Some(r);
                    }
                });
            }
        });
        let slots = slots.into_inner().unwrap_or_default();
        let mut unpacked = vec![];
        for (i, slot) in slots.into_iter().enumerate() {
            match slot {
                Some(Ok(u)) => unpacked.push(u),
                Some(Err(e)) => return Err(e),
                None => {
                    let what = match &files[i] {
                        LayerInput::File(path, _) => path.clone(),
                        LayerInput::Blob(d) => PathBuf::from(d.as_str()),
                    };
                    return Err(io_err("unpack", &what)(io::Error::other(
                        "worker did not finish",
                    )));
                }
            }
        }
        unpacked
            .into_iter()
            .map(|u| self.record_unpacked(u))
            .collect()
    }

    /// Moves an unpacked snapshot into place and records its layer, unless the same diff is
    /// stored already (then the existing row wins, and a blob only this call stored goes).
    pub fn record_unpacked(&self, u: Unpacked) -> Result<LayerRow, StoreError> {
        let Unpacked {
            diff_id,
            size,
            mut tmp,
            blob,
        } = u;
        let BlobInfo {
            digest: blob,
            size: blob_size,
            media_type,
        } = blob;
        if let Some(existing) = self.db.layer(&diff_id)? {
            if existing.blob != blob && blob != diff_id {
                self.blobs.remove(&blob)?;
            }
            return Ok(existing);
        }
        let snapshot = diff_id.hex().to_string();
        let dest = self.root.join("snapshots").join(&snapshot);
        // A directory already there was left by a crash between rename and record: the
        // content is identical, so it is kept and the temporary goes.
        if !dest.exists() {
            let src = tmp.0.take().unwrap_or_default();
            fs::rename(&src, &dest).map_err(io_err("rename snapshot", &dest))?;
        }
        let link = short_link(&diff_id);
        let lpath = self.root.join("l").join(&link);
        let _ = fs::remove_file(&lpath);
        std::os::unix::fs::symlink(format!("../snapshots/{snapshot}"), &lpath)
            .map_err(io_err("link snapshot", &lpath))?;
        let row = LayerRow {
            diff_id,
            snapshot,
            link,
            size,
            blob,
            blob_size,
            media_type,
        };
        Ok(self.db.add_layer(&row)?)
    }
}

impl ImageStore {
    /// `moat import`: a root filesystem tarball (plain, gzip or zstd) becomes a one-layer image.
    /// The tarball is stored as given (compressed stays compressed) while it is decompressed,
    /// hashed and unpacked: one pass.
    pub fn import_tar(
        &mut self,
        src: impl Read,
        tag: Option<&Reference>,
        cfg: &ImportConfig,
    ) -> Result<Digest, StoreError> {
        let layer = self.add_tar_layer(src)?;
        self.commit_image(&[layer], tag, cfg, "moat import")
    }

    /// One layer from a tar stream (plain, gzip or zstd): stored as given as a blob while it is
    /// decompressed, hashed and unpacked (one pass), then recorded.
    pub fn add_tar_layer(&self, src: impl Read) -> Result<LayerRow, StoreError> {
        let u = self.unpacker().stream(src, None)?;
        self.record_unpacked(u)
    }

    /// The layer rows of image `id`, base first.
    pub fn base_layers(&self, id: &Digest) -> Result<Vec<LayerRow>, StoreError> {
        let row = self
            .db
            .image(id)?
            .ok_or_else(|| StoreError::NoSuchImage(id.to_string()))?;
        row.layers
            .iter()
            .map(|d| {
                self.db
                    .layer(d)?
                    .ok_or_else(|| StoreError::NoSuchImage(format!("{id} (layer {d} missing)")))
            })
            .collect()
    }

    /// `moat import DIR`: a directory becomes a one-layer image. The directory is archived by a
    /// thread into a pipe, and the archive is stored and unpacked as it streams: one pass.
    pub fn import_dir(
        &mut self,
        dir: &Path,
        tag: Option<&Reference>,
        cfg: &ImportConfig,
    ) -> Result<Digest, StoreError> {
        let (reader, writer) = io::pipe().map_err(io_err("create pipe for", dir))?;
        let src = dir.to_path_buf();
        let archiver = std::thread::spawn(move || -> io::Result<()> {
            let mut b = tar::Builder::new(writer);
            b.follow_symlinks(false);
            b.mode(tar::HeaderMode::Complete);
            b.append_dir_all(".", &src)?;
            b.into_inner()?;
            Ok(())
        });
        let result = self.import_tar(reader, tag, cfg);
        match archiver.join() {
            // The archiver's own error (an unreadable file) explains a truncated stream best; a
            // broken pipe only means the import stopped reading first (its error is the one).
            Ok(Err(e)) if e.kind() != io::ErrorKind::BrokenPipe || result.is_ok() => {
                Err(io_err("archive", dir)(e))
            }
            Err(_) => Err(io_err("archive", dir)(io::Error::other(
                "archiver panicked",
            ))),
            _ => result,
        }
    }

    /// Writes config and manifest for `layers` (base first) and records the image.
    pub fn commit_image(
        &mut self,
        layers: &[LayerRow],
        tag: Option<&Reference>,
        cfg: &ImportConfig,
        created_by: &str,
    ) -> Result<Digest, StoreError> {
        let created = now_rfc3339();
        let mut config = json!({});
        if let Some(c) = &cfg.cmd {
            config["Cmd"] = json!(c);
        }
        if let Some(e) = &cfg.entrypoint {
            config["Entrypoint"] = json!(e);
        }
        if !cfg.env.is_empty() {
            config["Env"] = json!(cfg.env);
        }
        if let Some(w) = &cfg.working_dir {
            config["WorkingDir"] = json!(w);
        }
        if let Some(u) = &cfg.user {
            config["User"] = json!(u);
        }
        if !cfg.labels.is_empty() {
            config["Labels"] = Value::Object(
                cfg.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect(),
            );
        }
        if let Some(h) = &cfg.healthcheck {
            config["Healthcheck"] = h.clone();
        }
        if !cfg.exposed_ports.is_empty() {
            config["ExposedPorts"] = Value::Object(
                cfg.exposed_ports
                    .iter()
                    .map(|p| (p.clone(), json!({})))
                    .collect(),
            );
        }
        let mut history = json!({"created": created, "created_by": created_by});
        if let Some(m) = &cfg.message {
            history["comment"] = json!(m);
        }
        let doc = json!({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>()},
            "history": [history],
        });
        let config_bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let tags: Vec<Reference> = tag.into_iter().cloned().collect();
        self.record_image(&config_bytes, layers, &tags)
    }

    /// Records an image whose config document is given as is (load, pull): the manifest is
    /// written for the stored layer blobs; tags are applied. Returns the image id.
    pub fn record_image(
        &mut self,
        config_bytes: &[u8],
        layers: &[LayerRow],
        tags: &[Reference],
    ) -> Result<Digest, StoreError> {
        let id = Digest::of(config_bytes);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::MANIFEST,
            "config": {"mediaType": media::CONFIG, "digest": id.as_str(), "size": config_bytes.len()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.blob.as_str(), "size": l.blob_size
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        self.record_pulled(config_bytes, &manifest_bytes, layers, tags)
    }

    /// Records an image with its manifest as distributed (pull: the registry's bytes are kept,
    /// so the image's manifest digest stays the registry's). Returns the image id.
    pub fn record_pulled(
        &mut self,
        config_bytes: &[u8],
        manifest_bytes: &[u8],
        layers: &[LayerRow],
        tags: &[Reference],
    ) -> Result<Digest, StoreError> {
        let id = self.blobs.put_bytes(config_bytes)?;
        let created = serde_json::from_slice::<Value>(config_bytes)
            .ok()
            .and_then(|c| c["created"].as_str().map(String::from))
            .unwrap_or_else(now_rfc3339);
        let manifest_digest = self.blobs.put_bytes(manifest_bytes)?;
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        self.db
            .add_image(&id, &manifest_digest, &created, &diff_ids, None)?;
        for t in tags {
            self.db.set_tag(&t.to_string(), &id)?;
        }
        Ok(id)
    }

    /// Resolves a name (`repo[:tag]`), a full id (`sha256:...`) or an id prefix to an image id.
    pub fn resolve(&self, name: &str) -> Result<Digest, StoreError> {
        if let Ok(d) = name.parse::<Digest>() {
            if self.db.image(&d)?.is_some() {
                return Ok(d);
            }
        }
        if let Ok(r) = name.parse::<Reference>() {
            if let Some(id) = self.db.tag(&r.to_string())? {
                return Ok(id);
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 3 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let ids = self.db.ids_with_prefix(&hex.to_ascii_lowercase())?;
            match ids.len() {
                1 => return Ok(ids[0].clone()),
                0 => {}
                _ => return Err(StoreError::Ambiguous(name.to_string())),
            }
        }
        Err(StoreError::NoSuchImage(name.to_string()))
    }

    /// All images with their sizes, newest first.
    pub fn images(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let mut out = vec![];
        for row in self.db.images()? {
            let mut size = 0;
            for l in &row.layers {
                size += self.db.layer(l)?.map(|l| l.size).unwrap_or(0);
            }
            out.push(ImageSummary { row, size });
        }
        Ok(out)
    }

    /// The image's row, config and manifest documents.
    pub fn inspect(&self, id: &Digest) -> Result<(ImageRow, Value, Value), StoreError> {
        let row = self
            .db
            .image(id)?
            .ok_or_else(|| StoreError::NoSuchImage(id.to_string()))?;
        let parse = |d: &Digest, what| -> Result<Value, StoreError> {
            serde_json::from_slice(&self.blobs.read(d)?).map_err(|source| StoreError::BadJson {
                id: id.clone(),
                what,
                source,
            })
        };
        let config = parse(id, "config")?;
        let manifest = parse(&row.manifest, "manifest")?;
        Ok((row, config, manifest))
    }

    /// `moat tag SOURCE TARGET`.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<(), StoreError> {
        let id = self.resolve(source)?;
        Ok(self.db.set_tag(&target.to_string(), &id)?)
    }

    /// `moat rmi`: a tag name untags (and deletes the image when it was the last tag); an id
    /// deletes the image, refusing one with several tags unless `force`. Layers are removed only
    /// when no image uses them. Returns Docker's lines (`Untagged: ...`, `Deleted: ...`).
    pub fn remove(&mut self, name: &str, force: bool) -> Result<Vec<String>, StoreError> {
        let id = self.resolve(name)?;
        let row = self
            .db
            .image(&id)?
            .ok_or_else(|| StoreError::NoSuchImage(name.to_string()))?;
        let mut out = vec![];
        let by_tag = name
            .parse::<Reference>()
            .ok()
            .map(|r| r.to_string())
            .filter(|t| row.tags.contains(t));
        // `name@digest` entries (repo digests) are not tags of their own: removing the last tag
        // removes the image, as Docker does.
        let tagged = row.tags.iter().filter(|t| !t.contains('@')).count();
        if let Some(t) = by_tag {
            if tagged > 1 && !force {
                self.db.remove_tag(&t)?;
                return Ok(vec![format!("Untagged: {t}")]);
            }
        } else if tagged > 1 && !force {
            return Err(StoreError::MultipleTags {
                id: id.short().to_string(),
            });
        }
        for t in &row.tags {
            out.push(format!("Untagged: {t}"));
        }
        for layer in self.db.remove_image(&id)? {
            self.remove_layer_files(&layer)?;
            self.db.remove_layer(&layer.diff_id)?;
        }
        self.blobs.remove(&row.manifest)?;
        self.blobs.remove(&id)?;
        out.push(format!("Deleted: {id}"));
        Ok(out)
    }

    /// Removes a layer that no image uses (files first, then the row).
    pub fn remove_unused_layer(&self, diff_id: &Digest) -> Result<(), StoreError> {
        if self.db.layer_users(diff_id)? > 0 {
            return Ok(());
        }
        if let Some(l) = self.db.layer(diff_id)? {
            self.remove_layer_files(&l)?;
            self.db.remove_layer(diff_id)?;
        }
        Ok(())
    }

    fn remove_layer_files(&self, l: &LayerRow) -> Result<(), StoreError> {
        let link = self.root.join("l").join(&l.link);
        let _ = fs::remove_file(&link);
        let dir = self.root.join("snapshots").join(&l.snapshot);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &dir)(e)),
            _ => {}
        }
        self.blobs.remove(&l.blob)?;
        Ok(())
    }

    /// The image's layers as overlay lower layers, top first.
    pub fn lowers(&self, id: &Digest) -> Result<Vec<Lower>, StoreError> {
        Ok(self
            .base_layers(id)?
            .into_iter()
            .rev()
            .map(|l| Lower {
                dir: self.root.join("snapshots").join(&l.snapshot),
                link: l.link,
            })
            .collect())
    }
}

/// A 26-character link name derived from the diff id (uppercase base32 of its first bytes),
/// like Docker's `l/` names: deterministic, so a re-created link gets the same name.
fn short_link(d: &Digest) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bytes = hex::decode(d.hex()).unwrap_or_default();
    let mut out = String::with_capacity(26);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 && out.len() < 26 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
        if out.len() == 26 {
            break;
        }
    }
    out
}

/// Now as RFC 3339 UTC (seconds precision).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
