//! Transaction pool: checked on entry, ordered per sender by nonce (gaps held back),
//! replaced only with a 10 % fee bump (100 % for blob transactions, as Geth's blob pool),
//! bounded per sender and in total, blob transactions kept with their sidecars (bounded by
//! their number of blobs) for getPayload's bundle and getBlobs.

use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use alloy_consensus::{Transaction, TxEnvelope};
use alloy_eips::eip7840::BlobParams;
use alloy_primitives::{Address, B256, U256};

use super::blobs::{self, Sidecar};
use super::state::WorldState;

/// Osaka's per-transaction gas cap (EIP-7825).
pub const TX_GAS_CAP: u64 = 1 << 24;
/// Blobs kept for transactions that left the pool by inclusion, newest last: getBlobs serves
/// them, and a reorg that drops their block puts the transactions back with them.
const LIMBO_BLOBS: usize = 72;

#[derive(Debug, Clone)]
pub struct PoolTx {
    pub tx: TxEnvelope,
    pub sender: Address,
    pub hash: B256,
    /// A blob transaction's sidecar (checked on entry).
    pub sidecar: Option<Arc<Sidecar>>,
}

pub struct Pool {
    by_sender: HashMap<Address, BTreeMap<u64, PoolTx>>,
    by_hash: HashMap<B256, (Address, u64)>,
    /// Versioned hash → the pooled transaction carrying that blob.
    blob_index: HashMap<B256, B256>,
    /// Blobs held by pooled transactions.
    blob_count: usize,
    /// Sidecars of transactions included in blocks (at most `LIMBO_BLOBS` blobs).
    limbo: VecDeque<(B256, Arc<Sidecar>)>,
    pub max_per_sender: usize,
    pub max_total: usize,
    /// At most this many blobs in pooled transactions (each 128 KiB, plus its proofs).
    pub max_blobs: usize,
}

/// Everything entry checks need to know about the chain's head.
pub struct Rules<'a> {
    pub chain_id: u64,
    pub state: &'a WorldState,
    pub base_fee: u64,
    pub block_gas_limit: u64,
    pub osaka: bool,
    pub prague: bool,
    /// The next block's blob parameters (None before Cancun).
    pub blob: Option<BlobParams>,
}

impl<'a> Rules<'a> {
    /// The rules for a transaction entering the pool while `head` is the chain's head.
    pub fn after(
        spec: &super::spec::ChainSpec,
        head: &super::exec::ExecutedBlock,
        state: &'a super::state::WorldState,
    ) -> Self {
        let ts = head.header().timestamp + 1;
        Rules {
            chain_id: spec.chain_id,
            state,
            base_fee: super::exec::next_base_fee(head.header()),
            block_gas_limit: head.header().gas_limit,
            osaka: spec.osaka(ts),
            prague: spec.prague(ts),
            blob: spec.blob_params(ts),
        }
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            by_sender: HashMap::new(),
            by_hash: HashMap::new(),
            blob_index: HashMap::new(),
            blob_count: 0,
            limbo: VecDeque::new(),
            max_per_sender: 64,
            max_total: 10_000,
            max_blobs: 256,
        }
    }
}

/// A sender's transactions that can run now: consecutive nonces from the account's.
fn executable<'a>(
    state: &WorldState,
    sender: &Address,
    queue: &'a BTreeMap<u64, PoolTx>,
) -> impl Iterator<Item = &'a PoolTx> {
    let first = state.account(sender).map_or(0, |a| a.nonce);
    queue
        .range(first..)
        .zip(first..)
        .take_while(|((n, _), want)| **n == *want)
        .map(|((_, t), _)| t)
}

/// Intrinsic gas of `tx` and its EIP-7623 floor.
pub fn intrinsic_gas(tx: &TxEnvelope, prague: bool) -> (u64, u64) {
    let data = tx.input();
    let zeros = data.iter().filter(|b| **b == 0).count() as u64;
    let nonzeros = data.len() as u64 - zeros;
    let mut gas = 21_000 + zeros * 4 + nonzeros * 16;
    if tx.is_create() {
        gas += 32_000 + 2 * (data.len() as u64).div_ceil(32);
    }
    if let Some(al) = tx.access_list() {
        for item in al.iter() {
            gas += 2_400 + 1_900 * item.storage_keys.len() as u64;
        }
    }
    if let Some(auth) = tx.authorization_list() {
        gas += 25_000 * auth.len() as u64;
    }
    let floor = if prague {
        21_000 + 10 * (zeros + 4 * nonzeros)
    } else {
        0
    };
    (gas, floor)
}

