//! A backup's manifest (`chainctl backup`, crate chainctl-backup, writes it) and what
//! checks a backup: every stored file re-hashed. Here so that the monitor (scheduled
//! backups' metrics) and the report (`ops.backups`) read backups without linking what
//! takes them.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's name inside a backup directory.
pub const MANIFEST: &str = "manifest.json";
/// The encrypted secrets' name inside a backup directory.
pub const SECRETS: &str = "secrets.tar.age";
/// The name the network's own files (genesis, port allocation) have in a manifest.
pub const NETWORK: &str = "network";

/// Version of the layout below; another version is refused, not misread.
pub const FORMAT: u32 = 1;

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The chainctl that took it.
    pub chainctl: String,
    /// When it was taken (unix seconds).
    pub created_unix: u64,
    /// The profile's name.
    pub profile: String,
    /// SHA-256 of the profile's text when it was taken.
    pub profile_digest: String,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The execution genesis block's hash.
    pub genesis_hash: String,
    /// The consensus genesis's hash (the domain every validator signature is bound to).
    pub consensus_genesis_hash: String,
    /// Each service captured.
    pub services: Vec<ServiceEntry>,
    /// The encrypted secrets, when the backup has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretsEntry>,
    /// Services not captured, and why (an execution client that did not answer while
    /// its validator's other client was captured; an external client, copied only when
    /// stopped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
}

/// A service a backup does not hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

/// One service's capture.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    pub name: String,
    /// `validator`, or the execution client's kind (`builtin`, …).
    pub role: String,
    /// The validator it belongs to (execution clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator: Option<String>,
    /// The height captured: the last decided height (validator) or the finalized block
    /// (execution client).
    pub height: u64,
    /// That block's hash.
    pub block_hash: String,
    /// How long the capture took (ms).
    pub took_ms: u64,
    pub files: Vec<FileEntry>,
}

/// One stored file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Where it is in the backup directory (zstd).
    pub stored: String,
    /// Where it goes, relative to the service's data dir.
    pub restore_to: String,
    /// Size and SHA-256 of the stored (compressed) bytes.
    pub stored_size: u64,
    pub stored_sha256: String,
    /// Size and SHA-256 of the file itself.
    pub size: u64,
    pub sha256: String,
}

/// The encrypted secrets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretsEntry {
    pub stored: String,
    pub stored_size: u64,
    pub stored_sha256: String,
    /// `passphrase` (scrypt) or `x25519` (age recipients).
    pub encryption: String,
    /// Each secret file, relative to the state dir (absolute when it lives elsewhere).
    pub files: Vec<String>,
}

impl Manifest {
    /// Read the manifest of the backup in `dir`.
    pub fn read(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e}: a backup directory holds manifest.json (give the directory `chainctl backup` printed)",
                path.display()
            )
        })?;
        let m: Manifest =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if m.format != FORMAT {
            return Err(format!(
                "{}: backup format {}, this chainctl reads format {FORMAT}: restore it with the chainctl that took it ({})",
                path.display(),
                m.format,
                m.chainctl
            ));
        }
        Ok(m)
    }

    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self).expect("a manifest serializes");
        chainctl_common::fs::write_atomic(&path, text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The entry of `service`.
    pub fn service(&self, name: &str) -> Option<&ServiceEntry> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Bytes stored.
    pub fn stored_bytes(&self) -> u64 {
        self.services
            .iter()
            .flat_map(|s| &s.files)
            .map(|f| f.stored_size)
            .sum::<u64>()
            + self.secrets.as_ref().map_or(0, |s| s.stored_size)
    }
}

/// Size and hex SHA-256 of a file, read in chunks.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

/// One stored file that is not what the manifest says.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub file: PathBuf,
    pub why: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.why)
    }
}

/// Re-hash every stored file of `services` (all when empty) and the secrets: what
/// differs from the manifest, by file. Empty when the backup is whole.
pub fn verify(dir: &Path, m: &Manifest, services: &[String]) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut check = |stored: &str, size: u64, sha: &str| {
        let file = dir.join(stored);
        let plain = std::path::Path::new(stored)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain || stored.is_empty() {
            out.push(Mismatch {
                file,
                why: "is not a plain path inside the backup: the manifest was not written by chainctl, or was altered".into(),
            });
            return;
        }
        match hash_file(&file) {
            Err(e) => out.push(Mismatch {
                file,
                why: format!("cannot be read: {e}"),
            }),
            Ok((n, h)) if n != size || h != sha => out.push(Mismatch {
                file,
                why: format!(
                    "is {n} bytes with SHA-256 {h}; the manifest says {size} bytes with SHA-256 {sha}: the file was changed or damaged after the backup"
                ),
            }),
            Ok(_) => {}
        }
    };
    for s in &m.services {
        if !services.is_empty() && !services.contains(&s.name) {
            continue;
        }
        for f in &s.files {
            check(&f.stored, f.stored_size, &f.stored_sha256);
        }
    }
    if let Some(s) = &m.secrets {
        check(&s.stored, s.stored_size, &s.stored_sha256);
    }
    out
}

/// One backup found by [`list`]: its directory and its manifest (or why it cannot be read).
pub type Listed = (PathBuf, Result<Manifest, String>);

/// The backups under `dir` (each a directory holding a manifest), oldest first, with
/// the directories that hold no readable manifest reported as errors.
pub fn list(dir: &Path) -> Result<Vec<Listed>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.join(MANIFEST).exists() {
            let m = Manifest::read(&p);
            out.push((p, m));
        }
    }
    out.sort_by_key(|(p, m)| (m.as_ref().map_or(0, |m| m.created_unix), p.clone()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_byte_is_named_by_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("val-0")).unwrap();
        let f = dir.path().join("val-0/decided.log.zst");
        std::fs::write(&f, b"some stored bytes").unwrap();
        let (size, sha) = hash_file(&f).unwrap();
        let m = Manifest {
            format: FORMAT,
            chainctl: "x".into(),
            created_unix: 1,
            profile: "p".into(),
            profile_digest: "d".into(),
            chain_id: 1,
            genesis_hash: "g".into(),
            consensus_genesis_hash: "c".into(),
            services: vec![ServiceEntry {
                name: "val-0".into(),
                role: "validator".into(),
                validator: None,
                height: 3,
                block_hash: "h".into(),
                took_ms: 0,
                files: vec![FileEntry {
                    stored: "val-0/decided.log.zst".into(),
                    restore_to: "decided.log".into(),
                    stored_size: size,
                    stored_sha256: sha,
                    size: 0,
                    sha256: String::new(),
                }],
            }],
            secrets: None,
            skipped: vec![],
        };
        m.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
        assert!(verify(dir.path(), &m, &[]).is_empty());
        let mut b = std::fs::read(&f).unwrap();
        b[4] ^= 1;
        std::fs::write(&f, &b).unwrap();
        let bad = verify(dir.path(), &m, &[]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].file, f);
        assert!(
            bad[0].to_string().contains("changed or damaged"),
            "{}",
            bad[0]
        );
        assert!(verify(dir.path(), &m, &["val-1".into()]).is_empty());
    }
}
