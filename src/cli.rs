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
    /// JSON-RPC endpoint (default: the first execution client of the profile's running
    /// network).
    #[arg(long, value_name = "URL")]
    rpc: Option<String>,
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

fn run(cli: Cli) -> Result<ExitCode> {
    let profile = cli.profile.as_deref();
    let state_dir = cli.state_dir.as_deref();
    match cli.command {
        Command::Up {
            detach: _,
            supervisor: true,
        } => setup::run(profile, state_dir, None).map(|_| ExitCode::SUCCESS),
        Command::Up { detach: true, .. } => up_detached(
            &cli_args_for_child(&cli.profile, &cli.state_dir),
            profile,
            state_dir,
        ),
        Command::Up { .. } => up_foreground(profile, state_dir),
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
        Command::Report {
            format,
            out,
            drill,
            window,
            schema,
        } => {
            if schema {
                print!("{}", chainctl_report::json_schema());
                return Ok(ExitCode::SUCCESS);
            }
            report_cmd(profile, state_dir, format, out.as_deref(), drill, window)
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

fn cli_args_for_child(
    profile: &Option<PathBuf>,
    state_dir: &Option<PathBuf>,
) -> Vec<std::ffi::OsString> {
    let mut args = Vec::new();
    let abs = |p: &PathBuf| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.clone())
            .into_os_string()
    };
    if let Some(p) = profile {
        args.push("--profile".into());
        args.push(abs(p));
    }
    if let Some(d) = state_dir {
        args.push("--state-dir".into());
        args.push(abs(d));
    }
    args
}

fn print_progress(report: &StatusReport, changes: &[(String, String)]) {
    let total = report.services.len();
    let done = report
        .services
        .iter()
        .filter(|s| !matches!(s.state.as_str(), "waiting" | "starting"))
        .count();
    for (name, state) in changes {
        eprintln!("[{done}/{total}] {name}: {state}");
    }
    if report.settled() {
        print!("{}", status::table(report));
        let bad: Vec<&ServiceStatus> = report
            .services
            .iter()
            .filter(|s| !matches!(s.state.as_str(), "ready" | "healthy"))
            .collect();
        if bad.is_empty() {
            println!("all {total} services are ready; supervising (Ctrl-C stops them all)");
        } else {
            let names: Vec<&str> = bad.iter().map(|s| s.name.as_str()).collect();
            println!("{} of {total} services are not ready ({}): see `chainctl logs SERVICE`; supervising (Ctrl-C stops them all)", bad.len(), names.join(", "));
        }
        let _ = std::io::stdout().flush();
    }
}

fn up_foreground(profile: Option<&Path>, state_dir: Option<&Path>) -> Result<ExitCode> {
    setup::run(profile, state_dir, Some(Box::new(print_progress)))?;
    Ok(ExitCode::SUCCESS)
}

fn up_detached(
    child_args: &[std::ffi::OsString],
    profile: Option<&Path>,
    state_dir: Option<&Path>,
) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    // Validate here so errors reach this terminal, not a log file.
    let loaded = setup::load(profile)?;
    let layout = setup::layout(&loaded, state_dir);
    if let Some(pid) = state::holder(&layout.lock_file()) {
        bail!("another chainctl supervisor (pid {pid}) already runs for state dir {}: use `chainctl status`, or `chainctl down` first", layout.root.display());
    }
    chainctl_common::fs::private_dir(&layout.root)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.supervisor_log())?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(child_args)
        .args(["up", "--supervisor"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .context("cannot start the background supervisor")?;
    let grace = loaded
        .profile
        .services
        .values()
        .filter_map(|s| s.startup_grace)
        .max()
        .unwrap_or(loaded.profile.supervisor.startup_grace);
    let deadline = grace
        .get()
        .max(loaded.profile.supervisor.startup_grace.get())
        + Duration::from_secs(15);
    let mut alive = || matches!(child.try_wait(), Ok(None));
    match setup::wait_settled(&layout.control_socket(), deadline, &mut alive) {
        Ok(report) => {
            print!("{}", status::table(&report));
            println!("supervisor running in the background (pid {}); its log: {}; stop with `chainctl down`", child.id(), layout.supervisor_log().display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let tail = tail_lines(&layout.supervisor_log(), 20).unwrap_or_default();
            bail!(
                "{e}; last lines of {}:\n{}",
                layout.supervisor_log().display(),
                tail
            )
        }
    }
}

fn report_without_supervisor(layout: &Layout, profile: Option<&Path>) -> Result<StatusReport> {
    let st = state::read_json::<StateFile>(&layout.state_file())?;
    let boot = chainctl_core::procinfo::boot_id();
    let mut services = Vec::new();
    if let Some(st) = &st {
        let mut recs: Vec<_> = st.services.values().collect();
        recs.sort_by_key(|r| r.plan.depends_on.len());
        for r in recs {
            let alive = st.boot_id == boot
                && r.handle.is_some_and(|h| {
                    chainctl_core::procinfo::instance_alive(h.pid, h.pgid, h.start_ticks)
                });
            services.push(ServiceStatus {
                name: r.plan.name.clone(),
                kind: r.plan.kind.to_string(),
                backend: "process".into(),
                pid: if alive { r.handle.map(|h| h.pid) } else { None },
                image: r.plan.image.clone(),
                state: if alive { "running".into() } else { "stopped".into() },
                detail: alive.then(|| "running without a supervisor: `chainctl up` adopts it, `chainctl down` stops it".into()),
                uptime_secs: None,
                restarts: r.restarts,
                last_exit: r.last_exit.map(|e| e.to_string()),
                ports: r.plan.ports.clone(),
                address: Some(r.plan.ready_host),
                cpu_percent: None,
                memory_bytes: None,
                health: None,
                health_detail: None,
            });
        }
    } else if let Ok(loaded) = chainctl_core::loader::load(setup::source(profile)?) {
        for name in loaded.profile.services.keys() {
            services.push(ServiceStatus {
                name: name.clone(),
                kind: "command".into(),
                backend: "process".into(),
                pid: None,
                image: None,
                state: "stopped".into(),
                detail: None,
                uptime_secs: None,
                restarts: 0,
                last_exit: None,
                ports: Default::default(),
                address: None,
                cpu_percent: None,
                memory_bytes: None,
                health: None,
                health_detail: None,
            });
        }
    }
    Ok(StatusReport {
        validators: Vec::new(),
        monitor: None,
        profile: st.map(|s| s.profile).unwrap_or_default(),
        state_dir: layout.root.clone(),
        supervisor_pid: None,
        services,
    })
}

fn status_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    output: Output,
) -> Result<ExitCode> {
    let layout = layout_of(profile, state_dir)?;
    // Through chainctl's API when the supervisor serves it; else its control socket; else
    // what the state file and the processes say.
    let from_api = running_api(&layout, profile).and_then(|api| {
        let t = api.tls_cert.as_deref();
        // Briefly: the control socket and the state file are there when it is slow.
        let wait = Duration::from_secs(3);
        match chainctl_common::http::text(
            api.addr,
            t,
            "GET",
            "/api/v1/status",
            Some(&api.token),
            None,
            wait,
        ) {
            Ok((200, text)) => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|mut v| {
                    serde_json::from_value::<StatusReport>(v["supervisor"].take()).ok()
                }),
            _ => None,
        }
    });
    let report = match from_api {
        Some(r) => r,
        None => match control::call(
            &layout.control_socket(),
            &Request::Status,
            Duration::from_secs(10),
        ) {
            Ok(r) if r.status.is_some() => r.status.expect("checked"),
            _ => report_without_supervisor(&layout, profile)?,
        },
    };
    let mut report = report;
    status::query_validators(&mut report);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", status::table(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

fn down(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    purge: bool,
    yes: bool,
) -> Result<ExitCode> {
    let layout = layout_of(profile, state_dir)?;
    if purge && !yes {
        bail!(
            "--purge deletes data dirs, secrets and logs under {}: add --yes to confirm",
            layout.root.display()
        );
    }
    if let Some(pid) = state::holder(&layout.lock_file()) {
        call_supervisor(&layout, &Request::Shutdown)?;
        eprintln!("stopping services (supervisor pid {pid})…");
        // The supervisor releases its lock once everything has stopped: each service gets
        // its grace, then SIGKILL. Wait for the longest grace plus a margin, saying what
        // is still running now and then.
        let longest = state::read_json::<StateFile>(&layout.state_file())
            .ok()
            .flatten()
            .and_then(|st| st.services.values().map(|r| r.plan.stop_grace.get()).max())
            .unwrap_or_default();
        let limit = longest + Duration::from_secs(30);
        let t0 = std::time::Instant::now();
        let mut said = std::time::Instant::now();
        while state::holder(&layout.lock_file()).is_some() {
            if said.elapsed() >= Duration::from_secs(5) {
                said = std::time::Instant::now();
                if let Ok(r) = control::call(
                    &layout.control_socket(),
                    &Request::Status,
                    Duration::from_secs(5),
                ) {
                    let left: Vec<String> = r
                        .status
                        .map(|st| {
                            st.services
                                .into_iter()
                                .filter(|s| s.pid.is_some())
                                .map(|s| s.name)
                                .collect()
                        })
                        .unwrap_or_default();
                    eprintln!(
                        "still stopping after {}s: {}",
                        t0.elapsed().as_secs(),
                        left.join(", ")
                    );
                }
            }
            if t0.elapsed() >= limit {
                bail!(
                    "supervisor pid {pid} has not finished stopping after {}s (longest grace {}s); it keeps sending SIGKILL: see `chainctl status` and {}",
                    limit.as_secs(),
                    longest.as_secs(),
                    layout.supervisor_log().display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("all services stopped");
    } else {
        stop_unsupervised(&layout)?;
    }
    if purge {
        for p in [layout.data_root(), layout.secrets_dir(), layout.log_dir()] {
            if p.exists() {
                std::fs::remove_dir_all(&p)
                    .with_context(|| format!("cannot delete {}", p.display()))?;
            }
        }
        for f in [
            layout.ports_file(),
            layout.state_file(),
            layout.supervisor_log(),
            layout.lock_file(),
        ] {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir(&layout.root);
        eprintln!("purged {}", layout.root.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops services an earlier supervisor left running (it was killed): stop signal to each
/// group, each one's grace, then SIGKILL.
fn stop_unsupervised(layout: &Layout) -> Result<()> {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let Some(st) = state::read_json::<StateFile>(&layout.state_file())? else {
        eprintln!("nothing is running for state dir {}", layout.root.display());
        return Ok(());
    };
    // Swarm services outlive this host's boots and have no pids here.
    if st.services.values().any(|r| {
        r.handle
            .is_some_and(|h| chainctl_runtime::swarm::is_swarm_handle(&h))
    }) {
        let removed = chainctl_runtime::swarm::down_unsupervised(&layout.root)
            .map_err(|e| anyhow::anyhow!(e))?;
        if removed.is_empty() {
            eprintln!(
                "no swarm service of state dir {} is left",
                layout.root.display()
            );
        } else {
            eprintln!(
                "removed swarm services (no supervisor running; the swarm stops each task with its grace): {}",
                removed.join(", ")
            );
        }
        return Ok(());
    }
    if st.boot_id != chainctl_core::procinfo::boot_id() {
        eprintln!("nothing is running (the state file is from an earlier boot)");
        return Ok(());
    }
    let live: Vec<_> = st
        .services
        .values()
        .filter_map(|r| {
            r.handle
                .filter(|h| chainctl_core::procinfo::instance_alive(h.pid, h.pgid, h.start_ticks))
                .map(|h| (r, h))
        })
        .collect();
    if live.is_empty() {
        eprintln!("nothing is running for state dir {}", layout.root.display());
        return Ok(());
    }
    let start = std::time::Instant::now();
    for (r, h) in &live {
        eprintln!(
            "stopping {} (pid {}, no supervisor running)",
            r.plan.name, h.pid
        );
        let _ = killpg(Pid::from_raw(h.pgid), r.plan.stop_signal.signal());
    }
    loop {
        let mut left = 0;
        for (r, h) in &live {
            if chainctl_core::procinfo::group_members(h.pgid).is_empty() {
                continue;
            }
            if start.elapsed() >= r.plan.stop_grace.get() {
                eprintln!(
                    "{} did not stop within {}: SIGKILL to its process group",
                    r.plan.name, r.plan.stop_grace
                );
                let _ = killpg(Pid::from_raw(h.pgid), Signal::SIGKILL);
            }
            left += 1;
        }
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut st = st;
    for r in st.services.values_mut() {
        r.handle = None;
        r.state = "stopped".into();
    }
    state::write_json(&layout.state_file(), &st)?;
    eprintln!("all services stopped");
    Ok(())
}

/// A plan for inspection commands: persisted ports where they exist, else a dry run.
fn inspect_plan(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    probe: &dyn HostProbe,
) -> Result<(chainctl_core::profile::Loaded, Layout, Plan, bool)> {
    let loaded = setup::load(profile)?;
    let layout = setup::layout(&loaded, state_dir);
    let persisted = layout.ports_file().exists();
    let running = setup::running_services(&layout);
    let alloc = setup::allocate(&loaded, &layout, &running, probe, false)?;
    let plan = plan::build_runtime(&loaded.profile, &layout, &alloc, &setup::base_dir(&loaded))?;
    Ok((loaded, layout, plan, persisted))
}

fn validate(file: Option<&Path>, state_dir: Option<&Path>, output: Output) -> Result<ExitCode> {
    let (loaded, _layout, plan, persisted) =
        inspect_plan(file, state_dir, &chainctl_core::ports::HostPorts::read())?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: valid", loaded.source.label);
    println!(
        "profile {}, state dir {}{}",
        plan.profile,
        plan.state_dir.display(),
        if persisted {
            ""
        } else {
            " (ports not yet allocated: `chainctl up` persists these)"
        }
    );
    for s in &plan.services {
        println!(
            "\n{}  (start order after: {})",
            s.name,
            if s.depends_on.is_empty() {
                "-".to_string()
            } else {
                s.depends_on.join(", ")
            }
        );
        println!(
            "  argv:     {}",
            s.argv
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for (k, v) in &s.env {
            println!("  env:      {k}={v}");
        }
        for (n, a) in &s.ports {
            println!("  port:     {n} = {}/{}", a.port, a.protocol);
        }
        println!("  data dir: {}", s.data_dir.display());
        println!(
            "  log:      {} (rotated at {} bytes, {} kept)",
            s.log_file.display(),
            s.logs.max_bytes,
            s.logs.keep
        );
        for p in &s.secrets {
            println!("  secret:   {}", p.display());
        }
        println!(
            "  restart:  {:?}, backoff {} → {} ×{}, give up after {} failures in {}",
            s.restart.policy,
            s.restart.backoff.initial,
            s.restart.backoff.max,
            s.restart.backoff.factor,
            s.restart.give_up.failures,
            s.restart.give_up.window
        );
        println!(
            "  stop:     SIG{:?}, then SIGKILL to the group after {}",
            s.stop_signal, s.stop_grace
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+{}".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The ports a state dir's network has (its ports.json), else those `up` would allocate
/// on this host now; and whether they were persisted.
fn allocation_here(
    loaded: &chainctl_core::profile::Loaded,
    layout: &Layout,
) -> Result<(chainctl_core::ports::Allocation, bool)> {
    Ok(match state::read_json::<PortsFile>(&layout.ports_file())? {
        Some(p) => (p.services, true),
        None => (
            setup::allocate(
                loaded,
                layout,
                &[],
                &chainctl_core::ports::HostPorts::read(),
                false,
            )?,
            false,
        ),
    })
}

fn ports_cmd(profile: Option<&Path>, state_dir: Option<&Path>, check: bool) -> Result<ExitCode> {
    let loaded = setup::load(profile)?;
    let layout = setup::layout(&loaded, state_dir);
    let (alloc, persisted) = allocation_here(&loaded, &layout)?;
    let ours = chainctl_core::state::port_owners(
        state::read_json::<StateFile>(&layout.state_file())?.as_ref(),
    );
    let mut conflicts = 0;
    println!(
        "{:<24} {:<12} {:>6}  {:<8} {}",
        "SERVICE",
        "PORT",
        "NUMBER",
        "PROTO",
        if check { "HOST" } else { "" }
    );
    for (svc, ports) in &alloc {
        for (name, a) in ports {
            let mut host = String::new();
            if check {
                host = match ours.host_use(svc, a) {
                    chainctl_core::ports::HostUse::Free => "free".into(),
                    chainctl_core::ports::HostUse::Ours => "in use by this service".into(),
                    chainctl_core::ports::HostUse::Conflict(why) => {
                        conflicts += 1;
                        format!("CONFLICT: {why}")
                    }
                };
            }
            println!(
                "{svc:<24} {name:<12} {:>6}  {:<8} {host}",
                a.port,
                a.protocol.to_string()
            );
        }
    }
    if !persisted {
        println!(
            "(not yet persisted: `chainctl up` allocates and keeps these in {})",
            layout.ports_file().display()
        );
    }
    if conflicts > 0 {
        eprintln!("{conflicts} port conflict(s): stop the programs holding them, or run `chainctl down` and `chainctl up` to move chainctl's ports");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn jwt(profile: Option<&Path>, state_dir: Option<&Path>, action: JwtAction) -> Result<ExitCode> {
    let (_loaded, layout, plan, _) =
        inspect_plan(profile, state_dir, &chainctl_core::ports::NoProbe)?;
    if plan.jwt_pairs.is_empty() {
        println!("the profile has no consensus↔execution pair (no service lists `drives:`): no JWT secret needed");
        return Ok(ExitCode::SUCCESS);
    }
    match action {
        JwtAction::Generate => {
            for pair in &plan.jwt_pairs {
                let created = chainctl_common::secrets::ensure(&pair.path)
                    .with_context(|| format!("cannot write {}", pair.path.display()))?;
                println!(
                    "{} {}--{}: {}",
                    if created { "created " } else { "kept    " },
                    pair.consensus,
                    pair.execution,
                    pair.path.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        JwtAction::Rotate { pair } => {
            let chosen: Vec<_> = plan
                .jwt_pairs
                .iter()
                .filter(|p| {
                    pair.as_deref()
                        .is_none_or(|want| want == format!("{}--{}", p.consensus, p.execution))
                })
                .collect();
            if chosen.is_empty() {
                let names: Vec<String> = plan
                    .jwt_pairs
                    .iter()
                    .map(|p| format!("{}--{}", p.consensus, p.execution))
                    .collect();
                bail!(
                    "no pair `{}`; pairs: {}",
                    pair.unwrap_or_default(),
                    names.join(", ")
                );
            }
            let running = state::holder(&layout.lock_file()).is_some();
            for p in chosen {
                chainctl_common::secrets::rotate(&p.path)
                    .with_context(|| format!("cannot rotate {}", p.path.display()))?;
                println!(
                    "rotated {}--{}: {}",
                    p.consensus,
                    p.execution,
                    p.path.display()
                );
                if running {
                    // Both ends must read the new secret: the execution client first, then its driver.
                    for svc in [&p.execution, &p.consensus] {
                        restart_service(&layout, profile, svc)?;
                        println!("  restarting {svc}");
                    }
                } else {
                    println!(
                        "  no supervisor is running: {} and {} read the new secret when they next start",
                        p.execution, p.consensus
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JwtAction::Verify => {
            let mut bad = 0;
            for p in &plan.jwt_pairs {
                let problems = chainctl_core::jwt::pair_problems(&plan, p);
                let path = p.path.display();
                if problems.is_empty() {
                    println!(
                        "ok      {}--{}: {path} (64 hex chars, mode 0600, both ends read it)",
                        p.consensus, p.execution
                    );
                } else {
                    bad += problems.len();
                    println!("FAILED  {}--{}:", p.consensus, p.execution);
                    for pr in problems {
                        println!("  - {pr}");
                    }
                }
            }
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The systemd files for a profile: what `render systemd` writes and `systemd install`
/// installs, with the plan they come from.
fn systemd_files(
    loaded: &chainctl_core::profile::Loaded,
    state_dir: Option<&Path>,
    user: &str,
    chainctl: Option<&Path>,
) -> Result<(Plan, Vec<chainctl_render::File>)> {
    use chainctl_render as render;
    if !chainctl_core::profile::valid_name(user) {
        bail!("--user `{user}` is not a valid user name: use lowercase letters, digits and `-`");
    }
    let p = &loaded.profile;
    // Units see the system layout: --state-dir, else /var/lib/chainctl/NAME.
    let layout = Layout::new(
        state_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| render::system_state_dir(&p.name)),
    );
    let alloc = setup::allocate(loaded, &layout, &[], &chainctl_core::ports::NoProbe, false)?;
    let mut plan = plan::build(p, &layout, &alloc, &setup::base_dir(loaded))?;
    if let Some(path) = chainctl {
        if !path.is_absolute() {
            bail!(
                "--chainctl `{}` must be an absolute path: systemd runs the units' programs by absolute path",
                path.display()
            );
        }
        // The plan runs chainctl's own roles with this binary; the units run the given one.
        let me = std::env::current_exe()
            .context("cannot find the chainctl binary")?
            .display()
            .to_string();
        for svc in &mut plan.services {
            if svc.argv.first() == Some(&me) {
                svc.argv[0] = path.display().to_string();
            }
        }
    }
    let files = render::systemd::render(&plan, user)?;
    Ok((plan, files))
}

/// For `systemd install`: the validators' files (genesis, keys, control tokens, each
/// one's config with this host's addresses) in the system state dir, laid out as systemd
/// would lay it out (the state dir's parent and the data root traversable, 0755 and
/// root's). Returns what must become the units' user's (done by the install).
fn systemd_network_files(p: &chainctl_core::profile::Profile, plan: &Plan) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt as _;
    let layout = Layout::new(&plan.state_dir);
    for d in [plan.state_dir.parent(), Some(layout.data_root().as_path())]
        .into_iter()
        .flatten()
    {
        if !d.exists() {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    chainctl_common::fs::private_dir(&plan.state_dir)
        .with_context(|| format!("cannot create {}", plan.state_dir.display()))?;
    chainctl_supervisor::files::write_files(p, &layout, plan, plan::Target::Host)?;
    let mut owned = Vec::new();
    if p.validators.count > 0 {
        owned.push(chainctl_core::network::network_dir(&layout));
        owned.push(layout.secrets_dir().join("validators"));
        if !chainctl_core::clients::p2p::external_els(p).is_empty() {
            owned.push(layout.secrets_dir().join("p2p"));
        }
        for i in 0..p.validators.count {
            owned.push(layout.data_dir(&chainctl_core::network::validator_name(i)));
        }
    }
    Ok(owned)
}

fn systemd_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    action: SystemdAction,
) -> Result<ExitCode> {
    use crate::systemd;
    let loaded = chainctl_core::loader::load(setup::source(profile)?)?;
    let name = loaded.profile.name.clone();
    match action {
        SystemdAction::Install {
            unit_dir,
            user,
            no_start,
        } => {
            let (plan, files) = systemd_files(&loaded, state_dir, &user, None)?;
            let secrets: Vec<PathBuf> = plan.jwt_pairs.iter().map(|j| j.path.clone()).collect();
            let owned = systemd_network_files(&loaded.profile, &plan)?;
            let lines = systemd::install(&systemd::Install {
                profile: &name,
                files: &files,
                secrets: &secrets,
                owned: &owned,
                state_dir: &plan.state_dir,
                user: &user,
                unit_dir: &unit_dir,
                start: !no_start,
            })?;
            for l in lines {
                println!("{l}");
            }
            Ok(ExitCode::SUCCESS)
        }
        SystemdAction::Uninstall { unit_dir } => {
            for l in systemd::uninstall(&name, &unit_dir)? {
                println!("{l}");
            }
            Ok(ExitCode::SUCCESS)
        }
        SystemdAction::Status { unit_dir, user } => {
            let (plan, files) = systemd_files(&loaded, state_dir, &user, None)?;
            let mut bad = false;
            println!(
                "{:<40} {:<10} {:<10} {:>8} {:>8} {:>9}",
                "UNIT", "ACTIVE", "SUB", "PID", "RESTARTS", "LAST EXIT"
            );
            let mut unit_names: Vec<String> = plan
                .services
                .iter()
                .map(|s| chainctl_render::systemd::unit_name(&name, &s.name))
                .collect();
            unit_names.push(chainctl_render::systemd::target_name(&name));
            for u in &unit_names {
                let p = systemd::show(u)?;
                let get = |k: &str| p.get(k).cloned().unwrap_or_else(|| "-".into());
                println!(
                    "{u:<40} {:<10} {:<10} {:>8} {:>8} {:>9}",
                    get("ActiveState"),
                    get("SubState"),
                    get("MainPID"),
                    get("NRestarts"),
                    get("ExecMainStatus")
                );
                if get("NeedDaemonReload") == "yes" {
                    bad = true;
                    println!("  {u}: its file changed on disk since systemd read it: run `chainctl systemd install` (it reloads)");
                }
            }
            let d = systemd::drift(&name, &files, &unit_dir);
            for (what, list) in [
                ("missing", &d.missing),
                ("differs from the profile", &d.changed),
                ("no longer in the profile", &d.stale),
            ] {
                for u in list {
                    bad = true;
                    println!("drift: {u} {what}: run `chainctl systemd install`");
                }
            }
            if !bad {
                println!("no drift: the units on disk are what the profile renders");
            }
            Ok(if bad {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        SystemdAction::Restart { service } => {
            if !loaded.profile.services.contains_key(&service) {
                let known: Vec<&str> = loaded.profile.services.keys().map(String::as_str).collect();
                bail!("no service named `{service}`; known: {}", known.join(", "));
            }
            let unit = chainctl_render::systemd::unit_name(&name, &service);
            let st = std::process::Command::new("systemctl")
                .args(["restart", &unit])
                .status()
                .context("cannot run systemctl")?;
            if !st.success() {
                bail!("systemctl restart {unit} failed: see `journalctl -u {unit}`");
            }
            println!("restarted {unit}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn render(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    what: RenderWhat,
    out: &Path,
    user: &str,
    chainctl: Option<&Path>,
) -> Result<ExitCode> {
    use chainctl_render as render;
    let loaded = chainctl_core::loader::load(setup::source(profile)?)?;
    let p = &loaded.profile;
    let base = setup::base_dir(&loaded);
    // Ports come from the state dir's ports.json when it has one (as `up` would use),
    // else from a host-independent allocation, so rendering is reproducible.
    let (files, secrets) = match what {
        RenderWhat::Systemd => {
            let (plan, files) = systemd_files(&loaded, state_dir, user, chainctl)?;
            let secrets: Vec<PathBuf> = plan.jwt_pairs.iter().map(|j| j.path.clone()).collect();
            (files, secrets)
        }
        RenderWhat::Compose => {
            // Ports as `up` with this state dir would have them; inside the containers,
            // the system layout. Secrets are made by the project itself (chainctl_init).
            let layout = setup::layout(&loaded, state_dir);
            let alloc =
                setup::allocate(&loaded, &layout, &[], &chainctl_core::ports::NoProbe, false)?;
            let inside = Layout::new(render::system_state_dir(&p.name));
            let plan = plan::build_for(p, &inside, &alloc, &base, plan::Target::Container)?;
            let files = render::compose::render(&render::compose::Inputs {
                profile: p,
                plan: &plan,
                profile_text: &loaded.source.text,
                profile_label: &loaded.source.label,
                ports: &alloc,
            })?;
            (files, Vec::new())
        }
        RenderWhat::K8s => (k8s_files(&loaded, state_dir)?, Vec::new()),
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for f in &files {
        let path = out.join(&f.name);
        let unchanged = std::fs::read_to_string(&path).is_ok_and(|old| old == f.contents);
        if f.name == render::k8s::SECRETS_FILE {
            // Keys and Engine API secrets: only the owner reads them, even unchanged.
            if !unchanged {
                chainctl_common::fs::write_atomic(&path, f.contents.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot chmod {}", path.display()))?;
        } else if !unchanged {
            std::fs::write(&path, &f.contents)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        println!(
            "{} {}",
            if unchanged { "unchanged" } else { "wrote    " },
            path.display()
        );
    }
    let missing: Vec<String> = secrets
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        let dir = secrets
            .first()
            .and_then(|p| p.parent())
            .and_then(Path::parent)
            .and_then(Path::parent)
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        eprintln!(
            "note: {} secret file(s) do not exist yet ({}): run `chainctl -p PROFILE --state-dir {dir} jwt generate` first, then `chown -R {user}: {dir}/secrets` so the units can read them",
            missing.len(),
            missing.join(", "),
        );
    }
    if let RenderWhat::K8s = what {
        println!(
            "apply with `kubectl apply -n NAMESPACE -f network.yaml -f {} -f manifests.yaml` in {} \
             (images {} and the profile's must be where the cluster pulls from); {} is secret: do not commit it",
            render::k8s::SECRETS_FILE,
            out.display(),
            chainctl_core::network::chainctl_image(),
            render::k8s::SECRETS_FILE,
        );
    }
    if let RenderWhat::Compose = what {
        println!(
            "start it with `docker-compose up -d` in {} (the image {} must exist: `chainctl image build`)",
            out.display(),
            chainctl_core::network::chainctl_image()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Kubernetes manifests of a profile. The network's genesis, keys and secrets are the
/// state dir's (made there first when missing, as `up` makes them, so rendering again
/// keeps the same chain and keys); the containers see them at the system layout.
fn k8s_files(
    loaded: &chainctl_core::profile::Loaded,
    state_dir: Option<&Path>,
) -> Result<Vec<chainctl_render::File>> {
    use chainctl_render as render;
    let p = &loaded.profile;
    let base = setup::base_dir(loaded);
    let layout = setup::layout(loaded, state_dir);
    let alloc = setup::allocate(loaded, &layout, &[], &chainctl_core::ports::NoProbe, false)?;
    let inside = Layout::new(render::system_state_dir(&p.name));
    let plan = plan::build_for(p, &inside, &alloc, &base, plan::Target::Container)?;
    render::k8s::preflight(p, &plan)?;
    let here = plan::build_for(p, &layout, &alloc, &base, plan::Target::Container)?;
    chainctl_common::fs::private_dir(&layout.root)
        .with_context(|| format!("cannot create the state dir {}", layout.root.display()))?;
    chainctl_core::jwt::ensure_secrets(&here)?;
    chainctl_supervisor::files::write_files(p, &layout, &here, plan::Target::Container)?;
    // The state dir's paths, as the containers see them.
    let rebase = |path: &Path| -> Result<PathBuf> {
        let rel = path.strip_prefix(&layout.root).with_context(|| {
            format!(
                "{} is outside the state dir {}: a cluster cannot mount it",
                path.display(),
                layout.root.display()
            )
        })?;
        Ok(inside.root.join(rel))
    };
    let mut network = BTreeMap::new();
    let net = chainctl_core::network::network_dir(&layout);
    if p.validators.count > 0 {
        for e in
            std::fs::read_dir(&net).with_context(|| format!("cannot read {}", net.display()))?
        {
            let e = e?;
            if e.file_type()?.is_file() {
                let text = std::fs::read_to_string(e.path())
                    .with_context(|| format!("cannot read {}", e.path().display()))?;
                network.insert(e.file_name().to_string_lossy().into_owned(), text);
            }
        }
    }
    let mut configs = BTreeMap::new();
    for i in 0..p.validators.count {
        let name = chainctl_core::network::validator_name(i);
        let svc = here
            .service(&name)
            .with_context(|| format!("the plan has no service `{name}`"))?;
        let mut f = chainctl_common::validator::NodeFile::load(&svc.data_dir.join("config.json"))
            .map_err(anyhow::Error::msg)?;
        f.genesis = rebase(&f.genesis)?;
        f.key = rebase(&f.key)?;
        f.control_token = rebase(&f.control_token)?;
        for el in &mut f.execution {
            el.jwt_secret = rebase(&el.jwt_secret)?;
        }
        configs.insert(name, serde_json::to_string_pretty(&f)? + "\n");
    }
    let mut secrets = BTreeMap::new();
    let root = layout.secrets_dir();
    for svc in &here.services {
        for s in &svc.secrets {
            if let Ok(rel) = s.strip_prefix(&root) {
                let bytes = std::fs::read(s)
                    .with_context(|| format!("cannot read the secret {}", s.display()))?;
                secrets.insert(rel.to_path_buf(), bytes);
            }
        }
    }
    Ok(render::k8s::render(&render::k8s::Inputs {
        profile: p,
        plan: &plan,
        network: &network,
        configs: &configs,
        secrets: &secrets,
    })?)
}

fn tail_lines(path: &Path, n: usize) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    // Read back in blocks until enough newlines are seen.
    let mut start = len;
    let mut buf = Vec::new();
    while start > 0 && buf.iter().filter(|&&b| b == b'\n').count() <= n {
        let step = start.min(64 * 1024);
        start -= step;
        f.seek(SeekFrom::Start(start))?;
        let mut chunk = vec![0; step as usize];
        f.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    Ok(lines[from..].iter().map(|l| format!("{l}\n")).collect())
}

fn logs(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    service: &str,
    follow: bool,
    n: usize,
) -> Result<ExitCode> {
    let layout = layout_of(profile, state_dir)?;
    let known: Vec<String> = match state::read_json::<StateFile>(&layout.state_file())? {
        Some(st) => st.services.keys().cloned().collect(),
        None => chainctl_core::loader::load(setup::source(profile)?)
            .map(|l| l.profile.services.keys().cloned().collect())
            .unwrap_or_default(),
    };
    if !known.iter().any(|k| k == service) {
        bail!("no service named `{service}`; known: {}", known.join(", "));
    }
    let path = layout.log_file(service);
    if !path.exists() {
        bail!(
            "{} does not exist yet: `{service}` has not been started (run `chainctl up`)",
            path.display()
        );
    }
    let mut out = std::io::stdout().lock();
    out.write_all(tail_lines(&path, n)?.as_bytes())?;
    out.flush()?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    use std::os::unix::fs::MetadataExt;
    let mut f = std::fs::File::open(&path)?;
    let mut pos = f.seek(SeekFrom::End(0))?;
    let mut ino = f.metadata()?.ino();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = f.read(&mut buf)?;
        if k > 0 {
            out.write_all(&buf[..k])?;
            out.flush()?;
            pos += k as u64;
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
        // Rotation renames the file: finish the old one, then open the new.
        match std::fs::metadata(&path) {
            Ok(m) if m.ino() != ino || m.len() < pos => {
                loop {
                    let k = f.read(&mut buf)?;
                    if k == 0 {
                        break;
                    }
                    out.write_all(&buf[..k])?;
                }
                out.flush()?;
                f = std::fs::File::open(&path)?;
                ino = m.ino();
                pos = 0;
            }
            _ => {}
        }
    }
}

/// The JSON-RPC URL of the profile's first execution client, from its port allocation.
fn default_rpc(profile: Option<&Path>, state_dir: Option<&Path>) -> Result<String> {
    let layout = layout_of(profile, state_dir)?;
    let ports = state::read_json::<PortsFile>(&layout.ports_file())?.ok_or_else(|| {
        anyhow::anyhow!(
            "no --rpc given and the profile's network is not up (no {}): run `chainctl up`, or pass --rpc URL",
            layout.ports_file().display()
        )
    })?;
    let first_el = chainctl_core::network::el_name(0, 0);
    let (name, pick) = ports
        .services
        .get_key_value(&first_el)
        .and_then(|(n, p)| Some((n, p.get("http")?)))
        .or_else(|| {
            ports
                .services
                .iter()
                .find_map(|(n, p)| Some((n, p.get("http").or_else(|| p.get("rpc"))?)))
        })
        .ok_or_else(|| {
            anyhow::anyhow!("no --rpc given and the profile has no service with an `http` or `rpc` port: pass --rpc URL")
        })?;
    // Where the supervisor reaches it (another swarm node's address, or this host).
    let host = state::read_json::<StateFile>(&layout.state_file())
        .ok()
        .flatten()
        .and_then(|st| st.services.get(name).map(|r| r.plan.ready_host))
        .filter(|a| !a.is_unspecified())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    Ok(format!(
        "http://{}",
        std::net::SocketAddr::new(host, pick.port)
    ))
}

fn load_cmd(profile: Option<&Path>, state_dir: Option<&Path>, a: LoadArgs) -> Result<ExitCode> {
    let rpc = match a.rpc {
        Some(r) => r,
        None => default_rpc(profile, state_dir)?,
    };
    let accounts = a
        .accounts
        .unwrap_or_else(|| a.tps.div_ceil(chainctl_load::MAX_TPS_PER_ACCOUNT).max(1) as u32);
    let summary = chainctl_load::run(chainctl_load::Config {
        rpc,
        tps: a.tps,
        duration: a.duration,
        accounts,
        first_account: a.first_account,
        kind: a.kind,
        mnemonic: a
            .mnemonic
            .unwrap_or_else(|| chainctl_core::network::DEV_MNEMONIC.to_string()),
        drain: a.drain,
        progress: true,
    })?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        _ => summary.print(),
    }
    Ok(if summary.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn failover_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    validator: String,
    to: Option<String>,
) -> Result<ExitCode> {
    let loaded = setup::load(profile)?;
    let layout = setup::layout(&loaded, state_dir);
    let api = chainctl_monitor::api_endpoint(&layout, &loaded.profile)?;
    let addr = api.addr;
    let body = serde_json::json!({"validator": validator, "to": to});
    let path = "/api/v1/failover";
    let answer = chainctl_common::http::json(
        addr,
        api.tls_cert.as_deref(),
        "POST",
        path,
        Some(&api.token),
        Some(&body),
    );
    let (code, v) = answer.map_err(|e| {
        anyhow::anyhow!("chainctl's API at {addr} does not answer ({e}): is the network up?")
    })?;
    if code == 200 {
        println!(
            "{validator}: active execution client is now {}",
            v["active"].as_str().unwrap_or("?")
        );
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!(
            "failover of {validator} refused: {}",
            v["error"].as_str().unwrap_or("no reason given")
        )
    }
}

fn report_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    format: chainctl_report::render::Format,
    out: Option<&Path>,
    drill: bool,
    window: std::time::Duration,
) -> Result<ExitCode> {
    // Exit 2, not 1, when the report cannot be made: a gate must not read "could not
    // look" as "not ready" (or the reverse).
    let could_not = |e: anyhow::Error| {
        eprintln!("error: the readiness report could not run: {e:#}");
        Ok(ExitCode::from(2))
    };
    let (loaded, layout, mut plan, _) =
        match inspect_plan(profile, state_dir, &chainctl_core::ports::NoProbe) {
            Ok(x) => x,
            Err(e) => return could_not(e),
        };
    // The services placed on other swarm nodes are probed there.
    if loaded.profile.runtime == chainctl_core::profile::RuntimeKind::Swarm {
        if let Err(e) = chainctl_runtime::swarm::locate(&loaded.profile.swarm, &mut plan.services) {
            return could_not(anyhow::anyhow!(
                "cannot tell which swarm node runs which service: {e}"
            ));
        }
    }
    let inputs = chainctl_report::evidence::Inputs {
        profile: &loaded.profile,
        layout: &layout,
        plan: &plan,
        window,
        drill,
    };
    if drill {
        eprintln!("failover drill: killing one validator's active execution client (it is restarted and checked)…");
    }
    let evidence = match chainctl_report::evidence::gather(&inputs) {
        Ok(e) => e,
        Err(e) => return could_not(e),
    };
    let report = chainctl_report::assemble(
        loaded.profile.name.clone(),
        window.as_secs(),
        chainctl_report::checks::all(&evidence),
        chainctl_report::checks::service_rows(&evidence),
        evidence.ports.clone(),
        evidence
            .chain
            .as_ref()
            .map(|b| b.iter().map(|b| (b.number, b.timestamp, b.txs)).collect())
            .unwrap_or_default(),
    );
    let text = chainctl_report::render::render(&report, format);
    match out {
        Some(p) => {
            if let Err(e) = std::fs::write(p, &text) {
                return could_not(anyhow::anyhow!("cannot write {}: {e}", p.display()));
            }
            eprintln!(
                "{}: {} (score {:.1}) written to {}",
                report.profile,
                if report.verdict == chainctl_report::Verdict::Ready {
                    "READY"
                } else {
                    "NOT READY"
                },
                report.score,
                p.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(match report.verdict {
        chainctl_report::Verdict::Ready => ExitCode::SUCCESS,
        chainctl_report::Verdict::NotReady => ExitCode::from(1),
    })
}
