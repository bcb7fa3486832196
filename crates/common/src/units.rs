//! Numbers as the wire and the reports write them: JSON-RPC quantities and percentiles.

use serde_json::Value;

/// A JSON-RPC quantity (`"0x1a"`) as a number; `None` for anything else.
pub fn quantity(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.strip_prefix("0x")?, 16).ok()
}

/// The `p` quantile (0..=1) of sorted values, 0 when there are none.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
