//! `chainctl chaos` on the default devnet's shape (4 validators × 2 built-in execution
//! clients, the gateway), real processes on loopback, with load through the gateway:
//! a soak under random kills, then every service killed at once and chainctl itself
//! killed and started again. What the experiment reports is checked against the network
//! itself: every execution client's block at every height, compared here; the processes
//! of every service, counted in /proc.

use crate::util::{text, Chain, Env};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const PROFILE: &str = "name: chaosnet\nports: {start: 27800, end: 27899}\nchain: {chain_id: 1337, block_time: 1s, dev_accounts: 100}\nvalidators:\n  count: 4\n  execution: [builtin, builtin]\ngateway: {port: auto}\n";

fn chaos(env: &Env, args: &[&str]) -> Value {
    let mut all = vec!["chaos", "--output", "json"];
    all.extend_from_slice(args);
    let o = env
        .cmd(&all)
        .env("CHAINCTL_LOG", "info")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = text(&o.stderr);
    let out = text(&o.stdout);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("chaos {args:?}: no JSON result ({e}):\n{out}\n{err}"));
    eprintln!("chaos {args:?}:\n{err}");
    // The exit code is the verdict.
    assert_eq!(
        o.status.success(),
        v["verdict"] == "PASS",
        "exit code and verdict disagree: {v}"
    );
    // What `chainctl report` reads is what was printed.
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(env.state().join("chaos/last.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(kept, v);
    v
}

/// Every execution client holds the same block at every height up to the lowest head of
/// them all, read here rather than taken from the experiment's own check.
fn assert_one_chain(chain: &Chain, els: &[String]) -> u64 {
    let top = els.iter().map(|e| chain.el_height(e)).min().unwrap();
    assert!(top > 0, "no blocks");
    let mut canon: BTreeMap<u64, String> = BTreeMap::new();
    for el in els {
        for n in 1..=top {
            let h = chain
                .block_hash(el, n)
                .unwrap_or_else(|| panic!("{el} has no block {n}"));
            let c = canon.entry(n).or_insert_with(|| h.clone());
            assert_eq!(*c, h, "{el} disagrees at height {n}: FORK");
        }
    }
    top
}

/// Processes whose command line names `needle` as one whole argument.
fn processes_with_arg(needle: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmd.split(|b| *b == 0).any(|a| a == needle.as_bytes()) {
            n += 1;
        }
    }
    n
}

/// Each service runs as exactly one process (its data dir is one of its arguments), and
/// one supervisor runs for the state dir.
fn assert_no_duplicates(env: &Env, services: &[String]) {
    for svc in services {
        let dir = env.state().join("data").join(svc);
        let n = processes_with_arg(&dir.to_string_lossy());
        assert_eq!(n, 1, "{svc}: {n} processes hold {}", dir.display());
    }
    let st = env.status();
    let sup = st["supervisor_pid"].as_i64().expect("a supervisor runs");
    assert!(crate::util::alive(sup));
    assert_eq!(
        std::fs::read_to_string(env.state().join("supervisor.lock"))
            .unwrap()
            .trim(),
        sup.to_string()
    );
}

/// Every fault recovered, at least `min_sent` transactions accepted and every one of them
/// finalized, no fork, nothing given up.
fn assert_nothing_lost(v: &Value, min_sent: u64) {
    for f in v["faults"].as_array().unwrap() {
        assert!(f["recovery_s"].is_number(), "not back: {f}");
    }
    let l = &v["load"];
    let sent = l["sent"].as_u64().unwrap();
    assert!(sent >= min_sent, "sent {sent}: {l}");
    assert_eq!(
        (
            l["finalized"].as_u64().unwrap(),
            l["lost"].as_u64().unwrap()
        ),
        (sent, 0),
        "every accepted transaction finalized: {l}"
    );
    assert_eq!(v["forks"], json!([]));
    assert_eq!(v["given_up"], json!([]));
}

#[test]
fn a_devnet_under_kills_restart_all_and_a_killed_supervisor_loses_nothing_and_never_forks() {
    let _machine = crate::util::quiet_machine();
    let env = Env::new();
    env.write_profile(PROFILE);
    env.up_detached();
    // `up --detach` returns once the gateway can serve: the first request succeeds.
    let gw = env.status()["monitor"]["gateway"]
        .as_str()
        .expect("the gateway's address")
        .to_string();
    let first: Value = ureq::post(&format!("http://{gw}"))
        .timeout(Duration::from_secs(10))
        .send_json(json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}))
        .map_err(|e| format!("{e}"))
        .and_then(|r| r.into_json().map_err(|e| format!("{e}")))
        .unwrap_or_else(|e| json!({"error": e}));
    assert!(
        first.get("result").is_some(),
        "the first request after up --detach: {first}"
    );
    let mut chain = Chain::read(&env.state());
    chain.locate(&env.status());
    let els = chain.els(4);
    let mut services = els.clone();
    services.extend((0..4).map(|v| format!("val-{v}")));

    // The soak: a random execution client or validator killed every 5–8 s for 120 s
    // under 200 tx/s through the gateway.
    let v = chaos(
        &env,
        &[
            "--faults",
            "kill",
            "--every",
            "5s..8s",
            "--duration",
            "120s",
            "--tps",
            "200",
            "--seed",
            "26",
        ],
    );
    let faults = v["faults"].as_array().unwrap();
    assert!(faults.len() >= 15, "{} faults in 120 s", faults.len());
    let hit: std::collections::BTreeSet<&str> = faults
        .iter()
        .map(|f| f["targets"][0].as_str().unwrap())
        .collect();
    assert!(
        hit.iter().any(|t| !t.contains("-el-")) && hit.iter().any(|t| t.contains("-el-")),
        "validators and execution clients both hit: {hit:?}"
    );
    assert_nothing_lost(&v, 20_000);
    let back = v["back_to_rate_s"]
        .as_f64()
        .expect("blocks at the block time again");
    assert!(
        back <= 5.0,
        "blocks at the block time {back} s after the last fault"
    );
    assert_eq!(v["verdict"], "PASS", "{v}");
    let h1 = assert_one_chain(&chain, &els);

    // Every service killed at once, and chainctl itself killed and started again (its
    // services adopted), under load.
    let v = chaos(
        &env,
        &[
            "--faults",
            "restart-all,supervisor",
            "--every",
            "8s",
            "--duration",
            "32s",
            "--tps",
            "200",
            "--seed",
            "3",
        ],
    );
    assert_eq!(
        crate::util::fault_kinds(&v),
        ["restart-all", "supervisor"]
            .into_iter()
            .map(String::from)
            .collect(),
        "{v}"
    );
    assert_nothing_lost(&v, 5_000);
    assert_no_duplicates(&env, &services);
    let h2 = assert_one_chain(&chain, &els);
    assert!(h2 > h1 + 20, "the chain went on: {h1} → {h2}");
    env.ok(&["down"]);
}
