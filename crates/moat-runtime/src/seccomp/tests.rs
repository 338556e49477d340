//! Tests for the seccomp module: filter building without privileges, plus one real load in
//! a forked child.

use super::*;
use oci_spec::runtime::LinuxSeccompArgBuilder;
use std::io::{Read, Seek};

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let builder = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    match value_two {
        Some(two) => builder.value_two(two),
        None => builder,
    }
    .build()
    .expect("arg")
}

fn rule(
    names: &[&str],
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    args: Vec<LinuxSeccompArg>,
) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names.iter().map(|n| (*n).to_owned()).collect());
    rule.set_action(action);
    rule.set_errno_ret(errno_ret);
    rule.set_args((!args.is_empty()).then_some(args));
    rule
}

fn spec(
    default: LinuxSeccompAction,
    default_errno: Option<u32>,
    rules: Vec<LinuxSyscall>,
) -> LinuxSeccomp {
    let mut spec = LinuxSeccomp::default();
    spec.set_default_action(default);
    spec.set_default_errno_ret(default_errno);
    spec.set_syscalls(Some(rules));
    spec
}

fn pfc(filter: &Filter) -> String {
    let mut file = tempfile::tempfile().expect("tempfile");
    filter.export_pfc(&file).expect("export pfc");
    file.rewind().expect("rewind");
    let mut text = String::new();
    file.read_to_string(&mut text).expect("read pfc");
    text
}

fn bpf_len(filter: &Filter) -> u64 {
    let file = tempfile::tempfile().expect("tempfile");
    filter.export_bpf(&file).expect("export bpf");
    file.metadata().expect("metadata").len()
}

fn docker_like() -> LinuxSeccomp {
    use LinuxSeccompAction::*;
    use LinuxSeccompOperator::*;
    let mut s = spec(
        ScmpActErrno,
        Some(1),
        vec![
            rule(
                &[
                    "read",
                    "write",
                    "openat",
                    "close",
                    "exit_group",
                    "getppid",
                    "futex",
                    "brand_new_syscall_2077",
                ],
                ScmpActAllow,
                None,
                vec![],
            ),
            // Docker: personality(0), personality(8), personality(0x20000), ...
            // Repeated index 0 -> OR of the values.
            rule(
                &["personality"],
                ScmpActAllow,
                None,
                vec![
                    arg(0, ScmpCmpEq, 0, None),
                    arg(0, ScmpCmpEq, 8, None),
                    arg(0, ScmpCmpEq, 0x20000, None),
                ],
            ),
            // Docker: clone only without namespace flags.
            rule(
                &["clone"],
                ScmpActAllow,
                None,
                vec![arg(0, ScmpCmpMaskedEq, 0x7E02_0000, Some(0))],
            ),
            rule(&["clone3"], ScmpActErrno, Some(38), vec![]),
            // Distinct indices -> one rule, ANDed.
            rule(
                &["socket"],
                ScmpActAllow,
                None,
                vec![arg(0, ScmpCmpNe, 16, None), arg(1, ScmpCmpLe, 5, None)],
            ),
        ],
    );
    s.set_architectures(Some(vec![
        Arch::ScmpArchX86_64,
        Arch::ScmpArchX86,
        Arch::ScmpArchX32,
    ]));
    s
}

#[test]
fn allow_default_with_one_errno_rule() {
    let s = spec(
        LinuxSeccompAction::ScmpActAllow,
        None,
        vec![rule(
            &["getppid"],
            LinuxSeccompAction::ScmpActErrno,
            None,
            vec![],
        )],
    );
    let filter = Filter::from_spec(&s).expect("build");
    assert_eq!(filter.default_action(), ScmpAction::Allow);
    assert!(bpf_len(&filter) > 0);
    let text = pfc(&filter);
    assert!(text.contains("getppid"), "{text}");
    assert!(text.contains("ERRNO(1)"), "{text}");
}

#[test]
fn docker_like_profile_builds() {
    let filter = Filter::from_spec(&docker_like()).expect("build");
    assert_eq!(filter.default_action(), ScmpAction::Errno(1));
    assert!(bpf_len(&filter) > 0);
    let text = pfc(&filter);
    for arch in ["x86_64", "x86", "x32"] {
        assert!(
            text.contains(&format!("filter for arch {arch} ")),
            "{arch}: {text}"
        );
    }
    assert!(text.contains("personality"), "{text}");
    assert!(text.contains("clone3"), "{text}");
    assert!(text.contains("ERRNO(38)"), "{text}");
    // Each personality value shows up as its own comparison (OR), not merged away.
    for value in ["$a0.lo32 == 0)", "$a0.lo32 == 8)", "$a0.lo32 == 131072)"] {
        assert!(text.contains(value), "{value}: {text}");
    }
    // The MASKED_EQ mask is applied to the argument before comparing with valueTwo.
    assert!(text.contains("$a0.lo32 & 0x7e020000 == 0"), "{text}");
    // Distinct indices are ANDed in one rule: socket's second condition is nested
    // under the first.
    assert!(text.contains("$a1.lo32 > 5"), "{text}");
    // The name unknown to libseccomp was skipped, not fatal.
    assert!(!text.contains("brand_new_syscall"), "{text}");
}

