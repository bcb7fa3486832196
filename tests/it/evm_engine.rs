//! Issue 3: a chain built only through the Engine API, as a consensus client builds it
//! (forkchoiceUpdatedV3 with attributes → getPayloadV5 → newPayloadV4 → forkchoiceUpdatedV3),
//! with transfers, a contract deployed from checked-in bytecode, logs, an EIP-7702
//! delegation and a reorg to a sibling; invalid payloads; JWT refusals.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::blobutil::{blob_tx, cell_sidecar, proof_sidecar, with_big_stack};
use crate::evmutil::{fixtures, post, try_engine, try_rpc_answer, Evm};
use alloy_consensus::{
    EthereumTxEnvelope, SignableTransaction, TxEip1559, TxEip4844WithSidecar, TxEip7702, TxEnvelope,
};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip4844::{env_settings::EnvKzgSettings, BlobTransactionSidecar};
use alloy_eips::eip7594::{BlobTransactionSidecarEip7594, BlobTransactionSidecarVariant};
use alloy_eips::eip7685::Requests;
use alloy_eips::eip7702::Authorization;
use alloy_primitives::{address, Address, Bytes, TxKind, B256, U256};
use alloy_rpc_types_engine::{
    CancunPayloadFields, ExecutionPayload, ExecutionPayloadSidecar, ExecutionPayloadV3,
    PraguePayloadFields,
};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use base64::Engine as _;
use serde_json::{json, Value};

const CHAIN_ID: u64 = 7331;
/// The funded account of the reth-interop genesis (the well-known test key #0).
const KEY0: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// Test key #1, unfunded at genesis.
const KEY1: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

fn signer(hex_key: &str) -> PrivateKeySigner {
    hex_key.parse().unwrap()
}

fn eip1559(nonce: u64, to: TxKind, value: U256, input: Bytes, gas: u64) -> TxEip1559 {
    TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: 20_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to,
        value,
        access_list: Default::default(),
        input,
    }
}

fn signed<T: SignableTransaction<alloy_primitives::Signature>>(
    key: &PrivateKeySigner,
    tx: T,
) -> Bytes
where
    TxEnvelope: From<alloy_consensus::Signed<T>>,
{
    let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap();
    let env: TxEnvelope = tx.into_signed(sig).into();
    env.encoded_2718().into()
}

