//! `runtime: docker`: the 4-validator devnet as containers on this machine's Docker engine,
//! from the FROM-scratch image of our own static binary (built here, never pulled).
//! Faults are Docker's own: `docker kill` of an execution client's container, and, by
//! `chainctl chaos`, validators' containers disconnected from the profile's network (a
//! partition) and connected again, containers killed, chainctl killed and started again.

use crate::util::{docker, docker_ok, text, wait_for, Env};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const VALIDATORS: u32 = 4;

/// A devnet under `runtime: docker`; dropping it stops chainctl and removes whatever
/// Docker objects of the profile are left, even after a failed assertion.
struct Net {
    env: Env,
    name: String,
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
        let label = format!("label=io.chainctl.profile={}", self.name);
        let ids = text(&docker(&["ps", "-aq", "--filter", &label]).stdout);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        docker(&["network", "rm", &format!("chainctl-{}", self.name)]);
        let vols = text(&docker(&["volume", "ls", "-q", "--filter", &label]).stdout);
        for v in vols.split_whitespace() {
            docker(&["volume", "rm", "-f", v]);
        }
    }
}

impl Net {
    fn up(name: &str, port_start: u16) -> Net {
        Net::up_with(name, port_start, "  execution: [builtin, builtin]\n")
    }

    /// A devnet whose `validators` section goes on with `validators_rest`.
    fn up_with(name: &str, port_start: u16, validators_rest: &str) -> Net {
        Net::up_env(name, port_start, validators_rest, &[])
    }

    /// The same, `up` run with `vars` in its environment.
    fn up_env(name: &str, port_start: u16, validators_rest: &str, vars: &[(&str, &str)]) -> Net {
        crate::util::chainctl_image();
        let env = Env::new();
        env.write_profile(&format!(
            "name: {name}\nruntime: docker\nports: {{start: {port_start}, end: {}}}\nchain: {{chain_id: 1337, block_time: 1s}}\nvalidators:\n  count: {VALIDATORS}\n{validators_rest}gateway: {{port: auto}}\n",
            port_start + 99
        ));
        // Made before `up`, so a failed start still removes what Docker has of the profile.
        let mut net = Net {
            env,
            name: name.to_string(),
            chain: crate::util::Chain::default(),
        };
        let o = net
            .env
            .cmd(&["up", "--detach"])
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert!(o.status.success(), "up: {}", text(&o.stderr));
        net.chain = crate::util::Chain::read(&net.env.state());
        net
    }

    fn container(&self, svc: &str) -> String {
        format!("chainctl-{}-{svc}", self.name)
    }

    /// Container id, start time and whether it runs.
    fn inspect(&self, svc: &str) -> (String, String, bool) {
        let out = docker_ok(&[
            "inspect",
            "--format",
            "{{.Id}} {{.State.StartedAt}} {{.State.Running}}",
            &self.container(svc),
        ]);
        let f: Vec<&str> = out.split_whitespace().collect();
        (f[0].to_string(), f[1].to_string(), f[2] == "true")
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

    /// Until every listed validator has decided at least `h` heights.
    fn wait_height(&self, vals: &[u32], h: u64, timeout: Duration) {
        let t0 = Instant::now();
        while !vals.iter().all(|&v| self.decided(v) >= h) {
            if t0.elapsed() > timeout {
                for &v in vals {
                    eprintln!(
                        "--- val-{v}: {:?}\n{}",
                        self.status(v),
                        self.tail(&format!("val-{v}"))
                    );
                }
                eprintln!("--- supervisor\n{}", self.env.supervisor_log());
                panic!("timed out after {timeout:?} waiting for validators {vals:?} to decide {h} heights");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every EL has the same block at every height 1..=h: no fork.
    fn assert_agree(&self, h: u64) {
        let mut canon: BTreeMap<u64, String> = BTreeMap::new();
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
                        json!([format!("0x{n:x}"), false]),
                    )
                    .unwrap_or_else(|| panic!("{el} has no block {n}"));
                let hash = b["hash"].as_str().unwrap().to_string();
                let first = canon.entry(n).or_insert_with(|| hash.clone());
                assert_eq!(*first, hash, "{el} disagrees at height {n}: FORK");
            }
        }
    }
}

#[test]
fn containers_fail_over_when_an_el_is_killed_restart_in_place_and_are_adopted_after_chainctl_restarts(
) {
    let _machine = crate::util::busy_machine();
    let _engine = crate::util::docker_engine();
    // The release binary the containers run ignores the test hooks: told to propose bad
    // state roots (as the consensus test's debug build does), val-1 proposes valid blocks.
    let net = Net::up_env(
        "dk-a",
        25100,
        "  execution: [builtin, builtin]\n",
        &[("CHAINCTL_TEST_FAULT", "bad-state-root:val-1")],
    );
    net.wait_height(&[0, 1, 2, 3], 7, Duration::from_secs(120));
    let env_of_val1 = docker_ok(&[
        "inspect",
        "--format",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &net.container("val-1"),
    ]);
    assert!(
        env_of_val1.contains("CHAINCTL_TEST_FAULT=bad-state-root:val-1"),
        "the variable reached the container: {env_of_val1}"
    );
    let log = |svc: &str| {
        std::fs::read_to_string(net.env.state().join(format!("logs/{svc}.log"))).unwrap_or_default()
    };
    assert!(
        !log("val-1").contains("TEST FAULT"),
        "{}",
        net.tail("val-1")
    );
    for v in ["val-0", "val-2", "val-3"] {
        assert!(
            !log(v).contains("state root mismatch"),
            "{v}: {}",
            net.tail(v)
        );
    }

    // Every service is a container of the profile, with its labels, on 127.0.0.1 only,
    // without capabilities, read-only, as chainctl's user.
    let st = net.env.status();
    for s in st["services"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        if name == "gateway" {
            continue;
        }
        assert_eq!(s["backend"], "docker", "{s}");
        let cfg = docker_ok(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"io.chainctl.service\"}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.Config.User}} {{.HostConfig.RestartPolicy.Name}} {{json .HostConfig.PortBindings}}",
            &net.container(name),
        ]);
        let uid = unsafe { libc::getuid() };
        assert!(
            cfg.starts_with(&format!("{name} true [ALL] {uid}:")) && cfg.contains(" no "),
            "{name}: {cfg}"
        );
        assert!(
            cfg.contains("\"HostIp\":\"127.0.0.1\"") && !cfg.contains("0.0.0.0"),
            "{name} publishes beyond loopback: {cfg}"
        );
    }

