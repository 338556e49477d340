//! `moat`: a thin command layer over the engine's libraries.
//!
//! `moat runtime ...` is the runc-compatible OCI runtime. The same binary started under the name
//! `moat-runtime` (a symlink) takes runc's command line at the top level, so engines that expect a
//! runc-like program (`dockerd --add-runtime`, `podman --runtime`, containerd) can call it directly.

mod logger;
mod runtime_cli;

use clap::{Parser, Subcommand};

/// moat: a fast, secure container engine.
#[derive(Debug, Parser)]
#[command(name = "moat", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The OCI runtime (runc-compatible command line).
    Runtime(runtime_cli::RuntimeCli),
}

fn main() {
    let invoked_as_runtime = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .is_some_and(|n| n == "moat-runtime");
    let code = if invoked_as_runtime {
        runtime_cli::main(runtime_cli::RuntimeCli::parse())
    } else {
        match Cli::parse().command {
            Command::Runtime(rt) => runtime_cli::main(rt),
        }
    };
    std::process::exit(code);
}
