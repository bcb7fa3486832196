//! The probes: one round of questions to an execution client, a validator, or the host.

use chainctl_common::validator::Switch;
use serde::Deserialize as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use chainctl_common::secrets::{self, JwtSecret};

/// An execution client to probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ElTarget {
    pub name: String,
    /// The validator that drives it.
    pub validator: String,
    /// Which client it is (the plan says; a validator's clients are all generated).
    pub kind: chainctl_core::profile::ExecutionKind,
    /// Public JSON-RPC.
    pub http: SocketAddr,
    /// WebSocket JSON-RPC: the client's own port (Reth, Geth, Erigon) or the HTTP one.
    pub ws: SocketAddr,
    /// Authenticated Engine API.
    pub engine: SocketAddr,
    /// The secret the validator signs with (its `config.json`).
    pub cl_jwt: PathBuf,
    /// The secret the client was started with (`--jwt-secret` on its command line), when
    /// chainctl can tell.
    pub el_jwt: Option<PathBuf>,
    pub data_dir: PathBuf,
}

/// A validator to probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatorTarget {
    pub name: String,
    /// Its status and control endpoint.
    pub status: SocketAddr,
    /// Bearer token file of its control endpoint.
    pub token: PathBuf,
    /// Its execution clients, in configured order.
    pub els: Vec<String>,
    pub data_dir: PathBuf,
}

/// What one probe of an execution client found.
#[derive(Debug, Clone, Default)]
pub struct ElSample {
    /// Why it failed; none when it passed.
    pub error: Option<String>,
    pub head: Option<u64>,
    pub syncing: bool,
    pub peers: Option<u64>,
    pub version: Option<String>,
    pub latency: Duration,
    /// Its clock minus ours (from the HTTP `Date` header), seconds.
    pub clock_skew_s: Option<i64>,
    /// The Engine API accepted a token signed with the validator's secret.
    pub engine_auth: Option<Result<(), String>>,
}

/// Probe an execution client: `eth_blockNumber`, `eth_syncing`, `net_peerCount` and
/// `web3_clientVersion` in one batch on its public port (TCP connect included), then an
/// authenticated `eth_chainId` on the Engine API that proves the JWT pair matches.
pub async fn el(http: &reqwest::Client, t: &ElTarget, timeout: Duration) -> ElSample {
    let mut s = ElSample::default();
    let body = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_syncing", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "net_peerCount", "params": []},
        {"jsonrpc": "2.0", "id": 4, "method": "web3_clientVersion", "params": []},
    ]);
    let t0 = Instant::now();
    let resp = http
        .post(format!("http://{}", t.http))
        .json(&body)
        .timeout(timeout)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            s.error = Some(format!(
                "JSON-RPC {} does not answer: {}",
                t.http,
                describe(&e)
            ));
            return s;
        }
    };
    if let Some(date) = resp
        .headers()
        .get("date")
        .and_then(|d| d.to_str().ok())
        .and_then(httpdate)
    {
        s.clock_skew_s = Some(date as i64 - (chainctl_common::time::now_ms() / 1000) as i64);
    }
    let status = resp.status();
    let replies: Result<Vec<Json>, _> = resp.json().await;
    s.latency = t0.elapsed();
    let replies = match replies {
        Ok(r) if status.is_success() => r,
        Ok(_) => {
            s.error = Some(format!("JSON-RPC {} answered HTTP {status}", t.http));
            return s;
        }
        Err(e) => {
            s.error = Some(format!(
                "JSON-RPC {} answered something that is not a JSON-RPC batch: {e}",
                t.http
            ));
            return s;
        }
    };
    let by_id = |id: u64| replies.iter().find(|r| r["id"].as_u64() == Some(id));
    match by_id(1) {
        Some(r)
            if r.get("result")
                .and_then(chainctl_common::units::quantity)
                .is_some() =>
        {
            s.head = r.get("result").and_then(chainctl_common::units::quantity)
        }
        Some(r) => {
            s.error = Some(format!(
                "eth_blockNumber failed: {}",
                r.get("error").unwrap_or(&Json::Null)
            ))
        }
        None => s.error = Some("eth_blockNumber: no answer in the batch".into()),
    }
    // `false`, or an object while syncing.
    s.syncing = by_id(2).is_some_and(|r| r.get("result").is_some_and(|v| v.is_object()));
    s.peers = by_id(3)
        .and_then(|r| r.get("result"))
        .and_then(chainctl_common::units::quantity);
    s.version = by_id(4)
        .and_then(|r| r["result"].as_str())
        .map(String::from);
    let auth = engine_auth(http, t, timeout).await;
    if let Err(why) = &auth {
        if s.error.is_none() {
            s.error = Some(why.clone());
        }
    }
    s.engine_auth = Some(auth);
    s
}