    // status names the program inside the container (not docker-init), with its memory.
    let v1 = net.env.service("val-1");
    let pid = v1["pid"].as_i64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        text(&cmdline)
            .replace('\0', " ")
            .starts_with("/chainctl node consensus"),
        "{v1}"
    );
    assert!(v1["memory_bytes"].as_u64().unwrap() > 4 << 20, "{v1}");

    // docker kill of val-0's active execution client: the validator fails over to its
    // backup, and chainctl starts the same container again (not a new one).
    let (el_id, _, _) = net.inspect("val-0-el-0");
    let before = net.decided(1);
    docker_ok(&["kill", &net.container("val-0-el-0")]);
    net.wait_height(&[0, 1, 2, 3], before + 6, Duration::from_secs(120));
    let s = net.status(0).unwrap();
    assert_eq!(s["active_el"], "val-0-el-1", "{s}");
    let log = s["switch_log"].as_array().unwrap();
    assert_eq!(log[0]["from"], "val-0-el-0", "{s}");
    let el = wait_for(
        "val-0-el-0 to be restarted",
        Duration::from_secs(60),
        || {
            let e = net.env.service("val-0-el-0");
            (e["state"] == "ready" && e["restarts"].as_u64() >= Some(1)).then_some(e)
        },
    );
    assert!(
        el["last_exit"].as_str().unwrap_or("").contains("SIGKILL"),
        "{el}"
    );
    let (again, _, running) = net.inspect("val-0-el-0");
    assert!(running);
    assert_eq!(again, el_id, "restarted in place, not recreated");

    // chainctl itself dies (SIGKILL) and comes back: it adopts every running container.
    let before: BTreeMap<String, (String, String, bool)> = net
        .els()
        .into_iter()
        .chain((0..VALIDATORS).map(|v| format!("val-{v}")))
        .map(|s| (s.clone(), net.inspect(&s)))
        .collect();
    let sup = net.env.status()["supervisor_pid"].as_i64().unwrap() as i32;
    // SAFETY: signalling the supervisor this test started.
    assert_eq!(unsafe { libc::kill(sup, libc::SIGKILL) }, 0);
    wait_for("the supervisor to die", Duration::from_secs(10), || {
        (!crate::util::alive(sup as i64)).then_some(())
    });
    net.env.up_detached();
    for (svc, was) in &before {
        assert_eq!(&net.inspect(svc), was, "{svc} was recreated or restarted");
    }
    assert!(
        net.env
            .supervisor_log()
            .contains("adopted its running container"),
        "{}",
        net.env.supervisor_log()
    );
    let h = net.decided(0);
    net.wait_height(&[0, 1, 2, 3], h + 3, Duration::from_secs(60));
    // Logs still arrive through the Docker API after the adoption.
    let lines = |svc: &str| net.tail(svc).lines().count();
    assert!(lines("val-1") > 0);
    net.assert_agree(h + 3);

    // `chainctl upgrade` under `runtime: docker`: one execution client's container is
    // recreated from another image, healthy before the command returns.
    let next = "chainctl:docker-upgrade-test";
    docker_ok(&[
        "tag",
        &format!("chainctl:{}", env!("CARGO_PKG_VERSION")),
        next,
    ]);
    let (old_id, _, _) = net.inspect("val-1-el-1");
    let out = net.env.ok(&["upgrade", "val-1-el-1", "--image", next]);
    assert!(
        out.contains(&format!("val-1-el-1: healthy on {next}")),
        "{out}"
    );
    let image = docker_ok(&[
        "inspect",
        "--format",
        "{{.Config.Image}}",
        &net.container("val-1-el-1"),
    ]);
    assert_eq!(image, next);
    assert_ne!(
        net.inspect("val-1-el-1").0,
        old_id,
        "recreated from the new image"
    );
    assert_eq!(net.env.service("val-1-el-1")["image"], next);

    // The readiness report reads the containers' evidence as it reads processes': their
    // published ports (held by Docker's proxy) are not conflicts, their data dirs, logs,
    // secrets and endpoints are where chainctl put them.
    let out = net.env.path("report.json");
    let r = net
        .env
        .run(&["report", "--format", "json", "--out", out.to_str().unwrap()]);
    assert!(
        r.status.code().is_some_and(|c| c < 2),
        "{}",
        text(&r.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for id in [
        "infra.services_running",
        "infra.endpoints",
        "infra.port_conflicts",
        "infra.storage",
        "consensus.agreement",
        "execution.synced",
        "security.jwt_files",
        "security.secret_files",
        "security.engine_auth",
        "security.listeners",
        "security.secrets_in_logs",
        // A transaction through the gateway's container, in a finalized block, the same
        // receipt from every client container.
        "execution.canary",
    ] {
        let c = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id}"));
        assert_eq!(c["status"], "pass", "{c}");
    }

    // down stops and removes the containers and the network; data stays.
    net.env.ok(&["down"]);
    let label = format!("label=io.chainctl.profile={}", net.name);
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &label]), "");
    assert!(
        !docker(&["network", "inspect", &format!("chainctl-{}", net.name)])
            .status
            .success()
    );
    assert!(net.env.state().join("data/val-0/config.json").exists());
    docker(&["rmi", next]);
}

