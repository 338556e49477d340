//! The QEMU backend: the `microvm` machine (no PCI, no ACPI, no firmware: virtio-mmio devices
//! given on the command line), as Kata Containers uses it. The guest's console goes to a file;
//! the agent's port is a virtio-serial port on a socket the host already holds (no path to
//! race for); host directories are 9p shares (built into QEMU: no extra daemon per VM).
//!
//! QEMU runs confined by its own seccomp sandbox (`-sandbox on`: no spawning, no privilege
//! changes, no obsolete system calls) and dies with its parent (PR_SET_PDEATHSIG).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::vmm::{Accel, VmConfig, Vmm};
use crate::VmError;

/// The descriptor the agent's socket has in QEMU.
const CHANNEL_FD: i32 = 3;

/// QEMU's `qemu-system-x86_64`.
#[derive(Debug, Clone)]
pub struct Qemu {
    /// The binary.
    pub binary: PathBuf,
    /// The host's TSC frequency in kHz, given to the guest (without it about one boot in a
    /// dozen hung calibrating the TSC under TCG).
    pub tsc_khz: Option<u64>,
}

impl Qemu {
    /// Finds `qemu-system-x86_64` on the PATH.
    pub fn find() -> Result<Qemu, VmError> {
        let name = "qemu-system-x86_64";
        let path = std::env::var_os("PATH").unwrap_or_default();
        let binary = std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| VmError::NoQemu(name.into()))?;
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Ok(Qemu {
            binary,
            tsc_khz: tsc_khz(&cpuinfo),
        })
    }

    /// The command line for `cfg`, with the agent's socket on descriptor `channel_fd`.
    pub fn args(&self, cfg: &VmConfig, channel_fd: i32) -> Vec<String> {
        let mut cmdline = String::from(
            "console=ttyS0 quiet loglevel=0 reboot=t panic=-1 tsc=reliable no_timer_check \
             8250.nr_uarts=1 rdinit=/init",
        );
        // Saves ~240 ms of the minimal kernel's boot; a distribution kernel hung at its
        // power-off with it (../shared/vm/NOTES.md).
        if !cfg.acpi {
            cmdline.push_str(" nolapic_timer");
        }
        if let Some(khz) = self.tsc_khz {
            cmdline.push_str(&format!(" tsc_early_khz={khz}"));
        }
        let (accel, cpu) = match cfg.accel {
            Accel::Kvm => ("kvm", "host"),
            Accel::Tcg => ("tcg", "max"),
        };
        let s = |x: &str| x.to_string();
        let p = |x: &Path| x.to_string_lossy().into_owned();
        // vhost-user devices (virtio-fs) need the guest's memory shareable, and modern
        // virtio-mmio (libvhost-user refuses legacy devices).
        let virtiofs = cfg.shares.iter().any(|sh| sh.virtiofs.is_some());
        let machine = format!(
            "microvm,acpi={}{}",
            if cfg.acpi { "on" } else { "off" },
            if virtiofs { ",memory-backend=mem" } else { "" }
        );
        let mut a = vec![
            s("-name"),
            cfg.name.replace(',', ",,"),
            s("-M"),
            machine,
            s("-accel"),
            s(accel),
            s("-cpu"),
            s(cpu),
            s("-smp"),
            cfg.vcpus.max(1).to_string(),
            s("-m"),
            format!("{}M", cfg.memory_mib),
            s("-nodefaults"),
            s("-no-user-config"),
            s("-display"),
            s("none"),
            s("-no-reboot"),
            s("-sandbox"),
            s("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"),
            s("-serial"),
            format!("file:{}", p(&cfg.console_log)),
            s("-kernel"),
            p(&cfg.kernel),
            s("-initrd"),
            p(&cfg.initrd),
            s("-append"),
            cmdline,
            // Free page reporting: the guest hands back what it freed (about 2 MiB per idle
            // VM measured here).
            s("-device"),
            s("virtio-balloon-device,free-page-reporting=on"),
            s("-device"),
            s("virtio-serial-device"),
            s("-chardev"),
            format!("socket,id=agent,fd={channel_fd}"),
            s("-device"),
            format!(
                "virtserialport,chardev=agent,name={}",
                moat_agent::proto::PORT_NAME
            ),
        ];
        for (i, (tap, mac)) in cfg.nics.iter().enumerate() {
            a.push(s("-netdev"));
            a.push(format!(
                "tap,id=net{i},ifname={tap},script=no,downscript=no"
            ));
            a.push(s("-device"));
            a.push(format!("virtio-net-device,netdev=net{i},mac={mac}"));
        }
        if virtiofs {
            a.extend([
                s("-object"),
                format!(
                    "memory-backend-memfd,id=mem,size={}M,share=on",
                    cfg.memory_mib
                ),
                s("-global"),
                s("virtio-mmio.force-legacy=false"),
            ]);
        }
        for (i, sh) in cfg.shares.iter().enumerate() {
            if let Some(sock) = &sh.virtiofs {
                a.push(s("-chardev"));
                a.push(format!(
                    "socket,id=vfs{i},path={}",
                    p(sock).replace(',', ",,")
                ));
                a.push(s("-device"));
                a.push(format!(
                    "vhost-user-fs-device,chardev=vfs{i},tag={}",
                    sh.tag
                ));
                continue;
            }
            // QEMU's option syntax doubles commas inside values.
            let path = p(&sh.path).replace(',', ",,");
            let ro = if sh.readonly { ",readonly=on" } else { "" };
            a.push(s("-fsdev"));
            a.push(format!(
                "local,id=fs{i},path={path},security_model=passthrough{ro}"
            ));
            a.push(s("-device"));
            a.push(format!("virtio-9p-device,fsdev=fs{i},mount_tag={}", sh.tag));
        }
        a
    }
}

