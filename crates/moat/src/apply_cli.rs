//! `moat apply`: a compose file's project brought to what the file declares.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use moat_engine::Paths;

/// `moat apply`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ApplyArgs {
    /// `history` or `rollback` (none: apply the file).
    #[command(subcommand)]
    command: Option<ApplyCommand>,
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

/// `moat apply history|rollback`.
#[derive(Debug, Subcommand)]
pub enum ApplyCommand {
    /// The project's applied revisions, oldest first.
    History(Which),
    /// Apply an earlier revision again (default: the one before the latest); it becomes the
    /// latest.
    Rollback {
        /// The project.
        #[command(flatten)]
        which: Which,
        /// The revision to go back to.
        revision: Option<i64>,
        /// Print the plan without carrying it out.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which project: by name, or the one a compose file names.
#[derive(Debug, Args)]
pub struct Which {
    /// The compose file whose project it is.
    #[arg(short, long, default_value = "compose.yaml")]
    file: PathBuf,
    /// The project's name.
    #[arg(short, long)]
    project: Option<String>,
}

/// Runs `moat apply`; the exit code.
pub fn apply(root: &Path, a: &ApplyArgs) -> i32 {
    let result = match &a.command {
        None => run(root, a),
        Some(ApplyCommand::History(w)) => history(root, w),
        Some(ApplyCommand::Rollback {
            which,
            revision,
            dry_run,
        }) => rollback(root, which, *revision, *dry_run),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// `moat down -p PROJECT [-v]`: as `moat apply --down -p PROJECT` (no file needed).
pub fn down(root: &Path, project: &str, volumes: bool) -> i32 {
    apply(
        root,
        &ApplyArgs {
            command: None,
            file: PathBuf::from("/nonexistent/compose.yaml"),
            project: Some(project.to_string()),
            dry_run: false,
            down: true,
            volumes,
        },
    )
}

/// The compose file: `file`, or when it is the default and missing, Compose's other names.
fn compose_path(file: &Path) -> PathBuf {
    if file == Path::new("compose.yaml") && !file.exists() {
        ["compose.yml", "docker-compose.yml", "docker-compose.yaml"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| file.to_path_buf())
    } else {
        file.to_path_buf()
    }
}

/// The project `w` names: `-p`, else the file's `name:`, else its directory's name.
fn project_of(w: &Which) -> Result<String, String> {
    if let Some(p) = &w.project {
        moat_apply::plan::check_project(p).map_err(|e| e.to_string())?;
        return Ok(p.clone());
    }
    let file = compose_path(&w.file);
    let compose = moat_apply::ComposeFile::load(&file).map_err(|e| e.to_string())?;
    Ok(compose
        .name
        .clone()
        .unwrap_or_else(|| moat_apply::default_project(&file)))
}

fn run(root: &Path, a: &ApplyArgs) -> Result<(), String> {
    let file = compose_path(&a.file);
    // `--down -p PROJECT` needs no file: the project's last declaration says which volumes
    // are its own.
    if a.down && !file.exists() {
        if let Some(project) = &a.project {
            moat_apply::plan::check_project(project).map_err(|e| e.to_string())?;
            let last = moat_apply::revisions::Revisions::open(root)
                .and_then(|r| r.list(project))
                .map_err(|e| e.to_string())?
                .into_iter()
                .rev()
                .find(|r| !r.is_down());
            let compose = match last {
                Some(r) => r.load(project).unwrap_or_default(),
                None => moat_apply::ComposeFile::default(),
            };
            let down = moat_apply::revisions::down();
            return converge(root, project, &compose, true, a.volumes, a.dry_run, down);
        }
    }
    let (mut compose, mut revision) =
        moat_apply::revisions::capture(&file, &moat_apply::ComposeFile::variables(&file))
            .map_err(|e| e.to_string())?;
    let project = a
        .project
        .clone()
        .or_else(|| compose.name.clone())
        .unwrap_or_else(|| moat_apply::default_project(&file));
    moat_apply::plan::check_project(&project).map_err(|e| e.to_string())?;
    let revision = if a.down {
        moat_apply::revisions::down()
    } else {
        // Secrets and configs are projected from copies the revision keeps.
        if !a.dry_run {
            moat_apply::revisions::freeze(root, &mut compose, &mut revision)
                .map_err(|e| e.to_string())?;
        }
        revision
    };
    converge(
        root, &project, &compose, a.down, a.volumes, a.dry_run, revision,
    )
}

/// Brings `project` to `compose` (to nothing with `down`), printing the plan, and records
/// `revision` as applied.
fn converge(
    root: &Path,
    project: &str,
    compose: &moat_apply::ComposeFile,
    down: bool,
    volumes: bool,
    dry_run: bool,
    revision: moat_apply::revisions::Revision,
) -> Result<(), String> {
    // Containers may be started below: the binary is sealed first, as `run` does
    // (CVE-2019-5736), before anything is opened (the re-exec keeps inherited descriptors).
    let paths = Paths::new(root);
    if !dry_run {
        std::fs::create_dir_all(&paths.runtime_root).map_err(|e| e.to_string())?;
        moat_runtime::selfclone::ensure_sealed().map_err(|e| e.to_string())?;
    }
    // One change of a project at a time (another `moat apply`, the reconciler of `moat serve`).
    let _held = if dry_run {
        None
    } else {
        moat_apply::reconcile::lock(root, project, true).map_err(|e| e.to_string())?
    };
    let actions =
        moat_apply::plan(&paths, project, compose, down, volumes).map_err(|e| e.to_string())?;
    let record = |revision| -> Result<i64, String> {
        moat_apply::revisions::Revisions::open(root)
            .and_then(|mut r| r.record(project, revision))
            .map_err(|e| e.to_string())
    };
    if actions.is_empty() {
        if !dry_run {
            record(revision)?;
        }
        println!("project {project}: no changes");
        return Ok(());
    }
    if dry_run {
        println!("project {project}: {} (dry run):", changes(actions.len()));
        for x in &actions {
            println!("  {x}");
        }
        return Ok(());
    }
    if !down {
        pull_missing(root, compose)?;
    }
    println!("project {project}: {}:", changes(actions.len()));
    let done = moat_apply::execute(&paths, actions, &mut |x| println!("  {x}"));
    if let Err(e) = done {
        // Recorded as failed: `moat serve` leaves the project as the failure left it.
        let failed = moat_apply::revisions::Revision {
            failed: true,
            ..revision
        };
        let _ = record(failed);
        return Err(e.to_string());
    }
    let n = record(revision)?;
    println!("project {project}: revision {n}");
    Ok(())
}

/// `moat apply history`.
fn history(root: &Path, w: &Which) -> Result<(), String> {
    let project = project_of(w)?;
    let revs = moat_apply::revisions::Revisions::open(root)
        .and_then(|r| r.list(&project))
        .map_err(|e| e.to_string())?;
    let mut rows = vec![vec![
        "REVISION".to_string(),
        "APPLIED".into(),
        "STATUS".into(),
        "SERVICES".into(),
        "FILE".into(),
    ]];
    for r in &revs {
        let services = if r.is_down() {
            "(down)".to_string()
        } else {
            r.load(&project)
                .map(|f| f.services.keys().cloned().collect::<Vec<_>>().join(","))
                .unwrap_or_else(|e| format!("(does not load: {e})"))
        };
        rows.push(vec![
            r.number.to_string(),
            moat_engine::present::human_ago(&r.created),
            if r.failed { "failed" } else { "applied" }.to_string(),
            services,
            r.path.display().to_string(),
        ]);
    }
    crate::table::write(&mut std::io::stdout().lock(), &rows);
    Ok(())
}

/// `moat apply rollback`.
fn rollback(root: &Path, w: &Which, number: Option<i64>, dry_run: bool) -> Result<(), String> {
    let project = project_of(w)?;
    let revs = moat_apply::revisions::Revisions::open(root).map_err(|e| e.to_string())?;
    let rev = match number {
        Some(n) => revs.get(&project, n),
        None => revs.previous(&project),
    }
    .map_err(|e| e.to_string())?;
    drop(revs);
    println!("project {project}: back to revision {}", rev.number);
    let compose = if rev.is_down() {
        moat_apply::ComposeFile::default()
    } else {
        rev.load(&project).map_err(|e| e.to_string())?
    };
    converge(root, &project, &compose, rev.is_down(), false, dry_run, rev)
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