fn qty(v: &Value) -> u128 {
    u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Ask the engine to build on `head` (forkchoiceUpdatedV3 with attributes, then
/// getPayloadV5); returns the envelope.
fn propose(evm: &Evm, head: &Value, ts: u64, randao: u8) -> Value {
    propose_with(evm, head, ts, randao, "engine_getPayloadV5")
}

/// `propose`, fetching the payload with `get_payload` (getPayloadV4 for a Prague block).
fn propose_with(evm: &Evm, head: &Value, ts: u64, randao: u8, get_payload: &str) -> Value {
    let attrs = json!({
        "timestamp": format!("{ts:#x}"),
        "prevRandao": B256::repeat_byte(randao),
        "suggestedFeeRecipient": Address::repeat_byte(0x11),
        "withdrawals": [],
        "parentBeaconBlockRoot": B256::repeat_byte(randao),
    });
    let fcu = evm.engine(
        "engine_forkchoiceUpdatedV3",
        json!([{"headBlockHash": head, "safeBlockHash": B256::ZERO, "finalizedBlockHash": B256::ZERO}, attrs]),
    );
    assert_eq!(fcu["payloadStatus"]["status"], "VALID", "{fcu}");
    let id = fcu["payloadId"].clone();
    assert!(id.is_string(), "no payload id: {fcu}");
    evm.engine(get_payload, json!([id]))
}

/// newPayloadV4 of an envelope built with `randao` as beacon root; returns its hash.
fn import(evm: &Evm, env: &Value, randao: u8) -> Value {
    import_with_blobs(evm, env, randao, &[])
}

/// newPayloadV4 with the versioned hashes of the block's blobs.
fn import_with_blobs(evm: &Evm, env: &Value, randao: u8, blob_hashes: &[B256]) -> Value {
    let payload = env["executionPayload"].clone();
    let status = evm.engine(
        "engine_newPayloadV4",
        json!([
            payload,
            blob_hashes,
            B256::repeat_byte(randao),
            env["executionRequests"]
        ]),
    );
    assert_eq!(status["status"], "VALID", "{status}");
    payload["blockHash"].clone()
}

/// One consensus round: build on `head` and import. Returns the new block's hash and
/// its getPayload envelope.
fn build(evm: &Evm, head: &Value, ts: u64, randao: u8) -> (Value, Value) {
    let env = propose(evm, head, ts, randao);
    (import(evm, &env, randao), env)
}

fn set_head(evm: &Evm, head: &Value, finalized: &Value) -> Value {
    evm.engine_raw(
        "engine_forkchoiceUpdatedV3",
        json!([{"headBlockHash": head, "safeBlockHash": head, "finalizedBlockHash": finalized}, null]),
    )
}

/// txpool_status as (pending, queued).
fn pool_status(evm: &Evm) -> (u128, u128) {
    let s = evm.rpc("txpool_status", json!([]));
    (qty(&s["pending"]), qty(&s["queued"]))
}

/// A signed transfer of 1 wei from `key` with `nonce`.
fn transfer_of_1_wei(key: &PrivateKeySigner, nonce: u64) -> Bytes {
    signed(
        key,
        eip1559(
            nonce,
            TxKind::Call(Address::repeat_byte(9)),
            U256::from(1),
            Bytes::new(),
            21_000,
        ),
    )
}

fn receipt(evm: &Evm, tx: &Value) -> Value {
    let r = evm.rpc("eth_getTransactionReceipt", json!([tx]));
    assert!(r.is_object(), "no receipt for {tx}");
    r
}

#[test]
fn builds_a_chain_through_the_engine_api() {
    let evm = Evm::start(&fixtures().join("reth-interop/genesis.json"));
    let (k0, k1) = (signer(KEY0), signer(KEY1));
    let (a0, a1) = (k0.address(), k1.address());
    let mut head = json!(evm.genesis);
    let mut ts = now();

    // Block 1: two transfers (one funds key #1) and a contract deployment.
    let code = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/counter.hex"
    ))
    .unwrap();
    let initcode: Bytes = code.trim().parse().unwrap();
    let one_eth = U256::from(10u128.pow(18));
    let t1 = evm.rpc(
        "eth_sendRawTransaction",
        json!([signed(
            &k0,
            eip1559(0, TxKind::Call(a1), one_eth, Bytes::new(), 21_000)
        )]),
    );
    let burn = address!("000000000000000000000000000000000000dEaD");
    let t2 = evm.rpc(
        "eth_sendRawTransaction",
        json!([signed(
            &k0,
            eip1559(1, TxKind::Call(burn), U256::from(7), Bytes::new(), 21_000)
        )]),
    );
    let t3 = evm.rpc(
        "eth_sendRawTransaction",
        json!([signed(
            &k0,
            eip1559(2, TxKind::Create, U256::ZERO, initcode, 200_000)
        )]),
    );
    ts += 1;
    let (b1, env1) = build(&evm, &head, ts, 1);
    assert_eq!(
        env1["executionPayload"]["transactions"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "{env1}"
    );
    assert!(
        qty(&env1["blockValue"]) > 0,
        "priority fees are the block value"
    );
    let r = set_head(&evm, &b1, &json!(B256::ZERO));
    assert_eq!(r["result"]["payloadStatus"]["status"], "VALID", "{r}");
    head = b1.clone();
    for t in [&t1, &t2, &t3] {
        assert_eq!(receipt(&evm, t)["status"], "0x1");
    }
    // Fee history: each transfer paid its full 1 gwei tip, so every percentile is 1 gwei.
    let fh = evm.rpc(
        "eth_feeHistory",
        json!(["0x1", "latest", [10.0, 50.0, 90.0]]),
    );
    assert_eq!(fh["oldestBlock"], "0x1");
    assert_eq!(
        fh["reward"],
        json!([["0x3b9aca00", "0x3b9aca00", "0x3b9aca00"]]),
        "{fh}"
    );
    assert_eq!(fh["baseFeePerGas"].as_array().unwrap().len(), 2);
    let bad = evm.rpc_raw("eth_feeHistory", json!(["0x1", "latest", [90.0, 10.0]]));
    assert_eq!(bad["error"]["code"], -32602);
    let counter: Address =
        serde_json::from_value(receipt(&evm, &t3)["contractAddress"].clone()).unwrap();
    assert_eq!(counter, a0.create(2));
    assert_eq!(
        evm.rpc("eth_getCode", json!([counter, "latest"])),
        json!("0x600054600101806000556000523360206000a100")
    );
    assert_eq!(qty(&evm.rpc("eth_getBalance", json!([burn, "latest"]))), 7);
    assert_eq!(
        qty(&evm.rpc("eth_getBalance", json!([a1, "latest"]))),
        10u128.pow(18)
    );

    // Block 2: call the contract (storage write + log), and delegate key #1's account to
    // it with an EIP-7702 authorization (sponsored by key #0).
    let call = evm.rpc(
        "eth_sendRawTransaction",
        json!([signed(
            &k0,
            eip1559(3, TxKind::Call(counter), U256::ZERO, Bytes::new(), 100_000)
        )]),
    );
    let auth = Authorization {
        chain_id: U256::from(CHAIN_ID),
        address: counter,
        nonce: 0,
    };
    let auth = auth
        .clone()
        .into_signed(k1.sign_hash_sync(&auth.signature_hash()).unwrap());
    let delegate = TxEip7702 {
        chain_id: CHAIN_ID,
        nonce: 4,
        gas_limit: 100_000,
        max_fee_per_gas: 20_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: a1,
        value: U256::ZERO,
        access_list: Default::default(),
        authorization_list: vec![auth],
        input: Bytes::new(),
    };
    let d = evm.rpc("eth_sendRawTransaction", json!([signed(&k0, delegate)]));
    ts += 1;
    let (b2, _) = build(&evm, &head, ts, 2);
    set_head(&evm, &b2, &json!(B256::ZERO));
    head = b2.clone();
    let rc = receipt(&evm, &call);
    assert_eq!(rc["status"], "0x1");
    let log = &rc["logs"][0];
    assert_eq!(
        log["address"].as_str().unwrap().to_lowercase(),
        format!("{counter:#x}")
    );
    assert_eq!(
        log["topics"][0],
        json!(B256::left_padding_from(a0.as_slice()))
    );
    assert_eq!(qty(&log["data"]), 1);
    assert_eq!(receipt(&evm, &d)["status"], "0x1");
    let slot0 = evm.rpc("eth_getStorageAt", json!([counter, "0x0", "latest"]));
    assert_eq!(qty(&slot0), 1);
    // The delegation transaction called key #1's account after the authorization took
    // effect, so the counter's code already ran once in that account's storage.
    assert_eq!(
        qty(&evm.rpc("eth_getStorageAt", json!([a1, "0x0", "latest"]))),
        1
    );
    let delegated = evm.rpc("eth_getCode", json!([a1, "latest"]));
    assert_eq!(
        delegated.as_str().unwrap().to_lowercase(),
        format!("0xef0100{}", hex::encode(counter))
    );
    assert_eq!(
        qty(&evm.rpc("eth_getTransactionCount", json!([a1, "latest"]))),
        1,
        "the authorization bumped its nonce"
    );
    let logs = evm.rpc(
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "latest", "address": counter}]),
    );
    assert_eq!(logs.as_array().unwrap().len(), 1);

    // Block 3: call the delegated account: the counter's code runs in its own storage.
    let via = evm.rpc(
        "eth_sendRawTransaction",
        json!([signed(
            &k0,
            eip1559(5, TxKind::Call(a1), U256::ZERO, Bytes::new(), 100_000)
        )]),
    );
    ts += 1;
    let (b3, _) = build(&evm, &head, ts, 3);
    set_head(&evm, &b3, &json!(B256::ZERO));
    assert_eq!(receipt(&evm, &via)["status"], "0x1");
    assert_eq!(
        qty(&evm.rpc("eth_getStorageAt", json!([a1, "0x0", "latest"]))),
        2
    );
    assert_eq!(
        qty(&evm.rpc("eth_getStorageAt", json!([counter, "0x0", "latest"]))),
        1,
        "the contract's own storage is untouched"
    );
    // eth_call sees the state; a read-only call does not change it.
    let out = evm.rpc("eth_call", json!([{"from": a0, "to": counter}, "latest"]));
    assert_eq!(out, json!("0x"));
    let gas = qty(&evm.rpc("eth_estimateGas", json!([{"from": a0, "to": counter}])));
    assert!((21_000..100_000).contains(&gas), "estimate {gas}");
    head = b3.clone();

    // A reorg to a sibling: two proposals on block 3, one made before a transaction
    // arrived (empty) and one after (holding it). The chain first follows the one with the
    // transaction, then reorgs to the empty sibling: the transaction returns to the pool
    // and is included again on the new branch. Finalized blocks are never reverted.
    ts += 1;
    let sibling_env = propose(&evm, &head, ts, 5);
    assert_eq!(
        sibling_env["executionPayload"]["transactions"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let t = evm.rpc(
        "eth_sendRawTransaction",
        json!([signed(
            &k0,
            eip1559(6, TxKind::Call(burn), U256::from(1), Bytes::new(), 21_000)
        )]),
    );
    let (with_tx, _) = build(&evm, &head, ts, 4);
    set_head(&evm, &with_tx, &json!(B256::ZERO));
    assert_eq!(receipt(&evm, &t)["blockHash"], with_tx);
    let bodies = evm.engine("engine_getPayloadBodiesByRangeV1", json!(["0x1", "0x3"]));
    let counts: Vec<usize> = bodies
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["transactions"].as_array().unwrap().len())
        .collect();
    assert_eq!(counts, vec![3, 2, 1]);
    let sibling = import(&evm, &sibling_env, 5);
    assert_ne!(sibling, with_tx);
    let r = set_head(&evm, &sibling, &json!(B256::ZERO));
    assert_eq!(r["result"]["payloadStatus"]["status"], "VALID", "{r}");
    assert_eq!(
        evm.rpc("eth_getBlockByNumber", json!(["latest", false]))["hash"],
        sibling
    );
    assert_eq!(
        evm.rpc("eth_getTransactionReceipt", json!([t])),
        Value::Null,
        "not on the canonical chain"
    );
    ts += 1;
    let (b5, env5) = build(&evm, &sibling, ts, 6);
    assert_eq!(
        env5["executionPayload"]["transactions"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "re-included after the reorg"
    );
    let r = set_head(&evm, &b5, &sibling);
    assert_eq!(r["result"]["payloadStatus"]["status"], "VALID");
    assert_eq!(receipt(&evm, &t)["blockHash"], b5);
    // The old branch is now below a finalized block: going back is refused.
    let r = set_head(&evm, &with_tx, &json!(B256::ZERO));
    assert_eq!(r["error"]["code"], -38002, "{r}");
    assert_eq!(
        evm.rpc("eth_getBlockByNumber", json!(["finalized", false]))["hash"],
        sibling
    );
}

/// newPayloadV4 parameters from a getPayload envelope with `edit` applied to the payload,
/// and the block hash recomputed so that only the edited field can be at fault.
fn resealed(
    env: &Value,
    beacon_root: B256,
    edit: impl FnOnce(&mut ExecutionPayloadV3),
    requests: Option<Vec<Bytes>>,
) -> Value {
    let mut payload: ExecutionPayloadV3 =
        serde_json::from_value(env["executionPayload"].clone()).unwrap();
    edit(&mut payload);
    let requests: Vec<Bytes> = requests
        .unwrap_or_else(|| serde_json::from_value(env["executionRequests"].clone()).unwrap());
    let sidecar = ExecutionPayloadSidecar::v4(
        CancunPayloadFields::new(beacon_root, vec![]),
        PraguePayloadFields::new(Requests::new(requests.clone())),
    );
    let block = ExecutionPayload::V3(payload.clone())
        .try_into_block_with_sidecar::<TxEnvelope>(&sidecar)
        .unwrap();
    payload.payload_inner.payload_inner.block_hash = block.header.hash_slow();
    json!([payload, [], beacon_root, requests])
}

#[test]
fn invalid_payloads_are_refused_with_a_reason() {
    let evm = Evm::start(&fixtures().join("reth-interop/genesis.json"));
    let k0 = signer(KEY0);
    let genesis = json!(evm.genesis);
    evm.rpc(
        "eth_sendRawTransaction",
        json!([signed(
            &k0,
            eip1559(
                0,
                TxKind::Call(Address::repeat_byte(9)),
                U256::from(1),
                Bytes::new(),
                21_000
            )
        )]),
    );
    let ts = now();
    let attrs = json!({
        "timestamp": format!("{ts:#x}"), "prevRandao": B256::ZERO, "suggestedFeeRecipient": Address::ZERO,
        "withdrawals": [], "parentBeaconBlockRoot": B256::ZERO,
    });
    let fcu = evm.engine(
        "engine_forkchoiceUpdatedV3",
        json!([{"headBlockHash": genesis, "safeBlockHash": B256::ZERO, "finalizedBlockHash": B256::ZERO}, attrs]),
    );
    let env = evm.engine("engine_getPayloadV5", json!([fcu["payloadId"]]));
    assert_eq!(
        env["executionPayload"]["transactions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let root = B256::ZERO;
    let expect_invalid = |params: Value, needle: &str| {
        let s = evm.engine("engine_newPayloadV4", params);
        assert_eq!(s["status"], "INVALID", "{needle}: {s}");
        let why = s["validationError"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            why.to_lowercase().contains(needle),
            "reason {why:?} should mention {needle:?}"
        );
        assert_eq!(
            s["latestValidHash"], genesis,
            "{needle}: the parent is the latest valid block"
        );
    };
    let genesis_ts = 0u64;
    expect_invalid(
        resealed(
            &env,
            root,
            |p| p.payload_inner.payload_inner.state_root = B256::repeat_byte(1),
            None,
        ),
        "state root",
    );
    expect_invalid(
        resealed(
            &env,
            root,
            |p| p.payload_inner.payload_inner.timestamp = genesis_ts,
            None,
        ),
        "timestamp",
    );
    expect_invalid(
        resealed(
            &env,
            root,
            |p| {
                // r = 0: no signer can be recovered.
                let raw = &p.payload_inner.payload_inner.transactions[0];
                let TxEnvelope::Eip1559(tx) =
                    alloy_eips::eip2718::Decodable2718::decode_2718(&mut &raw[..]).unwrap()
                else {
                    panic!("expected an EIP-1559 transaction")
                };
                let bad = alloy_primitives::Signature::new(U256::ZERO, U256::from(1), false);
                let forged = TxEnvelope::Eip1559(alloy_consensus::Signed::new_unhashed(
                    tx.strip_signature(),
                    bad,
                ));
                p.payload_inner.payload_inner.transactions[0] = forged.encoded_2718().into();
            },
            None,
        ),
        "signature",
    );
    let mut fake_request = vec![0x01u8];
    fake_request.extend_from_slice(&[0u8; 76]);
    expect_invalid(
        resealed(&env, root, |_| {}, Some(vec![fake_request.into()])),
        "requests hash",
    );
    expect_invalid(
        resealed(
            &env,
            root,
            |p| p.payload_inner.payload_inner.gas_used += 1,
            None,
        ),
        "gas used",
    );
    // Unknown parent: SYNCING, not INVALID.
    let s = evm.engine(
        "engine_newPayloadV4",
        resealed(
            &env,
            root,
            |p| p.payload_inner.payload_inner.parent_hash = B256::repeat_byte(0xaa),
            None,
        ),
    );
    assert_eq!(s["status"], "SYNCING", "{s}");
    // Requests out of order are bad params.
    let mut p = resealed(&env, root, |_| {}, None);
    p[3] = json!(["0x0201", "0x0101"]);
    assert_eq!(
        evm.engine_raw("engine_newPayloadV4", p)["error"]["code"],
        -32602
    );
    // The untouched payload is still VALID: verdicts are per block hash.
    let s = evm.engine(
        "engine_newPayloadV4",
        json!([env["executionPayload"], [], root, env["executionRequests"]]),
    );
    assert_eq!(s["status"], "VALID", "{s}");
    // Spec errors: unknown payload id, wrong getPayload version, bad attributes.
    assert_eq!(
        evm.engine_raw("engine_getPayloadV5", json!(["0x0000000000000001"]))["error"]["code"],
        -38001
    );
    assert_eq!(
        evm.engine_raw("engine_getPayloadV4", json!([fcu["payloadId"]]))["error"]["code"],
        -38005
    );
    let stale = json!({"timestamp": "0x0", "prevRandao": B256::ZERO, "suggestedFeeRecipient": Address::ZERO, "withdrawals": [], "parentBeaconBlockRoot": B256::ZERO});
    let r = evm.engine_raw(
        "engine_forkchoiceUpdatedV3",
        json!([{"headBlockHash": genesis, "safeBlockHash": B256::ZERO, "finalizedBlockHash": B256::ZERO}, stale]),
    );
    assert_eq!(r["error"]["code"], -38003, "{r}");
    let r = evm.engine_raw(
        "engine_forkchoiceUpdatedV3",
        json!([{"headBlockHash": genesis, "safeBlockHash": B256::repeat_byte(5), "finalizedBlockHash": B256::ZERO}, null]),
    );
    assert_eq!(r["error"]["code"], -38002, "{r}");
    let r = evm.engine("engine_forkchoiceUpdatedV3", json!([{"headBlockHash": B256::repeat_byte(6), "safeBlockHash": B256::ZERO, "finalizedBlockHash": B256::ZERO}, null]));
    assert_eq!(r["payloadStatus"]["status"], "SYNCING");
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn the_engine_api_refuses_bad_tokens() {
    let evm = Evm::start(&fixtures().join("reth-interop/genesis.json"));
    let call =
        json!({"jsonrpc": "2.0", "id": 1, "method": "engine_exchangeCapabilities", "params": [[]]});
    let (status, _) = post(&evm.engine, Some(&evm.token()), &call);
    assert_eq!(status, 200);
    // The client version names the commit the binary was built from.
    let v = evm.engine(
        "engine_getClientVersionV1",
        json!([{"code": "RH", "name": "reth", "version": "x", "commit": "0x00000000"}]),
    );
    let git = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&git.stdout);
    assert_eq!(v[0]["commit"], format!("0x{}", &head.trim()[..8]), "{v}");
    assert_eq!(v[0]["name"], "chainctl");
    let (status, body) = post(&evm.engine, None, &call);
    assert_eq!(status, 401, "missing token: {body}");
    let other = chainctl_common::secrets::JwtSecret::generate();
    let (status, body) = post(
        &evm.engine,
        Some(&chainctl_common::secrets::engine_token(&other, now())),
        &call,
    );
    assert_eq!(status, 401, "wrong secret: {body}");
    let (status, body) = post(
        &evm.engine,
        Some(&chainctl_common::secrets::engine_token(
            &evm.secret,
            now() - 120,
        )),
        &call,
    );
    assert_eq!(status, 401, "stale iat: {body}");
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"iat": now()}))
    );
    let (status, body) = post(&evm.engine, Some(&none), &call);
    assert_eq!(status, 401, "alg none: {body}");
    // The public port has no Engine API.
    let r = evm.rpc_raw("engine_newPayloadV4", json!([]));
    assert_eq!(r["error"]["code"], -32601);
}

