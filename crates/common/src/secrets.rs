//! Engine API secrets: one 32-byte JWT secret per consensus↔execution pair, written
//! 0600 inside a 0700 dir, never printed; and the one helper that mints a token from it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A JWT secret. Its `Debug` never shows the bytes, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret([u8; 32]);

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

/// Why a secret file or token is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Missing or unreadable.
    #[error("{path}: cannot read the secret ({why}); run `chainctl jwt generate`")]
    Unreadable {
        /// The file.
        path: String,
        /// The OS error.
        why: String,
    },
    /// Not 64 hex characters.
    #[error("{path}: expected 64 hex characters (32 bytes), found {found}; run `chainctl jwt rotate` to replace it")]
    Malformed {
        /// The file.
        path: String,
        /// What was found (never the secret itself).
        found: String,
    },
    /// Group or others may read it.
    #[error("{path}: mode {mode:04o} lets other users read the secret; run `chmod 600 {path}`")]
    Mode {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// The directory holding it is open to others.
    #[error("{path}: directory mode {mode:04o} is open to other users; run `chmod 700 {path}`")]
    DirMode {
        /// The directory.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// A token failed verification.
    #[error("invalid Engine API token: {0}")]
    Token(String),
}

impl JwtSecret {
    /// 32 bytes from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        JwtSecret(b)
    }

    /// The hex form written to files (no `0x`, as Reth, Geth and Erigon all accept).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses a file's contents: 64 hex characters, optional `0x`, surrounding whitespace ignored.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SecretError> {
        let t = text.trim();
        let h = t.strip_prefix("0x").unwrap_or(t);
        let malformed = |found: String| SecretError::Malformed {
            path: path.display().to_string(),
            found,
        };
        if h.len() != 64 {
            return Err(malformed(format!("{} characters", h.len())));
        }
        let mut b = [0u8; 32];
        hex::decode_to_slice(h, &mut b)
            .map_err(|_| malformed("a character that is not hex".into()))?;
        Ok(JwtSecret(b))
    }

    /// Reads and checks a secret file (content only; see [`verify_file`] for modes).
    pub fn read(path: &Path) -> Result<Self, SecretError> {
        let text = fs::read_to_string(path).map_err(|e| SecretError::Unreadable {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        Self::parse(&text, path)
    }
}

/// Creates the secret at `path` if it does not exist; returns whether it did.
pub fn ensure(path: &Path) -> std::io::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(d) = path.parent() {
        crate::fs::private_dir(d)?;
    }
    crate::fs::write_atomic(path, JwtSecret::generate().to_hex().as_bytes())?;
    Ok(true)
}

/// Replaces the secret at `path` with a fresh one, atomically.
pub fn rotate(path: &Path) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        crate::fs::private_dir(d)?;
    }
    crate::fs::write_atomic(path, JwtSecret::generate().to_hex().as_bytes())
}

/// Every problem with one secret file: content, file mode, directory mode.
pub fn verify_file(path: &Path) -> Vec<SecretError> {
    let mut out = Vec::new();
    if let Err(e) = JwtSecret::read(path) {
        out.push(e);
        if !path.exists() {
            return out;
        }
    }
    if let Ok(m) = fs::metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            out.push(SecretError::Mode {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    if let Some(dir) = path.parent() {
        if let Ok(m) = fs::metadata(dir) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                out.push(SecretError::DirMode {
                    path: dir.display().to_string(),
                    mode,
                });
            }
        }
    }
    out
}

/// Seconds of clock difference the Engine API tolerates in `iat`.
pub const IAT_TOLERANCE_SECS: u64 = 60;

/// Mints an Engine API token: HS256, claims `{"iat": now}`. Call it once per HTTP request.
pub fn engine_token(secret: &JwtSecret, iat_unix: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"iat":{iat_unix}}}"#));
    let signing_input = format!("{header}.{claims}");
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Verifies a token as an Engine API server must: HS256 only (never `none`), a valid
/// signature, and `iat` within ±60 s of `now_unix`.
pub fn verify_token(secret: &JwtSecret, token: &str, now_unix: u64) -> Result<(), SecretError> {
    let bad = |m: &str| SecretError::Token(m.to_string());
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not three dot-separated parts"));
    };
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| bad("header is not base64url"))?,
    )
    .map_err(|_| bad("header is not JSON"))?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(bad("algorithm is not HS256"));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad("signature is not base64url"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes any key length");
    mac.update(format!("{h}.{c}").as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| bad("signature does not match the secret"))?;
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(c)
            .map_err(|_| bad("claims are not base64url"))?,
    )
    .map_err(|_| bad("claims are not JSON"))?;
    let iat = claims
        .get("iat")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| bad("no numeric iat claim"))?;
    if iat.abs_diff(now_unix) > IAT_TOLERANCE_SECS {
        return Err(bad(
            "iat is more than 60 s away from now (check clock sync)",
        ));
    }
    Ok(())
}

/// Compare two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> JwtSecret {
        JwtSecret::parse(&"11".repeat(32), Path::new("t")).unwrap()
    }

    #[test]
    fn token_matches_an_independent_hs256() {
        // Computed with Python's hmac/hashlib/base64 for secret 0x11×32 and iat 1700000000.
        let t = engine_token(&secret(), 1_700_000_000);
        assert_eq!(t, include_str!("../../../tests/data/jwt_vector.txt").trim());
        verify_token(&secret(), &t, 1_700_000_030).unwrap();
    }

    #[test]
    fn token_rejects_skew_wrong_key_and_alg_none() {
        let t = engine_token(&secret(), 1_700_000_000);
        assert!(verify_token(&secret(), &t, 1_700_000_061).is_err());
        assert!(verify_token(&JwtSecret::generate(), &t, 1_700_000_000).is_err());
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"iat":1700000000}"#)
        );
        assert!(verify_token(&secret(), &none, 1_700_000_000)
            .unwrap_err()
            .to_string()
            .contains("not HS256"));
    }

    #[test]
    fn debug_is_redacted() {
        let s = secret();
        assert_eq!(format!("{s:?}"), "JwtSecret(<redacted>)");
        assert!(!format!("{s:?}").contains("1111"));
    }

    #[test]
    fn parse_names_the_problem_without_the_secret() {
        let e = JwtSecret::parse("abcd", Path::new("/x/jwt.hex"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/x/jwt.hex: expected 64 hex characters (32 bytes), found 4 characters"),
            "{e}"
        );
        let e = JwtSecret::parse(&"zz".repeat(32), Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not hex"), "{e}");
    }
}
