//! Engine API secrets: one 32-byte JWT secret per consensus↔execution pair, written
//! 0600 inside a 0700 dir, never printed; and the tokens made from it (HS256 through
//! `jsonwebtoken`), minted fresh per request and verified as the Engine API spec says.

use rand::RngCore;
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

/// The claims of an Engine API token: the issue time, and nothing the server must check
/// beyond it (clients may add `id` and `clv`, which are ignored).
#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    iat: u64,
}

/// Mints an Engine API token: HS256, claims `{"iat": now}`. Call it once per HTTP request.
pub fn engine_token(secret: &JwtSecret, iat_unix: u64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &Claims { iat: iat_unix },
        &jsonwebtoken::EncodingKey::from_secret(&secret.0),
    )
    .expect("HS256 signs any claims that serialize")
}

/// Verifies a token as an Engine API server must: HS256 only (never `none`), a valid
/// signature, and `iat` within ±60 s of `now_unix`.
pub fn verify_token(secret: &JwtSecret, token: &str, now_unix: u64) -> Result<(), SecretError> {
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let bad = |m: String| SecretError::Token(m);
    // The header first, so that a token of another algorithm (`none` above all) is named
    // as such: the library knows no `none` and would only say the header does not parse.
    let header = jsonwebtoken::decode_header(token).map_err(|e| {
        bad(match e.kind() {
            ErrorKind::Json(_) => "algorithm is not HS256 (or the header is not JSON)".into(),
            _ => format!("not a JWT: {e}"),
        })
    })?;
    if header.alg != Algorithm::HS256 {
        return Err(bad(format!("algorithm {:?} is not HS256", header.alg)));
    }
    // The Engine API sets no `exp`: only the signature and `iat` are checked, `iat` here
    // with the spec's tolerance in both directions.
    let mut rules = Validation::new(Algorithm::HS256);
    rules.required_spec_claims.clear();
    rules.validate_exp = false;
    rules.validate_aud = false;
    let claims =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&secret.0), &rules)
            .map_err(|e| {
                bad(match e.kind() {
                    ErrorKind::InvalidSignature => "signature does not match the secret".into(),
                    ErrorKind::Json(_) => "no numeric iat claim".into(),
                    _ => format!("not a valid token: {e}"),
                })
            })?
            .claims;
    if claims.iat.abs_diff(now_unix) > IAT_TOLERANCE_SECS {
        return Err(bad(
            "iat is more than 60 s away from now (check clock sync)".into(),
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
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    fn secret() -> JwtSecret {
        JwtSecret::parse(&"11".repeat(32), Path::new("t")).unwrap()
    }

    /// Tokens computed with Python's hmac/hashlib/base64 for secret 0x11×32 and iat
    /// 1700000000: the first with header `{"typ":"JWT","alg":"HS256"}` (what we mint), the
    /// second with `{"alg":"HS256","typ":"JWT"}` (what other clients send).
    fn vectors() -> Vec<&'static str> {
        include_str!("../../../tests/data/jwt_vector.txt")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    #[test]
    fn token_matches_an_independent_hs256() {
        let t = engine_token(&secret(), 1_700_000_000);
        assert_eq!(t, vectors()[0]);
        verify_token(&secret(), &t, 1_700_000_030).unwrap();
        for v in vectors() {
            verify_token(&secret(), v, 1_699_999_950).unwrap();
        }
    }

    #[test]
    fn token_rejects_a_tampered_claim_and_a_missing_iat() {
        let t = engine_token(&secret(), 1_700_000_000);
        let (head, rest) = t.split_once('.').unwrap();
        let sig = rest.split_once('.').unwrap().1;
        let later = URL_SAFE_NO_PAD.encode(br#"{"iat":1700000050}"#);
        let e = verify_token(&secret(), &format!("{head}.{later}.{sig}"), 1_700_000_000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("signature does not match"), "{e}");
        let no_iat = engine_like(&secret(), br#"{"id":"cl"}"#);
        let e = verify_token(&secret(), &no_iat, 1_700_000_000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no numeric iat"), "{e}");
        assert!(verify_token(&secret(), "a.b", 1_700_000_000).is_err());
    }

    /// A token over any claims, signed independently of the library.
    fn engine_like(secret: &JwtSecret, claims: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret.0).unwrap();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
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