#[test]
fn unknown_syscall_is_skipped() {
    let s = spec(
        LinuxSeccompAction::ScmpActAllow,
        None,
        vec![rule(
            &["no_such_syscall", "getppid"],
            LinuxSeccompAction::ScmpActKillProcess,
            None,
            vec![],
        )],
    );
    let filter = Filter::from_spec(&s).expect("unknown names are not an error");
    let text = pfc(&filter);
    assert!(text.contains("getppid"), "{text}");
    assert!(!text.contains("no_such_syscall"), "{text}");
}

#[test]
fn notify_is_refused() {
    let s = spec(
        LinuxSeccompAction::ScmpActAllow,
        None,
        vec![rule(
            &["mount"],
            LinuxSeccompAction::ScmpActNotify,
            None,
            vec![],
        )],
    );
    let err = Filter::from_spec(&s).expect_err("notify");
    assert!(
        matches!(err, SeccompError::NotifyUnsupported { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("mount"), "{err}");

    let s = spec(LinuxSeccompAction::ScmpActNotify, None, vec![]);
    let err = Filter::from_spec(&s).expect_err("notify default");
    assert!(err.to_string().contains("defaultAction"), "{err}");
}

#[test]
fn rule_equal_to_default_is_skipped() {
    // ERRNO without errnoRet is EPERM, the same as the default: libseccomp would refuse it.
    let s = spec(
        LinuxSeccompAction::ScmpActErrno,
        Some(1),
        vec![
            rule(&["getppid"], LinuxSeccompAction::ScmpActErrno, None, vec![]),
            rule(&["getpid"], LinuxSeccompAction::ScmpActAllow, None, vec![]),
        ],
    );
    let filter = Filter::from_spec(&s).expect("build");
    let text = pfc(&filter);
    assert!(!text.contains("getppid"), "{text}");
    assert!(text.contains("getpid"), "{text}");

    // KILL and KILL_THREAD are the same action.
    let s = spec(
        LinuxSeccompAction::ScmpActKill,
        None,
        vec![rule(
            &["getppid"],
            LinuxSeccompAction::ScmpActKillThread,
            None,
            vec![],
        )],
    );
    Filter::from_spec(&s).expect("kill == kill_thread, skipped");
}

#[test]
fn every_action_maps() {
    use LinuxSeccompAction::*;
    let cases = [
        (ScmpActKill, None, ScmpAction::KillThread),
        (ScmpActKillThread, None, ScmpAction::KillThread),
        (ScmpActKillProcess, None, ScmpAction::KillProcess),
        (ScmpActTrap, None, ScmpAction::Trap),
        (ScmpActErrno, None, ScmpAction::Errno(libc::EPERM)),
        (ScmpActErrno, Some(38), ScmpAction::Errno(38)),
        (ScmpActTrace, None, ScmpAction::Trace(1)),
        (ScmpActTrace, Some(7), ScmpAction::Trace(7)),
        (ScmpActLog, None, ScmpAction::Log),
        (ScmpActAllow, None, ScmpAction::Allow),
    ];
    for (action, errno, expected) in cases {
        assert_eq!(
            resolve_action(action, errno, "test").expect("maps"),
            expected,
            "{action}"
        );
        // Each also works as a rule under a different default.
        let s = spec(
            if expected == ScmpAction::Allow {
                ScmpActKillProcess
            } else {
                ScmpActAllow
            },
            None,
            vec![rule(&["getppid"], action, errno, vec![])],
        );
        Filter::from_spec(&s).unwrap_or_else(|e| panic!("{action}: {e}"));
    }
}

#[test]
fn bad_values_are_errors() {
    use LinuxSeccompAction::*;
    let err = resolve_action(ScmpActErrno, Some(70_000), "defaultAction").expect_err("too big");
    assert!(err.to_string().contains("70000"), "{err}");
    let err = resolve_action(ScmpActAllow, Some(1), "syscalls [x]").expect_err("allow+errno");
    assert!(
        matches!(err, SeccompError::ErrnoNotApplicable { .. }),
        "{err}"
    );

    let s = spec(
        ScmpActAllow,
        None,
        vec![rule(
            &["read"],
            ScmpActErrno,
            None,
            vec![arg(6, LinuxSeccompOperator::ScmpCmpEq, 0, None)],
        )],
    );
    let err = Filter::from_spec(&s).expect_err("index 6");
    assert!(
        matches!(err, SeccompError::ArgIndexOutOfRange { index: 6, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("read"), "{err}");
}

#[test]
fn flags_are_applied() {
    let mut s = spec(
        LinuxSeccompAction::ScmpActAllow,
        None,
        vec![rule(
            &["getppid"],
            LinuxSeccompAction::ScmpActErrno,
            None,
            vec![],
        )],
    );
    s.set_flags(Some(vec![
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
    ]));
    let filter = Filter::from_spec(&s).expect("build");
    assert_eq!(filter.ctx.get_ctl_tsync().ok(), Some(true));
    assert_eq!(filter.ctx.get_ctl_nnp().ok(), Some(false));
}

/// Really loads a filter: in a forked child (the filter is irreversible), `getppid` must
/// fail with EPERM and `dup(1000)` with the rule's EACCES, while `dup(1001)` (not matched
/// by the argument condition) reaches the kernel and fails with EBADF.
#[test]
fn loaded_filter_denies_syscalls() {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    let s = spec(
        LinuxSeccompAction::ScmpActAllow,
        None,
        vec![
            rule(&["getppid"], LinuxSeccompAction::ScmpActErrno, None, vec![]),
            rule(
                &["dup"],
                LinuxSeccompAction::ScmpActErrno,
                Some(libc::EACCES.unsigned_abs()),
                vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, 1000, None)],
            ),
        ],
    );
    // Built before forking so the child does as little as possible.
    let filter = Filter::from_spec(&s).expect("build");

    // SAFETY: the test harness is multi-threaded; the child only calls prctl, the
    // filter load (which may allocate; acceptable in a test), raw syscalls and _exit,
    // and never returns into the harness.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = (|| {
                if nix::sys::prctl::set_no_new_privs().is_err() {
                    return 10;
                }
                if filter.load().is_err() {
                    return 11;
                }
                let errno = || nix::errno::Errno::last_raw();
                // SAFETY: plain syscalls without pointers; fds 1000/1001 are not open (or
                // their dup is denied), so nothing in this process is affected. errno is
                // read right after each call, before anything else can overwrite it.
                // glibc's getppid() wrapper never sets errno (the call "cannot fail"),
                // so go through syscall(2), which does.
                let (ppid, e1) = (unsafe { libc::syscall(libc::SYS_getppid) }, errno());
                if ppid != -1 || e1 != libc::EPERM {
                    return 13;
                }
                // SAFETY: as above.
                let (fd, e2) = (unsafe { libc::dup(1000) }, errno());
                if fd != -1 || e2 != libc::EACCES {
                    return 14;
                }
                // SAFETY: as above.
                let (fd, e3) = (unsafe { libc::dup(1001) }, errno());
                if fd != -1 || e3 != libc::EBADF {
                    return 15;
                }
                0
            })();
            // SAFETY: _exit skips the harness's atexit handlers and stdio locks, which
            // another (now absent) thread may have held at fork time.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None).expect("waitpid");
            assert_eq!(
                status,
                WaitStatus::Exited(child, 0),
                "child exit code: see test body"
            );
        }
    }
}

/// The JSON shape Docker's default profile uses, as it arrives in config.json.
#[test]
fn docker_json_profile_builds() {
    let json = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [
            {"names": ["accept", "accept4", "access", "_llseek", "socketcall", "landlock_create_ruleset", "cachestat"],
             "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 4294967295, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]}
        ]
    }"#;
    let spec: LinuxSeccomp = serde_json::from_str(json).expect("parse");
    let filter = match Filter::from_spec(&spec) {
        Ok(filter) => filter,
        // SPEC_ALLOW needs kernel support (4.17+); older kernels must fail loudly, not skip it.
        Err(SeccompError::SetAttribute {
            attribute: "CTL_SSB",
            ..
        }) => return,
        Err(err) => panic!("{err}"),
    };
    assert!(bpf_len(&filter) > 0);
    let text = pfc(&filter);
    assert_eq!(filter.ctx.get_ctl_ssb().ok(), Some(true));
    assert!(text.contains("4294967295"), "{text}");
    assert!(text.contains("ERRNO(38)"), "{text}");
}
