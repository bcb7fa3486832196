//! The engine's on-disk store (redb, one file `engine.redb` in `--datadir`).
//!
//! What it holds:
//! - every block on the canonical chain (and blocks that were canonical once), with the
//!   senders the engine recovered, its receipts and requests;
//! - INVALID verdicts, so that a payload refused before a restart is refused after it;
//! - the forkchoice (head, safe, finalized) the engine last acknowledged;
//! - the world state **flat** (accounts, storage slots and code, keyed as the tries key
//!   them) as of one finalized block, the *state block*, moved forward every
//!   [`FLUSH_EVERY`] finalized blocks by writing only what changed since.
//!
//! `forkchoiceUpdated` answers VALID only after the commit holding the new head's blocks
//! and the forkchoice is durable (fsync'd). Reopening after a crash therefore finds a
//! head no older than the last one acknowledged; the engine rebuilds the tries from the
//! flat state, checks their root against the state block's header, and re-executes the
//! blocks from the state block to the head, so every state root between is verified again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use alloy_consensus::{Block, ReceiptEnvelope, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_eips::eip7685::Requests;
use alloy_primitives::{Address, Bytes, B256, U256};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use revm::primitives::KECCAK_EMPTY;

use super::exec::ExecutedBlock;
use super::state::{Account, CodeStore, WorldState};

/// Version of the layout below; a store of another version is refused, not misread.
const FORMAT: u64 = 1;
/// The flat state moves forward when the finalized block is this many blocks past it.
pub const FLUSH_EVERY: u64 = 16;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BLOCKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blocks");
const INVALID: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("invalid");
/// Hashed address → nonce (8, big-endian) | balance (32) | code hash (32).
const ACCOUNTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("accounts");
/// Hashed address | hashed slot → value (32, big-endian, never zero).
const STORAGE: TableDefinition<&[u8; 64], &[u8; 32]> = TableDefinition::new("storage");
const CODE: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("code");
/// Number → hash of the canonical blocks up to the state block (final: never reverted).
const CANON: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("canonical");
/// Transaction hash → block hash (32) | index (4, big-endian), for the blocks in CANON.
const TXS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("transactions");

/// What the store says about the chain it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    pub genesis: B256,
    pub head: B256,
    pub safe: B256,
    pub finalized: B256,
    /// The block whose post-state the flat tables hold.
    pub state_block: B256,
}

/// Moving the flat state from one block's state to another's.
pub struct Flush<'a> {
    pub to: B256,
    pub from_state: &'a WorldState,
    pub to_state: &'a WorldState,
    /// The canonical blocks after the old state block up to `to`: their numbers and
    /// transactions are indexed on disk from now on.
    pub finalized: Vec<&'a ExecutedBlock>,
}

pub struct Store {
    db: Database,
    path: PathBuf,
    /// Blocks already written (or read back at open).
    persisted: HashSet<B256>,
}

type Res<T> = Result<T, String>;

