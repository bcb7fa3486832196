//! Fault injection for the tests of the network (`CHAINCTL_TEST_FAULT`, e.g.
//! `bad-state-root:val-1`, `receipt-skew:val-2-el-1`): read by debug builds only — the
//! ones the tests run. A release build never reads the variable and never passes it on
//! to its services, processes or containers alike.

/// The environment variable.
pub const VAR: &str = "CHAINCTL_TEST_FAULT";

/// The fault asked for, in a debug build; `None` in a release build whatever the
/// environment says.
pub fn fault() -> Option<String> {
    if cfg!(debug_assertions) {
        std::env::var(VAR).ok()
    } else {
        None
    }
}
