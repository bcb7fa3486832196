//! The consensus node (`chainctl node consensus`): BFT validators on the Malachite
//! library, each driving its execution clients through the Engine API.
//!
//! Layer 2 of the workspace: it depends only on chainctl-common (the files it reads are
//! defined there, so the supervisor writes them without linking Malachite), and must
//! never depend on the planner, the supervisor or the built-in engine.

pub mod app;
pub mod codec;
pub mod el;
pub mod fault;
pub mod node;
pub mod signing;
pub mod store;
pub mod types;
