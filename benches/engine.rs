//! Built-in engine throughput: building and importing blocks of simple transfers, and the
//! cost of a block as the state grows (10k, 100k, 1M accounts), with RSS.
//!
//! `cargo bench --bench engine` (add `-- --quick` for the 10k/100k points only).

use std::sync::Arc;
use std::time::Instant;

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use chainctl_evm::benchkit::{attrs, big_chain, rss_mb, throughput, transfers};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!(
        "engine benchmark: 4,000 transfers per block (200 senders × 20); execution on one core, signature recovery on {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let (n, build, import) = throughput(200, 20, 3);
    println!(
        "build  (getPayload path): {build:>8.0} transfers/s ({:.1} ms per block)",
        n as f64 / build * 1e3
    );
    println!(
        "import (newPayload path): {import:>8.0} transfers/s ({:.1} ms per block, incl. signature recovery and all roots)",
        n as f64 / import * 1e3
    );

    let keys: Vec<PrivateKeySigner> = (0..200).map(|_| PrivateKeySigner::random()).collect();
    let senders: Vec<Address> = keys.iter().map(|k| k.address()).collect();
    let txs = transfers(&keys, 10); // 2,000 transfers; the first 1,000 make the block
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