impl Store {
    /// Open (or create) the store in `dir`. Another process holding it is refused by name.
    pub fn open(dir: &Path) -> Res<Store> {
        chainctl_common::fs::private_dir(dir)
            .map_err(|e| format!("cannot create the data dir {}: {e}", dir.display()))?;
        let path = dir.join("engine.redb");
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => format!(
                "{} is in use by another process: two engines cannot share a data dir; stop the other one or give this one its own --datadir",
                path.display()
            ),
            e => format!("cannot open {}: {e}", path.display()),
        })?;
        Ok(Store {
            db,
            path,
            persisted: HashSet::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A failed read or write of the file.
    fn err(&self, what: &str, e: impl std::fmt::Display) -> String {
        format!(
            "{}: {what}: {e} (check that the disk has space and the data dir is writable by this user)",
            self.path.display()
        )
    }

    /// Content that cannot be what this engine wrote.
    fn damaged(&self, what: impl std::fmt::Display) -> String {
        damaged(&self.path, &what.to_string())
    }

    /// The saved chain, or `None` for a new store.
    pub fn saved(&self) -> Res<Option<Saved>> {
        let r = self.db.begin_read().map_err(|e| self.err("read", e))?;
        let t = match r.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err("meta", e)),
        };
        let get = |k: &str| -> Res<Option<Vec<u8>>> {
            Ok(t.get(k)
                .map_err(|e| self.err("meta", e))?
                .map(|v| v.value().to_vec()))
        };
        let Some(format) = get("format")? else {
            return Ok(None);
        };
        let format = u64::from_be_bytes(
            format
                .try_into()
                .map_err(|_| self.damaged("the format field is not a number"))?,
        );
        if format != FORMAT {
            return Err(format!(
                "{} has store format {format}; this chainctl reads format {FORMAT}: move the data dir away and start the engine again: it resyncs the chain from its consensus node",
                self.path.display()
            ));
        }
        let hash = |k: &str| -> Res<B256> {
            let v = get(k)?.ok_or_else(|| self.damaged(format!("{k} is missing")))?;
            if v.len() != 32 {
                return Err(self.damaged(format!("{k} is not a hash")));
            }
            Ok(B256::from_slice(&v))
        };
        Ok(Some(Saved {
            genesis: hash("genesis")?,
            head: hash("head")?,
            safe: hash("safe")?,
            finalized: hash("finalized")?,
            state_block: hash("state_block")?,
        }))
    }

    /// Start a new store at `genesis` (with its whole state). Durable when it returns.
    pub fn init(&mut self, genesis: &ExecutedBlock, codes: &CodeStore) -> Res<()> {
        let state = genesis
            .state
            .as_ref()
            .ok_or_else(|| self.err("init", "the genesis block has no state"))?;
        let mut w = self.db.begin_write().map_err(|e| self.err("write", e))?;
        w.set_durability(Durability::Immediate);
        {
            write_block(&w, genesis).map_err(|e| self.err("block", e))?;
            write_state_diff(&w, &WorldState::default(), state, codes)
                .map_err(|e| self.err("state", e))?;
            let mut m = w.open_table(META).map_err(|e| self.err("meta", e))?;
            let h = genesis.hash.0;
            for (k, v) in [
                ("format", &FORMAT.to_be_bytes()[..]),
                ("genesis", &h[..]),
                ("head", &h[..]),
                ("safe", &h[..]),
                ("finalized", &h[..]),
                ("state_block", &h[..]),
            ] {
                m.insert(k, v).map_err(|e| self.err("meta", e))?;
            }
            w.open_table(CANON)
                .map_err(|e| self.err("canonical", e))?
                .insert(0, &genesis.hash.0)
                .map_err(|e| self.err("canonical", e))?;
            // Create the remaining tables, so that readers find them.
            w.open_table(INVALID).map_err(|e| self.err("invalid", e))?;
            w.open_table(TXS).map_err(|e| self.err("transactions", e))?;
        }
        w.commit().map_err(|e| self.err("commit", e))?;
        self.persisted.insert(genesis.hash);
        Ok(())
    }

    /// Make the forkchoice durable with the blocks it needs (`blocks`: those not yet
    /// written, in any order) and, when given, move the flat state forward.
    pub fn commit_forkchoice(
        &mut self,
        blocks: &[&ExecutedBlock],
        head: B256,
        safe: B256,
        finalized: B256,
        flush: Option<Flush<'_>>,
        codes: &CodeStore,
    ) -> Res<()> {
        let mut w = self.db.begin_write().map_err(|e| self.err("write", e))?;
        w.set_durability(Durability::Immediate);
        {
            for b in blocks {
                write_block(&w, b).map_err(|e| self.err("block", e))?;
            }
            let mut m = w.open_table(META).map_err(|e| self.err("meta", e))?;
            for (k, v) in [("head", head), ("safe", safe), ("finalized", finalized)] {
                m.insert(k, &v.0[..]).map_err(|e| self.err("meta", e))?;
            }
            if let Some(f) = &flush {
                write_state_diff(&w, f.from_state, f.to_state, codes)
                    .map_err(|e| self.err("state", e))?;
                let mut canon = w.open_table(CANON).map_err(|e| self.err("canonical", e))?;
                let mut txs = w.open_table(TXS).map_err(|e| self.err("transactions", e))?;
                for b in &f.finalized {
                    canon
                        .insert(b.number(), &b.hash.0)
                        .map_err(|e| self.err("canonical", e))?;
                    for (i, tx) in b.block.body.transactions.iter().enumerate() {
                        let mut v = [0u8; 36];
                        v[..32].copy_from_slice(&b.hash.0);
                        v[32..].copy_from_slice(&(i as u32).to_be_bytes());
                        txs.insert(&tx.tx_hash().0, &v[..])
                            .map_err(|e| self.err("transactions", e))?;
                    }
                }
                m.insert("state_block", &f.to.0[..])
                    .map_err(|e| self.err("meta", e))?;
            }
        }
        w.commit().map_err(|e| self.err("commit", e))?;
        self.persisted.extend(blocks.iter().map(|b| b.hash));
        Ok(())
    }

    pub fn is_persisted(&self, hash: &B256) -> bool {
        self.persisted.contains(hash)
    }

    /// Remember an INVALID verdict, durably: a verdict never flips, not even across a crash
    /// (invalid payloads are rare, so the fsync costs nothing in practice).
    pub fn put_invalid(&self, hash: &B256, latest_valid: Option<B256>, reason: &str) -> Res<()> {
        let mut w = self.db.begin_write().map_err(|e| self.err("write", e))?;
        w.set_durability(Durability::Immediate);
        {
            let mut t = w.open_table(INVALID).map_err(|e| self.err("invalid", e))?;
            let mut v = Vec::with_capacity(33 + reason.len());
            match latest_valid {
                Some(h) => {
                    v.push(1);
                    v.extend_from_slice(&h.0);
                }
                None => v.push(0),
            }
            v.extend_from_slice(reason.as_bytes());
            t.insert(&hash.0, &v[..])
                .map_err(|e| self.err("invalid", e))?;
        }
        w.commit().map_err(|e| self.err("commit", e))
    }

    /// Every remembered INVALID verdict: (block, latest valid ancestor, reason).
    pub fn invalid(&self) -> Res<Vec<(B256, Option<B256>, String)>> {
        let r = self.db.begin_read().map_err(|e| self.err("read", e))?;
        let t = r.open_table(INVALID).map_err(|e| self.err("invalid", e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err("invalid", e))? {
            let (k, v) = row.map_err(|e| self.err("invalid", e))?;
            let v = v.value();
            let (latest, reason) = match v.first() {
                Some(1) if v.len() >= 33 => (Some(B256::from_slice(&v[1..33])), &v[33..]),
                Some(0) => (None, &v[1..]),
                _ => return Err(self.damaged("a malformed INVALID verdict")),
            };
            out.push((
                B256::from(*k.value()),
                latest,
                String::from_utf8_lossy(reason).into_owned(),
            ));
        }
        Ok(out)
    }

    /// A stored block (without state), checked against its hash.
    pub fn block(&self, hash: &B256) -> Res<Option<ExecutedBlock>> {
        let r = self.db.begin_read().map_err(|e| self.err("read", e))?;
        let t = r.open_table(BLOCKS).map_err(|e| self.err("blocks", e))?;
        let Some(v) = t.get(&hash.0).map_err(|e| self.err("blocks", e))? else {
            return Ok(None);
        };
        decode_block(*hash, v.value())
            .map(Some)
            .map_err(|e| self.damaged(format!("block {hash}: {e}")))
    }

    /// Where a transaction of a block up to the state block is: (block, index).
    pub fn tx_location(&self, tx: &B256) -> Res<Option<(B256, usize)>> {
        let r = self.db.begin_read().map_err(|e| self.err("read", e))?;
        let t = r.open_table(TXS).map_err(|e| self.err("transactions", e))?;
        let Some(v) = t.get(&tx.0).map_err(|e| self.err("transactions", e))? else {
            return Ok(None);
        };
        let v = v.value();
        if v.len() != 36 {
            return Err(self.damaged(format!("the location of transaction {tx} is malformed")));
        }
        let index = u32::from_be_bytes(v[32..].try_into().expect("4 bytes"));
        Ok(Some((B256::from_slice(&v[..32]), index as usize)))
    }

    /// Canonical hashes by number, from genesis up to `last` (inclusive).
    pub fn canonical_hashes(&self, last: u64) -> Res<Vec<B256>> {
        let r = self.db.begin_read().map_err(|e| self.err("read", e))?;
        let t = r.open_table(CANON).map_err(|e| self.err("canonical", e))?;
        let mut out = Vec::new();
        for row in t.range(0..=last).map_err(|e| self.err("canonical", e))? {
            let (k, v) = row.map_err(|e| self.err("canonical", e))?;
            if k.value() != out.len() as u64 {
                return Err(self.damaged(format!("canonical block {} is missing", out.len())));
            }
            out.push(B256::from(*v.value()));
        }
        if out.len() as u64 != last + 1 {
            return Err(self.damaged(format!("canonical block {} is missing", out.len())));
        }
        Ok(out)
    }

    /// The stored chain from `head` down to block `lowest` (head first), blocks without
    /// state, each checked against its hash.
    pub fn chain_down_to(&self, head: B256, lowest: u64) -> Res<Vec<ExecutedBlock>> {
        let r = self.db.begin_read().map_err(|e| self.err("read", e))?;
        let t = r.open_table(BLOCKS).map_err(|e| self.err("blocks", e))?;
        let mut out = Vec::new();
        let mut cur = head;
        loop {
            let v = t
                .get(&cur.0)
                .map_err(|e| self.err("blocks", e))?
                .ok_or_else(|| {
                    self.damaged(format!("block {cur} of the saved chain is missing"))
                })?;
            let b = decode_block(cur, v.value())
                .map_err(|e| self.damaged(format!("block {cur}: {e}")))?;
            cur = b.header().parent_hash;
            let number = b.number();
            out.push(b);
            if number <= lowest {
                return Ok(out);
            }
        }
    }

    /// Mark blocks read back at open as written.
    pub fn mark_persisted(&mut self, hashes: impl IntoIterator<Item = B256>) {
        self.persisted.extend(hashes);
    }

    /// Stop tracking blocks that left memory (the set stays as small as what is in memory;
    /// the head's branch never reaches below them).
    pub fn forget(&mut self, hashes: impl IntoIterator<Item = B256>) {
        for h in hashes {
            self.persisted.remove(&h);
        }
    }

    /// The flat state, as tries (their root is the caller's to check), and all code.
    pub fn state(&self, codes: &CodeStore) -> Res<WorldState> {
        let r = self.db.begin_read().map_err(|e| self.err("read", e))?;
        let code = r.open_table(CODE).map_err(|e| self.err("code", e))?;
        for row in code.iter().map_err(|e| self.err("code", e))? {
            let (k, v) = row.map_err(|e| self.err("code", e))?;
            let hash = B256::from(*k.value());
            if alloy_primitives::keccak256(v.value()) != hash {
                return Err(self.damaged(format!("code {hash} does not hash to its key")));
            }
            let code = revm::bytecode::Bytecode::new_raw_checked(Bytes::copy_from_slice(v.value()))
                .map_err(|e| self.damaged(format!("code {hash}: {e}")))?;
            codes.insert(hash, code);
        }
        let accounts = r
            .open_table(ACCOUNTS)
            .map_err(|e| self.err("accounts", e))?;
        let storage = r.open_table(STORAGE).map_err(|e| self.err("storage", e))?;
        let mut slots = storage
            .iter()
            .map_err(|e| self.err("storage", e))?
            .peekable();
        let mut state = WorldState::default();
        for row in accounts.iter().map_err(|e| self.err("accounts", e))? {
            let (k, v) = row.map_err(|e| self.err("accounts", e))?;
            let key = *k.value();
            let v = v.value();
            if v.len() != 72 {
                return Err(self.damaged(format!("account {} is malformed", B256::from(key))));
            }
            let mut acct = Account {
                nonce: u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
                balance: U256::from_be_slice(&v[8..40]),
                code_hash: B256::from_slice(&v[40..72]),
                storage: Default::default(),
            };
            while let Some(Ok((sk, _))) = slots.peek() {
                let sk = sk.value();
                if sk[..32] < key[..] {
                    return Err(self.orphan_slots(sk));
                }
                if sk[..32] != key[..] {
                    break;
                }
                let (sk, sv) = slots
                    .next()
                    .expect("peeked")
                    .map_err(|e| self.err("storage", e))?;
                acct.storage.insert(
                    &B256::from_slice(&sk.value()[32..]),
                    U256::from_be_bytes(*sv.value()),
                );
            }
            state.put_hashed(B256::from(key), acct);
        }
        if let Some(row) = slots.next() {
            let (sk, _) = row.map_err(|e| self.err("storage", e))?;
            return Err(self.orphan_slots(sk.value()));
        }
        Ok(state)
    }

    /// A read transaction: a consistent view of the whole store as of now, which later
    /// commits do not change (redb is copy-on-write). Cheap to take under the chain lock.
    pub fn read_view(&self) -> Res<redb::ReadTransaction> {
        self.db.begin_read().map_err(|e| self.err("read", e))
    }

    fn orphan_slots(&self, key: &[u8; 64]) -> String {
        self.damaged(format!(
            "storage slots of account {}, which does not exist",
            B256::from_slice(&key[..32])
        ))
    }
}

