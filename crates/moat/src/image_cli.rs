//! Image commands: `moat import | images | image inspect | tag | rmi`, over `moat_image`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use moat_engine::present::human_ago;
use moat_image::store::{ImageSummary, ImportConfig};
use moat_image::{ImageStore, Reference, StoreError};

/// Errors of the image commands that are not the store's.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// store error
    #[error(transparent)]
    Store(#[from] StoreError),
    /// bad --change
    #[error("invalid --change {0:?}: expected CMD, ENTRYPOINT, ENV, WORKDIR, USER or LABEL")]
    Change(String),
    /// cannot open the import source
    #[error("import {path}: {source}")]
    Source {
        /// The source path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// bad reference
    #[error(transparent)]
    Reference(#[from] moat_image::reference::ReferenceError),
    /// metadata failure
    #[error(transparent)]
    Db(#[from] moat_image::db::DbError),
    /// archive failure
    #[error(transparent)]
    Archive(#[from] moat_image::archive::ArchiveError),
    /// the image is used by a running container
    #[error("conflict: unable to remove {name} - image {image} is being used by {state} container {container} (remove the container first)")]
    InUse {
        /// "running" or "stopped".
        state: &'static str,
        /// What the user named.
        name: String,
        /// A container using it (short id).
        container: String,
        /// The image (short id).
        image: String,
    },
    /// a --format template failed
    #[error(transparent)]
    Template(#[from] moat_engine::template::TemplateError),
    /// refusing to write binary data to a terminal
    #[error("cowardly refusing to save to a terminal: use -o FILE or redirect standard output")]
    Terminal,
    /// cannot create the output file
    #[error("save to {path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// `moat save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Images (names or ids).
    #[arg(required = true)]
    images: Vec<String>,
}

/// `moat load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this tar file or OCI layout directory instead of standard input.
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Only print the ids.
    #[arg(short, long)]
    quiet: bool,
}

/// `moat save`: a docker-archive that is also an OCI layout.
pub fn save(root: &Path, a: &SaveArgs) -> Result<(), CliError> {
    use std::io::IsTerminal;
    let store = open(root)?;
    match &a.output {
        Some(path) => {
            // Written next to the target and renamed: a failed save leaves no partial file.
            let tmp = path.with_extension("moat-partial");
            let out = |source| CliError::Output {
                path: path.clone(),
                source,
            };
            let f = std::fs::File::create(&tmp).map_err(out)?;
            let result = moat_image::archive::save(&store, &a.images, std::io::BufWriter::new(f));
            if let Err(e) = result {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            std::fs::rename(&tmp, path).map_err(|source| CliError::Output {
                path: path.clone(),
                source,
            })
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(CliError::Terminal);
            }
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            Ok(moat_image::archive::save(&store, &a.images, out)?)
        }
    }
}

/// `moat load`: prints `Loaded image: NAME` (or `Loaded image ID: ID` for untagged ones).
pub fn load(root: &Path, a: &LoadArgs) -> Result<(), CliError> {
    let mut store = open(root)?;
    let loaded = moat_image::archive::load(&mut store, a.input.as_deref())?;
    for (id, tags) in loaded {
        if a.quiet || tags.is_empty() {
            println!("Loaded image ID: {id}");
        } else {
            for t in tags {
                println!("Loaded image: {t}");
            }
        }
    }
    Ok(())
}

/// `moat import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Dockerfile instruction to apply (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL); repeatable.
    #[arg(short, long)]
    change: Vec<String>,
    /// Commit message recorded in the history.
    #[arg(short, long)]
    message: Option<String>,
    /// A rootfs tarball (plain, gzip or zstd), a directory, or - for standard input.
    source: String,
    /// REPOSITORY[:TAG] for the new image.
    reference: Option<String>,
}

/// `moat images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only image ids.
    #[arg(short, long)]
    quiet: bool,
    /// Full image ids.
    #[arg(long)]
    no_trunc: bool,
    /// Only this repository (and tag).
    reference: Option<String>,
}

/// `moat rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove an image with several tags.
    #[arg(short, long)]
    force: bool,
    /// Images (names or ids).
    #[arg(required = true)]
    images: Vec<String>,
}

/// `moat image ...`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Show images as JSON.
    Inspect {
        /// Images (names or ids).
        #[arg(required = true)]
        images: Vec<String>,
        /// Format each result with a Go template ({{.State.Status}}, {{json .Config}}, ...).
        #[arg(short, long)]
        format: Option<String>,
    },
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove images.
    Rm(RmiArgs),
    /// Tag an image.
    Tag {
        /// Existing image.
        source: String,
        /// New REPOSITORY[:TAG].
        target: String,
    },
    /// Import a rootfs as an image.
    Import(ImportArgs),
    /// Show the history of an image.
    History {
        /// Full ids and commands.
        #[arg(long)]
        no_trunc: bool,
        /// Image (name or id).
        image: String,
    },
    /// Remove dangling (untagged) images.
    Prune {
        /// Do not ask for confirmation (moat never asks).
        #[arg(short, long)]
        force: bool,
    },
}

