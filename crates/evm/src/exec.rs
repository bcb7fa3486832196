//! Block validation and execution (Ethereum rules through alloy-evm's block executor on
//! revm), and block building from a list of candidate transactions.

use std::sync::Arc;

use alloy_consensus::{
    constants::EMPTY_OMMER_ROOT_HASH, proofs, Block, BlockBody, Header, ReceiptEnvelope,
    Transaction, TxEnvelope, TxReceipt,
};
use alloy_eips::{
    eip1559::BaseFeeParams, eip4844::DATA_GAS_PER_BLOB, eip4895::Withdrawal, eip7685::Requests,
};
use alloy_evm::{
    block::BlockExecutor,
    eth::{receipt_builder::AlloyReceiptBuilder, EthBlockExecutionCtx, EthBlockExecutorFactory},
    EthEvmFactory, EvmEnv, EvmFactory,
};
use alloy_primitives::{Address, Bloom, Bytes, B256, B64, U256};
use alloy_rlp::Encodable;
use revm::database::{states::bundle_state::BundleRetention, OriginalValuesKnown, State};

use super::spec::ChainSpec;
use super::state::{CodeStore, StateView, WorldState};
use alloy_consensus::transaction::Recovered;

/// EIP-7934: the largest RLP-encoded block accepted from Osaka on.
pub const MAX_RLP_BLOCK_SIZE: usize = 10_485_760 - 2_097_152;

/// A block with everything its execution produced.
#[derive(Debug, Clone)]
pub struct ExecutedBlock {
    pub hash: B256,
    pub block: Block<TxEnvelope>,
    pub senders: Vec<Address>,
    pub receipts: Vec<ReceiptEnvelope>,
    pub requests: Requests,
    /// The post-state; `None` once dropped for an old block (its header, body and receipts
    /// stay).
    pub state: Option<WorldState>,
    /// Sum of priority fees paid to the fee recipient (the payload's block value).
    pub fees: U256,
}

impl ExecutedBlock {
    pub fn header(&self) -> &Header {
        &self.block.header
    }
    pub fn number(&self) -> u64 {
        self.block.header.number
    }
}

/// What the executor needs to know about the parent and its ancestors.
pub struct ParentCtx<'a> {
    pub header: &'a Header,
    pub hash: B256,
    pub state: &'a WorldState,
    /// Hash of an ancestor (or the parent) by number, for BLOCKHASH and EIP-2935.
    pub ancestor_hash: &'a dyn Fn(u64) -> Option<B256>,
}

fn fail(msg: impl Into<String>) -> String {
    msg.into()
}

/// Header checks that need only the block itself.
/// The start of the reason a block whose deposit contract logged a malformed
/// `DepositEvent` is invalid.
pub const INVALID_DEPOSIT_LAYOUT: &str = "invalid deposit event layout";

/// keccak256("DepositEvent(bytes,bytes,bytes,bytes,bytes)").
const DEPOSIT_EVENT_TOPIC: B256 =
    alloy_primitives::b256!("649bbc62d0e31342afea4e5cd82d4049e7e1ee912fc0889aa790803be39038c5");

/// EIP-6110's check of a `DepositEvent`'s data: exactly the ABI layout the deposit
/// contract writes — 576 bytes, the five offsets 160, 256, 320, 384, 512 and the sizes
/// 48 (pubkey), 32 (withdrawal credentials), 8 (amount), 96 (signature), 8 (index).
/// Anything else makes the block invalid, even when a lenient ABI decoder would read it.
pub fn deposit_layout(data: &[u8]) -> Result<(), String> {
    if data.len() != 576 {
        return Err(format!("{} bytes of event data, not 576", data.len()));
    }
    let word = |at: usize| U256::from_be_slice(&data[at..at + 32]);
    let fields = [
        ("pubkey", 160u64, 48u64),
        ("withdrawal_credentials", 256, 32),
        ("amount", 320, 8),
        ("signature", 384, 96),
        ("index", 512, 8),
    ];
    for (k, (name, offset, size)) in fields.iter().enumerate() {
        let got = word(32 * k);
        if got != U256::from(*offset) {
            return Err(format!("{name} offset {got}, not {offset}"));
        }
        let got = word(*offset as usize);
        if got != U256::from(*size) {
            return Err(format!("{name} size {got}, not {size}"));
        }
    }
    Ok(())
}

