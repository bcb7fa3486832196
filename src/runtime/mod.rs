//! Backends run services. The supervisor's loop talks only to the [`Backend`] trait, so
//! Docker and systemd backends plug in without touching it.

pub mod docker;
pub mod process;
pub mod swarm;

use crate::plan::ServicePlan;
use crate::profile::StopSignal;
use crate::supervisor::policy::Exit;
use serde::{Deserialize, Serialize};

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

/// Something the backend observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendEvent {
    /// A service's main process ended.
    Exited {
        /// Its pid.
        pid: i32,
        /// How.
        exit: Exit,
    },
}

/// Starts, signals and observes services.
pub trait Backend {
    /// Short name shown by `status` (`process`, `docker`, `systemd`).
    fn name(&self) -> &'static str;
    /// Starts a service.
    fn start(&mut self, svc: &ServicePlan) -> Result<Handle, String>;
    /// Sends the stop signal to the service's whole group.
    fn signal(&mut self, h: &Handle, sig: StopSignal) -> Result<(), String>;
    /// Kills the service's whole group at once.
    fn kill(&mut self, h: &Handle);
    /// Whether any process of the service's group is still alive.
    fn group_alive(&self, h: &Handle) -> bool;
    /// Takes over an instance started by an earlier supervisor; false if it is gone.
    fn adopt(&mut self, h: &Handle) -> bool;
    /// Collects exits since the last call (children reaped, adopted ones polled).
    fn poll(&mut self) -> Vec<BackendEvent>;
    /// After every service stopped: stop anything still running that the backend started
    /// (e.g. descendants that left their process group). `known` are pids already handled.
    fn cleanup(&mut self, _known: &[i32]) {}
}
