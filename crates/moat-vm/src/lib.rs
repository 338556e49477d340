//! VM isolation: the same container inside a micro-VM with its own guest kernel.
//!
//! - [`vmm`]: the hypervisor behind a small trait ([`vmm::Vmm`]); [`qemu`] is the backend used
//!   today (QEMU's `microvm` machine, KVM when the host has hardware virtualization, TCG
//!   otherwise), so a rust-vmm based backend can replace it on hosts with hardware KVM.
//! - [`kernel`]: the guest kernel (the minimal one, or a distribution's with its modules);
//!   [`assets`]: the initramfs holding the agent (`moat-agent`) and those modules.
//! - [`driver`]: the host side of one VM container: launches the VM, speaks the agent protocol
//!   (`moat_agent::proto`), relays stdio, signals and the exit code.

pub mod assets;
pub mod driver;
pub mod jail;
pub mod kernel;
pub mod qemu;
pub mod tap;
pub mod virtiofs;
pub mod vmm;

pub use vmm::{Accel, Share, VmConfig, Vmm};

/// Errors of VM isolation.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// no guest kernel
    #[error("VM isolation needs a guest kernel: {0} does not exist, nor a distribution kernel in /boot with its modules in /lib/modules (build the minimal one with scripts/vm-kernel.sh, install linux-image-cloud-amd64, or set MOAT_VM_KERNEL)")]
    NoKernel(std::path::PathBuf),
    /// not a kernel image
    #[error("{0} is not a guest kernel: neither a vmlinux (ELF) nor a bzImage")]
    NotAKernel(std::path::PathBuf),
    /// a distribution kernel without its modules
    #[error("the guest kernel's modules are missing: {dir}: {source}")]
    NoModules {
        /// The kernel's modules directory.
        dir: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// a module VM containers need is not in the kernel
    #[error("the guest kernel has no module {module} (looked in {dir}), which VM containers need")]
    MissingModule {
        /// The module.
        module: String,
        /// The kernel's modules directory.
        dir: std::path::PathBuf,
    },
    /// a compressed kernel module
    #[error("the guest kernel's module {0} is compressed, which VM containers do not load yet (a kernel with uncompressed modules, such as Debian 12's, or the minimal kernel from scripts/vm-kernel.sh, works)")]
    CompressedModule(std::path::PathBuf),
    /// a distribution kernel needs virtio-fs for every share
    #[error("the guest kernel {0} has no 9p: its shares need virtio-fs, and no virtiofsd was found (qemu-system-x86 ships one; MOAT_VIRTIOFSD names another, and turns virtio-fs off when it names no file)")]
    NoVirtiofsd(std::path::PathBuf),
    /// no agent binary
    #[error("VM isolation needs the guest agent: {0} does not exist (it is built with moat; or set MOAT_AGENT)")]
    NoAgent(std::path::PathBuf),
    /// no hypervisor
    #[error("VM isolation needs QEMU: {0} not found (install qemu-system-x86)")]
    NoQemu(String),
    /// a file operation failed
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// a system call failed
    #[error("{what}: {source}")]
    Sys {
        /// What was done.
        what: &'static str,
        /// The errno.
        source: nix::Error,
    },
    /// the agent did not answer in time
    #[error("the VM's agent did not answer within {0} s (see {1})")]
    Timeout(u64, std::path::PathBuf),
    /// the VM ended before the container started
    #[error("the VM exited before the container started ({status}; its console: {console})")]
    EarlyExit {
        /// QEMU's exit status.
        status: String,
        /// The last lines of the guest console.
        console: String,
    },
    /// the agent protocol failed
    #[error(transparent)]
    Proto(#[from] moat_agent::proto::ProtoError),
    /// wiring the container's network to the VM failed
    #[error("VM network: {0}")]
    Net(String),
    /// an exec session ended without the process's exit
    #[error("the VM container stopped before the exec'd process exited")]
    ExecEnded,
    /// the container's process could not start in the guest (the agent's message)
    #[error("{message}")]
    Command {
        /// Docker's exit code: 125, 126 or 127.
        code: i32,
        /// What the agent said.
        message: String,
    },
}

pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> VmError + 'a {
    move |source| VmError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}
