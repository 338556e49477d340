//! `moat ps`: Docker's table, `-q`, `--filter` and a subset of Go-template `--format`.

use std::io::Write;
use std::path::Path;

use clap::Args;
use moat_engine::containers::{Records, Row, State};
use moat_engine::{lifecycle, Paths};

use moat_engine::present::{host_memory, human_ago, status};

/// `moat ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show every container (default: running ones).
    #[arg(short, long)]
    all: bool,
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate ids and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Filter: id=, name=, label=KEY[=VALUE], status=, ancestor=, exited=CODE; repeatable (the
    /// same key repeated: any of them; different keys: all of them).
    #[arg(short, long)]
    filter: Vec<String>,
    /// Go-template subset: {{.ID}} {{.Image}} {{.Command}} {{.CreatedAt}} {{.RunningFor}}
    /// {{.Status}} {{.State}} {{.Ports}} {{.Names}} {{.Labels}}; a "table " prefix adds a header.
    #[arg(long)]
    format: Option<String>,
}

/// `moat ps`.
pub fn ps(root: &Path, a: &PsArgs) -> i32 {
    let paths = Paths::new(root);
    let rows = match Records::open(root).and_then(|r| r.all()) {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let filters = match Filters::parse(&a.filter) {
        Ok(f) => f,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    // A status or exited filter looks at stopped containers too, as Docker's does.
    let all = a.all || filters.implies_all();
    let shown: Vec<&Row> = rows
        .iter()
        .filter(|r| all || r.effective().0 == State::Running)
        .filter(|r| filters.matches(&paths, r))
        .collect();
    if let Some(f) = &a.format {
        return formatted(&paths, f, &shown, a.no_trunc);
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for r in shown {
            let id = if a.no_trunc { &r.id[..] } else { &r.id[..12] };
            let _ = writeln!(out, "{id}");
        }
        return 0;
    }
    let mut table = vec![[
        "CONTAINER ID".to_string(),
        "IMAGE".into(),
        "COMMAND".into(),
        "CREATED".into(),
        "STATUS".into(),
        "PORTS".into(),
        "NAMES".into(),
    ]];
    let ports = moat_engine::network::published(&paths);
    for r in shown {
        let mut cmd = r.command.join(" ");
        if !a.no_trunc && cmd.chars().count() > 20 {
            cmd = cmd.chars().take(19).collect::<String>() + "…";
        }
        table.push([
            if a.no_trunc {
                r.id.clone()
            } else {
                r.id[..12].to_string()
            },
            r.image_ref.clone(),
            format!("\"{cmd}\""),
            human_ago(&r.created),
            status(&paths, r),
            moat_engine::network::ports_text(&ports, &r.id),
            r.name.clone(),
        ]);
    }
    let rows: Vec<Vec<String>> = table.iter().map(|r| r.to_vec()).collect();
    crate::table::write(&mut out, &rows);
    0
}

/// A container's Docker state word (`paused` included).
fn state_word(paths: &Paths, row: &Row) -> &'static str {
    match row.effective().0 {
        State::Running if lifecycle::is_paused(paths, row) => "paused",
        s => s.as_str(),
    }
}

/// The container's labels (its config's annotations, moat's own excluded).
fn labels(paths: &Paths, row: &Row) -> Vec<(String, String)> {
    moat_engine::inspect::labels(paths, &row.id)
}

/// `--filter` values by key.
#[derive(Debug, Default)]
struct Filters(Vec<(String, Vec<String>)>);

impl Filters {
    fn parse(list: &[String]) -> Result<Filters, String> {
        let mut f = Filters::default();
        for item in list {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("bad format of filter {item:?} (expected name=value)"))?;
            if !["id", "name", "label", "status", "ancestor", "exited"].contains(&k) {
                return Err(format!("invalid filter {k:?}"));
            }
            if k == "status"
                && ![
                    "created",
                    "running",
                    "paused",
                    "exited",
                    "restarting",
                    "removing",
                    "dead",
                ]
                .contains(&v)
            {
                return Err(format!("invalid filter 'status={v}'"));
            }
            match f.0.iter_mut().find(|(key, _)| key == k) {
                Some((_, vals)) => vals.push(v.to_string()),
                None => f.0.push((k.to_string(), vec![v.to_string()])),
            }
        }
        Ok(f)
    }

    fn implies_all(&self) -> bool {
        self.0.iter().any(|(k, _)| k == "status" || k == "exited")
    }

    fn matches(&self, paths: &Paths, row: &Row) -> bool {
        self.0.iter().all(|(k, vals)| {
            vals.iter().any(|v| match k.as_str() {
                "id" => row.id.starts_with(v.as_str()),
                "name" => row.name.contains(v.as_str()),
                "status" => state_word(paths, row) == v,
                "ancestor" => {
                    row.image_ref == *v
                        || row
                            .image
                            .trim_start_matches("sha256:")
                            .starts_with(v.trim_start_matches("sha256:"))
                }
                "exited" => row.effective().0 == State::Exited && v.parse() == Ok(row.exit_code),
                "label" => {
                    let (lk, lv) = v
                        .split_once('=')
                        .map_or((v.as_str(), None), |(a, b)| (a, Some(b)));
                    labels(paths, row)
                        .iter()
                        .any(|(k, val)| k == lk && lv.is_none_or(|x| x == val))
                }
                _ => false,
            })
        })
    }
}

