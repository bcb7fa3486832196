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

/// How many ancestors BLOCKHASH can see.
const BLOCKHASH_WINDOW: u64 = 256;

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
            state,
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
        }
    }

    pub fn genesis_hash(&self) -> B256 {
        self.canonical[0]
    }
    pub fn head(&self) -> &Arc<ExecutedBlock> {
        &self.blocks[&self.head]
    }
    pub fn safe(&self) -> &Arc<ExecutedBlock> {
        &self.blocks[&self.safe]
    }
    pub fn finalized(&self) -> &Arc<ExecutedBlock> {
        &self.blocks[&self.finalized]
    }
    pub fn block(&self, hash: &B256) -> Option<&Arc<ExecutedBlock>> {
        self.blocks.get(hash)
    }
    pub fn canonical_hash(&self, number: u64) -> Option<B256> {
        self.canonical.get(usize::try_from(number).ok()?).copied()
    }
    pub fn canonical(&self, number: u64) -> Option<&Arc<ExecutedBlock>> {
        self.blocks.get(&self.canonical_hash(number)?)
    }
    pub fn is_canonical(&self, hash: &B256) -> bool {
        self.blocks
            .get(hash)
            .is_some_and(|b| self.canonical_hash(b.number()) == Some(*hash))
    }
    pub fn tx_location(&self, tx: &B256) -> Option<(B256, usize)> {
        self.tx_index.get(tx).copied()
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

    fn with_parent<T>(&self, parent: &ExecutedBlock, f: impl FnOnce(&ParentCtx<'_>) -> T) -> T {
        let ancestors = self.ancestors(parent.hash);
        let lookup = move |n: u64| ancestors.get(&n).copied();
        let ctx = ParentCtx {
            header: parent.header(),
            hash: parent.hash,
            state: &parent.state,
            ancestor_hash: &lookup,
        };
        f(&ctx)
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
        if let Some(b) = self.blocks.get(&hash) {
            return Ok(b.clone());
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
        let result = self.with_parent(&parent, |ctx| {
            exec::execute_block(&spec, &codes, ctx, block, hash, known)
        });
        match result {
            Ok(executed) => {
                let executed = Arc::new(executed);
                self.blocks.insert(hash, executed.clone());
                Ok(executed)
            }
            Err(reason) => {
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
    ) -> Result<Vec<(TxEnvelope, alloy_primitives::Address)>, String> {
        if !self.blocks.contains_key(&head) {
            return Err(format!("unknown head {head}"));
        }
        for (name, h) in [("finalized", finalized), ("safe", safe)] {
            if h != B256::ZERO && !self.is_ancestor(&h, &head) {
                return Err(format!(
                    "{name} block {h} is not an ancestor of head {head}"
                ));
            }
        }
        if !self.is_ancestor(&self.finalized, &head) {
            return Err(format!(
                "head {head} is not a descendant of the finalized block {}: finalized blocks are never reverted",
                self.finalized
            ));
        }
        if finalized != B256::ZERO && !self.is_ancestor(&self.finalized, &finalized) {
            return Err(format!(
                "finalized block {finalized} is older than the current finalized {}",
                self.finalized
            ));
        }
        let dropped = self.reorg_to(head);
        if safe != B256::ZERO {
            self.safe = safe;
        }
        if finalized != B256::ZERO {
            self.finalized = finalized;
        }
        if !self.is_ancestor(&self.safe, &head) {
            self.safe = self.finalized;
        }
        Ok(dropped)
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
    }
}
