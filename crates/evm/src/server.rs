//! The engine's servers: the Engine API on its JWT-authenticated port and the public
//! JSON-RPC (HTTP and WebSocket) on another.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy_genesis::Genesis;
use alloy_primitives::{keccak256, U256};
use anyhow::{anyhow, Context};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use clap::Args;
use revm::bytecode::Bytecode;
use serde_json::json;

use super::app::{AppState, RelayQueue, RPC_BODY_LIMIT};
use super::chain::Chain;
use super::engine::Engine;
use super::rpc::handle_body;
use super::spec::ChainSpec;
use super::state::{CodeStore, WorldState};
use chainctl_common::secrets::{verify_token, JwtSecret};

/// Largest Engine API request body (a payload of a full block and its requests).
pub const ENGINE_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// How to run the engine.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The network's genesis (go-ethereum genesis.json format).
    #[arg(long)]
    pub genesis: Option<PathBuf>,
    /// Address of the public JSON-RPC server.
    #[arg(long, default_value = "127.0.0.1")]
    pub http_addr: IpAddr,
    /// Port of the public JSON-RPC server (0: any free port, printed at start).
    #[arg(long, default_value_t = 8545)]
    pub http_port: u16,
    /// Serve WebSocket JSON-RPC on this port of `--http-addr` instead of on the HTTP
    /// port, which then answers an upgrade with 403 Forbidden: Reth's layout (its
    /// `--ws.port`), for operators who expect it and for tests that stand in for it.
    #[arg(long, value_name = "PORT")]
    pub ws_port: Option<u16>,
    /// Address of the Engine API server.
    #[arg(long, default_value = "127.0.0.1")]
    pub authrpc_addr: IpAddr,
    /// Port of the Engine API server (0: any free port, printed at start).
    #[arg(long, default_value_t = 8551)]
    pub authrpc_port: u16,
    /// The 32-byte hex JWT secret shared with the consensus client (required: the engine
    /// never serves the Engine API without authentication).
    #[arg(long)]
    pub jwt_secret: Option<PathBuf>,
    /// JSON-RPC URL of another execution client of the network (repeatable): every
    /// transaction this engine accepts from a user is passed on to each, as execution
    /// clients gossip transactions over P2P, so that it reaches whichever validator
    /// proposes next. Transactions received from a peer are not passed on again.
    #[arg(long = "tx-peer", value_name = "URL")]
    pub tx_peers: Vec<String>,
    /// JSON-RPC URL of an execution client whose new pending transactions this engine
    /// takes into its pool (repeatable): Reth, Geth and Erigon gossip transactions only
    /// over devp2p, so one sent straight to them reaches a built-in engine this way
    /// (a pending-transaction filter polled every 200 ms). Not passed on again.
    #[arg(long = "tx-source", value_name = "URL")]
    pub tx_sources: Vec<String>,
    /// Keep the chain in this directory (`engine.redb`): blocks, verdicts, forkchoice and
    /// state survive a restart or a crash. Without it the chain lives in memory only and
    /// starts again from genesis at every start.
    #[arg(long)]
    pub datadir: Option<PathBuf>,
    /// Answer `eth_syncing` with a syncing object until a forkchoice update moves the
    /// head, as Reth, Geth and Erigon do after they start (seen with Reth 2.5.1: an
    /// object of zeros before its first forkchoice): for tests that stand in for them.
    #[arg(long)]
    pub syncing_until_new_head: bool,
    /// Start from a snapshot of another built-in engine of the same chain (a store file
    /// `chainctl_exportSnapshotV1` wrote, or `chainctl backup`'s `engine.redb.zst`) when
    /// --datadir holds no chain yet: the engine then needs only the blocks after the
    /// snapshot from its consensus node, not every block since genesis. A snapshot of
    /// another chain is refused; a data dir that already holds a chain keeps it.
    #[arg(long, value_name = "FILE", requires = "datadir")]
    pub from_snapshot: Option<PathBuf>,
}

