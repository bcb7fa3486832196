//! The Engine API methods (execution-apis `src/engine/`): newPayload, forkchoiceUpdated,
//! getPayload, payload bodies, capabilities and client version.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use alloy_consensus::{Transaction, TxEnvelope};
use alloy_eips::eip7685::Requests;
use alloy_primitives::{keccak256, Address, Bytes, B256};
use alloy_rpc_types_engine::{
    CancunPayloadFields, ExecutionPayload, ExecutionPayloadBodyV1, ExecutionPayloadEnvelopeV3,
    ExecutionPayloadEnvelopeV4, ExecutionPayloadEnvelopeV5, ExecutionPayloadSidecar,
    ExecutionPayloadV1, ExecutionPayloadV2, ExecutionPayloadV3, ForkchoiceState, ForkchoiceUpdated,
    PayloadAttributes, PayloadId, PayloadStatus, PayloadStatusEnum, PraguePayloadFields,
};
use serde_json::{json, Value};

use super::blobs::{self, Sidecar};
use super::chain::{Chain, ForkchoiceError, InsertError};
use super::exec::{BuildAttributes, ExecutedBlock};
use super::pool::Pool;
use super::wire::RpcError;

/// The methods this engine serves on its authenticated port.
pub const CAPABILITIES: &[&str] = &[
    "engine_exchangeCapabilities",
    "engine_getClientVersionV1",
    "engine_newPayloadV1",
    "engine_newPayloadV2",
    "engine_newPayloadV3",
    "engine_newPayloadV4",
    "engine_forkchoiceUpdatedV1",
    "engine_forkchoiceUpdatedV2",
    "engine_forkchoiceUpdatedV3",
    "engine_getPayloadV1",
    "engine_getPayloadV2",
    "engine_getPayloadV3",
    "engine_getPayloadV4",
    "engine_getPayloadV5",
    "engine_getPayloadBodiesByHashV1",
    "engine_getPayloadBodiesByRangeV1",
    "engine_getBlobsV1",
    "engine_getBlobsV2",
    "engine_getBlobsV3",
];

/// Most versioned hashes one getBlobs call may ask for (execution-apis).
const MAX_BLOB_HASHES: usize = 128;

/// A built payload: the block and the sidecars of its blob transactions, in block order.
struct Built {
    id: PayloadId,
    block: Arc<ExecutedBlock>,
    sidecars: Vec<Arc<Sidecar>>,
}

/// Where in the data dir `chainctl_exportSnapshotV1` writes its copy of the store.
pub const SNAPSHOT_DIR: &str = "snapshot";

/// Payloads kept for getPayload after they were built.
const MAX_PAYLOADS: usize = 64;

/// Shared engine state behind both servers.
pub struct Engine {
    chain: Mutex<Chain>,
    pub pool: Mutex<Pool>,
    /// Built payloads, oldest first (at most `MAX_PAYLOADS`).
    payloads: Mutex<VecDeque<Built>>,
    /// Sends a head's hash to WebSocket subscribers on every canonical change.
    pub heads: tokio::sync::broadcast::Sender<B256>,
    /// The pool's journal (with a data dir).
    journal: Mutex<Option<super::journal::Journal>>,
    /// Hashes of transactions as they enter the pool, for pending filters.
    pub pending: Mutex<super::filters::PendingFeed>,
    /// `eth_syncing` answers syncing until a forkchoice update moves the head, as
    /// Reth, Geth and Erigon do after they start (`--syncing-until-new-head`).
    syncing_until_new_head: std::sync::atomic::AtomicBool,
    /// One snapshot export at a time (they write the same file).
    exporting: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn params<T: serde::de::DeserializeOwned>(p: Value) -> Result<T, RpcError> {
    serde_json::from_value(p).map_err(|e| RpcError::invalid_params(e.to_string()))
}

fn status(s: PayloadStatusEnum, latest_valid: Option<B256>) -> PayloadStatus {
    PayloadStatus::new(s, latest_valid)
}

fn invalid(reason: String, latest_valid: Option<B256>) -> PayloadStatus {
    status(
        PayloadStatusEnum::Invalid {
            validation_error: reason,
        },
        latest_valid,
    )
}

impl Engine {
    pub fn new(chain: Chain) -> Self {
        let (heads, _) = tokio::sync::broadcast::channel(64);
        Engine {
            chain: Mutex::new(chain),
            pool: Mutex::new(Pool::default()),
            payloads: Mutex::new(VecDeque::new()),
            heads,
            journal: Mutex::new(None),
            pending: Mutex::new(Default::default()),
            syncing_until_new_head: Default::default(),
            exporting: Mutex::new(()),
        }
    }

