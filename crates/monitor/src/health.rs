//! The pure part of health: consecutive-result thresholds, block lag against the
//! second-highest head, ranking of execution clients, and the failover decision. No I/O
//! and no clock of its own (times come in as Unix milliseconds), so all of it is tested
//! directly.

use serde::Serialize;

/// Health of one probed thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not enough probes yet.
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

impl State {
    /// As a metric value: 1 healthy, 0 unhealthy, -1 unknown.
    pub fn gauge(self) -> i64 {
        match self {
            State::Healthy => 1,
            State::Unhealthy => 0,
            State::Unknown => -1,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Unknown => "unknown",
            State::Healthy => "healthy",
            State::Unhealthy => "unhealthy",
        })
    }
}

/// Consecutive results that change the state.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Failures in a row before unhealthy.
    pub failures: u32,
    /// Successes in a row before healthy again.
    pub successes: u32,
}

/// A change of state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
}

/// Counts consecutive probe results of one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tracker {
    pub state: State,
    pub ok_in_row: u32,
    pub failed_in_row: u32,
    /// Why the last failed probe failed (kept while unhealthy).
    pub reason: Option<String>,
    /// When the state last changed (Unix ms).
    pub since_ms: u64,
    /// State changes so far.
    pub transitions: u64,
}

impl Tracker {
    /// Record one probe result; returns the change of state it caused, if any. From
    /// `Unknown`, one success makes it healthy and N failures unhealthy.
    pub fn observe(
        &mut self,
        result: Result<(), String>,
        th: Thresholds,
        now_ms: u64,
    ) -> Option<Transition> {
        let from = self.state;
        match result {
            Ok(()) => {
                self.ok_in_row += 1;
                self.failed_in_row = 0;
                // A first answer is enough to start healthy; coming back takes M.
                if self.state == State::Unknown
                    || (self.state == State::Unhealthy && self.ok_in_row >= th.successes.max(1))
                {
                    self.state = State::Healthy;
                    self.reason = None;
                }
            }
            Err(why) => {
                self.failed_in_row += 1;
                self.ok_in_row = 0;
                self.reason = Some(why);
                if self.state != State::Unhealthy && self.failed_in_row >= th.failures.max(1) {
                    self.state = State::Unhealthy;
                }
            }
        }
        (self.state != from).then(|| {
            self.since_ms = now_ms;
            self.transitions += 1;
            Transition {
                from,
                to: self.state,
            }
        })
    }
}

/// The head the network is at, as far as lag goes: the second-highest head reported, so
/// that one client reporting a false (too high) head cannot make the honest ones look
/// behind. With a single head, that head.
pub fn reference_head(heads: &[u64]) -> Option<u64> {
    let mut h: Vec<u64> = heads.to_vec();
    h.sort_unstable_by(|a, b| b.cmp(a));
    h.get(1).or(h.first()).copied()
}

/// What ranking and failover need to know about one execution client.
#[derive(Debug, Clone, PartialEq)]
pub struct ElView {
    pub name: String,
    pub state: State,
    pub syncing: bool,
    /// Blocks behind the reference head (none when its head is unknown).
    pub lag: Option<u64>,
    /// Probe latency (EWMA), ms.
    pub latency_ms: f64,
    /// How its process ended, when the supervisor saw it exit and no probe has
    /// answered since (it is down, whatever the last probes said).
    pub exited: Option<String>,
}

impl ElView {
    /// Running, healthy, synced and within `max_lag` of the reference head.
    pub fn usable(&self, max_lag: u64) -> bool {
        self.exited.is_none()
            && self.state == State::Healthy
            && !self.syncing
            && self.lag.is_some_and(|l| l <= max_lag)
    }
}

/// Indices of the clients fit to serve, best first: healthy and synced only; then least
/// lag; then lowest latency; then name (stable).
pub fn rank(els: &[ElView], max_lag: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..els.len()).filter(|&i| els[i].usable(max_lag)).collect();
    idx.sort_by(|&a, &b| {
        let (x, y) = (&els[a], &els[b]);
        x.lag
            .cmp(&y.lag)
            .then(x.latency_ms.total_cmp(&y.latency_ms))
            .then(x.name.cmp(&y.name))
    });
    idx
}

/// How far the gateway's current read client may fall behind the best one before reads
/// move: one block (probes 1 s apart see clients on either side of the same block
/// import), and twice the best probe latency plus 5 ms (a client serving the
/// gateway's load answers probes slower than idle ones; that alone is no reason to
/// move the load onto one of them, which would then look slower in turn).
pub const STICKY_LAG_BLOCKS: u64 = 1;
pub const STICKY_LATENCY_MS: f64 = 5.0;

