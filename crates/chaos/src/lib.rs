//! chainctl-chaos: `chainctl chaos`, an experiment on a running network. Faults of the
//! kinds asked for are injected at a rate for a duration — `kill -9` of an execution
//! client or a validator, a pause (SIGSTOP: a hung process), every service killed at
//! once, a validator's container cut off from the network (the docker runtime), chainctl
//! itself killed and started again — chosen by a seeded generator, so the
//! same seed on the same network makes the same choices, and never more validators down
//! at once than the network tolerates unless asked. Optional load runs through the
//! gateway meanwhile. Everything the result says is measured: each fault's recovery
//! (until the service is back and at the head, read from its own endpoint), the chain's
//! stalls, the load's losses, and forks looked for at every height on every execution
//! client.
//!
//! Layer 5: on core, common, load and runtime (container names). It must never depend on
//! the supervisor, the monitor or the report: it reaches a network as an operator's own
//! tooling would, through its processes or containers, its control socket and its
//! endpoints. Its record ([`chainctl_core::chaos::ChaosRecord`]) is what the report reads.

mod run;

pub use run::{run, table, Config, Injector};

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// The faults an experiment can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum FaultKind {
    /// SIGKILL of a random execution client or validator.
    Kill,
    /// SIGKILL of a random execution client.
    KillEl,
    /// SIGKILL of a random validator.
    KillValidator,
    /// SIGSTOP of a random execution client or validator for `--pause-for`, then SIGCONT.
    Pause,
    /// A random validator and its execution clients (its host) cut off from the rest of
    /// the network for `--partition-for`, still reaching each other, then connected again
    /// (Docker networks; the docker runtime only).
    Partition,
    /// SIGKILL of every service at once (beyond `--max-down`: asked for explicitly).
    RestartAll,
    /// SIGKILL of the chainctl supervisor, then `chainctl up --detach`: its services must
    /// be adopted, not started twice.
    Supervisor,
}

impl FaultKind {
    /// The name the CLI and the record use.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::KillEl => "kill-el",
            FaultKind::KillValidator => "kill-validator",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::RestartAll => "restart-all",
            FaultKind::Supervisor => "supervisor",
        }
    }
}

/// An execution client of a validator.
#[derive(Debug, Clone)]
pub struct ElNode {
    pub name: String,
    /// Its JSON-RPC endpoint (http://…).
    pub rpc: String,
}

/// A validator and its execution clients.
#[derive(Debug, Clone)]
pub struct ValidatorNode {
    pub name: String,
    /// Where it serves `/status`.
    pub status: SocketAddr,
    pub els: Vec<ElNode>,
}

/// The network the experiment runs on.
#[derive(Debug, Clone)]
pub struct Topology {
    pub validators: Vec<ValidatorNode>,
}

impl Topology {
    /// Validators the network tolerates losing: f of n = 3f + 1.
    pub fn tolerated(&self) -> usize {
        self.validators.len().saturating_sub(1) / 3
    }

    /// Every execution client.
    pub fn els(&self) -> impl Iterator<Item = &ElNode> {
        self.validators.iter().flat_map(|v| v.els.iter())
    }

    /// Every service the experiment may hit, validators first.
    pub fn services(&self) -> Vec<String> {
        let mut out: Vec<String> = self.validators.iter().map(|v| v.name.clone()).collect();
        out.extend(self.els().map(|e| e.name.clone()));
        out
    }

    /// Validators that cannot take part with these services down: the validator itself,
    /// or every one of its execution clients.
    pub fn validators_down(&self, down: &BTreeSet<String>) -> usize {
        self.validators
            .iter()
            .filter(|v| down.contains(&v.name) || v.els.iter().all(|e| down.contains(&e.name)))
            .count()
    }
}

/// The experiment's random numbers: SplitMix64, so that a seed means the same choices in
/// every version of chainctl and on every machine (no library's generator to change
/// under it).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [lo, hi].
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(self.next_u64() % (span + 1))
    }
}

/// A fault chosen to inject next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub kind: FaultKind,
    /// The services it hits (empty for `supervisor`).
    pub targets: Vec<String>,
}

