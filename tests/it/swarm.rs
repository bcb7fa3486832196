//! `runtime: swarm`: the 4-validator devnet as Docker Swarm services on a two-node swarm
//! this test makes: this machine's Docker engine the manager (node `a`) and a second
//! `dockerd` in a network namespace of its own as the worker (node `b`), joined over a
//! veth pair; both left, and the second engine stopped, afterwards. The services run
//! from the FROM-scratch image of our own static binary (built here, loaded onto the
//! second node, never pulled).
//! What is checked: placement by `chainctl swarm label` (val-3 and its execution clients
//! on node b, its data in the volume there, its ports probed at b's address, consensus
//! across the overlay network between the nodes), secrets never visible in
//! `docker service inspect`, P2P published on the node, a killed task container → a new
//! task and the chain goes on, adoption after chainctl itself restarts, a rolling upgrade
//! of every built-in EL on both nodes with no gap in the chain beyond one block time, a
//! failed upgrade rolled back, and `down` removing every swarm object of the profile.

use crate::util::{docker, docker_ok, text, wait_for, Env};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const VALIDATORS: u32 = 4;
const NAME: &str = "sw-a";

/// The second node's Docker engine: a second `dockerd` in a network namespace of its own
/// (`NS`), joined to this host by a veth pair (this host `HOST_IP`, the node `NODE_IP`),
/// with its own data root, exec root and socket; it shares only the kernel and the file
/// system with this host, as a second server sharing an NFS export would.
struct Worker {
    dockerd: std::process::Child,
}

const NS: &str = "chainctl-sw-b";
const VETH: &str = "ccsw-b";
const HOST_IP: &str = "10.213.0.1";
const NODE_IP: &str = "10.213.0.2";
const WORKER_DIR: &str = "/var/tmp/chainctl-swarm-b";

/// The second node's engine socket (`docker -H`).
fn worker_host() -> String {
    format!("unix://{WORKER_DIR}/docker.sock")
}

/// `docker ARGS` against the second node's engine.
fn worker_docker(args: &[&str]) -> std::process::Output {
    let host = worker_host();
    let mut all = vec!["-H", host.as_str()];
    all.extend_from_slice(args);
    docker(&all)
}

fn sh(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{program}: {e} (the two-node swarm test needs iproute2, util-linux and dockerd)"
            )
        })
}

fn sh_ok(program: &str, args: &[&str]) {
    let o = sh(program, args);
    assert!(
        o.status.success(),
        "{program} {args:?}: {}",
        text(&o.stderr)
    );
}