#[test]
fn malformed_json_rpc_gets_errors_not_hangs() {
    let evm = Evm::start(&fixtures().join("reth-interop/genesis.json"));
    let raw = |body: &str| {
        let r = ureq::post(&evm.rpc)
            .set("content-type", "application/json")
            .send_string(body);
        match r {
            Ok(r) => serde_json::from_str::<Value>(&r.into_string().unwrap()).unwrap(),
            Err(ureq::Error::Status(code, _)) => json!({"http": code}),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(raw("{not json")["error"]["code"], -32700);
    assert_eq!(
        raw(r#"{"jsonrpc":"2.0","id":1,"method":"eth_nope","params":[]}"#)["error"]["code"],
        -32601
    );
    assert_eq!(
        raw(r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x12"]}"#)["error"]
            ["code"],
        -32602
    );
    assert_eq!(raw("[]")["error"]["code"], -32600);
    let batch: Vec<Value> = (0..3)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []}))
        .collect();
    let r = raw(&serde_json::to_string(&batch).unwrap());
    assert_eq!(r.as_array().unwrap().len(), 3);
    assert_eq!(r[0]["result"], format!("{CHAIN_ID:#x}"));
    let big: Vec<Value> = (0..101)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "eth_chainId"}))
        .collect();
    assert_eq!(
        raw(&serde_json::to_string(&big).unwrap())["error"]["code"],
        -32600
    );
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":["{}"]}}"#,
        "a".repeat(6 << 20)
    );
    // 413 — or, when the server refuses before the client has written it all, a reset
    // or broken pipe on the client's side; either way the server is still there.
    match ureq::post(&evm.rpc)
        .set("content-type", "application/json")
        .send_string(&huge)
    {
        Err(ureq::Error::Status(413, _)) => {}
        Err(ureq::Error::Transport(t))
            if t.to_string().contains("Broken pipe") || t.to_string().contains("reset") => {}
        other => panic!("oversized body: {other:?}"),
    }
    assert_eq!(
        raw(r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#)["result"],
        format!("{CHAIN_ID:#x}")
    );
    // Refused transactions say why.
    let k0 = signer(KEY0);
    let wrong_chain = TxEip1559 {
        chain_id: 1,
        ..eip1559(
            0,
            TxKind::Call(Address::ZERO),
            U256::ZERO,
            Bytes::new(),
            21_000,
        )
    };
    let r = evm.rpc_raw("eth_sendRawTransaction", json!([signed(&k0, wrong_chain)]));
    assert!(
        r["error"]["message"].as_str().unwrap().contains("chain id"),
        "{r}"
    );
    let low_gas = eip1559(
        0,
        TxKind::Call(Address::ZERO),
        U256::ZERO,
        Bytes::new(),
        20_000,
    );
    let r = evm.rpc_raw("eth_sendRawTransaction", json!([signed(&k0, low_gas)]));
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("intrinsic gas too low"),
        "{r}"
    );
    let poor = eip1559(
        0,
        TxKind::Call(Address::ZERO),
        U256::ZERO,
        Bytes::new(),
        21_000,
    );
    let r = evm.rpc_raw(
        "eth_sendRawTransaction",
        json!([signed(&signer(KEY1), poor)]),
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("insufficient funds"),
        "{r}"
    );
    let ok = evm.rpc(
        "eth_sendRawTransaction",
        json!([signed(
            &k0,
            eip1559(
                0,
                TxKind::Call(Address::ZERO),
                U256::ZERO,
                Bytes::new(),
                21_000
            )
        )]),
    );
    assert!(ok.is_string());
    let same_fee = TxEip1559 {
        value: U256::from(1),
        ..eip1559(
            0,
            TxKind::Call(Address::ZERO),
            U256::ZERO,
            Bytes::new(),
            21_000,
        )
    };
    let r = evm.rpc_raw("eth_sendRawTransaction", json!([signed(&k0, same_fee)]));
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("underpriced"),
        "{r}"
    );
}

#[test]
fn txpool_status_counts_executable_and_held_back_transactions() {
    let evm = Evm::start(&fixtures().join("reth-interop/genesis.json"));
    let k0 = signer(KEY0);
    let transfer = |nonce| transfer_of_1_wei(&k0, nonce);
    let status = pool_status;
    assert_eq!(status(&evm), (0, 0));
    // Nonces 0 and 1 are executable; 3 waits behind the gap at 2.
    for n in [0, 1, 3] {
        evm.rpc("eth_sendRawTransaction", json!([transfer(n)]));
    }
    assert_eq!(status(&evm), (2, 1));
    // The gap filled: all four are executable.
    evm.rpc("eth_sendRawTransaction", json!([transfer(2)]));
    assert_eq!(status(&evm), (4, 0));
    // Included in a block: the pool is empty again.
    let genesis = json!(evm.genesis);
    let (head, env) = build(&evm, &genesis, now(), 1);
    assert_eq!(
        env["executionPayload"]["transactions"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let fcu = set_head(&evm, &head, &genesis);
    assert_eq!(fcu["result"]["payloadStatus"]["status"], "VALID", "{fcu}");
    assert_eq!(status(&evm), (0, 0));
}

#[test]
fn eth_call_takes_state_and_block_overrides() {
    let evm = Evm::start(&fixtures().join("reth-interop/genesis.json"));
    let k0 = signer(KEY0);
    let a0 = k0.address();
    // A counter with real storage: deployed and called once (slot 0 = 1).
    let code = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/counter.hex"
    ))
    .unwrap();
    let counter = a0.create(0);
    evm.rpc(
        "eth_sendRawTransaction",
        json!([signed(
            &k0,
            eip1559(
                0,
                TxKind::Create,
                U256::ZERO,
                code.trim().parse().unwrap(),
                200_000
            )
        )]),
    );
    evm.rpc(
        "eth_sendRawTransaction",
        json!([signed(
            &k0,
            eip1559(1, TxKind::Call(counter), U256::ZERO, Bytes::new(), 100_000)
        )]),
    );
    let genesis = json!(evm.genesis);
    let ts = now();
    let (b1, _) = build(&evm, &genesis, ts, 1);
    set_head(&evm, &b1, &json!(B256::ZERO));
    assert_eq!(
        qty(&evm.rpc("eth_getStorageAt", json!([counter, "0x0", "latest"]))),
        1
    );

    // Code that returns slot 0, slot 1, NUMBER, TIMESTAMP, COINBASE and its own BALANCE.
    let probe = "0x600054600052600154602052436040524260605241608052303160a05260c06000f3";
    let words = |out: &Value| -> Vec<U256> {
        let b = hex::decode(out.as_str().unwrap().trim_start_matches("0x")).unwrap();
        assert_eq!(b.len(), 192, "{out}");
        b.chunks(32).map(U256::from_be_slice).collect()
    };
    let call = |state: Value, block: Value| {
        evm.rpc(
            "eth_call",
            json!([{"from": a0, "to": counter}, "latest", state, block]),
        )
    };

    // stateDiff: the listed slot changes, the others are read from the chain.
    let w = words(&call(
        json!({counter.to_string(): {"code": probe, "balance": "0x1234", "stateDiff": {format!("{:#066x}", 1): format!("{:#066x}", 9)}}}),
        Value::Null,
    ));
    assert_eq!(w[0], U256::from(1), "slot 0 comes from the chain");
    assert_eq!(w[1], U256::from(9), "slot 1 is overridden");
    assert_eq!(w[2], U256::from(1), "NUMBER is the block's");
    assert_eq!(w[3], U256::from(ts), "TIMESTAMP is the block's");
    assert_eq!(w[5], U256::from(0x1234), "BALANCE is overridden");

    // state: all storage replaced, unlisted slots are zero; block fields overridden.
    let coinbase = Address::repeat_byte(0xab);
    let w = words(&call(
        json!({counter.to_string(): {"code": probe, "state": {format!("{:#066x}", 1): format!("{:#066x}", 9)}}}),
        json!({"number": "0x99", "time": "0x1234", "feeRecipient": coinbase}),
    ));
    assert_eq!(w[0], U256::ZERO, "state replaces all storage");
    assert_eq!(w[1], U256::from(9));
    assert_eq!(w[2], U256::from(0x99));
    assert_eq!(w[3], U256::from(0x1234));
    assert_eq!(w[4], U256::from_be_slice(coinbase.as_slice()));
    // Nothing was written: the chain still holds the counter's code and storage.
    assert_eq!(
        qty(&evm.rpc("eth_getStorageAt", json!([counter, "0x1", "latest"]))),
        0
    );

    // eth_estimateGas runs the overridden code too (cold SLOADs cost more than a transfer).
    let empty = Address::repeat_byte(0x77);
    let plain = qty(&evm.rpc("eth_estimateGas", json!([{"from": a0, "to": empty}])));
    let with_code = qty(&evm.rpc(
        "eth_estimateGas",
        json!([{"from": a0, "to": empty}, "latest", {empty.to_string(): {"code": probe}}]),
    ));
    assert_eq!(plain, 21_000);
    assert!(with_code > plain + 4_000, "estimate with code {with_code}");

    // Bad overrides are refused with the reason.
    let refused = |overrides: Value, needle: &str| {
        let r = evm.rpc_raw("eth_call", json!([{"to": counter}, "latest", overrides]));
        assert_eq!(r["error"]["code"], -32602, "{r}");
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle}: {r}");
    };
    refused(
        json!({counter.to_string(): {"state": {}, "stateDiff": {}}}),
        "stateDiff",
    );
    refused(
        json!({counter.to_string(): {"balanse": "0x1"}}),
        "state overrides",
    );
}

