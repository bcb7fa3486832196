//! The Docker backend (`runtime: docker`): one container per service on one user-defined
//! bridge network per profile, driven through the Docker Engine API (bollard).
//!
//! What each container gets:
//! - the plan built for containers ([`chainctl_core::plan::Target::Container`]): services bind all
//!   addresses inside their container and reach each other by service name (a network
//!   alias); every port is published on the profile's listen address (127.0.0.1 unless
//!   configured otherwise) under its own number, so chainctl's probes, gateway and report
//!   reach the services exactly as they reach processes;
//! - its data dir as a named volume (`chainctl-PROFILE-SERVICE-data`) backed by the data
//!   dir in the state dir, so data stays where `chainctl` and its disk checks look for it;
//!   the network files read-only (its working dir is the image's, as in compose); each
//!   secret file it reads (Engine API secret, validator
//!   key, control token), read-only, and no other;
//! - the user chainctl runs as, no capabilities, no new privileges, a read-only root file
//!   system with a private `/tmp`, `docker-init` as PID 1 (signals reach the program),
//!   no restart policy of Docker's own (restarts follow chainctl's policy, as for
//!   processes), and Docker's own log buffer bounded: the logs are read through the API
//!   into the service's rotated log file, where `chainctl logs` and the report read them.
//!
//! External execution clients (Reth, Geth, Erigon) run their own command from their own
//! image; Geth's and Erigon's init step runs first, at each start, in a one-shot
//! container `chainctl-PROFILE-SERVICE_init` (the client's image, volumes and user, no
//! network). With external clients the network has the profile's subnet
//! (`docker.subnet`, checked against the host's routes): they have fixed addresses in
//! its lower half, which their peers' enode URLs name; Docker gives the other containers
//! addresses from the upper half.
//!
//! Containers are labelled with the profile, the service, the spec hash and the state
//! dir. A container stopped with the same spec is started again (keeping its network
//! attachments, as a restart should), a changed one is recreated, and a running one found
//! by its labels after chainctl itself restarted is adopted, not recreated.
//!
//! A container's processes are visible on this host, so the [`Handle`] holds the host pid
//! of the service's program (and, as its group, the container's init): status, CPU and
//! memory readings and `kill -9` work as for processes.

use super::{Backend, BackendError, BackendEvent, Handle};
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, HostConfigLogConfig,
    Ipam, IpamConfig, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use chainctl_core::instance::Exit;
use chainctl_core::plan::ServicePlan;
use chainctl_core::profile::StopSignal;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Label: the profile a container belongs to.
pub const LABEL_PROFILE: &str = "io.chainctl.profile";
/// Label: the service it runs.
pub const LABEL_SERVICE: &str = "io.chainctl.service";
/// Label: the hash of the service's spec it was created from.
pub const LABEL_SPEC: &str = "io.chainctl.spec-hash";
/// Label: the state dir of the chainctl that created it.
pub const LABEL_STATE: &str = "io.chainctl.state-dir";
/// Label: the service whose init step a one-shot container runs.
pub const LABEL_INIT: &str = "io.chainctl.init-of";

/// How long an init step (`geth init`, `erigon init`) may take.
const INIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The container of `service` in `profile`.
pub fn container_name(profile: &str, service: &str) -> String {
    format!("chainctl-{profile}-{service}")
}

/// The network of `profile`.
pub fn network_name(profile: &str) -> String {
    format!("chainctl-{profile}")
}

/// The named volume holding `service`'s data dir.
pub fn volume_name(profile: &str, service: &str) -> String {
    format!("chainctl-{profile}-{service}-data")
}

/// Whether an image name is chainctl's own (made by `chainctl image build`).
fn is_own_image(image: &str) -> bool {
    image.starts_with("chainctl:")
}

/// The message for an image the engine does not have: chainctl never pulls.
pub fn missing_image(image: &str, services: &[String]) -> String {
    let fix = if is_own_image(image) {
        format!(
            "build it from a static chainctl: `{}` then `target/x86_64-unknown-linux-gnu/release/chainctl image build --tag {image}`",
            crate::image::STATIC_BUILD
        )
    } else {
        format!("load it (`docker load -i FILE`) or pull it yourself (`docker pull {image}`)")
    };
    format!(
        "image `{image}` (services {}) is not on this Docker engine, and chainctl never pulls: {fix}",
        services.join(", ")
    )
}

