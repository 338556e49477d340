//! Images as Docker's clients see them: the documents of `docker image inspect` and
//! `GET /images/json` (shared by the command line and the API).

use serde_json::{json, Value};

use crate::digest::Digest;
use crate::store::{ImageStore, ImageSummary, StoreError};

/// `name:tag` entries are RepoTags; `name@digest` entries are RepoDigests.
fn split_tags(tags: &[String]) -> (Vec<&String>, Vec<&String>) {
    tags.iter().partition(|t| !t.contains('@'))
}

/// The uncompressed size of an image's layers.
fn size_of(store: &ImageStore, layers: &[Digest]) -> Result<u64, StoreError> {
    let mut size = 0;
    for l in layers {
        size += store.db().layer(l)?.map(|l| l.size).unwrap_or(0);
    }
    Ok(size)
}

/// `docker image inspect`'s document for image `id`.
pub fn inspect(store: &ImageStore, id: &Digest) -> Result<Value, StoreError> {
    let (row, config, _manifest) = store.inspect(id)?;
    let (tags, digests) = split_tags(&row.tags);
    let comment = config["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|h| h["comment"].as_str())
        .unwrap_or("");
    Ok(json!({
        "Id": id.as_str(),
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": "",
        "Comment": comment,
        "Created": row.created,
        "DockerVersion": "",
        "Author": config["author"].as_str().unwrap_or(""),
        "Config": config["config"],
        // Docker's before API 1.45: the config of the container the image was committed from
        // (docker-compose 1.x reads its Volumes when it recreates a container); images that
        // carry none get their own config here.
        "ContainerConfig": match &config["container_config"] {
            c @ Value::Object(_) => c.clone(),
            _ if config["config"].is_object() => config["config"].clone(),
            _ => json!({}),
        },
        "Architecture": config["architecture"],
        "Os": config["os"],
        "Size": size_of(store, &row.layers)?,
        "GraphDriver": {"Name": "overlay2", "Data": null},
        "RootFS": {"Type": "layers", "Layers": row.layers.iter().map(|l| l.as_str()).collect::<Vec<_>>()},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }))
}

/// One entry of `GET /images/json`; `created` is in seconds since the epoch.
pub fn summary(s: &ImageSummary, created: i64, labels: &Value) -> Value {
    let (tags, digests) = split_tags(&s.row.tags);
    json!({
        "Id": s.row.id.as_str(),
        "ParentId": "",
        "RepoTags": tags,
        "RepoDigests": digests,
        "Created": created,
        "Size": s.size,
        "SharedSize": -1,
        "Labels": labels,
        "Containers": -1,
    })
}
