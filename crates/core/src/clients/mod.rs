//! Execution client adapters: for each client chainctl runs behind a validator — the
//! built-in engine, Reth, Geth, Erigon — the exact command line (data dir, genesis, HTTP
//! and WebSocket RPC, Engine API with its JWT, P2P with discovery off, metrics), the
//! ports it needs (so no client falls back to a default another one holds), the init step
//! where the client needs one, the lock that tells its data dir is in use, its genesis
//! file, and the versions known to work. One module per client; this one holds what they
//! share. The planner resolves the `{{…}}` placeholders the adapters emit.

pub mod builtin;
pub mod erigon;
pub mod exec;
pub mod geth;
pub mod p2p;
pub mod reth;
pub mod version;

use crate::profile::{CommandService, ExecutionKind, PortSpec, Protocol};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// What an adapter is given for one execution client of a validator.
pub struct ElContext<'a> {
    /// The service name (`val-0-el-1`).
    pub name: &'a str,
    /// The network's other execution clients (built-in ones relay transactions to them).
    pub peers: &'a [String],
    /// How many of them speak devp2p (Reth, Geth, Erigon): this client's static peers.
    pub p2p_peers: usize,
    /// Those that speak devp2p, by name: a built-in engine pulls their new pending
    /// transactions (it speaks no devp2p to be given them).
    pub tx_sources: &'a [String],
    /// The program to run (`reth`, a path, …).
    pub binary: &'a str,
    /// Extra arguments the profile appends.
    pub extra_args: &'a [String],
    /// Image, for container targets.
    pub image: Option<String>,
}

impl<'a> ElContext<'a> {
    /// A client on its own: no other EL of the network, one devp2p peer (so the peer
    /// flags are rendered), on the process backend.
    pub fn lone(name: &'a str, binary: &'a str) -> Self {
        ElContext {
            name,
            peers: &[],
            p2p_peers: 1,
            tx_sources: &[],
            binary,
            extra_args: &[],
            image: None,
        }
    }
}

/// How a client's data dir tells that a process has it open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// An flock(2) on the file (Geth's `geth/LOCK`, Erigon's `LOCK`).
    Flock,
    /// A file holding the owner's pid (Reth's `db/lock`: pid, then its start time).
    PidFile,
}

impl LockKind {
    /// The word `chainctl client-exec --lock-kind` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::Flock => "flock",
            LockKind::PidFile => "pid",
        }
    }
    /// The kind a `--lock-kind` word names.
    pub fn parse(s: &str) -> Option<LockKind> {
        match s {
            "flock" => Some(LockKind::Flock),
            "pid" => Some(LockKind::PidFile),
            _ => None,
        }
    }
}

/// The lock file of a client's data dir (relative to it) and how it is held.
pub fn data_dir_lock(kind: ExecutionKind) -> Option<(&'static str, LockKind)> {
    match kind {
        ExecutionKind::Builtin => None,
        // crates/storage/db/src/lockfile.rs: `<datadir>/db/lock`, pid + start time.
        ExecutionKind::Reth => Some(("db/lock", LockKind::PidFile)),
        // node/node.go: flock on `<datadir>/geth/LOCK`.
        ExecutionKind::Geth => Some(("geth/LOCK", LockKind::Flock)),
        // flock on `<datadir>/LOCK`.
        ExecutionKind::Erigon => Some(("LOCK", LockKind::Flock)),
    }
}

/// Whether a client must initialise its data dir from the genesis before it starts.
pub fn needs_init(kind: ExecutionKind) -> bool {
    matches!(kind, ExecutionKind::Geth | ExecutionKind::Erigon)
}

/// Where a client serves what: the names of its service's ports (as its adapter
/// allocates them) for each endpoint, and the flag that names its Engine API secret.
/// Every probe, report check and reader of a client asks this rather than assuming the
/// built-in engine's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// HTTP JSON-RPC.
    pub http: &'static str,
    /// WebSocket JSON-RPC: the port chainctl gives `--ws.port` for Reth, Geth and Erigon
    /// (an upgrade on the HTTP port is answered 403 by Reth, 200 without an upgrade by
    /// Geth), the HTTP port for the built-in engine.
    pub ws: &'static str,
    /// The authenticated Engine API.
    pub engine: &'static str,
    /// Prometheus metrics, where the client serves them.
    pub metrics: Option<&'static str>,
    /// The path of the metrics in Prometheus' text format on that port.
    pub metrics_path: &'static str,
    /// devp2p (TCP and UDP), where the client speaks it.
    pub p2p: Option<&'static str>,
    /// The flag whose value is the Engine API's JWT secret file.
    pub jwt_flag: &'static str,
}

