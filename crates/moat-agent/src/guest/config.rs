//! The host's config.json made fit for the guest.

use std::path::Path;

use serde_json::Value;

use super::{io, AgentError, BUNDLE, GUEST_BUNDLE, ROOTFS, SHARES};
use crate::proto;

/// Writes the guest's config.json: the host's, with paths that make sense in the guest.
pub(super) fn guest_config(start: &proto::Start) -> Result<(), AgentError> {
    let src = Path::new(BUNDLE).join("config.json");
    let text = std::fs::read(&src).map_err(io("read", &src))?;
    let mut doc: Value =
        serde_json::from_slice(&text).map_err(|e| AgentError::Config(e.to_string()))?;
    rewrite_config(&mut doc, start)?;
    let dir = Path::new(GUEST_BUNDLE);
    std::fs::create_dir_all(dir).map_err(io("mkdir", dir))?;
    let dst = dir.join("config.json");
    let bytes = serde_json::to_vec(&doc).map_err(|e| AgentError::Config(e.to_string()))?;
    std::fs::write(&dst, bytes).map_err(io("write", &dst))
}

/// The host's config.json made fit for the guest: the root and bind sources mapped into the
/// shares, no namespace paths (they name the host's namespaces), no hooks (host programs), no
/// cpuset (the VM's vCPUs are the limit).
pub fn rewrite_config(doc: &mut Value, start: &proto::Start) -> Result<(), AgentError> {
    doc["root"]["path"] = Value::from(ROOTFS);
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("hooks");
    }
    let map = |src: &str| -> Option<String> {
        let under = |base: &str, guest: &str| {
            let rest = src.strip_prefix(base)?;
            (rest.is_empty() || rest.starts_with('/')).then(|| format!("{guest}{rest}"))
        };
        under(&start.host_bundle, BUNDLE).or_else(|| {
            start
                .shares
                .iter()
                .find_map(|s| under(&s.host_path, &format!("{SHARES}/{}", s.tag)))
        })
    };
    if let Some(mounts) = doc["mounts"].as_array_mut() {
        for m in mounts.iter_mut() {
            let bind = proto::is_bind_mount(m);
            if !bind {
                continue;
            }
            let src = m["source"].as_str().unwrap_or_default().to_string();
            let guest = map(&src).ok_or_else(|| {
                AgentError::Config(format!("bind source {src} is not shared with the VM"))
            })?;
            m["source"] = Value::from(guest);
        }
    }
    if let Some(ns) = doc["linux"]["namespaces"].as_array_mut() {
        for n in ns.iter_mut() {
            if let Some(o) = n.as_object_mut() {
                o.remove("path");
            }
        }
        // With a network, the container lives in the guest's own: the VM is its sandbox, and
        // the guest's interfaces are the container's (as Kata Containers does).
        if start.net.is_some() {
            ns.retain(|n| n["type"] != "network");
        }
    }
    if let Some(cpu) = doc["linux"]["resources"]["cpu"].as_object_mut() {
        cpu.remove("cpus");
        cpu.remove("mems");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn config_paths_are_mapped_into_the_guest() {
        let start = proto::Start {
            host_bundle: "/var/lib/moat/containers/abc".into(),
            shares: vec![proto::Share {
                tag: "s0".into(),
                host_path: "/srv/data".into(),
            }],
            stdin: false,
            tty: false,
            net: None,
            debug: false,
        };
        let mut doc = json!({
            "root": {"path": "rootfs"},
            "hooks": {"prestart": []},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind",
                 "source": "/var/lib/moat/containers/abc/hosts", "options": ["rbind"]},
                {"destination": "/data", "type": "bind", "source": "/srv/data/sub",
                 "options": ["rbind", "ro"]}
            ],
            "linux": {"namespaces": [{"type": "network", "path": "/run/netns/x"}, {"type": "pid"}],
                      "resources": {"cpu": {"cpus": "0-1", "shares": 512}}}
        });
        rewrite_config(&mut doc, &start).unwrap();
        assert_eq!(doc["root"]["path"], "/run/rootfs");
        assert!(doc.get("hooks").is_none());
        assert_eq!(doc["mounts"][1]["source"], "/run/bundle/hosts");
        assert_eq!(doc["mounts"][2]["source"], "/run/shares/s0/sub");
        assert_eq!(doc["linux"]["namespaces"][0], json!({"type": "network"}));
        assert_eq!(doc["linux"]["resources"]["cpu"], json!({"shares": 512}));
        // A bind whose source is not shared is refused, not silently dropped; a look-alike
        // prefix is not a match.
        let mut bad = json!({"mounts": [{"destination": "/x", "type": "bind",
                                         "source": "/srv/database"}]});
        assert!(rewrite_config(&mut bad, &start).is_err());
    }
}