pub(super) fn no_image(service: &str) -> String {
    format!(
        "services.{service}.image is not set: under `runtime: docker` or `swarm` every service runs from an image; add e.g. `image: ghcr.io/paradigmxyz/reth:v1.9.3`"
    )
}

pub fn not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// What an exit status of a container means. `docker-init` exits 128+N when the program
/// was killed by signal N, and so does the engine when the container was killed.
pub(super) fn exit_of(code: i64) -> Exit {
    match code {
        129..=192 => Exit::Signal((code - 128) as i32),
        c => Exit::Code(c as i32),
    }
}

struct Running {
    id: String,
    service: String,
}

/// Runs services as containers.
pub struct DockerBackend {
    rt: tokio::runtime::Runtime,
    docker: Docker,
    profile: String,
    state_dir: PathBuf,
    publish: IpAddr,
    /// `uid:gid` the programs run as: the files chainctl wrote for them are this user's.
    user: String,
    running: BTreeMap<i32, Running>,
    /// Running containers of this state dir (init pid, id, service), read at the first
    /// adoption and forgotten when anything starts.
    adoptable: Option<Vec<(i32, String, String)>>,
    /// Each service's log file and rotation, from the plan (for adopted containers too).
    logs: BTreeMap<String, (PathBuf, chainctl_core::profile::LogConfig)>,
    exits: Arc<Mutex<Vec<BackendEvent>>>,
    wake: Option<super::Wake>,
    /// The network's subnet (`docker.subnet`), when external clients have fixed
    /// addresses in it.
    subnet: Option<chainctl_core::subnet::Subnet>,
}