/// The error for a store whose content cannot be what an engine wrote, with what to do.
pub fn damaged(path: &Path, what: &str) -> String {
    format!(
        "{}: {what}: the store is damaged; move the data dir away and start the engine again: it resyncs the chain from its consensus node",
        path.display()
    )
}

/// What a snapshot holds: the store's forkchoice as of its read transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub genesis: B256,
    pub head: B256,
    pub finalized: B256,
    /// Number of the finalized block.
    pub finalized_number: u64,
}

/// Write the store as `view` sees it into a new store file at `dest` (replaced when it
/// exists), table by table, then fsync it: a complete store an engine opens like its own
/// (it re-executes from the flat state's block to the head, checking every state root).
/// The engine keeps running meanwhile; `view` pins the pages it reads.
pub fn export(view: &redb::ReadTransaction, dest: &Path) -> Res<SnapshotInfo> {
    let e = |what: &str, err: &dyn std::fmt::Display| {
        format!("snapshot {}: {what}: {err}", dest.display())
    };
    let tmp = dest.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let out = Database::create(&tmp).map_err(|x| e("create", &x))?;
    let mut w = out.begin_write().map_err(|x| e("write", &x))?;
    w.set_durability(Durability::Immediate);
    fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
        view: &redb::ReadTransaction,
        w: &redb::WriteTransaction,
        def: TableDefinition<K, V>,
    ) -> Result<(), String> {
        let from = match view.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(x) => return Err(format!("{def}: {x}")),
        };
        let mut to = w.open_table(def).map_err(|x| format!("{def}: {x}"))?;
        for row in from.iter().map_err(|x| format!("{def}: {x}"))? {
            let (k, v) = row.map_err(|x| format!("{def}: {x}"))?;
            to.insert(k.value(), v.value())
                .map_err(|x| format!("{def}: {x}"))?;
        }
        Ok(())
    }
    let tables = || -> Result<(), String> {
        copy(view, &w, META)?;
        copy(view, &w, BLOCKS)?;
        copy(view, &w, INVALID)?;
        copy(view, &w, ACCOUNTS)?;
        copy(view, &w, STORAGE)?;
        copy(view, &w, CODE)?;
        copy(view, &w, CANON)?;
        copy(view, &w, TXS)
    };
    tables().map_err(|x| e("copy", &x))?;
    w.commit().map_err(|x| e("commit", &x))?;
    drop(out);
    std::fs::rename(&tmp, dest).map_err(|x| e("rename", &x))?;
    // Read back what was written: the forkchoice the snapshot holds.
    snapshot_info(dest)
}