/// Put the snapshot `from` into `dir` as the engine's store, when `dir` holds none: checked
/// to be of the chain whose genesis is `genesis` first, decompressed when it is zstd, and
/// fsync'd before it takes the store's name. Whether it was used.
pub fn seed_from_snapshot(
    from: &Path,
    dir: &Path,
    genesis: alloy_primitives::B256,
) -> Result<bool, String> {
    let store = dir.join("engine.redb");
    if store.exists() {
        tracing::info!(
            store = %store.display(),
            "--from-snapshot: the data dir already holds a chain; keeping it"
        );
        return Ok(false);
    }
    chainctl_common::fs::private_dir(dir)
        .map_err(|e| format!("cannot create the data dir {}: {e}", dir.display()))?;
    let tmp = dir.join("engine.redb.snapshot");
    let copy = || -> std::io::Result<()> {
        let mut src = std::fs::File::open(from)?;
        let mut out = std::fs::File::create(&tmp)?;
        let mut magic = [0u8; 4];
        let n = std::io::Read::read(&mut src, &mut magic)?;
        std::io::Seek::seek(&mut src, std::io::SeekFrom::Start(0))?;
        if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
            zstd::stream::copy_decode(src, &mut out)?;
        } else {
            std::io::copy(&mut src, &mut out)?;
        }
        out.sync_all()
    };
    copy().map_err(|e| format!("--from-snapshot {}: {e}", from.display()))?;
    let info = match super::store::snapshot_info(&tmp) {
        Ok(i) => i,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "--from-snapshot {}: not a store snapshot ({e})",
                from.display()
            ));
        }
    };
    if info.genesis != genesis {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "--from-snapshot {}: the snapshot is of the chain with genesis {}, this engine's genesis is {genesis}: give a snapshot of an engine of this network",
            from.display(),
            info.genesis
        ));
    }
    std::fs::rename(&tmp, &store).map_err(|e| format!("{}: {e}", store.display()))?;
    tracing::info!(
        snapshot = %from.display(),
        finalized = info.finalized_number,
        "starting from a snapshot of another engine of this chain"
    );
    Ok(true)
}

/// Header that marks a request as relayed by another engine (not to be relayed again).
pub const RELAYED_HEADER: &str = "x-chainctl-relayed";

/// Header on every public JSON-RPC answer: this engine process's boot id, random at each
/// start. A peer that reads a new one knows this engine's pool was rebuilt from its
/// journal and lacks what was sent while it was down ([`relay_loop`]).
pub const BOOT_HEADER: &str = "x-chainctl-boot";

/// How often a relay with nothing to pass on asks its peer who it is (its boot id).
const PEER_PROBE: std::time::Duration = std::time::Duration::from_secs(1);

/// Load a genesis file into a chain.
pub fn load_genesis(path: &Path) -> anyhow::Result<Chain> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read genesis {}", path.display()))?;
    let genesis: Genesis = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}: not a genesis.json: {e}", path.display()))?;
    chain_from_genesis(&genesis).map_err(|e| anyhow!("{}: {e}", path.display()))
}

pub fn chain_from_genesis(genesis: &Genesis) -> Result<Chain, String> {
    let spec = ChainSpec::from_chain_config(&genesis.config)?;
    let codes = CodeStore::default();
    let mut state = WorldState::default();
    for (addr, acct) in &genesis.alloc {
        let code_hash = match &acct.code {
            Some(code) if !code.is_empty() => {
                let h = keccak256(code);
                codes.insert(h, Bytecode::new_raw(code.clone()));
                h
            }
            _ => revm::primitives::KECCAK_EMPTY,
        };
        let storage: Vec<(U256, U256)> = acct
            .storage
            .iter()
            .flatten()
            .map(|(k, v)| (U256::from_be_bytes(k.0), U256::from_be_bytes(v.0)))
            .collect();
        state.put(
            *addr,
            acct.nonce.unwrap_or(0),
            acct.balance,
            code_hash,
            &storage,
        );
    }
    let header = spec.genesis_header(genesis, state.root());
    Ok(Chain::new(Arc::new(spec), codes, header, state))
}