    /// Export a consistent copy of the store to `<data dir>/snapshot/engine-<id>.redb`: the
    /// read transaction is taken under the chain lock (so it holds a whole forkchoice
    /// commit), the copy is made without it. The answer names the file relative to the
    /// data dir (`chainctl backup` reads it where it sees the data dir, e.g. through a
    /// container's volume) and the forkchoice it holds.
    pub fn export_snapshot(&self) -> Result<Value, String> {
        let _one = lock(&self.exporting);
        let (view, dir) = {
            let chain = self.chain();
            let store = chain.store().ok_or(
                "this engine runs without --datadir: it keeps nothing on disk to snapshot",
            )?;
            let dir = store
                .path()
                .parent()
                .map(|d| d.join(SNAPSHOT_DIR))
                .ok_or("the store has no data dir")?;
            (store.read_view()?, dir)
        };
        chainctl_common::fs::private_dir(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // Each export its own file (two backups at once never share one); one a killed
        // backup left behind is removed after an hour.
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(3600));
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let name = format!("engine-{:016x}.redb", rand::random::<u64>());
        let dest = dir.join(&name);
        let started = std::time::Instant::now();
        let info = super::store::export(&view, &dest)?;
        drop(view);
        let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        tracing::info!(
            file = %dest.display(),
            finalized = info.finalized_number,
            bytes = size,
            ms = started.elapsed().as_millis() as u64,
            "exported a snapshot of the store"
        );
        Ok(json!({
            "file": format!("{SNAPSHOT_DIR}/{name}"),
            "genesis": info.genesis,
            "head": info.head,
            "finalized": info.finalized,
            "finalizedNumber": info.finalized_number,
            "bytes": size,
        }))
    }

