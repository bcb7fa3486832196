//! The engine's servers: the Engine API (JWT-authenticated) and JSON-RPC.

use std::process::ExitCode;

use clap::Args;

/// How to run the engine.
#[derive(Debug, Args)]
pub struct ServeArgs {}

pub fn serve(_args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
