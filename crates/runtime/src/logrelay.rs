//! The log relay (`chainctl log-relay`): copies a service's output from stdin to its log
//! file, rotating by size (`x.log` → `x.log.1` → … → `x.log.N`). It ignores stop signals
//! so the service's last words are kept, and exits when every writer has closed the pipe.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

fn rotated(file: &Path, n: u32) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open(file: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
}

/// Shifts `x.log.(N-1)` → `x.log.N` … `x.log` → `x.log.1`, dropping the oldest.
pub fn rotate(file: &Path, keep: u32) -> io::Result<()> {
    let _ = fs::remove_file(rotated(file, keep));
    for n in (1..keep).rev() {
        let from = rotated(file, n);
        if from.exists() {
            fs::rename(&from, rotated(file, n + 1))?;
        }
    }
    fs::rename(file, rotated(file, 1))
}

/// Writes to the current log file, rotating so no file passes `max_bytes`. After a write
/// error (disk full, directory removed) it drops output rather than die, which would kill
/// the service with SIGPIPE, and says how much it dropped once writing works again.
pub struct Sink<'a> {
    file: &'a Path,
    max_bytes: u64,
    keep: u32,
    out: Option<File>,
    size: u64,
    dropped: u64,
    retry_at: std::time::Instant,
}

impl<'a> Sink<'a> {
    /// A sink into `file`, rotated at `max_bytes` with `keep` old files.
    pub fn new(file: &'a Path, max_bytes: u64, keep: u32) -> Self {
        Sink {
            file,
            max_bytes,
            keep,
            out: None,
            size: 0,
            dropped: 0,
            retry_at: std::time::Instant::now(),
        }
    }

    fn fail(&mut self, lost: usize) {
        self.out = None;
        self.dropped += lost as u64;
        self.retry_at = std::time::Instant::now() + std::time::Duration::from_secs(1);
    }

    fn ensure_open(&mut self) -> bool {
        if self.out.is_some() {
            return true;
        }
        if std::time::Instant::now() < self.retry_at {
            return false;
        }
        match open(self.file) {
            Ok(f) => {
                self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.out = Some(f);
                if self.dropped > 0 {
                    let note = format!("[chainctl log-relay: {} bytes of output dropped: the log could not be written]\n", self.dropped);
                    self.dropped = 0;
                    self.write_part(note.as_bytes());
                }
                true
            }
            Err(_) => {
                self.fail(0);
                false
            }
        }
    }

    fn write_part(&mut self, data: &[u8]) {
        match self.out.as_mut().map(|o| o.write_all(data)) {
            Some(Ok(())) => self.size += data.len() as u64,
            _ => self.fail(data.len()),
        }
    }

    fn rotate(&mut self) {
        self.out = None;
        if rotate(self.file, self.keep).is_err() {
            self.fail(0);
        }
        self.size = 0;
    }

    /// Writes a chunk, cut at its last newline that fits, so lines stay whole unless a
    /// single line is longer than `max_bytes`.
    pub fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if !self.ensure_open() {
                self.dropped += data.len() as u64;
                return;
            }
            let room = self.max_bytes.saturating_sub(self.size) as usize;
            if data.len() <= room {
                self.write_part(data);
                return;
            }
            let at_newline = data[..room]
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| i + 1);
            let take = match at_newline {
                Some(k) => k,
                None if self.size == 0 => room.max(1), // one line longer than a whole file
                None => 0,                             // start the line in a fresh file
            };
            self.write_part(&data[..take]);
            data = &data[take..];
            self.rotate();
        }
    }
}

/// Copies `input` into `file` until EOF, rotating so no file passes `max_bytes`.
pub fn relay(mut input: impl Read, file: &Path, max_bytes: u64, keep: u32) -> io::Result<()> {
    let mut sink = Sink::new(file, max_bytes, keep);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => sink.write(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Entry point of `chainctl log-relay`.
pub fn run(file: &Path, max_bytes: u64, keep: u32) -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        // SAFETY: setting a disposition to SIG_IGN is always sound.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    relay(io::stdin().lock(), file, max_bytes, keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("svc.log");
        let line = "0123456789abcdef\n".repeat(4); // 68 bytes
                                                   // A reader that returns one chunk per read, like a pipe.
        struct Chunks(Vec<Vec<u8>>);
        impl Read for Chunks {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Ok(0);
                }
                let c = self.0.remove(0);
                buf[..c.len()].copy_from_slice(&c);
                Ok(c.len())
            }
        }
        let chunks = Chunks((0..10).map(|_| line.as_bytes().to_vec()).collect());
        relay(chunks, &f, 150, 2).unwrap();
        // 10 chunks of 68 bytes, two per file: 2 in x.log, 2 in .1, 2 in .2, older dropped.
        assert_eq!(fs::metadata(&f).unwrap().len(), 136);
        assert_eq!(fs::metadata(rotated(&f, 1)).unwrap().len(), 136);
        assert_eq!(fs::metadata(rotated(&f, 2)).unwrap().len(), 136);
        assert!(!rotated(&f, 3).exists());
    }

    #[test]
    fn one_big_burst_is_split_at_line_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("svc.log");
        let burst: String = (0..60).map(|i| format!("line {i:03} abcdef\n")).collect(); // 16 bytes a line
        relay(burst.as_bytes(), &f, 100, 20).unwrap();
        let mut all = String::new();
        for n in (1..=20).rev() {
            if let Ok(t) = fs::read_to_string(rotated(&f, n)) {
                assert!(t.len() <= 100 && t.ends_with('\n'), "{n}: {t:?}");
                all.push_str(&t);
            }
        }
        all.push_str(&fs::read_to_string(&f).unwrap());
        assert_eq!(all, burst, "nothing lost, order kept");
    }
}
