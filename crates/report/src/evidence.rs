//! Gathers what the report's checks judge, from the running network: chainctl's API,
//! the chain (through the gateway and every execution client), each Engine API probed
//! with a wrong token, the secret files, the log files, the host's sockets and file
//! systems, and, when asked, a failover drill. Nothing here decides pass or fail.

use serde::Deserialize as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use super::PortRow;
use chainctl_core::layout::Layout;
use chainctl_core::plan::Plan;
use chainctl_core::profile::Profile;
use chainctl_monitor::{ApiEndpoint, Targets};

/// How many recent heights every execution client must agree on.
pub const AGREEMENT_HEIGHTS: u64 = 100;

/// One finalized block.
#[derive(Debug, Clone)]
pub struct Block {
    pub number: u64,
    pub hash: String,
    pub timestamp: u64,
    pub txs: usize,
}

/// The hashes each execution client holds at the same heights.
#[derive(Debug, Clone, Default)]
pub struct Agreement {
    pub from: u64,
    pub to: u64,
    /// Per client: its hashes, `from` first, or why they could not be read.
    pub per_el: Vec<(String, Result<Vec<String>, String>)>,
}

/// A service with a JSON-RPC port that no validator drives.
#[derive(Debug, Clone)]
pub struct Undriven {
    pub service: String,
    pub addr: SocketAddr,
    /// Its head at the first and second look, seconds apart, or why it did not say: a
    /// client that does not answer is kept (unverified), never dropped.
    pub heads: Result<(u64, u64), String>,
    /// Its block 1 (if any) is one of our network's.
    pub same_chain: Option<bool>,
}

/// The secret values chainctl wrote, looked for in every log file.
#[derive(Debug, Clone, Default)]
pub struct LogScan {
    pub files: usize,
    pub bytes: u64,
    pub secrets: usize,
    /// "secret of FILE found in LOG" (never the secret itself).
    pub found: Vec<String>,
}

pub use chainctl_core::secret_files::{SecretPath, SecretScan};

/// What the failover drill measured.
#[derive(Debug, Clone)]
pub struct Drill {
    pub validator: String,
    pub killed: String,
    pub switched_to: Option<String>,
    /// Who noticed, as the switch's kind says: `down` (the supervisor saw the exit),
    /// `el_behind` / `build_failed` (the validator's own Engine API call failed), …
    pub switch_kind: Option<String>,
    /// The decision interval the switch fell in, as the validator recorded it
    /// (corroborating evidence: the verdict rests on `observed_gap_ms`).
    pub gap_ms: Option<u64>,
    /// The report's own measurement: the longest time between two moves of the head,
    /// from the kill on (the kill itself the first moment), read every 100 ms from an
    /// endpoint it did not kill for the 10 s after the kill.
    pub observed_gap_ms: Option<u64>,
    /// Longest interval between consecutive blocks from the kill to 10 s after it.
    pub longest_interval_s: Option<u64>,
    /// Heights without a block beyond the failover gap (intervals over two block times,
    /// other than the one the switch fell in).
    pub missed_heights: u64,
    /// The killed client was running and healthy again, and how long it took.
    pub restored_after: Option<Duration>,
    /// When the drill ended (ms since the epoch).
    pub measured_at_ms: u64,
}

/// Result of checking the shipped alert rules.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `promtool check rules` output.
    pub promtool: Result<String, String>,
    /// Metrics the rules use that `/metrics` does not have.
    pub missing: Vec<String>,
    pub rules: usize,
}

