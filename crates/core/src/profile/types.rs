//! The profile's data model: what a user declares in YAML (see `profiles/example-full.yaml`).

use super::duration::Dur;
use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

/// A whole profile: one network and the services that make it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Profile name: lowercase letters, digits and `-`; names the default state dir.
    pub name: String,
    /// Where chainctl keeps ports, secrets, logs, data and its state file
    /// (default: `$XDG_STATE_HOME/chainctl/<name>`, `~/.local/state/chainctl/<name>`,
    /// or `/var/lib/chainctl/<name>` for root). `--state-dir` overrides it.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The chain every node of this profile runs.
    #[serde(default)]
    pub chain: Chain,
    /// The BFT validator set: each validator a consensus node driving its execution clients.
    #[serde(default)]
    pub validators: Validators,
    /// Named execution clients outside a validator: refused (declare the clients each
    /// validator drives under `validators.execution`, or run one under `services`).
    #[serde(default)]
    pub execution: BTreeMap<String, ExecutionClient>,
    /// Generic services by name: any program, with placeholders such as `{{port.http}}`.
    #[serde(default)]
    pub services: BTreeMap<String, CommandService>,
    /// Where services run.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// Docker Swarm settings (`runtime: swarm`): placement and publishing.
    #[serde(default)]
    pub swarm: SwarmConfig,
    /// The network of `runtime: docker` and of rendered compose projects.
    #[serde(default)]
    pub docker: DockerConfig,
    /// The port range chainctl allocates from, and ports it must never hand out.
    #[serde(default)]
    pub ports: PortsConfig,
    /// Listen addresses of the endpoints chainctl exposes.
    #[serde(default)]
    pub listen: Listen,
    /// Health probing of every service: interval, thresholds, restarts, disk limits.
    #[serde(default)]
    pub health: Health,
    /// Failover between execution clients.
    #[serde(default)]
    pub failover: Failover,
    /// The network's one JSON-RPC endpoint, in front of every execution client.
    #[serde(default)]
    pub gateway: Gateway,
    /// chainctl's own HTTP API: `/metrics`, `/health`, `/ready`, `/api/v1/...`.
    #[serde(default)]
    pub api: Api,
    /// Supervisor defaults: restart backoff, give-up limit, stop grace, logs.
    #[serde(default)]
    pub supervisor: SupervisorConfig,
    /// `chainctl report`: what it may use on the network.
    #[serde(default)]
    pub report: ReportConfig,
    /// Scheduled backups: the supervisor runs `chainctl backup` at this interval (a
    /// rendered systemd deployment gets a timer), keeping the newest `keep`.
    #[serde(default)]
    pub backup: Option<BackupSchedule>,
}

/// Scheduled backups of the network (`chainctl backup --to DIR --keep N` at an interval).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupSchedule {
    /// How often, e.g. `6h` (at least `1m`); the report's `ops.backups` wants a whole
    /// backup younger than this.
    pub every: Dur,
    /// How many backups of this network to keep in `to`; older ones are removed after
    /// each new one is whole.
    #[serde(default = "default_backup_keep")]
    pub keep: u32,
    /// The directory backups are made in (relative paths: to the profile's directory).
    pub to: PathBuf,
    /// age X25519 public keys (`age1…`) the secrets are encrypted to. Without any, the
    /// scheduled backups hold no secrets (a passphrase never sits in a profile).
    #[serde(default)]
    pub recipients: Vec<String>,
}

fn default_backup_keep() -> u32 {
    7
}

/// What `chainctl report` may use on the network.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// The key of the account that signs the report's canary transaction (a 0-value
    /// transfer to itself, sent through the gateway and followed to every execution
    /// client's receipt): a file holding the 32-byte secp256k1 private key in hex, mode
    /// 0600 (relative paths are relative to the profile). The account pays the canary's
    /// gas. Without it the canary uses the last development account
    /// (`chain.dev_accounts`); with neither the canary is not sent and the report cannot
    /// say READY.
    #[serde(default)]
    pub canary_key: Option<PathBuf>,
}

