//! Capability sets of the container's process.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

/// Errors applying capabilities.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// a capability name is unknown to this host
    #[error("unknown capability {0}")]
    Unknown(String),
    /// setting a capability set failed
    #[error("set {set} capabilities: {source}")]
    Set {
        /// Which set.
        set: &'static str,
        /// The error.
        source: caps::errors::CapsError,
    },
}

fn convert(set: &Option<Capabilities>) -> Result<CapsHashSet, CapsError> {
    let mut out = CapsHashSet::new();
    for c in set.iter().flatten() {
        let name = format!("CAP_{c}");
        out.insert(Capability::from_str(&name).map_err(|_| CapsError::Unknown(name))?);
    }
    Ok(out)
}

/// The sets resolved against this host's capability list.
#[derive(Debug, Clone, Default)]
pub struct CapSets {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    permitted: CapsHashSet,
    inheritable: CapsHashSet,
    ambient: CapsHashSet,
}

impl CapSets {
    /// Resolves the config's sets (missing sets are empty, as the spec says).
    pub fn from_spec(c: &LinuxCapabilities) -> Result<CapSets, CapsError> {
        Ok(CapSets {
            bounding: convert(c.bounding())?,
            effective: convert(c.effective())?,
            permitted: convert(c.permitted())?,
            inheritable: convert(c.inheritable())?,
            ambient: convert(c.ambient())?,
        })
    }

    /// Drops everything outside the bounding set. Needs CAP_SETPCAP, so it runs before the uid
    /// changes.
    pub fn apply_bounding(&self) -> Result<(), CapsError> {
        // Only capabilities this kernel knows: dropping an unknown one fails with EINVAL.
        for cap in caps::runtime::thread_all_supported() {
            if !self.bounding.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(|source| CapsError::Set {
                    set: "bounding",
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Sets inheritable, effective, permitted and ambient, in an order each step allows:
    /// inheritable while CAP_SETPCAP is still effective, effective before permitted shrinks
    /// below it, ambient last (it needs the capability permitted and inheritable).
    pub fn apply(&self) -> Result<(), CapsError> {
        let set = |set: CapSet, name: &'static str, v: &CapsHashSet| {
            caps::set(None, set, v).map_err(|source| CapsError::Set { set: name, source })
        };
        set(CapSet::Inheritable, "inheritable", &self.inheritable)?;
        set(CapSet::Effective, "effective", &self.effective)?;
        set(CapSet::Permitted, "permitted", &self.permitted)?;
        // The kernel only lets a capability be ambient when it is permitted and inheritable;
        // configs in the wild (`crun spec`'s) list ambient ones with an empty inheritable set.
        // Like runc, raise what may be raised and skip the rest rather than refuse the config.
        for cap in &self.ambient {
            if let Err(e) = caps::raise(None, CapSet::Ambient, *cap) {
                log::debug!("ambient {cap} not raised: {e}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn spec_names_map_to_kernel_capabilities() {
        let c: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":["CAP_CHOWN","CAP_NET_BIND_SERVICE"],"effective":["CAP_CHOWN"]}"#,
        )
        .unwrap();
        let s = CapSets::from_spec(&c).unwrap();
        assert!(s.bounding.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert_eq!(s.effective.len(), 1);
        assert!(s.permitted.is_empty() && s.ambient.is_empty());
    }
}
