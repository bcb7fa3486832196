//! chainctl: a supervisor for blockchain node stacks — profile → plan → supervised services.

pub mod bench;
pub mod cli;
pub mod clients;
pub mod compose_init;
pub mod consensus;
pub mod control;
pub mod doctor;
pub mod evm;
pub mod image;
pub mod layout;
pub mod load;
pub mod logrelay;
pub mod monitor;
pub mod network;
pub mod placeholders;
pub mod plan;
pub mod ports;
pub mod procinfo;
pub mod profile;
pub mod render;
pub mod report;
pub mod runtime;
pub mod sdnotify;
pub mod secrets;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod systemd;
pub mod upgrade;

/// The default profile, compiled into the binary so `chainctl up` works on a fresh machine.
pub const DEFAULT_PROFILE: &str = include_str!("../profiles/devnet.yaml");

/// The name shown for the embedded default profile wherever a file name is expected.
pub const DEFAULT_PROFILE_NAME: &str = "<embedded profiles/devnet.yaml>";
