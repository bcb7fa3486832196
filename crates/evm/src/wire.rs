//! JSON-RPC on the wire: the error object every method returns, and the shapes that both
//! the RPC methods and the call simulator write (logs, the target of a call request).

use alloy_primitives::TxKind;
use alloy_rpc_types_eth::TransactionRequest;
use serde_json::{json, Value};

use super::exec::ExecutedBlock;

/// A JSON-RPC error object.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }
    pub fn parse(m: impl Into<String>) -> Self {
        Self::new(-32700, m)
    }
    pub fn invalid_request(m: impl Into<String>) -> Self {
        Self::new(-32600, m)
    }
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            -32601,
            format!("the method {method} does not exist/is not available"),
        )
    }
    pub fn invalid_params(m: impl Into<String>) -> Self {
        Self::new(-32602, format!("invalid params: {}", m.into()))
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(-32603, m)
    }
    /// Refused transaction or failed call (Geth and Reth use -32000 / -32003 / 3).
    pub fn server(m: impl Into<String>) -> Self {
        Self::new(-32000, m)
    }
    pub fn unknown_payload() -> Self {
        Self::new(-38001, "Unknown payload")
    }
    pub fn invalid_forkchoice(m: String) -> Self {
        Self::new(-38002, format!("Invalid forkchoice state: {m}"))
    }
    pub fn invalid_attributes(m: String) -> Self {
        Self::new(-38003, format!("Invalid payload attributes: {m}"))
    }
    pub fn too_large(m: String) -> Self {
        Self::new(-38004, format!("Too large request: {m}"))
    }
    pub fn unsupported_fork(m: String) -> Self {
        Self::new(-38005, format!("Unsupported fork: {m}"))
    }
    pub fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }
}

/// Log `log` of transaction `i` of `b`, with its position in the block.
pub fn rpc_log(
    b: &ExecutedBlock,
    i: usize,
    log_index: u64,
    log: &alloy_primitives::Log,
) -> alloy_rpc_types_eth::Log {
    alloy_rpc_types_eth::Log {
        inner: log.clone(),
        block_hash: Some(b.hash),
        block_number: Some(b.number()),
        block_timestamp: Some(b.header().timestamp),
        transaction_hash: Some(*b.block.body.transactions[i].tx_hash()),
        transaction_index: Some(i as u64),
        log_index: Some(log_index),
        removed: false,
    }
}

/// `to` of a call request (None: contract creation).
pub fn call_kind(req: &TransactionRequest) -> TxKind {
    req.to.unwrap_or(TxKind::Create)
}