/// `eth_chainId` on the Engine API port with a token signed with the validator's secret:
/// every client serves it there (execution-apis: the engine endpoint exposes a subset of
/// `eth_`; Reth, Geth, Erigon, the built-in engine). `engine_exchangeCapabilities` would
/// make Reth warn at every probe about the older Engine API versions our consensus does
/// not call, and Reth refuses `engine_getClientVersionV1` from a client code it does not
/// know (both seen with Reth 2.5.1).
async fn engine_auth(
    http: &reqwest::Client,
    t: &ElTarget,
    timeout: Duration,
) -> Result<(), String> {
    let secret = JwtSecret::read(&t.cl_jwt).map_err(|e| {
        format!(
            "cannot read the JWT secret {} that {} signs with: {e}",
            t.cl_jwt.display(),
            t.validator
        )
    })?;
    let token = secrets::engine_token(&secret, chainctl_common::time::now_ms() / 1000);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []});
    let r = http
        .post(format!("http://{}", t.engine))
        .bearer_auth(token)
        .json(&body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("Engine API {} does not answer: {}", t.engine, describe(&e)))?;
    let status = r.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        let el_side = match &t.el_jwt {
            Some(p) if p == &t.cl_jwt => format!(
                "{} was started with the same file but holds another secret (the file changed after it started: restart {})",
                t.name, t.name
            ),
            Some(p) => format!("{} reads {}", t.name, p.display()),
            None => format!("{} reads a secret file chainctl cannot see", t.name),
        };
        return Err(format!(
            "Unauthorized: the Engine API of {} ({}) refuses a token signed with the secret {} reads ({}); {el_side}. \
             Both ends of the pair {}↔{} must read the same secret",
            t.name,
            t.engine,
            t.validator,
            t.cl_jwt.display(),
            t.validator,
            t.name
        ));
    }
    if !status.is_success() {
        return Err(format!("Engine API {} answered HTTP {status}", t.engine));
    }
    let v: Json = r
        .json()
        .await
        .map_err(|e| format!("Engine API {}: not JSON: {e}", t.engine))?;
    if let Some(e) = v.get("error") {
        return Err(format!("Engine API {}: eth_chainId failed: {e}", t.engine));
    }
    Ok(())
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(x) = src {
            s = format!("{s}: {x}");
            src = x.source();
        }
        s
    }
}

/// Seconds since the epoch of an RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate(s: &str) -> Option<u64> {
    let p: Vec<&str> = s.split([' ', ':']).collect();
    if p.len() != 8 || p[7] != "GMT" {
        return None;
    }
    let day: u64 = p[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == p[2])? as u64
        + 1;
    let year: i64 = p[3].parse().ok()?;
    let (h, m, sec): (u64, u64, u64) = (p[4].parse().ok()?, p[5].parse().ok()?, p[6].parse().ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days as u64) * 86_400 + h * 3600 + m * 60 + sec)
}

/// What one probe of a validator found (its `/status`).
#[derive(Debug, Clone, Default)]
pub struct ValidatorSample {
    pub error: Option<String>,
    /// Its status endpoint answered (it may still be stalled).
    pub reachable: bool,
    pub height: u64,
    pub round: i64,
    pub decided: u64,
    /// Connected peers (other validators), when the validator reports them.
    pub peers: Option<u64>,
    pub active_el: Option<String>,
    pub last_decided_at_ms: Option<u64>,
    pub violations: u64,
    pub switches: Vec<Switch>,
    /// Execution clients whose Engine API refuses this validator's token (HTTP 401), with
    /// the error the validator got.
    pub unauthorized: Vec<(String, String)>,
    pub latency: Duration,
}

