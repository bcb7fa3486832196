//! The Docker Swarm backend (`runtime: swarm`): one swarm service (one replica) per
//! chainctl service on the swarm whose manager chainctl talks to, through the Docker
//! Engine API (bollard). The swarm schedules; chainctl's supervisor still owns health,
//! failover, restarts and the report.
//!
//! What each service gets:
//! - the plan built for a cluster ([`chainctl_core::plan::Target::Cluster`]), as under
//!   `runtime: docker` but without fixed addresses: services bind all addresses inside their container and reach each
//!   other by service name, a network alias on the profile's attachable overlay network
//!   (`chainctl-PROFILE`);
//! - every secret file it reads (Engine API secret, validator key, control token) as a
//!   Docker secret — kept encrypted in the swarm's store, mounted at the path the plan
//!   names, mode 0400, the services' user's — never in its environment or labels; the
//!   network's public files (genesis, consensus genesis, configs) as Docker configs,
//!   mode 0444. Secrets and configs are immutable, so each is named after its content's
//!   hash: a changed file is a new object and the service is updated to it;
//! - its data dir as a named volume (`chainctl-PROFILE-SERVICE-data`) backed by the data
//!   dir's path on the node that runs it (on the node chainctl talks to, the state dir's
//!   own data dir, where `chainctl` and its disk checks look);
//! - placement: a validator and its execution clients on the node whose `chainctl.node`
//!   label is the profile's `swarm.placement` for it (`chainctl swarm label`), anything
//!   not placed on the node chainctl talks to, so data stays where it lives; chainctl
//!   probes a service placed on another node at that node's swarm address ([`locate`]);
//! - ports: P2P in host mode (on the node running the task: the routing mesh would NAT
//!   them and peers would see the wrong address), the others through the routing mesh or
//!   on the node as `swarm.publish` says;
//! - the user chainctl runs as, no capabilities, no new privileges, a read-only root file
//!   system with a private `/tmp`, an init as PID 1, and Docker's log buffer bounded; each
//!   task's output is read through the API into the service's rotated log file.
//!
//! The swarm's own restart policy is `none`: a task that ends is an exit for chainctl's
//! supervisor, whose restart policy (backoff, give-up) applies as for every runtime, and
//! a restart is a service update (a new `ForceUpdate`), for which the swarm schedules a new
//! task. Each start's `ForceUpdate` is also the instance's handle: there are no host pids
//! (a task may run on another node), so the [`Handle`]'s pid is that number, above any
//! pid Linux hands out, and chainctl never signals it as a process. Services are labelled
//! with the profile, the service, the spec hash and the state dir; after chainctl itself
//! restarted, running ones are adopted by that handle, not recreated.

use super::docker::{
    bind_options, exit_of, missing_image, no_image, not_found, volume_name, LABEL_PROFILE,
    LABEL_SERVICE, LABEL_SPEC, LABEL_STATE,
};
use super::{Backend, BackendError, BackendEvent, Handle};
use base64::Engine as _;
use bollard::models::{
    ConfigSpec, EndpointPortConfig, EndpointPortConfigProtocolEnum,
    EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum, LocalNodeState, Mount,
    MountTmpfsOptions, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig,
    NetworkAttachmentConfig, NetworkCreateRequest, SecretSpec, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecConfigs,
    TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1, TaskSpecContainerSpecPrivileges,
    TaskSpecContainerSpecSecrets, TaskSpecLogDriver, TaskSpecPlacement, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    InspectServiceOptions, KillContainerOptionsBuilder, ListConfigsOptionsBuilder,
    ListNodesOptionsBuilder, ListSecretsOptionsBuilder, ListServicesOptionsBuilder,
    ListTasksOptionsBuilder, UpdateServiceOptionsBuilder,
};
use bollard::Docker;
use chainctl_core::instance::Exit;
use chainctl_core::plan::ServicePlan;
use chainctl_core::profile::valid_node_name;
use chainctl_core::profile::{StopSignal, SwarmConfig, SwarmPublish};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The node label placement reads (`chainctl swarm label` sets it).
pub const NODE_LABEL: &str = "chainctl.node";
/// Handles of swarm instances are at or above this (defined with [`Handle`]).
use chainctl_core::instance::SWARM_HANDLE_BASE as HANDLE_BASE;
/// How long a new task may take to run (scheduling, volume, start).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a starting task's state is read.
const POLL: Duration = Duration::from_millis(250);
/// How often the running tasks' states are read.
const WATCH: Duration = Duration::from_millis(500);
/// Docker keeps secrets and configs up to 500 KiB.
const OBJECT_MAX: usize = 500 * 1024;

/// Whether a handle is a swarm instance's (not a process).
pub fn is_swarm_handle(h: &Handle) -> bool {
    h.pid >= HANDLE_BASE
}

/// The swarm service of `service` in `profile`.
pub fn service_name(profile: &str, service: &str) -> String {
    super::docker::container_name(profile, service)
}

/// The validator a generated execution client belongs to (`val-2-el-1` → `val-2`).
fn validator_of(service: &str) -> Option<&str> {
    let (v, j) = service.rsplit_once("-el-")?;
    let i = v.strip_prefix("val-")?;
    (!i.is_empty()
        && i.bytes().all(|b| b.is_ascii_digit())
        && !j.is_empty()
        && j.bytes().all(|b| b.is_ascii_digit()))
    .then_some(v)
}

/// The placement constraint of `service`: its (or its validator's) node from
/// `swarm.placement`, else the node chainctl talks to.
pub fn constraint(cfg: &SwarmConfig, service: &str, local_node: &str) -> String {
    match placed_on(cfg, service) {
        Some(node) => format!("node.labels.{NODE_LABEL}=={node}"),
        None => format!("node.id=={local_node}"),
    }
}

/// A swarm node as placement and chainctl's probes see it.
#[derive(Debug, Clone)]
pub struct SwarmNode {
    pub id: String,
    pub hostname: String,
    /// Its `chainctl.node` label.
    pub label: Option<String>,
    /// The address the swarm reaches it at.
    pub addr: Option<IpAddr>,
    /// Whether the swarm has lost it (`Status.State` down): a machine that rejoined
    /// leaves its old, down entry behind.
    pub down: bool,
}

impl SwarmNode {
    fn of(n: &bollard::models::Node) -> SwarmNode {
        let usable = |a: IpAddr| !a.is_unspecified() && !a.is_loopback();
        // `Status.Addr`; a manager's may read 0.0.0.0 or 127.0.0.1 on some engines, where
        // its manager address (IP:port, the one it advertised) is the one to use.
        let status = n
            .status
            .as_ref()
            .and_then(|s| s.addr.as_deref()?.parse::<IpAddr>().ok());
        let manager = n
            .manager_status
            .as_ref()
            .and_then(|m| m.addr.as_deref()?.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip());
        SwarmNode {
            id: n.id.clone().unwrap_or_default(),
            hostname: n
                .description
                .as_ref()
                .and_then(|d| d.hostname.clone())
                .unwrap_or_default(),
            label: n
                .spec
                .as_ref()
                .and_then(|s| s.labels.as_ref()?.get(NODE_LABEL).cloned()),
            addr: status
                .filter(|a| usable(*a))
                .or(manager.filter(|a| usable(*a)))
                .or(status),
            down: n.status.as_ref().and_then(|s| s.state) == Some(bollard::models::NodeState::DOWN),
        }
    }
}

