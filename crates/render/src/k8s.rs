//! Kubernetes manifests from the plan (`chainctl render k8s`), built from the typed API
//! structs of `k8s-openapi`, never from string templates.
//!
//! One pod per validator, run by a StatefulSet of one replica: the consensus node and
//! its execution clients as containers of that pod, so the Engine API never leaves it;
//! the clients are native sidecars, started (and ready) before the consensus node.
//! Every chainctl service gets a headless Service of its own name, which is how the
//! container plan already addresses it (`val-1:PORT`, `val-0-el-0:PORT`); those
//! Services publish not-ready addresses, since validators must find each other before
//! any of them is ready. Each container keeps its data on its own PersistentVolumeClaim.
//!
//! Nothing secret is in `manifests.yaml`: the network's public files (genesis, consensus
//! genesis, each validator's config) are a ConfigMap in `network.yaml`, and each pod's
//! secrets a Secret in `secrets.yaml` (written mode 0600, never to be committed). A
//! Secret volume's files are the group's (fsGroup) and group-readable, which chainctl
//! refuses for keys; so an init container (`chainctl k8s-init`, as the services' user)
//! copies each container's own secrets into a memory-backed volume of that container,
//! mode 0600, and no container mounts another's. It also makes each container's data
//! dir inside its claim, the services' user's own (mode 0700; a fresh volume's root is
//! root's, and a missing working dir the runtime would make root's too), and puts each
//! validator's config there.

use super::compose::abs as path;
use super::{File, RenderError};
use chainctl_core::network::{els_of, validator_name};
use chainctl_core::plan::{Plan, ServicePlan};
use chainctl_core::profile::{ExecutionKind, Profile};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, ExecAction, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The uid and gid every container runs as (as in compose projects).
const UID: i64 = super::compose::SERVICE_UID as i64;
/// Where the init container sees each container's Secret items, and its volume.
const INIT_SRC: &str = "/k8s-init/src";
const INIT_DST: &str = "/k8s-init/dst";
/// Where the init container sees a validator's config and its data volume.
const INIT_CONFIG: &str = "/k8s-init/config";
const INIT_DATA: &str = "/k8s-init/data";
/// The port the RPC Service listens on.
const RPC_PORT: i32 = 8545;
/// Readiness cadence: as the supervisor's readiness check and the compose healthcheck.
const PROBE_PERIOD_S: i32 = 2;
const PROBE_FAILURES: i32 = 3;
/// Liveness: a container that has not answered for a minute is restarted.
const LIVENESS_PERIOD_S: i32 = 10;
const LIVENESS_FAILURES: i32 = 6;
/// The key of a network file in the ConfigMap: its path under the network dir, `/` as
/// `.` (keys cannot hold `/`; the volume's items put each file back at its path).
fn configmap_key(rel: &str) -> String {
    rel.replace('/', ".")
}

/// A ConfigMap holds at most 1 MiB.
const CONFIGMAP_MAX: usize = 1024 * 1024;

/// What the manifests are rendered from.
pub struct Inputs<'a> {
    /// The validated profile (validators expanded).
    pub profile: &'a Profile,
    /// The plan built for a cluster ([`chainctl_core::plan::Target::Cluster`]) on the
    /// system layout: the paths and ports the containers see.
    pub plan: &'a Plan,
    /// The network directory's files (path under it → contents): genesis files, consensus
    /// genesis, the clients' peer configs (`p2p/…`).
    pub network: &'a BTreeMap<String, String>,
    /// Each validator's `config.json`, with the containers' paths.
    pub configs: &'a BTreeMap<String, String>,
    /// Every secret a container reads, by its path under the state dir's `secrets/`.
    pub secrets: &'a BTreeMap<PathBuf, Vec<u8>>,
}

/// What a container runs, which decides its requests, storage and probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Consensus,
    Execution(ExecutionKind),
    Other,
}

impl Role {
    /// CPU and memory requested, and the data volume's size. A devnet's figures for our
    /// own nodes (measured: a built-in EL holds 1M accounts in < 300 MB); the external
    /// clients' are their projects' stated minimums for a small chain, not mainnet.
    pub fn requests(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Role::Consensus => ("250m", "256Mi", "2Gi"),
            Role::Execution(ExecutionKind::Builtin) => ("500m", "512Mi", "20Gi"),
            Role::Execution(_) => ("1", "4Gi", "100Gi"),
            Role::Other => ("100m", "128Mi", "1Gi"),
        }
    }
}

