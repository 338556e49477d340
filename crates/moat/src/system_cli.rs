//! `moat system df` (what images, containers and volumes take, and what could go) and
//! `moat info` (what this engine is and can do).

use std::path::Path;

use crate::image_cli::{human_size, open, CliError};

/// `moat system df`: images, containers and volumes, with what is in use and what could go.
pub fn df(root: &Path) -> Result<(), CliError> {
    use std::collections::HashSet;
    let store = open(root)?;
    let images = store.images()?;
    let layers = store.db().layers()?;
    let size: u64 = layers.iter().map(|l| l.size).sum();
    let paths = moat_engine::Paths::new(root);
    let rows = moat_engine::containers::Records::open(root)
        .and_then(|r| r.all())
        .unwrap_or_default();
    let running = |r: &moat_engine::containers::Row| {
        r.effective().0 == moat_engine::containers::State::Running
    };
    // Images: in use by any container; their layers are not reclaimable.
    let used_images: HashSet<&str> = rows.iter().map(|r| r.image.as_str()).collect();
    let used_layers: HashSet<String> = images
        .iter()
        .filter(|i| used_images.contains(i.row.id.as_str()))
        .flat_map(|i| i.row.layers.iter().map(|d| d.to_string()))
        .collect();
    let used_size: u64 = layers
        .iter()
        .filter(|l| used_layers.contains(l.diff_id.as_str()))
        .map(|l| l.size)
        .sum();
    let active_images = images
        .iter()
        .filter(|i| used_images.contains(i.row.id.as_str()))
        .count();
    // Containers: their writable layers.
    let upper = |r: &moat_engine::containers::Row| du(&paths.container_dir(&r.id).join("upper"));
    let c_size: u64 = rows.iter().map(upper).sum();
    let c_free: u64 = rows.iter().filter(|r| !running(r)).map(upper).sum();
    // Volumes.
    let (v_total, v_active, v_size, v_free) = match moat_engine::volumes::Volumes::open(&paths) {
        Ok(v) => {
            let all = v.all().unwrap_or_default();
            let mut t = (all.len(), 0, 0, 0);
            for vol in &all {
                let s = du(&v.mountpoint(&vol.name));
                t.2 += s;
                if v.users(&vol.name).is_empty() {
                    t.3 += s;
                } else {
                    t.1 += 1;
                }
            }
            t
        }
        Err(_) => (0, 0, 0, 0),
    };
    println!(
        "{:<15} {:<6} {:<7} {:<10} RECLAIMABLE",
        "TYPE", "TOTAL", "ACTIVE", "SIZE"
    );
    let pct = |part: u64, whole: u64| (part * 100).checked_div(whole).unwrap_or(0);
    let line = |kind: &str, total: usize, active: usize, size: u64, free: u64| {
        println!(
            "{kind:<15} {total:<6} {active:<7} {:<10} {} ({}%)",
            human_size(size),
            human_size(free),
            pct(free, size)
        );
    };
    line(
        "Images",
        images.len(),
        active_images,
        size,
        size - used_size.min(size),
    );
    line(
        "Containers",
        rows.len(),
        rows.iter().filter(|r| running(r)).count(),
        c_size,
        c_free,
    );
    line("Local Volumes", v_total, v_active, v_size, v_free);
    println!("{:<15} {:<6} {:<7} {:<10} 0B", "Build Cache", 0, 0, "0B");
    Ok(())
}

/// Bytes of the regular files under `dir` (symlinks not followed).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// `moat system reset -f`: every container removed (running ones killed), the networks'
/// kernel side torn down, then the root's contents deleted. The exit code.
pub fn reset(root: &Path) -> i32 {
    let paths = moat_engine::Paths::new(root);
    let mut code = 0;
    let rows = moat_engine::containers::Records::open(root).and_then(|r| r.all());
    match rows {
        Ok(rows) => {
            for row in rows {
                if let Err(e) = moat_engine::lifecycle::remove(&paths, &row, true, true) {
                    log::error!("{}: {e}", row.name);
                    code = 1;
                }
            }
        }
        Err(e) => {
            log::error!("{e}");
            code = 1;
        }
    }
    // Directories without a record (a create killed half-way) have mounts of their own.
    moat_engine::run::sweep(&paths, std::time::Duration::ZERO);
    if let Err(e) = moat_engine::network::teardown(&paths) {
        log::error!("{e}");
        code = 1;
    }
    if code != 0 {
        // Containers or networks still there: their files stay with them.
        return code;
    }
    // `apply`: the projects' revisions too (else the next `moat serve` would bring them back).
    for d in [
        "image",
        "containers",
        "volumes",
        "network",
        "netns",
        "bin",
        "apply",
    ] {
        let p = root.join(d);
        if p.exists() {
            if let Err(e) = std::fs::remove_dir_all(&p) {
                log::error!("remove {}: {e}", p.display());
                code = 1;
            }
        }
    }
    for f in ["events.jsonl", "events.jsonl.1", "events.lock"] {
        let p = root.join(f);
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::error!("remove {}: {e}", p.display());
                code = 1;
            }
        }
    }
    code
}

/// `moat info` (also `moat system info`): containers and images, the host, and what VM
/// isolation would use here (the accelerator, the hypervisor, the guest kernel and agent).
pub fn info(root: &Path) -> Result<(), CliError> {
    let paths = moat_engine::Paths::new(root);
    let rows = moat_engine::containers::Records::open(root)
        .and_then(|r| r.all())
        .unwrap_or_default();
    let running = rows
        .iter()
        .filter(|r| r.effective().0 == moat_engine::containers::State::Running)
        .count();
    let paused = rows
        .iter()
        .filter(|r| moat_engine::lifecycle::is_paused(&paths, r))
        .count();
    let images = open(root).and_then(|s| Ok(s.images()?.len())).unwrap_or(0);
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("Containers: {}", rows.len());
    println!(" Running: {}", running - paused.min(running));
    println!(" Paused: {paused}");
    println!(" Stopped: {}", rows.len() - running);
    println!("Images: {images}");
    println!("Server Version: {}", env!("CARGO_PKG_VERSION"));
    println!("Storage Driver: overlay");
    println!("Kernel Version: {kernel}");
    println!(
        "CPUs: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "Total Memory: {}",
        human_size(moat_engine::present::host_memory())
    );
    println!("Root Dir: {}", root.display());
    for (k, v) in moat_engine::vm::info() {
        println!("{k}: {v}");
    }
    Ok(())
}