/// The start of the reason a block holding a transaction in its network form is invalid.
pub const NETWORK_FORM_IN_BLOCK: &str = "blob transaction in its network form in a block";

pub fn check_standalone(spec: &ChainSpec, block: &Block<TxEnvelope>) -> Result<(), String> {
    let h = &block.header;
    let ts = h.timestamp;
    if h.ommers_hash != EMPTY_OMMER_ROOT_HASH || !block.body.ommers.is_empty() {
        return Err(fail("ommers are not allowed after the merge"));
    }
    if !h.difficulty.is_zero() {
        return Err(fail("difficulty must be 0 after the merge"));
    }
    if h.nonce != B64::ZERO {
        return Err(fail("nonce must be 0 after the merge"));
    }
    if h.extra_data.len() > 32 {
        return Err(format!(
            "extra data is {} bytes, at most 32 allowed",
            h.extra_data.len()
        ));
    }
    if h.gas_used > h.gas_limit {
        return Err(format!(
            "gas used {} exceeds gas limit {}",
            h.gas_used, h.gas_limit
        ));
    }
    if h.gas_limit > i64::MAX as u64 {
        return Err(fail("gas limit above 2^63-1"));
    }
    if h.base_fee_per_gas.is_none() {
        return Err(fail("missing base fee"));
    }
    // Only the canonical form of each transaction belongs in a block: a blob transaction
    // wrapped with its blobs, commitments and proofs is its network form (EIP-4844), which
    // alloy's envelope decodes all the same.
    if let Some((i, t)) = block.body.transactions.iter().enumerate().find(|(_, t)| {
        matches!(t, TxEnvelope::Eip4844(s) if matches!(s.tx(), alloy_consensus::TxEip4844Variant::TxEip4844WithSidecar(_)))
    }) {
        return Err(format!(
            "{NETWORK_FORM_IN_BLOCK}: transaction {i} ({}) carries its blobs, commitments and proofs; a block holds only the canonical form",
            t.tx_hash()
        ));
    }
    let tx_root = proofs::calculate_transaction_root(&block.body.transactions);
    if tx_root != h.transactions_root {
        return Err(format!(
            "transactions root mismatch: header {} computed {tx_root}",
            h.transactions_root
        ));
    }
    match (
        spec.shanghai(ts),
        &block.body.withdrawals,
        h.withdrawals_root,
    ) {
        (true, Some(w), Some(root)) => {
            let got = proofs::calculate_withdrawals_root(w);
            if got != root {
                return Err(format!(
                    "withdrawals root mismatch: header {root} computed {got}"
                ));
            }
        }
        (true, _, _) => return Err(fail("missing withdrawals (Shanghai is active)")),
        (false, None, None) => {}
        (false, _, _) => return Err(fail("withdrawals present before Shanghai")),
    }
    let cancun = spec.cancun(ts);
    for (name, present) in [
        ("blob gas used", h.blob_gas_used.is_some()),
        ("excess blob gas", h.excess_blob_gas.is_some()),
        (
            "parent beacon block root",
            h.parent_beacon_block_root.is_some(),
        ),
    ] {
        if present != cancun {
            return Err(if cancun {
                format!("missing {name} (Cancun is active)")
            } else {
                format!("{name} present before Cancun")
            });
        }
    }
    if spec.prague(ts) != h.requests_hash.is_some() {
        return Err(if spec.prague(ts) {
            fail("missing requests hash (Prague is active)")
        } else {
            fail("requests hash present before Prague")
        });
    }
    if let Some(params) = spec.blob_params(ts) {
        let used = h.blob_gas_used.unwrap_or_default();
        if !used.is_multiple_of(DATA_GAS_PER_BLOB) {
            return Err(format!(
                "blob gas used {used} is not a multiple of {DATA_GAS_PER_BLOB}"
            ));
        }
        if used > params.max_blob_gas_per_block() {
            return Err(format!(
                "blob gas used {used} exceeds the maximum {}",
                params.max_blob_gas_per_block()
            ));
        }
        let sum: u64 = block
            .body
            .transactions
            .iter()
            .filter_map(|t| t.blob_gas_used())
            .sum();
        if sum != used {
            return Err(format!(
                "blob gas used {used} differs from the transactions' {sum}"
            ));
        }
    }
    if spec.osaka(ts) {
        let size = block.length();
        if size > MAX_RLP_BLOCK_SIZE {
            return Err(format!(
                "block is {size} bytes RLP, above the Osaka limit {MAX_RLP_BLOCK_SIZE}"
            ));
        }
    }
    Ok(())
}

