//! The small blocking HTTP/1.0 client of the CLI and the report (JSON in, JSON out,
//! optional bearer token, optional TLS pinned to one certificate). It needs no async
//! runtime, which the CLI does not start.

/// GET `path` and parse the JSON answer (no TLS, no token).
pub fn get_json(addr: std::net::SocketAddr, path: &str) -> Result<serde_json::Value, String> {
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
) -> Result<(u16, serde_json::Value), String> {
    let body = body.map(|b| b.to_string());
    let t = std::time::Duration::from_secs(10);
    let (code, text) = text(addr, tls_cert, method, path, token, body.as_deref(), t)?;
    let v = serde_json::from_str(&text).map_err(|e| format!("{addr}{path}: bad JSON: {e}"))?;
    Ok((code, v))
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
) -> Result<(u16, String), String> {
    use std::io::{Read, Write as _};
    let tcp = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
        .map_err(|e| format!("{addr}: {e}"))?;
    tcp.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(t)).map_err(|e| e.to_string())?;
    let mut c: Box<dyn ReadWrite> = match tls_cert {
        Some(cert) => Box::new(crate::tls::connect(addr, tcp, cert)?),
        None => Box::new(tcp),
    };
    let body = body.unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        c,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("{addr}: {e}"))?;
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
            Err(e) => return Err(format!("{addr}: {e}")),
        }
        if std::time::Instant::now() > deadline || buf.len() > MAX_ANSWER {
            return Err(format!(
                "{addr}: no complete answer within {:?} (or over {MAX_ANSWER} bytes)",
                2 * t
            ));
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(format!("{addr}: no HTTP response"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// A byte stream: plain TCP or TLS over it.
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}
