//! JSON-RPC 2.0 framing and the `eth_`, `net_` and `web3_` methods.

use std::sync::Arc;

use alloy_consensus::{transaction::Recovered, ReceiptEnvelope, Transaction};
use alloy_eips::BlockNumberOrTag;
use alloy_primitives::{Address, Bytes, B256, U256, U64};
use alloy_rpc_types_eth::{BlockId, TransactionRequest};
use serde_json::{json, Value};

use super::chain::Chain;
use super::engine::Engine;
use super::exec::{gas_used_by, next_base_fee, ExecutedBlock};
use super::pool::Rules;
use super::state::WorldState;
use super::wire::{rpc_log, RpcError};

/// Largest batch accepted.
pub const MAX_BATCH: usize = 100;

/// Handle a request body (single call or batch). `None`: nothing to answer (notifications only).
pub fn handle_body(
    body: &[u8],
    call: &dyn Fn(&str, Value) -> Result<Value, RpcError>,
) -> Option<Value> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Some(response(
                Value::Null,
                Err(RpcError::parse(format!("parse error: {e}"))),
            ))
        }
    };
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                return Some(response(
                    Value::Null,
                    Err(RpcError::invalid_request("empty batch")),
                ));
            }
            if items.len() > MAX_BATCH {
                return Some(response(
                    Value::Null,
                    Err(RpcError::invalid_request(format!(
                        "batch of {} calls, at most {MAX_BATCH}",
                        items.len()
                    ))),
                ));
            }
            let out: Vec<Value> = items
                .into_iter()
                .filter_map(|i| handle_one(i, call))
                .collect();
            if out.is_empty() {
                None
            } else {
                Some(Value::Array(out))
            }
        }
        other => handle_one(other, call),
    }
}

fn handle_one(v: Value, call: &dyn Fn(&str, Value) -> Result<Value, RpcError>) -> Option<Value> {
    let Value::Object(mut o) = v else {
        return Some(response(
            Value::Null,
            Err(RpcError::invalid_request("a call must be a JSON object")),
        ));
    };
    let id = o.remove("id");
    let is_notification = id.is_none();
    let id = id.unwrap_or(Value::Null);
    if o.get("jsonrpc").and_then(|v| v.as_str()) != Some("2.0") {
        return Some(response(
            id,
            Err(RpcError::invalid_request("jsonrpc must be \"2.0\"")),
        ));
    }
    let Some(method) = o.get("method").and_then(|m| m.as_str()).map(str::to_string) else {
        return Some(response(
            id,
            Err(RpcError::invalid_request("method must be a string")),
        ));
    };
    let params = match o.remove("params") {
        None | Some(Value::Null) => Value::Array(vec![]),
        Some(p @ Value::Array(_)) => p,
        Some(_) => {
            return Some(response(
                id,
                Err(RpcError::invalid_params("params must be an array")),
            ))
        }
    };
    let result = call(&method, params);
    if is_notification {
        return None;
    }
    Some(response(id, result))
}

fn response(id: Value, r: Result<Value, RpcError>) -> Value {
    match r {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e.to_json()}),
    }
}

fn params<T: serde::de::DeserializeOwned>(p: Value) -> Result<T, RpcError> {
    serde_json::from_value(p).map_err(|e| RpcError::invalid_params(e.to_string()))
}

/// Parameters with optional trailing elements (`[address]` or `[address, block]`).
fn params_opt<A: serde::de::DeserializeOwned, B: serde::de::DeserializeOwned>(
    p: Value,
) -> Result<(A, Option<B>), RpcError> {
    let mut arr = match p {
        Value::Array(a) => a,
        _ => return Err(RpcError::invalid_params("params must be an array")),
    };
    if arr.is_empty() || arr.len() > 2 {
        return Err(RpcError::invalid_params(format!(
            "expected 1 or 2 params, got {}",
            arr.len()
        )));
    }
    let b = if arr.len() == 2 {
        Some(
            serde_json::from_value(arr.pop().expect("2"))
                .map_err(|e| RpcError::invalid_params(e.to_string()))?,
        )
    } else {
        None
    };
    let a = serde_json::from_value(arr.pop().expect("1"))
        .map_err(|e| RpcError::invalid_params(e.to_string()))?;
    Ok((a, b))
}

