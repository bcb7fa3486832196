//! Prometheus metrics through the `prometheus` crate. Two kinds:
//! - events, counted as they happen in metrics that live as long as the monitor (request
//!   counters, latency histograms: [`latency`]);
//! - the state of the network, read from the supervisor's status and the monitor's view
//!   at each scrape into families of a fresh [`Scrape`] registry, so a service removed
//!   from the profile leaves no stale series.
//!
//! The names are the ones the alert rules and the dashboard in `docs/monitoring` use.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{CounterVec, Encoder as _, GaugeVec, Histogram, HistogramOpts, Opts, Registry};

/// Content type of the text format (0.0.4); label values (data dir paths) may be UTF-8.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets in seconds: 50 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// A histogram of durations in seconds over [`LATENCY_BUCKETS`], its series labelled
/// `labels` (so several, one per client, can share a family in a scrape).
pub fn latency(name: &str, help: &str, labels: &[(&str, &str)]) -> Histogram {
    let mut opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    for (k, v) in labels {
        opts = opts.const_label(*k, *v);
    }
    // Only a malformed name or label is refused, and ours are constants.
    Histogram::with_opts(opts).expect("a latency histogram with a valid name")
}

/// Records one duration.
pub fn observe(h: &Histogram, d: Duration) {
    h.observe(d.as_secs_f64());
}

/// The families of one scrape.
#[derive(Default)]
pub struct Scrape {
    registry: Registry,
    /// Every family added, with its type and help: one with no series yet (no failover
    /// so far, a client not probed yet) is still announced, as alert rules look for it.
    families: std::cell::RefCell<Vec<(String, &'static str, String)>>,
}

impl Scrape {
    /// A gauge family with these label names, registered in this scrape.
    pub fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        let g = GaugeVec::new(Opts::new(name, help), labels).expect("a valid gauge family");
        self.add(g.clone());
        g
    }

    /// A counter family with these label names, set from totals kept elsewhere.
    pub fn counters(&self, name: &str, help: &str, labels: &[&str]) -> CounterVec {
        let c = CounterVec::new(Opts::new(name, help), labels).expect("a valid counter family");
        self.add(c.clone());
        c
    }

    /// One gauge without labels.
    pub fn gauge(&self, name: &str, help: &str, value: f64) {
        self.gauges(name, help, &[])
            .with_label_values(&[] as &[&str])
            .set(value);
    }

    /// Adds a metric that lives beyond the scrape (a histogram, the gateway's counters).
    pub fn add(&self, c: impl Collector + 'static) {
        for mf in c.collect() {
            let kind = match mf.get_field_type() {
                MetricType::COUNTER => "counter",
                MetricType::GAUGE => "gauge",
                MetricType::HISTOGRAM => "histogram",
                MetricType::SUMMARY => "summary",
                MetricType::UNTYPED => "untyped",
            };
            let mut families = self.families.borrow_mut();
            if !families.iter().any(|(n, _, _)| n == mf.name()) {
                families.push((mf.name().to_string(), kind, mf.help().to_string()));
            }
        }
        if let Err(e) = self.registry.register(Box::new(c)) {
            // Two families of one name: a bug, but the rest of the scrape still serves.
            tracing::error!("metrics: {e}");
        }
    }

    /// The text exposition: every family with series as the library writes it, then the
    /// `# HELP` and `# TYPE` of each family that has none (the library leaves those out).
    pub fn encode(self) -> String {
        let gathered = self.registry.gather();
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&gathered, &mut out) {
            tracing::error!("metrics: {e}");
        }
        let mut text = String::from_utf8(out).unwrap_or_default();
        for (name, kind, help) in self.families.into_inner() {
            if !gathered.iter().any(|mf| mf.name() == name) {
                let help = help.replace('\\', "\\\\").replace('\n', "\\n");
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            }
        }
        text
    }
}

/// Adds `value` to a counter series that starts at zero in this scrape.
pub fn set_total(c: &CounterVec, labels: &[&str], value: f64) {
    c.with_label_values(labels).inc_by(value.max(0.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_labels_are_escaped() {
        let h = latency("x_seconds", "a test", &[("m", "a\"b\\c\nd")]);
        observe(&h, Duration::from_micros(40));
        observe(&h, Duration::from_millis(5));
        observe(&h, Duration::from_secs(20));
        let s = Scrape::default();
        s.add(h);
        let text = s.encode();
        assert!(text.contains("# TYPE x_seconds histogram"), "{text}");
        assert!(
            text.contains(r#"x_seconds_bucket{m="a\"b\\c\nd",le="0.00005"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"le="0.005"} 2"#), "{text}");
        assert!(text.contains(r#"le="+Inf"} 3"#), "{text}");
        assert!(
            text.contains(r#"x_seconds_count{m="a\"b\\c\nd"} 3"#),
            "{text}"
        );
        assert!(text.contains("x_seconds_sum"), "{text}");
    }

    #[test]
    fn scrape_families_carry_help_type_and_every_series() {
        let s = Scrape::default();
        let up = s.gauges("t_up", "1 when up.", &["service"]);
        up.with_label_values(&["a"]).set(1.0);
        up.with_label_values(&["b"]).set(0.0);
        let total = s.counters("t_restarts_total", "Restarts.", &["service"]);
        set_total(&total, &["a"], 3.0);
        s.gauge("t_ready", "Ready.", 1.0);
        // Two clients' histograms in one family.
        s.add(latency("t_probe_seconds", "Probe.", &[("el", "x")]));
        s.add(latency("t_probe_seconds", "Probe.", &[("el", "y")]));
        let text = s.encode();
        for want in [
            "# HELP t_up 1 when up.",
            "# TYPE t_up gauge",
            "t_up{service=\"a\"} 1",
            "t_up{service=\"b\"} 0",
            "# TYPE t_restarts_total counter",
            "t_restarts_total{service=\"a\"} 3",
            "t_ready 1",
            "t_probe_seconds_count{el=\"x\"} 0",
            "t_probe_seconds_count{el=\"y\"} 0",
        ] {
            assert!(text.contains(want), "missing `{want}` in\n{text}");
        }
        assert_eq!(text.matches("# TYPE t_probe_seconds histogram").count(), 1);
    }

    #[test]
    fn a_family_without_series_is_still_announced() {
        let s = Scrape::default();
        s.counters("t_failovers_total", "Switches,\nby reason.", &["reason"]);
        s.gauge("t_ready", "Ready.", 1.0);
        let text = s.encode();
        assert!(
            text.contains("# TYPE t_failovers_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP t_failovers_total Switches,\\nby reason.\n"),
            "{text}"
        );
        assert!(!text.contains("t_failovers_total{"), "{text}");
        assert!(text.contains("t_ready 1"), "{text}");
    }
}
