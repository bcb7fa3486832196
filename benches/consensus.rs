//! The consensus devnet under load, end to end: `chainctl up` with 4 validators and 8
//! built-in ELs (1 s blocks), then simple transfers at a steady rate for a while.
//!
//! Reports: time from `up` to the first finalized block; block intervals (p50, p99,
//! max) and missed slots (a block more than one block time after its parent); finalized
//! transfers per second; inclusion latency (submitted → seen in a finalized block) p50,
//! p99, max; transfers lost.
//!
//! `cargo bench --bench consensus` (defaults: 60 s at 1000 tx/s); environment:
//! `CHAINCTL_BENCH_SECS` (e.g. 600 for the 10-minute run), `CHAINCTL_BENCH_TPS`
//! (0 = no load), `CHAINCTL_BENCH_ACCOUNTS` (senders, default 200).
//!
//! Transactions are sent in JSON-RPC batches to the active EL of every validator (the ELs
//! do not gossip transactions to each other; the gateway of a later issue will do this
//! fan-out), so whichever validator proposes includes them.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::{coins_bip39::English, MnemonicBuilder, PrivateKeySigner};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn rpc(port: u16, body: &Value) -> Option<Value> {
    ureq::post(&format!("http://127.0.0.1:{port}"))
        .timeout(Duration::from_secs(5))
        .send_json(body.clone())
        .ok()?
        .into_json()
        .ok()
}