/// Whether `addr` is an address of this host (chainctl's probes of a service on a node
/// at such an address go to `listen.rpc`, as on one host).
pub fn is_here(addr: IpAddr) -> bool {
    std::net::UdpSocket::bind((addr, 0)).is_ok()
}

/// Where chainctl reaches the ports of each service whose node is another host: that
/// node's swarm address, on which its host-mode ports are published (and the mesh's,
/// with `swarm.publish: mesh`). A service's node is the one carrying its placement label,
/// else the engine's own (`engine`, where unplaced services are pinned). Services on a
/// node at an address of this host (`here`) are left out: they are reached at
/// `listen.rpc`. A placement label carried by more than one live node is refused (a
/// service's data stays on one node), and so is a label only down nodes carry; a label
/// no node carries is left to [`SwarmBackend::check`], which names the fix.
pub fn remote_hosts(
    cfg: &SwarmConfig,
    services: &[&str],
    nodes: &[SwarmNode],
    engine: &str,
    here: impl Fn(IpAddr) -> bool,
) -> Result<BTreeMap<String, IpAddr>, String> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    let mut problem = |msg: String| {
        if !problems.contains(&msg) {
            problems.push(msg);
        }
    };
    for &svc in services {
        let node = match placed_on(cfg, svc) {
            Some(name) => {
                let carriers: Vec<&SwarmNode> = nodes
                    .iter()
                    .filter(|n| n.label.as_deref() == Some(name))
                    .collect();
                let live: Vec<&SwarmNode> = carriers.iter().copied().filter(|n| !n.down).collect();
                match (live.as_slice(), carriers.first()) {
                    ([n], _) => *n,
                    ([], None) => continue,
                    ([], Some(n)) => {
                        problem(format!(
                            "the node labelled {NODE_LABEL}={name} (`{}`, {}) is down: start its Docker engine, or label a live node (`chainctl swarm label {name} --node NODE`) and remove the down one (`docker node rm {}`)",
                            n.hostname, n.id, n.id
                        ));
                        continue;
                    }
                    (many, _) => {
                        problem(format!(
                            "label {NODE_LABEL}={name} is on {} nodes ({}): a service placed there would move between them and away from its data; keep it on one (`docker node update --label-rm {NODE_LABEL} NODE` on the others)",
                            many.len(),
                            many.iter()
                                .map(|n| format!("{} {}", n.hostname, n.id))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                        continue;
                    }
                }
            }
            None => match nodes.iter().find(|n| n.id == engine) {
                Some(n) => n,
                None => continue,
            },
        };
        match node.addr.filter(|a| !a.is_unspecified()) {
            Some(a) if here(a) => {}
            Some(a) => {
                out.insert(svc.to_string(), a);
            }
            // The engine's own node without an address: chainctl runs beside it.
            None if node.id == engine => {}
            None => problem(format!(
                "swarm node `{}` ({}) reports no address chainctl could reach its services' ports at: rejoin it with `docker swarm join --advertise-addr ADDRESS`",
                node.hostname, node.id
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("\n"))
    }
}

/// Sets each service's probe address (`ready_host`) to its node's swarm address when
/// that node is another host: reads the swarm's nodes. Placement is fixed by labels, so
/// this holds until a node is relabelled (then `chainctl reload` reads it again).
pub fn locate(cfg: &SwarmConfig, services: &mut [ServicePlan]) -> Result<(), String> {
    let (rt, docker) = connect_engine()?;
    let engine = manager_node(&rt, &docker)?;
    let nodes: Vec<SwarmNode> = rt
        .block_on(docker.list_nodes(Some(ListNodesOptionsBuilder::default().build())))
        .map_err(|e| format!("cannot list the swarm's nodes: {e}"))?
        .iter()
        .map(SwarmNode::of)
        .collect();
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let hosts = remote_hosts(cfg, &names, &nodes, &engine, is_here)?;
    for s in services {
        if let Some(a) = hosts.get(&s.name) {
            s.ready_host = *a;
        }
    }
    Ok(())
}

/// The `chainctl.node` name `service` (or its validator) is placed on.
fn placed_on<'a>(cfg: &'a SwarmConfig, service: &str) -> Option<&'a str> {
    cfg.placement
        .get(service)
        .or_else(|| validator_of(service).and_then(|v| cfg.placement.get(v)))
        .map(String::as_str)
}

/// Whether a port is a P2P port (published on the node, never through the mesh).
fn is_p2p(port_name: &str) -> bool {
    matches!(port_name, "p2p" | "discovery") || port_name.ends_with("-p2p")
}

/// A Docker object name for `path`'s content: `chainctl-PROFILE-KIND-SLUG-HASH`, at most 64
/// characters, changing whenever the content does.
fn object_name(profile: &str, kind: &str, rel: &Path, content: &[u8]) -> String {
    let hash = hex::encode(&sha2::Sha256::digest(content)[..6]);
    let slug: String = rel
        .display()
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let head = format!("chainctl-{profile}-{kind}-");
    let room = 64usize.saturating_sub(head.len() + 1 + hash.len());
    let slug = &slug[slug.len().saturating_sub(room)..];
    format!("{head}{slug}-{hash}")
}

fn terminal(s: Option<&TaskState>) -> bool {
    matches!(
        s,
        Some(
            TaskState::COMPLETE
                | TaskState::SHUTDOWN
                | TaskState::FAILED
                | TaskState::REJECTED
                | TaskState::REMOVE
                | TaskState::ORPHANED
        )
    )
}

/// How a task that ended went: its container's exit code, else unknown.
fn task_exit(t: &Task) -> Exit {
    t.status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.exit_code)
        .map(exit_of)
        .unwrap_or(Exit::Unknown)
}

/// What went wrong with a task, as the swarm says it.
fn task_error(t: &Task) -> String {
    let st = t.status.as_ref();
    let state = st
        .and_then(|s| s.state.as_ref())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let err = st.and_then(|s| s.err.clone()).unwrap_or_default();
    let msg = st.and_then(|s| s.message.clone()).unwrap_or_default();
    format!("task {state}: {}", if err.is_empty() { msg } else { err })
}

/// The newest task of the service started for instance `key`.
fn task_of(tasks: &[Task], key: i32) -> Option<&Task> {
    tasks
        .iter()
        .filter(|t| t.spec.as_ref().and_then(|s| s.force_update) == Some(key as u64))
        .max_by_key(|t| t.version.as_ref().and_then(|v| v.index).unwrap_or(0))
}

struct Running {
    service: String,
    /// The task's container on this node, when it runs here (for `kill`).
    container: Option<String>,
}

