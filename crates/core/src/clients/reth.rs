//! Reth (`reth node`). Flags as documented in Reth's CLI reference and defined in
//! `crates/node/core/src/args/` (`rpc_server.rs`, `network.rs`, `metric.rs`,
//! `datadir_args.rs`): no init step, the genesis is given with `--chain FILE`.

use super::{
    command_service, engine_flags, genesis_arg, http_flags, ports, words, wrapped, ws_flags,
    ElContext,
};
use crate::profile::{CommandService, ExecutionKind};

/// Reth's service.
pub fn service(ctx: &ElContext) -> CommandService {
    let genesis = genesis_arg(ExecutionKind::Reth);
    let mut run = vec![ctx.binary.to_string(), "node".into()];
    run.extend(words(&[
        // datadir_args.rs
        "--datadir",
        "{{data_dir}}",
        // chain spec from a genesis file (geth format)
        "--chain",
        &genesis,
    ]));
    // rpc_server.rs: HTTP and WebSocket JSON-RPC, the authenticated Engine API and its
    // JWT secret
    run.extend(http_flags("eth,net,web3,txpool"));
    run.extend(ws_flags());
    run.extend(engine_flags());
    run.extend(words(&[
        // network.rs: P2P on TCP and discv4 on UDP, one number; every discovery off
        // (discv5 would otherwise take UDP 9200, the same for every Reth on the host)
        "--addr",
        "{{listen.rpc}}",
        "--port",
        "{{port.p2p}}",
        "--discovery.port",
        "{{port.p2p}}",
        "--disable-discovery",
        // network.rs: the node key (peer id) chainctl keeps; without it Reth makes one in
        // its data dir, unknown to the other clients
        "--p2p-secret-key",
        &super::p2p::key_arg(),
        // the TOML config (reth-config's `Config`), written by chainctl with only the
        // network's other external clients as trusted peers (`[peers] trusted_nodes`,
        // what `--trusted-peers` adds to as well): read from a file, so it works as well
        // in a container, where nothing adds flags at start (p2p.rs)
        "--config",
        &super::p2p::reth_config_arg(),
        // metric.rs: Prometheus endpoint
        "--metrics",
        "{{listen.rpc_host}}:{{port.metrics}}",
        // the IPC socket is /tmp/reth.ipc for every Reth: off
        "--ipcdisable",
        // log.rs: Reth also logs to files, by default under the user's cache dir, shared
        // by every Reth of the user (and unwritable in hardened units): its own data dir
        "--log.file.directory",
        "{{data_dir}}/logs",
    ]));
    command_service(
        wrapped(ExecutionKind::Reth, ctx, Vec::new(), run, &[]),
        ports(&[]),
        ctx.image.clone(),
        &["http", "engine"],
    )
}
