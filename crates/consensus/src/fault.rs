//! Fault injection for tests of the network's defences: a validator told to misbehave
//! (environment `CHAINCTL_TEST_FAULT=bad-state-root:MONIKER`) proposes blocks whose state
//! root is wrong but whose block hash is recomputed, so only executing the block can tell.
//! Never set it outside a test network; release builds ignore it.

use alloy_consensus::TxEnvelope;
use alloy_eips::eip7685::Requests;
use alloy_primitives::{Bytes, B256};
use alloy_rpc_types_engine::{
    CancunPayloadFields, ExecutionPayload, ExecutionPayloadSidecar, PraguePayloadFields,
};
use serde_json::Value;

/// The faults a validator can be told to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Propose payloads with a wrong state root (and a matching block hash).
    BadStateRoot,
}

/// The fault this validator must commit, from `CHAINCTL_TEST_FAULT` — in debug builds
/// (the tests') only: a release build never reads it.
pub fn from_env(moniker: &str) -> Option<Fault> {
    let v = chainctl_common::test_hooks::fault()?;
    let (what, who) = v.split_once(':')?;
    (who == moniker && what == "bad-state-root").then_some(Fault::BadStateRoot)
}

/// `newPayload` params (of any version: `[payload]`, `[payload, hashes, root]` or
/// `[payload, hashes, root, requests]`) with the state root replaced and the block hash
/// recomputed over the altered header.
pub fn with_bad_state_root(params: &Value) -> Result<Value, String> {
    let e = |w: &str, x: serde_json::Error| format!("{w}: {x}");
    let mut payload: ExecutionPayload =
        serde_json::from_value(params[0].clone()).map_err(|x| e("payload", x))?;
    let cancun = || -> Result<CancunPayloadFields, String> {
        let hashes: Vec<B256> =
            serde_json::from_value(params[1].clone()).map_err(|x| e("versioned hashes", x))?;
        let root: B256 =
            serde_json::from_value(params[2].clone()).map_err(|x| e("beacon root", x))?;
        Ok(CancunPayloadFields::new(root, hashes))
    };
    let sidecar = match params.as_array().map_or(0, Vec::len) {
        1 => ExecutionPayloadSidecar::none(),
        3 => ExecutionPayloadSidecar::v3(cancun()?),
        4 => {
            let requests: Vec<Bytes> =
                serde_json::from_value(params[3].clone()).map_err(|x| e("requests", x))?;
            ExecutionPayloadSidecar::v4(
                cancun()?,
                PraguePayloadFields::new(Requests::new(requests)),
            )
        }
        n => return Err(format!("newPayload params of {n} elements")),
    };
    payload.as_v1_mut().state_root = B256::repeat_byte(0x42);
    let block = payload
        .clone()
        .try_into_block_with_sidecar::<TxEnvelope>(&sidecar)
        .map_err(|x| format!("payload does not form a block: {x}"))?;
    payload.as_v1_mut().block_hash = block.header.hash_slow();
    let mut p = params.clone();
    p[0] = serde_json::to_value(payload).map_err(|x| e("payload", x))?;
    Ok(p)
}
