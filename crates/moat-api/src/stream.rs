//! Docker's attach and logs streams: multiplexed frames (`[stream, 0, 0, 0, len32be] data`,
//! stream 1 = stdout, 2 = stderr) for containers without a terminal, raw bytes for those with
//! one; and the pump between a hijacked connection and a container's pipes.

use std::os::fd::OwnedFd;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;

/// Content type of a multiplexed stream.
pub const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";
/// Content type of a raw (terminal) stream.
pub const RAW: &str = "application/vnd.docker.raw-stream";

/// One multiplexed frame.
pub fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
    moat_engine::attach::frame(usize::from(stream.saturating_sub(1)), data)
}

/// Moves a container's output (`out`, and `err` unless it is a terminal) to the connection,
/// and the connection's input to `stdin`, until the output ends (the monitor exited); then
/// awaits `finish` (an exec's exit, recorded before the client asks for it) and closes.
pub async fn pump<IO>(
    io: IO,
    out: OwnedFd,
    err: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    tty: bool,
    finish: impl std::future::Future<Output = ()>,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    if let Some(fd) = stdin {
        match pipe::Sender::from_owned_fd(fd) {
            Ok(mut tx) => {
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut rd, &mut tx).await;
                    // Dropping the pipe's write end: the container sees end of input.
                });
            }
            Err(e) => log::debug!("attach stdin: {e}"),
        }
    }
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let reader = |fd: OwnedFd, kind: u8| {
        let tx = frames_tx.clone();
        async move {
            let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) else {
                return;
            };
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rx.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = if tty {
                            buf[..n].to_vec()
                        } else {
                            frame(kind, &buf[..n])
                        };
                        if tx.send(chunk).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    };
    tokio::spawn(reader(out, 1));
    if let Some(e) = err {
        tokio::spawn(reader(e, 2));
    }
    drop(frames_tx);
    while let Some(chunk) = frames_rx.recv().await {
        if wr.write_all(&chunk).await.is_err() {
            break;
        }
        let _ = wr.flush().await;
    }
    finish.await;
    let _ = wr.shutdown().await;
}

/// Writes into a streamed response body from a blocking thread (a tar being made).
#[derive(Debug)]
pub struct BodyWriter(pub tokio::sync::mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>);

impl std::io::Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(axum::body::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_as_docker() {
        assert_eq!(frame(2, b"hi"), [2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
    }
}
