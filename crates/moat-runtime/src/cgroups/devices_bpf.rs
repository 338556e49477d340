//! Device rules on cgroup v2, where there is no `devices.allow`: a `BPF_PROG_TYPE_CGROUP_DEVICE`
//! program attached to the container's cgroup decides every open/mknod of a device node (as
//! runc's devicefilter does). Without it, container root holding CAP_MKNOD could create and open
//! the host's disks.
//!
//! The rules keep v1 semantics: a wildcard rule (`a *:* rwm`) resets the default (allow or
//! deny all) and forgets earlier rules; later rules win over earlier ones. The program checks
//! the rules last-first and falls back to the default.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// `BPF_DEVCG_DEV_BLOCK` / `BPF_DEVCG_DEV_CHAR`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
/// `BPF_DEVCG_ACC_MKNOD | READ | WRITE`.
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |acc, c| {
        acc | match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => 0,
        }
    })
}

fn is_wildcard(r: &LinuxDeviceCgroup) -> bool {
    matches!(r.typ(), None | Some(LinuxDeviceType::A))
        && r.major().is_none_or(|m| m < 0)
        && r.minor().is_none_or(|m| m < 0)
        && access_bits(r.access().as_deref().unwrap_or("rwm")) == ACC_MKNOD | ACC_READ | ACC_WRITE
}

/// The default verdict and the rules that refine it, in order (later wins).
pub fn effective(rules: &[LinuxDeviceCgroup]) -> (bool, Vec<LinuxDeviceCgroup>) {
    let mut default_allow = false;
    let mut list = vec![];
    for r in rules {
        if is_wildcard(r) {
            default_allow = r.allow();
            list.clear();
        } else {
            list.push(r.clone());
        }
    }
    (default_allow, list)
}

// eBPF encoding: one u64 per instruction, laid out as struct bpf_insn
// (code: u8, dst_reg: 4 bits, src_reg: 4 bits, off: i16, imm: i32), little-endian.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_W | BPF_MEM
const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const AND64_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// The program for `rules`. Registers: r2 device type, r3 access, r4 major, r5 minor (from
/// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }).
pub fn program(rules: &[LinuxDeviceCgroup]) -> Vec<u64> {
    let (default_allow, list) = effective(rules);
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for r in list.iter().rev() {
        // Each check jumps past the rest of this rule's block when it does not match; the
        // offsets are filled in once the block's length is known.
        let mut block: Vec<(u8, u8, i32)> = vec![];
        match r.typ() {
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => block.push((JNE_K, 2, DEV_CHAR)),
            Some(LinuxDeviceType::B) => block.push((JNE_K, 2, DEV_BLOCK)),
            _ => {}
        }
        let acc = access_bits(r.access().as_deref().unwrap_or("rwm"));
        // r6 = access; allow rules match when every requested bit is granted, deny rules when
        // any requested bit is denied.
        block.push((MOV64_X, 6, 3));
        if r.allow() {
            block.push((AND64_K, 6, !acc));
            block.push((JNE_K, 6, 0));
        } else {
            block.push((AND64_K, 6, acc));
            block.push((JEQ_K, 6, 0));
        }
        if let Some(m) = r.major().filter(|m| *m >= 0) {
            block.push((JNE_K, 4, m as i32));
        }
        if let Some(m) = r.minor().filter(|m| *m >= 0) {
            block.push((JNE_K, 5, m as i32));
        }
        let len = block.len() + 2; // + verdict + exit
        for (i, (code, reg, imm)) in block.iter().enumerate() {
            let off = if matches!(*code, JNE_K | JEQ_K) {
                (len - i - 1) as i16
            } else {
                0
            };
            let src = if *code == MOV64_X { 3 } else { 0 };
            let imm = if *code == MOV64_X { 0 } else { *imm };
            p.push(insn(*code, *reg, src, off, imm));
        }
        p.push(insn(MOV64_K, 0, 0, 0, i32::from(r.allow())));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV64_K, 0, 0, 0, i32::from(default_allow)));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// Loads `insns` as a cgroup device program and attaches it to the cgroup directory `dir`
/// (BPF_F_ALLOW_MULTI, so a parent's program keeps applying too).
pub fn attach(dir: &std::path::Path, insns: &[u64]) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    let license = c"Apache-2.0";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: bpf(BPF_PROG_LOAD) reads a bpf_attr from `attr` (zeroed past the fields set);
    // the instruction and license pointers stay valid for the duration of the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nobody else owns it.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cg = std::fs::File::open(dir)?;
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(cg.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    // SAFETY: bpf(BPF_PROG_ATTACH) reads target_fd, attach_bpf_fd, attach_type and
    // attach_flags from `attr`; both descriptors are open for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_ATTACH, attr.as_ptr(), attr.len()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The attached program is held by the cgroup; our descriptor can go.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        typ: Option<LinuxDeviceType>,
        major: Option<i64>,
        minor: Option<i64>,
        acc: &str,
    ) -> LinuxDeviceCgroup {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(allow)
            .set_typ(typ)
            .set_major(major)
            .set_minor(minor)
            .set_access(Some(acc.into()));
        r
    }

    #[test]
    fn wildcard_resets_and_later_rules_win() {
        let rules = [
            rule(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rwm"),
            rule(false, None, None, None, "rwm"),
            rule(true, Some(LinuxDeviceType::C), Some(1), Some(5), "rw"),
        ];
        let (allow, list) = effective(&rules);
        assert!(!allow);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].minor(), Some(5));
    }

    #[test]
    fn program_layout_and_jump_offsets() {
        let rules = [
            rule(false, None, None, None, "rwm"),
            rule(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rwm"),
        ];
        let p = program(&rules);
        // 6 loads, one rule block (type, mov, and, jne, major, minor, verdict, exit), default.
        assert_eq!(p.len(), 6 + 8 + 2);
        // The first check of the block jumps over the 7 instructions after it.
        let first = p[6];
        assert_eq!(first & 0xff, u64::from(JNE_K));
        assert_eq!((first >> 16) & 0xffff, 7);
        // Verdict allow, default deny.
        assert_eq!(p[12] >> 32, 1);
        assert_eq!(p[14] >> 32, 0);
        assert_eq!(p[15] & 0xff, u64::from(EXIT));
    }
}