impl DockerBackend {
    /// Connects to the engine (`DOCKER_HOST`, else the local socket). `publish` is the host
    /// address ports are published on; `wake` is told when a container exits.
    pub fn connect(
        profile: &str,
        state_dir: &Path,
        publish: IpAddr,
        wake: Option<super::Wake>,
    ) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("docker")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Docker client's runtime: {e}"))?;
        let docker = rt
            .block_on(async {
                let d = Docker::connect_with_local_defaults()?;
                let d = tokio::time::timeout(std::time::Duration::from_secs(10), d.negotiate_version())
                    .await
                    .map_err(|_| DockerError::RequestTimeoutError)??;
                d.ping().await.map(|_| d)
            })
            .map_err(|e| {
                format!(
                    "cannot reach the Docker engine ({e}): `runtime: docker` runs every service as a container; start Docker and check that `docker info` works (or set DOCKER_HOST)"
                )
            })?;
        Ok(DockerBackend {
            rt,
            docker,
            profile: profile.to_string(),
            state_dir: state_dir.to_path_buf(),
            publish,
            user: {
                // SAFETY: getuid and getgid cannot fail and touch no memory.
                let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
                format!("{uid}:{gid}")
            },
            running: BTreeMap::new(),
            adoptable: None,
            logs: BTreeMap::new(),
            exits: Arc::new(Mutex::new(Vec::new())),
            wake,
            subnet: None,
        })
    }

    /// The subnet of the profile's network (the plan's), where external clients have the
    /// addresses the plan gives them. Refused before anything starts or stops when the
    /// profile's network exists, in use, on another subnet: the containers' addresses
    /// would not fit it.
    pub fn set_subnet(&mut self, subnet: Option<&str>) -> Result<(), String> {
        self.subnet = subnet
            .map(chainctl_core::subnet::Subnet::parse)
            .transpose()?;
        let name = network_name(&self.profile);
        let Ok(n) = self.rt.block_on(self.docker.inspect_network(&name, None)) else {
            return Ok(());
        };
        if self.fits(&n) || n.containers.as_ref().is_none_or(|c| c.is_empty()) {
            return Ok(());
        }
        Err(self.misfit(&name))
    }

    fn misfit(&self, name: &str) -> String {
        format!(
            "network `{name}` is in use on another subnet than the profile's ({}, docker.subnet): the external clients' fixed addresses would not fit it; run `chainctl down`, then `up` again",
            self.subnet.map(|s| s.to_string()).unwrap_or_default()
        )
    }

    /// Whether a network has the subnet this backend wants (any, when none is set).
    fn fits(&self, n: &bollard::models::NetworkInspect) -> bool {
        let Some(want) = self.subnet.map(|s| s.to_string()) else {
            return true;
        };
        n.ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.subnet.as_deref() == Some(want.as_str())))
    }

    /// Where each service's output goes (its log file and rotation).
    pub fn set_logs(&mut self, services: &[ServicePlan]) {
        for s in services {
            self.logs
                .insert(s.name.clone(), (s.log_file.clone(), s.logs.clone()));
        }
    }

    /// Every image the services need must be on the engine: one message naming each
    /// missing image, its services and the command that provides it.
    pub fn check_images(&self, services: &[ServicePlan]) -> Result<(), String> {
        let missing = self.rt.block_on(missing_images(&self.docker, services))?;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("\n"))
        }
    }

    fn labels(&self, service: Option<&ServicePlan>) -> HashMap<String, String> {
        owner_labels(&self.profile, &self.state_dir, service)
    }

    fn ours(&self, labels: Option<&HashMap<String, String>>) -> bool {
        owned_by(&self.state_dir, labels)
    }

    fn other_state_dir(&self, what: &str, labels: Option<&HashMap<String, String>>) -> String {
        owned_elsewhere(what, labels, "docker rm -f")
    }

    async fn ensure_network(&self) -> Result<String, String> {
        let name = network_name(&self.profile);
        match self.docker.inspect_network(&name, None).await {
            Ok(n) => {
                if !self.ours(n.labels.as_ref()) {
                    return Err(
                        self.other_state_dir(&format!("network `{name}`"), n.labels.as_ref())
                    );
                }
                if !self.fits(&n) {
                    if n.containers.as_ref().is_some_and(|c| !c.is_empty()) {
                        return Err(self.misfit(&name));
                    }
                    self.docker
                        .remove_network(&name)
                        .await
                        .map_err(|e| format!("cannot remove network `{name}` to make it again with the profile's subnet: {e}"))?;
                    self.create_network(&name).await?;
                }
            }
            Err(e) if not_found(&e) => self.create_network(&name).await?,
            Err(e) => return Err(format!("cannot inspect network `{name}`: {e}")),
        }
        Ok(name)
    }

    async fn create_network(&self, name: &str) -> Result<(), String> {
        if let Some((iface, route)) = self.subnet.and_then(|s| {
            s.overlapping_route(&std::fs::read_to_string("/proc/net/route").unwrap_or_default())
        }) {
            return Err(format!(
                "cannot create network `{name}` on subnet {}: it overlaps {route}, a network of this host on {iface}, which its containers would cut this host off from; set `docker.subnet` in the profile to a free subnet",
                self.subnet.map(|s| s.to_string()).unwrap_or_default()
            ));
        }
        // Fixed addresses in the lower half, Docker's own picks in the upper half.
        let ipam = self.subnet.map(|s| Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(s.to_string()),
                ip_range: Some(s.dynamic_range()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        self.docker
            .create_network(NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".into()),
                labels: Some(self.labels(None)),
                ipam,
                ..Default::default()
            })
            .await
            .map_err(|e| match self.subnet {
                Some(s) => format!(
                    "cannot create network `{name}` with subnet {s}: {e}; when it overlaps another network of this host, set `docker.subnet` in the profile to a free one (e.g. `docker.subnet: 10.213.8.0/22`; `docker network inspect` shows the others')"
                ),
                None => format!("cannot create network `{name}`: {e}"),
            })?;
        Ok(())
    }

    /// A named volume backed by the service's data dir on this host.
    async fn ensure_volume(&self, svc: &ServicePlan) -> Result<String, String> {
        let mut labels = self.labels(Some(svc));
        labels.remove(LABEL_SPEC);
        ensure_bind_volume(&self.docker, &self.profile, svc, labels).await
    }

    fn create_body(
        &self,
        svc: &ServicePlan,
        image: &str,
        network: &str,
        volume: &str,
    ) -> Result<ContainerCreateBody, String> {
        let (program, args) = svc
            .argv
            .split_first()
            .ok_or_else(|| format!("service {} has no command", svc.name))?;
        let path = |p: &Path| p.display().to_string();
        let mut binds = vec![format!("{volume}:{}", path(&svc.data_dir))];
        let net = chainctl_core::network::network_dir(&chainctl_core::layout::Layout::new(
            &self.state_dir,
        ));
        if net.is_dir() {
            binds.push(format!("{0}:{0}:ro", path(&net)));
        }
        for secret in &svc.secrets {
            // Docker would make a directory in place of a missing file.
            if !secret.is_file() {
                return Err(format!(
                    "secret {} of service {} does not exist: run `chainctl jwt generate` (validator files are written by `up`)",
                    secret.display(),
                    svc.name
                ));
            }
            binds.push(format!("{0}:{0}:ro", path(secret)));
        }
        let mut exposed = Vec::new();
        let mut bindings = HashMap::new();
        for a in svc.ports.values() {
            for (on, proto) in [(a.protocol.tcp(), "tcp"), (a.protocol.udp(), "udp")] {
                if on {
                    let key = format!("{}/{proto}", a.port);
                    exposed.push(key.clone());
                    bindings.insert(
                        key,
                        Some(vec![PortBinding {
                            host_ip: Some(self.publish.to_string()),
                            host_port: Some(a.port.to_string()),
                        }]),
                    );
                }
            }
        }
        let mut env = vec![format!("CHAINCTL_SERVICE={}", svc.name)];
        env.extend(svc.env.iter().map(|(k, v)| format!("{k}={v}")));
        if let Some(f) = chainctl_common::test_hooks::fault() {
            env.push(format!("{}={f}", chainctl_common::test_hooks::VAR));
        }
        Ok(ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec![program.clone()]),
            cmd: Some(args.to_vec()),
            env: Some(env),
            working_dir: Some(path(&svc.workdir)),
            user: Some(self.user.clone()),
            hostname: Some(svc.name.clone()),
            labels: Some(self.labels(Some(svc))),
            exposed_ports: Some(exposed),
            stop_signal: Some(svc.stop_signal.signal().as_str().to_string()),
            stop_timeout: Some(svc.stop_grace.get().as_secs().max(1) as i64),
            host_config: Some(HostConfig {
                binds: Some(binds),
                port_bindings: Some(bindings),
                network_mode: Some(network.to_string()),
                init: Some(true),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_string(),
                    "rw,nosuid,nodev,noexec,size=64m".to_string(),
                )])),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([
                        ("max-size".to_string(), "10m".to_string()),
                        ("max-file".to_string(), "2".to_string()),
                    ])),
                }),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.to_string(),
                    EndpointSettings {
                        aliases: Some(vec![svc.name.clone()]),
                        ipam_config: svc.address.map(|a| EndpointIpamConfig {
                            ipv4_address: Some(a.to_string()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        })
    }

    /// Follows the container: its exit becomes a [`BackendEvent`], its output goes to the
    /// service's log file from `since` (unix seconds) on.
    fn follow(&mut self, pid: i32, id: &str, service: &str, since: i64) {
        let (docker, exits, wake, cid) = (
            self.docker.clone(),
            self.exits.clone(),
            self.wake.clone(),
            id.to_string(),
        );
        self.rt.spawn(async move {
            let opts = WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build();
            let exit = match docker.wait_container(&cid, Some(opts)).next().await {
                Some(Ok(r)) => exit_of(r.status_code),
                Some(Err(DockerError::DockerContainerWaitError { code, .. })) => exit_of(code),
                _ => Exit::Unknown,
            };
            if let Ok(mut e) = exits.lock() {
                e.push(BackendEvent::Exited { pid, exit });
            }
            if let Some(w) = wake {
                w();
            }
        });
        let layout = chainctl_core::layout::Layout::new(&self.state_dir);
        let (file, logs) = self
            .logs
            .get(service)
            .cloned()
            .unwrap_or_else(|| (layout.log_file(service), Default::default()));
        let stream = self.docker.logs(id, Some(follow_logs(since)));
        relay_logs(&self.rt, stream, file, logs);
        self.running.insert(
            pid,
            Running {
                id: id.to_string(),
                service: service.to_string(),
            },
        );
    }

    async fn start_container(&self, svc: &ServicePlan) -> Result<(String, i64), String> {
        let image = svc.image.as_deref().ok_or_else(|| no_image(&svc.name))?;
        let image_id = match self.docker.inspect_image(image).await {
            Ok(i) => i.id.unwrap_or_default(),
            Err(e) if not_found(&e) => {
                return Err(missing_image(image, std::slice::from_ref(&svc.name)))
            }
            Err(e) => return Err(format!("cannot inspect image `{image}`: {e}")),
        };
        let network = self.ensure_network().await?;
        let volume = self.ensure_volume(svc).await?;
        let name = container_name(&self.profile, &svc.name);
        let mut reuse = false;
        match self.docker.inspect_container(&name, None).await {
            Ok(c) => {
                let labels = c.config.as_ref().and_then(|c| c.labels.as_ref());
                if !self.ours(labels) {
                    return Err(self.other_state_dir(&format!("container `{name}`"), labels));
                }
                let same = labels.and_then(|l| l.get(LABEL_SPEC)) == Some(&svc.spec_hash)
                    && c.image.as_deref() == Some(image_id.as_str());
                let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
                if same {
                    reuse = true;
                    if running {
                        // Already running as planned (chainctl lost track of it): take it.
                        let since = now_secs();
                        return Ok((c.id.unwrap_or(name), since));
                    }
                } else {
                    let opts = RemoveContainerOptionsBuilder::default().force(true).build();
                    self.docker
                        .remove_container(&name, Some(opts))
                        .await
                        .map_err(|e| format!("cannot remove the old container `{name}`: {e}"))?;
                }
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(format!("cannot inspect container `{name}`: {e}")),
        }
        if !svc.init.is_empty() {
            self.run_init(svc, image, &volume).await?;
        }
        let id = if reuse {
            name.clone()
        } else {
            let body = self.create_body(svc, image, &network, &volume)?;
            let opts = CreateContainerOptionsBuilder::default().name(&name).build();
            self.docker
                .create_container(Some(opts), body)
                .await
                .map_err(|e| format!("cannot create container `{name}`: {e}"))?
                .id
        };
        let since = now_secs();
        self.docker
            .start_container(&id, None)
            .await
            .map_err(|e| format!("cannot start container `{name}`: {e}"))?;
        Ok((id, since))
    }

    /// Runs the service's init step (`geth init …`) to completion in a container of its
    /// own: the service's image, volumes, user and hardening, no network, no ports.
    /// Refused, with the step's last output lines, when it fails.
    async fn run_init(&self, svc: &ServicePlan, image: &str, volume: &str) -> Result<(), String> {
        // `_` cannot be in a service name: no service's container has this name.
        let name = format!("{}_init", container_name(&self.profile, &svc.name));
        let remove = || RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.inspect_container(&name, None).await {
            Ok(c) => {
                let labels = c.config.as_ref().and_then(|c| c.labels.as_ref());
                if !self.ours(labels) || labels.and_then(|l| l.get(LABEL_INIT)) != Some(&svc.name) {
                    return Err(self.other_state_dir(&format!("container `{name}`"), labels));
                }
                self.docker
                    .remove_container(&name, Some(remove()))
                    .await
                    .map_err(|e| format!("cannot remove the old container `{name}`: {e}"))?;
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(format!("cannot inspect container `{name}`: {e}")),
        }
        let mut body = self.create_body(svc, image, "none", volume)?;
        let (program, args) = svc.init.split_first().expect("checked by the caller");
        body.entrypoint = Some(vec![program.clone()]);
        body.cmd = Some(args.to_vec());
        body.exposed_ports = None;
        body.networking_config = None;
        let mut labels = self.labels(None);
        labels.insert(LABEL_INIT.into(), svc.name.clone());
        body.labels = Some(labels);
        if let Some(h) = body.host_config.as_mut() {
            h.port_bindings = None;
        }
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        self.docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| format!("cannot create container `{name}`: {e}"))?;
        let code = match self.docker.start_container(&name, None).await {
            Err(e) => Err(format!("cannot start container `{name}`: {e}")),
            Ok(()) => {
                let wait = WaitContainerOptionsBuilder::default()
                    .condition("not-running")
                    .build();
                let waited = tokio::time::timeout(
                    INIT_LIMIT,
                    self.docker.wait_container(&name, Some(wait)).next(),
                )
                .await;
                match waited {
                    Err(_) => Ok(None),
                    Ok(Some(Ok(r))) => Ok(Some(r.status_code)),
                    Ok(Some(Err(DockerError::DockerContainerWaitError { code, .. }))) => {
                        Ok(Some(code))
                    }
                    Ok(Some(Err(e))) => Err(format!("cannot wait for container `{name}`: {e}")),
                    Ok(None) => Err(format!(
                        "the engine stopped reporting on container `{name}`"
                    )),
                }
            }
        };
        let mut output = String::new();
        let logs = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("20")
            .build();
        let mut stream = self.docker.logs(&name, Some(logs));
        while let Some(Ok(chunk)) = stream.next().await {
            output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        let _ = self.docker.remove_container(&name, Some(remove())).await;
        let step = svc.init.join(" ");
        match code {
            Ok(Some(0)) => Ok(()),
            Ok(None) => Err(format!(
                "service {}: its init step `{step}` did not finish within {} s (last output: {})",
                svc.name,
                INIT_LIMIT.as_secs(),
                output.trim()
            )),
            Ok(Some(c)) => Err(format!(
                "service {}: its init step `{step}` failed (exit status {c}): {}",
                svc.name,
                output.trim()
            )),
            Err(e) => Err(format!("service {}: its init step `{step}`: {e}", svc.name)),
        }
    }

    fn pid_of(&self, id: &str) -> Result<(i32, bool, Option<i64>), String> {
        let c = self
            .rt
            .block_on(self.docker.inspect_container(id, None))
            .map_err(|e| format!("cannot inspect container {id}: {e}"))?;
        let st = c.state.unwrap_or_default();
        Ok((
            st.pid.unwrap_or(0) as i32,
            st.running.unwrap_or(false),
            st.exit_code,
        ))
    }

    /// The containers of this profile and state dir (`all`: stopped ones too).
    fn list(&self, all: bool) -> Vec<(String, bool)> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_PROFILE}={}", self.profile)],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(all)
            .filters(&filters)
            .build();
        self.rt
            .block_on(self.docker.list_containers(Some(opts)))
            .unwrap_or_default()
            .into_iter()
            .filter(|c| self.ours(c.labels.as_ref()))
            .filter_map(|c| Some((c.id?, c.state.is_some_and(|s| s.to_string() == "running"))))
            .collect()
    }

    fn kill_with(&self, h: &Handle, signal: &str) -> Result<(), String> {
        let Some(r) = self.running.get(&h.pid) else {
            return Ok(());
        };
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self
            .rt
            .block_on(self.docker.kill_container(&r.id, Some(opts)))
        {
            Ok(()) => Ok(()),
            // 409: not running any more; 404: gone.
            Err(DockerError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(format!(
                "cannot send {signal} to the container of {}: {e}",
                r.service
            )),
        }
    }
}

/// The labels of a Docker object chainctl makes for `profile` and `state_dir` (and
/// `service`, with its spec hash).
pub(super) fn owner_labels(
    profile: &str,
    state_dir: &Path,
    service: Option<&ServicePlan>,
) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (LABEL_PROFILE.to_string(), profile.to_string()),
        (LABEL_STATE.to_string(), state_dir.display().to_string()),
    ]);
    if let Some(s) = service {
        l.insert(LABEL_SERVICE.into(), s.name.clone());
        l.insert(LABEL_SPEC.into(), s.spec_hash.clone());
    }
    l
}

