//! The transaction pool's journal (`DATADIR/txpool.journal`), as Geth's
//! `transactions.rlp`: every transaction the pool accepts is appended in the form it came
//! in (blob transactions with their sidecars), and the file is rewritten from the pool
//! once a minute, so that what was pending survives a restart or a `kill -9`. On start the
//! engine sends each entry through the pool's checks again; those the chain has made stale
//! (included, replaced, nonce too low) are skipped.
//!
//! Format: records of a 4-byte big-endian length and that many bytes; a record cut short
//! by a crash ends the file (it is dropped with a warning).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "txpool.journal";

/// Largest record read back (a blob transaction with its sidecar is under 2.5 MB).
const MAX_RECORD: usize = 8 * 1024 * 1024;

pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Open (creating) the journal in `dir`, returning it and the records it holds.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<Vec<u8>>), String> {
        let path = dir.join(FILE_NAME);
        let records = match std::fs::read(&path) {
            Ok(bytes) => read_records(&bytes, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let file = open_append(&path)?;
        Ok((Journal { path, file }, records))
    }

    /// Append one accepted transaction.
    pub fn append(&mut self, raw: &[u8]) -> Result<(), String> {
        let mut rec = Vec::with_capacity(4 + raw.len());
        rec.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        rec.extend_from_slice(raw);
        let before = self.file.metadata().map(|m| m.len()).ok();
        self.file.write_all(&rec).map_err(|e| {
            // A record cut by a failed write (a full disk) would hide every later one:
            // cut the file back to where it was.
            if let Some(len) = before {
                let _ = self.file.set_len(len);
            }
            format!("cannot append to {}: {e}", self.path.display())
        })
    }

    /// Replace the journal by `records` (the pool as it is now): written to a temporary
    /// file, synced, then renamed over the journal, so that a crash leaves one or the other.
    pub fn rotate(&mut self, records: &[Vec<u8>]) -> Result<(), String> {
        let tmp = self.path.with_extension("journal.new");
        let ctx = |e: std::io::Error| format!("cannot rewrite {}: {e}", self.path.display());
        {
            let mut f = File::create(&tmp).map_err(ctx)?;
            let mut buf = Vec::new();
            for r in records {
                buf.extend_from_slice(&(r.len() as u32).to_be_bytes());
                buf.extend_from_slice(r);
            }
            f.write_all(&buf).map_err(ctx)?;
            f.sync_all().map_err(ctx)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(ctx)?;
        self.file = open_append(&self.path)?;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

fn read_records(bytes: &[u8], path: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut r = bytes;
    loop {
        let mut len = [0u8; 4];
        if r.is_empty() {
            break;
        }
        if r.read_exact(&mut len).is_err() {
            tracing::warn!(path = %path.display(), "the journal ends in a cut record (a crash while writing it): dropped");
            break;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_RECORD || len > r.len() {
            tracing::warn!(path = %path.display(), "the journal ends in a cut or damaged record: the rest is dropped");
            break;
        }
        out.push(r[..len].to_vec());
        r = &r[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_appends_rotation_and_a_cut_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, recs) = Journal::open(dir.path()).unwrap();
        assert!(recs.is_empty());
        j.append(b"one").unwrap();
        j.append(b"two").unwrap();
        drop(j);
        let (mut j, recs) = Journal::open(dir.path()).unwrap();
        assert_eq!(recs, vec![b"one".to_vec(), b"two".to_vec()]);
        j.rotate(&[b"two".to_vec()]).unwrap();
        j.append(b"three").unwrap();
        // A crash in the middle of an append: a length with too few bytes after it.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        f.write_all(&[0, 0, 0, 9, b'x']).unwrap();
        let (_, recs) = Journal::open(dir.path()).unwrap();
        assert_eq!(recs, vec![b"two".to_vec(), b"three".to_vec()]);
    }
}
