//! Layers arriving as streams (a registry download, a tarball, a file of an archive): stored as
//! a blob *while* they are decompressed, hashed and unpacked into a temporary snapshot, in one
//! pass. The work needs no database, so it runs on worker threads; the result ([`Unpacked`]) is
//! recorded afterwards by [`ImageStore::record_unpacked`](crate::ImageStore::record_unpacked).
//!
//! Lifecycle: [`Unpacker::stream`] → [`Unpacked`] (a verified blob in place, a snapshot in a
//! temporary directory) → recorded (snapshot renamed into place, row written) or dropped (the
//! temporary directory is removed; the blob stays, content-addressed and harmless, until
//! `system check --repair` or the next pull reuses it).

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::blobs::BlobStore;
use crate::digest::{Digest, HashingReader};
use crate::store::{media, BlobInfo, StoreError};
use crate::unpack::{unpack, UnpackError};

/// A layer stored as a blob and unpacked into a temporary snapshot, not yet recorded.
#[derive(Debug)]
pub struct Unpacked {
    pub(crate) diff_id: Digest,
    pub(crate) size: u64,
    pub(crate) tmp: TempDir,
    pub(crate) blob: BlobInfo,
}

impl Unpacked {
    /// Digest of the uncompressed tar.
    pub fn diff_id(&self) -> &Digest {
        &self.diff_id
    }

    /// The blob the layer was stored as.
    pub fn blob(&self) -> &BlobInfo {
        &self.blob
    }
}

/// Stores and unpacks layer streams; shareable between threads.
#[derive(Debug, Clone)]
pub struct Unpacker<'a> {
    pub(crate) blobs: &'a BlobStore,
    pub(crate) snaps: PathBuf,
}

impl Unpacker<'_> {
    /// Reads a layer (gzip, zstd or plain tar, told by its first bytes) to its end: stores it
    /// as given as a blob, verified against `expected` when given, and unpacks it.
    ///
    /// Three stages run at once, handing 256 KiB chunks on through small bounded queues: this
    /// thread reads the source and writes the blob (hashing it); a second decompresses; a third
    /// hashes the tar (the diff id) and unpacks it. A large gzip layer is bound by its
    /// single-threaded inflate; the rest now overlaps with it instead of adding to it.
    pub fn stream(
        &self,
        src: impl Read,
        expected: Option<&Digest>,
    ) -> Result<Unpacked, StoreError> {
        let mut writer = self.blobs.writer()?;
        let (diff_id, size, tmp, media_type) = self.pipeline(src, Some(&mut writer))?;
        let (digest, blob_size) = writer.commit(expected)?;
        Ok(Unpacked {
            diff_id,
            size,
            tmp,
            blob: BlobInfo {
                digest,
                size: blob_size,
                media_type: media_type.to_string(),
            },
        })
    }

    /// Stores a layer file as a blob and unpacks it, in one pass ([`Unpacker::stream`]).
    pub fn file(&self, path: &Path, expected: Option<&Digest>) -> Result<Unpacked, StoreError> {
        let f = fs::File::open(path).map_err(|source| StoreError::Io {
            what: "open layer",
            path: path.to_path_buf(),
            source,
        })?;
        self.stream(f, expected)
    }

    /// Unpacks a layer already stored as blob `digest` (read, decompressed, and hashed and
    /// unpacked by three threads at once, as [`Unpacker::stream`]).
    pub fn blob(&self, digest: &Digest) -> Result<Unpacked, StoreError> {
        let digest = digest.clone();
        let blob_size = self.blobs.size(&digest)?;
        let (diff_id, size, tmp, media_type) =
            self.pipeline(self.blobs.open_blob(&digest)?, None)?;
        Ok(Unpacked {
            diff_id,
            size,
            tmp,
            blob: BlobInfo {
                digest,
                size: blob_size,
                media_type: media_type.to_string(),
            },
        })
    }

    /// The stages of [`Unpacker::stream`]: `src` read here (and written to `writer` when
    /// given), decompressed, hashed and unpacked on two more threads.
    fn pipeline(
        &self,
        mut src: impl Read,
        mut writer: Option<&mut crate::blobs::BlobWriter>,
    ) -> Result<(Digest, u64, TempDir, &'static str), StoreError> {
        use std::sync::mpsc::sync_channel;
        let (to_inflate, compressed) = sync_channel::<Vec<u8>>(QUEUE);
        let snaps = &self.snaps;
        let (read, unpacked) = std::thread::scope(|s| {
            let consumer = s.spawn(move || inflate_and_unpack(snaps, ChanReader::new(compressed)));
            let read = (|| -> io::Result<()> {
                loop {
                    let mut buf = vec![0u8; CHUNK];
                    let n = match src.read(&mut buf) {
                        Ok(0) => return Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    buf.truncate(n);
                    if let Some(w) = writer.as_mut() {
                        w.write_all(&buf)?;
                    }
                    // The unpacking stopped (it failed): its error is the one to report.
                    if to_inflate.send(buf).is_err() {
                        return Ok(());
                    }
                }
            })();
            drop(to_inflate);
            let unpacked = consumer.join().unwrap_or_else(|_| {
                Err(StoreError::Unpack(UnpackError::Read(io::Error::other(
                    "unpack thread panicked",
                ))))
            });
            (read, unpacked)
        });
        // A failed read explains a truncated stream best (and a pull retries on it).
        read.map_err(UnpackError::Read)?;
        unpacked
    }
}

