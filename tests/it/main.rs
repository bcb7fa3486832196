//! chainctl's integration tests, one binary for the whole workspace (as ripgrep keeps
//! them): each module drives the real `chainctl` binary — or the Docker engine, systemd,
//! a browser — the way a user would. A change relinks this one binary, not twenty.
//!
//! Shared helpers: [`util`] (a temp state dir, the binary, Docker), [`evmutil`] (a running
//! built-in engine and calls to it), [`blobutil`] (blob transactions).

mod blobutil;
mod evmutil;
mod util;

mod backup;
mod chaos;
mod clients;
mod compose;
mod consensus;
mod docker;
mod evm_engine;
mod evm_fixtures;
mod evm_reth_interop;
mod image;
mod k8s;
mod load;
mod monitor;
mod ports_and_secrets;
mod profile_errors;
mod render;
mod report;
mod supervisor;
mod swarm;
mod systemd_host;
mod web3_client;
