//! `moat apply`: a compose file's project brought to what the file declares.

use std::path::{Path, PathBuf};

use clap::Args;
use moat_engine::Paths;

/// `moat apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The compose file.
    #[arg(short, long, default_value = "compose.yaml")]
    file: PathBuf,
    /// The project's name (default: the file's `name:`, else its directory's name).
    #[arg(short, long)]
    project: Option<String>,
    /// Print the plan without carrying it out.
    #[arg(long)]
    dry_run: bool,
    /// Remove what the project runs (containers and networks) instead.
    #[arg(long)]
    down: bool,
    /// With --down: the project's volumes too.
    #[arg(short, long)]
    volumes: bool,
}

/// Runs `moat apply`; the exit code.
pub fn apply(root: &Path, a: &ApplyArgs) -> i32 {
    match run(root, a) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

fn run(root: &Path, a: &ApplyArgs) -> Result<(), String> {
    // Containers may be started below: the binary is sealed first, as `run` does
    // (CVE-2019-5736), before anything is opened (the re-exec keeps inherited descriptors).
    let paths = Paths::new(root);
    if !a.dry_run {
        std::fs::create_dir_all(&paths.runtime_root).map_err(|e| e.to_string())?;
        moat_runtime::selfclone::ensure_sealed().map_err(|e| e.to_string())?;
    }
    let file = if a.file == Path::new("compose.yaml") && !a.file.exists() {
        ["compose.yml", "docker-compose.yml", "docker-compose.yaml"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| a.file.clone())
    } else {
        a.file.clone()
    };
    let compose = moat_apply::ComposeFile::load(&file).map_err(|e| e.to_string())?;
    let project = a
        .project
        .clone()
        .or_else(|| compose.name.clone())
        .unwrap_or_else(|| moat_apply::default_project(&file));
    let actions = moat_apply::plan(&paths, &project, &compose, a.down, a.volumes)
        .map_err(|e| e.to_string())?;
    if actions.is_empty() {
        println!("project {project}: no changes");
        return Ok(());
    }
    if a.dry_run {
        println!("project {project}: {} (dry run):", changes(actions.len()));
        for x in &actions {
            println!("  {x}");
        }
        return Ok(());
    }
    if !a.down {
        pull_missing(root, &compose)?;
    }
    println!("project {project}: {}:", changes(actions.len()));
    moat_apply::execute(&paths, actions, &mut |x| println!("  {x}")).map_err(|e| e.to_string())
}

fn changes(n: usize) -> String {
    if n == 1 {
        "1 change".into()
    } else {
        format!("{n} changes")
    }
}

/// The services' images the store lacks are pulled first, as `run` does.
fn pull_missing(root: &Path, compose: &moat_apply::ComposeFile) -> Result<(), String> {
    let store = moat_image::ImageStore::open(&root.join("image")).map_err(|e| e.to_string())?;
    let mut missing = vec![];
    for s in compose.services.values() {
        if let Some(image) = &s.image {
            if store.resolve(image).is_err() && !missing.contains(image) {
                missing.push(image.clone());
            }
        }
    }
    drop(store);
    for image in missing {
        eprintln!("Unable to find image '{image}' locally");
        crate::registry_cli::pull_quietly(root, &image).map_err(|e| e.to_string())?;
    }
    Ok(())
}
