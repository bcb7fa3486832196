//! `chainctl node consensus --home DIR`: a validator. `DIR/config.json` says where its key,
//! the network genesis and its execution clients are; chainctl writes all of it at `up`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use malachitebft_app_channel::app::config::{
    ConsensusConfig, P2pConfig, TimeoutConfig, ValuePayload, ValueSyncConfig,
};
use malachitebft_app_channel::app::events::{RxEvent, TxEvent};
use malachitebft_app_channel::app::node::{EngineHandle, Node, NodeConfig, NodeHandle};
use malachitebft_app_channel::app::types::Keypair;
use malachitebft_signing_ed25519::{PrivateKey, PublicKey};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::app::{App, Control, Report};
use super::codec::WireCodec;
use super::el::El;
use super::signing::Signer;
use super::store::Store;
use super::types::{Address, Ctx, Genesis};
pub use chainctl_common::validator::NodeFile;

/// Arguments of `chainctl node consensus`.
#[derive(Debug, Args)]
pub struct ConsensusArgs {
    /// The validator's home: config.json, and where it keeps its WAL and decided blocks.
    #[arg(long, value_name = "DIR")]
    pub home: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct MalachiteConfig {
    moniker: String,
    consensus: ConsensusConfig,
    value_sync: ValueSyncConfig,
}

impl NodeConfig for MalachiteConfig {
    fn moniker(&self) -> &str {
        &self.moniker
    }
    fn consensus(&self) -> &ConsensusConfig {
        &self.consensus
    }
    fn value_sync(&self) -> &ValueSyncConfig {
        &self.value_sync
    }
}

struct Validator {
    home: PathBuf,
    key: PrivateKey,
    config: MalachiteConfig,
    genesis: Genesis,
    domain: alloy_primitives::B256,
    /// See [`chainctl_common::validator::SignFloor`].
    sign_floor: u64,
}

struct Handle {
    engine: EngineHandle,
    events: TxEvent<Ctx>,
}

#[async_trait]
impl NodeHandle<Ctx> for Handle {
    fn subscribe(&self) -> RxEvent<Ctx> {
        self.events.subscribe()
    }
    async fn kill(&self, _reason: Option<String>) -> eyre::Result<()> {
        self.engine.actor.kill_and_wait(None).await?;
        self.engine.handle.abort();
        Ok(())
    }
}

#[async_trait]
impl Node for Validator {
    type Context = Ctx;
    type Config = MalachiteConfig;
    type Genesis = Genesis;
    type PrivateKeyFile = PrivateKey;
    type SigningProvider = Signer;
    type NodeHandle = Handle;

    // Malachite's `start_engine` (called by `main`, which owns the application channels)
    // uses only the key, address, signing and home-dir methods below; a node that starts
    // itself has no application to answer consensus, so these refuse.
    async fn start(&self) -> eyre::Result<Handle> {
        eyre::bail!("a validator is started by `chainctl node consensus --home DIR`")
    }

    async fn run(self) -> eyre::Result<()> {
        eyre::bail!("a validator is started by `chainctl node consensus --home DIR`")
    }

    fn get_home_dir(&self) -> PathBuf {
        self.home.clone()
    }

    fn load_config(&self) -> eyre::Result<MalachiteConfig> {
        Ok(self.config.clone())
    }

    fn get_address(&self, pk: &PublicKey) -> Address {
        Address::of(pk)
    }

    fn get_public_key(&self, sk: &PrivateKey) -> PublicKey {
        sk.public_key()
    }

    fn get_keypair(&self, sk: PrivateKey) -> Keypair {
        Keypair::ed25519_from_bytes(sk.inner().to_bytes()).expect("a 32-byte ed25519 secret")
    }

    fn load_private_key(&self, file: PrivateKey) -> PrivateKey {
        file
    }

    fn load_private_key_file(&self) -> eyre::Result<PrivateKey> {
        // Read and permission-checked by `main` before the engine starts.
        Ok(self.key.clone())
    }

    fn load_genesis(&self) -> eyre::Result<Genesis> {
        Ok(self.genesis.clone())
    }

