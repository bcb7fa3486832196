//! Which version of a client is installed (`BINARY --version`) and whether chainctl
//! knows it to work: a range per client, and a message naming the binary, what it said
//! and what to install when it is outside.

use crate::profile::ExecutionKind;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A client release, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The releases chainctl knows to run a network with every fork through Osaka from
/// genesis, driven through the Engine API (FCUv3, getPayloadV5, newPayloadV4):
/// `[from, before)`.
pub fn known_good(kind: ExecutionKind) -> Option<(Version, Version)> {
    match kind {
        ExecutionKind::Builtin => None,
        // Reth 2.5.1 built the interop fixture chain this project checks against.
        ExecutionKind::Reth => Some((Version(1, 9, 0), Version(3, 0, 0))),
        // Geth checks blobSchedule since 1.15.1 and runs Osaka from 1.16.
        ExecutionKind::Geth => Some((Version(1, 16, 0), Version(1, 18, 0))),
        // Erigon 3.2 is the first 3.x line with Osaka.
        ExecutionKind::Erigon => Some((Version(3, 2, 0), Version(4, 0, 0))),
    }
}

/// The version in a client's `--version` output: Reth prints `Reth Version: 2.5.1` (or
/// `reth Version: 1.3.12` before 1.9), Geth `geth version 1.15.11-stable-36b2371c`,
/// Erigon `erigon version 3.0.2-abcdef12`.
pub fn parse(kind: ExecutionKind, output: &str) -> Option<Version> {
    let marker = match kind {
        ExecutionKind::Reth => "version:",
        _ => "version ",
    };
    output.lines().find_map(|line| {
        let lower = line.to_ascii_lowercase();
        let at = lower.find(marker)? + marker.len();
        let rest = line[at..].trim_start();
        let num: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = num.split('.').map(|p| p.parse::<u32>().ok());
        Some(Version(parts.next()??, parts.next()??, parts.next()??))
    })
}

/// Why a client binary cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    /// Not found or not executable.
    #[error("{binary}: not found on PATH (or not executable): install {client} {range}, or set its path under `validators.clients.{client}.binary`")]
    Missing {
        /// The binary named.
        binary: String,
        /// The client.
        client: &'static str,
        /// The known-good range.
        range: String,
    },
    /// `--version` printed nothing chainctl understands.
    #[error("{binary} --version printed no {client} version ({said:?}): is it {client}? install {client} {range}")]
    Unreadable {
        /// The binary.
        binary: String,
        /// The client.
        client: &'static str,
        /// What it printed (first line).
        said: String,
        /// The known-good range.
        range: String,
    },
    /// `--version` did not finish.
    #[error(
        "{binary} --version did not finish within 10 s: check that it is {client} and runs here"
    )]
    Timeout {
        /// The binary.
        binary: String,
        /// The client.
        client: &'static str,
    },
    /// Outside the known-good range.
    #[error("{binary} is {client} {found}, outside the versions chainctl knows to work ({range}): install {client} {range}")]
    Unsupported {
        /// The binary.
        binary: String,
        /// The client.
        client: &'static str,
        /// The version found.
        found: Version,
        /// The known-good range.
        range: String,
    },
}

/// `>= FROM, < BEFORE` for messages.
pub fn range_text(kind: ExecutionKind) -> String {
    match known_good(kind) {
        Some((from, before)) => format!(">= {from}, < {before}"),
        None => "(any)".into(),
    }
}

/// Runs `binary --version` (at most 10 s) and checks the result against the range.
pub fn check(kind: ExecutionKind, binary: &str) -> Result<Version, VersionError> {
    let client = super::kind_name(kind);
    let range = range_text(kind);
    let missing = || VersionError::Missing {
        binary: binary.to_string(),
        client,
        range: range.clone(),
    };
    let path = if binary.contains('/') {
        Path::new(binary).to_path_buf()
    } else {
        which::which(binary).map_err(|_| missing())?
    };
    // Output goes to a file, not a pipe: a process the binary leaves behind cannot keep
    // chainctl waiting for the end of its output.
    let mut out = tempfile::tempfile().map_err(|_| missing())?;
    let mut child = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|_| missing())?)
        .stderr(out.try_clone().map_err(|_| missing())?)
        .spawn()
        .map_err(|_| missing())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VersionError::Timeout {
                    binary: binary.to_string(),
                    client,
                });
            }
        }
    }
    let mut said = String::new();
    {
        use std::io::{Read as _, Seek as _};
        let _ = out.rewind();
        let _ = out.read_to_string(&mut said);
    }
    let found = parse(kind, &said).ok_or_else(|| VersionError::Unreadable {
        binary: binary.to_string(),
        client,
        said: said
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect(),
        range: range.clone(),
    })?;
    match known_good(kind) {
        Some((from, before)) if found < from || found >= before => Err(VersionError::Unsupported {
            binary: binary.to_string(),
            client,
            found,
            range,
        }),
        _ => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_clients_version_line() {
        let cases = [
            (
                ExecutionKind::Reth,
                "Reth Version: 2.5.1\nCommit SHA: abc\n",
                Version(2, 5, 1),
            ),
            (
                ExecutionKind::Reth,
                "reth Version: 1.3.12-dev\n",
                Version(1, 3, 12),
            ),
            (
                ExecutionKind::Geth,
                "geth version 1.15.11-stable-36b2371c\n",
                Version(1, 15, 11),
            ),
            (
                ExecutionKind::Erigon,
                "erigon version 3.0.2-abcdef12\n",
                Version(3, 0, 2),
            ),
        ];
        for (kind, out, want) in cases {
            assert_eq!(parse(kind, out), Some(want), "{out}");
        }
        assert_eq!(parse(ExecutionKind::Geth, "Usage: geth [options]"), None);
        assert_eq!(parse(ExecutionKind::Reth, "Reth Version: two"), None);
    }

    #[test]
    fn ranges_are_inclusive_below_and_exclusive_above() {
        let (from, before) = known_good(ExecutionKind::Geth).unwrap();
        assert!(from <= Version(1, 16, 0) && Version(1, 16, 0) < before);
        assert!(Version(1, 15, 11) < from);
        assert!(Version(1, 18, 0) >= before);
    }
}
