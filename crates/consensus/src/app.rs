//! The application side of a validator: answers Malachite's messages by driving the
//! validator's execution clients through the Engine API.
//!
//! - Proposing: at the slot (parent timestamp + block time) the active EL builds a payload
//!   (`forkchoiceUpdated` with attributes, then `getPayload`); it is streamed to the other
//!   validators as signed parts. If the active EL fails, the next one builds, in the same round.
//! - Voting: a proposal is valid only if it extends our last decided block and our ELs
//!   answer VALID to `newPayload`. VALID from one EL and INVALID from another is a
//!   consensus violation: no vote for it, an error in the log, a counter in the status.
//! - Deciding: every EL gets `newPayload` + `forkchoiceUpdated(head = safe = finalized)`;
//!   the decision is fsync'd to the decided-block log before the next height starts.
//!   An EL that answers SYNCING is replayed the stored blocks it misses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chainctl_common::time::now_ms;

use alloy_primitives::{keccak256, Address as EthAddress, B256};
use bytes::Bytes;
use malachitebft_app_channel::app::consensus::ProposedValue;
use malachitebft_app_channel::app::engine::host::Next;
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::core::{
    CommitCertificate, Context as _, Round, Validity,
};
use malachitebft_app_channel::app::types::sync::RawDecidedValue;
use malachitebft_app_channel::app::types::{LocallyProposedValue, PeerId};
use malachitebft_app_channel::{AppMsg, Channels, NetworkMsg};
use malachitebft_signing_ed25519::PrivateKey;
use serde::Serialize;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::el::{El, ElError, EngineFork, PayloadStatus};
use super::signing::parts_digest;
use super::store::{Decided, Store};
use super::types::{Address, BlockHash, Ctx, Genesis, Height, ProposalPart, ValidatorSet, Value};
use chainctl_common::validator::ForkTimes;

/// Largest data chunk of a streamed proposal (gossip messages are capped at 4 MiB).
const CHUNK: usize = 512 * 1024;
/// How far in the future a proposed block's timestamp may be.
const MAX_FUTURE_SECS: u64 = 15;
/// Partial streams kept at once (a peer cannot make us buffer without bound).
const MAX_STREAMS: usize = 64;

/// The last decided block (or the execution genesis).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Head {
    pub height: u64,
    pub hash: B256,
    pub timestamp: u64,
}

/// What an EL's last answer said about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ElState {
    /// No call answered yet.
    #[default]
    Unknown,
    /// Answered VALID.
    Ok,
    /// Answered SYNCING (or ACCEPTED): it lacks blocks.
    Syncing,
    /// Answered INVALID to a block.
    Invalid,
    /// Answered with a JSON-RPC error.
    Error,
    /// Did not answer (refused, reset, timed out).
    Unreachable,
}

impl std::fmt::Display for ElState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ElState::Unknown => "unknown",
            ElState::Ok => "ok",
            ElState::Syncing => "syncing",
            ElState::Invalid => "invalid",
            ElState::Error => "error",
            ElState::Unreachable => "unreachable",
        })
    }
}

/// State of one EL as the validator sees it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ElReport {
    pub name: String,
    pub active: bool,
    pub state: ElState,
    pub last_error: Option<String>,
    /// Highest decided height this EL accepted as its head.
    pub head: u64,
}

/// What `/status` shows.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub moniker: String,
    pub address: String,
    pub genesis_hash: B256,
    pub height: u64,
    pub round: i64,
    pub last_decided: Option<Head>,
    /// Unix time (ms) of the last decision.
    pub last_decided_at_ms: Option<u64>,
    pub active_el: String,
    pub els: Vec<ElReport>,
    pub el_switches: u64,
    pub consensus_violations: u64,
    pub proposals_built: u64,
    pub decided_blocks: u64,
    pub validators: usize,
    /// Other validators this one is connected to, as Malachite's consensus counts them
    /// (none when Malachite has not reported yet).
    pub peers: Option<u64>,
    /// Every EL switch: when, from, to, why.
    pub switch_log: Vec<Switch>,
}

pub use chainctl_common::validator::Switch;