async fn engine_handler(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return (
            StatusCode::UNAUTHORIZED,
            "missing JWT: send Authorization: Bearer <HS256 token>",
        )
            .into_response();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Err(e) = verify_token(&app.secret, token, now) {
        tracing::warn!(reason = %e, "Engine API call refused");
        return (StatusCode::UNAUTHORIZED, format!("invalid JWT: {e}")).into_response();
    }
    let engine = app.engine.clone();
    let out =
        tokio::task::spawn_blocking(move || handle_body(&body, &|m, p| engine.call(m, p))).await;
    respond(out)
}

async fn rpc_handler(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let relayed = headers.contains_key(RELAYED_HEADER);
    let boot = app.boot.clone();
    let out =
        tokio::task::spawn_blocking(move || handle_body(&body, &|m, p| app.call(m, p, relayed)))
            .await;
    let mut r = respond(out);
    if let Ok(v) = axum::http::HeaderValue::from_str(&boot) {
        r.headers_mut().insert(BOOT_HEADER, v);
    }
    r
}

/// Hashes a source reported and the engine could not fetch yet, kept for the next round
/// at most.
const PULL_BACKLOG: usize = 10_000;

/// How often the pool's journal is rewritten from the pool (dropping what was included).
const JOURNAL_ROTATION: std::time::Duration = std::time::Duration::from_secs(60);

