//! `commit`: a container's writable layer (the overlay's upper directory) becomes one new image
//! layer on top of its image's layers, which are referenced, never copied.
//!
//! The upper directory speaks overlayfs: a deleted file is a 0/0 character device, a directory
//! that replaced one below carries `trusted.overlay.opaque=y`. The layer must speak OCI: those
//! become `.wh.<name>` and `.wh..wh..opq` entries. Hard links inside the layer stay links.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::{now_rfc3339, ImageStore, ImportConfig, StoreError};

/// Writes the upper directory `upper` as an OCI layer tar to `out`.
pub fn upper_to_tar(upper: &Path, out: impl Write) -> io::Result<()> {
    let mut b = tar::Builder::new(out);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk(&mut b, upper, Path::new(""), &mut links)?;
    b.into_inner()?.flush()
}

fn walk<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
    // Sorted: the same upper directory always gives the same layer (and digest).
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let path = rel.join(&name);
        let full = root.join(&path);
        let md = fs::symlink_metadata(&full)?;
        let ft = md.file_type();
        if ft.is_char_device() && md.rdev() == 0 {
            // overlayfs whiteout → OCI whiteout.
            let mut wh = name.clone();
            wh = std::ffi::OsString::from(format!(".wh.{}", wh.to_string_lossy()));
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o644);
            h.set_mtime(md.mtime().max(0) as u64);
            b.append_data(&mut h, rel.join(wh), io::empty())?;
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&md, tar::HeaderMode::Complete);
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, &path, io::empty())?;
            if is_opaque(&full) {
                let mut o = tar::Header::new_gnu();
                o.set_entry_type(tar::EntryType::Regular);
                o.set_size(0);
                o.set_mode(0o644);
                b.append_data(&mut o, path.join(".wh..wh..opq"), io::empty())?;
            }
            walk(b, root, &path, links)?;
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            let target = fs::read_link(&full)?;
            b.append_link(&mut h, &path, target)?;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = links.get(&(md.dev(), md.ino())) {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, &path, first)?;
                    continue;
                }
                links.insert((md.dev(), md.ino()), path.clone());
            }
            let f = fs::File::open(&full)?;
            b.append_data(&mut h, &path, f)?;
        } else {
            // Devices and fifos: the header carries type, mode and numbers.
            h.set_size(0);
            if ft.is_char_device() || ft.is_block_device() {
                h.set_device_major(major(md.rdev()))?;
                h.set_device_minor(minor(md.rdev()))?;
            }
            b.append_data(&mut h, &path, io::empty())?;
        }
    }
    Ok(())
}

fn major(dev: u64) -> u32 {
    ((dev >> 32) & 0xffff_f000) as u32 | ((dev >> 8) & 0xfff) as u32
}

fn minor(dev: u64) -> u32 {
    ((dev >> 12) & 0xffff_ff00) as u32 | (dev & 0xff) as u32
}

/// Whether overlayfs marked `dir` opaque (it hides everything below it).
fn is_opaque(dir: &Path) -> bool {
    let mut v = [0u8; 2];
    rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut v)
        .is_ok_and(|n| n == 1 && v[0] == b'y')
}

/// What `moat commit` records besides the layer.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `--change` instructions and `-m`, as for import.
    pub config: ImportConfig,
    /// `-a`.
    pub author: Option<String>,
}

