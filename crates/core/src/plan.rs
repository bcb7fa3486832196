//! The planner: a pure function from a validated profile, a state-dir layout and a port
//! allocation to the concrete services chainctl runs (argv, env, dirs, ports, secrets,
//! dependencies, stop grace). `chainctl validate` prints it; every other module reads it.

use crate::layout::Layout;
use crate::placeholders::{self, Var};
use crate::ports::{Allocation, Assigned};
use crate::profile::{
    BackoffConfig, Dur, GiveUpConfig, LogConfig, Profile, RestartPolicy, StopSignal,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// What a planned service is, which sets its defaults (e.g. stop grace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// A generic `command` service.
    Command,
}

impl std::fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServiceKind::Command => "command",
        })
    }
}

/// One consensus↔execution pair and the secret file both ends read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtPair {
    /// The service that calls the Engine API.
    pub consensus: String,
    /// The service that serves it.
    pub execution: String,
    /// The shared secret (mode 0600).
    pub path: PathBuf,
}

/// Restart behaviour of one service, with the supervisor defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartSpec {
    /// When to restart.
    pub policy: RestartPolicy,
    /// Clean exit codes.
    pub success_exit_codes: Vec<i64>,
    /// Exit codes that go straight to given-up.
    pub prevent_exit_codes: Vec<i64>,
    /// Backoff between restarts.
    pub backoff: BackoffConfig,
    /// When to give up.
    pub give_up: GiveUpConfig,
}

/// A fully resolved service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicePlan {
    /// Unique name.
    pub name: String,
    /// What it is.
    pub kind: ServiceKind,
    /// Program and arguments, placeholders resolved.
    pub argv: Vec<String>,
    /// Environment added to the base environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: PathBuf,
    /// Data directory (created 0700 before start).
    pub data_dir: PathBuf,
    /// Log file (stdout and stderr, rotated).
    pub log_file: PathBuf,
    /// Its ports.
    pub ports: BTreeMap<String, Assigned>,
    /// Address readiness probes connect to.
    pub ready_host: IpAddr,
    /// TCP ports that must accept connections for the service to be ready.
    pub ready_ports: Vec<u16>,
    /// Services that must be ready first.
    pub depends_on: Vec<String>,
    /// Secret files it reads.
    pub secrets: Vec<PathBuf>,
    /// First stop signal.
    pub stop_signal: StopSignal,
    /// Time from that signal to SIGKILL of the group.
    pub stop_grace: Dur,
    /// Time it may take to become ready.
    pub startup_grace: Dur,
    /// Restart behaviour.
    pub restart: RestartSpec,
    /// Log rotation.
    pub logs: LogConfig,
    /// Container image, for compose.
    pub image: Option<String>,
    /// Whether the program needs writable+executable memory (a JIT).
    pub jit: bool,
    /// The execution client it is, when a validator's `execution` generated it: where
    /// it serves what is that client's ([`crate::clients::endpoints`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<crate::profile::ExecutionKind>,
    /// Its fixed address on the containers' network (`docker.subnet`): external
    /// execution clients under [`Target::Container`] (their peers' enode URLs name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// In containers: the init step (`geth init …`), run to completion in a container
    /// of its own (same image, volumes, user) before each start. On this host
    /// `chainctl client-exec` runs it, and a container runs the client's image, which has
    /// no chainctl: there `argv` is the client's own command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init: Vec<String>,
    /// Hash of everything above: a change means the service must be restarted.
    pub spec_hash: String,
}

/// The whole plan, services in start order (dependencies first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Profile name.
    pub profile: String,
    /// State dir.
    pub state_dir: PathBuf,
    /// Services in start order.
    pub services: Vec<ServicePlan>,
    /// Engine API pairs.
    pub jwt_pairs: Vec<JwtPair>,
    /// The containers' subnet, when its external clients have fixed addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

impl ServicePlan {
    /// The service also reads `content` at start (a file chainctl writes beside the plan,
    /// such as its peers): a change to it changes the spec hash, so a reload restarts it.
    pub fn depends_on_content(&mut self, content: &str) {
        let mut h = Sha256::new();
        h.update(self.spec_hash.as_bytes());
        h.update(content.as_bytes());
        self.spec_hash = hex::encode(&h.finalize()[..8]);
    }
}

