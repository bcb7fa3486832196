//! Transaction pool: checked on entry, ordered per sender by nonce (gaps held back),
//! replaced only with a 10 % fee bump, bounded per sender and in total.

use std::collections::{BTreeMap, BinaryHeap, HashMap};

use alloy_consensus::{transaction::SignerRecoverable, Transaction, TxEnvelope};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, B256, U256};

use super::state::WorldState;

/// Largest encoded transaction accepted (as Geth and Reth: 128 KiB).
pub const MAX_TX_BYTES: usize = 128 * 1024;
/// Osaka's per-transaction gas cap (EIP-7825).
pub const TX_GAS_CAP: u64 = 1 << 24;

#[derive(Debug, Clone)]
pub struct PoolTx {
    pub tx: TxEnvelope,
    pub sender: Address,
    pub hash: B256,
}

pub struct Pool {
    by_sender: HashMap<Address, BTreeMap<u64, PoolTx>>,
    by_hash: HashMap<B256, (Address, u64)>,
    pub max_per_sender: usize,
    pub max_total: usize,
}

/// Everything entry checks need to know about the chain's head.
pub struct Rules<'a> {
    pub chain_id: u64,
    pub state: &'a WorldState,
    pub base_fee: u64,
    pub block_gas_limit: u64,
    pub osaka: bool,
    pub prague: bool,
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
        }
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            by_sender: HashMap::new(),
            by_hash: HashMap::new(),
            max_per_sender: 64,
            max_total: 10_000,
        }
    }
}

/// Decode a raw transaction and recover its sender: the costly part of entry, which needs
/// no lock (callers do it before taking the chain's or the pool's).
pub fn decode_raw(raw: &[u8]) -> Result<(TxEnvelope, Address), String> {
    if raw.len() > MAX_TX_BYTES {
        return Err(format!(
            "oversized data: transaction is {} bytes, at most {MAX_TX_BYTES}",
            raw.len()
        ));
    }
    let tx = TxEnvelope::decode_2718_exact(raw)
        .map_err(|e| format!("transaction does not decode: {e}"))?;
    let sender = tx
        .recover_signer()
        .map_err(|e| format!("invalid signature: {e}"))?;
    Ok((tx, sender))
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

    pub fn add(
        &mut self,
        tx: TxEnvelope,
        sender: Address,
        rules: &Rules<'_>,
    ) -> Result<B256, String> {
        let hash = *tx.tx_hash();
        if self.by_hash.contains_key(&hash) {
            return Err(format!("already known: {hash}"));
        }
        if tx.is_eip4844() {
            return Err(
                "blob transactions are not accepted by this pool (no blob sidecar support)".into(),
            );
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
        let cost = U256::from(tx.gas_limit()) * U256::from(tx.max_fee_per_gas()) + tx.value();
        if balance < cost {
            return Err(format!(
                "insufficient funds for gas * price + value: balance {balance}, cost {cost}"
            ));
        }
        let queue = self.by_sender.entry(sender).or_default();
        if let Some(old) = queue.get(&tx.nonce()) {
            let bumped = |old: u128, new: u128| new >= old + old / 10;
            let old_tip = old
                .tx
                .max_priority_fee_per_gas()
                .unwrap_or(old.tx.max_fee_per_gas());
            let new_tip = tx
                .max_priority_fee_per_gas()
                .unwrap_or(tx.max_fee_per_gas());
            if !bumped(old.tx.max_fee_per_gas(), tx.max_fee_per_gas()) || !bumped(old_tip, new_tip)
            {
                return Err(
                    "replacement transaction underpriced: raise both fees by at least 10%".into(),
                );
            }
            let old_hash = old.hash;
            self.by_hash.remove(&old_hash);
        } else if queue.len() >= self.max_per_sender {
            return Err(format!(
                "txpool is full for this sender ({} pending transactions)",
                self.max_per_sender
            ));
        }
        let nonce = tx.nonce();
        queue.insert(nonce, PoolTx { tx, sender, hash });
        self.by_hash.insert(hash, (sender, nonce));
        if self.by_hash.len() > self.max_total {
            self.evict_cheapest(hash)?;
        }
        Ok(hash)
    }

    /// Over the global limit: drop the transaction with the lowest fee cap (the newest
    /// nonce of its sender, so no gap is created); refuse `new` if it is the cheapest.
    fn evict_cheapest(&mut self, new: B256) -> Result<(), String> {
        let victim = self
            .by_sender
            .values()
            .filter_map(|q| q.values().next_back())
            .min_by_key(|t| t.tx.max_fee_per_gas())
            .map(|t| (t.sender, t.tx.nonce(), t.hash));
        if let Some((sender, nonce, hash)) = victim {
            self.remove(&sender, nonce);
            if hash == new {
                return Err(
                    "txpool is full and this transaction pays less than every pending one".into(),
                );
            }
        }
        Ok(())
    }

    fn remove(&mut self, sender: &Address, nonce: u64) {
        if let Some(q) = self.by_sender.get_mut(sender) {
            if let Some(t) = q.remove(&nonce) {
                self.by_hash.remove(&t.hash);
            }
            if q.is_empty() {
                self.by_sender.remove(sender);
            }
        }
    }

    /// Drop what the new head made stale (nonces below the account's).
    pub fn prune(&mut self, state: &WorldState) {
        let senders: Vec<Address> = self.by_sender.keys().copied().collect();
        for s in senders {
            let nonce = state.account(&s).map_or(0, |a| a.nonce);
            let stale: Vec<u64> = self.by_sender[&s].range(..nonce).map(|(n, _)| *n).collect();
            for n in stale {
                self.remove(&s, n);
            }
        }
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
}
