//! What the engine's HTTP handlers share: the engine, the Engine API secret and the
//! queues of user transactions waiting to be passed on to the peers.

use std::sync::Arc;

use super::engine::Engine;
use super::wire::RpcError;
use chainctl_common::secrets::JwtSecret;

/// Largest public JSON-RPC request body.
pub const RPC_BODY_LIMIT: usize = 5 * 1024 * 1024;

/// Transactions waiting to be relayed to one peer, at most (beyond: not relayed to it;
/// the sender's own pool still holds them).
pub(crate) const RELAY_BACKLOG: usize = 50_000;

/// Raw transactions (hex) waiting to be passed on to one peer.
pub type RelayQueue = Arc<std::sync::Mutex<Vec<String>>>;

/// The state every handler of the engine's HTTP server holds.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub(crate) secret: Arc<JwtSecret>,
    /// Raw transactions (hex) accepted from users, waiting to be passed on: one queue
    /// per peer, so that a peer that hangs delays only itself.
    pub(crate) relay: Arc<Vec<RelayQueue>>,
    /// This process's boot id ([`super::server::BOOT_HEADER`]).
    pub(crate) boot: Arc<str>,
}

impl AppState {
    /// A public JSON-RPC call; a transaction accepted from a user (`relayed` false) is
    /// queued for the peers.
    pub fn call(
        &self,
        method: &str,
        p: serde_json::Value,
        relayed: bool,
    ) -> Result<serde_json::Value, RpcError> {
        if relayed || self.relay.is_empty() || method != "eth_sendRawTransaction" {
            return self.engine.eth_call(method, p);
        }
        let raw = p.get(0).and_then(|v| v.as_str()).map(str::to_owned);
        let r = self.engine.eth_call(method, p);
        if let (Ok(_), Some(raw)) = (&r, raw) {
            for q in self.relay.iter() {
                let mut q = q.lock().unwrap_or_else(|e| e.into_inner());
                if q.len() < RELAY_BACKLOG {
                    q.push(raw.clone());
                }
            }
        }
        r
    }
}
