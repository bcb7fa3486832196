//! `chainctl report`: a readiness report built only from what chainctl measures on the
//! running network, so it cannot claim what nobody saw.
//!
//! [`evidence`] gathers (I/O: the API, the chain, the Engine API, files, a failover
//! drill); [`checks`] turns evidence into checks (pure); this module scores them and
//! decides the verdict (pure); [`render`] writes Markdown, JSON or HTML.
//!
//! Layer 5: on the monitor, the runtime backends (the drill kills a task), chainctl-core
//! and chainctl-common. It must never depend on the supervisor: it reads a running
//! network through its API, its chain and its state dir, as an operator would.

pub mod canary;
pub mod checks;
pub mod evidence;
pub mod render;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How much a check matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A failure means NOT READY, whatever the score.
    Critical,
    Important,
    Nice,
}

impl Severity {
    /// Weight in the score.
    pub fn weight(self) -> f64 {
        match self {
            Severity::Critical => 3.0,
            Severity::Important => 2.0,
            Severity::Nice => 1.0,
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    /// Not measured; `skipped_reason` says why.
    Skipped,
    /// A figure shown for information (throughput, block times): measured, but not a
    /// verdict on anything, so never a pass.
    Info,
}

impl Status {
    /// Value in the score (none: left out of it).
    pub fn value(self) -> Option<f64> {
        match self {
            Status::Pass => Some(1.0),
            Status::Warn => Some(0.5),
            Status::Fail => Some(0.0),
            Status::Skipped | Status::Info => None,
        }
    }
}

/// One check, with what was measured and what to do.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Check {
    /// Stable id, e.g. `security.jwt_files`.
    pub id: String,
    /// infrastructure, consensus, execution, security, monitoring, performance,
    /// high-availability.
    pub category: String,
    pub title: String,
    pub severity: Severity,
    pub status: Status,
    /// One line: what was found.
    pub summary: String,
    /// The values measured, one per line, each as it was seen.
    pub evidence: Vec<String>,
    /// Unix time (ms) of the measurement.
    pub measured_at_ms: u64,
    /// Why it was not measured (status `skipped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_reason: Option<String>,
    /// What to do when it does not pass.
    pub remedy: String,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum Verdict {
    Ready,
    NotReady,
}

/// The score formula, printed beside the score.
pub const SCORE_FORMULA: &str = "score = Σ weight × value / Σ weight over the checks that ran \
     (weight: critical 3, important 2, nice 1; value: pass 1, warn 0.5, fail 0; skipped and \
     info checks are left out). The verdict does not come from the score: one failed critical check, an \
     untested failover or no canary transaction is NOT READY.";

/// The id of the failover drill check, which must pass for READY.
pub const DRILL_ID: &str = "ha.failover_drill";

/// The id of the canary transaction check, which must have run for READY.
pub const CANARY_ID: &str = "execution.canary";

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Schema of this document.
    pub schema: String,
    pub profile: String,
    /// chainctl's version.
    pub chainctl: String,
    /// Unix time (ms) the report was made.
    pub generated_at_ms: u64,
    /// The window the rates and block times cover (seconds).
    pub window_secs: u64,
    pub verdict: Verdict,
    /// Why the verdict is NOT READY (the critical checks that failed, an untested
    /// failover, no canary), empty when READY.
    pub blockers: Vec<String>,
    /// Critical checks that neither passed nor failed (a warning, not measured): what
    /// the verdict rests on without having seen it.
    pub not_verified: Vec<String>,
    /// 0 to 100.
    pub score: f64,
    pub score_formula: String,
    /// Counts by status.
    pub passed: usize,
    pub warned: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Informational checks (figures, not verdicts).
    pub info: usize,
    pub checks: Vec<Check>,
    /// One row per service, for the service matrix.
    pub services: Vec<ServiceRow>,
    /// Every allocated port.
    pub ports: Vec<PortRow>,
    /// Finalized blocks in the window, oldest first (height, Unix seconds, transactions).
    pub blocks: Vec<(u64, u64, usize)>,
}

/// One service in the matrix.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ServiceRow {
    pub name: String,
    pub state: String,
    /// healthy / unhealthy / unknown, from the probes (ELs and validators).
    pub health: Option<String>,
    /// Its head (ELs) or height (validators).
    pub height: Option<u64>,
    pub peers: Option<u64>,
    /// `ok`, `down` or none when it has no such endpoint.
    pub rpc: Option<String>,
    pub websocket: Option<String>,
    pub notes: String,
}

/// One allocated port.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PortRow {
    pub service: String,
    pub name: String,
    pub port: u16,
    pub protocol: String,
    /// free / ours / CONFLICT: …
    pub host: String,
}

/// Score (0–100) of a set of checks.
pub fn score(checks: &[Check]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for c in checks {
        if let Some(v) = c.status.value() {
            num += c.severity.weight() * v;
            den += c.severity.weight();
        }
    }
    if den == 0.0 {
        0.0
    } else {
        (1000.0 * num / den).round() / 10.0
    }
}

