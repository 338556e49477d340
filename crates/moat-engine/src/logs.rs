//! Container logs in Docker's json-file format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"RFC 3339 with nanoseconds"}`, in
//! `<container dir>/<id>-json.log`, rotated by size (`--log-opt max-size=10m,max-file=3`) into
//! `<id>-json.log.1`, `.2`... as Docker does. The monitor writes; `moat logs` reads.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors of the log files.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// a log file operation failed
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// a `--log-opt` is not understood
    #[error("invalid log option {0:?}: json-file takes max-size=SIZE[k|m|g] and max-file=N")]
    BadOption(String),
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The text, with its newline when it had one.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When it was written (RFC 3339, nanoseconds).
    pub time: String,
}

/// Rotation settings (Docker's json-file `max-size` and `max-file`; default: no rotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rotation {
    /// Rotate when the file would exceed this many bytes.
    pub max_size: Option<u64>,
    /// How many files to keep, the current one included (at least 1).
    pub max_file: u32,
}

impl Rotation {
    /// Parses `--log-opt` values (`max-size=10m`, `max-file=3`).
    pub fn parse(opts: &[String]) -> Result<Rotation, LogError> {
        let mut r = Rotation {
            max_size: None,
            max_file: 1,
        };
        for o in opts {
            let bad = || LogError::BadOption(o.clone());
            let (k, v) = o.split_once('=').ok_or_else(bad)?;
            match k {
                "max-size" => {
                    let (num, mult) = match v.to_ascii_lowercase().chars().last() {
                        Some('k') => (&v[..v.len() - 1], 1 << 10),
                        Some('m') => (&v[..v.len() - 1], 1 << 20),
                        Some('g') => (&v[..v.len() - 1], 1 << 30),
                        _ => (v, 1),
                    };
                    let n: u64 = num.parse().map_err(|_| bad())?;
                    if n == 0 {
                        return Err(bad());
                    }
                    r.max_size = Some(n * mult);
                }
                "max-file" => {
                    r.max_file = v.parse().ok().filter(|n| *n >= 1).ok_or_else(bad)?;
                }
                _ => return Err(bad()),
            }
        }
        Ok(r)
    }

    /// As stored beside the container (`max_size max_file`).
    pub fn encode(&self) -> String {
        format!("{} {}", self.max_size.unwrap_or(0), self.max_file)
    }

    /// Reads [`Rotation::encode`]'s form; anything else means no rotation.
    pub fn decode(s: &str) -> Rotation {
        let mut w = s.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
        let size = w.next().unwrap_or(0);
        Rotation {
            max_size: (size > 0).then_some(size),
            max_file: w.next().unwrap_or(1).clamp(1, 1000) as u32,
        }
    }
}

/// The log file of container `id` in its directory `dir`.
pub fn path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}-json.log"))
}

/// Appends entries, splitting the streams into lines and rotating by size.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    /// Unterminated text per stream (stdout, stderr), written when its line ends or at the end.
    partial: [Vec<u8>; 2],
}

/// Docker writes a line longer than this as several entries.
const MAX_LINE: usize = 16 * 1024;

