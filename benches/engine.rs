//! Built-in engine throughput: building and importing blocks of simple transfers, and the
//! cost of a block as the state grows (10k, 100k, 1M accounts), with RSS.
//!
//! `cargo bench --bench engine` (add `-- --quick` for the 10k/100k points only).

use std::sync::Arc;
use std::time::Instant;

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use chainctl::evm::benchkit::{attrs, big_chain, build_and_import, genesis, rss_mb, transfers};
use chainctl::evm::server::chain_from_genesis;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let keys: Vec<PrivateKeySigner> = (0..200).map(|_| PrivateKeySigner::random()).collect();
    let senders: Vec<Address> = keys.iter().map(|k| k.address()).collect();
    let txs = transfers(&keys, 20); // 4,000 transfers, 84M gas
    println!(
        "engine benchmark: {} transfers per block; execution on one core, signature recovery on {} cores",
        txs.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let g = genesis(0, &senders);
    let mk = || chain_from_genesis(&g).unwrap();
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let (b, i, n) = build_and_import(&mk, &txs);
        assert_eq!(n, txs.len());
        best = (best.0.min(b), best.1.min(i));
    }
    println!(
        "build  (getPayload path): {:>8.0} transfers/s ({:.1} ms per block)",
        txs.len() as f64 / best.0,
        best.0 * 1e3
    );
    println!(
        "import (newPayload path): {:>8.0} transfers/s ({:.1} ms per block, incl. signature recovery and all roots)",
        txs.len() as f64 / best.1,
        best.1 * 1e3
    );

    let block: Vec<_> = txs.iter().take(1000).cloned().collect();
    let sizes: &[usize] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    println!(
        "state size vs. cost of one block of {} transfers:",
        block.len()
    );
    for &size in sizes {
        let t = Instant::now();
        let before = rss_mb();
        let chain = Arc::new(big_chain(size, &senders));
        let state_mb = rss_mb() - before;
        let setup = t.elapsed().as_secs_f64();
        let gh = chain.genesis_hash();
        let t = Instant::now();
        let built = chain
            .build(
                &gh,
                &attrs(12),
                &mut block.iter().cloned(),
                &mut |_, _, w| panic!("{w}"),
            )
            .unwrap();
        let build_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "  {size:>9} accounts: block built in {build_ms:>6.1} ms (state root included); state set up in {setup:.1} s, \
             RSS {:.0} MB (+{state_mb:.0} MB for the state)",
            rss_mb()
        );
        drop(built);
    }
}
