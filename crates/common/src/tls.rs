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
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server presented another certificate than the one configured (api.tls.cert / gateway.tls.cert)".into(),
            ))
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
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (cert, key, _, _) = pair(d, "live");
        let (old_cert, ..) = pair(d, "old");
        std::fs::copy(&cert, &old_cert).unwrap();
        let (_, _, new_cert_pem, new_key_pem) = pair(d, "new");
        let new_cert = d.join("new.pem");
        let cfg = server_config("gateway.tls", &cert, &key).unwrap();
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
        let hello = |pinned: &Path| -> Result<(), String> {
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            let mut c = connect(addr, tcp, pinned)?;
            let mut buf = [0u8; 2];
            c.read_exact(&mut buf).map_err(|e| e.to_string())?;
            Ok(())
        };
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
}
