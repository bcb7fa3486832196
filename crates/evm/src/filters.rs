//! Pending-transaction filters (`eth_newPendingTransactionFilter`, `eth_getFilterChanges`,
//! `eth_uninstallFilter`), and the pull of another client's new pending transactions
//! (`--tx-source`) that they make possible.
//!
//! Reth, Geth and Erigon gossip transactions over devp2p, which the built-in engine does
//! not speak: a transaction sent straight to one of them never reaches a built-in
//! engine by itself. So the engine asks each of its network's external clients, every
//! [`PULL_INTERVAL`], for the hashes of its new pending transactions (a pending filter,
//! served by all three and by this engine; a new one every round, because Reth answers a
//! filter only once per block), fetches those it does not hold with
//! `eth_getRawTransactionByHash`, and takes them into its pool as relayed ones (not
//! passed on again: the source's own peers have them).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use alloy_primitives::{B256, U64};

/// New pending hashes kept for filters to read (a filter polled less often than this
/// many arrivals misses the oldest, as Geth's do).
const FEED_CAPACITY: usize = 65_536;
/// A filter not polled for this long is removed (Geth's `filterTimeout`: 5 minutes).
const FILTER_TIMEOUT: Duration = Duration::from_secs(300);
/// At most this many filters at once (the oldest-polled goes first).
const MAX_FILTERS: usize = 1024;
/// How often a source is asked for its new pending transactions.
pub const PULL_INTERVAL: Duration = Duration::from_millis(200);

/// The hashes of transactions as they enter the pool, numbered, and the filters reading
/// them.
#[derive(Default)]
pub struct PendingFeed {
    next: u64,
    /// (number, hash), oldest first.
    log: VecDeque<(u64, B256)>,
    /// Filter id → (next number it has not read, last polled).
    filters: HashMap<u64, (u64, Instant)>,
    next_id: u64,
}

impl PendingFeed {
    /// A transaction entered the pool.
    pub fn push(&mut self, hash: B256) {
        if self.log.len() == FEED_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back((self.next, hash));
        self.next += 1;
    }

    /// A new filter: it reports what enters the pool from now on.
    pub fn install(&mut self) -> U64 {
        let now = Instant::now();
        self.filters
            .retain(|_, (_, polled)| now.duration_since(*polled) < FILTER_TIMEOUT);
        if self.filters.len() >= MAX_FILTERS {
            if let Some(oldest) = self
                .filters
                .iter()
                .min_by_key(|(_, (_, polled))| *polled)
                .map(|(id, _)| *id)
            {
                self.filters.remove(&oldest);
            }
        }
        // Ids that do not repeat across restarts of a long-lived client's view: the
        // clock's low bits, then a counter.
        if self.next_id == 0 {
            self.next_id = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 & 0xffff_ffff)
                << 16;
        }
        self.next_id += 1;
        self.filters.insert(self.next_id, (self.next, now));
        U64::from(self.next_id)
    }

    /// What entered the pool since the filter was last read; `None` for an unknown
    /// (or expired) filter.
    pub fn changes(&mut self, id: U64) -> Option<Vec<B256>> {
        let id = id.to::<u64>();
        let (from, polled) = self.filters.get_mut(&id)?;
        if polled.elapsed() >= FILTER_TIMEOUT {
            self.filters.remove(&id);
            return None;
        }
        let out: Vec<B256> = self
            .log
            .iter()
            .filter(|(n, _)| *n >= *from)
            .map(|(_, h)| *h)
            .collect();
        *from = self.next;
        *polled = Instant::now();
        Some(out)
    }

    /// Removes a filter; whether there was one.
    pub fn uninstall(&mut self, id: U64) -> bool {
        self.filters.remove(&id.to::<u64>()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_reports_each_new_hash_once_from_its_install_on() {
        let mut f = PendingFeed::default();
        let h = |i: u8| B256::repeat_byte(i);
        f.push(h(1));
        let a = f.install();
        assert_eq!(f.changes(a), Some(vec![]), "nothing before its install");
        f.push(h(2));
        f.push(h(3));
        let b = f.install();
        f.push(h(4));
        assert_eq!(f.changes(a), Some(vec![h(2), h(3), h(4)]));
        assert_eq!(f.changes(a), Some(vec![]), "each once");
        assert_eq!(f.changes(b), Some(vec![h(4)]));
        assert!(f.uninstall(a));
        assert_eq!(f.changes(a), None, "gone");
        assert!(!f.uninstall(a));
        assert_eq!(f.changes(U64::from(12345)), None);
    }

    #[test]
    fn the_feed_keeps_the_newest_hashes() {
        let mut f = PendingFeed::default();
        let id = f.install();
        for i in 0..(FEED_CAPACITY as u64 + 10) {
            f.push(B256::from(alloy_primitives::U256::from(i)));
        }
        let got = f.changes(id).unwrap();
        assert_eq!(got.len(), FEED_CAPACITY);
        assert_eq!(got[0], B256::from(alloy_primitives::U256::from(10u64)));
    }
}
