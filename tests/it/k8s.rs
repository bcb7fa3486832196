//! `chainctl render k8s`: golden manifests for the default and the seven-validator
//! profile, every object read back into its typed Kubernetes struct with nothing lost,
//! an independent strict schema check (`kubernetes-validate`, the Kubernetes OpenAPI
//! schemas, from PyPI; installed by `.ci/run`), and the wiring a cluster would only show
//! at run time: every address a config or command line names is a Service port, every
//! mount a volume, every Secret or ConfigMap item present, no secret outside
//! secrets.yaml, the same keys when rendered again.

use crate::util::{text, Env};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const PROFILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles");

/// The YAML documents of a rendered file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Reads `v` into its typed struct and writes it back: anything the struct does not
/// know (a misspelt or misplaced field) would be lost, and the two would differ.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> T {
    let typed: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", v["kind"], v["metadata"]["name"]));
    assert_eq!(
        &serde_json::to_value(&typed).unwrap(),
        v,
        "{} {} does not survive its typed struct",
        v["kind"],
        v["metadata"]["name"]
    );
    typed
}

struct Rendered {
    services: Vec<Service>,
    sets: Vec<StatefulSet>,
    budgets: Vec<PodDisruptionBudget>,
    network: ConfigMap,
    secrets: Vec<Secret>,
}

impl Rendered {
    fn secrets_by_name(&self) -> BTreeMap<String, &Secret> {
        self.secrets
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap(), s))
            .collect()
    }
}

fn render(env: &Env, profile: &str, out: &Path) -> Rendered {
    let o = Command::new(crate::util::bin())
        .args(["-p", &format!("{PROFILES}/{profile}.yaml"), "--state-dir"])
        .arg(env.state())
        .args(["render", "k8s", "--out"])
        .arg(out)
        .env_remove("CHAINCTL_PROFILE")
        .env_remove("CHAINCTL_STATE_DIR")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("secrets.yaml is secret"),
        "{}",
        text(&o.stdout)
    );
    let mut r = Rendered {
        services: vec![],
        sets: vec![],
        budgets: vec![],
        network: ConfigMap::default(),
        secrets: vec![],
    };
    for v in documents(&out.join("manifests.yaml")) {
        match v["kind"].as_str().unwrap() {
            "Service" => r.services.push(round_trip(&v)),
            "StatefulSet" => r.sets.push(round_trip(&v)),
            "PodDisruptionBudget" => r.budgets.push(round_trip(&v)),
            k => panic!("manifests.yaml holds a {k}: nothing but Services, StatefulSets and the budget belongs there"),
        }
    }
    let net = documents(&out.join("network.yaml"));
    assert_eq!(net.len(), 1);
    r.network = round_trip(&net[0]);
    for v in documents(&out.join("secrets.yaml")) {
        assert_eq!(v["kind"], "Secret");
        r.secrets.push(round_trip(&v));
    }
    r
}

/// `manifests.yaml` equals the golden file (`CHAINCTL_BLESS=1` rewrites it).
fn golden(out: &Path, name: &str) {
    let got = std::fs::read_to_string(out.join("manifests.yaml")).unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/k8s")
        .join(format!("{name}.yaml"));
    if std::env::var_os("CHAINCTL_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    assert!(
        got == want,
        "{name}'s manifests differ from {}: if the change is meant, run `CHAINCTL_BLESS=1 cargo test --test k8s` and review the diff",
        golden.display()
    );
}

