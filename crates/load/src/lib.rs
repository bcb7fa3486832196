//! `chainctl load`: transactions at a steady rate against a JSON-RPC endpoint, each
//! followed until it is in a finalized block.
//!
//! Senders are accounts of the network's documented mnemonic (the profile's
//! `chain.dev_accounts` are funded at genesis). Every transaction is a function of its
//! sender and nonce only (recipient, value, fees, kind), so a transaction whose fate is
//! unknown (a timed-out request) is re-sent byte for byte: the client either takes it or
//! answers "already known". Nonces are tracked per account; a refused nonce is re-sent,
//! and an account refused five times in a row is retired from the run (named in the
//! summary). A failure of the path rather than of the transaction (the endpoint cannot be
//! reached, the gateway has no client to give it to) is not a refusal: the same bytes are
//! sent again, to the network's next endpoint when this one cannot be reached, and the
//! failure is counted as retried. Since only the run signs for its accounts, a "nonce
//! too low" for a transaction sent before means that send was taken (its answer lost):
//! it is followed as accepted (and counted lost if no finalized block holds it).
//!
//! Inclusion is read from blocks, not per-transaction receipt polling: the finalized head
//! is polled every 50 ms, each new block is read once, by number, with its transaction
//! hashes — from the endpoint, or, when it does not have it yet (a gateway's client
//! behind the one that answered the head), from another client of the network — and the
//! receipts of blocks holding ours are read to count reverts. A block may be finalized
//! before the answer accepting one of its transactions is read (a slow answer): the
//! follower keeps every hash it saw, so that transaction counts as soon as its answer
//! does. Before a transaction is reported as not finalized, every client is asked for its
//! receipt. Latency is from the moment the client accepted a transaction (its answer, or
//! the send when the block came first) to the poll that saw it finalized.
//!
//! Layer 4: on chainctl-core, chainctl-common and, for `chainctl bench`'s engine figures,
//! chainctl-evm. It must never depend on the monitor or the supervisor: it talks to a
//! network only through its JSON-RPC endpoints and the state dir's files.

pub mod bench;
pub mod token;

use chainctl_common::units::{pct, quantity};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

/// Recipient of the load's value transfers and token transfers.
pub const SINK: Address = Address::new([
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xc4, 0x1d,
]);
/// Most transactions per second one account is asked to send: execution clients keep a
/// bounded number of pending transactions per sender (Reth and Geth: 16 by default).
pub const MAX_TPS_PER_ACCOUNT: u64 = 8;

/// The fewest sending accounts for `tps` ([`MAX_TPS_PER_ACCOUNT`] each).
pub fn accounts_for(tps: u64) -> u32 {
    tps.div_ceil(MAX_TPS_PER_ACCOUNT).max(1) as u32
}
/// Largest JSON-RPC batch sent (our engine's limit; Reth and Geth accept more).
const BATCH: usize = 100;
/// How long a hash of a finalized block is kept for an acceptance read late: well past
/// the JSON-RPC client's timeout.
const SEEN_FOR: Duration = Duration::from_secs(120);
/// Consecutive refusals after which an account is retired from the run.
const RETIRE_AFTER: u32 = 5;

/// What each transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// 1 wei to a fixed address (21,000 gas).
    Transfer,
    /// A token transfer on an ERC-20 contract the run deploys first.
    Erc20,
    /// Half and half.
    Mixed,
}

/// How one run is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub rpc: String,
    pub tps: u64,
    pub duration: Duration,
    pub accounts: u32,
    /// Index of the first sender in the mnemonic.
    pub first_account: u32,
    pub kind: Kind,
    pub mnemonic: String,
    /// How long to wait, after the last send, for the rest to be finalized.
    pub drain: Duration,
    /// Progress on stderr (a bar on a terminal, a line every 5 s otherwise).
    pub progress: bool,
    /// The network's other JSON-RPC endpoints (each execution client): blocks `rpc` does
    /// not have yet are read there, and each is asked for the receipt of a transaction
    /// before it is reported as not finalized.
    pub witnesses: Vec<String>,
    /// The certificate `rpc` must present over HTTPS (pinned: the network's gateway with
    /// `gateway.tls`); none: the URL is plain HTTP.
    pub rpc_cert: Option<std::path::PathBuf>,
}

impl Config {
    /// Refuse what cannot work, before anything is sent.
    pub fn check(&self) -> Result<()> {
        if self.tps == 0 {
            bail!("--tps must be at least 1");
        }
        if self.duration.is_zero() {
            bail!("--duration must be longer than 0 s, e.g. --duration 30s");
        }
        if self.accounts == 0 {
            bail!("--accounts must be at least 1");
        }
        let need = self.tps.div_ceil(MAX_TPS_PER_ACCOUNT);
        if (self.accounts as u64) < need {
            bail!(
            "--tps {} over --accounts {} is more than {MAX_TPS_PER_ACCOUNT} tx/s per account: execution clients hold only a few pending transactions per sender (Reth and Geth: 16), so the rest would be refused; use --accounts {need} or more (and at least as many funded accounts: chain.dev_accounts in the profile)",
            self.tps,
            self.accounts
        );
        }
        Ok(())
    }
}

/// Inclusion latency, seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub rpc: String,
    pub kind: Kind,
    pub chain_id: u64,
    pub accounts: u32,
    pub tps_offered: u64,
    pub duration_s: f64,
    /// Distinct transactions the client accepted.
    pub sent: u64,
    /// Sends attempted, re-sends included.
    pub attempts: u64,
    /// Of `sent`, found in finalized blocks.
    pub included: u64,
    /// Of `sent`, not in a finalized block when the run ended: no client holds a receipt
    /// for it in a finalized block.
    pub pending: u64,
    /// Of `included`, found only by asking every client for its receipt at the end (the
    /// follower missed their block: should be 0).
    pub found_by_receipt: u64,
    /// Of `included`, with a failed receipt (status 0).
    pub reverted: u64,
    /// Refusals by kind (first words of the error).
    pub errors: BTreeMap<String, u64>,
    /// Failures of the path (endpoint unreachable, no client behind the gateway) by kind:
    /// the transactions were sent again, not refused.
    pub retried: BTreeMap<String, u64>,
    /// Endpoints the sender moved to when the one it used could not be reached.
    pub endpoint_switches: u64,
    /// Accounts retired after repeated refusals.
    pub retired: Vec<Address>,
    /// `sent` per second of the send window.
    pub sent_tps: f64,
    /// `included` per second, from the first send to the last inclusion seen.
    pub finalized_tps: f64,
    pub latency_s: Latency,
    /// First and last block holding one of the run's transactions.
    pub first_block: Option<u64>,
    pub last_block: Option<u64>,
    /// Blocks from first to last, and the transactions in them (all senders).
    pub blocks: u64,
    pub block_txs: u64,
    /// The token contract (`erc20` and `mixed`).
    pub token: Option<Address>,
}

