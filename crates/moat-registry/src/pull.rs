//! `moat pull`: a manifest (through an index when the image is multi-platform), its config,
//! and only the layers the store lacks. Layers download in parallel (three at a time, as
//! Docker) and are stored, decompressed, hashed and unpacked *while* they stream in: one pass,
//! no second read of a downloaded file. Every blob is verified against its digest and every
//! layer against the config's diff id before anything is recorded; a failure leaves no partial
//! blob or snapshot visible, and layers already recorded are reused by the next pull.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use moat_image::layer_stream::Unpacked;
use moat_image::{Digest, ImageStore, Reference, StoreError};

use crate::client::{Client, ClientError};
use crate::manifest::{self, Descriptor, Fetched, ManifestError, Platform};
use crate::progress::{Progress, Status};

/// Layers downloaded at once.
pub const CONCURRENT_DOWNLOADS: usize = 3;
/// Attempts per layer when the connection breaks mid-download.
const LAYER_ATTEMPTS: u32 = 3;
/// Largest config accepted.
const MAX_CONFIG: u64 = 32 * 1024 * 1024;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// the registry failed
    #[error(transparent)]
    Client(#[from] ClientError),
    /// the manifest is unusable
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// the local store failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// the registry sent a manifest other than the one asked for
    #[error("manifest {reference}: content has digest {actual}, not the {expected} asked for")]
    ManifestDigest {
        /// The reference.
        reference: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what came.
        actual: Digest,
    },
    /// the config's content does not match its digest or is not an image config
    #[error("image config {digest}: {message}")]
    Config {
        /// The config's digest.
        digest: Digest,
        /// What is wrong.
        message: String,
    },
    /// a layer's content is not what the config says
    #[error("layer {blob}: uncompressed content has digest {actual}, but the image config says {expected}")]
    DiffId {
        /// The layer blob.
        blob: Digest,
        /// The config's diff id.
        expected: Digest,
        /// The computed one.
        actual: Digest,
    },
    /// reading a layer from the registry failed (after retries)
    #[error("layer {blob}: download failed: {source}")]
    Download {
        /// The layer blob.
        blob: Digest,
        /// The error.
        source: io::Error,
    },
    /// the registry has no such manifest
    #[error("manifest for {reference} not found: {message}")]
    NotFound {
        /// The reference.
        reference: String,
        /// The registry's message.
        message: String,
    },
    /// a layer worker stopped without a result (it panicked)
    #[error("layer {0}: worker stopped without a result")]
    Worker(Digest),
}

impl From<moat_image::db::DbError> for PullError {
    fn from(e: moat_image::db::DbError) -> Self {
        PullError::Store(e.into())
    }
}