/// Header checks against the parent.
pub fn check_against_parent(
    spec: &ChainSpec,
    h: &Header,
    parent: &Header,
    parent_hash: B256,
) -> Result<(), String> {
    if h.parent_hash != parent_hash {
        return Err(fail("parent hash mismatch"));
    }
    if h.number != parent.number + 1 {
        return Err(format!(
            "block number {} does not follow parent {}",
            h.number, parent.number
        ));
    }
    if h.timestamp <= parent.timestamp {
        return Err(format!(
            "timestamp {} is not after the parent's {}",
            h.timestamp, parent.timestamp
        ));
    }
    let limit = parent.gas_limit / 1024;
    if h.gas_limit.abs_diff(parent.gas_limit) >= limit {
        return Err(format!(
            "gas limit {} changes too much from parent {} (by less than {limit} allowed)",
            h.gas_limit, parent.gas_limit
        ));
    }
    if h.gas_limit < 5000 {
        return Err(fail("gas limit below 5000"));
    }
    let expected = next_base_fee(parent);
    if h.base_fee_per_gas != Some(expected) {
        return Err(format!(
            "base fee {:?} is not the expected {expected}",
            h.base_fee_per_gas
        ));
    }
    if let Some(params) = spec.blob_params(h.timestamp) {
        let expected = parent.next_block_excess_blob_gas(params).unwrap_or(0);
        if h.excess_blob_gas != Some(expected) {
            return Err(format!(
                "excess blob gas {:?} is not the expected {expected}",
                h.excess_blob_gas
            ));
        }
    }
    Ok(())
}

/// The base fee of the block after `parent` (EIP-1559, Ethereum parameters).
pub fn next_base_fee(parent: &Header) -> u64 {
    parent
        .next_block_base_fee(BaseFeeParams::ethereum())
        .unwrap_or(alloy_eips::eip1559::INITIAL_BASE_FEE)
}