impl Vmm for Qemu {
    fn launch(&self, cfg: &VmConfig, channel: OwnedFd) -> Result<Child, VmError> {
        let fd = channel.as_raw_fd();
        let (jail, args) = match &cfg.jail {
            Some(root) => {
                let (jail, inside) = crate::jail::Jail::new(root, cfg)?;
                (Some(jail), self.args(&inside, CHANNEL_FD))
            }
            None => (None, self.args(cfg, CHANNEL_FD)),
        };
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::options()
                    .append(true)
                    .create(true)
                    .open(&cfg.console_log)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (prctl, dup2, fcntl on integers; the jail's system calls on
        // strings prepared before the fork).
        unsafe {
            cmd.pre_exec(move || {
                if let Some(j) = &jail {
                    j.enter()?;
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if fd == CHANNEL_FD {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, CHANNEL_FD) != CHANNEL_FD {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(crate::io_err("start", &self.binary))?;
        drop(channel);
        Ok(child)
    }
}

/// The host's TSC frequency (kHz) from /proc/cpuinfo's `cpu MHz`.
fn tsc_khz(cpuinfo: &str) -> Option<u64> {
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::Share;

    #[test]
    fn command_line_has_the_machine_the_devices_and_the_shares() {
        let q = Qemu {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            tsc_khz: tsc_khz("cpu MHz\t\t: 2599.998\n"),
        };
        let cfg = VmConfig {
            name: "/var/lib/moat/containers/c1".into(),
            kernel: "/k/vmlinux".into(),
            initrd: "/k/initrd".into(),
            memory_mib: 288,
            vcpus: 2,
            shares: vec![Share {
                tag: "bundle".into(),
                path: "/var/lib/moat/c,1".into(),
                readonly: false,
                virtiofs: None,
            }],
            console_log: "/c/console.log".into(),
            nics: vec![("tap0".into(), "02:42:ac:11:00:02".into())],
            accel: Accel::Tcg,
            jail: None,
            acpi: false,
        };
        let a = q.args(&cfg, 3).join(" ");
        assert!(a.starts_with("-name /var/lib/moat/containers/c1 -M microvm"));
        assert!(a.contains("-M microvm,acpi=off -accel tcg -cpu max -smp 2 -m 288M"));
        assert!(a.contains("tsc_early_khz=2599998"));
        assert!(a.contains("-serial file:/c/console.log"));
        assert!(a.contains("socket,id=agent,fd=3"));
        assert!(a.contains("name=moat.agent.0"));
        assert!(a.contains("path=/var/lib/moat/c,,1,security_model=passthrough -device"));
        assert!(a.contains("mount_tag=bundle"));
        assert!(a.contains("-sandbox on"));
        assert!(a.contains(
            "-netdev tap,id=net0,ifname=tap0,script=no,downscript=no \
             -device virtio-net-device,netdev=net0,mac=02:42:ac:11:00:02"
        ));
        assert!(!a.contains("memory-backend"));
        // A virtio-fs share: its daemon's socket, shared guest memory, modern virtio-mmio.
        let mut cfg = cfg;
        cfg.shares.push(Share {
            tag: "rootfs".into(),
            path: "/r".into(),
            readonly: false,
            virtiofs: Some("/vm/rootfs.sock".into()),
        });
        let a = q.args(&cfg, 3).join(" ");
        assert!(a.contains("-M microvm,acpi=off,memory-backend=mem "));
        assert!(a.contains("-object memory-backend-memfd,id=mem,size=288M,share=on"));
        assert!(a.contains("-global virtio-mmio.force-legacy=false"));
        assert!(a.contains(
            "-chardev socket,id=vfs1,path=/vm/rootfs.sock \
             -device vhost-user-fs-device,chardev=vfs1,tag=rootfs"
        ));
        assert!(!a.contains("fsdev=fs1"));
        assert!(a.contains(" nolapic_timer"));
        // A distribution kernel: devices described by ACPI, the LAPIC timer left alone.
        cfg.acpi = true;
        let a = q.args(&cfg, 3).join(" ");
        assert!(a.contains("-M microvm,acpi=on,memory-backend=mem "));
        assert!(!a.contains("nolapic_timer"));
    }
}
