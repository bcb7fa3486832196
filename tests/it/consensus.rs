//! The consensus devnet, as `chainctl up` runs it: 4 validators (Malachite BFT), each
//! driving two built-in execution clients through the Engine API, real processes on
//! loopback. Faults are real too: SIGSTOP freezes a validator, SIGKILL kills one.

use crate::util::{wait_for, Env};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const VALIDATORS: u32 = 4;

fn profile(name: &str, port_start: u16) -> String {
    format!(
        "name: {name}\nports: {{start: {port_start}, end: {}}}\nchain: {{chain_id: 1337, block_time: 1s}}\nvalidators:\n  count: {VALIDATORS}\n  execution: [builtin, builtin]\ngateway: {{port: auto}}\n",
        port_start + 99
    )
}

/// A running devnet and the ways to look at it.
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

impl Net {
    fn up(name: &str, port_start: u16) -> Net {
        Net::up_with(name, port_start, &[])
    }

    fn up_with(name: &str, port_start: u16, vars: &[(&str, &str)]) -> Net {
        let env = Env::new();
        env.write_profile(&profile(name, port_start));
        let o = env
            .cmd(&["up", "--detach"])
            .envs(vars.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "up: {}", crate::util::text(&o.stderr));
        let chain = crate::util::Chain::read(&env.state());
        Net { env, chain }
    }

    fn els(&self) -> Vec<String> {
        self.chain.els(VALIDATORS)
    }

