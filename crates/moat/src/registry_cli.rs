//! Registry commands: `moat pull | push | login | logout`, over `moat_registry`, with Docker's
//! output: a progress bar per layer on a terminal, a line per step otherwise.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use moat_image::{ImageStore, Reference};
use moat_registry::manifest::{host_platform, Platform};
use moat_registry::progress::{Progress, Silent, Status};
use moat_registry::{Client, ClientOptions, CredentialStore, Credentials};

/// Errors of the registry commands.
#[derive(Debug, thiserror::Error)]
pub enum RegistryCliError {
    /// bad reference
    #[error(transparent)]
    Reference(#[from] moat_image::reference::ReferenceError),
    /// the store failed
    #[error(transparent)]
    Store(#[from] moat_image::StoreError),
    /// the registry failed
    #[error(transparent)]
    Client(#[from] moat_registry::ClientError),
    /// the pull failed
    #[error(transparent)]
    Pull(#[from] moat_registry::pull::PullError),
    /// the push failed
    #[error(transparent)]
    Push(#[from] moat_registry::push::PushError),
    /// the credentials file failed
    #[error(transparent)]
    Credentials(#[from] moat_registry::credentials::CredentialsError),
    /// `--platform` is malformed
    #[error("invalid --platform {0:?}: expected OS/ARCH[/VARIANT], such as linux/amd64")]
    Platform(String),
    /// login needs a terminal to ask for what was not given
    #[error(
        "cannot perform an interactive login from a non-TTY device: give -u and --password-stdin"
    )]
    NotTty,
    /// reading the password failed
    #[error("read password: {0}")]
    Password(std::io::Error),
    /// `-p` together with `--password-stdin`
    #[error("--password and --password-stdin are mutually exclusive")]
    PasswordTwice,
    /// empty user name or password
    #[error("username and password are required")]
    Empty,
}

/// How to reach the registry (shared by pull, push and login).
#[derive(Debug, Args, Clone)]
pub struct TlsArgs {
    /// Require HTTPS and verify certificates (`false`: allow plain HTTP and skip verification;
    /// default: verify, except for loopback registries, as Docker).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    tls_verify: Option<bool>,
    /// A directory of per-registry CA certificates (`DIR/HOST[:PORT]/*.crt`), searched before
    /// /etc/moat/certs.d and /etc/docker/certs.d.
    #[arg(long)]
    cert_dir: Option<PathBuf>,
}

impl TlsArgs {
    fn options(&self, domain: &str) -> Result<ClientOptions, RegistryCliError> {
        let mut cert_dirs: Vec<PathBuf> = self.cert_dir.iter().cloned().collect();
        cert_dirs.extend(moat_registry::client::CERTS_DIRS.iter().map(PathBuf::from));
        Ok(ClientOptions {
            tls_verify: self.tls_verify,
            cert_dirs,
            credentials: CredentialStore::default_location().get(domain)?,
        })
    }
}

/// `moat pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// NAME[:TAG|@DIGEST].
    image: String,
    /// Only print the image's name.
    #[arg(short, long)]
    quiet: bool,
    /// Platform to choose from a multi-platform image (OS/ARCH[/VARIANT]).
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// `moat push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// NAME[:TAG].
    image: String,
    /// Only print the digest line.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

/// `moat login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry (default: Docker Hub).
    server: Option<String>,
    /// User name.
    #[arg(short, long)]
    username: Option<String>,
    /// Password (visible in the process list: prefer --password-stdin).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

fn parse_platform(s: &str) -> Result<Platform, RegistryCliError> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        }),
        _ => Err(RegistryCliError::Platform(s.to_string())),
    }
}

/// Docker's pull and push output: one bar per layer on a terminal, a line per step elsewhere;
/// on standard output, or standard error when the pull serves a `run`.
struct Printer {
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
    stderr: bool,
}

impl Printer {
    fn boxed(quiet: bool, stderr: bool) -> Box<dyn Progress> {
        if quiet {
            return Box::new(Silent);
        }
        let tty = if stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        let bars = tty.then(|| {
            let target = if stderr {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::stdout()
            };
            (
                MultiProgress::with_draw_target(target),
                Mutex::new(HashMap::new()),
            )
        });
        Box::new(Printer { bars, stderr })
    }

    fn line(&self, text: &str) {
        if self.stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
}

impl Progress for Printer {
    fn message(&self, text: &str) {
        match &self.bars {
            Some((m, _)) => {
                let _ = m.println(text);
            }
            None => self.line(text),
        }
    }