/// Chain parameters shared by every node.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    /// EIP-155 chain id.
    #[serde(default = "default_chain_id")]
    pub chain_id: u64,
    /// Target block time; at least 1s because Engine API timestamps are whole seconds.
    #[serde(default = "default_block_time")]
    pub block_time: Dur,
    /// Fork rules from genesis.
    #[serde(default)]
    pub fork: Fork,
    /// Genesis allocation: address → account.
    #[serde(default)]
    pub alloc: BTreeMap<String, GenesisAccount>,
    /// Prefunded development accounts (1,000,000 ETH each) derived from the documented
    /// test mnemonic `test test test test test test test test test test test junk`
    /// (m/44'/60'/0'/0/i). Public knowledge: never use them on a network with value; set 0
    /// to have none.
    #[serde(default = "default_dev_accounts")]
    pub dev_accounts: u32,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            chain_id: default_chain_id(),
            block_time: default_block_time(),
            fork: Fork::default(),
            alloc: BTreeMap::new(),
            dev_accounts: default_dev_accounts(),
        }
    }
}

fn default_dev_accounts() -> u32 {
    10
}
fn default_chain_id() -> u64 {
    1337
}
fn default_block_time() -> Dur {
    Dur::secs(1)
}

/// Fork rules active at genesis; every later fork stays off. Validators drive each
/// through its own Engine API versions (V1 Paris, V2 Shanghai, V3 Cancun, V4 Prague,
/// getPayloadV5 Osaka).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Fork {
    /// Paris, the merge itself: no withdrawals, no blobs.
    Paris,
    /// Shanghai (withdrawals, PUSH0).
    Shanghai,
    /// Cancun (Dencun: blobs, the beacon block root).
    Cancun,
    /// Prague (Pectra).
    Prague,
    /// Osaka (Fusaka), what mainnet runs today.
    #[default]
    Osaka,
}

/// One genesis account.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    /// Balance in wei, decimal or 0x-hex, as a string.
    pub balance: String,
}

/// The validator set.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Validators {
    /// Number of validators (N = 3f + 1 tolerates f faulty); 0 runs no consensus.
    #[serde(default)]
    pub count: u32,
    /// `generate` (chainctl makes one ed25519 key per validator) or a list of key files.
    #[serde(default)]
    pub keys: ValidatorKeys,
    /// The execution clients each validator drives, in failover order (the first is active):
    /// one list for every validator (`[reth, builtin]`), or one list per validator
    /// (`[[reth, builtin], [geth, builtin]]`); services `val-I-el-J` are generated for them.
    #[serde(default)]
    pub execution: ExecutionSpec,
    /// Fee recipient of the blocks validators propose (default: the zero address).
    #[serde(default)]
    pub fee_recipient: Option<String>,
    /// Where Reth, Geth and Erigon come from (binary, image) and extra arguments.
    #[serde(default)]
    pub clients: Clients,
}

/// The execution clients of the validators: the same list for all, or one per validator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a list of execution clients (builtin, reth, geth, erigon), e.g. [reth, builtin], or one such list per validator, e.g. [[reth, builtin], [geth, builtin]]"
)]
pub enum ExecutionSpec {
    /// Every validator drives these.
    Same(Vec<ExecutionKind>),
    /// Validator `i` drives list `i`.
    PerValidator(Vec<Vec<ExecutionKind>>),
}

impl Default for ExecutionSpec {
    fn default() -> Self {
        ExecutionSpec::Same(vec![ExecutionKind::Builtin])
    }
}