/// Chooses the next fault: a kind among those that have a target now, then a target,
/// such that at most `max_down` validators are down with it (services in `down` have not
/// recovered from an earlier fault). `restart-all` and `supervisor` wait until nothing
/// is down. `None`: nothing can be hit now without going beyond `max_down`.
pub fn choose(
    rng: &mut Rng,
    topo: &Topology,
    kinds: &[FaultKind],
    down: &BTreeSet<String>,
    max_down: usize,
) -> Option<Choice> {
    let fits = |svc: &String| {
        if down.contains(svc) {
            return false;
        }
        let mut with = down.clone();
        with.insert(svc.clone());
        topo.validators_down(&with) <= max_down
    };
    let validators: Vec<String> = topo.validators.iter().map(|v| v.name.clone()).collect();
    let els: Vec<String> = topo.els().map(|e| e.name.clone()).collect();
    let mut options: Vec<(FaultKind, Vec<Vec<String>>)> = Vec::new();
    for &kind in kinds {
        let singles = |names: Vec<String>| -> Vec<Vec<String>> {
            names.into_iter().filter(fits).map(|s| vec![s]).collect()
        };
        let targets = match kind {
            FaultKind::Kill | FaultKind::Pause => singles(topo.services()),
            FaultKind::KillEl => singles(els.clone()),
            FaultKind::KillValidator => singles(validators.clone()),
            // A validator with its clients, as a host cut off would be: all or nothing.
            FaultKind::Partition => topo
                .validators
                .iter()
                .map(|v| {
                    std::iter::once(v.name.clone())
                        .chain(v.els.iter().map(|e| e.name.clone()))
                        .collect::<Vec<_>>()
                })
                .filter(|g| {
                    g.iter().all(|s| !down.contains(s)) && {
                        let mut with = down.clone();
                        with.extend(g.iter().cloned());
                        topo.validators_down(&with) <= max_down
                    }
                })
                .collect(),
            FaultKind::RestartAll if down.is_empty() => vec![topo.services()],
            FaultKind::Supervisor if down.is_empty() => vec![Vec::new()],
            FaultKind::RestartAll | FaultKind::Supervisor => Vec::new(),
        };
        if !targets.is_empty() {
            options.push((kind, targets));
        }
    }
    if options.is_empty() {
        return None;
    }
    let (kind, targets) = &options[rng.below(options.len())];
    Some(Choice {
        kind: *kind,
        targets: targets[rng.below(targets.len())].clone(),
    })
}

/// Parses `--every`: `8s` (every 8 s) or `5s..8s` (uniform between).
pub fn parse_every(s: &str) -> Result<(Duration, Duration), String> {
    let dur = |t: &str| {
        humantime::parse_duration(t.trim()).map_err(|e| {
            format!("--every {s:?}: {t:?} is not a duration ({e}); write e.g. 8s or 5s..8s")
        })
    };
    let (lo, hi) = match s.split_once("..") {
        Some((a, b)) => (dur(a)?, dur(b)?),
        None => {
            let d = dur(s)?;
            (d, d)
        }
    };
    if lo > hi {
        return Err(format!(
            "--every {s:?}: the shortest interval is longer than the longest; write MIN..MAX"
        ));
    }
    if lo < Duration::from_millis(500) {
        return Err(format!(
            "--every {s:?}: faults less than 500 ms apart leave nothing to measure; use 500ms or more"
        ));
    }
    Ok((lo, hi))
}

/// The p-quantile (0..=1) of sorted values.
pub(crate) fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

/// From the times the head moved (seconds since the start, ascending): the first moment
/// at or after `from` from which three blocks in a row came at most `gap` apart; seconds
/// after `from`.
pub fn back_to_rate(advances: &[f64], from: f64, gap: f64) -> Option<f64> {
    let after: Vec<f64> = advances.iter().copied().filter(|t| *t >= from).collect();
    // A run starts at the fault itself when the head was moving then.
    let mut points = vec![from];
    points.extend(after);
    (0..points.len().saturating_sub(3)).find_map(|i| {
        let w = &points[i..i + 4];
        w.windows(2)
            .all(|p| p[1] - p[0] <= gap)
            .then(|| w[0] - from)
    })
}