/// Everything measured, and when.
pub struct Evidence {
    pub at_ms: u64,
    pub profile: Profile,
    pub plan: Plan,
    pub window: Duration,
    /// `/api/v1/status`.
    pub status: Value,
    pub api_addr: SocketAddr,
    pub api_tls: bool,
    /// The status code of `/api/v1/status` without a token.
    pub api_without_token: Result<u16, String>,
    /// `/metrics`: its code and text.
    pub metrics: Result<(u16, String), String>,
    /// Every allocated TCP port of running services and chainctl: does it answer?
    pub endpoints: Vec<(String, String, u16, Result<(), String>)>,
    /// WebSocket upgrades on the gateway.
    pub websocket: Option<Result<(), String>>,
    /// WebSocket upgrades on each execution client's WebSocket endpoint (its own port
    /// for Reth, Geth and Erigon; the HTTP port for the built-in engine).
    pub el_websocket: Vec<(String, Result<(), String>)>,
    pub ports: Vec<PortRow>,
    /// Where the chain was read (the gateway, else the first client).
    pub rpc: Option<SocketAddr>,
    pub chain: Result<Vec<Block>, String>,
    pub agreement: Result<Agreement, String>,
    pub undriven: Vec<Undriven>,
    /// Per execution client: the Engine API's answer to a token signed with a random
    /// secret.
    pub engine_bad_token: Vec<(String, Result<u16, String>)>,
    /// Per pair `cl--el`: its problems.
    pub jwt: Vec<(String, Vec<String>)>,
    /// Allocated ports whose listener is bound to every address.
    pub wildcard_listeners: Vec<(String, String, u16)>,
    pub log_scan: LogScan,
    /// Every secret file (JWT, validator keys, control and API tokens, TLS keys) and the
    /// directories that hold them, up to the state dir.
    pub secret_files: SecretScan,
    /// Log files over their rotation size (path, bytes).
    pub oversized_logs: Vec<(PathBuf, u64)>,
    /// Data dirs and the type of file system they are on.
    pub data_fs: Vec<(String, PathBuf, String)>,
    pub rules: Result<Rules, String>,
    pub drill: Option<Result<Drill, String>>,
    /// The last `chainctl chaos` experiment on this network (`None`: never run).
    pub chaos: Option<Result<chainctl_core::chaos::ChaosRecord, String>>,
    /// The canary transaction, or why none was sent.
    pub canary: Result<crate::canary::Canary, String>,
    /// The network's planned stops (`chainctl down`), for the gaps they make.
    pub planned_stops: Vec<chainctl_core::state::PlannedStop>,
    /// The newest backup of this network in `backup.to` (`None`: no `backup:` in the
    /// profile).
    pub backups: Option<Result<Option<NewestBackup>, String>>,
}

/// The newest backup of the network, and what re-hashing it found.
#[derive(Debug, Clone)]
pub struct NewestBackup {
    pub dir: PathBuf,
    pub manifest: chainctl_core::backup::Manifest,
    /// Its files that differ from the manifest (empty: whole).
    pub damaged: Vec<String>,
}

/// The newest backup of the profile's chain in `dir`, re-hashed.
fn newest_backup(p: &Profile, dir: &std::path::Path) -> Result<Option<NewestBackup>, String> {
    let Some((dir, manifest)) = chainctl_core::backup::list(dir)?
        .into_iter()
        .filter_map(|(d, m)| Some((d, m.ok()?)))
        .rfind(|(_, m)| m.profile == p.name && m.chain_id == p.chain.chain_id)
    else {
        return Ok(None);
    };
    let damaged = chainctl_core::backup::verify(&dir, &manifest, &[])
        .iter()
        .map(|m| m.to_string())
        .collect();
    Ok(Some(NewestBackup {
        dir,
        manifest,
        damaged,
    }))
}

/// What a report run needs.
pub struct Inputs<'a> {
    pub profile: &'a Profile,
    pub layout: &'a Layout,
    pub plan: &'a Plan,
    pub window: Duration,
    pub drill: bool,
    /// Send the canary transaction (`--no-canary` turns it off).
    pub canary: bool,
}