impl ExecutionSpec {
    /// The clients validator `i` drives (empty when a per-validator list lacks it).
    pub fn of(&self, i: u32) -> &[ExecutionKind] {
        match self {
            ExecutionSpec::Same(v) => v,
            ExecutionSpec::PerValidator(v) => v.get(i as usize).map(Vec::as_slice).unwrap_or(&[]),
        }
    }
    /// Every kind named, once each, in order of first use.
    pub fn kinds(&self) -> Vec<ExecutionKind> {
        let all: Vec<ExecutionKind> = match self {
            ExecutionSpec::Same(v) => v.clone(),
            ExecutionSpec::PerValidator(v) => v.iter().flatten().copied().collect(),
        };
        let mut out = Vec::new();
        for k in all {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }
}

/// Settings of the external execution clients.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Clients {
    /// Reth.
    #[serde(default)]
    pub reth: ClientSettings,
    /// Geth.
    #[serde(default)]
    pub geth: ClientSettings,
    /// Erigon.
    #[serde(default)]
    pub erigon: ClientSettings,
}

impl Clients {
    /// The settings of one kind (the built-in engine has none).
    pub fn of(&self, kind: ExecutionKind) -> Option<&ClientSettings> {
        match kind {
            ExecutionKind::Builtin => None,
            ExecutionKind::Reth => Some(&self.reth),
            ExecutionKind::Geth => Some(&self.geth),
            ExecutionKind::Erigon => Some(&self.erigon),
        }
    }
}

/// Where one client comes from.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// Path or name of its binary (default: `reth`, `geth`, `erigon` on PATH).
    #[serde(default)]
    pub binary: Option<String>,
    /// Its image under `runtime: docker` (chainctl never pulls).
    #[serde(default)]
    pub image: Option<String>,
    /// Arguments appended to the command line chainctl renders.
    #[serde(default)]
    pub args: Vec<String>,
}

/// Where validator keys come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ValidatorKeys {
    /// chainctl generates keys (mode 0600) in the state dir.
    #[default]
    Generate,
    /// Existing key files, one per validator.
    Files(Vec<PathBuf>),
}

impl<'de> Deserialize<'de> for ValidatorKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ValidatorKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`generate` or a list of key file paths")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v == "generate" {
                    Ok(ValidatorKeys::Generate)
                } else {
                    Err(E::custom(format!(
                        "unknown key source `{v}`: expected `generate` or a list of key file paths"
                    )))
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut files = Vec::new();
                while let Some(p) = seq.next_element::<PathBuf>()? {
                    files.push(p);
                }
                Ok(ValidatorKeys::Files(files))
            }
        }
        d.deserialize_any(V)
    }
}

/// One execution client.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionClient {
    /// Which client.
    pub kind: ExecutionKind,
    /// Index of the validator this client serves.
    #[serde(default)]
    pub validator: u32,
    /// Path or name of the binary (default: the kind's usual binary name on PATH).
    #[serde(default)]
    pub binary: Option<String>,
    /// Extra arguments appended to the command line chainctl renders.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Pinned ports by name (`http`, `ws`, `engine`, `p2p`, `metrics`).
    #[serde(default)]
    pub ports: BTreeMap<String, PortSpec>,
}

/// Execution client implementations chainctl knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionKind {
    /// The built-in revm engine (`chainctl node evm`).
    Builtin,
    /// Reth.
    Reth,
    /// Geth.
    Geth,
    /// Erigon.
    Erigon,
}

/// A generic service: any program chainctl starts, watches and restarts.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandService {
    /// Program and arguments; placeholders like `{{port.http}}` are resolved by the planner.
    pub command: Vec<String>,
    /// Extra environment variables (values may use placeholders).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the service's data dir).
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Ports to allocate, by name: `auto`, a pinned number, or `{port, protocol}`.
    #[serde(default)]
    pub ports: BTreeMap<String, PortSpec>,
    /// Services that must be ready before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Execution services this one drives through the Engine API: one JWT secret per
    /// pair, and this service starts after them.
    #[serde(default)]
    pub drives: Vec<String>,
    /// Which ports must accept TCP connections for the service to count as ready
    /// (default: all its TCP ports).
    #[serde(default)]
    pub ready_ports: Option<Vec<String>>,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartConfig,
    /// How to stop it.
    #[serde(default)]
    pub stop: Option<StopConfig>,
    /// How long it may take to become ready before it is reported unhealthy.
    #[serde(default)]
    pub startup_grace: Option<Dur>,
    /// Container image that has the program (for `chainctl render compose`).
    #[serde(default)]
    pub image: Option<String>,
    /// The program JIT-compiles code (Node.js, Java): systemd units then allow memory
    /// that is writable and executable (no `MemoryDenyWriteExecute=`).
    #[serde(default)]
    pub jit: bool,
}

