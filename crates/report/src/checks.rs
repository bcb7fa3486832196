//! The report's checks: each a pure function of the evidence, with its id, category,
//! severity, status, what was measured and the remedy.

use serde_json::Value;
use std::time::Duration;

use super::evidence::{Evidence, AGREEMENT_HEIGHTS};
use super::{Check, ServiceRow, Severity, Status, CANARY_ID, DRILL_ID};

/// Builds checks with the measurement time filled in.
struct Checks<'a> {
    e: &'a Evidence,
    out: Vec<Check>,
}

/// What one check found, before it is put in a [`Check`].
struct Found {
    status: Status,
    summary: String,
    evidence: Vec<String>,
    /// When it was measured, when that is not the evidence's common time (the canary,
    /// the drill: measured after the rest).
    at_ms: Option<u64>,
}

fn found(status: Status, summary: impl Into<String>, evidence: Vec<String>) -> Found {
    Found {
        status,
        summary: summary.into(),
        evidence,
        at_ms: None,
    }
}

impl Found {
    fn at(mut self, ms: u64) -> Found {
        self.at_ms = Some(ms);
        self
    }
}

/// Pass with `ok` when `problems` is empty; else `status` with `bad` and the problems as
/// evidence.
fn unless(problems: Vec<String>, ok: String, status: Status, bad: String) -> Found {
    if problems.is_empty() {
        found(Status::Pass, ok, vec![])
    } else {
        found(status, bad, problems)
    }
}

fn skipped(reason: impl Into<String>) -> Found {
    let r = reason.into();
    Found {
        status: Status::Skipped,
        summary: format!("not measured: {r}"),
        evidence: vec![],
        at_ms: None,
    }
}

impl Checks<'_> {
    fn add(&mut self, id: &str, title: &str, severity: Severity, remedy: &str, f: Found) {
        let category = match id.split('.').next().unwrap_or("") {
            "infra" => "infrastructure",
            "consensus" => "consensus",
            "execution" => "execution",
            "security" => "security",
            "monitoring" => "monitoring",
            "performance" => "performance",
            "ops" => "operations",
            _ => "high-availability",
        };
        let skipped_reason = (f.status == Status::Skipped).then(|| {
            f.summary
                .strip_prefix("not measured: ")
                .unwrap_or(&f.summary)
                .to_string()
        });
        self.out.push(Check {
            id: id.into(),
            category: category.into(),
            title: title.into(),
            severity,
            status: f.status,
            summary: f.summary,
            evidence: f.evidence,
            measured_at_ms: f.at_ms.unwrap_or(self.e.at_ms),
            skipped_reason,
            remedy: remedy.into(),
        });
    }
}

fn services(e: &Evidence) -> Vec<&Value> {
    e.status["supervisor"]["services"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// A planned stop began in the gap between blocks made at `from` and `to` (Unix
/// seconds): the last block can follow the `down` by a few seconds (the validators stop
/// after the clients they drive).
fn stop_in_gap(e: &Evidence, from: u64, to: u64) -> Option<&chainctl_core::state::PlannedStop> {
    e.planned_stops.iter().find(|s| {
        let down = s.down_at_ms / 1000;
        down + 10 >= from && down < to
    })
}

/// The gaps between blocks that a planned stop (`chainctl down`) made: not missed slots,
/// shown as planned downtime.
fn planned_downtime(e: &Evidence) -> Vec<String> {
    let Ok(b) = &e.chain else {
        return vec![];
    };
    b.windows(2)
        .filter_map(|w| {
            let s = stop_in_gap(e, w[0].timestamp, w[1].timestamp)?;
            Some(format!(
                "planned downtime: {}s between blocks {} and {} (`chainctl down` at {}, up again at {})",
                w[1].timestamp.saturating_sub(w[0].timestamp),
                w[0].number,
                w[1].number,
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(s.down_at_ms)
                ),
                s.up_at_ms.map_or("-".to_string(), |u| humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(u)
                )
                .to_string())
            ))
        })
        .collect()
}

/// The intervals between blocks in the window, but those of a planned stop. The time
/// since the last block counts as the last interval: a chain that stopped shows as one
/// long one, not as "none missed".
fn intervals(e: &Evidence) -> Vec<u64> {
    match &e.chain {
        Ok(b) => {
            let mut iv: Vec<u64> = b
                .windows(2)
                .filter(|w| stop_in_gap(e, w[0].timestamp, w[1].timestamp).is_none())
                .map(|w| w[1].timestamp.saturating_sub(w[0].timestamp))
                .collect();
            if let Some(last) = b.last() {
                let since = (e.at_ms / 1000).saturating_sub(last.timestamp);
                // Up to two block times after the last block, the next may still be on its
                // way (built, not yet decided); later than that it is late.
                if since as f64 > 2.0 * e.profile.chain.block_time.get().as_secs_f64() {
                    iv.push(since);
                }
            }
            iv
        }
        Err(_) => vec![],
    }
}

/// Every check, in report order.
pub fn all(e: &Evidence) -> Vec<Check> {
    let mut c = Checks { e, out: Vec::new() };
    infrastructure(&mut c);
    consensus(&mut c);
    execution(&mut c);
    security(&mut c);
    monitoring(&mut c);
    performance(&mut c);
    canary(&mut c);
    high_availability(&mut c);
    chaos(&mut c);
    backups(&mut c);
    c.out
}

/// `ops.backups`: a whole backup of this network younger than `backup.every`.
fn backups(c: &mut Checks) {
    let e = c.e;
    let f = backups_found(
        e.profile.backup.as_ref(),
        e.backups.as_ref(),
        e.at_ms / 1000,
    );
    c.add(
        "ops.backups",
        "A whole backup younger than the backup interval",
        Severity::Important,
        "Add `backup: {every: 6h, keep: 7, to: /var/backups/chainctl}` to the profile (the supervisor takes them), or run `chainctl backup --to DIR`; a damaged backup is replaced by the next one — see docs/backup.md.",
        f,
    );
}