/// Recover every sender; a bad signature makes the block invalid. `known` holds senders
/// this engine already recovered itself (its pool's, by transaction hash: the hash covers
/// the signature); the rest are recovered, large blocks split across the machine's cores
/// (recovery is most of the cost of importing transfers).
pub fn recover_senders(
    block: &Block<TxEnvelope>,
    known: &(dyn Fn(&B256) -> Option<Address> + Sync),
) -> Result<Vec<Address>, String> {
    use alloy_consensus::transaction::SignerRecoverable;
    let txs = &block.body.transactions;
    let recover = |offset: usize, chunk: &[TxEnvelope]| -> Result<Vec<Address>, String> {
        chunk
            .iter()
            .enumerate()
            .map(|(i, tx)| {
                if let Some(sender) = known(tx.tx_hash()) {
                    return Ok(sender);
                }
                tx.recover_signer().map_err(|e| {
                    format!(
                        "transaction {} ({}): bad signature: {e}",
                        offset + i,
                        tx.tx_hash()
                    )
                })
            })
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if txs.len() < 256 || threads == 1 {
        return recover(0, txs);
    }
    let size = txs.len().div_ceil(threads);
    let parts: Vec<Result<Vec<Address>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = txs
            .chunks(size)
            .enumerate()
            .map(|(n, chunk)| s.spawn(move || recover(n * size, chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("signature recovery panicked".into()))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(txs.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

impl Outcome {
    fn into_block(
        self,
        hash: B256,
        block: Block<TxEnvelope>,
        senders: Vec<Address>,
    ) -> ExecutedBlock {
        ExecutedBlock {
            hash,
            block,
            senders,
            receipts: self.receipts,
            requests: self.requests,
            state: Some(self.state),
            fees: self.fees,
        }
    }
}

struct Outcome {
    /// The transactions included (building mode only; a validated block has its own).
    included: Vec<(TxEnvelope, Address)>,
    receipts: Vec<ReceiptEnvelope>,
    requests: Requests,
    gas_used: u64,
    blob_gas_used: u64,
    state: WorldState,
    fees: U256,
}

/// Execute transactions on top of `parent`. In building mode a transaction that cannot be
/// included is skipped (and reported through `skipped`); in validation mode it fails the block.
#[allow(clippy::too_many_arguments)]
fn run(
    spec: &Arc<ChainSpec>,
    codes: &CodeStore,
    parent: &ParentCtx<'_>,
    env: EvmEnv,
    beacon_root: Option<B256>,
    withdrawals: Option<&[Withdrawal]>,
    txs: &mut dyn Iterator<Item = (TxEnvelope, Address)>,
    building: bool,
    skipped: &mut dyn FnMut(&TxEnvelope, &Address, String),
) -> Result<Outcome, String> {
    let view = StateView {
        state: parent.state,
        codes,
        block_hash: parent.ancestor_hash,
    };
    let mut db = State::builder()
        .with_database(view)
        .with_bundle_update()
        .build();
    let basefee = env.block_env.basefee;
    let timestamp: u64 = env.block_env.timestamp.saturating_to();
    let gas_limit = env.block_env.gas_limit;
    let factory = EthBlockExecutorFactory::new(
        AlloyReceiptBuilder::default(),
        spec.clone(),
        EthEvmFactory::default(),
    );
    let evm = EthEvmFactory::default().create_evm(&mut db, env);
    let ctx = EthBlockExecutionCtx {
        parent_hash: parent.hash,
        parent_beacon_block_root: beacon_root,
        ommers: &[],
        withdrawals: withdrawals.map(std::borrow::Cow::Borrowed),
        extra_data: Bytes::new(),
        tx_count_hint: None,
        slot_number: None,
    };
    // System calls with the 30M gas of the forks run here (revm 43 gives them more).
    let mut executor = alloy_evm::eth::EthBlockExecutor::new(
        super::syscall::SpecSystemCalls(evm),
        ctx,
        factory.spec(),
        factory.receipt_builder(),
    );
    executor
        .apply_pre_execution_changes()
        .map_err(|e| format!("pre-block system call failed: {e}"))?;
    let mut included = Vec::new();
    let mut fees = U256::ZERO;
    let mut cumulative = 0u64;
    for (i, (tx, sender)) in txs.enumerate() {
        if building && tx.gas_limit() > gas_limit.saturating_sub(cumulative) {
            skipped(
                &tx,
                &sender,
                "does not fit in the block's remaining gas".into(),
            );
            continue;
        }
        let rec = Recovered::new_unchecked(&tx, sender);
        match executor.execute_transaction(rec) {
            Ok(gas) => {
                let used = gas.tx_gas_used();
                cumulative += used;
                let tip = tx.effective_tip_per_gas(basefee).unwrap_or_default();
                fees += U256::from(tip) * U256::from(used);
                if building {
                    included.push((tx, sender));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if building {
                    skipped(&tx, &sender, msg);
                    continue;
                }
                return Err(format!("transaction {i} ({}): {msg}", tx.tx_hash()));
            }
        }
    }
    if spec.prague(timestamp) {
        if let Some(contract) = spec.deposit_contract {
            for (i, r) in executor.receipts().iter().enumerate() {
                for log in r.logs().iter().filter(|l| l.address == contract) {
                    if log.topics().first() == Some(&DEPOSIT_EVENT_TOPIC) {
                        deposit_layout(&log.data.data).map_err(|why| {
                            format!("{INVALID_DEPOSIT_LAYOUT} (transaction {i}): {why}")
                        })?;
                    }
                }
            }
        }
    }
    let (_evm, result) = executor.finish().map_err(|e| e.to_string())?;
    db.merge_transitions(BundleRetention::PlainState);
    let bundle = db.take_bundle();
    let changes = bundle.to_plain_state(OriginalValuesKnown::Yes);
    let mut state = parent.state.clone();
    state.apply(&changes, codes);
    if spec.prague(timestamp) {
        // EIP-7002 and EIP-7251: a block whose request contracts have no code is invalid
        // (the system calls cannot create code, so the post-state tells).
        for (eip, addr) in [
            (
                "EIP-7002",
                alloy_eips::eip7002::WITHDRAWAL_REQUEST_PREDEPLOY_ADDRESS,
            ),
            (
                "EIP-7251",
                alloy_eips::eip7251::CONSOLIDATION_REQUEST_PREDEPLOY_ADDRESS,
            ),
        ] {
            if state
                .account(&addr)
                .is_none_or(|a| a.code_hash == revm::primitives::KECCAK_EMPTY)
            {
                return Err(format!("{eip} system contract {addr} has no code"));
            }
        }
    }
    Ok(Outcome {
        included,
        receipts: result.receipts,
        requests: result.requests,
        gas_used: result.gas_used,
        blob_gas_used: result.blob_gas_used,
        state,
        fees,
    })
}

fn logs_bloom(receipts: &[ReceiptEnvelope]) -> Bloom {
    receipts.iter().fold(Bloom::ZERO, |acc, r| acc | r.bloom())
}

/// Validate and execute `block` on top of `parent`.
pub fn execute_block(
    spec: &Arc<ChainSpec>,
    codes: &CodeStore,
    parent: &ParentCtx<'_>,
    block: Block<TxEnvelope>,
    hash: B256,
    known: &(dyn Fn(&B256) -> Option<Address> + Sync),
) -> Result<ExecutedBlock, String> {
    check_standalone(spec, &block)?;
    check_against_parent(spec, &block.header, parent.header, parent.hash)?;
    let senders = recover_senders(&block, known)?;
    let h = &block.header;
    let env = EvmEnv::for_eth_block(h, &**spec, spec.chain_id, spec.blob_params(h.timestamp));
    let mut txs = block
        .body
        .transactions
        .iter()
        .cloned()
        .zip(senders.iter().copied());
    let out = run(
        spec,
        codes,
        parent,
        env,
        h.parent_beacon_block_root,
        block.body.withdrawals.as_ref().map(|w| w.as_slice()),
        &mut txs,
        false,
        &mut |_, _, _| {},
    )?;
    if out.gas_used != h.gas_used {
        return Err(format!(
            "gas used mismatch: header {} execution {}",
            h.gas_used, out.gas_used
        ));
    }
    if spec.cancun(h.timestamp) && Some(out.blob_gas_used) != h.blob_gas_used {
        return Err(format!(
            "blob gas used mismatch: header {:?} execution {}",
            h.blob_gas_used, out.blob_gas_used
        ));
    }
    let receipts_root = proofs::calculate_receipt_root(&out.receipts);
    if receipts_root != h.receipts_root {
        return Err(format!(
            "receipts root mismatch: header {} computed {receipts_root}",
            h.receipts_root
        ));
    }
    let bloom = logs_bloom(&out.receipts);
    if bloom != h.logs_bloom {
        return Err(fail("logs bloom mismatch"));
    }
    if let Some(rh) = h.requests_hash {
        let got = out.requests.requests_hash();
        if got != rh {
            return Err(format!(
                "requests hash mismatch: header {rh} computed {got}"
            ));
        }
    }
    let root = out.state.root();
    if root != h.state_root {
        return Err(format!(
            "state root mismatch: header {} computed {root}",
            h.state_root
        ));
    }
    Ok(out.into_block(hash, block, senders))
}

/// What a consensus client asks for in `forkchoiceUpdated` with attributes.
#[derive(Debug, Clone)]
pub struct BuildAttributes {
    pub timestamp: u64,
    pub prev_randao: B256,
    pub fee_recipient: Address,
    pub withdrawals: Option<Vec<Withdrawal>>,
    pub parent_beacon_block_root: Option<B256>,
    pub gas_limit: u64,
    pub extra_data: Bytes,
}

/// Build a block on `parent` from `candidates` (in the order given; those that cannot be
/// included are skipped and reported).
pub fn build_block(
    spec: &Arc<ChainSpec>,
    codes: &CodeStore,
    parent: &ParentCtx<'_>,
    attrs: &BuildAttributes,
    candidates: &mut dyn Iterator<Item = (TxEnvelope, Address)>,
    skipped: &mut dyn FnMut(&TxEnvelope, &Address, String),
) -> Result<ExecutedBlock, String> {
    let ts = attrs.timestamp;
    let blob_params = spec.blob_params(ts);
    let base_fee = next_base_fee(parent.header);
    let excess_blob_gas =
        blob_params.map(|p| parent.header.next_block_excess_blob_gas(p).unwrap_or(0));
    let mut header = Header {
        parent_hash: parent.hash,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: attrs.fee_recipient,
        difficulty: U256::ZERO,
        number: parent.header.number + 1,
        gas_limit: attrs.gas_limit,
        timestamp: ts,
        extra_data: attrs.extra_data.clone(),
        mix_hash: attrs.prev_randao,
        nonce: B64::ZERO,
        base_fee_per_gas: Some(base_fee),
        excess_blob_gas,
        parent_beacon_block_root: attrs.parent_beacon_block_root,
        ..Default::default()
    };
    let env = EvmEnv::for_eth_block(&header, &**spec, spec.chain_id, blob_params);
    let mut out = run(
        spec,
        codes,
        parent,
        env,
        attrs.parent_beacon_block_root,
        attrs.withdrawals.as_deref(),
        candidates,
        true,
        skipped,
    )?;
    let (txs, senders): (Vec<_>, Vec<_>) = std::mem::take(&mut out.included).into_iter().unzip();
    header.state_root = out.state.root();
    header.transactions_root = proofs::calculate_transaction_root(&txs);
    header.receipts_root = proofs::calculate_receipt_root(&out.receipts);
    header.logs_bloom = logs_bloom(&out.receipts);
    header.gas_used = out.gas_used;
    header.withdrawals_root = attrs
        .withdrawals
        .as_deref()
        .map(proofs::calculate_withdrawals_root);
    header.blob_gas_used = spec.cancun(ts).then_some(out.blob_gas_used);
    header.requests_hash = spec.prague(ts).then(|| out.requests.requests_hash());
    let block = Block {
        header,
        body: BlockBody {
            transactions: txs,
            ommers: vec![],
            withdrawals: attrs.withdrawals.clone().map(Into::into),
        },
    };
    let hash = block.header.hash_slow();
    Ok(out.into_block(hash, block, senders))
}

/// Cumulative gas of receipt `i` minus that of `i - 1`.
pub fn gas_used_by(receipts: &[ReceiptEnvelope], i: usize) -> u64 {
    let cum = receipts[i].cumulative_gas_used();
    if i == 0 {
        cum
    } else {
        cum - receipts[i - 1].cumulative_gas_used()
    }
}

#[cfg(test)]
mod deposit_tests {
    use super::*;

    /// The deposit contract's own ABI encoding of a `DepositEvent`.
    fn canonical() -> Vec<u8> {
        let mut d = vec![0u8; 576];
        let mut put = |at: usize, v: u64| d[at + 24..at + 32].copy_from_slice(&v.to_be_bytes());
        for (k, (offset, size)) in [(160, 48), (256, 32), (320, 8), (384, 96), (512, 8)]
            .into_iter()
            .enumerate()
        {
            put(32 * k, offset);
            put(offset as usize, size);
        }
        d
    }

    #[test]
    fn only_the_deposit_contracts_own_layout_is_valid() {
        assert_eq!(deposit_layout(&canonical()), Ok(()));
        let mut d = canonical();
        d[64 + 31] = 0x41; // amount offset 321
        assert!(deposit_layout(&d)
            .unwrap_err()
            .contains("amount offset 321"));
        let mut d = canonical();
        d[512 + 31] = 9; // index size 9
        assert!(deposit_layout(&d).unwrap_err().contains("index size 9"));
        let mut d = canonical();
        d.push(0);
        assert!(deposit_layout(&d).unwrap_err().contains("577 bytes"));
    }
}
