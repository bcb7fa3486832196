//! The record of a chaos experiment (`chainctl chaos`), as the experiment writes it to
//! `STATE/chaos/last.json` and the readiness report reads it back: what was injected,
//! what each fault cost, what the network lost, and the verdict with its reasons.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One injected fault and its recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Seconds from the start of the experiment.
    pub at_s: f64,
    /// `kill`, `pause`, `restart-all`, `supervisor`.
    pub kind: String,
    /// The services it hit (every service for `restart-all`; `chainctl` for `supervisor`).
    pub targets: Vec<String>,
    /// Seconds from the fault (from the resume, for a pause) until every target was back
    /// and at the head: its recovery. `None`: not back when the experiment ended.
    pub recovery_s: Option<f64>,
    /// Where the recovery went, for a killed service: seconds from the fault until the
    /// supervisor had started every target again (its restart delay)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_s: Option<f64>,
    /// …and until every target answered again (its start-up: opening its store, its
    /// listeners). The rest of `recovery_s` is catching up with the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answering_s: Option<f64>,
}

/// Transactions sent through the network during the experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadRecord {
    /// Transactions per second offered.
    pub tps: u64,
    /// Accepted by the network.
    pub sent: u64,
    /// Of `sent`, found in finalized blocks.
    pub finalized: u64,
    /// Of `sent`, in no finalized block on any execution client at the end.
    pub lost: u64,
    /// Refused by the network.
    pub refused: u64,
    /// Path failures the load sent again (no client reachable for a moment).
    pub retried: u64,
    /// Refusals by kind (the first words of the error), so that a failed run says why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused_by_kind: BTreeMap<String, u64>,
    /// Path failures by kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retried_by_kind: BTreeMap<String, u64>,
    /// Senders retired after repeated refusals.
    #[serde(default)]
    pub retired_senders: u64,
    /// Inclusion latency (accepted → seen finalized), seconds.
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
    pub latency_max_s: f64,
}

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosRecord {
    /// chainctl's version.
    pub version: String,
    /// The profile's name.
    pub profile: String,
    /// The seed: the same seed on the same network repeats the same choices.
    pub seed: u64,
    /// When it ended (ms since the Unix epoch).
    pub finished_at_ms: u64,
    /// Seconds faults were injected for.
    pub duration_s: f64,
    /// The fault kinds asked for.
    pub kinds: Vec<String>,
    /// At most this many validators were down at once (unless restart-all).
    pub max_down: usize,
    pub faults: Vec<FaultRecord>,
    /// Recovery over the faults that recovered, seconds.
    pub recovery_p50_s: Option<f64>,
    pub recovery_max_s: Option<f64>,
    pub load: Option<LoadRecord>,
    /// Heights compared across every execution client (first, last).
    pub heights_checked: (u64, u64),
    /// Heights at which two execution clients held different blocks.
    pub forks: Vec<u64>,
    /// Blocks the chain made during the experiment, and how many its block time asks for.
    pub blocks: u64,
    pub expected_blocks: u64,
    /// Longest time the head did not move, seconds.
    pub longest_stall_s: f64,
    /// From the last fault until blocks came at the block time again (three in a row at
    /// most 1.5 block times apart), seconds.
    pub back_to_rate_s: Option<f64>,
    /// Services chainctl gave up on.
    pub given_up: Vec<String>,
    /// `PASS` or `FAIL`.
    pub verdict: String,
    /// Why not PASS (empty on PASS).
    pub reasons: Vec<String>,
}

impl ChaosRecord {
    /// Whether the experiment passed.
    pub fn passed(&self) -> bool {
        self.verdict == "PASS"
    }
}