/// Hex bytes of raw transactions in one relayed batch: well under the peer's body limit
/// (`RPC_BODY_LIMIT`), which a few blob transactions (up to 1.6 MB each) would pass.
const RELAY_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// `txs` cut into batches of at most `max_calls` and `max_bytes` (a larger single
/// transaction goes alone).
fn batches(txs: &[String], max_calls: usize, max_bytes: usize) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, tx) in txs.iter().enumerate() {
        if i > start && (i - start == max_calls || bytes + tx.len() > max_bytes) {
            out.push(&txs[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += tx.len();
    }
    if start < txs.len() {
        out.push(&txs[start..]);
    }
    out
}

/// Takes one source's new pending transactions into this engine's pool, a round every
/// [`super::filters::PULL_INTERVAL`]: the changes of a pending filter on the source (a
/// new filter every round, each read once), then the raw bytes of each hash the engine
/// does not hold yet.
///
/// Each filter is read once, right after the next one is made, then removed: Reth 2.5
/// answers any filter's changes only once per new block since its last poll
/// (`crates/rpc/rpc/src/eth/filter.rs`, `filter_changes`), so a pending filter polled
/// every 200 ms gave its hashes ~650 ms late, after the next proposer had built. A
/// filter's first poll is always answered, and the next filter exists before the last
/// one is read: nothing falls between. A read that fails is tried again next round; a
/// filter the source no longer knows (it restarted) is dropped.
struct Puller {
    engine: Arc<super::engine::Engine>,
    client: reqwest::Client,
    source: String,
    /// Filters made and not read yet, oldest first.
    unread: Vec<serde_json::Value>,
    /// Hashes reported and not fetched yet (a fetch failed).
    backlog: Vec<alloy_primitives::B256>,
    /// When a refusal was last logged (at most every 10 s).
    refused_logged: Option<std::time::Instant>,
}

impl Puller {
    /// One call (or a batch) to the source.
    async fn post(&self, body: &serde_json::Value) -> Result<serde_json::Value, String> {
        self.client
            .post(&self.source)
            .json(body)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.without_url().to_string())?
            .json::<serde_json::Value>()
            .await
            .map_err(|e| e.without_url().to_string())
    }

    /// One round; how many transactions the pool took.
    async fn round(&mut self) -> Result<usize, String> {
        let hashes = self.new_hashes().await?;
        let mut taken = 0;
        for (k, chunk) in hashes.chunks(super::rpc::MAX_BATCH).enumerate() {
            match self.take(chunk).await {
                Ok(n) => taken += n,
                Err(e) => {
                    // Fetched next round (at most PULL_BACKLOG kept).
                    self.backlog = hashes[k * super::rpc::MAX_BATCH..]
                        .iter()
                        .take(PULL_BACKLOG)
                        .copied()
                        .collect();
                    return Err(e);
                }
            }
        }
        Ok(taken)
    }

    /// The hashes reported since the last round (and those left to fetch), less those
    /// the engine already holds.
    async fn new_hashes(&mut self) -> Result<Vec<alloy_primitives::B256>, String> {
        let next = self
            .post(&rpc_call(0, "eth_newPendingTransactionFilter", json!([])))
            .await?;
        let next = next
            .get("result")
            .cloned()
            .ok_or_else(|| format!("eth_newPendingTransactionFilter: {}", next["error"]))?;
        let reads: Vec<serde_json::Value> = self
            .unread
            .iter()
            .enumerate()
            .flat_map(|(i, id)| {
                [
                    rpc_call(2 * i, "eth_getFilterChanges", json!([id])),
                    rpc_call(2 * i + 1, "eth_uninstallFilter", json!([id])),
                ]
            })
            .collect();
        let answers = if reads.is_empty() {
            Vec::new()
        } else {
            match self.post(&json!(reads)).await {
                Ok(a) => a.as_array().cloned().unwrap_or_default(),
                Err(e) => {
                    self.unread.push(next);
                    return Err(e);
                }
            }
        };
        self.unread = vec![next];
        let mut hashes = std::mem::take(&mut self.backlog);
        for a in answers
            .iter()
            .filter(|a| a["id"].as_u64().is_some_and(|i| i % 2 == 0))
        {
            hashes.extend(
                serde_json::from_value::<Vec<alloy_primitives::B256>>(a["result"].clone())
                    .unwrap_or_default(),
            );
        }
        // Off the async workers, as every other use of the engine's locks (a block
        // import holds the chain).
        let e = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let chain = e.chain();
            let pool = crate::engine_lock(&e.pool);
            let mut seen = std::collections::HashSet::new();
            hashes
                .into_iter()
                .filter(|h| {
                    seen.insert(*h) && pool.get(h).is_none() && chain.tx_location(h).is_none()
                })
                .collect()
        })
        .await
        .map_err(|e| format!("checking pulled hashes: {e}"))
    }

    /// Fetches `hashes` from the source and puts them in the pool; how many it took.
    async fn take(&mut self, hashes: &[alloy_primitives::B256]) -> Result<usize, String> {
        let calls: Vec<serde_json::Value> = hashes
            .iter()
            .enumerate()
            .map(|(i, h)| rpc_call(i, "eth_getRawTransactionByHash", json!([h])))
            .collect();
        let answers = self.post(&json!(calls)).await?;
        let raws: Vec<Vec<u8>> = answers
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["result"].as_str())
            .filter_map(|r| alloy_primitives::hex::decode(r).ok())
            .collect();
        let missing = hashes.len() - raws.len();
        let e = self.engine.clone();
        let (n, refusal) = tokio::task::spawn_blocking(move || {
            let mut refusal = None;
            let n = raws
                .iter()
                .filter(|raw| match e.submit_raw(raw, false) {
                    Ok(_) => {
                        e.journal_append(raw);
                        true
                    }
                    // Known by now (a peer relayed it): not a refusal.
                    Err(why) if why.starts_with("already known") => false,
                    // A nonce taken, a blob transaction without its blobs: the source
                    // keeps it.
                    Err(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                })
                .count();
            (n, refusal)
        })
        .await
        .unwrap_or((0, None));
        let why = refusal.or_else(|| {
            (missing > 0).then(|| {
                format!(
                    "{missing} of {} hashes had no transaction there",
                    hashes.len()
                )
            })
        });
        if let Some(why) = why.filter(|_| every_10_s(&mut self.refused_logged)) {
            tracing::warn!(source = %self.source, first = %why, "pulled transactions not taken (logged at most every 10 s)");
        }
        Ok(n)
    }
}

/// A JSON-RPC call object.
fn rpc_call(id: usize, method: &str, params: serde_json::Value) -> serde_json::Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// Whether something logged at most every 10 s may be logged now (then it counts as
/// logged).
fn every_10_s(last: &mut Option<std::time::Instant>) -> bool {
    let due = last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10));
    if due {
        *last = Some(std::time::Instant::now());
    }
    due
}