impl Summary {
    /// Everything sent was finalized, nothing was refused or reverted.
    pub fn clean(&self) -> bool {
        self.pending == 0 && self.reverted == 0 && self.errors.is_empty() && self.sent > 0
    }

    pub fn print(&self) {
        println!(
            "load: {} × {} tx/s for {:.0} s from {} accounts against {} (chain {})",
            clap::ValueEnum::to_possible_value(&self.kind)
                .map_or_else(String::new, |v| v.get_name().to_string()),
            self.tps_offered,
            self.duration_s,
            self.accounts,
            self.rpc,
            self.chain_id
        );
        println!(
            "  sent {} ({:.1} tx/s; {} attempts), finalized {} ({:.1} tx/s), pending {}, reverted {}",
            self.sent,
            self.sent_tps,
            self.attempts,
            self.included,
            self.finalized_tps,
            self.pending,
            self.reverted
        );
        if self.found_by_receipt > 0 {
            println!(
                "  of the finalized, {} were found only by their receipts at the end (the block follower missed them)",
                self.found_by_receipt
            );
        }
        let l = &self.latency_s;
        println!(
            "  inclusion latency (accepted → seen finalized): p50 {:.2} s, p90 {:.2} s, p99 {:.2} s, max {:.2} s",
            l.p50, l.p90, l.p99, l.max
        );
        if let (Some(a), Some(b)) = (self.first_block, self.last_block) {
            println!(
                "  blocks {a}..={b} ({} blocks, {} transactions in them)",
                self.blocks, self.block_txs
            );
        }
        if let Some(t) = self.token {
            println!("  token contract {t}");
        }
        for (k, n) in &self.retried {
            println!("  retried × {n}: {k}");
        }
        if self.endpoint_switches > 0 {
            println!(
                "  the sender moved to another endpoint {} times (one could not be reached)",
                self.endpoint_switches
            );
        }
        if self.errors.is_empty() {
            println!("  errors: none");
        } else {
            for (k, n) in &self.errors {
                println!("  error × {n}: {k}");
            }
        }
        for a in &self.retired {
            println!("  retired account {a} (refused {RETIRE_AFTER} times in a row)");
        }
    }
}

/// A JSON-RPC client for one endpoint.
#[derive(Clone)]
pub struct Rpc {
    url: String,
    http: reqwest::Client,
}

impl Rpc {
    /// A plain HTTP endpoint.
    pub fn new(url: &str) -> Result<Self> {
        Rpc::pinned(url, None)
    }

    /// An endpoint, over HTTPS trusting exactly `cert` when given (chainctl's gateway).
    pub fn pinned(url: &str, cert: Option<&std::path::Path>) -> Result<Self> {
        let u = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                anyhow!("--rpc {url:?} is not an http(s) URL, e.g. http://127.0.0.1:8545")
            })?;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        match (u.scheme(), cert) {
            ("https", Some(cert)) => {
                let tls = chainctl_common::tls::pinned_client_config(cert)
                    .map_err(|e| anyhow!("--rpc-cert: {e}"))?;
                http = http.use_preconfigured_tls(tls);
            }
            ("https", None) => bail!(
                "--rpc {url}: an HTTPS endpoint needs the certificate it serves (--rpc-cert FILE): \
                 chainctl trusts exactly that one"
            ),
            (_, Some(_)) => bail!("--rpc-cert is for an https:// --rpc, not {url}"),
            _ => {}
        }
        Ok(Rpc {
            url: u.to_string(),
            http: http.build()?,
        })
    }

    async fn post(&self, body: &Value) -> Result<Value, String> {
        let r = self
            .http
            .post(&self.url)
            .json(body)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        let status = r.status();
        let text = r.text().await.map_err(|e| transport(&e))?;
        serde_json::from_str(&text).map_err(|_| {
            format!(
                "HTTP {status}: {}",
                text.chars().take(120).collect::<String>()
            )
        })
    }

    /// One call; a JSON-RPC error becomes `Err(message)`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        let v = self
            .post(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .await?;
        result_of(&v)
    }

    /// A batch; each answer in the order of `calls`.
    pub async fn batch(
        &self,
        calls: &[(&str, Value)],
    ) -> Result<Vec<Result<Value, String>>, String> {
        let body: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, (m, p))| json!({"jsonrpc": "2.0", "id": i, "method": m, "params": p}))
            .collect();
        let v = self.post(&Value::Array(body)).await?;
        let Value::Array(items) = v else {
            // A batch refused as a whole answers with one error object.
            return Err(result_of(&v)
                .err()
                .unwrap_or_else(|| "not a batch answer".into()));
        };
        let mut out: Vec<Result<Value, String>> =
            vec![Err("no answer in the batch".into()); calls.len()];
        for it in items {
            if let Some(i) = it["id"].as_u64().filter(|i| (*i as usize) < calls.len()) {
                out[i as usize] = result_of(&it);
            }
        }
        Ok(out)
    }

    /// Number of the finalized block, 0 when it cannot be read.
    pub async fn finalized(&self) -> u64 {
        self.call("eth_getBlockByNumber", json!(["finalized", false]))
            .await
            .ok()
            .and_then(|b| quantity(&b["number"]))
            .unwrap_or(0)
    }

    pub async fn u64(&self, method: &str, params: Value) -> Result<u64> {
        let v = self
            .call(method, params)
            .await
            .map_err(|e| anyhow!("{method} on {}: {e}", self.url))?;
        quantity(&v).ok_or_else(|| anyhow!("{method} on {}: not a quantity: {v}", self.url))
    }
}

fn transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // Why a connection failed is said only deep in the chain of causes (refused, a TLS
    // handshake refused because the certificate is not the one pinned): name the last.
    if e.is_connect() {
        let mut last: Option<&dyn std::error::Error> = None;
        let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(c) = cause {
            last = Some(c);
            cause = c.source();
        }
        if let Some(c) = last {
            return format!("transport: {kind}: {c}");
        }
    }
    format!("transport: {kind}")
}