/// The verdict and what blocks READY.
pub fn verdict(checks: &[Check]) -> (Verdict, Vec<String>) {
    let mut blockers: Vec<String> = checks
        .iter()
        .filter(|c| c.severity == Severity::Critical && c.status == Status::Fail)
        .map(|c| format!("{} failed: {}", c.id, c.summary))
        .collect();
    // The drill and the canary are what show the network works, not only answers: not
    // run is never READY.
    for (id, untested) in [
        (
            DRILL_ID,
            "failover is untested (run `chainctl report --drill`)",
        ),
        (CANARY_ID, "no transaction was followed through the network"),
    ] {
        match checks.iter().find(|c| c.id == id) {
            Some(c) if c.status == Status::Pass => {}
            Some(c) if c.status == Status::Fail => {}
            Some(c) => blockers.push(match &c.skipped_reason {
                Some(why) => format!("{id}: {why}"),
                None => format!("{id}: {untested}: {}", c.summary),
            }),
            None => blockers.push(format!("{id}: {untested}")),
        }
    }
    if blockers.is_empty() {
        (Verdict::Ready, blockers)
    } else {
        (Verdict::NotReady, blockers)
    }
}

/// The critical checks that ended in a warning or were not measured, each with why.
pub fn not_verified(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| {
            c.severity == Severity::Critical && matches!(c.status, Status::Warn | Status::Skipped)
        })
        .map(|c| {
            let status = if c.status == Status::Warn {
                "warning"
            } else {
                "not measured"
            };
            format!(
                "{} ({status}): {}",
                c.id,
                c.skipped_reason.as_deref().unwrap_or(&c.summary)
            )
        })
        .collect()
}

/// Puts the parts together: counts, score, verdict.
pub fn assemble(
    profile: String,
    window_secs: u64,
    checks: Vec<Check>,
    services: Vec<ServiceRow>,
    ports: Vec<PortRow>,
    blocks: Vec<(u64, u64, usize)>,
) -> Report {
    let (verdict, blockers) = verdict(&checks);
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let not_verified = not_verified(&checks);
    Report {
        schema: "https://chainctl.dev/schema/report-v1.json".into(),
        profile,
        chainctl: env!("CARGO_PKG_VERSION").into(),
        generated_at_ms: chainctl_common::time::now_ms(),
        window_secs,
        verdict,
        blockers,
        not_verified,
        score: score(&checks),
        score_formula: SCORE_FORMULA.into(),
        passed: count(Status::Pass),
        warned: count(Status::Warn),
        failed: count(Status::Fail),
        skipped: count(Status::Skipped),
        info: count(Status::Info),
        checks,
        services,
        ports,
        blocks,
    }
}

/// The JSON Schema of [`Report`] (`docs/report.schema.json` holds it; a test keeps it
/// current).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Report);
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, severity: Severity, status: Status) -> Check {
        Check {
            id: id.into(),
            category: "x".into(),
            title: id.into(),
            severity,
            status,
            summary: format!("{id} summary"),
            evidence: vec![],
            measured_at_ms: 0,
            skipped_reason: None,
            remedy: String::new(),
        }
    }

    #[test]
    fn score_weighs_severity_and_leaves_out_skipped() {
        let c = vec![
            check("a", Severity::Critical, Status::Pass),
            check("b", Severity::Important, Status::Warn),
            check("c", Severity::Nice, Status::Fail),
            check("d", Severity::Critical, Status::Skipped),
        ];
        // (3·1 + 2·0.5 + 1·0) / (3 + 2 + 1) = 4/6
        assert_eq!(score(&c), 66.7);
        assert_eq!(score(&[]), 0.0);
    }

    #[test]
    fn critical_checks_not_passed_nor_failed_are_listed_as_not_verified() {
        let mut c = vec![
            check("a", Severity::Critical, Status::Warn),
            check("b", Severity::Critical, Status::Skipped),
            check("c", Severity::Important, Status::Skipped),
            check("d", Severity::Critical, Status::Pass),
            check("e", Severity::Nice, Status::Info),
        ];
        c[1].skipped_reason = Some("no file".into());
        assert_eq!(
            not_verified(&c),
            vec!["a (warning): a summary", "b (not measured): no file"]
        );
        // Information is left out of the score, like what was not measured.
        assert_eq!(score(&c[3..]), 100.0);
    }

    #[test]
    fn ready_needs_no_critical_failure_and_a_passed_drill() {
        let mut c = vec![
            check("a", Severity::Critical, Status::Pass),
            check("b", Severity::Important, Status::Fail),
            check(CANARY_ID, Severity::Critical, Status::Pass),
            check(DRILL_ID, Severity::Critical, Status::Pass),
        ];
        assert_eq!(verdict(&c).0, Verdict::Ready);
        // No canary transaction followed through the network: never READY.
        c[2].status = Status::Skipped;
        c[2].skipped_reason = Some("--no-canary".into());
        let (v, why) = verdict(&c);
        assert_eq!(v, Verdict::NotReady);
        assert!(
            why[0].starts_with(CANARY_ID) && why[0].contains("--no-canary"),
            "{why:?}"
        );
        c[2].status = Status::Pass;
        // An untested failover is never READY, however high the score.
        c[3].status = Status::Skipped;
        let (v, why) = verdict(&c);
        assert_eq!(v, Verdict::NotReady);
        assert!(why[0].contains("untested"), "{why:?}");
        c.pop();
        assert_eq!(verdict(&c).0, Verdict::NotReady);
        // One critical failure is NOT READY whatever else passes.
        let c = vec![
            check("a", Severity::Critical, Status::Fail),
            check(CANARY_ID, Severity::Critical, Status::Pass),
            check(DRILL_ID, Severity::Critical, Status::Pass),
        ];
        let (v, why) = verdict(&c);
        assert_eq!(v, Verdict::NotReady);
        assert_eq!(why, vec!["a failed: a summary".to_string()]);
    }
}
