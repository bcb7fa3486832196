//! Where everything lives inside a state dir; computed here once, read everywhere else.

use std::path::{Path, PathBuf};

/// The files and directories of one profile's state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The state dir itself (mode 0700).
    pub root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }
    /// Persisted port allocation.
    pub fn ports_file(&self) -> PathBuf {
        self.root.join("ports.json")
    }
    /// The supervisor's record of every service's process (pid, start time, restarts).
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// Held (flock) by the one supervisor of this state dir; contains its pid.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("supervisor.lock")
    }
    /// The running supervisor's control socket (status, restart, shutdown).
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }
    /// Secrets (mode 0700).
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }
    /// Bearer token of chainctl's API (mode 0600, generated at `up`).
    pub fn api_token(&self) -> PathBuf {
        self.secrets_dir().join("api.token")
    }
    /// Engine API JWT secrets, one file per consensus↔execution pair.
    pub fn jwt_dir(&self) -> PathBuf {
        self.secrets_dir().join("jwt")
    }
    /// The secret file of one pair.
    pub fn jwt_file(&self, consensus: &str, execution: &str) -> PathBuf {
        self.jwt_dir().join(format!("{consensus}--{execution}.hex"))
    }
    /// Data dirs live under here.
    pub fn data_root(&self) -> PathBuf {
        self.root.join("data")
    }
    /// A service's data dir.
    pub fn data_dir(&self, service: &str) -> PathBuf {
        self.data_root().join(service)
    }
    /// Per-service logs live here.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// A service's log file (rotated to `.1`, `.2`, …).
    pub fn log_file(&self, service: &str) -> PathBuf {
        self.log_dir().join(format!("{service}.log"))
    }
    /// The detached supervisor's own log.
    pub fn supervisor_log(&self) -> PathBuf {
        self.root.join("supervisor.log")
    }
    /// The last chaos experiment's record (`chainctl chaos`), which the report reads.
    pub fn chaos_result(&self) -> PathBuf {
        self.root.join("chaos").join("last.json")
    }
    /// The network's planned stops (see [`crate::state::PlannedStop`]).
    pub fn planned_stops(&self) -> PathBuf {
        self.root.join("stops.json")
    }
}

/// The documented default state dir of a profile: `$XDG_STATE_HOME/chainctl/<name>`,
/// else `$HOME/.local/state/chainctl/<name>`, else (root without HOME) `/var/lib/chainctl/<name>`.
pub fn default_state_dir(profile_name: &str) -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(x) = env("XDG_STATE_HOME") {
        return x.join("chainctl").join(profile_name);
    }
    if let Some(h) = env("HOME") {
        return h.join(".local/state/chainctl").join(profile_name);
    }
    Path::new("/var/lib/chainctl").join(profile_name)
}