fn counter_code() -> Bytes {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/counter.hex"
    ))
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// The head block as `eth_getBlockByNumber("latest")` gives it.
fn latest(evm: &Evm) -> Value {
    evm.rpc("eth_getBlockByNumber", json!(["latest", false]))
}

#[test]
fn the_chain_and_its_verdicts_survive_a_restart() {
    let genesis_file = fixtures().join("reth-interop/genesis.json");
    let dir = tempfile::tempdir().unwrap();
    let k0 = signer(KEY0);
    let a0 = k0.address();
    let counter = a0.create(0);
    let evm = Evm::start_in(&genesis_file, dir.path());
    let mut head = json!(evm.genesis);
    let mut ts = now();
    let mut txs = Vec::new();
    // 40 blocks, each finalized at once: the flat state on disk moves forward twice (every
    // 16 finalized blocks) and 8 blocks are above it. Each block increments the counter.
    for n in 0..40u64 {
        let tx = if n == 0 {
            eip1559(0, TxKind::Create, U256::ZERO, counter_code(), 200_000)
        } else {
            eip1559(n, TxKind::Call(counter), U256::ZERO, Bytes::new(), 100_000)
        };
        txs.push(evm.rpc("eth_sendRawTransaction", json!([signed(&k0, tx)])));
        ts += 1;
        let (h, _) = build(&evm, &head, ts, 1 + n as u8);
        let r = set_head(&evm, &h, &h);
        assert_eq!(r["result"]["payloadStatus"]["status"], "VALID", "{r}");
        head = h;
    }
    // A payload refused with a reason.
    let env = propose(&evm, &head, ts + 1, 99);
    let bad = resealed(
        &env,
        B256::repeat_byte(99),
        |p| p.payload_inner.payload_inner.state_root = B256::repeat_byte(1),
        None,
    );
    let verdict = evm.engine("engine_newPayloadV4", bad.clone());
    assert_eq!(verdict["status"], "INVALID", "{verdict}");
    let before = latest(&evm);
    let balance = evm.rpc("eth_getBalance", json!([a0, "latest"]));
    let receipt_of_first = receipt(&evm, &txs[0]);
    assert_eq!(
        qty(&evm.rpc("eth_getStorageAt", json!([counter, "0x0", "latest"]))),
        39
    );
    // A snapshot of the running engine's store (what `chainctl backup` takes): a second
    // engine started from it in an empty data dir is at the same head with the same state
    // at once, with no block replayed through its Engine API.
    let snap = evm.engine("chainctl_exportSnapshotV1", json!([]));
    assert_eq!(snap["finalized"], head, "{snap}");
    assert_eq!(snap["finalizedNumber"], 40, "{snap}");
    let snap_file = dir.path().join("data").join(snap["file"].as_str().unwrap());
    let dir2 = tempfile::tempdir().unwrap();
    let seeded = Evm::spawn_with(
        &genesis_file,
        dir2.path(),
        true,
        &["--from-snapshot", snap_file.to_str().unwrap()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        latest(&seeded),
        before,
        "the head of the engine seeded from it"
    );
    assert_eq!(
        qty(&seeded.rpc("eth_getStorageAt", json!([counter, "0x0", "latest"]))),
        39
    );
    assert_eq!(receipt(&seeded, &txs[0]), receipt_of_first);
    drop(seeded);
    // A snapshot of another chain is refused, naming both genesis hashes.
    let other_chain = dir.path().join("other-chain.json");
    let mut g: Value =
        serde_json::from_str(&std::fs::read_to_string(&genesis_file).unwrap()).unwrap();
    g["timestamp"] = json!("0x4321");
    std::fs::write(&other_chain, g.to_string()).unwrap();
    let dir3 = tempfile::tempdir().unwrap();
    let err = Evm::spawn_with(
        &other_chain,
        dir3.path(),
        true,
        &["--from-snapshot", snap_file.to_str().unwrap()],
    )
    .err()
    .expect("a snapshot of another chain must be refused");
    assert!(
        err.contains("the snapshot is of the chain with genesis") && err.contains(&evm.genesis),
        "{err}"
    );

    // Hard stop: no chance to flush anything.
    let mut evm = evm;
    evm.child.kill().unwrap();
    evm.child.wait().unwrap();
    drop(evm);

    let evm = Evm::start_in(&genesis_file, dir.path());
    assert_eq!(latest(&evm), before, "the head block after the restart");
    assert_eq!(
        evm.rpc("eth_getBlockByNumber", json!(["finalized", false]))["hash"],
        head
    );
    assert_eq!(evm.rpc("eth_getBalance", json!([a0, "latest"])), balance);
    assert_eq!(
        qty(&evm.rpc("eth_getStorageAt", json!([counter, "0x0", "latest"]))),
        39,
        "storage written in every block, across two flushes of the flat state"
    );
    assert_eq!(receipt(&evm, &txs[0]), receipt_of_first);
    assert_eq!(
        qty(&evm.rpc("eth_getTransactionCount", json!([a0, "latest"]))),
        40
    );
    // The verdict was kept: a child of the refused block is INVALID at once (were the
    // verdict lost, its parent would be unknown and the answer SYNCING).
    let bad_hash: B256 = serde_json::from_value(bad[0]["blockHash"].clone()).unwrap();
    let child = resealed(
        &env,
        B256::repeat_byte(99),
        |p| p.payload_inner.payload_inner.parent_hash = bad_hash,
        None,
    );
    let s = evm.engine("engine_newPayloadV4", child);
    assert_eq!(s["status"], "INVALID", "{s}");
    assert!(
        s["validationError"]
            .as_str()
            .unwrap()
            .contains("invalid ancestor"),
        "{s}"
    );
    // And the block itself gets the same answer, with its reason.
    assert_eq!(evm.engine("engine_newPayloadV4", bad), verdict);
    // The chain goes on from where it was.
    let tx = eip1559(40, TxKind::Call(counter), U256::ZERO, Bytes::new(), 100_000);
    evm.rpc("eth_sendRawTransaction", json!([signed(&k0, tx)]));
    let (h, _) = build(&evm, &head, ts + 2, 100);
    let r = set_head(&evm, &h, &h);
    assert_eq!(r["result"]["payloadStatus"]["status"], "VALID", "{r}");
    assert_eq!(
        qty(&evm.rpc("eth_getStorageAt", json!([counter, "0x0", "latest"]))),
        40
    );

    // A second engine on the same data dir is refused, naming it.
    let err = Evm::spawn(&genesis_file, dir.path(), true)
        .err()
        .expect("a second engine on the same data dir must not start");
    assert!(
        err.contains("engine.redb") && err.contains("another process"),
        "{err}"
    );
    drop(evm);
    // Another chain's genesis on this data dir is refused, naming both hashes.
    let err = Evm::spawn(&other_chain, dir.path(), true)
        .err()
        .expect("a data dir of another chain must be refused");
    assert!(
        err.contains("holds a chain with genesis") && err.contains("--datadir"),
        "{err}"
    );
}

/// kill -9 while blocks are being built and imported, again and again: every restart opens
/// at a head no older than the last one acknowledged, and the state there is the one the
/// blocks make (the engine re-verifies the state root on open; the test checks the
/// account's nonce and the counter against the transactions the chain holds).
#[test]
fn kill_9_during_import_reopens_consistently_every_time() {
    use rand::Rng;
    let genesis_file = fixtures().join("reth-interop/genesis.json");
    let dir = tempfile::tempdir().unwrap();
    let k0 = signer(KEY0);
    let a0 = k0.address();
    let counter = a0.create(0);
    let mut rng = rand::thread_rng();
    let mut acked = 0u64;
    let mut ts = now();
    for round in 0..12 {
        let evm = Evm::start_in(&genesis_file, dir.path());
        let head = latest(&evm);
        let number = qty(&head["number"]) as u64;
        assert!(
            number >= acked,
            "round {round}: opened at {number}, but {acked} was acknowledged"
        );
        // Every block holds one transaction of a0 (the deploy, then counter calls).
        let nonce = qty(&evm.rpc("eth_getTransactionCount", json!([a0, "latest"]))) as u64;
        assert_eq!(nonce, number, "round {round}: nonce at head {number}");
        if number > 0 {
            assert_eq!(
                qty(&evm.rpc("eth_getStorageAt", json!([counter, "0x0", "latest"]))) as u64,
                number - 1,
                "round {round}: the counter at head {number}"
            );
        }
        acked = number;
        let pid = nix::unistd::Pid::from_raw(evm.child.id() as i32);
        let delay = std::time::Duration::from_millis(rng.gen_range(30..600));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        });
        let mut head = head["hash"].clone();
        let mut n = number;
        loop {
            let tx = if n == 0 {
                eip1559(0, TxKind::Create, U256::ZERO, counter_code(), 200_000)
            } else {
                eip1559(n, TxKind::Call(counter), U256::ZERO, Bytes::new(), 100_000)
            };
            let Ok(sent) = try_rpc_answer(&evm, "eth_sendRawTransaction", json!([signed(&k0, tx)]))
            else {
                break;
            };
            // Sent before the kill and not yet in a block: back from the pool's journal.
            if let Some(e) = sent.get("error") {
                let msg = e["message"].as_str().unwrap_or_default();
                assert!(msg.starts_with("already known"), "round {round}: {e}");
            }
            ts += 1;
            let attrs = json!({
                "timestamp": format!("{ts:#x}"), "prevRandao": B256::ZERO,
                "suggestedFeeRecipient": Address::ZERO, "withdrawals": [],
                "parentBeaconBlockRoot": B256::ZERO,
            });
            let fc =
                json!({"headBlockHash": head, "safeBlockHash": head, "finalizedBlockHash": head});
            let Ok(fcu) = try_engine(&evm, "engine_forkchoiceUpdatedV3", json!([fc, attrs])) else {
                break;
            };
            let Ok(env) = try_engine(&evm, "engine_getPayloadV5", json!([fcu["payloadId"]])) else {
                break;
            };
            assert_eq!(
                env["executionPayload"]["transactions"]
                    .as_array()
                    .map(Vec::len),
                Some(1),
                "round {round}: block {} holds the one pending transaction",
                n + 1
            );
            let payload = env["executionPayload"].clone();
            let params = json!([payload, [], B256::ZERO, env["executionRequests"]]);
            let Ok(status) = try_engine(&evm, "engine_newPayloadV4", params) else {
                break;
            };
            assert_eq!(status["status"], "VALID", "{status}");
            let new = payload["blockHash"].clone();
            let fc = json!({"headBlockHash": new, "safeBlockHash": new, "finalizedBlockHash": new});
            let Ok(r) = try_engine(&evm, "engine_forkchoiceUpdatedV3", json!([fc, null])) else {
                break;
            };
            assert_eq!(r["payloadStatus"]["status"], "VALID", "{r}");
            n += 1;
            acked = n;
            head = new;
        }
        killer.join().unwrap();
        let mut evm = evm;
        let _ = evm.child.wait();
        eprintln!("round {round}: killed after block {acked}");
    }
    assert!(acked > 20, "the loop made progress: {acked} blocks");
}

