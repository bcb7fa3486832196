//! The small blocking HTTP/1.0 client of the CLI and the report (JSON in, JSON out,
//! optional bearer token, optional TLS pinned to one certificate). It needs no async
//! runtime, which the CLI does not start.

use std::net::SocketAddr;
use std::time::Duration;

/// Why a request got no usable answer; each message names the address.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("{addr}: {source}")]
    Io {
        /// The server.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS session could not be set up (the certificate file, or the server did not
    /// present that certificate).
    #[error("{0}")]
    Tls(String),
    /// The answer did not end in time, or was too large.
    #[error("{addr}: no complete answer within {limit:?} (or over {max} bytes)")]
    Incomplete {
        /// The server.
        addr: SocketAddr,
        /// The time allowed for the whole answer.
        limit: Duration,
        /// The largest answer read.
        max: usize,
    },
    /// What came back is not an HTTP response.
    #[error("{addr}: no HTTP response")]
    NotHttp {
        /// The server.
        addr: SocketAddr,
    },
    /// The body is not the JSON asked for.
    #[error("{addr}{path}: bad JSON: {source}")]
    BadJson {
        /// The server.
        addr: SocketAddr,
        /// The path asked for.
        path: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
}

/// GET `path` and parse the JSON answer (no TLS, no token).
pub fn get_json(addr: std::net::SocketAddr, path: &str) -> Result<serde_json::Value, HttpError> {
    json(addr, None, "GET", path, None, None).map(|(_, v)| v)
}

/// One HTTP/1.0 request with an optional bearer token and JSON body; the status code and
/// the JSON answer. For the CLI, which has no async runtime.
pub fn json(
    addr: std::net::SocketAddr,
    tls_cert: Option<&std::path::Path>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), HttpError> {
    let body = body.map(|b| b.to_string());
    let t = std::time::Duration::from_secs(10);
    let (code, text) = text(addr, tls_cert, method, path, token, body.as_deref(), t)?;
    let v = serde_json::from_str(&text).map_err(|source| HttpError::BadJson {
        addr,
        path: path.to_string(),
        source,
    })?;
    Ok((code, v))
}

/// A connection to `addr` (TLS trusting only `tls_cert` when given) whose reads and
/// writes may each take `t`.
pub fn connect(
    addr: std::net::SocketAddr,
    tls_cert: Option<&std::path::Path>,
    t: std::time::Duration,
) -> Result<Box<dyn ReadWrite>, HttpError> {
    let io = |source| HttpError::Io { addr, source };
    let tcp = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
        .map_err(io)?;
    tcp.set_read_timeout(Some(t)).map_err(io)?;
    tcp.set_write_timeout(Some(t)).map_err(io)?;
    Ok(match tls_cert {
        Some(cert) => Box::new(crate::tls::connect(addr, tcp, cert).map_err(HttpError::Tls)?),
        None => Box::new(tcp),
    })
}

/// One HTTP/1.0 request (over TLS when `tls_cert` is given: the server must present that
/// certificate) that may take `t` to read or write; the status code and the body as text.
pub fn text(
    addr: std::net::SocketAddr,
    tls_cert: Option<&std::path::Path>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    t: std::time::Duration,
) -> Result<(u16, String), HttpError> {
    use std::io::{Read, Write as _};
    let io = |source| HttpError::Io { addr, source };
    let mut c = connect(addr, tls_cert, t)?;
    let body = body.unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        c,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(io)?;
    // The socket timeout bounds each read; this bounds the whole answer, so a peer that
    // trickles bytes cannot hold the caller, and its size.
    const MAX_ANSWER: usize = 256 * 1024 * 1024;
    let deadline = std::time::Instant::now() + 2 * t;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match c.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A TLS peer that closes without close_notify after a whole response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        }
        if std::time::Instant::now() > deadline || buf.len() > MAX_ANSWER {
            return Err(HttpError::Incomplete {
                addr,
                limit: 2 * t,
                max: MAX_ANSWER,
            });
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(HttpError::NotHttp { addr })?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// A byte stream: plain TCP or TLS over it.
pub trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}
