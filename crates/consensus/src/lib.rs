//! The consensus node (`chainctl node consensus`): BFT validators on the Malachite
//! library, each driving its execution clients through the Engine API.

pub mod app;
pub mod codec;
pub mod el;
pub mod fault;
pub mod node;
pub mod signing;
pub mod store;
pub mod types;