fn backups_found(
    schedule: Option<&chainctl_core::profile::BackupSchedule>,
    newest: Option<&Result<Option<crate::evidence::NewestBackup>, String>>,
    now_unix: u64,
) -> Found {
    let (Some(s), Some(newest)) = (schedule, newest) else {
        return skipped(
            "no `backup:` in the profile: scheduled backups are off (add `backup: {every: 6h, keep: 7, to: DIR}`)",
        );
    };
    let every = humantime::format_duration(s.every.get());
    match newest {
        Err(err) => found(
            Status::Fail,
            format!("the backups in {} cannot be read: {err}", s.to.display()),
            vec![],
        ),
        Ok(None) => found(
            Status::Fail,
            format!(
                "no backup of this network in {} (backup.every {every})",
                s.to.display()
            ),
            vec![],
        ),
        Ok(Some(b)) => {
            let age_s = now_unix.saturating_sub(b.manifest.created_unix);
            let age = humantime::format_duration(Duration::from_secs(age_s));
            let mut ev = vec![format!(
                "{}: {age} old, {} bytes, {}",
                b.dir.display(),
                b.manifest.stored_bytes(),
                b.manifest
                    .services
                    .iter()
                    .filter(|x| x.name != chainctl_core::backup::NETWORK)
                    .map(|x| format!("{} at {}", x.name, x.height))
                    .collect::<Vec<_>>()
                    .join(", ")
            )];
            ev.push(match &b.manifest.secrets {
                Some(x) => format!(
                    "secrets: {} files, encrypted ({})",
                    x.files.len(),
                    x.encryption
                ),
                None => "secrets: not in the backup (backup.recipients encrypts them in)".into(),
            });
            ev.extend(
                b.manifest
                    .skipped
                    .iter()
                    .map(|k| format!("not in it: {}: {}", k.name, k.reason)),
            );
            ev.extend(b.damaged.iter().cloned());
            if !b.damaged.is_empty() {
                found(
                    Status::Fail,
                    format!(
                        "the newest backup is damaged: {} file(s) differ from its manifest",
                        b.damaged.len()
                    ),
                    ev,
                )
            } else if age_s > s.every.get().as_secs() {
                found(
                    Status::Fail,
                    format!(
                        "the newest whole backup is {age} old, older than backup.every ({every})"
                    ),
                    ev,
                )
            } else {
                found(
                    Status::Pass,
                    format!("a whole backup {age} old (every {every})"),
                    ev,
                )
            }
        }
    }
}