#[test]
fn the_fee_oracle_suggests_the_60th_percentile_of_recent_lowest_tips() {
    let evm = Evm::start(&fixtures().join("reth-interop/genesis.json"));
    let k0 = signer(KEY0);
    let gwei = 1_000_000_000u128;
    let tip = |evm: &Evm| qty(&evm.rpc("eth_maxPriorityFeePerGas", json!([])));
    assert_eq!(tip(&evm), gwei, "no transactions yet: the 1 gwei default");
    let send = |nonce: u64, tip_gwei: u128| {
        let mut tx = eip1559(
            nonce,
            TxKind::Call(Address::repeat_byte(7)),
            U256::from(1),
            Bytes::new(),
            21_000,
        );
        tx.max_fee_per_gas = 500 * gwei;
        tx.max_priority_fee_per_gas = tip_gwei * gwei;
        evm.rpc("eth_sendRawTransaction", json!([signed(&k0, tx)]));
    };
    // Block 1: tips 2, 4, 6 and 100 gwei; only the lowest three are sampled.
    for (n, t) in [(0, 6), (1, 4), (2, 2), (3, 100)] {
        send(n, t);
    }
    let ts = now();
    let (b1, _) = build(&evm, &json!(evm.genesis), ts, 1);
    set_head(&evm, &b1, &json!(B256::ZERO));
    assert_eq!(
        evm.rpc("eth_getBlockByNumber", json!(["latest", false]))["transactions"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Samples 2, 4, 6: index (3 - 1) × 60 / 100 = 1.
    assert_eq!(tip(&evm), 4 * gwei);
    // Block 2: tips 10 and 12; samples 2, 4, 6, 10, 12: index 4 × 60 / 100 = 2.
    send(4, 10);
    send(5, 12);
    let (b2, _) = build(&evm, &b1, ts + 1, 2);
    set_head(&evm, &b2, &json!(B256::ZERO));
    assert_eq!(tip(&evm), 6 * gwei);
    let price = qty(&evm.rpc("eth_gasPrice", json!([])));
    let head = evm.rpc("eth_getBlockByNumber", json!(["latest", false]));
    assert!(
        price > 6 * gwei && price <= 6 * gwei + 2 * qty(&head["baseFeePerGas"]),
        "eth_gasPrice {price} is the next base fee plus the suggested tip"
    );
}

/// A chain longer than what the engine keeps in memory: old blocks, receipts and
/// transactions are answered from the store (before and after a restart), old state is
/// refused with the reason, and a consensus client replaying an old block gets VALID.
#[test]
fn old_blocks_are_served_from_the_store() {
    let genesis_file = fixtures().join("reth-interop/genesis.json");
    let dir = tempfile::tempdir().unwrap();
    let k0 = signer(KEY0);
    let evm = Evm::start_in(&genesis_file, dir.path());
    let tx = evm.rpc(
        "eth_sendRawTransaction",
        json!([signed(
            &k0,
            eip1559(
                0,
                TxKind::Call(Address::repeat_byte(9)),
                U256::from(5),
                Bytes::new(),
                21_000
            )
        )]),
    );
    let mut head = json!(evm.genesis);
    let mut ts = now();
    let mut first = None;
    // KEEP_BLOCKS (1024) + two flushes past it.
    for n in 0..1060u64 {
        ts += 1;
        let env = propose(&evm, &head, ts, 1);
        let h = import(&evm, &env, 1);
        let r = set_head(&evm, &h, &h);
        assert_eq!(r["result"]["payloadStatus"]["status"], "VALID", "{r}");
        if n == 0 {
            first = Some(env);
        }
        head = h;
    }
    let first = first.unwrap();
    let check = |evm: &Evm| {
        let b1 = evm.rpc("eth_getBlockByNumber", json!(["0x1", true]));
        assert_eq!(b1["hash"], first["executionPayload"]["blockHash"]);
        assert_eq!(b1["transactions"][0]["hash"], tx);
        assert_eq!(
            evm.rpc("eth_getTransactionByHash", json!([tx]))["blockNumber"],
            "0x1"
        );
        assert_eq!(receipt(evm, &tx)["status"], "0x1");
        let bodies = evm.engine("engine_getPayloadBodiesByRangeV1", json!(["0x1", "0x2"]));
        assert_eq!(
            bodies[0]["transactions"].as_array().unwrap().len(),
            1,
            "{bodies}"
        );
        let old = evm.rpc_raw("eth_getBalance", json!([Address::repeat_byte(9), "0x1"]));
        let msg = old["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("historical state of block 1 is not available"),
            "{old}"
        );
        assert_eq!(
            qty(&evm.rpc("eth_getBalance", json!([Address::repeat_byte(9), "latest"]))),
            5
        );
        // A consensus client replaying block 1 learns that it is known and valid.
        let s = evm.engine(
            "engine_newPayloadV4",
            json!([
                first["executionPayload"],
                [],
                B256::repeat_byte(1),
                first["executionRequests"]
            ]),
        );
        assert_eq!(s["status"], "VALID", "{s}");
    };
    check(&evm);
    drop(evm);
    let evm = Evm::start_in(&genesis_file, dir.path());
    assert_eq!(latest(&evm)["hash"], head);
    check(&evm);
    ts += 1;
    let (h, _) = build(&evm, &head, ts, 2);
    assert_eq!(
        set_head(&evm, &h, &h)["result"]["payloadStatus"]["status"],
        "VALID"
    );
}

// ---- Blob transactions (EIP-4844; EIP-7594 cell proofs from Osaka) ----

/// The JSON-RPC error `eth_sendRawTransaction` answers `raw` with.
fn send_err(evm: &Evm, raw: &Bytes) -> String {
    let r = evm.rpc_raw("eth_sendRawTransaction", json!([raw]));
    assert!(r["error"].is_object(), "accepted: {r}");
    r["error"].to_string()
}

/// The JSON-RPC error of an Engine API call.
fn engine_err(evm: &Evm, method: &str, params: Value) -> String {
    let r = evm.engine_raw(method, params);
    assert!(r["error"].is_object(), "{method} answered: {r}");
    r["error"].to_string()
}

/// The versioned hashes of the blob transactions in an envelope's payload.
fn versioned_hashes(bundle: &Value) -> Vec<B256> {
    bundle["commitments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let c: alloy_primitives::FixedBytes<48> = serde_json::from_value(c.clone()).unwrap();
            alloy_eips::eip4844::kzg_to_versioned_hash(c.as_slice())
        })
        .collect()
}

#[test]
fn blob_transactions_enter_osaka_blocks_with_cell_proofs_and_are_served_by_get_blobs() {
    with_big_stack(osaka_blobs);
}

fn osaka_blobs() {
    let evm = Evm::start(&fixtures().join("reth-interop/genesis.json"));
    let (k0, k1) = (signer(KEY0), signer(KEY1));
    let mut head = json!(evm.genesis);
    let mut ts = now();

    // Two blobs with cell proofs (the Osaka form), and one with a KZG proof per blob
    // (the Prague form), which the engine converts.
    let a = cell_sidecar(&[1, 2]);
    let (raw_a, hash_a) = blob_tx(&k0, CHAIN_ID, 0, a.clone().into(), None, 1, 1_000_000_000);
    assert_eq!(
        evm.rpc("eth_sendRawTransaction", json!([raw_a])),
        json!(hash_a)
    );
    let b = proof_sidecar(&[3]);
    let (raw_b, hash_b) = blob_tx(&k0, CHAIN_ID, 1, b.clone().into(), None, 1, 1_000_000_000);
    assert_eq!(
        evm.rpc("eth_sendRawTransaction", json!([raw_b])),
        json!(hash_b)
    );
    // Fund key 1 for the second part.
    let fund = signed(
        &k0,
        eip1559(
            2,
            TxKind::Call(k1.address()),
            U256::from(10u128.pow(18)),
            Bytes::new(),
            21_000,
        ),
    );
    evm.rpc("eth_sendRawTransaction", json!([fund]));
    let pending = evm.rpc("eth_getTransactionByHash", json!([hash_a]));
    assert_eq!(pending["type"], "0x3", "{pending}");
    assert!(pending["blockNumber"].is_null());

    // getBlobsV2/V3 from the pool, with the cell proofs of each blob.
    let b_cells = cell_sidecar(&[3]);
    let hashes: Vec<B256> = a.versioned_hashes().chain(b.versioned_hashes()).collect();
    let got = evm.engine("engine_getBlobsV2", json!([hashes]));
    let got = got.as_array().expect("all three blobs known");
    assert_eq!(got.len(), 3);
    for (i, (item, (blob, proofs))) in got
        .iter()
        .zip([
            (&a.blobs[0], &a.cell_proofs[..128]),
            (&a.blobs[1], &a.cell_proofs[128..]),
            (&b_cells.blobs[0], &b_cells.cell_proofs[..]),
        ])
        .enumerate()
    {
        assert_eq!(item["blob"], json!(blob), "blob {i}");
        assert_eq!(item["proofs"], json!(proofs), "cell proofs of blob {i}");
    }
    let unknown = B256::repeat_byte(0x01);
    assert!(evm
        .engine("engine_getBlobsV2", json!([[hashes[0], unknown]]))
        .is_null());
    let v3 = evm.engine("engine_getBlobsV3", json!([[hashes[0], unknown]]));
    assert!(v3[0].is_object() && v3[1].is_null(), "{v3}");
    // getBlobsV1 (one proof per blob) is not served from Osaka on.
    let e = engine_err(&evm, "engine_getBlobsV1", json!([[hashes[0]]]));
    assert!(e.contains("-38005"), "{e}");
    let too_many = vec![unknown; 129];
    let e = engine_err(&evm, "engine_getBlobsV2", json!([too_many]));
    assert!(e.contains("-38004"), "{e}");

    // Refusals, each with its reason.
    let mut swapped = a.clone();
    swapped.cell_proofs.swap(0, 1);
    let (raw, _) = blob_tx(&k1, CHAIN_ID, 0, swapped.into(), None, 1, 1);
    let e = send_err(&evm, &raw);
    assert!(e.contains("invalid blob proof"), "{e}");
    let other = proof_sidecar(&[9]);
    let (raw, _) = blob_tx(
        &k1,
        CHAIN_ID,
        0,
        other.into(),
        Some(b.versioned_hashes().collect()),
        1,
        1,
    );
    let e = send_err(&evm, &raw);
    assert!(e.contains("does not match its commitment"), "{e}");
    let seven = proof_sidecar(&[1, 2, 3, 4, 5, 6, 7]);
    let (raw, _) = blob_tx(&k1, CHAIN_ID, 0, seven.into(), None, 1, 1);
    let e = send_err(&evm, &raw);
    assert!(
        e.contains("too many blobs: 7") && e.contains("at most 6"),
        "{e}"
    );
    let (raw, _) = blob_tx(&k0, CHAIN_ID, 0, a.clone().into(), None, 3, 1_000_000_000);
    let e = send_err(&evm, &raw);
    assert!(e.contains("by at least 100%"), "{e}");
    // The transaction without its sidecar (the form blocks carry) is not a pool entry.
    let bare: TxEnvelope = {
        let d = alloy_eips::eip2718::Decodable2718::decode_2718(&mut &raw_a[..]);
        let pooled: EthereumTxEnvelope<TxEip4844WithSidecar<BlobTransactionSidecarVariant>> =
            d.unwrap();
        let EthereumTxEnvelope::Eip4844(s) = pooled else {
            unreachable!()
        };
        let (tx, sig, _) = s.into_parts();
        alloy_consensus::TxEip4844Variant::<BlobTransactionSidecar>::TxEip4844(tx.tx)
            .into_signed(sig)
            .into()
    };
    let e = send_err(&evm, &Bytes::from(bare.encoded_2718()));
    assert!(e.contains("network form"), "{e}");

    // The block: three blobs, their commitments and 3 × 128 cell proofs that verify.
    ts += 12;
    let env = propose(&evm, &head, ts, 1);
    let payload = &env["executionPayload"];
    assert_eq!(payload["transactions"].as_array().unwrap().len(), 3);
    assert_eq!(payload["blobGasUsed"], json!(format!("{:#x}", 3 * 131_072)));
    let bundle = &env["blobsBundle"];
    assert_eq!(bundle["blobs"].as_array().unwrap().len(), 3);
    assert_eq!(bundle["proofs"].as_array().unwrap().len(), 3 * 128);
    assert_eq!(versioned_hashes(bundle), hashes);
    let checked = BlobTransactionSidecarEip7594 {
        blobs: serde_json::from_value(bundle["blobs"].clone()).unwrap(),
        commitments: serde_json::from_value(bundle["commitments"].clone()).unwrap(),
        cell_proofs: serde_json::from_value(bundle["proofs"].clone()).unwrap(),
    };
    checked
        .validate(&hashes, EnvKzgSettings::Default.get())
        .expect("the bundle's cell proofs verify");
    // A payload whose expected versioned hashes leave one out is INVALID.
    let status = evm.engine(
        "engine_newPayloadV4",
        json!([
            payload,
            &hashes[..2],
            B256::repeat_byte(1),
            env["executionRequests"]
        ]),
    );
    assert_eq!(status["status"], "INVALID", "{status}");
    head = import_with_blobs(&evm, &env, 1, &hashes);
    set_head(&evm, &head, &json!(evm.genesis));
    let r = receipt(&evm, &json!(hash_a));
    assert_eq!(
        r["blobGasUsed"],
        json!(format!("{:#x}", 2 * 131_072)),
        "{r}"
    );
    assert!(qty(&r["blobGasPrice"]) >= 1, "{r}");
    // Included blobs are still served for a while (a CL may ask after the block).
    assert!(evm.engine("engine_getBlobsV2", json!([hashes])).is_array());

    // Limits of the block: 9 blobs. Two transactions of 6 blobs each go in one per block.
    let six_a = proof_sidecar(&[10, 11, 12, 13, 14, 15]);
    let six_b = proof_sidecar(&[20, 21, 22, 23, 24, 25]);
    let (raw, h6a) = blob_tx(&k0, CHAIN_ID, 3, six_a.into(), None, 2, 1_000_000_000);
    evm.rpc("eth_sendRawTransaction", json!([raw]));
    let (raw, h6b) = blob_tx(&k1, CHAIN_ID, 0, six_b.into(), None, 1, 1_000_000_000);
    evm.rpc("eth_sendRawTransaction", json!([raw]));
    // A blob fee cap below the blob base fee: kept, left out, and so is the sender's next
    // transaction, which waits for it (neither is dropped).
    let (raw, h_low) = blob_tx(&k1, CHAIN_ID, 1, proof_sidecar(&[30]).into(), None, 1, 0);
    evm.rpc("eth_sendRawTransaction", json!([raw]));
    let after_low = signed(
        &k1,
        eip1559(
            2,
            TxKind::Call(k0.address()),
            U256::from(1),
            Bytes::new(),
            21_000,
        ),
    );
    let h_after = evm.rpc("eth_sendRawTransaction", json!([after_low]));
    let mut included = Vec::new();
    for randao in 2..=3u8 {
        ts += 12;
        let env = propose(&evm, &head, ts, randao);
        let bundle = &env["blobsBundle"];
        assert_eq!(
            bundle["blobs"].as_array().unwrap().len(),
            6,
            "one 6-blob transaction per block: {bundle}"
        );
        let hashes = versioned_hashes(bundle);
        head = import_with_blobs(&evm, &env, randao, &hashes);
        set_head(&evm, &head, &json!(evm.genesis));
        included.extend(
            env["executionPayload"]["transactions"]
                .as_array()
                .unwrap()
                .clone(),
        );
    }
    assert_eq!(included.len(), 2, "only the two 6-blob transactions");
    for h in [json!(h6a), json!(h6b)] {
        assert!(receipt(&evm, &h)["blockNumber"].is_string());
    }
    for h in [json!(h_low), h_after] {
        let t = evm.rpc("eth_getTransactionByHash", json!([h]));
        assert!(
            t.is_object() && t["blockNumber"].is_null(),
            "still pending: {t}"
        );
    }
    ts += 12;
    let env = propose(&evm, &head, ts, 4);
    assert_eq!(env["executionPayload"]["transactions"], json!([]));
}

#[test]
fn prague_blocks_carry_one_kzg_proof_per_blob() {
    with_big_stack(prague_blobs);
}

fn prague_blobs() {
    // The interop genesis with Osaka left out: Prague rules.
    let mut genesis: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reth-interop/genesis.json")).unwrap(),
    )
    .unwrap();
    genesis["config"]
        .as_object_mut()
        .unwrap()
        .remove("osakaTime");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prague.json");
    std::fs::write(&path, genesis.to_string()).unwrap();
    let evm = Evm::start(&path);
    let k0 = signer(KEY0);

    let (raw, _) = blob_tx(&k0, CHAIN_ID, 0, cell_sidecar(&[5]).into(), None, 1, 1);
    let e = send_err(&evm, &raw);
    assert!(e.contains("which are for Osaka"), "{e}");
    let sc = proof_sidecar(&[5, 6]);
    let (raw, hash) = blob_tx(&k0, CHAIN_ID, 0, sc.clone().into(), None, 1, 1_000_000_000);
    assert_eq!(evm.rpc("eth_sendRawTransaction", json!([raw])), json!(hash));
    let hashes: Vec<B256> = sc.versioned_hashes().collect();
    let got = evm.engine("engine_getBlobsV1", json!([hashes]));
    assert_eq!(got[1]["blob"], json!(sc.blobs[1]));
    assert_eq!(got[1]["proof"], json!(sc.proofs[1]));
    assert!(evm.engine("engine_getBlobsV2", json!([hashes])).is_null());

    let env = propose_with(
        &evm,
        &json!(evm.genesis),
        now() + 12,
        1,
        "engine_getPayloadV4",
    );
    let bundle = &env["blobsBundle"];
    assert_eq!(bundle["proofs"], json!(sc.proofs));
    assert_eq!(bundle["commitments"], json!(sc.commitments));
    assert_eq!(versioned_hashes(bundle), hashes);
    let e = engine_err(
        &evm,
        "engine_getPayloadV5",
        json!([evm.engine(
            "engine_forkchoiceUpdatedV3",
            json!([{"headBlockHash": evm.genesis, "safeBlockHash": B256::ZERO, "finalizedBlockHash": B256::ZERO}, {
                "timestamp": format!("{:#x}", now() + 13),
                "prevRandao": B256::ZERO, "suggestedFeeRecipient": Address::ZERO,
                "withdrawals": [], "parentBeaconBlockRoot": B256::ZERO,
            }])
        )["payloadId"]]),
    );
    assert!(e.contains("-38005"), "{e}");
    // The same block with the blob transaction in its network form (wrapped with its
    // blobs, commitments and proofs), resealed so that only that is at fault: INVALID —
    // accepting it where every other client refuses it would split the network.
    let mut params = resealed(
        &env,
        B256::repeat_byte(1),
        |p| p.payload_inner.payload_inner.transactions[0] = raw.clone(),
        None,
    );
    params[1] = json!(hashes);
    let status = evm.engine("engine_newPayloadV4", params);
    assert_eq!(status["status"], "INVALID", "{status}");
    let why = status["validationError"].as_str().unwrap_or_default();
    assert!(
        why.contains("network form") && why.contains(&format!("{hash}")),
        "{status}"
    );
    assert_eq!(status["latestValidHash"], json!(evm.genesis), "{status}");
    let head = import_with_blobs(&evm, &env, 1, &hashes);
    set_head(&evm, &head, &head);
    assert_eq!(
        receipt(&evm, &json!(hash))["blobGasUsed"],
        json!(format!("{:#x}", 2 * 131_072))
    );
}