/// `ranked` (from [`rank`]) with the gateway's current read client first again while it
/// is still fit and not clearly worse than the best: reads stay on one client instead of
/// hopping between clients that are one block apart (`eth_blockNumber` going back by
/// one) and opening a fresh set of connections at every hop.
pub fn keep_current(els: &[ElView], mut ranked: Vec<usize>, current: Option<&str>) -> Vec<usize> {
    let (Some(current), Some(&best)) = (current, ranked.first()) else {
        return ranked;
    };
    let Some(pos) = ranked.iter().position(|&i| els[i].name == current) else {
        return ranked;
    };
    let (c, b) = (&els[ranked[pos]], &els[best]);
    let lag_ok = c.lag.unwrap_or(u64::MAX) <= b.lag.unwrap_or(0) + STICKY_LAG_BLOCKS;
    let latency_ok = c.latency_ms <= 2.0 * b.latency_ms + STICKY_LATENCY_MS;
    if pos > 0 && lag_ok && latency_ok {
        let i = ranked.remove(pos);
        ranked.insert(0, i);
    }
    ranked
}

/// Why the active client of a validator should be replaced, if it should.
pub fn trouble(active: &ElView, max_lag: u64) -> Option<(&'static str, String)> {
    if let Some(how) = &active.exited {
        return Some(("down", format!("{} is down: {how}", active.name)));
    }
    if active.state == State::Unhealthy {
        return Some(("unhealthy", format!("{} is unhealthy", active.name)));
    }
    // Reth, Geth and Erigon all report `eth_syncing` as syncing after they start, though
    // they hold the network's head, until their first new canonical block (Reth: a
    // forkchoice update to a new head, `engine/tree`; Geth: its transaction indexer never
    // runs at head 0; Erigon: while the highest block seen is 0; Reth 2.5.1 seen doing
    // so behind our consensus): a client at the head can build on it, so syncing counts
    // only when it is behind, or when its lag is unknown.
    if active.syncing && active.lag.is_none_or(|l| l > 0) {
        return Some(("syncing", format!("{} reports syncing", active.name)));
    }
    match active.lag {
        Some(l) if l > max_lag => Some((
            "lagging",
            format!(
                "{} is {l} blocks behind the network (more than {max_lag})",
                active.name
            ),
        )),
        _ => None,
    }
}

/// The last switch of a validator, for anti-flap.
#[derive(Debug, Clone)]
pub struct LastSwitch {
    pub at_ms: u64,
    pub from: String,
    pub to: String,
}

/// A switch to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub to: String,
    pub kind: &'static str,
    pub reason: String,
}

/// Whether to switch a validator away from its active client, and to which. `els` are
/// the validator's clients, `active` the index of the active one. Within `hold_ms` of the
/// last switch, a switch back to the client it left is made only if the current one is
/// down (exited or unhealthy: the new one failed too), never for lag or syncing alone.
pub fn failover(
    els: &[ElView],
    active: usize,
    max_lag: u64,
    last: Option<&LastSwitch>,
    hold_ms: u64,
    now_ms: u64,
) -> Option<Decision> {
    let (kind, reason) = trouble(&els[active], max_lag)?;
    let down = matches!(kind, "down" | "unhealthy");
    let within_hold = last.is_some_and(|l| now_ms.saturating_sub(l.at_ms) < hold_ms);
    if within_hold && !down {
        return None;
    }
    let best = rank(els, max_lag)
        .into_iter()
        .filter(|&i| i != active)
        .find(|&i| {
            // Anti-flap: not back to the one just left, unless the current one is down.
            !(within_hold
                && !down
                && last.is_some_and(|l| l.from == els[i].name && l.to == els[active].name))
        })?;
    Some(Decision {
        to: els[best].name.clone(),
        kind,
        reason,
    })
}

/// Exponentially weighted moving average (weight of the newest sample `alpha`).
pub fn ewma(prev: Option<f64>, sample: f64, alpha: f64) -> f64 {
    match prev {
        None => sample,
        Some(p) => p + alpha * (sample - p),
    }
}

/// Alert level of a used share of a file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    /// As a metric value: 0 ok, 1 warning, 2 critical.
    pub fn gauge(self) -> i64 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
        }
    }
}