impl From<moat_image::blobs::BlobError> for PullError {
    fn from(e: moat_image::blobs::BlobError) -> Self {
        PullError::Store(e.into())
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image id (config digest).
    pub id: Digest,
    /// The digest of the manifest (or index) the reference resolved to.
    pub digest: Digest,
    /// False when the image was present already.
    pub downloaded: bool,
}

/// The 12-digit id Docker shows for a layer.
pub fn short(d: &Digest) -> &str {
    d.short()
}

/// Pulls `r` from `client`'s registry into `store`.
pub fn pull(
    store: &mut ImageStore,
    client: &Client,
    r: &Reference,
    platform: &Platform,
    progress: &dyn Progress,
) -> Result<Pulled, PullError> {
    let repo = r.path();
    let shown = r.to_string();
    progress.message(&format!(
        "{}: Pulling from {repo}",
        r.tag()
            .map(String::from)
            .unwrap_or_else(|| r.manifest_ref())
    ));
    let (bytes, digest) = fetch_manifest(client, repo, &r.manifest_ref(), r.digest(), &shown)?;
    let (manifest_bytes, m) = match manifest::parse(&shown, &bytes, "")? {
        Fetched::Manifest(m) => (bytes, m),
        Fetched::Index(entries) => {
            let entry = manifest::select(&shown, &entries, platform)?;
            let (b, _) = fetch_manifest(
                client,
                repo,
                entry.digest.as_str(),
                Some(&entry.digest),
                &shown,
            )?;
            match manifest::parse(&shown, &b, &entry.media_type)? {
                Fetched::Manifest(m) => (b, m),
                Fetched::Index(_) => {
                    return Err(ManifestError::Unsupported {
                        reference: shown,
                        media_type: "an index inside an index".to_string(),
                    }
                    .into())
                }
            }
        }
    };
    let mut tags = vec![r.with_digest(&digest)];
    if let Some(t) = r.tag() {
        tags.push(r.with_tag(t).map_err(StoreError::from)?);
    }
    let id = m.config.digest.clone();
    let present = store.db().image(&id)?.is_some()
        && store
            .base_layers(&id)
            .is_ok_and(|l| l.len() == m.layers.len());
    if present {
        store.record_pulled(
            &store.blobs().read(&id)?,
            &manifest_bytes,
            &store.base_layers(&id)?,
            &tags,
        )?;
        progress.message(&format!("Digest: {digest}"));
        progress.message(&format!("Status: Image is up to date for {shown}"));
        return Ok(Pulled {
            id,
            digest,
            downloaded: false,
        });
    }
    let (config_bytes, config) = fetch_config(store, client, repo, &m.config)?;
    if config.len() != m.layers.len() {
        return Err(PullError::Config {
            digest: id,
            message: format!(
                "lists {} layers, the manifest {}",
                config.len(),
                m.layers.len()
            ),
        });
    }
    // Which layers are missing (a layer is known by its diff id, whatever blob it came as).
    let mut wanted = vec![];
    for (desc, diff) in m.layers.iter().zip(&config) {
        if store.db().layer(diff)?.is_some() {
            progress.layer(short(&desc.digest), &Status::AlreadyExists);
        } else if !wanted
            .iter()
            .any(|(d, _): &(&Descriptor, &Digest)| d.digest == desc.digest)
        {
            progress.layer(short(&desc.digest), &Status::PullingFsLayer);
            wanted.push((desc, diff));
        }
    }
    let unpacked = download_all(store, client, repo, &wanted, progress)?;
    for u in unpacked {
        store.record_unpacked(u)?;
    }
    for desc in m.layers.iter().chain([&m.config]) {
        store
            .db()
            .add_blob_source(&desc.digest, client.domain(), repo)?;
    }
    let layers = config
        .iter()
        .map(|d| {
            store
                .db()
                .layer(d)?
                .ok_or_else(|| StoreError::NoSuchImage(format!("{shown} (layer {d} missing)")))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    store.record_pulled(&config_bytes, &manifest_bytes, &layers, &tags)?;
    progress.message(&format!("Digest: {digest}"));
    progress.message(&format!("Status: Downloaded newer image for {shown}"));
    Ok(Pulled {
        id,
        digest,
        downloaded: true,
    })
}

/// Fetches a manifest and checks it against `expected` (pull by digest, index entries).
fn fetch_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    expected: Option<&Digest>,
    shown: &str,
) -> Result<(Vec<u8>, Digest), PullError> {
    let (bytes, _) = client
        .get_manifest(repo, reference, manifest::ACCEPT, manifest::MAX_MANIFEST)
        .map_err(|e| match e {
            ClientError::Status {
                status: 404,
                message,
                ..
            } => PullError::NotFound {
                reference: shown.to_string(),
                message,
            },
            e => PullError::Client(e),
        })?;
    let actual = Digest::of(&bytes);
    if let Some(e) = expected {
        if *e != actual {
            return Err(PullError::ManifestDigest {
                reference: shown.to_string(),
                expected: e.clone(),
                actual,
            });
        }
    }
    Ok((bytes, actual))
}

/// Fetches the config (verified); returns its bytes and diff ids.
fn fetch_config(
    store: &ImageStore,
    client: &Client,
    repo: &str,
    desc: &Descriptor,
) -> Result<(Vec<u8>, Vec<Digest>), PullError> {
    let cerr = |message: String| PullError::Config {
        digest: desc.digest.clone(),
        message,
    };
    let bytes = if store.blobs().contains(&desc.digest) {
        store.blobs().read(&desc.digest)?
    } else {
        let mut b = vec![];
        client
            .get_blob(repo, &desc.digest)?
            .take(MAX_CONFIG)
            .read_to_end(&mut b)
            .map_err(|e| cerr(format!("download failed: {e}")))?;
        if Digest::of(&b) != desc.digest {
            return Err(cerr(format!("content has digest {}", Digest::of(&b))));
        }
        // Stored only with the image (record_pulled): a failed pull leaves no orphan config.
        b
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| cerr(format!("not JSON: {e}")))?;
    let ids = v["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| cerr("has no rootfs.diff_ids".to_string()))?;
    let ids = ids
        .iter()
        .map(|d| {
            d.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| cerr(format!("diff id {d} is not a sha256 digest")))
        })
        .collect::<Result<_, _>>()?;
    Ok((bytes, ids))
}

/// Downloads and unpacks `wanted` layers, [`CONCURRENT_DOWNLOADS`] at a time. On any error
/// the others stop at their next read and every temporary goes with its `Unpacked`.
fn download_all(
    store: &ImageStore,
    client: &Client,
    repo: &str,
    wanted: &[(&Descriptor, &Digest)],
    progress: &dyn Progress,
) -> Result<Vec<Unpacked>, PullError> {
    let unpacker = store.unpacker();
    // Blobs this pull writes go again if it fails (their layers are not recorded, so they
    // would be orphans); blobs that were here before stay.
    let preexisting: Vec<bool> = wanted
        .iter()
        .map(|(d, _)| store.blobs().contains(&d.digest))
        .collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Mutex<Vec<Option<Result<Unpacked, PullError>>>> =
        Mutex::new((0..wanted.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..CONCURRENT_DOWNLOADS.min(wanted.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((desc, diff)) = wanted.get(i) else {
                    break;
                };
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let r = download_layer(&unpacker, client, repo, desc, diff, &failed, progress);
                if r.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                if let Ok(mut v) = slots.lock() {
                    v[i] = Some(r);
                }
            });
        }
    });
    let slots = slots.into_inner().unwrap_or_default();
    let mut out = vec![];
    let mut first_err = None;
    for (i, slot) in slots.into_iter().enumerate() {
        match slot {
            Some(Ok(u)) => out.push(u),
            Some(Err(e)) if first_err.is_none() => first_err = Some(e),
            Some(Err(_)) => {}
            None if first_err.is_none() => {
                first_err = Some(PullError::Worker(wanted[i].0.digest.clone()))
            }
            None => {}
        }
    }
    match first_err {
        Some(e) => {
            for u in out {
                let i = wanted.iter().position(|(d, _)| d.digest == u.blob().digest);
                if i.is_some_and(|i| !preexisting[i]) {
                    if let Err(rm) = store.blobs().remove(&u.blob().digest) {
                        log::warn!("removing {} after a failed pull: {rm}", u.blob().digest);
                    }
                }
            }
            Err(e)
        }
        None => Ok(out),
    }
}

