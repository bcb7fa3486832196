//! The built-in engine (`chainctl node evm`): our own binary, the network genesis as is,
//! every transaction a user sends it passed on to the network's other ELs, and the new
//! pending transactions of the external ones (which gossip only over devp2p) pulled.

use super::{command_service, words, ElContext};
use crate::profile::{CommandService, PortSpec};

/// The built-in engine's service.
pub fn service(ctx: &ElContext) -> CommandService {
    let mut command = words(&[
        "{{chainctl}}",
        "node",
        "evm",
        "--genesis",
        "{{state_dir}}/network/genesis.json",
        "--http-addr",
        "{{listen.rpc}}",
        "--http-port",
        "{{port.http}}",
        "--authrpc-addr",
        "{{listen.rpc}}",
        "--authrpc-port",
        "{{port.engine}}",
        "--jwt-secret",
        "{{jwt_path}}",
        "--datadir",
        "{{data_dir}}",
    ]);
    for peer in ctx.peers {
        command.push("--tx-peer".into());
        command.push(format!(
            "http://{{{{host.{peer}}}}}:{{{{port.{peer}.http}}}}"
        ));
    }
    // Reth, Geth and Erigon gossip only over devp2p: their new pending transactions are
    // pulled (`filters.rs` in the engine).
    for source in ctx.tx_sources {
        command.push("--tx-source".into());
        command.push(format!(
            "http://{{{{host.{source}}}}}:{{{{port.{source}.http}}}}"
        ));
    }
    command.extend(ctx.extra_args.iter().cloned());
    let mut svc = command_service(
        command,
        [("http", PortSpec::AUTO_TCP), ("engine", PortSpec::AUTO_TCP)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        Some(
            ctx.image
                .clone()
                .unwrap_or_else(crate::network::chainctl_image),
        ),
        &[],
    );
    // Readiness: every port (the planner's default).
    svc.ready_ports = None;
    svc
}