/// `--format`: each `{{.Field}}` replaced; "table " adds a header row.
fn formatted(paths: &Paths, format: &str, rows: &[&Row], no_trunc: bool) -> i32 {
    let (table, tpl) = match format.strip_prefix("table") {
        Some(rest) => (true, rest.trim_start().to_string()),
        None => (false, format.to_string()),
    };
    let tpl = tpl.replace("\\t", "\t").replace("\\n", "\n");
    const FIELDS: [(&str, &str); 10] = [
        ("ID", "CONTAINER ID"),
        ("Image", "IMAGE"),
        ("Command", "COMMAND"),
        ("CreatedAt", "CREATED AT"),
        ("RunningFor", "CREATED"),
        ("Status", "STATUS"),
        ("State", "STATE"),
        ("Ports", "PORTS"),
        ("Names", "NAMES"),
        ("Labels", "LABELS"),
    ];
    // Every {{...}} must be a known field: an unknown one is an error, not silence.
    let mut rest = tpl.as_str();
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            log::error!("template: unclosed action in {format:?}");
            return 1;
        };
        let inner = rest[start + 2..start + end].trim();
        let known = inner
            .strip_prefix('.')
            .is_some_and(|f| FIELDS.iter().any(|(n, _)| *n == f));
        if !known {
            log::error!("template: can't evaluate {{{{{inner}}}}}: not a field of a container");
            return 1;
        }
        rest = &rest[start + end + 2..];
    }
    let render = |value: &dyn Fn(&str) -> String| -> String {
        let mut out = tpl.clone();
        for (name, _) in FIELDS {
            let key = format!("{{{{.{name}}}}}");
            if out.contains(&key) {
                out = out.replace(&key, &value(name));
            }
        }
        out
    };
    let mut out = std::io::stdout().lock();
    if table {
        let header = render(&|name| {
            FIELDS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, h)| h.to_string())
                .unwrap_or_default()
        });
        let _ = writeln!(out, "{header}");
    }
    let ports = moat_engine::network::published(paths);
    for r in rows {
        let line = render(&|name| match name {
            "Ports" => moat_engine::network::ports_text(&ports, &r.id),
            "ID" if no_trunc => r.id.clone(),
            "ID" => r.id[..12].to_string(),
            "Image" => r.image_ref.clone(),
            "Command" => format!("\"{}\"", r.command.join(" ")),
            "CreatedAt" => r.created.clone(),
            "RunningFor" => human_ago(&r.created),
            "Status" => status(paths, r),
            "State" => state_word(paths, r).to_string(),
            "Names" => r.name.clone(),
            "Labels" => labels(paths, r)
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            _ => String::new(),
        });
        let _ = writeln!(out, "{line}");
    }
    0
}

/// `moat stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one sample and exit (otherwise: a new one every second).
    #[arg(long)]
    no_stream: bool,
    /// Containers (default: every running one).
    containers: Vec<String>,
}

/// `moat stats`: Docker's columns (network and block I/O not measured yet: shown as --).
pub fn stats(root: &Path, a: &StatsArgs) -> i32 {
    let paths = Paths::new(root);
    loop {
        let rows = match Records::open(root).and_then(|r| {
            if a.containers.is_empty() {
                Ok(r.all()?
                    .into_iter()
                    .filter(|x| x.effective().0 == State::Running)
                    .collect())
            } else {
                a.containers
                    .iter()
                    .map(|n| r.find(n))
                    .collect::<Result<Vec<_>, _>>()
            }
        }) {
            Ok(r) => r,
            Err(e) => {
                log::error!("{e}");
                return 1;
            }
        };
        let mut lines: Vec<Vec<String>> = vec![[
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "NET I/O",
            "BLOCK I/O",
            "PIDS",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect()];
        for row in &rows {
            match lifecycle::stats(&paths, row, std::time::Duration::from_millis(200)) {
                Ok((u, cpu)) => {
                    let limit = if u.memory_limit >= 1 << 62 {
                        host_memory()
                    } else {
                        u.memory_limit
                    };
                    let pct = if limit > 0 {
                        u.memory as f64 / limit as f64 * 100.0
                    } else {
                        0.0
                    };
                    lines.push(vec![
                        row.id[..12].to_string(),
                        row.name.clone(),
                        format!("{cpu:.2}%"),
                        format!("{} / {}", binary_size(u.memory), binary_size(limit)),
                        format!("{pct:.2}%"),
                        {
                            let net = moat_engine::present::net_io(row.pid);
                            let (rx, tx) = net.iter().fold((0, 0), |a, n| (a.0 + n.1, a.1 + n.2));
                            format!(
                                "{} / {}",
                                crate::image_cli::human_size(rx),
                                crate::image_cli::human_size(tx)
                            )
                        },
                        format!(
                            "{} / {}",
                            crate::image_cli::human_size(u.block_read),
                            crate::image_cli::human_size(u.block_write)
                        ),
                        u.pids.to_string(),
                    ]);
                }
                Err(e) if !a.containers.is_empty() => {
                    log::error!("{e}");
                    return 1;
                }
                Err(_) => {} // it stopped meanwhile
            }
        }
        let mut out = std::io::stdout().lock();
        if !a.no_stream {
            // Clear the screen and go home, as Docker's live view does.
            let _ = write!(out, "\x1b[2J\x1b[H");
        }
        crate::table::write(&mut out, &lines);
        let _ = out.flush();
        if a.no_stream {
            return 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(800));
    }
}

/// Docker's binary sizes for stats (`1.5MiB`).
fn binary_size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", units[i])
    }
}