/// What a snapshot file (a store another engine exported) holds, read without opening it
/// as a store: its genesis, head and finalized block.
pub fn snapshot_info(path: &Path) -> Res<SnapshotInfo> {
    let e = |what: &str, err: &dyn std::fmt::Display| {
        format!("snapshot {}: {what}: {err}", path.display())
    };
    let db = Database::open(path).map_err(|x| e("open", &x))?;
    let r = db.begin_read().map_err(|x| e("read", &x))?;
    let meta = r.open_table(META).map_err(|x| e("meta", &x))?;
    let get = |k: &str| -> Res<B256> {
        let v = meta
            .get(k)
            .map_err(|x| e("meta", &x))?
            .ok_or_else(|| damaged(path, &format!("{k} is missing")))?;
        if v.value().len() != 32 {
            return Err(damaged(path, &format!("{k} is not a hash")));
        }
        Ok(B256::from_slice(v.value()))
    };
    let (genesis, head, finalized) = (get("genesis")?, get("head")?, get("finalized")?);
    let blocks = r.open_table(BLOCKS).map_err(|x| e("blocks", &x))?;
    let raw = blocks
        .get(&finalized.0)
        .map_err(|x| e("blocks", &x))?
        .ok_or_else(|| damaged(path, "the finalized block is missing"))?;
    let block = decode_block(finalized, raw.value()).map_err(|x| damaged(path, &x))?;
    Ok(SnapshotInfo {
        genesis,
        head,
        finalized,
        finalized_number: block.number(),
    })
}

