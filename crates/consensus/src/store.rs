//! The store of decided blocks: an append-only log, one fsync'd record per height
//! (`len u32 | sha256(body)[..8] | body`, body = `height u64 | cert | value`). Opening it
//! checks every record and cuts a torn tail left by a crash, so after `kill -9` the node
//! resumes at the last height whose record is whole — never at a half-written one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use malachitebft_app_channel::app::types::core::CommitCertificate;
use sha2::{Digest, Sha256};

use super::codec;
use super::types::{Ctx, Height, Value};

/// One decided height.
#[derive(Debug, Clone)]
pub struct Decided {
    pub certificate: CommitCertificate<Ctx>,
    pub value: Value,
}

/// The decided-block log.
pub struct Store {
    path: PathBuf,
    file: File,
    /// Offset and length of each record's body, by height - first.
    index: Vec<(u64, u32)>,
    first: u64,
    end: u64,
}

fn checksum(body: &[u8]) -> [u8; 8] {
    let h = Sha256::digest(body);
    h[..8].try_into().expect("8 bytes")
}

impl Store {
    /// Open (or create) the log at `path`, dropping a torn tail.
    pub fn open(path: &Path) -> Result<Self, String> {
        let ctx = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(ctx)?;
        let mut all = Vec::new();
        file.read_to_end(&mut all).map_err(ctx)?;
        let mut index = Vec::new();
        let mut first = 0;
        let mut pos = 0usize;
        let mut prev: Option<u64> = None;
        while pos + 12 <= all.len() {
            let len = u32::from_be_bytes(all[pos..pos + 4].try_into().expect("4")) as usize;
            let sum: [u8; 8] = all[pos + 4..pos + 12].try_into().expect("8");
            let start = pos + 12;
            if start + len > all.len() || checksum(&all[start..start + len]) != sum || len < 8 {
                break;
            }
            let h = u64::from_be_bytes(all[start..start + 8].try_into().expect("8"));
            match prev {
                None => first = h,
                Some(p) if h != p + 1 => {
                    return Err(format!(
                        "{}: record for height {h} follows height {p}: the log is not contiguous; \
                         move it aside to resync this node from its peers",
                        path.display()
                    ))
                }
                Some(_) => {}
            }
            prev = Some(h);
            index.push((start as u64, len as u32));
            pos = start + len;
        }
        if pos < all.len() {
            tracing::warn!(
                path = %path.display(),
                kept = pos,
                dropped = all.len() - pos,
                "cutting a torn record at the end of the decided-block log (crash during a write)"
            );
            file.set_len(pos as u64).map_err(ctx)?;
            file.sync_all().map_err(ctx)?;
        }
        Ok(Store {
            path: path.to_path_buf(),
            file,
            index,
            first,
            end: pos as u64,
        })
    }

    /// The last decided height, if any.
    pub fn last_height(&self) -> Option<Height> {
        if self.index.is_empty() {
            None
        } else {
            Some(Height(self.first + self.index.len() as u64 - 1))
        }
    }

    /// The first height the log holds.
    pub fn first_height(&self) -> Option<Height> {
        (!self.index.is_empty()).then_some(Height(self.first))
    }

    /// Append the decision of the next height and make it durable.
    pub fn append(&mut self, d: &Decided) -> Result<(), String> {
        let h = d.certificate.height.0;
        if let Some(last) = self.last_height() {
            if h != last.0 + 1 {
                return Err(format!(
                    "cannot store height {h} after {}: heights are stored in order",
                    last.0
                ));
            }
        }
        let cert = codec::encode_cert(&d.certificate);
        let value = codec::encode_value(&d.value);
        let mut body = Vec::with_capacity(16 + cert.len() + value.len());
        body.extend_from_slice(&h.to_be_bytes());
        body.extend_from_slice(&(cert.len() as u32).to_be_bytes());
        body.extend_from_slice(&cert);
        body.extend_from_slice(&value);
        let mut rec = Vec::with_capacity(12 + body.len());
        rec.extend_from_slice(&(body.len() as u32).to_be_bytes());
        rec.extend_from_slice(&checksum(&body));
        rec.extend_from_slice(&body);
        let ctx = |e: std::io::Error| format!("{}: {e}", self.path.display());
        self.file.write_all(&rec).map_err(ctx)?;
        self.file.sync_data().map_err(ctx)?;
        if self.index.is_empty() {
            self.first = h;
        }
        self.index.push((self.end + 12, body.len() as u32));
        self.end += rec.len() as u64;
        Ok(())
    }

