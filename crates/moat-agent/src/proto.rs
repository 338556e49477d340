//! The protocol between the host (a VM container's driver) and the guest agent, over one
//! virtio-serial port: a byte stream of frames, each a 9-byte header (kind: u8, stream: u32 LE,
//! length: u32 LE) and a payload of at most [`MAX_PAYLOAD`] bytes. Control messages carry JSON;
//! stdio carries raw bytes. `stream` names the process a frame is about: 0 is the container's
//! init (exec'd processes get their own numbers).
//!
//! The agent speaks first ([`Kind::Hello`] with its [`VERSION`]); the host refuses a version it
//! does not know rather than guessing, so an agent and an engine from different builds fail
//! with a clear message instead of misreading each other.

use serde::{Deserialize, Serialize};

/// The protocol version; bumped on any incompatible change.
pub const VERSION: u32 = 2;

/// The name of the virtio-serial port the agent talks on (`/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "moat.agent.0";

/// The 9p tag of the directory with the container's config.json and the files it binds from
/// the container's directory on the host (hosts, hostname, resolv.conf), by the same names.
pub const BUNDLE_TAG: &str = "bundle";

/// The directory of the bundle share holding the container's seccomp program compiled by the
/// host, under moat-runtime's cache name (the guest's runtime reads it instead of compiling).
pub const SECCOMP_DIR: &str = "seccomp";

/// The 9p tag of the container's root filesystem.
pub const ROOTFS_TAG: &str = "rootfs";

/// The largest payload a frame may carry (stdio is cut into pieces of at most this size).
pub const MAX_PAYLOAD: usize = 1 << 20;

const HEADER: usize = 9;

/// Errors of the protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// frame of an unknown kind
    #[error("agent protocol: unknown frame kind {0}")]
    UnknownKind(u8),
    /// frame too large
    #[error("agent protocol: frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    /// malformed JSON payload
    #[error("agent protocol: bad {kind:?} message: {source}")]
    Json {
        /// The frame kind.
        kind: Kind,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// an unexpected frame
    #[error("agent protocol: expected {expected}, got {got:?}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: Kind,
    },
    /// the other side's version is not ours
    #[error("agent protocol version {0} is not this engine's ({VERSION}): agent and engine come from different builds")]
    Version(u32),
    /// reading or writing the channel failed
    #[error("agent channel: {0}")]
    Io(#[from] std::io::Error),
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// guest → host, first: [`Hello`].
    Hello = 1,
    /// host → guest: [`Start`].
    Start = 2,
    /// guest → host: the process runs ([`Started`]).
    Started = 3,
    /// host → guest: bytes for the process's stdin.
    Stdin = 4,
    /// host → guest: the process's stdin reached its end.
    StdinClose = 5,
    /// guest → host: bytes the process wrote to stdout.
    Stdout = 6,
    /// guest → host: bytes the process wrote to stderr.
    Stderr = 7,
    /// host → guest: [`Signal`] for the process.
    Signal = 8,
    /// guest → host: the process exited ([`Exit`]); its output was sent before.
    Exit = 9,
    /// guest → host: the process could not start ([`Failed`]).
    Failed = 10,
    /// host → guest: start another process in the container as this stream ([`ExecStart`]).
    Exec = 11,
    /// host → guest: the process's terminal size ([`Resize`]).
    Resize = 12,
    /// guest → host: a DNS query (UDP payload) a container sent to 127.0.0.11, the embedded
    /// DNS of user-defined networks, which listens in the container's namespace on the host;
    /// `stream` numbers the query.
    DnsQuery = 13,
    /// host → guest: the answer to the query `stream` (UDP payload).
    DnsAnswer = 14,
    /// host → guest: list the container's processes (`top`); `stream` numbers the request.
    Top = 15,
    /// guest → host: the answer to the request `stream` ([`TopReply`]).
    TopReply = 16,
}

impl Kind {
    fn from_u8(b: u8) -> Result<Kind, ProtoError> {
        Ok(match b {
            1 => Kind::Hello,
            2 => Kind::Start,
            3 => Kind::Started,
            4 => Kind::Stdin,
            5 => Kind::StdinClose,
            6 => Kind::Stdout,
            7 => Kind::Stderr,
            8 => Kind::Signal,
            9 => Kind::Exit,
            10 => Kind::Failed,
            11 => Kind::Exec,
            12 => Kind::Resize,
            13 => Kind::DnsQuery,
            14 => Kind::DnsAnswer,
            15 => Kind::Top,
            16 => Kind::TopReply,
            other => return Err(ProtoError::UnknownKind(other)),
        })
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub kind: Kind,
    /// The process it is about (0: the container's init).
    pub stream: u32,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame with a JSON payload.
    pub fn json<T: Serialize>(kind: Kind, stream: u32, msg: &T) -> Frame {
        // Serializing our own plain structs cannot fail.
        let payload = serde_json::to_vec(msg).unwrap_or_default();
        Frame {
            kind,
            stream,
            payload,
        }
    }

    /// The JSON payload, parsed.
    pub fn parse<T: for<'a> Deserialize<'a>>(&self) -> Result<T, ProtoError> {
        serde_json::from_slice(&self.payload).map_err(|source| ProtoError::Json {
            kind: self.kind,
            source,
        })
    }

    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.stream.to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Reassembles frames from a byte stream read in arbitrary pieces.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Adds bytes read from the channel.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let kind = Kind::from_u8(self.buf[0])?;
        let word = |at: usize| {
            u32::from_le_bytes([
                self.buf[at],
                self.buf[at + 1],
                self.buf[at + 2],
                self.buf[at + 3],
            ])
        };
        let stream = word(1);
        let len = word(5) as usize;
        if len > MAX_PAYLOAD {
            return Err(ProtoError::TooLarge(len));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let payload = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some(Frame {
            kind,
            stream,
            payload,
        }))
    }
}