/// A registry stream that remembers whether it failed (a failure there is worth a retry; one
/// in the store is not), reports progress, and stops when another layer failed.
struct Watched<'a, R> {
    inner: R,
    broke: &'a AtomicBool,
    abort: &'a AtomicBool,
    id: &'a str,
    total: u64,
    current: u64,
    reported: u64,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.abort.load(Ordering::Relaxed) {
            return Err(io::Error::other("another layer failed"));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                self.current += n as u64;
                if self.current - self.reported >= 512 * 1024
                    || (n == 0 && self.current > self.reported)
                {
                    self.reported = self.current;
                    self.progress.layer(
                        self.id,
                        &Status::Downloading {
                            current: self.current,
                            total: self.total,
                        },
                    );
                }
                Ok(n)
            }
            Err(e) => {
                self.broke.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

fn download_layer(
    unpacker: &moat_image::layer_stream::Unpacker<'_>,
    client: &Client,
    repo: &str,
    desc: &Descriptor,
    diff: &Digest,
    abort: &AtomicBool,
    progress: &dyn Progress,
) -> Result<Unpacked, PullError> {
    let id = short(&desc.digest);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let broke = AtomicBool::new(false);
        let result = client
            .get_blob(repo, &desc.digest)
            .map_err(PullError::from)
            .and_then(|body| {
                let watched = Watched {
                    inner: body,
                    broke: &broke,
                    abort,
                    id,
                    total: desc.size,
                    current: 0,
                    reported: 0,
                    progress,
                };
                Ok(unpacker.stream(watched, Some(&desc.digest))?)
            });
        match result {
            Ok(u) if u.diff_id() != diff => {
                return Err(PullError::DiffId {
                    blob: desc.digest.clone(),
                    expected: diff.clone(),
                    actual: u.diff_id().clone(),
                })
            }
            Ok(u) => {
                progress.layer(id, &Status::PullComplete);
                return Ok(u);
            }
            Err(e) if broke.load(Ordering::Relaxed) && !abort.load(Ordering::Relaxed) => {
                if attempt >= LAYER_ATTEMPTS {
                    return Err(PullError::Download {
                        blob: desc.digest.clone(),
                        source: io::Error::other(e.to_string()),
                    });
                }
                log::debug!("layer {}: {e}; downloading again", desc.digest);
                std::thread::sleep(std::time::Duration::from_millis(300 << attempt));
            }
            Err(e) => return Err(e),
        }
    }
}
