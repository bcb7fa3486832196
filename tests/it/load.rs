//! `chainctl load` against the consensus devnet (4 validators × 2 built-in ELs, 1 s
//! blocks): every transaction is finalized, and the summary agrees with the chain.
//!
//! The load is sent to a backup EL, one that never builds a block: its transactions reach
//! the proposers only because ELs pass transactions on to each other.

use crate::util::Env;
use serde_json::{json, Value};
use std::time::Duration;

fn rpc(port: u16, method: &str, params: Value) -> Value {
    let r: Value = ureq::post(&format!("http://127.0.0.1:{port}"))
        .timeout(Duration::from_secs(5))
        .send_json(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .unwrap()
        .into_json()
        .unwrap();
    r.get("result")
        .cloned()
        .unwrap_or_else(|| panic!("{method}: {r}"))
}

fn q(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn up(env: &Env, port_start: u16, accounts: u32) -> Value {
    env.write_profile(&format!(
        "name: load\nports: {{start: {port_start}, end: {}}}\nchain: {{chain_id: 1337, block_time: 1s, dev_accounts: {accounts}}}\nvalidators:\n  count: 4\n  execution: [builtin, builtin]\ngateway: {{port: auto}}\n",
        port_start + 99
    ));
    let o = env
        .cmd(&["up", "--detach"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "up: {}", crate::util::text(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(env.state().join("ports.json")).unwrap()).unwrap()
}

fn load(env: &Env, args: &[&str]) -> (bool, Value, String) {
    let mut a = vec!["load", "--output", "json"];
    a.extend_from_slice(args);
    let o = env
        .cmd(&a)
        .env("CHAINCTL_LOG", "info")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = crate::util::text(&o.stderr);
    let summary = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("load printed no JSON summary ({e}); stderr:\n{stderr}"));
    (o.status.success(), summary, stderr)
}

/// Transactions of blocks `a..=b` (all of them, any sender), full objects.
fn txs_in(port: u16, a: u64, b: u64) -> Vec<Value> {
    (a..=b)
        .flat_map(|n| {
            let blk = rpc(
                port,
                "eth_getBlockByNumber",
                json!([format!("0x{n:x}"), true]),
            );
            blk["transactions"].as_array().unwrap().clone()
        })
        .collect()
}

#[test]
fn load_at_200_tps_is_all_finalized_and_agrees_with_the_chain() {
    let _machine = crate::util::busy_machine();
    let env = Env::new();
    let ports = up(&env, 24500, 60);
    let port = |svc: &str| ports["services"][svc]["http"]["port"].as_u64().unwrap() as u16;
    let backup = format!("http://127.0.0.1:{}", port("val-2-el-1"));
    let reader = port("val-1-el-0");

    // Bad input is refused before anything is sent, each naming the fix.
    let refused = |args: &[&str]| {
        let o = env.cmd(args).output().unwrap();
        assert!(!o.status.success(), "{args:?} was not refused");
        crate::util::text(&o.stderr)
    };
    let e = refused(&[
        "load",
        "--rpc",
        &backup,
        "--tps",
        "1000",
        "--accounts",
        "10",
    ]);
    assert!(e.contains("--accounts 125"), "{e}");
    let e = refused(&["load", "--rpc", "ftp://x", "--tps", "10"]);
    assert!(e.contains("not an http(s) URL"), "{e}");
    let e = refused(&[
        "load",
        "--rpc",
        &backup,
        "--tps",
        "8",
        "--accounts",
        "1",
        "--first-account",
        "60",
    ]);
    assert!(e.contains("chain.dev_accounts") && e.contains("#60"), "{e}");

    // 10 s at 200 tx/s of plain transfers, sent to a backup EL.
    let (ok, s, stderr) = load(
        &env,
        &[
            "--rpc",
            &backup,
            "--tps",
            "200",
            "--duration",
            "10s",
            "--accounts",
            "25",
        ],
    );
    eprintln!("{s:#}\n{stderr}");
    assert_eq!(s["sent"], 2000, "every scheduled transaction accepted");
    assert_eq!(s["included"], 2000, "zero lost");
    assert_eq!(s["pending"], 0);
    assert_eq!(s["reverted"], 0);
    assert_eq!(s["errors"], json!({}));
    assert!(ok, "exit status says clean");
    // The summary agrees with the chain: the blocks from the first to the last holding
    // the load hold exactly the load (nothing else was sent), and they are final.
    let (a, b) = (
        s["first_block"].as_u64().unwrap(),
        s["last_block"].as_u64().unwrap(),
    );
    let txs = txs_in(reader, a, b);
    assert_eq!(txs.len() as u64, s["included"].as_u64().unwrap());
    assert_eq!(s["block_txs"].as_u64().unwrap(), txs.len() as u64);
    assert_eq!(s["blocks"].as_u64().unwrap(), b - a + 1);
    let fin = rpc(reader, "eth_getBlockByNumber", json!(["finalized", false]));
    assert!(q(&fin["number"]) >= b);
    // 25 senders × 80 nonces each, to the documented sink.
    let mut per_sender = std::collections::BTreeMap::<String, u64>::new();
    for t in &txs {
        *per_sender
            .entry(t["from"].as_str().unwrap().into())
            .or_default() += 1;
        assert_eq!(
            t["to"].as_str().unwrap().to_lowercase(),
            "0x000000000000000000000000000000000000c41d"
        );
    }
    assert_eq!(per_sender.len(), 25);
    assert!(per_sender.values().all(|n| *n == 80), "{per_sender:?}");
    let l = &s["latency_s"];
    assert!(l["p50"].as_f64().unwrap() > 0.0 && l["p50"].as_f64() <= l["p99"].as_f64());

    // Mixed: half token transfers on a contract the run deploys; none reverts, and the
    // sink's token balance is the number of token transfers in the window.
    let (ok, s, stderr) = load(
        &env,
        &[
            "--rpc",
            &backup,
            "--tps",
            "100",
            "--duration",
            "5s",
            "--accounts",
            "30",
            "--kind",
            "mixed",
        ],
    );
    eprintln!("{s:#}\n{stderr}");
    assert!(ok, "mixed load not clean");
    assert_eq!(s["included"], 500);
    let token = s["token"].as_str().unwrap().to_lowercase();
    let (a, b) = (
        s["first_block"].as_u64().unwrap(),
        s["last_block"].as_u64().unwrap(),
    );
    let txs = txs_in(reader, a, b);
    assert_eq!(txs.len(), 500);
    let token_txs = txs
        .iter()
        .filter(|t| t["to"].as_str().unwrap().to_lowercase() == token)
        .count() as u64;
    // Half, give or take the deployer's nonce (its deployment shifts its parity).
    assert!(
        (240..=260).contains(&token_txs),
        "{token_txs} token transfers"
    );
    let bal = rpc(
        reader,
        "eth_call",
        json!([{"to": token, "data": "0x70a08231000000000000000000000000000000000000000000000000000000000000c41d"}, "latest"]),
    );
    let bal =
        alloy_primitives::U256::from_str_radix(bal.as_str().unwrap().trim_start_matches("0x"), 16)
            .unwrap();
    assert_eq!(bal, alloy_primitives::U256::from(token_txs));

    load_through_a_slow_lagging_endpoint_misses_nothing(&env, &ports);
}

/// An endpoint in front of an EL that answers `eth_sendRawTransaction` 3 s late (after
/// the block holding it is finalized) and has no block by number (a client behind the
/// one that answered the finalized head): what a gateway under load can look like.
const SLOW_PROXY: &str = r#"
import http.server, json, sys, time, urllib.request
upstream = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        req = json.loads(body)
        calls = req if isinstance(req, list) else [req]
        if all(c["method"] == "eth_getBlockByNumber" and c["params"][0].startswith("0x") for c in calls):
            out = [{"jsonrpc": "2.0", "id": c["id"], "result": None} for c in calls]
            out = json.dumps(out if isinstance(req, list) else out[0]).encode()
        else:
            r = urllib.request.Request(upstream, data=body, headers={"Content-Type": "application/json"})
            out = urllib.request.urlopen(r, timeout=30).read()
            if any(c["method"] == "eth_sendRawTransaction" for c in calls):
                time.sleep(3)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// `chainctl load` through an endpoint that accepts transactions only after their block
/// is finalized and never has a block by number: the follower reads each block from
/// another client of the network and counts a transaction whose block came before its
/// acceptance, so nothing is reported lost that is on chain (with Reth 2.5.1 behind a
/// gateway, 33 of 15,000 finalized transactions were reported lost).
fn load_through_a_slow_lagging_endpoint_misses_nothing(env: &Env, ports: &Value) {
    let port = |svc: &str| ports["services"][svc]["http"]["port"].as_u64().unwrap() as u16;
    let upstream = format!("http://127.0.0.1:{}", port("val-2-el-1"));
    let (proxy, proxy_port) = crate::util::python_server(SLOW_PROXY, &[&upstream]);
    let (ok, s, stderr) = load(
        env,
        &[
            "--rpc",
            &format!("http://127.0.0.1:{proxy_port}"),
            "--tps",
            "40",
            "--duration",
            "4s",
            "--accounts",
            "10",
        ],
    );
    drop(proxy);
    eprintln!("{s:#}\n{stderr}");
    assert_eq!(s["sent"], 160, "every scheduled transaction accepted");
    assert_eq!(s["included"], 160, "none reported lost: {s:#}");
    assert_eq!(s["pending"], 0);
    assert_eq!(
        s["found_by_receipt"], 0,
        "the follower itself saw every one: {s:#}"
    );
    assert!(ok, "exit status says clean");
    // Every one finalized got a latency (from the send, for those whose block was read
    // before their acceptance).
    assert!(s["latency_s"]["p50"].as_f64().unwrap() > 0.0, "{s:#}");
    // And on chain: exactly the run's transactions in its blocks, on another client.
    let (a, b) = (
        s["first_block"].as_u64().unwrap(),
        s["last_block"].as_u64().unwrap(),
    );
    assert_eq!(txs_in(port("val-0-el-0"), a, b).len(), 160);
}

#[test]
fn bench_measures_every_scenario_or_says_why_not() {
    let _machine = crate::util::busy_machine();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let o = std::process::Command::new(crate::util::bin())
        .args([
            "-q",
            "bench",
            "--out",
            out.to_str().unwrap(),
            "--tps",
            "100",
            "--duration",
            "5s",
            "--drills",
            "2",
            "--port-start",
            "24600",
            "--only",
            "up,load,failover,gateway,ports",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = crate::util::text(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        crate::util::text(&o.stderr)
    );
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    let md = std::fs::read_to_string(out.join("bench.md")).unwrap();
    let scen = |id: &str| -> Value {
        r["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["scenario"] == id)
            .unwrap_or_else(|| panic!("no {id} in {r:#}"))
            .clone()
    };
    let fig = |s: &Value, name: &str| -> f64 {
        s["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no figure {name} in {s:#}"))["value"]
            .as_f64()
            .unwrap()
    };
    let up = scen("up");
    assert_eq!(up["status"], "measured");
    let t = fig(&up, "up to first finalized block");
    assert!(t > 0.0 && t < 60.0, "{t}");
    let load = scen("load");
    assert_eq!(load["status"], "measured", "{load:#}");
    assert_eq!(fig(&load, "sent"), 500.0);
    assert_eq!(fig(&load, "finalized in all"), 500.0);
    assert_eq!(fig(&load, "not finalized (lost)"), 0.0);
    let fo = scen("failover");
    assert_eq!(fo["status"], "measured", "{fo:#}");
    assert_eq!(fig(&fo, "drills"), 2.0);
    let gap = fig(&fo, "failover gap max");
    assert!(gap > 0.0 && gap < 30.0, "{gap}");
    let gw = scen("gateway");
    assert_eq!(gw["status"], "measured", "{gw:#}");
    assert!(fig(&gw, "direct p50") > 0.0);
    assert!(fig(&gw, "gateway p50") > 0.0);
    assert!(fig(&gw, "added at p50").is_finite());
    assert!(fig(&gw, "gateway throughput (64 clients)") > 0.0);
    assert_eq!(scen("ports")["status"], "measured");
    // The Markdown says the same, and the devnet is gone.
    assert!(md.contains("| finalized in all | 500 tx |"), "{md}");
    assert!(md.contains("| added at p50 |"), "{md}");
    assert!(stdout.contains("bench.json"));
    for port in 24600..24700u16 {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
            "port {port} still answers after the bench"
        );
    }
}