/// `moat system ...`.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show disk usage.
    Df,
    /// What this engine is and can do (as `moat info`).
    Info,
    /// Events as they happen (as `moat events`).
    Events(crate::events_cli::EventsArgs),
    /// Verify the store: every blob's digest, every snapshot, every reference.
    Check {
        /// Remove what interrupted writes left behind (orphans); damage is only reported.
        #[arg(long)]
        repair: bool,
    },
    /// Remove every container, and the networks' bridges, rules and namespaces, then the
    /// root's images, volumes and records: the root as new.
    Reset {
        /// Do not ask (moat never asks; required, as a guard against typing it by mistake).
        #[arg(short, long, required = true)]
        force: bool,
    },
}

pub(crate) fn open(root: &Path) -> Result<ImageStore, CliError> {
    Ok(ImageStore::open(&root.join("image"))?)
}

/// Parses `docker import --change` instructions.
pub fn changes(list: &[String], message: Option<String>) -> Result<ImportConfig, CliError> {
    moat_image::changes::parse(list, message)
        .map_err(|moat_image::changes::ChangeError::Unsupported(c)| CliError::Change(c))
}

/// `moat import`: prints the new image's id.
pub fn import(root: &Path, a: &ImportArgs) -> Result<(), CliError> {
    let mut store = open(root)?;
    let tag: Option<Reference> = a.reference.as_deref().map(str::parse).transpose()?;
    let cfg = changes(&a.change, a.message.clone())?;
    let id = if a.source == "-" {
        store.import_tar(std::io::stdin().lock(), tag.as_ref(), &cfg)?
    } else {
        let path = PathBuf::from(&a.source);
        let meta = std::fs::metadata(&path).map_err(|source| CliError::Source {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            store.import_dir(&path, tag.as_ref(), &cfg)?
        } else {
            let f = std::fs::File::open(&path).map_err(|source| CliError::Source {
                path: path.clone(),
                source,
            })?;
            store.import_tar(f, tag.as_ref(), &cfg)?
        }
    };
    println!("{id}");
    Ok(())
}

/// Docker's size format: 3 significant digits, 1000-based units.
pub fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", units[i])
}

fn rows<'a>(
    list: &'a [ImageSummary],
    filter: Option<&Reference>,
) -> Vec<(String, String, &'a ImageSummary)> {
    let mut out = vec![];
    for s in list {
        if s.row.tags.is_empty() {
            if filter.is_none() {
                out.push(("<none>".to_string(), "<none>".to_string(), s));
            }
            continue;
        }
        for t in &s.row.tags {
            // `name@digest` entries (pulled by digest, Docker's RepoDigests) show as an untagged
            // row of their repository, unless the repository has a tag for this image.
            let (repo, tag) = match t.split_once('@') {
                Some((repo, _)) => {
                    let tagged = s.row.tags.iter().any(|o| {
                        !o.contains('@') && o.rsplit_once(':').is_some_and(|(r, _)| r == repo)
                    });
                    if tagged {
                        continue;
                    }
                    (repo, "<none>")
                }
                None => t.rsplit_once(':').unwrap_or((t, "")),
            };
            let keep = filter.is_none_or(|f| {
                f.name() == repo
                    && (f.tag() == Some(tag) || f.tag() == Some("latest") && !t.is_empty())
            });
            if keep {
                out.push((repo.to_string(), tag.to_string(), s));
            }
        }
    }
    out
}

