//! Attaching to a running container (`moat attach`, `docker attach`, the API's attach of a
//! running container): its monitor serves `attach.sock` in the container's directory, and
//! every client connected there gets the container's output as it comes — Docker's
//! multiplexed frames (an 8-byte header: stream 1 or 2, three zero bytes, the length as a big-
//! endian u32), raw bytes for a terminal — so the API passes the bytes on unchanged. A
//! terminal's clients may type into it. Output written before a client connects is in the logs.
//!
//! A client too slow to take what the container writes is let go rather than allowed to stall
//! the container (and every other client).

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::containers::{Row, State};
use crate::{EngineError, Paths};

/// The monitor's attach socket, in the container's directory.
pub const SOCKET: &str = "attach.sock";

/// The monitor's side.
#[derive(Debug)]
pub(crate) struct Server {
    listener: UnixListener,
    /// Each client, and whether its input is still open (a client that closed its input,
    /// as `docker attach` does at the end of its stdin, still gets the output).
    clients: Vec<(UnixStream, bool)>,
    tty: bool,
}

impl Server {
    /// Listens on [`SOCKET`] in the working directory (the container's: a long root would not
    /// fit a socket path's 108 bytes).
    pub(crate) fn bind(tty: bool) -> std::io::Result<Server> {
        let _ = std::fs::remove_file(SOCKET);
        let listener = UnixListener::bind(SOCKET)?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            clients: vec![],
            tty,
        })
    }

    /// What to poll: the listener, then each client (for input while it is open; a client
    /// whose input ended is polled for nothing, so only its hang-up shows).
    pub(crate) fn fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        let mut v = vec![(self.listener.as_fd(), true)];
        v.extend(self.clients.iter().map(|(c, open)| (c.as_fd(), *open)));
        v
    }

    /// Takes the clients waiting to connect.
    pub(crate) fn accept(&mut self) {
        while let Ok((c, _)) = self.listener.accept() {
            if c.set_nonblocking(true).is_ok() {
                self.clients.push((c, true));
            }
        }
    }

    /// Output of the container (`stream` 0: stdout, 1: stderr) to every client.
    pub(crate) fn broadcast(&mut self, stream: usize, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let framed = if self.tty {
            data.to_vec()
        } else {
            frame(stream, data)
        };
        self.clients
            .retain(|(c, _)| write_nonblocking(&mut &*c, &framed));
    }

    /// What client `i` typed (for a terminal): `Some(0)` when nothing (or its input just
    /// ended), `None` when it hung up (then it is dropped; the indexes of later clients shift).
    pub(crate) fn read(&mut self, i: usize, buf: &mut [u8]) -> Option<usize> {
        let (c, open) = self.clients.get_mut(i)?;
        if !*open {
            // Polled for nothing, yet ready: hung up.
            self.clients.remove(i);
            return None;
        }
        match c.read(buf) {
            Ok(0) => {
                *open = false;
                Some(0)
            }
            Ok(n) => Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(0),
            Err(_) => {
                self.clients.remove(i);
                None
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(SOCKET);
    }
}

/// Docker's multiplexed frame of `data` on `stream` (0: stdout, 1: stderr).
pub fn frame(stream: usize, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&[stream as u8 + 1, 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Writes all of `data` to a non-blocking socket, waiting a little when it is full; false when
/// the client is gone or does not keep up.
fn write_nonblocking(c: &mut &UnixStream, mut data: &[u8]) -> bool {
    let mut patience = 100;
    while !data.is_empty() {
        match c.write(data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && patience > 0 => {
                patience -= 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(_) => return false,
        }
    }
    true
}

/// Connects to the attach socket of the running container `row`.
pub fn connect(paths: &Paths, row: &Row) -> Result<UnixStream, EngineError> {
    if row.effective().0 != State::Running {
        return Err(EngineError::Conflict(
            "You cannot attach to a stopped container, start it first".into(),
        ));
    }
    let dir = paths.container_dir(&row.id);
    let (_dir, sock) = crate::socket_in(&dir, SOCKET)?;
    UnixStream::connect(&sock).map_err(|source| EngineError::Io {
        what: "attach to",
        path: dir.join(SOCKET),
        source,
    })
}

/// Splits Docker's multiplexed frames as they arrive.
#[derive(Debug, Default)]
pub struct Demux {
    buf: Vec<u8>,
}

impl Demux {
    /// Adds bytes; the complete frames so far as (stream 0/1, data).
    pub fn push(&mut self, data: &[u8]) -> Vec<(usize, Vec<u8>)> {
        self.buf.extend_from_slice(data);
        let mut out = vec![];
        while self.buf.len() >= 8 {
            let len =
                u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
            if self.buf.len() < 8 + len {
                break;
            }
            let stream = if self.buf[0] == 2 { 1 } else { 0 };
            out.push((stream, self.buf[8..8 + len].to_vec()));
            self.buf.drain(..8 + len);
        }
        out
    }
}

/// `moat attach`: the running container's output to our stdout and stderr (and, for a
/// terminal with `stdin`, our input to it, where the detach keys — ctrl-p ctrl-q unless
/// `detach_keys` says otherwise — detach), until it exits;
/// its exit code, or `None` when we detached.
pub fn attach(
    paths: &Paths,
    row: &Row,
    stdin: bool,
    detach_keys: Option<&str>,
) -> Result<Option<i32>, EngineError> {
    let keys = detach_keys
        .map(crate::monitor::parse_detach_keys)
        .transpose()?
        .unwrap_or_default();
    let conn = connect(paths, row)?;
    let detached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if stdin && row.tty {
        let mut to = conn.try_clone().map_err(|source| EngineError::Io {
            what: "dup",
            path: Path::new(SOCKET).into(),
            source,
        })?;
        let flag = detached.clone();
        std::thread::spawn(move || {
            let mut keys = crate::monitor::DetachKeys::new(keys);
            let mut input = std::io::stdin();
            let mut buf = [0u8; 4096];
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let (pass, detach) = keys.scan(&buf[..n]);
                if to.write_all(&pass).is_err() {
                    break;
                }
                if detach {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    break;
                }
            }
        });
    }
    let mut from = &conn;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut demux = Demux::default();
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        if row.tty {
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
            continue;
        }
        for (stream, data) in demux.push(&buf[..n]) {
            let _ = if stream == 0 {
                out.write_all(&data).and_then(|_| out.flush())
            } else {
                err.write_all(&data)
            };
        }
    }
    if detached.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(None);
    }
    crate::lifecycle::wait(paths, row).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_any_pieces() {
        let wire: Vec<u8> = [frame(0, b"out\n"), frame(1, b"err"), frame(0, b"")].concat();
        for piece in [1, 3, 8, 9, wire.len()] {
            let mut d = Demux::default();
            let got: Vec<(usize, Vec<u8>)> = wire.chunks(piece).flat_map(|c| d.push(c)).collect();
            assert_eq!(
                got,
                vec![(0, b"out\n".to_vec()), (1, b"err".to_vec()), (0, vec![])],
                "pieces of {piece}"
            );
        }
        assert_eq!(&frame(1, b"ab")[..8], &[2, 0, 0, 0, 0, 0, 0, 2]);
    }
}
