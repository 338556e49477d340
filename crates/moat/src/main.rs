//! `moat`: a thin command layer over the engine's libraries.
//!
//! `moat runtime ...` is the runc-compatible OCI runtime. The same binary started under the name
//! `moat-runtime` (a symlink) takes runc's command line at the top level, so engines that expect a
//! runc-like program (`dockerd --add-runtime`, `podman --runtime`, containerd) can call it directly.

mod apply_cli;
mod attach_cli;
mod container_cli;
mod events_cli;
mod image_cli;
mod init_cli;
mod logger;
mod network_cli;
mod ps_cli;
mod registry_cli;
mod run_cli;
mod runtime_cli;
mod system_cli;
mod table;
mod volume_cli;

use clap::{Parser, Subcommand};

/// moat: a fast, secure container engine.
#[derive(Debug, Parser)]
#[command(name = "moat", version, about)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

/// The options before the command, for every command.
#[derive(Debug, clap::Args)]
struct Globals {
    /// Root of moat's persistent state (images, containers, volumes).
    #[arg(long, default_value = "/var/lib/moat")]
    root: std::path::PathBuf,
    /// Debug logging.
    #[arg(long)]
    debug: bool,
}

/// `moat run` alone: building clap's whole command tree costs about 0.6 ms, a twentieth of a
/// container's start, so the hot commands are parsed by parsers that know only them (same
/// options, same help).
#[derive(Debug, Parser)]
#[command(name = "moat", version, about)]
struct RunCli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: RunOnly,
}

#[derive(Debug, Subcommand)]
enum RunOnly {
    /// Run a command in a new container.
    Run(run_cli::RunArgs),
}

/// The monitor's command line, for the binary exec'd as `moat-monitor` (see [`RunCli`]).
#[derive(Debug, Parser)]
#[command(name = "moat")]
struct MonitorCli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: MonitorOnly,
}

#[derive(Debug, Subcommand)]
enum MonitorOnly {
    /// The monitor of one container.
    Monitor(MonitorArgs),
}