    /// The decision at a height.
    pub fn get(&mut self, h: Height) -> Result<Option<Decided>, String> {
        if h.0 < self.first || self.index.is_empty() {
            return Ok(None);
        }
        let Some(&(off, len)) = self.index.get((h.0 - self.first) as usize) else {
            return Ok(None);
        };
        let ctx = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let mut body = vec![0u8; len as usize];
        self.file.seek(SeekFrom::Start(off)).map_err(ctx)?;
        self.file.read_exact(&mut body).map_err(ctx)?;
        let clen = u32::from_be_bytes(body[8..12].try_into().expect("4")) as usize;
        let bad = |e: codec::CodecError| format!("{}: height {}: {e}", self.path.display(), h.0);
        let certificate = codec::decode_cert(&body[12..12 + clen]).map_err(bad)?;
        let value = codec::decode_value(&body[12 + clen..]).map_err(bad)?;
        Ok(Some(Decided { certificate, value }))
    }

    /// The raw value bytes and certificate for sync.
    pub fn raw(&mut self, h: Height) -> Result<Option<(Bytes, CommitCertificate<Ctx>)>, String> {
        Ok(self
            .get(h)?
            .map(|d| (codec::encode_value(&d.value), d.certificate)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Address, BlockHash};
    use alloy_primitives::B256;
    use malachitebft_app_channel::app::types::core::{CommitSignature, Round};
    use malachitebft_signing_ed25519::PrivateKey;

    fn decided(h: u64) -> Decided {
        let id = BlockHash(B256::repeat_byte(h as u8));
        Decided {
            certificate: CommitCertificate {
                height: Height(h),
                round: Round::new(0),
                value_id: id,
                commit_signatures: vec![CommitSignature::new(
                    Address([1; 20]),
                    PrivateKey::from([2; 32]).sign(b"x"),
                )],
            },
            value: Value {
                id,
                params: Bytes::from(format!("[\"block {h}\"]")),
            },
        }
    }

    #[test]
    fn reopens_at_the_last_whole_record_after_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("decided.log");
        let mut s = Store::open(&p).unwrap();
        assert_eq!(s.last_height(), None);
        for h in 1..=5 {
            s.append(&decided(h)).unwrap();
        }
        assert!(s.append(&decided(7)).is_err(), "gaps are refused");
        drop(s);
        // A crash in the middle of writing height 6: half a record at the end.
        let whole = std::fs::metadata(&p).unwrap().len();
        let mut s = Store::open(&p).unwrap();
        s.append(&decided(6)).unwrap();
        drop(s);
        let full = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(whole + (full - whole) / 2).unwrap();
        drop(f);
        let mut s = Store::open(&p).unwrap();
        assert_eq!(s.last_height(), Some(Height(5)));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), whole, "torn tail cut");
        let d = s.get(Height(3)).unwrap().unwrap();
        assert_eq!(d.value.params, decided(3).value.params);
        assert_eq!(d.certificate.value_id, decided(3).certificate.value_id);
        assert!(s.get(Height(6)).unwrap().is_none());
        s.append(&decided(6)).unwrap();
        assert_eq!(s.last_height(), Some(Height(6)));
        // A flipped byte inside a record: the log stops before it.
        drop(s);
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let s = Store::open(&p).unwrap();
        assert_eq!(s.last_height(), Some(Height(5)));
    }
}