/// Gathers everything. An error means the report could not run (no API, no network).
pub fn gather(i: &Inputs) -> Result<Evidence> {
    let api = chainctl_monitor::api_endpoint(i.layout, i.profile)?;
    let status = api_get(&api, "/api/v1/status", true).map_err(|e| {
        anyhow::anyhow!(
            "chainctl's API at {} does not answer ({e}): is the network up (`chainctl up`)?",
            api.addr
        )
    })?;
    if status.0 != 200 {
        anyhow::bail!(
            "chainctl's API at {} refused the status request ({}): {}",
            api.addr,
            status.0,
            status.1
        );
    }
    let status: Value = serde_json::from_str(&status.1).context("the API's status is not JSON")?;
    let targets = Targets::from_plan(i.plan);
    let allocation =
        chainctl_core::state::read_json::<chainctl_core::state::PortsFile>(&i.layout.ports_file())?
            .unwrap_or_default();
    let gateway = status["gateway"]
        .as_str()
        .and_then(|g| g.parse::<SocketAddr>().ok())
        .map(chainctl_monitor::reachable);
    if let (Some(gw), Some(tls)) = (gateway, &i.profile.gateway.tls) {
        TLS_ENDPOINTS
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((gw, tls.cert.clone()));
    }
    let rpc = gateway.or_else(|| targets.els.first().map(|e| e.http));
    let chain = match rpc {
        Some(a) => window_blocks(a, i.window),
        None => Err("no gateway and no execution client to read the chain from".into()),
    };
    let metrics = api_get(&api, "/metrics", false);

    let mut e = Evidence {
        at_ms: chainctl_common::time::now_ms(),
        profile: i.profile.clone(),
        plan: i.plan.clone(),
        window: i.window,
        api_addr: api.addr,
        api_tls: api.tls_cert.is_some(),
        api_without_token: api_get(&api, "/api/v1/status", false).map(|r| r.0),
        rules: rules(&metrics),
        metrics,
        endpoints: endpoints(&allocation, i.plan, i.profile, &targets, &status),
        websocket: rpc
            .filter(|_| status["gateway"].is_string())
            .map(websocket_upgrade),
        el_websocket: parallel(&targets.els, |t| (t.name.clone(), websocket_upgrade(t.ws))),
        ports: ports(i.layout, &allocation)?,
        rpc,
        undriven: undriven(i.plan, &targets, &chain),
        chain,
        agreement: agreement(&targets),
        engine_bad_token: parallel(&targets.els, |t| (t.name.clone(), bad_token(t.engine))),
        jwt: i
            .plan
            .jwt_pairs
            .iter()
            .map(|p| {
                (
                    format!("{}--{}", p.consensus, p.execution),
                    chainctl_core::jwt::pair_problems(i.plan, p),
                )
            })
            .collect(),
        wildcard_listeners: wildcard_listeners(&allocation),
        log_scan: scan_logs(i.layout),
        secret_files: chainctl_core::secret_files::scan(i.layout, i.profile),
        oversized_logs: oversized_logs(i.plan),
        data_fs: i
            .plan
            .services
            .iter()
            .map(|s| (s.name.clone(), s.data_dir.clone(), fs_type(&s.data_dir)))
            .collect(),
        drill: None,
        chaos: chaos_record(&i.layout.chaos_result()),
        canary: Err("not sent yet".into()),
        planned_stops: chainctl_core::state::planned_stops(&i.layout.planned_stops()),
        backups: i
            .profile
            .backup
            .as_ref()
            .map(|b| newest_backup(i.profile, &b.to)),
        status,
    };
    e.canary = canary(i, &e, &targets);
    if i.drill {
        e.drill = Some(drill(&api, &e, i.profile.chain.block_time.get()));
    }
    Ok(e)
}

/// The canary transaction, through the gateway (else the first execution client), to
/// every execution client's receipt; run before the drill, on the network as it is.
fn canary(i: &Inputs, e: &Evidence, t: &Targets) -> Result<crate::canary::Canary, String> {
    if !i.canary {
        return Err("--no-canary: no transaction was sent, so nothing shows the network takes, includes and agrees on one".into());
    }
    let (signer, key) = crate::canary::key(i.profile)?;
    let via = match (e.status["gateway"].is_string(), e.rpc, t.els.first()) {
        (true, Some(a), _) => (format!("the gateway ({a})"), a),
        (false, _, Some(el)) => (format!("{} (the profile has no gateway)", el.name), el.http),
        _ => return Err("no gateway and no execution client to send it to".into()),
    };
    let els: Vec<(String, SocketAddr)> =
        t.els.iter().map(|el| (el.name.clone(), el.http)).collect();
    Ok(crate::canary::send(
        &rpc,
        &signer,
        key,
        i.profile.chain.chain_id,
        via,
        &els,
        // Ten block times, ten seconds at least.
        (i.profile.chain.block_time.get() * 10).max(Duration::from_secs(10)),
    ))
}

/// The last chaos experiment's record, when there is one.
fn chaos_record(
    path: &std::path::Path,
) -> Option<Result<chainctl_core::chaos::ChaosRecord, String>> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(format!("{}: {e}", path.display()))),
        Ok(t) => Some(serde_json::from_str(&t).map_err(|e| format!("{}: {e}", path.display()))),
    }
}

/// GET on the API: status code and body text.
fn api_get(api: &ApiEndpoint, path: &str, with_token: bool) -> Result<(u16, String), String> {
    raw_http(
        api.addr,
        api.tls_cert.as_deref(),
        "GET",
        path,
        with_token.then_some(api.token.as_str()),
        None,
    )
}

/// One HTTP/1.0 exchange; status and body text.
fn raw_http(
    addr: SocketAddr,
    tls: Option<&Path>,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    chainctl_common::http::text(addr, tls, method, path, bearer, body, CALL_TIMEOUT)
        .map_err(|e| e.to_string())
}

