//! The gateway's cache of finalized data. With instant finality a block at or below the
//! finalized head never changes, nor does anything about it: the block by number or hash,
//! its transactions and receipts, logs in a finalized range, state at a finalized height,
//! the chain id. Such answers are kept in a bounded in-memory LRU (`gateway.cache_mb`)
//! and served without asking an execution client; nothing invalidates them but eviction.
//!
//! An answer is stored only when it is known to concern a finalized block when it comes
//! back — the block its params name, or else the block it names itself, at or below the
//! finalized height the gateway follows — and the finalized height only rises, so a hit
//! can never be about a block above it. `latest`, `pending`, `safe`, `finalized`, block
//! hashes in params, errors and `null` answers are never stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::body::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value as Json;

use chainctl_common::units::quantity;

/// Room per entry beyond its key and answer (map and order entries).
const OVERHEAD: usize = 96;

/// Why an answer may be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The same on every block (`eth_chainId`).
    Always,
    /// About the block its params name: stored when that block is finalized.
    Block(u64),
    /// About the block its answer names (`blockNumber`, or a block's `number`): stored
    /// when that block is finalized.
    Answer,
}

/// Where a cacheable call names the block its answer concerns.
#[derive(Clone, Copy)]
enum Names {
    /// Nowhere: the answer is the same at every block.
    Nothing,
    /// The params at this index (a number; a tag or a hash makes it uncacheable).
    Param(usize),
    /// The answer itself.
    Answer,
    /// An `eth_getLogs` filter's range: final when both ends are numbers and its end is.
    LogsRange,
}

/// The calls the cache may answer, and where each names its block.
const KEPT: &[(&str, Names)] = &[
    ("eth_chainId", Names::Nothing),
    ("eth_getBlockByNumber", Names::Param(0)),
    ("eth_getBlockReceipts", Names::Param(0)),
    ("eth_getBlockTransactionCountByNumber", Names::Param(0)),
    ("eth_getTransactionByBlockNumberAndIndex", Names::Param(0)),
    ("eth_getBalance", Names::Param(1)),
    ("eth_getCode", Names::Param(1)),
    ("eth_getTransactionCount", Names::Param(1)),
    ("eth_call", Names::Param(1)),
    ("eth_getStorageAt", Names::Param(2)),
    ("eth_getBlockByHash", Names::Answer),
    ("eth_getTransactionByHash", Names::Answer),
    ("eth_getTransactionReceipt", Names::Answer),
    ("eth_getTransactionByBlockHashAndIndex", Names::Answer),
    ("eth_getLogs", Names::LogsRange),
];

fn names(method: &str) -> Option<Names> {
    KEPT.iter().find(|(m, _)| *m == method).map(|(_, n)| *n)
}

/// Whether answers to `method` may ever be kept: a look-up needs no more (an entry is
/// there only if its call's rule allowed it), so a hit costs no parse of the params.
pub fn may_keep(method: &str) -> bool {
    names(method).is_some()
}

/// Which calls may be answered from the cache, and by which rule: `None` for every
/// other call (and for a tag or a block hash where a number would do).
pub fn rule(method: &str, params: Option<&str>) -> Option<Rule> {
    match names(method)? {
        Names::Nothing => Some(Rule::Always),
        Names::Answer => Some(Rule::Answer),
        Names::Param(i) => {
            let p: Vec<Json> = serde_json::from_str(params?).ok()?;
            block_number(p.get(i)?).map(Rule::Block)
        }
        Names::LogsRange => match LogsRange::of(params)? {
            LogsRange {
                from: Bound::At(_),
                to: Bound::At(to),
            } => Some(Rule::Block(to)),
            _ => None,
        },
    }
}

/// One end of an `eth_getLogs` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    At(u64),
    /// The head: `latest` and the other tags but `earliest`, or the bound left out.
    Head,
}

/// The range of an `eth_getLogs` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogsRange {
    pub from: Bound,
    pub to: Bound,
}

impl LogsRange {
    /// The range of the filter in `params`; `None` for a filter by block hash (one block)
    /// or one whose bounds do not read as blocks (the client answers it).
    pub fn of(params: Option<&str>) -> Option<LogsRange> {
        let p: Vec<Json> = serde_json::from_str(params?).ok()?;
        let f = p.first()?.as_object()?;
        if f.contains_key("blockHash") {
            return None;
        }
        let bound = |k: &str| -> Option<Bound> {
            match f.get(k) {
                None | Some(Json::Null) => Some(Bound::Head),
                Some(Json::String(t)) if t == "earliest" => Some(Bound::At(0)),
                Some(Json::String(t))
                    if matches!(t.as_str(), "latest" | "safe" | "finalized" | "pending") =>
                {
                    Some(Bound::Head)
                }
                Some(v) => block_number(v).map(Bound::At),
            }
        };
        Some(LogsRange {
            from: bound("fromBlock")?,
            to: bound("toBlock")?,
        })
    }