fn infrastructure(c: &mut Checks) {
    let e = c.e;
    let svcs = services(e);
    let not_up: Vec<String> = svcs
        .iter()
        .filter(|s| !matches!(s["state"].as_str(), Some("ready" | "healthy")))
        // A one-shot job that finished cleanly (and is not restarted) is done, not down.
        .filter(|s| !(s["state"] == "stopped" && s["last_exit"] == "exit code 0"))
        .map(|s| {
            format!(
                "{}: {}{}",
                s["name"].as_str().unwrap_or("?"),
                s["state"].as_str().unwrap_or("?"),
                s["detail"]
                    .as_str()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let f = if svcs.is_empty() {
        found(Status::Fail, "the supervisor lists no service", vec![])
    } else if not_up.is_empty() {
        found(
            Status::Pass,
            format!("all {} services are running", svcs.len()),
            vec![],
        )
    } else {
        found(
            Status::Fail,
            format!(
                "{} of {} services are not running",
                not_up.len(),
                svcs.len()
            ),
            not_up,
        )
    };
    c.add(
        "infra.services_running",
        "Every service is running",
        Severity::Critical,
        "See `chainctl status` and `chainctl logs SERVICE`; `chainctl restart SERVICE` clears given-up.",
        f,
    );

    let window = e.window.as_secs();
    let restarted: Vec<String> = svcs
        .iter()
        .filter(|s| {
            s["restarts"].as_u64().unwrap_or(0) > 0
                && s["uptime_secs"].as_u64().is_some_and(|u| u < window)
        })
        .map(|s| {
            format!(
                "{}: {} restarts in all, current run started {}s ago, last exit {}",
                s["name"].as_str().unwrap_or("?"),
                s["restarts"],
                s["uptime_secs"],
                s["last_exit"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let n = restarted.len();
    let f = unless(
        restarted,
        format!("no service restarted in the last {window}s"),
        Status::Warn,
        format!("{n} services restarted in the last {window}s"),
    );
    c.add(
        "infra.restarts",
        "No restarts in the window",
        Severity::Important,
        "Read the restarted services' logs (`chainctl logs SERVICE -n 200`) for why they exited.",
        f,
    );

    let ws = e
        .websocket
        .iter()
        .map(|r| ("gateway".to_string(), r))
        .chain(e.el_websocket.iter().map(|(n, r)| (n.clone(), r)));
    let (mut down, mut ev) = (Vec::new(), Vec::new());
    for (s, n, p, r) in &e.endpoints {
        if let Err(err) = r {
            down.push(format!("{s}.{n} (port {p}): {err}"));
        }
    }
    let mut ws_ok = 0;
    for (s, r) in ws {
        match r {
            Ok(()) => ws_ok += 1,
            Err(err) => down.push(format!("{s} WebSocket: {err}")),
        }
    }
    ev.push(format!(
        "{} ports probed ({} answering), {ws_ok} WebSocket upgrades answered",
        e.endpoints.len(),
        e.endpoints.iter().filter(|x| x.3.is_ok()).count()
    ));
    match &e.metrics {
        Ok((code, _)) => ev.push(format!("API /metrics: HTTP {code}")),
        Err(m) => ev.push(format!("API /metrics: {m}")),
    }
    let f = if e.endpoints.is_empty() {
        found(
            Status::Fail,
            "no endpoint to probe: is ports.json there?",
            ev,
        )
    } else if down.is_empty() {
        found(
            Status::Pass,
            format!(
                "all {} declared endpoints and {ws_ok} WebSocket endpoints answer",
                e.endpoints.len()
            ),
            ev,
        )
    } else {
        let n = down.len();
        ev.extend(down);
        found(Status::Fail, format!("{n} endpoints do not answer"), ev)
    };
    c.add(
        "infra.endpoints",
        "Every declared endpoint answers (RPC, WebSocket, Engine API, P2P, API)",
        Severity::Critical,
        "Check the service behind each silent port (`chainctl status`, `chainctl logs`).",
        f,
    );

    let conflicts: Vec<String> = e
        .ports
        .iter()
        .filter(|p| p.host.starts_with("CONFLICT"))
        .map(|p| {
            format!(
                "{}.{} {} ({}): {}",
                p.service, p.name, p.port, p.protocol, p.host
            )
        })
        .collect();
    let n = conflicts.len();
    let f = unless(
        conflicts,
        format!(
            "none of the {} allocated ports is held by another program",
            e.ports.len()
        ),
        Status::Fail,
        format!("{n} ports are held by other programs"),
    );
    c.add(
        "infra.port_conflicts",
        "No port conflicts with the host",
        Severity::Critical,
        "Stop the programs holding them, or `chainctl down` and `up` to move chainctl's ports.",
        f,
    );

    let disks = e.status["health"]["host"]["disks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let volatile: Vec<String> = e
        .data_fs
        .iter()
        .filter(|(_, _, t)| matches!(t.as_str(), "tmpfs" | "ramfs"))
        .map(|(s, p, t)| format!("{s}: {} is on {t} (lost at reboot)", p.display()))
        .collect();
    let mut ev: Vec<String> = disks
        .iter()
        .map(|d| {
            format!(
                "{}: {:.1}% used, {} MB free ({}), services {}",
                d["path"].as_str().unwrap_or("?"),
                d["used_percent"].as_f64().unwrap_or(0.0),
                d["available_bytes"].as_u64().unwrap_or(0) / 1_000_000,
                d["level"].as_str().unwrap_or("?"),
                d["services"]
            )
        })
        .collect();
    ev.extend(volatile.iter().cloned());
    let critical = disks.iter().any(|d| d["level"] == "critical");
    let warning = disks.iter().any(|d| d["level"] == "warning");
    let f = if disks.is_empty() {
        found(
            Status::Fail,
            "no measurement yet: the host probe has not run (run the report again in a few seconds)",
            ev,
        )
    } else if critical {
        found(
            Status::Fail,
            "a data dir's file system is over the critical threshold",
            ev,
        )
    } else if warning || !volatile.is_empty() {
        found(
            Status::Warn,
            "a data dir is on volatile storage or over the warning threshold",
            ev,
        )
    } else {
        found(
            Status::Pass,
            "data dirs on persistent storage with free space",
            ev,
        )
    };
    c.add(
        "infra.storage",
        "Data dirs on persistent storage with free space",
        Severity::Critical,
        "Free space or grow the volume; put the state dir (`state_dir:`) on a persistent disk.",
        f,
    );
}

fn consensus(c: &mut Checks) {
    let e = c.e;
    let bt = e.profile.chain.block_time.get().as_secs_f64().max(0.001);
    let validators = e.profile.validators.count;
    let f = match &e.chain {
        Err(err) => found(
            Status::Fail,
            format!("the chain could not be read: {err}"),
            vec![],
        ),
        Ok(blocks) => {
            let iv = intervals(e);
            let span: u64 = iv.iter().sum();
            let expected = (span as f64 / bt).round() as u64;
            let got = blocks.len().saturating_sub(1) as u64;
            let missed: u64 = iv
                .iter()
                .filter(|i| **i as f64 > 1.5 * bt)
                .map(|i| ((*i as f64 / bt).round() as u64).saturating_sub(1))
                .sum();
            let longest = iv.iter().copied().max().unwrap_or(0);
            let ev = vec![
                format!(
                    "blocks {}..{} over {span}s (block_time {bt}s): {got} blocks, {expected} slots, {missed} missed",
                    blocks.first().map_or(0, |b| b.number),
                    blocks.last().map_or(0, |b| b.number)
                ),
                format!("longest interval {longest}s"),
            ];
            let mut ev = ev;
            ev.extend(planned_downtime(e));
            if got == 0 {
                found(Status::Fail, "no block was finalized in the window", ev)
            } else if (longest as f64) > 3.0 * bt || missed * 10 > expected.max(1) {
                found(
                    Status::Fail,
                    format!("{missed} of {expected} slots missed; longest gap {longest}s"),
                    ev,
                )
            } else if missed > 0 {
                found(
                    Status::Warn,
                    format!("{missed} of {expected} slots missed"),
                    ev,
                )
            } else {
                found(
                    Status::Pass,
                    format!("a block every {bt}s, none missed ({got} blocks)"),
                    ev,
                )
            }
        }
    };
    c.add(
        "consensus.block_production",
        "Finalized blocks at the configured block time",
        Severity::Critical,
        "Missed slots come from validators down or partitioned: `chainctl status` lists each validator's height and round.",
        f,
    );

    let f = match validators {
        0 => found(
            Status::Fail,
            "no validators: nothing runs consensus (an EL producing blocks alone is dev mode)",
            vec![],
        ),
        n if n >= 4 => found(
            Status::Pass,
            format!("{n} validators tolerate {} faulty", (n - 1) / 3),
            vec![],
        ),
        n => found(
            Status::Warn,
            format!("{n} validators tolerate no fault (f = 0): one down halts the chain"),
            vec![],
        ),
    };
    c.add(
        "consensus.validator_count",
        "At least 4 validators (f ≥ 1)",
        Severity::Important,
        "Set `validators.count: 4` (3f + 1 validators tolerate f faults).",
        f,
    );

    let f = match &e.agreement {
        Err(err) => found(Status::Fail, format!("not measured: {err}"), vec![]),
        Ok(a) => {
            let mut ev = Vec::new();
            let reference = a.per_el.iter().find_map(|(_, r)| r.as_ref().ok());
            let mut bad = 0;
            for (el, r) in &a.per_el {
                match (r, reference) {
                    (Err(err), _) => {
                        bad += 1;
                        ev.push(format!("{el}: {err}"));
                    }
                    (Ok(h), Some(reference)) => {
                        let diff = h.iter().zip(reference).position(|(x, y)| x != y);
                        match diff {
                            None => ev.push(format!(
                                "{el}: heights {}..{} identical, {} at {}",
                                a.from,
                                a.to,
                                h.last().map_or("-", |s| s.as_str()),
                                a.to
                            )),
                            Some(i) => {
                                bad += 1;
                                ev.push(format!(
                                    "{el}: differs at height {}: {} vs {}",
                                    a.from + i as u64,
                                    h[i],
                                    reference[i]
                                ))
                            }
                        }
                    }
                    _ => {}
                }
            }
            if bad == 0 {
                found(
                    Status::Pass,
                    format!(
                        "all {} execution clients hold the same {} hashes ({}..{})",
                        a.per_el.len(),
                        a.to - a.from + 1,
                        a.from,
                        a.to
                    ),
                    ev,
                )
            } else {
                found(
                    Status::Fail,
                    format!(
                        "{bad} of {} execution clients disagree or do not answer",
                        a.per_el.len()
                    ),
                    ev,
                )
            }
        }
    };
    c.add(
        "consensus.agreement",
        &format!("All validators agree on the last {AGREEMENT_HEIGHTS} hashes"),
        Severity::Critical,
        "A client on another chain must be resynced from scratch; find out how it diverged first (its log).",
        f,
    );

    let mut producing = Vec::new();
    let mut quiet = Vec::new();
    let mut unanswered = Vec::new();
    for u in &e.undriven {
        match &u.heads {
            Err(err) => unanswered.push(format!(
                "{} ({}): does not answer eth_blockNumber ({err}): cannot tell whether it makes blocks by itself",
                u.service, u.addr
            )),
            // A follower of our own chain advances too; a head that moves on another
            // chain (or one we cannot compare) is a client making its own blocks.
            Ok((h1, h2)) if h2 > h1 && u.same_chain != Some(true) => producing.push(format!(
                "{} ({}): head {h1} → {h2} in 2s, block 1 {}, and no validator of this network drives it",
                u.service,
                u.addr,
                match u.same_chain {
                    Some(true) => "is ours",
                    Some(false) => "is NOT ours",
                    None => "unknown",
                }
            )),
            Ok((h1, h2)) => quiet.push(format!(
                "{}: head {h1} → {h2} ({})",
                u.service,
                if h2 > h1 { "following our chain" } else { "not advancing" }
            )),
        }
    }
    let f = if !producing.is_empty() {
        let n = producing.len();
        producing.extend(unanswered);
        found(
            Status::Fail,
            format!("{n} clients produce blocks by themselves (dev mode)"),
            producing,
        )
    } else if !unanswered.is_empty() {
        let n = unanswered.len();
        unanswered.extend(quiet);
        found(
            Status::Warn,
            format!("{n} RPC services outside the validators did not answer: not verified"),
            unanswered,
        )
    } else if e.undriven.is_empty() {
        found(
            Status::Pass,
            "no RPC service runs outside the validators' execution clients",
            vec![],
        )
    } else {
        found(
            Status::Pass,
            format!(
                "every block-producing client is driven by this network's validators ({} other RPC services checked)",
                e.undriven.len()
            ),
            quiet,
        )
    };
    c.add(
        "consensus.no_dev_mode",
        "No execution client produces blocks by itself",
        Severity::Critical,
        "Stop the client's dev mode (`--dev`, automine) and let validators drive it: list it under `validators.execution` or `drives:`.",
        f,
    );

    let violations: Vec<String> = e.status["health"]["validators"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v["consensus_violations"].as_u64().unwrap_or(0) > 0)
                .map(|(n, v)| format!("{n}: {} violations", v["consensus_violations"]))
                .collect()
        })
        .unwrap_or_default();
    let probed = e.status["health"]["validators"]
        .as_object()
        .is_some_and(|m| !m.is_empty());
    let f = if validators == 0 {
        skipped("the profile has no validators")
    } else if !probed {
        found(
            Status::Fail,
            "no probe of the validators yet (run the report again in a few seconds)",
            vec![],
        )
    } else if violations.is_empty() {
        found(Status::Pass, "zero consensus violations", vec![])
    } else {
        found(Status::Fail, "consensus violations were seen", violations)
    };
    c.add(
        "consensus.violations",
        "Zero consensus violations",
        Severity::Critical,
        "An execution client answered VALID and another INVALID to one block: stop and compare their versions and logs.",
        f,
    );
}

fn execution(c: &mut Checks) {
    let e = c.e;
    let max_lag = e.profile.failover.max_lag_blocks;
    let els = e.status["health"]["els"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut bad = Vec::new();
    let mut ev = Vec::new();
    for (name, h) in &els {
        let line = format!(
            "{name}: {}, head {}, lag {}, syncing {}, version {}",
            h["state"].as_str().unwrap_or("?"),
            h["head"],
            h["lag"],
            h["syncing"],
            h["version"].as_str().unwrap_or("?")
        );
        let ok = h["state"] == "healthy"
            && h["syncing"] != true
            && h["lag"].as_u64().is_some_and(|l| l <= max_lag);
        if !ok {
            bad.push(line.clone());
        }
        ev.push(line);
    }
    let f = if els.is_empty() && e.profile.validators.count > 0 {
        found(
            Status::Fail,
            "no probe of the execution clients yet (run the report again in a few seconds)",
            vec![],
        )
    } else if els.is_empty() {
        skipped("the profile has no validator-driven execution client")
    } else if bad.is_empty() {
        found(
            Status::Pass,
            format!(
                "all {} execution clients healthy and in sync (lag ≤ {max_lag})",
                els.len()
            ),
            ev,
        )
    } else {
        found(
            Status::Fail,
            format!(
                "{} of {} execution clients unhealthy, syncing or lagging",
                bad.len(),
                els.len()
            ),
            ev,
        )
    };
    c.add(
        "execution.synced",
        "Each execution client is synced",
        Severity::Critical,
        "`chainctl status` shows why a client is unhealthy; a lagging one catches up from its validator, or restart it.",
        f,
    );

    let validators = e.status["health"]["validators"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut ev = Vec::new();
    let mut bad = 0;
    for (v, vh) in &validators {
        let active = vh["active_el"].as_str().unwrap_or("");
        let backups: Vec<(&String, &Value)> = els
            .iter()
            .filter(|(n, h)| h["validator"] == v.as_str() && n.as_str() != active)
            .collect();
        let good: Vec<&String> = backups
            .iter()
            .filter(|(_, h)| {
                h["state"] == "healthy"
                    && h["syncing"] != true
                    && h["lag"].as_u64().is_some_and(|l| l <= max_lag)
            })
            .map(|(n, _)| *n)
            .collect();
        if good.is_empty() {
            bad += 1;
            ev.push(if backups.is_empty() {
                format!("{v}: active {active}, no backup execution client")
            } else {
                format!(
                    "{v}: active {active}, backups {} none healthy and in sync",
                    backups
                        .iter()
                        .map(|(n, h)| format!(
                            "{n} ({} lag {})",
                            h["state"].as_str().unwrap_or("?"),
                            h["lag"]
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        } else {
            ev.push(format!(
                "{v}: active {active}, backup in sync: {}",
                good.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let f = if validators.is_empty() && e.profile.validators.count > 0 {
        found(
            Status::Fail,
            "no probe of the validators yet (run the report again in a few seconds)",
            vec![],
        )
    } else if validators.is_empty() {
        skipped("the profile has no validators")
    } else if bad == 0 {
        found(
            Status::Pass,
            format!(
                "each of {} validators has a backup in sync",
                validators.len()
            ),
            ev,
        )
    } else {
        found(
            Status::Fail,
            format!("{bad} validators have no backup in sync (a backup out of sync is no backup)"),
            ev,
        )
    };
    c.add(
        "execution.backup",
        "Each validator has a backup execution client in sync",
        Severity::Critical,
        "List two clients per validator (`validators.execution: [builtin, builtin]`) and keep both healthy.",
        f,
    );
}

fn security(c: &mut Checks) {
    let e = c.e;
    let bad: Vec<String> = e
        .jwt
        .iter()
        .flat_map(|(pair, p)| p.iter().map(move |x| format!("{pair}: {x}")))
        .collect();
    let unpaired: Vec<String> = e.status["health"]["els"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(n, h)| h["engine_auth_error"].as_str().map(|x| format!("{n}: {x}")))
                .collect()
        })
        .unwrap_or_default();
    let f = if e.jwt.is_empty() {
        skipped("the profile has no consensus↔execution pair")
    } else if bad.is_empty() && unpaired.is_empty() {
        found(
            Status::Pass,
            format!(
                "{} JWT secrets: 64 hex chars, mode 0600 in a 0700 dir, both ends read the same file, and every Engine API accepts its validator's token",
                e.jwt.len()
            ),
            vec![],
        )
    } else {
        let mut ev = bad.clone();
        ev.extend(unpaired.iter().cloned());
        found(
            Status::Fail,
            format!("{} problems with JWT secrets", ev.len()),
            ev,
        )
    };
    c.add(
        "security.jwt_files",
        "JWT secrets are private and correctly paired",
        Severity::Critical,
        "`chmod 600` the file (`chainctl jwt verify` names each problem); `chainctl jwt rotate PAIR` writes a new one and restarts the pair.",
        f,
    );

    // Every secret: files 0600 (or stricter), directories 0700, all owned by the state
    // dir's owner — the JWT check above is about pairing; this one is about every file.
    let sf = &e.secret_files;
    let problems: Vec<String> = sf.problems().into_iter().map(|p| p.text).collect();
    let files = sf.files();
    let f = if files == 0 && problems.is_empty() {
        skipped("no secret file was found to check (no secrets dir, no TLS key)")
    } else if problems.is_empty() {
        found(
            Status::Pass,
            format!(
                "{files} secret files (JWT secrets, validator keys, control and API tokens, TLS keys) are 0600 or stricter in 0700 directories, owned by the state dir's owner"
            ),
            vec![],
        )
    } else {
        found(
            Status::Fail,
            format!("{} problems with secret files", problems.len()),
            problems,
        )
    };
    c.add(
        "security.secret_files",
        "Every secret file is private",
        Severity::Critical,
        "Apply each `chmod`/`chown` the evidence names; then rotate what others could read (`chainctl jwt rotate`, a new API token, a new TLS key).",
        f,
    );

    let wrong: Vec<String> = e
        .engine_bad_token
        .iter()
        .filter(|(_, r)| r.as_ref().ok() != Some(&401))
        .map(|(n, r)| match r {
            Ok(code) => format!("{n}: answered HTTP {code} to a token signed with a random secret"),
            Err(err) => format!("{n}: {err}"),
        })
        .collect();
    let f = if e.engine_bad_token.is_empty() {
        skipped("no Engine API in this profile")
    } else {
        let n = wrong.len();
        unless(
            wrong,
            format!(
                "all {} Engine APIs refuse a token signed with a random secret (401)",
                e.engine_bad_token.len()
            ),
            Status::Fail,
            format!("{n} Engine APIs do not refuse a bad token"),
        )
    };
    c.add(
        "security.engine_auth",
        "The Engine API refuses a bad token",
        Severity::Critical,
        "Start the client with its JWT secret file (`--authrpc.jwtsecret` or equivalent); an Engine API without JWT lets anyone drive the chain.",
        f,
    );

    let f = match &e.api_without_token {
        Ok(401) => found(Status::Pass, "/api/v1/status without a token: 401", vec![]),
        Ok(code) => found(
            Status::Fail,
            format!("/api/v1/status without a token answered {code}"),
            vec![],
        ),
        Err(err) => found(
            Status::Fail,
            format!("the API did not answer: {err}"),
            vec![],
        ),
    };
    c.add(
        "security.api_token",
        "The API requires a token",
        Severity::Critical,
        "The token is in STATE/secrets/api.token; a chainctl that serves /api/v1 without it is a bug: report it.",
        f,
    );

    let mut ev: Vec<String> = e
        .wildcard_listeners
        .iter()
        .map(|(s, n, p)| format!("{s}.{n} (port {p}) listens on every address"))
        .collect();
    for (what, ip) in [
        ("listen.rpc", e.profile.listen.rpc),
        ("listen.api", e.profile.listen.api),
    ] {
        if ip.is_unspecified() {
            ev.push(format!("{what} is {ip}"));
        }
    }
    let n = ev.len();
    let f = unless(
        ev,
        "no listener on 0.0.0.0 or ::".into(),
        Status::Warn,
        format!("{n} listeners reachable from other hosts"),
    );
    c.add(
        "security.listeners",
        "No listener on every address",
        Severity::Important,
        "Bind RPC and API to loopback (`listen:`) and publish through a proxy or firewall; P2P is meant to be reachable, restrict it to your peers.",
        f,
    );

    // The listen addresses, not the ones the report connected to (0.0.0.0 is reached
    // through 127.0.0.1 but listens everywhere).
    let l = &e.profile.listen;
    let mut plain_beyond = Vec::new();
    let mut ev = Vec::new();
    let gateway = e.status["gateway"].as_str().map(|a| {
        (
            "the gateway",
            a.to_string(),
            l.gateway(),
            e.profile.gateway.tls.is_some(),
        )
    });
    for (what, addr, ip, tls) in [("the API", e.api_addr.to_string(), l.api, e.api_tls)]
        .into_iter()
        .chain(gateway)
    {
        if tls {
            ev.push(format!("{what} at {addr} speaks HTTPS only"));
        } else if ip.is_loopback() {
            ev.push(format!("{what} at {addr} is plain HTTP on loopback only"));
        } else {
            plain_beyond.push(format!("{what} at {addr} ({ip})"));
        }
    }
    if !l.rpc.is_loopback() && e.plan.services.iter().any(|s| s.client.is_some()) {
        plain_beyond.push(format!(
            "the execution clients' endpoints on listen.rpc ({})",
            l.rpc
        ));
    }
    let f = if plain_beyond.is_empty() {
        found(Status::Pass, "plain HTTP on loopback only".to_string(), ev)
    } else {
        let n = plain_beyond.len();
        ev.extend(
            plain_beyond
                .iter()
                .map(|p| format!("{p}: plain HTTP beyond loopback")),
        );
        if l.insecure {
            ev.push("listen.insecure: true allows it".into());
        }
        found(
            Status::Warn,
            format!(
                "{n} endpoints serve plain HTTP beyond loopback: {}",
                plain_beyond.join(", ")
            ),
            ev,
        )
    };
    c.add(
        "security.tls",
        "TLS wherever HTTP leaves the host",
        Severity::Important,
        "Set `api.tls` and `gateway.tls: {cert: FILE, key: FILE}`, keep `listen.rpc` on loopback and open only the gateway (`listen.gateway`), then remove `listen.insecure`.",
        f,
    );

    let s = &e.log_scan;
    let ev = vec![format!(
        "{} secrets looked for in {} log files ({} bytes)",
        s.secrets, s.files, s.bytes
    )];
    let f = if s.found.is_empty() && (s.secrets == 0 || s.files == 0) {
        // Nothing looked for, or nowhere to look: not a pass.
        skipped(format!(
            "nothing to scan: {} secrets, {} log files",
            s.secrets, s.files
        ))
    } else if s.found.is_empty() {
        found(Status::Pass, "no secret appears in any log file", ev)
    } else {
        let mut ev = ev;
        ev.extend(s.found.iter().cloned());
        found(
            Status::Fail,
            format!("{} secrets appear in log files", s.found.len()),
            ev,
        )
    };
    c.add(
        "security.secrets_in_logs",
        "No secret appears in any log file",
        Severity::Critical,
        "Rotate every leaked secret (`chainctl jwt rotate`), delete the log files that hold it, and find the program that printed it.",
        f,
    );
}

fn monitoring(c: &mut Checks) {
    let e = c.e;
    let f = match &e.metrics {
        Ok((200, text)) => {
            let series = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .count();
            found(
                Status::Pass,
                format!("/metrics answers with {series} series"),
                vec![],
            )
        }
        Ok((code, _)) => found(Status::Fail, format!("/metrics answered {code}"), vec![]),
        Err(err) => found(
            Status::Fail,
            format!("/metrics did not answer: {err}"),
            vec![],
        ),
    };
    c.add(
        "monitoring.metrics",
        "/metrics answers",
        Severity::Important,
        "chainctl's API serves it; see `chainctl status` for the API address.",
        f,
    );

    let f = match &e.rules {
        Err(err) => skipped(err.clone()),
        Ok(r) => match &r.promtool {
            Err(err) if err.contains("not installed") => skipped(err.clone()),
            Err(err) => found(
                Status::Fail,
                "the alert rules do not load",
                vec![err.clone()],
            ),
            Ok(out) if r.missing.is_empty() => found(
                Status::Pass,
                format!(
                    "{} alert rules valid; every metric they use is served",
                    r.rules
                ),
                vec![out.clone()],
            ),
            Ok(out) => found(
                Status::Warn,
                format!(
                    "the rules use {} metrics /metrics does not serve",
                    r.missing.len()
                ),
                vec![out.clone(), r.missing.join(", ")],
            ),
        },
    };
    c.add(
        "monitoring.alert_rules",
        "Alert rules present and valid",
        Severity::Nice,
        "Load docs/monitoring/alerts.yml into your Prometheus (`rule_files:`); install `promtool` to let chainctl check them.",
        f,
    );

    let f = if e.oversized_logs.is_empty() {
        found(
            Status::Pass,
            "every log file is within its rotation size",
            e.plan
                .services
                .first()
                .map(|s| {
                    vec![format!(
                        "rotated at {} bytes, {} kept",
                        s.logs.max_bytes, s.logs.keep
                    )]
                })
                .unwrap_or_default(),
        )
    } else {
        found(
            Status::Fail,
            "log files over their rotation size",
            e.oversized_logs
                .iter()
                .map(|(p, n)| format!("{}: {n} bytes", p.display()))
                .collect(),
        )
    };
    c.add(
        "monitoring.log_rotation",
        "Logs rotate",
        Severity::Nice,
        "Set `supervisor.logs: {max_bytes, keep}`; a log that outgrows it means the relay stopped: restart the service.",
        f,
    );
}

fn performance(c: &mut Checks) {
    let e = c.e;
    let f = match &e.chain {
        Err(err) => skipped(format!("the chain could not be read: {err}")),
        Ok(b) => {
            let txs: usize = b.iter().skip(1).map(|b| b.txs).sum();
            let span = b
                .first()
                .zip(b.last())
                .map_or(0, |(a, z)| z.timestamp.saturating_sub(a.timestamp))
                .max(1);
            // A figure, not a verdict: 0 transactions is no failure, and no success.
            found(
                Status::Info,
                format!(
                    "{txs} transactions in {span}s: {:.1} tx/s",
                    txs as f64 / span as f64
                ),
                vec![format!(
                    "blocks {}..{}",
                    b.first().map_or(0, |b| b.number),
                    b.last().map_or(0, |b| b.number)
                )],
            )
        }
    };
    c.add(
        "performance.throughput",
        "Transactions in the window",
        Severity::Nice,
        "`chainctl load` measures what the network holds.",
        f,
    );

    let iv = intervals(e);
    let bt = e.profile.chain.block_time.get().as_secs_f64();
    let mut sorted: Vec<f64> = iv.iter().map(|&i| i as f64).collect();
    sorted.sort_by(f64::total_cmp);
    let (p50, p99) = (
        chainctl_common::units::pct(&sorted, 0.5),
        chainctl_common::units::pct(&sorted, 0.99),
    );
    let ev = vec![format!(
        "{} intervals, p50 {p50}s, p99 {p99}s, target {bt}s",
        iv.len()
    )];
    let f = if sorted.is_empty() {
        skipped("fewer than two blocks in the window")
    } else if p99 <= 2.0 * bt.max(1.0) {
        // Information: whether blocks come on time is `consensus.block_production`'s
        // verdict.
        found(
            Status::Info,
            format!("block time p50 {p50}s, p99 {p99}s"),
            ev,
        )
    } else {
        found(
            Status::Warn,
            format!("block time p99 {p99}s is over twice the target"),
            ev,
        )
    };
    c.add(
        "performance.block_time",
        "Block time p50 and p99",
        Severity::Important,
        "Slow blocks come from slow proposers: check CPU and the validators' Engine API latency.",
        f,
    );
}

/// The canary: sent, included, finalized, and the same receipt from every client.
fn canary(c: &mut Checks) {
    let f = match &c.e.canary {
        Err(why) => skipped(format!("untested: {why}")),
        Ok(k) => canary_found(k),
    };
    c.add(
        CANARY_ID,
        "Canary transaction: sent, finalized, the same receipt everywhere",
        Severity::Critical,
        "Read where it stopped: a refusal names the gateway's or client's reason; a transaction not included points at the pool or the proposers (`chainctl status`, `chainctl logs val-N`); receipts that differ mean the execution clients disagree on what the block did: stop and compare them before anything else.",
        f,
    );
}

fn canary_found(k: &crate::canary::Canary) -> Found {
    let secs = |d: Option<std::time::Duration>| {
        d.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
    };
    let mut ev = vec![
        format!("key: {}, account {}", k.key, k.from),
        format!(
            "sent through {}: {}",
            k.via,
            match (&k.hash, k.nonce) {
                (Some(h), Some(n)) => format!("{h} (nonce {n}, value 0 to itself)"),
                _ => "nothing taken".into(),
            }
        ),
    ];
    if let Some((n, h)) = &k.block {
        ev.push(format!(
            "included in block {n} ({h}) after {}, finalized after {}",
            secs(k.included_after),
            secs(k.finalized_after)
        ));
    }
    if let (Some(g), Some(p)) = (k.gas_used, k.effective_gas_price) {
        ev.push(format!(
            "cost: {g} gas × {p} wei = {} wei",
            k.cost_wei().unwrap_or(0)
        ));
    }
    let f = if let Some(stopped) = &k.stopped {
        found(Status::Fail, format!("the canary stopped: {stopped}"), ev)
    } else {
        let problems = receipt_problems(&k.receipts);
        for (el, r) in &k.receipts {
            ev.push(match r {
                Ok(r) => format!(
                    "{el}: receipt status {}, gas used {}, block {}",
                    r["status"], r["gasUsed"], r["blockNumber"]
                ),
                Err(e) => format!("{el}: {e}"),
            });
        }
        if k.receipts.is_empty() {
            found(
                Status::Fail,
                "the canary was finalized but no execution client was asked for its receipt",
                ev,
            )
        } else if problems.is_empty() {
            found(
                Status::Pass,
                format!(
                    "finalized {} after it was sent; all {} execution clients return the same successful receipt",
                    secs(k.finalized_after),
                    k.receipts.len()
                ),
                ev,
            )
        } else {
            ev.extend(problems.iter().cloned());
            found(Status::Fail, problems[0].clone(), ev)
        }
    };
    f.at(k.measured_at_ms)
}

/// What is wrong with the receipts: a client without one, a failed status, clients that
/// disagree (each named with the fields it differs in from the most common receipt).
fn receipt_problems(receipts: &[(String, Result<Value, String>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (el, r) in receipts {
        match r {
            Err(e) => out.push(format!("{el} returns no receipt: {e}")),
            Ok(r) if r["status"] != "0x1" => out.push(format!(
                "{el}: the canary failed (receipt status {})",
                r["status"]
            )),
            Ok(_) => {}
        }
    }
    let got: Vec<(&String, &Value)> = receipts
        .iter()
        .filter_map(|(el, r)| r.as_ref().ok().map(|r| (el, r)))
        .collect();
    // The receipt most clients return is the reference.
    let reference = got
        .iter()
        .max_by_key(|(_, r)| got.iter().filter(|(_, o)| o == r).count())
        .map(|(_, r)| *r);
    if let Some(reference) = reference {
        for (el, r) in &got {
            let fields: Vec<String> = crate::canary::RECEIPT_FIELDS
                .iter()
                .filter(|f| r[**f] != reference[**f])
                .map(|f| format!("{f} {} (others {})", r[*f], reference[*f]))
                .collect();
            if !fields.is_empty() {
                out.push(format!(
                    "receipts differ between execution clients: {el} has {}",
                    fields.join(", ")
                ));
            }
        }
    }
    out
}

fn high_availability(c: &mut Checks) {
    let e = c.e;
    let bt_ms = e.profile.chain.block_time.get().as_millis() as u64;
    let f = match &e.drill {
        None => skipped(
            "failover is untested: run `chainctl report --drill` to kill an active execution client and measure the switch",
        ),
        Some(Err(err)) => found(Status::Fail, format!("the drill could not run: {err}"), vec![]),
        Some(Ok(d)) => {
            let ev = vec![
                format!("kill -9 of {} (active EL of {})", d.killed, d.validator),
                format!(
                    "longest wait for the head to move from the kill on, read every 100 ms through an endpoint not killed: {}",
                    d.observed_gap_ms.map_or("unknown".into(), |g| format!("{g} ms"))
                ),
                format!(
                    "switched to {}{}, gap {} as the validator recorded it",
                    d.switched_to.as_deref().unwrap_or("nothing"),
                    d.switch_kind.as_ref().map_or(String::new(), |k| format!(" ({k})")),
                    d.gap_ms.map_or("unknown".into(), |g| format!("{g} ms"))
                ),
                format!(
                    "longest block interval in the 10 s after the kill: {}",
                    d.longest_interval_s.map_or("unknown".into(), |s| format!("{s}s"))
                ),
                format!("heights missed beyond the failover gap: {}", d.missed_heights),
                match d.restored_after {
                    Some(t) => format!("{} restarted and healthy again after {:.1}s", d.killed, t.as_secs_f64()),
                    None => format!("{} was not healthy again within 90 s", d.killed),
                },
            ];
            // The report's own observation decides; the validator's word corroborates.
            let gap_ok = d.observed_gap_ms.is_some_and(|g| g <= 3 * bt_ms.max(1000));
            let f = if d.switched_to.is_some() && gap_ok && d.missed_heights == 0 && d.restored_after.is_some() {
                found(
                    Status::Pass,
                    format!(
                        "failover: the head moved again {} ms after the kill at the latest (the validator: {} ms), no height missed, client restored",
                        d.observed_gap_ms.unwrap_or(0),
                        d.gap_ms.map_or("?".into(), |g| g.to_string())
                    ),
                    ev,
                )
            } else {
                found(Status::Fail, "the failover drill did not pass", ev)
            };
            f.at(d.measured_at_ms)
        }
    };
    c.add(
        DRILL_ID,
        "Failover drill: kill the active execution client",
        Severity::Critical,
        "Give every validator a second execution client that is kept in sync; check `failover:` in the profile.",
        f,
    );
}

/// A chaos record older than this is shown as stale.
const CHAOS_FRESH_MS: u64 = 7 * 24 * 3600 * 1000;

fn chaos(c: &mut Checks) {
    let e = c.e;
    let f = match &e.chaos {
        None => skipped(
            "no chaos experiment on record: run `chainctl chaos --tps 200 --duration 3m` to kill services at random under load and measure what the network loses",
        ),
        Some(Err(err)) => found(Status::Fail, format!("the last chaos record cannot be read: {err}"), vec![]),
        Some(Ok(r)) => {
            let age_ms = e.at_ms.saturating_sub(r.finished_at_ms);
            let age = humantime::format_duration(Duration::from_secs(age_ms / 1000));
            let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |s| format!("{s:.2} s"));
            let mut ev = vec![
                format!(
                    "{} ago: {} faults ({}) over {:.0} s, seed {}, at most {} validator(s) down",
                    age,
                    r.faults.len(),
                    r.kinds.join(", "),
                    r.duration_s,
                    r.seed,
                    r.max_down
                ),
                format!(
                    "recovery p50 {}, max {}; longest stall {:.1} s; blocks at the block time {} after the last fault",
                    opt(r.recovery_p50_s),
                    opt(r.recovery_max_s),
                    r.longest_stall_s,
                    opt(r.back_to_rate_s)
                ),
                format!(
                    "forks: {} (heights {}..={} on every execution client); given up: {}",
                    r.forks.len(),
                    r.heights_checked.0,
                    r.heights_checked.1,
                    if r.given_up.is_empty() { "none".to_string() } else { r.given_up.join(", ") }
                ),
            ];
            if let Some(l) = &r.load {
                ev.push(format!(
                    "load {} tx/s: sent {}, finalized {}, lost {}; latency p50 {:.2} s, p99 {:.2} s",
                    l.tps, l.sent, l.finalized, l.lost, l.latency_p50_s, l.latency_p99_s
                ));
            }
            ev.extend(r.reasons.iter().cloned());
            if !r.passed() {
                found(Status::Fail, format!("the last chaos experiment ({age} ago) failed"), ev)
            } else if age_ms > CHAOS_FRESH_MS {
                found(Status::Warn, format!("the last chaos experiment passed, but {age} ago: run it again"), ev)
            } else {
                found(
                    Status::Pass,
                    format!(
                        "chaos {age} ago: {} faults, nothing lost, no fork, recovery max {}",
                        r.faults.len(),
                        opt(r.recovery_max_s)
                    ),
                    ev,
                )
            }
        }
    };
    c.add(
        "ha.chaos",
        "Chaos experiment: random faults under load",
        Severity::Important,
        "Run `chainctl chaos` after every change to the network; each reason above names what broke.",
        f,
    );
}

/// The service matrix.
pub fn service_rows(e: &Evidence) -> Vec<ServiceRow> {
    let els = &e.status["health"]["els"];
    let vals = &e.status["health"]["validators"];
    services(e)
        .into_iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap_or("?").to_string();
            let (health, height, peers, note) = if els[&name].is_object() {
                let h = &els[&name];
                (
                    h["state"].as_str().map(String::from),
                    h["head"].as_u64(),
                    h["peers"].as_u64(),
                    format!(
                        "{}{}",
                        if h["active"] == true {
                            "active EL of "
                        } else {
                            "backup EL of "
                        },
                        h["validator"].as_str().unwrap_or("?")
                    ),
                )
            } else if vals[&name].is_object() {
                let v = &vals[&name];
                (
                    v["state"].as_str().map(String::from),
                    v["height"].as_u64(),
                    v["peers"].as_u64(),
                    format!(
                        "validator, active EL {}",
                        v["active_el"].as_str().unwrap_or("?")
                    ),
                )
            } else {
                (None, None, None, String::new())
            };
            let port_ok = |port: &str| -> Option<String> {
                e.endpoints
                    .iter()
                    .find(|(svc, n, _, _)| svc == &name && n == port)
                    .map(|(_, _, _, r)| {
                        if r.is_ok() {
                            "ok".into()
                        } else {
                            "down".into()
                        }
                    })
            };
            ServiceRow {
                state: s["state"].as_str().unwrap_or("?").to_string(),
                health,
                height,
                peers,
                rpc: port_ok("http").or_else(|| port_ok("rpc")),
                websocket: e
                    .el_websocket
                    .iter()
                    .find(|(n, _)| n == &name)
                    .map(|(_, r)| {
                        if r.is_ok() {
                            "ok".into()
                        } else {
                            "down".into()
                        }
                    }),
                notes: note,
                name,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn receipt(gas: &str) -> Value {
        crate::canary::consensus_fields(
            &json!({"status": "0x1", "blockNumber": "0x7", "blockHash": "0xab", "gasUsed": gas}),
        )
    }

    #[test]
    fn backups_pass_only_whole_and_younger_than_the_interval() {
        let schedule: chainctl_core::profile::BackupSchedule =
            serde_json::from_value(json!({"every": "1h", "to": "/b"})).unwrap();
        let manifest: chainctl_core::backup::Manifest = serde_json::from_value(json!({
            "format": 1, "chainctl": "x", "created_unix": 10_000, "profile": "p",
            "profile_digest": "d", "chain_id": 1, "genesis_hash": "g",
            "consensus_genesis_hash": "c", "services": []
        }))
        .unwrap();
        let b = |damaged: Vec<String>| {
            Ok(Some(crate::evidence::NewestBackup {
                dir: "/b/p-1".into(),
                manifest: manifest.clone(),
                damaged,
            }))
        };
        assert_eq!(backups_found(None, None, 0).status, Status::Skipped);
        assert_eq!(
            backups_found(Some(&schedule), Some(&Ok(None)), 0).status,
            Status::Fail
        );
        let fresh = backups_found(Some(&schedule), Some(&b(vec![])), 10_000 + 3599);
        assert_eq!(fresh.status, Status::Pass, "{}", fresh.summary);
        let old = backups_found(Some(&schedule), Some(&b(vec![])), 10_000 + 3601);
        assert_eq!(old.status, Status::Fail);
        assert!(
            old.summary.contains("older than backup.every"),
            "{}",
            old.summary
        );
        let bad = backups_found(
            Some(&schedule),
            Some(&b(vec!["/b/p-1/x: differs".into()])),
            10_001,
        );
        assert_eq!(bad.status, Status::Fail);
        assert!(
            bad.evidence.iter().any(|l| l.contains("/b/p-1/x")),
            "{:?}",
            bad.evidence
        );
    }

    #[test]
    fn receipts_that_differ_missing_or_failed_are_each_named() {
        let same = vec![
            ("a".to_string(), Ok(receipt("0x5208"))),
            ("b".to_string(), Ok(receipt("0x5208"))),
        ];
        assert!(receipt_problems(&same).is_empty());
        let mut skewed = same.clone();
        skewed.push(("c".to_string(), Ok(receipt("0x5209"))));
        let p = receipt_problems(&skewed);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("c has gasUsed \"0x5209\" (others \"0x5208\")"),
            "{p:?}"
        );
        let mut missing = same.clone();
        missing.push(("d".to_string(), Err("no receipt".into())));
        assert_eq!(
            receipt_problems(&missing),
            vec!["d returns no receipt: no receipt"]
        );
        let mut failed = receipt("0x5208");
        failed["status"] = json!("0x0");
        let p = receipt_problems(&[("e".to_string(), Ok(failed))]);
        assert!(p[0].contains("e: the canary failed"), "{p:?}");
    }
}