/// The independent schema check: every object against Kubernetes 1.33's OpenAPI schema,
/// unknown fields refused.
fn schema_check(out: &Path) {
    let files: Vec<_> = ["manifests.yaml", "network.yaml", "secrets.yaml"]
        .iter()
        .map(|f| out.join(f))
        .collect();
    let o = Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.33.0", "--quiet"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubernetes-validate cannot run ({e}): `.ci/run` installs it \
                 (`python3 -m pip install kubernetes-validate`)"
            )
        });
    assert!(
        o.status.success(),
        "the manifests fail the Kubernetes schema:\n{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// Every `host:port` a service is told to reach must be a Service of that name
/// publishing that port.
/// The labels of the pods a StatefulSet makes.
fn pod_labels(set: &StatefulSet) -> &BTreeMap<String, String> {
    let template = &set.spec.as_ref().unwrap().template;
    template.metadata.as_ref().unwrap().labels.as_ref().unwrap()
}

fn check_address(ports: &BTreeMap<String, BTreeSet<i32>>, addr: &str, from: &str) {
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    let (host, port) = addr.rsplit_once(':').unwrap();
    let port: i32 = port.parse().unwrap();
    assert!(
        ports.get(host).is_some_and(|p| p.contains(&port)),
        "{from} reaches {addr}, which no Service publishes"
    );
}

fn check(r: &Rendered, out: &Path, profile: &str, validators: usize) {
    let ports: BTreeMap<String, BTreeSet<i32>> = r
        .services
        .iter()
        .map(|s| {
            let spec = s.spec.as_ref().unwrap();
            (
                s.metadata.name.clone().unwrap(),
                spec.ports
                    .iter()
                    .flatten()
                    .map(|p| p.port)
                    .collect::<BTreeSet<_>>(),
            )
        })
        .collect();
    assert_eq!(r.sets.len(), validators);
    let net = r.network.data.as_ref().unwrap();
    let secret_items = r.secrets_by_name();
    let manifests = std::fs::read_to_string(out.join("manifests.yaml")).unwrap();
    let network = std::fs::read_to_string(out.join("network.yaml")).unwrap();
    for s in &r.secrets {
        for (k, v) in s.data.as_ref().unwrap() {
            let hex = String::from_utf8_lossy(&v.0).trim().to_string();
            assert!(hex.len() >= 32, "{k}");
            assert!(
                !manifests.contains(&hex) && !network.contains(&hex),
                "the secret {k} is outside secrets.yaml"
            );
        }
    }
    for set in &r.sets {
        let name = set.metadata.name.clone().unwrap();
        let spec = set.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        // The governing Service exists, and the selector picks the pod it makes.
        assert!(ports.contains_key(spec.service_name.as_ref().unwrap()));
        let labels = pod_labels(set);
        for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(labels.get(k), Some(v), "{name}: selector {k}");
        }
        let pod = spec.template.spec.as_ref().unwrap();
        let volumes: BTreeMap<String, _> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| (v.name.clone(), v))
            .collect();
        let claims: BTreeSet<String> = spec
            .volume_claim_templates
            .iter()
            .flatten()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        let sc = pod.security_context.as_ref().unwrap();
        assert_eq!((sc.run_as_user, sc.fs_group), (Some(10001), Some(10001)));
        assert!(
            pod.termination_grace_period_seconds.unwrap() >= 30,
            "{name}"
        );
        let containers: Vec<_> = pod
            .init_containers
            .iter()
            .flatten()
            .chain(pod.containers.iter())
            .collect();
        // The validator, and its two ELs as sidecars started before it, after the
        // secrets are copied.
        let sidecars: Vec<_> = pod
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .collect();
        assert_eq!(pod.containers.len(), 1, "{name}");
        assert_eq!(pod.containers[0].name, name);
        assert_eq!(
            sidecars.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            [format!("{name}-el-0"), format!("{name}-el-1")]
        );
        assert_eq!(pod.init_containers.as_ref().unwrap()[0].name, "k8s-init");
        assert!(sidecars.iter().all(|c| c.startup_probe.is_some()));
        for c in &containers {
            for m in c.volume_mounts.iter().flatten() {
                assert!(
                    volumes.contains_key(&m.name) || claims.contains(&m.name),
                    "{name}/{}: mount of unknown volume {}",
                    c.name,
                    m.name
                );
            }
            let csc = c.security_context.as_ref().unwrap();
            assert_eq!(csc.read_only_root_filesystem, Some(true));
            assert_eq!(csc.allow_privilege_escalation, Some(false));
        }
        for c in pod.containers.iter().chain(sidecars.iter().copied()) {
            assert!(
                c.readiness_probe.is_some() && c.liveness_probe.is_some(),
                "{}",
                c.name
            );
            let req = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
            assert!(req.contains_key("cpu") && req.contains_key("memory"));
            // Its own secrets only, at the state dir's secrets path, from its own volume.
            let secret_mounts: Vec<_> = c
                .volume_mounts
                .iter()
                .flatten()
                .filter(|m| m.mount_path.ends_with("/secrets"))
                .collect();
            assert_eq!(secret_mounts.len(), 1, "{}", c.name);
            assert_eq!(secret_mounts[0].name, format!("{}-secrets", c.name));
            assert_eq!(secret_mounts[0].read_only, Some(true));
            let src = volumes[&format!("{}-src", c.name)].secret.as_ref().unwrap();
            let secret = secret_items[src.secret_name.as_ref().unwrap()];
            for item in src.items.iter().flatten() {
                assert!(secret.data.as_ref().unwrap().contains_key(&item.key));
                // An EL reads its one pair's secret and nothing else.
                if c.name.contains("-el-") {
                    assert_eq!(item.path, format!("jwt/{name}--{}.hex", c.name));
                }
            }
            // Every address on its command line is a Service port.
            for url in c.args.iter().flatten().filter(|a| a.starts_with("http://")) {
                check_address(&ports, url, &c.name);
            }
        }
        // The init container copies each container's secrets into its own volume, and
        // the validator's config into its data dir.
        let init = &pod.init_containers.as_ref().unwrap()[0];
        let args = init.args.as_ref().unwrap();
        assert_eq!(args[0], "k8s-init");
        assert_eq!(args.iter().filter(|a| *a == "--copy").count(), 4);
        assert_eq!(args.iter().filter(|a| *a == "--mkdir").count(), 3);
        assert!(
            args.contains(&format!(
                "/k8s-init/config/{name}:/k8s-init/data/{name}/{name}"
            )),
            "{args:?}"
        );
        for v in volumes.values() {
            if let Some(cm) = &v.config_map {
                for item in cm.items.iter().flatten() {
                    assert!(
                        net.contains_key(&item.key),
                        "{name}: no {} in network.yaml",
                        item.key
                    );
                }
            }
        }
        // The validator's config: peers and its ELs are Service ports, paths inside the
        // state dir the containers mount.
        let cfg: Value = serde_json::from_str(&net[&format!("{name}.config.json")]).unwrap();
        for p in cfg["peers"].as_array().unwrap() {
            check_address(&ports, p.as_str().unwrap(), &name);
        }
        for el in cfg["execution"].as_array().unwrap() {
            check_address(&ports, el["engine_url"].as_str().unwrap(), &name);
            assert!(el["jwt_secret"]
                .as_str()
                .unwrap()
                .starts_with(&format!("/var/lib/chainctl/{profile}/secrets/jwt/")));
        }
        assert_eq!(
            cfg["key"],
            format!("/var/lib/chainctl/{profile}/secrets/validators/{name}.key")
        );
    }
    // More than two thirds stay through voluntary disruptions: 2f+1 of 3f+1.
    let f = (validators - 1) / 3;
    assert_eq!(r.budgets.len(), 1);
    assert_eq!(
        r.budgets[0].spec.as_ref().unwrap().min_available,
        Some(IntOrString::Int((validators - f) as i32))
    );
    // Reads: one Service over every validator pod's first EL.
    let rpc = r
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(&format!("{profile}-rpc")))
        .expect("the RPC Service");
    assert_eq!(
        rpc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].target_port,
        Some(IntOrString::String("el0-http".into()))
    );
    assert!(net.contains_key("genesis.json") && net.contains_key("consensus-genesis.json"));
    let mode = std::fs::metadata(out.join("secrets.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "secrets.yaml is readable by others");
}

/// Renders a profile, compares it with its golden file, checks it both ways.
fn render_checked(env: &Env, profile: &str, validators: usize) -> Rendered {
    let out = env.path("k8s");
    let r = render(env, profile, &out);
    golden(&out, profile);
    check(&r, &out, profile, validators);
    schema_check(&out);
    r
}

#[test]
fn the_default_profile_renders_the_golden_manifests_wired_and_schema_valid() {
    let env = Env::new();
    let r = render_checked(&env, "devnet", 4);
    // Rendered again: the same chain and the same keys (the state dir's), file unchanged.
    let out = env.path("k8s");
    let secrets = std::fs::read_to_string(out.join("secrets.yaml")).unwrap();
    let genesis = r.network.data.as_ref().unwrap()["genesis.json"].clone();
    let again = render(&env, "devnet", &out);
    assert_eq!(
        std::fs::read_to_string(out.join("secrets.yaml")).unwrap(),
        secrets
    );
    assert_eq!(
        again.network.data.as_ref().unwrap()["genesis.json"],
        genesis
    );
}

#[test]
fn the_seven_validator_profile_renders_the_golden_manifests_wired_and_schema_valid() {
    render_checked(&Env::new(), "testnet7", 7);
}

#[test]
fn profiles_a_cluster_cannot_run_are_refused_with_the_fix() {
    let env = Env::new();
    // Host key files cannot be mounted by a cluster.
    std::fs::write(env.path("k0.key"), "11".repeat(32)).unwrap();
    std::fs::set_permissions(env.path("k0.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    env.write_profile(&format!(
        "name: t\nvalidators:\n  count: 1\n  keys: [{}]\n",
        env.path("k0.key").display()
    ));
    let o = env.run(&["render", "k8s", "--out", "out"]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("k0.key") && err.contains("drop `validators.keys`"),
        "{err}"
    );
    // A profile name a Kubernetes object cannot have (it starts with a digit).
    env.write_profile("name: 7net\nvalidators:\n  count: 1\n");
    let o = env.run(&["render", "k8s", "--out", "out"]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("profile name `7net`") && err.contains("starting with a letter"),
        "{err}"
    );
    assert!(
        !env.path("out/manifests.yaml").exists(),
        "nothing written on an error"
    );
}

/// External clients on a cluster: each runs its own command from its image, after its
/// init step (an init container of the same image and volumes, just before the client's
/// native sidecar); the config files Reth and Geth read their peers from are in the
/// network ConfigMap at their paths (listing no peers: pod addresses are the cluster's);
/// and the manifests stay schema-valid.
#[test]
fn external_clients_start_after_their_init_step_with_their_config_files() {
    let env = Env::new();
    env.write_profile(
        "name: ext\nvalidators:\n  count: 1\n  execution: [geth, reth]\n  clients:\n    geth: {image: 'geth:local'}\n    reth: {image: 'reth:local'}\n",
    );
    let out = env.path("out");
    let o = env.run(&["render", "k8s", "--out", "out"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    schema_check(&out);
    let docs = documents(&out.join("manifests.yaml"));
    let set: StatefulSet = round_trip(
        docs.iter()
            .find(|d| d["kind"] == "StatefulSet")
            .expect("a StatefulSet"),
    );
    let pod = set.spec.unwrap().template.spec.unwrap();
    let inits = pod.init_containers.unwrap();
    let names: Vec<&str> = inits.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["k8s-init", "val-0-el-0-init", "val-0-el-0", "val-0-el-1"]
    );
    let (init, geth) = (&inits[1], &inits[2]);
    assert_eq!(init.image.as_deref(), Some("geth:local"));
    assert_eq!(init.command.as_deref(), Some(&["geth".to_string()][..]));
    let args = init.args.clone().unwrap();
    assert_eq!(
        args[..3],
        ["--datadir", "/var/lib/chainctl/ext/data/val-0-el-0", "init"]
    );
    assert!(init.restart_policy.is_none(), "runs to completion");
    assert_eq!(
        init.volume_mounts, geth.volume_mounts,
        "the client's volumes"
    );
    assert_eq!(geth.restart_policy.as_deref(), Some("Always"));
    assert_eq!(geth.command.as_deref(), Some(&["geth".to_string()][..]));
    let config_of = |c: &k8s_openapi::api::core::v1::Container| {
        let a = c.args.clone().unwrap();
        a[a.iter().position(|x| x == "--config").unwrap() + 1].clone()
    };
    assert_eq!(
        config_of(geth),
        "/var/lib/chainctl/ext/network/p2p/val-0-el-0.toml"
    );
    assert_eq!(
        config_of(&inits[3]),
        "/var/lib/chainctl/ext/network/p2p/val-0-el-1.reth.toml"
    );
    // The ConfigMap holds both configs, the volume puts them back at their paths.
    let net: ConfigMap = round_trip(&documents(&out.join("network.yaml"))[0]);
    let data = net.data.unwrap();
    assert!(
        data["p2p.val-0-el-1.reth.toml"].contains("[peers]\ntrusted_nodes = []"),
        "{data:?}"
    );
    assert!(
        data["p2p.val-0-el-0.toml"].contains("StaticNodes = []"),
        "{data:?}"
    );
    let items = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "network")
        .unwrap()
        .config_map
        .unwrap()
        .items
        .unwrap();
    assert!(items
        .iter()
        .any(|i| i.key == "p2p.val-0-el-1.reth.toml" && i.path == "p2p/val-0-el-1.reth.toml"));
}

#[test]
fn k8s_init_copies_a_secret_volume_private() {
    let _engine = crate::util::docker_engine();
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("jwt")).unwrap();
    std::fs::write(src.join("jwt/a--b.hex"), "ab".repeat(32)).unwrap();
    let dst = env.path("dst");
    std::fs::create_dir(&dst).unwrap();
    let copy = format!("{}:{}", src.display(), dst.display());
    let out = env.ok(&["k8s-init", "--copy", &copy]);
    assert!(out.contains("1 file(s)"), "{out}");
    let m = std::fs::metadata(dst.join("jwt/a--b.hex")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    let o = env.run(&["k8s-init", "--copy", "no-colon"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("SRC:DST"), "{}", text(&o.stderr));
}

fn docker(args: &[String]) -> std::process::Output {
    Command::new("docker").args(args).output().unwrap()
}

fn docker_ok(args: &[String]) -> String {
    let o = docker(args);
    assert!(
        o.status.success(),
        "docker {args:?}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// The pods of the rendered manifests, started on this machine's Docker engine the way a
/// kubelet starts them: the init container to completion first, then every container
/// with its securityContext (user, fsGroup as a supplementary group, read-only root, no
/// capabilities), its volumes as the kubelet lays them out (claims and emptyDirs owned
/// by the fsGroup, setgid; ConfigMap files 0644; Secret files `defaultMode`, group
/// fsGroup; `subPath` mounts), and each Service's name resolving to the container that
/// publishes its ports (Docker network aliases standing in for cluster DNS).
struct Kubelet {
    network: String,
    containers: Vec<String>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm".into(), "-f".into(), c.clone()]);
        }
        let _ = docker(&["network".into(), "rm".into(), self.network.clone()]);
    }
}

fn chown(path: &Path, uid: u32, gid: u32, mode: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Kubelet {
    fn run(root: &Path, r: &Rendered) -> Kubelet {
        let network = format!("chainctl-k8s-{}", std::process::id());
        docker_ok(&["network".into(), "create".into(), network.clone()]);
        let mut k = Kubelet {
            network,
            containers: vec![],
        };
        let cm = r.network.data.clone().unwrap();
        let secrets = r.secrets_by_name();
        for set in &r.sets {
            let pod_name = set.metadata.name.clone().unwrap();
            let spec = set.spec.as_ref().unwrap();
            let pod = spec.template.spec.as_ref().unwrap();
            let labels = pod_labels(set).clone();
            let sc = pod.security_context.as_ref().unwrap();
            let (uid, gid, fs_group) = (
                sc.run_as_user.unwrap() as u32,
                sc.run_as_group.unwrap() as u32,
                sc.fs_group.unwrap() as u32,
            );
            let dir = root.join(&pod_name);
            // Volumes, as the kubelet makes them.
            let mut host: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
            for claim in spec.volume_claim_templates.iter().flatten() {
                let name = claim.metadata.name.clone().unwrap();
                let p = dir.join("claims").join(&name);
                std::fs::create_dir_all(&p).unwrap();
                chown(&p, 0, fs_group, 0o2775);
                host.insert(name, p);
            }
            for v in pod.volumes.iter().flatten() {
                let p = dir.join("volumes").join(&v.name);
                std::fs::create_dir_all(&p).unwrap();
                if v.empty_dir.is_some() {
                    chown(&p, 0, fs_group, 0o2777);
                } else if let Some(c) = &v.config_map {
                    for item in c.items.iter().flatten() {
                        let f = p.join(&item.path);
                        std::fs::write(&f, &cm[&item.key]).unwrap();
                        chown(&f, 0, fs_group, 0o644);
                    }
                } else if let Some(s) = &v.secret {
                    let data = secrets[s.secret_name.as_ref().unwrap()]
                        .data
                        .as_ref()
                        .unwrap();
                    for item in s.items.iter().flatten() {
                        let f = p.join(&item.path);
                        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                        std::fs::write(&f, &data[&item.key].0).unwrap();
                        chown(&f, 0, fs_group, s.default_mode.unwrap() as u32);
                    }
                } else {
                    panic!("{pod_name}: a volume this emulation does not know: {v:?}");
                }
                host.insert(v.name.clone(), p);
            }
            let start = |c: &k8s_openapi::api::core::v1::Container, detach: bool| {
                let cname = format!("{}-{pod_name}-{}", k.network, c.name);
                let mut a: Vec<String> = vec!["run".into(), "--name".into(), cname.clone()];
                if detach {
                    a.push("-d".into());
                }
                a.extend([
                    "--network".into(),
                    k.network.clone(),
                    "--user".into(),
                    format!("{uid}:{gid}"),
                    "--group-add".into(),
                    fs_group.to_string(),
                    "--cap-drop".into(),
                    "ALL".into(),
                    "--security-opt".into(),
                    "no-new-privileges".into(),
                ]);
                let csc = c.security_context.as_ref().unwrap();
                if csc.read_only_root_filesystem == Some(true) {
                    a.push("--read-only".into());
                }
                // Cluster DNS: a Service's name is the pod; here, the container that
                // serves the Service's ports.
                for s in &r.services {
                    let sspec = s.spec.as_ref().unwrap();
                    let selects = sspec
                        .selector
                        .iter()
                        .flatten()
                        .all(|(k, v)| labels.get(k) == Some(v));
                    let own: BTreeSet<i32> =
                        c.ports.iter().flatten().map(|p| p.container_port).collect();
                    let serves = sspec.ports.iter().flatten().all(|p| own.contains(&p.port));
                    if sspec.cluster_ip.as_deref() == Some("None") && selects && serves {
                        a.push("--network-alias".into());
                        a.push(s.metadata.name.clone().unwrap());
                    }
                }
                for m in c.volume_mounts.iter().flatten() {
                    let mut src = host[&m.name].clone();
                    if let Some(sub) = &m.sub_path {
                        src = src.join(sub);
                    }
                    let ro = if m.read_only == Some(true) { ":ro" } else { "" };
                    a.push("-v".into());
                    a.push(format!("{}:{}{ro}", src.display(), m.mount_path));
                }
                if let Some(w) = &c.working_dir {
                    a.extend(["-w".into(), w.clone()]);
                }
                for e in c.env.iter().flatten() {
                    a.extend([
                        "-e".into(),
                        format!("{}={}", e.name, e.value.clone().unwrap_or_default()),
                    ]);
                }
                let cmd = c.command.clone().unwrap();
                a.extend(["--entrypoint".into(), cmd[0].clone()]);
                a.push(c.image.clone().unwrap());
                a.extend(cmd[1..].iter().cloned());
                a.extend(c.args.clone().unwrap_or_default());
                (cname, a)
            };
            for c in pod.init_containers.iter().flatten() {
                let sidecar = c.restart_policy.as_deref() == Some("Always");
                let (cname, a) = start(c, sidecar);
                k.containers.push(cname.clone());
                if sidecar {
                    // Started, then the next one once its startup probe passes.
                    docker_ok(&a);
                    let probe = c.startup_probe.as_ref().unwrap();
                    let mut e = vec!["exec".to_string(), cname.clone()];
                    e.extend(probe.exec.as_ref().unwrap().command.clone().unwrap());
                    let t = std::time::Instant::now();
                    while !docker(&e).status.success() {
                        if t.elapsed() > std::time::Duration::from_secs(60) {
                            let logs = docker(&[
                                "logs".into(),
                                "--tail".into(),
                                "30".into(),
                                cname.clone(),
                            ]);
                            let state = docker(&[
                                "inspect".into(),
                                "-f".into(),
                                "{{json .State}}".into(),
                                cname.clone(),
                            ]);
                            panic!(
                                "{pod_name}'s sidecar {} did not pass its startup probe in 60 s; state {}; its log:\n{}{}",
                                c.name,
                                text(&state.stdout),
                                text(&logs.stdout),
                                text(&logs.stderr)
                            );
                        }
                        std::thread::sleep(std::time::Duration::from_millis(500));
                    }
                    continue;
                }
                let o = docker(&a);
                assert!(
                    o.status.success(),
                    "{pod_name}'s init container {} failed: {}{}",
                    c.name,
                    text(&o.stdout),
                    text(&o.stderr)
                );
            }
            for c in &pod.containers {
                let (cname, a) = start(c, true);
                k.containers.push(cname);
                docker_ok(&a);
            }
        }
        k
    }

    fn container(&self, pod: &str, name: &str) -> String {
        format!("{}-{pod}-{name}", self.network)
    }

    fn ip(&self, pod: &str, name: &str) -> String {
        docker_ok(&[
            "inspect".into(),
            "-f".into(),
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}".into(),
            self.container(pod, name),
        ])
        .trim()
        .to_string()
    }
}

fn block_number(url: &str) -> Option<u64> {
    let body =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []});
    let v: Value = ureq::post(url)
        .timeout(std::time::Duration::from_secs(2))
        .send_json(body)
        .ok()?
        .into_json()
        .ok()?;
    u64::from_str_radix(v["result"].as_str()?.trim_start_matches("0x"), 16).ok()
}

