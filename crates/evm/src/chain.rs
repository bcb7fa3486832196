//! The block tree: every executed block (canonical or side branch) with its post-state,
//! remembered verdicts for invalid blocks, and the forkchoice (head, safe, finalized).

use std::collections::HashMap;
use std::sync::Arc;

use alloy_consensus::{Block, BlockBody, Header, TxEnvelope};
use alloy_eips::eip7685::Requests;
use alloy_primitives::{Address, B256, U256};

use super::exec::{self, BuildAttributes, ExecutedBlock, ParentCtx};
use super::spec::ChainSpec;
use super::state::{CodeStore, WorldState};
use super::store::{Flush, Store, FLUSH_EVERY};

/// How many ancestors BLOCKHASH can see.
const BLOCKHASH_WINDOW: u64 = 256;
/// With a store, canonical blocks keep their post-state in memory this far below the
/// flat state's block (older ones keep header, body and receipts; their state is gone,
/// as on a Geth or Reth full node).
pub const KEEP_STATES: u64 = 128;
/// With a store, blocks more than this far below the oldest of the state block, safe and
/// finalized leave memory; they are read back from the store when asked for. More than
/// the BLOCKHASH window, so that executing a new block never needs the store.
pub const KEEP_BLOCKS: u64 = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertError {
    /// The parent is not known: the caller must supply it first.
    UnknownParent,
    /// This block (or an ancestor) is invalid. `latest_valid` is the newest valid ancestor.
    Invalid {
        latest_valid: Option<B256>,
        reason: String,
    },
}

/// Why a forkchoice update was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForkchoiceError {
    /// The update itself is wrong (-38002).
    Invalid(String),
    /// It could not be made durable (nothing was applied).
    Storage(String),
}

impl std::fmt::Display for ForkchoiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForkchoiceError::Invalid(m) => f.write_str(m),
            ForkchoiceError::Storage(m) => write!(f, "cannot store the forkchoice: {m}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Invalid {
    latest_valid: Option<B256>,
    reason: String,
}

pub struct Chain {
    pub spec: Arc<ChainSpec>,
    pub codes: CodeStore,
    blocks: HashMap<B256, Arc<ExecutedBlock>>,
    invalid: HashMap<B256, Invalid>,
    /// Canonical hashes by number, genesis first.
    canonical: Vec<B256>,
    head: B256,
    safe: B256,
    finalized: B256,
    /// Canonical transactions: hash → (block hash, index).
    tx_index: HashMap<B256, (B256, usize)>,
    /// Where blocks, verdicts, forkchoice and state are kept across restarts (none: memory
    /// only, as for fixtures and tests).
    store: Option<Store>,
    /// The block whose state the store holds flat.
    state_block: B256,
    /// Canonical blocks below this number have no state in memory.
    states_from: u64,
    /// Canonical blocks below this number are not in memory (only in the store).
    blocks_from: u64,
}

impl Chain {
    pub fn new(spec: Arc<ChainSpec>, codes: CodeStore, genesis: Header, state: WorldState) -> Self {
        let withdrawals = genesis.withdrawals_root.map(|_| Default::default());
        let hash = genesis.hash_slow();
        let block = Block {
            header: genesis,
            body: BlockBody {
                transactions: vec![],
                ommers: vec![],
                withdrawals,
            },
        };
        let executed = ExecutedBlock {
            hash,
            block,
            senders: vec![],
            receipts: vec![],
            requests: Requests::default(),
            state: Some(state),
            fees: U256::ZERO,
        };
        let mut blocks = HashMap::new();
        blocks.insert(hash, Arc::new(executed));
        Chain {
            spec,
            codes,
            blocks,
            invalid: HashMap::new(),
            canonical: vec![hash],
            head: hash,
            safe: hash,
            finalized: hash,
            tx_index: HashMap::new(),
            store: None,
            state_block: hash,
            states_from: 0,
            blocks_from: 0,
        }
    }

