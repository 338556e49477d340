//! The hypervisor behind a small trait: what a VM container needs from a VMM is to boot a
//! kernel and initramfs with some memory and vCPUs, share host directories, and give the agent
//! one byte stream to the host. Everything else (the protocol, the container) is above it.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Child;

use crate::VmError;

/// How guest code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulation (TCG): slower, works everywhere.
    Tcg,
}

impl Accel {
    /// KVM when the host has hardware virtualization behind a usable /dev/kvm; TCG otherwise.
    ///
    /// /dev/kvm alone is not enough: a paravirtual KVM (PVM, found on nested cloud hosts) offers
    /// the device without VMX/SVM, and a stock guest kernel fails under it (see
    /// ../shared/vm/NOTES.md), so the CPU's flags decide as well.
    pub fn probe() -> Accel {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Accel::decide(
            std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok(),
            &cpuinfo,
        )
    }

    /// [`Accel::probe`]'s decision from its inputs.
    pub fn decide(kvm_opens: bool, cpuinfo: &str) -> Accel {
        let hw = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .take(1)
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        if kvm_opens && hw {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    /// Its name, as `moat info` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// A host directory shared into the guest: by QEMU's 9p server, or by a virtiofsd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The tag the guest mounts it by.
    pub tag: String,
    /// The host directory.
    pub path: PathBuf,
    /// The guest may only read it.
    pub readonly: bool,
    /// virtio-fs instead of 9p: the vhost-user socket of its virtiofsd (set by the driver,
    /// which starts the daemon: [`crate::virtiofs`]).
    pub virtiofs: Option<PathBuf>,
}

/// One VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// The VM's name (shown in the VMM's command line: the container's directory, so that
    /// the host's process list says whose VMM it is even from inside a jail).
    pub name: String,
    /// The guest kernel (an uncompressed vmlinux with a PVH entry point).
    pub kernel: PathBuf,
    /// The initramfs (the agent as /init).
    pub initrd: PathBuf,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Directories shared with the guest.
    pub shares: Vec<Share>,
    /// NICs: a tap device (opened by name in the VMM's network namespace) and the guest's MAC.
    pub nics: Vec<(String, String)>,
    /// Where the guest's serial console (kernel messages, the agent's errors) is written.
    pub console_log: PathBuf,
    /// The accelerator.
    pub accel: Accel,
    /// The guest finds its devices in ACPI tables (a distribution kernel, which cannot take
    /// virtio-mmio devices from its command line); else the command line names them and the
    /// VM has no ACPI (the minimal kernel: faster to boot).
    pub acpi: bool,
    /// Confine the VMM in a jail built on this empty directory ([`crate::jail`]).
    pub jail: Option<PathBuf>,
}

/// A virtual machine monitor.
pub trait Vmm: std::fmt::Debug {
    /// Boots `cfg`, with `channel` as the host end of the agent's port; the VMM process is
    /// returned (it ends when the guest powers off). The VMM must die with its parent.
    fn launch(&self, cfg: &VmConfig, channel: OwnedFd) -> Result<Child, VmError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_only_with_hardware_virtualization() {
        let vmx = "processor\t: 0\nflags\t\t: fpu vme vmx sse\n";
        let pvm = "processor\t: 0\nflags\t\t: fpu vme sse hypervisor\n";
        assert_eq!(Accel::decide(true, vmx), Accel::Kvm);
        assert_eq!(Accel::decide(true, pvm), Accel::Tcg);
        assert_eq!(Accel::decide(false, vmx), Accel::Tcg);
        assert_eq!(Accel::decide(true, "flags : svm\n"), Accel::Kvm);
    }
}
