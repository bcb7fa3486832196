//! Prometheus text exposition (format 0.0.4), written by hand: a handful of families,
//! label escaping, and a lock-free histogram.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets in seconds: 50 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// A histogram of durations, safe to observe from many threads.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Record one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        // Cumulative buckets are built when written; here only the first bucket it fits.
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn write(&self, w: &mut Exposition, name: &str, labels: &[(&str, &str)]) {
        let mut cumulative = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let le = format_float(*b);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            w.sample(&format!("{name}_bucket"), &l, cumulative as f64);
        }
        let count = self.count.load(Ordering::Relaxed);
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        w.sample(&format!("{name}_bucket"), &l, count as f64);
        w.sample(
            &format!("{name}_sum"),
            labels,
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        );
        w.sample(&format!("{name}_count"), labels, count as f64);
    }
}

fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Builds one exposition.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of a family (once, before its samples).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_float(value));
    }

    /// A whole histogram family with one series.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram, labels: &[(&str, &str)]) {
        self.family(name, "histogram", help);
        h.write(self, name, labels);
    }

    /// Further series of a histogram family already started.
    pub fn histogram_series(&mut self, name: &str, h: &Histogram, labels: &[(&str, &str)]) {
        h.write(self, name, labels);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_is_cumulative_and_labels_are_escaped() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut w = Exposition::default();
        w.histogram("x_seconds", "a test", &h, &[("m", "a\"b\\c\nd")]);
        let text = w.finish();
        assert!(text.contains("# TYPE x_seconds histogram"), "{text}");
        assert!(
            text.contains(r#"x_seconds_bucket{m="a\"b\\c\nd",le="0.001"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"le="0.01"} 2"#), "{text}");
        assert!(text.contains(r#"le="+Inf"} 3"#), "{text}");
        assert!(
            text.contains(r#"x_seconds_count{m="a\"b\\c\nd"} 3"#),
            "{text}"
        );
        assert!(text.contains("x_seconds_sum"), "{text}");
    }
}
