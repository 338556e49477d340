//! `moat commit`: a container's writable layer becomes one new layer of a new image, on top of
//! its image's layers (referenced, not copied). A running container is paused meanwhile (as
//! Docker does by default), so the layer is a consistent snapshot.

use moat_image::commit::CommitOptions;
use moat_image::{Digest, ImageStore, Reference};
use moat_runtime::Runtime;

use crate::containers::{Row, State};
use crate::{EngineError, Paths};

/// Commits container `row` as a new image (tagged `reference` if given); returns its id.
pub fn commit(
    paths: &Paths,
    row: &Row,
    reference: Option<&str>,
    opts: &CommitOptions,
    pause: bool,
) -> Result<Digest, EngineError> {
    let tag: Option<Reference> = reference
        .map(|r| r.parse())
        .transpose()
        .map_err(moat_image::StoreError::from)?;
    let base: Digest = row
        .image
        .parse()
        .map_err(|_| EngineError::NoImage(row.image.clone()))?;
    let upper = paths.container_dir(&row.id).join("upper");
    let rt = Runtime::new(&paths.runtime_root);
    let cid = row
        .id
        .parse()
        .map_err(|e: moat_runtime::id::IdError| EngineError::Spec(e.to_string()))?;
    let paused = pause
        && row.effective().0 == State::Running
        && !moat_runtime::ops::pause::paused(&rt, &cid)
        && moat_runtime::ops::pause::pause(&rt, &cid).is_ok();
    let result = ImageStore::open(&paths.images())
        .and_then(|mut store| store.commit_container(&base, &upper, tag.as_ref(), opts));
    if paused {
        let _ = moat_runtime::ops::pause::resume(&rt, &cid);
    }
    Ok(result?)
}