/// A port request: `auto`, a pinned number, or a map with protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PortSpec {
    /// Pinned number, or none for `auto`.
    pub port: Option<u64>,
    /// TCP, UDP, or both on the same number (P2P).
    pub protocol: Protocol,
}

impl PortSpec {
    /// An allocated TCP port.
    pub const AUTO_TCP: PortSpec = PortSpec {
        port: None,
        protocol: Protocol::Tcp,
    };
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            #[serde(default)]
            port: Option<AutoOrNumber>,
            #[serde(default)]
            protocol: Protocol,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum AutoOrNumber {
            Number(u64),
            Word(String),
        }
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = PortSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`auto`, a port number, or {port, protocol}")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortSpec, E> {
                Ok(PortSpec {
                    port: Some(v),
                    protocol: Protocol::Tcp,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortSpec, E> {
                Err(E::custom(format!(
                    "port {v} is negative: use a number in 1024-65535 or `auto`"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortSpec, E> {
                if v == "auto" {
                    Ok(PortSpec {
                        port: None,
                        protocol: Protocol::Tcp,
                    })
                } else {
                    Err(E::custom(format!(
                        "invalid port `{v}`: expected `auto`, a number in 1024-65535, or {{port, protocol}}"
                    )))
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<PortSpec, A::Error> {
                let full = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let port = match full.port {
                    None => None,
                    Some(AutoOrNumber::Number(n)) => Some(n),
                    Some(AutoOrNumber::Word(w)) if w == "auto" => None,
                    Some(AutoOrNumber::Word(w)) => {
                        return Err(de::Error::custom(format!(
                            "invalid port `{w}`: expected `auto` or a number in 1024-65535"
                        )))
                    }
                };
                Ok(PortSpec {
                    port,
                    protocol: full.protocol,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Transport protocol of a port.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    Serialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP only.
    #[default]
    Tcp,
    /// UDP only.
    Udp,
    /// TCP and UDP on the same number (devp2p uses both).
    Both,
}

impl Protocol {
    /// Whether the port needs TCP.
    pub fn tcp(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Both)
    }
    /// Whether the port needs UDP.
    pub fn udp(self) -> bool {
        matches!(self, Protocol::Udp | Protocol::Both)
    }
    /// Whether two requests on one number would collide.
    pub fn overlaps(self, other: Protocol) -> bool {
        (self.tcp() && other.tcp()) || (self.udp() && other.udp())
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Both => "tcp+udp",
        })
    }
}

/// When a service is restarted after it exits.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// `always`, `on-failure` (default) or `never`.
    #[serde(default)]
    pub policy: RestartPolicy,
    /// Exit codes that count as a clean exit (default `[0]`).
    #[serde(default = "default_success_codes")]
    pub success_exit_codes: Vec<i64>,
    /// Exit codes that mean "retrying cannot help" (e.g. a config error): the service
    /// goes straight to `given-up` (default `[78]`, EX_CONFIG).
    #[serde(default = "default_prevent_codes")]
    pub prevent_exit_codes: Vec<i64>,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            policy: RestartPolicy::default(),
            success_exit_codes: default_success_codes(),
            prevent_exit_codes: default_prevent_codes(),
        }
    }
}

fn default_success_codes() -> Vec<i64> {
    vec![0]
}
fn default_prevent_codes() -> Vec<i64> {
    vec![78]
}

/// Restart policy names, as in systemd's `Restart=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart after any exit.
    Always,
    /// Restart unless the exit status is in `success_exit_codes`.
    #[default]
    OnFailure,
    /// Never restart.
    Never,
}

/// How a service is stopped.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopConfig {
    /// Signal sent to the process group first.
    #[serde(default)]
    pub signal: StopSignal,
    /// Time between that signal and SIGKILL of the whole group.
    #[serde(default)]
    pub grace: Option<Dur>,
}

/// Signals a service may ask to be stopped with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum StopSignal {
    /// SIGTERM.
    #[default]
    Term,
    /// SIGINT.
    Int,
    /// SIGQUIT.
    Quit,
    /// SIGHUP.
    Hup,
}

impl StopSignal {
    /// The signal itself (its `as_str()` is the name systemd and compose take).
    pub fn signal(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal;
        match self {
            StopSignal::Term => Signal::SIGTERM,
            StopSignal::Int => Signal::SIGINT,
            StopSignal::Quit => Signal::SIGQUIT,
            StopSignal::Hup => Signal::SIGHUP,
        }
    }
}

impl RestartPolicy {
    /// The same policy in systemd's `Restart=` and compose's `restart:` words.
    pub fn service_manager_word(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "no",
        }
    }
}

/// Where services run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Child processes of the supervisor.
    #[default]
    Process,
    /// Docker containers on the local engine, from images built or loaded beforehand.
    Docker,
    /// systemd units: refused by `up`; render and install them with `chainctl systemd install`.
    Systemd,
    /// Docker Swarm services, one per chainctl service, on the swarm the Docker engine
    /// chainctl talks to is a manager of.
    Swarm,
}

