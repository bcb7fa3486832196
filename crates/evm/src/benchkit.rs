//! Shared by `cargo bench --bench engine` and `chainctl bench`: blocks of simple
//! transfers built through the getPayload path and imported through the newPayload path.

use std::sync::Arc;
use std::time::Instant;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;

use super::chain::Chain;
use super::exec::BuildAttributes;
use super::server::chain_from_genesis;

pub const CHAIN_ID: u64 = 1337;

pub fn genesis(extra_accounts: usize, senders: &[Address]) -> alloy_genesis::Genesis {
    let mut alloc = serde_json::Map::new();
    for s in senders {
        alloc.insert(
            format!("{s:#x}"),
            serde_json::json!({"balance": "0xffffffffffffffffffffffff"}),
        );
    }
    for i in 0..extra_accounts {
        let a = Address::from_word(alloy_primitives::keccak256((i as u64).to_be_bytes()));
        alloc.insert(format!("{a:#x}"), serde_json::json!({"balance": "0x1"}));
    }
    serde_json::from_value(serde_json::json!({
        "config": {
            "chainId": CHAIN_ID, "homesteadBlock": 0, "eip150Block": 0, "eip155Block": 0, "eip158Block": 0,
            "byzantiumBlock": 0, "constantinopleBlock": 0, "petersburgBlock": 0, "istanbulBlock": 0,
            "berlinBlock": 0, "londonBlock": 0, "terminalTotalDifficulty": 0, "shanghaiTime": 0, "cancunTime": 0
        },
        "gasLimit": "0x1c9c3800", "difficulty": "0x0", "alloc": alloc,
    }))
    .unwrap()
}

pub fn transfers(keys: &[PrivateKeySigner], per_sender: u64) -> Vec<(TxEnvelope, Address)> {
    let mut out = Vec::new();
    for nonce in 0..per_sender {
        for k in keys {
            let tx = TxEip1559 {
                chain_id: CHAIN_ID,
                nonce,
                gas_limit: 21_000,
                max_fee_per_gas: 10_000_000_000,
                max_priority_fee_per_gas: 1,
                to: TxKind::Call(Address::from_word(alloy_primitives::keccak256(k.address()))),
                value: U256::from(1),
                access_list: Default::default(),
                input: Bytes::new(),
            };
            let sig = k.sign_hash_sync(&tx.signature_hash()).unwrap();
            out.push((tx.into_signed(sig).into(), k.address()));
        }
    }
    // Block order: by nonce per sender (already: nonce-major).
    out
}

pub fn attrs(ts: u64) -> BuildAttributes {
    BuildAttributes {
        timestamp: ts,
        prev_randao: B256::ZERO,
        fee_recipient: Address::repeat_byte(1),
        withdrawals: Some(vec![]),
        parent_beacon_block_root: Some(B256::ZERO),
        gas_limit: 480_000_000,
        extra_data: Bytes::new(),
    }
}

/// A chain whose genesis holds `size` accounts besides the senders, put straight into the
/// state (no genesis JSON in memory, so RSS shows the state itself).
pub fn big_chain(size: usize, senders: &[Address]) -> Chain {
    use super::spec::ChainSpec;
    use super::state::{CodeStore, WorldState};
    let small = genesis(0, senders);
    let spec = ChainSpec::from_chain_config(&small.config).unwrap();
    let mut state = WorldState::default();
    let empty = revm::primitives::KECCAK_EMPTY;
    for s in senders {
        state.put(*s, 0, U256::from(u128::MAX), empty, &[]);
    }
    for i in 0..size {
        let a = Address::from_word(alloy_primitives::keccak256((i as u64).to_be_bytes()));
        state.put(a, 0, U256::from(1), empty, &[]);
    }
    let header = spec.genesis_header(&small, state.root());
    Chain::new(Arc::new(spec), CodeStore::default(), header, state)
}

pub fn rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0)
}

/// Build one block of `txs` on genesis, then import it into a fresh chain; returns
/// (build seconds, import seconds).
pub fn build_and_import(
    mk: &dyn Fn() -> Chain,
    txs: &[(TxEnvelope, Address)],
) -> (f64, f64, usize) {
    let builder = mk();
    let g = builder.genesis_hash();
    let t = Instant::now();
    let built = builder
        .build(
            &g,
            &attrs(12),
            &mut txs.iter().cloned(),
            &mut |_, _, why| panic!("left out: {why}"),
        )
        .unwrap();
    let build_s = t.elapsed().as_secs_f64();
    let n = built.block.body.transactions.len();
    let mut importer = mk();
    let t = Instant::now();
    importer.insert(built.block.clone(), built.hash).unwrap();
    (build_s, t.elapsed().as_secs_f64(), n)
}

/// Best of `rounds` builds and imports of `senders` × `per_sender` transfers:
/// (transfers per block, build transfers/s, import transfers/s).
pub fn throughput(senders: usize, per_sender: u64, rounds: usize) -> (usize, f64, f64) {
    let keys: Vec<PrivateKeySigner> = (0..senders).map(|_| PrivateKeySigner::random()).collect();
    let addrs: Vec<Address> = keys.iter().map(|k| k.address()).collect();
    let txs = transfers(&keys, per_sender);
    let g = genesis(0, &addrs);
    let mk = || chain_from_genesis(&g).expect("benchmark genesis");
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..rounds.max(1) {
        let (b, i, n) = build_and_import(&mk, &txs);
        assert_eq!(n, txs.len(), "every transfer fits the block");
        best = (best.0.min(b), best.1.min(i));
    }
    (
        txs.len(),
        txs.len() as f64 / best.0,
        txs.len() as f64 / best.1,
    )
}
