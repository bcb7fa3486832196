//! Geth. Flags as documented in Geth's command-line reference and defined in
//! `cmd/utils/flags.go`; the genesis is written into the data dir by `geth init` first
//! (`cmd/geth/chaincmd.go`), which also refuses a different genesis on an existing one.

use super::{
    command_service, engine_flags, genesis_arg, http_flags, ports, words, wrapped, ws_flags,
    ElContext,
};
use crate::profile::{CommandService, ExecutionKind};

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