/// Runs services as swarm services.
pub struct SwarmBackend {
    rt: tokio::runtime::Runtime,
    docker: Docker,
    profile: String,
    state_dir: PathBuf,
    cfg: SwarmConfig,
    /// The id of the node chainctl talks to.
    node_id: String,
    /// `uid:gid` the programs run as: the files chainctl wrote for them are this user's.
    uid: u32,
    gid: u32,
    running: BTreeMap<i32, Running>,
    /// Instances the watcher follows: key → swarm service.
    watched: Arc<Mutex<BTreeMap<i32, String>>>,
    watching: bool,
    /// When each instance was last killed.
    killed: HashMap<i32, Instant>,
    logs: BTreeMap<String, (PathBuf, chainctl_core::profile::LogConfig)>,
    exits: Arc<Mutex<Vec<BackendEvent>>>,
    wake: Option<super::Wake>,
}

/// Connects to the Docker engine (`DOCKER_HOST`, else the local socket) on its own small
/// runtime.
pub fn connect_engine() -> Result<(tokio::runtime::Runtime, Docker), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("swarm")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Docker client's runtime: {e}"))?;
    let docker = rt
        .block_on(async {
            let d = Docker::connect_with_local_defaults()?;
            let d = tokio::time::timeout(Duration::from_secs(10), d.negotiate_version())
                .await
                .map_err(|_| bollard::errors::Error::RequestTimeoutError)??;
            d.ping().await.map(|_| d)
        })
        .map_err(|e| {
            format!(
                "cannot reach the Docker engine ({e}): `runtime: swarm` runs every service on the swarm this engine manages; start Docker and check that `docker info` works (or set DOCKER_HOST)"
            )
        })?;
    Ok((rt, docker))
}

/// The id of the node the engine is, when it is an active swarm manager.
pub fn manager_node(rt: &tokio::runtime::Runtime, docker: &Docker) -> Result<String, String> {
    let info = rt
        .block_on(docker.info())
        .map_err(|e| format!("cannot read the Docker engine's info: {e}"))?;
    let swarm = info.swarm.unwrap_or_default();
    let state = swarm.local_node_state.unwrap_or(LocalNodeState::EMPTY);
    if state != LocalNodeState::ACTIVE {
        return Err(format!(
            "this Docker engine is not part of a swarm (its state: {}): `runtime: swarm` needs one; make this engine a manager (`docker swarm init`, or `docker swarm join` a swarm as a manager), or use `runtime: docker`",
            if state == LocalNodeState::EMPTY { "inactive".to_string() } else { state.to_string() }
        ));
    }
    if swarm.control_available != Some(true) {
        return Err(
            "this Docker engine is a swarm worker: services are made through a manager; point chainctl at a manager (DOCKER_HOST) or promote this node (`docker node promote`)".into(),
        );
    }
    swarm
        .node_id
        .filter(|n| !n.is_empty())
        .ok_or_else(|| "the Docker engine is a swarm manager but did not give its node id".into())
}

/// `chainctl swarm label`: sets `chainctl.node=NAME` on a swarm node (by id or hostname;
/// the engine's own node when `node` is None). Returns the node's hostname.
pub fn label_node(node: Option<&str>, name: &str) -> Result<String, String> {
    if !valid_node_name(name) {
        return Err(format!(
            "`{name}` cannot be a node name: use 1-63 letters, digits, `-`, `_` or `.`"
        ));
    }
    let (rt, docker) = connect_engine()?;
    let own = manager_node(&rt, &docker)?;
    let target = node.unwrap_or(&own);
    let n = rt.block_on(docker.inspect_node(target)).map_err(|e| {
        if not_found(&e) {
            format!("the swarm has no node `{target}`: `docker node ls` lists them (give its ID or hostname)")
        } else {
            format!("cannot inspect node `{target}`: {e}")
        }
    })?;
    let id = n.id.clone().unwrap_or_default();
    let version = n.version.as_ref().and_then(|v| v.index).unwrap_or(0);
    let mut spec = n.spec.clone().unwrap_or_default();
    spec.labels
        .get_or_insert_with(HashMap::new)
        .insert(NODE_LABEL.into(), name.into());
    let opts = bollard::query_parameters::UpdateNodeOptionsBuilder::default()
        .version(version as i64)
        .build();
    rt.block_on(docker.update_node(&id, spec, opts))
        .map_err(|e| format!("cannot label node `{target}`: {e}"))?;
    Ok(n.description.and_then(|d| d.hostname).unwrap_or(id))
}

/// `chainctl down` with no supervisor running: removes the swarm services chainctl
/// made for `state_dir` (the swarm stops their tasks with each one's stop signal and
/// grace), then their secrets, configs and network. Returns the services removed.
pub fn down_unsupervised(state_dir: &Path) -> Result<Vec<String>, String> {
    let (rt, docker) = connect_engine()?;
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_STATE}={}", state_dir.display())],
    )]);
    let services = rt
        .block_on(
            docker.list_services(Some(
                ListServicesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            )),
        )
        .map_err(|e| format!("cannot list the swarm's services: {e}"))?;
    let mut removed = Vec::new();
    let mut profile = None;
    for s in services {
        let Some(spec) = s.spec else { continue };
        let labels = spec.labels.unwrap_or_default();
        profile = labels.get(LABEL_PROFILE).cloned().or(profile);
        let name = spec.name.unwrap_or_default();
        rt.block_on(docker.delete_service(&name))
            .map_err(|e| format!("cannot remove swarm service `{name}`: {e}"))?;
        removed.push(labels.get(LABEL_SERVICE).cloned().unwrap_or(name));
    }
    if let Some(profile) = profile {
        let node_id = manager_node(&rt, &docker)?;
        let mut b = SwarmBackend {
            rt,
            docker,
            profile,
            state_dir: state_dir.to_path_buf(),
            cfg: SwarmConfig::default(),
            node_id,
            uid: 0,
            gid: 0,
            running: BTreeMap::new(),
            watched: Arc::default(),
            watching: false,
            killed: HashMap::new(),
            logs: BTreeMap::new(),
            exits: Arc::new(Mutex::new(Vec::new())),
            wake: None,
        };
        b.cleanup(&[]);
    }
    Ok(removed)
}

/// `kill -9` of a swarm service's running task (the report's failover drill): SIGKILL to
/// its container, which must run on this node.
pub fn kill_task(profile: &str, service: &str) -> Result<(), String> {
    let (rt, docker) = connect_engine()?;
    let name = service_name(profile, service);
    let filters = HashMap::from([
        (
            "label".to_string(),
            vec![format!("com.docker.swarm.service.name={name}")],
        ),
        ("status".to_string(), vec!["running".to_string()]),
    ]);
    let found = rt
        .block_on(
            docker.list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            )),
        )
        .map_err(|e| format!("cannot list containers: {e}"))?;
    let id = found
        .into_iter()
        .find_map(|c| c.id)
        .ok_or_else(|| format!("no running task container of `{name}` on this node"))?;
    let opts = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    rt.block_on(docker.kill_container(&id, Some(opts)))
        .map_err(|e| format!("cannot kill the task container of `{name}`: {e}"))
}

