//! `moat push`: sends only what the registry lacks. Each blob is checked with HEAD first; a
//! blob that another repository of the same registry has (known from earlier pulls and pushes)
//! is mounted from there instead of uploaded; the rest are uploaded, three at a time, each in
//! one request. The manifest goes last, as stored, so its digest is the image's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use moat_image::{Digest, ImageStore, Reference, StoreError};

use crate::client::{Client, ClientError};
use crate::manifest::{self, Descriptor, Fetched, ManifestError};
use crate::progress::{Progress, Status};

/// Blobs uploaded at once.
pub const CONCURRENT_UPLOADS: usize = 3;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// the registry failed
    #[error(transparent)]
    Client(#[from] ClientError),
    /// the stored manifest is unusable
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// the local store failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// a digest reference was given
    #[error("cannot push {0}: a digest reference names content, push a tag")]
    Digest(String),
    /// a blob of the manifest is neither here nor in the registry, nor its layer's content
    #[error("cannot push {reference}: blob {blob} is not in the local store, nor its layer under another blob; pull {reference} from its source again")]
    MissingBlob {
        /// The image.
        reference: String,
        /// The blob.
        blob: Digest,
    },
    /// an upload worker stopped without a result (it panicked)
    #[error("blob {0}: worker stopped without a result")]
    Worker(Digest),
}

impl From<moat_image::db::DbError> for PushError {
    fn from(e: moat_image::db::DbError) -> Self {
        PushError::Store(e.into())
    }
}

impl From<moat_image::blobs::BlobError> for PushError {
    fn from(e: moat_image::blobs::BlobError) -> Self {
        PushError::Store(e.into())
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size.
    pub size: usize,
}

/// Pushes the local image `r` (a tag) to `client`'s registry.
pub fn push(
    store: &mut ImageStore,
    client: &Client,
    r: &Reference,
    progress: &dyn Progress,
) -> Result<Pushed, PushError> {
    let shown = r.to_string();
    let Some(tag) = r.tag().filter(|_| r.digest().is_none()) else {
        return Err(PushError::Digest(shown));
    };
    let repo = r.path();
    let id = store.resolve(&shown)?;
    let row = store
        .db()
        .image(&id)?
        .ok_or_else(|| StoreError::NoSuchImage(shown.clone()))?;
    progress.message(&format!(
        "The push refers to repository [{}]",
        r.full_name()
    ));
    let stored = store.blobs().read(&row.manifest)?;
    let m = parse_manifest(&shown, &stored)?;
    let (manifest_bytes, m) =
        match substitute_missing(store, client, repo, &shown, &row, &stored, &m)? {
            Some(bytes) => {
                let m = parse_manifest(&shown, &bytes)?;
                (bytes, m)
            }
            None => (stored, m),
        };
    // Top layer first, as Docker lists them; the config last, without a line of its own.
    let mut blobs: Vec<(&Descriptor, bool)> = m.layers.iter().rev().map(|d| (d, true)).collect();
    blobs.push((&m.config, false));
    let mut sources: HashMap<Digest, Vec<String>> = HashMap::new();
    for (d, _) in &blobs {
        let from: Vec<String> = store
            .db()
            .blob_sources(&d.digest, client.domain())?
            .into_iter()
            .filter(|s| s != repo)
            .collect();
        sources.insert(d.digest.clone(), from);
    }
    for (d, shown_layer) in &blobs {
        if *shown_layer {
            progress.layer(d.digest.short(), &Status::Preparing);
        }
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<(), PushError>>>> =
        Mutex::new((0..blobs.len()).map(|_| None).collect());
    let blob_store = store.blobs();
    std::thread::scope(|s| {
        for _ in 0..CONCURRENT_UPLOADS.min(blobs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((desc, shown_layer)) = blobs.get(i) else {
                    break;
                };
                let from = sources.get(&desc.digest).map(Vec::as_slice).unwrap_or(&[]);
                let r = push_blob(
                    blob_store,
                    client,
                    repo,
                    &shown,
                    desc,
                    from,
                    *shown_layer,
                    progress,
                );
                if let Ok(mut v) = results.lock() {
                    v[i] = Some(r);
                }
            });
        }
    });
    for (i, r) in results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        match r {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(PushError::Worker(blobs[i].0.digest.clone())),
        }
    }
    let media_type = manifest::media_type_of(&manifest_bytes);
    let digest = client.put_manifest(repo, tag, &manifest_bytes, &media_type)?;
    for (d, _) in &blobs {
        store
            .db()
            .add_blob_source(&d.digest, client.domain(), repo)?;
    }
    store
        .db()
        .set_tag(&r.with_digest(&digest).to_string(), &id)?;
    progress.message(&format!(
        "{tag}: digest: {digest} size: {}",
        manifest_bytes.len()
    ));
    Ok(Pushed {
        digest,
        size: manifest_bytes.len(),
    })
}

