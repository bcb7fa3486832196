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
    use super::fixture::Outcome;
    let results = super::fixture::import(paths).map_err(|e| anyhow::anyhow!(e))?;
    // Per fork: passed, failed, unsupported.
    let mut by_fork: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    // Per expected exception: rejected for it, rejected for another reason, accepted.
    let mut by_exception: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut unsupported_why: BTreeMap<String, usize> = BTreeMap::new();
    for r in &results {
        let e = by_fork.entry(r.fork.clone()).or_default();
        match &r.outcome {
            Outcome::Passed => {
                e[0] += 1;
                if verbose {
                    println!("ok   {} :: {} ({})", r.file.display(), r.name, r.fork);
                }
            }
            Outcome::Failed(err) => {
                e[1] += 1;
                println!(
                    "FAIL {} :: {} ({}): {err}",
                    r.file.display(),
                    r.name,
                    r.fork
                );
            }
            Outcome::Unsupported(why) => {
                e[2] += 1;
                *unsupported_why.entry(why.clone()).or_default() += 1;
                if verbose {
                    println!("unsupported {} :: {}: {why}", r.file.display(), r.name);
                }
            }
        }
        for j in &r.rejections {
            let k = by_exception.entry(j.expected.clone()).or_default();
            match (&j.reason, j.matched) {
                (Some(_), true) => k[0] += 1,
                (Some(_), false) => k[1] += 1,
                (None, _) => k[2] += 1,
            }
            if verbose {
                println!(
                    "     expects {}: {}",
                    j.expected,
                    j.reason.as_deref().unwrap_or("ACCEPTED")
                );
            }
        }
    }
    let mut total = [0usize; 3];
    for (fork, [p, f, u]) in &by_fork {
        if *u > 0 {
            println!("{fork}: {p} passed, {f} failed, {u} unsupported");
        } else {
            println!("{fork}: {p} passed, {f} failed");
        }
        total[0] += p;
        total[1] += f;
        total[2] += u;
    }
    if !by_exception.is_empty() {
        println!("expected rejections, by exception:");
        for (exc, [m, other, accepted]) in &by_exception {
            println!(
                "  {exc}: {m} rejected for it, {other} for another reason, {accepted} accepted"
            );
        }
    }
    for (why, n) in &unsupported_why {
        println!("{n} unsupported: {why}");
    }
    if total[2] > 0 {
        println!(
            "total: {} passed, {} failed, {} unsupported",
            total[0], total[1], total[2]
        );
    } else {
        println!("total: {} passed, {} failed", total[0], total[1]);
    }
    Ok(if total[1] == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