impl ImageStore {
    /// Commits the upper directory `upper` of a container of image `base`: one new layer (the
    /// blob stored and the snapshot unpacked in one pass) on top of `base`'s layers, which are
    /// referenced as they are; the config is `base`'s with the changes applied and the layer and
    /// a history entry added. Returns the new image id.
    pub fn commit_container(
        &mut self,
        base: &Digest,
        upper: &Path,
        tag: Option<&Reference>,
        opts: &CommitOptions,
    ) -> Result<Digest, StoreError> {
        let (_row, mut config, _) = self.inspect(base)?;
        let mut layers = vec![];
        for d in self.base_layers(base)? {
            layers.push(d);
        }
        let (reader, writer) = io::pipe().map_err(|e| StoreError::Io {
            what: "create pipe for",
            path: upper.to_path_buf(),
            source: e,
        })?;
        let src = upper.to_path_buf();
        let archiver = std::thread::spawn(move || upper_to_tar(&src, writer));
        let layer = self.add_tar_layer(reader);
        let archived = archiver.join();
        let layer = match (layer, archived) {
            (Ok(l), Ok(Ok(()))) => l,
            (Err(e), Ok(Ok(()))) => return Err(e),
            (_, Ok(Err(e))) => {
                return Err(StoreError::Io {
                    what: "archive",
                    path: upper.to_path_buf(),
                    source: e,
                })
            }
            (_, Err(_)) => {
                return Err(StoreError::Io {
                    what: "archive",
                    path: upper.to_path_buf(),
                    source: io::Error::other("archiver panicked"),
                })
            }
        };
        layers.push(layer);
        apply_changes(&mut config["config"], &opts.config);
        let created = now_rfc3339();
        config["created"] = json!(created);
        if let Some(a) = &opts.author {
            config["author"] = json!(a);
        }
        config["rootfs"] = json!({
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        });
        let mut entry = json!({"created": created, "created_by": "moat commit"});
        if let Some(m) = &opts.config.message {
            entry["comment"] = json!(m);
        }
        if let Some(a) = &opts.author {
            entry["author"] = json!(a);
        }
        match config["history"].as_array_mut() {
            Some(h) => h.push(entry),
            None => config["history"] = json!([entry]),
        }
        let bytes = serde_json::to_vec(&config).unwrap_or_default();
        let tags: Vec<Reference> = tag.into_iter().cloned().collect();
        self.record_image(&bytes, &layers, &tags)
    }
}

/// `--change` values over an image config's `config` object.
fn apply_changes(cfg: &mut Value, c: &ImportConfig) {
    if !cfg.is_object() {
        *cfg = json!({});
    }
    if let Some(v) = &c.cmd {
        cfg["Cmd"] = json!(v);
    }
    if let Some(v) = &c.entrypoint {
        cfg["Entrypoint"] = json!(v);
    }
    for e in &c.env {
        let key = e.split('=').next().unwrap_or_default();
        let mut env: Vec<Value> = cfg["Env"].as_array().cloned().unwrap_or_default();
        env.retain(|x| x.as_str().and_then(|s| s.split('=').next()) != Some(key));
        env.push(json!(e));
        cfg["Env"] = Value::Array(env);
    }
    if let Some(v) = &c.working_dir {
        cfg["WorkingDir"] = json!(v);
    }
    if let Some(v) = &c.user {
        cfg["User"] = json!(v);
    }
    for (k, v) in &c.labels {
        if !cfg["Labels"].is_object() {
            cfg["Labels"] = json!({});
        }
        cfg["Labels"][k] = json!(v);
    }
    if let Some(h) = &c.healthcheck {
        cfg["Healthcheck"] = h.clone();
    }
    for p in &c.exposed_ports {
        if !cfg["ExposedPorts"].is_object() {
            cfg["ExposedPorts"] = json!({});
        }
        cfg["ExposedPorts"][p] = json!({});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_links_and_opaque_dirs_become_oci_entries() {
        let d = tempfile::tempdir().unwrap();
        let up = d.path();
        fs::create_dir_all(up.join("etc/new")).unwrap();
        fs::write(up.join("etc/file"), "data").unwrap();
        fs::hard_link(up.join("etc/file"), up.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("file", up.join("etc/sym")).unwrap();
        // An overlay whiteout is a 0/0 character device (root only can make one).
        let whiteout = nix::sys::stat::mknod(
            &up.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .is_ok();
        let opaque = rustix::fs::lsetxattr(
            up.join("etc/new"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        let mut buf = vec![];
        upper_to_tar(up, &mut buf).unwrap();
        let mut a = tar::Archive::new(&buf[..]);
        let mut seen: Vec<(String, tar::EntryType)> = vec![];
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            seen.push((
                e.path().unwrap().display().to_string(),
                e.header().entry_type(),
            ));
        }
        let has = |p: &str, t: tar::EntryType| seen.iter().any(|(q, u)| q == p && *u == t);
        assert!(has("etc/file", tar::EntryType::Regular), "{seen:?}");
        assert!(has("etc/link", tar::EntryType::Link) || has("etc/file", tar::EntryType::Link));
        assert!(has("etc/sym", tar::EntryType::Symlink));
        if whiteout {
            assert!(has("etc/.wh.gone", tar::EntryType::Regular), "{seen:?}");
        }
        if opaque {
            assert!(
                has("etc/new/.wh..wh..opq", tar::EntryType::Regular),
                "{seen:?}"
            );
        }
        // Deterministic: the same directory gives the same bytes.
        let mut again = vec![];
        upper_to_tar(up, &mut again).unwrap();
        assert_eq!(buf, again);
    }
}
