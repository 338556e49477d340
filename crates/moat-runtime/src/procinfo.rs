//! What `top` shows of a process, read from /proc: for a process container on the host, for a
//! VM container by the guest's agent (the same code on both sides of the VM).

use serde::{Deserialize, Serialize};

/// One process as `top` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Its pid (in the namespace of whoever read it: the host's, or the guest's).
    pub pid: i32,
    /// Its parent's pid.
    pub ppid: i32,
    /// Real uid.
    pub uid: u32,
    /// CPU time used, seconds.
    pub cpu_secs: u64,
    /// Command line.
    pub cmd: String,
}

/// Process `pid` as /proc shows it now; `None` once it is gone.
pub fn read(pid: i32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces and parentheses) start at the last ')'.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let num = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .trim_end_matches('\0')
                .replace('\0', " ")
        })
        .unwrap_or_default();
    Some(Process {
        pid,
        ppid: i32::try_from(num(1)).unwrap_or(0),
        uid,
        cpu_secs: (num(11) + num(12)) / ticks,
        cmd,
    })
}

/// Every process in the pid namespace of process `pid` (itself included), by pid.
pub fn in_pid_namespace_of(pid: i32) -> Vec<Process> {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let Some(want) = ns(&pid.to_string()) else {
        return vec![];
    };
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ns(&p.to_string()).as_ref() == Some(&want))
        .collect();
    pids.sort_unstable();
    pids.into_iter().filter_map(read).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(me.ppid > 0);
        assert!(!me.cmd.is_empty());
        assert!(in_pid_namespace_of(me.pid).iter().any(|p| p.pid == me.pid));
    }
}