#[test]
fn pending_transactions_and_their_blobs_survive_a_kill_9() {
    with_big_stack(pool_survives_a_restart);
}

fn pool_survives_a_restart() {
    let genesis_file = fixtures().join("reth-interop/genesis.json");
    let dir = tempfile::tempdir().unwrap();
    let k0 = signer(KEY0);
    let status = pool_status;
    let transfer = |nonce| transfer_of_1_wei(&k0, nonce);
    let sidecar = cell_sidecar(&[40]);
    let hashes: Vec<B256> = sidecar.versioned_hashes().collect();
    let evm = Evm::start_in(&genesis_file, dir.path());
    // Nonce 0 a transfer, 1 a blob transaction, 3 held back behind the gap at 2.
    evm.rpc("eth_sendRawTransaction", json!([transfer(0)]));
    let (raw, blob_hash) = blob_tx(&k0, CHAIN_ID, 1, sidecar.into(), None, 1, 1_000_000_000);
    evm.rpc("eth_sendRawTransaction", json!([raw]));
    evm.rpc("eth_sendRawTransaction", json!([transfer(3)]));
    assert_eq!(status(&evm), (2, 1));
    drop(evm); // SIGKILL

    let evm = Evm::start_in(&genesis_file, dir.path());
    assert_eq!(status(&evm), (2, 1), "the pool came back from the journal");
    let t = evm.rpc("eth_getTransactionByHash", json!([blob_hash]));
    assert!(t.is_object() && t["blockNumber"].is_null(), "{t}");
    assert!(evm.engine("engine_getBlobsV2", json!([hashes])).is_array());
    // They go into the next block, with the blob.
    let env = propose(&evm, &json!(evm.genesis), now(), 1);
    assert_eq!(
        env["executionPayload"]["transactions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(versioned_hashes(&env["blobsBundle"]), hashes);
    let head = import_with_blobs(&evm, &env, 1, &hashes);
    set_head(&evm, &head, &head);
    assert_eq!(status(&evm), (0, 1));
    drop(evm);

    // Included ones are stale in the journal and skipped; the held-back one stays.
    let evm = Evm::start_in(&genesis_file, dir.path());
    assert_eq!(status(&evm), (0, 1));
    evm.rpc("eth_sendRawTransaction", json!([transfer(2)]));
    assert_eq!(status(&evm), (2, 0));
}

/// A JSON-RPC source with Reth 2.5's pending filters: a filter's changes are answered
/// only when a block came since its last poll (`filter_changes` in Reth's
/// `crates/rpc/rpc/src/eth/filter.rs`), and here no block ever comes. `test_add` puts a
/// (hash, raw) in its pool.
const RETH_LIKE_SOURCE: &str = r#"
import http.server, json, sys, itertools
best = 0
pool = []          # (hash, raw), in arrival order
filters = {}       # id -> [block, cursor]
ids = itertools.count(1)
def call(c):
    m, p = c["method"], c.get("params", [])
    if m == "test_add":
        pool.append((p[0], p[1])); return True
    if m == "eth_newPendingTransactionFilter":
        i = hex(next(ids)); filters[i] = [best, len(pool)]; return i
    if m == "eth_getFilterChanges":
        f = filters[p[0]]
        if f[0] > best:
            return []
        f[0] = best + 1
        out = [h for h, _ in pool[f[1]:]]; f[1] = len(pool); return out
    if m == "eth_uninstallFilter":
        return filters.pop(p[0], None) is not None
    if m == "eth_getRawTransactionByHash":
        return next((r for h, r in pool if h == p[0]), None)
    raise KeyError(m)
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        one = lambda c: {"jsonrpc": "2.0", "id": c["id"], "result": call(c)}
        out = json.dumps([one(c) for c in req] if isinstance(req, list) else one(req)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// `--tx-source`: the engine takes a source's new pending transactions into its pool,
/// each within a few pull intervals, from a source that answers a pending filter only
/// once per block (as Reth does; with one long-lived filter, everything after its first
/// poll waited for the next block, ~650 ms with a real Reth at 1 s blocks).
#[test]
fn pulls_pending_transactions_from_a_source_that_answers_a_filter_once_per_block() {
    let (_source, port) = crate::util::python_server(RETH_LIKE_SOURCE, &[]);
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let evm = Evm::spawn_with(
        &fixtures().join("reth-interop/genesis.json"),
        dir.path(),
        false,
        &["--tx-source", &url],
    )
    .unwrap();
    let k0 = signer(KEY0);
    // After the engine's first filter has been read (the one answer a single filter
    // would ever give here), three transactions, one by one.
    std::thread::sleep(std::time::Duration::from_millis(800));
    for nonce in 0..3 {
        let raw = transfer_of_1_wei(&k0, nonce);
        let hash = alloy_primitives::keccak256(&raw);
        let added = post(
            &url,
            None,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "test_add", "params": [hash, raw]}),
        );
        assert_eq!(added.1["result"], true, "{added:?}");
        let t0 = std::time::Instant::now();
        loop {
            if !evm.rpc("eth_getTransactionByHash", json!([hash])).is_null() {
                break;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(3),
                "transaction {nonce} not pulled in 3 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("transaction {nonce} pulled in {:?}", t0.elapsed());
    }
    assert_eq!(pool_status(&evm), (3, 0));
}

/// `--syncing-until-new-head`, as the client stand-ins run it: `eth_syncing` answers a
/// syncing object (as Reth 2.5.1 does before its first forkchoice: an object of zeros)
/// until a forkchoice update moves the head, and `false` from then on — also after a
/// forkchoice that keeps the head where it is.
#[test]
fn a_stand_in_reports_syncing_until_a_forkchoice_moves_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let evm = Evm::spawn_with(
        &fixtures().join("reth-interop/genesis.json"),
        dir.path(),
        false,
        &["--syncing-until-new-head"],
    )
    .unwrap();
    let syncing = evm.rpc("eth_syncing", json!([]));
    assert_eq!(
        syncing,
        json!({"startingBlock": "0x0", "currentBlock": "0x0", "highestBlock": "0x0"})
    );
    let genesis = json!(evm.genesis);
    // A forkchoice that keeps the head at genesis: still syncing.
    let fcu = set_head(&evm, &genesis, &genesis);
    assert_eq!(fcu["result"]["payloadStatus"]["status"], "VALID", "{fcu}");
    assert!(evm.rpc("eth_syncing", json!([])).is_object());
    // A block, and a forkchoice to it: synced.
    let (hash, _) = build(&evm, &genesis, now(), 1);
    assert!(
        evm.rpc("eth_syncing", json!([])).is_object(),
        "newPayload alone"
    );
    let fcu = set_head(&evm, &hash, &hash);
    assert_eq!(fcu["result"]["payloadStatus"]["status"], "VALID", "{fcu}");
    assert_eq!(evm.rpc("eth_syncing", json!([])), json!(false));
}

/// Whether `evm`'s pool holds the transaction `raw` (pending or held back).
fn holds(evm: &Evm, raw: &Bytes) -> bool {
    !evm.rpc(
        "eth_getTransactionByHash",
        json!([alloy_primitives::keccak256(raw)]),
    )
    .is_null()
}

/// Waits up to 5 s for `evm` to hold every one of `raws`.
fn wait_held(evm: &Evm, raws: &[&Bytes], what: &str) {
    let t0 = std::time::Instant::now();
    while !raws.iter().all(|r| holds(evm, r)) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "{what}: not in the peer's pool after 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("{what}: in the peer's pool after {:?}", t0.elapsed());
}

/// `--tx-peer`, as a devp2p peer is given the pool when it connects: a peer is given this
/// engine's whole pool the first time it answers and again whenever it restarted (a new
/// boot id). Seen under `chainctl chaos` restart-all: a sender's nonce n taken only by a
/// client that was then killed came back from its journal, but its peers — down when n
/// was sent — never got it, and every later transaction of that sender waited behind
/// the gap for good (650 and 1,610 transactions "lost").
#[test]
fn a_peer_that_was_down_or_restarted_is_given_the_whole_pool() {
    let genesis = fixtures().join("reth-interop/genesis.json");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let peer_url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let start_a =
        || Evm::spawn_with(&genesis, dir.path(), true, &["--tx-peer", &peer_url]).unwrap();
    let a = start_a();
    let k0 = signer(KEY0);
    // The peer is down. Nonce 0 comes as the gateway sends (marked relayed: not passed
    // on), nonce 1 from a user (queued for the peer, which cannot be reached).
    let (t0, t1) = (transfer_of_1_wei(&k0, 0), transfer_of_1_wei(&k0, 1));
    let (status, v) = ureq::post(&a.rpc)
        .set("x-chainctl-relayed", "1")
        .send_json(
            json!({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [t0]}),
        )
        .map(|r| (r.status(), r.into_json::<Value>().unwrap()))
        .unwrap();
    assert_eq!((status, v.get("error")), (200, None), "{v}");
    a.rpc("eth_sendRawTransaction", json!([t1]));
    assert_eq!(pool_status(&a), (2, 0));
    // Killed: what waited for the peer dies with it; the journal keeps the pool.
    drop(a);
    let a = start_a();
    assert_eq!(
        pool_status(&a),
        (2, 0),
        "the pool came back from the journal"
    );

    // The peer starts: it is given both.
    let peer_dir = tempfile::tempdir().unwrap();
    let port_arg = port.to_string();
    let start_peer = || {
        Evm::spawn_with(
            &genesis,
            peer_dir.path(),
            false,
            &["--http-port", &port_arg],
        )
        .unwrap()
    };
    let peer = start_peer();
    wait_held(&peer, &[&t0, &t1], "the pool, the peer's first answer");
    assert_eq!(pool_status(&peer), (2, 0));
    // The peer restarts (its pool lost: no data dir) while nothing new is sent: seen by
    // its new boot id, and given the pool again.
    drop(peer);
    let peer = start_peer();
    assert_eq!(pool_status(&peer), (0, 0));
    wait_held(&peer, &[&t0, &t1], "the pool, after the peer restarted");
    drop(a);
}

/// The interop genesis with every fork after `last` left out, written to `dir`.
fn genesis_up_to(dir: &std::path::Path, last: &str) -> std::path::PathBuf {
    let mut genesis: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("reth-interop/genesis.json")).unwrap(),
    )
    .unwrap();
    let cfg = genesis["config"].as_object_mut().unwrap();
    let later: &[&str] = match last {
        "paris" => &[
            "shanghaiTime",
            "cancunTime",
            "pragueTime",
            "osakaTime",
            "blobSchedule",
        ],
        "shanghai" => &["cancunTime", "pragueTime", "osakaTime", "blobSchedule"],
        other => panic!("no genesis for {other}"),
    };
    for k in later {
        cfg.remove(*k);
    }
    let path = dir.join(format!("{last}.json"));
    std::fs::write(&path, genesis.to_string()).unwrap();
    path
}