fn io(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn write_block(w: &redb::WriteTransaction, b: &ExecutedBlock) -> Res<()> {
    let mut t = w.open_table(BLOCKS).map_err(io)?;
    t.insert(&b.hash.0, &encode_block(b)[..]).map_err(io)?;
    Ok(())
}

/// Write what differs between two states into the flat tables (which hold `from`).
fn write_state_diff(
    w: &redb::WriteTransaction,
    from: &WorldState,
    to: &WorldState,
    codes: &CodeStore,
) -> Res<()> {
    let mut accounts = w.open_table(ACCOUNTS).map_err(io)?;
    let mut storage = w.open_table(STORAGE).map_err(io)?;
    let mut code = w.open_table(CODE).map_err(io)?;
    let empty = Default::default();
    let mut result = Ok(());
    to.diff(from, &mut |key, old, new| {
        if result.is_err() {
            return;
        }
        result = (|| -> Res<()> {
            let Some(new) = new else {
                accounts.remove(&key.0).map_err(io)?;
                let (lo, hi) = slot_range(&key);
                storage
                    .retain_in::<&[u8; 64], _>(&lo..=&hi, |_, _| false)
                    .map_err(io)?;
                return Ok(());
            };
            let same_info = old.is_some_and(|o| {
                o.nonce == new.nonce && o.balance == new.balance && o.code_hash == new.code_hash
            });
            if !same_info {
                let mut v = [0u8; 72];
                v[..8].copy_from_slice(&new.nonce.to_be_bytes());
                v[8..40].copy_from_slice(&new.balance.to_be_bytes::<32>());
                v[40..].copy_from_slice(&new.code_hash.0);
                accounts.insert(&key.0, &v[..]).map_err(io)?;
            }
            if new.code_hash != KECCAK_EMPTY && old.is_none_or(|o| o.code_hash != new.code_hash) {
                let bytes = codes.get(&new.code_hash).ok_or_else(|| {
                    format!("code {} of account {key} is not known", new.code_hash)
                })?;
                code.insert(&new.code_hash.0, bytes.original_byte_slice())
                    .map_err(io)?;
            }
            let old_storage = old.map_or(&empty, |o| &o.storage);
            let mut inner = Ok(());
            new.storage.diff(old_storage, &mut |slot, _, v| {
                if inner.is_err() {
                    return;
                }
                let mut k = [0u8; 64];
                k[..32].copy_from_slice(&key.0);
                k[32..].copy_from_slice(&slot.0);
                inner = match v {
                    Some(v) => storage.insert(&k, &v.to_be_bytes::<32>()).map(|_| ()),
                    None => storage.remove(&k).map(|_| ()),
                }
                .map_err(io);
            });
            inner
        })();
    });
    result
}

fn slot_range(account: &B256) -> ([u8; 64], [u8; 64]) {
    let (mut lo, mut hi) = ([0u8; 64], [0xffu8; 64]);
    lo[..32].copy_from_slice(&account.0);
    hi[..32].copy_from_slice(&account.0);
    (lo, hi)
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_be_bytes());
}