/// Bytes per chunk handed between the stages of [`Unpacker::stream`].
const CHUNK: usize = 256 * 1024;
/// Chunks queued between two stages.
const QUEUE: usize = 8;

/// A reader of the chunks a channel delivers (end of file when the sender is gone).
struct ChanReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChanReader {
    fn new(rx: std::sync::mpsc::Receiver<Vec<u8>>) -> ChanReader {
        ChanReader {
            rx,
            cur: vec![],
            pos: 0,
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Stages two and three of [`Unpacker::stream`]: a thread decompresses `compressed` into
/// chunks, this one hashes and unpacks them. A decompression error is reported over the
/// unpacker's (which would only see the stream end early).
fn inflate_and_unpack(
    snaps: &Path,
    compressed: ChanReader,
) -> Result<(Digest, u64, TempDir, &'static str), StoreError> {
    use std::sync::mpsc::sync_channel;
    let (to_unpack, tar) = sync_channel::<Vec<u8>>(QUEUE);
    std::thread::scope(|s| {
        let inflater = s.spawn(move || -> Result<&'static str, UnpackError> {
            let (mut r, media_type) = decompress(compressed)?;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = match r.read(&mut buf) {
                    Ok(0) => return Ok(media_type),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(UnpackError::Read(e)),
                };
                buf.truncate(n);
                if to_unpack.send(buf).is_err() {
                    return Ok(media_type);
                }
            }
        });
        let unpacked = (|| {
            let tmp = TempDir(Some(temp_snapshot(snaps)?));
            let mut hashing = HashingReader::new(ChanReader::new(tar));
            unpack(&mut hashing, tmp.path())?;
            // A tar's end-of-archive blocks may not all have been read by the unpacker: they
            // are part of the diff id.
            io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Read)?;
            let (diff_id, size) = hashing.finish().map_err(UnpackError::Read)?;
            Ok::<_, StoreError>((diff_id, size, tmp))
        })();
        let media_type = inflater.join().unwrap_or_else(|_| {
            Err(UnpackError::Read(io::Error::other(
                "decompression thread panicked",
            )))
        })?;
        let (diff_id, size, tmp) = unpacked?;
        Ok((diff_id, size, tmp, media_type))
    })
}

/// A new, empty temporary snapshot directory (unique also across threads: mkdir is atomic).
fn temp_snapshot(base: &Path) -> Result<PathBuf, StoreError> {
    for n in 0..100_000u32 {
        let p = base.join(format!("tmp-{}-{n}", std::process::id()));
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(StoreError::Io {
                    what: "create",
                    path: p,
                    source,
                })
            }
        }
    }
    Err(StoreError::Io {
        what: "create temporary snapshot in",
        path: base.to_path_buf(),
        source: io::ErrorKind::AlreadyExists.into(),
    })
}