impl RuntimeKind {
    /// Whether services run as containers from images (Docker, Swarm).
    pub fn containers(self) -> bool {
        matches!(self, RuntimeKind::Docker | RuntimeKind::Swarm)
    }

    /// Its name in a profile.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker => "docker",
            RuntimeKind::Systemd => "systemd",
            RuntimeKind::Swarm => "swarm",
        }
    }
}

/// Docker Swarm settings (`runtime: swarm`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwarmConfig {
    /// Validator (`val-I`) or service → the swarm node it runs on, named by that node's
    /// `chainctl.node` label (set with `chainctl swarm label NAME --node NODE`). A validator's
    /// execution clients go with it. What is not listed stays on the node chainctl talks
    /// to, so data stays where it lives.
    #[serde(default)]
    pub placement: BTreeMap<String, String>,
    /// How JSON-RPC, Engine API and metrics ports are published: `host` (default: on the
    /// node running the task; services find each other by DNS round robin, no virtual IP)
    /// or `mesh` (the routing mesh: every node; needs IPVS in the nodes' kernels). P2P
    /// ports are always published on the node (host mode): the mesh would NAT them.
    #[serde(default)]
    pub publish: SwarmPublish,
}

/// The containers' network (`runtime: docker`, `chainctl render compose`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// The IPv4 subnet of the profile's bridge network, e.g. `10.213.8.0/22`. The external
    /// execution clients (Reth, Geth, Erigon) get fixed addresses in its lower half, in
    /// name order, so their static peers (enode URLs, which need an address when the client
    /// starts) are right whatever the start order; Docker gives the other containers
    /// addresses from the upper half. Default, when the profile has external clients: a
    /// /22 in 10.200.0.0–10.249.255.255 picked from the profile's name (set one when that
    /// overlaps a network of this host); without them, whatever Docker picks.
    #[serde(default)]
    pub subnet: Option<String>,
}

/// How a swarm service's non-P2P ports are published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SwarmPublish {
    /// On the node running the task only (endpoint mode `dnsrr`).
    #[default]
    Host,
    /// Through the swarm's routing mesh (ingress, endpoint mode `vip`): every node.
    Mesh,
}

/// Port range and reserved ports.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortsConfig {
    /// First port chainctl may allocate.
    #[serde(default = "default_range_start")]
    pub start: u64,
    /// Last port chainctl may allocate (inclusive).
    #[serde(default = "default_range_end")]
    pub end: u64,
    /// Ports inside the range chainctl must never hand out (kept for other programs).
    #[serde(default)]
    pub reserved: Vec<u64>,
}