/// Probe a validator's status endpoint. A validator that has decided nothing for
/// `stall` (three block times) fails the probe: it is up but stalled.
pub async fn validator(
    http: &reqwest::Client,
    t: &ValidatorTarget,
    timeout: Duration,
    stall: Duration,
) -> ValidatorSample {
    let mut s = ValidatorSample::default();
    let t0 = Instant::now();
    let r = http
        .get(format!("http://{}/status", t.status))
        .timeout(timeout)
        .send()
        .await;
    let v: Json = match r {
        Ok(r) => match r.json().await {
            Ok(v) => v,
            Err(e) => {
                s.error = Some(format!("status {}: not JSON: {e}", t.status));
                return s;
            }
        },
        Err(e) => {
            s.error = Some(format!(
                "status endpoint {} does not answer: {}",
                t.status,
                describe(&e)
            ));
            return s;
        }
    };
    s.latency = t0.elapsed();
    s.reachable = true;
    s.height = v["height"].as_u64().unwrap_or(0);
    s.round = v["round"].as_i64().unwrap_or(-1);
    s.decided = v["decided_blocks"].as_u64().unwrap_or(0);
    s.peers = v["peers"].as_u64();
    s.active_el = v["active_el"].as_str().map(String::from);
    s.last_decided_at_ms = v["last_decided_at_ms"].as_u64();
    s.violations = v["consensus_violations"].as_u64().unwrap_or(0);
    // Each record on its own: one the validator wrote oddly does not hide the others.
    s.switches = v["switch_log"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|sw| Switch::deserialize(sw).ok())
                .collect()
        })
        .unwrap_or_default();
    for e in v["els"].as_array().into_iter().flatten() {
        let err = e["last_error"].as_str().unwrap_or_default();
        if e["state"].as_str() != Some("ok") && (err.contains("401") || err.contains("nauthorized"))
        {
            s.unauthorized.push((
                e["name"].as_str().unwrap_or_default().to_string(),
                err.to_string(),
            ));
        }
    }
    let now_ms = chainctl_common::time::now_ms();
    if let Some(at) = s.last_decided_at_ms {
        let since = Duration::from_millis(now_ms.saturating_sub(at));
        if since > stall {
            s.error = Some(format!(
                "stalled: no decision for {:.1}s (height {}, round {})",
                since.as_secs_f64(),
                s.height,
                s.round
            ));
        }
    }
    s
}

/// Used share of the file system holding `path`, in percent.
pub fn disk_used_percent(path: &Path) -> Result<(f64, u64), String> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let total = st.blocks() as f64;
    if total == 0.0 {
        return Ok((0.0, 0));
    }
    // As df computes it: used / (used + available to unprivileged users).
    let used = (st.blocks() - st.blocks_free()) as f64;
    let avail = st.blocks_available() as f64;
    let pct = 100.0 * used / (used + avail).max(1.0);
    Ok((
        pct,
        st.blocks_available() as u64 * st.fragment_size() as u64,
    ))
}

/// `MemAvailable` and `MemTotal` from /proc/meminfo, bytes.
pub fn memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("MemAvailable:")?, field("MemTotal:")?))
}

/// The soft limit on open files of this process (inherited by services).
pub fn open_file_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        assert_eq!(httpdate("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(httpdate("Sun, 22 Nov 2026 00:00:00 GMT"), Some(1795305600));
        assert_eq!(httpdate("yesterday"), None);
    }

    #[test]
    fn disk_and_memory_read() {
        let (pct, avail) = disk_used_percent(Path::new("/")).unwrap();
        assert!((0.0..=100.0).contains(&pct));
        assert!(avail > 0);
        let (a, t) = memory().unwrap();
        assert!(a <= t && t > 0);
        assert!(open_file_limit().unwrap() > 0);
        assert!(disk_used_percent(Path::new("/no/such/dir")).is_err());
    }
}