/// One pod: a validator with its execution clients, or one other service.
struct Group<'a> {
    name: String,
    validator: bool,
    members: Vec<(Role, String, &'a ServicePlan)>,
}

fn err(m: impl Into<String>) -> RenderError {
    RenderError(m.into())
}

/// A DNS-1123 label (what Kubernetes requires of names of Services, pods, containers).
fn check_label(what: &str, name: &str) -> Result<(), RenderError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "{what} `{name}` cannot name a Kubernetes object: use at most 63 lowercase letters, digits \
             and `-`, starting with a letter and not ending with `-`"
        )))
    }
}

/// A container port's name: at most 15 characters, lowercase letters, digits and single
/// `-`, at least one letter (IANA service name, as Kubernetes checks it).
fn port_name(service: &str, prefix: &str, port: &str, udp: bool) -> Result<String, RenderError> {
    let base = port.to_ascii_lowercase().replace('_', "-");
    let mut name = if prefix.is_empty() {
        base
    } else {
        format!("{prefix}-{base}")
    };
    if udp {
        name.push_str("-u");
    }
    let ok = name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(name)
    } else {
        Err(err(format!(
            "services.{service}.ports.{port}: Kubernetes names a container port `{name}` here, which \
             is not a valid port name (at most 15 lowercase letters, digits and single `-`); rename the port"
        )))
    }
}

/// The pods: one per validator (its consensus node and execution clients), one per
/// other service.
fn groups<'a>(p: &Profile, plan: &'a Plan) -> Result<Vec<Group<'a>>, RenderError> {
    let svc = |n: &str| {
        plan.service(n)
            .ok_or_else(|| err(format!("the plan has no service `{n}`")))
    };
    let mut out = Vec::new();
    let mut taken = std::collections::BTreeSet::new();
    for i in 0..p.validators.count {
        let name = validator_name(i);
        let mut members = vec![(Role::Consensus, "cl".to_string(), svc(&name)?)];
        for (j, (el, kind)) in els_of(&p.validators, i).into_iter().enumerate() {
            members.push((Role::Execution(kind), format!("el{j}"), svc(&el)?));
        }
        taken.extend(members.iter().map(|(_, _, s)| s.name.clone()));
        out.push(Group {
            name,
            validator: true,
            members,
        });
    }
    for s in &plan.services {
        if !taken.contains(&s.name) {
            out.push(Group {
                name: s.name.clone(),
                validator: false,
                members: vec![(Role::Other, String::new(), s)],
            });
        }
    }
    Ok(out)
}

/// The labels every object of the profile carries, with its component when it has one.
fn base_labels(profile: &str, component: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "chainctl".to_string()),
        ("app.kubernetes.io/instance".into(), profile.into()),
        ("app.kubernetes.io/managed-by".into(), "chainctl".into()),
    ]);
    if let Some(c) = component {
        l.insert("app.kubernetes.io/component".into(), c.into());
    }
    l
}

fn labels(profile: &str, group: &Group) -> BTreeMap<String, String> {
    let mut l = base_labels(
        profile,
        Some(if group.validator {
            "validator"
        } else {
            "service"
        }),
    );
    l.insert("chainctl.io/pod".into(), group.name.clone());
    l
}

fn selector(profile: &str, group: &Group) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".into(), profile.into()),
        ("chainctl.io/pod".into(), group.name.clone()),
    ])
}

fn validators_selector(profile: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".into(), profile.into()),
        ("app.kubernetes.io/component".into(), "validator".into()),
    ])
}