/// How long one call may take: a frozen client costs the report this much, not more.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// `f` over every item at once (one thread each: the report talks to a dozen services,
/// and a frozen one must not hold up the others).
fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|i| s.spawn(|| f(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a probe thread panicked"))
            .collect()
    })
}

/// The certificates of the endpoints the report reaches over TLS (the gateway with
/// `gateway.tls`), by address: every call to one of them is HTTPS trusting exactly it.
static TLS_ENDPOINTS: std::sync::RwLock<Vec<(SocketAddr, PathBuf)>> =
    std::sync::RwLock::new(Vec::new());

/// The certificate `addr` serves, when it speaks TLS.
fn tls_of(addr: SocketAddr) -> Option<PathBuf> {
    let t = TLS_ENDPOINTS.read().unwrap_or_else(|e| e.into_inner());
    t.iter().find(|(a, _)| *a == addr).map(|(_, c)| c.clone())
}

/// A JSON-RPC request (single or batch) to `addr`.
fn rpc(addr: SocketAddr, body: &Value) -> Result<Value, String> {
    let tls = tls_of(addr);
    let (code, text) = raw_http(
        addr,
        tls.as_deref(),
        "POST",
        "/",
        None,
        Some(&body.to_string()),
    )?;
    if code != 200 {
        return Err(format!("{addr}: HTTP {code}: {}", text.trim()));
    }
    serde_json::from_str(&text).map_err(|e| format!("{addr}: not JSON: {e}"))
}

fn head(addr: SocketAddr) -> Result<u64, String> {
    let v = rpc(
        addr,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}),
    )?;
    chainctl_common::units::quantity(&v["result"])
        .ok_or_else(|| format!("{addr}: eth_blockNumber answered {v}"))
}

/// Blocks `from..=to` by number, in order.
fn blocks(addr: SocketAddr, from: u64, to: u64) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut n = from;
    while n <= to {
        let last = (n + 99).min(to);
        let batch: Vec<Value> = (n..=last)
            .map(|h| {
                json!({"jsonrpc": "2.0", "id": h, "method": "eth_getBlockByNumber",
                       "params": [format!("0x{h:x}"), false]})
            })
            .collect();
        let v = rpc(addr, &Value::Array(batch))?;
        let mut answers = v
            .as_array()
            .cloned()
            .ok_or_else(|| format!("{addr}: a batch was answered with {v}"))?;
        answers.sort_by_key(|a| a["id"].as_u64());
        for a in answers {
            let b = &a["result"];
            if !b.is_object() {
                return Err(format!("{addr}: block {} is missing: {a}", a["id"]));
            }
            out.push(Block {
                number: chainctl_common::units::quantity(&b["number"]).unwrap_or(0),
                hash: b["hash"].as_str().unwrap_or_default().to_string(),
                timestamp: chainctl_common::units::quantity(&b["timestamp"]).unwrap_or(0),
                txs: b["transactions"].as_array().map_or(0, Vec::len),
            });
        }
        n = last + 1;
    }
    Ok(out)
}

/// The blocks whose timestamps fall in the window ending now (plus the one before it,
/// so the first interval is known).
fn window_blocks(addr: SocketAddr, window: Duration) -> Result<Vec<Block>, String> {
    let head = head(addr)?;
    let since = (chainctl_common::time::now_ms() / 1000).saturating_sub(window.as_secs());
    let mut out: Vec<Block> = Vec::new();
    let mut to = head;
    loop {
        let from = to.saturating_sub(99);
        let mut chunk = blocks(addr, from, to)?;
        let done = from == 0 || chunk.first().is_some_and(|b| b.timestamp < since);
        chunk.append(&mut out);
        out = chunk;
        if done {
            break;
        }
        to = from - 1;
    }
    // Genesis is not produced by consensus: its timestamp says nothing of block times.
    out.retain(|b| b.number > 0);
    // Keep one block before the window.
    let first_in = out
        .iter()
        .position(|b| b.timestamp >= since)
        .unwrap_or(out.len());
    Ok(out.split_off(first_in.saturating_sub(1)))
}

/// Every client's hashes at the last [`AGREEMENT_HEIGHTS`] heights that all of them have.
fn agreement(t: &Targets) -> Result<Agreement, String> {
    if t.els.is_empty() {
        return Err("the profile has no validator-driven execution client".into());
    }
    let heads: Vec<(String, Result<u64, String>)> =
        parallel(&t.els, |e| (e.name.clone(), head(e.http)));
    let to = heads
        .iter()
        .filter_map(|(_, h)| h.as_ref().ok().copied())
        .min()
        .ok_or("no execution client answers eth_blockNumber")?;
    let from = to.saturating_sub(AGREEMENT_HEIGHTS - 1).max(1).min(to);
    let pairs: Vec<_> = t.els.iter().zip(heads).collect();
    let per_el = parallel(&pairs, |(e, (name, h))| {
        let r = h.clone().and_then(|_| {
            blocks(e.http, from, to).map(|b| b.into_iter().map(|b| b.hash).collect())
        });
        (name.clone(), r)
    });
    Ok(Agreement { from, to, per_el })
}

