//! `moat system check`: verifies the store against itself and finds what a crash left behind.
//!
//! Problems are of two kinds. *Damage* (a blob whose content no longer matches its digest, a
//! recorded snapshot or blob that is missing) means data was lost; it is reported, never
//! "repaired" away silently. *Orphans* (temporary files and directories of interrupted writes,
//! blobs and snapshots nothing references, dangling short links, layers no image uses) are what
//! a `kill -9` can leave; `--repair` removes them.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::store::{ImageStore, StoreError};

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A blob's content does not match its digest.
    CorruptBlob(Digest),
    /// A blob the metadata needs is missing.
    MissingBlob {
        /// The blob.
        digest: Digest,
        /// Who needs it.
        needed_by: String,
    },
    /// A recorded layer's snapshot directory is missing.
    MissingSnapshot(Digest),
    /// A leftover of an interrupted write, or something nothing references.
    Orphan(PathBuf),
    /// A layer row no image uses.
    UnusedLayer(Digest),
}

impl Finding {
    /// Whether `--repair` may remove it.
    pub fn is_orphan(&self) -> bool {
        matches!(self, Finding::Orphan(_) | Finding::UnusedLayer(_))
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::CorruptBlob(d) => write!(f, "damaged: blob {d} does not match its digest"),
            Finding::MissingBlob { digest, needed_by } => {
                write!(
                    f,
                    "damaged: blob {digest} is missing (needed by {needed_by})"
                )
            }
            Finding::MissingSnapshot(d) => write!(f, "damaged: snapshot of layer {d} is missing"),
            Finding::Orphan(p) => write!(f, "orphan: {}", p.display()),
            Finding::UnusedLayer(d) => write!(f, "orphan: layer {d} is used by no image"),
        }
    }
}

/// Checks the whole store (reads every blob to verify it).
pub fn check(store: &ImageStore) -> Result<Vec<Finding>, StoreError> {
    let mut out = vec![];
    let db = store.db();
    let blobs = store.blobs();
    let mut referenced: HashSet<Digest> = HashSet::new();
    let mut snapshots: HashSet<String> = HashSet::new();
    let mut links: HashSet<String> = HashSet::new();
    for l in db.layers()? {
        referenced.insert(l.blob.clone());
        snapshots.insert(l.snapshot.clone());
        links.insert(l.link.clone());
        if !store.root().join("snapshots").join(&l.snapshot).is_dir() {
            out.push(Finding::MissingSnapshot(l.diff_id.clone()));
        }
        if !blobs.contains(&l.blob) {
            out.push(Finding::MissingBlob {
                digest: l.blob.clone(),
                needed_by: format!("layer {}", l.diff_id),
            });
        }
        if db.layer_users(&l.diff_id)? == 0 {
            out.push(Finding::UnusedLayer(l.diff_id.clone()));
        }
    }
    for img in db.images()? {
        for (d, what) in [(&img.id, "config"), (&img.manifest, "manifest")] {
            referenced.insert(d.clone());
            if !blobs.contains(d) {
                out.push(Finding::MissingBlob {
                    digest: d.clone(),
                    needed_by: format!("image {} ({what})", img.id.short()),
                });
            }
        }
    }
    for d in blobs.list()? {
        if !referenced.contains(&d) {
            out.push(Finding::Orphan(blobs.path(&d)));
        } else if !blobs.verify(&d)? {
            out.push(Finding::CorruptBlob(d));
        }
    }
    for t in blobs.temporaries() {
        out.push(Finding::Orphan(t));
    }
    let snap_dir = store.root().join("snapshots");
    // (store.lock, moat.db and its WAL files are the store's own, not orphans.)
    for e in fs::read_dir(&snap_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !snapshots.contains(&name) {
            out.push(Finding::Orphan(e.path()));
        }
    }
    let link_dir = store.root().join("l");
    for e in fs::read_dir(&link_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !links.contains(&name) || !e.path().exists() {
            out.push(Finding::Orphan(e.path()));
        }
    }
    Ok(out)
}

/// Removes the orphans among `findings` (damage stays, for a person to look at).
pub fn repair(store: &ImageStore, findings: &[Finding]) -> Result<usize, StoreError> {
    let mut n = 0;
    for f in findings {
        match f {
            Finding::Orphan(p) => {
                let meta = fs::symlink_metadata(p);
                let r = match meta {
                    Ok(m) if m.is_dir() => fs::remove_dir_all(p),
                    Ok(_) => fs::remove_file(p),
                    Err(_) => Ok(()),
                };
                r.map_err(|source| StoreError::Io {
                    what: "remove orphan",
                    path: p.clone(),
                    source,
                })?;
                n += 1;
            }
            Finding::UnusedLayer(d) => {
                store.remove_unused_layer(d)?;
                n += 1;
            }
            _ => {}
        }
    }
    Ok(n)
}