fn meta(name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// The key a secret file has in its Secret (keys cannot hold `/`).
pub fn secret_key(rel: &Path) -> String {
    rel.display().to_string().replace('/', ".")
}

/// The name of a pod's Secret.
pub fn secret_name(profile: &str, group: &str) -> String {
    format!("{profile}-{group}-secrets")
}

/// The name of the network's ConfigMap.
pub fn network_name(profile: &str) -> String {
    format!("{profile}-network")
}

/// A service's secrets, relative to the state dir's `secrets/`.
fn secrets_of(plan: &Plan, svc: &ServicePlan) -> Result<Vec<PathBuf>, RenderError> {
    super::relative_secrets(
        plan,
        svc,
        "a cluster cannot mount it: drop `validators.keys` from the profile (chainctl then \
         generates the keys and `render k8s` puts them in secrets.yaml)",
    )
}

fn runs_chainctl(svc: &ServicePlan) -> bool {
    svc.argv.first().map(String::as_str) == Some("/chainctl")
}

/// The supervisor's readiness check: every ready port accepts connections (our image
/// checks them all with `chainctl healthcheck`; another image gets a TCP check of the
/// first, Kubernetes running it from outside the container).
fn probe(svc: &ServicePlan, period: i32, failures: i32) -> Option<Probe> {
    let first = *svc.ready_ports.first()?;
    let mut p = Probe {
        period_seconds: Some(period),
        timeout_seconds: Some(PROBE_PERIOD_S),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    if runs_chainctl(svc) {
        let mut cmd = vec!["/chainctl".to_string(), "healthcheck".into()];
        for port in &svc.ready_ports {
            cmd.push("--tcp".into());
            cmd.push(port.to_string());
        }
        p.exec = Some(ExecAction { command: Some(cmd) });
    } else {
        p.tcp_socket = Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(first)),
            ..Default::default()
        });
    }
    Some(p)
}

fn hardened() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, at: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: at.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_string())
}

/// Every object of `manifests.yaml`, in apply order: Services, StatefulSets, the
/// validators' PodDisruptionBudget.
pub struct Manifests {
    pub services: Vec<Service>,
    pub stateful_sets: Vec<StatefulSet>,
    pub budget: Option<PodDisruptionBudget>,
    pub network: ConfigMap,
    pub secrets: Vec<Secret>,
}

/// What keeps a profile from running on a cluster, found from the plan alone (before
/// anything is generated for it): names Kubernetes cannot hold, services without an
/// image, secrets that are files of this host.
pub fn preflight(p: &Profile, plan: &Plan) -> Result<(), RenderError> {
    check_label("profile name", &plan.profile)?;
    super::require_images(
        plan,
        "a cluster runs",
        "pushed where the cluster pulls from",
    )?;
    for g in groups(p, plan)? {
        for (_, prefix, svc) in &g.members {
            check_label("service name", &svc.name)?;
            for (pname, a) in &svc.ports {
                port_name(&svc.name, prefix, pname, false)?;
                if a.protocol.udp() {
                    port_name(&svc.name, prefix, pname, true)?;
                }
            }
            secrets_of(plan, svc)?;
        }
    }
    Ok(())
}

