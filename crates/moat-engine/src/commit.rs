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
    let result = ImageStore::open(&paths.images()).and_then(|mut store| {
        let (_, image_config, _) = store.inspect(&base)?;
        let opts = with_container_config(paths, row, &image_config["config"], opts);
        store.commit_container(&base, &upper, tag.as_ref(), &opts)
    });
    if paused {
        let _ = moat_runtime::ops::pause::resume(&rt, &cid);
    }
    Ok(result?)
}

/// The new image's config starts from the container's, as Docker's commit does: its command
/// (split into the image's Entrypoint and the rest, or a new entrypoint when `--entrypoint`
/// replaced it), environment (without the runtime's HOSTNAME), working directory, labels and
/// healthcheck;
/// `--change` instructions and the message apply on top.
fn with_container_config(
    paths: &Paths,
    row: &Row,
    image: &serde_json::Value,
    opts: &CommitOptions,
) -> CommitOptions {
    let spec: serde_json::Value = std::fs::read(paths.container_dir(&row.id).join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let process = &spec["process"];
    let entrypoint: Vec<String> = image["Entrypoint"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let argv = &row.command;
    let (new_entrypoint, cmd) = if !entrypoint.is_empty() && argv.starts_with(&entrypoint) {
        (None, argv[entrypoint.len()..].to_vec())
    } else if !entrypoint.is_empty() {
        // `--entrypoint` replaced the image's: the program is the new entrypoint.
        (
            Some(argv.iter().take(1).cloned().collect()),
            argv.iter().skip(1).cloned().collect(),
        )
    } else {
        (None, argv.clone())
    };
    let env: Vec<String> = process["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .filter(|e| !e.starts_with("HOSTNAME="))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let labels: Vec<(String, String)> = spec["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.starts_with("moat."))
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let cwd = process["cwd"]
        .as_str()
        .filter(|c| *c != "/")
        .map(String::from);
    let c = &opts.config;
    CommitOptions {
        config: moat_image::store::ImportConfig {
            cmd: c.cmd.clone().or(Some(cmd)),
            entrypoint: c.entrypoint.clone().or(new_entrypoint),
            env: env.into_iter().chain(c.env.iter().cloned()).collect(),
            working_dir: c.working_dir.clone().or(cwd),
            user: c.user.clone(),
            labels: labels.into_iter().chain(c.labels.iter().cloned()).collect(),
            exposed_ports: c.exposed_ports.clone(),
            // The container's healthcheck (its flags merged over the image's), as Docker's.
            healthcheck: c.healthcheck.clone().or_else(|| {
                crate::health::load_config(&paths.container_dir(&row.id))
                    .and_then(|h| serde_json::to_value(h).ok())
            }),
            message: c.message.clone(),
        },
        author: opts.author.clone(),
    }
}