    /// Whether an end is the head (then [`LogsRange::span`] needs it).
    pub fn needs_head(&self) -> bool {
        self.from == Bound::Head || self.to == Bound::Head
    }

    /// The blocks it spans, `head` standing for [`Bound::Head`].
    pub fn span(&self, head: u64) -> u64 {
        let at = |b: Bound| match b {
            Bound::At(n) => n,
            Bound::Head => head,
        };
        at(self.to).saturating_sub(at(self.from)) + 1
    }
}

/// How many items an answer's `result` array holds (`None`: not an array result).
pub fn result_len(body: &[u8]) -> Option<usize> {
    #[derive(Deserialize)]
    struct Items {
        result: Vec<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Items>(body)
        .ok()
        .map(|i| i.result.len())
}

/// A block parameter given as a number: a hex quantity or `{"blockNumber": …}` (EIP-1898).
fn block_number(v: &Json) -> Option<u64> {
    match v {
        Json::Object(o) => quantity(o.get("blockNumber")?),
        v => quantity(v),
    }
}

/// What the cache knows of an answer body.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

/// The block an answer is about (a transaction's or receipt's `blockNumber`, a block's
/// `number`); `None` when it names none (a pending transaction).
fn answer_block(result: &RawValue) -> Option<u64> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Named {
        #[serde(default)]
        block_number: Option<Json>,
        #[serde(default)]
        number: Option<Json>,
    }
    let n: Named = serde_json::from_str(result.get()).ok()?;
    quantity(&n.block_number.or(n.number)?)
}

struct Entry {
    result: Bytes,
    used: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Entries by last use, oldest first.
    order: BTreeMap<u64, String>,
    bytes: usize,
    clock: u64,
}

/// A bounded LRU of answers about finalized blocks.
pub struct Cache {
    capacity: usize,
    inner: Mutex<Inner>,
    /// Highest finalized block seen, plus one (0: none seen yet).
    finalized: AtomicU64,
}

