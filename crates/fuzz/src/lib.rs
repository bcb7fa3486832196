//! chainctl-fuzz: the fuzz targets — every decoder that reads bytes chainctl did not
//! write: a profile (parse and validate), a JSON-RPC request to the gateway, a JSON-RPC
//! request to the built-in engine (public and Engine API methods), an Engine API payload,
//! a consensus message from a peer, a raw transaction. Each target takes arbitrary bytes
//! and must return without panicking; refusing them is fine.
//!
//! `fuzz/` (cargo-fuzz, libFuzzer) drives them for hours by hand
//! ([docs/fuzzing.md](../../../docs/fuzzing.md)); this crate's tests run each target over
//! its corpus, `fuzz/corpus/TARGET/`, so every input ever kept — seeds, what the fuzzer
//! found interesting, each crash it found — is replayed in CI.
//!
//! Layer 6 (beside the binary): on core, evm, consensus and monitor; nothing depends on
//! it.

use std::sync::Arc;

/// A fuzz target: arbitrary bytes in, no panic out.
pub type Target = fn(&[u8]);

/// The targets by name (the corpus directory of each).
pub const TARGETS: &[(&str, Target)] = &[
    ("profile", profile),
    ("gateway_request", gateway_request),
    ("engine_rpc", engine_rpc),
    ("engine_payload", engine_payload),
    ("consensus_wire", consensus_wire),
    ("raw_transaction", raw_transaction),
];

/// A profile: parsed, validated and expanded (`chainctl validate`).
pub fn profile(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let _ = chainctl_core::loader::load(chainctl_core::profile::Source {
        label: "fuzz.yaml".into(),
        path: None,
        text,
    });
}

/// A request body as the gateway decodes it before choosing an upstream.
pub fn gateway_request(data: &[u8]) {
    let _ = chainctl_monitor::gateway::decode_request(data);
}

/// A fresh built-in engine on a small genesis (the first development account funded),
/// each input alone. The genesis is made once: deriving the key from the mnemonic was
/// most of a run's time otherwise.
fn engine() -> Arc<chainctl_evm::engine::Engine> {
    static GENESIS: std::sync::OnceLock<alloy_genesis::Genesis> = std::sync::OnceLock::new();
    let g = GENESIS.get_or_init(|| {
        let funded =
            [
                chainctl_core::network::dev_signers(chainctl_core::network::DEV_MNEMONIC, 0, 1)
                    .expect("the development mnemonic")[0]
                    .address(),
            ];
        chainctl_evm::benchkit::genesis(0, &funded)
    });
    let chain = chainctl_evm::server::chain_from_genesis(g).expect("the fuzz genesis");
    Arc::new(chainctl_evm::engine::Engine::new(chain))
}

/// A request body to the built-in engine, framing included: Engine API methods
/// (`engine_*`) as its authenticated port serves them, the rest as its public port does.
pub fn engine_rpc(data: &[u8]) {
    let e = engine();
    let _ = chainctl_evm::rpc::handle_body(data, &|m, p| {
        if m.starts_with("engine_") {
            e.call(m, p)
        } else {
            e.eth_call(m, p)
        }
    });
}

/// An Engine API payload: the input is the JSON `params` of `engine_newPayloadV3` (the
/// payload, the blob hashes, the parent beacon root); then `forkchoiceUpdatedV3` to the
/// block it claims.
pub fn engine_payload(data: &[u8]) {
    let Ok(params) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let e = engine();
    let head = params[0]["blockHash"].clone();
    for m in ["engine_newPayloadV3", "engine_newPayloadV4"] {
        let _ = e.call(m, params.clone());
    }
    let _ = e.call(
        "engine_forkchoiceUpdatedV3",
        serde_json::json!([{"headBlockHash": head, "safeBlockHash": head, "finalizedBlockHash": head}, null]),
    );
}

/// A message from a peer (or the WAL, or sync): the first byte picks its kind.
pub fn consensus_wire(data: &[u8]) {
    if let Some((kind, rest)) = data.split_first() {
        let _ = chainctl_consensus::codec::decode_any(*kind, rest);
    }
}

/// A raw transaction as `eth_sendRawTransaction` receives it (network form for blob
/// transactions), its sender recovered.
pub fn raw_transaction(data: &[u8]) {
    let _ = chainctl_evm::blobs::decode_raw(data);
}

#[cfg(test)]
mod tests {
    /// Every kept input of every target, replayed: none panics.
    #[test]
    fn every_corpus_input_is_handled_without_a_panic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        for (name, target) in super::TARGETS {
            let dir = root.join(name);
            let mut inputs: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .flatten()
                .map(|e| e.path())
                .collect();
            inputs.sort();
            assert!(!inputs.is_empty(), "{}: no corpus", dir.display());
            for p in &inputs {
                let data = std::fs::read(p).unwrap();
                if std::env::var_os("CHAINCTL_FUZZ_TRACE").is_some() {
                    eprintln!("{}", p.display());
                }
                // On a thread with a tokio worker's stack (2 MiB): deep nesting must not
                // overflow where the gateway and the engine decode requests.
                let run = std::thread::Builder::new()
                    .stack_size(2 << 20)
                    .spawn(move || target(&data))
                    .unwrap();
                if run.join().is_err() {
                    panic!("{name}: {} panics", p.display());
                }
            }
            eprintln!("{name}: {} inputs", inputs.len());
        }
    }
}
