//! Human-readable durations in profiles (`500ms`, `30s`, `5m`, `1h`).

use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// The longest duration a profile may give: far beyond any sensible grace or backoff,
/// and small enough that adding it to a clock reading never overflows.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration written as a number with a unit, e.g. `30s`; serialises back the same way.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// Seconds.
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    /// Milliseconds.
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    /// The wrapped `std` duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 500ms, 30s, 5m or 1h")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                let d = humantime::parse_duration(v.trim()).map_err(|_| {
                    E::custom(format!(
                        "invalid duration `{v}`: expected a number and a unit such as 500ms, 30s, 5m or 1h"
                    ))
                })?;
                if d > MAX {
                    return Err(E::custom(format!(
                        "duration `{v}` is longer than 365 days: use a shorter one"
                    )));
                }
                Ok(Dur(d))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "invalid duration `{v}`: a bare number is ambiguous, add a unit such as {v}s or {v}ms"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "invalid duration `{v}`: expected a positive number with a unit such as 30s"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "invalid duration `{v}`: add a unit such as {v}s"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> String {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        let mut s = schemars::schema::SchemaObject {
            instance_type: Some(schemars::schema::InstanceType::String.into()),
            ..Default::default()
        };
        s.string().pattern = Some(r"^\s*[0-9]+(\.[0-9]+)?\s*(ns|us|ms|s|sec|m|min|h|hr|d)(\s*[0-9]+\s*(ns|us|ms|s|sec|m|min|h|hr|d))*\s*$".into());
        s.metadata().description =
            Some("A duration: a number and a unit, e.g. 500ms, 30s, 5m, 1h".into());
        s.into()
    }
}
