//! The consensus devnet under load, end to end: the `up` and `load` scenarios of
//! `chainctl bench` (4 validators, 8 built-in ELs, 1 s blocks; transfers at a steady rate
//! sent to one EL, each followed into a finalized block).
//!
//! `cargo bench --bench consensus` (defaults: 60 s at 1000 tx/s); environment:
//! `CHAINCTL_BENCH_SECS` (e.g. 600 for the 10-minute run), `CHAINCTL_BENCH_TPS`.
//! Results: printed, and written to `target/bench-consensus/bench.{json,md}`.

use chainctl_load::bench::{BenchArgs, Scenario};
use std::time::Duration;

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn main() {
    // `cargo test --benches` lists; nothing to run then.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| format!("{}/target", env!("CARGO_MANIFEST_DIR")));
    let args = BenchArgs {
        out: format!("{target}/bench-consensus").into(),
        only: vec![Scenario::Up, Scenario::Load],
        tps: env_u64("CHAINCTL_BENCH_TPS", 1000),
        duration: Duration::from_secs(env_u64("CHAINCTL_BENCH_SECS", 60)),
        drills: 0,
        els_per_validator: env_u64("CHAINCTL_BENCH_ELS", 2) as u32,
        port_start: 25000,
    };
    let report = chainctl_load::bench::run(&args).expect("benchmark");
    print!("{}", chainctl_load::bench::markdown(&report));
}