/// `moat images`.
pub fn images(root: &Path, a: &ImagesArgs) -> Result<(), CliError> {
    let store = open(root)?;
    let list = store.images()?;
    let filter: Option<Reference> = a.reference.as_deref().map(str::parse).transpose()?;
    let rows = rows(&list, filter.as_ref());
    let mut out = std::io::stdout().lock();
    let id = |s: &ImageSummary| {
        if a.no_trunc {
            s.row.id.to_string()
        } else {
            s.row.id.short().to_string()
        }
    };
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for (_, _, s) in rows {
            if seen.insert(s.row.id.clone()) {
                let _ = writeln!(out, "{}", id(s));
            }
        }
        return Ok(());
    }
    let mut table = vec![vec![
        "REPOSITORY".to_string(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    for (repo, tag, s) in rows {
        table.push(vec![
            repo,
            tag,
            id(s),
            human_ago(&s.row.created),
            human_size(s.size),
        ]);
    }
    crate::table::write(&mut out, &table);
    Ok(())
}

/// `moat image inspect`: Docker's JSON shape (the fields the engine knows today).
pub fn inspect(root: &Path, names: &[String], format: Option<&str>) -> Result<(), CliError> {
    let store = open(root)?;
    let mut out = vec![];
    for n in names {
        let id = store.resolve(n)?;
        out.push(moat_image::docker::inspect(&store, &id)?);
    }
    Ok(crate::container_cli::print_inspected(&out, format)?)
}

/// `moat tag`.
pub fn tag(root: &Path, source: &str, target: &str) -> Result<(), CliError> {
    let store = open(root)?;
    let t: Reference = target.parse()?;
    store.tag(source, &t)?;
    Ok(())
}

/// The containers (id, running) made from `image`: by record, and by directory for a container
/// being created right now (its directory names its image before its record exists).
fn containers_using(root: &Path, image: &moat_image::Digest) -> Vec<(String, bool)> {
    let rows = moat_engine::containers::Records::open(root)
        .and_then(|r| r.all())
        .unwrap_or_default();
    let mut out: Vec<(String, bool)> = rows
        .iter()
        .filter(|r| r.image == image.as_str())
        .map(|r| {
            let running = r.effective().0 == moat_engine::containers::State::Running;
            (r.id.clone(), running)
        })
        .collect();
    for id in moat_engine::run::containers_using(root, image) {
        if !out.iter().any(|(i, _)| *i == id) {
            out.push((id, true));
        }
    }
    out.sort_by_key(|(_, running)| !running);
    out
}

/// `moat rmi`: every image is attempted; the first error is returned (for the caller to
/// report), later ones are reported here.
pub fn rmi(root: &Path, a: &RmiArgs) -> Result<(), CliError> {
    let mut store = open(root)?;
    let mut first_err = None;
    for name in &a.images {
        // A container's rootfs is an overlay over its image's snapshots: even --force must not
        // pull those from under a running one (Docker refuses too), nor from a stopped one,
        // which could then never start again.
        {
            if let Ok(id) = store.resolve(name) {
                if let Some((c, running)) = containers_using(root, &id).first() {
                    let e = CliError::InUse {
                        state: if *running { "running" } else { "stopped" },
                        name: name.clone(),
                        container: c[..12.min(c.len())].to_string(),
                        image: id.short().to_string(),
                    };
                    if first_err.is_none() {
                        first_err = Some(e);
                    } else {
                        log::error!("{e}");
                    }
                    continue;
                }
            }
        }
        match store.remove(name, a.force) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
            }
            Err(e) if first_err.is_none() => first_err = Some(e.into()),
            Err(e) => log::error!("{e}"),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `moat image history`.
pub fn history(root: &Path, image: &str, no_trunc: bool) -> Result<(), CliError> {
    let store = open(root)?;
    let id = store.resolve(image)?;
    let (row, config, _) = store.inspect(&id)?;
    let mut sizes = row.layers.iter().rev().map(|d| {
        store
            .db()
            .layer(d)
            .ok()
            .flatten()
            .map(|l| l.size)
            .unwrap_or(0)
    });
    let hist = config["history"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<12} {:<20} {:<45} {:<10} COMMENT",
        "IMAGE", "CREATED", "CREATED BY", "SIZE"
    );
    for (i, h) in hist.iter().rev().enumerate() {
        let empty = h["empty_layer"].as_bool().unwrap_or(false);
        let size = if empty { 0 } else { sizes.next().unwrap_or(0) };
        let shown_id = if i == 0 {
            if no_trunc {
                id.to_string()
            } else {
                id.short().to_string()
            }
        } else {
            "<missing>".into()
        };
        let by = h["created_by"].as_str().unwrap_or("");
        let by = if no_trunc || by.len() <= 44 {
            by.to_string()
        } else {
            format!(
                "{}…",
                &by[..by
                    .char_indices()
                    .nth(43)
                    .map(|(i, _)| i)
                    .unwrap_or(by.len())]
            )
        };
        println!(
            "{shown_id:<12} {:<20} {by:<45} {:<10} {}",
            human_ago(h["created"].as_str().unwrap_or("")),
            human_size(size),
            h["comment"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `moat image prune`: removes images without tags.
pub fn prune(root: &Path) -> Result<(), CliError> {
    let mut store = open(root)?;
    let before: u64 = store.db().layers()?.iter().map(|l| l.size).sum();
    let mut lines = vec![];
    for img in store.images()? {
        if img.row.tags.is_empty() {
            lines.extend(store.remove(img.row.id.as_str(), true)?);
        }
    }
    let after: u64 = store.db().layers()?.iter().map(|l| l.size).sum();
    if !lines.is_empty() {
        println!("Deleted Images:");
        for l in lines {
            // Docker's prune lists "untagged: ..." and "deleted: ..." in lowercase.
            println!("{}", l.to_lowercase());
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(before.saturating_sub(after))
    );
    Ok(())
}

/// `moat system check [--repair]`; exit status 1 when anything is wrong (after a repair: when
/// damage remains).
pub fn check(root: &Path, repair: bool) -> Result<bool, CliError> {
    let store = if repair {
        ImageStore::open_exclusive(&root.join("image"))?
    } else {
        open(root)?
    };
    let findings = moat_image::check::check(&store)?;
    for f in &findings {
        println!("{f}");
    }
    if repair {
        let n = moat_image::check::repair(&store, &findings)?;
        println!("repaired: {n} orphan(s) removed");
        let damage = findings.iter().filter(|f| !f.is_orphan()).count();
        return Ok(damage == 0);
    }
    if findings.is_empty() {
        println!("ok: no problems found");
    }
    Ok(findings.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_format_like_docker() {
        assert_eq!(human_size(2_130_000), "2.13MB");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(12_340_000_000), "12.3GB");
        assert!(matches!(
            changes(&["RUN x".into()], None),
            Err(CliError::Change(_))
        ));
    }
}