impl Plan {
    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&ServicePlan> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Why a plan could not be built (validation catches these first; this guards misuse).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot plan service `{service}`: {why}")]
pub struct PlanError {
    /// The service.
    pub service: String,
    /// What is missing.
    pub why: String,
}

/// Where the planned services run, which decides how they reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// On this host (processes, systemd units): services bind to the profile's listen
    /// address and reach each other there.
    Host,
    /// In containers on one network of this host (compose, the Docker backend): services
    /// bind to all addresses inside their container and reach each other by service name;
    /// ports are published on the host; external execution clients have fixed addresses
    /// in `docker.subnet`.
    Container,
    /// In containers on a cluster's network (Kubernetes, Swarm): as [`Target::Container`],
    /// but addresses are the cluster's to give.
    Cluster,
}

impl Target {
    /// Where the profile's `runtime` runs services.
    pub fn of(profile: &Profile) -> Target {
        match profile.runtime {
            crate::profile::RuntimeKind::Docker => Target::Container,
            crate::profile::RuntimeKind::Swarm => Target::Cluster,
            _ => Target::Host,
        }
    }

    /// Whether services run in containers (bind all addresses, reached by name).
    pub fn containers(self) -> bool {
        self != Target::Host
    }
}

/// Builds the plan `up` runs: for the profile's own runtime (`runtime: docker` plans
/// containers, anything else this host).
pub fn build_runtime(
    profile: &Profile,
    layout: &Layout,
    ports: &Allocation,
    base_dir: &Path,
) -> Result<Plan, PlanError> {
    build_for(profile, layout, ports, base_dir, Target::of(profile))
}

/// Builds the plan for services on this host. `base_dir` resolves relative paths in the
/// profile (its own directory).
pub fn build(
    profile: &Profile,
    layout: &Layout,
    ports: &Allocation,
    base_dir: &Path,
) -> Result<Plan, PlanError> {
    build_for(profile, layout, ports, base_dir, Target::Host)
}