/// A reader of the uncompressed tar in `stream`, and the layer media type of the stream: gzip
/// and zstd are recognised by their magic bytes, anything else is taken as a plain tar.
type Decompressed<'a> = (Box<dyn Read + 'a>, &'static str);

fn decompress<'a>(stream: impl Read + 'a) -> Result<Decompressed<'a>, UnpackError> {
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    Ok(match r.fill_buf().map_err(UnpackError::Read)? {
        [0x1f, 0x8b, ..] => (
            Box::new(flate2::bufread::MultiGzDecoder::new(r)),
            media::LAYER_GZIP,
        ),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => (
            Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(UnpackError::Read)?),
            media::LAYER_ZSTD,
        ),
        _ => (Box::new(r), media::LAYER_TAR),
    })
}

/// A temporary snapshot directory, removed when dropped unless it was moved into place.
#[derive(Debug)]
pub(crate) struct TempDir(pub(crate) Option<PathBuf>);

impl TempDir {
    pub(crate) fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new("/nonexistent"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The diff id is the digest of the whole uncompressed tar, end-of-archive blocks and
    /// padding included: registries' configs list exactly that, and a pull verifies it.
    #[test]
    fn diff_id_covers_the_whole_tar_and_blob_the_whole_stream() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        fs::create_dir(dir.path().join("snapshots")).unwrap();
        let mut b = tar::Builder::new(vec![]);
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "f", &b"abc"[..]).unwrap();
        let mut data = b.into_inner().unwrap();
        data.extend_from_slice(&[0; 4096]); // record padding, as GNU tar writes
        let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let u = Unpacker {
            blobs: &blobs,
            snaps: dir.path().join("snapshots"),
        };
        let got = u.stream(&gz[..], Some(&Digest::of(&gz))).unwrap();
        assert_eq!(got.diff_id(), &Digest::of(&data));
        assert_eq!(got.blob().media_type, media::LAYER_GZIP);
        assert_eq!(fs::read(got.tmp.path().join("f")).unwrap(), b"abc");
        let tmp = got.tmp.path().to_path_buf();
        drop(got);
        assert!(!tmp.exists(), "an unrecorded snapshot is removed");
        let wrong = u.stream(&gz[..], Some(&Digest::of(b"other")));
        assert!(matches!(wrong, Err(StoreError::Blob(_))), "{wrong:?}");
        assert_eq!(
            fs::read_dir(dir.path().join("snapshots")).unwrap().count(),
            0
        );
    }

    /// Each stage's failure is the one reported, and nothing is left: a source that breaks
    /// (a dropped download), a corrupt gzip stream, a tar the unpacker refuses.
    #[test]
    fn a_failing_stage_reports_its_own_error_and_leaves_nothing() {
        struct Breaks(usize);
        impl Read for Breaks {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "peer went away",
                    ));
                }
                self.0 -= 1;
                buf[..2].copy_from_slice(&[0x1f, 0x8b]);
                Ok(2)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        fs::create_dir(dir.path().join("snapshots")).unwrap();
        let u = Unpacker {
            blobs: &blobs,
            snaps: dir.path().join("snapshots"),
        };
        let err = u.stream(Breaks(1), None).unwrap_err().to_string();
        assert!(err.contains("peer went away"), "the source's error: {err}");
        let mut bad_gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        bad_gzip.extend_from_slice(&[0xff; 64]);
        assert!(u.stream(&bad_gzip[..], None).is_err());
        let mut b = tar::Builder::new(vec![]);
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        // Written by hand: the tar crate itself refuses to build such a path.
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let evil = b.into_inner().unwrap();
        assert!(
            u.stream(&evil[..], None).is_err(),
            "a path leaving the layer is refused"
        );
        assert_eq!(
            fs::read_dir(dir.path().join("snapshots")).unwrap().count(),
            0
        );
        assert_eq!(blobs.temporaries().len(), 0);
    }
}