#[test]
fn the_rendered_pods_run_the_devnet_as_a_kubelet_would_start_them() {
    let _machine = crate::util::busy_machine();
    let _engine = crate::util::docker_engine();
    crate::util::chainctl_image();
    let env = Env::new();
    let out = env.path("k8s");
    let r = render(&env, "devnet", &out);
    let pods = env.path("pods");
    let kubelet = Kubelet::run(&pods, &r);
    // Blocks, decided by the four validators and executed by every EL.
    let port = |svc: &str| -> i32 {
        r.services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(svc))
            .and_then(|s| {
                s.spec
                    .as_ref()?
                    .ports
                    .as_ref()?
                    .iter()
                    .find(|p| p.name.as_deref().is_some_and(|n| n.ends_with("-http")))
                    .map(|p| p.port)
            })
            .unwrap()
    };
    let els: Vec<(String, String)> = (0..4)
        .flat_map(|i| (0..2).map(move |j| (format!("val-{i}"), format!("val-{i}-el-{j}"))))
        .collect();
    let urls: Vec<String> = els
        .iter()
        .map(|(pod, el)| format!("http://{}:{}", kubelet.ip(pod, el), port(el)))
        .collect();
    crate::util::wait_for(
        "blocks on every EL of every pod",
        std::time::Duration::from_secs(120),
        || {
            urls.iter()
                .all(|u| block_number(u).is_some_and(|h| h >= 3))
                .then_some(())
        },
    );
    // Every container passes its own readiness probe, run in it as the kubelet would.
    for set in &r.sets {
        let pod = set.metadata.name.clone().unwrap();
        let spec = set.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.is_some());
        for c in spec.containers.iter().chain(sidecars) {
            let cmd = c
                .readiness_probe
                .as_ref()
                .and_then(|p| p.exec.as_ref())
                .and_then(|e| e.command.clone())
                .unwrap();
            let mut a = vec!["exec".to_string(), kubelet.container(&pod, &c.name)];
            a.extend(cmd);
            docker_ok(&a);
        }
    }
    // The init container left each its own secrets, 0600, the services' user's.
    let secrets = pods.join("val-0/volumes/val-0-el-0-secrets/jwt");
    let files: Vec<_> = std::fs::read_dir(&secrets)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&files[0]).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (10001, 0o600));
    // Each data dir is its service's own, inside its claim; the validator's config in it.
    let home = pods.join("val-0/claims/val-0-data/val-0");
    let m = std::fs::metadata(&home).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (10001, 0o700));
    let m = std::fs::metadata(home.join("config.json")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (10001, 0o600));
    let m = std::fs::metadata(pods.join("val-0/claims/val-0-el-1-data/val-0-el-1")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (10001, 0o700));
}
