//! `moat save` / `moat load`: image archives.
//!
//! Load reads a docker-archive (`docker save`: `manifest.json` naming a config and layer files),
//! an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`, as skopeo and umoci write
//! it), either as a directory or as a tar. Every blob named by digest is verified, and every layer's
//! diff id is checked against the image config. Save writes one tar that is both: an OCI layout
//! plus docker's `manifest.json` pointing into `blobs/` (the format of Docker 25+), so
//! `docker load`, `skopeo` (docker-archive: and oci-archive:) and `moat load` all read it.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::{media, ImageStore, LayerInput, StoreError};
use std::collections::HashMap;

/// Errors of save and load.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// store failure
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// the input is neither format
    #[error("{0}: not a docker-archive (manifest.json) nor an OCI image layout (index.json)")]
    UnknownFormat(PathBuf),
    /// a document is malformed
    #[error("{path}: {reason}")]
    Malformed {
        /// The document.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// the archive's layers do not match its config
    #[error("image {config}: layer {index} has diff id {actual}, but the config says {expected}")]
    DiffIdMismatch {
        /// Config digest.
        config: Digest,
        /// Layer index.
        index: usize,
        /// What the config says.
        expected: String,
        /// What the layer is.
        actual: Digest,
    },
    /// no image in the index fits this machine
    #[error("{0}: no linux/amd64 image in the index")]
    NoPlatform(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn malformed(path: impl Into<String>, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Malformed {
        path: path.into(),
        reason: reason.into(),
    }
}

/// What was loaded: (image id, tags given to it).
pub type Loaded = Vec<(Digest, Vec<String>)>;

/// Loads a tar (path or stdin when `src` is None) or an OCI layout directory.
pub fn load(store: &mut ImageStore, src: Option<&Path>) -> Result<Loaded, ArchiveError> {
    if let Some(dir) = src.filter(|p| p.is_dir()) {
        let src = Source {
            dir: dir.to_path_buf(),
            stored: HashMap::new(),
        };
        return load_dir(store, &src);
    }
    let reader: Box<dyn Read> = match src {
        Some(p) => Box::new(fs::File::open(p).map_err(io_err("open", p))?),
        None => Box::new(io::stdin().lock()),
    };
    load_tar(store, reader)
}

/// Loads a docker-archive or OCI layout tar read from `reader` (an API request's body) in one
/// pass: every large regular file (a layer, in practice) goes straight into the blob store as it
/// streams by, hashed on the way; the small ones (manifests, configs, index) are extracted into
/// a private directory of the store. The layers are then unpacked from their stored blobs: each
/// layer's bytes are written once and read once (an archive's manifest may come last, so a
/// layer cannot be known as one while it streams).
pub fn load_tar(store: &mut ImageStore, reader: impl Read) -> Result<Loaded, ArchiveError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Unique per call too: a server loads several archives at once in one process.
    let tmp = store.root().join(format!(
        "load-tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(tmp.clone());
    let mut src = Source {
        dir: tmp.clone(),
        stored: HashMap::new(),
    };
    // Blobs this load put in the store and no image uses in the end (a refused load's, other
    // platforms' layers of an index) are removed again. The store is locked meanwhile.
    let before: std::collections::HashSet<Digest> = store
        .blobs()
        .list()
        .map_err(StoreError::from)?
        .into_iter()
        .collect();
    let result = split(store, reader, &mut src).and_then(|()| load_dir(store, &src));
    for d in src.stored.values() {
        if !before.contains(d) && !store.db().blob_in_use(d).unwrap_or(true) {
            let _ = store.blobs().remove(d);
        }
    }
    result
}

/// Files of at most this size are extracted; larger ones are stored as blobs.
const SMALL: u64 = 64 * 1024;

/// At most this much of an archive is extracted (manifests, configs, indexes: kilobytes in
/// practice); more is refused rather than held in memory.
const SMALL_TOTAL: u64 = 64 << 20;

/// An archive being loaded: a directory with its small files, and its large files stored as
/// blobs, by their path in the archive.
struct Source {
    dir: PathBuf,
    stored: HashMap<PathBuf, Digest>,
}

impl Source {
    /// The blob stored for `rel`, if it was.
    fn blob(&self, rel: &str) -> Option<&Digest> {
        normal(Path::new(rel)).and_then(|r| self.stored.get(&r))
    }

    fn exists(&self, rel: &str) -> bool {
        self.blob(rel).is_some() || self.dir.join(rel).is_file()
    }

    /// `rel` in the directory, followed through its symbolic links only as far as they stay
    /// inside it (an archive's `config.json -> /root/.docker/config.json` must not be read).
    fn file(&self, rel: &str) -> Result<PathBuf, ArchiveError> {
        let path = normal(Path::new(rel))
            .map(|r| self.dir.join(r))
            .ok_or_else(|| malformed(rel, "path escapes the archive"))?;
        let root = fs::canonicalize(&self.dir).map_err(io_err("resolve", &self.dir))?;
        let real = fs::canonicalize(&path).map_err(io_err("resolve", &path))?;
        if !real.starts_with(&root) {
            return Err(malformed(rel, "path escapes the archive"));
        }
        Ok(real)
    }

    /// A file's bytes (a stored one read back from the store).
    fn read(&self, store: &ImageStore, rel: &str) -> Result<Vec<u8>, ArchiveError> {
        match self.blob(rel) {
            Some(d) => Ok(store.blobs().read(d).map_err(StoreError::from)?),
            None => {
                let path = self.file(rel)?;
                fs::read(&path).map_err(io_err("read", &path))
            }
        }
    }

    fn read_json(&self, store: &ImageStore, rel: &str) -> Result<Value, ArchiveError> {
        serde_json::from_slice(&self.read(store, rel)?).map_err(|e| malformed(rel, e.to_string()))
    }

    /// The blob `digest` of an OCI layout, its content checked.
    fn read_blob(
        &self,
        store: &ImageStore,
        digest: &str,
    ) -> Result<(Vec<u8>, Digest), ArchiveError> {
        let (rel, d) = blob_rel(digest)?;
        let data = self.read(store, &rel)?;
        if Digest::of(&data) != d {
            return Err(malformed(rel, format!("content does not match {d}")));
        }
        Ok((data, d))
    }

    /// A layer at `rel`, checked against `expected` when given.
    fn layer(&self, rel: &str, expected: Option<Digest>) -> Result<LayerInput, ArchiveError> {
        match self.blob(rel) {
            Some(d) => {
                if let Some(e) = expected.filter(|e| e != d) {
                    return Err(malformed(rel, format!("content does not match {e}")));
                }
                Ok(LayerInput::Blob(d.clone()))
            }
            None => Ok(LayerInput::File(self.file(rel)?, expected)),
        }
    }
}

/// Reads the archive once: small files into `src.dir` (safely: by the unpacker, which refuses
/// what would escape), large regular files into the blob store; symbolic and hard links to
/// stored files (docker's legacy layout links repeated layers) name the same blob. Only
/// directories, regular files and links are kept (an image archive holds nothing else).
fn split(store: &ImageStore, reader: impl Read, src: &mut Source) -> Result<(), ArchiveError> {
    let mut small = tar::Builder::new(Vec::new());
    let mut small_bytes = 0u64;
    let mut links = vec![];
    let mut archive = tar::Archive::new(io::BufReader::new(reader));
    let entries = archive
        .entries()
        .map_err(io_err("read archive", Path::new("-")))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("read archive", Path::new("-")))?;
        let path = entry
            .path()
            .map_err(io_err("read archive", Path::new("-")))?
            .into_owned();
        let rel = normal(&path)
            .ok_or_else(|| malformed(path.display().to_string(), "path escapes the archive"))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        let mut h = entry.header().clone();
        if kind.is_file() && entry.size() > SMALL {
            let (d, _) = store
                .blobs()
                .put(&mut entry, None)
                .map_err(StoreError::from)?;
            src.stored.insert(rel, d);
        } else if kind.is_symlink() || kind.is_hard_link() {
            let Ok(Some(target)) = entry.link_name() else {
                continue;
            };
            let target = target.into_owned();
            let base = if kind.is_symlink() {
                rel.parent().map(Path::to_path_buf).unwrap_or_default()
            } else {
                PathBuf::new()
            };
            let resolved = base.join(&target);
            let to_stored = normal(&resolved).is_some_and(|t| src.stored.contains_key(&t));
            links.push((rel.clone(), resolved));
            // A link to a stored file is only an alias (its target was never extracted).
            if !to_stored {
                h.set_size(0);
                small
                    .append_link(&mut h, &rel, &target)
                    .map_err(io_err("extract", &rel))?;
            }
        } else if kind.is_file() || kind.is_dir() {
            small_bytes += entry.size();
            if small_bytes > SMALL_TOTAL {
                return Err(malformed(
                    rel.display().to_string(),
                    format!("more than {} MiB of small files", SMALL_TOTAL >> 20),
                ));
            }
            small
                .append_data(&mut h, &rel, &mut entry)
                .map_err(io_err("extract", &rel))?;
        }
    }
    // A link to a stored file (or to a link to one) names its blob.
    for _ in 0..8 {
        let mut changed = false;
        for (link, target) in &links {
            if src.stored.contains_key(link) {
                continue;
            }
            if let Some(d) = normal(target).and_then(|t| src.stored.get(&t).cloned()) {
                src.stored.insert(link.clone(), d);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let bytes = small
        .into_inner()
        .map_err(io_err("extract", Path::new("-")))?;
    crate::unpack::unpack(io::Cursor::new(bytes), &src.dir).map_err(StoreError::from)?;
    Ok(())
}

/// `path` without `.` components, refused when it leaves the archive (`..` above its root, or
/// absolute).
fn normal(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

fn load_dir(store: &mut ImageStore, src: &Source) -> Result<Loaded, ArchiveError> {
    let before: std::collections::HashSet<Digest> = store
        .db()
        .layers()
        .map_err(StoreError::from)?
        .into_iter()
        .map(|l| l.diff_id)
        .collect();
    let result = if src.exists("manifest.json") {
        load_docker(store, src)
    } else if src.exists("index.json") {
        load_oci(store, src)
    } else {
        Err(ArchiveError::UnknownFormat(src.dir.clone()))
    };
    if result.is_err() {
        // Layers this load unpacked for an image it did not record: remove them again.
        for l in store.db().layers().map_err(StoreError::from)? {
            if !before.contains(&l.diff_id) {
                let _ = store.remove_unused_layer(&l.diff_id);
            }
        }
    }
    result
}

/// Records an image from its config bytes and layers, checking the diff ids.
fn finish_image(
    store: &mut ImageStore,
    config_bytes: &[u8],
    layers: &[crate::db::LayerRow],
    tags: &[String],
) -> Result<(Digest, Vec<String>), ArchiveError> {
    let config: Value = serde_json::from_slice(config_bytes)
        .map_err(|e| malformed("image config", e.to_string()))?;
    let id = Digest::of(config_bytes);
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != layers.len() {
        return Err(malformed(
            format!("image config {id}"),
            format!("{} diff ids for {} layers", diff_ids.len(), layers.len()),
        ));
    }
    for (i, (want, l)) in diff_ids.iter().zip(layers).enumerate() {
        if want != l.diff_id.as_str() {
            return Err(ArchiveError::DiffIdMismatch {
                config: id,
                index: i,
                expected: want.clone(),
                actual: l.diff_id.clone(),
            });
        }
    }
    let refs: Vec<Reference> = tags.iter().filter_map(|t| t.parse().ok()).collect();
    let id = store.record_image(config_bytes, layers, &refs)?;
    Ok((id, refs.iter().map(|r| r.to_string()).collect()))
}

fn load_docker(store: &mut ImageStore, src: &Source) -> Result<Loaded, ArchiveError> {
    let manifest = src.read_json(store, "manifest.json")?;
    let entries = manifest
        .as_array()
        .ok_or_else(|| malformed("manifest.json", "not a list"))?;
    let mut out = vec![];
    for e in entries {
        let config = e["Config"]
            .as_str()
            .ok_or_else(|| malformed("manifest.json", "entry without Config"))?;
        let config_bytes = src.read(store, config)?;
        let mut files = vec![];
        for l in e["Layers"].as_array().into_iter().flatten() {
            let rel = l
                .as_str()
                .ok_or_else(|| malformed("manifest.json", "layer path is not a string"))?;
            files.push(src.layer(rel, None)?);
        }
        let layers = store.add_layer_files(&files)?;
        let tags: Vec<String> = e["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect();
        out.push(finish_image(store, &config_bytes, &layers, &tags)?);
    }
    Ok(out)
}

/// Where an OCI layout keeps blob `digest`, relative to its root.
fn blob_rel(digest: &str) -> Result<(String, Digest), ArchiveError> {
    let d: Digest = digest
        .parse()
        .map_err(|e: crate::digest::DigestError| malformed("index", e.to_string()))?;
    Ok((format!("blobs/sha256/{}", d.hex()), d))
}

fn load_oci(store: &mut ImageStore, src: &Source) -> Result<Loaded, ArchiveError> {
    let index = src.read_json(store, "index.json")?;
    let mut out = vec![];
    for m in index["manifests"].as_array().into_iter().flatten() {
        let ann = &m["annotations"];
        let name = ann["io.containerd.image.name"]
            .as_str()
            .or_else(|| {
                ann["org.opencontainers.image.ref.name"]
                    .as_str()
                    .filter(|r| r.contains(':') || r.contains('/'))
            })
            .map(String::from);
        let digest = m["digest"]
            .as_str()
            .ok_or_else(|| malformed("index.json", "manifest without digest"))?;
        let (bytes, _) = src.read_blob(store, digest)?;
        let mut manifest: Value =
            serde_json::from_slice(&bytes).map_err(|e| malformed(digest, e.to_string()))?;
        // An index (multi-platform): pick linux/amd64.
        if manifest["manifests"].is_array() {
            let pick = manifest["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| {
                    x["platform"]["os"] == "linux" && x["platform"]["architecture"] == "amd64"
                })
                .and_then(|x| x["digest"].as_str().map(String::from))
                .ok_or_else(|| ArchiveError::NoPlatform(digest.to_string()))?;
            let (b, _) = src.read_blob(store, &pick)?;
            manifest =
                serde_json::from_slice(&b).map_err(|e| malformed(pick.clone(), e.to_string()))?;
        }
        let cfg_digest = manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| malformed(digest, "manifest without config"))?;
        let (config_bytes, _) = src.read_blob(store, cfg_digest)?;
        let mut files = vec![];
        for l in manifest["layers"].as_array().into_iter().flatten() {
            let ld = l["digest"]
                .as_str()
                .ok_or_else(|| malformed(digest, "layer without digest"))?;
            let (rel, d) = blob_rel(ld)?;
            files.push(src.layer(&rel, Some(d))?);
        }
        let layers = store.add_layer_files(&files)?;
        let tags: Vec<String> = name.into_iter().collect();
        out.push(finish_image(store, &config_bytes, &layers, &tags)?);
    }
    Ok(out)
}

/// Writes `images` (names or ids) as one archive to `out`.
pub fn save(store: &ImageStore, images: &[String], out: impl Write) -> Result<(), ArchiveError> {
    let mut tar = tar::Builder::new(out);
    let mut written = std::collections::HashSet::new();
    let add = |tar: &mut tar::Builder<_>,
               name: &str,
               data: &mut dyn Read,
               size: u64|
     -> Result<(), ArchiveError> {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, data)
            .map_err(io_err("write archive entry", Path::new(name)))
    };
    let mut index = vec![];
    let mut docker = vec![];
    for name in images {
        let id = store.resolve(name)?;
        let (row, _config, manifest) = store.inspect(&id)?;
        let mut blobs: Vec<Digest> = vec![row.manifest.clone(), id.clone()];
        for l in manifest["layers"].as_array().into_iter().flatten() {
            if let Some(d) = l["digest"].as_str().and_then(|d| d.parse().ok()) {
                blobs.push(d);
            }
        }
        for d in &blobs {
            if written.insert(d.clone()) {
                let size = store.blobs().size(d).map_err(StoreError::from)?;
                let mut f = store.blobs().open_blob(d).map_err(StoreError::from)?;
                add(&mut tar, &format!("blobs/sha256/{}", d.hex()), &mut f, size)?;
            }
        }
        let msize = store
            .blobs()
            .size(&row.manifest)
            .map_err(StoreError::from)?;
        let tags: Vec<String> = match name.parse::<Reference>() {
            Ok(r) if row.tags.contains(&r.to_string()) => vec![r.to_string()],
            _ => row.tags.clone(),
        };
        for t in tags.iter().map(Some).chain(tags.is_empty().then_some(None)) {
            let mut ann = serde_json::Map::new();
            if let Some(t) = t {
                ann.insert("io.containerd.image.name".into(), json!(t));
                ann.insert(
                    "org.opencontainers.image.ref.name".into(),
                    json!(t.rsplit_once(':').map(|x| x.1).unwrap_or("latest")),
                );
            }
            index.push(json!({"mediaType": media::MANIFEST, "digest": row.manifest.as_str(), "size": msize, "annotations": ann}));
        }
        docker.push(json!({
            "Config": format!("blobs/sha256/{}", id.hex()),
            "RepoTags": tags,
            "Layers": blobs[2..].iter().map(|d| format!("blobs/sha256/{}", d.hex())).collect::<Vec<_>>(),
        }));
    }
    for (name, doc) in [
        ("oci-layout", json!({"imageLayoutVersion": "1.0.0"})),
        (
            "index.json",
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index}),
        ),
        ("manifest.json", json!(docker)),
    ] {
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        add(&mut tar, name, &mut &bytes[..], bytes.len() as u64)?;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_err("finish archive", Path::new("-")))?;
    Ok(())
}
