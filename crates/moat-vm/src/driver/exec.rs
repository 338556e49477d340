//! `exec` into a VM container: a session on the driver's control socket. The client writes
//! `exec` and a line break, then frames of the agent protocol as if it were the only process
//! (stream 0): first [`Kind::Exec`], then stdin, signals and terminal sizes; it reads
//! `Started` or `Failed`, then the output and `Exit`. The driver gives each session a stream
//! of its own towards the agent and routes the frames both ways; a client that goes away
//! leaves its process running with its output dropped (as `exec -d`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use moat_agent::proto::{self, Decoder, Frame, Kind, ProtoError};

use super::Booted;
use crate::VmError;

/// One exec session, on the driver's side.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) stream: u32,
    pub(super) conn: UnixStream,
    decoder: Decoder,
}

impl Session {
    pub(super) fn new(stream: u32, conn: UnixStream) -> Session {
        Session {
            stream,
            conn,
            decoder: Decoder::default(),
        }
    }
}

impl Booted {
    /// A frame from the agent about an exec'd process: to its session, as stream 0.
    pub(super) fn route_to_session(&mut self, mut f: Frame) {
        let Some(i) = self.execs.iter().position(|e| e.stream == f.stream) else {
            return;
        };
        let last = matches!(f.kind, Kind::Exit | Kind::Failed);
        f.stream = 0;
        let gone = (&self.execs[i].conn).write_all(&f.encode()).is_err();
        if last || gone {
            self.execs.remove(i);
        }
    }

    /// What a session's client sent: to the agent, as the session's stream.
    pub(super) fn route_from_session(&mut self, stream: u32, buf: &mut [u8]) {
        let Some(i) = self.execs.iter().position(|e| e.stream == stream) else {
            return;
        };
        let n = match (&self.execs[i].conn).read(buf) {
            Ok(0) | Err(_) => {
                // The client went away; its process runs on, its output is dropped.
                self.execs.remove(i);
                return;
            }
            Ok(n) => n,
        };
        self.execs[i].decoder.push(&buf[..n]);
        loop {
            match self.execs[i].decoder.next_frame() {
                Ok(Some(mut f)) => {
                    if !matches!(
                        f.kind,
                        Kind::Exec | Kind::Stdin | Kind::StdinClose | Kind::Signal | Kind::Resize
                    ) {
                        continue;
                    }
                    f.stream = stream;
                    if self.send(&f).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    self.execs.remove(i);
                    return;
                }
            }
        }
    }
}

/// The client's end of an exec session.
#[derive(Debug)]
pub struct Client {
    conn: UnixStream,
    decoder: Decoder,
}

/// What a client sends while its process runs (a clone of the session's socket, for another
/// thread).
#[derive(Debug)]
pub struct Input(UnixStream);

impl Input {
    fn send(&self, f: &Frame) -> Result<(), VmError> {
        (&self.0)
            .write_all(&f.encode())
            .map_err(|e| ProtoError::from(e).into())
    }

    /// Bytes for the process's stdin.
    pub fn stdin(&self, data: &[u8]) -> Result<(), VmError> {
        self.send(&Frame {
            kind: Kind::Stdin,
            stream: 0,
            payload: data.to_vec(),
        })
    }

    /// The end of the process's stdin.
    pub fn close_stdin(&self) -> Result<(), VmError> {
        self.send(&Frame {
            kind: Kind::StdinClose,
            stream: 0,
            payload: vec![],
        })
    }

    /// The size of the process's terminal.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), VmError> {
        self.send(&Frame::json(Kind::Resize, 0, &proto::Resize { rows, cols }))
    }
}

impl Client {
    /// Starts `req` in the VM container whose driver listens at `socket`; the client and the
    /// process's guest pid. A process that cannot start is [`VmError::Command`] with Docker's
    /// code.
    pub fn start(socket: &Path, req: &proto::ExecStart) -> Result<(Client, i32), VmError> {
        let io = |what| crate::io_err(what, socket);
        let mut conn = UnixStream::connect(socket).map_err(io("connect to"))?;
        conn.write_all(b"exec\n").map_err(io("write to"))?;
        conn.write_all(&Frame::json(Kind::Exec, 0, req).encode())
            .map_err(io("write to"))?;
        let mut c = Client {
            conn,
            decoder: Decoder::default(),
        };
        // Starting a process in the guest takes a while under software emulation.
        c.conn
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(io("configure"))?;
        let f = c.next()?;
        c.conn.set_read_timeout(None).map_err(io("configure"))?;
        match f.kind {
            Kind::Started => Ok((c, f.parse::<proto::Started>()?.pid)),
            Kind::Failed => {
                let failed: proto::Failed = f.parse()?;
                Err(VmError::Command {
                    code: failed.code,
                    message: failed.message,
                })
            }
            got => Err(ProtoError::Unexpected {
                expected: "the exec's start",
                got,
            }
            .into()),
        }
    }

    /// The sending half, for another thread.
    pub fn input(&self) -> Result<Input, VmError> {
        self.conn
            .try_clone()
            .map(Input)
            .map_err(|e| ProtoError::from(e).into())
    }

    fn next(&mut self) -> Result<Frame, VmError> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(f);
            }
            let n = self.conn.read(&mut buf).map_err(ProtoError::from)?;
            if n == 0 {
                return Err(VmError::ExecEnded);
            }
            self.decoder.push(&buf[..n]);
        }
    }

    /// Copies the process's output to `out` and `err` until it exits; its exit code.
    pub fn wait(mut self, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, VmError> {
        loop {
            let f = self.next()?;
            match f.kind {
                Kind::Stdout => {
                    let _ = out.write_all(&f.payload);
                    let _ = out.flush();
                }
                Kind::Stderr => {
                    let _ = err.write_all(&f.payload);
                    let _ = err.flush();
                }
                Kind::Exit => return Ok(f.parse::<proto::Exit>()?.code),
                _ => {}
            }
        }
    }
}