/// Payload attributes for a forkchoiceUpdatedV2 (PayloadAttributesV2: withdrawals, no
/// beacon root).
fn attrs_v2(ts: u64) -> Value {
    json!({
        "timestamp": format!("{ts:#x}"),
        "prevRandao": B256::repeat_byte(7),
        "suggestedFeeRecipient": Address::repeat_byte(0x11),
        "withdrawals": [],
    })
}

/// Engine API V1/V2 (issue 31): a chain whose genesis stops at Shanghai is built and
/// imported through forkchoiceUpdatedV2, getPayloadV2 and newPayloadV2 (V3 refused it
/// with -38005 before); every wrong version of a method or of its structure gets the
/// spec's error code — -38005 for a method of another fork, -32602 for the wrong
/// structure (execution-apis shanghai.md and cancun.md).
#[test]
fn a_shanghai_chain_is_driven_through_v2_and_wrong_versions_get_the_spec_codes() {
    let dir = tempfile::tempdir().unwrap();
    let evm = Evm::start(&genesis_up_to(dir.path(), "shanghai"));
    let k0 = signer(KEY0);
    let tx = transfer_of_1_wei(&k0, 0);
    let hash = evm.rpc("eth_sendRawTransaction", json!([tx]));
    let genesis = json!(evm.genesis);
    let fc = json!({"headBlockHash": genesis, "safeBlockHash": B256::ZERO, "finalizedBlockHash": B256::ZERO});
    let ts = now();
    let code = |e: String, c: &str| assert!(e.contains(c), "wanted {c}: {e}");

    // Attributes of the wrong version for a Shanghai block.
    let mut v3 = attrs_v2(ts);
    v3["parentBeaconBlockRoot"] = json!(B256::repeat_byte(1));
    code(
        engine_err(&evm, "engine_forkchoiceUpdatedV3", json!([fc, v3])),
        "-38005",
    );
    code(
        engine_err(&evm, "engine_forkchoiceUpdatedV2", json!([fc, v3])),
        "-32602",
    );
    let mut v1 = attrs_v2(ts);
    v1.as_object_mut().unwrap().remove("withdrawals");
    code(
        engine_err(&evm, "engine_forkchoiceUpdatedV2", json!([fc, v1])),
        "-32602",
    );
    code(
        engine_err(
            &evm,
            "engine_forkchoiceUpdatedV1",
            json!([fc, attrs_v2(ts)]),
        ),
        "-32602",
    );

    // Built through V2.
    let fcu = evm.engine("engine_forkchoiceUpdatedV2", json!([fc, attrs_v2(ts)]));
    assert_eq!(fcu["payloadStatus"]["status"], "VALID", "{fcu}");
    let id = fcu["payloadId"].clone();
    code(
        engine_err(&evm, "engine_getPayloadV3", json!([id])),
        "-38005",
    );
    code(
        engine_err(&evm, "engine_getPayloadV1", json!([id])),
        "-38005",
    );
    let env = evm.engine("engine_getPayloadV2", json!([id]));
    let payload = env["executionPayload"].clone();
    assert!(env["blockValue"].is_string(), "{env}");
    assert_eq!(payload["withdrawals"], json!([]), "{env}");
    assert!(payload.get("blobGasUsed").is_none(), "a V2 payload: {env}");
    assert_eq!(payload["transactions"], json!([tx]), "{env}");

    // Imported through V2; the other versions and structures are refused.
    let mut no_withdrawals = payload.clone();
    no_withdrawals
        .as_object_mut()
        .unwrap()
        .remove("withdrawals");
    code(
        engine_err(&evm, "engine_newPayloadV2", json!([no_withdrawals])),
        "-32602",
    );
    code(
        engine_err(&evm, "engine_newPayloadV1", json!([no_withdrawals])),
        "-32602",
    );
    code(
        engine_err(&evm, "engine_newPayloadV1", json!([payload])),
        "-32602",
    );
    let mut with_blob_gas = payload.clone();
    with_blob_gas["blobGasUsed"] = json!("0x0");
    with_blob_gas["excessBlobGas"] = json!("0x0");
    code(
        engine_err(&evm, "engine_newPayloadV2", json!([with_blob_gas])),
        "-32602",
    );
    code(
        engine_err(
            &evm,
            "engine_newPayloadV3",
            json!([with_blob_gas, [], B256::repeat_byte(1)]),
        ),
        "-38005",
    );
    let status = evm.engine("engine_newPayloadV2", json!([payload]));
    assert_eq!(status["status"], "VALID", "{status}");
    let head = payload["blockHash"].clone();
    let fcu = evm.engine(
        "engine_forkchoiceUpdatedV2",
        json!([{"headBlockHash": head, "safeBlockHash": head, "finalizedBlockHash": head}, null]),
    );
    assert_eq!(fcu["payloadStatus"]["status"], "VALID", "{fcu}");
    assert_eq!(receipt(&evm, &hash)["status"], "0x1");
    let caps = evm.engine("engine_exchangeCapabilities", json!([[]]));
    for m in [
        "engine_newPayloadV2",
        "engine_forkchoiceUpdatedV2",
        "engine_getPayloadV2",
    ] {
        assert!(caps.as_array().unwrap().contains(&json!(m)), "{caps}");
    }

    // On a chain in Cancun and later, the V2 methods are another fork's: -38005.
    let cancun = Evm::start(&fixtures().join("reth-interop/genesis.json"));
    let env = propose(&cancun, &json!(cancun.genesis), now(), 1);
    let mut p = env["executionPayload"].clone();
    let obj = p.as_object_mut().unwrap();
    obj.remove("blobGasUsed");
    obj.remove("excessBlobGas");
    code(
        engine_err(&cancun, "engine_newPayloadV2", json!([p])),
        "-38005",
    );
    let fc = json!({"headBlockHash": cancun.genesis, "safeBlockHash": B256::ZERO, "finalizedBlockHash": B256::ZERO});
    code(
        engine_err(
            &cancun,
            "engine_forkchoiceUpdatedV2",
            json!([fc, attrs_v2(now() + 1)]),
        ),
        "-38005",
    );
    let fcu = cancun.engine(
        "engine_forkchoiceUpdatedV3",
        json!([fc, {"timestamp": format!("{:#x}", now() + 2), "prevRandao": B256::ZERO,
                    "suggestedFeeRecipient": Address::ZERO, "withdrawals": [],
                    "parentBeaconBlockRoot": B256::ZERO}]),
    );
    code(
        engine_err(&cancun, "engine_getPayloadV2", json!([fcu["payloadId"]])),
        "-38005",
    );
}