/// Whether a mount of an OCI config (as JSON) is a bind mount: the mounts whose host sources
/// the host shares with the guest and the guest maps back.
pub fn is_bind_mount(m: &serde_json::Value) -> bool {
    m["type"] == "bind"
        || m["options"]
            .as_array()
            .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
}

/// The agent's greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`VERSION`] of the agent.
    pub version: u32,
    /// The guest kernel's release (`uname -r`).
    pub kernel: String,
}

/// A directory of the host shared into the guest for the container's bind mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// The 9p tag.
    pub tag: String,
    /// The host path, as the container's config.json names it.
    pub host_path: String,
}

/// Runs the container whose bundle is the 9p share [`BUNDLE_TAG`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// The bundle's path on the host (bind sources under it are found in the share).
    pub host_bundle: String,
    /// Other host directories the config's bind mounts use.
    pub shares: Vec<Share>,
    /// Give the process a stdin (fed by [`Kind::Stdin`]); otherwise /dev/null.
    pub stdin: bool,
    /// The container has a terminal (process.terminal): its output is one stream, and
    /// [`Kind::Resize`] sizes it.
    #[serde(default)]
    pub tty: bool,
    /// The guest's network (the container's interfaces, served by the VMM's NICs); none:
    /// loopback only, in a namespace of the container's own.
    #[serde(default)]
    pub net: Option<Net>,
    /// Write the agent's steps, with the guest's uptime, to the guest console.
    #[serde(default)]
    pub debug: bool,
}

/// The guest's network: the container's interfaces, found by MAC, named and addressed as the
/// host's namespace has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Net {
    /// The interfaces.
    pub ifaces: Vec<Iface>,
    /// The default gateway.
    pub gateway: Option<String>,
}

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iface {
    /// Its name (`eth0`).
    pub name: String,
    /// Its MAC address (the VMM's NIC has it).
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// IPv4 address and prefix length.
    pub cidr: String,
}

/// Runs another process in the container (`exec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStart {
    /// The OCI process (args, env, cwd, user, capabilities, rlimits...), as the host built it
    /// from the container's own.
    pub process: serde_json::Value,
    /// It has a terminal (its output is one stream; [`Kind::Resize`] sizes it).
    pub tty: bool,
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// The process started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// Its pid in the guest.
    pub pid: i32,
}

/// The process could not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    /// Docker's exit code: 125, or 126/127 when the command cannot be run or found.
    pub code: i32,
    /// Why.
    pub message: String,
}

/// At most this many processes in a [`TopReply`], each command line cut at [`TOP_MAX_CMD`]
/// bytes: the reply stays below [`MAX_PAYLOAD`].
pub const TOP_MAX_PROCESSES: usize = 2048;
/// See [`TOP_MAX_PROCESSES`].
pub const TOP_MAX_CMD: usize = 256;

/// The container's processes, as the guest sees them (guest pids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopReply {
    /// By pid.
    pub processes: Vec<moat_runtime::procinfo::Process>,
}

/// A signal for the process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// The signal number.
    pub signal: i32,
}

/// The process exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Its exit code (128+N for signal N).
    pub code: i32,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let frames = [
            Frame::json(
                Kind::Hello,
                0,
                &Hello {
                    version: VERSION,
                    kernel: "6.1".into(),
                },
            ),
            Frame {
                kind: Kind::Stdout,
                stream: 0,
                payload: b"hello\n".to_vec(),
            },
            Frame {
                kind: Kind::StdinClose,
                stream: 7,
                payload: vec![],
            },
            Frame::json(Kind::Exit, 0, &Exit { code: 3 }),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for piece in [1, 2, 5, 9, 10, wire.len()] {
            let mut d = Decoder::default();
            let mut got = vec![];
            for chunk in wire.chunks(piece) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "pieces of {piece}");
        }
        let exit: Exit = frames[3].parse().unwrap();
        assert_eq!(exit.code, 3);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut d = Decoder::default();
        d.push(&[42, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(d.next_frame(), Err(ProtoError::UnknownKind(42))));
        let mut d = Decoder::default();
        d.push(&[6, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Err(ProtoError::TooLarge(_))));
        let f = Frame {
            kind: Kind::Exit,
            stream: 0,
            payload: b"{".to_vec(),
        };
        assert!(f.parse::<Exit>().is_err());
    }
}