/// The endpoints of `kind`, as its adapter lays them out.
pub fn endpoints(kind: ExecutionKind) -> Endpoints {
    match kind {
        // `chainctl node evm`: one port for HTTP and WebSocket (`crates/evm/src/server.rs`)
        ExecutionKind::Builtin => Endpoints {
            http: "http",
            ws: "http",
            engine: "engine",
            metrics: None,
            metrics_path: "/metrics",
            p2p: None,
            jwt_flag: "--jwt-secret",
        },
        // Reth 2.5 (`rpc-builder/src/lib.rs`: separate HTTP and WS servers; the HTTP one
        // answers an upgrade 403) and Geth 1.16 (`rpc/http.go`: 200, no upgrade) serve
        // WebSocket only on `--ws.port`. Erigon 3 upgrades on its HTTP port too, and with
        // `--ws.port` apart from `--http.port` also listens there: `ws` serves all three.
        external => Endpoints {
            http: "http",
            ws: "ws",
            engine: "engine",
            metrics: Some("metrics"),
            // Reth's metrics server answers any path (`crates/node/metrics`); Geth's and
            // Erigon's serve Prometheus' format at `/debug/metrics/prometheus` only
            // (`metrics/exp/exp.go`).
            metrics_path: if external == ExecutionKind::Reth {
                "/metrics"
            } else {
                "/debug/metrics/prometheus"
            },
            p2p: Some("p2p"),
            jwt_flag: "--authrpc.jwtsecret",
        },
    }
}

/// The usual binary name of a client on PATH.
pub fn default_binary(kind: ExecutionKind) -> &'static str {
    match kind {
        ExecutionKind::Builtin => "chainctl",
        ExecutionKind::Reth => "reth",
        ExecutionKind::Geth => "geth",
        ExecutionKind::Erigon => "erigon",
    }
}

/// The kind's name as profiles write it.
pub fn kind_name(kind: ExecutionKind) -> &'static str {
    match kind {
        ExecutionKind::Builtin => "builtin",
        ExecutionKind::Reth => "reth",
        ExecutionKind::Geth => "geth",
        ExecutionKind::Erigon => "erigon",
    }
}

/// The genesis file a client reads, in the network dir.
pub fn genesis_file(kind: ExecutionKind) -> String {
    match kind {
        ExecutionKind::Builtin => "genesis.json".into(),
        other => format!("genesis-{}.json", kind_name(other)),
    }
}

/// The genesis file as a client's argument (a placeholder the planner resolves).
fn genesis_arg(kind: ExecutionKind) -> String {
    format!("{{{{state_dir}}}}/network/{}", genesis_file(kind))
}

/// The binary a client runs: the profile's `validators.clients.KIND.binary`, else its
/// usual name on PATH.
pub fn binary_of(clients: &crate::profile::Clients, kind: ExecutionKind) -> String {
    clients
        .of(kind)
        .and_then(|c| c.binary.clone())
        .unwrap_or_else(|| default_binary(kind).to_string())
}

/// The service an adapter renders for one execution client.
pub fn service(kind: ExecutionKind, ctx: &ElContext) -> CommandService {
    match kind {
        ExecutionKind::Builtin => builtin::service(ctx),
        ExecutionKind::Reth => reth::service(ctx),
        ExecutionKind::Geth => geth::service(ctx),
        ExecutionKind::Erigon => erigon::service(ctx),
    }
}

