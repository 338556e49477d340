//! Guard against CVE-2019-5736: a container that can reach the runtime's own executable (through
//! `/proc/<pid>/exe` of a runtime process inside its namespaces, or by making the runtime exec
//! `/proc/self/exe`) could open it for writing once the runtime exits and replace the host binary.
//!
//! Before any process of ours enters a container, the runtime re-executes itself from a sealed
//! memfd copy: `/proc/<pid>/exe` then names an anonymous, write-sealed file private to this
//! invocation, never the binary on the host (the fix runc and crun ship).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

/// Errors of the self-clone.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    /// a step of cloning the binary failed
    #[error("clone the moat binary into a sealed memfd ({step}): {source}")]
    Step {
        /// Which step.
        step: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

const SEALS: SealFlag = SealFlag::from_bits_truncate(
    SealFlag::F_SEAL_SEAL.bits()
        | SealFlag::F_SEAL_SHRINK.bits()
        | SealFlag::F_SEAL_GROW.bits()
        | SealFlag::F_SEAL_WRITE.bits(),
);

/// Whether the running executable is already a sealed copy.
pub fn is_sealed() -> bool {
    let Ok(f) = File::open("/proc/self/exe") else {
        return false;
    };
    match fcntl(&f, FcntlArg::F_GET_SEALS) {
        Ok(bits) => SealFlag::from_bits_truncate(bits).contains(SEALS),
        Err(_) => false,
    }
}

/// Re-executes the current process from a sealed memfd copy of its binary, with the same argv and
/// environment. Returns only on error; returns Ok(()) at once when already running sealed.
pub fn ensure_sealed() -> Result<(), CloneError> {
    if is_sealed() {
        return Ok(());
    }
    let step = |step, source| CloneError::Step { step, source };
    let name = c"moat";
    let memfd: OwnedFd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .map_err(|e| step("memfd_create", e.into()))?;
    let mut src = File::open("/proc/self/exe").map_err(|e| step("open /proc/self/exe", e))?;
    let mut dst = File::from(memfd);
    std::io::copy(&mut src, &mut dst).map_err(|e| step("copy", e))?;
    fcntl(&dst, FcntlArg::F_ADD_SEALS(SEALS)).map_err(|e| step("seal", e.into()))?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_encoded_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| step("argv", std::io::Error::other(e)))?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .map_err(|e| step("environment", std::io::Error::other(e)))?;
    // SAFETY: `dst` is an open memfd that stays valid; from_raw_fd only wraps the same number for
    // nix's AsFd bound and is forgotten below, so the descriptor is not closed twice.
    let fd = unsafe { OwnedFd::from_raw_fd(dst.as_raw_fd()) };
    let err = nix::unistd::fexecve(&fd, &args, &env);
    std::mem::forget(fd);
    let e = match err {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(step("fexecve", e.into()))
}