/// Requests from the control endpoint.
pub enum Control {
    /// Make this EL the active one.
    Failover {
        to: Option<String>,
        /// Short cause (`forced` when none is given).
        kind: Option<String>,
        reason: Option<String>,
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
}

struct Partial {
    parts: BTreeMap<u64, StreamContent<ProposalPart>>,
    fin: Option<u64>,
    bytes: usize,
    first_seen: Instant,
}

/// The validator application.
pub struct App {
    ctx: Ctx,
    set: ValidatorSet,
    me: Address,
    key: PrivateKey,
    genesis: Genesis,
    fee_recipient: EthAddress,
    els: Vec<El>,
    el_reports: Vec<ElReport>,
    active: usize,
    /// When the execution chain's forks activate: every Engine API call takes the
    /// version of its block's fork.
    forks: ForkTimes,
    /// No proposal at or below this height ([`chainctl_common::validator::SignFloor`]).
    sign_floor: u64,
    store: Store,
    head: Head,
    height: Height,
    round: Round,
    /// Values we can vote on or decide, by height.
    undecided: BTreeMap<u64, Vec<ProposedValue<Ctx>>>,
    /// Whole, authenticated proposals for heights we have not reached yet.
    pending: BTreeMap<u64, Vec<ProposedValue<Ctx>>>,
    streams: BTreeMap<(PeerId, StreamId), Partial>,
    report: Arc<Mutex<Report>>,
    fault: Option<super::fault::Fault>,
    /// When consensus became ready: the first proposal waits for peers to connect.
    ready_at: Option<Instant>,
    /// (block, EL) pairs of this height where the EL already holds the block (it built it
    /// or answered VALID): at the decision they need only the forkchoice update.
    holding: Vec<(B256, usize)>,
}

/// How long the other execution clients get once one has answered VALID.
const STRAGGLER_GRACE: Duration = Duration::from_secs(1);

/// One call per execution client, all at once. Once one has answered VALID the others get
/// [`STRAGGLER_GRACE`] more: a frozen or overloaded client must not hold the validator up
/// for its whole Engine API timeout when another already has the block. A client cut off
/// counts as not answering (it is switched away from if active, and caught up later).
async fn all_with_grace<F>(
    els: &[El],
    method: &str,
    futs: Vec<F>,
) -> Vec<Result<PayloadStatus, ElError>>
where
    F: std::future::Future<Output = Result<PayloadStatus, ElError>>,
{
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut out: Vec<Option<Result<PayloadStatus, ElError>>> = futs.iter().map(|_| None).collect();
    let mut pending: FuturesUnordered<_> = futs
        .into_iter()
        .enumerate()
        .map(|(i, f)| async move { (i, f.await) })
        .collect();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = match deadline {
            None => pending.next().await,
            Some(d) => match tokio::time::timeout_at(d, pending.next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
        };
        let Some((i, r)) = next else { break };
        if deadline.is_none() && matches!(&r, Ok(s) if s.is_valid()) {
            deadline = Some(tokio::time::Instant::now() + STRAGGLER_GRACE);
        }
        out[i] = Some(r);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| {
                Err(ElError::Timeout {
                    el: els[i].name.clone(),
                    method: format!("{method} (another client answered VALID)"),
                    timeout: STRAGGLER_GRACE,
                })
            })
        })
        .collect()
}

/// Fields of a payload we check before asking an EL.
struct PayloadHeader {
    hash: B256,
    number: u64,
    parent: B256,
    timestamp: u64,
}

fn hex_u64(v: &Json) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.strip_prefix("0x")?, 16).ok()
}

fn header_of(params: &Json) -> Result<PayloadHeader, String> {
    let p = params
        .get(0)
        .ok_or("params[0] (the execution payload) is missing")?;
    let field = |k: &str| p.get(k).ok_or(format!("payload field {k} is missing"));
    let b256 = |k: &str| -> Result<B256, String> {
        serde_json::from_value(field(k)?.clone()).map_err(|e| format!("payload {k}: {e}"))
    };
    Ok(PayloadHeader {
        hash: b256("blockHash")?,
        parent: b256("parentHash")?,
        number: hex_u64(field("blockNumber")?)
            .ok_or("payload blockNumber is not a hex quantity")?,
        timestamp: hex_u64(field("timestamp")?).ok_or("payload timestamp is not a hex quantity")?,
    })
}

/// A synced value is the block of its height: its params form a payload whose hash is the
/// value id and whose number is the height.
fn synced_block_matches(height: Height, value: &Value) -> Result<(), String> {
    let params: Json = serde_json::from_slice(&value.params).map_err(|e| e.to_string())?;
    let ph = header_of(&params)?;
    if ph.hash != value.id.0 {
        return Err(format!(
            "value id {} is not its block hash {}",
            value.id, ph.hash
        ));
    }
    if ph.number != height.0 {
        return Err(format!(
            "block {} synced for height {}",
            ph.number, height.0
        ));
    }
    Ok(())
}