impl Default for PortsConfig {
    fn default() -> Self {
        PortsConfig {
            start: default_range_start(),
            end: default_range_end(),
            reserved: Vec::new(),
        }
    }
}

/// Below Linux's ephemeral range (32768-60999), so outgoing connections never take our ports.
fn default_range_start() -> u64 {
    20000
}
fn default_range_end() -> u64 {
    29999
}

/// Listen addresses.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Address of the services' endpoints: the execution clients' JSON-RPC, Engine API
    /// and metrics, the validators' status (default loopback). They speak plain HTTP.
    #[serde(default = "loopback")]
    pub rpc: IpAddr,
    /// Address of chainctl's API and metrics (default loopback).
    #[serde(default = "loopback")]
    pub api: IpAddr,
    /// Address of the JSON-RPC gateway (default: `rpc`'s). The one endpoint to open to
    /// other hosts, with `gateway.tls`, while the clients stay on loopback.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Allow plain HTTP beyond loopback: an address above that is not loopback without
    /// TLS in front of what listens there (`api.tls`, `gateway.tls`; the services'
    /// endpoints have none) is refused unless this is set, and the report warns while it
    /// is. Default false.
    #[serde(default)]
    pub insecure: bool,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            rpc: loopback(),
            api: loopback(),
            gateway: None,
            insecure: false,
        }
    }
}

impl Listen {
    /// Where the gateway listens.
    pub fn gateway(&self) -> IpAddr {
        self.gateway.unwrap_or(self.rpc)
    }
}

fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// Health probing settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Probe interval.
    #[serde(default = "default_probe_interval")]
    pub interval: Dur,
    /// Consecutive failed probes before a service is unhealthy.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// Consecutive passing probes before it is healthy again.
    #[serde(default = "default_successes")]
    pub successes: u32,
    /// Restart an execution client that has been unhealthy this long (`0s`: never).
    #[serde(default = "default_restart_el_after")]
    pub restart_el_after: Dur,
    /// Used share of a data dir's file system that raises a warning (percent).
    #[serde(default = "default_disk_warn")]
    pub disk_warn_percent: f64,
    /// Used share that is critical (percent): `/ready` answers 503.
    #[serde(default = "default_disk_critical")]
    pub disk_critical_percent: f64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            interval: default_probe_interval(),
            failures: default_failures(),
            successes: default_successes(),
            restart_el_after: default_restart_el_after(),
            disk_warn_percent: default_disk_warn(),
            disk_critical_percent: default_disk_critical(),
        }
    }
}

fn default_restart_el_after() -> Dur {
    Dur::secs(30)
}
fn default_disk_warn() -> f64 {
    80.0
}
fn default_disk_critical() -> f64 {
    90.0
}

