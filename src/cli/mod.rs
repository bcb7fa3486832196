//! The command line: argument parsing and one function per subcommand. Everything here
//! is edge code: it reads files and sockets and prints; the decisions live in the library.

use anyhow::{bail, Context as _, Result};
use chainctl_core::control::{self, Request};
use chainctl_core::layout::Layout;
use chainctl_core::plan::{self, Plan};
use chainctl_core::ports::HostProbe;
use chainctl_core::profile::Profile;
use chainctl_core::state::{self, PortsFile, StateFile};
use chainctl_core::status::{self, ServiceStatus, StatusReport};
use chainctl_supervisor::setup;
use clap::{Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod backup;
mod inspect;
mod lifecycle;
mod ops;
mod render;

use backup::*;
use inspect::*;
use lifecycle::*;
use ops::*;
use render::*;

/// chainctl: bring up and supervise a blockchain node stack from one YAML profile.
#[derive(Debug, Parser)]
#[command(name = "chainctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Profile file (default: the embedded profiles/devnet.yaml).
    #[arg(
        short = 'p',
        long,
        global = true,
        env = "CHAINCTL_PROFILE",
        value_name = "FILE"
    )]
    pub profile: Option<PathBuf>,
    /// State dir (default: the profile's `state_dir`, else $XDG_STATE_HOME/chainctl/<name>).
    #[arg(long, global = true, env = "CHAINCTL_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON for programs.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan, allocate ports, write secrets, start every service and supervise them.
    Up {
        /// Leave a background supervisor running and return once services have settled.
        #[arg(long)]
        detach: bool,
        /// Internal: run as the detached supervisor.
        #[arg(long, hide = true)]
        supervisor: bool,
        /// Make secret files 0600 and their directories 0700 where they are not (`up`
        /// refuses to start otherwise, naming each file and its `chmod`).
        #[arg(long)]
        fix_permissions: bool,
    },
    /// Stop every service gracefully.
    Down {
        /// Also delete data dirs, secrets, logs and the port allocation.
        #[arg(long)]
        purge: bool,
        /// Confirm --purge.
        #[arg(long)]
        yes: bool,
    },
    /// Show every service's state.
    Status {
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Parse and validate a profile and print the resolved plan.
    Validate {
        /// Profile to validate (default: -p, else the embedded default).
        file: Option<PathBuf>,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print the profile's JSON Schema (for editors).
    Schema,
    /// Show the port allocation.
    Ports {
        /// Probe the host and list conflicts (exit 1 if any).
        #[arg(long)]
        check: bool,
    },
    /// Check this host before `up`: the programs and client versions the profile runs,
    /// its ports, disk, clock sync, open-file limit, Docker when needed (exit 1 on a
    /// problem, each printed with what to do).
    Doctor,
    /// Manage Engine API JWT secrets.
    Jwt {
        /// What to do.
        #[command(subcommand)]
        action: JwtAction,
    },
    /// Restart one service (also clears `given-up`).
    Restart {
        /// The service.
        service: String,
    },
    /// Stop services and keep them stopped (not restarted on exit or failure) until
    /// `chainctl restart`: e.g. before `chainctl restore`. Returns once each has stopped.
    Stop {
        /// The services.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Back up the running network, consistently, without stopping it: each validator's
    /// decided blocks, each built-in engine's store at a finalized block, the genesis,
    /// and with --include-secrets the secrets, encrypted. `backup verify` re-hashes one,
    /// `backup list` lists them.
    Backup(BackupArgs),
    /// Restore services from a backup into their data dirs and start them again: refused
    /// for a backup of another chain, a damaged file, or a service that runs. A restored
    /// validator signs nothing at the heights the network reached since the backup.
    Restore(RestoreArgs),
    /// Switch a validator to another of its execution clients now (through the running
    /// supervisor's API); without --to, to its best healthy backup.
    Failover {
        /// The validator (`val-0`, …).
        validator: String,
        /// The execution client to make active (`val-0-el-1`, …).
        #[arg(long)]
        to: Option<String>,
    },
    /// Show a service's log.
    Logs {
        /// The service.
        service: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Lines to show first.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
    /// Render the plan as files other tools run: systemd units, a compose project, or
    /// Kubernetes manifests.
    Render {
        /// What to render.
        #[arg(value_enum)]
        what: RenderWhat,
        /// Output directory (created if missing).
        #[arg(short, long)]
        out: PathBuf,
        /// The user systemd units run as.
        #[arg(long, default_value = "chainctl")]
        user: String,
        /// The chainctl binary systemd units run for chainctl's own roles (default: this
        /// one), e.g. /usr/local/bin/chainctl for units rendered on another machine.
        #[arg(long, value_name = "PATH")]
        chainctl: Option<PathBuf>,
    },
    /// Install, inspect and drive the profile's rendered units under systemd.
    Systemd {
        /// What to do.
        #[command(subcommand)]
        action: SystemdAction,
    },
    /// Container images of chainctl itself.
    Image {
        /// What to do.
        #[command(subcommand)]
        action: ImageAction,
    },
    /// Replace a client's image one validator at a time (`runtime: swarm` or `docker`):
    /// each service restarts on the new image and must be healthy (at the network's head)
    /// before the next; when one is not, every service changed is rolled back.
    Upgrade {
        /// A service (`val-1-el-0`), or a client kind: every validator's client of that
        /// kind (`builtin`, `reth`, …).
        target: String,
        /// The image to run (must be on the Docker engine; chainctl never pulls).
        #[arg(long)]
        image: String,
        /// How long each service may take to be healthy on the new image.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Docker Swarm nodes (`runtime: swarm`).
    Swarm {
        /// What to do.
        #[command(subcommand)]
        action: SwarmAction,
    },
    /// Send transactions at a steady rate and follow each into a finalized block:
    /// finalized tx/s, inclusion latency, errors by kind (exit 1 unless every transaction
    /// was finalized without error).
    Load(LoadArgs),
    /// A chaos experiment on the running network: faults at a rate for a duration
    /// (seeded, never more validators down than the network tolerates), optional load
    /// through the gateway; prints each fault's recovery, losses, forks and a verdict,
    /// and keeps the result for `chainctl report` (exit 1 unless PASS).
    Chaos(ChaosArgs),
    /// Run the standard benchmark scenarios on this machine (a devnet of its own; up to
    /// first block, sustained load, failover drills, port allocation, engine throughput)
    /// and write bench.json and bench.md.
    Bench(chainctl_load::bench::BenchArgs),
    /// A readiness report from live measurements of the running network: every check
    /// with its evidence and remedy, a score, and the verdict. Exit code 0 READY, 1 NOT
    /// READY, 2 could not run.
    Report {
        /// Output format.
        #[arg(long, value_enum, default_value = "md")]
        format: chainctl_report::render::Format,
        /// Write the report to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run a failover drill: kill -9 one validator's active execution client, measure
        /// the switch and the chain, and wait until the client is back. Without it the
        /// report says failover is untested and the verdict cannot be READY.
        #[arg(long)]
        drill: bool,
        /// Do not send the canary transaction (a 0-value transfer to itself, signed with
        /// `report.canary_key` or the last development account, sent through the gateway
        /// and followed to every execution client's receipt). Without it the verdict
        /// cannot be READY.
        #[arg(long)]
        no_canary: bool,
        /// The window the rates and block times cover (e.g. 10m, 30s).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        window: std::time::Duration,
        /// Print the JSON Schema of the JSON report and exit.
        #[arg(long)]
        schema: bool,
    },
    /// Run one node role of the network (what the supervisor starts).
    Node {
        /// The role.
        #[command(subcommand)]
        role: NodeRole,
    },
    /// Internal: a rendered compose project's `chainctl_init` service: make the secrets
    /// and network files in the project's volumes and give each service its own secrets.
    #[command(hide = true)]
    ComposeInit {
        /// The rendered port allocation.
        #[arg(long)]
        ports: PathBuf,
        /// UID:GID the services run as.
        #[arg(long)]
        owner: String,
        /// Where each service's secrets volume is mounted (DIR/SERVICE).
        #[arg(long)]
        distribute: PathBuf,
        /// The digest compose.yaml holds of the rendered profile and ports.json.
        #[arg(long)]
        digest: String,
    },
    /// Internal: a rendered Kubernetes pod's init container: copy each container's
    /// secrets from its Secret volume into its own memory volume, and each validator's
    /// config into its data dir, mode 0600.
    #[command(hide = true)]
    K8sInit {
        /// Data dirs to make (mode 0700), once per container.
        #[arg(long = "mkdir", value_name = "DIR", required_unless_present = "copies")]
        mkdirs: Vec<PathBuf>,
        /// SRC:DST, once per container.
        #[arg(long = "copy", value_name = "SRC:DST")]
        copies: Vec<String>,
    },
    /// Internal: how an external execution client starts: refuse a data dir another
    /// process holds, run the init step, then become the client.
    #[command(hide = true)]
    ClientExec {
        /// The client's data dir.
        #[arg(long, requires_all = ["lock", "lock_kind"])]
        data_dir: Option<PathBuf>,
        /// Its lock file, relative to the data dir.
        #[arg(long, requires_all = ["data_dir", "lock_kind"])]
        lock: Option<PathBuf>,
        /// How the lock is held: `flock` or `pid`.
        #[arg(long, requires_all = ["data_dir", "lock"])]
        lock_kind: Option<String>,
        /// How many of the words after `--` are the init step.
        #[arg(long, default_value_t = 0)]
        init_argc: usize,
        /// A file of enode URLs (one per line): the client's static peers.
        #[arg(long, requires = "peers_flag")]
        peers_file: Option<PathBuf>,
        /// The client's flag that takes the peers, comma-separated (repeatable).
        #[arg(long, requires = "peers_file", allow_hyphen_values = true)]
        peers_flag: Vec<String>,
        /// The init step's words, then the client's.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Internal: a container healthcheck: exit 0 when every port accepts a TCP
    /// connection on 127.0.0.1, else 1 naming the first that does not.
    #[command(hide = true)]
    Healthcheck {
        /// A port that must accept connections (repeatable).
        #[arg(long, required = true)]
        tcp: Vec<u16>,
    },
    /// Internal: copy stdin to a size-rotated log file.
    #[command(hide = true)]
    LogRelay {
        /// The log file.
        #[arg(long)]
        file: PathBuf,
        /// Rotate at this size.
        #[arg(long)]
        max_bytes: u64,
        /// Rotated files kept.
        #[arg(long)]
        keep: u32,
    },
}

/// Arguments of `chainctl load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// JSON-RPC endpoint (default: the gateway of the profile's running network, else
    /// its first execution client). The network's execution clients are read too: a
    /// block the endpoint does not have yet, and the receipts of transactions not seen
    /// finalized, are asked of each before one is called lost.
    #[arg(long, value_name = "URL")]
    rpc: Option<String>,
    /// The certificate an https:// `--rpc` must present (PEM; chainctl trusts exactly it).
    /// The network's own gateway needs none: its `gateway.tls.cert` is used.
    #[arg(long, value_name = "FILE", requires = "rpc")]
    rpc_cert: Option<PathBuf>,
    /// Transactions per second to send.
    #[arg(long, default_value_t = 100)]
    tps: u64,
    /// How long to send.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Sending accounts, from the mnemonic (default: enough for 8 tx/s each).
    #[arg(long)]
    accounts: Option<u32>,
    /// Index in the mnemonic of the first sending account.
    #[arg(long, default_value_t = 0)]
    first_account: u32,
    /// What the transactions do.
    #[arg(long, value_enum, default_value_t = chainctl_load::Kind::Transfer)]
    kind: chainctl_load::Kind,
    /// Mnemonic of the sending accounts (default: the documented development mnemonic
    /// the network's genesis funds).
    #[arg(long, env = "CHAINCTL_LOAD_MNEMONIC", hide_env_values = true)]
    mnemonic: Option<String>,
    /// After the last send, how long to wait for the rest to be finalized.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// `chainctl chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Fault kinds to draw from, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kill")]
    faults: Vec<chainctl_chaos::FaultKind>,
    /// How long faults are injected for.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Time between faults: `8s`, or `5s..8s` for a uniform draw in between.
    #[arg(long, default_value = "5s..8s", value_parser = chainctl_chaos::parse_every)]
    every: (Duration, Duration),
    /// Stop after this many faults (before --duration when reached).
    #[arg(long)]
    count: Option<usize>,
    /// How long a `pause` keeps its process stopped.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pause_for: Duration,
    /// How long a `partition` keeps its validator cut off (runtime: docker).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    partition_for: Duration,
    /// Most validators down at once (a validator is down when it, or every one of its
    /// execution clients, is). Default: the number the network tolerates, (n − 1) / 3.
    #[arg(long)]
    max_down: Option<usize>,
    /// Seed of the fault choices: the same seed on the same network repeats them
    /// (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Transactions per second sent through the gateway during the experiment (0: none).
    #[arg(long, default_value_t = 0)]
    tps: u64,
    /// Where the load sends (default: the network's gateway).
    #[arg(long, value_name = "URL")]
    rpc: Option<String>,
    /// How long after the last fault everything may take to be back.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Output format of the result.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// Node roles.
#[derive(Debug, Subcommand)]
pub enum NodeRole {
    /// The built-in execution engine: an Engine API server on revm.
    Evm(chainctl_evm::node::EvmArgs),
    /// A BFT validator (Malachite) driving its execution clients through the Engine API.
    Consensus(chainctl_consensus::node::ConsensusArgs),
}

/// systemd subcommands.
#[derive(Debug, Subcommand)]
pub enum SystemdAction {
    /// Write the units (daemon-reload when any changed), create the user and secrets,
    /// enable and start the target; changed services restart alone.
    Install {
        /// Where unit files go.
        #[arg(long, default_value = crate::systemd::UNIT_DIR)]
        unit_dir: PathBuf,
        /// The user units run as.
        #[arg(long, default_value = "chainctl")]
        user: String,
        /// Install and enable only; do not start or restart anything.
        #[arg(long)]
        no_start: bool,
    },
    /// Stop, disable and remove the profile's units (data and secrets stay).
    Uninstall {
        /// Where unit files are.
        #[arg(long, default_value = crate::systemd::UNIT_DIR)]
        unit_dir: PathBuf,
    },
    /// Each unit's state, and drift between the files on disk and the profile (exit 1 on drift).
    Status {
        /// Where unit files are.
        #[arg(long, default_value = crate::systemd::UNIT_DIR)]
        unit_dir: PathBuf,
        /// The user units run as (it is part of the rendered units).
        #[arg(long, default_value = "chainctl")]
        user: String,
    },
    /// Restart one service's unit.
    Restart {
        /// The service.
        service: String,
    },
}

/// Image subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageAction {
    /// Build `chainctl:<version>` from a static chainctl binary (FROM scratch, no registry).
    Build {
        /// Image tag.
        #[arg(long, default_value = concat!("chainctl:", env!("CARGO_PKG_VERSION")))]
        tag: String,
        /// The static binary to put in the image (default: this chainctl).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

/// Swarm subcommands.
#[derive(Debug, Subcommand)]
pub enum SwarmAction {
    /// Name a swarm node for `swarm.placement`: sets its `chainctl.node=NAME` label.
    Label {
        /// The name placement uses (`swarm.placement: {val-0: NAME}`).
        name: String,
        /// The node (ID or hostname, as `docker node ls` shows; default: the node of the
        /// Docker engine chainctl talks to).
        #[arg(long)]
        node: Option<String>,
    },
}

/// What `render` writes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RenderWhat {
    /// One hardened unit per service, a target, a sysusers.d entry.
    Systemd,
    /// compose.yaml and .env.
    Compose,
    /// Kubernetes manifests: manifests.yaml (StatefulSets, Services, disruption budget),
    /// network.yaml (genesis and validator configs), secrets.yaml (mode 0600).
    K8s,
}

/// JWT subcommands.
#[derive(Debug, Subcommand)]
pub enum JwtAction {
    /// Create every missing secret (one per consensus↔execution pair).
    Generate,
    /// Replace secrets atomically and restart both ends of each pair.
    Rotate {
        /// Only this pair, written CONSENSUS--EXECUTION (default: all pairs).
        pair: Option<String>,
    },
    /// Check every secret: 64 hex chars, mode 0600, dir 0700, both ends use the same file.
    Verify,
}

/// Entry point: parse, run, print errors plainly.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = match i16::from(cli.verbose) - i16::from(cli.quiet) {
        i16::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("CHAINCTL_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn run(mut cli: Cli) -> Result<ExitCode> {
    // A relative state dir is the same dir for every reader of the plan (the detached
    // supervisor, `report` comparing the paths in the services' command lines).
    if let Some(d) = cli.state_dir.as_mut() {
        if let Ok(abs) = std::path::absolute(&*d) {
            *d = abs;
        }
    }
    let profile = cli.profile.as_deref();
    let state_dir = cli.state_dir.as_deref();
    match cli.command {
        Command::Up {
            supervisor: true,
            fix_permissions,
            ..
        } => setup::run(profile, state_dir, None, fix_permissions).map(|_| ExitCode::SUCCESS),
        Command::Up {
            detach: true,
            fix_permissions,
            ..
        } => up_detached(
            &cli_args_for_child(&cli.profile, &cli.state_dir),
            profile,
            state_dir,
            fix_permissions,
        ),
        Command::Up {
            fix_permissions, ..
        } => up_foreground(profile, state_dir, fix_permissions),
        Command::Down { purge, yes } => down(profile, state_dir, purge, yes),
        Command::Status { output } => status_cmd(profile, state_dir, output),
        Command::Validate { file, output } => {
            validate(file.as_deref().or(profile), state_dir, output)
        }
        Command::Schema => {
            let schema = schemars::schema_for!(Profile);
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ports { check } => ports_cmd(profile, state_dir, check),
        Command::Doctor => {
            let loaded = chainctl_core::loader::load(setup::source(profile)?)?;
            let layout = setup::layout(&loaded, state_dir);
            let (alloc, _) = allocation_here(&loaded, &layout)?;
            let findings = crate::doctor::run(&loaded, &layout, &alloc);
            print!("{}", crate::doctor::print(&findings));
            Ok(
                if findings
                    .iter()
                    .any(|f| f.status == crate::doctor::Status::Fail)
                {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
        Command::Jwt { action } => jwt(profile, state_dir, action),
        Command::Restart { service } => {
            let layout = layout_of(profile, state_dir)?;
            println!("{}", restart_service(&layout, profile, &service)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Failover { validator, to } => failover_cmd(profile, state_dir, validator, to),
        Command::Stop { services } => stop_cmd(profile, state_dir, &services),
        Command::Backup(a) => backup_cmd(profile, state_dir, a),
        Command::Restore(a) => restore_cmd(profile, state_dir, a),
        Command::Upgrade {
            target,
            image,
            timeout,
        } => {
            let loaded = chainctl_core::loader::load(setup::source(profile)?)?;
            let layout = layout_of(profile, state_dir)?;
            chainctl_supervisor::upgrade::upgrade(
                &loaded.profile,
                &layout,
                &target,
                &image,
                timeout,
                &mut std::io::stdout(),
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            println!("{target}: every service runs {image}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs {
            service,
            follow,
            lines,
        } => logs(profile, state_dir, &service, follow, lines),
        Command::Render {
            what,
            out,
            user,
            chainctl,
        } => render(profile, state_dir, what, &out, &user, chainctl.as_deref()),
        Command::Systemd { action } => systemd_cmd(profile, state_dir, action),
        Command::Load(args) => load_cmd(profile, state_dir, args),
        Command::Chaos(args) => chaos_cmd(&cli.profile, &cli.state_dir, args),
        Command::Report {
            format,
            out,
            drill,
            no_canary,
            window,
            schema,
        } => {
            if schema {
                print!("{}", chainctl_report::json_schema());
                return Ok(ExitCode::SUCCESS);
            }
            report_cmd(
                profile,
                state_dir,
                format,
                out.as_deref(),
                (drill, !no_canary),
                window,
            )
        }
        Command::Bench(args) => {
            let report = chainctl_load::bench::run(&args)?;
            print!("{}", chainctl_load::bench::markdown(&report));
            println!(
                "written: {} and {}",
                args.out.join("bench.json").display(),
                args.out.join("bench.md").display()
            );
            Ok(if report.scenarios.iter().any(|o| o.status == "failed") {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Swarm {
            action: SwarmAction::Label { name, node },
        } => {
            let host = chainctl_runtime::swarm::label_node(node.as_deref(), &name)
                .map_err(|e| anyhow::anyhow!(e))?;
            println!(
                "node {host} is now `{name}` ({}={name}): `swarm.placement` entries naming `{name}` run there",
                chainctl_runtime::swarm::NODE_LABEL
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Image {
            action: ImageAction::Build { tag, binary },
        } => {
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe().context("cannot find the chainctl binary")?,
            };
            let id =
                chainctl_runtime::image::build(&binary, &tag).map_err(|e| anyhow::anyhow!(e))?;
            let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
            println!(
                "built {tag} ({id}) from {} ({:.1} MB, static)",
                binary.display(),
                size as f64 / 1e6
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Node {
            role: NodeRole::Evm(args),
        } => chainctl_evm::node::run(args),
        Command::Node {
            role: NodeRole::Consensus(args),
        } => chainctl_consensus::node::run(args),
        Command::K8sInit { mkdirs, copies } => {
            for d in &mkdirs {
                chainctl_common::fs::private_dir(d).with_context(|| {
                    format!(
                        "cannot make the data dir {} (mode 0700, of uid {}): it must be new or this user's",
                        d.display(),
                        unsafe { libc::getuid() }
                    )
                })?;
                println!("{}: data dir", d.display());
            }
            for c in &copies {
                let (src, dst) = c.split_once(':').ok_or_else(|| {
                    anyhow::anyhow!("--copy {c}: expected SRC:DST (two directories)")
                })?;
                let n = chainctl_render::k8s::copy_private(Path::new(src), Path::new(dst))?;
                println!("{dst}: {n} file(s)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ComposeInit {
            ports,
            owner,
            distribute,
            digest,
        } => {
            let loaded = chainctl_core::loader::load(setup::source(profile)?)?;
            let state = state_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| chainctl_render::system_state_dir(&loaded.profile.name));
            let lines = crate::compose_init::run(&crate::compose_init::Args {
                loaded: &loaded,
                state_dir: &state,
                ports: &ports,
                owner: crate::compose_init::parse_owner(&owner)?,
                distribute: &distribute,
                digest: &digest,
            })?;
            for l in lines {
                println!("{l}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ClientExec {
            data_dir,
            lock,
            lock_kind,
            init_argc,
            peers_file,
            peers_flag,
            argv,
        } => {
            let lock = match (&data_dir, &lock, lock_kind.as_deref()) {
                (Some(dir), Some(file), Some(k)) => {
                    Some(chainctl_core::clients::exec::DataDirLock {
                        dir,
                        file,
                        kind: chainctl_core::clients::LockKind::parse(k).with_context(|| {
                            format!("--lock-kind `{k}`: expected `flock` or `pid`")
                        })?,
                    })
                }
                _ => None,
            };
            let peers = match &peers_file {
                Some(f) => Some((
                    chainctl_core::clients::p2p::read_peers(f)?,
                    peers_flag.as_slice(),
                )),
                None => None,
            };
            chainctl_core::clients::exec::run(lock, init_argc, peers, &argv)?;
            Ok(ExitCode::FAILURE)
        }
        Command::Healthcheck { tcp } => {
            for port in tcp {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                if let Err(e) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                {
                    eprintln!("127.0.0.1:{port} does not accept connections: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::LogRelay {
            file,
            max_bytes,
            keep,
        } => {
            chainctl_runtime::logrelay::run(&file, max_bytes, keep)
                .with_context(|| format!("log relay for {}", file.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn layout_of(profile: Option<&Path>, state_dir: Option<&Path>) -> Result<Layout> {
    // An explicit state dir needs no profile, so status, logs, restart and down keep
    // working while the profile file is being edited (or is broken).
    if let Some(d) = state_dir {
        return Ok(Layout::new(d));
    }
    let loaded = chainctl_core::loader::load(setup::source(profile)?)?;
    Ok(setup::layout(&loaded, state_dir))
}

/// The API of the supervisor running for `layout`, when one is running and its API can be
/// found: the profile given, else the one the state file records (the embedded default
/// when it records none). `None` sends the caller to the control socket.
fn running_api(layout: &Layout, profile: Option<&Path>) -> Option<chainctl_monitor::ApiEndpoint> {
    state::holder(&layout.lock_file())?;
    let path = match profile {
        Some(p) => Some(p.to_path_buf()),
        None => {
            state::read_json::<StateFile>(&layout.state_file())
                .ok()
                .flatten()?
                .profile_path
        }
    };
    let loaded = chainctl_core::loader::load(setup::source(path.as_deref()).ok()?).ok()?;
    chainctl_monitor::api_endpoint(layout, &loaded.profile).ok()
}

/// Restarts a service of the running supervisor: through its API when it serves one (as
/// any client would), else through its control socket. The supervisor's answer.
fn restart_service(layout: &Layout, profile: Option<&Path>, service: &str) -> Result<String> {
    let plain = service
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    // Only a connection refused, a 401 or an answer that is not chainctl's sends the
    // request to the control socket instead: then the API did not carry it out, and
    // asking again cannot restart the service twice.
    let reachable = |a: &chainctl_monitor::ApiEndpoint| {
        std::net::TcpStream::connect_timeout(&a.addr, Duration::from_secs(2)).is_ok()
    };
    if let Some(api) = running_api(layout, profile).filter(|a| plain && reachable(a)) {
        let path = format!("/api/v1/services/{service}/restart");
        let t = api.tls_cert.as_deref();
        let wait = Duration::from_secs(30);
        let answer = chainctl_common::http::text(api.addr, t, "POST", &path, Some(&api.token), None, wait)
            .map_err(|e| {
                anyhow::anyhow!(
                    "chainctl's API at {} took the restart of {service} but gave no answer ({e}): see `chainctl status` before asking again",
                    api.addr
                )
            })?;
        let v: serde_json::Value = serde_json::from_str(&answer.1).unwrap_or_default();
        match (answer.0, v["ok"].as_bool()) {
            (200, Some(true)) => return Ok(v["message"].as_str().unwrap_or_default().to_string()),
            (_, Some(false)) => bail!(
                "{}",
                v["error"].as_str().unwrap_or("the supervisor refused")
            ),
            _ => {}
        }
    }
    let r = call_supervisor(
        layout,
        &Request::Restart {
            service: service.to_string(),
        },
    )?;
    Ok(r.message.unwrap_or_default())
}

fn call_supervisor(layout: &Layout, req: &Request) -> Result<control::Response> {
    let r =
        control::call(&layout.control_socket(), req, Duration::from_secs(30)).map_err(|_| {
            anyhow::anyhow!(
                "no chainctl supervisor is running for state dir {}: start one with `chainctl up`",
                layout.root.display()
            )
        })?;
    if !r.ok {
        bail!(
            "{}",
            r.error.unwrap_or_else(|| "the supervisor refused".into())
        );
    }
    Ok(r)
}