fn parse_manifest(shown: &str, bytes: &[u8]) -> Result<manifest::Manifest, PushError> {
    match manifest::parse(shown, bytes, manifest::OCI_MANIFEST)? {
        Fetched::Manifest(m) => Ok(m),
        Fetched::Index(_) => Err(ManifestError::Unsupported {
            reference: shown.to_string(),
            media_type: "an index".to_string(),
        }
        .into()),
    }
}

/// The manifest to push when some of its layers' blobs are neither in the store nor in the
/// registry but their content is here under another blob: the same tar compressed otherwise,
/// because the layer came with another image's pull and so this image's blob was never
/// downloaded. As Docker's push does, the manifest then names the stored blob: the config,
/// its diff ids and so the image id stay; the manifest's digest changes. `None`: push the
/// stored manifest as it is.
fn substitute_missing(
    store: &ImageStore,
    client: &Client,
    repo: &str,
    shown: &str,
    row: &moat_image::db::ImageRow,
    stored: &[u8],
    m: &manifest::Manifest,
) -> Result<Option<Vec<u8>>, PushError> {
    let blobs = store.blobs();
    let mut doc: Option<serde_json::Value> = None;
    for (i, d) in m.layers.iter().enumerate() {
        if blobs.contains(&d.digest) || client.has_blob(repo, &d.digest)? {
            continue;
        }
        let layer = match row.layers.get(i) {
            Some(diff_id) if row.layers.len() == m.layers.len() => store.db().layer(diff_id)?,
            _ => None,
        };
        let Some(layer) = layer.filter(|l| blobs.contains(&l.blob)) else {
            return Err(PushError::MissingBlob {
                reference: shown.to_string(),
                blob: d.digest.clone(),
            });
        };
        let doc = match &mut doc {
            Some(v) => v,
            None => doc.insert(serde_json::from_slice(stored).map_err(|source| {
                ManifestError::Json {
                    reference: shown.to_string(),
                    source,
                }
            })?),
        };
        let docker = doc["mediaType"] == manifest::DOCKER_MANIFEST;
        let entry = &mut doc["layers"][i];
        entry["digest"] = layer.blob.to_string().into();
        entry["size"] = layer.blob_size.into();
        entry["mediaType"] = layer_media_type(&layer.media_type, docker).into();
    }
    Ok(match doc {
        Some(v) => Some(
            serde_json::to_vec_pretty(&v).map_err(|source| ManifestError::Json {
                reference: shown.to_string(),
                source,
            })?,
        ),
        None => None,
    })
}

/// A stored layer's (OCI) media type as a manifest of Docker's schema 2 names it, when it is one.
fn layer_media_type(stored: &str, docker: bool) -> String {
    use moat_image::store::media;
    match (docker, stored) {
        (true, media::LAYER_GZIP) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (true, media::LAYER_TAR) => "application/vnd.docker.image.rootfs.diff.tar",
        _ => stored,
    }
    .to_string()
}

#[allow(clippy::too_many_arguments)]
fn push_blob(
    blobs: &moat_image::blobs::BlobStore,
    client: &Client,
    repo: &str,
    shown: &str,
    desc: &Descriptor,
    from: &[String],
    shown_layer: bool,
    progress: &dyn Progress,
) -> Result<(), PushError> {
    let report = |s: Status| {
        if shown_layer {
            progress.layer(desc.digest.short(), &s);
        }
    };
    if client.has_blob(repo, &desc.digest)? {
        report(Status::LayerAlreadyExists);
        return Ok(());
    }
    if !blobs.contains(&desc.digest) {
        return Err(PushError::MissingBlob {
            reference: shown.to_string(),
            blob: desc.digest.clone(),
        });
    }
    let mut location = None;
    for source in from {
        match client.start_upload(repo, Some((&desc.digest, source))) {
            Ok(None) => {
                report(Status::MountedFrom(source.clone()));
                return Ok(());
            }
            // Not mounted (the source lost it, or no permission): an upload began instead.
            Ok(Some(loc)) => {
                location = Some(loc);
                break;
            }
            Err(e) => log::debug!("mount of {} from {source}: {e}", desc.digest),
        }
    }
    let location = match location {
        Some(l) => l,
        None => client
            .start_upload(repo, None)?
            .ok_or_else(|| ClientError::Protocol {
                url: format!("/v2/{repo}/blobs/uploads/"),
                message: "upload start answered as a mount".to_string(),
            })?,
    };
    report(Status::Pushing);
    client.put_blob(repo, &location, &desc.digest, &blobs.path(&desc.digest))?;
    report(Status::Pushed);
    Ok(())
}