    /// Wait until every listed validator has decided at least `h` heights.
    fn wait_height(&self, vals: &[u32], h: u64, timeout: Duration) {
        let t0 = Instant::now();
        while !vals.iter().all(|&v| self.decided(v) >= h) {
            if t0.elapsed() > timeout {
                // Say what the laggards were doing before failing.
                for &v in vals.iter().filter(|&&v| self.decided(v) < h) {
                    let log =
                        std::fs::read_to_string(self.env.state().join(format!("logs/val-{v}.log")))
                            .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(60).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    eprintln!("--- val-{v}: {:?}\n{}", self.status(v), tail.join("\n"));
                }
                for v in 0..VALIDATORS {
                    let log =
                        std::fs::read_to_string(self.env.state().join(format!("logs/val-{v}.log")))
                            .unwrap_or_default();
                    for l in log
                        .lines()
                        .filter(|l| l.contains("onnection") && !l.contains("DEBUG"))
                    {
                        eprintln!("val-{v}: {l}");
                    }
                }
                panic!("timed out after {timeout:?} waiting for validators {vals:?} to decide {h} heights");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every EL in `els` has the same block at every height 1..=h (and has them all).
    fn assert_agree(&self, els: &[String], h: u64) {
        let mut canon: BTreeMap<u64, String> = BTreeMap::new();
        for el in els {
            wait_for(
                &format!("{el} to reach block {h}"),
                Duration::from_secs(60),
                || (self.el_height(el) >= h).then_some(()),
            );
            for n in 1..=h {
                let hash = self
                    .block_hash(el, n)
                    .unwrap_or_else(|| panic!("{el} has no block {n}"));
                let first = canon.entry(n).or_insert_with(|| hash.clone());
                assert_eq!(*first, hash, "{el} disagrees at height {n}: FORK");
            }
        }
    }

    fn pid(&self, svc: &str) -> i32 {
        let st = self.env.status();
        crate::util::pid_of(&st, svc).unwrap_or_else(|| panic!("{svc} is not running: {st}")) as i32
    }

    /// Wait until `svc`'s log holds `needle`.
    fn wait_for_log(&self, svc: &str, needle: &str, limit: Duration) {
        let path = self.env.state().join(format!("logs/{svc}.log"));
        wait_for(&format!("{svc}'s log to say {needle:?}"), limit, || {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .contains(needle)
                .then_some(())
        });
    }

    fn signal(&self, svc: &str, sig: libc::c_int) {
        let pid = self.pid(svc);
        // SAFETY: sending a signal to a pid we started.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {svc}");
    }
}

#[test]
fn four_validators_agree_keep_going_without_one_and_a_restarted_one_catches_up() {
    let net = Net::up("cons-a", 24000);
    let t0 = Instant::now();
    net.wait_height(&[0, 1, 2, 3], 1, Duration::from_secs(60));
    eprintln!("first finalized block {:?} after up returned", t0.elapsed());
    net.wait_height(&[0, 1, 2, 3], 20, Duration::from_secs(120));
    net.assert_agree(&net.els(), 20);
    let s = net.status(0).unwrap();
    assert_eq!(s["validators"], 4);
    assert_eq!(s["consensus_violations"], 0);
    assert_eq!(s["active_el"], "val-0-el-0");
    for el in s["els"].as_array().unwrap() {
        assert_eq!(el["state"], "ok", "{el}");
    }

    // A blob transaction (two blobs, cell proofs) sent to val-0's active EL: when val-0
    // proposes, its block carries it with the blobs bundle, and the other validators' ELs
    // import that block with the versioned hashes their consensus node derives from the
    // bundle.
    let (raw, hash) = crate::blobutil::with_big_stack(|| {
        let key: alloy_signer_local::PrivateKeySigner =
            "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
                .parse()
                .unwrap();
        let sidecar = crate::blobutil::cell_sidecar(&[1, 2]);
        crate::blobutil::blob_tx(&key, 1337, 0, sidecar.into(), None, 1, 1_000_000_000)
    });
    // The first blob transaction after a start waits for the KZG trusted setup to load.
    let url = format!("http://127.0.0.1:{}", net.port("val-0-el-0", "http"));
    let r: Value = ureq::post(&url)
        .timeout(Duration::from_secs(30))
        .send_json(
            json!({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw]}),
        )
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(
        r["result"],
        json!(hash),
        "the blob transaction was refused: {r}"
    );
    let included = wait_for(
        "the blob transaction in a block",
        Duration::from_secs(60),
        || {
            net.rpc("val-3-el-1", "eth_getTransactionReceipt", json!([hash]))
                .filter(|r| r.is_object())
        },
    );
    assert_eq!(included["status"], "0x1", "{included}");
    assert_eq!(
        included["blobGasUsed"],
        json!(format!("{:#x}", 2 * 131_072))
    );
    let n = u64::from_str_radix(
        included["blockNumber"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    net.assert_agree(&net.els(), n);

    // Freeze one validator: the other three (> 2/3) go on.
    net.signal("val-3", libc::SIGSTOP);
    let frozen_at = net.decided(0);
    net.wait_height(&[0, 1, 2], frozen_at + 5, Duration::from_secs(60));
    // Thaw it: it catches up (votes it missed come from value sync) and agrees.
    net.signal("val-3", libc::SIGCONT);
    let target = net.decided(0) + 2;
    net.wait_height(&[3], target, Duration::from_secs(60));

    // Kill it outright: the supervisor restarts it; it resumes from its decided-block log.
    let before = net.decided(3);
    net.signal("val-3", libc::SIGKILL);
    wait_for("val-3 restarted", Duration::from_secs(30), || {
        let st = net.env.status();
        (crate::util::pid_of(&st, "val-3").is_some() && net.status(3).is_some()).then_some(())
    });
    let target = net.decided(0) + 3;
    net.wait_height(&[3], target.max(before + 3), Duration::from_secs(90));
    let h = net.decided(0).min(net.decided(3));
    net.assert_agree(&net.els(), h);
    assert_eq!(net.status(3).unwrap()["consensus_violations"], 0);

    // Restarted from another genesis (same validators, another block time): it refuses
    // to start, naming both hashes, instead of joining and never agreeing.
    let cfg_path = net.env.state().join("data/val-3/config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let mut g: Value =
        serde_json::from_str(&std::fs::read_to_string(cfg["genesis"].as_str().unwrap()).unwrap())
            .unwrap();
    g["blockTimeSecs"] = json!(2);
    let other = net.env.path("other-genesis.json");
    std::fs::write(&other, serde_json::to_vec(&g).unwrap()).unwrap();
    cfg["genesis"] = json!(other);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    net.signal("val-3", libc::SIGKILL);
    net.wait_for_log(
        "val-3",
        "does not match the genesis of the validator at",
        Duration::from_secs(30),
    );
}

#[test]
fn with_two_of_four_down_the_chain_halts_without_forking_and_resumes() {
    let net = Net::up("cons-b", 24100);
    net.wait_height(&[0, 1, 2, 3], 3, Duration::from_secs(90));
    net.signal("val-2", libc::SIGSTOP);
    net.signal("val-3", libc::SIGSTOP);
    // Let an in-flight height finish, then nothing may be decided: 2 of 4 is no quorum.
    std::thread::sleep(Duration::from_secs(3));
    let halted = (net.decided(0), net.decided(1));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        (net.decided(0), net.decided(1)),
        halted,
        "decisions without a quorum"
    );
    // One comes back: 3 of 4 is a quorum again.
    net.signal("val-3", libc::SIGCONT);
    net.wait_height(
        &[0, 1, 3],
        halted.0.max(halted.1) + 3,
        Duration::from_secs(120),
    );
    net.signal("val-2", libc::SIGCONT);
    let h = net.decided(0);
    net.wait_height(&[2], h, Duration::from_secs(90));
    net.assert_agree(&net.els(), h);
}

#[test]
fn killing_a_validators_active_el_fails_over_to_its_backup_and_the_el_is_resynced() {
    let net = Net::up("cons-c", 24200);
    net.wait_height(&[0, 1, 2, 3], 3, Duration::from_secs(90));
    let before = net.decided(1);
    // The active EL hangs (a killed one is back within a second with its chain from its
    // data dir, too fast to need a failover): val-0's engine calls to it time out, and it
    // keeps proposing (every 4th height) through its backup.
    net.signal("val-0-el-0", libc::SIGSTOP);
    net.wait_height(&[0, 1, 2, 3], before + 8, Duration::from_secs(90));
    let s = net.status(0).unwrap();
    assert_eq!(s["active_el"], "val-0-el-1", "{s}");
    assert!(s["el_switches"].as_u64().unwrap() >= 1, "{s}");
    let log = s["switch_log"].as_array().unwrap();
    assert_eq!(log[0]["from"], "val-0-el-0");
    assert_eq!(log[0]["to"], "val-0-el-1");
    // Now kill it: the supervisor restarts it, it reopens its chain from its data dir
    // (behind by the heights decided while it hung) and the validator replays the rest.
    net.signal("val-0-el-0", libc::SIGKILL);
    net.wait_for_log(
        "val-0-el-0",
        "opened the saved chain",
        Duration::from_secs(60),
    );
    let h = net.decided(0);
    net.assert_agree(
        &[
            "val-0-el-0".to_string(),
            "val-0-el-1".to_string(),
            "val-1-el-0".to_string(),
        ],
        h,
    );
    // Every height was decided: no gap in the chain, every block has its parent.
    for n in before..h {
        let b = net
            .rpc(
                "val-1-el-0",
                "eth_getBlockByNumber",
                json!([format!("0x{:x}", n + 1), false]),
            )
            .unwrap();
        assert_eq!(
            b["parentHash"].as_str(),
            net.block_hash("val-1-el-0", n).as_deref()
        );
    }
}

#[test]
fn after_kill_9_of_everything_up_continues_the_same_history() {
    let net = Net::up("cons-d", 24300);
    net.wait_height(&[0, 1, 2, 3], 5, Duration::from_secs(90));
    let h = net.decided(0).min(net.decided(1));
    let before: Vec<String> = (1..=h)
        .map(|n| net.block_hash("val-1-el-0", n).unwrap())
        .collect();
    // kill -9 the supervisor and every service at once.
    let st = net.env.status();
    let sup: i32 = std::fs::read_to_string(net.env.state().join("supervisor.lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut pids = vec![sup];
    for s in st["services"].as_array().unwrap() {
        if let Some(p) = s["pid"].as_i64() {
            pids.push(p as i32);
        }
    }
    for p in &pids {
        // SAFETY: killing processes this test started.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    wait_for("everything dead", Duration::from_secs(10), || {
        pids.iter()
            .all(|p| !crate::util::alive(*p as i64))
            .then_some(())
    });
    net.env.up_detached();
    // The validators resume at their stored height; the (in-memory) ELs get the chain
    // replayed, and new heights extend the same history.
    net.wait_height(&[0, 1, 2, 3], h + 3, Duration::from_secs(120));
    for el in net.els() {
        wait_for(&format!("{el} resynced"), Duration::from_secs(60), || {
            (net.el_height(&el) >= h).then_some(())
        });
        for (i, want) in before.iter().enumerate() {
            assert_eq!(
                net.block_hash(&el, i as u64 + 1).as_ref(),
                Some(want),
                "{el} rewrote history at height {}",
                i + 1
            );
        }
    }
    let h2 = net.decided(0).min(net.decided(2));
    net.assert_agree(&net.els(), h2);
}

#[test]
fn a_proposer_with_a_wrong_state_root_gets_nil_votes_and_the_height_still_decides() {
    // val-1 proposes at round 0 of heights 2, 6, 10, …: every one of its blocks claims a
    // state root the others' engines do not compute.
    let net = Net::up_with(
        "cons-e",
        24400,
        &[("CHAINCTL_TEST_FAULT", "bad-state-root:val-1")],
    );
    net.wait_height(&[0, 1, 2, 3], 11, Duration::from_secs(180));
    net.assert_agree(&net.els(), 10);
    let log = std::fs::read_to_string(net.env.state().join("logs/val-0.log")).unwrap();
    assert!(
        log.contains("invalid proposal; voting nil") && log.contains("state root mismatch"),
        "val-0 never refused val-1's proposal"
    );
    assert!(
        std::fs::read_to_string(net.env.state().join("logs/val-1.log"))
            .unwrap()
            .contains("TEST FAULT")
    );
    for v in 0..VALIDATORS {
        assert_eq!(net.status(v).unwrap()["consensus_violations"], 0);
    }
}

/// A chain that starts at an older fork is driven through that fork's Engine API method
/// versions — V1 at Paris, V2 at Shanghai, V3 at Cancun — which the built-in engine
/// enforces (-38005 / -32602 for any other): blocks are made and validated by both ELs,
/// transfers sent through the gateway are finalized, and each block carries exactly its
/// fork's header fields.
#[test]
fn chains_starting_at_paris_shanghai_or_cancun_are_driven_through_their_own_engine_api() {
    for (i, fork) in ["paris", "shanghai", "cancun"].into_iter().enumerate() {
        let start = 26200 + 60 * i as u16;
        let env = Env::new();
        env.write_profile(&format!(
            "name: fork-{fork}\nports: {{start: {start}, end: {}}}\nchain: {{chain_id: 1337, block_time: 1s, fork: {fork}}}\nvalidators:\n  count: 1\n  execution: [builtin, builtin]\ngateway: {{port: auto}}\n",
            start + 59
        ));
        let o = env
            .cmd(&["up", "--detach"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{fork}: up: {}",
            crate::util::text(&o.stderr)
        );
        let genesis: Value = serde_json::from_str(
            &std::fs::read_to_string(env.state().join("network/consensus-genesis.json")).unwrap(),
        )
        .unwrap();
        let chain = crate::util::Chain::read(&env.state());
        let gateway = format!(
            "http://{}",
            env.status()["monitor"]["gateway"].as_str().unwrap()
        );
        let o = env
            .cmd(&[
                "load",
                "--rpc",
                &gateway,
                "--tps",
                "10",
                "--duration",
                "3s",
                "--drain",
                "20s",
                "--output",
                "json",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let val_log = std::fs::read_to_string(env.state().join("logs/val-0.log")).unwrap();
        assert!(
            o.status.success(),
            "{fork}: load: {}\n{}\nval-0:\n{}",
            crate::util::text(&o.stdout),
            crate::util::text(&o.stderr),
            val_log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        let load: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(load["sent"], 30, "{fork}: {load}");
        assert_eq!(load["included"], 30, "{fork}: {load}");
        assert!(!val_log.contains("building failed"), "{fork}: {val_log}");
        let els = chain.els(1);
        let h = chain.el_height(&els[0]);
        let block = chain
            .rpc(&els[1], "eth_getBlockByNumber", json!(["0x1", false]))
            .unwrap();
        let has = |k: &str| !block[k].is_null();
        assert_eq!(has("withdrawalsRoot"), fork != "paris", "{fork}: {block}");
        assert_eq!(has("blobGasUsed"), fork == "cancun", "{fork}: {block}");
        assert_eq!(
            has("parentBeaconBlockRoot"),
            fork == "cancun",
            "{fork}: {block}"
        );
        assert!(!has("requestsHash"), "{fork}: {block}");
        for n in 1..=h {
            assert_eq!(
                chain.block_hash(&els[0], n),
                chain.block_hash(&els[1], n),
                "{fork} at {n}"
            );
        }
        // The validator reads its chain's schedule: nothing past the profile's fork.
        let forks = &genesis["forks"];
        assert_eq!(forks["shanghai"].is_null(), fork == "paris", "{genesis}");
        assert_eq!(forks["cancun"].is_null(), fork != "cancun", "{genesis}");
        assert!(
            forks["prague"].is_null() && forks["osaka"].is_null(),
            "{genesis}"
        );
    }
}
