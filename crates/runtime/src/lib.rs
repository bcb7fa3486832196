//! Backends run services: child processes, Docker containers, Docker Swarm services. The
//! supervisor's loop talks only to the [`Backend`] trait, so a backend plugs in without
//! touching it.
//!
//! Layer 4: on chainctl-core and chainctl-common. It must never depend on the monitor or
//! the supervisor: a backend wakes the supervisor's loop through the [`Wake`] callback it
//! is given, not by naming the loop's events.

pub mod docker;
mod error;
pub mod image;
pub mod logrelay;
pub mod process;
pub mod swarm;

pub use chainctl_core::instance::{Exit, Handle};
use chainctl_core::plan::ServicePlan;
use chainctl_core::profile::StopSignal;
pub use error::BackendError;

/// Wakes the supervisor's loop when a backend's watcher sees an instance end (a child
/// process wakes it through SIGCHLD instead).
pub type Wake = std::sync::Arc<dyn Fn() + Send + Sync>;

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
    fn start(&mut self, svc: &ServicePlan) -> Result<Handle, BackendError>;
    /// Sends the stop signal to the service's whole group.
    fn signal(&mut self, h: &Handle, sig: StopSignal) -> Result<(), BackendError>;
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
