//! The content-addressed blob store: `<root>/blobs/sha256/<hex>`.
//!
//! A blob is written to `<root>/blobs/tmp/` while its digest is computed, synced, checked
//! against the expected digest, and only then renamed into place: a reader never sees a partial
//! or wrong blob, and a `kill -9` at any point leaves at most a temporary file (removed by
//! `system check --repair`).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// I/O on a blob path failed
    #[error("blob store {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// the content does not match its digest
    #[error("blob {expected}: content has digest {actual} ({size} bytes): refusing it")]
    DigestMismatch {
        /// The digest the blob should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
        /// Its size.
        size: u64,
    },
    /// no such blob
    #[error("blob {0} is not in the store")]
    NotFound(Digest),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The blob directory of a store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens (creating) the blob store under `root`.
    pub fn open(root: &Path) -> Result<BlobStore, BlobError> {
        let dir = root.join("blobs/sha256");
        let tmp = root.join("blobs/tmp");
        for d in [&dir, &tmp] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        Ok(BlobStore { dir, tmp })
    }

    /// Where blob `d` lives.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    /// Whether blob `d` is present.
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// A writer for a new blob; [`BlobWriter::commit`] makes it visible.
    pub fn writer(&self) -> Result<BlobWriter, BlobError> {
        let (file, path) = tempfile_in(&self.tmp)?;
        Ok(BlobWriter {
            inner: Some(HashingWriter::new(BufWriter::with_capacity(
                256 * 1024,
                file,
            ))),
            tmp_path: path,
            dir: self.dir.clone(),
        })
    }

    /// Stores everything `r` yields; with `expected`, refuses content of another digest.
    pub fn put(
        &self,
        mut r: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), BlobError> {
        let mut w = self.writer()?;
        io::copy(&mut r, &mut w).map_err(io_err(&w.tmp_path))?;
        w.commit(expected)
    }

    /// Stores `data` and returns its digest.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest, BlobError> {
        Ok(self.put(data, None)?.0)
    }

    /// Reads a whole blob (configs and manifests).
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, BlobError> {
        let p = self.path(d);
        fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BlobError::NotFound(d.clone()),
            _ => io_err(&p)(e),
        })
    }

    /// Opens a blob for streaming.
    pub fn open_blob(&self, d: &Digest) -> Result<File, BlobError> {
        let p = self.path(d);
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BlobError::NotFound(d.clone()),
            _ => io_err(&p)(e),
        })
    }

    /// Size of a blob in bytes.
    pub fn size(&self, d: &Digest) -> Result<u64, BlobError> {
        let p = self.path(d);
        Ok(fs::metadata(&p).map_err(io_err(&p))?.len())
    }

    /// Removes blob `d` (absent is fine).
    pub fn remove(&self, d: &Digest) -> Result<(), BlobError> {
        let p = self.path(d);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&p)(e)),
            _ => Ok(()),
        }
    }

    /// Every blob present (files whose names are not digests are ignored).
    pub fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let mut out: Vec<Digest> = fs::read_dir(&self.dir)
            .map_err(io_err(&self.dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                format!("sha256:{}", e.file_name().to_string_lossy())
                    .parse()
                    .ok()
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Recomputes the digest of blob `d`; Ok(false) when the content no longer matches.
    pub fn verify(&self, d: &Digest) -> Result<bool, BlobError> {
        let f = self.open_blob(d)?;
        let (actual, _) = crate::digest::HashingReader::new(f)
            .finish()
            .map_err(io_err(&self.path(d)))?;
        Ok(&actual == d)
    }

    /// Temporary files left by interrupted writes.
    pub fn temporaries(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.tmp)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect()
    }
}

/// Creates a uniquely named file in `dir` (O_EXCL, mode 0600).
pub(crate) fn tempfile_in(dir: &Path) -> Result<(File, PathBuf), BlobError> {
    use std::os::unix::fs::OpenOptionsExt;
    let pid = std::process::id();
    for attempt in 0..1000u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!("tmp-{pid}-{nanos:x}-{attempt}"));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Err(io_err(dir)(io::ErrorKind::AlreadyExists.into()))
}

/// A blob being written. Dropped without [`commit`](BlobWriter::commit), it leaves nothing.
#[derive(Debug)]
pub struct BlobWriter {
    inner: Option<HashingWriter<BufWriter<File>>>,
    tmp_path: PathBuf,
    dir: PathBuf,
}

impl BlobWriter {
    /// Syncs, checks the digest and moves the blob into place; returns its digest and size.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64), BlobError> {
        let Some(inner) = self.inner.take() else {
            return Err(io_err(&self.tmp_path)(io::ErrorKind::BrokenPipe.into()));
        };
        let (digest, size, buf) = inner.finish();
        let file = buf
            .into_inner()
            .map_err(|e| io_err(&self.tmp_path)(e.into_error()))?;
        file.sync_all().map_err(io_err(&self.tmp_path))?;
        drop(file);
        if let Some(exp) = expected {
            if exp != &digest {
                let _ = fs::remove_file(&self.tmp_path);
                return Err(BlobError::DigestMismatch {
                    expected: exp.clone(),
                    actual: digest,
                    size,
                });
            }
        }
        let dest = self.dir.join(digest.hex());
        fs::rename(&self.tmp_path, &dest).map_err(io_err(&dest))?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Some(w) => w.write(buf),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.inner.is_some() {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_read_verify_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let d = s.put_bytes(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert!(s.contains(&d));
        assert_eq!(s.read(&d).unwrap(), b"hello");
        assert!(s.verify(&d).unwrap());
        assert_eq!(s.list().unwrap(), vec![d.clone()]);
        s.remove(&d).unwrap();
        assert!(matches!(s.read(&d), Err(BlobError::NotFound(_))));
        assert!(s.temporaries().is_empty());
    }

    #[test]
    fn wrong_digest_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let want = Digest::of(b"other");
        let err = s.put(&b"hello"[..], Some(&want)).unwrap_err();
        assert!(err.to_string().contains(want.as_str()), "{err}");
        assert!(s.list().unwrap().is_empty());
        assert!(s.temporaries().is_empty());
    }

    #[test]
    fn abandoned_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let mut w = s.writer().unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert!(s.temporaries().is_empty());
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let d = s.put_bytes(b"hello").unwrap();
        fs::write(s.path(&d), b"hellO").unwrap();
        assert!(!s.verify(&d).unwrap());
    }
}