fn call(port: u16, method: &str, params: Value) -> Option<Value> {
    rpc(
        port,
        &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    )?
    .get("result")
    .cloned()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = env_u64("CHAINCTL_BENCH_SECS", 60);
    let tps = env_u64("CHAINCTL_BENCH_TPS", 1000);
    let accounts = env_u64("CHAINCTL_BENCH_ACCOUNTS", 200) as u32;
    let bin = env!("CARGO_BIN_EXE_chainctl");
    let dir = tempfile::Builder::new()
        .prefix("ccbench")
        .tempdir_in("/tmp")
        .unwrap();
    let profile = dir.path().join("bench.yaml");
    std::fs::write(
        &profile,
        format!(
            "name: bench\nports: {{start: 25000, end: 25099}}\nchain: {{chain_id: 1337, block_time: 1s, dev_accounts: {accounts}}}\nvalidators:\n  count: 4\n  execution: [builtin, builtin]\n"
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let chainctl = |args: &[&str]| {
        Command::new(bin)
            .arg("-p")
            .arg(&profile)
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // Keys first (deriving hundreds of accounts takes a moment), then the clock starts.
    eprintln!("deriving {accounts} sender keys…");
    let signers: Vec<PrivateKeySigner> = (0..accounts)
        .map(|i| {
            MnemonicBuilder::<English>::default()
                .phrase("test test test test test test test test test test test junk")
                .index(i)
                .unwrap()
                .build()
                .unwrap()
        })
        .collect();
    let t_up = Instant::now();
    let o = chainctl(&["up", "--detach"]);
    assert!(
        o.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let up_returned = t_up.elapsed();
    let ports: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("ports.json")).unwrap()).unwrap();
    let port =
        |svc: &str, name: &str| ports["services"][svc][name]["port"].as_u64().unwrap() as u16;
    let status0 = port("val-0", "status");
    let first = loop {
        let d = ureq::get(&format!("http://127.0.0.1:{status0}/status"))
            .call()
            .ok()
            .and_then(|r| r.into_json::<Value>().ok())
            .and_then(|s| s["decided_blocks"].as_u64())
            .unwrap_or(0);
        if d >= 1 {
            break t_up.elapsed();
        }
        assert!(t_up.elapsed() < Duration::from_secs(60), "no block in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "up returned after {up_returned:?}; first finalized block {first:?} after up started"
    );

    let active: Vec<u16> = (0..4)
        .map(|v| port(&format!("val-{v}-el-0"), "http"))
        .collect();
    let watch = port("val-1-el-1", "http");
    let chain_id = 1337u64;
    let sent: Arc<Mutex<HashMap<B256, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start_height = call(watch, "eth_blockNumber", json!([]))
        .and_then(|v| u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);

    // The sender: batches every 100 ms.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let sender = {
        let (sent, stop, errors, active) =
            (sent.clone(), stop.clone(), errors.clone(), active.clone());
        std::thread::spawn(move || {
            if tps == 0 {
                let _ = ready_tx.send(());
                return 0u64;
            }
            // Signed before the clock starts, so the offered rate is not capped by
            // signing on a machine the devnet already keeps busy.
            let n_total = (tps * (secs + 2)) as usize;
            let mut nonces = vec![0u64; signers.len()];
            let to = Address::repeat_byte(0x42);
            let mut signed: Vec<(B256, String)> = Vec::with_capacity(n_total);
            for k in 0..n_total {
                let i = k % signers.len();
                let tx = TxEip1559 {
                    chain_id,
                    nonce: nonces[i],
                    gas_limit: 21_000,
                    max_fee_per_gas: 20_000_000_000,
                    max_priority_fee_per_gas: 1_000_000_000,
                    to: TxKind::Call(to),
                    value: U256::from(1u64),
                    ..Default::default()
                };
                nonces[i] += 1;
                let sig = signers[i].sign_hash_sync(&tx.signature_hash()).unwrap();
                let env: TxEnvelope = tx.into_signed(sig).into();
                signed.push((
                    *env.tx_hash(),
                    format!("0x{}", hex::encode(env.encoded_2718())),
                ));
            }
            let mut signed = signed.into_iter();
            let _ = ready_tx.send(());
            let mut total = 0u64;
            let t0 = Instant::now();
            let tick = Duration::from_millis(100);
            let mut ticks = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ticks += 1;
                let due = (tps as f64 * (t0.elapsed().as_secs_f64())) as u64;
                let n = due.saturating_sub(total).min(tps);
                let mut batch = Vec::with_capacity(n as usize);
                let mut hashes = Vec::with_capacity(n as usize);
                for (h, raw) in signed.by_ref().take(n as usize) {
                    hashes.push(h);
                    batch.push(json!({"jsonrpc": "2.0", "id": batch.len(), "method": "eth_sendRawTransaction", "params": [raw]}));
                }
                let n = hashes.len() as u64;
                let now = Instant::now();
                {
                    let mut s = sent.lock().unwrap();
                    for h in &hashes {
                        s.insert(*h, now);
                    }
                }
                for chunk in batch.chunks(100) {
                    let body = Value::Array(chunk.to_vec());
                    let mut accepted = false;
                    for p in &active {
                        if let Some(Value::Array(rs)) = rpc(*p, &body) {
                            accepted |= rs.iter().any(|r| r.get("result").is_some());
                        }
                    }
                    if !accepted {
                        errors.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                total += n;
                let next_tick = tick * ticks;
                if let Some(d) = next_tick.checked_sub(t0.elapsed()) {
                    std::thread::sleep(d);
                }
            }
            total
        })
    };

    // The watcher: every finalized block, its arrival time and our transactions in it.
    eprintln!("signing the load…");
    ready_rx.recv().unwrap();
    let t_load = Instant::now();
    let mut latencies = Vec::new();
    let mut timestamps: Vec<u64> = Vec::new();
    let mut included = 0u64;
    // Blocks from here on are the window (the chain ran on while the load was signed).
    let mut seen = call(watch, "eth_blockNumber", json!([]))
        .and_then(|v| u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok())
        .unwrap_or(start_height);
    let end = t_load + Duration::from_secs(secs);
    let mut drain_until = None;
    loop {
        let head = call(watch, "eth_blockNumber", json!([]))
            .and_then(|v| u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok())
            .unwrap_or(seen);
        while seen < head {
            seen += 1;
            let b = call(
                watch,
                "eth_getBlockByNumber",
                json!([format!("0x{seen:x}"), false]),
            )
            .unwrap();
            let now = Instant::now();
            timestamps.push(
                u64::from_str_radix(
                    b["timestamp"].as_str().unwrap().trim_start_matches("0x"),
                    16,
                )
                .unwrap(),
            );
            let s = sent.lock().unwrap();
            for h in b["transactions"].as_array().unwrap() {
                let h: B256 = h.as_str().unwrap().parse().unwrap();
                if let Some(t) = s.get(&h) {
                    latencies.push(now.duration_since(*t).as_secs_f64());
                    included += 1;
                }
            }
        }
        if Instant::now() >= end && drain_until.is_none() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            drain_until = Some(Instant::now() + Duration::from_secs(10));
        }
        if let Some(d) = drain_until {
            if Instant::now() >= d || included as usize == sent.lock().unwrap().len() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let submitted = sender.join().unwrap();
    let window = t_load.elapsed().as_secs_f64();
    let mut gaps: Vec<f64> = timestamps
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64)
        .collect();
    let missed = gaps.iter().filter(|g| **g > 1.0).count();
    let blocks = timestamps.len();
    let max_gap = gaps.iter().cloned().fold(0.0, f64::max);
    let (g50, g99) = (pct(&mut gaps, 0.5), pct(&mut gaps, 0.99));
    let max_lat = latencies.iter().cloned().fold(0.0, f64::max);
    let (l50, l99) = (pct(&mut latencies, 0.5), pct(&mut latencies, 0.99));
    let _ = chainctl(&["down"]);
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    println!(
        "consensus devnet benchmark (4 validators, 8 built-in ELs, 1 s blocks), unix time {unix}"
    );
    println!("  time from `chainctl up` to the first finalized block: {:.2} s (up returned after {:.2} s)", first.as_secs_f64(), up_returned.as_secs_f64());
    println!("  window: {window:.0} s, {blocks} blocks; block interval p50 {g50:.0} s, p99 {g99:.0} s, max {max_gap:.0} s; missed slots (interval > 1 s): {missed}");
    println!("  load: {tps} tx/s offered from {accounts} senders; submitted {submitted}, finalized {included} ({:.0} tx/s), refused batches' transactions {}, not included {}",
        included as f64 / window, errors.load(std::sync::atomic::Ordering::Relaxed), submitted.saturating_sub(included));
    println!("  inclusion latency (submitted -> seen finalized): p50 {l50:.2} s, p99 {l99:.2} s, max {max_lat:.2} s");
}
