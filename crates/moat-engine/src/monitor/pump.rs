//! The monitor's steady state: the container's output into the log (and to an attached
//! caller), an attached caller's input into the container's terminal, and the init's exit.

use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::logs::Writer;

/// Gives back to the kernel what the start-up used and the monitor's long idle life does not:
/// free heap pages, and the stack pages below the current frame (dead: the deepest calls are
/// over; a later call that reaches them again gets fresh zero pages). About 100 KB each here,
/// per container.
pub(super) fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let Some(low) = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|maps| {
            maps.lines()
                .find(|l| l.ends_with("[stack]"))
                .and_then(|l| usize::from_str_radix(l.split('-').next()?, 16).ok())
        })
    else {
        return;
    };
    // Keep a margin below the current frame for the calls this function still makes.
    let page = 4096;
    let end = (sp.saturating_sub(16 * 1024)) & !(page - 1);
    if end > low {
        // SAFETY: [low, end) is the part of this thread's stack mapping more than 16 KiB below
        // the live frames: no live data is there (the stack grows down), and MADV_DONTNEED on
        // private anonymous memory only drops pages, which read back as zeros if touched again.
        unsafe { libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED) };
    }
}

/// What the monitor moves while the container runs.
#[derive(Debug)]
pub(super) struct Streams {
    /// The container's output: (descriptor, stream: 0 stdout, 1 stderr). Pipes, or the pty
    /// master for a terminal (one stream).
    pub outputs: Vec<(OwnedFd, usize)>,
    /// The attached caller's stdout and stderr.
    pub attached: Option<[OwnedFd; 2]>,
    /// The attached caller's stdin and where it goes (the pty master), for `-it`.
    pub input: Option<(OwnedFd, OwnedFd)>,
    /// The report pipe, to tell the caller it detached (the detach keys were typed).
    pub detach: Option<std::fs::File>,
    /// Clients attached later (`attach.sock`).
    pub attach: Option<crate::attach::Server>,
    /// Where what they type goes: the terminal's master (a `-t` container).
    pub tty_in: Option<OwnedFd>,
    /// The caller's detach keys (Docker's ctrl-p ctrl-q when empty).
    pub detach_keys: Vec<u8>,
}

/// Docker's default detach keys: ctrl-p, ctrl-q.
const DETACH: [u8; 2] = [0x10, 0x11];

/// The file in a container's directory naming the detach keys of its next attached start
/// (`run`/`start --detach-keys`), read by its monitor.
pub const DETACH_KEYS_FILE: &str = "detach-keys";

/// Finds the detach keys in the caller's input as it arrives (they may span reads): what to
/// pass on, and whether they were typed. A partial sequence not completed is passed on with
/// what follows it.
#[derive(Debug)]
pub struct DetachKeys {
    seq: Vec<u8>,
    matched: usize,
}

impl Default for DetachKeys {
    fn default() -> DetachKeys {
        DetachKeys::new(DETACH.to_vec())
    }
}

/// Leaves `keys` (checked first) in the container directory `dir` for its monitor, or with
/// `None` removes what an earlier start left.
pub fn save_detach_keys(
    dir: &std::path::Path,
    keys: Option<&str>,
) -> Result<(), crate::EngineError> {
    let file = dir.join(DETACH_KEYS_FILE);
    let io = |source| crate::EngineError::Io {
        what: "write",
        path: file.clone(),
        source,
    };
    match keys {
        Some(k) => {
            parse_detach_keys(k)?;
            std::fs::write(&file, k).map_err(io)
        }
        None => match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        },
    }
}

/// Parses Docker's `--detach-keys`: comma-separated keys, each a single character or
/// `ctrl-X` (X one of a-z, @, [, \\, ], ^, _).
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, crate::hostconfig::FlagError> {
    let bad = || crate::hostconfig::FlagError::DetachKeys(spec.to_string());
    let mut seq = vec![];
    for key in spec.split(',') {
        let b = match key.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => {
                let c = c.as_bytes()[0].to_ascii_lowercase();
                match c {
                    b'a'..=b'z' => c - b'a' + 1,
                    b'@' => 0,
                    b'[' => 27,
                    b'\\' => 28,
                    b']' => 29,
                    b'^' => 30,
                    b'_' => 31,
                    _ => return Err(bad()),
                }
            }
            None if key.len() == 1 => key.as_bytes()[0],
            _ => return Err(bad()),
        };
        seq.push(b);
    }
    if seq.is_empty() {
        return Err(bad());
    }
    Ok(seq)
}

impl DetachKeys {
    /// A scanner for `seq` (not empty: see [`parse_detach_keys`]).
    pub fn new(seq: Vec<u8>) -> DetachKeys {
        let seq = if seq.is_empty() { DETACH.to_vec() } else { seq };
        DetachKeys { seq, matched: 0 }
    }

