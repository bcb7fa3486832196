//! TLS for chainctl's API (rustls, ring): the server side from the profile's
//! `api.tls.cert` and `api.tls.key`, and the CLI's client side, which trusts exactly the
//! configured certificate (it runs on the same host from the same profile, so pinning the
//! certificate is both simpler and stricter than a CA store).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain of a PEM file, named in every error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("api.tls.cert {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "api.tls.cert {}: not a PEM certificate: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "api.tls.cert {}: no `BEGIN CERTIFICATE` block in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file; refused when others may read it.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("api.tls.key {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "api.tls.key {}: mode {mode:04o} lets other users read the private key; run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "api.tls.key {}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1): {e}",
            path.display()
        )
    })
}

/// The server configuration for the API.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            format!(
                "api.tls: the key {} does not go with the certificate {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
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
                "the API presented another certificate than api.tls.cert".into(),
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

/// A blocking TLS connection to the API at `addr` that accepts only the certificate in
/// `cert` (the first of its chain).
pub fn connect(
    addr: SocketAddr,
    tcp: std::net::TcpStream,
    cert: &Path,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, String> {
    let pinned = load_certs(cert)?.swap_remove(0);
    let provider = provider();
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            cert: pinned,
            provider,
        }))
        .with_no_client_auth();
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
        assert!(server_config(&cert_p, &key_p).is_ok());

        let e = server_config(&d.join("missing.pem"), &key_p).unwrap_err();
        assert!(
            e.starts_with("api.tls.cert") && e.contains("missing.pem"),
            "{e}"
        );
        let junk = write(d, "junk.pem", "not a certificate\n", 0o644);
        let e = server_config(&junk, &key_p).unwrap_err();
        assert!(e.contains("BEGIN CERTIFICATE"), "{e}");
        let open = write(d, "open.pem", &key.serialize_pem(), 0o640);
        let e = server_config(&cert_p, &open).unwrap_err();
        assert!(e.contains("0640") && e.contains("chmod 600"), "{e}");
        let e = server_config(&cert_p, &junk_key(d)).unwrap_err();
        assert!(
            e.starts_with("api.tls.key") && e.contains("no PEM private key"),
            "{e}"
        );
        let wrong = write(d, "w.pem", &other.serialize_pem(), 0o600);
        let e = server_config(&cert_p, &wrong).unwrap_err();
        assert!(e.contains("does not go with the certificate"), "{e}");
    }

    fn junk_key(d: &Path) -> std::path::PathBuf {
        write(d, "junk.key", "nothing here\n", 0o600)
    }
}
