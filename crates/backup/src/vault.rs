//! Secrets in a backup: one tar of the secret files, encrypted with age (a passphrase,
//! scrypt-derived, or X25519 recipients) before it touches the disk. The file is a
//! standard age file: `age -d` opens it without chainctl.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;

/// Whom the secrets are encrypted to.
pub enum Recipients {
    /// A passphrase (from a file or the environment, never from the command line).
    Passphrase(String),
    /// age X25519 recipients (`age1…`).
    Keys(Vec<String>),
}

/// What opens encrypted secrets.
pub enum Unlock {
    Passphrase(String),
    /// An age identity file (`AGE-SECRET-KEY-1…` lines).
    Identity(PathBuf),
}

impl Recipients {
    pub fn label(&self) -> &'static str {
        match self {
            Recipients::Passphrase(_) => "passphrase",
            Recipients::Keys(_) => "x25519",
        }
    }
}

/// A tar of `files` (each stored under `name(file)`), encrypted to `to`, written to `out`.
pub fn seal(files: &[(PathBuf, String)], to: &Recipients, out: &Path) -> Result<(), String> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, name) in files {
        let bytes = std::fs::read(path).map_err(|e| format!("secret {}: {e}", path.display()))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        tar.append_data(&mut h, name, bytes.as_slice())
            .map_err(|e| format!("secret {}: {e}", path.display()))?;
    }
    let plain = tar.into_inner().map_err(|e| e.to_string())?;
    let encryptor = match to {
        Recipients::Passphrase(p) => {
            if p.trim().is_empty() {
                return Err(
                    "the passphrase is empty: give a passphrase file with at least one character"
                        .into(),
                );
            }
            age::Encryptor::with_user_passphrase(SecretString::from(p.clone()))
        }
        Recipients::Keys(keys) => {
            let mut parsed: Vec<age::x25519::Recipient> = Vec::new();
            for k in keys {
                parsed.push(k.parse().map_err(|e| {
                    format!("--recipient {k}: {e} (an age X25519 public key starts with age1)")
                })?);
            }
            age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| format!("--recipient: {e}"))?
        }
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode_private()
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let mut w = encryptor
        .wrap_output(file)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    w.write_all(&plain)
        .and_then(|_| w.finish())
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: {e}", out.display()))
}

/// The secret files in `sealed`, by stored name.
pub fn open(sealed: &Path, with: &Unlock) -> Result<Vec<(String, Vec<u8>)>, String> {
    let file = std::fs::File::open(sealed).map_err(|e| format!("{}: {e}", sealed.display()))?;
    let d = age::Decryptor::new(std::io::BufReader::new(file))
        .map_err(|e| format!("{}: not an age file: {e}", sealed.display()))?;
    let wrong = |e: age::DecryptError| {
        format!(
            "{}: cannot decrypt the secrets: {e} (the passphrase or identity is not the one the backup was made with)",
            sealed.display()
        )
    };
    let mut r: Box<dyn Read> = match with {
        Unlock::Passphrase(p) => {
            let id = age::scrypt::Identity::new(SecretString::from(p.clone()));
            Box::new(
                d.decrypt(std::iter::once(&id as &dyn age::Identity))
                    .map_err(wrong)?,
            )
        }
        Unlock::Identity(path) => {
            let ids = age::IdentityFile::from_file(path.to_string_lossy().into_owned())
                .map_err(|e| format!("--identity {}: {e}", path.display()))?
                .into_identities()
                .map_err(|e| format!("--identity {}: {e}", path.display()))?;
            Box::new(
                d.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
                    .map_err(wrong)?,
            )
        }
    };
    let mut plain = Vec::new();
    r.read_to_end(&mut plain)
        .map_err(|e| format!("{}: {e}", sealed.display()))?;
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(plain.as_slice());
    for e in ar
        .entries()
        .map_err(|e| format!("{}: {e}", sealed.display()))?
    {
        let mut e = e.map_err(|e| format!("{}: {e}", sealed.display()))?;
        let name = e
            .path()
            .map_err(|e| format!("{}: {e}", sealed.display()))?
            .to_string_lossy()
            .into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", sealed.display()))?;
        out.push((name, bytes));
    }
    Ok(out)
}

trait Private {
    fn mode_private(&mut self) -> &mut Self;
}

impl Private for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("val-0.key");
        std::fs::write(&key, "secret key material").unwrap();
        let out = dir.path().join("secrets.tar.age");
        seal(
            &[(key.clone(), "secrets/validators/val-0.key".into())],
            &Recipients::Passphrase("correct horse".into()),
            &out,
        )
        .unwrap();
        let sealed = std::fs::read(&out).unwrap();
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "nothing in clear"
        );
        let got = open(&out, &Unlock::Passphrase("correct horse".into())).unwrap();
        assert_eq!(
            got,
            vec![(
                "secrets/validators/val-0.key".to_string(),
                b"secret key material".to_vec()
            )]
        );
        let err = open(&out, &Unlock::Passphrase("wrong".into())).unwrap_err();
        assert!(err.contains("cannot decrypt"), "{err}");
        assert!(seal(
            &[],
            &Recipients::Passphrase(" ".into()),
            &dir.path().join("x")
        )
        .is_err());
    }

    #[test]
    fn x25519_recipients_open_with_their_identity() {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let id_file = dir.path().join("id.txt");
        use age::secrecy::ExposeSecret;
        std::fs::write(&id_file, id.to_string().expose_secret()).unwrap();
        let f = dir.path().join("api.token");
        std::fs::write(&f, "tok").unwrap();
        let out = dir.path().join("s.age");
        seal(
            &[(f, "secrets/api.token".into())],
            &Recipients::Keys(vec![id.to_public().to_string()]),
            &out,
        )
        .unwrap();
        let got = open(&out, &Unlock::Identity(id_file)).unwrap();
        assert_eq!(got[0].1, b"tok");
    }
}