    fn layer(&self, id: &str, status: &Status) {
        let Some((multi, bars)) = &self.bars else {
            if !matches!(status, Status::Downloading { .. }) {
                self.line(&format!("{id}: {status}"));
            }
            return;
        };
        let Ok(mut bars) = bars.lock() else {
            return;
        };
        let bar = bars
            .entry(id.to_string())
            .or_insert_with(|| {
                let b = multi.add(ProgressBar::new(0));
                b.set_style(
                    ProgressStyle::with_template("{prefix}: {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_prefix(id.to_string());
                b
            })
            .clone();
        match status {
            Status::Downloading { current, total } => {
                if bar.length() != Some(*total) {
                    bar.set_length(*total);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix}: {msg} [{bar:40}] {bytes}/{total_bytes}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                }
                bar.set_position(*current);
                bar.set_message("Downloading");
            }
            done @ (Status::PullComplete
            | Status::AlreadyExists
            | Status::Pushed
            | Status::LayerAlreadyExists
            | Status::MountedFrom(_)) => {
                bar.set_style(
                    ProgressStyle::with_template("{prefix}: {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.finish_with_message(done.to_string());
            }
            other => bar.set_message(other.to_string()),
        }
    }
}

fn connect(domain: &str, tls: &TlsArgs) -> Result<Client, RegistryCliError> {
    Ok(Client::connect(domain, &tls.options(domain)?)?)
}

/// `moat pull`.
pub fn pull(root: &Path, a: &PullArgs) -> Result<(), RegistryCliError> {
    let r: Reference = a.image.parse()?;
    let platform = match &a.platform {
        Some(p) => parse_platform(p)?,
        None => host_platform(),
    };
    let client = connect(r.domain(), &a.tls)?;
    let mut store = ImageStore::open(&root.join("image"))?;
    let printer = Printer::boxed(a.quiet, false);
    moat_registry::pull::pull(&mut store, &client, &r, &platform, printer.as_ref())?;
    println!("{}", qualified(&r));
    Ok(())
}

/// Pulls `image` for `run`/`create` (`--pull`): progress on standard error, default settings.
pub fn pull_quietly(root: &Path, image: &str) -> Result<(), RegistryCliError> {
    let r: Reference = image.parse()?;
    let tls = TlsArgs {
        tls_verify: None,
        cert_dir: None,
    };
    let client = connect(r.domain(), &tls)?;
    let mut store = ImageStore::open(&root.join("image"))?;
    let printer = Printer::boxed(false, true);
    moat_registry::pull::pull(&mut store, &client, &r, &host_platform(), printer.as_ref())?;
    Ok(())
}

/// The reference with its registry spelled out (`docker.io/library/busybox:latest`).
fn qualified(r: &Reference) -> String {
    let mut s = r.full_name();
    if let Some(t) = r.tag() {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = r.digest() {
        s.push('@');
        s.push_str(d.as_str());
    }
    s
}

/// `moat push`.
pub fn push(root: &Path, a: &PushArgs) -> Result<(), RegistryCliError> {
    let r: Reference = a.image.parse()?;
    let client = connect(r.domain(), &a.tls)?;
    let mut store = ImageStore::open(&root.join("image"))?;
    let printer = Printer::boxed(a.quiet, false);
    let pushed = moat_registry::push::push(&mut store, &client, &r, printer.as_ref())?;
    if a.quiet {
        println!("{}", pushed.digest);
    }
    Ok(())
}

/// `moat login`: checks the credentials with the registry, then stores them.
pub fn login(a: &LoginArgs) -> Result<(), RegistryCliError> {
    let domain = moat_registry::credentials::login_domain(a.server.as_deref());
    let tty = std::io::stdin().is_terminal();
    let username = match &a.username {
        Some(u) => u.clone(),
        None if tty && !a.password_stdin => {
            eprint!("Username: ");
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(RegistryCliError::Password)?;
            line.trim().to_string()
        }
        None => return Err(RegistryCliError::NotTty),
    };
    let password = match (&a.password, a.password_stdin) {
        (Some(_), true) => return Err(RegistryCliError::PasswordTwice),
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut p = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut p)
                .map_err(RegistryCliError::Password)?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) if tty => read_password()?,
        (None, false) => return Err(RegistryCliError::NotTty),
    };
    if username.is_empty() || password.is_empty() {
        return Err(RegistryCliError::Empty);
    }
    let credentials = Credentials { username, password };
    let mut opts = a.tls.options(&domain)?;
    opts.credentials = Some(credentials.clone());
    let client = Client::connect(&domain, &opts)?;
    client.check_login()?;
    let store = CredentialStore::default_location();
    store.set(&domain, &credentials)?;
    eprintln!(
        "WARNING! Your credentials are stored unencrypted in '{}'.",
        store.path().display()
    );
    println!("Login Succeeded");
    Ok(())
}

/// Reads a password from the terminal without echo.
fn read_password() -> Result<String, RegistryCliError> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    eprint!("Password: ");
    let _ = std::io::stderr().flush();
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).map_err(|e| RegistryCliError::Password(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(|e| RegistryCliError::Password(e.into()))?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read.map_err(RegistryCliError::Password)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `moat logout`.
pub fn logout(server: Option<&str>) -> Result<(), RegistryCliError> {
    let domain = moat_registry::credentials::login_domain(server);
    let key = moat_registry::credentials::key_of(&domain);
    if CredentialStore::default_location().remove(&domain)? {
        println!("Removing login credentials for {key}");
    } else {
        println!("Not logged in to {key}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse() {
        let p = parse_platform("linux/arm64/v8").unwrap();
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
            ("linux", "arm64", Some("v8"))
        );
        assert!(parse_platform("linux").is_err());
        assert!(parse_platform("/amd64").is_err());
    }
}