    /// From now until a forkchoice update moves the head, `eth_syncing` answers
    /// syncing, as Reth, Geth and Erigon do after they start.
    pub fn report_syncing_until_new_head(&self) {
        self.syncing_until_new_head
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `eth_syncing` answers syncing now.
    pub fn reports_syncing(&self) -> bool {
        self.syncing_until_new_head
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Put back the transactions of the journal in `dir` into the pool, then keep the
    /// journal: every accepted transaction is appended to it. Returns (put back, stale).
    pub fn open_journal(&self, dir: &std::path::Path) -> Result<(usize, usize), String> {
        let (journal, records) = super::journal::Journal::open(dir)?;
        let (mut back, mut stale) = (0, 0);
        for raw in &records {
            match self.submit_raw(raw, true) {
                Ok(_) => back += 1,
                Err(e) => {
                    stale += 1;
                    tracing::debug!(reason = %e, "journal entry not put back");
                }
            }
        }
        *lock(&self.journal) = Some(journal);
        self.rotate_journal()?;
        Ok((back, stale))
    }

    /// Append an accepted transaction to the journal (a failure is logged: the
    /// transaction is in the pool all the same).
    pub fn journal_append(&self, raw: &[u8]) {
        if let Some(j) = lock(&self.journal).as_mut() {
            if let Err(e) = j.append(raw) {
                tracing::warn!(error = %e, "transaction not journaled");
            }
        }
    }

    /// Rewrite the journal from the pool as it is now.
    pub fn rotate_journal(&self) -> Result<(), String> {
        let mut journal = lock(&self.journal);
        let Some(j) = journal.as_mut() else {
            return Ok(());
        };
        let records = lock(&self.pool).journal_records();
        j.rotate(&records)
    }

    pub fn chain(&self) -> MutexGuard<'_, Chain> {
        lock(&self.chain)
    }

    /// Dispatch one Engine API call.
    pub fn call(&self, method: &str, p: Value) -> Result<Value, RpcError> {
        match method {
            "engine_exchangeCapabilities" => {
                let _: (Vec<String>,) = params(p)?;
                Ok(json!(CAPABILITIES))
            }
            // The engine port also serves `eth_chainId` (execution-apis: the Engine API
            // endpoint exposes a subset of `eth_`): the supervisor's authenticated probe.
            "eth_chainId" => Ok(json!(format!("{:#x}", self.chain().spec.chain_id))),
            // chainctl's own, on the authenticated port only: a consistent copy of the
            // store in the data dir, for `chainctl backup` (the engine keeps serving).
            "chainctl_exportSnapshotV1" => {
                if !(p.is_null() || p.as_array().is_some_and(|a| a.is_empty())) {
                    return Err(RpcError::invalid_params(
                        "chainctl_exportSnapshotV1 takes no params",
                    ));
                }
                self.export_snapshot().map_err(RpcError::internal)
            }
            "engine_getClientVersionV1" => Ok(json!([{
                "code": "CT",
                "name": "chainctl",
                "version": env!("CARGO_PKG_VERSION"),
                // First 4 bytes of the commit built from (build.rs); zeros when unknown.
                "commit": format!("0x{}", env!("CHAINCTL_COMMIT")),
            }])),
            "engine_newPayloadV3" => {
                let (payload, hashes, root): (ExecutionPayloadV3, Vec<B256>, B256) = params(p)?;
                let ts = payload.timestamp();
                self.require_fork(ts, "cancun", method)?;
                let sidecar = ExecutionPayloadSidecar::v3(CancunPayloadFields::new(root, hashes));
                Ok(to_json(
                    &self.new_payload(ExecutionPayload::V3(payload), sidecar),
                ))
            }
            "engine_newPayloadV4" => {
                let (payload, hashes, root, requests): (
                    ExecutionPayloadV3,
                    Vec<B256>,
                    B256,
                    Vec<Bytes>,
                ) = params(p)?;
                let ts = payload.timestamp();
                let fork = self.chain().spec.fork_name(ts);
                if fork != "prague" && fork != "osaka" {
                    return Err(RpcError::unsupported_fork(format!(
                        "{method} is for Prague and Osaka; the payload's timestamp is in {fork}"
                    )));
                }
                check_requests(&requests)?;
                let sidecar = ExecutionPayloadSidecar::v4(
                    CancunPayloadFields::new(root, hashes),
                    PraguePayloadFields::new(Requests::new(requests)),
                );
                Ok(to_json(
                    &self.new_payload(ExecutionPayload::V3(payload), sidecar),
                ))
            }
            "engine_newPayloadV1" | "engine_newPayloadV2" => {
                let (raw,): (Value,) = params(p)?;
                let payload = payload_v1_or_v2(raw, method)?;
                let ts = payload.timestamp();
                let spec = self.chain().spec.clone();
                if spec.cancun(ts) {
                    return Err(RpcError::unsupported_fork(format!(
                        "{method} is for payloads before Cancun; the payload's timestamp is in {}: use newPayloadV3 (Cancun) or V4 (Prague, Osaka)",
                        spec.fork_name(ts)
                    )));
                }
                withdrawals_by_fork(
                    &spec,
                    ts,
                    matches!(payload, ExecutionPayload::V2(_)),
                    "ExecutionPayload",
                    "newPayloadV2",
                )?;
                Ok(to_json(
                    &self.new_payload(payload, ExecutionPayloadSidecar::none()),
                ))
            }
            "engine_forkchoiceUpdatedV1"
            | "engine_forkchoiceUpdatedV2"
            | "engine_forkchoiceUpdatedV3" => {
                let (state, attrs): (ForkchoiceState, Option<PayloadAttributes>) =
                    match p.as_array().map(|a| a.len()) {
                        Some(1) => (params::<(ForkchoiceState,)>(p)?.0, None),
                        _ => params(p)?,
                    };
                let version = if method.ends_with('3') {
                    3
                } else if method.ends_with('2') {
                    2
                } else {
                    1
                };
                self.forkchoice_updated(state, attrs, version)
                    .map(|r| to_json(&r))
            }
            "engine_getPayloadV1" | "engine_getPayloadV2" => {
                let (id,): (PayloadId,) = params(p)?;
                let (built, _) = self.payload(&id).ok_or_else(RpcError::unknown_payload)?;
                let ts = built.header().timestamp;
                let spec = self.chain().spec.clone();
                let fork = spec.fork_name(ts);
                if spec.cancun(ts) || (method == "engine_getPayloadV1" && spec.shanghai(ts)) {
                    return Err(RpcError::unsupported_fork(format!(
                        "payload {id} is a {fork} block; {method} serves {} payloads",
                        if method == "engine_getPayloadV1" {
                            "Paris"
                        } else {
                            "Paris and Shanghai"
                        }
                    )));
                }
                let block = built.block.clone().map_transactions(|t| t);
                let payload = if spec.shanghai(ts) {
                    json!(ExecutionPayloadV2::from_block_unchecked(built.hash, &block))
                } else {
                    json!(ExecutionPayloadV1::from_block_unchecked(built.hash, &block))
                };
                Ok(if method == "engine_getPayloadV1" {
                    payload
                } else {
                    json!({"executionPayload": payload, "blockValue": to_json(&built.fees)})
                })
            }
            "engine_getPayloadV3" | "engine_getPayloadV4" | "engine_getPayloadV5" => {
                let (id,): (PayloadId,) = params(p)?;
                let (built, sidecars) = self.payload(&id).ok_or_else(RpcError::unknown_payload)?;
                let ts = built.header().timestamp;
                let fork = self.chain().spec.fork_name(ts);
                let want = match method {
                    "engine_getPayloadV3" => "cancun",
                    "engine_getPayloadV4" => "prague",
                    _ => "osaka",
                };
                if fork != want {
                    return Err(RpcError::unsupported_fork(format!(
                        "payload {id} is a {fork} block; {method} serves {want} payloads"
                    )));
                }
                Ok(self.envelope(&built, &sidecars, method))
            }
            "engine_getPayloadBodiesByHashV1" => {
                let (hashes,): (Vec<B256>,) = params(p)?;
                if hashes.len() > 1024 {
                    return Err(RpcError::too_large(format!(
                        "{} hashes requested, at most 1024",
                        hashes.len()
                    )));
                }
                let chain = self.chain();
                let bodies: Vec<Option<ExecutionPayloadBodyV1>> = hashes
                    .iter()
                    .map(|h| chain.block(h).map(|b| body(&b)))
                    .collect();
                Ok(serde_json::to_value(bodies).unwrap_or(Value::Null))
            }
            "engine_getPayloadBodiesByRangeV1" => {
                let (start, count): (alloy_primitives::U64, alloy_primitives::U64) = params(p)?;
                let (start, count) = (start.to::<u64>(), count.to::<u64>());
                if start == 0 || count == 0 {
                    return Err(RpcError::invalid_params(
                        "start and count must be at least 1",
                    ));
                }
                if count > 1024 {
                    return Err(RpcError::too_large(format!(
                        "{count} blocks requested, at most 1024"
                    )));
                }
                let chain = self.chain();
                let head = chain.head().number();
                let bodies: Vec<Option<ExecutionPayloadBodyV1>> = (start
                    ..start.saturating_add(count))
                    .take_while(|n| *n <= head)
                    .map(|n| chain.canonical(n).map(|b| body(&b)))
                    .collect();
                Ok(serde_json::to_value(bodies).unwrap_or(Value::Null))
            }
            "engine_getBlobsV1" | "engine_getBlobsV2" | "engine_getBlobsV3" => {
                let (hashes,): (Vec<B256>,) = params(p)?;
                if hashes.len() > MAX_BLOB_HASHES {
                    return Err(RpcError::too_large(format!(
                        "{} versioned hashes requested, at most {MAX_BLOB_HASHES}",
                        hashes.len()
                    )));
                }
                if method == "engine_getBlobsV1" {
                    let chain = self.chain();
                    let ts = chain.head().header().timestamp;
                    if chain.spec.osaka(ts) {
                        return Err(RpcError::unsupported_fork(
                            "engine_getBlobsV1 is not served from Osaka on: use engine_getBlobsV2"
                                .into(),
                        ));
                    }
                }
                // The sidecars only under the pool's lock; blobs are copied after it.
                let sidecars: Vec<Option<Arc<Sidecar>>> = {
                    let pool = lock(&self.pool);
                    hashes.iter().map(|h| pool.blob_sidecar(h)).collect()
                };
                let found = hashes.iter().zip(sidecars);
                Ok(match method {
                    // Cancun/Prague: the blob and its KZG proof; null where unknown.
                    "engine_getBlobsV1" => to_json(
                        &found
                            .map(|(h, s)| s.and_then(|s| blobs::blob_and_proof_v1(&s, h)))
                            .collect::<Vec<_>>(),
                    ),
                    // Osaka: the blob and its cell proofs; V2 answers null unless it has
                    // every blob asked for, V3 null for each one it does not have.
                    _ => {
                        let items: Vec<_> = found
                            .map(|(h, s)| s.and_then(|s| blobs::blob_and_proof_v2(&s, h)))
                            .collect();
                        if method == "engine_getBlobsV2" && items.iter().any(Option::is_none) {
                            Value::Null
                        } else {
                            to_json(&items)
                        }
                    }
                })
            }
            _ => Err(RpcError::method_not_found(method)),
        }
    }

    fn require_fork(&self, ts: u64, want: &str, method: &str) -> Result<(), RpcError> {
        let fork = self.chain().spec.fork_name(ts);
        if fork != want {
            return Err(RpcError::unsupported_fork(format!(
                "{method} is for {want}; the payload's timestamp is in {fork}"
            )));
        }
        Ok(())
    }

    fn new_payload(
        &self,
        payload: ExecutionPayload,
        sidecar: ExecutionPayloadSidecar,
    ) -> PayloadStatus {
        let claimed = payload.block_hash();
        let block = match payload.try_into_block_with_sidecar::<TxEnvelope>(&sidecar) {
            Ok(b) => b,
            Err(e) => return invalid(format!("payload does not form a block: {e}"), None),
        };
        let hash = block.header.hash_slow();
        if hash != claimed {
            return invalid(
                format!("block hash mismatch: payload says {claimed}, header hashes to {hash}"),
                None,
            );
        }
        let blob_hashes: Vec<B256> = block
            .body
            .transactions
            .iter()
            .filter_map(|t| t.blob_versioned_hashes())
            .flatten()
            .copied()
            .collect();
        // From Cancun (newPayloadV3 on) the call names the block's blobs; before, a block
        // has none (a blob transaction there fails execution).
        if sidecar
            .versioned_hashes()
            .is_some_and(|want| *want != blob_hashes)
        {
            return invalid(
                "expected blob versioned hashes differ from the block's blob transactions".into(),
                None,
            );
        }
        let number = block.header.number;
        // Senders this engine's pool already recovered (most of a block's, when its
        // transactions were gossiped here first) are not recovered again.
        let known: HashMap<B256, Address> = {
            let pool = lock(&self.pool);
            block
                .body
                .transactions
                .iter()
                .filter_map(|t| Some((*t.tx_hash(), pool.sender_of(t.tx_hash())?)))
                .collect()
        };
        let result = self
            .chain()
            .insert_with_senders(block, hash, &|h| known.get(h).copied());
        match result {
            Ok(_) => {
                tracing::debug!(%hash, number, "payload VALID");
                status(PayloadStatusEnum::Valid, Some(hash))
            }
            Err(InsertError::UnknownParent) => status(PayloadStatusEnum::Syncing, None),
            Err(InsertError::Invalid {
                latest_valid,
                reason,
            }) => {
                tracing::warn!(%hash, number, %reason, "payload INVALID");
                invalid(reason, latest_valid)
            }
        }
    }

    fn forkchoice_updated(
        &self,
        state: ForkchoiceState,
        attrs: Option<PayloadAttributes>,
        version: u8,
    ) -> Result<ForkchoiceUpdated, RpcError> {
        let mut chain = self.chain();
        let head = state.head_block_hash;
        if let Some((latest_valid, reason)) = chain.invalid(&head) {
            return Ok(ForkchoiceUpdated::new(invalid(reason, latest_valid)));
        }
        if chain.block(&head).is_none() {
            return Ok(ForkchoiceUpdated::new(status(
                PayloadStatusEnum::Syncing,
                None,
            )));
        }
        let old_head = chain.head().hash;
        let dropped = chain
            .set_forkchoice(head, state.safe_block_hash, state.finalized_block_hash)
            .map_err(|e| match e {
                ForkchoiceError::Invalid(m) => RpcError::invalid_forkchoice(m),
                ForkchoiceError::Storage(m) => {
                    tracing::error!(error = %m, "cannot store the forkchoice; not applied");
                    RpcError::internal(format!("forkchoice not applied: cannot store it: {m}"))
                }
            })?;
        let head_block = chain.head().clone();
        if old_head != head {
            self.syncing_until_new_head
                .store(false, std::sync::atomic::Ordering::Relaxed);
            let mut pool = lock(&self.pool);
            pool.prune(chain.head_state());
            if !dropped.is_empty() {
                // A reorg: what the old branch included goes back to the pool.
                let rules = super::pool::Rules::after(&chain.spec, &head_block, chain.head_state());
                let n = dropped.len();
                let back = dropped
                    .into_iter()
                    .filter(|(tx, s)| pool.add(tx.clone(), *s, None, &rules).is_ok())
                    .count();
                tracing::info!(%head, dropped = n, reinjected = back, "reorg");
            }
            drop(pool);
            let _ = self.heads.send(head);
        }
        let valid = status(PayloadStatusEnum::Valid, Some(head));
        let Some(attrs) = attrs else {
            return Ok(ForkchoiceUpdated::new(valid));
        };
        let ts = attrs.timestamp;
        if ts <= head_block.header().timestamp {
            return Err(RpcError::invalid_attributes(format!(
                "timestamp {ts} is not after the head's {}",
                head_block.header().timestamp
            )));
        }
        let spec = chain.spec.clone();
        let fork = spec.fork_name(ts);
        if version == 3 {
            if !spec.cancun(ts) {
                return Err(RpcError::unsupported_fork(format!(
                    "forkchoiceUpdatedV3 builds Cancun or later blocks; {ts} is in {fork}: use forkchoiceUpdatedV2"
                )));
            }
            if attrs.parent_beacon_block_root.is_none() {
                return Err(RpcError::invalid_params(
                    "parentBeaconBlockRoot is required by forkchoiceUpdatedV3",
                ));
            }
            if attrs.withdrawals.is_none() {
                return Err(RpcError::invalid_params(
                    "withdrawals are required by forkchoiceUpdatedV3",
                ));
            }
        } else {
            // PayloadAttributesV1 before Shanghai, V2 from Shanghai to Cancun.
            if spec.cancun(ts) {
                return Err(RpcError::unsupported_fork(format!(
                    "forkchoiceUpdatedV{version} builds blocks before Cancun; {ts} is in {fork}: use forkchoiceUpdatedV3"
                )));
            }
            if attrs.parent_beacon_block_root.is_some() {
                return Err(RpcError::invalid_params(format!(
                    "parentBeaconBlockRoot is a PayloadAttributesV3 field (Cancun), not one of forkchoiceUpdatedV{version}'s"
                )));
            }
            withdrawals_by_fork(
                &spec,
                ts,
                attrs.withdrawals.is_some(),
                "PayloadAttributes",
                "forkchoiceUpdatedV2",
            )?;
            if version == 1 && attrs.withdrawals.is_some() {
                return Err(RpcError::invalid_params(
                    "forkchoiceUpdatedV1 takes PayloadAttributesV1 (no withdrawals): use forkchoiceUpdatedV2",
                ));
            }
        }
        let id = payload_id(&head, &attrs);
        if lock(&self.payloads).iter().any(|b| b.id == id) {
            return Ok(ForkchoiceUpdated::new(valid).with_payload_id(id));
        }
        let build = BuildAttributes {
            timestamp: ts,
            prev_randao: attrs.prev_randao,
            fee_recipient: attrs.suggested_fee_recipient,
            withdrawals: attrs.withdrawals.clone(),
            parent_beacon_block_root: attrs.parent_beacon_block_root,
            gas_limit: head_block.header().gas_limit,
            extra_data: Bytes::from_static(
                concat!("chainctl/", env!("CARGO_PKG_VERSION")).as_bytes(),
            ),
        };
        let base_fee = super::exec::next_base_fee(head_block.header());
        let (candidates, mut sidecars, pooled) = {
            let pool = lock(&self.pool);
            let best = pool.best(chain.head_state(), base_fee);
            let sidecars = pool.sidecars(best.iter().map(|(t, _)| t));
            (best, sidecars, pool.len())
        };
        let executable = candidates.len();
        // Blob transactions: only those paying the block's blob base fee, as many blobs as
        // the block may hold, with their sidecars in the fork's proof format.
        let osaka = spec.osaka(ts);
        let (blob_fee, max_blobs) = match spec.blob_params(ts) {
            Some(p) => (
                p.calc_blob_fee(
                    head_block
                        .header()
                        .next_block_excess_blob_gas(p)
                        .unwrap_or(0),
                ),
                p.max_blob_count,
            ),
            None => (u128::MAX, 0),
        };
        // A sender whose transaction was left out has its later nonces left out too (they
        // could not run, and must not be dropped as invalid).
        let held: std::cell::RefCell<std::collections::HashSet<Address>> = Default::default();
        let blob_total = std::cell::Cell::new(0u64);
        let mut fitted = candidates.into_iter().filter(|(tx, sender)| {
            // Below the block's base fee (it rose since the transaction came): it waits.
            if held.borrow().contains(sender) || tx.max_fee_per_gas() < base_fee as u128 {
                held.borrow_mut().insert(*sender);
                return false;
            }
            let Some(hashes) = tx.blob_versioned_hashes() else {
                return true;
            };
            let n = hashes.len() as u64;
            let ready = tx.max_fee_per_blob_gas().unwrap_or(0) >= blob_fee
                && blob_total.get() + n <= max_blobs
                && match sidecars
                    .get(tx.tx_hash())
                    .and_then(|s| blobs::for_fork(s, osaka))
                {
                    Some(s) => {
                        sidecars.insert(*tx.tx_hash(), s);
                        true
                    }
                    None => false,
                };
            if ready {
                blob_total.set(blob_total.get() + n);
            } else {
                held.borrow_mut().insert(*sender);
            }
            ready
        });
        let mut dropped = Vec::new();
        let built = chain
            .build(&head, &build, &mut fitted, &mut |tx, sender, why| {
                tracing::debug!(tx = %tx.tx_hash(), %why, "left out of the block");
                held.borrow_mut().insert(*sender);
                if let Some(h) = tx.blob_versioned_hashes() {
                    blob_total.set(blob_total.get().saturating_sub(h.len() as u64));
                }
                if !why.contains("remaining gas") {
                    dropped.push((*sender, tx.nonce()));
                }
            })
            .map_err(|e| RpcError::internal(format!("building a block on {head} failed: {e}")))?;
        {
            let mut pool = lock(&self.pool);
            for (s, n) in dropped {
                pool.drop_tx(&s, n);
            }
            // Sidecars given cell proofs for this block keep them (converted once), when
            // the pool's next block is in Osaka too.
            if osaka && spec.osaka(head_block.header().timestamp + 1) {
                for (h, s) in &sidecars {
                    pool.set_sidecar(h, s.clone());
                }
            }
        }
        let built = Arc::new(built);
        let sidecars: Vec<Arc<Sidecar>> = built
            .block
            .body
            .transactions
            .iter()
            .filter_map(|t| sidecars.get(t.tx_hash()).cloned())
            .collect();
        tracing::info!(payload = %id, number = built.number(), txs = built.block.body.transactions.len(), blobs = blob_total.get(), pooled, executable, "built payload");
        chain.insert_built(built.clone());
        drop(chain);
        let mut payloads = lock(&self.payloads);
        payloads.push_back(Built {
            id,
            block: built,
            sidecars,
        });
        if payloads.len() > MAX_PAYLOADS {
            payloads.pop_front();
        }
        Ok(ForkchoiceUpdated::new(valid).with_payload_id(id))
    }

    fn payload(&self, id: &PayloadId) -> Option<(Arc<ExecutedBlock>, Vec<Arc<Sidecar>>)> {
        lock(&self.payloads)
            .iter()
            .find(|b| b.id == *id)
            .map(|b| (b.block.clone(), b.sidecars.clone()))
    }

    fn envelope(&self, built: &ExecutedBlock, sidecars: &[Arc<Sidecar>], method: &str) -> Value {
        let payload = ExecutionPayloadV3::from_block_unchecked(
            built.hash,
            &built.block.clone().map_transactions(|t| t),
        );
        let value = built.fees;
        match method {
            "engine_getPayloadV3" => json!(ExecutionPayloadEnvelopeV3 {
                execution_payload: payload,
                block_value: value,
                blobs_bundle: blobs::bundle_v1(sidecars),
                should_override_builder: false,
            }),
            "engine_getPayloadV4" => json!(ExecutionPayloadEnvelopeV4 {
                envelope_inner: ExecutionPayloadEnvelopeV3 {
                    execution_payload: payload,
                    block_value: value,
                    blobs_bundle: blobs::bundle_v1(sidecars),
                    should_override_builder: false,
                },
                execution_requests: built.requests.clone(),
            }),
            _ => json!(ExecutionPayloadEnvelopeV5 {
                execution_payload: payload,
                block_value: value,
                blobs_bundle: blobs::bundle_v2(sidecars),
                should_override_builder: false,
                execution_requests: built.requests.clone(),
            }),
        }
    }
}

/// EIP-7685 in the Engine API: each request is its type byte followed by non-empty data,
/// types strictly ascending.
fn check_requests(requests: &[Bytes]) -> Result<(), RpcError> {
    let mut last: Option<u8> = None;
    for (i, r) in requests.iter().enumerate() {
        if r.len() < 2 {
            return Err(RpcError::invalid_params(format!(
                "executionRequests[{i}] is empty (empty request lists must be left out)"
            )));
        }
        if last.is_some_and(|l| r[0] <= l) {
            return Err(RpcError::invalid_params(format!(
                "executionRequests[{i}] is out of order: types must be strictly ascending"
            )));
        }
        last = Some(r[0]);
    }
    Ok(())
}

/// Deterministic id of a build job: the head and the attributes.
fn payload_id(head: &B256, attrs: &PayloadAttributes) -> PayloadId {
    let mut buf = head.to_vec();
    buf.extend_from_slice(serde_json::to_string(attrs).unwrap_or_default().as_bytes());
    let h = keccak256(&buf);
    PayloadId::new(h[..8].try_into().expect("8 bytes"))
}

fn body(b: &ExecutedBlock) -> ExecutionPayloadBodyV1 {
    use alloy_eips::eip2718::Encodable2718;
    ExecutionPayloadBodyV1 {
        transactions: b
            .block
            .body
            .transactions
            .iter()
            .map(|t| t.encoded_2718().into())
            .collect(),
        withdrawals: b.block.body.withdrawals.clone().map(|w| w.into_inner()),
    }
}

/// Withdrawals belong to the Shanghai form of a structure (`ExecutionPayloadV2`,
/// `PayloadAttributesV2`, taken by `v2_method`) and to nothing before Shanghai: the
/// wrong form for the timestamp is -32602.
fn withdrawals_by_fork(
    spec: &super::spec::ChainSpec,
    ts: u64,
    withdrawals: bool,
    structure: &str,
    v2_method: &str,
) -> Result<(), RpcError> {
    match (spec.shanghai(ts), withdrawals) {
        (true, false) => Err(RpcError::invalid_params(format!(
            "{ts} is in Shanghai: send {structure}V2, with withdrawals ({v2_method})"
        ))),
        (false, true) => Err(RpcError::invalid_params(format!(
            "withdrawals before Shanghai: {ts} takes {structure}V1, without them"
        ))),
        _ => Ok(()),
    }
}

/// An `ExecutionPayloadV1` or `V2` (with withdrawals) from a newPayloadV1/V2 call; a
/// Cancun field (blob gas) is the wrong structure for the method: -32602.
fn payload_v1_or_v2(raw: Value, method: &str) -> Result<ExecutionPayload, RpcError> {
    if raw.get("blobGasUsed").is_some() || raw.get("excessBlobGas").is_some() {
        return Err(RpcError::invalid_params(format!(
            "{method} takes ExecutionPayloadV1 or V2; blobGasUsed and excessBlobGas are ExecutionPayloadV3 fields (newPayloadV3)"
        )));
    }
    let with_withdrawals = raw.get("withdrawals").is_some_and(|w| !w.is_null());
    if with_withdrawals {
        if method == "engine_newPayloadV1" {
            return Err(RpcError::invalid_params(
                "newPayloadV1 takes ExecutionPayloadV1 (no withdrawals): use newPayloadV2",
            ));
        }
        serde_json::from_value::<ExecutionPayloadV2>(raw)
            .map(ExecutionPayload::V2)
            .map_err(|e| RpcError::invalid_params(format!("ExecutionPayloadV2: {e}")))
    } else {
        serde_json::from_value::<ExecutionPayloadV1>(raw)
            .map(ExecutionPayload::V1)
            .map_err(|e| RpcError::invalid_params(format!("ExecutionPayloadV1: {e}")))
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
