//! Writes a [`Report`] as Markdown (`templates/report/report.md.hbs`), JSON, or one
//! self-contained HTML page (`templates/report/report.html.hbs`: no external assets, the
//! block-time chart as inline SVG). Pure: report in, text out.

use std::fmt::Write as _;

use handlebars::Handlebars;
use serde_json::{json, Value};

use super::{Report, Status};

const MARKDOWN: &str = include_str!("../../../templates/report/report.md.hbs");
const HTML: &str = include_str!("../../../templates/report/report.html.hbs");

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Md,
    Json,
    Html,
}

/// The report in `format`.
pub fn render(r: &Report, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(r).expect("a report serializes") + "\n",
        Format::Md => template(MARKDOWN, &context(r, true), false),
        Format::Html => template(HTML, &context(r, false), true),
    }
}

fn template(t: &str, ctx: &Value, html: bool) -> String {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    if !html {
        hb.register_escape_fn(handlebars::no_escape);
    }
    hb.render_template(t, ctx)
        .unwrap_or_else(|e| panic!("the report template is broken: {e}"))
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn icon(s: Status) -> &'static str {
    match s {
        Status::Pass => "✅",
        Status::Warn => "⚠️",
        Status::Fail => "❌",
        Status::Skipped => "⏭️",
        Status::Info => "ℹ️",
    }
}

fn word<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Everything the templates show, as display strings.
fn context(r: &Report, markdown: bool) -> Value {
    // Text in the report comes from other programs too (error bodies, process names):
    // in Markdown it must stay text — no table breaks, no HTML, no headings or links.
    let cell = |s: &str| {
        if markdown {
            s.replace('\\', "\\\\")
                .replace('|', "\\|")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('[', "\\[")
                .replace(']', "\\]")
                .replace('`', "\\`")
                .replace('\n', " ")
        } else {
            s.to_string()
        }
    };
    let dash = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    let checks: Vec<Value> = r
        .checks
        .iter()
        .map(|c| {
            json!({
                "id": c.id, "title": c.title, "icon": icon(c.status),
                "severity": word(c.severity), "status": word(c.status),
                "summary": cell(&c.summary), "cell": cell(&c.summary),
                "evidence": c.evidence.iter().map(|e| cell(e)).collect::<Vec<_>>(),
                "measured": time(c.measured_at_ms),
                "remedy": c.remedy, "show_remedy": c.status != Status::Pass,
            })
        })
        .collect();
    let mut categories: Vec<Value> = Vec::new();
    for c in &r.checks {
        let pos = categories
            .iter()
            .position(|v| v["name"] == c.category.as_str());
        let i = pos.unwrap_or_else(|| {
            categories.push(json!({"name": c.category, "checks": []}));
            categories.len() - 1
        });
        let idx = r.checks.iter().position(|x| x.id == c.id).unwrap_or(0);
        categories[i]["checks"]
            .as_array_mut()
            .expect("an array")
            .push(checks[idx].clone());
    }
    let services: Vec<Value> = r
        .services
        .iter()
        .map(|s| {
            json!({
                "name": s.name, "state": s.state,
                "health": dash(s.health.clone()),
                "height": dash(s.height.map(|h| h.to_string())),
                "peers": dash(s.peers.map(|h| h.to_string())),
                "rpc": dash(s.rpc.clone()), "websocket": dash(s.websocket.clone()),
                "notes": cell(&s.notes),
            })
        })
        .collect();
    let verdict = word(r.verdict);
    let verdict_class = verdict.clone();
    let verdict = verdict.replace('-', " ");
    json!({
        "profile": r.profile, "chainctl": r.chainctl,
        "generated": time(r.generated_at_ms), "window_secs": r.window_secs,
        "verdict": verdict, "verdict_class": verdict_class,
        "blockers": r.blockers, "not_verified": r.not_verified,
        "score": format!("{:.1}", r.score),
        "score_formula": r.score_formula,
        "passed": r.passed, "warned": r.warned, "failed": r.failed, "skipped": r.skipped,
        "info": r.info,
        "checks": checks, "categories": categories, "services": services,
        "ports": r.ports.iter().map(|p| json!({
            "service": p.service, "name": p.name, "port": p.port,
            "protocol": p.protocol, "host": cell(&p.host),
        })).collect::<Vec<_>>(),
        "chart": chart(&r.blocks),
    })
}