impl Pool {
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn get(&self, hash: &B256) -> Option<&PoolTx> {
        let (s, n) = self.by_hash.get(hash)?;
        self.by_sender.get(s)?.get(n)
    }

    /// The sender this pool recovered for a transaction it holds (the pool only holds
    /// transactions whose signature it checked itself, or taken from executed blocks).
    pub fn sender_of(&self, hash: &B256) -> Option<Address> {
        self.by_hash.get(hash).map(|(s, _)| *s)
    }

    /// Add a checked transaction. A blob transaction comes with its sidecar, checked by
    /// `blobs::admit` for the next block's fork; without one (a transaction put back by a
    /// reorg) the sidecar kept since its inclusion is used, and without that it is refused.
    pub fn add(
        &mut self,
        tx: TxEnvelope,
        sender: Address,
        sidecar: Option<Sidecar>,
        rules: &Rules<'_>,
    ) -> Result<B256, String> {
        let hash = *tx.tx_hash();
        if self.by_hash.contains_key(&hash) {
            return Err(format!("already known: {hash}"));
        }
        let sidecar = match (tx.blob_versioned_hashes(), sidecar) {
            (None, None) => None,
            (None, Some(_)) => return Err("only blob transactions carry a blob sidecar".into()),
            (Some(_), Some(s)) => Some(Arc::new(s)),
            (Some(_), None) => match self.limbo.iter().find(|(h, _)| *h == hash) {
                Some((_, s)) => Some(s.clone()),
                None => {
                    return Err(
                        "blob transaction without its blobs: send it in the network \
                         form with its sidecar"
                            .into(),
                    )
                }
            },
        };
        let blob_count = sidecar.as_deref().map_or(0, blobs::count);
        match tx.chain_id() {
            Some(id) if id == rules.chain_id => {}
            Some(id) => {
                return Err(format!(
                    "invalid chain id: transaction is for chain {id}, this chain is {}",
                    rules.chain_id
                ))
            }
            None => {
                return Err(format!(
                    "unprotected transaction (no chain id, pre-EIP-155): sign it for chain {}",
                    rules.chain_id
                ))
            }
        }
        let (account_nonce, balance) = rules
            .state
            .account(&sender)
            .map_or((0, U256::ZERO), |a| (a.nonce, a.balance));
        if tx.nonce() < account_nonce {
            return Err(format!(
                "nonce too low: next nonce {account_nonce}, tx nonce {}",
                tx.nonce()
            ));
        }
        if rules.osaka && tx.gas_limit() > TX_GAS_CAP {
            return Err(format!(
                "exceeds the transaction gas cap: gas {} above {TX_GAS_CAP} (EIP-7825)",
                tx.gas_limit()
            ));
        }
        if tx.gas_limit() > rules.block_gas_limit {
            return Err(format!(
                "exceeds block gas limit: gas {} above {}",
                tx.gas_limit(),
                rules.block_gas_limit
            ));
        }
        let (intrinsic, floor) = intrinsic_gas(&tx, rules.prague);
        if tx.gas_limit() < intrinsic.max(floor) {
            return Err(format!(
                "intrinsic gas too low: gas {}, needs at least {}",
                tx.gas_limit(),
                intrinsic.max(floor)
            ));
        }
        if tx.max_fee_per_gas() < rules.base_fee as u128 {
            return Err(format!(
                "max fee per gas less than block base fee: maxFeePerGas {} baseFee {}",
                tx.max_fee_per_gas(),
                rules.base_fee
            ));
        }
        if let Some(tip) = tx.max_priority_fee_per_gas() {
            if tip > tx.max_fee_per_gas() {
                return Err("max priority fee per gas higher than max fee per gas".into());
            }
        }
        if blob_count > 0 {
            let Some(params) = rules.blob else {
                return Err("blob transactions are not accepted before Cancun".into());
            };
            if blob_count as u64 > params.max_blobs_per_tx {
                return Err(format!(
                    "too many blobs: {blob_count} in the transaction, at most {} per transaction",
                    params.max_blobs_per_tx
                ));
            }
            if blob_count > self.max_blobs {
                return Err(format!(
                    "blob pool is full: the transaction has {blob_count} blobs, the pool holds at most {}",
                    self.max_blobs
                ));
            }
        }
        // A blob transaction below the current blob base fee is kept (the fee may fall);
        // the builder leaves it out until it pays enough.
        let blob_cost = U256::from(tx.blob_gas_used().unwrap_or(0))
            * U256::from(tx.max_fee_per_blob_gas().unwrap_or(0));
        let cost =
            U256::from(tx.gas_limit()) * U256::from(tx.max_fee_per_gas()) + tx.value() + blob_cost;
        if balance < cost {
            return Err(format!(
                "insufficient funds for gas * price + value: balance {balance}, cost {cost}"
            ));
        }
        let queue = self.by_sender.entry(sender).or_default();
        if let Some(old) = queue.get(&tx.nonce()) {
            let is_blob = blob_count > 0;
            if old.sidecar.is_some() != is_blob {
                return Err(format!(
                    "a {} transaction with nonce {} is pending: it can only be replaced by \
                     another {} transaction",
                    if is_blob { "non-blob" } else { "blob" },
                    tx.nonce(),
                    if is_blob { "non-blob" } else { "blob" },
                ));
            }
            // Blob transactions: 100 % (Geth's blob pool), others 10 %.
            let pct = if is_blob { 100 } else { 10 };
            let bumped = |old: u128, new: u128| new >= old + old * pct / 100;
            let old_tip = old
                .tx
                .max_priority_fee_per_gas()
                .unwrap_or(old.tx.max_fee_per_gas());
            let new_tip = tx
                .max_priority_fee_per_gas()
                .unwrap_or(tx.max_fee_per_gas());
            let blob_ok = bumped(
                old.tx.max_fee_per_blob_gas().unwrap_or(0),
                tx.max_fee_per_blob_gas().unwrap_or(0),
            );
            if !bumped(old.tx.max_fee_per_gas(), tx.max_fee_per_gas())
                || !bumped(old_tip, new_tip)
                || !blob_ok
            {
                return Err(if is_blob {
                    "replacement transaction underpriced: raise the fee cap, the tip and the \
                     blob fee cap by at least 100%"
                        .into()
                } else {
                    "replacement transaction underpriced: raise both fees by at least 10%".into()
                });
            }
            let nonce = tx.nonce();
            self.remove(&sender, nonce);
        } else if queue.len() >= self.max_per_sender {
            return Err(format!(
                "txpool is full for this sender ({} pending transactions)",
                self.max_per_sender
            ));
        }
        let nonce = tx.nonce();
        if let Some(s) = &sidecar {
            for h in tx.blob_versioned_hashes().unwrap_or_default() {
                self.blob_index.insert(*h, hash);
            }
            self.blob_count += blobs::count(s);
        }
        self.by_sender.entry(sender).or_default().insert(
            nonce,
            PoolTx {
                tx,
                sender,
                hash,
                sidecar,
            },
        );
        self.by_hash.insert(hash, (sender, nonce));
        if self.by_hash.len() > self.max_total {
            self.evict_cheapest(hash, |t| t.tx.max_fee_per_gas(), "transaction")?;
        }
        while self.blob_count > self.max_blobs {
            self.evict_cheapest(
                hash,
                |t| {
                    if t.sidecar.is_some() {
                        t.tx.max_fee_per_blob_gas().unwrap_or(0)
                    } else {
                        u128::MAX
                    }
                },
                "blob transaction",
            )?;
        }
        Ok(hash)
    }