/// Pulls `source`'s new pending transactions for ever ([`Puller`]); a source that is
/// down is retried every round, and said so once.
async fn pull_loop(engine: Arc<super::engine::Engine>, source: String) {
    let mut puller = Puller {
        engine,
        client: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap_or_default(),
        source,
        unread: Vec::new(),
        backlog: Vec::new(),
        refused_logged: None,
    };
    let mut failing = false;
    let (mut pulled, mut pulled_since) = (0usize, std::time::Instant::now());
    loop {
        tokio::time::sleep(super::filters::PULL_INTERVAL).await;
        match puller.round().await {
            Ok(n) => {
                if failing {
                    tracing::info!(source = %puller.source, "pulling pending transactions again");
                    failing = false;
                }
                pulled += n;
                if pulled_since.elapsed() >= std::time::Duration::from_secs(10) {
                    if pulled > 0 {
                        tracing::info!(source = %puller.source, pulled, "pending transactions pulled in the last 10 s");
                    }
                    (pulled, pulled_since) = (0, std::time::Instant::now());
                }
            }
            Err(e) if !failing => {
                tracing::warn!(source = %puller.source, error = %e, "cannot pull pending transactions (retried every 200 ms)");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Pass accepted transactions on to one peer every 50 ms, in batches. While the peer is
/// down they wait for it (up to the backlog limit). And as a devp2p peer is given the
/// pool when it connects, the peer is given this engine's whole pool the first time it
/// answers and whenever it answers with a new boot id ([`BOOT_HEADER`]: it restarted):
/// a peer that missed a sender's nonce n would hold that sender's later transactions
/// behind a gap it never fills. The backlog alone does not cover it — it dies with this
/// process, and transactions the gateway gave to every client itself (marked relayed)
/// or put back from the journal are never queued. With nothing to pass on, the peer is
/// asked who it is every [`PEER_PROBE`], so that a restart between two sends is seen.
async fn relay_loop(engine: Arc<super::engine::Engine>, queue: RelayQueue, peer: String) {
    let client = reqwest::Client::builder()
        // Long enough for a peer checking blob proofs (its first blob transaction loads
        // the KZG setup, seconds).
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let mut failing = false;
    let mut refused_logged: Option<std::time::Instant> = None;
    // The peer's boot id when it last answered, and when that was.
    let mut peer_boot: Option<axum::http::HeaderValue> = None;
    let mut heard_at: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let txs = std::mem::take(&mut *queue.lock().unwrap_or_else(|e| e.into_inner()));
        let mut result = Ok(());
        let (mut refused, mut first_refusal) = (0usize, None);
        let mut delivered = 0;
        let mut boots = Vec::new();
        if txs.is_empty() && heard_at.is_none_or(|t| t.elapsed() >= PEER_PROBE) {
            match client
                .post(&peer)
                .json(&rpc_call(0, "net_version", json!([])))
                .send()
                .await
            {
                Ok(r) => boots.push(r.headers().get(BOOT_HEADER).cloned()),
                Err(e) => result = Err(e),
            }
        }
        for chunk in batches(&txs, super::rpc::MAX_BATCH, RELAY_BATCH_BYTES) {
            let calls: Vec<serde_json::Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, raw)| rpc_call(i, "eth_sendRawTransaction", json!([raw])))
                .collect();
            let answer = match client
                .post(&peer)
                .header(RELAYED_HEADER, "1")
                .json(&calls)
                .send()
                .await
                .and_then(|r| r.error_for_status())
            {
                Ok(r) => {
                    boots.push(r.headers().get(BOOT_HEADER).cloned());
                    r.json::<Vec<serde_json::Value>>().await
                }
                Err(e) => Err(e),
            };
            match answer {
                Ok(items) => {
                    delivered += chunk.len();
                    // "already known" is a peer that had it, "nonce too low" one whose
                    // chain has it: not refusals.
                    for e in items
                        .iter()
                        .filter_map(|it| it["error"]["message"].as_str())
                    {
                        if !e.starts_with("already known") && !e.starts_with("nonce too low") {
                            refused += 1;
                            first_refusal.get_or_insert_with(|| e.to_owned());
                        }
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if !boots.is_empty() {
            heard_at = Some(std::time::Instant::now());
        }
        // A peer this pool is new to: all of it goes first, in each sender's nonce order,
        // ahead of what is queued (what it holds already it answers "already known").
        let mut give_pool = false;
        for b in boots.into_iter().flatten() {
            if peer_boot.as_ref() != Some(&b) {
                peer_boot = Some(b);
                give_pool = true;
            }
        }
        let mut kept = if result.is_err() {
            txs[delivered..].to_vec()
        } else {
            Vec::new()
        };
        if give_pool {
            let e = engine.clone();
            let pool = tokio::task::spawn_blocking(move || {
                crate::engine_lock(&e.pool)
                    .journal_records()
                    .iter()
                    .map(alloy_primitives::hex::encode_prefixed)
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            if !pool.is_empty() {
                tracing::info!(%peer, transactions = pool.len(), "giving the pool to a peer that (re)started");
            }
            kept.splice(0..0, pool);
        }
        if !kept.is_empty() {
            // Kept for when the peer is back, ahead of what came meanwhile.
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            kept.append(&mut q);
            kept.truncate(super::app::RELAY_BACKLOG);
            *q = kept;
        }
        if let Some(reason) = first_refusal.filter(|_| every_10_s(&mut refused_logged)) {
            tracing::warn!(%peer, refused, first = %reason, "a peer refused relayed transactions (logged at most every 10 s)");
        }
        match result {
            Err(e) if !failing => {
                tracing::warn!(%peer, error = %e.without_url(), "cannot pass transactions on to a peer (retried with the next ones)");
                failing = true;
            }
            Ok(()) if failing && heard_at.is_some_and(|t| t.elapsed() < PEER_PROBE) => {
                tracing::info!(%peer, "peer takes transactions again");
                failing = false;
            }
            _ => {}
        }
    }
}

fn respond(out: Result<Option<serde_json::Value>, tokio::task::JoinError>) -> Response {
    match out {
        Ok(Some(v)) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
            .into_response(),
    }
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let genesis = args.genesis.as_deref().ok_or_else(|| {
        anyhow!(
            "--genesis is required: the network's genesis.json (chainctl renders one per profile)"
        )
    })?;
    let jwt = args.jwt_secret.as_deref().ok_or_else(|| {
        anyhow!("--jwt-secret is required: the Engine API is never served without authentication (`chainctl jwt generate` makes one)")
    })?;
    let secret = JwtSecret::read(jwt).map_err(|e| anyhow!("{e}"))?;
    for peer in &args.tx_peers {
        match reqwest::Url::parse(peer) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => anyhow::bail!("--tx-peer {peer:?} is not an http(s) URL: give the JSON-RPC URL of a peer execution client, e.g. http://127.0.0.1:8545"),
        }
    }
    let chain = load_genesis(genesis)?;
    if let (Some(from), Some(dir)) = (&args.from_snapshot, &args.datadir) {
        seed_from_snapshot(from, dir, chain.genesis_hash()).map_err(|e| anyhow!("{e}"))?;
    }
    let chain = match &args.datadir {
        Some(dir) => {
            let store = super::store::Store::open(dir).map_err(|e| anyhow!("{e}"))?;
            chain.with_store(store).map_err(|e| anyhow!("{e}"))?
        }
        None => {
            tracing::warn!(
                "no --datadir: the chain is kept in memory only and is lost when the engine stops"
            );
            chain
        }
    };
    let genesis_hash = chain.genesis_hash();
    let engine = Arc::new(Engine::new(chain));
    if args.syncing_until_new_head {
        engine.report_syncing_until_new_head();
    }
    if let Some(dir) = &args.datadir {
        let (back, stale) = engine.open_journal(dir).map_err(|e| anyhow!("{e}"))?;
        if back + stale > 0 {
            tracing::info!(
                back,
                stale,
                "put the journaled transactions back into the pool (stale ones skipped)"
            );
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let relay: Vec<RelayQueue> = args
            .tx_peers
            .iter()
            .map(|peer| {
                let q = RelayQueue::default();
                tokio::spawn(relay_loop(engine.clone(), q.clone(), peer.clone()));
                q
            })
            .collect();
        let relay = Arc::new(relay);
        for source in &args.tx_sources {
            tokio::spawn(pull_loop(engine.clone(), source.clone()));
        }
        if args.datadir.is_some() {
            let engine = engine.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(JOURNAL_ROTATION);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let e = engine.clone();
                    match tokio::task::spawn_blocking(move || e.rotate_journal()).await {
                        Ok(Err(e)) => tracing::warn!(error = %e, "cannot rewrite the pool's journal"),
                        Err(e) => tracing::warn!(error = %e, "journal rotation failed"),
                        Ok(Ok(())) => {}
                    }
                }
            });
        }
        let boot: Arc<str> = format!("{:016x}", rand::random::<u64>()).into();
        let app = AppState { engine: engine.clone(), secret: Arc::new(secret), relay, boot };
        let engine_router = Router::new()
            .route("/", post(engine_handler))
            .layer(DefaultBodyLimit::max(ENGINE_BODY_LIMIT))
            .with_state(app.clone());
        let rpc_router = |ws: bool| {
            let get = if ws {
                axum::routing::get(super::ws::upgrade)
            } else {
                // As Reth answers a WebSocket upgrade on its HTTP port.
                axum::routing::get(|| async {
                    (
                        axum::http::StatusCode::FORBIDDEN,
                        "WebSocket is served on its own port (--ws-port)\n",
                    )
                })
            };
            Router::new()
                .route("/", get.post(rpc_handler))
                .layer(DefaultBodyLimit::max(RPC_BODY_LIMIT))
                .with_state(app.clone())
        };
        let ws_router = rpc_router(true);
        let rpc_router = rpc_router(args.ws_port.is_none());
        let bind = |addr: IpAddr, port: u16, what: &'static str, flag: &'static str| async move {
            tokio::net::TcpListener::bind(SocketAddr::new(addr, port))
                .await
                .with_context(|| format!("cannot listen on {addr}:{port} for {what}: is the port in use? choose another with --{flag}"))
        };
        let rpc = bind(args.http_addr, args.http_port, "JSON-RPC", "http-port").await?;
        let ws = match args.ws_port {
            Some(port) => Some(bind(args.http_addr, port, "WebSocket JSON-RPC", "ws-port").await?),
            None => None,
        };
        let auth = bind(args.authrpc_addr, args.authrpc_port, "the Engine API", "authrpc-port").await?;
        let (rpc_addr, auth_addr) = (rpc.local_addr()?, auth.local_addr()?);
        tracing::info!(%genesis_hash, rpc = %rpc_addr, engine = %auth_addr, "built-in engine listening");
        println!(
            "{}",
            serde_json::json!({"event": "listening", "genesis": genesis_hash, "rpc": rpc_addr.to_string(), "engine": auth_addr.to_string(),
                               "ws": ws.as_ref().and_then(|l| l.local_addr().ok()).unwrap_or(rpc_addr).to_string()})
        );
        // Under systemd (`Type=notify`): ready once both ports listen.
        chainctl_common::sdnotify::ready();
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
            }
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.changed().await;
        };
        // JSON-RPC answers go out as soon as they are written (no Nagle wait).
        use axum::serve::ListenerExt;
        let rpc = rpc.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let s1 = axum::serve(rpc, rpc_router).with_graceful_shutdown(wait(rx.clone()));
        let s2 = axum::serve(auth, engine_router).with_graceful_shutdown(wait(rx.clone()));
        let s3 = async {
            match ws {
                Some(l) => axum::serve(l, ws_router).with_graceful_shutdown(wait(rx)).await,
                None => Ok(()),
            }
        };
        let servers = async { tokio::try_join!(s1, s2, s3) };
        tokio::select! {
            r = servers => { r.context("server failed")?; }
            _ = shutdown => {
                tracing::info!("stopping");
                let _ = tx.send(true);
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn relayed_batches_respect_both_limits() {
        let txs: Vec<String> = [3, 3, 3, 9, 1, 1, 1, 1]
            .iter()
            .map(|n| "x".repeat(*n))
            .collect();
        let sizes: Vec<Vec<usize>> = super::batches(&txs, 3, 6)
            .iter()
            .map(|b| b.iter().map(String::len).collect())
            .collect();
        assert_eq!(
            sizes,
            vec![vec![3, 3], vec![3], vec![9], vec![1, 1, 1], vec![1]]
        );
        assert!(super::batches(&[], 3, 6).is_empty());
    }
}