/// Validators not connected to the profile's network right now, as Docker says.
fn cut_off(net: &Net) -> Vec<String> {
    let network = format!("chainctl-{}", net.name);
    (0..VALIDATORS)
        .map(|v| format!("val-{v}"))
        .filter(|v| {
            let o = docker(&[
                "inspect",
                "--format",
                "{{json .NetworkSettings.Networks}}",
                &net.container(v),
            ]);
            // A container being restarted may not be inspectable for a moment.
            o.status.success() && !text(&o.stdout).contains(&format!("\"{network}\""))
        })
        .collect()
}

/// `chainctl chaos` on the docker runtime: validators' containers cut off from the network
/// and connected again (`partition`), containers killed (`docker kill`) and chainctl itself
/// killed and started again, under load through the gateway. Docker is asked, while the
/// experiment runs, which validator is cut off: the partition is real.
#[test]
fn chaos_on_containers_partitions_kills_and_loses_nothing() {
    let _machine = crate::util::quiet_machine();
    let _engine = crate::util::docker_engine();
    let net = Net::up("dk-b", 25200);
    net.wait_height(&[0, 1, 2, 3], 3, Duration::from_secs(120));
    let child = net
        .env
        .cmd(&[
            "chaos",
            "--faults",
            "partition,kill,supervisor",
            "--count",
            "5",
            "--every",
            "5s..7s",
            "--duration",
            "45s",
            "--partition-for",
            "8s",
            "--tps",
            "40",
            "--seed",
            "29",
            "--output",
            "json",
        ])
        .env("CHAINCTL_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Watched from outside while it runs: which validators Docker has off the network,
    // and whether the other three kept deciding meanwhile.
    let mut seen_cut = std::collections::BTreeSet::new();
    let mut decided_while_cut = 0u64;
    let t0 = Instant::now();
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(300), "chaos did not end");
        let cut = cut_off(&net);
        if let [one] = cut.as_slice() {
            let other = (0..VALIDATORS)
                .find(|v| format!("val-{v}") != *one)
                .unwrap();
            let before = net.decided(other);
            std::thread::sleep(Duration::from_millis(2500));
            if cut_off(&net) == cut {
                decided_while_cut =
                    decided_while_cut.max(net.decided(other).saturating_sub(before));
            }
            seen_cut.insert(one.clone());
        }
        assert!(cut.len() <= 1, "more than one validator cut off: {cut:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let o = child.wait_with_output().unwrap();
    let out = text(&o.stdout);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!(
            "chaos: no JSON result ({e}):\n{out}\n{}\n--- supervisor\n{}",
            text(&o.stderr),
            net.env.supervisor_log()
        )
    });
    eprintln!("chaos:\n{}", text(&o.stderr));
    assert_eq!(v["verdict"], "PASS", "{v}");
    assert!(o.status.success());
    assert!(crate::util::fault_kinds(&v).contains("partition"), "{v}");
    for f in v["faults"].as_array().unwrap() {
        let r = f["recovery_s"]
            .as_f64()
            .unwrap_or_else(|| panic!("not back: {f}"));
        // A validator whose connections died while it was cut off notices that its peers
        // answer again and reconnects at once — not after the 15 s stall watchdog (which
        // made this 17 s).
        if f["kind"] == "partition" {
            assert!(r < 12.0, "partition recovered only after {r:.1} s: {f}");
        }
    }
    // Docker had the validator off the network, and the other three went on without it.
    assert!(
        !seen_cut.is_empty(),
        "no validator was ever off the network"
    );
    assert!(
        decided_while_cut >= 1,
        "the others decided nothing while one was cut off"
    );
    // Every one back on the network, under its name, and nothing lost or forked.
    assert_eq!(cut_off(&net), Vec::<String>::new());
    let l = &v["load"];
    assert!(l["sent"].as_u64().unwrap() >= 500, "{l}");
    assert_eq!(l["lost"], 0, "{l}");
    assert_eq!(l["finalized"], l["sent"], "{l}");
    assert_eq!(v["forks"], json!([]));
    let target = net.decided(0);
    net.wait_height(&[0, 1, 2, 3], target + 2, Duration::from_secs(120));
    net.assert_agree(target);
}