/// The longest time between two moves of the head, seconds (from `start` to `end`).
pub fn longest_stall(advances: &[f64], start: f64, end: f64) -> f64 {
    let mut prev = start;
    let mut longest: f64 = 0.0;
    for &t in advances.iter().filter(|t| **t >= start && **t <= end) {
        longest = longest.max(t - prev);
        prev = t;
    }
    longest.max(end - prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(n: usize) -> Topology {
        Topology {
            validators: (0..n)
                .map(|i| ValidatorNode {
                    name: format!("val-{i}"),
                    status: "127.0.0.1:1".parse().unwrap(),
                    els: (0..2)
                        .map(|k| ElNode {
                            name: format!("val-{i}-el-{k}"),
                            rpc: String::new(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_validator_is_down_when_it_or_all_its_clients_are() {
        let t = topo(4);
        assert_eq!(t.tolerated(), 1);
        assert_eq!(topo(7).tolerated(), 2);
        assert_eq!(t.validators_down(&set(&["val-0-el-0"])), 0);
        assert_eq!(t.validators_down(&set(&["val-0-el-0", "val-0-el-1"])), 1);
        assert_eq!(t.validators_down(&set(&["val-1", "val-0-el-1"])), 1);
        assert_eq!(
            t.validators_down(&set(&["val-1", "val-2-el-0", "val-2-el-1"])),
            2
        );
    }

    #[test]
    fn choices_never_take_down_more_validators_than_allowed() {
        let t = topo(4);
        let mut rng = Rng::new(7);
        // val-1 is down: only its own clients, and one client of each other validator,
        // may be hit; never another validator, never a second client of the same one.
        let down = set(&["val-1", "val-2-el-0"]);
        for _ in 0..500 {
            let c = choose(&mut rng, &t, &[FaultKind::Kill, FaultKind::Pause], &down, 1).unwrap();
            let mut with = down.clone();
            with.extend(c.targets.iter().cloned());
            assert!(t.validators_down(&with) <= 1, "{c:?}");
            assert!(!down.contains(&c.targets[0]));
        }
        // With every validator but one allowed, anything not down may be hit.
        let c = choose(&mut rng, &t, &[FaultKind::KillValidator], &down, 3).unwrap();
        assert!(c.targets[0].starts_with("val-") && !c.targets[0].contains("-el-"));
        // Nothing fits: no choice.
        let all_down = set(&["val-0"]);
        assert_eq!(
            choose(&mut rng, &t, &[FaultKind::KillValidator], &all_down, 1),
            None
        );
        // restart-all and supervisor wait until nothing is down.
        assert_eq!(
            choose(
                &mut rng,
                &t,
                &[FaultKind::RestartAll, FaultKind::Supervisor],
                &all_down,
                1
            ),
            None
        );
        let c = choose(&mut rng, &t, &[FaultKind::RestartAll], &BTreeSet::new(), 1).unwrap();
        assert_eq!(c.targets.len(), 12);
    }

    #[test]
    fn a_partition_cuts_off_one_validator_and_only_where_the_runtime_can() {
        let t = topo(4);
        let mut rng = Rng::new(11);
        let down = set(&["val-1"]);
        for _ in 0..200 {
            let c = choose(&mut rng, &t, &[FaultKind::Partition], &BTreeSet::new(), 1).unwrap();
            let v = &c.targets[0];
            assert_eq!(
                c.targets,
                vec![v.clone(), format!("{v}-el-0"), format!("{v}-el-1")],
                "a validator with its own clients"
            );
            // One of val-0's clients is down: val-0's group is not cut (all or nothing).
            let c = choose(
                &mut rng,
                &t,
                &[FaultKind::Partition],
                &set(&["val-0-el-1"]),
                1,
            )
            .unwrap();
            assert_ne!(c.targets[0], "val-0");
            // val-1 is down already: no partition fits under max 1.
            assert_eq!(
                choose(&mut rng, &t, &[FaultKind::Partition], &down, 1),
                None
            );
        }
        let why = Injector::Process
            .check(FaultKind::Partition)
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("--faults partition") && why.contains("runtime: docker"),
            "{why}"
        );
        let docker = Injector::Docker {
            profile: "x".into(),
        };
        assert!(docker.check(FaultKind::Partition).is_ok());
        assert!(Injector::Process.check(FaultKind::Pause).is_ok());
    }

    #[test]
    fn a_seed_repeats_its_choices_and_another_seed_does_not() {
        let t = topo(4);
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..40)
                .map(|_| {
                    let c = choose(&mut rng, &t, &[FaultKind::Kill], &BTreeSet::new(), 1).unwrap();
                    let d = rng.between(Duration::from_secs(5), Duration::from_secs(8));
                    (c.targets[0].clone(), d)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        // Every service is chosen sometimes, and intervals stay within the range.
        let picks = run(42);
        let hit: BTreeSet<&String> = picks.iter().map(|(s, _)| s).collect();
        assert!(hit.len() >= 8, "{hit:?}");
        assert!(picks
            .iter()
            .all(|(_, d)| *d >= Duration::from_secs(5) && *d <= Duration::from_secs(8)));
    }

    #[test]
    fn every_is_a_duration_or_a_range() {
        assert_eq!(
            parse_every("8s").unwrap(),
            (Duration::from_secs(8), Duration::from_secs(8))
        );
        assert_eq!(
            parse_every("5s..8s").unwrap(),
            (Duration::from_secs(5), Duration::from_secs(8))
        );
        assert!(parse_every("8s..5s").unwrap_err().contains("MIN..MAX"));
        assert!(parse_every("soon").unwrap_err().contains("not a duration"));
        assert!(parse_every("100ms").unwrap_err().contains("500 ms"));
    }

    #[test]
    fn production_is_back_at_rate_after_three_timely_blocks() {
        // Blocks every second, a 4 s stall after a fault at 10.2 s, then every second.
        let adv = [8.0, 9.0, 10.0, 14.5, 15.5, 16.5, 17.5];
        assert!((back_to_rate(&adv, 10.2, 1.5).unwrap() - 4.3).abs() < 1e-9);
        // Never stalled: back at once.
        let steady = [9.0, 10.0, 11.0, 12.0, 13.0];
        assert_eq!(back_to_rate(&steady, 9.5, 1.5), Some(0.0));
        // Not three timely blocks yet: unknown.
        assert_eq!(back_to_rate(&[11.0, 13.0], 10.0, 1.5), None);
        assert_eq!(longest_stall(&adv, 8.0, 18.0), 4.5);
        assert_eq!(longest_stall(&[], 0.0, 3.0), 3.0);
    }
}