/// The monitor's options (see [`moat_engine::lifecycle::MonitorFlags`]).
#[derive(Debug, clap::Args)]
struct MonitorArgs {
    /// Container id.
    id: String,
    /// Started ahead of the container: the real command line comes on a pipe.
    #[arg(long)]
    pending: bool,
    /// Copy the output to stdout/stderr too.
    #[arg(long)]
    attach: bool,
    /// The container reads stdin.
    #[arg(long)]
    stdin: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// The container has a terminal.
    #[arg(long)]
    tty: bool,
    /// Restart policy.
    #[arg(long, default_value = "no")]
    restart: String,
    /// Log rotation ("max_size max_file").
    #[arg(long, default_value = "")]
    log_rotation: String,
    /// The container's name (its name on its networks).
    #[arg(long, default_value = "")]
    name: String,
    /// The container's image, as the user named it (for its events).
    #[arg(long, default_value = "")]
    image: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The OCI runtime (runc-compatible command line).
    Runtime(Box<runtime_cli::RuntimeCli>),
    /// Run a command in a new container.
    Run(run_cli::RunArgs),
    /// Create a container (without starting it); prints its id.
    Create(run_cli::RunArgs),
    /// Start containers.
    Start(attach_cli::StartArgs),
    /// Stop containers (signal, then SIGKILL after a timeout).
    Stop(container_cli::StopArgs),
    /// Send a signal to containers.
    Kill(container_cli::KillArgs),
    /// Attach to a running container: its output here, our keys to its terminal.
    Attach(attach_cli::AttachArgs),
    /// Remove containers.
    Rm(container_cli::RmArgs),
    /// List containers.
    Ps(ps_cli::PsArgs),
    /// Show a container's logs.
    Logs(container_cli::LogsArgs),
    /// Run a command in a running container.
    Exec(container_cli::ExecArgs),
    /// Wait for containers to exit; print their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show containers (or images) as JSON.
    Inspect {
        /// Containers or images.
        #[arg(required = true)]
        names: Vec<String>,
        /// Format each result with a Go template ({{.State.Status}}, {{json .Config}}, ...).
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Change containers' resource limits and restart policy.
    Update(container_cli::UpdateArgs),
    /// Rename a container.
    Rename {
        /// Container.
        container: String,
        /// New name.
        new_name: String,
    },
    /// Make an image from a container's changes (one new layer).
    Commit(container_cli::CommitArgs),
    /// Pause every process of containers.
    Pause {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Resume paused containers.
    Unpause {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart containers.
    Restart(container_cli::StopArgs),
    /// Show a container's processes.
    Top {
        /// Container.
        container: String,
    },
    /// Show containers' resource usage.
    Stats(ps_cli::StatsArgs),
    /// Copy files between a container and the host (CONTAINER:PATH on one side).
    Cp {
        /// Keep the owners of what is copied in (without it, it belongs to root).
        #[arg(short, long)]
        archive: bool,
        /// CONTAINER:PATH or a host path.
        src: String,
        /// CONTAINER:PATH or a host path.
        dest: String,
    },
    /// Manage containers.
    #[command(subcommand)]
    Container(container_cli::ContainerCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume_cli::VolumeCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(network_cli::NetworkCommand),
    /// Bring a compose file's project to what the file declares (create, replace, remove).
    Apply(apply_cli::ApplyArgs),
    /// Remove what a project `moat apply` made runs (as `moat apply --down -p PROJECT`).
    Down {
        /// The project.
        #[arg(short, long)]
        project: String,
        /// Its volumes too.
        #[arg(short, long)]
        volumes: bool,
    },
    /// List a container's published ports, or the host address of one.
    Port {
        /// Container name or id.
        container: String,
        /// PORT[/PROTO].
        port: Option<String>,
    },
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
    /// Pull an image from a registry.
    Pull(registry_cli::PullArgs),
    /// Push an image to a registry.
    Push(registry_cli::PushArgs),
    /// Log in to a registry (credentials kept in Docker's config.json).
    Login(registry_cli::LoginArgs),
    /// Log out from a registry.
    Logout {
        /// Registry (default: Docker Hub).
        server: Option<String>,
    },
    /// Serve the Docker Engine API (for the docker CLI, docker-py, compose).
    Serve {
        /// Where to listen: unix:///PATH or tcp://ADDR:PORT (repeatable).
        #[arg(
            short = 'H',
            long = "host",
            default_value = "unix:///run/moat/moat.sock"
        )]
        hosts: Vec<String>,
    },
    /// What this engine is and can do: containers, images, the host, VM isolation.
    Info,
    /// Events: containers created, started, stopped, dead, removed, their health, and more.
    Events(events_cli::EventsArgs),
    /// Manage moat itself.
    #[command(subcommand)]
    System(image_cli::SystemCommand),
}

/// Runs an engine command; errors are printed once, here, and exit with 1.
fn engine(root: &std::path::Path, debug: bool, command: &Command) -> i32 {
    logger::Logger::install(None, false, debug);
    use container_cli::ContainerCommand as C;
    use image_cli::ImageCommand as I;
    let result = match command {
        Command::Runtime(_) | Command::Run(_) | Command::Create(_) => Ok(()),
        Command::Start(a) | Command::Container(C::Start(a)) => return attach_cli::start(root, a),
        Command::Stop(a) | Command::Container(C::Stop(a)) => return container_cli::stop(root, a),
        Command::Kill(a) | Command::Container(C::Kill(a)) => return container_cli::kill(root, a),
        Command::Attach(a) => return attach_cli::attach(root, a),
        Command::Rm(a) | Command::Container(C::Rm(a)) => return container_cli::rm(root, a),
        Command::Ps(a) | Command::Container(C::Ls(a)) => return ps_cli::ps(root, a),
        Command::Logs(a) | Command::Container(C::Logs(a)) => return container_cli::logs(root, a),
        Command::Exec(a) | Command::Container(C::Exec(a)) => return container_cli::exec(root, a),
        Command::Wait { containers } | Command::Container(C::Wait { containers }) => {
            return container_cli::wait(root, containers)
        }
        Command::Container(C::Inspect { containers, format }) => {
            return container_cli::inspect(root, containers, format.as_deref())
        }
        Command::Inspect { names, format } => return inspect_any(root, names, format.as_deref()),
        Command::Update(a) => return container_cli::update(root, a),
        Command::Rename {
            container,
            new_name,
        }
        | Command::Container(C::Rename {
            container,
            new_name,
        }) => return container_cli::rename(root, container, new_name),
        Command::Container(C::Prune { .. }) => return container_cli::prune(root),
        Command::Volume(v) => return volume_cli::volume(root, v),
        Command::Network(n) => return network_cli::network(root, n),
        Command::Apply(a) => return apply_cli::apply(root, a),
        Command::Down { project, volumes } => return apply_cli::down(root, project, *volumes),
        Command::Port { container, port } => {
            return network_cli::port(root, container, port.as_deref())
        }
        Command::System(image_cli::SystemCommand::Reset { .. }) => return system_cli::reset(root),
        Command::Commit(a) | Command::Container(C::Commit(a)) => {
            return container_cli::commit(root, a)
        }
        Command::Pause { containers } | Command::Container(C::Pause { containers }) => {
            return container_cli::pause(root, containers)
        }
        Command::Unpause { containers } | Command::Container(C::Unpause { containers }) => {
            return container_cli::unpause(root, containers)
        }
        Command::Restart(a) | Command::Container(C::Restart(a)) => {
            return container_cli::restart(root, a)
        }
        Command::Stats(a) | Command::Container(C::Stats(a)) => return ps_cli::stats(root, a),
        Command::Cp { archive, src, dest } | Command::Container(C::Cp { archive, src, dest }) => {
            return container_cli::cp(root, src, dest, *archive)
        }
        Command::Top { container } | Command::Container(C::Top { container }) => {
            return container_cli::top(root, container)
        }
        Command::Import(a) | Command::Image(I::Import(a)) => image_cli::import(root, a),
        Command::Images(a) | Command::Image(I::Ls(a)) => image_cli::images(root, a),
        Command::Image(I::Inspect { images, format }) => {
            image_cli::inspect(root, images, format.as_deref())
        }
        Command::Tag { source, target } | Command::Image(I::Tag { source, target }) => {
            image_cli::tag(root, source, target)
        }
        Command::Rmi(a) | Command::Image(I::Rm(a)) => image_cli::rmi(root, a),
        Command::Image(I::History { no_trunc, image }) => {
            image_cli::history(root, image, *no_trunc)
        }
        Command::Image(I::Prune { .. }) => image_cli::prune(root),
        Command::System(image_cli::SystemCommand::Df) => system_cli::df(root),
        Command::System(image_cli::SystemCommand::Info) | Command::Info => system_cli::info(root),
        Command::System(image_cli::SystemCommand::Events(a)) | Command::Events(a) => {
            return events_cli::events(root, a)
        }
        Command::Pull(a) => return report(registry_cli::pull(root, a)),
        Command::Push(a) => return report(registry_cli::push(root, a)),
        Command::Login(a) => return report(registry_cli::login(a)),
        Command::Logout { server } => return report(registry_cli::logout(server.as_deref())),
        Command::Serve { hosts } => return serve(root, hosts),
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

/// `moat serve`: the Docker API until SIGINT/SIGTERM.
fn serve(root: &std::path::Path, hosts: &[String]) -> i32 {
    let hosts: Vec<moat_api::Host> = match hosts.iter().map(|h| h.parse()).collect() {
        Ok(h) => h,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let paths = moat_engine::Paths::new(root);
    if let Err(e) = std::fs::create_dir_all(&paths.runtime_root) {
        log::error!("create {}: {e}", paths.runtime_root.display());
        return 1;
    }
    // The server starts monitors from /proc/self/exe: it must run from a sealed copy
    // (CVE-2019-5736), before it has threads.
    if let Err(e) = moat_runtime::selfclone::ensure_sealed() {
        log::error!("{e}");
        return 1;
    }
    // The projects `moat apply` declared are kept as declared while the server runs.
    let reconciler = moat_apply::reconcile::Reconciler::new(paths.clone());
    std::thread::spawn(move || reconciler.run());
    report(moat_api::serve(paths, &hosts))
}

/// Prints a command's error once and turns it into the exit code.
fn report<E: std::fmt::Display>(r: Result<(), E>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// `moat inspect`: containers first, as Docker does, then images.
fn inspect_any(root: &std::path::Path, names: &[String], format: Option<&str>) -> i32 {
    let is_container = |n: &String| {
        moat_engine::containers::Records::open(root)
            .and_then(|r| r.find(n))
            .is_ok()
    };
    if names.iter().all(is_container) {
        container_cli::inspect(root, names, format)
    } else {
        match image_cli::inspect(root, names, format) {
            Ok(()) => 0,
            Err(e) => {
                log::error!("{e}");
                1
            }
        }
    }
}

impl Globals {
    /// The monitors and the runtime work from other directories: a relative `--root` is made
    /// absolute once, here.
    fn absolute(mut self) -> Self {
        if let Ok(abs) = std::path::absolute(&self.root) {
            self.root = abs;
        }
        self
    }
}

/// The command's name: the first argument that is not a global option.
fn command_name(args: &[std::ffi::OsString]) -> Option<&str> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str()? {
            "--root" => {
                it.next();
            }
            "--debug" => {}
            a if a.starts_with("--root=") => {}
            a => return Some(a),
        }
    }
    None
}

/// The monitor of one container, exec'd by moat itself as `moat-monitor` (see
/// `moat_engine::lifecycle::start`).
fn monitor(g: &Globals, m: MonitorArgs) -> i32 {
    if m.pending {
        // Started ahead (`run`): the real command line (for the same container), or nothing
        // when the run gave up.
        let Some(args) = moat_engine::monitor::take_command_line() else {
            return 0;
        };
        return match MonitorCli::try_parse_from(args) {
            Ok(MonitorCli {
                globals,
                command: MonitorOnly::Monitor(given),
            }) if !given.pending && given.id == m.id => monitor(&globals.absolute(), given),
            _ => 1,
        };
    }
    // The monitor's starter puts the container's stdio on 0-2 before the runtime logs: its
    // lines must keep going to the monitor's own stderr, not into the container's output.
    if let Some(fd) = logger::Logger::install_on_stderr_copy(g.debug) {
        moat_engine::monitor::set_log_copy(fd);
    }
    let flags = moat_engine::lifecycle::MonitorFlags {
        name: m.name,
        image: m.image,
        attach: m.attach,
        stdin: m.stdin,
        rm: m.rm,
        tty: m.tty,
        restart: m.restart,
        log_rotation: m.log_rotation,
    };
    container_cli::monitor(&g.root, &m.id, &flags)
}

fn main() {
    let invoked_as = std::env::args_os().next().and_then(|a| {
        std::path::Path::new(&a)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    });
    // `--init`: this binary is the container's pid 1, under Docker's name for it.
    if invoked_as.as_deref() == Some("docker-init") {
        std::process::exit(init_cli::main(std::env::args_os().collect()));
    }
    // VM containers boot moat's guest agent, built beside this binary. Its path is known only
    // before the binary re-executes itself from a sealed copy (CVE-2019-5736), so it is kept in
    // the environment that the copy and the monitors inherit.
    if std::env::var_os("MOAT_AGENT").is_none() {
        if let Ok(exe) = std::env::current_exe() {
            let agent = exe.with_file_name("moat-agent");
            if agent.is_file() {
                std::env::set_var("MOAT_AGENT", agent);
            }
        }
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let code = match invoked_as.as_deref() {
        Some("moat-runtime") => runtime_cli::main(runtime_cli::RuntimeCli::parse_from(&args)),
        Some("moat-monitor") => {
            let cli = MonitorCli::parse_from(&args);
            let MonitorOnly::Monitor(m) = cli.command;
            monitor(&cli.globals.absolute(), m)
        }
        _ if command_name(&args) == Some("run") => {
            let cli = RunCli::parse_from(&args);
            let g = cli.globals.absolute();
            let RunOnly::Run(a) = cli.command;
            logger::Logger::install(None, false, g.debug);
            run_cli::run(&g.root, &a)
        }
        _ => {
            let cli = Cli::parse_from(&args);
            let g = cli.globals.absolute();
            match cli.command {
                Command::Runtime(rt) => runtime_cli::main(*rt),
                Command::Run(a) => {
                    logger::Logger::install(None, false, g.debug);
                    run_cli::run(&g.root, &a)
                }
                Command::Create(a) => {
                    logger::Logger::install(None, false, g.debug);
                    run_cli::create(&g.root, &a)
                }
                other => engine(&g.root, g.debug, &other),
            }
        }
    };
    std::process::exit(code);
}
