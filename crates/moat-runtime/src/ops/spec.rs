//! `spec`: a default config.json, as `runc spec` writes one.

use oci_spec::runtime::Spec;

/// The default config: runc's (namespaces, mounts, masked paths, capabilities) with a terminal
/// running `sh`; `rootless` maps the caller's uid/gid in a user namespace.
pub fn default_spec(rootless: bool) -> Spec {
    let mut spec = if rootless {
        Spec::rootless(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    } else {
        Spec::default()
    };
    if let Some(mut p) = spec.process().clone() {
        p.set_terminal(Some(true));
        spec.set_process(Some(p));
    }
    spec.set_hostname(Some("moat".into()));
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_passes_validation() {
        assert_eq!(crate::bundle::validate(&default_spec(false)), Ok(()));
        assert_eq!(crate::bundle::validate(&default_spec(true)), Ok(()));
    }
}