impl Cache {
    /// A cache of at most `capacity` bytes (keys, answers and bookkeeping).
    pub fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            inner: Mutex::new(Inner::default()),
            finalized: AtomicU64::new(0),
        }
    }

    /// The cache key of a call.
    pub fn key(method: &str, params: Option<&str>) -> String {
        let mut k = String::with_capacity(method.len() + 1 + params.map_or(2, str::len));
        k.push_str(method);
        k.push(' ');
        k.push_str(params.unwrap_or("[]"));
        k
    }

    /// The chain's finalized height is at least `n` (it never goes down here).
    pub fn finalized_at_least(&self, n: u64) {
        self.finalized.fetch_max(n + 1, Ordering::Relaxed);
    }

    /// The highest finalized block seen.
    pub fn finalized(&self) -> Option<u64> {
        self.finalized.load(Ordering::Relaxed).checked_sub(1)
    }

    fn is_final(&self, block: u64) -> bool {
        self.finalized().is_some_and(|f| block <= f)
    }

    /// The stored `result` of a call, marked as just used.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        inner.clock += 1;
        let now = inner.clock;
        let e = inner.map.get_mut(key)?;
        let old = std::mem::replace(&mut e.used, now);
        let result = e.result.clone();
        if let Some(k) = inner.order.remove(&old) {
            inner.order.insert(now, k);
        }
        Some(result)
    }

    /// Offers an upstream's answer `body` to a call under `rule`: kept when it is a
    /// result (not an error, not `null`) about a finalized block. Returns whether it was.
    pub fn offer(&self, key: &str, rule: Rule, body: &[u8]) -> bool {
        let Ok(reply) = serde_json::from_slice::<Reply>(body) else {
            return false;
        };
        let Some(result) = reply.result.filter(|_| reply.error.is_none()) else {
            return false;
        };
        if result.get() == "null" {
            return false;
        }
        let keep = match rule {
            Rule::Always => true,
            Rule::Block(n) => self.is_final(n),
            Rule::Answer => answer_block(result).is_some_and(|n| self.is_final(n)),
        };
        if !keep {
            return false;
        }
        let size = key.len() * 2 + result.get().len() + OVERHEAD;
        if size > self.capacity {
            return false;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        if inner.map.contains_key(key) {
            return true;
        }
        while inner.bytes + size > self.capacity {
            let Some((_, k)) = inner.order.pop_first() else {
                break;
            };
            if let Some(e) = inner.map.remove(&k) {
                inner.bytes -= k.len() * 2 + e.result.len() + OVERHEAD;
            }
        }
        inner.clock += 1;
        let now = inner.clock;
        inner.order.insert(now, key.to_string());
        inner.map.insert(
            key.to_string(),
            Entry {
                result: Bytes::copy_from_slice(result.get().as_bytes()),
                used: now,
            },
        );
        inner.bytes += size;
        true
    }

    /// Bytes held and entries.
    pub fn usage(&self) -> (usize, usize) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (g.bytes, g.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(result: &str) -> Vec<u8> {
        format!(r#"{{"jsonrpc":"2.0","id":7,"result":{result}}}"#).into_bytes()
    }

    #[test]
    fn only_numbered_finalized_blocks_and_fixed_facts_are_cacheable() {
        assert_eq!(rule("eth_chainId", None), Some(Rule::Always));
        assert_eq!(
            rule("eth_getBlockByNumber", Some(r#"["0x10", false]"#)),
            Some(Rule::Block(16))
        );
        for tag in ["latest", "pending", "safe", "finalized", "earliest"] {
            let p = format!(r#"["{tag}", true]"#);
            assert_eq!(rule("eth_getBlockByNumber", Some(&p)), None, "{tag}");
        }
        assert_eq!(
            rule(
                "eth_getBalance",
                Some(r#"["0x01", {"blockNumber": "0x5"}]"#)
            ),
            Some(Rule::Block(5))
        );
        assert_eq!(
            rule("eth_getBalance", Some(r#"["0x01", {"blockHash": "0xab"}]"#)),
            None
        );
        assert_eq!(rule("eth_getBalance", Some(r#"["0x01"]"#)), None);
        assert_eq!(
            rule(
                "eth_getLogs",
                Some(r#"[{"fromBlock":"0x1","toBlock":"0x9"}]"#)
            ),
            Some(Rule::Block(9))
        );
        assert_eq!(
            rule(
                "eth_getLogs",
                Some(r#"[{"fromBlock":"0x1","toBlock":"latest"}]"#)
            ),
            None
        );
        assert_eq!(rule("eth_getLogs", Some(r#"[{"blockHash":"0xab"}]"#)), None);
        assert_eq!(
            rule("eth_getTransactionReceipt", Some(r#"["0xab"]"#)),
            Some(Rule::Answer)
        );
        for m in [
            "eth_blockNumber",
            "eth_gasPrice",
            "eth_sendRawTransaction",
            "eth_estimateGas",
        ] {
            assert_eq!(rule(m, Some("[]")), None, "{m}");
            assert!(!may_keep(m), "{m}");
        }
        // Every method a rule can keep is one a look-up tries.
        for (m, p) in [
            ("eth_chainId", "[]"),
            ("eth_getBlockByNumber", r#"["0x1"]"#),
            ("eth_getBlockReceipts", r#"["0x1"]"#),
            ("eth_getBlockTransactionCountByNumber", r#"["0x1"]"#),
            (
                "eth_getTransactionByBlockNumberAndIndex",
                r#"["0x1","0x0"]"#,
            ),
            ("eth_getBalance", r#"["0x01","0x1"]"#),
            ("eth_getCode", r#"["0x01","0x1"]"#),
            ("eth_getTransactionCount", r#"["0x01","0x1"]"#),
            ("eth_call", r#"[{},"0x1"]"#),
            ("eth_getStorageAt", r#"["0x01","0x0","0x1"]"#),
            ("eth_getBlockByHash", r#"["0xab"]"#),
            ("eth_getTransactionByHash", r#"["0xab"]"#),
            ("eth_getTransactionReceipt", r#"["0xab"]"#),
            ("eth_getTransactionByBlockHashAndIndex", r#"["0xab","0x0"]"#),
            ("eth_getLogs", r#"[{"fromBlock":"0x1","toBlock":"0x2"}]"#),
        ] {
            assert!(rule(m, Some(p)).is_some() && may_keep(m), "{m}");
        }
    }

    #[test]
    fn a_logs_filter_spans_its_numbered_bounds_and_the_head_for_tags() {
        let span = |p: &str| LogsRange::of(Some(p)).map(|r| r.span(1000));
        let logs_need_head = |p: Option<&str>| LogsRange::of(p).is_some_and(|r| r.needs_head());
        assert_eq!(span(r#"[{"fromBlock":"0x1","toBlock":"0x10"}]"#), Some(16));
        assert_eq!(
            span(r#"[{"fromBlock":"earliest","toBlock":"latest"}]"#),
            Some(1001)
        );
        assert_eq!(span(r#"[{"fromBlock":"0x3e0"}]"#), Some(9));
        assert_eq!(span(r#"[{}]"#), Some(1));
        assert_eq!(span(r#"[{"fromBlock":"0x10","toBlock":"0x1"}]"#), Some(1));
        assert_eq!(span(r#"[{"blockHash":"0xab"}]"#), None);
        assert_eq!(span(r#"[{"fromBlock":"soon"}]"#), None);
        assert!(!logs_need_head(Some(
            r#"[{"fromBlock":"0x1","toBlock":"0x2"}]"#
        )));
        assert!(logs_need_head(Some(r#"[{"fromBlock":"0x1"}]"#)));
        assert!(logs_need_head(Some(
            r#"[{"fromBlock":"0x1","toBlock":"latest"}]"#
        )));
        assert_eq!(
            result_len(br#"{"jsonrpc":"2.0","id":1,"result":[{},{},{}]}"#),
            Some(3)
        );
        assert_eq!(
            result_len(br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#),
            None
        );
    }

    #[test]
    fn nothing_above_the_finalized_head_is_kept() {
        let c = Cache::new(1 << 20);
        let k = Cache::key("eth_getBlockByNumber", Some(r#"["0x3",false]"#));
        // Nothing finalized seen yet: not even block 0 is kept.
        assert!(!c.offer(&k, Rule::Block(3), &ok(r#"{"number":"0x3"}"#)));
        c.finalized_at_least(2);
        assert!(!c.offer(&k, Rule::Block(3), &ok(r#"{"number":"0x3"}"#)));
        assert_eq!(c.get(&k), None);
        c.finalized_at_least(3);
        assert!(c.offer(&k, Rule::Block(3), &ok(r#"{"number":"0x3"}"#)));
        assert_eq!(c.get(&k).unwrap(), r#"{"number":"0x3"}"#.as_bytes());
        // The finalized height never goes down.
        c.finalized_at_least(1);
        assert_eq!(c.finalized(), Some(3));
        // A receipt is kept by the block it names; a pending transaction never.
        let r = Cache::key("eth_getTransactionReceipt", Some(r#"["0xaa"]"#));
        assert!(!c.offer(
            &r,
            Rule::Answer,
            &ok(r#"{"blockNumber":"0x4","status":"0x1"}"#)
        ));
        assert!(c.offer(
            &r,
            Rule::Answer,
            &ok(r#"{"blockNumber":"0x2","status":"0x1"}"#)
        ));
        let t = Cache::key("eth_getTransactionByHash", Some(r#"["0xbb"]"#));
        assert!(!c.offer(
            &t,
            Rule::Answer,
            &ok(r#"{"blockNumber":null,"hash":"0xbb"}"#)
        ));
        // Errors and nulls are never kept.
        let e = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"x"}}"#;
        assert!(!c.offer(&k, Rule::Always, e));
        let n = Cache::key("eth_getBlockByNumber", Some(r#"["0x1",false]"#));
        assert!(!c.offer(&n, Rule::Block(1), &ok("null")));
        assert!(!c.offer(&n, Rule::Block(1), b"not json"));
    }

    #[test]
    fn the_least_recently_used_answers_go_first_and_the_size_stays_bounded() {
        let answer = format!(r#""{}""#, "a".repeat(1000));
        let key = |i: u32| Cache::key("eth_getBlockByNumber", Some(&format!(r#"["0x{i:06x}"]"#)));
        let per = key(0).len() * 2 + answer.len() + OVERHEAD;
        let c = Cache::new(per * 10);
        c.finalized_at_least(1_000_000);
        for i in 0..10 {
            assert!(c.offer(&key(i), Rule::Block(i as u64), &ok(&answer)));
        }
        // 0 is used again: 1 is now the oldest and goes first.
        assert!(c.get(&key(0)).is_some());
        assert!(c.offer(&key(10), Rule::Block(10), &ok(&answer)));
        assert!(c.get(&key(0)).is_some() && c.get(&key(1)).is_none());
        for i in 11..2000 {
            c.offer(&key(i), Rule::Block(i as u64), &ok(&answer));
        }
        let (bytes, entries) = c.usage();
        assert!(
            bytes <= per * 10 && entries == 10,
            "{bytes} bytes, {entries} entries"
        );
        // One answer larger than the whole cache is not kept (and evicts nothing).
        let huge = format!(r#""{}""#, "b".repeat(per * 11));
        assert!(!c.offer(&key(5000), Rule::Block(5000), &ok(&huge)));
        assert_eq!(c.usage().1, 10);
    }
}