/// Whether an object with these labels is the chainctl of `state_dir`'s.
pub(super) fn owned_by(state_dir: &Path, labels: Option<&HashMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(LABEL_STATE))
        .is_some_and(|d| Path::new(d) == state_dir)
}

/// The message for an object in the way that is not ours; `remove` is the Docker
/// command that removes it.
pub(super) fn owned_elsewhere(
    what: &str,
    labels: Option<&HashMap<String, String>>,
    remove: &str,
) -> String {
    let owner = labels
        .and_then(|l| l.get(LABEL_STATE))
        .map(|d| format!("the chainctl with state dir {d}"))
        .unwrap_or_else(|| "something other than chainctl".into());
    format!(
        "{what} already exists and belongs to {owner}: stop that one (`chainctl --state-dir DIR down`, or `{remove}`) or give this profile another name"
    )
}

/// One message per image the services need that the engine does not have (naming its
/// services and the command that provides it); `Err` for a service with no image.
pub(super) async fn missing_images(
    docker: &Docker,
    services: &[ServicePlan],
) -> Result<Vec<String>, String> {
    let mut by_image: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in services {
        match &s.image {
            Some(i) => by_image.entry(i.clone()).or_default().push(s.name.clone()),
            None => return Err(no_image(&s.name)),
        }
    }
    let mut missing = Vec::new();
    for (image, names) in &by_image {
        match docker.inspect_image(image).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => missing.push(missing_image(image, names)),
            Err(e) => return Err(format!("cannot inspect image `{image}`: {e}")),
        }
    }
    Ok(missing)
}