    /// Keep this chain in `store`: a new store starts at this genesis; a store holding a
    /// chain is read back (blocks, verdicts, forkchoice), its flat state checked against
    /// the state root of its block, and the blocks above it re-executed to the saved head.
    pub fn with_store(mut self, mut store: Store) -> Result<Chain, String> {
        let genesis = self.genesis_hash();
        let Some(saved) = store.saved()? else {
            store.init(&self.blocks[&genesis], &self.codes)?;
            self.store = Some(store);
            return Ok(self);
        };
        let where_ = store.path().display().to_string();
        if saved.genesis != genesis {
            return Err(format!(
                "{where_} holds a chain with genesis {}, but the genesis file gives {genesis}: give the engine the genesis of its chain, or another --datadir for a new chain",
                saved.genesis
            ));
        }
        let started = std::time::Instant::now();
        let damaged = |what: String| super::store::damaged(store.path(), &what);
        // The state block, safe and finalized must be on the saved head's chain; blocks
        // more than KEEP_BLOCKS below the oldest of them stay on disk.
        let mut numbers = Vec::new();
        for (name, h) in [
            ("state", saved.state_block),
            ("safe", saved.safe),
            ("finalized", saved.finalized),
        ] {
            let b = store
                .block(&h)?
                .ok_or_else(|| damaged(format!("the {name} block {h} is missing")))?;
            numbers.push((name, h, b.number()));
        }
        let state_number = numbers[0].2;
        let floor = numbers
            .iter()
            .map(|n| n.2)
            .min()
            .unwrap_or(0)
            .saturating_sub(KEEP_BLOCKS);
        let path = store.chain_down_to(saved.head, floor)?;
        for (name, h, n) in &numbers {
            if !path.iter().any(|b| b.hash == *h) {
                return Err(damaged(format!(
                    "the {name} block {h} ({n}) is not on the saved head's chain ({})",
                    saved.head
                )));
            }
        }
        let mut canonical = if floor > 0 {
            store.canonical_hashes(floor - 1)?
        } else {
            Vec::new()
        };
        let lowest = path.last().expect("the walk returns at least the head");
        if lowest.number() != floor
            || (floor > 0 && canonical.last() != Some(&lowest.header().parent_hash))
            || canonical.first().unwrap_or(&lowest.hash) != &genesis
        {
            return Err(damaged(format!(
                "the saved chain does not link block {floor} to genesis {genesis}"
            )));
        }
        let state = store.state(&self.codes)?;
        let mut reexecuted = 0usize;
        if floor > 0 {
            // Genesis is not among the blocks kept in memory.
            self.blocks.remove(&genesis);
        }
        for mut b in path.into_iter().rev() {
            let (hash, number) = (b.hash, b.number());
            if number <= state_number {
                canonical.push(hash);
            }
            match number.cmp(&state_number) {
                std::cmp::Ordering::Less if number == 0 => {}
                std::cmp::Ordering::Less => {
                    self.blocks.insert(hash, Arc::new(b));
                }
                std::cmp::Ordering::Equal => {
                    let root = state.root();
                    if root != b.header().state_root {
                        return Err(damaged(format!(
                            "the saved state of block {number} ({hash}) has root {root}, its header says {}",
                            b.header().state_root
                        )));
                    }
                    b.state = Some(state.clone());
                    self.blocks.insert(hash, Arc::new(b));
                }
                std::cmp::Ordering::Greater => {
                    let senders: HashMap<B256, Address> = b
                        .block
                        .body
                        .transactions
                        .iter()
                        .map(|t| *t.tx_hash())
                        .zip(b.senders.iter().copied())
                        .collect();
                    self.insert_with_senders(b.block, hash, &|h| senders.get(h).copied())
                        .map_err(|e| {
                            let why = match e {
                                InsertError::UnknownParent => "its parent is missing".to_string(),
                                InsertError::Invalid { reason, .. } => reason,
                            };
                            damaged(format!(
                                "saved block {number} ({hash}) does not execute again ({why}); if the genesis file or chainctl changed since it was saved, run the engine with what made this chain"
                            ))
                        })?;
                    reexecuted += 1;
                }
            }
        }
        // Canonical up to the state block; the blocks above it become canonical below,
        // with their transactions indexed (those up to the state block are on disk).
        self.canonical = canonical;
        self.head = saved.state_block;
        for (hash, latest_valid, reason) in store.invalid()? {
            self.invalid.insert(
                hash,
                Invalid {
                    latest_valid,
                    reason,
                },
            );
        }
        self.reorg_to(saved.head);
        store.mark_persisted(self.canonical[floor as usize..].iter().copied());
        self.safe = saved.safe;
        self.finalized = saved.finalized;
        self.state_block = saved.state_block;
        // Blocks below the state block were read back without state.
        self.states_from = state_number;
        self.blocks_from = floor;
        self.prune();
        tracing::info!(
            store = %where_,
            head = self.head().number(),
            finalized = self.finalized().number(),
            state_block = state_number,
            in_memory_from = floor,
            reexecuted,
            ms = started.elapsed().as_millis() as u64,
            "opened the saved chain"
        );
        self.store = Some(store);
        Ok(self)
    }

