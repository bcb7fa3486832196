//! chainctl-core: what a profile means — parsing and validation, placeholders, port
//! allocation, client adapters, the network's topology and the plan — computed without
//! running anything. Also the records other layers exchange: the state file, a running
//! instance's handle and exit, the status report and the control protocol.
//!
//! Depends only on chainctl-common. It must never depend on the engine, the consensus
//! node, a backend, the monitor or the supervisor: those are built on it. It starts no
//! service; its I/O is reading profiles and `/proc`, probing the host's socket tables,
//! keeping the state dir's own records (state, ports, JWT secrets), and the clients of
//! the control socket and of a validator's `/status`.

pub mod backup;
pub mod chaos;
pub mod clients;
pub mod control;
pub mod instance;
pub mod jwt;
pub mod layout;
pub mod loader;
pub mod methods;
pub mod network;
pub mod placeholders;
pub mod plan;
pub mod ports;
pub mod procinfo;
pub mod profile;
pub mod secret_files;
pub mod state;
pub mod status;
pub mod subnet;

/// The default profile, compiled into the binary so `chainctl up` works on a fresh machine.
pub const DEFAULT_PROFILE: &str = include_str!("../../../profiles/devnet.yaml");

/// The name shown for the embedded default profile wherever a file name is expected.
pub const DEFAULT_PROFILE_NAME: &str = "<embedded profiles/devnet.yaml>";
