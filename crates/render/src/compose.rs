//! A compose project from the plan: `compose.yaml` (one container per service on one
//! user-defined network, named volumes for data, ports published on the profile's listen
//! address only, hardened containers, healthchecks and start order), `.env`, and the
//! profile and port allocation the project's one-shot `chainctl_init` service reads.
//!
//! Nothing secret is rendered. `chainctl_init` runs `chainctl compose-init` (see
//! [`crate::compose_init`]) in the chainctl image before any other service starts: it
//! makes the Engine API secrets, and for validators the genesis, keys and each
//! validator's config, inside Docker volumes on the host that runs the project, and
//! copies to each service's own secrets volume only the secrets that service reads. So
//! a rendered directory can be committed or copied to a server, and every service sees
//! its own secrets and no other's.

use super::yaml::{emit, lit, Node};
use super::{File, RenderError};
use chainctl_core::plan::{Plan, ServicePlan};
use chainctl_core::ports::Allocation;
use chainctl_core::profile::{Profile, Protocol};
use chainctl_core::state::PortsFile;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The one-shot service that prepares the volumes. Service names in a profile cannot
/// hold `_`, so it never collides with one.
pub const INIT_SERVICE: &str = "chainctl_init";
/// The uid every service runs as: no user of the host or of the images has it, so the
/// files in the project's volumes belong to the services and to nobody else.
pub const SERVICE_UID: u32 = 10001;
/// The gid every service runs as (see [`SERVICE_UID`]).
pub const SERVICE_GID: u32 = 10001;
/// Where `chainctl_init` mounts each service's secrets volume: `/init/SERVICE`.
pub const INIT_DISTRIBUTE_DIR: &str = "/init";
/// Where `chainctl_init` finds the rendered profile and port allocation.
pub const INIT_INPUT_DIR: &str = "/etc/chainctl";
/// The rendered copy of the profile, next to compose.yaml.
pub const PROFILE_FILE: &str = "profile.yaml";
/// The rendered port allocation, next to compose.yaml.
pub const PORTS_FILE: &str = "ports.json";
/// Volume holding the master copy of every secret (only `chainctl_init` mounts it). Its
/// `_` keeps it apart from the `SERVICE-data` / `SERVICE-secrets` volumes.
const MASTER_SECRETS_VOLUME: &str = "chainctl_secrets";
/// Volume holding the network's public files (genesis, consensus genesis).
const NETWORK_VOLUME: &str = "chainctl_network";
/// Healthcheck cadence: a probe every 2 s, unhealthy after 3 failures (the supervisor's
/// own defaults for readiness).
const HEALTH_INTERVAL: &str = "2s";
const HEALTH_RETRIES: u64 = 3;

/// What a compose project is rendered from.
pub struct Inputs<'a> {
    /// The validated profile (validators expanded).
    pub profile: &'a Profile,
    /// The plan built for containers ([`chainctl_core::plan::Target::Container`]) on the system
    /// layout.
    pub plan: &'a Plan,
    /// The profile's text as the user wrote it (copied for `chainctl_init`).
    pub profile_text: &'a str,
    /// Where the profile came from (named in the copy's header).
    pub profile_label: &'a str,
    /// The port allocation the plan used.
    pub ports: &'a Allocation,
}

/// `p` as text, refused unless absolute (`what` names it in the error).
pub(super) fn abs(p: &Path, what: &str) -> Result<String, RenderError> {
    if !p.is_absolute() {
        return Err(RenderError(format!(
            "{what} `{}` must be an absolute path inside the container",
            p.display()
        )));
    }
    Ok(p.display().to_string())
}

/// Why a host key file cannot go into a compose project, and what to do.
const HOST_SECRET_FIX: &str = "a compose project makes every secret inside its own volumes: drop \
     `validators.keys` from the profile (chainctl_init then generates the keys), or run the profile \
     here with `runtime: docker`";

/// A service's secrets relative to the state dir's `secrets/`, which is where its own
/// secrets volume is mounted.
pub fn secrets_of(plan: &Plan, svc: &ServicePlan) -> Result<Vec<PathBuf>, RenderError> {
    super::relative_secrets(plan, svc, HOST_SECRET_FIX)
}