fn result_of(v: &Value) -> Result<Value, String> {
    if let Some(e) = v.get("error") {
        return Err(e["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| e.to_string()));
    }
    v.get("result")
        .cloned()
        .ok_or_else(|| "answer without result".into())
}

/// A failure of the path, not of the transaction: the endpoint could not be reached or
/// answered with a server error, the gateway had no execution client to give it to, or
/// the pool had no room for the sender (the chain stalled).
/// The transaction is sent again; its sender is not blamed.
fn transient(msg: &str) -> bool {
    msg.starts_with("transport:")
        || msg.starts_with("HTTP 5")
        || msg.starts_with("no healthy execution client")
        || msg.starts_with("no synced execution client")
        || msg.starts_with("no execution client answered")
        || msg.starts_with("no execution client took the transaction (none answered)")
        || msg.contains("(gateway.timeout)")
        // Back-pressure, not a verdict on the transaction: the sender's slots in the pool
        // are taken while the chain stalls; the same bytes go in once blocks come again.
        || msg.contains("txpool is full")
        || msg.contains("transaction pool is full")
}

/// The first words of an error message, so that errors group by kind.
fn error_kind(msg: &str) -> String {
    if msg.starts_with("transport:") || msg.starts_with("HTTP ") {
        return msg.chars().take(80).collect();
    }
    let head = msg.split(':').next().unwrap_or(msg).trim();
    let head = if head.is_empty() { msg } else { head };
    head.chars().take(80).collect()
}

/// A sender's key for the hot loop: signing with the k256 behind `PrivateKeySigner` was
/// about 60 % of the load generator's CPU (perf), and it shares the CPU it measures.
/// Both sign deterministically (RFC 6979, low s): the same transaction, byte for byte.
pub struct FastKey(secp256k1::SecretKey);

impl FastKey {
    pub fn new(signer: &PrivateKeySigner) -> Result<Self> {
        secp256k1::SecretKey::from_slice(&signer.credential().to_bytes())
            .map(FastKey)
            .map_err(|e| anyhow!("a development key libsecp256k1 refuses: {e}"))
    }

    fn sign_hash(&self, hash: &B256) -> alloy_primitives::Signature {
        let msg = secp256k1::Message::from_digest(hash.0);
        let (id, rs) = secp256k1::SECP256K1
            .sign_ecdsa_recoverable(&msg, &self.0)
            .serialize_compact();
        alloy_primitives::Signature::new(
            U256::from_be_slice(&rs[..32]),
            U256::from_be_slice(&rs[32..]),
            i32::from(id) == 1,
        )
    }
}

/// Everything needed to sign the transaction of (account, nonce).
struct TxPlan {
    chain_id: u64,
    max_fee: u128,
    tip: u128,
    kind: Kind,
    token: Option<Address>,
}

impl TxPlan {
    fn sign(&self, key: &FastKey, account: u32, nonce: u64) -> Result<(B256, String)> {
        let erc20 = match self.kind {
            Kind::Transfer => false,
            Kind::Erc20 => true,
            Kind::Mixed => (account as u64 + nonce) % 2 == 1,
        };
        let (to, value, input, gas) = match (erc20, self.token) {
            (true, Some(t)) => (
                t,
                U256::ZERO,
                token::transfer_call(SINK, U256::from(1)),
                token::TRANSFER_GAS,
            ),
            _ => (SINK, U256::from(1), Bytes::new(), 21_000),
        };
        key.sign(TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit: gas,
            max_fee_per_gas: self.max_fee,
            max_priority_fee_per_gas: self.tip,
            to: TxKind::Call(to),
            value,
            input,
            access_list: Default::default(),
        })
    }
}

impl FastKey {
    /// The signed transaction: its hash and its raw bytes (0x-hex), as
    /// `eth_sendRawTransaction` takes them.
    fn sign(&self, tx: TxEip1559) -> Result<(B256, String)> {
        let sig = self.sign_hash(&tx.signature_hash());
        let env: TxEnvelope = tx.into_signed(sig).into();
        Ok((
            *env.tx_hash(),
            format!("0x{}", hex::encode(env.encoded_2718())),
        ))
    }
}

/// A plain transfer (no data, 21,000 gas, EIP-1559 fees) signed by `signer`: its hash and
/// raw bytes — what the readiness report's canary sends.
pub fn sign_plain_transfer(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: Address,
    value: U256,
    max_fee: u128,
    tip: u128,
) -> Result<(B256, String)> {
    FastKey::new(signer)?.sign(TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
        to: TxKind::Call(to),
        value,
        input: Bytes::new(),
        access_list: Default::default(),
    })
}

/// A signed 1-wei transfer from development account `account` (the documented mnemonic)
/// with `nonce`: its hash and raw bytes (for tests and scripts).
pub fn signed_transfer(chain_id: u64, account: u32, nonce: u64) -> Result<(B256, String)> {
    let signer =
        chainctl_core::network::dev_signers(chainctl_core::network::DEV_MNEMONIC, account, 1)?
            .pop()
            .context("no signer derived")?;
    TxPlan {
        chain_id,
        max_fee: 100_000_000_000,
        tip: 1_000_000_000,
        kind: Kind::Transfer,
        token: None,
    }
    .sign(&FastKey::new(&signer)?, account, nonce)
}

#[derive(Default)]
struct Tracker {
    /// Accepted, not yet seen finalized: hash → accepted at.
    open: HashMap<B256, Instant>,
    /// Transactions of finalized blocks that were not open when their block was read:
    /// hash → (block, when read). One whose acceptance is read later counts then.
    seen: HashMap<B256, (u64, Instant)>,
    /// Accepted after their block was read (hash, block): their receipts are checked at
    /// the end.
    late: Vec<(B256, u64)>,
    found_by_receipt: u64,
    /// Every transaction the client accepted (`sent` is its size).
    accepted: HashSet<B256>,
    attempts: u64,
    included: u64,
    reverted: u64,
    latencies: Vec<f64>,
    errors: BTreeMap<String, u64>,
    retried: BTreeMap<String, u64>,
    endpoint_switches: u64,
    retired: Vec<Address>,
    first_block: Option<u64>,
    last_block: Option<u64>,
    last_inclusion: Option<Instant>,
}

impl Tracker {
    /// An accepted transaction (since `since`) is in finalized block `n`, read at `at`.
    fn include(&mut self, n: u64, at: Instant, since: Instant) {
        self.latencies
            .push(at.saturating_duration_since(since).as_secs_f64());
        self.in_block(n);
        self.last_inclusion = Some(self.last_inclusion.map_or(at, |l| l.max(at)));
    }

    /// One of ours is in finalized block `n`.
    fn in_block(&mut self, n: u64) {
        self.included += 1;
        self.first_block = Some(self.first_block.map_or(n, |f| f.min(n)));
        self.last_block = Some(self.last_block.map_or(n, |l| l.max(n)));
    }

    /// The client accepted `hash` (sent at `sent_at`): followed from now on, or, when its
    /// block was read before this answer, finalized already.
    fn accept(&mut self, hash: B256, sent_at: Instant) {
        if !self.accepted.insert(hash) {
            return;
        }
        match self.seen.remove(&hash) {
            Some((n, at)) => {
                self.include(n, at, sent_at);
                self.late.push((hash, n));
            }
            None => {
                self.open.insert(hash, Instant::now());
            }
        }
    }
}

fn lock(t: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run the load and return its summary.
pub fn run(cfg: Config) -> Result<Summary> {
    cfg.check()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(cfg))
}