/// Services with an `http` or `rpc` port that no validator drives: their head twice,
/// two seconds apart, and whether their block 1 is ours.
fn undriven(plan: &Plan, t: &Targets, chain: &Result<Vec<Block>, String>) -> Vec<Undriven> {
    // Clients something drives through the Engine API (validators, or a `drives:` pair)
    // are not producing blocks by themselves.
    let driven = |name: &str| {
        t.els.iter().any(|e| e.name == name) || plan.jwt_pairs.iter().any(|p| p.execution == name)
    };
    let candidates: Vec<(String, SocketAddr)> = plan
        .services
        .iter()
        .filter(|s| !driven(&s.name))
        .filter_map(|s| {
            let a = s.ports.get("http").or_else(|| s.ports.get("rpc"))?;
            Some((s.name.clone(), SocketAddr::new(s.ready_host, a.port)))
        })
        .collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    let first: Vec<Result<u64, String>> = candidates.iter().map(|(_, a)| head(*a)).collect();
    std::thread::sleep(Duration::from_secs(2));
    let ours_1 = chain
        .as_ref()
        .ok()
        .and_then(|_| t.els.first())
        .and_then(|e| blocks(e.http, 1, 1).ok())
        .and_then(|b| b.first().map(|b| b.hash.clone()));
    candidates
        .into_iter()
        .zip(first)
        .map(|((service, addr), h1)| {
            let heads = h1.and_then(|h1| Ok((h1, head(addr)?)));
            let same_chain = match (&ours_1, heads.is_ok().then(|| blocks(addr, 1, 1))) {
                (Some(o), Some(Ok(b))) => b.first().map(|b| &b.hash == o),
                _ => None,
            };
            Undriven {
                service,
                addr,
                heads,
                same_chain,
            }
        })
        .collect()
}

/// The Engine API's status code for a well-formed token signed with a random secret.
fn bad_token(engine: SocketAddr) -> Result<u16, String> {
    let secret = chainctl_common::secrets::JwtSecret::generate();
    let token =
        chainctl_common::secrets::engine_token(&secret, chainctl_common::time::now_ms() / 1000);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "engine_exchangeCapabilities",
                      "params": [["engine_newPayloadV4"]]});
    raw_http(
        engine,
        None,
        "POST",
        "/",
        Some(&token),
        Some(&body.to_string()),
    )
    .map(|r| r.0)
}

/// Every allocated TCP port of the services the supervisor runs, and chainctl's own,
/// probed with [`answers`].
fn endpoints(
    ports: &chainctl_core::state::PortsFile,
    plan: &Plan,
    profile: &Profile,
    t: &Targets,
    status: &Value,
) -> Vec<(String, String, u16, Result<(), String>)> {
    let running: Vec<&str> = status["supervisor"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["pid"].is_number())
        .filter_map(|s| s["name"].as_str())
        .collect();
    let mut out = Vec::new();
    for (svc, m) in &ports.services {
        if svc != chainctl_core::ports::CHAINCTL && !running.contains(&svc.as_str()) {
            continue;
        }
        for (name, a) in m {
            if !a.protocol.tcp() {
                continue;
            }
            // Where it listens: the service's address, chainctl's per endpoint.
            let ip = match (svc.as_str(), name.as_str()) {
                (chainctl_core::ports::CHAINCTL, "gateway") => profile.listen.gateway(),
                (chainctl_core::ports::CHAINCTL, _) => profile.listen.api,
                _ => plan
                    .service(svc)
                    .map_or(profile.listen.rpc, |s| s.ready_host),
            };
            let addr = chainctl_monitor::reachable(SocketAddr::new(ip, a.port));
            out.push((
                svc.clone(),
                name.clone(),
                a.port,
                answers(addr, svc, name, t),
            ));
        }
    }
    out
}

