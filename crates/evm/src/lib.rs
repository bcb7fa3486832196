//! The built-in execution engine (`chainctl node evm`): Ethereum blocks executed with revm
//! through alloy-evm's block executor, state in persistent Merkle-Patricia tries, driven
//! through the Engine API.
//!
//! Layer 2 of the workspace: it depends only on chainctl-common, and must never depend on
//! the planner, the supervisor or the consensus node; it could ship alone as an EL.

pub mod app;
pub mod benchkit;
pub mod blobs;
pub mod call;
pub mod chain;
pub mod engine;
pub mod exec;
pub mod filters;
pub mod fixture;
pub mod journal;
pub mod node;
pub mod pool;
pub mod rpc;
pub mod server;
pub mod spec;
pub mod state;
pub mod store;
pub mod syscall;
pub mod trie;
pub mod wire;
pub mod ws;

/// Lock a mutex, recovering the data if a panicking thread poisoned it.
pub fn engine_lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The hash and timestamp of the execution genesis in the file at `path`, as this engine
/// (and Reth) compute them: what the consensus genesis names as the chain every EL runs.
pub fn genesis_hash(path: &std::path::Path) -> anyhow::Result<(alloy_primitives::B256, u64)> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let g: alloy_genesis::Genesis =
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let chain =
        server::chain_from_genesis(&g).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((chain.head().hash, g.timestamp))
}