/// Docker's log options for following a container's (or task's) output from `since`
/// (unix seconds) on.
pub(super) fn follow_logs(since: i64) -> bollard::query_parameters::LogsOptions {
    LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .since(since as i32)
        .build()
}

/// Copies a followed log stream into the service's rotated log file, until it ends.
pub(super) fn relay_logs(
    rt: &tokio::runtime::Runtime,
    stream: impl futures::Stream<Item = Result<bollard::container::LogOutput, DockerError>>
        + Send
        + 'static,
    file: PathBuf,
    logs: chainctl_core::profile::LogConfig,
) {
    rt.spawn(async move {
        let mut stream = Box::pin(stream);
        let mut sink = crate::logrelay::Sink::new(&file, logs.max_bytes, logs.keep);
        while let Some(Ok(chunk)) = stream.next().await {
            sink.write(&chunk.into_bytes());
        }
    });
}

/// The `local` driver's options for a volume backed by `dir` on the node.
pub(super) fn bind_options(dir: &Path) -> HashMap<String, String> {
    HashMap::from([
        ("type".to_string(), "none".to_string()),
        ("o".to_string(), "bind".to_string()),
        ("device".to_string(), dir.display().to_string()),
    ])
}

/// The named volume holding `svc`'s data dir, backed by that dir on this host: made when
/// missing, refused when it exists backed by something else.
pub(super) async fn ensure_bind_volume(
    docker: &Docker,
    profile: &str,
    svc: &ServicePlan,
    labels: HashMap<String, String>,
) -> Result<String, String> {
    let name = volume_name(profile, &svc.name);
    let device = svc.data_dir.display().to_string();
    match docker.inspect_volume(&name).await {
        Ok(v) => {
            let backed = v.options.get("device").map(String::as_str);
            if backed != Some(device.as_str()) {
                return Err(format!(
                        "volume `{name}` exists but is not backed by {device} (it holds {}): remove it (`docker volume rm {name}`) or give this profile another name",
                        backed.unwrap_or("a volume of its own")
                    ));
            }
        }
        Err(e) if not_found(&e) => {
            docker
                .create_volume(VolumeCreateRequest {
                    name: Some(name.clone()),
                    driver: Some("local".into()),
                    driver_opts: Some(bind_options(&svc.data_dir)),
                    labels: Some(labels),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create volume `{name}`: {e}"))?;
        }
        Err(e) => return Err(format!("cannot inspect volume `{name}`: {e}")),
    }
    Ok(name)
}

/// The service's program: the only child of the container's init (docker-init), which
/// forks it at once; the init itself if none shows up within 2 s. Status, CPU and memory
/// readings and `kill -9` are about this process; the init's pid is the handle's group.
fn program_pid(init: i32) -> i32 {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(p) = chainctl_core::procinfo::children_of(init).into_iter().min() {
            return p;
        }
        if t0.elapsed() > std::time::Duration::from_secs(2) || !chainctl_core::procinfo::alive(init)
        {
            return init;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
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
        self.adoptable = None;
        let (id, since) = self
            .rt
            .block_on(self.start_container(svc))
            .map_err(BackendError::Engine)?;
        let (pid, running, code) = self.pid_of(&id).map_err(BackendError::Engine)?;
        if !running || pid <= 0 {
            let exit = code.map(exit_of).unwrap_or(Exit::Unknown);
            return Err(BackendError::ExitedAtOnce {
                exit,
                service: svc.name.clone(),
                container: container_name(&self.profile, &svc.name),
            });
        }
        self.logs
            .insert(svc.name.clone(), (svc.log_file.clone(), svc.logs.clone()));
        let program = program_pid(pid);
        self.follow(program, &id, &svc.name, since);
        Ok(Handle {
            pid: program,
            pgid: pid,
            start_ticks: chainctl_core::procinfo::start_ticks(program).unwrap_or(0),
            relay_pid: None,
        })
    }

    fn signal(&mut self, h: &Handle, sig: StopSignal) -> Result<(), BackendError> {
        self.kill_with(h, sig.signal().as_str())
            .map_err(BackendError::Engine)
    }

    fn kill(&mut self, h: &Handle) {
        let _ = self.kill_with(h, "SIGKILL");
    }

    fn group_alive(&self, h: &Handle) -> bool {
        match self.running.get(&h.pid) {
            Some(r) => self.pid_of(&r.id).is_ok_and(|(_, running, _)| running),
            None => chainctl_core::procinfo::instance_alive(h.pid, h.pgid, h.start_ticks),
        }
    }

    fn adopt(&mut self, h: &Handle) -> bool {
        // The supervisor adopts its services one by one: read the running containers once.
        if self.adoptable.is_none() {
            let mut found = Vec::new();
            for (id, running) in self.list(false) {
                let Some(c) = running
                    .then(|| {
                        self.rt
                            .block_on(self.docker.inspect_container(&id, None))
                            .ok()
                    })
                    .flatten()
                else {
                    continue;
                };
                let init = c.state.as_ref().and_then(|s| s.pid).unwrap_or(0) as i32;
                let service = c
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get(LABEL_SERVICE).cloned());
                if let Some(service) = service {
                    found.push((init, id, service));
                }
            }
            self.adoptable = Some(found);
        }
        let Some((_, id, service)) = self
            .adoptable
            .as_ref()
            .and_then(|f| f.iter().find(|(init, ..)| *init == h.pgid))
            .cloned()
        else {
            return false;
        };
        if !chainctl_core::procinfo::same_process(h.pid, h.start_ticks) {
            return false;
        }
        self.follow(h.pid, &id, &service, now_secs());
        tracing::info!(service = %service, container = %id, pid = h.pid, "adopted its running container");
        true
    }

    fn poll(&mut self) -> Vec<BackendEvent> {
        let events: Vec<BackendEvent> = self
            .exits
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default();
        for BackendEvent::Exited { pid, .. } in &events {
            self.running.remove(pid);
        }
        events
    }

    fn cleanup(&mut self, _known: &[i32]) {
        // An init step's container left by a chainctl killed while it ran.
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_PROFILE}={}", self.profile),
                LABEL_INIT.to_string(),
            ],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let inits = self
            .rt
            .block_on(self.docker.list_containers(Some(opts)))
            .unwrap_or_default();
        for c in inits.into_iter().filter(|c| self.ours(c.labels.as_ref())) {
            let force = RemoveContainerOptionsBuilder::default().force(true).build();
            if let Some(id) = c.id {
                let _ = self
                    .rt
                    .block_on(self.docker.remove_container(&id, Some(force)));
            }
        }
        // Everything is stopped: remove the containers (data stays in the data dirs, the
        // volumes stay for the next `up`) and the network.
        for (id, running) in self.list(true) {
            if running {
                continue;
            }
            let opts = RemoveContainerOptionsBuilder::default().build();
            if let Err(e) = self
                .rt
                .block_on(self.docker.remove_container(&id, Some(opts)))
            {
                tracing::warn!(container = %id, "cannot remove a stopped container: {e}");
            }
        }
        let net = network_name(&self.profile);
        if self.list(true).is_empty() {
            let _ = self.rt.block_on(self.docker.remove_network(&net));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_map_to_signals_and_codes() {
        assert_eq!(exit_of(137), Exit::Signal(9));
        assert_eq!(exit_of(143), Exit::Signal(15));
        assert_eq!(exit_of(0), Exit::Code(0));
        assert_eq!(exit_of(78), Exit::Code(78));
        assert_eq!(exit_of(255), Exit::Code(255));
    }

    #[test]
    fn a_missing_image_names_the_command_that_provides_it() {
        let own = missing_image("chainctl:0.1.0", &["val-0".into(), "val-0-el-0".into()]);
        assert!(
            own.contains("chainctl image build --tag chainctl:0.1.0"),
            "{own}"
        );
        assert!(
            own.contains("val-0, val-0-el-0") && own.contains("never pulls"),
            "{own}"
        );
        let other = missing_image("ghcr.io/paradigmxyz/reth:v1.9.3", &["el".into()]);
        assert!(
            other.contains("docker pull ghcr.io/paradigmxyz/reth:v1.9.3"),
            "{other}"
        );
    }
}