/// Whether the endpoint `svc.name` at `addr` answers: a TCP connect for every port, and
/// where chainctl knows the protocol, a real request — JSON-RPC `eth_chainId` on the
/// execution clients' HTTP port (which port that is, and which serves metrics, their
/// adapter says) and on the gateway, a GET of a client's metrics (its path on its port),
/// `/status` on validators. WebSocket endpoints are upgraded separately.
fn answers(addr: SocketAddr, svc: &str, name: &str, t: &Targets) -> Result<(), String> {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    if let Some(e) = t.els.iter().find(|e| e.name == svc) {
        let serves = chainctl_core::clients::endpoints(e.kind);
        if name == serves.http {
            return jsonrpc_answers(addr);
        }
        if serves.metrics == Some(name) {
            let path = serves.metrics_path;
            return match raw_http(addr, None, "GET", path, None, None)? {
                (200, _) => Ok(()),
                (code, body) => Err(format!(
                    "{path} answered HTTP {code}: {}",
                    body.lines().next().unwrap_or("").trim()
                )),
            };
        }
        return Ok(());
    }
    let validator = t.validators.iter().any(|v| v.name == svc);
    let gateway = svc == chainctl_core::ports::CHAINCTL && name == "gateway";
    match name {
        "gateway" if gateway => jsonrpc_answers(addr),
        "status" if validator => match raw_http(addr, None, "GET", "/status", None, None)? {
            (200, _) => Ok(()),
            (code, body) => Err(format!("/status answered HTTP {code}: {}", body.trim())),
        },
        _ => Ok(()),
    }
}

fn jsonrpc_answers(addr: SocketAddr) -> Result<(), String> {
    let v = rpc(
        addr,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}),
    )?;
    if v["result"].is_string() {
        Ok(())
    } else {
        Err(format!("eth_chainId answered {v}"))
    }
}

/// Upgrades a WebSocket on the gateway.
fn websocket_upgrade(addr: SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    let tls = tls_of(addr);
    let mut s = chainctl_common::http::connect(addr, tls.as_deref(), Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).map_err(|e| format!("{addr}: {e}"))?;
    let head = String::from_utf8_lossy(&buf[..n]);
    if head.starts_with("HTTP/1.1 101") {
        Ok(())
    } else {
        Err(format!(
            "{addr}: no WebSocket upgrade: {}",
            head.lines().next().unwrap_or("")
        ))
    }
}

fn ports(layout: &Layout, ports: &chainctl_core::state::PortsFile) -> Result<Vec<PortRow>> {
    let owners = chainctl_core::state::port_owners(
        chainctl_core::state::read_json::<chainctl_core::state::StateFile>(&layout.state_file())?
            .as_ref(),
    );
    let mut out = Vec::new();
    for (svc, m) in &ports.services {
        for (name, a) in m {
            let host = match owners.host_use(svc, a) {
                chainctl_core::ports::HostUse::Free => "free".to_string(),
                chainctl_core::ports::HostUse::Ours => "ours".to_string(),
                chainctl_core::ports::HostUse::Conflict(why) => format!("CONFLICT: {why}"),
            };
            out.push(PortRow {
                service: svc.clone(),
                name: name.clone(),
                port: a.port,
                protocol: a.protocol.to_string(),
                host,
            });
        }
    }
    Ok(out)
}

fn wildcard_listeners(ports: &chainctl_core::state::PortsFile) -> Vec<(String, String, u16)> {
    let mut out = Vec::new();
    for (svc, m) in &ports.services {
        for (name, a) in m {
            if a.protocol.tcp()
                && chainctl_core::procinfo::listens_on_all_addresses(a.port) == Some(true)
            {
                out.push((svc.clone(), name.clone(), a.port));
            }
        }
    }
    out
}

/// Every secret value under the state dir's `secrets/`: a one-line file is one value; in
/// a JSON file, every string of 32 characters or more.
fn secret_values(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            secret_values(&p, out);
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(v) if v.is_object() || v.is_array() => {
                let mut stack = vec![v];
                while let Some(v) = stack.pop() {
                    match v {
                        Value::String(s) if s.len() >= 32 => out.push((p.clone(), s)),
                        Value::Array(a) => stack.extend(a),
                        Value::Object(o) => stack.extend(o.into_iter().map(|(_, v)| v)),
                        _ => {}
                    }
                }
            }
            _ => {
                let t = text.trim();
                if t.len() >= 16 && !t.contains(char::is_whitespace) {
                    out.push((p.clone(), t.to_string()));
                }
            }
        }
    }
}

