//! One running instance of a service as chainctl records it: the handle a backend gave
//! it and how it ended. The state file, the port allocator, every backend and the
//! supervisor's restart policy read these.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one running instance of a service (recorded in the state file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    /// Main process id.
    pub pid: i32,
    /// Its process group (the whole group is signalled on stop).
    pub pgid: i32,
    /// Start time in clock ticks since boot, so a recycled pid is never mistaken for it.
    pub start_ticks: u64,
    /// The log relay process, if any.
    pub relay_pid: Option<i32>,
}

/// Handles of swarm instances are at or above this: no Linux pid is (pid_max ≤ 2^22).
pub const SWARM_HANDLE_BASE: i32 = 0x4000_0000;
// /proc/sys/kernel/pid_max is at most 2^22 (PID_MAX_LIMIT).
const _: () = assert!(SWARM_HANDLE_BASE > 1 << 22);

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// It returned this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It exited while adopted (not our child), so the status is not known.
    Unknown,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => {
                let name = nix::sys::signal::Signal::try_from(*s)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or(s.to_string());
                write!(f, "killed by {name}")
            }
            Exit::Unknown => f.write_str("exited while adopted (status unknown)"),
        }
    }
}
