//! Manifests and indexes as registries serve them: Docker schema2 and OCI, single-platform
//! manifests and multi-platform lists, and the choice of a platform from a list.

use moat_image::Digest;
use serde::Deserialize;

/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// What a pull accepts, best first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// Largest manifest accepted (the distribution spec suggests registries take 4 MiB).
pub const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// the document is not a manifest
    #[error("manifest {reference}: {source}")]
    Json {
        /// Which manifest.
        reference: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// a media type moat does not handle
    #[error("manifest {reference}: unsupported media type {media_type:?} (schema 1 and other formats are not supported; push the image again with a current client)")]
    Unsupported {
        /// Which manifest.
        reference: String,
        /// Its media type.
        media_type: String,
    },
    /// no entry for this platform
    #[error("no matching manifest for {platform} in the manifest list entries of {reference}")]
    NoPlatform {
        /// Which index.
        reference: String,
        /// The platform looked for.
        platform: String,
    },
}

/// A content descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The content's media type.
    #[serde(default)]
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Platform (index entries).
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// A platform of an index entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// CPU architecture (`amd64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU variant (`v8`).
    #[serde(default)]
    pub variant: Option<String>,
}

/// A single-platform image manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
}

/// What a manifest endpoint returned.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// A single-platform manifest.
    Manifest(Manifest),
    /// A multi-platform index.
    Index(Vec<Descriptor>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// Parses a manifest or index; `content_type` is the response's, used when the document does
/// not name its own media type (OCI makes `mediaType` optional).
pub fn parse(reference: &str, bytes: &[u8], content_type: &str) -> Result<Fetched, ManifestError> {
    let doc: Doc = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
        reference: reference.to_string(),
        source,
    })?;
    let media_type = doc.media_type.clone().unwrap_or_else(|| {
        content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    });
    let unsupported = || ManifestError::Unsupported {
        reference: reference.to_string(),
        media_type: media_type.clone(),
    };
    if doc.schema_version != 2 {
        return Err(unsupported());
    }
    match (media_type.as_str(), doc.manifests, doc.config, doc.layers) {
        (DOCKER_LIST | OCI_INDEX | "" | "application/json", Some(m), None, _) => {
            Ok(Fetched::Index(m))
        }
        (DOCKER_MANIFEST | OCI_MANIFEST | "" | "application/json", None, Some(config), layers) => {
            Ok(Fetched::Manifest(Manifest {
                config,
                layers: layers.unwrap_or_default(),
            }))
        }
        _ => Err(unsupported()),
    }
}

/// The media type a manifest document declares (for `Content-Type` when pushing it).
pub fn media_type_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<Doc>(bytes)
        .ok()
        .and_then(|d| d.media_type)
        .unwrap_or_else(|| OCI_MANIFEST.to_string())
}

/// The platform of this machine, as images name it.
pub fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        architecture: architecture.to_string(),
        os: "linux".to_string(),
        variant: None,
    }
}

/// The index entry for `want`: same os and architecture, and the same variant when one is
/// wanted (`arm64` also takes `v8`, as containerd's matcher does).
pub fn select<'a>(
    reference: &str,
    entries: &'a [Descriptor],
    want: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    entries
        .iter()
        .find(|d| {
            d.platform.as_ref().is_some_and(|p| {
                p.os == want.os
                    && p.architecture == want.architecture
                    && match (&want.variant, &p.variant) {
                        (None, _) => true,
                        (Some(w), Some(v)) => w == v,
                        (Some(w), None) => w == "v8" && want.architecture == "arm64",
                    }
            })
        })
        .ok_or_else(|| ManifestError::NoPlatform {
            reference: reference.to_string(),
            platform: format!(
                "{}/{}{}",
                want.os,
                want.architecture,
                want.variant
                    .as_ref()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn parses_docker_and_oci_manifests() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{D1}","size":3}},"layers":[{{"mediaType":"y","digest":"{D2}","size":5}}]}}"#
        );
        let Fetched::Manifest(m) = parse("r", doc.as_bytes(), "").unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(m.config.digest.as_str(), D1);
        assert_eq!(m.layers[0].size, 5);
        // OCI without mediaType in the body: the Content-Type tells.
        let doc =
            format!(r#"{{"schemaVersion":2,"config":{{"digest":"{D1}","size":3}},"layers":[]}}"#);
        assert!(matches!(
            parse("r", doc.as_bytes(), OCI_MANIFEST).unwrap(),
            Fetched::Manifest(_)
        ));
    }

    #[test]
    fn selects_the_platform_from_an_index() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"digest":"{D1}","size":1,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
            {{"digest":"{D2}","size":2,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let Fetched::Index(entries) = parse("r", doc.as_bytes(), "").unwrap() else {
            panic!("not an index")
        };
        let amd64 = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(select("r", &entries, &amd64).unwrap().digest.as_str(), D2);
        let s390 = Platform {
            architecture: "s390x".into(),
            ..amd64
        };
        let err = select("r", &entries, &s390).unwrap_err().to_string();
        assert!(err.contains("linux/s390x"), "{err}");
    }

    #[test]
    fn refuses_schema1_and_garbage() {
        let v1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(matches!(
            parse(
                "r",
                v1,
                "application/vnd.docker.distribution.manifest.v1+prettyjws"
            ),
            Err(ManifestError::Unsupported { .. })
        ));
        assert!(matches!(
            parse("r", b"<html>", ""),
            Err(ManifestError::Json { .. })
        ));
    }
}