impl Worker {
    /// Removes what a killed run left: its engine and every process of it (containerd,
    /// shims, tasks), its namespace, link, mounts and directory. Only processes whose
    /// command line names `WORKER_DIR` are signalled (a stale pid may be anybody's).
    fn remove_leftovers() {
        let ours = || -> Vec<i32> {
            let Ok(rd) = std::fs::read_dir("/proc") else {
                return Vec::new();
            };
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(WORKER_DIR))
                })
                .collect()
        };
        for (signal, wait) in [(libc::SIGTERM, 20), (libc::SIGKILL, 5)] {
            let pids = ours();
            if pids.is_empty() {
                break;
            }
            for &pid in &pids {
                // SAFETY: signalling processes of a previous run of this test.
                unsafe { libc::kill(pid, signal) };
            }
            let t0 = Instant::now();
            while !ours().is_empty() && t0.elapsed() < Duration::from_secs(wait) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let _ = sh("ip", &["netns", "del", NS]);
        let _ = sh("ip", &["link", "del", VETH]);
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut inside: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(WORKER_DIR))
            .collect();
        inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in inside {
            let _ = sh("umount", &["-l", m]);
        }
        let _ = std::fs::remove_dir_all(WORKER_DIR);
    }

    fn start() -> Worker {
        Worker::remove_leftovers();
        sh_ok("ip", &["netns", "add", NS]);
        sh_ok(
            "ip",
            &[
                "link", "add", VETH, "type", "veth", "peer", "name", "ccsw-n",
            ],
        );
        sh_ok("ip", &["link", "set", "ccsw-n", "netns", NS]);
        sh_ok(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", VETH],
        );
        sh_ok("ip", &["link", "set", VETH, "up"]);
        for cmd in [
            vec!["addr", "add", &*format!("{NODE_IP}/24"), "dev", "ccsw-n"],
            vec!["link", "set", "ccsw-n", "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut args = vec!["netns", "exec", NS, "ip"];
            args.extend(cmd);
            sh_ok("ip", &args);
        }
        // The engine's own settings (storage driver, MTU), without the paths that are
        // this host engine's.
        std::fs::create_dir_all(WORKER_DIR).unwrap();
        let mut conf: serde_json::Map<String, Value> =
            std::fs::read_to_string("/etc/docker/daemon.json")
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
        // live-restore cannot be used in a swarm.
        for k in [
            "data-root",
            "exec-root",
            "pidfile",
            "hosts",
            "graph",
            "live-restore",
        ] {
            conf.remove(k);
        }
        let conf_path = format!("{WORKER_DIR}/daemon.json");
        std::fs::write(&conf_path, Value::Object(conf).to_string()).unwrap();
        let log = std::fs::File::create(format!("{WORKER_DIR}/dockerd.log")).unwrap();
        // nsenter enters only the network namespace (`ip netns exec` would also remount
        // /sys, hiding the cgroup mounts dockerd needs).
        let dockerd = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{NS}"))
            .args([
                "dockerd",
                "--config-file",
                &conf_path,
                "--data-root",
                &format!("{WORKER_DIR}/root"),
                "--exec-root",
                &format!("{WORKER_DIR}/exec"),
                "--pidfile",
                &format!("{WORKER_DIR}/dockerd.pid"),
                "-H",
                &worker_host(),
                // Its own containerd namespaces, where the host has a system containerd.
                "--containerd-namespace",
                NS,
                "--containerd-plugins-namespace",
                &format!("{NS}-plugins"),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nsenter dockerd: the two-node swarm test needs util-linux and dockerd");
        let w = Worker { dockerd };
        wait_for(
            "the second node's Docker engine to answer",
            Duration::from_secs(60),
            || worker_docker(&["info"]).status.success().then_some(()),
        );
        w
    }

    /// Copies an image of this host's engine to the second node (nothing is pulled).
    fn load(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let o = Command::new("docker")
            .args(["-H", &worker_host(), "load"])
            .stdin(save.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(save.wait().unwrap().success(), "docker save {image}");
        assert!(
            o.status.success(),
            "docker load {image}: {}",
            text(&o.stderr)
        );
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = worker_docker(&["swarm", "leave", "--force"]);
        // SAFETY: signalling the nsenter/dockerd this test started.
        unsafe { libc::kill(self.dockerd.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.dockerd.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !matches!(self.dockerd.try_wait(), Ok(Some(_))) {
            let _ = self.dockerd.kill();
            let _ = self.dockerd.wait();
        }
        Worker::remove_leftovers();
    }
}

/// A two-node swarm made for this test: this host's engine the manager (node `a`), and a
/// worker (node `b`, [`Worker`]); left, with everything on it, when dropped.
struct Swarm {
    worker: Worker,
    /// The second node's swarm id.
    b: String,
}

impl Swarm {
    fn init() -> Swarm {
        let state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        if state == "active" {
            // A killed run of this test leaves its swarm: leave it. Any other swarm is
            // not ours to leave.
            let addr = docker_ok(&["info", "--format", "{{.Swarm.NodeAddr}}"]);
            assert_eq!(
                addr, HOST_IP,
                "this Docker engine is already in a swarm (node address {addr}); this test makes its own two-node swarm: run it on an engine outside any swarm (`docker swarm leave --force` leaves it)"
            );
            docker_ok(&["swarm", "leave", "--force"]);
        }
        let worker = Worker::start();
        docker_ok(&["swarm", "init", "--advertise-addr", HOST_IP]);
        // From here on, dropping it leaves the swarm, even when the join fails.
        let mut swarm = Swarm {
            worker,
            b: String::new(),
        };
        let token = docker_ok(&["swarm", "join-token", "-q", "worker"]);
        let o = worker_docker(&[
            "swarm",
            "join",
            "--token",
            &token,
            "--advertise-addr",
            NODE_IP,
            &format!("{HOST_IP}:2377"),
        ]);
        assert!(
            o.status.success(),
            "the worker's swarm join: {}",
            text(&o.stderr)
        );
        swarm.b = text(&worker_docker(&["info", "--format", "{{.Swarm.NodeID}}"]).stdout)
            .trim()
            .to_string();
        wait_for(
            "the second node to be ready",
            Duration::from_secs(60),
            || {
                (docker_ok(&["node", "inspect", &swarm.b, "--format", "{{.Status.State}}"])
                    == "ready")
                    .then_some(())
            },
        );
        swarm
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = worker_docker(&["swarm", "leave", "--force"]);
        let _ = docker(&["swarm", "leave", "--force"]);
    }
}

/// The devnet under `runtime: swarm`; dropping it stops chainctl and removes whatever
/// swarm objects of the profile are left, even after a failed assertion.
struct Net {
    env: Env,
    chain: crate::util::Chain,
}

impl std::ops::Deref for Net {
    type Target = crate::util::Chain;
    fn deref(&self) -> &crate::util::Chain {
        &self.chain
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.env.run(&["down"]);
        remove_leftovers();
    }
}

/// Removes every Docker object of the test's profile (a run that was killed leaves its
/// volumes behind, bound to a state dir that no longer exists).
fn remove_leftovers() {
    let label = format!("label=io.chainctl.profile={NAME}");
    for kind in ["service", "secret", "config"] {
        let ids = text(&docker(&[kind, "ls", "-q", "--filter", &label]).stdout);
        for id in ids.split_whitespace() {
            docker(&[kind, "rm", id]);
        }
    }
    let t0 = Instant::now();
    loop {
        docker(&["network", "rm", &format!("chainctl-{NAME}")]);
        let vols = text(&docker(&["volume", "ls", "-q", "--filter", &label]).stdout);
        for v in vols.split_whitespace() {
            docker(&["volume", "rm", "-f", v]);
        }
        let left = text(&docker(&["volume", "ls", "-q", "--filter", &label]).stdout);
        if left.trim().is_empty() || t0.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Net {
    fn service(&self, svc: &str) -> String {
        format!("chainctl-{NAME}-{svc}")
    }

    /// `docker service inspect` of a service, as JSON.
    fn inspect(&self, svc: &str) -> Value {
        let out = docker_ok(&["service", "inspect", &self.service(svc)]);
        serde_json::from_str::<Value>(&out).unwrap()[0].clone()
    }

    /// The running task's container id, on whichever of the two nodes runs it.
    fn container(&self, svc: &str) -> String {
        let filter = format!("label=com.docker.swarm.service.name={}", self.service(svc));
        let args = ["ps", "-q", "--filter", filter.as_str()];
        let out = format!(
            "{} {}",
            docker_ok(&args),
            text(&worker_docker(&args).stdout)
        );
        let ids: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(ids.len(), 1, "{svc}: {out}");
        ids[0].to_string()
    }

    /// The node running `svc`'s task, by the swarm's own record.
    fn task_node(&self, svc: &str) -> String {
        let task = docker_ok(&[
            "service",
            "ps",
            "-q",
            "--filter",
            "desired-state=running",
            &self.service(svc),
        ]);
        assert_eq!(task.lines().count(), 1, "{svc}: {task}");
        docker_ok(&["inspect", "--format", "{{.NodeID}}", task.trim()])
    }

    fn els(&self) -> Vec<String> {
        self.chain.els(VALIDATORS)
    }

    fn tail(&self, svc: &str) -> String {
        let log = std::fs::read_to_string(self.env.state().join(format!("logs/{svc}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn wait_height(&self, h: u64, timeout: Duration) {
        let t0 = Instant::now();
        while !(0..VALIDATORS).all(|v| self.decided(v) >= h) {
            if t0.elapsed() > timeout {
                for v in 0..VALIDATORS {
                    eprintln!(
                        "--- val-{v}: {:?}\n{}",
                        self.status(v),
                        self.tail(&format!("val-{v}"))
                    );
                }
                eprintln!("--- supervisor\n{}", self.env.supervisor_log());
                panic!(
                    "timed out after {timeout:?} waiting for every validator to decide {h} heights"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every EL has the same block at heights 1..=h; the blocks' timestamps (the chain's
    /// own record of when each was made).
    fn assert_chain(&self, h: u64) -> Vec<u64> {
        let mut canon: BTreeMap<u64, (String, u64)> = BTreeMap::new();
        for el in self.els() {
            wait_for(
                &format!("{el} to reach block {h}"),
                Duration::from_secs(90),
                || (self.el_height(&el) >= h).then_some(()),
            );
            for n in 1..=h {
                let b = self
                    .rpc(
                        &el,
                        "eth_getBlockByNumber",
                        serde_json::json!([format!("0x{n:x}"), false]),
                    )
                    .unwrap_or_else(|| panic!("{el} has no block {n}"));
                let hash = b["hash"].as_str().unwrap().to_string();
                let ts = u64::from_str_radix(
                    b["timestamp"].as_str().unwrap().trim_start_matches("0x"),
                    16,
                )
                .unwrap();
                let first = canon.entry(n).or_insert_with(|| (hash.clone(), ts));
                assert_eq!(first.0, hash, "{el} disagrees at height {n}: FORK");
            }
        }
        let ts: Vec<u64> = canon.values().map(|(_, t)| *t).collect();
        ts
    }
}

fn secret_bytes(state: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in ["secrets/jwt", "secrets/validators"] {
        let Ok(rd) = std::fs::read_dir(state.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let content = std::fs::read_to_string(e.path()).unwrap_or_default();
            let content = content.trim().trim_start_matches("0x").to_string();
            if content.len() >= 32 {
                out.push((e.path().display().to_string(), content));
            }
        }
    }
    out
}

#[test]
fn the_devnet_runs_as_swarm_services_survives_a_killed_task_and_upgrades_one_validator_at_a_time() {
    let _machine = crate::util::busy_machine();
    let _engine = crate::util::docker_engine_alone();
    crate::util::chainctl_image();
    let image = format!("chainctl:{}", env!("CARGO_PKG_VERSION"));
    let swarm = Swarm::init();
    // chainctl never pulls: every node needs the image, as on a real swarm.
    swarm.worker.load(&image);
    remove_leftovers();
    let env = Env::new();
    // Name this node `a` and the other `b` for placement, as an operator would.
    let labelled = env.ok(&["swarm", "label", "a"]);
    assert!(labelled.contains("chainctl.node=a"), "{labelled}");
    env.ok(&["swarm", "label", "b", "--node", &swarm.b]);
    for (node, want) in [("self", "a"), (swarm.b.as_str(), "b")] {
        let label = docker_ok(&[
            "node",
            "inspect",
            node,
            "--format",
            "{{index .Spec.Labels \"chainctl.node\"}}",
        ]);
        assert_eq!(label, want);
    }
    env.write_profile(&format!(
        "name: {NAME}\nruntime: swarm\nswarm:\n  placement: {{val-0: a, val-1: a, val-3: b}}\nports: {{start: 25400, end: 25499}}\nchain: {{chain_id: 1337, block_time: 1s}}\nvalidators:\n  count: {VALIDATORS}\n  execution: [builtin, builtin]\ngateway: {{port: auto}}\n"
    ));
    let mut net = Net {
        env,
        chain: crate::util::Chain::default(),
    };
    net.env.up_detached();
    net.chain = crate::util::Chain::read(&net.env.state());
    // val-3 and its clients run on node b: chainctl reaches their ports at b's address.
    let st = net.env.status();
    net.chain.locate(&st);
    for s in st["services"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let want = if name.starts_with("val-3") {
            NODE_IP
        } else {
            "127.0.0.1"
        };
        assert_eq!(s["address"], want, "{s}");
    }
    let table = net.env.ok(&["status"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("val-3-el-0 ") && l.contains(&format!("{NODE_IP}: engine="))),
        "{table}"
    );
    net.wait_height(3, Duration::from_secs(180));
    // val-3's client on node b keeps its chain in the volume bound to its data dir.
    let db = net.env.state().join("data/val-3-el-0/engine.redb");
    assert!(
        std::fs::metadata(&db).is_ok_and(|m| m.len() > 0),
        "{} was not written by the task on node b",
        db.display()
    );

    // One replicated service per chainctl service, with chainctl's restart policy (none
    // of the swarm's own), placement by label (val-0, val-1 and their ELs) or on this
    // node, P2P published on the node, RPC through the mesh.
    let node_id = docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
    let secrets = secret_bytes(&net.env.state());
    assert!(secrets.len() >= 4 + 8, "{secrets:?}");
    let mut services: Vec<String> = net.els();
    services.extend((0..VALIDATORS).map(|v| format!("val-{v}")));
    for svc in &services {
        let s = net.inspect(svc);
        let spec = &s["Spec"];
        assert_eq!(spec["Mode"]["Replicated"]["Replicas"], 1, "{svc}");
        let task = &spec["TaskTemplate"];
        assert_eq!(task["RestartPolicy"]["Condition"], "none", "{svc}");
        let (want, on) = if svc.starts_with("val-0") || svc.starts_with("val-1") {
            ("node.labels.chainctl.node==a".to_string(), &node_id)
        } else if svc.starts_with("val-3") {
            ("node.labels.chainctl.node==b".to_string(), &swarm.b)
        } else {
            (format!("node.id=={node_id}"), &node_id)
        };
        assert_eq!(task["Placement"]["Constraints"][0], want.as_str(), "{svc}");
        assert_eq!(&net.task_node(svc), on, "{svc} runs on the wrong node");
        assert_eq!(spec["EndpointSpec"]["Mode"], "dnsrr", "{svc}");
        let c = &task["ContainerSpec"];
        assert_eq!(c["ReadOnly"], true, "{svc}");
        assert_eq!(c["CapabilityDrop"][0], "ALL", "{svc}");
        // Secrets are Docker secrets, mounted 0400; none of their bytes is in the spec.
        let mounted = c["Secrets"].as_array().cloned().unwrap_or_default();
        assert!(!mounted.is_empty(), "{svc} has no secret");
        for m in &mounted {
            assert_eq!(m["File"]["Mode"], 0o400, "{svc}: {m}");
        }
        let all = s.to_string();
        for (file, bytes) in &secrets {
            assert!(
                !all.contains(bytes.as_str()),
                "{svc}: `docker service inspect` shows the content of {file}"
            );
        }
        for p in spec["EndpointSpec"]["Ports"].as_array().unwrap() {
            assert_eq!(p["PublishMode"], "host", "{svc}: {p}");
        }
    }
    // Inside a task, the JWT secret is the file the plan names, 0400, chainctl's user's.
    let el_pid = docker_ok(&[
        "inspect",
        "--format",
        "{{.State.Pid}}",
        &net.container("val-2-el-0"),
    ]);
    let jwt = std::fs::read_dir(net.env.state().join("secrets/jwt"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.display().to_string().contains("val-2-el-0"))
        .expect("val-2-el-0's JWT file");
    let inside = std::path::PathBuf::from(format!("/proc/{el_pid}/root{}", jwt.display()));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&inside).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o400, "{}", inside.display());
    assert_eq!(meta.uid(), unsafe { libc::getuid() });
    assert_eq!(
        std::fs::read(&inside).unwrap(),
        std::fs::read(&jwt).unwrap()
    );
    let st = net.env.status();
    for s in st["services"].as_array().unwrap() {
        if s["name"] != "gateway" {
            assert_eq!(s["backend"], "swarm", "{s}");
            assert_eq!(s["image"], image.as_str(), "{s}");
        }
    }

    // Kill val-0's active EL's task container: the task fails, chainctl's policy restarts
    // it as a new task (a service update), val-0 fails over meanwhile, the chain goes on.
    let killed = net.container("val-0-el-0");
    let before = net.decided(0);
    docker_ok(&["kill", &killed]);
    net.wait_height(before + 5, Duration::from_secs(120));
    let el = wait_for(
        "val-0-el-0 to run a new task",
        Duration::from_secs(90),
        || {
            let e = net.env.service("val-0-el-0");
            (e["state"] == "ready" && e["restarts"].as_u64() >= Some(1)).then_some(e)
        },
    );
    assert!(
        el["last_exit"].as_str().unwrap_or("").contains("SIGKILL"),
        "{el}"
    );
    assert_ne!(
        net.container("val-0-el-0"),
        killed,
        "a new task, a new container"
    );
    let tasks = docker_ok(&[
        "service",
        "ps",
        "--format",
        "{{.CurrentState}}",
        &net.service("val-0-el-0"),
    ]);
    assert!(tasks.lines().any(|l| l.starts_with("Running")), "{tasks}");
    assert!(tasks.lines().any(|l| l.starts_with("Failed")), "{tasks}");

    // chainctl itself dies (SIGKILL) and comes back: it adopts every running service
    // (no new task anywhere).
    let containers: BTreeMap<String, String> = services
        .iter()
        .map(|s| (s.clone(), net.container(s)))
        .collect();
    let sup = net.env.status()["supervisor_pid"].as_i64().unwrap() as i32;
    // SAFETY: signalling the supervisor this test started.
    assert_eq!(unsafe { libc::kill(sup, libc::SIGKILL) }, 0);
    wait_for("the supervisor to die", Duration::from_secs(10), || {
        (!crate::util::alive(sup as i64)).then_some(())
    });
    net.env.up_detached();
    for (svc, c) in &containers {
        assert_eq!(
            &net.container(svc),
            c,
            "{svc} was restarted:\n{}",
            net.env.supervisor_log()
        );
    }
    assert!(
        net.env
            .supervisor_log()
            .contains("adopted its running swarm service"),
        "{}",
        net.env.supervisor_log()
    );
    let h = net.decided(0);
    net.wait_height(h + 3, Duration::from_secs(60));

    // Rolling upgrade of every built-in EL to another image, one at a time, each healthy
    // before the next: no gap in the chain beyond one block time.
    let next = "chainctl:swarm-upgrade-test";
    docker_ok(&["tag", &image, next]);
    swarm.worker.load(next);
    let start_height = net.decided(0);
    let t0 = Instant::now();
    let out = net.env.ok(&["upgrade", "builtin", "--image", next]);
    eprintln!(
        "upgrade of 8 execution clients: {:.1} s\n{out}",
        t0.elapsed().as_secs_f64()
    );
    for el in net.els() {
        assert!(out.contains(&format!("{el}: healthy on {next}")), "{out}");
        let spec = net.inspect(&el);
        assert_eq!(
            spec["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
                .as_str()
                .unwrap()
                .split('@')
                .next()
                .unwrap(),
            next,
            "{el}"
        );
        assert_eq!(net.env.service(&el)["image"], next);
    }
    let end_height = net.decided(0);
    net.wait_height(end_height + 2, Duration::from_secs(60));
    let ts = net.assert_chain(end_height + 2);
    let gaps: Vec<u64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
    let during = &gaps[start_height.saturating_sub(1) as usize..];
    eprintln!("block time gaps during the upgrade (s): {during:?}");
    assert!(
        during.iter().all(|&g| g <= 2),
        "a block took longer than one block time beyond the 1 s target during the upgrade: gaps {during:?}"
    );

    // An upgrade to an image whose program cannot run fails on the first EL, and every
    // service it changed runs its previous image again, healthy.
    let bad = "chainctl:swarm-broken-test";
    let o = Command::new(crate::util::static_binary())
        .args([
            "image",
            "build",
            "--tag",
            bad,
            "--binary",
            "/usr/bin/tini-static",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    swarm.worker.load(bad);
    let r = net.env.run(&["upgrade", "val-3-el-1", "--image", bad]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r.stdout));
    let err = text(&r.stderr);
    assert!(
        err.contains("val-3-el-1") && err.contains("rolled back"),
        "{err}\n{}",
        text(&r.stdout)
    );
    let el = net.env.service("val-3-el-1");
    assert_eq!(el["image"], next, "{el}");
    assert_eq!(el["health"], "healthy", "{el}");
    let h = net.decided(0);
    net.wait_height(h + 2, Duration::from_secs(60));

    // down removes every service, secret, config and the network; data stays.
    net.env.ok(&["down"]);
    let label = format!("label=io.chainctl.profile={NAME}");
    for kind in ["service", "secret", "config"] {
        assert_eq!(
            docker_ok(&[kind, "ls", "-q", "--filter", &label]),
            "",
            "{kind}"
        );
    }
    assert!(
        !docker(&["network", "inspect", &format!("chainctl-{NAME}")])
            .status
            .success()
    );
    assert!(net.env.state().join("data/val-0/config.json").exists());
    docker(&["rmi", next, bad]);
}
