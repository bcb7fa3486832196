//! `chainctl node evm`: command-line entry points of the built-in engine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

/// Arguments of `chainctl node evm`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvmArgs {
    /// Offline tools of the engine (without one: run the engine).
    #[command(subcommand)]
    pub command: Option<EvmCommand>,
    #[command(flatten)]
    pub serve: super::server::ServeArgs,
}

/// `chainctl node evm` subcommands.
#[derive(Debug, Subcommand)]
pub enum EvmCommand {
    /// Import Ethereum execution-spec-tests blockchain fixtures (files or directories) into
    /// fresh engines and check hashes, rejections, head and post-state.
    ImportFixture {
        /// Fixture files or directories (searched recursively for *.json).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print every case, not only the failing ones.
        #[arg(long)]
        all: bool,
    },
}

pub fn run(args: EvmArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(EvmCommand::ImportFixture { paths, all }) => import_fixture(&paths, all),
        None => super::server::serve(args.serve),
    }
}

fn import_fixture(paths: &[PathBuf], verbose: bool) -> anyhow::Result<ExitCode> {
    let results = super::fixture::import(paths).map_err(|e| anyhow::anyhow!(e))?;
    let mut by_fork: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in &results {
        let e = by_fork.entry(r.fork.clone()).or_default();
        match &r.error {
            None => {
                e.0 += 1;
                if verbose {
                    println!("ok   {} :: {} ({})", r.file.display(), r.name, r.fork);
                }
            }
            Some(err) => {
                e.1 += 1;
                println!(
                    "FAIL {} :: {} ({}): {err}",
                    r.file.display(),
                    r.name,
                    r.fork
                );
            }
        }
    }
    let (mut passed, mut failed) = (0, 0);
    for (fork, (p, f)) in &by_fork {
        println!("{fork}: {p} passed, {f} failed");
        passed += p;
        failed += f;
    }
    println!("total: {passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