/// An inline SVG chart of the intervals between consecutive blocks (height on x,
/// seconds on y).
pub fn chart(blocks: &[(u64, u64, usize)]) -> String {
    let iv: Vec<(u64, u64)> = blocks
        .windows(2)
        .map(|w| (w[1].0, w[1].1.saturating_sub(w[0].1)))
        .collect();
    if iv.is_empty() {
        return "<p>No block intervals in the window.</p>".into();
    }
    let (w, h, pad) = (800.0, 200.0, 30.0);
    // Outliers (a network started again after a long stop) are clipped at three times
    // the 90th percentile and labelled with their value, so one spike does not flatten
    // every other interval.
    let mut sorted: Vec<u64> = iv.iter().map(|(_, s)| *s).collect();
    sorted.sort_unstable();
    let p90 = sorted[(sorted.len() - 1) * 9 / 10];
    let longest = *sorted.last().unwrap_or(&1);
    let cap = longest.min((3 * p90).max(2)).max(2);
    let max_y = cap as f64;
    let n = iv.len().max(2) as f64 - 1.0;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / n.max(1.0);
    let y = |s: u64| h - pad - (h - 2.0 * pad) * s.min(cap) as f64 / max_y;
    let mut points = String::new();
    let mut clipped = String::new();
    let mut n_clipped = 0;
    for (i, (height, s)) in iv.iter().enumerate() {
        let _ = write!(points, "{:.1},{:.1} ", x(i), y(*s));
        if *s > cap {
            n_clipped += 1;
            let _ = write!(
                clipped,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#cf222e\"><title>block {height}: {s}s</title></circle>\
<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#cf222e\">{s}s ↑</text>",
                x(i),
                y(*s),
                (x(i) + 6.0).min(w - 60.0),
                y(*s) + 4.0
            );
        }
    }
    if n_clipped > 0 {
        let _ = write!(
            clipped,
            "<text x=\"{:.1}\" y=\"14\" font-size=\"11\" fill=\"#cf222e\">{n_clipped} interval(s) above {cap}s clipped (longest {longest}s)</text>",
            w / 2.0 - 120.0
        );
    }
    let first = iv.first().map_or(0, |v| v.0);
    let last = iv.last().map_or(0, |v| v.0);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"block intervals\">\
<rect width=\"{w}\" height=\"{h}\" fill=\"#f6f8fa\"/>\
<line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#57606a\"/>\
<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"#57606a\"/>\
<text x=\"2\" y=\"{t}\" font-size=\"11\">{max_y}s</text><text x=\"10\" y=\"{b}\" font-size=\"11\">0</text>\
<text x=\"{pad}\" y=\"{lbl}\" font-size=\"11\">block {first}</text>\
<text x=\"{lr}\" y=\"{lbl}\" font-size=\"11\">block {last}</text>\
<polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"2\" points=\"{points}\"/>{clipped}</svg>",
        b = h - pad,
        r = w - pad,
        t = pad + 4.0,
        lbl = h - 8.0,
        lr = w - pad - 80.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{assemble, Check, Severity, DRILL_ID};

    fn report() -> Report {
        let check = |id: &str, status| Check {
            id: id.into(),
            category: "security".into(),
            title: "A | title".into(),
            severity: Severity::Critical,
            status,
            summary: "found | this".into(),
            evidence: vec!["value <1>".into()],
            measured_at_ms: 1_700_000_000_000,
            skipped_reason: None,
            remedy: "do that".into(),
        };
        assemble(
            "devnet".into(),
            600,
            vec![
                check("security.a", Status::Pass),
                check(DRILL_ID, Status::Skipped),
            ],
            vec![],
            vec![],
            vec![(1, 100, 0), (2, 101, 3), (3, 103, 1)],
        )
    }

    #[test]
    fn markdown_html_and_json_carry_the_verdict_and_every_check() {
        let r = report();
        let md = render(&r, Format::Md);
        assert!(md.contains("**Verdict: NOT READY**"), "{md}");
        assert!(md.contains("`security.a`") && md.contains(DRILL_ID), "{md}");
        // A critical check not measured is named under "Not verified".
        assert!(
            md.contains("Not verified") && md.contains(&format!("- {DRILL_ID} (not measured)")),
            "{md}"
        );
        // Table cells cannot break the table, and text from other programs stays text.
        assert!(md.contains("found \\| this"), "{md}");
        assert!(md.contains("&lt;1&gt;") && !md.contains("<1>"), "{md}");
        let html = render(&r, Format::Html);
        assert!(html.contains("id=\"verdict\">NOT READY<"), "{html}");
        assert!(html.contains("value &lt;1&gt;"), "escaped: {html}");
        assert!(
            html.contains("<svg") && html.contains("<polyline"),
            "{html}"
        );
        assert!(
            !html.contains("src=\"http") && !html.contains("href=\"http"),
            "no external assets"
        );
        let v: Value = serde_json::from_str(&render(&r, Format::Json)).unwrap();
        assert_eq!(v["verdict"], "NOT-READY");
        assert_eq!(v["checks"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn an_outlier_is_clipped_and_labelled_not_scaled_to() {
        // A network started again after an hour's stop: one 3600 s interval among 1 s ones.
        let mut blocks: Vec<(u64, u64, usize)> = (0..20).map(|i| (i, 1000 + i, 0)).collect();
        blocks.push((20, 1019 + 3600, 0));
        blocks.extend((21..40).map(|i| (i, 4600 + i, 0)));
        let svg = chart(&blocks);
        assert!(
            svg.contains(">3s</text>"),
            "the scale is the usual intervals': {svg}"
        );
        assert!(
            svg.contains("3600s ↑")
                && svg.contains("1 interval(s) above 3s clipped (longest 3600s)"),
            "{svg}"
        );
        // Without outliers nothing is clipped.
        let svg = chart(&[(1, 100, 0), (2, 101, 0), (3, 104, 0)]);
        assert!(!svg.contains("clipped"), "{svg}");
    }

    #[test]
    fn the_chart_plots_each_interval() {
        let svg = chart(&[(1, 100, 0), (2, 101, 0), (3, 104, 0)]);
        // Two intervals (1 s and 3 s): two points, the highest at the top.
        let pts = svg.split("points=\"").nth(1).unwrap();
        assert_eq!(
            pts.split_whitespace().filter(|p| p.contains(',')).count(),
            2
        );
        assert!(chart(&[(1, 1, 0)]).contains("No block intervals"));
    }
}