/// Looks for every secret value in every file of the log dir (rotated ones too).
fn scan_logs(layout: &Layout) -> LogScan {
    let mut secrets = Vec::new();
    secret_values(&layout.secrets_dir(), &mut secrets);
    // A hex secret may be logged with or without 0x, in either case.
    let needles: Vec<(PathBuf, Vec<u8>)> = secrets
        .iter()
        .flat_map(|(p, s)| {
            let bare = s.trim_start_matches("0x");
            [bare.to_lowercase(), bare.to_uppercase()]
                .into_iter()
                .map(move |n| (p.clone(), n.into_bytes()))
        })
        .collect();
    let mut scan = LogScan {
        secrets: secrets.len(),
        ..Default::default()
    };
    let mut logs: Vec<PathBuf> = std::fs::read_dir(layout.log_dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.push(layout.supervisor_log());
    logs.sort();
    logs.dedup();
    for log in logs {
        let Ok(bytes) = std::fs::read(&log) else {
            continue;
        };
        scan.files += 1;
        scan.bytes += bytes.len() as u64;
        for (file, n) in &needles {
            if bytes.windows(n.len()).any(|w| w == n.as_slice()) {
                let what = format!(
                    "the secret in {} appears in {}",
                    file.display(),
                    log.display()
                );
                if !scan.found.contains(&what) {
                    scan.found.push(what);
                }
            }
        }
    }
    scan
}

/// Log files larger than their rotation size plus a margin (a rotation that does not
/// happen).
fn oversized_logs(plan: &Plan) -> Vec<(PathBuf, u64)> {
    plan.services
        .iter()
        .filter_map(|s| {
            let len = std::fs::metadata(&s.log_file).ok()?.len();
            (len > s.logs.max_bytes + s.logs.max_bytes / 10 + 65536)
                .then(|| (s.log_file.clone(), len))
        })
        .collect()
}

/// The file system type of a path (from /proc/self/mounts: the longest mount point
/// that contains it).
fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "unknown".into();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            let mnt = mnt.replace("\\040", " ");
            path.starts_with(&mnt).then(|| (mnt.len(), ty.to_string()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, t)| t)
        .unwrap_or_else(|| "unknown".into())
}

/// The alert rules chainctl ships, checked with promtool and against the live metrics.
pub const ALERT_RULES: &str = include_str!("../../../docs/monitoring/alerts.yml");

fn rules(metrics: &Result<(u16, String), String>) -> Result<Rules, String> {
    // A file of our own (created exclusively, 0600), not a guessable path in /tmp.
    let mut file = tempfile::Builder::new()
        .prefix("chainctl-alerts-")
        .suffix(".yml")
        .tempfile()
        .map_err(|e| format!("a temporary file for the alert rules: {e}"))?;
    std::io::Write::write_all(&mut file, ALERT_RULES.as_bytes()).map_err(|e| e.to_string())?;
    let out = run_bounded(
        std::process::Command::new("promtool")
            .args(["check", "rules"])
            .arg(file.path()),
        Duration::from_secs(20),
    );
    let promtool = match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(o) => Err(format!(
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "promtool is not installed ({e}): install Debian's `prometheus` package to check rules"
        )),
        Err(e) => Err(format!("promtool check rules: {e}")),
    };
    let text = metrics.as_ref().map(|(_, t)| t.as_str()).unwrap_or("");
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let mut missing: Vec<String> = Vec::new();
    for word in ALERT_RULES.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with("chainctl_") {
            continue;
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| word.strip_suffix(s))
            .filter(|b| families.contains(b))
            .unwrap_or(word);
        if !families.contains(&base) && !missing.iter().any(|m| m == word) {
            missing.push(word.to_string());
        }
    }
    let rules = ALERT_RULES
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    Ok(Rules {
        promtool,
        missing,
        rules,
    })
}

/// Runs a command to completion, killing it after `limit`.
fn run_bounded(
    cmd: &mut std::process::Command,
    limit: Duration,
) -> std::io::Result<std::process::Output> {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output()
}

