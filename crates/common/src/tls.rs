//! TLS for chainctl's API and gateway (rustls, ring): the server side from the profile's
//! `api.tls` and `gateway.tls` certificate and key, reloaded when the files change, and
//! chainctl's own client side, which trusts exactly the configured certificate (it runs
//! on the same host from the same profile, so pinning the certificate is both simpler
//! and stricter than a CA store).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain of a PEM file, named in every error (`field`: the profile's
/// setting, `api.tls` or `gateway.tls`).
pub fn load_certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{field}.cert {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "{field}.cert {}: not a PEM certificate: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{field}.cert {}: no `BEGIN CERTIFICATE` block in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file; refused when others may read it.
pub fn load_key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("{field}.key {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{field}.key {}: mode {mode:04o} lets other users read the private key; run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "{field}.key {}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1): {e}",
            path.display()
        )
    })
}

/// The certificate chain and its key, checked to belong together.
fn certified(
    field: &str,
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let certs = load_certs(field, cert)?;
    check_validity(field, cert, &certs[0])?;
    let key_der = load_key(field, key)?;
    CertifiedKey::from_der(certs, key_der, provider)
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "{field}: the key {} does not go with the certificate {}: {e}",
                key.display(),
                cert.display()
            )
        })
}

/// When the pair of files last changed, as far as the file system says (modification
/// time and size of each).
type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| (m.modified().ok(), m.len()))
            .unwrap_or((None, 0))
    };
    [one(cert), one(key)]
}

/// How often a handshake may look at the files again.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Serves the pair of files, read again when either changes (looked at on a handshake,
/// at most once every [`RELOAD_CHECK`]): a renewed certificate is served from the next
/// connection on, without a restart, and open connections keep theirs. A pair that does
/// not load (written halfway, a key that is not the certificate's) is logged and the last
/// good one kept until the files change again.
#[derive(Debug)]
struct Reloading {
    field: String,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Arc<CertifiedKey>, Stamp, Instant)>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.2.elapsed() >= RELOAD_CHECK {
            cur.2 = Instant::now();
            let now = stamp(&self.cert, &self.key);
            if now != cur.1 {
                cur.1 = now;
                match certified(&self.field, &self.cert, &self.key, &self.provider) {
                    Ok(k) => {
                        cur.0 = k;
                        tracing::info!(field = %self.field, cert = %self.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(field = %self.field, "TLS certificate not reloaded, the one loaded before is served: {e}")
                    }
                }
            }
        }
        Some(cur.0.clone())
    }
}

/// One DER element at the start of `der`: its tag, its contents, and what follows it.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Seconds since the Unix epoch of an X.509 time: UTCTime (`YYMMDDHHMMSSZ`, years 1950 to
/// 2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn x509_time(tag: u8, v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if s.len() == 12 => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        0x18 if s.len() == 14 => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let n = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + sec).ok()
}

/// A certificate's validity (not before, not after), in seconds since the Unix epoch.
fn validity(cert: &[u8]) -> Option<(u64, u64)> {
    let (_, certificate, _) = der_element(cert)?;
    let (_, tbs, _) = der_element(certificate)?;
    // [0] version (optional), serial number, signature algorithm, issuer, then validity.
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..3 {
        rest = der_element(rest)?.2;
    }
    let (_, validity, _) = der_element(rest)?;
    let (t1, v1, r) = der_element(validity)?;
    let (t2, v2, _) = der_element(r)?;
    Some((x509_time(t1, v1)?, x509_time(t2, v2)?))
}

/// Why a certificate is not valid at `now` (seconds since the Unix epoch), with the fix;
/// `None` while it is. One rule for the server side (loading) and the client side.
fn not_valid_at(cert: &[u8], now: u64) -> Option<String> {
    match validity(cert) {
        None => Some("has no validity dates that can be read".into()),
        Some((_, until)) if now > until => Some(format!(
            "expired {} days ago (not after unix time {until}): renew it",
            (now - until) / 86_400
        )),
        Some((from, _)) if now < from => Some(format!(
            "is not valid before unix time {from}, {} s from now: check this host's clock",
            from - now
        )),
        Some(_) => None,
    }
}