impl Writer {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, rotation: Rotation) -> Result<Writer, LogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io("open", path))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
            partial: [vec![], vec![]],
        })
    }

    /// Logs `data` read from stream 0 (stdout) or 1 (stderr).
    pub fn write(&mut self, stream: usize, data: &[u8]) -> Result<(), LogError> {
        let stream = stream.min(1);
        let mut buf = std::mem::take(&mut self.partial[stream]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl + 1;
            self.entry(stream, &buf[start..end])?;
            start = end;
        }
        while buf.len() - start >= MAX_LINE {
            self.entry(stream, &buf[start..start + MAX_LINE])?;
            start += MAX_LINE;
        }
        buf.drain(..start);
        self.partial[stream] = buf;
        Ok(())
    }

    /// Writes what is left of unterminated lines (at the container's exit).
    pub fn flush(&mut self) -> Result<(), LogError> {
        for stream in 0..2 {
            let rest = std::mem::take(&mut self.partial[stream]);
            if !rest.is_empty() {
                self.entry(stream, &rest)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, stream: usize, text: &[u8]) -> Result<(), LogError> {
        let e = Entry {
            log: String::from_utf8_lossy(text).into_owned(),
            stream: if stream == 0 { "stdout" } else { "stderr" }.into(),
            time: moat_runtime::state::now_rfc3339(),
        };
        let mut line = serde_json::to_vec(&e).unwrap_or_default();
        line.push(b'\n');
        if let Some(max) = self.rotation.max_size {
            if self.size > 0 && self.size + line.len() as u64 > max {
                self.rotate()?;
            }
        }
        self.file
            .write_all(&line)
            .map_err(io("write", &self.path))?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `log` → `log.1` → `log.2`..., dropping the oldest beyond `max_file`.
    fn rotate(&mut self) -> Result<(), LogError> {
        let n = self.rotation.max_file;
        let numbered = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        if n <= 1 {
            self.file.set_len(0).map_err(io("truncate", &self.path))?;
        } else {
            let _ = std::fs::remove_file(numbered(n - 1));
            for i in (1..n - 1).rev() {
                let _ = std::fs::rename(numbered(i), numbered(i + 1));
            }
            std::fs::rename(&self.path, numbered(1)).map_err(io("rotate", &self.path))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(io("open", &self.path))?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Every entry of the log at `path`, oldest first (rotated files included).
pub fn read_all(path: &Path) -> Result<Vec<Entry>, LogError> {
    let mut files = vec![];
    for i in (1..1000).rev() {
        let p = PathBuf::from(format!("{}.{i}", path.display()));
        if p.exists() {
            files.push(p);
        }
    }
    files.push(path.to_path_buf());
    let mut out = vec![];
    for f in files {
        out.extend(read_from(&f, 0)?.0);
    }
    Ok(out)
}

/// The entries of one file from byte `offset`, and the offset after the last complete line
/// (for `logs -f`, which reads on from there).
pub fn read_from(path: &Path, offset: u64) -> Result<(Vec<Entry>, u64), LogError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], offset)),
        Err(e) => return Err(io("open", path)(e)),
    };
    read_open(&file, path, offset)
}

/// As [`read_from`], from a file already open: a follower keeps the log open, so it reads to
/// the end even when the container (and its log) is removed meanwhile (a client that waits,
/// removes, and only then reads its `logs -f` stream, as docker-py's `run` does).
pub fn read_open(file: &File, path: &Path, offset: u64) -> Result<(Vec<Entry>, u64), LogError> {
    let mut r = BufReader::new(file);
    std::io::Seek::seek(&mut r, std::io::SeekFrom::Start(offset)).map_err(io("seek", path))?;
    let mut pos = offset;
    let mut out = vec![];
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line).map_err(io("read", path))?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        pos += n as u64;
        if let Ok(e) = serde_json::from_str::<Entry>(&line) {
            out.push(e);
        }
    }
    Ok((out, pos))
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| LogError::Io { what, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_streams_partials_and_rotation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x-json.log");
        let mut w = Writer::open(&p, Rotation::default()).unwrap();
        w.write(0, b"one\ntw").unwrap();
        w.write(1, b"err\n").unwrap();
        w.write(0, b"o\nthree").unwrap();
        w.flush().unwrap();
        let got: Vec<(String, String)> = read_all(&p)
            .unwrap()
            .into_iter()
            .map(|e| (e.stream, e.log))
            .collect();
        let want = [
            ("stdout", "one\n"),
            ("stderr", "err\n"),
            ("stdout", "two\n"),
            ("stdout", "three"),
        ];
        assert_eq!(
            got,
            want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
        );

        let r = Rotation::parse(&["max-size=1k".into(), "max-file=3".into()]).unwrap();
        assert_eq!(Rotation::decode(&r.encode()), r);
        let p2 = d.path().join("y-json.log");
        let mut w = Writer::open(&p2, r).unwrap();
        for i in 0..200 {
            w.write(0, format!("line {i}\n").as_bytes()).unwrap();
        }
        assert!(std::fs::metadata(&p2).unwrap().len() <= 1024);
        assert!(d.path().join("y-json.log.2").exists());
        assert!(!d.path().join("y-json.log.3").exists());
        let all = read_all(&p2).unwrap();
        assert_eq!(all.last().unwrap().log, "line 199\n");
        // Oldest dropped, the rest in order.
        let nums: Vec<u32> = all
            .iter()
            .map(|e| e.log.trim()[5..].parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        assert!(nums[0] > 0);
    }

    #[test]
    fn bad_options_are_refused() {
        for bad in [
            "max-size=0",
            "max-size=x",
            "max-file=0",
            "mode=fast",
            "max-size",
        ] {
            assert!(Rotation::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
