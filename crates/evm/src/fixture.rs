//! `chainctl node evm import-fixture`: run Ethereum execution-spec-tests blockchain
//! fixtures through the engine's block import.
//!
//! A block the fixture expects to be rejected counts only when the engine rejects it
//! for the kind of reason the fixture names (`expectException`, e.g.
//! `TransactionException.INSUFFICIENT_ACCOUNT_FUNDS`): EEST names each exception, the
//! engine gives a reason in words, and [`EXCEPTION_KINDS`] says which words each name
//! stands for. A block refused for another reason — it does not decode, its parent is
//! unknown, another rule — is a failed case, not a pass. Networks before the merge
//! (Frontier…London) are `unsupported`, counted apart from passed and failed; the merge
//! fork itself (Paris) and every fork after it run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy_consensus::{Block, Header, TxEnvelope};
use alloy_eips::{eip7840::BlobParams, eip7892::BlobScheduleBlobParams};
use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use alloy_rlp::Decodable;
use revm::bytecode::Bytecode;
use serde::Deserialize;

use super::chain::{Chain, InsertError};
use super::spec::ChainSpec;
use super::state::{CodeStore, WorldState};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    network: String,
    #[serde(rename = "genesisRLP")]
    genesis_rlp: Bytes,
    genesis_block_header: HeaderHash,
    pre: BTreeMap<Address, FixtureAccount>,
    post_state: Option<BTreeMap<Address, FixtureAccount>>,
    lastblockhash: B256,
    config: Option<FixtureConfig>,
    blocks: Vec<FixtureBlock>,
}