/// block RLP | senders | receipts (EIP-2718) | requests | fees, each length-prefixed.
fn encode_block(b: &ExecutedBlock) -> Vec<u8> {
    let mut out = Vec::new();
    let rlp = alloy_rlp::encode(&b.block);
    put_len(&mut out, rlp.len());
    out.extend_from_slice(&rlp);
    put_len(&mut out, b.senders.len());
    for s in &b.senders {
        out.extend_from_slice(s.as_slice());
    }
    put_len(&mut out, b.receipts.len());
    for r in &b.receipts {
        let enc = r.encoded_2718();
        put_len(&mut out, enc.len());
        out.extend_from_slice(&enc);
    }
    put_len(&mut out, b.requests.len());
    for r in b.requests.iter() {
        put_len(&mut out, r.len());
        out.extend_from_slice(r);
    }
    out.extend_from_slice(&b.fees.to_be_bytes::<32>());
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if self.0.len() < n {
            return Err("record cut short".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn len(&mut self) -> Res<usize> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize)
    }
    fn chunk(&mut self) -> Res<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
}

fn decode_block(hash: B256, bytes: &[u8]) -> Res<ExecutedBlock> {
    let mut r = Reader(bytes);
    let mut rlp = r.chunk()?;
    let block: Block<TxEnvelope> =
        alloy_rlp::Decodable::decode(&mut rlp).map_err(|e| format!("block RLP: {e}"))?;
    if block.header.hash_slow() != hash {
        return Err("the stored header does not hash to its key".into());
    }
    let n = r.len()?;
    let senders = (0..n)
        .map(|_| Ok(Address::from_slice(r.take(20)?)))
        .collect::<Res<Vec<_>>>()?;
    if senders.len() != block.body.transactions.len() {
        return Err("senders do not match the transactions".into());
    }
    let n = r.len()?;
    let receipts = (0..n)
        .map(|_| {
            let mut c = r.chunk()?;
            ReceiptEnvelope::decode_2718(&mut c).map_err(|e| format!("receipt: {e}"))
        })
        .collect::<Res<Vec<_>>>()?;
    let n = r.len()?;
    let requests = (0..n)
        .map(|_| Ok(Bytes::copy_from_slice(r.chunk()?)))
        .collect::<Res<Vec<_>>>()?;
    let fees = U256::from_be_slice(r.take(32)?);
    if !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(ExecutedBlock {
        hash,
        block,
        senders,
        receipts,
        requests: Requests::new(requests),
        state: None,
        fees,
    })
}