    /// Drop the in-memory state of canonical blocks more than [`KEEP_STATES`] below the
    /// flat state's block, and blocks more than [`KEEP_BLOCKS`] below the oldest of it,
    /// safe and finalized (the store has them), with side branches below finalized.
    fn prune(&mut self) {
        let number = |h: &B256| self.blocks.get(h).map(|b| b.number());
        let (Some(s), Some(safe), Some(fin)) = (
            number(&self.state_block),
            number(&self.safe),
            number(&self.finalized),
        ) else {
            return;
        };
        let until = s.saturating_sub(KEEP_STATES);
        for n in self.states_from..until {
            if let Some(h) = self.canonical_hash(n) {
                if let Some(b) = self.blocks.get_mut(&h) {
                    if b.state.is_some() {
                        let mut stateless = ExecutedBlock::clone(b);
                        stateless.state = None;
                        *b = Arc::new(stateless);
                    }
                }
            }
        }
        self.states_from = self.states_from.max(until);
        let floor = s.min(safe).min(fin).saturating_sub(KEEP_BLOCKS);
        if floor <= self.blocks_from {
            return;
        }
        let mut gone = Vec::new();
        for n in self.blocks_from..floor {
            let Some(h) = self.canonical_hash(n) else {
                continue;
            };
            if let Some(b) = self.blocks.remove(&h) {
                for tx in &b.block.body.transactions {
                    self.tx_index.remove(tx.tx_hash());
                }
                gone.push(h);
            }
        }
        self.blocks_from = floor;
        // Side branches at or below finalized can never become canonical.
        let canonical = &self.canonical;
        self.blocks.retain(|h, b| {
            let keep = b.number() > fin || canonical.get(b.number() as usize) == Some(h);
            if !keep {
                gone.push(*h);
            }
            keep
        });
        if let Some(store) = self.store.as_mut() {
            store.forget(gone);
        }
    }

    /// The oldest canonical block whose state is kept (queries of older ones are refused).
    pub fn oldest_state(&self) -> u64 {
        self.states_from
    }