/// The level of `used_percent` against the two thresholds.
pub fn disk_level(used_percent: f64, warn: f64, critical: f64) -> Level {
    if used_percent >= critical {
        Level::Critical
    } else if used_percent >= warn {
        Level::Warning
    } else {
        Level::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TH: Thresholds = Thresholds {
        failures: 3,
        successes: 2,
    };

    #[test]
    fn thresholds_need_consecutive_results() {
        let mut t = Tracker::default();
        assert_eq!(
            t.observe(Ok(()), TH, 2),
            Some(Transition {
                from: State::Unknown,
                to: State::Healthy
            })
        );
        // Two failures, a success, two failures: never three in a row.
        for r in [false, false, true, false, false] {
            let res = if r { Ok(()) } else { Err("down".into()) };
            assert_eq!(t.observe(res, TH, 3), None);
        }
        assert_eq!(t.state, State::Healthy);
        let tr = t.observe(Err("refused".into()), TH, 10).unwrap();
        assert_eq!(tr.to, State::Unhealthy);
        assert_eq!(t.since_ms, 10);
        assert_eq!(t.reason.as_deref(), Some("refused"));
        // One success is not enough to come back; two are.
        assert_eq!(t.observe(Ok(()), TH, 11), None);
        assert_eq!(t.state, State::Unhealthy);
        assert_eq!(t.observe(Ok(()), TH, 12).unwrap().to, State::Healthy);
        assert_eq!(t.reason, None);
        assert_eq!(t.transitions, 3);
        // From unknown, N failures make it unhealthy.
        let mut u = Tracker::default();
        assert_eq!(u.observe(Err("x".into()), TH, 1), None);
        assert_eq!(u.observe(Err("x".into()), TH, 2), None);
        assert_eq!(
            u.observe(Err("x".into()), TH, 3).unwrap().to,
            State::Unhealthy
        );
    }

    #[test]
    fn one_false_head_does_not_make_others_lag() {
        // One client claims height 1,000,000: the reference is the second-highest.
        assert_eq!(reference_head(&[100, 1_000_000, 99, 100]), Some(100));
        assert_eq!(reference_head(&[7]), Some(7));
        assert_eq!(reference_head(&[]), None);
    }

    fn el(name: &str, state: State, lag: u64, latency: f64) -> ElView {
        ElView {
            name: name.into(),
            state,
            syncing: false,
            lag: Some(lag),
            latency_ms: latency,
            exited: None,
        }
    }

    #[test]
    fn reads_stay_on_their_client_until_it_is_clearly_worse() {
        let els = vec![
            el("a", State::Healthy, 0, 0.2),
            el("b", State::Healthy, 1, 3.0),
            el("c", State::Healthy, 3, 0.1),
            el("d", State::Unhealthy, 0, 0.1),
        ];
        let names = |r: Vec<usize>| {
            r.into_iter()
                .map(|i| els[i].name.clone())
                .collect::<Vec<_>>()
        };
        let ranked = rank(&els, 5);
        assert_eq!(names(ranked.clone()), ["a", "b", "c"]);
        // b: one block behind, slower under load but within 2 × 0.2 + 5 ms: kept.
        assert_eq!(
            names(keep_current(&els, ranked.clone(), Some("b"))),
            ["b", "a", "c"]
        );
        // c: three blocks behind the best, d: not fit at all, zz: no longer ranked, or
        // no current client: the plain ranking.
        for current in [Some("c"), Some("d"), Some("zz"), None] {
            assert_eq!(
                names(keep_current(&els, ranked.clone(), current)),
                ["a", "b", "c"],
                "{current:?}"
            );
        }
        // b far slower than the best (6 ms > 2 × 0.2 + 5): reads move.
        let mut slow = els.clone();
        slow[1].latency_ms = 6.0;
        assert_eq!(
            names(keep_current(&slow, rank(&slow, 5), Some("b"))),
            ["a", "b", "c"]
        );
        // Nothing fit: nothing ranked, nothing kept.
        assert!(keep_current(&els, vec![], Some("a")).is_empty());
    }

    #[test]
    fn ranking_prefers_synced_then_lag_then_latency() {
        let els = vec![
            el("a", State::Healthy, 2, 0.1),
            el("b", State::Healthy, 0, 5.0),
            el("c", State::Unhealthy, 0, 0.1),
            el("d", State::Healthy, 0, 1.0),
            ElView {
                syncing: true,
                ..el("e", State::Healthy, 0, 0.1)
            },
            el("f", State::Healthy, 9, 0.1),
        ];
        let names: Vec<&str> = rank(&els, 5)
            .into_iter()
            .map(|i| els[i].name.as_str())
            .collect();
        assert_eq!(names, ["d", "b", "a"]);
    }

    #[test]
    fn failover_picks_the_best_healthy_backup() {
        let els = vec![
            el("el-0", State::Unhealthy, 0, 0.1),
            el("el-1", State::Healthy, 1, 0.3),
            el("el-2", State::Healthy, 0, 0.9),
        ];
        let d = failover(&els, 0, 5, None, 30_000, 1_000).unwrap();
        assert_eq!(d.to, "el-2");
        assert_eq!(d.kind, "unhealthy");
        // A healthy, synced active client stays.
        let fine = vec![
            el("el-0", State::Healthy, 0, 0.1),
            el("el-1", State::Healthy, 0, 0.1),
        ];
        assert_eq!(failover(&fine, 0, 5, None, 30_000, 1_000), None);
        // No usable backup: no switch.
        let none = vec![
            el("el-0", State::Unhealthy, 0, 0.1),
            el("el-1", State::Unhealthy, 0, 0.1),
        ];
        assert_eq!(failover(&none, 0, 5, None, 30_000, 1_000), None);
    }

    #[test]
    fn an_exited_active_client_is_left_at_once_and_never_chosen() {
        // Its last probes passed (a process killed between two probes): the exit decides.
        let exited = |n: &str| ElView {
            exited: Some("its process exited (killed by SIGKILL)".into()),
            ..el(n, State::Healthy, 0, 0.1)
        };
        let els = vec![exited("el-0"), el("el-1", State::Healthy, 0, 0.5)];
        let d = failover(&els, 0, 5, None, 30_000, 1_000).unwrap();
        assert_eq!((d.to.as_str(), d.kind), ("el-1", "down"));
        assert_eq!(
            d.reason,
            "el-0 is down: its process exited (killed by SIGKILL)"
        );
        // Even right after a switch to it (the hold is for lag, not for a dead client).
        let last = LastSwitch {
            at_ms: 900,
            from: "el-1".into(),
            to: "el-0".into(),
        };
        assert_eq!(
            failover(&els, 0, 5, Some(&last), 30_000, 1_000).unwrap().to,
            "el-1"
        );
        // An exited backup is no target, however good its last probes were.
        let both = vec![el("el-0", State::Unhealthy, 0, 0.1), exited("el-1")];
        assert_eq!(failover(&both, 0, 5, None, 30_000, 1_000), None);
        assert!(rank(&both, 5).is_empty());
    }

    #[test]
    fn anti_flap_holds_lag_switches_but_not_failures() {
        let last = LastSwitch {
            at_ms: 10_000,
            from: "el-0".into(),
            to: "el-1".into(),
        };
        // el-1 (switched to 5 s ago) lags while it catches up: held.
        let lagging = vec![
            el("el-0", State::Healthy, 0, 0.1),
            el("el-1", State::Healthy, 9, 0.1),
        ];
        assert_eq!(failover(&lagging, 1, 5, Some(&last), 30_000, 15_000), None);
        // After the hold time it may switch back.
        assert_eq!(
            failover(&lagging, 1, 5, Some(&last), 30_000, 41_000)
                .unwrap()
                .to,
            "el-0"
        );
        // The new one failing too: switch back at once.
        let failed = vec![
            el("el-0", State::Healthy, 0, 0.1),
            el("el-1", State::Unhealthy, 0, 0.1),
        ];
        let d = failover(&failed, 1, 5, Some(&last), 30_000, 15_000).unwrap();
        assert_eq!((d.to.as_str(), d.kind), ("el-0", "unhealthy"));
    }

    #[test]
    fn syncing_and_lag_are_trouble() {
        let mut v = el("x", State::Healthy, 6, 0.1);
        assert_eq!(trouble(&v, 5).unwrap().0, "lagging");
        v.lag = Some(5);
        assert_eq!(trouble(&v, 5), None);
        v.syncing = true;
        assert_eq!(trouble(&v, 5).unwrap().0, "syncing");
        v.lag = None;
        assert_eq!(trouble(&v, 5).unwrap().0, "syncing");
        // Syncing at the network's head (a client just started): no trouble.
        v.lag = Some(0);
        assert_eq!(trouble(&v, 5), None);
    }

    #[test]
    fn ewma_and_disk_levels() {
        assert_eq!(ewma(None, 4.0, 0.2), 4.0);
        assert!((ewma(Some(4.0), 9.0, 0.2) - 5.0).abs() < 1e-9);
        assert_eq!(disk_level(79.9, 80.0, 90.0), Level::Ok);
        assert_eq!(disk_level(80.0, 80.0, 90.0), Level::Warning);
        assert_eq!(disk_level(95.0, 80.0, 90.0), Level::Critical);
    }
}
