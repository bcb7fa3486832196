//! The built-in execution engine (`chainctl node evm`): Ethereum blocks executed with revm
//! through alloy-evm's block executor, state in persistent Merkle-Patricia tries, driven
//! through the Engine API.

pub mod chain;
pub mod exec;
pub mod fixture;
pub mod spec;
pub mod state;
pub mod trie;
pub mod node;
pub mod server;
