//! Geth. Flags as documented in Geth's command-line reference and defined in
//! `cmd/utils/flags.go`; the genesis is written into the data dir by `geth init` first
//! (`cmd/geth/chaincmd.go`), which also refuses a different genesis on an existing one.

use super::{
    command_service, engine_flags, genesis_arg, http_flags, ports, words, wrapped, ws_flags,
    ElContext,
};
use crate::profile::{CommandService, ExecutionKind};
use serde_json::Value as Json;

/// Geth's service.
pub fn service(ctx: &ElContext) -> CommandService {
    let genesis = genesis_arg(ExecutionKind::Geth);
    let init = vec![
        ctx.binary.to_string(),
        "--datadir".into(),
        "{{data_dir}}".into(),
        "init".into(),
        genesis,
    ];
    let mut run = vec![ctx.binary.to_string()];
    run.extend(words(&[
        "--datadir",
        "{{data_dir}}",
        "--networkid",
        "{{chain_id}}",
        // blocks come only from our consensus through the Engine API
        "--syncmode",
        "full",
    ]));
    run.extend(http_flags("eth,net,web3,txpool"));
    run.extend(ws_flags());
    run.extend(engine_flags());
    run.extend(words(&[
        // P2P: TCP and UDP on one number; no discovery
        "--port",
        "{{port.p2p}}",
        "--discovery.port",
        "{{port.p2p}}",
        "--nodiscover",
        // the node key chainctl keeps, and the network's other external clients as static
        // and trusted peers, which Geth takes only from its TOML config (p2p.rs)
        "--nodekey",
        &super::p2p::key_arg(),
        "--config",
        &super::p2p::geth_config_arg(),
        "--maxpeers",
        &super::max_peers(ctx.p2p_peers),
        // metrics: the server starts only with --metrics.addr
        "--metrics",
        "--metrics.addr",
        "{{listen.rpc}}",
        "--metrics.port",
        "{{port.metrics}}",
        "--ipcdisable",
    ]));
    command_service(
        wrapped(ExecutionKind::Geth, ctx, init, run, &[]),
        ports(&[]),
        ctx.image.clone(),
        &["http", "engine"],
    )
}

/// Since 1.15.1 Geth refuses a genesis whose `blobSchedule` lacks an entry for a fork it
/// activates (`missing entry for fork "cancun" in blobSchedule`): fill any missing one
/// with the parameters of EIP-4844 (Cancun) and EIP-7691 (Prague, Osaka).
pub fn complete_blob_schedule(g: &mut Json) {
    let Some(config) = g.get_mut("config").and_then(Json::as_object_mut) else {
        return;
    };
    let active: Vec<&str> = [
        ("cancunTime", "cancun"),
        ("pragueTime", "prague"),
        ("osakaTime", "osaka"),
    ]
    .iter()
    .filter(|(t, _)| config.get(*t).is_some_and(|v| !v.is_null()))
    .map(|(_, f)| *f)
    .collect();
    let schedule = config
        .entry("blobSchedule")
        .or_insert_with(|| Json::Object(Default::default()));
    let Some(schedule) = schedule.as_object_mut() else {
        return;
    };
    for fork in active {
        schedule.entry(fork).or_insert_with(|| match fork {
            "cancun" => {
                serde_json::json!({"target": 3, "max": 6, "baseFeeUpdateFraction": 3338477})
            }
            _ => serde_json::json!({"target": 6, "max": 9, "baseFeeUpdateFraction": 5007716}),
        });
    }
}