/// What ties compose.yaml to the profile.yaml and ports.json rendered with it: a hash
/// of both, which `chainctl_init` checks before it plans anything from them.
pub fn digest(profile_yaml: &str, ports_json: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for part in [profile_yaml, ports_json] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// Whether the service runs our own binary (and so can run `chainctl healthcheck`).
fn runs_chainctl(svc: &ServicePlan) -> bool {
    svc.argv.first().map(String::as_str) == Some("/chainctl")
}

/// The healthcheck of a service on the chainctl image: its ready ports accept
/// connections. Other images get none: compose cannot assume a probe tool inside them.
fn healthcheck(svc: &ServicePlan) -> Option<Node> {
    if !runs_chainctl(svc) || svc.ready_ports.is_empty() {
        return None;
    }
    let mut test = vec!["CMD".to_string(), "/chainctl".into(), "healthcheck".into()];
    for p in &svc.ready_ports {
        test.push("--tcp".into());
        test.push(p.to_string());
    }
    Some(Node::map([
        ("test", Node::strs(test)),
        ("interval", lit(HEALTH_INTERVAL)),
        ("timeout", lit(HEALTH_INTERVAL)),
        ("retries", Node::Num(HEALTH_RETRIES)),
        (
            "start_period",
            lit(format!("{}s", svc.startup_grace.get().as_secs().max(1))),
        ),
    ]))
}

/// Hardening every container gets: no capabilities, no privilege gain, read-only root
/// with a private /tmp, an init as PID 1 that reaps and forwards signals.
fn hardening(m: &mut Vec<(String, Node)>) {
    m.push(("init".into(), Node::Bool(true)));
    m.push(("read_only".into(), Node::Bool(true)));
    m.push(("tmpfs".into(), Node::strs(["/tmp"])));
    m.push(("cap_drop".into(), Node::strs(["ALL"])));
    m.push((
        "security_opt".into(),
        Node::strs(["no-new-privileges:true"]),
    ));
}

fn labels(plan: &Plan, service: &str, spec_hash: &str) -> Node {
    Node::map([
        ("io.chainctl.profile", lit(&plan.profile)),
        ("io.chainctl.service", lit(service)),
        ("io.chainctl.spec-hash", lit(spec_hash)),
    ])
}

/// Renders `compose.yaml`, `.env`, `profile.yaml` and `ports.json`.
pub fn render(input: &Inputs) -> Result<Vec<File>, RenderError> {
    let (profile, plan) = (input.profile, input.plan);
    super::require_images(
        plan,
        "compose runs",
        "chainctl never pulls: load or build it first",
    )?;
    let state = abs(&plan.state_dir, "state dir")?;
    let network = format!("chainctl-{}", plan.profile);
    let publish = match profile.listen.rpc {
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    };
    let v = &profile.validators;
    let reads_network =
        |name: &str| v.count > 0 && chainctl_core::network::is_generated_name(name, v);
    // chainctl_init must plan exactly as this chainctl did: it runs this version's image.
    let init_image = chainctl_core::network::chainctl_image();
    let owner = format!("{SERVICE_UID}:{SERVICE_GID}");
    let completed = || Node::map([("condition", lit("service_completed_successfully"))]);

    let mut services = Vec::new();
    let mut volumes: Vec<(String, Node)> = vec![(MASTER_SECRETS_VOLUME.into(), Node::Map(vec![]))];
    if v.count > 0 {
        volumes.push((NETWORK_VOLUME.into(), Node::Map(vec![])));
    }
    let mut init_mounts = vec![
        lit(format!(
            "./{PROFILE_FILE}:{INIT_INPUT_DIR}/{PROFILE_FILE}:ro"
        )),
        lit(format!("./{PORTS_FILE}:{INIT_INPUT_DIR}/{PORTS_FILE}:ro")),
        lit(format!("{MASTER_SECRETS_VOLUME}:{state}/secrets")),
    ];
    if v.count > 0 {
        init_mounts.push(lit(format!("{NETWORK_VOLUME}:{state}/network")));
    }
    for svc in &plan.services {
        let (program, args) = svc
            .argv
            .split_first()
            .ok_or_else(|| RenderError(format!("service {} has no command", svc.name)))?;
        let mut m: Vec<(String, Node)> = vec![
            (
                "image".into(),
                lit(svc.image.as_deref().unwrap_or_default()),
            ),
            // The program replaces the image's entrypoint, so an image such as reth's,
            // whose entrypoint is the client, does not run it twice.
            ("entrypoint".into(), Node::strs([program])),
            ("command".into(), Node::strs(args)),
            (
                "working_dir".into(),
                lit(abs(
                    &svc.workdir,
                    &format!("services.{}.workdir", svc.name),
                )?),
            ),
            ("user".into(), lit(&owner)),
        ];
        let mut env = vec![("CHAINCTL_SERVICE".to_string(), lit(&svc.name))];
        env.extend(svc.env.iter().map(|(k, v)| (k.clone(), lit(v))));
        m.push(("environment".into(), Node::Map(env)));
        let mut ports = Vec::new();
        for a in svc.ports.values() {
            for (on, proto) in [(a.protocol.tcp(), "tcp"), (a.protocol.udp(), "udp")] {
                if on {
                    ports.push(lit(format!("{publish}:{0}:{0}/{proto}", a.port)));
                }
            }
        }
        if !ports.is_empty() {
            m.push(("ports".into(), Node::List(ports)));
        }
        let data_dir = abs(&svc.data_dir, "data dir")?;
        let data = format!("{}-data", svc.name);
        let mut mounts = vec![lit(format!("{data}:{data_dir}"))];
        init_mounts.push(lit(format!("{data}:{data_dir}")));
        volumes.push((data, Node::Map(vec![])));
        if !secrets_of(plan, svc)?.is_empty() {
            let own = format!("{}-secrets", svc.name);
            mounts.push(lit(format!("{own}:{state}/secrets:ro")));
            init_mounts.push(lit(format!("{own}:{INIT_DISTRIBUTE_DIR}/{}", svc.name)));
            volumes.push((own, Node::Map(vec![])));
        }
        if reads_network(&svc.name) {
            mounts.push(lit(format!("{NETWORK_VOLUME}:{state}/network:ro")));
        }
        let mut deps = vec![(INIT_SERVICE.to_string(), completed())];
        // The init step (`geth init …`): once per start of the project, in the client's
        // image with its volumes, no network, before the client.
        if let Some((program, args)) = svc.init.split_first() {
            let name = format!("{}_init", svc.name);
            let mut i = vec![
                (
                    "image".to_string(),
                    lit(svc.image.as_deref().unwrap_or_default()),
                ),
                ("entrypoint".into(), Node::strs([program])),
                ("command".into(), Node::strs(args)),
                ("user".into(), lit(&owner)),
                ("network_mode".into(), lit("none")),
                ("volumes".into(), Node::List(mounts.clone())),
                (
                    "depends_on".into(),
                    Node::Map(vec![(INIT_SERVICE.to_string(), completed())]),
                ),
                ("restart".into(), lit("no")),
            ];
            hardening(&mut i);
            i.push(("labels".into(), labels(plan, &name, &svc.spec_hash)));
            services.push((name.clone(), Node::Map(i)));
            deps.push((name, completed()));
        }
        m.push(("volumes".into(), Node::List(mounts)));
        // Its fixed address: the other clients' static peers name it.
        let attach = match svc.address {
            Some(a) => Node::Map(vec![(
                network.clone(),
                Node::map([("ipv4_address", lit(a.to_string()))]),
            )]),
            None => Node::strs([&network]),
        };
        m.push(("networks".into(), attach));
        for d in &svc.depends_on {
            let healthy = plan.service(d).and_then(healthcheck).is_some();
            let cond = if healthy {
                "service_healthy"
            } else {
                "service_started"
            };
            deps.push((d.clone(), Node::map([("condition", lit(cond))])));
        }
        m.push(("depends_on".into(), Node::Map(deps)));
        if let Some(h) = healthcheck(svc) {
            m.push(("healthcheck".into(), h));
        }
        m.push((
            "restart".into(),
            lit(svc.restart.policy.service_manager_word()),
        ));
        m.push(("stop_signal".into(), lit(svc.stop_signal.signal().as_str())));
        m.push((
            "stop_grace_period".into(),
            lit(format!("{}s", svc.stop_grace.get().as_secs().max(1))),
        ));
        hardening(&mut m);
        // Docker keeps at most the plan's rotation of each service's output.
        m.push((
            "logging".into(),
            Node::map([
                ("driver", lit("json-file")),
                (
                    "options",
                    Node::map([
                        ("max-size", lit(svc.logs.max_bytes.max(1).to_string())),
                        ("max-file", lit((svc.logs.keep + 1).to_string())),
                    ]),
                ),
            ]),
        ));
        m.push(("labels".into(), labels(plan, &svc.name, &svc.spec_hash)));
        services.push((svc.name.clone(), Node::Map(m)));
    }

    let profile_copy = format!(
        "# Copied by `chainctl render compose` from {}: {INIT_SERVICE} plans the network\n# from it. Edit the original and render again.\n{}",
        input.profile_label.replace(['\n', '\r'], " "),
        input.profile_text
    );
    let ports = serde_json::to_string_pretty(&PortsFile {
        services: input.ports.clone(),
    })
    .map_err(|e| RenderError(format!("cannot write the port allocation: {e}")))?
        + "\n";
    let mut init = vec![
        ("image".to_string(), lit(&init_image)),
        ("entrypoint".into(), Node::strs(["/chainctl"])),
        (
            "command".into(),
            Node::strs([
                "-p".to_string(),
                format!("{INIT_INPUT_DIR}/{PROFILE_FILE}"),
                "--state-dir".into(),
                state.clone(),
                "compose-init".into(),
                "--ports".into(),
                format!("{INIT_INPUT_DIR}/{PORTS_FILE}"),
                "--owner".into(),
                owner.clone(),
                "--distribute".into(),
                INIT_DISTRIBUTE_DIR.into(),
                "--digest".into(),
                digest(&profile_copy, &ports),
            ]),
        ),
        // Root, to hand the volumes to the services' user; with only the capabilities
        // that takes, and no network at all.
        ("user".into(), lit("0:0")),
        ("network_mode".into(), lit("none")),
        ("volumes".into(), Node::List(init_mounts)),
        ("restart".into(), lit("no")),
    ];
    hardening(&mut init);
    init.push((
        "cap_add".into(),
        Node::strs(["CHOWN", "DAC_OVERRIDE", "FOWNER"]),
    ));
    init.push(("labels".into(), labels(plan, INIT_SERVICE, "-")));
    services.insert(0, (INIT_SERVICE.to_string(), Node::Map(init)));

    let root = Node::Map(vec![
        ("version".into(), Node::Str("3.8".into())),
        ("services".into(), Node::Map(services)),
        (
            "networks".into(),
            Node::Map(vec![(network.clone(), {
                let mut n = vec![("name".to_string(), lit(&network))];
                if let Some(subnet) = &plan.subnet {
                    // Fixed addresses in the lower half, compose's own picks in the upper.
                    let range = chainctl_core::subnet::Subnet::parse(subnet)
                        .map_err(|e| RenderError(format!("docker.subnet: {e}")))?
                        .dynamic_range();
                    n.push((
                        "ipam".into(),
                        Node::map([(
                            "config",
                            Node::List(vec![Node::map([
                                ("subnet", lit(subnet)),
                                ("ip_range", lit(range)),
                            ])]),
                        )]),
                    ));
                }
                Node::Map(n)
            })]),
        ),
        ("volumes".into(), Node::Map(volumes)),
    ]);
    let version = env!("CARGO_PKG_VERSION");
    let mut body = format!(
        "# Rendered by chainctl {version} from profile `{}`. Do not edit: change the profile,\n\
         # then run `chainctl render compose` again. Start with `docker-compose up -d` here\n\
         # (image {init_image}: `chainctl image build`; chainctl never pulls).\n\
         # {INIT_SERVICE} makes the secrets{} in volumes first; each service mounts only its own.\n\
         # Ports are the plan's, published on {publish} only.\n",
        plan.profile,
        if v.count > 0 {
            ", genesis, keys and validator configs"
        } else {
            ""
        },
    );
    if plan
        .services
        .iter()
        .flat_map(|s| s.ports.values())
        .any(|a| a.protocol == Protocol::Both)
    {
        body.push_str("# P2P ports are published for TCP and UDP on the same number.\n");
    }
    emit(&mut body, &root, 0);
    Ok(vec![
        File {
            name: "compose.yaml".into(),
            contents: body,
        },
        File {
            name: ".env".into(),
            contents: format!(
                "# Rendered by chainctl {version}: values compose.yaml reads.\nCOMPOSE_PROJECT_NAME=chainctl-{}\n",
                plan.profile
            ),
        },
        File {
            name: PROFILE_FILE.into(),
            contents: profile_copy,
        },
        File {
            name: PORTS_FILE.into(),
            contents: ports,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chainctl_core::layout::Layout;
    use chainctl_core::loader::load;
    use chainctl_core::profile::Source;

    /// The project of a profile, rendered as `render compose` does on a fresh state dir.
    fn project(yaml: &str) -> Result<(Vec<File>, serde_yaml::Value), RenderError> {
        let loaded = load(Source {
            text: yaml.into(),
            label: "test.yaml".into(),
            path: None,
        })
        .unwrap();
        let alloc = chainctl_core::ports::allocate_from(
            &loaded,
            &Allocation::default(),
            &[],
            &chainctl_core::ports::NoProbe,
        )
        .unwrap();
        let plan = chainctl_core::plan::build_for(
            &loaded.profile,
            &Layout::new("/var/lib/chainctl/t"),
            &alloc,
            Path::new("/"),
            chainctl_core::plan::Target::Container,
        )
        .unwrap();
        let files = render(&Inputs {
            profile: &loaded.profile,
            plan: &plan,
            profile_text: yaml,
            profile_label: "test.yaml",
            ports: &alloc,
        })?;
        let doc = serde_yaml::from_str(&files[0].contents).unwrap();
        Ok((files, doc))
    }

    const DEVNET: &str = "name: t\nvalidators:\n  count: 4\n  execution: [builtin, builtin]\n";

    fn mounts(doc: &serde_yaml::Value, svc: &str) -> Vec<String> {
        doc["services"][svc]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// Geth from its own image: its init step is a one-shot service of that image, with
    /// the client's volumes and no network, which the client waits for; the client runs
    /// its own program (no chainctl in its image); the external clients have fixed
    /// addresses in the lower half of the profile's subnet, which the network declares
    /// with the upper half for compose's own picks.
    #[test]
    fn an_external_client_runs_its_own_command_after_its_init_step_at_a_fixed_address() {
        let (_, doc) = project(
            "name: t\ndocker: {subnet: 10.213.8.0/24}\nvalidators:\n  count: 1\n  execution: [geth, reth]\n  clients:\n    geth: {image: 'geth:local'}\n    reth: {image: 'reth:local'}\n",
        )
        .unwrap();
        let svc = |n: &str| doc["services"][n].clone();
        let strs = |v: &serde_yaml::Value| -> Vec<String> {
            v.as_sequence()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let init = svc("val-0-el-0_init");
        assert_eq!(init["image"].as_str(), Some("geth:local"));
        assert_eq!(strs(&init["entrypoint"]), ["geth"]);
        let args = strs(&init["command"]);
        assert_eq!(
            args[..3],
            ["--datadir", "/var/lib/chainctl/t/data/val-0-el-0", "init"]
        );
        assert!(args[3].ends_with("/network/genesis-geth.json"), "{args:?}");
        assert_eq!(init["network_mode"].as_str(), Some("none"));
        assert_eq!(init["restart"].as_str(), Some("no"));
        assert_eq!(mounts(&doc, "val-0-el-0_init"), mounts(&doc, "val-0-el-0"));
        assert_eq!(
            init["depends_on"][INIT_SERVICE]["condition"].as_str(),
            Some("service_completed_successfully")
        );
        let geth = svc("val-0-el-0");
        assert_eq!(strs(&geth["entrypoint"]), ["geth"]);
        assert!(!strs(&geth["command"])
            .iter()
            .any(|a| a == "client-exec" || a == "init"));
        assert_eq!(
            geth["depends_on"]["val-0-el-0_init"]["condition"].as_str(),
            Some("service_completed_successfully")
        );
        // Reth has no init step, and reads its peers from its config file.
        assert!(doc["services"].get("val-0-el-1_init").is_none());
        let reth = strs(&svc("val-0-el-1")["command"]);
        let config = reth.iter().position(|a| a == "--config").unwrap();
        assert!(reth[config + 1].ends_with("/network/p2p/val-0-el-1.reth.toml"));
        // The external clients: fixed addresses in name order, from the lower half.
        let ipam = &doc["networks"]["chainctl-t"]["ipam"]["config"][0];
        assert_eq!(ipam["subnet"].as_str(), Some("10.213.8.0/24"));
        assert_eq!(ipam["ip_range"].as_str(), Some("10.213.8.128/25"));
        for (name, addr) in [("val-0-el-0", "10.213.8.2"), ("val-0-el-1", "10.213.8.3")] {
            assert_eq!(
                svc(name)["networks"]["chainctl-t"]["ipv4_address"].as_str(),
                Some(addr),
                "{name}"
            );
        }
        // The validator: compose's pick, from the upper half.
        assert_eq!(strs(&svc("val-0")["networks"]), ["chainctl-t"]);
    }

    #[test]
    fn each_service_mounts_only_its_own_secrets_and_waits_for_init() {
        let (_, doc) = project(DEVNET).unwrap();
        let services = doc["services"].as_mapping().unwrap();
        assert_eq!(services.len(), 13, "12 services and chainctl_init");
        for (name, svc) in services {
            let name = name.as_str().unwrap();
            if name == INIT_SERVICE {
                continue;
            }
            let own = format!("{name}-secrets:/var/lib/chainctl/t/secrets:ro");
            let secrets: Vec<String> = mounts(&doc, name)
                .into_iter()
                .filter(|m| m.contains("/secrets"))
                .collect();
            assert_eq!(secrets, vec![own], "{name}");
            assert_eq!(
                svc["depends_on"][INIT_SERVICE]["condition"].as_str(),
                Some("service_completed_successfully")
            );
        }
        // init mounts every service's secrets volume where it distributes them.
        let init = mounts(&doc, INIT_SERVICE);
        assert!(init.contains(&"val-2-el-1-secrets:/init/val-2-el-1".to_string()));
        assert!(init.contains(&"chainctl_secrets:/var/lib/chainctl/t/secrets".to_string()));
        // A validator starts once both its ELs answer their healthchecks.
        let deps = &doc["services"]["val-1"]["depends_on"];
        assert_eq!(
            deps["val-1-el-0"]["condition"].as_str(),
            Some("service_healthy")
        );
        assert_eq!(
            deps["val-1-el-1"]["condition"].as_str(),
            Some("service_healthy")
        );
    }

    #[test]
    fn the_digest_ties_compose_yaml_to_the_files_rendered_with_it() {
        let (files, doc) = project(DEVNET).unwrap();
        let cmd: Vec<&str> = doc["services"][INIT_SERVICE]["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let given = cmd[cmd.iter().position(|a| *a == "--digest").unwrap() + 1];
        let file = |n: &str| files.iter().find(|f| f.name == n).unwrap().contents.clone();
        assert_eq!(given, digest(&file(PROFILE_FILE), &file(PORTS_FILE)));
        assert_ne!(given, digest(&file(PROFILE_FILE), "{}"));
        assert!(
            file(PROFILE_FILE).ends_with(DEVNET),
            "the profile is copied verbatim"
        );
    }

    #[test]
    fn only_our_own_images_get_a_healthcheck() {
        let (_, doc) = project(
            "name: t\nservices:\n  el:\n    command: [reth, node, --http.port, '{{port.http}}']\n    image: reth:v1\n    ports: {http: auto}\n  cl:\n    command: ['{{chainctl}}', x]\n    image: chainctl:9\n    ports: {status: auto}\n    depends_on: [el]\n",
        )
        .unwrap();
        assert!(doc["services"]["el"]["healthcheck"].is_null());
        assert!(doc["services"]["cl"]["healthcheck"]["test"].is_sequence());
        assert_eq!(
            doc["services"]["cl"]["depends_on"]["el"]["condition"].as_str(),
            Some("service_started"),
            "compose cannot probe reth's image"
        );
        assert_eq!(
            doc["services"][INIT_SERVICE]["image"].as_str(),
            Some(chainctl_core::network::chainctl_image().as_str()),
            "init runs this chainctl's own version, which plans as the render did"
        );
    }

    #[test]
    fn key_files_of_this_host_are_refused_with_the_fix() {
        let e = project("name: t\nvalidators:\n  count: 1\n  keys: [/etc/k0.key]\n").unwrap_err();
        assert!(
            e.0.contains("/etc/k0.key") && e.0.contains("drop `validators.keys`"),
            "{e}"
        );
    }
}
