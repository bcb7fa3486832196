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
    OpenOptions::new().create(true).append(true).mode(0o600).open(file)
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

/// Copies `input` into `file` until EOF, rotating whenever the next write would pass
/// `max_bytes` (a single oversized chunk is written whole rather than split).
pub fn relay(mut input: impl Read, file: &Path, max_bytes: u64, keep: u32) -> io::Result<()> {
    let mut out = open(file)?;
    let mut size = out.metadata()?.len();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if size > 0 && size + n as u64 > max_bytes {
            drop(out);
            rotate(file, keep)?;
            out = open(file)?;
            size = 0;
        }
        out.write_all(&buf[..n])?;
        size += n as u64;
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
}
