//! The canary transaction: one 0-value transfer to itself, signed by chainctl, sent
//! through the gateway, followed into a finalized block and then to its receipt on every
//! execution client. It is the one check that proves the network takes, includes,
//! finalizes and agrees on a transaction now — not that its parts answer.
//!
//! [`send`] does the I/O and records each step as it happened; where it stops is kept,
//! never turned into a verdict here (that is [`crate::checks`]' job).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alloy_primitives::U256;
use alloy_signer_local::PrivateKeySigner;
use serde_json::{json, Value};

/// The receipt fields every execution client must agree on (consensus data and what
/// follows from it; not the client's own formatting).
pub const RECEIPT_FIELDS: [&str; 11] = [
    "status",
    "blockHash",
    "blockNumber",
    "transactionIndex",
    "gasUsed",
    "cumulativeGasUsed",
    "effectiveGasPrice",
    "logsBloom",
    "logs",
    "from",
    "to",
];

/// What the canary did, step by step.
#[derive(Debug, Clone, Default)]
pub struct Canary {
    /// Where the key came from.
    pub key: String,
    pub from: String,
    /// Where it was sent: the gateway, or the first execution client without one.
    pub via: String,
    pub nonce: Option<u64>,
    pub hash: Option<String>,
    /// Its finalized block: number and hash.
    pub block: Option<(u64, String)>,
    /// From the send to the receipt through `via`, and to its block being finalized.
    pub included_after: Option<Duration>,
    pub finalized_after: Option<Duration>,
    pub gas_used: Option<u64>,
    pub effective_gas_price: Option<u128>,
    /// Each execution client's receipt (the [`RECEIPT_FIELDS`]), or why it gave none.
    pub receipts: Vec<(String, Result<Value, String>)>,
    /// Where it stopped before the receipts, when it did.
    pub stopped: Option<String>,
    /// When the last step was measured (ms since the epoch).
    pub measured_at_ms: u64,
}

impl Canary {
    /// What it cost its account: gas used × effective gas price (the value is 0).
    pub fn cost_wei(&self) -> Option<u128> {
        Some(u128::from(self.gas_used?) * self.effective_gas_price?)
    }
}

/// The canary's key: a key file from the profile, else the last development account.
pub fn key(
    profile: &chainctl_core::profile::Profile,
) -> Result<(PrivateKeySigner, String), String> {
    if let Some(path) = &profile.report.canary_key {
        let signer = chainctl_core::network::key_file_signer(path)?;
        return Ok((signer, format!("report.canary_key {}", path.display())));
    }
    match profile.chain.dev_accounts {
        0 => Err("no funded key: the profile has no development accounts (`chain.dev_accounts: 0`) and no `report.canary_key`; give the report a key file whose account holds a little ETH for gas".into()),
        n => {
            let i = n - 1;
            let signer = chainctl_core::network::dev_signers(chainctl_core::network::DEV_MNEMONIC, i, 1)
                .map_err(|e| format!("deriving development account {i}: {e:#}"))?
                .pop()
                .ok_or("no development account derived")?;
            Ok((signer, format!("development account {i} (chain.dev_accounts)")))
        }
    }
}

type Rpc<'a> = &'a (dyn Fn(SocketAddr, &Value) -> Result<Value, String> + Sync);

/// One call's result, or the client's error as text.
fn call(rpc: Rpc, addr: SocketAddr, method: &str, params: Value) -> Result<Value, String> {
    let v = rpc(
        addr,
        &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    )?;
    match v.get("error") {
        Some(e) => Err(e["message"]
            .as_str()
            .map_or_else(|| e.to_string(), str::to_string)),
        None => Ok(v["result"].clone()),
    }
}

/// A hex quantity as u128 (balances outgrow u64).
fn quantity(v: &Value) -> Option<u128> {
    let s = v.as_str()?.strip_prefix("0x")?;
    u128::from_str_radix(s, 16).ok()
}

/// Sends the canary through `via` and follows it: included within `patience`, its block
/// finalized within as long again, then a receipt from each of `els` (each given as long
/// again to reach it).
pub fn send(
    rpc: Rpc,
    signer: &PrivateKeySigner,
    key: String,
    chain_id: u64,
    via: (String, SocketAddr),
    els: &[(String, SocketAddr)],
    patience: Duration,
) -> Canary {
    let from = signer.address();
    let mut c = Canary {
        key,
        from: format!("{from}"),
        via: via.0.clone(),
        ..Default::default()
    };
    let addr = via.1;
    let result = follow(rpc, signer, chain_id, addr, els, patience, &mut c);
    if let Err(stopped) = result {
        c.stopped = Some(stopped);
    }
    c.measured_at_ms = chainctl_common::time::now_ms();
    c
}