impl SwarmBackend {
    /// Connects to the engine, which must be an active swarm manager. `wake` is told when
    /// a task ends.
    pub fn connect(
        profile: &str,
        state_dir: &Path,
        cfg: &SwarmConfig,
        wake: Option<super::Wake>,
    ) -> Result<Self, String> {
        let (rt, docker) = connect_engine()?;
        let node_id = manager_node(&rt, &docker)?;
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(SwarmBackend {
            rt,
            docker,
            profile: profile.to_string(),
            state_dir: state_dir.to_path_buf(),
            cfg: cfg.clone(),
            node_id,
            uid,
            gid,
            running: BTreeMap::new(),
            watched: Arc::default(),
            watching: false,
            killed: HashMap::new(),
            logs: BTreeMap::new(),
            exits: Arc::new(Mutex::new(Vec::new())),
            wake,
        })
    }

    /// Where each service's output goes (its log file and rotation).
    pub fn set_logs(&mut self, services: &[ServicePlan]) {
        for s in services {
            self.logs
                .insert(s.name.clone(), (s.log_file.clone(), s.logs.clone()));
        }
    }

    /// Before anything starts: every image is on this engine (chainctl never pulls; on a
    /// multi-node swarm each node needs it too), and every placement names a labelled node.
    pub fn check(&self, services: &[ServicePlan]) -> Result<(), String> {
        let mut problems = self
            .rt
            .block_on(super::docker::missing_images(&self.docker, services))?;
        let nodes = self
            .rt
            .block_on(
                self.docker
                    .list_nodes(Some(ListNodesOptionsBuilder::default().build())),
            )
            .map_err(|e| format!("cannot list the swarm's nodes: {e}"))?;
        let labelled: Vec<String> = nodes
            .iter()
            .filter_map(|n| SwarmNode::of(n).label)
            .collect();
        let mut wanted: Vec<&String> = self.cfg.placement.values().collect();
        wanted.sort();
        wanted.dedup();
        for node in wanted {
            if !labelled.contains(node) {
                problems.push(format!(
                    "swarm.placement names node `{node}`, but no node of this swarm has the label {NODE_LABEL}={node}: label the node that should run it (`chainctl swarm label {node} --node NODE`; `docker node ls` lists the nodes)"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    fn labels(&self, service: Option<&ServicePlan>) -> HashMap<String, String> {
        super::docker::owner_labels(&self.profile, &self.state_dir, service)
    }

    fn ours(&self, labels: Option<&HashMap<String, String>>) -> bool {
        super::docker::owned_by(&self.state_dir, labels)
    }

    fn not_ours(&self, what: &str, labels: Option<&HashMap<String, String>>) -> String {
        super::docker::owned_elsewhere(what, labels, "docker service rm")
    }

    fn label_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_PROFILE}={}", self.profile)],
        )])
    }