impl App {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: Ctx,
        set: ValidatorSet,
        me: Address,
        key: PrivateKey,
        genesis: Genesis,
        fee_recipient: EthAddress,
        els: Vec<El>,
        store: Store,
        report: Arc<Mutex<Report>>,
        moniker: String,
    ) -> Self {
        let el_reports = els
            .iter()
            .enumerate()
            .map(|(i, e)| ElReport {
                name: e.name.clone(),
                active: i == 0,
                ..Default::default()
            })
            .collect();
        let fault = super::fault::from_env(&moniker);
        let forks = genesis.fork_times();
        let head = Head {
            height: 0,
            hash: genesis.execution_genesis_hash,
            timestamp: genesis.genesis_time,
        };
        {
            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
            r.moniker = moniker;
            r.address = me.to_string();
            r.genesis_hash = genesis.hash();
            r.validators = set.0.len();
        }
        App {
            ctx,
            set,
            me,
            key,
            genesis,
            fee_recipient,
            els,
            el_reports,
            active: 0,
            forks,
            sign_floor: 0,
            store,
            head,
            height: Height(0),
            round: Round::Nil,
            undecided: BTreeMap::new(),
            pending: BTreeMap::new(),
            fault,
            ready_at: None,
            holding: Vec::new(),
            streams: BTreeMap::new(),
            report,
        }
    }

    /// Propose nothing at or below `floor` (a restored validator's signing floor).
    pub fn with_sign_floor(mut self, floor: u64) -> Self {
        self.sign_floor = floor;
        self
    }

    fn publish_report(&self) {
        let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
        r.height = self.height.0;
        r.round = self.round.as_i64();
        r.last_decided = (self.head.height > 0).then_some(self.head);
        r.decided_blocks = self.head.height;
        r.active_el = self.els[self.active].name.clone();
        r.els = self.el_reports.clone();
    }

    fn note_el(&mut self, i: usize, result: Result<&PayloadStatus, &ElError>) {
        let r = &mut self.el_reports[i];
        match result {
            Ok(s) if s.is_valid() => {
                r.state = ElState::Ok;
                r.last_error = None;
            }
            Ok(s) if s.is_invalid() => {
                r.state = ElState::Invalid;
                r.last_error = s.validation_error.clone();
            }
            Ok(_) => r.state = ElState::Syncing,
            Err(e) => {
                r.state = match e {
                    ElError::Rpc { .. } => ElState::Error,
                    _ => ElState::Unreachable,
                };
                r.last_error = Some(e.to_string());
            }
        }
    }

    fn switch_active(&mut self, to: usize, kind: &str, reason: String) {
        if to == self.active {
            return;
        }
        let from = self.els[self.active].name.clone();
        let to_name = self.els[to].name.clone();
        tracing::warn!(%from, to = %to_name, %reason, "switching the active execution client");
        self.el_reports[self.active].active = false;
        self.el_reports[to].active = true;
        self.active = to;
        let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
        r.el_switches += 1;
        r.switch_log.push(Switch {
            at_ms: now_ms(),
            from,
            to: to_name,
            kind: kind.to_string(),
            reason,
            gap_ms: None,
        });
        if r.switch_log.len() > 100 {
            r.switch_log.remove(0);
        }
    }

    /// The best other EL to switch to: healthy first, in configured order.
    fn next_el(&self) -> Option<usize> {
        let n = self.els.len();
        let order = (1..n).map(|k| (self.active + k) % n);
        order
            .clone()
            .find(|&i| self.el_reports[i].state == ElState::Ok)
            .or_else(|| {
                order
                    .clone()
                    .find(|&i| self.el_reports[i].state != ElState::Invalid)
            })
    }

    /// Run until consensus stops.
    pub async fn run(
        mut self,
        mut channels: Channels<Ctx>,
        mut control: mpsc::Receiver<Control>,
    ) -> eyre::Result<()> {
        self.recover_head()?;
        self.publish_report();
        loop {
            tokio::select! {
                msg = channels.consensus.recv() => {
                    let Some(msg) = msg else { break };
                    self.handle(msg, &channels.network).await;
                    self.publish_report();
                }
                Some(c) = control.recv() => {
                    match c {
                        Control::Failover { to, kind, reason, reply } => {
                            let _ = reply.send(self.force_failover(to, kind, reason));
                            self.publish_report();
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn force_failover(
        &mut self,
        to: Option<String>,
        kind: Option<String>,
        reason: Option<String>,
    ) -> Result<String, String> {
        let idx = match to {
            Some(name) => self
                .els
                .iter()
                .position(|e| e.name == name)
                .ok_or_else(|| {
                    format!(
                        "no execution client `{name}` on this validator (it has: {})",
                        self.els
                            .iter()
                            .map(|e| e.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?,
            None => self
                .next_el()
                .ok_or("this validator has only one execution client")?,
        };
        let kind = kind.unwrap_or_else(|| "forced".into());
        let reason = reason.unwrap_or_else(|| "forced through the control endpoint".into());
        self.switch_active(idx, &kind, reason);
        Ok(self.els[idx].name.clone())
    }

    /// The head is the last stored decision.
    fn recover_head(&mut self) -> eyre::Result<()> {
        if let Some(h) = self.store.last_height() {
            let d = self
                .store
                .get(h)
                .map_err(|e| eyre::eyre!(e))?
                .ok_or_else(|| eyre::eyre!("decided-block log lost height {h}"))?;
            let params: Json = serde_json::from_slice(&d.value.params)?;
            let ph = header_of(&params).map_err(|e| eyre::eyre!("stored height {h}: {e}"))?;
            self.head = Head {
                height: h.0,
                hash: ph.hash,
                timestamp: ph.timestamp,
            };
        }
        Ok(())
    }

    async fn handle(&mut self, msg: AppMsg<Ctx>, network: &mpsc::Sender<NetworkMsg<Ctx>>) {
        match msg {
            AppMsg::ConsensusReady { reply } => {
                for i in 0..self.els.len() {
                    self.catch_up(i).await;
                }
                let start = Height(self.head.height + 1);
                tracing::info!(height = start.0, head = %self.head.hash, "consensus ready");
                self.height = start;
                self.ready_at = Some(Instant::now());
                let _ = reply.send((start, self.set.clone()));
            }
            AppMsg::StartedRound {
                height,
                round,
                proposer,
                role,
                reply_value,
            } => {
                tracing::debug!(height = height.0, %round, %proposer, ?role, "round started");
                self.height = height;
                self.round = round;
                if let Some(pending) = self.pending.remove(&height.0) {
                    for mut pv in pending {
                        pv.validity = self.validate(height, &pv.value).await;
                        self.remember(pv);
                    }
                }
                let vals = self
                    .undecided
                    .get(&height.0)
                    .map(|v| v.iter().filter(|p| p.round == round).cloned().collect())
                    .unwrap_or_default();
                let _ = reply_value.send(vals);
            }
            AppMsg::GetValue {
                height,
                round,
                timeout,
                reply,
            } => {
                if height.0 <= self.sign_floor {
                    tracing::warn!(
                        height = height.0,
                        floor = self.sign_floor,
                        "not proposing at or below the signing floor"
                    );
                    return;
                }
                let existing = self.undecided.get(&height.0).and_then(|v| {
                    v.iter()
                        .find(|p| p.round == round && p.proposer == self.me)
                        .cloned()
                });
                let value = match existing {
                    Some(pv) => Some(pv.value),
                    None => self.build(height, timeout).await,
                };
                let Some(value) = value else {
                    // Dropping the reply lets the round time out and the next proposer try.
                    return;
                };
                let _ = reply.send(LocallyProposedValue::new(height, round, value.clone()));
                self.remember(ProposedValue {
                    height,
                    round,
                    valid_round: Round::Nil,
                    proposer: self.me,
                    value: value.clone(),
                    validity: Validity::Valid,
                });
                self.stream(network, height, round, Round::Nil, &value)
                    .await;
            }
            AppMsg::ExtendVote { reply, .. } => {
                let _ = reply.send(None);
            }
            AppMsg::VerifyVoteExtension { reply, .. } => {
                let _ = reply.send(Ok(()));
            }
            AppMsg::RestreamProposal {
                height,
                round,
                valid_round,
                value_id,
                ..
            } => {
                let found = self.undecided.get(&height.0).and_then(|v| {
                    v.iter()
                        .find(|p| p.value.id == value_id)
                        .map(|p| p.value.clone())
                });
                match found {
                    Some(value) => {
                        self.stream(network, height, round, valid_round, &value)
                            .await
                    }
                    None => {
                        tracing::warn!(height = height.0, %round, %value_id, "asked to re-stream a value we do not have")
                    }
                }
            }
            AppMsg::GetHistoryMinHeight { reply } => {
                let _ = reply.send(self.store.first_height().unwrap_or(Height(1)));
            }
            AppMsg::ReceivedProposalPart { from, part, reply } => {
                let done = self.received_part(from, part).await;
                let _ = reply.send(done);
            }
            AppMsg::GetValidatorSet { reply, .. } => {
                let _ = reply.send(Some(self.set.clone()));
            }
            AppMsg::Decided {
                certificate, reply, ..
            } => {
                let next = self.decided(certificate).await;
                let _ = reply.send(next);
            }
            AppMsg::GetDecidedValue { height, reply } => {
                let v = match self.store.raw(height) {
                    Ok(v) => v.map(|(b, c)| RawDecidedValue::new(b, c)),
                    Err(e) => {
                        tracing::error!(height = height.0, %e, "reading the decided-block log");
                        None
                    }
                };
                let _ = reply.send(v);
            }
            AppMsg::ProcessSyncedValue {
                height,
                round,
                proposer,
                value_bytes,
                reply,
            } => {
                let value = match super::codec::decode_value(&value_bytes) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(height = height.0, %e, "undecodable synced value");
                        let _ = reply.send(None);
                        return;
                    }
                };
                // A synced value comes with a commit certificate Malachite checks against
                // the validator set: the network decided it. It may arrive before the
                // heights below it are applied (sync fetches in parallel), so only its
                // form is checked here; the ELs execute it when it is applied, and one
                // that rejects a decided block is reported as a consensus violation.
                let validity = match synced_block_matches(height, &value) {
                    Ok(()) => Validity::Valid,
                    Err(why) => {
                        tracing::warn!(height = height.0, %why, "synced value does not match its height");
                        Validity::Invalid
                    }
                };
                let pv = ProposedValue {
                    height,
                    round,
                    valid_round: Round::Nil,
                    proposer,
                    value,
                    validity,
                };
                self.remember(pv.clone());
                let _ = reply.send(Some(pv));
            }
        }
    }

    fn remember(&mut self, pv: ProposedValue<Ctx>) {
        let v = self.undecided.entry(pv.height.0).or_default();
        if let Some(old) = v
            .iter_mut()
            .find(|p| p.round == pv.round && p.value.id == pv.value.id)
        {
            *old = pv;
        } else {
            v.push(pv);
        }
    }

    /// Build a payload on the active EL at the slot, failing over to the others.
    async fn build(&mut self, height: Height, timeout: Duration) -> Option<Value> {
        if height.0 != self.head.height + 1 {
            tracing::warn!(
                height = height.0,
                head = self.head.height,
                "asked to propose at a height that does not follow our head"
            );
            return None;
        }
        let started = Instant::now();
        let deadline = started + timeout.saturating_sub(Duration::from_millis(300));
        // Proposal parts published before the peers' connections are up are lost (and the
        // round times out): right after start, give the dials a moment.
        if let Some(ready) = self.ready_at {
            let grace = Duration::from_millis(1500).saturating_sub(ready.elapsed());
            if !grace.is_zero() {
                tokio::time::sleep(grace).await;
            }
        }
        // Wait for the slot: one block time after the parent, but leave time to build.
        let slot_ms = (self.head.timestamp + self.genesis.block_time_secs) * 1000;
        let now = now_ms();
        if slot_ms > now {
            let wait = Duration::from_millis(slot_ms - now);
            let latest = deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(Duration::from_millis(700));
            tokio::time::sleep(wait.min(latest)).await;
        }
        let timestamp = (now_ms() / 1000).max(self.head.timestamp + 1);
        let mut seed = b"chainctl/randao".to_vec();
        seed.extend_from_slice(self.ctx.domain.as_slice());
        seed.extend_from_slice(&height.0.to_be_bytes());
        let randao = keccak256(self.key.sign(&seed).to_bytes());
        let mut beacon = b"chainctl/beacon".to_vec();
        beacon.extend_from_slice(self.ctx.domain.as_slice());
        beacon.extend_from_slice(self.head.hash.as_slice());
        let beacon_root = keccak256(beacon);
        let fork = self.forks.at(timestamp);
        let attrs =
            super::el::payload_attributes(fork, timestamp, randao, self.fee_recipient, beacon_root);
        let mut tried = 0;
        while tried < self.els.len() && Instant::now() < deadline {
            tried += 1;
            let i = self.active;
            match self.build_on(i, fork, &attrs, beacon_root).await {
                Ok(v) => {
                    if self.fault.is_none() {
                        // The builder holds its own block (a faulty proposer's altered
                        // block it does not).
                        self.holding.push((v.id.0, i));
                    }
                    let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
                    r.proposals_built += 1;
                    tracing::info!(height = height.0, el = %self.els[i].name, block = %v.id, "built proposal");
                    return Some(v);
                }
                Err(e) => {
                    tracing::warn!(height = height.0, el = %self.els[i].name, error = %e, "building failed");
                    self.el_reports[i].state = ElState::Unreachable;
                    self.el_reports[i].last_error = Some(e.clone());
                    match self.next_el() {
                        Some(n) => {
                            self.switch_active(n, "build_failed", format!("building failed: {e}"))
                        }
                        None => break,
                    }
                }
            }
        }
        tracing::error!(
            height = height.0,
            "no execution client could build a payload"
        );
        None
    }

    async fn build_on(
        &mut self,
        i: usize,
        fork: EngineFork,
        attrs: &Json,
        beacon_root: B256,
    ) -> Result<Value, String> {
        let el = &self.els[i];
        let (status, id) = el
            .forkchoice(fork, self.head.hash, self.head.hash, Some(attrs.clone()))
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_valid() {
            return Err(format!(
                "forkchoiceUpdated to our head {} answered {} {}",
                self.head.hash,
                status.status,
                status.validation_error.unwrap_or_default()
            ));
        }
        let id = id.ok_or("forkchoiceUpdated with attributes returned no payloadId")?;
        let env = el.get_payload(fork, &id).await.map_err(|e| e.to_string())?;
        let payload = env
            .get("executionPayload")
            .cloned()
            .ok_or("getPayload returned no executionPayload")?;
        let requests = env
            .get("executionRequests")
            .cloned()
            .unwrap_or_else(|| json!([]));
        let hashes: Vec<B256> = env
            .get("blobsBundle")
            .and_then(|b| b.get("commitments"))
            .and_then(Json::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.as_str())
                    .filter_map(|c| hex::decode(c.trim_start_matches("0x")).ok())
                    .map(|c| {
                        let mut h: [u8; 32] = Sha256::digest(&c).into();
                        h[0] = 0x01;
                        B256::from(h)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut params =
            super::el::new_payload_params(fork, payload, &hashes, beacon_root, requests);
        if self.fault == Some(super::fault::Fault::BadStateRoot) {
            params = super::fault::with_bad_state_root(&params)?;
            tracing::warn!("TEST FAULT: proposing a block with a wrong state root");
        }
        let ph = header_of(&params)?;
        if ph.parent != self.head.hash || ph.number != self.head.height + 1 {
            return Err(format!(
                "the EL built block {} on {}, not on our head {} (block {})",
                ph.number, ph.parent, self.head.hash, self.head.height
            ));
        }
        Ok(Value {
            id: BlockHash(ph.hash),
            params: Bytes::from(serde_json::to_vec(&params).map_err(|e| e.to_string())?),
        })
    }

    async fn stream(
        &mut self,
        network: &mpsc::Sender<NetworkMsg<Ctx>>,
        height: Height,
        round: Round,
        pol_round: Round,
        value: &Value,
    ) {
        // Its Fin is signed with the key itself: nothing at or below the floor, not even
        // a proposal streamed again.
        if height.0 <= self.sign_floor {
            tracing::warn!(
                height = height.0,
                floor = self.sign_floor,
                "not streaming a proposal at or below the signing floor"
            );
            return;
        }
        let mut sid = height.0.to_be_bytes().to_vec();
        sid.extend_from_slice(&round.as_i64().to_be_bytes());
        let sid = StreamId::new(Bytes::from(sid));
        let digest = parts_digest(
            &self.ctx.domain,
            height,
            round,
            pol_round,
            &self.me,
            &value.id,
            &value.params,
        );
        let mut parts = vec![ProposalPart::Init {
            height,
            round,
            pol_round,
            proposer: self.me,
            id: value.id,
        }];
        for c in value.params.chunks(CHUNK) {
            parts.push(ProposalPart::Data(value.params.slice_ref(c)));
        }
        parts.push(ProposalPart::Fin(self.key.sign(digest.as_slice())));
        let n = parts.len() as u64;
        let msgs = parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| StreamMessage::new(sid.clone(), i as u64, StreamContent::Data(p)))
            .chain(std::iter::once(StreamMessage::new(
                sid.clone(),
                n,
                StreamContent::Fin,
            )));
        for m in msgs {
            if network
                .send(NetworkMsg::PublishProposalPart(m))
                .await
                .is_err()
            {
                tracing::error!("the network actor is gone; cannot publish the proposal");
                return;
            }
        }
    }

    async fn received_part(
        &mut self,
        from: PeerId,
        part: StreamMessage<ProposalPart>,
    ) -> Option<ProposedValue<Ctx>> {
        let key = (from, part.stream_id.clone());
        if !self.streams.contains_key(&key) && self.streams.len() >= MAX_STREAMS {
            // Drop the oldest partial stream rather than grow without bound.
            if let Some(old) = self
                .streams
                .iter()
                .min_by_key(|(_, p)| p.first_seen)
                .map(|(k, _)| k.clone())
            {
                self.streams.remove(&old);
            }
        }
        let s = self.streams.entry(key.clone()).or_insert_with(|| Partial {
            parts: BTreeMap::new(),
            fin: None,
            bytes: 0,
            first_seen: Instant::now(),
        });
        if let StreamContent::Data(ProposalPart::Data(b)) = &part.content {
            s.bytes += b.len();
        }
        if s.bytes > 64 << 20 {
            tracing::warn!(%from, "proposal stream over 64 MiB; dropped");
            self.streams.remove(&key);
            return None;
        }
        if part.content.is_fin() {
            s.fin = Some(part.sequence);
        }
        s.parts.insert(part.sequence, part.content);
        let complete = matches!(s.fin, Some(f) if s.parts.len() as u64 == f + 1);
        if !complete {
            return None;
        }
        let s = self.streams.remove(&key)?;
        let mut it = s.parts.into_values();
        let Some(StreamContent::Data(ProposalPart::Init {
            height,
            round,
            pol_round,
            proposer,
            id,
        })) = it.next()
        else {
            tracing::warn!(%from, "proposal stream does not start with Init; dropped");
            return None;
        };
        let mut data = Vec::new();
        let mut sig = None;
        for c in it {
            match c {
                StreamContent::Data(ProposalPart::Data(b)) => data.extend_from_slice(&b),
                StreamContent::Data(ProposalPart::Fin(s)) => sig = Some(s),
                StreamContent::Fin => {}
                StreamContent::Data(ProposalPart::Init { .. }) => {
                    tracing::warn!(%from, "proposal stream with two Init parts; dropped");
                    return None;
                }
            }
        }
        let Some(sig) = sig else {
            tracing::warn!(%from, "proposal stream without a signature; dropped");
            return None;
        };
        if height.0 < self.height.0 {
            return None;
        }
        let expected = self.ctx.select_proposer(&self.set, height, round);
        if expected.address != proposer {
            tracing::warn!(height = height.0, %round, %proposer, expected = %expected.address, "proposal from a validator that is not the proposer; dropped");
            return None;
        }
        let digest = parts_digest(
            &self.ctx.domain,
            height,
            round,
            pol_round,
            &proposer,
            &id,
            &data,
        );
        if expected.public_key.verify(digest.as_slice(), &sig).is_err() {
            tracing::warn!(height = height.0, %round, %proposer, "proposal with a bad signature; dropped");
            return None;
        }
        let value = Value {
            id,
            params: Bytes::from(data),
        };
        let mut pv = ProposedValue {
            height,
            round,
            valid_round: pol_round,
            proposer,
            value,
            validity: Validity::Invalid,
        };
        if height.0 > self.height.0 {
            // Validated when we reach that height.
            self.pending.entry(height.0).or_default().push(pv);
            return None;
        }
        pv.validity = self.validate(height, &pv.value).await;
        self.remember(pv.clone());
        Some(pv)
    }

    /// Is this value a block we can vote for at `height`?
    async fn validate(&mut self, height: Height, value: &Value) -> Validity {
        let params: Json = match serde_json::from_slice(&value.params) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(height = height.0, %e, "proposal is not JSON");
                return Validity::Invalid;
            }
        };
        let ph = match header_of(&params) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(height = height.0, %e, "malformed proposal");
                return Validity::Invalid;
            }
        };
        let fork = self.forks.at(ph.timestamp);
        let arity = super::el::new_payload_arity(fork);
        let why = if ph.hash != value.id.0 {
            Some(format!(
                "value id {} is not its block hash {}",
                value.id, ph.hash
            ))
        } else if params.as_array().map(Vec::len) != Some(arity) {
            Some(format!(
                "a {fork} block is sent as {} with {arity} params, not {}",
                super::el::new_payload_method(fork),
                params.as_array().map_or(0, Vec::len)
            ))
        } else if ph.number != height.0 {
            Some(format!(
                "block {} proposed for height {}",
                ph.number, height.0
            ))
        } else if ph.number != self.head.height + 1 || ph.parent != self.head.hash {
            Some(format!(
                "block {} on {} does not extend our head {} ({})",
                ph.number, ph.parent, self.head.height, self.head.hash
            ))
        } else if ph.timestamp > now_ms() / 1000 + MAX_FUTURE_SECS {
            Some(format!(
                "timestamp {} is more than {MAX_FUTURE_SECS}s in the future",
                ph.timestamp
            ))
        } else {
            None
        };
        if let Some(why) = why {
            tracing::warn!(height = height.0, block = %ph.hash, %why, "voting nil");
            return Validity::Invalid;
        }
        let results = self.new_payload_all(fork, ph.hash, &params).await;
        let valid: Vec<&str> = results
            .iter()
            .filter(|(_, r)| matches!(r, Ok(s) if s.is_valid()))
            .map(|(n, _)| n.as_str())
            .collect();
        let invalid: Vec<String> = results
            .iter()
            .filter_map(|(n, r)| match r {
                Ok(s) if s.is_invalid() => Some(format!(
                    "{n}: {}",
                    s.validation_error.clone().unwrap_or_default()
                )),
                _ => None,
            })
            .collect();
        if !valid.is_empty() && !invalid.is_empty() {
            tracing::error!(
                height = height.0,
                block = %ph.hash,
                valid = ?valid,
                invalid = ?invalid,
                "CONSENSUS VIOLATION: our execution clients disagree on this block; voting nil"
            );
            self.report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .consensus_violations += 1;
            return Validity::Invalid;
        }
        if !invalid.is_empty() {
            tracing::warn!(height = height.0, block = %ph.hash, invalid = ?invalid, "invalid proposal; voting nil");
            return Validity::Invalid;
        }
        if valid.is_empty() {
            tracing::warn!(height = height.0, block = %ph.hash, "no execution client could validate the proposal (syncing or down); voting nil");
            return Validity::Invalid;
        }
        // The active EL failing or answering SYNCING on a block another EL found VALID:
        // it is down or fell behind, and would fail to build on it.
        let why = match results.get(self.active) {
            Some((_, Ok(s))) if s.is_valid() => None,
            Some((_, Ok(s))) => Some(format!("answered {}", s.status)),
            Some((_, Err(e))) => Some(e.to_string()),
            None => None,
        };
        if let Some(why) = why {
            if let Some(n) = self.next_el() {
                self.switch_active(
                    n,
                    "el_behind",
                    format!("active EL on a block others found VALID: {why}"),
                );
            }
        }
        Validity::Valid
    }

    async fn new_payload_all(
        &mut self,
        fork: EngineFork,
        block: B256,
        params: &Json,
    ) -> Vec<(String, Result<PayloadStatus, ElError>)> {
        let futs: Vec<_> = self
            .els
            .iter()
            .map(|el| el.new_payload(fork, params))
            .collect();
        let method = super::el::new_payload_method(fork);
        let results = all_with_grace(&self.els, method, futs).await;
        for (i, r) in results.iter().enumerate() {
            self.note_el(i, r.as_ref());
            if matches!(r, Ok(s) if s.is_valid()) {
                self.holding.push((block, i));
            }
        }
        self.els
            .iter()
            .map(|e| e.name.clone())
            .zip(results)
            .collect()
    }

    async fn decided(&mut self, cert: CommitCertificate<Ctx>) -> Next<Ctx> {
        let h = cert.height;
        let value = self
            .undecided
            .get(&h.0)
            .and_then(|v| v.iter().find(|p| p.value.id == cert.value_id))
            .map(|p| p.value.clone());
        let Some(value) = value else {
            tracing::error!(height = h.0, value = %cert.value_id, "decided a value we never received; restarting the height to sync it");
            return Next::Restart(h, self.set.clone());
        };
        let params: Json = match serde_json::from_slice(&value.params) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(height = h.0, %e, "decided value is not JSON");
                return Next::Restart(h, self.set.clone());
            }
        };
        let ph = match header_of(&params) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(height = h.0, %e, "decided value is malformed");
                return Next::Restart(h, self.set.clone());
            }
        };
        let decided = Decided {
            certificate: cert,
            value,
        };
        if let Err(e) = self.store.append(&decided) {
            tracing::error!(height = h.0, %e, "cannot store the decided block; restarting the height");
            return Next::Restart(h, self.set.clone());
        }
        self.head = Head {
            height: h.0,
            hash: ph.hash,
            timestamp: ph.timestamp,
        };
        {
            let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
            let now = now_ms();
            let before = r.last_decided_at_ms.replace(now);
            // Switches since the last decision: this decision ends the gap they caused.
            for sw in r.switch_log.iter_mut().rev() {
                if sw.gap_ms.is_some() {
                    break;
                }
                sw.gap_ms = Some(now.saturating_sub(before.unwrap_or(sw.at_ms)));
            }
        }
        tracing::info!(height = h.0, block = %ph.hash, round = %decided.certificate.round, "decided");
        self.undecided = self.undecided.split_off(&(h.0 + 1));
        self.pending = self.pending.split_off(&(h.0 + 1));
        let stale: Vec<_> = self
            .streams
            .iter()
            .filter(|(_, p)| p.first_seen.elapsed() > Duration::from_secs(60))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.streams.remove(&k);
        }
        self.apply_head(&params).await;
        Next::Start(Height(h.0 + 1), self.set.clone())
    }

    /// Give every EL the decided block and make it their head, safe and finalized block.
    async fn apply_head(&mut self, params: &Json) {
        let head = self.head.hash;
        let fork = self.forks.at(self.head.timestamp);
        let holding = std::mem::take(&mut self.holding);
        let futs: Vec<_> = self
            .els
            .iter()
            .enumerate()
            .map(|(i, el)| {
                let held = holding.contains(&(head, i));
                async move {
                    if !held {
                        match el.new_payload(fork, params).await {
                            Ok(s) if s.is_valid() => {}
                            other => return other,
                        }
                    }
                    el.forkchoice(fork, head, head, None).await.map(|(s, _)| s)
                }
            })
            .collect();
        let method = super::el::forkchoice_method(fork);
        let results = all_with_grace(&self.els, method, futs).await;
        let mut behind = Vec::new();
        for (i, r) in results.iter().enumerate() {
            self.note_el(i, r.as_ref());
            match r {
                Ok(s) if s.is_valid() => self.el_reports[i].head = self.head.height,
                Ok(s) if s.is_invalid() => {
                    tracing::error!(el = %self.els[i].name, height = self.head.height, error = ?s.validation_error, "CONSENSUS VIOLATION: an execution client rejects a decided block");
                    self.report
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .consensus_violations += 1;
                }
                Ok(_) => behind.push(i),
                Err(_) => {}
            }
        }
        for i in behind {
            self.catch_up(i).await;
        }
        if self.el_reports[self.active].state != ElState::Ok {
            if let Some(n) = self
                .next_el()
                .filter(|&n| self.el_reports[n].state == ElState::Ok)
            {
                let why = format!(
                    "active EL is {}: {}",
                    self.el_reports[self.active].state,
                    self.el_reports[self.active]
                        .last_error
                        .clone()
                        .unwrap_or_default()
                );
                self.switch_active(n, "el_not_ok", why);
            }
        }
    }

    /// Replay stored blocks to an EL that is behind: walk back from our head to the
    /// first block it can import, then forward to the head, then set its forkchoice.
    async fn catch_up(&mut self, i: usize) {
        let last = self.head.height;
        if last == 0 {
            return;
        }
        let mut k = last;
        let mut blocks: Vec<(EngineFork, Json)> = Vec::new();
        loop {
            let d = match self.store.get(Height(k)) {
                Ok(Some(d)) => d,
                other => {
                    tracing::error!(
                        height = k,
                        ?other,
                        "decided-block log unreadable during catch-up"
                    );
                    return;
                }
            };
            let params: Json = match serde_json::from_slice(&d.value.params) {
                Ok(p) => p,
                Err(_) => return,
            };
            let Ok(ph) = header_of(&params) else {
                return;
            };
            let fork = self.forks.at(ph.timestamp);
            let r = self.els[i].new_payload(fork, &params).await;
            self.note_el(i, r.as_ref());
            match r {
                Ok(s) if s.is_valid() || s.status == "ACCEPTED" => break,
                Ok(s) if s.is_invalid() => {
                    tracing::error!(el = %self.els[i].name, height = k, error = ?s.validation_error, "execution client rejects a decided block during catch-up (wrong genesis or data dir?)");
                    return;
                }
                Ok(_) => {
                    blocks.push((fork, params));
                    if k == 1 {
                        tracing::error!(el = %self.els[i].name, "execution client cannot import block 1 of our chain: is it running the network's genesis?");
                        return;
                    }
                    k -= 1;
                }
                Err(e) => {
                    tracing::debug!(el = %self.els[i].name, error = %e, "execution client unreachable; catch-up later");
                    return;
                }
            }
        }
        if !blocks.is_empty() {
            tracing::info!(el = %self.els[i].name, from = k + 1, to = last, "replaying decided blocks to a lagging execution client");
        }
        for (fork, params) in blocks.iter().rev() {
            let r = self.els[i].new_payload(*fork, params).await;
            self.note_el(i, r.as_ref());
            if !matches!(&r, Ok(s) if s.is_valid()) {
                tracing::warn!(el = %self.els[i].name, result = ?r, "replay stopped");
                return;
            }
        }
        let r = self.els[i]
            .forkchoice(
                self.forks.at(self.head.timestamp),
                self.head.hash,
                self.head.hash,
                None,
            )
            .await
            .map(|(s, _)| s);
        self.note_el(i, r.as_ref());
        if matches!(&r, Ok(s) if s.is_valid()) {
            self.el_reports[i].head = last;
        }
    }
}