/// Refuses to serve a certificate that is not valid now (clients would refuse it).
fn check_validity(field: &str, path: &Path, cert: &CertificateDer<'_>) -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match not_valid_at(cert.as_ref(), now) {
        Some(why) => Err(format!("{field}.cert {}: {why}", path.display())),
        None => Ok(()),
    }
}

/// The server configuration for `field` (`api.tls`, `gateway.tls`): the certificate
/// and key loaded now (any error names the setting, the file and the fix) and reloaded
/// when they change.
pub fn server_config(
    field: &str,
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = provider();
    let first = certified(field, cert, key, &provider)?;
    let resolver = Reloading {
        field: field.to_string(),
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        current: Mutex::new((first, stamp(cert, key), Instant::now())),
        provider: provider.clone(),
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Trusts one certificate: the one the profile configures for the API.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() != self.cert.as_ref() {
            return Err(rustls::Error::General(
                "the server presented another certificate than the one configured (api.tls.cert / gateway.tls.cert)".into(),
            ));
        }
        // The very certificate, but only while it is valid.
        match not_valid_at(end_entity.as_ref(), now.as_secs()) {
            Some(why) => Err(rustls::Error::General(format!(
                "the server's certificate {why}"
            ))),
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that accepts only the certificate in `cert` (the first of its
/// chain): chainctl's own clients of its API and gateway.
pub fn pinned_client_config(cert: &Path) -> Result<rustls::ClientConfig, String> {
    let pinned = load_certs("the pinned certificate: tls", cert)?.swap_remove(0);
    let provider = provider();
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                cert: pinned,
                provider,
            }))
            .with_no_client_auth(),
    )
}

