//! Why a backend could not start or signal a service, typed so that the supervisor can
//! log and record it, and later tell a profile that cannot run (a missing program, a
//! workdir that is not there) from an engine that failed for a moment.

use std::path::PathBuf;

use chainctl_core::instance::Exit;

/// What went wrong starting or signalling one service.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A directory the service needs (data dir, log dir) could not be made.
    #[error("cannot create {}: {source}", path.display())]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The service's program cannot run as planned (no command, not found, not
    /// executable, no such workdir): only a profile change helps.
    #[error("{0}")]
    Program(String),
    /// The process, its pipes or its log relay could not be made.
    #[error("{what}: {source}")]
    Spawn {
        /// What was being made.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The service's process group could not be signalled.
    #[error("cannot signal process group {pgid}: {errno}")]
    Signal {
        /// The group.
        pgid: i32,
        /// The kernel's answer.
        errno: nix::errno::Errno,
    },
    /// The container started and exited before it could be followed.
    #[error("its container exited at once ({exit}): see `chainctl logs {service}` or `docker logs {container}`")]
    ExitedAtOnce {
        /// How it exited.
        exit: Exit,
        /// The chainctl service.
        service: String,
        /// Its container.
        container: String,
    },
    /// The Docker engine (or its swarm) refused a call or could not be reached: its
    /// message, with what chainctl was doing.
    #[error("{0}")]
    Engine(String),
}