/// Builds every object.
pub fn build(input: &Inputs) -> Result<Manifests, RenderError> {
    let (p, plan) = (input.profile, input.plan);
    preflight(p, plan)?;
    let profile = plan.profile.as_str();
    let state = path(&plan.state_dir, "state dir")?;
    let network_dir = format!("{state}/network");
    let secrets_dir = format!("{state}/secrets");
    let reads_network = |name: &str| {
        p.validators.count > 0 && chainctl_core::network::is_generated_name(name, &p.validators)
    };
    let network_name = network_name(profile);
    let init_image = chainctl_core::network::chainctl_image();

    let mut services = Vec::new();
    let mut stateful_sets = Vec::new();
    let mut secret_objects = Vec::new();
    for g in groups(p, plan)? {
        let mut containers = Vec::new();
        let mut sidecars = Vec::new();
        let mut volumes = vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }];
        let mut claims = Vec::new();
        let mut init_mounts = Vec::new();
        let mut init_args = vec!["k8s-init".to_string()];
        let mut secret_data = BTreeMap::new();
        let mut grace = 0u64;
        let mut hashes = Vec::new();
        if g.validator || g.members.iter().any(|(_, _, s)| reads_network(&s.name)) {
            volumes.push(Volume {
                name: "network".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: network_name.clone(),
                    items: Some(
                        input
                            .network
                            .keys()
                            .map(|k| KeyToPath {
                                key: configmap_key(k),
                                path: k.clone(),
                                mode: None,
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        for (role, prefix, svc) in &g.members {
            check_label("service name", &svc.name)?;
            let (program, args) = svc
                .argv
                .split_first()
                .ok_or_else(|| err(format!("service {} has no command", svc.name)))?;
            let mut env = vec![EnvVar {
                name: "CHAINCTL_SERVICE".into(),
                value: Some(svc.name.clone()),
                ..Default::default()
            }];
            env.extend(svc.env.iter().map(|(k, v)| EnvVar {
                name: k.clone(),
                value: Some(v.clone()),
                ..Default::default()
            }));
            let mut ports = Vec::new();
            let mut service_ports = Vec::new();
            for (pname, a) in &svc.ports {
                for (on, udp) in [(a.protocol.tcp(), false), (a.protocol.udp(), true)] {
                    if !on {
                        continue;
                    }
                    let name = port_name(&svc.name, prefix, pname, udp)?;
                    let proto = if udp { "UDP" } else { "TCP" };
                    ports.push(ContainerPort {
                        name: Some(name.clone()),
                        container_port: i32::from(a.port),
                        protocol: Some(proto.into()),
                        ..Default::default()
                    });
                    service_ports.push(ServicePort {
                        name: Some(name),
                        port: i32::from(a.port),
                        target_port: Some(IntOrString::Int(i32::from(a.port))),
                        protocol: Some(proto.into()),
                        ..Default::default()
                    });
                }
            }
            // The claim is mounted at the data dir's parent, and the service makes its
            // data dir inside it: a fresh volume's root is root's (the fsGroup's only by
            // group), and chainctl's services make their data dirs 0700, which only the
            // owner may. Each container mounts its own claim there.
            let data_dir = path(&svc.data_dir, "data dir")?;
            let data_parent = svc
                .data_dir
                .parent()
                .filter(|p| p.parent().is_some())
                .map(|p| p.display().to_string())
                .ok_or_else(|| {
                    err(format!(
                        "service {}: its data dir {data_dir} has no parent directory to mount its volume on",
                        svc.name
                    ))
                })?;
            let data = format!("{}-data", svc.name);
            let mut mounts = vec![
                mount(&data, &data_parent, false),
                mount("tmp", "/tmp", false),
            ];
            let (cpu, memory, storage) = role.requests();
            claims.push(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(data.clone()),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([("storage".into(), quantity(storage))])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            if reads_network(&svc.name) {
                mounts.push(mount("network", &network_dir, true));
            }
            // The init container makes the data dir, the services' user's own (0700):
            // left to the container runtime (it is the working dir), it would be root's.
            let data_at = format!("{INIT_DATA}/{}", svc.name);
            let leaf = svc
                .data_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            init_mounts.push(mount(&data, &data_at, false));
            init_args.push("--mkdir".into());
            init_args.push(format!("{data_at}/{leaf}"));
            if *role == Role::Consensus {
                if !input.configs.contains_key(&svc.name) {
                    return Err(err(format!(
                        "no config.json was rendered for validator {}",
                        svc.name
                    )));
                }
                // Copied into the data dir by the init container (which makes the
                // data dir the validator's own, 0700).
                volumes.push(Volume {
                    name: "config".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: network_name.clone(),
                        items: Some(vec![KeyToPath {
                            key: format!("{}.config.json", svc.name),
                            path: "config.json".into(),
                            mode: None,
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                let config_src = format!("{INIT_CONFIG}/{}", svc.name);
                init_mounts.push(mount("config", &config_src, true));
                init_args.push("--copy".into());
                init_args.push(format!("{config_src}:{data_at}/{leaf}"));
            }
            let own = secrets_of(plan, svc)?;
            if !own.is_empty() {
                let src = format!("{}-src", svc.name);
                let dst = format!("{}-secrets", svc.name);
                let mut items = Vec::new();
                for rel in &own {
                    let bytes = input.secrets.get(rel).ok_or_else(|| {
                        err(format!(
                            "the secret {} of service {} was not made",
                            rel.display(),
                            svc.name
                        ))
                    })?;
                    let key = secret_key(rel);
                    secret_data.insert(key.clone(), ByteString(bytes.clone()));
                    items.push(KeyToPath {
                        key,
                        path: rel.display().to_string(),
                        mode: None,
                    });
                }
                volumes.push(Volume {
                    name: src.clone(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret_name(profile, &g.name)),
                        items: Some(items),
                        default_mode: Some(0o440),
                        optional: Some(false),
                    }),
                    ..Default::default()
                });
                volumes.push(Volume {
                    name: dst.clone(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: Some("Memory".into()),
                        size_limit: Some(quantity("1Mi")),
                    }),
                    ..Default::default()
                });
                init_mounts.push(mount(&src, &format!("{INIT_SRC}/{}", svc.name), true));
                init_mounts.push(mount(&dst, &format!("{INIT_DST}/{}", svc.name), false));
                init_args.push("--copy".into());
                init_args.push(format!("{INIT_SRC}/{0}:{INIT_DST}/{0}", svc.name));
                mounts.push(mount(&dst, &secrets_dir, true));
            }
            grace = grace.max(svc.stop_grace.get().as_secs());
            hashes.push(format!("{}={}", svc.name, svc.spec_hash));
            let startup = svc.startup_grace.get().as_secs() as i32;
            // A validator's execution clients start first, as native sidecars (init
            // containers that keep running): the kubelet starts the consensus node once
            // their startup probes pass, as `up` and compose start it once its clients
            // are ready, and stops it before them.
            let sidecar = g.validator && matches!(role, Role::Execution(_));
            // Its init step (`geth init …`) runs to completion just before it starts, in
            // its image with its volumes.
            let workdir = path(&svc.workdir, &format!("services.{}.workdir", svc.name))?;
            // The same image, volumes and working dir as the client; the init's command.
            let run = |name: String, (program, args): (&String, &[String])| Container {
                name,
                image: svc.image.clone(),
                command: Some(vec![program.clone()]),
                args: Some(args.to_vec()),
                working_dir: Some(workdir.clone()),
                volume_mounts: Some(mounts.clone()),
                security_context: Some(hardened()),
                ..Default::default()
            };
            if let Some(init) = svc.init.split_first() {
                sidecars.push(run(format!("{}-init", svc.name), init));
            }
            let into = if sidecar {
                &mut sidecars
            } else {
                &mut containers
            };
            into.push(Container {
                restart_policy: sidecar.then(|| "Always".to_string()),
                env: Some(env),
                ports: (!ports.is_empty()).then_some(ports),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".into(), quantity(cpu)),
                        ("memory".into(), quantity(memory)),
                    ])),
                    ..Default::default()
                }),
                startup_probe: probe(
                    svc,
                    PROBE_PERIOD_S,
                    (startup / PROBE_PERIOD_S).max(PROBE_FAILURES) + 1,
                ),
                readiness_probe: probe(svc, PROBE_PERIOD_S, PROBE_FAILURES),
                liveness_probe: probe(svc, LIVENESS_PERIOD_S, LIVENESS_FAILURES),
                ..run(svc.name.clone(), (program, args))
            });
            services.push(Service {
                metadata: meta(&svc.name, labels(profile, &g)),
                spec: Some(ServiceSpec {
                    cluster_ip: Some("None".into()),
                    selector: Some(selector(profile, &g)),
                    // Validators find each other before any of them is ready.
                    publish_not_ready_addresses: Some(true),
                    ports: (!service_ports.is_empty()).then_some(service_ports),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let mut init_containers = Vec::new();
        if !init_mounts.is_empty() {
            init_containers.push(Container {
                name: "k8s-init".into(),
                image: Some(init_image.clone()),
                command: Some(vec!["/chainctl".into()]),
                args: Some(init_args),
                volume_mounts: Some(init_mounts),
                security_context: Some(hardened()),
                ..Default::default()
            });
        }
        init_containers.extend(sidecars);
        let init_containers = (!init_containers.is_empty()).then_some(init_containers);
        if !secret_data.is_empty() {
            secret_objects.push(Secret {
                metadata: meta(&secret_name(profile, &g.name), labels(profile, &g)),
                type_: Some("Opaque".into()),
                data: Some(secret_data),
                ..Default::default()
            });
        }
        let mut template_meta = meta(&g.name, labels(profile, &g));
        template_meta.name = None;
        // A changed service spec rolls the pod, as `up` restarts a changed service.
        template_meta.annotations = Some(BTreeMap::from([(
            "chainctl.io/spec-hash".into(),
            short_hash(&hashes.join(",")),
        )]));
        stateful_sets.push(StatefulSet {
            metadata: meta(&g.name, labels(profile, &g)),
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                service_name: Some(g.name.clone()),
                selector: LabelSelector {
                    match_labels: Some(selector(profile, &g)),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(template_meta),
                    spec: Some(PodSpec {
                        init_containers,
                        containers,
                        volumes: Some(volumes),
                        // The longest stop grace of its containers: a client's database
                        // closes cleanly before the kubelet kills it.
                        termination_grace_period_seconds: Some(grace.max(1) as i64),
                        automount_service_account_token: Some(false),
                        enable_service_links: Some(false),
                        security_context: Some(PodSecurityContext {
                            run_as_user: Some(UID),
                            run_as_group: Some(UID),
                            fs_group: Some(UID),
                            run_as_non_root: Some(true),
                            seccomp_profile: Some(SeccompProfile {
                                type_: "RuntimeDefault".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                },
                volume_claim_templates: Some(claims),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    // Reads through one Service: every validator pod's first execution client.
    let v = &p.validators;
    if v.count > 0 {
        let first_el = chainctl_core::network::el_name(0, 0);
        if plan
            .service(&first_el)
            .is_some_and(|s| s.ports.contains_key("http"))
        {
            services.push(Service {
                metadata: meta(&format!("{profile}-rpc"), base_labels(profile, Some("rpc"))),
                spec: Some(ServiceSpec {
                    selector: Some(validators_selector(profile)),
                    ports: Some(vec![ServicePort {
                        name: Some("rpc".into()),
                        port: RPC_PORT,
                        target_port: Some(IntOrString::String("el0-http".into())),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    // BFT stays live with more than two thirds: voluntary evictions (drains, upgrades)
    // keep at least 2f+1 of the n = 3f+1 validators running.
    let budget = (v.count > 0).then(|| {
        let f = (v.count - 1) / 3;
        PodDisruptionBudget {
            metadata: meta(&format!("{profile}-validators"), base_labels(profile, None)),
            spec: Some(PodDisruptionBudgetSpec {
                min_available: Some(IntOrString::Int((v.count - f) as i32)),
                selector: Some(LabelSelector {
                    match_labels: Some(validators_selector(profile)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    });

    let mut data: BTreeMap<String, String> = input
        .network
        .iter()
        .map(|(k, v)| (configmap_key(k), v.clone()))
        .collect();
    for (name, text) in input.configs {
        data.insert(format!("{name}.config.json"), text.clone());
    }
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > CONFIGMAP_MAX {
        return Err(err(format!(
            "the network's files come to {size} bytes, over a ConfigMap's 1 MiB: fewer \
             `chain.dev_accounts` make the genesis smaller"
        )));
    }
    let network = ConfigMap {
        metadata: meta(&network_name, base_labels(profile, None)),
        data: Some(data),
        ..Default::default()
    };
    Ok(Manifests {
        services,
        stateful_sets,
        budget,
        network,
        secrets: secret_objects,
    })
}

fn short_hash(s: &str) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(&Sha256::digest(s.as_bytes())[..8])
}

fn docs<T: serde::Serialize>(out: &mut String, objects: &[T]) -> Result<(), RenderError> {
    for o in objects {
        out.push_str("---\n");
        out.push_str(
            &serde_yaml::to_string(o).map_err(|e| err(format!("cannot write a manifest: {e}")))?,
        );
    }
    Ok(())
}

/// Renders `manifests.yaml` (Services, StatefulSets, PodDisruptionBudget: no secret, the
/// same for the same profile and ports), `network.yaml` (the network's ConfigMap) and
/// `secrets.yaml` (each pod's Secret: write it mode 0600, never commit it).
pub fn render(input: &Inputs) -> Result<Vec<File>, RenderError> {
    let m = build(input)?;
    let version = env!("CARGO_PKG_VERSION");
    let profile = &input.plan.profile;
    let mut manifests = format!(
        "# Rendered by chainctl {version} from profile `{profile}`. Do not edit: change the profile,\n\
         # then run `chainctl render k8s` again. Apply network.yaml and secrets.yaml first:\n\
         #   kubectl apply -n NAMESPACE -f network.yaml -f secrets.yaml -f manifests.yaml\n\
         # Images: {} and the profile's, pushed where the cluster pulls from.\n",
        chainctl_core::network::chainctl_image()
    );
    docs(&mut manifests, &m.services)?;
    docs(&mut manifests, &m.stateful_sets)?;
    docs(&mut manifests, m.budget.as_slice())?;
    let mut network = format!(
        "# Rendered by chainctl {version}: the network's public files (genesis, consensus genesis,\n\
         # validator configs) from the state dir `render k8s` used. Not secret.\n"
    );
    docs(&mut network, std::slice::from_ref(&m.network))?;
    let mut secrets = format!(
        "# Rendered by chainctl {version}: SECRET. Engine API secrets, validator keys and control\n\
         # tokens of profile `{profile}`, one Secret per pod. Do not commit or share this file;\n\
         # apply it, then delete it or keep it where only you can read it.\n"
    );
    docs(&mut secrets, &m.secrets)?;
    Ok(vec![
        File {
            name: "manifests.yaml".into(),
            contents: manifests,
        },
        File {
            name: "network.yaml".into(),
            contents: network,
        },
        File {
            name: SECRETS_FILE.into(),
            contents: secrets,
        },
    ])
}

/// The file of rendered Secrets (written mode 0600).
pub const SECRETS_FILE: &str = "secrets.yaml";

/// `chainctl k8s-init --copy SRC:DST`: copies the files under SRC (a Secret or ConfigMap
/// volume: its `..data` links are followed, its `..`-named entries skipped) to DST, files
/// 0600 and the directories it makes 0700, of the user it runs as. DST itself is made
/// when missing; one that exists (a volume's root, the kubelet's) is left as it is.
/// Returns how many files.
pub fn copy_private(src: &Path, dst: &Path) -> anyhow::Result<usize> {
    use anyhow::Context;
    if !dst.exists() {
        chainctl_common::fs::private_dir(dst)
            .with_context(|| format!("cannot create {}", dst.display()))?;
    }
    let mut n = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let from = src.join(&rel);
        let entries =
            std::fs::read_dir(&from).with_context(|| format!("cannot read {}", from.display()))?;
        for e in entries {
            let e = e?;
            let name = e.file_name();
            if name.to_string_lossy().starts_with("..") {
                continue;
            }
            let r = rel.join(&name);
            let meta = std::fs::metadata(e.path())
                .with_context(|| format!("cannot read {}", e.path().display()))?;
            let to = dst.join(&r);
            if meta.is_dir() {
                chainctl_common::fs::private_dir(&to)
                    .with_context(|| format!("cannot create {}", to.display()))?;
                stack.push(r);
            } else {
                let bytes = std::fs::read(e.path())
                    .with_context(|| format!("cannot read {}", e.path().display()))?;
                if let Some(d) = to.parent().filter(|d| *d != dst) {
                    chainctl_common::fs::private_dir(d)
                        .with_context(|| format!("cannot create {}", d.display()))?;
                }
                chainctl_common::fs::write_atomic(&to, &bytes)
                    .with_context(|| format!("cannot write {}", to.display()))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_follow_the_kubernetes_rules() {
        assert_eq!(
            port_name("v", "el0", "engine", false).unwrap(),
            "el0-engine"
        );
        assert_eq!(port_name("v", "cl", "p2p", true).unwrap(), "cl-p2p-u");
        assert_eq!(
            port_name("s", "", "metrics_port", false).unwrap(),
            "metrics-port"
        );
        let e = port_name("s", "el1", "very-long-name", false).unwrap_err();
        assert!(e.0.contains("services.s.ports.very-long-name"), "{e}");
        assert!(port_name("s", "", "8080", false).is_err(), "no letter");
    }

    #[test]
    fn names_must_be_dns_labels() {
        assert!(check_label("profile name", "devnet-7").is_ok());
        for bad in ["Devnet", "7val", "a_b", "a-", ""] {
            let e = check_label("profile name", bad).unwrap_err();
            assert!(e.0.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn volumes_are_copied_private_skipping_the_kubelets_links() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        // A Secret volume: files behind `..data`, reached through links.
        let (src, dst) = (d.path().join("src"), d.path().join("dst"));
        let data = src.join("..2026_11_28");
        std::fs::create_dir_all(data.join("jwt")).unwrap();
        std::fs::write(data.join("jwt/a--b.hex"), "00ff").unwrap();
        std::fs::set_permissions(
            data.join("jwt/a--b.hex"),
            std::fs::Permissions::from_mode(0o440),
        )
        .unwrap();
        symlink("..2026_11_28", src.join("..data")).unwrap();
        symlink("..data/jwt", src.join("jwt")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        assert_eq!(copy_private(&src, &dst).unwrap(), 1);
        let f = dst.join("jwt/a--b.hex");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "00ff");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f), 0o600);
        assert_eq!(mode(&dst.join("jwt")), 0o700);
        assert!(!dst.join("..data").exists());
        // A missing source names itself.
        let e = copy_private(&d.path().join("nope"), &dst).unwrap_err();
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
    }
}