/// The optional parameter at `index` (removed with everything after it; null is absent).
fn optional_param<T: serde::de::DeserializeOwned>(
    arr: &mut Vec<Value>,
    index: usize,
    what: &str,
) -> Result<Option<T>, RpcError> {
    if arr.len() <= index {
        return Ok(None);
    }
    let v = arr.remove(index);
    arr.truncate(index);
    if v.is_null() {
        return Ok(None);
    }
    serde_json::from_value(v)
        .map(Some)
        .map_err(|e| RpcError::invalid_params(format!("{what} (param {}): {e}", index + 1)))
}

fn resolve(chain: &Chain, id: Option<BlockId>) -> Result<Arc<ExecutedBlock>, RpcError> {
    let id = id.unwrap_or(BlockId::Number(BlockNumberOrTag::Latest));
    let b = match id {
        BlockId::Hash(h) => chain.block(&h.block_hash),
        BlockId::Number(n) => match n {
            BlockNumberOrTag::Latest | BlockNumberOrTag::Pending => Some(chain.head().clone()),
            BlockNumberOrTag::Safe => Some(chain.safe().clone()),
            BlockNumberOrTag::Finalized => Some(chain.finalized().clone()),
            BlockNumberOrTag::Earliest => chain.canonical(0),
            BlockNumberOrTag::Number(n) => chain.canonical(n),
        },
    };
    b.ok_or_else(|| RpcError::server("header not found"))
}

/// The fee oracle's window: the newest canonical blocks looked at.
pub const ORACLE_BLOCKS: u64 = 20;
/// Tips sampled per block: its lowest ones.
pub const ORACLE_SAMPLES: usize = 3;
/// The percentile of the samples suggested.
pub const ORACLE_PERCENTILE: usize = 60;
/// Suggested when the window holds no transaction: 1 gwei.
pub const ORACLE_DEFAULT: u128 = 1_000_000_000;
/// The suggestion never exceeds 500 gwei.
pub const ORACLE_MAX: u128 = 500_000_000_000;

/// The priority fee to suggest, as Geth's and Reth's oracles compute it: the lowest
/// [`ORACLE_SAMPLES`] effective tips of each of the last [`ORACLE_BLOCKS`] blocks
/// (transactions of the block's own fee recipient and tips under 2 wei left out), then the
/// [`ORACLE_PERCENTILE`]th percentile of all; [`ORACLE_DEFAULT`] when there is none.
pub fn suggested_tip(chain: &Chain) -> u128 {
    let head = chain.head().number();
    let mut samples = Vec::new();
    for n in (head.saturating_sub(ORACLE_BLOCKS - 1)..=head).rev() {
        let Some(b) = chain.canonical(n) else {
            continue;
        };
        let base = b.header().base_fee_per_gas;
        let mut tips: Vec<u128> = b
            .block
            .body
            .transactions
            .iter()
            .zip(&b.senders)
            .filter(|(_, s)| **s != b.header().beneficiary)
            .filter_map(|(t, _)| t.effective_tip_per_gas(base.unwrap_or_default()))
            .filter(|t| *t >= 2)
            .collect();
        tips.sort_unstable();
        samples.extend(tips.into_iter().take(ORACLE_SAMPLES));
    }
    if samples.is_empty() {
        return ORACLE_DEFAULT;
    }
    samples.sort_unstable();
    samples[(samples.len() - 1) * ORACLE_PERCENTILE / 100].min(ORACLE_MAX)
}