/// The flags chainctl sets on a client (its own and those `client-exec` adds at start):
/// a profile's `validators.clients.KIND.args` must not repeat one, which would make
/// Reth refuse to start (a flag given twice) or make Geth and Erigon silently drop
/// chainctl's value (the last one counts) — a port off the allocation, a JWT other than
/// the pair's, no peers.
pub fn managed_flags(kind: ExecutionKind) -> std::collections::BTreeSet<String> {
    let argv = service(kind, &ElContext::lone("x", default_binary(kind))).command;
    // client-exec's own options (before `--`) are not the client's, but the flags they
    // hand to the client are.
    let client_from = match argv.get(1).map(String::as_str) {
        Some("client-exec") => argv.iter().position(|a| a == "--").map_or(0, |i| i + 1),
        _ => 0,
    };
    let handed = argv[..client_from]
        .windows(2)
        .filter(|w| w[0] == "--peers-flag")
        .map(|w| w[1].clone());
    argv[client_from..]
        .iter()
        .filter(|a| a.starts_with("--") && a.len() > 2)
        .cloned()
        .chain(handed)
        .collect()
}

/// The genesis a client reads, from the one network genesis: the same chain (the same
/// hash, which the tests prove with our own engine), in the form each client requires.
pub fn genesis_for(kind: ExecutionKind, network: &Json) -> Json {
    let mut g = network.clone();
    if kind == ExecutionKind::Geth {
        crate::network::complete_blob_schedule(&mut g);
    }
    g
}

/// Ports of an external client, each allocated by chainctl so none falls back to its
/// default: P2P takes TCP and UDP on one number.
fn ports(extra: &[&str]) -> BTreeMap<String, PortSpec> {
    let mut m: BTreeMap<String, PortSpec> = ["http", "ws", "engine", "metrics"]
        .iter()
        .chain(extra)
        .map(|k| (k.to_string(), PortSpec::AUTO_TCP))
        .collect();
    m.insert(
        "p2p".into(),
        PortSpec {
            port: None,
            protocol: Protocol::Both,
        },
    );
    m
}

/// The command of an external client: run through `chainctl client-exec`, which refuses a
/// data dir another process holds, runs the init step, adds the client's static peers
/// (from [`p2p::peers_path`], each of `peer_flags` followed by the list), then becomes
/// the client (same pid, so signals and exit statuses are the client's). A container
/// plan splits it again ([`split_client_exec`]): the client's image has no chainctl.
fn wrapped(
    kind: ExecutionKind,
    ctx: &ElContext,
    init: Vec<String>,
    mut run: Vec<String>,
    peer_flags: &[&str],
) -> Vec<String> {
    run.extend(ctx.extra_args.iter().cloned());
    let mut argv: Vec<String> = vec!["{{chainctl}}".into(), "client-exec".into()];
    if let Some((file, how)) = data_dir_lock(kind) {
        argv.extend([
            "--data-dir".into(),
            "{{data_dir}}".into(),
            "--lock".into(),
            file.into(),
            "--lock-kind".into(),
            how.as_str().into(),
        ]);
    }
    if !peer_flags.is_empty() && ctx.p2p_peers > 0 {
        argv.extend(["--peers-file".into(), p2p::peers_arg()]);
        for f in peer_flags {
            argv.extend(["--peers-flag".into(), f.to_string()]);
        }
    }
    argv.extend(["--init-argc".into(), init.len().to_string(), "--".into()]);
    argv.extend(init);
    argv.extend(run);
    argv
}

/// A command that is `chainctl client-exec` as [`wrapped`] writes it, split into the
/// init step's words and the client's (each empty when absent); `None` for any other
/// command.
pub fn split_client_exec(argv: &[String]) -> Option<(Vec<String>, Vec<String>)> {
    if argv.get(1).map(String::as_str) != Some("client-exec") {
        return None;
    }
    let dash = argv.iter().position(|a| a == "--")?;
    let init = argv[..dash]
        .windows(2)
        .find(|w| w[0] == "--init-argc")
        .and_then(|w| w[1].parse::<usize>().ok())
        .unwrap_or(0);
    let words = &argv[dash + 1..];
    let init = init.min(words.len());
    Some((words[..init].to_vec(), words[init..].to_vec()))
}

/// The programs a command runs: its own and, when it is `chainctl client-exec` as
/// [`wrapped`] writes it, the init step's and the client's.
pub fn programs_of(argv: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = argv.first().map(String::as_str).into_iter().collect();
    let Some((init, client)) = split_client_exec(argv) else {
        return out;
    };
    let dash = argv.len() - init.len() - client.len();
    out.extend(
        argv.get(dash)
            .filter(|_| !init.is_empty())
            .map(String::as_str),
    );
    out.extend(argv.get(dash + init.len()).map(String::as_str));
    out
}