    /// Over a limit: drop the transaction ranked lowest by `price` among each sender's
    /// newest nonce (so no gap is created); refuse `new` if it is the one dropped.
    fn evict_cheapest(
        &mut self,
        new: B256,
        price: impl Fn(&PoolTx) -> u128,
        what: &str,
    ) -> Result<(), String> {
        let victim = self
            .by_sender
            .values()
            .filter_map(|q| q.values().next_back())
            .min_by_key(|t| price(t))
            .map(|t| (t.sender, t.tx.nonce(), t.hash));
        if let Some((sender, nonce, hash)) = victim {
            self.remove(&sender, nonce);
            if hash == new {
                return Err(format!(
                    "txpool is full and this {what} pays less than every pending one"
                ));
            }
        }
        Ok(())
    }

    fn remove(&mut self, sender: &Address, nonce: u64) -> Option<PoolTx> {
        let q = self.by_sender.get_mut(sender)?;
        let t = q.remove(&nonce);
        if q.is_empty() {
            self.by_sender.remove(sender);
        }
        let t = t?;
        self.by_hash.remove(&t.hash);
        if let Some(s) = &t.sidecar {
            self.blob_count -= blobs::count(s);
            for h in t.tx.blob_versioned_hashes().unwrap_or_default() {
                if self.blob_index.get(h) == Some(&t.hash) {
                    self.blob_index.remove(h);
                }
            }
        }
        Some(t)
    }