    fn get_signing_provider(&self, sk: PrivateKey) -> Signer {
        Signer {
            key: sk,
            domain: self.domain,
            floor: self.sign_floor,
        }
    }
}

/// Malachite timeouts for a block time: the proposer waits up to one block time for its
/// slot, so the propose timeout covers that plus building and streaming.
fn timeouts(block_time: u64) -> TimeoutConfig {
    TimeoutConfig {
        timeout_propose: Duration::from_secs(block_time + 2),
        timeout_propose_delta: Duration::from_millis(500),
        timeout_prevote: Duration::from_secs(1),
        timeout_prevote_delta: Duration::from_millis(500),
        timeout_precommit: Duration::from_secs(1),
        timeout_precommit_delta: Duration::from_millis(500),
        ..TimeoutConfig::default()
    }
}

fn multiaddr(hostport: &str) -> Result<String, String> {
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| format!("peer `{hostport}`: expected host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("peer `{hostport}`: `{port}` is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => format!("/ip4/{a}/tcp/{port}"),
        Ok(std::net::IpAddr::V6(a)) => format!("/ip6/{a}/tcp/{port}"),
        Err(_) => format!("/dns/{host}/tcp/{port}"),
    })
}

/// Entry point of `chainctl node consensus`.
pub fn run(args: ConsensusArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match rt.block_on(main(args)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("chainctl node consensus: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn main(args: ConsensusArgs) -> Result<(), String> {
    let cfg_path = args.home.join("config.json");
    let file = NodeFile::load(&cfg_path)?;
    let gtext = std::fs::read_to_string(&file.genesis)
        .map_err(|e| format!("genesis {}: {e}", file.genesis.display()))?;
    let genesis: Genesis = serde_json::from_str(&gtext)
        .map_err(|e| format!("genesis {}: {e}", file.genesis.display()))?;
    let set = super::types::validator_set(&genesis)
        .map_err(|e| format!("genesis {}: {e}", file.genesis.display()))?;
    let key = PrivateKey::from(chainctl_common::validator::read_key(&file.key)?);
    let me = Address::of(&key.public_key());
    if !set.0.iter().any(|v| v.address == me) {
        return Err(format!(
            "validator key {} (address {me}) is not in the validator set of genesis {}; \
             use the key chainctl generated for this validator, or regenerate the genesis",
            file.key.display(),
            file.genesis.display()
        ));
    }
    let domain = genesis.hash();
    check_peers_genesis(&file.peer_status, domain, &file.genesis).await?;
    let control_token = chainctl_common::secrets::JwtSecret::read(&file.control_token)
        .map_err(|e| e.to_string())?
        .to_hex();
    let mut els = Vec::new();
    for c in &file.execution {
        els.push(
            El::new(c, file.engine_timeouts)
                .map_err(|e| format!("{}: execution {}: {e}", cfg_path.display(), c.name))?,
        );
    }
    let listen = multiaddr(&format!("{}:{}", file.p2p_host, file.p2p_port))?;
    let mut peers = Vec::new();
    for p in &file.peers {
        peers.push(
            multiaddr(p)?
                .parse()
                .map_err(|e| format!("peer `{p}`: {e}"))?,
        );
    }
    let consensus = ConsensusConfig {
        timeouts: timeouts(genesis.block_time_secs),
        value_payload: ValuePayload::PartsOnly,
        queue_capacity: 0,
        p2p: P2pConfig {
            listen_addr: listen.parse().map_err(|e| format!("p2p {listen}: {e}"))?,
            persistent_peers: peers,
            ..Default::default()
        },
    };
    let value_sync = ValueSyncConfig {
        status_update_interval: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        ..ValueSyncConfig::default()
    };
    let config = MalachiteConfig {
        moniker: file.moniker.clone(),
        consensus,
        value_sync,
    };
    let store = Store::open(&args.home.join("decided.log"))?;
    let sign_floor = chainctl_common::validator::SignFloor::read(&args.home)?;
    if let Some(f) = &sign_floor {
        tracing::warn!(height = f.height, reason = %f.reason, "signing floor: no vote or proposal at or below this height");
    }
    let sign_floor = sign_floor.map_or(0, |f| f.height);
    // Refuse early, with the port named, rather than wait forever for a listener that
    // cannot bind (Malachite never reports ready then).
    std::net::TcpListener::bind((file.p2p_host.as_str(), file.p2p_port)).map_err(|e| {
        format!(
            "p2p port {}:{} cannot be bound: {e}; another process holds it (see `chainctl ports --check`)",
            file.p2p_host, file.p2p_port
        )
    })?;
    let report = Arc::new(Mutex::new(Report::default()));
    let report_for_watchdog = report.clone();
    let (control_tx, control_rx) = mpsc::channel(8);
    let status = tokio::net::TcpListener::bind(file.status_addr)
        .await
        .map_err(|e| format!("status address {}: {e}", file.status_addr))?;
    let router = Router::new()
        .route("/status", get(status_handler))
        .route("/failover", post(failover_handler))
        .with_state(Api {
            report: report.clone(),
            control: control_tx,
            token: Arc::new(control_token),
        });
    tokio::spawn(async move {
        let _ = axum::serve(status, router).await;
    });
    // Under systemd (`Type=notify`): ready once the status endpoint serves.
    chainctl_common::sdnotify::ready();
    let node = Validator {
        home: args.home.clone(),
        key: key.clone(),
        config: config.clone(),
        genesis: genesis.clone(),
        domain,
        sign_floor,
    };
    let ctx = Ctx { domain };
    let (channels, engine) = malachitebft_app_channel::start_engine(
        ctx.clone(),
        node,
        config,
        WireCodec,
        WireCodec,
        None,
        set.clone(),
    )
    .await
    .map_err(|e| format!("starting consensus: {e}"))?;
    tracing::info!(moniker = %file.moniker, address = %me, genesis = %domain, "validator started");
    let app = App::new(
        ctx,
        set,
        me,
        key,
        genesis,
        file.fee_recipient,
        els,
        store,
        report,
        file.moniker.clone(),
    )
    .with_sign_floor(sign_floor);
    tokio::spawn(watchdog(report_for_watchdog, file.peer_status.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let result = tokio::select! {
        r = app.run(channels, control_rx) => r.map_err(|e| e.to_string()),
        _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Ok(()) }
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    let _ = engine.actor.kill_and_wait(None).await;
    engine.handle.abort();
    result
}

/// Refuse to start when a reachable peer runs from another consensus genesis: its votes
/// would never verify against ours (every signature is bound to the genesis hash), so
/// the two could only fail to agree. Peers that are not up yet are not waited for.
async fn check_peers_genesis(
    peers: &[String],
    ours: alloy_primitives::B256,
    path: &Path,
) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    for p in peers {
        let Ok(r) = http.get(format!("http://{p}/status")).send().await else {
            continue;
        };
        let Ok(v) = r.json::<serde_json::Value>().await else {
            continue;
        };
        let Some(theirs) = v["genesis_hash"].as_str() else {
            continue;
        };
        // A peer still starting reports no genesis yet (all zeros): not a mismatch.
        if theirs.parse::<alloy_primitives::B256>().ok() == Some(alloy_primitives::B256::ZERO) {
            continue;
        }
        if theirs.parse::<alloy_primitives::B256>().ok() != Some(ours) {
            return Err(format!(
                "genesis {} (hash {ours}) does not match the genesis of the validator at {p} \
                 (hash {theirs}): every validator must start from the same consensus genesis file; \
                 copy the network's consensus-genesis.json here or fix the validator at {p}",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Exit code of a validator that restarts itself to reconnect.
pub const EXIT_ISOLATED: u8 = 75;

/// Malachite 0.5 dials its persistent peers only at start: a connection lost while a
/// peer was unreachable (frozen, partitioned) is never re-established. When this node
/// has decided nothing for a while but its peers' status endpoints show the network
/// moving on, it is cut off: it exits so its supervisor restarts it, which dials every
/// peer again (it then resumes from its WAL and decided-block log, and syncs). A network
/// that is halted as a whole (no quorum) does not trigger it.
///
/// Two ways to be cut off, checked every second:
/// - **left behind**: running for [`Watch::WARMED_UP`], nothing decided for
///   [`Watch::BEHIND_QUIET`], and a peer's status endpoint answering more than 2 heights
///   ahead, on two checks in a row with no decision between — the network can be reached
///   again but consensus and sync do not resume over what is left of our connections (a
///   healed partition: peers dial us again, yet nothing arrives): exit a couple of
///   seconds after the partition ends;
/// - **stuck**: nothing decided for [`Watch::STALL`] while peers are ahead, or, after
///   [`Watch::WARMED_UP`], for [`Watch::QUORUM_STALL`] by anyone while a quorum answers —
///   exit on the second such check 5 s apart.
async fn watchdog(report: Arc<Mutex<Report>>, peers: Vec<String>) {
    if peers.is_empty() {
        return;
    }
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
    {
        Ok(c) => c,
        Err(_) => return,
    };
    let started = std::time::Instant::now();
    let mut watch = Watch::default();
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        let (ours, last_ms) = {
            let r = report.lock().unwrap_or_else(|e| e.into_inner());
            (r.decided_blocks, r.last_decided_at_ms)
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let quiet = match last_ms {
            Some(t) => Duration::from_millis(now_ms.saturating_sub(t)),
            None => started.elapsed(),
        };
        let connected = connected_peers();
        let slow_turn = tick.is_multiple_of(5);
        if !Watch::worth_asking(quiet, started.elapsed(), slow_turn) {
            watch.calm(quiet);
            continue;
        }
        let mut best = 0u64;
        let mut answering = 0usize;
        for p in &peers {
            let url = format!("http://{p}/status");
            if let Ok(r) = http.get(&url).send().await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    answering += 1;
                    best = best.max(v["decided_blocks"].as_u64().unwrap_or(0));
                }
            }
        }
        let seen = Seen {
            ours,
            quiet,
            uptime: started.elapsed(),
            peers: peers.len(),
            answering,
            best,
        };
        match watch.judge(&seen, slow_turn) {
            Verdict::Fine => {}
            Verdict::Suspect(why) => {
                tracing::warn!(ours, peers_at = best, connected, "{why}: checking again")
            }
            Verdict::CutOff(why) => {
                tracing::error!(
                    ours,
                    peers_at = best,
                    peers_answering = answering,
                    connected,
                    "cut off ({why}); exiting so the supervisor restarts this validator and it dials its peers again"
                );
                std::process::exit(EXIT_ISOLATED as i32);
            }
        }
    }
}

/// What the watchdog saw in one check.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Blocks we decided.
    ours: u64,
    /// Since our last decision (or the start).
    quiet: Duration,
    /// Since this process started.
    uptime: Duration,
    peers: usize,
    /// Peers whose status endpoint answered, and the most blocks one of them decided.
    answering: usize,
    best: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Fine,
    Suspect(&'static str),
    CutOff(&'static str),
}

/// The watchdog's memory between checks: a suspicion is confirmed by the next check of
/// the same kind with still no decision.
#[derive(Debug, Default)]
struct Watch {
    /// Left behind, at this many decided blocks.
    behind: Option<u64>,
    /// Stuck, at this many decided blocks.
    stuck: Option<u64>,
}

impl Watch {
    /// Nothing decided for this long while peers are ahead: stuck.
    const STALL: Duration = Duration::from_secs(15);
    /// Nothing decided for this long while peers are ahead: worth a closer look. A
    /// connected validator that falls behind syncs well within it (each synced height is a
    /// decision).
    const BEHIND_QUIET: Duration = Duration::from_secs(4);
    /// Nothing decided for this long by anyone while a quorum answers: stuck as a whole.
    const QUORUM_STALL: Duration = Duration::from_secs(10);
    /// The left-behind rule waits this long after a start: a fresh process that cannot
    /// decide yet (its execution client still starting) must not exit into a crash loop.
    const WARMED_UP: Duration = Duration::from_secs(20);

    /// Whether this check needs the peers' status (an HTTP round to each).
    fn worth_asking(quiet: Duration, uptime: Duration, slow_turn: bool) -> bool {
        (quiet >= Self::BEHIND_QUIET && uptime >= Self::WARMED_UP)
            || (slow_turn && quiet >= Self::QUORUM_STALL)
    }

    /// Nothing worth asking the peers about now: a decision came. A stuck suspicion
    /// (judged on slow turns) lasts while the stall does.
    fn calm(&mut self, quiet: Duration) {
        self.behind = None;
        if quiet < Self::QUORUM_STALL {
            self.stuck = None;
        }
    }

    fn judge(&mut self, s: &Seen, slow_turn: bool) -> Verdict {
        let ahead = s.answering > 0 && s.best > s.ours + 2;
        if s.quiet >= Self::BEHIND_QUIET && s.uptime >= Self::WARMED_UP && ahead {
            const WHY: &str = "the other validators decide and we neither decide nor sync";
            if self.behind == Some(s.ours) {
                return Verdict::CutOff(WHY);
            }
            self.behind = Some(s.ours);
            return Verdict::Suspect(WHY);
        }
        self.behind = None;
        if !slow_turn {
            return Verdict::Fine;
        }
        // Nobody ahead: the whole network is stuck. With a quorum of validators up (we
        // and 2f others answer), that means their connections carry nothing (a validator
        // frozen past the transport's timeouts is never dialled again; one that came back
        // while the others still held dead connections to it gets no gossip): restart to
        // dial every peer again. Without a quorum up, it is a real halt: wait. A fresh
        // process (all restarted at once, execution clients still starting) waits too.
        let n = s.peers + 1;
        let quorum_up = 3 * (s.answering + 1) > 2 * n;
        let stuck_behind = s.quiet >= Self::STALL && ahead;
        let stuck_all = s.quiet >= Self::QUORUM_STALL && quorum_up && s.uptime >= Self::WARMED_UP;
        if !(stuck_behind || stuck_all) {
            self.stuck = None;
            return Verdict::Fine;
        }
        if self.stuck == Some(s.ours) {
            return Verdict::CutOff(
                "the other validators decide and we do not, or a quorum is up and nothing was decided for 10 s",
            );
        }
        self.stuck = Some(s.ours);
        Verdict::Suspect("no decision while the other validators decide")
    }
}

#[derive(Clone)]
struct Api {
    report: Arc<Mutex<Report>>,
    control: mpsc::Sender<Control>,
    token: Arc<String>,
}

async fn status_handler(State(api): State<Api>) -> Json<Report> {
    let mut r = api.report.lock().unwrap_or_else(|e| e.into_inner()).clone();
    r.peers = connected_peers();
    Json(r)
}

/// The peers Malachite's consensus actor counts as connected. Malachite 0.5 gives the
/// application no call for it, but keeps it as a gauge in its metrics registry (one
/// engine per process, so one series).
fn connected_peers() -> Option<u64> {
    let mut text = String::new();
    malachitebft_app_channel::app::metrics::export(&mut text);
    connected_peers_in(&text)
}

/// The `connected_peers` gauge of a Prometheus text exposition.
fn connected_peers_in(text: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split(['{', ' '])
                .next()
                .is_some_and(|name| name.ends_with("_connected_peers"))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v.max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::{Seen, Verdict, Watch};
    use std::time::Duration;

    fn seen(ours: u64, quiet: u64, uptime: u64, answering: usize, best: u64) -> Seen {
        Seen {
            ours,
            quiet: Duration::from_secs(quiet),
            uptime: Duration::from_secs(uptime),
            peers: 3,
            answering,
            best,
        }
    }

    #[test]
    fn a_healed_partition_is_seen_within_two_checks_and_a_fresh_or_halted_node_is_left_alone() {
        let s = Duration::from_secs;
        let mut w = Watch::default();
        // Cut off (the partition itself): worth asking, nobody answers — wait.
        assert!(Watch::worth_asking(s(5), s(60), false));
        assert_eq!(w.judge(&seen(28, 5, 60, 0, 0), false), Verdict::Fine);
        // Healed: peers answer ahead and we neither decide nor sync: suspect, then cut off
        // on the next check one second later (not after a 15 s stall).
        assert!(matches!(
            w.judge(&seen(28, 9, 64, 3, 39), false),
            Verdict::Suspect(_)
        ));
        assert!(matches!(
            w.judge(&seen(28, 10, 65, 3, 40), false),
            Verdict::CutOff(_)
        ));
        // Syncing in between (a resumed pause): a new decision clears the suspicion.
        let mut w = Watch::default();
        assert!(matches!(
            w.judge(&seen(28, 5, 60, 3, 39), false),
            Verdict::Suspect(_)
        ));
        assert!(matches!(
            w.judge(&seen(33, 4, 61, 3, 39), false),
            Verdict::Suspect(_)
        ));
        // Deciding along with the others: never asked.
        assert!(!Watch::worth_asking(
            Duration::from_millis(900),
            s(60),
            false
        ));
        w.calm(Duration::from_millis(900));
        assert!(matches!(
            w.judge(&seen(36, 5, 66, 3, 45), false),
            Verdict::Suspect(_)
        ));
        // A fresh process behind (its execution client still starting): the left-behind
        // rule waits until it has run 20 s; the stuck rule waits for its 15 s stall.
        let mut w = Watch::default();
        assert!(!Watch::worth_asking(s(8), s(8), false));
        assert_eq!(w.judge(&seen(28, 8, 8, 3, 39), false), Verdict::Fine);
        assert!(matches!(
            w.judge(&seen(28, 16, 16, 3, 39), true),
            Verdict::Suspect(_)
        ));
        assert!(matches!(
            w.judge(&seen(28, 19, 19, 3, 42), false),
            Verdict::Fine
        ));
        assert!(matches!(
            w.judge(&seen(28, 21, 21, 3, 44), true),
            Verdict::Suspect(_)
        ));
        // Everyone stuck with a quorum answering (dead connections): out after 10 s and a
        // second look, once warmed up.
        let mut w = Watch::default();
        assert!(Watch::worth_asking(s(10), s(99), true));
        assert!(matches!(
            w.judge(&seen(49, 10, 99, 3, 49), true),
            Verdict::Suspect(_)
        ));
        assert!(matches!(
            w.judge(&seen(49, 15, 104, 3, 49), true),
            Verdict::CutOff(_)
        ));
        let mut w = Watch::default();
        for q in [10, 15] {
            assert_eq!(
                w.judge(&seen(49, q, q, 3, 49), true),
                Verdict::Fine,
                "fresh"
            );
        }
        // A halted network (nobody ahead, no quorum answering): never cut off.
        let mut w = Watch::default();
        for q in [16, 21, 26, 31, 36] {
            assert_eq!(w.judge(&seen(28, q, 99, 1, 28), true), Verdict::Fine);
        }
    }

    #[test]
    fn reads_the_connected_peers_gauge() {
        let text = "# HELP malachitebft_core_consensus_connected_peers Number of connected peers\n\
                    # TYPE malachitebft_core_consensus_connected_peers gauge\n\
                    malachitebft_core_consensus_height{moniker=\"val-0\"} 12\n\
                    malachitebft_core_consensus_connected_peers{moniker=\"val-0\"} 3\n";
        assert_eq!(super::connected_peers_in(text), Some(3));
        assert_eq!(super::connected_peers_in("x_height 1\n"), None);
    }
}

#[derive(Deserialize)]
struct FailoverReq {
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

async fn failover_handler(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Option<Json<FailoverReq>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| {
            chainctl_common::secrets::constant_time_eq(t.trim().as_bytes(), api.token.as_bytes())
        });
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                serde_json::json!({"error": "missing or wrong bearer token (the validator's control.token)"}),
            ),
        );
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (to, kind, reason) = match body {
        Some(Json(b)) => (b.to, b.kind, b.reason),
        None => (None, None, None),
    };
    if api
        .control
        .send(Control::Failover {
            to,
            kind,
            reason,
            reply: tx,
        })
        .await
        .is_err()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "the validator is stopping"})),
        );
    }
    match rx.await {
        Ok(Ok(active)) => (StatusCode::OK, Json(serde_json::json!({"active": active}))),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": e})),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "the validator is stopping"})),
        ),
    }
}