/// A generated EL service with the given command and ports.
fn command_service(
    command: Vec<String>,
    ports: BTreeMap<String, PortSpec>,
    image: Option<String>,
    ready: &[&str],
) -> CommandService {
    CommandService {
        command,
        env: BTreeMap::new(),
        workdir: None,
        ports,
        depends_on: Vec::new(),
        drives: Vec::new(),
        ready_ports: Some(ready.iter().map(|s| s.to_string()).collect()),
        restart: Default::default(),
        stop: None,
        startup_grace: None,
        image,
        jit: false,
    }
}

/// The HTTP JSON-RPC flags Reth, Geth and Erigon share (the same names in Reth's
/// `rpc_server.rs` and in Geth's and Erigon's `cmd/utils/flags.go`), serving `api`.
fn http_flags(api: &str) -> Vec<String> {
    let mut w = words(&[
        "--http",
        "--http.addr",
        "{{listen.rpc}}",
        "--http.port",
        "{{port.http}}",
        "--http.api",
    ]);
    w.push(api.into());
    w
}

/// The authenticated Engine API flags the three share: address, port and the JWT secret
/// of the client's pair.
fn engine_flags() -> Vec<String> {
    words(&[
        "--authrpc.addr",
        "{{listen.rpc}}",
        "--authrpc.port",
        "{{port.engine}}",
        "--authrpc.jwtsecret",
        "{{jwt_path}}",
    ])
}

/// WebSocket JSON-RPC as Reth and Geth name it.
fn ws_flags() -> Vec<String> {
    words(&[
        "--ws",
        "--ws.addr",
        "{{listen.rpc}}",
        "--ws.port",
        "{{port.ws}}",
        "--ws.api",
        "eth,net,web3",
    ])
}

/// `--maxpeers` for Geth and Erigon: they dial at most a third of it (`p2p/server.go`,
/// `DialRatio` 3), static peers included, and 0 turns the listener away from everyone.
fn max_peers(p2p_peers: usize) -> String {
    (3 * p2p_peers).to_string()
}