fn follow(
    rpc: Rpc,
    signer: &PrivateKeySigner,
    chain_id: u64,
    addr: SocketAddr,
    els: &[(String, SocketAddr)],
    patience: Duration,
    c: &mut Canary,
) -> Result<(), String> {
    let from = signer.address();
    let tip: u128 = 1_000_000_000;
    let base = call(rpc, addr, "eth_getBlockByNumber", json!(["latest", false]))
        .map_err(|e| format!("reading the latest block through {}: {e}", c.via))?;
    let base_fee = quantity(&base["baseFeePerGas"]).unwrap_or(0);
    let max_fee = 2 * base_fee + tip;
    let balance = call(
        rpc,
        addr,
        "eth_getBalance",
        json!([format!("{from}"), "latest"]),
    )
    .map_err(|e| format!("reading the balance of {from}: {e}"))?;
    let balance = quantity(&balance).unwrap_or(0);
    if balance < 21_000 * max_fee {
        return Err(format!(
            "not sent: account {from} ({}) holds {balance} wei, less than the canary's gas (21000 × {max_fee} wei): fund it",
            c.key
        ));
    }
    // The account may be in use (a load run): a nonce taken under our feet is read
    // again, a few times, a second apart.
    let mut sent = None;
    let mut last_refusal = String::new();
    for _ in 0..3 {
        let nonce = call(
            rpc,
            addr,
            "eth_getTransactionCount",
            json!([format!("{from}"), "pending"]),
        )
        .map_err(|e| format!("reading the nonce of {from}: {e}"))?;
        let nonce = quantity(&nonce).ok_or_else(|| format!("nonce of {from}: {nonce}"))? as u64;
        let (hash, raw) = chainctl_load::sign_plain_transfer(
            signer,
            chain_id,
            nonce,
            from,
            U256::ZERO,
            max_fee,
            tip,
        )
        .map_err(|e| format!("signing: {e:#}"))?;
        let t = Instant::now();
        match call(rpc, addr, "eth_sendRawTransaction", json!([raw])) {
            Ok(_) => {
                c.nonce = Some(nonce);
                c.hash = Some(format!("{hash}"));
                sent = Some((hash, t));
                break;
            }
            Err(e) if is_nonce_race(&e) => {
                // Its pending transactions are in the pool, not yet in a block.
                last_refusal = e;
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(format!("refused by {}: {e}", c.via)),
        }
    }
    let (hash, sent_at) = sent.ok_or_else(|| {
        format!(
            "refused by {} three times over its nonce: {last_refusal}",
            c.via
        )
    })?;
    let hash = format!("{hash}");
    // Included: its receipt through the endpoint it was sent to.
    let receipt = poll(patience, || {
        call(rpc, addr, "eth_getTransactionReceipt", json!([hash]))
            .ok()
            .filter(|r| !r.is_null())
    })
    .ok_or_else(|| {
        format!(
            "taken by {} but not included within {} ({hash})",
            c.via,
            humantime::format_duration(patience)
        )
    })?;
    c.included_after = Some(sent_at.elapsed());
    let number = quantity(&receipt["blockNumber"]).unwrap_or(0) as u64;
    let block_hash = receipt["blockHash"].as_str().unwrap_or("").to_string();
    c.block = Some((number, block_hash));
    c.gas_used = quantity(&receipt["gasUsed"]).map(|g| g as u64);
    c.effective_gas_price = quantity(&receipt["effectiveGasPrice"]);
    // Finalized.
    poll(patience, || {
        call(
            rpc,
            addr,
            "eth_getBlockByNumber",
            json!(["finalized", false]),
        )
        .ok()
        .and_then(|b| quantity(&b["number"]))
        .filter(|f| *f as u64 >= number)
    })
    .ok_or_else(|| {
        format!(
            "included in block {number} but that block was not finalized within {}",
            humantime::format_duration(patience)
        )
    })?;
    c.finalized_after = Some(sent_at.elapsed());
    // Every execution client's receipt, each given the same patience to reach it.
    c.receipts = std::thread::scope(|s| {
        let handles: Vec<_> = els
            .iter()
            .map(|(name, a)| {
                let hash = &hash;
                s.spawn(move || {
                    let mut last = String::from("no receipt");
                    let got = poll(patience, || {
                        match call(rpc, *a, "eth_getTransactionReceipt", json!([hash])) {
                            Ok(r) if !r.is_null() => Some(r),
                            Ok(_) => {
                                last = "no receipt (it does not hold the transaction)".into();
                                None
                            }
                            Err(e) => {
                                last = e;
                                None
                            }
                        }
                    });
                    let r = got.map(|r| consensus_fields(&r)).ok_or(format!(
                        "{last} within {} of the block's finalization",
                        humantime::format_duration(patience)
                    ));
                    (name.clone(), r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a receipt thread panicked"))
            .collect()
    });
    Ok(())
}

/// Refusals that mean another sender took the nonce we read.
fn is_nonce_race(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    e.contains("nonce too low") || e.contains("already known") || e.contains("underpriced")
}

/// The fields clients must agree on, lower-cased hex (clients differ in case).
pub fn consensus_fields(receipt: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for f in RECEIPT_FIELDS {
        let v = &receipt[f];
        let v = match v {
            Value::String(s) => Value::String(s.to_ascii_lowercase()),
            other => other.clone(),
        };
        out.insert(f.to_string(), v);
    }
    Value::Object(out)
}

/// Calls `f` every 200 ms until it gives something or `limit` passed.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_compare_on_consensus_fields_whatever_the_case() {
        let a = json!({"status": "0x1", "blockHash": "0xABcd", "gasUsed": "0x5208", "extra": 1});
        let b = json!({"status": "0x1", "blockHash": "0xabcd", "gasUsed": "0x5208"});
        assert_eq!(consensus_fields(&a), consensus_fields(&b));
        let c = json!({"status": "0x1", "blockHash": "0xabcd", "gasUsed": "0x5209"});
        assert_ne!(consensus_fields(&a), consensus_fields(&c));
    }

    #[test]
    fn a_nonce_taken_by_another_sender_is_read_again_other_refusals_stop() {
        assert!(is_nonce_race("nonce too low: next nonce 5, tx nonce 4"));
        assert!(is_nonce_race("already known"));
        assert!(is_nonce_race("replacement transaction underpriced"));
        assert!(!is_nonce_race("insufficient funds for gas * price + value"));
        assert!(!is_nonce_race("method not allowed"));
    }
}