/// A block's post-state, or the error a pruned node gives for an old block.
pub fn state_of<'a>(chain: &Chain, b: &'a ExecutedBlock) -> Result<&'a WorldState, RpcError> {
    b.state.as_ref().ok_or_else(|| {
        RpcError::server(format!(
            "historical state of block {} is not available: this engine keeps the state of blocks from {} on",
            b.number(),
            chain.oldest_state()
        ))
    })
}

fn rpc_tx(b: &ExecutedBlock, i: usize) -> Value {
    let tx = &b.block.body.transactions[i];
    let base = b.header().base_fee_per_gas.unwrap_or_default();
    let t = alloy_rpc_types_eth::Transaction {
        inner: Recovered::new_unchecked(tx.clone(), b.senders[i]),
        block_hash: Some(b.hash),
        block_number: Some(b.number()),
        transaction_index: Some(i as u64),
        effective_gas_price: Some(tx.effective_gas_price(Some(base))),
        block_timestamp: Some(b.header().timestamp),
    };
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// A block's header as `eth_getBlockBy*` and `newHeads` return it.
pub fn rpc_header(b: &ExecutedBlock) -> Value {
    let size = alloy_rlp::Encodable::length(&b.block);
    let header = alloy_rpc_types_eth::Header {
        hash: b.hash,
        inner: b.header().clone(),
        total_difficulty: Some(U256::ZERO),
        size: Some(U256::from(size)),
    };
    serde_json::to_value(&header).unwrap_or(Value::Null)
}

fn rpc_block(b: &ExecutedBlock, full: bool) -> Value {
    let mut v = rpc_header(b);
    let txs: Vec<Value> = if full {
        (0..b.block.body.transactions.len())
            .map(|i| rpc_tx(b, i))
            .collect()
    } else {
        b.block
            .body
            .transactions
            .iter()
            .map(|t| json!(t.tx_hash()))
            .collect()
    };
    if let Value::Object(o) = &mut v {
        o.insert("transactions".into(), Value::Array(txs));
        o.insert("uncles".into(), json!([]));
        if let Some(w) = &b.block.body.withdrawals {
            o.insert(
                "withdrawals".into(),
                serde_json::to_value(w).unwrap_or(Value::Null),
            );
        }
    }
    v
}

/// The receipt of transaction `i`; `first_log` is the block-wide index of its first log.
fn rpc_receipt(b: &ExecutedBlock, i: usize, first_log: u64, blob_gas_price: Option<u128>) -> Value {
    let base = b.header().base_fee_per_gas.unwrap_or_default();
    let tx = &b.block.body.transactions[i];
    let r = &b.receipts[i];
    let logs: Vec<_> = r
        .logs()
        .iter()
        .enumerate()
        .map(|(n, l)| rpc_log(b, i, first_log + n as u64, l))
        .collect();
    let receipt = alloy_rpc_types_eth::TransactionReceipt {
        inner: map_receipt_logs(r, logs),
        transaction_hash: *tx.tx_hash(),
        transaction_index: Some(i as u64),
        block_hash: Some(b.hash),
        block_number: Some(b.number()),
        gas_used: gas_used_by(&b.receipts, i),
        effective_gas_price: tx.effective_gas_price(Some(base)),
        blob_gas_used: tx.blob_gas_used(),
        blob_gas_price: tx.blob_gas_used().and(blob_gas_price),
        from: b.senders[i],
        to: tx.to(),
        contract_address: tx.is_create().then(|| b.senders[i].create(tx.nonce())),
    };
    serde_json::to_value(receipt).unwrap_or(Value::Null)
}

fn blob_gas_price(chain: &Chain, b: &ExecutedBlock) -> Option<u128> {
    let params = chain.spec.blob_params(b.header().timestamp)?;
    Some(params.calc_blob_fee(b.header().excess_blob_gas?))
}

fn rpc_receipts(chain: &Chain, b: &ExecutedBlock) -> Vec<Value> {
    let price = blob_gas_price(chain, b);
    let mut first_log = 0u64;
    (0..b.receipts.len())
        .map(|i| {
            let v = rpc_receipt(b, i, first_log, price);
            first_log += b.receipts[i].logs().len() as u64;
            v
        })
        .collect()
}

fn map_receipt_logs(
    r: &ReceiptEnvelope,
    logs: Vec<alloy_rpc_types_eth::Log>,
) -> ReceiptEnvelope<alloy_rpc_types_eth::Log> {
    let mut logs = logs.into_iter();
    r.clone()
        .map_logs(|_| logs.next().expect("one rpc log per log"))
}

impl Engine {
    /// A raw transaction into the pool: decoded, its signer recovered and a blob sidecar
    /// checked (KZG) holding no lock — newPayload and forkchoiceUpdated wait for the
    /// chain's — then checked against the head and added.
    ///
    /// `replay`: a transaction put back from the pool's journal. Its blob proofs were
    /// verified when it came (see `blobs::Proofs::Trust`), and the pool may have held it
    /// while its fee cap was below the base fee (it waits for the fee to fall), so neither
    /// is checked again.
    pub fn submit_raw(&self, raw: &[u8], replay: bool) -> Result<alloy_primitives::B256, String> {
        // A transaction in its canonical form hashes to its bytes: one the pool holds
        // already is answered before the costly decoding and signature recovery. Peers
        // give a restarted engine their whole pools (`server::relay_loop`), mostly what
        // it holds already; a journal replays what the chain has since included.
        if raw.first() != Some(&0x03) {
            let h = alloy_primitives::keccak256(raw);
            if crate::engine_lock(&self.pool).get(&h).is_some() {
                return Err(format!("already known: {h}"));
            }
            if let Some((block, _)) = self.chain().tx_location(&h) {
                return Err(format!(
                    "nonce too low: transaction {h} is in block {block}"
                ));
            }
        }
        let d = super::blobs::decode_raw(raw)?;
        let sidecar = match d.sidecar {
            None => None,
            Some(s) => {
                let (params, osaka) = {
                    let chain = self.chain();
                    let ts = chain.head().header().timestamp + 1;
                    (chain.spec.blob_params(ts), chain.spec.osaka(ts))
                };
                let proofs = if replay {
                    super::blobs::Proofs::Trust
                } else {
                    super::blobs::Proofs::Verify
                };
                Some(super::blobs::admit(&d.tx, s, params, osaka, proofs)?)
            }
        };
        let chain = self.chain();
        let mut rules = Rules::after(&chain.spec, chain.head(), chain.head_state());
        if replay {
            rules.base_fee = 0;
        }
        let mut pool = crate::engine_lock(&self.pool);
        let hash = pool.add(d.tx, d.sender, sidecar, &rules)?;
        drop(pool);
        crate::engine_lock(&self.pending).push(hash);
        Ok(hash)
    }

    /// A transaction by hash: `mined` of its block and index when the chain holds it,
    /// else `pooled` of it in the pool, else null.
    fn transaction(
        &self,
        hash: &B256,
        mined: impl FnOnce(&ExecutedBlock, usize) -> Value,
        pooled: impl FnOnce(&super::pool::PoolTx) -> Value,
    ) -> Result<Value, RpcError> {
        let chain = self.chain();
        if let Some((bh, i)) = chain.tx_location(hash) {
            let b = chain
                .block(&bh)
                .ok_or_else(|| RpcError::internal("indexed block missing"))?;
            return Ok(mined(&b, i));
        }
        drop(chain);
        let pool = crate::engine_lock(&self.pool);
        Ok(pool.get(hash).map_or(Value::Null, pooled))
    }

    /// Dispatch one public JSON-RPC call.
    pub fn eth_call(&self, method: &str, p: Value) -> Result<Value, RpcError> {
        match method {
            "eth_chainId" => Ok(json!(U64::from(self.chain().spec.chain_id))),
            "net_version" => Ok(json!(self.chain().spec.chain_id.to_string())),
            "net_peerCount" => Ok(json!("0x0")),
            "net_listening" => Ok(json!(true)),
            "web3_clientVersion" => Ok(json!(concat!(
                "chainctl/v",
                env!("CARGO_PKG_VERSION"),
                "/linux"
            ))),
            "eth_syncing" if self.reports_syncing() => {
                let head = U64::from(self.chain().head().number());
                Ok(json!({"startingBlock": "0x0", "currentBlock": head, "highestBlock": head}))
            }
            "eth_syncing" => Ok(json!(false)),
            "txpool_status" => {
                let chain = self.chain();
                let (pending, queued) = crate::engine_lock(&self.pool).status(chain.head_state());
                Ok(json!({"pending": U64::from(pending), "queued": U64::from(queued)}))
            }
            "eth_blockNumber" => Ok(json!(U64::from(self.chain().head().number()))),
            "eth_gasPrice" => {
                let chain = self.chain();
                let base = next_base_fee(chain.head().header());
                Ok(json!(U256::from(base as u128 + suggested_tip(&chain))))
            }
            "eth_maxPriorityFeePerGas" => Ok(json!(U256::from(suggested_tip(&self.chain())))),
            "eth_blobBaseFee" => {
                let chain = self.chain();
                let head = chain.head();
                let ts = head.header().timestamp + 1;
                let fee = chain
                    .spec
                    .blob_params(ts)
                    .and_then(|p| head.header().next_block_blob_fee(p))
                    .ok_or_else(|| RpcError::server("blobs are not active on this chain"))?;
                Ok(json!(U256::from(fee)))
            }
            "eth_getBlockByNumber" | "eth_getBlockByHash" => {
                let (id, full): (BlockId, bool) = params(p)?;
                let chain = self.chain();
                match resolve(&chain, Some(id)) {
                    Ok(b) => Ok(rpc_block(&b, full)),
                    Err(_) => Ok(Value::Null),
                }
            }
            "eth_getBlockReceipts" => {
                let (id,): (BlockId,) = params(p)?;
                let chain = self.chain();
                match resolve(&chain, Some(id)) {
                    Ok(b) => Ok(Value::Array(rpc_receipts(&chain, &b))),
                    Err(_) => Ok(Value::Null),
                }
            }
            "eth_getBlockTransactionCountByNumber" | "eth_getBlockTransactionCountByHash" => {
                let (id,): (BlockId,) = params(p)?;
                let chain = self.chain();
                Ok(resolve(&chain, Some(id)).map_or(Value::Null, |b| {
                    json!(U64::from(b.block.body.transactions.len()))
                }))
            }
            "eth_getBalance" | "eth_getTransactionCount" | "eth_getCode" => {
                let (addr, id): (Address, Option<BlockId>) = params_opt(p)?;
                let chain = self.chain();
                let b = resolve(&chain, id)?;
                let acct = state_of(&chain, &b)?.account(&addr);
                Ok(match method {
                    "eth_getBalance" => json!(acct.map_or(U256::ZERO, |a| a.balance)),
                    "eth_getTransactionCount" => json!(U64::from(acct.map_or(0, |a| a.nonce))),
                    _ => {
                        let code = acct
                            .and_then(|a| chain.codes.get(&a.code_hash))
                            .map(|c| c.original_bytes())
                            .unwrap_or_default();
                        json!(code)
                    }
                })
            }
            "eth_getStorageAt" => {
                let arr = p.as_array().cloned().unwrap_or_default();
                if arr.len() < 2 || arr.len() > 3 {
                    return Err(RpcError::invalid_params("expected [address, slot, block?]"));
                }
                let addr: Address = params(arr[0].clone())?;
                let slot: U256 = params(arr[1].clone())?;
                let id: Option<BlockId> = arr.get(2).map(|v| params(v.clone())).transpose()?;
                let chain = self.chain();
                let b = resolve(&chain, id)?;
                Ok(json!(B256::from(
                    state_of(&chain, &b)?.storage(&addr, &slot)
                )))
            }
            "eth_getTransactionByHash" => {
                let (hash,): (B256,) = params(p)?;
                self.transaction(&hash, rpc_tx, |t| {
                    let rt = alloy_rpc_types_eth::Transaction {
                        inner: Recovered::new_unchecked(t.tx.clone(), t.sender),
                        block_hash: None,
                        block_number: None,
                        transaction_index: None,
                        effective_gas_price: None,
                        block_timestamp: None,
                    };
                    serde_json::to_value(rt).unwrap_or(Value::Null)
                })
            }
            "eth_getRawTransactionByHash" => {
                use alloy_eips::eip2718::Encodable2718;
                let (hash,): (B256,) = params(p)?;
                self.transaction(
                    &hash,
                    |b, i| json!(Bytes::from(b.block.body.transactions[i].encoded_2718())),
                    |t| json!(Bytes::from(t.tx.encoded_2718())),
                )
            }
            "eth_newPendingTransactionFilter" => {
                Ok(json!(crate::engine_lock(&self.pending).install()))
            }
            "eth_getFilterChanges" => {
                let (id,): (U64,) = params(p)?;
                crate::engine_lock(&self.pending)
                    .changes(id)
                    .map(|h| json!(h))
                    .ok_or_else(|| RpcError::server("filter not found"))
            }
            "eth_uninstallFilter" => {
                let (id,): (U64,) = params(p)?;
                Ok(json!(crate::engine_lock(&self.pending).uninstall(id)))
            }
            "eth_getTransactionReceipt" => {
                let (hash,): (B256,) = params(p)?;
                let chain = self.chain();
                let Some((bh, i)) = chain.tx_location(&hash) else {
                    return Ok(Value::Null);
                };
                let b = chain
                    .block(&bh)
                    .ok_or_else(|| RpcError::internal("indexed block missing"))?;
                let first_log = b.receipts[..i].iter().map(|r| r.logs().len() as u64).sum();
                let mut receipt = rpc_receipt(&b, i, first_log, blob_gas_price(&chain, &b));
                if receipt_skew() {
                    receipt["gasUsed"] = json!(format!(
                        "0x{:x}",
                        chainctl_common::units::quantity(&receipt["gasUsed"]).unwrap_or(0) + 1
                    ));
                }
                Ok(receipt)
            }
            "eth_sendRawTransaction" => {
                let (raw,): (Bytes,) = params(p)?;
                let hash = self.submit_raw(&raw, false).map_err(RpcError::server)?;
                self.journal_append(&raw);
                Ok(json!(hash))
            }
            "eth_call" | "eth_estimateGas" => {
                // [call, block?, state overrides?, block overrides?] as Geth and Reth.
                let mut arr = match p {
                    Value::Array(a) if (1..=4).contains(&a.len()) => a,
                    Value::Array(a) => {
                        return Err(RpcError::invalid_params(format!(
                            "expected 1 to 4 params (call, block, state overrides, block overrides), got {}",
                            a.len()
                        )))
                    }
                    _ => return Err(RpcError::invalid_params("params must be an array")),
                };
                let block_overrides: Option<alloy_rpc_types_eth::BlockOverrides> =
                    optional_param(&mut arr, 3, "block overrides")?;
                let state: Option<alloy_rpc_types_eth::state::StateOverride> =
                    optional_param(&mut arr, 2, "state overrides")?;
                let (req, id): (TransactionRequest, Option<BlockId>) =
                    params_opt(Value::Array(arr))?;
                let chain = self.chain();
                let b = resolve(&chain, id)?;
                let overrides = super::call::Overrides::new(state, block_overrides)?;
                let sim = super::call::Simulator {
                    chain: &chain,
                    block: &b,
                    state: state_of(&chain, &b)?,
                    overrides: &overrides,
                };
                if method == "eth_call" {
                    sim.call(&req).map(|out| json!(out))
                } else {
                    sim.estimate(&req).map(|g| json!(U64::from(g)))
                }
            }
            "eth_getLogs" => {
                let (filter,): (alloy_rpc_types_eth::Filter,) = params(p)?;
                let chain = self.chain();
                super::call::logs(&chain, &filter)
            }
            "eth_feeHistory" => {
                let arr = p.as_array().cloned().unwrap_or_default();
                if arr.len() < 2 {
                    return Err(RpcError::invalid_params(
                        "expected [blockCount, newestBlock, rewardPercentiles?]",
                    ));
                }
                let count: U64 = params(arr[0].clone())?;
                let newest: BlockNumberOrTag = params(arr[1].clone())?;
                let percentiles: Option<Vec<f64>> =
                    arr.get(2).map(|p| params(p.clone())).transpose()?;
                if let Some(ps) = &percentiles {
                    if ps.iter().any(|p| !(0.0..=100.0).contains(p))
                        || ps.windows(2).any(|w| w[0] > w[1])
                    {
                        return Err(RpcError::invalid_params(
                            "rewardPercentiles must rise monotonically within 0..=100",
                        ));
                    }
                }
                let chain = self.chain();
                let newest = resolve(&chain, Some(BlockId::Number(newest)))?;
                let count = count.to::<u64>().clamp(1, 1024).min(newest.number() + 1);
                let first = newest.number() + 1 - count;
                let mut base = Vec::new();
                let mut ratio = Vec::new();
                let mut rewards = Vec::new();
                for n in first..=newest.number() {
                    let b = chain
                        .canonical(n)
                        .ok_or_else(|| RpcError::server("header not found"))?;
                    base.push(U256::from(b.header().base_fee_per_gas.unwrap_or_default()));
                    ratio.push(b.header().gas_used as f64 / b.header().gas_limit.max(1) as f64);
                    if let Some(ps) = &percentiles {
                        rewards.push(block_rewards(&b, ps));
                    }
                }
                base.push(U256::from(next_base_fee(newest.header())));
                Ok(json!({
                    "oldestBlock": U64::from(first),
                    "baseFeePerGas": base,
                    "gasUsedRatio": ratio,
                    "reward": percentiles.map(|_| rewards),
                }))
            }
            _ => Err(RpcError::method_not_found(method)),
        }
    }
}

/// The effective tips at `percentiles` of a block's gas (as Geth computes them: the
/// transactions sorted by tip, each weighted by the gas it used).
fn block_rewards(b: &ExecutedBlock, percentiles: &[f64]) -> Vec<U256> {
    let base = b.header().base_fee_per_gas.unwrap_or_default();
    let mut txs: Vec<(u128, u64)> = (0..b.receipts.len())
        .map(|i| {
            let tip = b.block.body.transactions[i]
                .effective_tip_per_gas(base)
                .unwrap_or_default();
            (tip, gas_used_by(&b.receipts, i))
        })
        .collect();
    if txs.is_empty() {
        return vec![U256::ZERO; percentiles.len()];
    }
    txs.sort_unstable();
    let total: u64 = txs.iter().map(|t| t.1).sum();
    percentiles
        .iter()
        .map(|p| {
            let threshold = (total as f64 * p / 100.0) as u64;
            let mut cum = 0u64;
            let tip = txs.iter().find(|(_, g)| {
                cum += g;
                cum >= threshold
            });
            U256::from(tip.unwrap_or(txs.last().expect("non-empty")).0)
        })
        .collect()
}

/// A test hook of debug builds only, for the readiness report's canary check: with
/// `CHAINCTL_TEST_FAULT=receipt-skew:SERVICE` the engine run as `SERVICE`
/// (`CHAINCTL_SERVICE`) reports one more gas used in its receipts than it charged, so
/// its receipts differ from the other clients'. A release build never reads it.
fn receipt_skew() -> bool {
    #[cfg(debug_assertions)]
    {
        static SKEW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SKEW.get_or_init(|| {
            let fault = chainctl_common::test_hooks::fault().unwrap_or_default();
            let me = std::env::var("CHAINCTL_SERVICE").unwrap_or_default();
            !me.is_empty() && fault == format!("receipt-skew:{me}")
        })
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}