#[test]
fn a_missing_image_stops_up_before_anything_starts_with_the_command_that_provides_it() {
    let _engine = crate::util::docker_engine();
    let env = Env::new();
    env.write_profile(
        "name: dk-c\nruntime: docker\nports: {start: 25290, end: 25299}\nservices:\n  el:\n    command: [reth, node]\n    image: chainctl-test-absent/reth:v0\n",
    );
    let o = env.run(&["up", "--detach"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains(
            "image `chainctl-test-absent/reth:v0` (services el) is not on this Docker engine"
        ) && err.contains("chainctl never pulls")
            && err.contains("docker pull chainctl-test-absent/reth:v0"),
        "{err}"
    );
    let label = "label=io.chainctl.profile=dk-c";
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", label]), "");
    assert!(!docker(&["network", "inspect", "chainctl-dk-c"])
        .status
        .success());
}

/// Reth, Geth and Erigon under `runtime: docker`, from an image the profile names (here
/// a locally built one whose `reth`, `geth` and `erigon` are stand-ins running our engine
/// behind each client's command line): Geth's and Erigon's init steps run first, each
/// in a one-shot container of the client's image that is gone afterwards; the
/// validators drive every client through the Engine API at the ports and JWT secret its
/// command line names; each client has a fixed address in the profile's subnet, and the
/// peers Reth and Geth read from their config files are the other clients' enodes at
/// exactly those addresses.
#[test]
fn external_clients_run_from_their_image_with_init_steps_and_peers_at_fixed_addresses() {
    let _machine = crate::util::busy_machine();
    let _engine = crate::util::docker_engine();
    let image = crate::util::standin_image();
    let net = Net::up_with(
        "dk-ext",
        25400,
        &format!(
            "  execution: [[reth, builtin], [geth], [erigon], [reth]]\n  clients:\n    reth: {{image: {image}}}\n    geth: {{image: {image}}}\n    erigon: {{image: {image}}}\n"
        ),
    );
    let els = [
        "val-0-el-0",
        "val-0-el-1",
        "val-1-el-0",
        "val-2-el-0",
        "val-3-el-0",
    ];
    net.wait_height(&[0, 1, 2, 3], 3, Duration::from_secs(120));
    for el in els {
        wait_for(
            &format!("{el} at height 3"),
            Duration::from_secs(60),
            || (net.el_height(el) >= 3).then_some(()),
        );
    }
    let hashes: std::collections::BTreeSet<Option<String>> =
        els.iter().map(|el| net.block_hash(el, 3)).collect();
    assert_eq!(hashes.len(), 1, "one chain on every client: {hashes:?}");

    let data = |el: &str| net.env.state().join("data").join(el);
    let recorded = |el: &str, file: &str| -> Vec<String> {
        std::fs::read_to_string(data(el).join(file))
            .unwrap_or_else(|e| panic!("{el}: {file}: {e}"))
            .lines()
            .map(String::from)
            .collect()
    };
    // The clients' own commands, from their own images (no chainctl client-exec).
    for (el, program) in [
        ("val-0-el-0", "reth"),
        ("val-1-el-0", "geth"),
        ("val-2-el-0", "erigon"),
    ] {
        let cmd = docker_ok(&[
            "inspect",
            "--format",
            "{{json .Config.Entrypoint}} {{.Config.Image}}",
            &net.container(el),
        ]);
        assert_eq!(cmd, format!("[\"{program}\"] {image}"), "{el}");
    }
    // The init steps ran, with a genesis of the network's, and their containers are gone.
    for (el, first) in [("val-1-el-0", "--datadir"), ("val-2-el-0", "init")] {
        let init = recorded(el, "standin-init.argv");
        assert_eq!(init[0], first, "{el}: {init:?}");
        let genesis = init.last().unwrap();
        assert!(
            genesis.starts_with(&net.env.state().join("network").display().to_string())
                && genesis.ends_with(".json")
                && std::path::Path::new(genesis).is_file(),
            "{el}: {init:?}"
        );
    }
    assert!(
        !data("val-0-el-0").join("standin-init.argv").exists(),
        "Reth has no init step"
    );
    assert_eq!(
        docker_ok(&["ps", "-aq", "--filter", "label=io.chainctl.init-of"]),
        "",
        "init containers are removed"
    );

    // Fixed addresses, in the profile's subnet, and the peers at exactly those.
    let ip_of = |el: &str| {
        docker_ok(&[
            "inspect",
            "--format",
            "{{(index .NetworkSettings.Networks \"chainctl-dk-ext\").IPAddress}}",
            &net.container(el),
        ])
    };
    let net_subnet = docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{(index .IPAM.Config 0).Subnet}}",
        "chainctl-dk-ext",
    ]);
    let plan: Value = serde_json::from_str(&net.env.ok(&["validate", "--output", "json"])).unwrap();
    assert_eq!(
        plan["subnet"],
        net_subnet.as_str(),
        "the plan's subnet is the network's"
    );
    let node_id = |el: &str| {
        let text =
            std::fs::read_to_string(net.env.state().join(format!("secrets/p2p/{el}.key"))).unwrap();
        let key = secp256k1::SecretKey::from_slice(&hex::decode(text).unwrap()).unwrap();
        let public = secp256k1::PublicKey::from_secret_key(secp256k1::SECP256K1, &key);
        hex::encode(&public.serialize_uncompressed()[1..])
    };
    let enode = |el: &str| {
        format!(
            "enode://{}@{}:{}",
            node_id(el),
            ip_of(el),
            net.port(el, "p2p")
        )
    };
    let external = ["val-0-el-0", "val-1-el-0", "val-2-el-0", "val-3-el-0"];
    // Reth's trusted peers and Geth's static and trusted ones (Erigon takes peers only
    // as flags, which nothing adds in a container).
    for (el, field) in [
        ("val-0-el-0", "/peers/trusted_nodes"),
        ("val-3-el-0", "/peers/trusted_nodes"),
        ("val-1-el-0", "/Node/P2P/StaticNodes"),
        ("val-1-el-0", "/Node/P2P/TrustedNodes"),
    ] {
        let doc = crate::clients::toml_config(el, &recorded(el, "standin.argv"));
        let want: std::collections::BTreeSet<String> = external
            .iter()
            .filter(|o| **o != el)
            .map(|o| enode(o))
            .collect();
        assert_eq!(
            crate::clients::strings(doc.pointer(field).unwrap()),
            want,
            "{el} {field}"
        );
    }
    // Each client's address is the one the plan gives it, and stays across a restart.
    let before = ip_of("val-1-el-0");
    assert_eq!(
        plan["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "val-1-el-0")
            .unwrap()["address"],
        before.as_str()
    );
    docker_ok(&["kill", &net.container("val-1-el-0")]);
    wait_for("val-1-el-0 restarted", Duration::from_secs(60), || {
        let e = net.env.service("val-1-el-0");
        (e["state"] == "ready" && e["restarts"].as_u64() >= Some(1)).then_some(())
    });
    assert_eq!(
        ip_of("val-1-el-0"),
        before,
        "the same address after a restart"
    );
}