/// The JSON-RPC gateway.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Whether chainctl runs it (only for profiles with validators).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Its port on `listen.rpc` (HTTP and WebSocket on one port); `auto` allocates one.
    #[serde(default = "default_gateway_port")]
    pub port: PortSpec,
    /// Largest request body in bytes (413 above it).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Most calls in one batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: u32,
    /// Calls per second each client address may make (429 above it; 0: no limit).
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
    /// How long one call may take upstream before the client gets an error.
    #[serde(default = "default_gateway_timeout")]
    pub timeout: Dur,
    /// The JSON-RPC methods it forwards: names (`txpool_status`) and namespaces
    /// (`eth_*`; a namespace never covers the methods that sign with the node's keys or
    /// mine, such as `eth_sign` or `eth_sendTransaction`: name those to allow them).
    /// Anything else is answered by the gateway itself with error -32601 naming this
    /// setting. `engine_*` is never forwarded.
    #[serde(default = "default_gateway_allow")]
    pub allow: Vec<String>,
    /// Memory for answers about finalized blocks (blocks and transactions by number or
    /// hash, receipts, logs of a finalized range, state at a finalized height, the chain
    /// id), in MiB: they never change, so they are served without asking a client; least
    /// recently used first out. `latest`, `pending` and `safe` are never cached. 0: none.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u32,
    /// Open WebSocket sessions one client address may hold (429 for the next).
    #[serde(default = "default_ws_sessions")]
    pub max_ws_sessions: u32,
    /// Subscriptions one WebSocket session may hold (`eth_subscribe` beyond it gets
    /// error -32005).
    #[serde(default = "default_subscriptions")]
    pub max_subscriptions: u32,
    /// Most blocks one `eth_getLogs` may span, tags (`latest`, …) counted at the head
    /// (-32005 above it; Reth's default too).
    #[serde(default = "default_logs_blocks")]
    pub logs_max_blocks: u64,
    /// Most logs one `eth_getLogs` answer may carry (-32005 instead of a larger one;
    /// Reth's default too).
    #[serde(default = "default_logs_results")]
    pub logs_max_results: u64,
    /// Serve HTTPS and WSS only, with this certificate and key (PEM files; relative paths
    /// are relative to the profile; reloaded when they change). Without it the gateway is
    /// plain HTTP, allowed on loopback only unless `listen.insecure`.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            enabled: true,
            port: default_gateway_port(),
            max_body_bytes: default_max_body(),
            max_batch: default_max_batch(),
            rate_limit: default_rate_limit(),
            timeout: default_gateway_timeout(),
            allow: default_gateway_allow(),
            cache_mb: default_cache_mb(),
            max_ws_sessions: default_ws_sessions(),
            max_subscriptions: default_subscriptions(),
            logs_max_blocks: default_logs_blocks(),
            logs_max_results: default_logs_results(),
            tls: None,
        }
    }
}

fn default_cache_mb() -> u32 {
    64
}
fn default_ws_sessions() -> u32 {
    64
}
fn default_subscriptions() -> u32 {
    100
}
fn default_logs_blocks() -> u64 {
    100_000
}
fn default_logs_results() -> u64 {
    20_000
}

fn default_gateway_allow() -> Vec<String> {
    crate::methods::DEFAULT_ALLOW
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn default_gateway_port() -> PortSpec {
    PortSpec {
        port: Some(8545),
        protocol: Protocol::Tcp,
    }
}
fn default_max_body() -> u64 {
    5 * 1024 * 1024
}
fn default_max_batch() -> u32 {
    1000
}
fn default_rate_limit() -> u32 {
    20_000
}
fn default_gateway_timeout() -> Dur {
    Dur::secs(10)
}

/// chainctl's API.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Its port on `listen.api`; `auto` (the default) allocates one, recorded in the
    /// state dir's `ports.json` (`chainctl ports` shows it).
    #[serde(default = "auto_port")]
    pub port: PortSpec,
    /// Serve the API over TLS with this certificate and key (PEM files; relative paths
    /// are relative to the profile). Without it the API is plain HTTP, which is why it
    /// listens on loopback by default.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Calls per second each client address may make, every endpoint counted (429
    /// above it; 0: no limit).
    #[serde(default = "default_api_rate_limit")]
    pub rate_limit: u32,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            port: auto_port(),
            tls: None,
            rate_limit: default_api_rate_limit(),
        }
    }
}

fn default_api_rate_limit() -> u32 {
    50
}

/// A TLS certificate and private key (the API's, the gateway's), reloaded when the
/// files change: a renewed certificate is served from the next connection on.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1), mode 0600 or stricter.
    pub key: PathBuf,
}

fn auto_port() -> PortSpec {
    PortSpec::AUTO_TCP
}

fn default_probe_interval() -> Dur {
    Dur::secs(1)
}
fn default_failures() -> u32 {
    3
}
fn default_successes() -> u32 {
    2
}