    async fn ensure_network(&self) -> Result<String, String> {
        let name = super::docker::network_name(&self.profile);
        match self.docker.inspect_network(&name, None).await {
            Ok(n) => {
                if !self.ours(n.labels.as_ref()) {
                    return Err(self.not_ours(&format!("network `{name}`"), n.labels.as_ref()));
                }
                if n.scope.as_deref() != Some("swarm") {
                    return Err(format!(
                        "network `{name}` exists but is not a swarm (overlay) network: it was made by `runtime: docker`; stop that run (`chainctl down`) and remove it (`docker network rm {name}`)"
                    ));
                }
            }
            Err(e) if not_found(&e) => {
                self.docker
                    .create_network(NetworkCreateRequest {
                        name: name.clone(),
                        driver: Some("overlay".into()),
                        attachable: Some(true),
                        labels: Some(self.labels(None)),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("cannot create overlay network `{name}`: {e}"))?;
            }
            Err(e) => return Err(format!("cannot inspect network `{name}`: {e}")),
        }
        Ok(name)
    }

    /// The Docker secret holding `path`'s content (made when missing).
    async fn ensure_secret(&self, path: &Path) -> Result<(String, String), String> {
        let content = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read secret {}: {e} (run `chainctl jwt generate`; validator files are written by `up`)",
                path.display()
            )
        })?;
        let rel = path
            .strip_prefix(self.state_dir.join("secrets"))
            .unwrap_or(path);
        let name = object_name(&self.profile, "secret", rel, &content);
        if content.len() > OBJECT_MAX {
            return Err(format!(
                "secret {} is {} bytes; a Docker secret holds at most {OBJECT_MAX}",
                path.display(),
                content.len()
            ));
        }
        let filters = HashMap::from([("name".to_string(), vec![name.clone()])]);
        let found = self
            .docker
            .list_secrets(Some(
                ListSecretsOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| format!("cannot list secrets: {e}"))?;
        if let Some(id) = found
            .into_iter()
            .find(|s| s.spec.as_ref().and_then(|s| s.name.as_ref()) == Some(&name))
            .and_then(|s| s.id)
        {
            return Ok((id, name));
        }
        let id = self
            .docker
            .create_secret(SecretSpec {
                name: Some(name.clone()),
                labels: Some(self.labels(None)),
                data: Some(base64::engine::general_purpose::STANDARD.encode(&content)),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create Docker secret `{name}`: {e}"))?
            .id;
        Ok((id, name))
    }

    /// Docker configs for every file of the network dir (public: genesis, configs).
    async fn ensure_configs(&self) -> Result<Vec<(String, String, PathBuf)>, String> {
        let net = chainctl_core::network::network_dir(&chainctl_core::layout::Layout::new(
            &self.state_dir,
        ));
        let mut files = Vec::new();
        let mut dirs = vec![net];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.is_file() {
                    files.push(p);
                }
            }
        }
        files.sort();
        let existing = self
            .docker
            .list_configs(Some(
                ListConfigsOptionsBuilder::default()
                    .filters(&self.label_filter())
                    .build(),
            ))
            .await
            .map_err(|e| format!("cannot list configs: {e}"))?;
        let mut out = Vec::new();
        for p in files {
            let content =
                std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            if content.len() > OBJECT_MAX {
                return Err(format!(
                    "{} is {} bytes; a Docker config holds at most {OBJECT_MAX}, so `runtime: swarm` cannot ship it to the nodes: make it smaller (for a genesis: fewer `chain.alloc` accounts or `chain.dev_accounts`)",
                    p.display(),
                    content.len()
                ));
            }
            let rel = p.strip_prefix(self.state_dir.join("network")).unwrap_or(&p);
            let name = object_name(&self.profile, "config", rel, &content);
            let id = match existing
                .iter()
                .find(|c| c.spec.as_ref().and_then(|s| s.name.as_ref()) == Some(&name))
                .and_then(|c| c.id.clone())
            {
                Some(id) => id,
                None => {
                    self.docker
                        .create_config(ConfigSpec {
                            name: Some(name.clone()),
                            labels: Some(self.labels(None)),
                            data: Some(base64::engine::general_purpose::STANDARD.encode(&content)),
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| format!("cannot create Docker config `{name}`: {e}"))?
                        .id
                }
            };
            out.push((id, name, p));
        }
        Ok(out)
    }

    async fn spec(&self, svc: &ServicePlan, key: i32) -> Result<ServiceSpec, String> {
        let image = svc.image.as_deref().ok_or_else(|| no_image(&svc.name))?;
        let (program, args) = svc
            .argv
            .split_first()
            .ok_or_else(|| format!("service {} has no command", svc.name))?;
        let network = self.ensure_network().await?;
        let path = |p: &Path| p.display().to_string();
        let (uid, gid) = (self.uid.to_string(), self.gid.to_string());
        let mut secrets = Vec::new();
        for s in &svc.secrets {
            let (id, name) = self.ensure_secret(s).await?;
            secrets.push(TaskSpecContainerSpecSecrets {
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(path(s)),
                    uid: Some(uid.clone()),
                    gid: Some(gid.clone()),
                    mode: Some(0o400),
                }),
                secret_id: Some(id),
                secret_name: Some(name),
            });
        }
        let configs = self
            .ensure_configs()
            .await?
            .into_iter()
            .map(|(id, name, p)| TaskSpecContainerSpecConfigs {
                file: Some(TaskSpecContainerSpecFile1 {
                    name: Some(path(&p)),
                    uid: Some(uid.clone()),
                    gid: Some(gid.clone()),
                    mode: Some(0o444),
                }),
                config_id: Some(id),
                config_name: Some(name),
                ..Default::default()
            })
            .collect();
        let mut volume_labels = self.labels(Some(svc));
        volume_labels.remove(LABEL_SPEC);
        let mounts = vec![
            Mount {
                target: Some(path(&svc.data_dir)),
                source: Some(volume_name(&self.profile, &svc.name)),
                typ: Some(MountType::VOLUME),
                volume_options: Some(MountVolumeOptions {
                    labels: Some(volume_labels),
                    driver_config: Some(MountVolumeOptionsDriverConfig {
                        name: Some("local".into()),
                        options: Some(bind_options(&svc.data_dir)),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Mount {
                target: Some("/tmp".into()),
                typ: Some(MountType::TMPFS),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: Some(64 << 20),
                    mode: Some(0o1777),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        let mut ports = Vec::new();
        for (pname, a) in &svc.ports {
            let mode = if is_p2p(pname) || self.cfg.publish == SwarmPublish::Host {
                EndpointPortConfigPublishModeEnum::HOST
            } else {
                EndpointPortConfigPublishModeEnum::INGRESS
            };
            for (on, proto) in [
                (a.protocol.tcp(), EndpointPortConfigProtocolEnum::TCP),
                (a.protocol.udp(), EndpointPortConfigProtocolEnum::UDP),
            ] {
                if on {
                    ports.push(EndpointPortConfig {
                        name: Some(pname.clone()),
                        protocol: Some(proto),
                        target_port: Some(a.port as i64),
                        published_port: Some(a.port as i64),
                        publish_mode: Some(mode),
                    });
                }
            }
        }
        let mut env = vec![format!("CHAINCTL_SERVICE={}", svc.name)];
        env.extend(svc.env.iter().map(|(k, v)| format!("{k}={v}")));
        if let Some(f) = chainctl_common::test_hooks::fault() {
            env.push(format!("{}={f}", chainctl_common::test_hooks::VAR));
        }
        let constraint = constraint(&self.cfg, &svc.name, &self.node_id);
        Ok(ServiceSpec {
            name: Some(service_name(&self.profile, &svc.name)),
            labels: Some(self.labels(Some(svc))),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(image.to_string()),
                    labels: Some(self.labels(Some(svc))),
                    command: Some(vec![program.clone()]),
                    args: Some(args.to_vec()),
                    hostname: Some(svc.name.clone()),
                    env: Some(env),
                    dir: Some(path(&svc.workdir)),
                    user: Some(format!("{uid}:{gid}")),
                    privileges: Some(TaskSpecContainerSpecPrivileges {
                        no_new_privileges: Some(true),
                        ..Default::default()
                    }),
                    read_only: Some(true),
                    mounts: Some(mounts),
                    stop_signal: Some(svc.stop_signal.signal().as_str().to_string()),
                    stop_grace_period: Some(
                        svc.stop_grace.get().as_nanos().min(i64::MAX as u128) as i64
                    ),
                    secrets: Some(secrets),
                    configs: Some(configs),
                    init: Some(true),
                    capability_drop: Some(vec!["ALL".into()]),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: Some(vec![constraint]),
                    ..Default::default()
                }),
                force_update: Some(key as u64),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(network),
                    aliases: Some(vec![svc.name.clone()]),
                    ..Default::default()
                }]),
                log_driver: Some(TaskSpecLogDriver {
                    name: Some("json-file".into()),
                    options: Some(HashMap::from([
                        ("max-size".to_string(), "10m".to_string()),
                        ("max-file".to_string(), "2".to_string()),
                    ])),
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                // Round-robin DNS needs no IPVS (a virtual IP does), and a service of one
                // pinned replica gains nothing from one; the mesh needs the virtual IP.
                mode: Some(match self.cfg.publish {
                    SwarmPublish::Host => EndpointSpecModeEnum::DNSRR,
                    SwarmPublish::Mesh => EndpointSpecModeEnum::VIP,
                }),
                ports: Some(ports),
            }),
            ..Default::default()
        })
    }

    async fn tasks(&self, service: &str) -> Result<Vec<Task>, String> {
        let filters = HashMap::from([("service".to_string(), vec![service.to_string()])]);
        self.docker
            .list_tasks(Some(
                ListTasksOptionsBuilder::default().filters(&filters).build(),
            ))
            .await
            .map_err(|e| format!("cannot list the tasks of service `{service}`: {e}"))
    }

    /// Creates or updates the service so that a task of instance `key` runs; returns the
    /// key of the instance that runs (an existing one, when the service already runs as
    /// planned).
    async fn start_service(&self, svc: &ServicePlan, key: i32) -> Result<i32, String> {
        let image = svc.image.as_deref().ok_or_else(|| no_image(&svc.name))?;
        match self.docker.inspect_image(image).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {
                return Err(missing_image(image, std::slice::from_ref(&svc.name)))
            }
            Err(e) => return Err(format!("cannot inspect image `{image}`: {e}")),
        }
        if self.node_id_is_local(svc) {
            super::docker::ensure_bind_volume(&self.docker, &self.profile, svc, {
                let mut l = self.labels(Some(svc));
                l.remove(LABEL_SPEC);
                l
            })
            .await?;
        }
        let name = service_name(&self.profile, &svc.name);
        let spec = self.spec(svc, key).await?;
        match self
            .docker
            .inspect_service(&name, None::<InspectServiceOptions>)
            .await
        {
            Ok(s) => {
                let labels = s.spec.as_ref().and_then(|s| s.labels.as_ref());
                if !self.ours(labels) {
                    return Err(self.not_ours(&format!("swarm service `{name}`"), labels));
                }
                // Already running as planned (chainctl lost track of it): take it.
                let current = s
                    .spec
                    .as_ref()
                    .and_then(|s| s.task_template.as_ref())
                    .and_then(|t| t.force_update)
                    .unwrap_or(0);
                let same = labels.and_then(|l| l.get(LABEL_SPEC)) == Some(&svc.spec_hash)
                    && s.spec
                        .as_ref()
                        .and_then(|s| s.task_template.as_ref())
                        .and_then(|t| t.container_spec.as_ref())
                        .and_then(|c| c.image.as_deref())
                        == Some(image);
                if same && current >= HANDLE_BASE as u64 && current <= i32::MAX as u64 {
                    let tasks = self.tasks(&name).await?;
                    if task_of(&tasks, current as i32).is_some_and(|t| {
                        t.status.as_ref().and_then(|s| s.state.as_ref())
                            == Some(&TaskState::RUNNING)
                    }) {
                        return Ok(current as i32);
                    }
                }
                let version = s.version.and_then(|v| v.index).unwrap_or(0);
                let opts = UpdateServiceOptionsBuilder::default()
                    .version(version as i32)
                    .build();
                self.docker
                    .update_service(&name, spec, opts, None)
                    .await
                    .map_err(|e| format!("cannot update swarm service `{name}`: {e}"))?;
            }
            Err(e) if not_found(&e) => {
                self.docker
                    .create_service(spec, None)
                    .await
                    .map_err(|e| format!("cannot create swarm service `{name}`: {e}"))?;
            }
            Err(e) => return Err(format!("cannot inspect swarm service `{name}`: {e}")),
        }
        // Wait for the swarm to schedule and start the new task.
        let t0 = Instant::now();
        loop {
            let tasks = self.tasks(&name).await?;
            if let Some(t) = task_of(&tasks, key) {
                let state = t.status.as_ref().and_then(|s| s.state.as_ref());
                if state == Some(&TaskState::RUNNING) {
                    return Ok(key);
                }
                if terminal(state) {
                    return Err(format!(
                        "its swarm task did not start ({}; exit {}): see `chainctl logs {}` or `docker service ps --no-trunc {name}`",
                        task_error(t),
                        task_exit(t),
                        svc.name
                    ));
                }
                if t0.elapsed() > START_TIMEOUT {
                    return Err(format!(
                        "its swarm task is not running after {} s ({}): `docker service ps --no-trunc {name}` says why (a node with its `chainctl.node` label and the image?)",
                        START_TIMEOUT.as_secs(),
                        task_error(t)
                    ));
                }
            } else if t0.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "the swarm made no task for it in {} s: `docker service ps --no-trunc {name}` says why",
                    START_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the service is placed on the node chainctl talks to.
    fn node_id_is_local(&self, svc: &ServicePlan) -> bool {
        constraint(&self.cfg, &svc.name, &self.node_id).starts_with("node.id==")
    }

    /// Follows instance `key`: its task's end becomes a [`BackendEvent`], its output goes
    /// to the service's log file.
    fn follow(&mut self, key: i32, service: &str, since: i64) -> Result<(), String> {
        let name = service_name(&self.profile, service);
        let tasks = self.rt.block_on(self.tasks(&name))?;
        let task = task_of(&tasks, key)
            .ok_or_else(|| format!("swarm service `{name}` has no task of its instance"))?;
        let task_id = task.id.clone().unwrap_or_default();
        let container = task
            .status
            .as_ref()
            .and_then(|s| s.container_status.as_ref())
            .and_then(|c| c.container_id.clone())
            .filter(|_| task.node_id.as_deref() == Some(self.node_id.as_str()));
        self.watch(key, &name);
        let layout = chainctl_core::layout::Layout::new(&self.state_dir);
        let (file, logs) = self
            .logs
            .get(service)
            .cloned()
            .unwrap_or_else(|| (layout.log_file(service), Default::default()));
        let stream = self
            .docker
            .task_logs(&task_id, Some(super::docker::follow_logs(since)));
        super::docker::relay_logs(&self.rt, stream, file, logs);
        self.running.insert(
            key,
            Running {
                service: service.to_string(),
                container,
            },
        );
        Ok(())
    }

    /// Adds instance `key` of swarm service `name` to what the watcher follows: one task
    /// listing of every followed service per period, whatever their number.
    fn watch(&mut self, key: i32, name: &str) {
        let first = {
            let mut w = self.watched.lock().expect("watched");
            let first = w.is_empty() && !self.watching;
            w.insert(key, name.to_string());
            first
        };
        if !first {
            return;
        }
        self.watching = true;
        let (docker, exits, wake, watched) = (
            self.docker.clone(),
            self.exits.clone(),
            self.wake.clone(),
            self.watched.clone(),
        );
        self.rt.spawn(async move {
            loop {
                tokio::time::sleep(WATCH).await;
                // Only the instances watched before the listing are judged by it: one
                // added meanwhile may have a task the listing does not show.
                let listed: BTreeMap<i32, String> = watched.lock().expect("watched").clone();
                let mut names: Vec<String> = listed.values().cloned().collect();
                names.sort();
                names.dedup();
                if names.is_empty() {
                    continue;
                }
                let filters = HashMap::from([("service".to_string(), names.clone())]);
                let opts = ListTasksOptionsBuilder::default().filters(&filters).build();
                // The engine refuses the whole listing when one of the services is gone:
                // then list them one by one, and a gone one's instances have ended.
                let (tasks, unread) = match docker.list_tasks(Some(opts)).await {
                    Ok(t) => (t, Vec::new()),
                    Err(_) => {
                        let (mut all, mut unread) = (Vec::new(), Vec::new());
                        for n in &names {
                            let f = HashMap::from([("service".to_string(), vec![n.clone()])]);
                            let o = ListTasksOptionsBuilder::default().filters(&f).build();
                            match docker.list_tasks(Some(o)).await {
                                Ok(t) => all.extend(t),
                                // Gone: its instances have ended.
                                Err(e) if not_found(&e) => {}
                                Err(e) => {
                                    tracing::warn!(service = %n, "cannot read its swarm tasks: {e}");
                                    unread.push(n.clone());
                                }
                            }
                        }
                        (all, unread)
                    }
                };
                let mut ended = Vec::new();
                {
                    let mut w = watched.lock().expect("watched");
                    w.retain(|&key, name| {
                        if !listed.contains_key(&key) {
                            return true;
                        }
                        if unread.contains(name) {
                            return true;
                        }
                        let exit = match task_of(&tasks, key) {
                            Some(t)
                                if !terminal(t.status.as_ref().and_then(|s| s.state.as_ref())) =>
                            {
                                return true
                            }
                            Some(t) => task_exit(t),
                            // The service or its task is gone (removed by hand).
                            None => Exit::Unknown,
                        };
                        ended.push(BackendEvent::Exited { pid: key, exit });
                        false
                    });
                }
                if ended.is_empty() {
                    continue;
                }
                if let Ok(mut e) = exits.lock() {
                    e.extend(ended);
                }
                if let Some(w) = &wake {
                    w();
                }
            }
        });
    }

    /// Scales the service of instance `key` to no replica: the swarm stops its task with
    /// the service's stop signal and grace, then kills it.
    fn scale_down(&self, key: i32) -> Result<(), String> {
        let Some(service) = self.service_of(key) else {
            return Ok(());
        };
        let name = service_name(&self.profile, &service);
        self.rt.block_on(async {
            for _ in 0..3 {
                let s = match self
                    .docker
                    .inspect_service(&name, None::<InspectServiceOptions>)
                    .await
                {
                    Ok(s) => s,
                    Err(e) if not_found(&e) => return Ok(()),
                    Err(e) => return Err(format!("cannot inspect swarm service `{name}`: {e}")),
                };
                let mut spec = s.spec.unwrap_or_default();
                let replicas = spec
                    .mode
                    .as_ref()
                    .and_then(|m| m.replicated.as_ref())
                    .and_then(|r| r.replicas);
                if replicas == Some(0) {
                    return Ok(());
                }
                spec.mode = Some(ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
                    ..Default::default()
                });
                let opts = UpdateServiceOptionsBuilder::default()
                    .version(s.version.and_then(|v| v.index).unwrap_or(0) as i32)
                    .build();
                match self.docker.update_service(&name, spec, opts, None).await {
                    Ok(_) => return Ok(()),
                    // Updated by someone else in between: read it again.
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 500,
                        message,
                    }) if message.contains("out of sequence") => continue,
                    Err(e) => return Err(format!("cannot stop swarm service `{name}`: {e}")),
                }
            }
            Err(format!(
                "cannot stop swarm service `{name}`: it keeps being updated"
            ))
        })
    }

    /// The chainctl service of instance `key`: one followed, else one of the profile's
    /// swarm services (an instance found but not adopted).
    fn service_of(&self, key: i32) -> Option<String> {
        match self.running.get(&key) {
            Some(r) => Some(r.service.clone()),
            None => self
                .adoptable()
                .into_iter()
                .find(|(_, k)| *k == key)
                .map(|(s, _)| s),
        }
    }

    fn task_alive(&self, key: i32, service: &str) -> bool {
        let name = service_name(&self.profile, service);
        self.rt
            .block_on(self.tasks(&name))
            .ok()
            .and_then(|tasks| {
                task_of(&tasks, key)
                    .map(|t| !terminal(t.status.as_ref().and_then(|s| s.state.as_ref())))
            })
            .unwrap_or(false)
    }

    /// The running services of this profile and state dir: (service, instance key).
    fn adoptable(&self) -> Vec<(String, i32)> {
        let opts = ListServicesOptionsBuilder::default()
            .filters(&self.label_filter())
            .build();
        self.rt
            .block_on(self.docker.list_services(Some(opts)))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| {
                let spec = s.spec?;
                if !self.ours(spec.labels.as_ref()) {
                    return None;
                }
                let service = spec.labels.as_ref()?.get(LABEL_SERVICE)?.clone();
                let key = spec.task_template?.force_update?;
                (key >= HANDLE_BASE as u64 && key <= i32::MAX as u64)
                    .then_some((service, key as i32))
            })
            .collect()
    }
}

