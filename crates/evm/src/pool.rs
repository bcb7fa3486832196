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
    /// Versioned hash → the pooled transactions carrying that blob.
    blob_index: HashMap<B256, Vec<B256>>,
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
        if let Some(s) = &sidecar {
            if matches!(**s, Sidecar::Eip7594(_)) != rules.osaka {
                return Err(format!(
                    "the blob sidecar is in the proof format of {} but the next block is {} \
                     (the chain crossed the fork while it was checked): send it again",
                    if rules.osaka { "Prague" } else { "Osaka" },
                    if rules.osaka { "Osaka" } else { "before Osaka" },
                ));
            }
        }
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
            // Again here for a transaction put back by a reorg (admitted for another fork).
            blobs::check_count(blob_count, rules.blob)?;
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
            let blob_part = if blob_cost.is_zero() {
                ""
            } else {
                " + blob gas * blob fee cap"
            };
            return Err(format!(
                "insufficient funds for gas * price + value{blob_part}: balance {balance}, cost {cost}"
            ));
        }
        let nonce = tx.nonce();
        let queue = self.by_sender.get(&sender);
        let replaced = queue.and_then(|q| q.get(&nonce));
        if let Some(old) = replaced {
            let is_blob = blob_count > 0;
            if old.sidecar.is_some() != is_blob {
                return Err(format!(
                    "a {} transaction with nonce {nonce} is pending: it can only be replaced by \
                     another {} transaction",
                    if is_blob { "non-blob" } else { "blob" },
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
        } else if queue.is_some_and(|q| q.len() >= self.max_per_sender) {
            return Err(format!(
                "txpool is full for this sender ({} pending transactions)",
                self.max_per_sender
            ));
        }
        // What has to leave for it to fit, decided before anything changes: a refused
        // transaction leaves the pool as it was.
        let victims = self.victims(&tx, sender, blob_count, replaced.map(|t| t.hash))?;
        self.remove(&sender, nonce);
        for (s, n) in victims {
            self.remove(&s, n);
        }
        if let Some(s) = &sidecar {
            for h in tx.blob_versioned_hashes().unwrap_or_default() {
                self.blob_index.entry(*h).or_default().push(hash);
            }
            self.blob_count += blobs::count(s);
            // Back from a reorg: its kept sidecar is in use again.
            self.limbo.retain(|(h, _)| *h != hash);
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
        Ok(hash)
    }

    /// The transactions to evict for `tx` (from `sender`, with `blobs` blobs, replacing
    /// `replaced`) to fit the pool's limits: the cheapest newest-nonce transaction of
    /// another sender (no gap is created), by fee cap when the pool is full, by blob fee
    /// cap among blob transactions when its blobs are over the limit. Refused when `tx`
    /// pays no more than what would have to leave.
    fn victims(
        &self,
        tx: &TxEnvelope,
        sender: Address,
        blobs: usize,
        replaced: Option<B256>,
    ) -> Result<Vec<(Address, u64)>, String> {
        let lasts = || {
            self.by_sender
                .iter()
                .filter(|(s, _)| **s != sender)
                .filter_map(|(_, q)| q.values().next_back())
        };
        let mut out: Vec<&PoolTx> = Vec::new();
        if replaced.is_none() && self.by_hash.len() >= self.max_total {
            match lasts().min_by_key(|t| t.tx.max_fee_per_gas()) {
                Some(v) if v.tx.max_fee_per_gas() < tx.max_fee_per_gas() => out.push(v),
                _ => {
                    return Err(
                        "txpool is full and this transaction pays less than every pending one"
                            .into(),
                    )
                }
            }
        }
        let freed_by_replacing = replaced
            .and_then(|h| self.get(&h))
            .and_then(|t| t.sidecar.as_deref())
            .map_or(0, blobs::count);
        let mut over = (self.blob_count + blobs).saturating_sub(freed_by_replacing);
        if blobs > 0 && over > self.max_blobs {
            for t in &out {
                over = over.saturating_sub(t.sidecar.as_deref().map_or(0, blobs::count));
            }
            let mut cheapest: Vec<&PoolTx> = lasts()
                .filter(|t| t.sidecar.is_some() && !out.iter().any(|o| o.hash == t.hash))
                .collect();
            cheapest.sort_by_key(|t| t.tx.max_fee_per_blob_gas());
            let fee = tx.max_fee_per_blob_gas().unwrap_or(0);
            for v in cheapest {
                if over <= self.max_blobs {
                    break;
                }
                if v.tx.max_fee_per_blob_gas().unwrap_or(0) >= fee {
                    break;
                }
                over = over.saturating_sub(v.sidecar.as_deref().map_or(0, blobs::count));
                out.push(v);
            }
            if over > self.max_blobs {
                return Err(format!(
                    "blob pool is full ({} blobs) and this transaction's blob fee cap is not \
                     above those it would have to evict",
                    self.max_blobs
                ));
            }
        }
        Ok(out.iter().map(|t| (t.sender, t.tx.nonce())).collect())
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
                if let Some(holders) = self.blob_index.get_mut(h) {
                    holders.retain(|x| *x != t.hash);
                    if holders.is_empty() {
                        self.blob_index.remove(h);
                    }
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
            .and_then(|txs| txs.first())
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

    /// Keep `sidecar` (the same blobs with cell proofs, computed when a transaction from
    /// before Osaka went into an Osaka block) for the pooled transaction `hash`.
    pub fn set_sidecar(&mut self, hash: &B256, sidecar: Arc<Sidecar>) {
        if let Some((s, n)) = self.by_hash.get(hash).copied() {
            if let Some(t) = self.by_sender.get_mut(&s).and_then(|q| q.get_mut(&n)) {
                if t.sidecar.is_some() {
                    t.sidecar = Some(sidecar);
                }
            }
        }
    }

    /// Every pooled transaction in the form it is sent in (blob transactions with their
    /// sidecars), each sender's in nonce order: the journal's content.
    pub fn journal_records(&self) -> Vec<Vec<u8>> {
        use alloy_eips::eip2718::Encodable2718;
        self.by_sender
            .values()
            .flat_map(|q| q.values())
            .filter_map(|t| match &t.sidecar {
                None => Some(t.tx.encoded_2718()),
                Some(s) => blobs::network_form(&t.tx, s),
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEip4844, TxEip4844Variant};
    use alloy_eips::eip4844::{Blob, BlobTransactionSidecar, Bytes48};
    use alloy_eips::eip7594::BlobTransactionSidecarEip7594;
    use alloy_primitives::{Signature, TxKind};

    use crate::blobs::tests::big_stack;

    const GWEI: u128 = 1_000_000_000;

    fn state(senders: &[Address]) -> WorldState {
        let mut st = WorldState::default();
        for s in senders {
            st.put(
                *s,
                0,
                U256::from(10u128.pow(24)),
                revm::primitives::KECCAK_EMPTY,
                &[],
            );
        }
        st
    }

    fn rules(st: &WorldState) -> Rules<'_> {
        Rules {
            chain_id: 1,
            state: st,
            base_fee: 1,
            block_gas_limit: 30_000_000,
            osaka: true,
            prague: true,
            blob: Some(BlobParams::osaka()),
        }
    }

    fn sig() -> Signature {
        Signature::new(U256::from(1), U256::from(1), false)
    }

    fn transfer(nonce: u64, fee: u128) -> TxEnvelope {
        TxEip1559 {
            chain_id: 1,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: fee,
            max_priority_fee_per_gas: 1,
            to: TxKind::Call(Address::ZERO),
            ..Default::default()
        }
        .into_signed(sig())
        .into()
    }

    /// A blob transaction carrying the blobs `ids` (a fake sidecar: the pool does not
    /// check proofs again, `blobs::admit` did), and the sidecar.
    fn blob_tx(nonce: u64, blob_fee: u128, ids: &[u8]) -> (TxEnvelope, Sidecar) {
        let commitments: Vec<Bytes48> = ids.iter().map(|i| Bytes48::repeat_byte(*i)).collect();
        let sidecar = Sidecar::Eip7594(BlobTransactionSidecarEip7594 {
            blobs: vec![Blob::ZERO; ids.len()],
            commitments,
            cell_proofs: vec![],
        });
        let tx = TxEip4844 {
            chain_id: 1,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: GWEI,
            max_priority_fee_per_gas: 1,
            max_fee_per_blob_gas: blob_fee,
            blob_versioned_hashes: sidecar.versioned_hashes().collect(),
            ..Default::default()
        };
        let tx = TxEip4844Variant::<BlobTransactionSidecar>::TxEip4844(tx)
            .into_signed(sig())
            .into();
        (tx, sidecar)
    }

    fn vh(id: u8) -> B256 {
        alloy_eips::eip4844::kzg_to_versioned_hash(&[id; 48])
    }

    #[test]
    fn blob_eviction_takes_the_cheapest_blob_transaction_and_nothing_else() {
        big_stack(|| {
            let (a, b, c) = (
                Address::repeat_byte(1),
                Address::repeat_byte(2),
                Address::repeat_byte(3),
            );
            let st = state(&[a, b, c]);
            let r = rules(&st);
            let mut pool = Pool {
                max_blobs: 4,
                ..Pool::default()
            };
            // a: a blob transaction behind which a transfer waits; b: a blob transaction last.
            let (t, s) = blob_tx(0, 5, &[1, 2]);
            pool.add(t, a, Some(s), &r).unwrap();
            pool.add(transfer(1, GWEI), a, None, &r).unwrap();
            let (t, s) = blob_tx(0, 10, &[3, 4]);
            let b_hash = pool.add(t, b, Some(s), &r).unwrap();
            assert_eq!(pool.blob_count(), 4);
            // c pays 20 per blob gas: b's transaction (the only blob one last in its
            // queue) leaves; a's queue is untouched.
            let (t, s) = blob_tx(0, 20, &[5, 6]);
            pool.add(t, c, Some(s), &r).unwrap();
            assert!(pool.get(&b_hash).is_none());
            assert_eq!(pool.len(), 3);
            assert_eq!(pool.blob_count(), 4);
            assert!(pool.blob_sidecar(&vh(3)).is_none());
            assert!(pool.blob_sidecar(&vh(5)).is_some());
            // Paying no more than what would have to leave: refused, the pool unchanged.
            let d = Address::repeat_byte(4);
            let st2 = state(&[a, b, c, d]);
            let r2 = rules(&st2);
            let (t, s) = blob_tx(0, 20, &[7]);
            let e = pool.add(t, d, Some(s), &r2).unwrap_err();
            assert!(e.contains("blob pool is full"), "{e}");
            assert_eq!((pool.len(), pool.blob_count()), (3, 4));
            // A refused blob replacement leaves the original in place.
            let (t, s) = blob_tx(0, 30, &[5, 6]);
            let e = pool.add(t, c, Some(s), &r).unwrap_err();
            assert!(e.contains("100%"), "{e}");
            assert!(pool.blob_sidecar(&vh(5)).is_some());
            // Every blob transaction behind a transfer of its sender: no blob transaction
            // can leave without a gap, so the new one is refused and no transfer evicted.
            let mut pool = Pool {
                max_blobs: 2,
                ..Pool::default()
            };
            let (t, s) = blob_tx(0, 5, &[1, 2]);
            pool.add(t, a, Some(s), &r2).unwrap();
            pool.add(transfer(1, GWEI), a, None, &r2).unwrap();
            pool.add(transfer(0, GWEI), b, None, &r2).unwrap();
            let (t, s) = blob_tx(0, 50, &[3]);
            let e = pool.add(t, d, Some(s), &r2).unwrap_err();
            assert!(e.contains("blob pool is full"), "{e}");
            assert_eq!((pool.len(), pool.blob_count()), (3, 2));
        });
    }

    #[test]
    fn a_blob_shared_by_two_transactions_stays_served_while_one_holds_it() {
        big_stack(|| {
            let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
            let st = state(&[a, b]);
            let r = rules(&st);
            let mut pool = Pool::default();
            let (t, s) = blob_tx(0, 5, &[1, 2]);
            pool.add(t, a, Some(s), &r).unwrap();
            let (t, s) = blob_tx(0, 5, &[2, 3]);
            pool.add(t, b, Some(s), &r).unwrap();
            pool.drop_tx(&b, 0);
            assert!(pool.blob_sidecar(&vh(2)).is_some(), "a still holds blob 2");
            assert!(pool.blob_sidecar(&vh(3)).is_none());
            assert_eq!(pool.blob_count(), 2);
        });
    }

    #[test]
    fn included_blobs_are_kept_and_come_back_with_a_reorg() {
        big_stack(|| {
            let a = Address::repeat_byte(1);
            let st = state(&[a]);
            let r = rules(&st);
            let mut pool = Pool::default();
            let (t, s) = blob_tx(0, 5, &[1, 2]);
            pool.add(t.clone(), a, Some(s), &r).unwrap();
            // Included: the account's nonce moves past it.
            let mut after = WorldState::default();
            after.put(
                a,
                1,
                U256::from(10u128.pow(24)),
                revm::primitives::KECCAK_EMPTY,
                &[],
            );
            pool.prune(&after);
            assert!(pool.is_empty());
            assert!(pool.blob_sidecar(&vh(1)).is_some(), "kept after inclusion");
            // A reorg drops the block: the transaction comes back without its sidecar and
            // gets the kept one; the kept copy is not counted twice.
            pool.add(t, a, None, &r).unwrap();
            assert_eq!(pool.blob_count(), 2);
            assert!(pool.limbo.is_empty());
            // Without a kept sidecar a blob transaction cannot come back.
            let (t2, _) = blob_tx(1, 5, &[9]);
            let e = pool.add(t2, a, None, &r).unwrap_err();
            assert!(e.contains("without its blobs"), "{e}");
            // At most LIMBO_BLOBS blobs are kept.
            let mut pool = Pool::default();
            let senders: Vec<Address> = (1..=40u8).map(Address::repeat_byte).collect();
            let st = state(&senders);
            let r = rules(&st);
            for (i, s) in senders.iter().enumerate() {
                let (t, sc) = blob_tx(0, 5, &[i as u8 * 2 + 1, i as u8 * 2 + 2]);
                pool.add(t, *s, Some(sc), &r).unwrap();
            }
            let mut after = WorldState::default();
            for s in &senders {
                after.put(*s, 1, U256::from(1), revm::primitives::KECCAK_EMPTY, &[]);
            }
            pool.prune(&after);
            let kept: usize = pool.limbo.iter().map(|(_, s)| blobs::count(s)).sum();
            assert_eq!(kept, LIMBO_BLOBS);
        });
    }

    #[test]
    fn a_full_pool_refuses_the_cheapest_without_changing() {
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let st = state(&[a, b]);
        let r = rules(&st);
        let mut pool = Pool {
            max_total: 2,
            ..Pool::default()
        };
        pool.add(transfer(0, 10 * GWEI), a, None, &r).unwrap();
        pool.add(transfer(1, 10 * GWEI), a, None, &r).unwrap();
        let e = pool.add(transfer(0, 5 * GWEI), b, None, &r).unwrap_err();
        assert!(e.contains("txpool is full"), "{e}");
        assert_eq!(pool.len(), 2);
        // Paying more: a's newest nonce leaves (no gap in a's queue).
        pool.add(transfer(0, 20 * GWEI), b, None, &r).unwrap();
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.status(&st), (2, 0));
    }
}