/// Failover settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Failover {
    /// Whether chainctl switches a validator to a healthy backup EL by itself.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// No switch back within this time unless the new EL fails too (anti-flap).
    #[serde(default = "default_hold")]
    pub hold: Dur,
    /// Blocks behind the second-highest head that count as lagging.
    #[serde(default = "default_max_lag")]
    pub max_lag_blocks: u64,
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            enabled: true,
            hold: default_hold(),
            max_lag_blocks: default_max_lag(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_hold() -> Dur {
    Dur::secs(30)
}
fn default_max_lag() -> u64 {
    5
}

/// Supervisor defaults.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    /// Restart backoff.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// When to stop restarting.
    #[serde(default)]
    pub give_up: GiveUpConfig,
    /// Default grace between the stop signal and SIGKILL, per kind of service.
    #[serde(default)]
    pub stop_grace: StopGraceConfig,
    /// Default time a service may take to become ready.
    #[serde(default = "default_startup_grace")]
    pub startup_grace: Dur,
    /// Per-service log files.
    #[serde(default)]
    pub logs: LogConfig,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            backoff: BackoffConfig::default(),
            give_up: GiveUpConfig::default(),
            stop_grace: StopGraceConfig::default(),
            startup_grace: default_startup_grace(),
            logs: LogConfig::default(),
        }
    }
}

fn default_startup_grace() -> Dur {
    Dur::secs(60)
}

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// First delay.
    #[serde(default = "default_initial")]
    pub initial: Dur,
    /// Largest delay.
    #[serde(default = "default_max_backoff")]
    pub max: Dur,
    /// Growth factor per consecutive failure.
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// Random spread, as a fraction of the delay (0.25 = ±25 %).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Uptime after which an exit is not a crash loop: the service starts again at once
    /// and the failure streak is forgotten.
    #[serde(default = "default_reset_after")]
    pub reset_after: Dur,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: default_initial(),
            max: default_max_backoff(),
            factor: default_factor(),
            jitter: default_jitter(),
            reset_after: default_reset_after(),
        }
    }
}

fn default_initial() -> Dur {
    Dur::secs(1)
}
fn default_max_backoff() -> Dur {
    Dur::secs(300)
}
fn default_factor() -> f64 {
    2.0
}
fn default_jitter() -> f64 {
    0.25
}
fn default_reset_after() -> Dur {
    Dur::secs(10)
}

/// The give-up limit: this many crash-loop exits (after runs shorter than
/// `backoff.reset_after`) within the window.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GiveUpConfig {
    /// Failures that make chainctl give up.
    #[serde(default = "default_give_up_failures")]
    pub failures: u32,
    /// The window they are counted in.
    #[serde(default = "default_give_up_window")]
    pub window: Dur,
}

impl Default for GiveUpConfig {
    fn default() -> Self {
        GiveUpConfig {
            failures: default_give_up_failures(),
            window: default_give_up_window(),
        }
    }
}

fn default_give_up_failures() -> u32 {
    10
}
fn default_give_up_window() -> Dur {
    Dur::secs(1800)
}

/// Default stop grace per kind of service.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopGraceConfig {
    /// Generic services.
    #[serde(default = "default_grace_command")]
    pub command: Dur,
    /// Execution clients: their databases need minutes to close cleanly.
    #[serde(default = "default_grace_execution")]
    pub execution: Dur,
    /// Consensus nodes.
    #[serde(default = "default_grace_command")]
    pub consensus: Dur,
}

impl Default for StopGraceConfig {
    fn default() -> Self {
        StopGraceConfig {
            command: default_grace_command(),
            execution: default_grace_execution(),
            consensus: default_grace_command(),
        }
    }
}

fn default_grace_command() -> Dur {
    Dur::secs(30)
}
fn default_grace_execution() -> Dur {
    Dur::secs(300)
}

/// Log file rotation.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Rotate a service's log when it reaches this many bytes.
    #[serde(default = "default_log_size")]
    pub max_bytes: u64,
    /// Rotated files kept (`name.log.1` … `name.log.N`).
    #[serde(default = "default_log_keep")]
    pub keep: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_bytes: default_log_size(),
            keep: default_log_keep(),
        }
    }
}

fn default_log_size() -> u64 {
    10 * 1024 * 1024
}
fn default_log_keep() -> u32 {
    5
}