    /// Drop what the new head made stale (nonces below the account's); the sidecars of
    /// blob transactions among them are kept a while (see `LIMBO_BLOBS`).
    pub fn prune(&mut self, state: &WorldState) {
        let senders: Vec<Address> = self.by_sender.keys().copied().collect();
        for s in senders {
            let nonce = state.account(&s).map_or(0, |a| a.nonce);
            let stale: Vec<u64> = self.by_sender[&s].range(..nonce).map(|(n, _)| *n).collect();
            for n in stale {
                if let Some(PoolTx {
                    hash,
                    sidecar: Some(sidecar),
                    ..
                }) = self.remove(&s, n)
                {
                    self.limbo.push_back((hash, sidecar));
                }
            }
        }
        let mut kept: usize = self.limbo.iter().map(|(_, s)| blobs::count(s)).sum();
        while kept > LIMBO_BLOBS {
            if let Some((_, s)) = self.limbo.pop_front() {
                kept -= blobs::count(&s);
            }
        }
    }

    /// The sidecar holding the blob with versioned hash `hash`: from a pooled transaction,
    /// or one recently included.
    pub fn blob_sidecar(&self, hash: &B256) -> Option<Arc<Sidecar>> {
        if let Some(s) = self
            .blob_index
            .get(hash)
            .and_then(|tx| self.get(tx))
            .and_then(|t| t.sidecar.clone())
        {
            return Some(s);
        }
        self.limbo
            .iter()
            .rev()
            .find(|(_, s)| s.versioned_hash_index(hash).is_some())
            .map(|(_, s)| s.clone())
    }

    /// Blobs held by pooled transactions.
    pub fn blob_count(&self) -> usize {
        self.blob_count
    }

    /// (pending, queued) as Geth's `txpool_status` counts them: executable now (consecutive
    /// nonces from the account's) and held back behind a gap.
    pub fn status(&self, state: &WorldState) -> (usize, usize) {
        let pending: usize = self
            .by_sender
            .iter()
            .map(|(sender, q)| executable(state, sender, q).count())
            .sum();
        (pending, self.len() - pending)
    }

    /// Executable transactions in inclusion order: per sender consecutive nonces from the
    /// account's, senders interleaved by effective tip (highest first).
    pub fn best(&self, state: &WorldState, base_fee: u64) -> Vec<(TxEnvelope, Address)> {
        let mut queues: HashMap<Address, Vec<&PoolTx>> = HashMap::new();
        for (sender, q) in &self.by_sender {
            let mut run: Vec<&PoolTx> = executable(state, sender, q).collect();
            if !run.is_empty() {
                run.reverse();
                queues.insert(*sender, run);
            }
        }
        let tip = |t: &PoolTx| t.tx.effective_tip_per_gas(base_fee).unwrap_or(0);
        let mut heap: BinaryHeap<(u128, std::cmp::Reverse<Address>)> = queues
            .iter()
            .map(|(s, q)| (tip(q.last().expect("non-empty")), std::cmp::Reverse(*s)))
            .collect();
        let mut out = Vec::new();
        while let Some((_, std::cmp::Reverse(s))) = heap.pop() {
            let q = queues.get_mut(&s).expect("queued sender");
            let t = q.pop().expect("non-empty");
            out.push((t.tx.clone(), t.sender));
            if let Some(next) = q.last() {
                heap.push((tip(next), std::cmp::Reverse(s)));
            }
        }
        out
    }

    /// Forget a transaction that can never be included (it failed during building).
    pub fn drop_tx(&mut self, sender: &Address, nonce: u64) {
        self.remove(sender, nonce);
    }

    /// The sidecars of `txs` that this pool holds, by transaction hash.
    pub fn sidecars<'t>(
        &self,
        txs: impl Iterator<Item = &'t TxEnvelope>,
    ) -> HashMap<B256, Arc<Sidecar>> {
        txs.filter(|t| t.is_eip4844())
            .filter_map(|t| Some((*t.tx_hash(), self.get(t.tx_hash())?.sidecar.clone()?)))
            .collect()
    }
}