/// Builds the plan for a target.
pub fn build_for(
    profile: &Profile,
    layout: &Layout,
    ports: &Allocation,
    base_dir: &Path,
    target: Target,
) -> Result<Plan, PlanError> {
    let host_addr = if profile.listen.rpc.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        profile.listen.rpc
    };
    let inside = |a: IpAddr| match target {
        Target::Host => a.to_string(),
        Target::Container | Target::Cluster => "0.0.0.0".to_string(),
    };
    let mut pairs = Vec::new();
    for (cl, s) in &profile.services {
        for el in &s.drives {
            pairs.push(JwtPair {
                consensus: cl.clone(),
                execution: el.clone(),
                path: layout.jwt_file(cl, el),
            });
        }
    }
    let sup = &profile.supervisor;
    let external: BTreeSet<String> = crate::clients::p2p::external_els(profile)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let clients: BTreeMap<String, crate::profile::ExecutionKind> = (0..profile.validators.count)
        .flat_map(|i| crate::network::els_of(&profile.validators, i))
        .collect();
    let subnet = match target {
        Target::Container => crate::subnet::of(profile).map_err(|why| PlanError {
            service: "docker.subnet".into(),
            why,
        })?,
        _ => None,
    };
    let no_ports = BTreeMap::new();
    let mut services = BTreeMap::new();
    for (name, s) in &profile.services {
        let err = |why: String| PlanError {
            service: name.clone(),
            why,
        };
        let my_ports = ports.get(name).unwrap_or(&no_ports);
        let data_dir = layout.data_dir(name);
        let my_pairs: Vec<&JwtPair> = pairs
            .iter()
            .filter(|p| &p.consensus == name || &p.execution == name)
            .collect();
        let lookup = |v: &Var| -> Result<String, String> {
            Ok(match v {
                Var::Port(p) => my_ports
                    .get(p)
                    .ok_or(format!("no port `{p}` allocated"))?
                    .port
                    .to_string(),
                Var::OtherPort(svc, p) => ports
                    .get(svc)
                    .and_then(|m| m.get(p))
                    .ok_or(format!("no port `{p}` allocated for `{svc}`"))?
                    .port
                    .to_string(),
                Var::DataDir => data_dir.display().to_string(),
                Var::StateDir => layout.root.display().to_string(),
                Var::Name => name.clone(),
                Var::ChainId => profile.chain.chain_id.to_string(),
                Var::ListenRpc => inside(profile.listen.rpc),
                Var::ListenApi => inside(profile.listen.api),
                Var::ListenRpcHost => match profile.listen.rpc {
                    IpAddr::V6(_) if target == Target::Host => format!("[{}]", profile.listen.rpc),
                    other => inside(other),
                },
                Var::Host(svc) => match target {
                    // An address to put in a URL: IPv6 in brackets.
                    Target::Host if host_addr.is_ipv6() => format!("[{host_addr}]"),
                    Target::Host => host_addr.to_string(),
                    Target::Container | Target::Cluster => svc.clone(),
                },
                Var::JwtPath => match my_pairs.as_slice() {
                    [one] => one.path.display().to_string(),
                    _ => return Err(format!("{v} needs exactly one Engine API pair")),
                },
                Var::Chainctl => match target {
                    Target::Host => std::env::current_exe()
                        .map_err(|e| format!("cannot find the chainctl binary: {e}"))?
                        .display()
                        .to_string(),
                    Target::Container | Target::Cluster => "/chainctl".to_string(),
                },
                Var::JwtPathWith(other) => my_pairs
                    .iter()
                    .find(|p| &p.consensus == other || &p.execution == other)
                    .ok_or(format!("no Engine API pair with `{other}`"))?
                    .path
                    .display()
                    .to_string(),
            })
        };
        let resolve = |t: &str| {
            placeholders::parse(t)
                .and_then(|segs| placeholders::render(&segs, &lookup))
                .map_err(&err)
        };
        let mut argv = s
            .command
            .iter()
            .map(|t| resolve(t))
            .collect::<Result<Vec<_>, _>>()?;
        // Relative paths in the profile are relative to its directory on this host; inside
        // a container they stay as written (and compose rendering refuses relative dirs).
        if let Some(first) = argv.first_mut().filter(|_| target == Target::Host) {
            if first.contains('/') && Path::new(first.as_str()).is_relative() {
                *first = base_dir.join(&*first).display().to_string();
            }
        }
        let env = s
            .env
            .iter()
            .map(|(k, v)| Ok((k.clone(), resolve(v)?)))
            .collect::<Result<BTreeMap<_, _>, PlanError>>()?;
        let ready_ports = match &s.ready_ports {
            Some(names) => names
                .iter()
                .filter_map(|n| my_ports.get(n))
                .map(|a| a.port)
                .collect(),
            None => my_ports
                .values()
                .filter(|a| a.protocol.tcp())
                .map(|a| a.port)
                .collect(),
        };
        let mut depends_on: BTreeSet<String> = s.depends_on.iter().cloned().collect();
        depends_on.extend(s.drives.iter().cloned());
        let stop = s.stop.clone().unwrap_or(crate::profile::StopConfig {
            signal: StopSignal::Term,
            grace: None,
        });
        let workdir = match &s.workdir {
            Some(w) if w.is_relative() && target == Target::Host => base_dir.join(w),
            Some(w) => w.clone(),
            None => data_dir.clone(),
        };
        let mut plan = ServicePlan {
            name: name.clone(),
            kind: ServiceKind::Command,
            argv,
            env,
            workdir,
            data_dir: data_dir.clone(),
            log_file: layout.log_file(name),
            ports: my_ports.clone(),
            ready_host: host_addr,
            ready_ports,
            depends_on: depends_on.into_iter().collect(),
            secrets: my_pairs.iter().map(|p| p.path.clone()).collect(),
            stop_signal: stop.signal,
            // An Engine API server (driven by another service) is an execution client:
            // its database needs minutes to close; a driver is a consensus client.
            stop_grace: stop.grace.unwrap_or(
                if profile.services.values().any(|o| o.drives.contains(name)) {
                    sup.stop_grace.execution
                } else if !s.drives.is_empty() {
                    sup.stop_grace.consensus
                } else {
                    sup.stop_grace.command
                },
            ),
            startup_grace: s.startup_grace.unwrap_or(sup.startup_grace),
            restart: RestartSpec {
                policy: s.restart.policy,
                success_exit_codes: s.restart.success_exit_codes.clone(),
                prevent_exit_codes: s.restart.prevent_exit_codes.clone(),
                backoff: sup.backoff.clone(),
                give_up: sup.give_up.clone(),
            },
            logs: sup.logs.clone(),
            image: s.image.clone(),
            jit: s.jit,
            client: clients.get(name).copied(),
            // External clients, in name order, from the subnet's lower half: adding or
            // removing one changes the others' peers anyway (and so restarts them).
            address: match (subnet, external.iter().position(|e| e == name)) {
                (Some(net), Some(i)) => Some(IpAddr::V4(net.address(i).ok_or_else(|| {
                    err(format!(
                        "the subnet {net} (docker.subnet) holds {} fixed addresses and this profile has {} external execution clients: give a larger one",
                        net.capacity(),
                        external.len()
                    ))
                })?)),
                _ => None,
            },
            init: Vec::new(),
            spec_hash: String::new(),
        };
        // In a container, the client's image runs the client itself; its init step runs
        // before it in a container of its own.
        if target.containers() {
            if let Some((init, client)) = crate::clients::split_client_exec(&plan.argv) {
                plan.init = init;
                plan.argv = client;
            }
        }
        // A validator also reads its key and its control token (see `network`).
        if let Some(i) =
            (0..profile.validators.count).find(|i| crate::network::validator_name(*i) == *name)
        {
            plan.secrets
                .extend(crate::network::validator_secrets(profile, layout, i));
        }
        // An external execution client also reads its node key (see `clients::p2p`).
        if external.contains(name) {
            plan.secrets
                .push(crate::clients::p2p::key_path(layout, name));
        }
        plan.spec_hash = spec_hash(&plan);
        // A container's address and init step are part of what it runs.
        if let Some(a) = plan.address {
            plan.depends_on_content(&format!("address {a}"));
        }
        if !plan.init.is_empty() {
            plan.depends_on_content(&format!("init {:?}", plan.init));
        }
        // A container runs what its image holds: another image is another spec.
        if let Some(image) = plan.image.clone() {
            plan.depends_on_content(&format!("image {image}"));
        }
        services.insert(name.clone(), plan);
    }
    Ok(Plan {
        profile: profile.name.clone(),
        state_dir: layout.root.clone(),
        services: start_order(services),
        jwt_pairs: pairs,
        subnet: subnet.map(|n| n.to_string()),
    })
}