pub async fn run_async(cfg: Config) -> Result<Summary> {
    cfg.check()?;
    let rpc = Rpc::pinned(&cfg.rpc, cfg.rpc_cert.as_deref())?;
    let chain_id = rpc.u64("eth_chainId", json!([])).await.with_context(|| {
        format!(
            "no JSON-RPC answer from {}: is the network up (`chainctl status`)?",
            cfg.rpc
        )
    })?;
    let signers =
        chainctl_core::network::dev_signers(&cfg.mnemonic, cfg.first_account, cfg.accounts)
            .context("--mnemonic")?;
    let addrs: Vec<Address> = signers.iter().map(|s| s.address()).collect();

    // Funded? And where does each account's nonce stand?
    let mut nonces = Vec::with_capacity(addrs.len());
    for chunk in addrs.chunks(BATCH / 2) {
        let calls: Vec<(&str, Value)> = chunk
            .iter()
            .flat_map(|a| {
                [
                    ("eth_getBalance", json!([a, "latest"])),
                    ("eth_getTransactionCount", json!([a, "pending"])),
                ]
            })
            .collect();
        let answers = rpc
            .batch(&calls)
            .await
            .map_err(|e| anyhow!("reading the senders' balances from {}: {e}", cfg.rpc))?;
        for (k, a) in chunk.iter().enumerate() {
            let bal = answers[2 * k]
                .as_ref()
                .ok()
                .and_then(|v| v.as_str())
                .and_then(|s| U256::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .unwrap_or_default();
            if bal.is_zero() {
                let i = cfg.first_account as usize + nonces.len();
                bail!(
                    "sender #{i} ({a}) of the mnemonic has no balance on chain {chain_id}: the network funds only its first chain.dev_accounts accounts; lower --accounts or raise chain.dev_accounts in the profile (a new genesis: `chainctl down --purge`, then `up`)"
                );
            }
            let n = answers[2 * k + 1]
                .as_ref()
                .ok()
                .and_then(quantity)
                .ok_or_else(|| anyhow!("eth_getTransactionCount of {a} on {}", cfg.rpc))?;
            nonces.push(n);
        }
    }

    // Fees fixed for the run (a transaction must be the same every time it is signed):
    // far above the base fee, so that a full-block base-fee climb does not price us out.
    let latest = rpc
        .call("eth_getBlockByNumber", json!(["latest", false]))
        .await
        .map_err(|e| anyhow!("eth_getBlockByNumber on {}: {e}", cfg.rpc))?;
    let base = quantity(&latest["baseFeePerGas"]).unwrap_or(1_000_000_000) as u128;
    let tip = 1_000_000_000u128;
    let max_fee = (base * 8).max(100_000_000_000) + tip;

    let mut plan = TxPlan {
        chain_id,
        max_fee,
        tip,
        kind: cfg.kind,
        token: None,
    };
    if cfg.kind != Kind::Transfer {
        let t = deploy_token(&rpc, &signers[0], &addrs, &mut nonces[0], &plan).await?;
        plan.token = Some(t);
    }

    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let finalized = rpc
        .call("eth_getBlockByNumber", json!(["finalized", false]))
        .await
        .map_err(|e| anyhow!("the finalized block from {}: {e}", cfg.rpc))?;
    let start_head = quantity(&finalized["number"]).ok_or_else(|| {
        anyhow!(
            "{} has no finalized block: is a consensus client driving it?",
            cfg.rpc
        )
    })?;
    let stop_watch = Arc::new(tokio::sync::Notify::new());
    // Witnesses of this chain only (a state dir's clients may be of another network
    // than an --rpc given by hand).
    let mut witnesses = Vec::new();
    for w in cfg.witnesses.iter().filter(|w| **w != cfg.rpc) {
        let c = Rpc::new(w)?;
        match c.u64("eth_chainId", json!([])).await {
            Ok(id) if id == chain_id => witnesses.push(c),
            Ok(id) => eprintln!("load: {w} is chain {id}, not {chain_id}: not read"),
            // Down now, perhaps back later: asked all the same.
            Err(_) => witnesses.push(c),
        }
    }
    let watcher = tokio::spawn(watch(
        rpc.clone(),
        witnesses.clone(),
        tracker.clone(),
        start_head,
        stop_watch.clone(),
    ));
    let progress = cfg.progress.then(|| spawn_progress(tracker.clone()));

    let t0 = Instant::now();
    let endpoints: Vec<Rpc> = std::iter::once(rpc.clone())
        .chain(witnesses.iter().cloned())
        .collect();
    send(&cfg, &endpoints, &plan, &signers, &mut nonces, &tracker, t0).await;
    let send_window = t0.elapsed();

    // Drain: wait for the rest to be finalized.
    let deadline = Instant::now() + cfg.drain;
    while Instant::now() < deadline && !lock(&tracker).open.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_watch.notify_one();
    let (blocks, block_txs, read_upto) = watcher.await.unwrap_or((0, 0, start_head));
    if let Some(p) = progress {
        p.abort();
        let _ = p.await;
    }
    // Reverts among those whose block came before their acceptance.
    let late: BTreeMap<u64, Vec<B256>> =
        lock(&tracker)
            .late
            .iter()
            .fold(BTreeMap::new(), |mut m, (h, n)| {
                m.entry(*n).or_insert_with(Vec::new).push(*h);
                m
            });
    for (n, hashes) in late {
        let reverted = count_reverted(&rpc, n, &hashes).await;
        lock(&tracker).reverted += reverted;
    }
    // Nothing is called lost before every client was asked for its receipt.
    let open: Vec<B256> = lock(&tracker).open.keys().copied().collect();
    if !open.is_empty() {
        let clients: Vec<Rpc> = std::iter::once(rpc.clone()).chain(witnesses).collect();
        for (h, n, reverted) in sweep_receipts(&clients, &open, read_upto).await {
            let mut t = lock(&tracker);
            t.open.remove(&h);
            t.in_block(n);
            t.found_by_receipt += 1;
            t.reverted += reverted as u64;
        }
    }

    let mut t = lock(&tracker);
    let mut lat = std::mem::take(&mut t.latencies);
    lat.sort_by(f64::total_cmp);
    let finalized_window = t
        .last_inclusion
        .map(|l| l.duration_since(t0).as_secs_f64())
        .unwrap_or(0.0);
    Ok(Summary {
        rpc: cfg.rpc.clone(),
        kind: cfg.kind,
        chain_id,
        accounts: cfg.accounts,
        tps_offered: cfg.tps,
        duration_s: cfg.duration.as_secs_f64(),
        sent: t.accepted.len() as u64,
        attempts: t.attempts,
        included: t.included,
        pending: t.open.len() as u64,
        found_by_receipt: t.found_by_receipt,
        reverted: t.reverted,
        errors: t.errors.clone(),
        retried: t.retried.clone(),
        endpoint_switches: t.endpoint_switches,
        retired: t.retired.clone(),
        sent_tps: t.accepted.len() as f64 / send_window.as_secs_f64().max(1e-3),
        finalized_tps: if finalized_window > 0.0 {
            t.included as f64 / finalized_window
        } else {
            0.0
        },
        latency_s: Latency {
            p50: pct(&lat, 0.5),
            p90: pct(&lat, 0.9),
            p99: pct(&lat, 0.99),
            max: lat.last().copied().unwrap_or(0.0),
        },
        first_block: t.first_block,
        last_block: t.last_block,
        blocks,
        block_txs,
        token: plan.token,
    })
}

/// Deploy the token, crediting every sender, and wait for its receipt.
async fn deploy_token(
    rpc: &Rpc,
    deployer: &PrivateKeySigner,
    holders: &[Address],
    nonce: &mut u64,
    plan: &TxPlan,
) -> Result<Address> {
    let code = token::init_code(holders);
    let gas = 100_000 + 30_000 * holders.len() as u64 + 16 * code.len() as u64;
    let tx = TxEip1559 {
        chain_id: plan.chain_id,
        nonce: *nonce,
        gas_limit: gas,
        max_fee_per_gas: plan.max_fee,
        max_priority_fee_per_gas: plan.tip,
        to: TxKind::Create,
        value: U256::ZERO,
        input: code,
        access_list: Default::default(),
    };
    let sig = deployer.sign_hash_sync(&tx.signature_hash())?;
    let env: TxEnvelope = tx.into_signed(sig).into();
    let raw = format!("0x{}", hex::encode(env.encoded_2718()));
    rpc.call("eth_sendRawTransaction", json!([raw]))
        .await
        .map_err(|e| anyhow!("deploying the ERC-20 token: {e}"))?;
    *nonce += 1;
    let hash = env.tx_hash();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = rpc.call("eth_getTransactionReceipt", json!([hash])).await {
            if !r.is_null() {
                if r["status"] != json!("0x1") {
                    bail!("the ERC-20 token deployment {hash} failed: {r}");
                }
                return r["contractAddress"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| anyhow!("receipt of {hash} has no contractAddress"));
            }
        }
        if Instant::now() > until {
            bail!("the ERC-20 token deployment {hash} was not included within 60 s: are blocks being produced (`chainctl status`)?");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Batches sent and not yet answered, at most: past it the sender waits for answers
/// (a client that cannot keep up slows the schedule instead of piling up requests).
const MAX_IN_FLIGHT: usize = 64;

/// One batch of signed transactions: (account index, nonce, hash, raw).
type Signed = Vec<(usize, u64, B256, String)>;
/// A sent batch, the client's answer to it, and when it was sent.
type Answered = (Signed, Result<Vec<Result<Value, String>>, String>, Instant);

/// What the sender knows of its accounts beyond their next nonce.
struct Senders {
    addresses: Vec<Address>,
    /// Per account: consecutive refusals, and whether it is retired.
    refusals: Vec<u32>,
    retired: Vec<bool>,
    /// Transactions sent before, whatever their answer, with their first send. A
    /// transaction is signed the same, byte for byte, each time its (account, nonce) is
    /// sent, and only this run signs for its accounts: a "nonce too low" for one sent
    /// before means that send was taken (its answer lost on the way, or given by a client
    /// that had not seen it yet). It is followed like any accepted one: if no finalized
    /// block holds it, it counts as lost. Latency counts from the first send.
    sent_before: HashMap<B256, Instant>,
}

impl Senders {
    fn new(addresses: Vec<Address>) -> Self {
        let n = addresses.len();
        Senders {
            addresses,
            refusals: vec![0; n],
            retired: vec![false; n],
            sent_before: HashMap::new(),
        }
    }

    /// What an answer means for the batch's accounts and nonces.
    fn take(&mut self, (batch, answer, sent_at): Answered, nonces: &mut [u64], t: &mut Tracker) {
        t.attempts += batch.len() as u64;
        for (k, (i, nonce, hash, _)) in batch.iter().enumerate() {
            let r = match &answer {
                Ok(rs) => rs[k].clone(),
                Err(e) => Err(e.clone()),
            };
            let first = *self.sent_before.entry(*hash).or_insert(sent_at);
            // Accepted now, or earlier (a re-send of the same bytes: "already known"
            // while pending, "nonce too low" once included).
            let accepted = match &r {
                Ok(_) => true,
                Err(e) => {
                    e.contains("already known")
                        || t.accepted.contains(hash)
                        || (first < sent_at && e.to_ascii_lowercase().contains("nonce too low"))
                }
            };
            if accepted {
                self.refusals[*i] = 0;
                t.accept(*hash, first);
                continue;
            }
            let e = r.err().unwrap_or_default();
            // Re-sign this nonce next (the same bytes); later nonces already taken wait
            // in the client's queue and answer "already known" when re-sent.
            nonces[*i] = nonces[*i].min(*nonce);
            if transient(&e) {
                *t.retried.entry(error_kind(&e)).or_default() += 1;
                continue;
            }
            *t.errors.entry(error_kind(&e)).or_default() += 1;
            self.refusals[*i] += 1;
            if self.refusals[*i] >= RETIRE_AFTER && !self.retired[*i] {
                self.retired[*i] = true;
                t.retired.push(self.addresses[*i]);
            }
        }
    }
}

/// The sender: every 50 ms, the transactions due by the schedule, signed and sent in
/// batches without waiting for earlier batches' answers (a slow answer must not hold
/// back the schedule); answers are taken in as they come.
async fn send(
    cfg: &Config,
    endpoints: &[Rpc],
    plan: &TxPlan,
    signers: &[PrivateKeySigner],
    nonces: &mut [u64],
    tracker: &Mutex<Tracker>,
    t0: Instant,
) {
    use futures::stream::{FuturesUnordered, StreamExt};
    let keys: Vec<FastKey> = match signers.iter().map(FastKey::new).collect() {
        Ok(k) => k,
        Err(e) => {
            *lock(tracker)
                .errors
                .entry(format!("signing: {e}"))
                .or_default() += 1;
            return;
        }
    };
    let tick = Duration::from_millis(50);
    let mut done = 0u64; // transactions taken off the schedule
    let mut next_account = 0usize;
    let mut senders = Senders::new(signers.iter().map(|s| s.address()).collect());
    let total = (cfg.tps as f64 * cfg.duration.as_secs_f64()).round() as u64;
    let mut ticks = 0u32;
    // The endpoint batches go to: the first (the gateway, or --rpc) unless it could not be
    // reached, then the next; back to the first after a while.
    let route = Mutex::new(Route::default());
    let route = &route;
    let mut in_flight = FuturesUnordered::new();
    let send_batch = |batch: Signed| async move {
        let calls: Vec<(&str, Value)> = batch
            .iter()
            .map(|(_, _, _, raw)| ("eth_sendRawTransaction", json!([raw])))
            .collect();
        let spread = route.lock().unwrap_or_else(|e| e.into_inner()).spread();
        let sent_at = Instant::now();
        let answer = if spread {
            // Every client: one alone may not pass it on (the built-in engine has no
            // transaction gossip; the gateway gives each send to every client).
            let all = futures::future::join_all(endpoints[1..].iter().map(|e| e.batch(&calls)));
            merge_answers(all.await, calls.len())
        } else {
            let a = endpoints[0].batch(&calls).await;
            if matches!(&a, Err(e) if e.starts_with("transport:")) && endpoints.len() > 1 {
                route
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .unreachable();
            }
            a
        };
        (batch, answer, sent_at)
    };
    // Sends that failed on the path (retried) are made up for, so that the offered load
    // is what reaches the network; not past the drain time, should the path never return.
    let make_up_until = t0 + cfg.duration + cfg.drain;
    let goal = || {
        let owed: u64 = lock(tracker).retried.values().sum();
        total
            + if Instant::now() < make_up_until {
                owed
            } else {
                0
            }
    };
    // Until every send is answered: a late path failure is made up for too.
    while done < goal() || !in_flight.is_empty() {
        ticks += 1;
        let due = ((cfg.tps as f64 * t0.elapsed().as_secs_f64()) as u64).min(goal());
        // Catch up after a slow answer, but never more than a second's worth at once.
        let n = due.saturating_sub(done).min(cfg.tps);
        let mut batch: Signed = Vec::with_capacity(BATCH);
        let mut signed = 0;
        while signed < n {
            signed += 1;
            let Some(i) = (0..keys.len())
                .map(|k| (next_account + k) % keys.len())
                .find(|i| !senders.retired[*i])
            else {
                break;
            };
            next_account = (i + 1) % keys.len();
            match plan.sign(&keys[i], cfg.first_account + i as u32, nonces[i]) {
                Ok((h, raw)) => {
                    batch.push((i, nonces[i], h, raw));
                    nonces[i] += 1;
                }
                Err(e) => {
                    *lock(tracker)
                        .errors
                        .entry(format!("signing: {e}"))
                        .or_default() += 1;
                }
            }
            if batch.len() == BATCH {
                while in_flight.len() >= MAX_IN_FLIGHT {
                    if let Some(answer) = in_flight.next().await {
                        senders.take(answer, nonces, &mut lock(tracker));
                    }
                }
                in_flight.push(send_batch(std::mem::take(&mut batch)));
            }
        }
        if !batch.is_empty() {
            in_flight.push(send_batch(batch));
        }
        done += n;
        // Take answers in until the next tick.
        let next = tokio::time::Instant::from_std(t0 + tick * ticks);
        loop {
            tokio::select! {
                Some(answer) = in_flight.next(), if !in_flight.is_empty() => senders.take(answer, nonces, &mut lock(tracker)),
                _ = tokio::time::sleep_until(next) => break,
            }
        }
    }
    while let Some(answer) = in_flight.next().await {
        senders.take(answer, nonces, &mut lock(tracker));
    }
    lock(tracker).endpoint_switches = route.lock().unwrap_or_else(|e| e.into_inner()).switches;
}

/// Where the sender sends: the first endpoint (the gateway, or --rpc), unless it could
/// not be reached a moment ago; then every other one (the network's clients), and the
/// first again after `BACK_AFTER`.
#[derive(Default)]
struct Route {
    spread_since: Option<Instant>,
    switches: u64,
}

impl Route {
    const BACK_AFTER: Duration = Duration::from_secs(5);

    /// Whether batches go to every other endpoint now.
    fn spread(&mut self) -> bool {
        if self
            .spread_since
            .is_some_and(|t| t.elapsed() >= Self::BACK_AFTER)
        {
            self.spread_since = None;
        }
        self.spread_since.is_some()
    }

    /// The first endpoint could not be reached.
    fn unreachable(&mut self) {
        if self.spread_since.is_none() {
            self.spread_since = Some(Instant::now());
            self.switches += 1;
        }
    }
}

/// One answer per call from the answers of several endpoints to the same batch: taken if
/// any took it (or knew it already), else the first refusal, else a path failure.
fn merge_answers(
    answers: Vec<Result<Vec<Result<Value, String>>, String>>,
    n: usize,
) -> Result<Vec<Result<Value, String>>, String> {
    let lists: Vec<&Vec<Result<Value, String>>> =
        answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    if lists.is_empty() {
        return Err(answers
            .into_iter()
            .find_map(Result::err)
            .unwrap_or_else(|| "transport: no endpoint".into()));
    }
    Ok((0..n)
        .map(|k| {
            let each = || lists.iter().filter_map(|l| l.get(k));
            each()
                .find(|r| r.is_ok())
                .or_else(|| each().find(|r| matches!(r, Err(e) if e.contains("already known"))))
                .or_else(|| each().find(|r| matches!(r, Err(e) if !transient(e))))
                .or_else(|| each().next())
                .cloned()
                .unwrap_or_else(|| Err("no answer in the batch".into()))
        })
        .collect())
}

/// The watcher: reads every finalized block after `from`, each once, by number — from
/// `rpc`, else from the first witness that has it; returns the number of blocks and of
/// transactions (all senders) from the first to the last block holding ours, and the
/// last block it read.
async fn watch(
    rpc: Rpc,
    witnesses: Vec<Rpc>,
    tracker: Arc<Mutex<Tracker>>,
    from: u64,
    stop: Arc<tokio::sync::Notify>,
) -> (u64, u64, u64) {
    let mut seen = from;
    let mut per_block: BTreeMap<u64, u64> = BTreeMap::new();
    let mut stopping = false;
    loop {
        // The endpoint's finalized head; another client's while it cannot answer.
        let mut head = rpc.finalized().await;
        for w in &witnesses {
            if head > 0 {
                break;
            }
            head = w.finalized().await;
        }
        let polled_from = seen;
        while seen < head {
            let upto = head.min(seen + 20);
            let calls: Vec<(&str, Value)> = (seen + 1..=upto)
                .map(|n| ("eth_getBlockByNumber", json!([format!("0x{n:x}"), false])))
                .collect();
            let blocks = rpc.batch(&calls).await.unwrap_or_default();
            let mut got = 0;
            for n in seen + 1..=upto {
                let k = (n - seen - 1) as usize;
                // Where the block was read: its receipts are asked there.
                let (b, from) = match blocks.get(k) {
                    Some(Ok(b)) if !b.is_null() => (b.clone(), &rpc),
                    // Finalized on the client that answered the head, not yet on the one
                    // that answered this read (or the read failed): another client.
                    _ => match block_elsewhere(&witnesses, n).await {
                        Some((b, w)) => (b, w),
                        None => break,
                    },
                };
                let now = Instant::now();
                let hashes: Vec<B256> = b["transactions"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|h| h.as_str()?.parse().ok()).collect())
                    .unwrap_or_default();
                per_block.insert(n, hashes.len() as u64);
                let mut ours = Vec::new();
                {
                    let mut t = lock(&tracker);
                    for h in &hashes {
                        match t.open.remove(h) {
                            Some(at) => {
                                t.include(n, now, at);
                                ours.push(*h);
                            }
                            // Not ours, or ours with its acceptance not read yet.
                            None => {
                                t.seen.insert(*h, (n, now));
                            }
                        }
                    }
                }
                if !ours.is_empty() {
                    let reverted = count_reverted(from, n, &ours).await;
                    lock(&tracker).reverted += reverted;
                }
                got += 1;
            }
            if got == 0 {
                break;
            }
            seen += got;
        }
        // A send's answer comes within the client's timeout or never: hashes read
        // longer ago than that cannot become ours any more (pruned when blocks came).
        if seen > polled_from {
            let now = Instant::now();
            lock(&tracker)
                .seen
                .retain(|_, (_, at)| now.duration_since(*at) < SEEN_FOR);
        }
        if stopping {
            break;
        }
        tokio::select! {
            _ = stop.notified() => stopping = true,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    let t = lock(&tracker);
    let (blocks, txs) = match (t.first_block, t.last_block) {
        (Some(a), Some(b)) => (b - a + 1, per_block.range(a..=b).map(|(_, n)| n).sum()),
        _ => (0, 0),
    };
    (blocks, txs, seen)
}

/// Block `n` (hashes only) from the first witness that has it, and that witness.
async fn block_elsewhere(witnesses: &[Rpc], n: u64) -> Option<(Value, &Rpc)> {
    for w in witnesses {
        if let Ok(b) = w
            .call("eth_getBlockByNumber", json!([format!("0x{n:x}"), false]))
            .await
        {
            if !b.is_null() {
                return Some((b, w));
            }
        }
    }
    None
}

/// At the end of a run, what the follower did not see finalized: every client (`rpc`
/// and the witnesses) is asked for each one's receipt; one found in a block the follower
/// had read (at or below `upto`, and at or below that client's finalized head) was
/// missed by the follower and is finalized after all. Returns those found, with whether
/// each reverted; what no client has there stays pending.
async fn sweep_receipts(clients: &[Rpc], open: &[B256], upto: u64) -> Vec<(B256, u64, bool)> {
    let mut found: HashMap<B256, (u64, bool)> = HashMap::new();
    for c in clients {
        let head = c.finalized().await.min(upto);
        let left: Vec<&B256> = open.iter().filter(|h| !found.contains_key(*h)).collect();
        for chunk in left.chunks(BATCH) {
            let calls: Vec<(&str, Value)> = chunk
                .iter()
                .map(|h| ("eth_getTransactionReceipt", json!([h])))
                .collect();
            let Ok(rs) = c.batch(&calls).await else {
                continue;
            };
            for (h, r) in chunk.iter().zip(rs) {
                let Ok(r) = r else { continue };
                match quantity(&r["blockNumber"]) {
                    Some(n) if n <= head => {
                        found.insert(**h, (n, r["status"] == json!("0x0")));
                    }
                    _ => {}
                }
            }
        }
    }
    found.into_iter().map(|(h, (n, rev))| (h, n, rev)).collect()
}

/// How many of `ours` in block `n` have a failed receipt.
async fn count_reverted(rpc: &Rpc, n: u64, ours: &[B256]) -> u64 {
    let receipts = match rpc
        .call("eth_getBlockReceipts", json!([format!("0x{n:x}")]))
        .await
    {
        Ok(Value::Array(r)) => r,
        // Without eth_getBlockReceipts: one receipt at a time.
        _ => {
            let calls: Vec<(&str, Value)> = ours
                .iter()
                .map(|h| ("eth_getTransactionReceipt", json!([h])))
                .collect();
            let mut out = Vec::new();
            for c in calls.chunks(BATCH) {
                if let Ok(rs) = rpc.batch(c).await {
                    out.extend(rs.into_iter().filter_map(Result::ok));
                }
            }
            out
        }
    };
    let ours: std::collections::HashSet<&B256> = ours.iter().collect();
    receipts
        .iter()
        .filter(|r| {
            r["transactionHash"]
                .as_str()
                .and_then(|h| h.parse::<B256>().ok())
                .is_some_and(|h| ours.contains(&h))
                && r["status"] == json!("0x0")
        })
        .count() as u64
}

/// The finalized rate over the last `window` of (when, finalized so far) samples, oldest
/// first: blocks come once a second or slower, so a one-second window reads 0 between
/// blocks however many they finalize.
fn window_rate(samples: &std::collections::VecDeque<(Instant, u64)>) -> f64 {
    match (samples.front(), samples.back()) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) as f64 / (b.0 - a.0).as_secs_f64(),
        _ => 0.0,
    }
}

/// How far back the progress line's rate looks (also how often it prints when stderr is
/// not a terminal).
const PROGRESS_WINDOW: Duration = Duration::from_secs(5);

fn spawn_progress(tracker: Arc<Mutex<Tracker>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tty = std::io::stderr().is_terminal();
        let bar = indicatif::ProgressBar::new_spinner();
        if !tty {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let t0 = Instant::now();
        let mut samples = std::collections::VecDeque::from([(t0, 0u64)]);
        let mut k = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            k += 1;
            let (sent, included, pending, errors, retried) = {
                let t = lock(&tracker);
                (
                    t.accepted.len(),
                    t.included,
                    t.open.len(),
                    t.errors.values().sum::<u64>(),
                    t.retried.values().sum::<u64>(),
                )
            };
            let now = Instant::now();
            samples.push_back((now, included));
            while samples
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > PROGRESS_WINDOW)
            {
                samples.pop_front();
            }
            let rate = window_rate(&samples);
            let line = format!(
                "{:>4.0} s  sent {sent}  finalized {included}  pending {pending}  refused {errors}  retried {retried}  {rate:.0} tx/s finalized (last {} s)",
                t0.elapsed().as_secs_f64(),
                PROGRESS_WINDOW.as_secs()
            );
            if tty {
                bar.set_message(line);
                bar.tick();
            } else if k.is_multiple_of(PROGRESS_WINDOW.as_secs()) {
                eprintln!("{line}");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_rate_spans_the_window_not_the_last_second() {
        let t = Instant::now();
        let s = |v: &[(u64, u64)]| -> std::collections::VecDeque<(Instant, u64)> {
            v.iter()
                .map(|(ms, n)| (t + Duration::from_millis(*ms), *n))
                .collect()
        };
        // 1,200 finalized in two blocks within 5 s, none in the last second: 240 tx/s.
        let w = s(&[
            (0, 0),
            (1000, 600),
            (2000, 600),
            (3000, 1200),
            (4000, 1200),
            (5000, 1200),
        ]);
        assert_eq!(window_rate(&w), 240.0);
        assert_eq!(window_rate(&s(&[(0, 5)])), 0.0);
    }

    #[test]
    fn path_failures_are_retried_and_refusals_are_not() {
        for e in [
            "transport: cannot connect",
            "transport: timed out",
            "HTTP 502 Bad Gateway: <html>",
            "no healthy execution client: val-0-el-0 is down",
            "no synced execution client: none at the head",
            "no execution client answered: val-0-el-0: connection refused",
            "no execution client took the transaction (none answered)",
            "val-0-el-1 did not answer within 10s (gateway.timeout)",
        ] {
            assert!(transient(e), "{e}");
        }
        assert!(transient(
            "txpool is full for this sender (64 pending transactions)"
        ));
        for e in [
            "nonce too low",
            "already known",
            "insufficient funds for gas * price + value",
            "replacement transaction underpriced",
            "HTTP 400: bad request",
        ] {
            assert!(!transient(e), "{e}");
        }
    }

    #[test]
    fn the_sender_spreads_while_its_endpoint_is_unreachable_and_comes_back() {
        let mut r = Route::default();
        assert!(!r.spread());
        r.unreachable();
        assert!(r.spread());
        // Late answers from the first endpoint count once.
        r.unreachable();
        assert_eq!(r.switches, 1);
        r.spread_since = Some(Instant::now() - Route::BACK_AFTER);
        assert!(!r.spread());
    }

    #[test]
    fn spread_answers_take_the_best_of_every_client() {
        let ok = |v: &str| Ok::<Value, String>(json!(v));
        let err = |e: &str| Err::<Value, String>(e.to_string());
        let a = Ok(vec![
            ok("0x1"),
            err("transport: cannot connect"),
            err("nonce too low"),
            err("transport: timed out"),
        ]);
        let b = Ok(vec![
            err("already known"),
            err("already known"),
            err("transport: timed out"),
            err("transport: timed out"),
        ]);
        let down = Err("transport: cannot connect".to_string());
        let m = merge_answers(vec![a, down.clone(), b], 4).unwrap();
        assert_eq!(m[0], ok("0x1"));
        assert_eq!(m[1], err("already known"));
        assert_eq!(m[2], err("nonce too low"));
        assert_eq!(m[3], err("transport: timed out"));
        assert_eq!(
            merge_answers(vec![down.clone(), down], 4).unwrap_err(),
            "transport: cannot connect"
        );
    }

    #[test]
    fn error_kinds_group_messages() {
        assert_eq!(
            error_kind("nonce too low: next nonce 5, transaction nonce 3"),
            "nonce too low"
        );
        assert_eq!(
            error_kind("transport: cannot connect"),
            "transport: cannot connect"
        );
        assert_eq!(error_kind(""), "");
    }

    #[test]
    fn libsecp256k1_signs_what_the_alloy_signer_signs() {
        use alloy_consensus::transaction::SignerRecoverable;
        let signers =
            chainctl_core::network::dev_signers(chainctl_core::network::DEV_MNEMONIC, 0, 3)
                .unwrap();
        for (n, signer) in signers.iter().enumerate() {
            let key = FastKey::new(signer).unwrap();
            let hash = alloy_primitives::keccak256(format!("message {n}"));
            let fast = key.sign_hash(&hash);
            assert_eq!(fast, signer.sign_hash_sync(&hash).unwrap(), "account {n}");
            assert_eq!(
                fast.recover_address_from_prehash(&hash).unwrap(),
                signer.address()
            );
        }
        // And a whole transaction: the same bytes, recovering to the sender.
        let plan = TxPlan {
            chain_id: 1337,
            max_fee: 100_000_000_000,
            tip: 1_000_000_000,
            kind: Kind::Transfer,
            token: None,
        };
        let (hash, raw) = plan
            .sign(&FastKey::new(&signers[1]).unwrap(), 1, 5)
            .unwrap();
        let bytes = hex::decode(raw.trim_start_matches("0x")).unwrap();
        let tx =
            <TxEnvelope as alloy_eips::eip2718::Decodable2718>::decode_2718_exact(&bytes).unwrap();
        assert_eq!(*tx.tx_hash(), hash);
        assert_eq!(tx.recover_signer().unwrap(), signers[1].address());
    }

    #[test]
    fn a_resent_transaction_answered_nonce_too_low_was_taken_and_a_first_send_is_refused() {
        let mut s = Senders::new(vec![Address::repeat_byte(1), Address::repeat_byte(2)]);
        let mut t = Tracker::default();
        let mut nonces = vec![7u64, 3];
        let h = |n: u8| B256::repeat_byte(n);
        let one = |i: usize, nonce: u64, hash: B256, answer: Result<Value, String>| {
            (
                vec![(i, nonce, hash, String::new())],
                Ok(vec![answer]),
                Instant::now(),
            )
        };
        // Nonce 5 of account 0 fails on the path; nonce 6 is taken meanwhile (which
        // reset a per-account "uncertain" flag before); nonce 5 re-sent: "nonce too low".
        let path: Answered = (
            vec![(0, 5, h(5), String::new())],
            Err("transport: request failed".into()),
            Instant::now(),
        );
        s.take(path, &mut nonces, &mut t);
        assert_eq!(nonces[0], 5, "the failed nonce is sent again");
        s.take(one(0, 6, h(6), Ok(json!("0x06"))), &mut nonces, &mut t);
        std::thread::sleep(Duration::from_millis(2));
        s.take(
            one(
                0,
                5,
                h(5),
                Err("nonce too low: next nonce 7, tx nonce 5".into()),
            ),
            &mut nonces,
            &mut t,
        );
        assert!(t.accepted.contains(&h(5)), "followed as accepted");
        assert!(t.errors.is_empty(), "not a refusal: {:?}", t.errors);
        assert_eq!(t.retried.values().sum::<u64>(), 1);
        // Account 1's first send of nonce 3 answered "nonce too low": someone else moved
        // its nonce; a refusal, and five in a row retire the account.
        for k in 0..RETIRE_AFTER as u8 {
            s.take(
                one(
                    1,
                    3,
                    h(100 + k),
                    Err("nonce too low: next nonce 9, tx nonce 3".into()),
                ),
                &mut nonces,
                &mut t,
            );
        }
        assert!(!t.accepted.contains(&h(100)));
        assert_eq!(t.errors["nonce too low"], RETIRE_AFTER as u64);
        assert_eq!(t.retired, vec![Address::repeat_byte(2)]);
        assert!(s.retired[1] && !s.retired[0]);
    }

    #[test]
    fn a_transaction_is_a_function_of_sender_and_nonce() {
        let s = chainctl_core::network::dev_signers(chainctl_core::network::DEV_MNEMONIC, 0, 2)
            .unwrap();
        let plan = TxPlan {
            chain_id: 1337,
            max_fee: 100_000_000_000,
            tip: 1_000_000_000,
            kind: Kind::Mixed,
            token: Some(Address::repeat_byte(7)),
        };
        let k: Vec<FastKey> = s.iter().map(|s| FastKey::new(s).unwrap()).collect();
        let a = plan.sign(&k[0], 0, 3).unwrap();
        assert_eq!(a, plan.sign(&k[0], 0, 3).unwrap());
        assert_ne!(a.0, plan.sign(&k[0], 0, 4).unwrap().0);
        assert_ne!(a.0, plan.sign(&k[1], 1, 3).unwrap().0);
    }
}
