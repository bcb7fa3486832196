//! Issue 10: the built-in engine, as its own process, agrees with Reth on a chain Reth
//! built through the Engine API (`../shared/fixtures/reth-interop`).

use crate::evmutil::{fixtures, Evm};
use alloy_consensus::TxEnvelope;
use alloy_primitives::{Bytes, B256};
use serde_json::{json, Value};

fn chain() -> (std::path::PathBuf, Value) {
    let dir = fixtures().join("reth-interop");
    let chain: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("chain.json")).unwrap()).unwrap();
    (dir.join("genesis.json"), chain)
}

#[test]
fn replays_reths_chain_to_the_same_head_and_state() {
    let (genesis, chain) = chain();
    let evm = Evm::start(&genesis);
    assert_eq!(
        evm.genesis,
        chain["genesisHash"].as_str().unwrap(),
        "genesis hash differs from Reth's"
    );
    let g = evm.rpc("eth_getBlockByNumber", json!(["0x0", false]));
    assert_eq!(g["hash"], chain["genesisHash"]);

    for b in chain["blocks"].as_array().unwrap() {
        let status = evm.engine("engine_newPayloadV4", b["params"].clone());
        assert_eq!(status["status"], "VALID", "block {}: {status}", b["number"]);
        assert_eq!(status["latestValidHash"], b["blockHash"]);
        // The verdict never flips: asking again gives the same answer.
        let again = evm.engine("engine_newPayloadV4", b["params"].clone());
        assert_eq!(again["status"], "VALID");
    }
    let head = chain["headHash"].clone();
    let fcu = evm.engine(
        "engine_forkchoiceUpdatedV3",
        json!([{"headBlockHash": head, "safeBlockHash": head, "finalizedBlockHash": B256::ZERO}, null]),
    );
    assert_eq!(fcu["payloadStatus"]["status"], "VALID", "{fcu}");

    let latest = evm.rpc("eth_getBlockByNumber", json!(["latest", false]));
    assert_eq!(latest["hash"], head);
    assert_eq!(latest["stateRoot"], chain["stateRoot"]);
    assert_eq!(
        evm.rpc("eth_blockNumber", json!([])),
        json!(format!("{:#x}", chain["blocks"].as_array().unwrap().len()))
    );

    let checks = chain["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    let norm = |v: &Value| v.as_str().unwrap().to_lowercase();
    let qty =
        |v: &Value| u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    for c in checks {
        let a = &c["address"];
        let bal = evm.rpc("eth_getBalance", json!([a, "latest"]));
        assert_eq!(qty(&bal), qty(&c["balance"]), "balance of {a}");
        let nonce = evm.rpc("eth_getTransactionCount", json!([a, "latest"]));
        assert_eq!(qty(&nonce), qty(&c["nonce"]), "nonce of {a}");
        let code = evm.rpc("eth_getCode", json!([a, "latest"]));
        assert_eq!(norm(&code), norm(&c["code"]), "code of {a}");
        let slot0 = evm.rpc("eth_getStorageAt", json!([a, "0x0", "latest"]));
        assert_eq!(norm(&slot0), norm(&c["slot0"]), "slot 0 of {a}");
    }

    // Every transaction has a receipt; the logs of the chain are found by eth_getLogs.
    let mut logs_in_receipts = 0;
    for b in chain["blocks"].as_array().unwrap() {
        for raw in b["params"][0]["transactions"].as_array().unwrap() {
            let bytes: Bytes = serde_json::from_value(raw.clone()).unwrap();
            let tx: TxEnvelope =
                alloy_eips::eip2718::Decodable2718::decode_2718(&mut &bytes[..]).unwrap();
            let r = evm.rpc("eth_getTransactionReceipt", json!([tx.tx_hash()]));
            assert_eq!(
                r["blockHash"],
                b["blockHash"],
                "receipt of {}",
                tx.tx_hash()
            );
            logs_in_receipts += r["logs"].as_array().unwrap().len();
        }
    }
    let logs = evm.rpc(
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "latest"}]),
    );
    assert_eq!(logs.as_array().unwrap().len(), logs_in_receipts);
    assert!(
        logs_in_receipts > 0,
        "the chain has contract calls that emit logs"
    );
}

/// The payload of block `i` with its state root replaced and its block hash recomputed,
/// so that only the state-root check can catch it.
fn with_bad_state_root(params: &Value) -> Value {
    chainctl_consensus::fault::with_bad_state_root(params).unwrap()
}

#[test]
fn a_block_with_a_wrong_state_root_is_invalid_and_its_successors_never_valid() {
    let (genesis, chain) = chain();
    let evm = Evm::start(&genesis);
    let blocks = chain["blocks"].as_array().unwrap();
    let bad = 6;
    for (i, b) in blocks.iter().enumerate() {
        let params = if i == bad {
            with_bad_state_root(&b["params"])
        } else {
            b["params"].clone()
        };
        let status = evm.engine("engine_newPayloadV4", params.clone());
        match i.cmp(&bad) {
            std::cmp::Ordering::Less => {
                assert_eq!(status["status"], "VALID", "block {i}: {status}")
            }
            std::cmp::Ordering::Equal => {
                assert_eq!(status["status"], "INVALID", "{status}");
                let why = status["validationError"].as_str().unwrap_or_default();
                assert!(
                    why.contains("state root"),
                    "reason names the state root: {why}"
                );
                assert_eq!(
                    status["latestValidHash"],
                    blocks[i - 1]["blockHash"],
                    "latest valid is the parent"
                );
                // The verdict is remembered.
                let again = evm.engine("engine_newPayloadV4", params);
                assert_eq!(again["status"], "INVALID");
            }
            std::cmp::Ordering::Greater => {
                let s = status["status"].as_str().unwrap();
                assert!(
                    s == "SYNCING" || s == "INVALID",
                    "block {i} after the bad one: {status}"
                );
            }
        }
    }
    // A forkchoice to the real head is SYNCING (its ancestor is unknown), never VALID.
    let head = chain["headHash"].clone();
    let fcu = evm.engine(
        "engine_forkchoiceUpdatedV3",
        json!([{"headBlockHash": head, "safeBlockHash": B256::ZERO, "finalizedBlockHash": B256::ZERO}, null]),
    );
    assert_eq!(fcu["payloadStatus"]["status"], "SYNCING", "{fcu}");
    let latest = evm.rpc("eth_getBlockByNumber", json!(["latest", false]));
    assert_eq!(latest["number"], "0x0", "head did not move");
}

#[test]
fn a_payload_whose_block_hash_does_not_match_is_invalid() {
    let (genesis, chain) = chain();
    let evm = Evm::start(&genesis);
    let mut params = chain["blocks"][0]["params"].clone();
    params[0]["blockHash"] = json!(B256::repeat_byte(7));
    let status = evm.engine("engine_newPayloadV4", params);
    assert_eq!(status["status"], "INVALID");
    assert_eq!(status["latestValidHash"], Value::Null);
    assert!(status["validationError"]
        .as_str()
        .unwrap()
        .contains("block hash"));
}
