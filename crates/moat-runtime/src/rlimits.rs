//! Resource limits of the container's process.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

/// Errors applying rlimits.
#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    /// soft limit above the hard limit
    #[error("rlimit {name}: soft limit {soft} is above the hard limit {hard}")]
    SoftAboveHard {
        /// The rlimit.
        name: String,
        /// Requested soft limit.
        soft: u64,
        /// Requested hard limit.
        hard: u64,
    },
    /// setrlimit failed
    #[error("rlimit {name} (soft {soft}, hard {hard}): {source}")]
    Set {
        /// The rlimit.
        name: String,
        /// Soft limit.
        soft: u64,
        /// Hard limit.
        hard: u64,
        /// The errno.
        source: nix::Error,
    },
}

fn resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// What to do with one requested limit, given the current hard limit and whether raising it is
/// allowed (CAP_SYS_RESOURCE). Returns (soft, hard, clamped).
pub fn clamp(soft: u64, hard: u64, current_hard: u64, may_raise: bool) -> (u64, u64, bool) {
    if hard <= current_hard || may_raise {
        return (soft, hard, false);
    }
    (soft.min(current_hard), current_hard, true)
}

/// Applies the limits to the calling process. A hard limit above the current one cannot be set
/// without CAP_SYS_RESOURCE (missing on some hosts, which also cap nofile): such a limit is clamped
/// to the current hard limit, with a warning naming the rlimit and both values, so that configs
/// written for other hosts (Podman asks for nofile 1048576) still run.
pub fn apply(limits: &[PosixRlimit]) -> Result<Vec<String>, RlimitError> {
    let mut warnings = vec![];
    let may_raise = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    for l in limits {
        let name = l.typ().to_string();
        let (soft, hard) = (l.soft(), l.hard());
        if soft > hard {
            return Err(RlimitError::SoftAboveHard { name, soft, hard });
        }
        let res = resource(l.typ());
        let current_hard = getrlimit(res).map(|(_, h)| h).unwrap_or(u64::MAX);
        let (s, h, clamped) = clamp(soft, hard, current_hard, may_raise);
        if clamped {
            warnings.push(format!(
                "rlimit {name}: hard limit {hard} is above this host's {current_hard} and \
                 CAP_SYS_RESOURCE is missing; using soft {s}, hard {h}"
            ));
        }
        setrlimit(res, s, h).map_err(|source| RlimitError::Set {
            name,
            soft: s,
            hard: h,
            source,
        })?;
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_only_when_raising_is_forbidden() {
        assert_eq!(clamp(1024, 4096, 20000, false), (1024, 4096, false));
        assert_eq!(clamp(1048576, 1048576, 20000, false), (20000, 20000, true));
        assert_eq!(clamp(1024, 1048576, 20000, false), (1024, 20000, true));
        assert_eq!(
            clamp(1048576, 1048576, 20000, true),
            (1048576, 1048576, false)
        );
    }
}
