//! Compiled seccomp programs, cached.
//!
//! Building a profile as large as Docker's default with libseccomp (≈350 syscalls × 3
//! architectures) and compiling it to BPF costs several milliseconds, in every container. The
//! result only depends on the profile (and the libseccomp version moat is linked with), so it is
//! compiled once, in the runtime (before any fork), stored under the state root keyed by the
//! profile's digest, and loaded as a raw BPF program with seccomp(2).

use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::path::Path;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompFilterFlag};
use sha2::{Digest as _, Sha256};

use super::{Filter, SeccompError};

/// A compiled filter: the BPF instructions and the seccomp(2) flags to load them with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    bpf: Vec<u8>,
    flags: u32,
}

/// seccomp(2) filter flags (linux/seccomp.h).
const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;

impl Program {
    /// The compiled BPF instructions, as the cache keeps them.
    pub fn bpf(&self) -> &[u8] {
        &self.bpf
    }

    /// The name of `spec`'s compiled program in a cache directory: a digest of the profile and
    /// of the libseccomp version that compiles it (a VM container's host precompiles it for the
    /// guest under this name).
    pub fn cache_name(spec: &LinuxSeccomp) -> String {
        let mut h = Sha256::new();
        h.update(b"moat-seccomp-v1\0");
        h.update(
            libseccomp::ScmpVersion::current()
                .map(|v| format!("{v}"))
                .unwrap_or_default(),
        );
        h.update(serde_json::to_vec(spec).unwrap_or_default());
        format!("{}.bpf", hex::encode(h.finalize()))
    }

    /// Compiles `spec`, or reads the program compiled earlier from `cache_dir`.
    pub fn compile(spec: &LinuxSeccomp, cache_dir: Option<&Path>) -> Result<Program, SeccompError> {
        let flags = spec.flags().iter().flatten().fold(0, |acc, f| {
            acc | match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
                _ => 0,
            }
        });
        let cached = cache_dir.map(|d| d.join(Program::cache_name(spec)));
        if let Some(bpf) = cached.as_ref().and_then(|p| std::fs::read(p).ok()) {
            if !bpf.is_empty() && bpf.len().is_multiple_of(8) {
                return Ok(Program { bpf, flags });
            }
        }
        let filter = Filter::from_spec(spec)?;
        let bpf = export(&filter)?;
        if let Some(path) = cached {
            // Best effort: a cache that cannot be written only costs the next compile.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let written = path
                .parent()
                .map(std::fs::create_dir_all)
                .transpose()
                .and_then(|_| std::fs::write(&tmp, &bpf))
                .and_then(|_| std::fs::rename(&tmp, &path));
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(Program { bpf, flags })
    }

    /// Loads the program into the calling process (irreversible). Needs no_new_privs or
    /// CAP_SYS_ADMIN, like any seccomp filter.
    pub fn load(&self) -> Result<(), SeccompError> {
        #[repr(C)]
        struct SockFprog {
            len: u16,
            filter: *const u8,
        }
        let prog = SockFprog {
            len: (self.bpf.len() / 8) as u16,
            filter: self.bpf.as_ptr(),
        };
        const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
        // SAFETY: seccomp(2) reads `prog.len` 8-byte sock_filter instructions from
        // `prog.filter`, which points into `self.bpf` (a multiple of 8 bytes, alive for the call).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                self.flags as libc::c_ulong,
                &prog as *const SockFprog,
            )
        };
        if rc != 0 {
            return Err(SeccompError::LoadProgram(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// The filter's BPF, through a memfd (libseccomp writes it to a descriptor).
fn export(filter: &Filter) -> Result<Vec<u8>, SeccompError> {
    let fd = nix::sys::memfd::memfd_create(c"moat-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| SeccompError::LoadProgram(e.into()))?;
    filter.export_bpf(&fd)?;
    let mut f = std::fs::File::from(fd);
    let mut out = vec![];
    f.rewind()
        .and_then(|_| f.read_to_end(&mut out))
        .map_err(SeccompError::LoadProgram)?;
    let _ = f.as_raw_fd();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_once_then_read_from_the_cache() {
        let spec: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let a = Program::compile(&spec, Some(dir.path())).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let b = Program::compile(&spec, Some(dir.path())).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, Program::compile(&spec, None).unwrap());
        assert!(!a.bpf.is_empty() && a.bpf.len().is_multiple_of(8));
    }
}