impl Backend for SwarmBackend {
    fn name(&self) -> &'static str {
        "swarm"
    }

    fn start(&mut self, svc: &ServicePlan) -> Result<Handle, BackendError> {
        for d in [Some(svc.data_dir.as_path()), svc.log_file.parent()]
            .into_iter()
            .flatten()
        {
            chainctl_common::fs::private_dir(d).map_err(|source| BackendError::Prepare {
                path: d.to_path_buf(),
                source,
            })?;
        }
        let fresh = loop {
            let k = HANDLE_BASE | (rand::random::<i32>() & (HANDLE_BASE - 1));
            if !self.running.contains_key(&k) {
                break k;
            }
        };
        let since = super::docker::now_secs();
        let key = self
            .rt
            .block_on(self.start_service(svc, fresh))
            .map_err(BackendError::Engine)?;
        self.logs
            .insert(svc.name.clone(), (svc.log_file.clone(), svc.logs.clone()));
        self.follow(key, &svc.name, since)
            .map_err(BackendError::Engine)?;
        Ok(Handle {
            pid: key,
            pgid: key,
            start_ticks: 0,
            relay_pid: None,
        })
    }

    fn signal(&mut self, h: &Handle, _sig: StopSignal) -> Result<(), BackendError> {
        self.scale_down(h.pid).map_err(BackendError::Engine)
    }

    fn kill(&mut self, h: &Handle) {
        // The supervisor asks again and again until the task is gone: a swarm takes a
        // moment to stop one, so ask the engine once a second, not at every tick.
        if self
            .killed
            .get(&h.pid)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.killed.insert(h.pid, Instant::now());
        if let Some(c) = self.running.get(&h.pid).and_then(|r| r.container.clone()) {
            let opts = KillContainerOptionsBuilder::default()
                .signal("SIGKILL")
                .build();
            let _ = self.rt.block_on(self.docker.kill_container(&c, Some(opts)));
        }
        if let Err(e) = self.scale_down(h.pid) {
            tracing::warn!("{e}");
        }
    }

    fn group_alive(&self, h: &Handle) -> bool {
        self.service_of(h.pid)
            .is_some_and(|s| self.task_alive(h.pid, &s))
    }

    fn adopt(&mut self, h: &Handle) -> bool {
        if !is_swarm_handle(h) {
            return false;
        }
        let Some((service, key)) = self.adoptable().into_iter().find(|(_, k)| *k == h.pid) else {
            return false;
        };
        if !self.task_alive(key, &service) {
            return false;
        }
        match self.follow(key, &service, super::docker::now_secs()) {
            Ok(()) => {
                tracing::info!(service = %service, instance = key, "adopted its running swarm service");
                true
            }
            Err(e) => {
                tracing::warn!(service = %service, "cannot adopt its swarm service: {e}");
                false
            }
        }
    }

    fn poll(&mut self) -> Vec<BackendEvent> {
        let events: Vec<BackendEvent> = self
            .exits
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default();
        for BackendEvent::Exited { pid, .. } in &events {
            self.running.remove(pid);
            self.killed.remove(pid);
        }
        events
    }

    fn cleanup(&mut self, _known: &[i32]) {
        // Everything is stopped: remove the services with no task left running, then the
        // secrets and configs no service uses any more, and the network. Volumes (and so
        // data) stay for the next `up`.
        let opts = ListServicesOptionsBuilder::default()
            .filters(&self.label_filter())
            .build();
        let services = self
            .rt
            .block_on(self.docker.list_services(Some(opts)))
            .unwrap_or_default();
        let mut left = 0;
        for s in services {
            let Some(spec) = s.spec.as_ref() else {
                continue;
            };
            if !self.ours(spec.labels.as_ref()) {
                continue;
            }
            let name = spec.name.clone().unwrap_or_default();
            let running = self
                .rt
                .block_on(self.tasks(&name))
                .map(|ts| {
                    ts.iter().any(|t| {
                        t.desired_state.as_ref() == Some(&TaskState::RUNNING)
                            && !terminal(t.status.as_ref().and_then(|s| s.state.as_ref()))
                    })
                })
                .unwrap_or(true);
            if running {
                left += 1;
                continue;
            }
            if let Err(e) = self.rt.block_on(self.docker.delete_service(&name)) {
                tracing::warn!(service = %name, "cannot remove a stopped swarm service: {e}");
                left += 1;
            }
        }
        if left > 0 {
            return;
        }
        let filters = self.label_filter();
        self.rt.block_on(async {
            // Removed services' tasks let go of their secrets and configs a moment later.
            for _ in 0..40 {
                let mut busy = false;
                let secrets = self
                    .docker
                    .list_secrets(Some(ListSecretsOptionsBuilder::default().filters(&filters).build()))
                    .await
                    .unwrap_or_default();
                for s in secrets.into_iter().filter(|s| self.ours(s.spec.as_ref().and_then(|s| s.labels.as_ref()))) {
                    if let Some(id) = s.id {
                        busy |= self.docker.delete_secret(&id).await.is_err();
                    }
                }
                let configs = self
                    .docker
                    .list_configs(Some(ListConfigsOptionsBuilder::default().filters(&filters).build()))
                    .await
                    .unwrap_or_default();
                for c in configs.into_iter().filter(|c| self.ours(c.spec.as_ref().and_then(|s| s.labels.as_ref()))) {
                    if let Some(id) = c.id {
                        busy |= self.docker.delete_config(&id).await.is_err();
                    }
                }
                let net = super::docker::network_name(&self.profile);
                busy |= match self.docker.remove_network(&net).await {
                    Ok(()) => false,
                    Err(e) => !not_found(&e),
                };
                if !busy {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            tracing::warn!("some swarm secrets, configs or the network of this profile are still in use; `docker secret ls`, `docker config ls` and `docker network ls` show them");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_clients_go_where_their_validator_goes() {
        let cfg = SwarmConfig {
            placement: BTreeMap::from([
                ("val-1".to_string(), "b".to_string()),
                ("faucet".to_string(), "c".to_string()),
            ]),
            publish: SwarmPublish::Host,
        };
        assert_eq!(
            constraint(&cfg, "val-1", "N"),
            "node.labels.chainctl.node==b"
        );
        assert_eq!(
            constraint(&cfg, "val-1-el-0", "N"),
            "node.labels.chainctl.node==b"
        );
        assert_eq!(
            constraint(&cfg, "faucet", "N"),
            "node.labels.chainctl.node==c"
        );
        assert_eq!(constraint(&cfg, "val-0-el-1", "N"), "node.id==N");
        assert_eq!(constraint(&cfg, "val-11-el-0", "N"), "node.id==N");
        assert_eq!(validator_of("val-12-el-3"), Some("val-12"));
        assert_eq!(validator_of("my-el-0"), None);
        assert_eq!(validator_of("val-x-el-0"), None);
    }

    #[test]
    fn object_names_fit_docker_and_follow_the_content() {
        let a = object_name(
            "devnet",
            "secret",
            Path::new("secrets/jwt/val-0--val-0-el-0.hex"),
            b"aa",
        );
        let b = object_name(
            "devnet",
            "secret",
            Path::new("secrets/jwt/val-0--val-0-el-0.hex"),
            b"ab",
        );
        assert_ne!(a, b);
        assert!(a.starts_with("chainctl-devnet-secret-"), "{a}");
        let long = object_name(
            "a-very-long-profile-name",
            "config",
            Path::new(&"x/".repeat(60)),
            b"",
        );
        assert!(long.len() <= 64, "{long}");
        for n in [&a, &b, &long] {
            assert!(n
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')));
        }
    }

    #[test]
    fn only_p2p_ports_skip_the_mesh() {
        assert!(is_p2p("p2p"));
        assert!(is_p2p("discovery"));
        assert!(!is_p2p("http"));
        assert!(!is_p2p("engine"));
        assert!(!is_p2p("status"));
    }

    #[test]
    fn services_on_other_nodes_are_probed_at_their_node() {
        let node = |id: &str, label: Option<&str>, addr: &str| SwarmNode {
            id: id.into(),
            hostname: format!("host-{id}"),
            label: label.map(Into::into),
            addr: addr.parse().ok(),
            down: false,
        };
        let cfg = SwarmConfig {
            placement: BTreeMap::from([
                ("val-0".to_string(), "a".to_string()),
                ("val-1".to_string(), "b".to_string()),
            ]),
            publish: SwarmPublish::Host,
        };
        let nodes = [
            node("A", Some("a"), "10.0.0.1"),
            node("B", Some("b"), "10.0.0.2"),
        ];
        let services = ["val-0", "val-0-el-0", "val-1", "val-1-el-0", "val-2"];
        let on = |ip: &'static str| move |a: IpAddr| a == ip.parse::<IpAddr>().unwrap();
        // chainctl on A, talking to A: val-0 (on A) and val-2 (unplaced: the engine's
        // node) at listen.rpc; val-1 and its client at B's address.
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let want = BTreeMap::from([("val-1".to_string(), b), ("val-1-el-0".to_string(), b)]);
        assert_eq!(
            remote_hosts(&cfg, &services, &nodes, "A", on("10.0.0.1")).unwrap(),
            want
        );
        // chainctl on B, talking to A's engine: val-0, its client and val-2 are remote.
        let hosts = remote_hosts(&cfg, &services, &nodes, "A", on("10.0.0.2")).unwrap();
        assert_eq!(
            hosts.keys().collect::<Vec<_>>(),
            ["val-0", "val-0-el-0", "val-2"].iter().collect::<Vec<_>>()
        );
        // A label on two live nodes would move a service away from its data.
        let mut two = vec![
            node("A", Some("a"), "10.0.0.1"),
            node("B", Some("b"), "10.0.0.2"),
            node("C", Some("b"), "10.0.0.3"),
        ];
        let e = remote_hosts(&cfg, &services, &two, "A", on("10.0.0.1")).unwrap_err();
        assert!(
            e.contains("chainctl.node=b is on 2 nodes (host-B B, host-C C)"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        // A machine that rejoined leaves a down entry: the live one counts.
        two[1].down = true;
        let hosts = remote_hosts(&cfg, &services, &two, "A", on("10.0.0.1")).unwrap();
        assert_eq!(hosts.get("val-1"), Some(&"10.0.0.3".parse().unwrap()));
        // Only a down node carries the label.
        two[2].down = true;
        let e = remote_hosts(&cfg, &services, &two, "A", on("10.0.0.1")).unwrap_err();
        assert!(e.contains("is down") && e.contains("docker node rm"), "{e}");
        // A remote node without an address cannot be probed; the engine's own may lack
        // one (chainctl runs beside it).
        let blind = [node("A", Some("a"), ""), node("B", Some("b"), "0.0.0.0")];
        let e = remote_hosts(&cfg, &services, &blind, "A", |_| false).unwrap_err();
        assert!(
            e.contains("swarm node `host-B`") && e.contains("--advertise-addr"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        // A label nobody has is check()'s to report.
        let none = [node("A", None, "10.0.0.1")];
        assert!(remote_hosts(&cfg, &services, &none, "A", on("10.0.0.1"))
            .unwrap()
            .is_empty());
        // This host's addresses are found by binding.
        assert!(is_here("127.0.0.1".parse().unwrap()));
        assert!(!is_here("192.0.2.77".parse().unwrap()));
    }

    #[test]
    fn swarm_handles_are_never_pids() {
        let h = Handle {
            pid: HANDLE_BASE + 5,
            pgid: HANDLE_BASE + 5,
            start_ticks: 0,
            relay_pid: None,
        };
        assert!(is_swarm_handle(&h));
    }
}
