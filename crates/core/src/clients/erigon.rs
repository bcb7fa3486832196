//! Erigon 3. Flags as documented in Erigon's CLI reference and defined in
//! `cmd/utils/flags.go` and `turbo/cli/flags.go`; the genesis is written into the data
//! dir by `erigon init` first, then Erigon starts with `--networkid` (never `--chain`,
//! which would default to mainnet) and `--externalcl` (our consensus drives it, not its
//! built-in Caplin).

use super::{
    command_service, engine_flags, genesis_arg, http_flags, ports, words, wrapped, ElContext,
};
use crate::profile::{CommandService, ExecutionKind};

/// Erigon's service.
pub fn service(ctx: &ElContext) -> CommandService {
    let genesis = genesis_arg(ExecutionKind::Erigon);
    let init = vec![
        ctx.binary.to_string(),
        "init".into(),
        "--datadir".into(),
        "{{data_dir}}".into(),
        genesis,
    ];
    let mut run = vec![ctx.binary.to_string()];
    run.extend(words(&[
        "--datadir",
        "{{data_dir}}",
        "--networkid",
        "{{chain_id}}",
        "--externalcl",
    ]));
    run.extend(http_flags("eth,net,web3,txpool,erigon"));
    run.extend(words(&["--ws", "--ws.port", "{{port.ws}}"]));
    run.extend(engine_flags());
    run.extend(words(&[
        // P2P: one eth protocol on one number (TCP and UDP), instead of one port per
        // protocol from 30303-30307; no discovery
        "--port",
        "{{port.p2p}}",
        "--p2p.protocol",
        "68",
        "--p2p.allowed-ports",
        "{{port.p2p}}",
        "--nodiscover",
        // the node key chainctl keeps; peers (`--staticpeers`, `--trustedpeers`) added at
        // start by client-exec (p2p.rs)
        "--nodekey",
        &super::p2p::key_arg(),
        "--maxpeers",
        &super::max_peers(ctx.p2p_peers),
        "--metrics",
        "--metrics.addr",
        "{{listen.rpc}}",
        "--metrics.port",
        "{{port.metrics}}",
        // ports Erigon opens by default (9090, 42069) on chainctl's allocation instead
        "--private.api.addr",
        "{{listen.rpc_host}}:{{port.grpc}}",
        "--torrent.port",
        "{{port.torrent}}",
    ]));
    let mut p = ports(&["grpc"]);
    p.insert(
        "torrent".into(),
        crate::profile::PortSpec {
            port: None,
            protocol: crate::profile::Protocol::Both,
        },
    );
    command_service(
        wrapped(
            ExecutionKind::Erigon,
            ctx,
            init,
            run,
            &["--staticpeers", "--trustedpeers"],
        ),
        p,
        ctx.image.clone(),
        &["http", "engine"],
    )
}
