//! The running supervisor's control socket (`<state dir>/control.sock`, mode 0600):
//! one JSON request per connection, one JSON response.

use crate::status::StatusReport;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Every service's state.
    Status,
    /// Restart one service (clears given-up).
    Restart {
        /// The service.
        service: String,
    },
    /// Stop one service and keep it stopped (not restarted on exit, failure or reload)
    /// until `restart` starts it again: for work on its data dir (`chainctl restore`).
    Stop {
        /// The service.
        service: String,
    },
    /// Stop everything gracefully and exit.
    Shutdown,
    /// Re-read the profile now.
    Reload,
}

/// The answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What went wrong, for the user.
    pub error: Option<String>,
    /// A human-readable result.
    pub message: Option<String>,
    /// For `status`.
    pub status: Option<StatusReport>,
}

impl Response {
    /// Success with a message.
    pub fn ok(message: impl Into<String>) -> Self {
        Response {
            ok: true,
            message: Some(message.into()),
            ..Default::default()
        }
    }
    /// Failure with a reason.
    pub fn err(error: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(error.into()),
            ..Default::default()
        }
    }
}

/// Hands a request to the supervisor's loop together with where to answer it; false when
/// the loop has gone. The API server holds one, so it never names the supervisor.
pub type Forward =
    std::sync::Arc<dyn Fn(Request, std::sync::mpsc::Sender<Response>) -> bool + Send + Sync>;

/// Sends one request; `Err` when no supervisor listens.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> std::io::Result<Response> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut answer = String::new();
    r.read_line(&mut answer)?;
    serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