    /// Scans `input`; returns the bytes for the container and whether to detach.
    pub fn scan(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.seq[self.matched] {
                self.matched += 1;
                if self.matched == self.seq.len() {
                    self.matched = 0;
                    return (out, true);
                }
                continue;
            }
            out.extend_from_slice(&self.seq[..self.matched]);
            self.matched = 0;
            if b == self.seq[0] {
                self.matched = 1;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Copies the container's output into the log (and to the attached caller) and the caller's
/// input into its terminal, until the init has exited and its output is closed; returns the
/// exit code.
pub(super) fn pump(pid: i32, mut s: Streams, log: &mut Writer) -> i32 {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok();
    let mut code = None;
    let mut buf = vec![0u8; 16 * 1024];
    let mut keys = DetachKeys::new(s.detach_keys.clone());
    // Once the init is gone, processes it left (a container sharing a pid namespace) may still
    // hold the pipes: wait for them a little, then stop; the runtime's delete kills them.
    let mut grace = 200;
    while code.is_none() || (!s.outputs.is_empty() && grace > 0) {
        // Slots: outputs first, then the input, then the signal descriptor.
        let mut fds: Vec<PollFd<'_>> = s
            .outputs
            .iter()
            .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let n_out = fds.len();
        if let Some((from, _)) = &s.input {
            fds.push(PollFd::new(from.as_fd(), PollFlags::POLLIN));
        }
        let n_in = fds.len();
        if let Some(sig) = &sigfd {
            fds.push(PollFd::new(sig.as_fd(), PollFlags::POLLIN));
        }
        let n_att = fds.len();
        if let Some(a) = &s.attach {
            fds.extend(a.fds().into_iter().map(|(f, input)| {
                let events = if input {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                };
                PollFd::new(f, events)
            }));
        }
        let timeout = if code.is_some() || sigfd.is_none() {
            grace -= 1;
            PollTimeout::from(10u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut closed = vec![];
        for (slot, (fd, stream)) in s.outputs.iter().enumerate() {
            if !ready[slot] {
                continue;
            }
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) | Err(_) => closed.push(slot), // EIO on a pty: its last user is gone
                Ok(n) => {
                    let _ = log.write(*stream, &buf[..n]);
                    if let Some(a) = &s.attached {
                        let _ = moat_runtime::console::write_all(&a[*stream], &buf[..n]);
                    }
                    if let Some(a) = &mut s.attach {
                        a.broadcast(*stream, &buf[..n]);
                    }
                }
            }
        }
        for slot in closed.into_iter().rev() {
            s.outputs.remove(slot);
        }
        if n_in > n_out && ready[n_out] {
            let (done, detached) = match &s.input {
                Some((from, to)) => match nix::unistd::read(from, &mut buf) {
                    Ok(0) | Err(_) => (true, false),
                    Ok(n) => {
                        let (pass, detach) = keys.scan(&buf[..n]);
                        (moat_runtime::console::write_all(to, &pass).is_err(), detach)
                    }
                },
                None => (true, false),
            };
            if done || detached {
                s.input = None;
            }
            if detached {
                // The caller goes; its terminal is no longer ours to write to (our log's copy of
                // its stderr included).
                s.attached = None;
                super::release_log_copy();
                if let Some(mut r) = s.detach.take() {
                    use std::io::Write;
                    let _ = r.write_all(super::Event::Detached.encode().as_bytes());
                }
            }
        }
        if let Some(sig) = &sigfd {
            if ready.get(n_in).copied().unwrap_or(false) {
                while let Ok(Some(_)) = sig.read_signal() {}
            }
        }
        if ready.get(n_att).copied().unwrap_or(false) {
            if let Some(a) = &mut s.attach {
                a.accept();
            }
        }
        // Clients from the last (before accept), so that removals keep earlier indexes.
        let clients = ready.len().saturating_sub(n_att + 1);
        for i in (0..clients).rev() {
            if !ready[n_att + 1 + i] {
                continue;
            }
            if let Some(a) = &mut s.attach {
                if let Some(n) = a.read(i, &mut buf) {
                    if let Some(t) = &s.tty_in {
                        let _ = moat_runtime::console::write_all(t, &buf[..n]);
                    }
                }
            }
        }
        if code.is_none() {
            code = reap(pid);
        }
    }
    let _ = log.flush();
    code.unwrap_or(137)
}

/// Reaps whatever exited; the init's exit code once it has.
fn reap(pid: i32) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) if p.as_raw() == pid => code = Some(c),
            Ok(WaitStatus::Signaled(p, s, _)) if p.as_raw() == pid => code = Some(128 + s as i32),
            Ok(WaitStatus::StillAlive) => return code,
            // No child left at all: the init is gone (reaped, or never ours).
            Err(nix::Error::ECHILD) => return code.or(Some(137)),
            Err(_) => return code,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_detach_keys_parse_as_docker_writes_them() {
        assert_eq!(
            parse_detach_keys("ctrl-p,ctrl-q").ok(),
            Some(vec![0x10, 0x11])
        );
        assert_eq!(parse_detach_keys("ctrl-x,y").ok(), Some(vec![0x18, b'y']));
        assert_eq!(parse_detach_keys("ctrl-@,ctrl-_").ok(), Some(vec![0, 31]));
        for bad in ["", "ctrl-", "ctrl-1", "xy", "ctrl-a,,b"] {
            assert!(parse_detach_keys(bad).is_err(), "{bad:?}");
        }
        let mut k = DetachKeys::new(vec![0x18, b'y']);
        assert_eq!(k.scan(b"a\x18b"), (b"a\x18b".to_vec(), false));
        assert_eq!(k.scan(b"\x18"), (vec![], false));
        assert_eq!(k.scan(b"y"), (vec![], true));
    }

    #[test]
    fn detach_keys_across_reads_and_false_starts() {
        let mut k = DetachKeys::default();
        assert_eq!(k.scan(b"ls\r"), (b"ls\r".to_vec(), false));
        // ctrl-p then something else: both go to the container.
        assert_eq!(k.scan(&[0x10, b'x']), (vec![0x10, b'x'], false));
        // ctrl-p ctrl-p ctrl-q: the first ctrl-p goes on, then detach.
        assert_eq!(k.scan(&[0x10, 0x10, 0x11]), (vec![0x10], true));
        // Split across two reads.
        assert_eq!(k.scan(&[b'a', 0x10]), (vec![b'a'], false));
        assert_eq!(k.scan(&[0x11, b'z']), (vec![], true));
    }
}