    /// The store the chain is kept in, if any.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    pub fn genesis_hash(&self) -> B256 {
        self.canonical[0]
    }
    pub fn head(&self) -> &Arc<ExecutedBlock> {
        &self.blocks[&self.head]
    }
    /// The head's state (always kept: states are dropped only far below the finalized
    /// block, and the head is never below it).
    pub fn head_state(&self) -> &WorldState {
        self.head()
            .state
            .as_ref()
            .expect("the head's state is always kept")
    }
    pub fn safe(&self) -> &Arc<ExecutedBlock> {
        &self.blocks[&self.safe]
    }
    pub fn finalized(&self) -> &Arc<ExecutedBlock> {
        &self.blocks[&self.finalized]
    }
    /// A block by hash: from memory, else (an old one) from the store.
    pub fn block(&self, hash: &B256) -> Option<Arc<ExecutedBlock>> {
        if let Some(b) = self.blocks.get(hash) {
            return Some(b.clone());
        }
        match self.store.as_ref()?.block(hash) {
            Ok(b) => b.map(Arc::new),
            Err(e) => {
                tracing::error!(error = %e, "cannot read a block from the store");
                None
            }
        }
    }
    pub fn canonical_hash(&self, number: u64) -> Option<B256> {
        self.canonical.get(usize::try_from(number).ok()?).copied()
    }
    pub fn canonical(&self, number: u64) -> Option<Arc<ExecutedBlock>> {
        self.block(&self.canonical_hash(number)?)
    }
    pub fn is_canonical(&self, hash: &B256) -> bool {
        self.block(hash)
            .is_some_and(|b| self.canonical_hash(b.number()) == Some(*hash))
    }
    /// Where a canonical transaction is: (block, index).
    pub fn tx_location(&self, tx: &B256) -> Option<(B256, usize)> {
        if let Some(at) = self.tx_index.get(tx) {
            return Some(*at);
        }
        match self.store.as_ref()?.tx_location(tx) {
            Ok(at) => at,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a transaction's location from the store");
                None
            }
        }
    }
    /// A remembered INVALID verdict: (latest valid ancestor, reason).
    pub fn invalid(&self, hash: &B256) -> Option<(Option<B256>, String)> {
        self.invalid
            .get(hash)
            .map(|i| (i.latest_valid, i.reason.clone()))
    }

    /// Hashes of `from` and its ancestors, by number, at most `BLOCKHASH_WINDOW` deep.
    pub fn ancestors(&self, from: B256) -> HashMap<u64, B256> {
        let mut out = HashMap::new();
        let mut cur = from;
        while let Some(b) = self.blocks.get(&cur) {
            out.insert(b.number(), cur);
            if out.len() as u64 > BLOCKHASH_WINDOW || b.number() == 0 {
                break;
            }
            cur = b.header().parent_hash;
        }
        out
    }

    /// Whether `ancestor` is `hash` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: &B256, hash: &B256) -> bool {
        let Some(a) = self.blocks.get(ancestor) else {
            return false;
        };
        let mut cur = *hash;
        while let Some(b) = self.blocks.get(&cur) {
            if cur == *ancestor {
                return true;
            }
            if b.number() <= a.number() {
                return false;
            }
            cur = b.header().parent_hash;
        }
        false
    }

    /// Run `f` on `parent` as the parent of a new block; `None` when its state is gone.
    fn with_parent<T>(
        &self,
        parent: &ExecutedBlock,
        f: impl FnOnce(&ParentCtx<'_>) -> T,
    ) -> Option<T> {
        let state = parent.state.as_ref()?;
        let ancestors = self.ancestors(parent.hash);
        let lookup = move |n: u64| ancestors.get(&n).copied();
        let ctx = ParentCtx {
            header: parent.header(),
            hash: parent.hash,
            state,
            ancestor_hash: &lookup,
        };
        Some(f(&ctx))
    }

    /// Validate, execute and remember `block`. Known blocks return their earlier result;
    /// a verdict never changes.
    pub fn insert(
        &mut self,
        block: Block<TxEnvelope>,
        hash: B256,
    ) -> Result<Arc<ExecutedBlock>, InsertError> {
        self.insert_with_senders(block, hash, &|_| None)
    }

    /// [`Chain::insert`], taking the senders of transactions this engine recovered itself
    /// (by hash) instead of recovering them again.
    pub fn insert_with_senders(
        &mut self,
        block: Block<TxEnvelope>,
        hash: B256,
        known: &(dyn Fn(&B256) -> Option<Address> + Sync),
    ) -> Result<Arc<ExecutedBlock>, InsertError> {
        // Known: in memory, or an old block the store keeps.
        if let Some(b) = self.block(&hash) {
            return Ok(b);
        }
        if let Some(i) = self.invalid.get(&hash) {
            return Err(InsertError::Invalid {
                latest_valid: i.latest_valid,
                reason: i.reason.clone(),
            });
        }
        let parent_hash = block.header.parent_hash;
        if let Some(i) = self.invalid.get(&parent_hash).cloned() {
            let reason = format!("links to invalid ancestor {parent_hash}: {}", i.reason);
            self.invalid.insert(
                hash,
                Invalid {
                    latest_valid: i.latest_valid,
                    reason: reason.clone(),
                },
            );
            return Err(InsertError::Invalid {
                latest_valid: i.latest_valid,
                reason,
            });
        }
        let Some(parent) = self.blocks.get(&parent_hash).cloned() else {
            return Err(InsertError::UnknownParent);
        };
        let spec = self.spec.clone();
        let codes = self.codes.clone();
        // A parent whose state is gone lies far below the finalized block: its children can
        // never become canonical, and cannot be checked (as on a pruned node: SYNCING).
        let Some(result) = self.with_parent(&parent, |ctx| {
            exec::execute_block(&spec, &codes, ctx, block, hash, known)
        }) else {
            return Err(InsertError::UnknownParent);
        };
        match result {
            Ok(executed) => {
                let executed = Arc::new(executed);
                self.blocks.insert(hash, executed.clone());
                Ok(executed)
            }
            Err(reason) => {
                if let Some(store) = &self.store {
                    if let Err(e) = store.put_invalid(&hash, Some(parent_hash), &reason) {
                        tracing::warn!(%hash, error = %e, "cannot store an INVALID verdict");
                    }
                }
                self.invalid.insert(
                    hash,
                    Invalid {
                        latest_valid: Some(parent_hash),
                        reason: reason.clone(),
                    },
                );
                Err(InsertError::Invalid {
                    latest_valid: Some(parent_hash),
                    reason,
                })
            }
        }
    }

    /// Remember a block this engine built (already executed), so that `newPayload` of it
    /// costs nothing.
    pub fn insert_built(&mut self, block: Arc<ExecutedBlock>) {
        self.blocks.entry(block.hash).or_insert(block);
    }

    /// Make `head` canonical with `safe` and `finalized` (zero hash: unchanged).
    /// Refuses a head that would revert the finalized block.
    /// Returns the transactions of blocks that left the canonical chain (for the pool).
    pub fn set_forkchoice(
        &mut self,
        head: B256,
        safe: B256,
        finalized: B256,
    ) -> Result<Vec<(TxEnvelope, alloy_primitives::Address)>, ForkchoiceError> {
        let invalid = |m: String| Err(ForkchoiceError::Invalid(m));
        if !self.blocks.contains_key(&head) {
            return invalid(format!("unknown head {head}"));
        }
        for (name, h) in [("finalized", finalized), ("safe", safe)] {
            if h != B256::ZERO && !self.is_ancestor(&h, &head) {
                return invalid(format!(
                    "{name} block {h} is not an ancestor of head {head}"
                ));
            }
        }
        if !self.is_ancestor(&self.finalized, &head) {
            return invalid(format!(
                "head {head} is not a descendant of the finalized block {}: finalized blocks are never reverted",
                self.finalized
            ));
        }
        if finalized != B256::ZERO && !self.is_ancestor(&self.finalized, &finalized) {
            return invalid(format!(
                "finalized block {finalized} is older than the current finalized {}",
                self.finalized
            ));
        }
        let finalized = if finalized == B256::ZERO {
            self.finalized
        } else {
            finalized
        };
        let mut safe = if safe == B256::ZERO { self.safe } else { safe };
        if !self.is_ancestor(&safe, &head) {
            safe = finalized;
        }
        // Durable before it is applied (and acknowledged).
        let flushed = self
            .persist(head, safe, finalized)
            .map_err(ForkchoiceError::Storage)?;
        let dropped = self.reorg_to(head);
        self.safe = safe;
        self.finalized = finalized;
        if flushed {
            self.state_block = finalized;
            self.prune();
        }
        Ok(dropped)
    }

    /// Write the forkchoice with the blocks of the head's branch not yet written, and move
    /// the flat state to `finalized` when it is [`FLUSH_EVERY`] blocks ahead. Returns
    /// whether the flat state moved. Without a store: nothing.
    fn persist(&mut self, head: B256, safe: B256, finalized: B256) -> Result<bool, String> {
        let Some(store) = &self.store else {
            return Ok(false);
        };
        if (head, safe, finalized) == (self.head, self.safe, self.finalized) {
            return Ok(false);
        }
        let mut new = Vec::new();
        let mut cur = head;
        while !store.is_persisted(&cur) {
            let Some(b) = self.blocks.get(&cur) else {
                return Err(format!("block {cur} of the head's branch is not known"));
            };
            new.push(b.clone());
            cur = b.header().parent_hash;
        }
        let (from, to) = (&self.blocks[&self.state_block], &self.blocks[&finalized]);
        let flush = match (&from.state, &to.state) {
            (Some(from_state), Some(to_state)) if to.number() >= from.number() + FLUSH_EVERY => {
                // The blocks that become final on disk: after the old state block, up to
                // the new one (all in memory: above the pruning floor).
                let mut finalized_blocks = Vec::new();
                let mut cur = to;
                while cur.number() > from.number() {
                    finalized_blocks.push(&**cur);
                    let Some(parent) = self.blocks.get(&cur.header().parent_hash) else {
                        return Err(format!(
                            "block {} below the finalized one is not in memory",
                            cur.header().parent_hash
                        ));
                    };
                    cur = parent;
                }
                Some(Flush {
                    to: finalized,
                    from_state,
                    to_state,
                    finalized: finalized_blocks,
                })
            }
            _ => None,
        };
        let flushed = flush.is_some();
        let blocks: Vec<&ExecutedBlock> = new.iter().map(|b| &**b).collect();
        let codes = self.codes.clone();
        let store = self.store.as_mut().expect("checked above");
        if !flushed {
            store.commit_forkchoice(&blocks, head, safe, finalized, None, &codes)?;
            return Ok(false);
        }
        // A flat state that cannot move forward must not stop the chain: the forkchoice is
        // committed without it (a restart then re-executes more blocks).
        match store.commit_forkchoice(&blocks, head, safe, finalized, flush, &codes) {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::error!(error = %e, "cannot move the saved state forward; committing the forkchoice without it");
                store.commit_forkchoice(&blocks, head, safe, finalized, None, &codes)?;
                Ok(false)
            }
        }
    }

    fn reorg_to(&mut self, head: B256) -> Vec<(TxEnvelope, alloy_primitives::Address)> {
        let mut dropped_txs = Vec::new();
        if head == self.head {
            return dropped_txs;
        }
        // New branch back to the first block already canonical.
        let mut branch = Vec::new();
        let mut cur = head;
        loop {
            let b = &self.blocks[&cur];
            if self.canonical_hash(b.number()) == Some(cur) {
                break;
            }
            branch.push(cur);
            cur = b.header().parent_hash;
        }
        let fork_number = self.blocks[&cur].number();
        for dropped in self.canonical.drain(fork_number as usize + 1..) {
            if let Some(b) = self.blocks.get(&dropped) {
                for (tx, sender) in b.block.body.transactions.iter().zip(&b.senders) {
                    self.tx_index.remove(tx.tx_hash());
                    dropped_txs.push((tx.clone(), *sender));
                }
            }
        }
        for h in branch.into_iter().rev() {
            let b = &self.blocks[&h];
            for (i, tx) in b.block.body.transactions.iter().enumerate() {
                self.tx_index.insert(*tx.tx_hash(), (h, i));
            }
            self.canonical.push(h);
        }
        self.head = head;
        // Transactions that are on the new branch too are not dropped.
        dropped_txs.retain(|(tx, _)| !self.tx_index.contains_key(tx.tx_hash()));
        dropped_txs
    }

    /// Build a block on `parent` from `candidates`.
    pub fn build(
        &self,
        parent: &B256,
        attrs: &BuildAttributes,
        candidates: &mut dyn Iterator<Item = (TxEnvelope, alloy_primitives::Address)>,
        skipped: &mut dyn FnMut(&TxEnvelope, &alloy_primitives::Address, String),
    ) -> Result<ExecutedBlock, String> {
        let parent = self
            .blocks
            .get(parent)
            .ok_or_else(|| format!("unknown parent {parent}"))?
            .clone();
        self.with_parent(&parent, |ctx| {
            exec::build_block(&self.spec, &self.codes, ctx, attrs, candidates, skipped)
        })
        .unwrap_or_else(|| {
            Err(format!(
                "the state of parent {} is no longer kept",
                parent.hash
            ))
        })
    }
}