/// A blocking TLS connection to the API or gateway at `addr` that accepts only the
/// certificate in `cert` (the first of its chain).
pub fn connect(
    addr: SocketAddr,
    tcp: std::net::TcpStream,
    cert: &Path,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, String> {
    let cfg = pinned_client_config(cert)?;
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::IpAddress(addr.ip().into()))
            .map_err(|e| format!("{addr}: {e}"))?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn bad_files_are_refused_naming_the_field_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let cert_p = write(d, "c.pem", &cert.pem(), 0o644);
        let key_p = write(d, "k.pem", &key.serialize_pem(), 0o600);
        assert!(server_config("api.tls", &cert_p, &key_p).is_ok());

        let e = server_config("api.tls", &d.join("missing.pem"), &key_p).unwrap_err();
        assert!(
            e.starts_with("api.tls.cert") && e.contains("missing.pem"),
            "{e}"
        );
        let junk = write(d, "junk.pem", "not a certificate\n", 0o644);
        let e = server_config("api.tls", &junk, &key_p).unwrap_err();
        assert!(e.contains("BEGIN CERTIFICATE"), "{e}");
        let open = write(d, "open.pem", &key.serialize_pem(), 0o640);
        let e = server_config("gateway.tls", &cert_p, &open).unwrap_err();
        assert!(
            e.starts_with("gateway.tls.key") && e.contains("0640") && e.contains("chmod 600"),
            "{e}"
        );
        let e = server_config("api.tls", &cert_p, &junk_key(d)).unwrap_err();
        assert!(
            e.starts_with("api.tls.key") && e.contains("no PEM private key"),
            "{e}"
        );
        let wrong = write(d, "w.pem", &other.serialize_pem(), 0o600);
        let e = server_config("api.tls", &cert_p, &wrong).unwrap_err();
        assert!(e.contains("does not go with the certificate"), "{e}");
    }

    fn junk_key(d: &Path) -> std::path::PathBuf {
        write(d, "junk.key", "nothing here\n", 0o600)
    }

    /// A TLS server on loopback that says "hi" to every connection, with `cfg`.
    fn hello_server(cfg: Arc<rustls::ServerConfig>) -> SocketAddr {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let _ = s.write_all(b"hi");
                let _ = s.flush();
            }
        });
        addr
    }

    /// Reads the "hi" of `addr` over TLS trusting only `pinned`.
    fn hello(addr: SocketAddr, pinned: &Path) -> Result<(), String> {
        use std::io::Read;
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        let mut c = connect(addr, tcp, pinned)?;
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).map_err(|e| e.to_string())
    }

    fn pair(d: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let c = write(d, &format!("{name}.pem"), &cert.pem(), 0o644);
        let k = write(d, &format!("{name}.key"), &key.serialize_pem(), 0o600);
        (c, k, cert.pem(), key.serialize_pem())
    }

    /// A renewed certificate is served from the next connection on, without a restart;
    /// a pair that does not load keeps the last good one in service.
    #[test]
    fn a_certificate_changed_on_disk_is_served_from_the_next_connection() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (cert, key, _, _) = pair(d, "live");
        let (old_cert, ..) = pair(d, "old");
        std::fs::copy(&cert, &old_cert).unwrap();
        let (_, _, new_cert_pem, new_key_pem) = pair(d, "new");
        let new_cert = d.join("new.pem");
        let cfg = server_config("gateway.tls", &cert, &key).unwrap();
        let addr = hello_server(cfg);
        let hello = |pinned: &Path| hello(addr, pinned);
        hello(&old_cert).unwrap();
        assert!(
            hello(&new_cert).is_err(),
            "served a certificate not on disk"
        );
        // Renewed: the files are replaced (a certbot-style rename would do the same).
        std::thread::sleep(RELOAD_CHECK);
        std::fs::write(&cert, &new_cert_pem).unwrap();
        std::fs::write(&key, &new_key_pem).unwrap();
        hello(&new_cert).unwrap();
        let e = hello(&old_cert).unwrap_err();
        assert!(e.contains("another certificate"), "{e}");
        // Half-written: a key that is not the certificate's. The last good pair stays.
        std::thread::sleep(RELOAD_CHECK);
        let (_, _, _, stray_key) = pair(d, "stray");
        std::fs::write(&key, stray_key).unwrap();
        hello(&new_cert).unwrap();
    }

    fn dated(
        d: &Path,
        name: &str,
        from: (i32, u8, u8),
        until: (i32, u8, u8),
    ) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let cert = params.self_signed(&key).unwrap();
        (
            write(d, &format!("{name}.pem"), &cert.pem(), 0o644),
            write(d, &format!("{name}.key"), &key.serialize_pem(), 0o600),
        )
    }

    #[test]
    fn validity_dates_are_read_from_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        // UTCTime (before 2050) and GeneralizedTime (from 2050) both.
        for (from, until, want) in [
            ((2020, 1, 1), (2021, 3, 1), (1_577_836_800, 1_614_556_800)),
            ((1975, 1, 1), (4096, 1, 1), (157_766_400, 67_090_118_400)),
        ] {
            let (c, _) = dated(dir.path(), "d", from, until);
            let der = load_certs("t", &c).unwrap().swap_remove(0);
            assert_eq!(validity(der.as_ref()), Some(want), "{from:?}..{until:?}");
        }
        assert_eq!(validity(b"\x30\x03\x02\x01"), None);
    }

    /// An expired certificate is refused by the server side when it is loaded (the fix:
    /// renew it) and by chainctl's clients even when it is the pinned one.
    #[test]
    fn an_expired_certificate_is_refused_on_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (old, old_key) = dated(d, "old", (2020, 1, 1), (2021, 1, 1));
        let e = server_config("gateway.tls", &old, &old_key).unwrap_err();
        assert!(
            e.starts_with("gateway.tls.cert") && e.contains("expired") && e.contains("renew"),
            "{e}"
        );
        let (later, later_key) = dated(d, "later", (2999, 1, 1), (3000, 1, 1));
        let e = server_config("api.tls", &later, &later_key).unwrap_err();
        assert!(e.contains("not valid before"), "{e}");
        // A server that serves the expired certificate anyway (not chainctl): refused.
        let certs = load_certs("t", &old).unwrap();
        let key = load_key("t", &old_key).unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let addr = hello_server(cfg);
        let e = hello(addr, &old).unwrap_err();
        assert!(e.contains("expired") && e.contains("renew"), "{e}");
    }
}