#[derive(Deserialize)]
struct HeaderHash {
    hash: B256,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureConfig {
    chainid: Option<U256>,
    #[serde(default)]
    blob_schedule: BTreeMap<String, FixtureBlobParams>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureBlobParams {
    target: U256,
    max: U256,
    base_fee_update_fraction: U256,
}

#[derive(Deserialize, Clone)]
struct FixtureAccount {
    balance: U256,
    nonce: U256,
    code: Bytes,
    #[serde(default)]
    storage: BTreeMap<U256, U256>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureBlock {
    rlp: Bytes,
    expect_exception: Option<String>,
    block_header: Option<HeaderHash>,
}

/// One case's outcome.
pub struct CaseResult {
    pub file: PathBuf,
    pub name: String,
    pub fork: String,
    pub outcome: Outcome,
    /// Every block the case expects to be rejected, as far as the case ran.
    pub rejections: Vec<Rejection>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Failed(String),
    /// The fork rules are not the engine's (pre-merge): why.
    Unsupported(String),
}

/// A block the fixture expects to be rejected, and what the engine did with it.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The fixture's `expectException` (alternatives joined by `|`).
    pub expected: String,
    /// Why the engine refused it; `None`: it was accepted.
    pub reason: Option<String>,
    /// The reason is of a kind the fixture names.
    pub matched: bool,
}

/// EEST exception names, each with the words of the engine's reasons of that kind (its
/// own checks, alloy-evm's and revm's errors). Matched case-insensitively.
pub const EXCEPTION_KINDS: &[(&str, &[&str])] = &[
    (
        "TransactionException.INSUFFICIENT_ACCOUNT_FUNDS",
        &["lack of funds"],
    ),
    (
        "TransactionException.INSUFFICIENT_MAX_FEE_PER_GAS",
        &[
            "gas price is less than basefee",
            "max fee per gas less than block base fee",
        ],
    ),
    (
        "TransactionException.GAS_LIMIT_EXCEEDS_MAXIMUM",
        &["is greater than the cap"],
    ),
    (
        "TransactionException.TYPE_3_TX_ZERO_BLOBS",
        &["empty blobs"],
    ),
    (
        "TransactionException.TYPE_3_TX_MAX_BLOB_GAS_ALLOWANCE_EXCEEDED",
        &["too many blobs", "exceeds the maximum"],
    ),
    (
        "TransactionException.TYPE_3_TX_BLOB_COUNT_EXCEEDED",
        &["too many blobs"],
    ),
    (
        "TransactionException.TYPE_3_TX_WITH_FULL_BLOBS",
        &[crate::exec::NETWORK_FORM_IN_BLOCK],
    ),
    (
        "BlockException.RLP_STRUCTURES_ENCODING",
        &["does not decode", crate::exec::NETWORK_FORM_IN_BLOCK],
    ),
    (
        "BlockException.INVALID_REQUESTS",
        &["requests hash mismatch"],
    ),
    (
        "BlockException.INVALID_DEPOSIT_EVENT_LAYOUT",
        &[
            crate::exec::INVALID_DEPOSIT_LAYOUT,
            "failed to decode deposit requests",
        ],
    ),
    (
        "BlockException.SYSTEM_CONTRACT_CALL_FAILED",
        &[
            "pre-block system call failed",
            "requests contract call: execution",
        ],
    ),
    (
        "BlockException.SYSTEM_CONTRACT_EMPTY",
        &["system contract", "has no code"],
    ),
    (
        "BlockException.INVALID_WITHDRAWALS_ROOT",
        &["withdrawals root mismatch"],
    ),
    (
        "BlockException.INVALID_BLOCK_HASH",
        &["block hash mismatch"],
    ),
    (
        "BlockException.INVALID_STATE_ROOT",
        &["state root mismatch"],
    ),
];

/// Whether `reason` is of a kind `expected` names (`A|B`: either). An exception name
/// without an entry in [`EXCEPTION_KINDS`] matches nothing: a case expecting it fails,
/// naming it, until the table says what it stands for.
pub fn exception_matches(expected: &str, reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    expected.split('|').map(str::trim).any(|name| {
        EXCEPTION_KINDS
            .iter()
            .filter(|(n, _)| *n == name)
            .flat_map(|(_, words)| words.iter())
            .any(|w| reason.contains(&w.to_ascii_lowercase()))
    })
}

/// Networks of the fork rules before the merge, each refused with the same message.
const PRE_MERGE: &[&str] = &[
    "Frontier",
    "Homestead",
    "EIP150",
    "EIP158",
    "Byzantium",
    "Constantinople",
    "ConstantinopleFix",
    "Petersburg",
    "Istanbul",
    "MuirGlacier",
    "Berlin",
    "London",
    "ArrowGlacier",
    "GrayGlacier",
];

/// Why the engine cannot run `network`'s rules, when it cannot.
pub fn unsupported(network: &str) -> Option<String> {
    let first = network.split("To").next().unwrap_or(network);
    if PRE_MERGE.contains(&first) || network.starts_with("FrontierTo") {
        return Some(format!(
            "{network}: a fork before the merge (Frontier…London); the built-in engine runs proof-of-stake chains only"
        ));
    }
    None
}

fn blob_schedule(cfg: &Option<FixtureConfig>) -> BlobScheduleBlobParams {
    let mut s = BlobScheduleBlobParams::mainnet();
    if let Some(cfg) = cfg {
        for (fork, p) in &cfg.blob_schedule {
            let base = match fork.to_ascii_lowercase().as_str() {
                "cancun" => &mut s.cancun,
                "prague" => &mut s.prague,
                "osaka" => &mut s.osaka,
                _ => continue,
            };
            let upd: BlobParams = BlobParams {
                target_blob_count: p.target.saturating_to(),
                max_blob_count: p.max.saturating_to(),
                update_fraction: p.base_fee_update_fraction.saturating_to(),
                ..*base
            };
            *base = upd;
        }
    }
    s
}

fn run_case(case: &Case, rejections: &mut Vec<Rejection>) -> Result<(), String> {
    let chain_id = case
        .config
        .as_ref()
        .and_then(|c| c.chainid)
        .map_or(1, |c| c.saturating_to());
    let spec = Arc::new(ChainSpec::from_fixture_network(
        &case.network,
        chain_id,
        blob_schedule(&case.config),
    )?);
    let codes = CodeStore::default();
    let mut state = WorldState::default();
    for (addr, a) in &case.pre {
        let code_hash = put_code(&codes, &a.code);
        let storage: Vec<(U256, U256)> = a.storage.iter().map(|(k, v)| (*k, *v)).collect();
        state.put(
            *addr,
            a.nonce.saturating_to(),
            a.balance,
            code_hash,
            &storage,
        );
    }
    let genesis = Header::decode(&mut &case.genesis_rlp[..])
        .or_else(|_| Block::<TxEnvelope>::decode(&mut &case.genesis_rlp[..]).map(|b| b.header))
        .map_err(|e| format!("genesis RLP does not decode: {e}"))?;
    if genesis.hash_slow() != case.genesis_block_header.hash {
        return Err(format!(
            "genesis hash {} differs from the fixture's {}",
            genesis.hash_slow(),
            case.genesis_block_header.hash
        ));
    }
    if state.root() != genesis.state_root {
        return Err(format!(
            "pre-state root {} differs from the genesis state root {}",
            state.root(),
            genesis.state_root
        ));
    }
    let mut chain = Chain::new(spec, codes.clone(), genesis, state);
    for (i, fb) in case.blocks.iter().enumerate() {
        let decoded = decode_block(&fb.rlp);
        let outcome = match decoded {
            Err(e) => Err(format!("does not decode: {e}")),
            Ok(block) => {
                let hash = block.header.hash_slow();
                match chain.insert(block, hash) {
                    Ok(b) => Ok(b.hash),
                    Err(InsertError::UnknownParent) => Err("unknown parent".to_string()),
                    Err(InsertError::Invalid { reason, .. }) => Err(reason),
                }
            }
        };
        if let Some(exc) = &fb.expect_exception {
            let (reason, matched) = match &outcome {
                Ok(_) => (None, false),
                Err(r) => (Some(r.clone()), exception_matches(exc, r)),
            };
            rejections.push(Rejection {
                expected: exc.clone(),
                reason,
                matched,
            });
        }
        match (outcome, &fb.expect_exception) {
            (Ok(hash), None) => {
                if let Some(h) = &fb.block_header {
                    if h.hash != hash {
                        return Err(format!(
                            "block {i}: hash {hash} differs from the fixture's {}",
                            h.hash
                        ));
                    }
                }
                chain
                    .set_forkchoice(hash, B256::ZERO, B256::ZERO)
                    .map_err(|e| format!("block {i}: {e}"))?;
            }
            (Ok(hash), Some(exc)) => {
                return Err(format!(
                    "block {i} ({hash}) was accepted, but the fixture expects {exc}"
                ));
            }
            (Err(reason), None) => return Err(format!("block {i} rejected: {reason}")),
            (Err(reason), Some(exc)) => {
                if !exception_matches(exc, &reason) {
                    return Err(format!(
                        "block {i} rejected for another reason than the fixture's {exc}: {reason}"
                    ));
                }
            }
        }
    }
    if chain.head().hash != case.lastblockhash {
        return Err(format!(
            "head {} differs from lastblockhash {}",
            chain.head().hash,
            case.lastblockhash
        ));
    }
    if let Some(post) = &case.post_state {
        check_post_state(chain.head_state(), &codes, post)?;
    }
    Ok(())
}

fn decode_block(rlp: &Bytes) -> Result<Block<TxEnvelope>, String> {
    let mut buf = &rlp[..];
    let b = Block::<TxEnvelope>::decode(&mut buf).map_err(|e| e.to_string())?;
    if !buf.is_empty() {
        return Err(format!("{} trailing bytes after the block", buf.len()));
    }
    Ok(b)
}

fn put_code(codes: &CodeStore, code: &Bytes) -> B256 {
    if code.is_empty() {
        return revm::primitives::KECCAK_EMPTY;
    }
    let hash = keccak256(code);
    codes.insert(hash, Bytecode::new_raw(code.clone()));
    hash
}

fn check_post_state(
    state: &WorldState,
    codes: &CodeStore,
    post: &BTreeMap<Address, FixtureAccount>,
) -> Result<(), String> {
    let mut expected = WorldState::default();
    for (addr, want) in post {
        let Some(got) = state.account(addr) else {
            return Err(format!("post-state: account {addr} missing"));
        };
        if got.balance != want.balance {
            return Err(format!(
                "post-state: {addr} balance {} expected {}",
                got.balance, want.balance
            ));
        }
        if U256::from(got.nonce) != want.nonce {
            return Err(format!(
                "post-state: {addr} nonce {} expected {}",
                got.nonce, want.nonce
            ));
        }
        let code = codes
            .get(&got.code_hash)
            .map(|c| c.original_bytes())
            .unwrap_or_default();
        if code != want.code {
            return Err(format!("post-state: {addr} code differs"));
        }
        for (k, v) in &want.storage {
            let g = state.storage(addr, k);
            if g != *v {
                return Err(format!(
                    "post-state: {addr} storage[{k:#x}] = {g:#x} expected {v:#x}"
                ));
            }
        }
        let storage: Vec<(U256, U256)> = want.storage.iter().map(|(k, v)| (*k, *v)).collect();
        expected.put(
            *addr,
            want.nonce.saturating_to(),
            want.balance,
            got.code_hash,
            &storage,
        );
    }
    // Same accounts and storage, nothing extra: the roots agree.
    if expected.root() != state.root() {
        return Err(format!(
            "post-state: state has accounts or storage slots the fixture does not list (root {} expected {})",
            state.root(),
            expected.root()
        ));
    }
    Ok(())
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "json") {
                collect(&e, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Run every case of every fixture file under `paths`.
pub fn import(paths: &[PathBuf]) -> Result<Vec<CaseResult>, String> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        return Err("no fixture files (*.json) found under the given paths".into());
    }
    let mut results = Vec::new();
    for file in files {
        // A file that cannot be read or parsed is one failed entry; the others still run.
        let cases: HashMap<String, serde_json::Value> = match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("not a fixture file: {e}")))
        {
            Ok(c) => c,
            Err(e) => {
                results.push(CaseResult {
                    file: file.clone(),
                    name: "(the whole file)".into(),
                    fork: "?".into(),
                    outcome: Outcome::Failed(e),
                    rejections: Vec::new(),
                });
                continue;
            }
        };
        let mut names: Vec<_> = cases.keys().cloned().collect();
        names.sort();
        for name in names {
            let value = cases[&name].clone();
            let fork = value
                .get("network")
                .and_then(|n| n.as_str())
                .unwrap_or("?")
                .to_string();
            let mut rejections = Vec::new();
            let outcome = if let Some(why) = unsupported(&fork) {
                Outcome::Unsupported(why)
            } else {
                match serde_json::from_value::<Case>(value) {
                    Err(e) => Outcome::Failed(format!("not a blockchain test case: {e}")),
                    Ok(case) => {
                        // A panic inside a dependency is a failed case, not a crashed run.
                        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            run_case(&case, &mut rejections)
                        })) {
                            Ok(Ok(())) => Outcome::Passed,
                            Ok(Err(e)) => Outcome::Failed(e),
                            Err(_) => Outcome::Failed("panicked during import".into()),
                        }
                    }
                }
            };
            results.push(CaseResult {
                file: file.clone(),
                name,
                fork,
                outcome,
                rejections,
            });
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_counts_only_for_the_kind_the_fixture_names() {
        let funds = "transaction 0 (0xab): lack of funds (1) for max fee (2)";
        assert!(exception_matches(
            "TransactionException.INSUFFICIENT_ACCOUNT_FUNDS",
            funds
        ));
        // Another kind, or a block that does not even decode: not the expected rejection.
        assert!(!exception_matches("BlockException.INVALID_REQUESTS", funds));
        assert!(!exception_matches(
            "TransactionException.INSUFFICIENT_ACCOUNT_FUNDS",
            "does not decode: unexpected end"
        ));
        // Alternatives: either.
        assert!(exception_matches(
            "BlockException.INVALID_WITHDRAWALS_ROOT|BlockException.INVALID_BLOCK_HASH",
            "withdrawals root mismatch: header 0x1 computed 0x2"
        ));
        // A network-form blob transaction in a block: what EEST calls either name.
        let full = format!(
            "{}: transaction 0 (0xab) carries …",
            crate::exec::NETWORK_FORM_IN_BLOCK
        );
        assert!(exception_matches(
            "TransactionException.TYPE_3_TX_WITH_FULL_BLOBS|BlockException.RLP_STRUCTURES_ENCODING",
            &full
        ));
        // A name the table does not know matches nothing.
        assert!(!exception_matches("BlockException.SOMETHING_NEW", funds));
    }

    #[test]
    fn forks_before_the_merge_are_unsupported_and_named() {
        for n in ["Frontier", "London", "BerlinToLondonAt5"] {
            assert!(unsupported(n).is_some_and(|w| w.contains(n)), "{n}");
        }
        for n in [
            "Paris",
            "Merge",
            "ParisToShanghaiAtTime15k",
            "Shanghai",
            "CancunToPragueAtTime15k",
            "Osaka",
        ] {
            assert_eq!(unsupported(n), None, "{n}");
        }
        let blobs = BlobScheduleBlobParams::mainnet();
        let at = |n: &str, ts: u64| {
            let s = ChainSpec::from_fixture_network(n, 1, blobs.clone()).unwrap();
            (s.shanghai(ts), s.cancun(ts))
        };
        assert_eq!(at("Paris", 1 << 40), (false, false));
        assert_eq!(at("Merge", 0), (false, false));
        assert_eq!(at("ParisToShanghaiAtTime15k", 14_999), (false, false));
        assert_eq!(at("ParisToShanghaiAtTime15k", 15_000), (true, false));
        assert_eq!(at("ShanghaiToCancunAtTime15k", 0), (true, false));
        assert_eq!(at("ShanghaiToCancunAtTime15k", 15_000), (true, true));
        for bad in ["CancunToShanghaiAtTime15k", "ParisToParisAtTime15k"] {
            assert!(
                ChainSpec::from_fixture_network(bad, 1, blobs.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
