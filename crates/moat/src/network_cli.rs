//! `moat network create | ls | inspect | rm | connect | disconnect | prune` and `moat port`, with Docker's output.

use std::collections::BTreeMap;
use std::path::Path;

use clap::Subcommand;
use moat_engine::{EngineError, Paths};

/// `moat network ...`.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network; prints its id.
    Create {
        /// Driver (only bridge).
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR form (one from the default pools when absent).
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway (the subnet's first address when absent).
        #[arg(long)]
        gateway: Option<String>,
        /// No traffic to or from outside the network.
        #[arg(long)]
        internal: bool,
        /// Set a label KEY=VALUE; repeatable.
        #[arg(long)]
        label: Vec<String>,
        /// Driver option KEY=VALUE (com.docker.network.driver.mtu); repeatable.
        #[arg(short, long = "opt")]
        opt: Vec<String>,
        /// Network name.
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only ids.
        #[arg(short, long)]
        quiet: bool,
        /// Full ids.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Show networks as JSON.
    Inspect {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while a container runs on one).
    #[command(alias = "remove")]
    Rm {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a container to a network (a running one gets the interface at once).
    Connect {
        /// Address on the network.
        #[arg(long)]
        ip: Option<String>,
        /// Another name of the container on the network.
        #[arg(long)]
        alias: Vec<String>,
        /// Network.
        network: String,
        /// Container.
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// Accepted for Docker's command line.
        #[arg(short, long)]
        force: bool,
        /// Network.
        network: String,
        /// Container.
        container: String,
    },
    /// Remove the user-defined networks no container uses.
    Prune {
        /// Do not ask (moat never asks).
        #[arg(short, long)]
        force: bool,
    },
}

/// Runs a network command; the exit code.
pub fn network(root: &Path, cmd: &NetworkCommand) -> i32 {
    match run(root, cmd) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

fn pairs(list: &[String]) -> Result<BTreeMap<String, String>, EngineError> {
    list.iter()
        .map(|l| moat_engine::hostconfig::parse_label(l).map_err(EngineError::from))
        .collect()
}

fn run(root: &Path, cmd: &NetworkCommand) -> Result<i32, EngineError> {
    let paths = Paths::new(root);
    let mut nets = moat_engine::network::open(&paths)?;
    match cmd {
        NetworkCommand::Create {
            driver,
            subnet,
            gateway,
            internal,
            label,
            opt,
            name,
        } => {
            let spec = moat_net::NetworkSpec {
                name: name.clone(),
                driver: driver.clone(),
                subnet: subnet
                    .as_deref()
                    .map(|s| {
                        s.parse().map_err(|_| {
                            EngineError::Spec(format!("invalid subnet {s:?}: expected CIDR"))
                        })
                    })
                    .transpose()?,
                gateway: gateway
                    .as_deref()
                    .map(moat_engine::network::parse_ip)
                    .transpose()?,
                internal: *internal,
                labels: pairs(label)?,
                options: pairs(opt)?,
            };
            println!("{}", nets.create(&spec)?.id);
        }
        NetworkCommand::Ls { quiet, no_trunc } => {
            nets.reconcile()?;
            let all = nets.list()?;
            let id = |n: &moat_net::Network| {
                if *no_trunc {
                    n.id.clone()
                } else {
                    n.id[..12].to_string()
                }
            };
            let mut rows = vec![vec![
                "NETWORK ID".to_string(),
                "NAME".into(),
                "DRIVER".into(),
                "SCOPE".into(),
            ]];
            for n in &all {
                if *quiet {
                    println!("{}", id(n));
                } else {
                    rows.push(vec![
                        id(n),
                        n.name.clone(),
                        n.driver.clone(),
                        "local".into(),
                    ]);
                }
            }
            if !quiet {
                crate::table::write(&mut std::io::stdout(), &rows);
            }
        }
        NetworkCommand::Inspect { names } => {
            let eps = nets.endpoints()?;
            let mut out = vec![];
            let mut code = 0;
            for n in names {
                match nets.get(n) {
                    Ok(net) => out.push(moat_net::inspect(&net, &eps)),
                    Err(e) => {
                        log::error!("{e}");
                        code = 1;
                    }
                }
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&out).unwrap_or_else(|_| "[]".into())
            );
            return Ok(code);
        }
        NetworkCommand::Rm { names } => {
            let mut code = 0;
            for n in names {
                match nets.remove(n) {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        log::error!("{e}");
                        code = 1;
                    }
                }
            }
            return Ok(code);
        }
        NetworkCommand::Connect {
            ip,
            alias,
            network,
            container,
        } => {
            let row = moat_engine::containers::Records::open(&paths.root)?.find(container)?;
            let req = moat_net::Request {
                network: network.clone(),
                ip: ip
                    .as_deref()
                    .map(moat_engine::network::parse_ip)
                    .transpose()?,
                mac: None,
                aliases: alias.clone(),
            };
            moat_engine::network::connect(&paths, &row, req)?;
        }
        NetworkCommand::Disconnect {
            network, container, ..
        } => {
            let row = moat_engine::containers::Records::open(&paths.root)?.find(container)?;
            moat_engine::network::disconnect(&paths, &row, network)?;
        }
        NetworkCommand::Prune { .. } => {
            nets.reconcile()?;
            let eps = nets.endpoints()?;
            let mut removed = vec![];
            for n in nets.list()? {
                let used = eps.iter().any(|e| e.network_id == n.id)
                    || !moat_engine::network::users(&paths, &n.name).is_empty();
                if !n.is_predefined() && !used {
                    nets.remove(&n.id)?;
                    removed.push(n.name);
                }
            }
            if !removed.is_empty() {
                println!("Deleted Networks:");
                for n in removed {
                    println!("{n}");
                }
            }
        }
    }
    Ok(0)
}

/// `moat port CONTAINER [PORT[/PROTO]]`: the published ports of a running container.
pub fn port(root: &Path, container: &str, which: Option<&str>) -> i32 {
    let paths = Paths::new(root);
    let found = (|| -> Result<Vec<moat_net::Port>, EngineError> {
        let row = moat_engine::containers::Records::open(&paths.root)?.find(container)?;
        let nets = moat_engine::network::open(&paths)?;
        Ok(nets
            .ports()?
            .into_iter()
            .filter(|p| p.container_id == row.id)
            .collect())
    })();
    let ports = match found {
        Ok(p) => p,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let want = which.map(|w| {
        let (p, proto) = w.split_once('/').unwrap_or((w, "tcp"));
        (p.to_string(), proto.to_string())
    });
    let mut shown = 0;
    for p in &ports {
        let key = (p.container_port.to_string(), p.proto.clone());
        match &want {
            Some(w) if *w == key => println!("{}:{}", p.host_ip, p.host_port),
            Some(_) => continue,
            None => println!(
                "{}/{} -> {}:{}",
                p.container_port, p.proto, p.host_ip, p.host_port
            ),
        }
        shown += 1;
    }
    if let (Some(w), 0) = (which, shown) {
        log::error!("no public port '{w}' published for {container}");
        return 1;
    }
    0
}