/// The merge fork in the fixture importer (issue 31): a blockchain test written here —
/// a Paris chain built by the engine through forkchoiceUpdatedV1 / getPayloadV1, its
/// genesis and one block of a transfer, plus the same block with a wrong state root that
/// must be rejected for it — passes as `Paris` (EEST's name), and fails under Shanghai's
/// rules, which want withdrawals: the importer runs the network the case names.
#[test]
fn a_paris_blockchain_test_built_here_passes_the_importer_under_paris_rules_only() {
    use alloy_consensus::{Block, Header, TxEnvelope};
    use alloy_rpc_types_engine::{ExecutionPayload, ExecutionPayloadV1};
    let dir = tempfile::tempdir().unwrap();
    let genesis_file = genesis_up_to(dir.path(), "paris");
    let evm = Evm::start(&genesis_file);
    let k0 = signer(KEY0);
    evm.rpc("eth_sendRawTransaction", json!([transfer_of_1_wei(&k0, 0)]));
    let genesis = json!(evm.genesis);
    let fc = json!({"headBlockHash": genesis, "safeBlockHash": B256::ZERO, "finalizedBlockHash": B256::ZERO});
    let mut attrs = attrs_v2(now());
    attrs.as_object_mut().unwrap().remove("withdrawals");
    let fcu = evm.engine("engine_forkchoiceUpdatedV1", json!([fc, attrs]));
    assert_eq!(fcu["payloadStatus"]["status"], "VALID", "{fcu}");
    let payload = evm.engine("engine_getPayloadV1", json!([fcu["payloadId"]]));
    assert!(
        payload.get("withdrawals").is_none(),
        "a V1 payload: {payload}"
    );
    let payload: ExecutionPayloadV1 = serde_json::from_value(payload).unwrap();
    let block: Block<TxEnvelope> = ExecutionPayload::V1(payload.clone())
        .try_into_block()
        .unwrap();
    assert_eq!(block.header.hash_slow(), payload.block_hash);
    assert_eq!(block.body.transactions.len(), 1);
    let mut bad = block.clone();
    bad.header.state_root = B256::repeat_byte(0x42);
    let hex_rlp = |b: &Block<TxEnvelope>| format!("0x{}", hex::encode(alloy_rlp::encode(b)));

    // The genesis header as the engine serves it, and the allocation as the pre-state.
    let g0 = evm.rpc("eth_getBlockByNumber", json!(["0x0", false]));
    let header: Header = serde_json::from_value(g0.clone()).unwrap();
    assert_eq!(json!(header.hash_slow()), g0["hash"], "{g0}");
    let g: Value = serde_json::from_str(&std::fs::read_to_string(&genesis_file).unwrap()).unwrap();
    let pre: serde_json::Map<String, Value> = g["alloc"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(a, acct)| {
            let a = if a.starts_with("0x") {
                a.clone()
            } else {
                format!("0x{a}")
            };
            (
                a,
                json!({
                    "balance": acct["balance"],
                    "nonce": acct.get("nonce").cloned().unwrap_or(json!("0x0")),
                    "code": acct.get("code").cloned().unwrap_or(json!("0x")),
                    "storage": acct.get("storage").cloned().unwrap_or(json!({})),
                }),
            )
        })
        .collect();
    let case = |network: &str| {
        json!({"paris_transfer": {
            "network": network,
            "genesisRLP": format!("0x{}", hex::encode(alloy_rlp::encode(&header))),
            "genesisBlockHeader": {"hash": g0["hash"]},
            "pre": pre,
            "lastblockhash": payload.block_hash,
            "config": {"chainid": format!("{:#x}", g["config"]["chainId"].as_u64().unwrap())},
            "blocks": [
                {"rlp": hex_rlp(&bad), "expectException": "BlockException.INVALID_STATE_ROOT"},
                {"rlp": hex_rlp(&block), "blockHeader": {"hash": payload.block_hash}},
            ],
        }})
    };
    let import = |network: &str| {
        let path = dir.path().join(format!("{network}.json"));
        std::fs::write(&path, case(network).to_string()).unwrap();
        let o = std::process::Command::new(crate::util::bin())
            .args(["node", "evm", "import-fixture"])
            .arg(&path)
            .output()
            .unwrap();
        (o.status.success(), crate::util::text(&o.stdout))
    };
    let (ok, out) = import("Paris");
    assert!(ok, "{out}");
    assert!(out.contains("total: 1 passed, 0 failed"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("Paris: ")), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("BlockException.INVALID_STATE_ROOT")
                && l.contains("1 rejected for it")),
        "{out}"
    );
    let (ok, out) = import("Shanghai");
    assert!(!ok && out.contains("missing withdrawals"), "{out}");
}