/// Strings from `&str`s.
fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    /// The programs of a wrapped command, with and without an init step, and of a
    /// command that is not wrapped.
    #[test]
    fn programs_of_a_wrapped_command_are_chainctl_init_and_client() {
        let ctx = |binary| ElContext {
            name: "val-0-el-0",
            peers: &[],
            p2p_peers: 0,
            tx_sources: &[],
            binary,
            extra_args: &[],
            image: None,
        };
        let geth = service(ExecutionKind::Geth, &ctx("/opt/geth/geth")).command;
        assert_eq!(
            programs_of(&geth),
            ["{{chainctl}}", "/opt/geth/geth", "/opt/geth/geth"]
        );
        let reth = service(ExecutionKind::Reth, &ctx("/opt/reth")).command;
        assert_eq!(programs_of(&reth), ["{{chainctl}}", "/opt/reth"]);
        let plain: Vec<String> = words(&["/usr/bin/python3", "-m", "http.server"]);
        assert_eq!(programs_of(&plain), ["/usr/bin/python3"]);
        assert!(programs_of(&[]).is_empty());
    }

    /// What [`endpoints`] says of each client is what its adapter renders: every port
    /// it names is allocated, the secret flag is followed by the pair's secret, and a
    /// client with a WebSocket port of its own is started with it.
    #[test]
    fn each_clients_endpoints_are_the_ports_and_flags_its_adapter_renders() {
        for kind in [
            ExecutionKind::Builtin,
            ExecutionKind::Reth,
            ExecutionKind::Geth,
            ExecutionKind::Erigon,
        ] {
            let svc = service(kind, &ElContext::lone("val-0-el-0", default_binary(kind)));
            let e = endpoints(kind);
            let names = [Some(e.http), Some(e.ws), Some(e.engine), e.metrics, e.p2p];
            for name in names.into_iter().flatten() {
                assert!(svc.ports.contains_key(name), "{kind:?}: no `{name}` port");
                let placeholder = format!("{{{{port.{name}}}}}");
                assert!(
                    svc.command.iter().any(|a| a.contains(&placeholder)),
                    "{kind:?}: `{name}` is allocated but never given to the client"
                );
            }
            assert_eq!(
                after_flag(&svc.command, e.jwt_flag),
                Some("{{jwt_path}}"),
                "{kind:?}"
            );
            if e.ws != e.http {
                assert!(svc.command.iter().any(|a| a == "--ws"), "{kind:?}");
            }
        }
    }

    fn after_flag<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
        argv.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].as_str())
    }

    /// Every client's genesis file is the same chain for our engine: the same hash as the
    /// network genesis the built-in engine reads.
    #[test]
    fn every_clients_genesis_has_the_network_genesis_hash() {
        for fork in ["osaka", "prague", "cancun", "shanghai", "paris"] {
            let p: Profile = serde_yaml::from_str(&format!(
                "name: t\nchain: {{chain_id: 1337, fork: {fork}, dev_accounts: 3}}\n"
            ))
            .unwrap();
            let network = crate::network::render_el_genesis(&p, 1_700_000_000).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let hash = |g: &Json, name: &str| {
                let path = dir.path().join(name);
                std::fs::write(&path, serde_json::to_vec(g).unwrap()).unwrap();
                chainctl_evm::genesis_hash(&path).unwrap().0
            };
            let want = hash(&network, "genesis.json");
            // A network genesis whose blobSchedule lacks entries (as a hand-written one
            // may): Geth's file gains them, and the chain stays the same.
            let mut sparse = network.clone();
            sparse["config"]["blobSchedule"] = serde_json::json!({});
            assert_eq!(hash(&sparse, "sparse.json"), want);
            let geth = genesis_for(ExecutionKind::Geth, &sparse);
            let blobs = fork != "shanghai" && fork != "paris";
            assert_eq!(geth != sparse, blobs, "Geth's file completes the schedule");
            assert_eq!(geth["config"]["blobSchedule"]["cancun"].is_object(), blobs);
            for kind in [
                ExecutionKind::Reth,
                ExecutionKind::Geth,
                ExecutionKind::Erigon,
            ] {
                let g = genesis_for(kind, &network);
                assert_eq!(hash(&g, &genesis_file(kind)), want, "{kind:?} under {fork}");
                assert_eq!(
                    hash(&genesis_for(kind, &sparse), "s2.json"),
                    want,
                    "{kind:?}"
                );
                if kind != ExecutionKind::Geth {
                    assert_eq!(g, network, "{kind:?} reads the network genesis as it is");
                }
                // What every client needs: TTD 0 (Paris at genesis) and an explicit
                // deposit contract (Reth would otherwise use mainnet's).
                assert_eq!(g["config"]["terminalTotalDifficulty"], 0, "{kind:?}");
                assert!(
                    g["config"]["depositContractAddress"].is_string(),
                    "{kind:?}"
                );
            }
        }
    }

    /// Geth refuses a genesis whose blobSchedule lacks an active fork; its file gets every
    /// entry, without changing the chain.
    #[test]
    fn geths_genesis_has_a_blob_schedule_entry_for_every_active_fork() {
        let mut g = serde_json::json!({
            "config": {"chainId": 1, "cancunTime": 0, "pragueTime": 0, "osakaTime": 0,
                       "blobSchedule": {"cancun": {"target": 1, "max": 2, "baseFeeUpdateFraction": 3}}}
        });
        crate::network::complete_blob_schedule(&mut g);
        let s = &g["config"]["blobSchedule"];
        assert_eq!(s["cancun"]["target"], 1, "an entry given is kept");
        assert_eq!(s["prague"]["max"], 9);
        assert_eq!(s["osaka"]["baseFeeUpdateFraction"], 5007716);
        let mut no_osaka = serde_json::json!({"config": {"cancunTime": 0, "pragueTime": 0}});
        crate::network::complete_blob_schedule(&mut no_osaka);
        assert!(no_osaka["config"]["blobSchedule"]["osaka"].is_null());
        assert_eq!(no_osaka["config"]["blobSchedule"]["cancun"]["max"], 6);
    }
}
