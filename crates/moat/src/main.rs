//! `moat`: a thin command layer over the engine's libraries.
//!
//! `moat runtime ...` is the runc-compatible OCI runtime. The same binary started under the name
//! `moat-runtime` (a symlink) takes runc's command line at the top level, so engines that expect a
//! runc-like program (`dockerd --add-runtime`, `podman --runtime`, containerd) can call it directly.

mod image_cli;
mod logger;
mod run_cli;
mod runtime_cli;

use clap::{Parser, Subcommand};

/// moat: a fast, secure container engine.
#[derive(Debug, Parser)]
#[command(name = "moat", version, about)]
struct Cli {
    /// Root of moat's persistent state (images, containers, volumes).
    #[arg(long, default_value = "/var/lib/moat")]
    root: std::path::PathBuf,
    /// Debug logging.
    #[arg(long)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The OCI runtime (runc-compatible command line).
    Runtime(Box<runtime_cli::RuntimeCli>),
    /// Run a command in a new container (foreground).
    Run(run_cli::RunArgs),
    /// Import a root filesystem (tarball, directory or -) as a one-layer image.
    Import(image_cli::ImportArgs),
    /// List images.
    Images(image_cli::ImagesArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image_cli::ImageCommand),
    /// Tag an image: SOURCE TARGET.
    Tag {
        /// Existing image.
        source: String,
        /// New REPOSITORY[:TAG].
        target: String,
    },
    /// Remove images.
    Rmi(image_cli::RmiArgs),
    /// Save images to a tar archive (docker-archive and OCI layout in one).
    Save(image_cli::SaveArgs),
    /// Load images from a docker-archive or an OCI layout (tar or directory).
    Load(image_cli::LoadArgs),
    /// Manage moat itself.
    #[command(subcommand)]
    System(image_cli::SystemCommand),
}

/// Runs an engine command; errors are printed once, here, and exit with 1.
fn engine(root: &std::path::Path, debug: bool, command: &Command) -> i32 {
    logger::Logger::install(None, false, debug);
    use image_cli::ImageCommand as I;
    let result = match command {
        Command::Runtime(_) | Command::Run(_) => Ok(()),
        Command::Import(a) | Command::Image(I::Import(a)) => image_cli::import(root, a),
        Command::Images(a) | Command::Image(I::Ls(a)) => image_cli::images(root, a),
        Command::Image(I::Inspect { images }) => image_cli::inspect(root, images),
        Command::Tag { source, target } | Command::Image(I::Tag { source, target }) => {
            image_cli::tag(root, source, target)
        }
        Command::Rmi(a) | Command::Image(I::Rm(a)) => image_cli::rmi(root, a),
        Command::Image(I::History { no_trunc, image }) => {
            image_cli::history(root, image, *no_trunc)
        }
        Command::Image(I::Prune { .. }) => image_cli::prune(root),
        Command::System(image_cli::SystemCommand::Df) => image_cli::df(root),
        Command::Save(a) => image_cli::save(root, a),
        Command::Load(a) => image_cli::load(root, a),
        Command::System(image_cli::SystemCommand::Check { repair }) => {
            match image_cli::check(root, *repair) {
                Ok(true) => Ok(()),
                Ok(false) => return 1,
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
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
        let cli = Cli::parse();
        match cli.command {
            Command::Runtime(rt) => runtime_cli::main(*rt),
            Command::Run(a) => {
                logger::Logger::install(None, false, cli.debug);
                run_cli::run(&cli.root, &a)
            }
            other => engine(&cli.root, cli.debug, &other),
        }
    };
    std::process::exit(code);
}