/// A stable hash of what the running process was started with (program, arguments,
/// environment, directories, ports, secrets): when it changes, the service must be
/// restarted. Supervisor settings (backoff, grace, readiness) apply without a restart.
fn spec_hash(s: &ServicePlan) -> String {
    let runtime = (
        &s.argv,
        &s.env,
        &s.workdir,
        &s.data_dir,
        &s.log_file,
        &s.ports,
        &s.secrets,
    );
    let json = serde_json::to_vec(&runtime).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..8])
}

/// Dependencies first; ties broken by name so the order is stable. Validation has ruled
/// out cycles; any left are appended rather than lost.
fn start_order(mut services: BTreeMap<String, ServicePlan>) -> Vec<ServicePlan> {
    let mut out: Vec<ServicePlan> = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    loop {
        let ready: Vec<String> = services
            .values()
            .filter(|s| {
                s.depends_on
                    .iter()
                    .all(|d| done.contains(d) || !services.contains_key(d))
            })
            .map(|s| s.name.clone())
            .collect();
        if ready.is_empty() {
            break;
        }
        for n in ready {
            done.insert(n.clone());
            out.extend(services.remove(&n));
        }
    }
    out.extend(services.into_values());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::load;
    use crate::profile::{Protocol, Source};

    fn profile(text: &str) -> Profile {
        load(Source {
            label: "t.yaml".into(),
            path: None,
            text: text.into(),
        })
        .unwrap()
        .profile
    }

    /// `{{listen.rpc_host}}` is `listen.rpc` as a HOST:PORT host (IPv6 in brackets, or Go's
    /// `net.Listen` refuses "too many colons"), and the plan says which client each
    /// generated EL is.
    #[test]
    fn listen_rpc_host_brackets_ipv6_and_els_know_their_client() {
        for (listen, want) in [("'::1'", "[::1]"), ("127.0.0.1", "127.0.0.1")] {
            let p = profile(&format!(
                "name: t\nlisten: {{rpc: {listen}}}\nvalidators: {{count: 1, execution: [reth, builtin]}}\nservices:\n  x:\n    command: [x, '{{{{listen.rpc_host}}}}:9', '{{{{listen.rpc}}}}']\n"
            ));
            let input = crate::ports::AllocInput {
                start: 20000,
                end: 20999,
                reserved: &[],
                previous: &Allocation::new(),
                running: &|_| false,
                probe: &crate::ports::NoProbe,
            };
            let (ports, _) = crate::ports::allocate(&crate::ports::requests(&p), &input).unwrap();
            let plan = build(&p, &Layout::new("/state"), &ports, Path::new("/p")).unwrap();
            let x = plan.service("x").unwrap();
            assert_eq!(x.argv[1], format!("{want}:9"));
            assert_eq!(x.argv[2], listen.trim_matches('\''));
            let reth = plan.service("val-0-el-0").unwrap();
            let metrics = reth.ports["metrics"].port;
            assert!(
                reth.argv
                    .windows(2)
                    .any(|w| w[0] == "--metrics" && w[1] == format!("{want}:{metrics}")),
                "{:?}",
                reth.argv
            );
            assert_eq!(reth.client, Some(crate::profile::ExecutionKind::Reth));
            assert_eq!(
                plan.service("val-0-el-1").unwrap().client,
                Some(crate::profile::ExecutionKind::Builtin)
            );
            assert_eq!(x.client, None);
            assert_eq!(plan.service("val-0").unwrap().client, None);
        }
    }

    #[test]
    fn resolves_placeholders_pairs_order_and_defaults() {
        let p = profile(
            "name: t\nservices:\n  cl:\n    command: [node, '--engine=http://127.0.0.1:{{port.el.engine}}', '--jwt={{jwt_path}}']\n    drives: [el]\n  el:\n    command: [./bin/el, '--datadir={{data_dir}}', '--authrpc.port={{port.engine}}', '--jwt={{jwt_path.cl}}']\n    ports: {engine: auto, p2p: {protocol: both}}\n    env: {CHAIN: '{{chain_id}}'}\n",
        );
        let mut ports = Allocation::new();
        ports.entry("el".into()).or_default().insert(
            "engine".into(),
            Assigned {
                port: 20001,
                protocol: Protocol::Tcp,
            },
        );
        ports.entry("el".into()).or_default().insert(
            "p2p".into(),
            Assigned {
                port: 20002,
                protocol: Protocol::Both,
            },
        );
        let layout = Layout::new("/state");
        let plan = build(&p, &layout, &ports, Path::new("/profiles")).unwrap();
        let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["el", "cl"],
            "execution clients start before the consensus node that drives them"
        );
        let el = plan.service("el").unwrap();
        let cl = plan.service("cl").unwrap();
        assert_eq!(el.argv[0], "/profiles/./bin/el");
        assert_eq!(el.argv[1], "--datadir=/state/data/el");
        assert_eq!(el.argv[2], "--authrpc.port=20001");
        assert_eq!(el.argv[3], "--jwt=/state/secrets/jwt/cl--el.hex");
        assert_eq!(
            cl.argv[2], "--jwt=/state/secrets/jwt/cl--el.hex",
            "both ends read the same file"
        );
        assert_eq!(cl.argv[1], "--engine=http://127.0.0.1:20001");
        assert_eq!(el.env["CHAIN"], "1337");
        assert_eq!(el.ready_ports, vec![20001, 20002]);
        assert_eq!(cl.depends_on, vec!["el".to_string()]);
        assert_eq!(
            el.stop_grace,
            Dur::secs(300),
            "a driven service gets the execution-client grace"
        );
        assert_eq!(cl.stop_grace, Dur::secs(30));
        assert_eq!(plan.jwt_pairs.len(), 1);
        // Same inputs, same plan (and hash); a changed port changes only that service's hash.
        let again = build(&p, &layout, &ports, Path::new("/profiles")).unwrap();
        assert_eq!(plan, again);
        ports.get_mut("el").unwrap().get_mut("engine").unwrap().port = 20005;
        let moved = build(&p, &layout, &ports, Path::new("/profiles")).unwrap();
        assert_ne!(moved.service("el").unwrap().spec_hash, el.spec_hash);
        assert_ne!(
            moved.service("cl").unwrap().spec_hash,
            cl.spec_hash,
            "cl's argv names el's engine port, so it restarts too"
        );
        // Supervisor-wide settings change no process definition.
        let mut p2 = p.clone();
        p2.supervisor.backoff.jitter = 0.1;
        p2.supervisor.stop_grace.execution = Dur::secs(600);
        let tuned = build(&p2, &layout, &ports, Path::new("/profiles")).unwrap();
        assert_eq!(
            tuned.service("el").unwrap().spec_hash,
            moved.service("el").unwrap().spec_hash
        );
        assert_eq!(tuned.service("el").unwrap().stop_grace, Dur::secs(600));
    }
}