/// Kills the active execution client of the first validator (SIGKILL), measures the
/// switch and the chain around it, then waits for the client to be back and healthy
/// (the supervisor restarts it).
fn drill(api: &ApiEndpoint, e: &Evidence, block_time: Duration) -> Result<Drill, String> {
    let get_status = || -> Result<Value, String> {
        let (code, text) = api_get(api, "/api/v1/status", true)?;
        if code != 200 {
            return Err(format!("API status {code}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| e.to_string())
    };
    // Fresh: the evidence's status is seconds old, and a pid must not be stale.
    let st = get_status()?;
    let (validator, active) = st["health"]["validators"]
        .as_object()
        .and_then(|m| {
            m.iter()
                .find_map(|(name, v)| Some((name.clone(), v["active_el"].as_str()?.to_string())))
        })
        .ok_or("no validator with an active execution client to drill")?;
    let pid = st["supervisor"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == active.as_str())
        .and_then(|s| s["pid"].as_i64())
        .ok_or_else(|| format!("{active} is not running: cannot drill"))?;
    // Follow the chain through the gateway, or else through a client we do not kill.
    let rpc = if st["gateway"].is_string() {
        e.rpc
    } else {
        Targets::from_plan(&e.plan)
            .els
            .iter()
            .find(|t| t.name != active)
            .map(|t| t.http)
    }
    .ok_or("no RPC endpoint other than the killed client to follow the chain")?;
    let kill_ms = chainctl_common::time::now_ms();
    let kill_s = kill_ms / 1000;
    let h0 = head(rpc)?;
    if pid >= chainctl_core::instance::SWARM_HANDLE_BASE as i64 {
        // A swarm instance: its task's container, through the engine.
        chainctl_runtime::swarm::kill_task(&e.plan.profile, &active)?;
    } else {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| format!("kill -9 {pid} ({active}): {e}"))?;
    }
    let killed_at = Instant::now();

    // For 10 s (20 s at most while the switch is not recorded): the head every 100 ms,
    // as the report sees it, and the switch, as the validator records it (with its gap
    // once the next block is in).
    let mut switch: Option<chainctl_common::validator::Switch> = None;
    let mut seen = h0;
    let (mut last_move, mut observed_gap) = (killed_at, Duration::ZERO);
    let mut polls = 0u32;
    while killed_at.elapsed() < Duration::from_secs(10)
        || (switch.is_none() && killed_at.elapsed() < Duration::from_secs(20))
    {
        std::thread::sleep(Duration::from_millis(100));
        polls += 1;
        if let Ok(h) = head(rpc) {
            if h > seen {
                seen = h;
                observed_gap = observed_gap.max(last_move.elapsed());
                last_move = Instant::now();
            }
        }
        if switch.is_some() || !polls.is_multiple_of(3) {
            continue;
        }
        let st = get_status()?;
        let records = Vec::<chainctl_monitor::SwitchRecord>::deserialize(&st["health"]["switches"])
            .unwrap_or_default();
        switch = records
            .into_iter()
            .find(|r| {
                r.validator == validator
                    && r.switch.from == active
                    && r.switch.at_ms >= kill_ms
                    && r.switch.gap_ms.is_some()
            })
            .map(|r| r.switch);
    }
    // A head that stopped moving shows as one long interval up to now.
    observed_gap = observed_gap.max(last_move.elapsed());
    let h1 = head(rpc)?;
    let chain = blocks(rpc, h0.saturating_sub(1).max(1), h1)?;
    let now_s = chainctl_common::time::now_ms() / 1000;
    let mut spans: Vec<(u64, u64)> = chain
        .windows(2)
        .map(|w| (w[0].timestamp, w[1].timestamp))
        .collect();
    if let Some(last) = chain.last() {
        spans.push((last.timestamp, now_s.max(last.timestamp)));
    }
    spans.retain(|(_, end)| *end + 1 >= kill_s);
    let bt = block_time.as_secs().max(1);
    let longest = spans.iter().map(|(a, b)| b - a).max();
    // The interval the kill fell in is the failover's own (its gap is judged apart);
    // any other over two block times is a missed height.
    let missed_heights = spans
        .iter()
        .filter(|(a, b)| !(*a <= kill_s && kill_s <= *b))
        .filter(|(a, b)| b - a > 2 * bt)
        .map(|(a, b)| (b - a) / bt - 1)
        .sum();

    // Restore: the supervisor restarts the client; wait until it is healthy again.
    let mut restored_after = None;
    while killed_at.elapsed() < Duration::from_secs(90) {
        let st = get_status()?;
        if st["health"]["els"][&active]["state"] == "healthy"
            && st["supervisor"]["services"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| {
                    s["name"] == active.as_str() && s["pid"].as_i64().is_some_and(|p| p != pid)
                })
        {
            restored_after = Some(killed_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(Drill {
        validator,
        killed: active,
        switched_to: switch.as_ref().map(|s| s.to.clone()),
        switch_kind: switch.as_ref().map(|s| s.kind.clone()),
        gap_ms: switch.as_ref().and_then(|s| s.gap_ms),
        observed_gap_ms: Some(observed_gap.as_millis() as u64),
        longest_interval_s: longest,
        missed_heights,
        restored_after,
        measured_at_ms: chainctl_common::time::now_ms(),
    })
}
