//! Health probes, failover, the JSON-RPC gateway, metrics and the API, on the consensus
//! devnet (4 validators × 2 built-in ELs, 1 s blocks). Ports 24700-24999.

use crate::util::{wait_for, Env};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `gateway` is the profile's `gateway:` line.
fn devnet(env: &Env, name: &str, port_start: u16, gateway: &str) -> Value {
    env.write_profile(&format!(
        "name: {name}\nports: {{start: {port_start}, end: {}}}\nchain: {{chain_id: 1337, block_time: 1s, dev_accounts: 20}}\nvalidators:\n  count: 4\n  execution: [builtin, builtin]\n{gateway}",
        port_start + 99
    ));
    let o = env
        .cmd(&["up", "--detach"])
        .env("CHAINCTL_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "up: {}", crate::util::text(&o.stderr));
    ports(env)
}

fn ports(env: &Env) -> Value {
    serde_json::from_str(&std::fs::read_to_string(env.state().join("ports.json")).unwrap()).unwrap()
}

fn own_port(ports: &Value, name: &str) -> u16 {
    ports["services"]["chainctl"][name]["port"]
        .as_u64()
        .unwrap_or_else(|| panic!("no chainctl.{name} port in {ports}")) as u16
}

fn token(env: &Env) -> String {
    std::fs::read_to_string(env.state().join("secrets/api.token"))
        .unwrap()
        .trim()
        .to_string()
}

/// Status code and body of an HTTP request (errors as statuses, not panics).
fn http(method: &str, url: &str, bearer: Option<&str>, body: Option<&str>) -> (u16, String) {
    let mut r = ureq::request(method, url).timeout(Duration::from_secs(15));
    if let Some(t) = bearer {
        r = r.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => r.set("content-type", "application/json").send_string(b),
        None => r.call(),
    };
    match res {
        Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

fn rpc(url: &str, method: &str, params: Value) -> Value {
    let (code, body) = http(
        "POST",
        url,
        None,
        Some(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()),
    );
    assert_eq!(code, 200, "{method}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v.get("result")
        .cloned()
        .unwrap_or_else(|| panic!("{method}: {v}"))
}

fn q(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn api_status(api: &str, token: &str) -> Value {
    let (code, body) = http("GET", &format!("{api}/api/v1/status"), Some(token), None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_ready(api: &str) {
    wait_for("/ready to answer 200", Duration::from_secs(60), || {
        (http("GET", &format!("{api}/ready"), None, None).0 == 200).then_some(())
    });
}

/// `promtool check metrics` (the Prometheus project's own parser and linter) accepts
/// the exposition, and every sample line has the text format's shape.
fn check_exposition(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: .ci/run installs it (Debian package `prometheus`)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics refused /metrics:\n{}{}",
        crate::util::text(&o.stdout),
        crate::util::text(&o.stderr)
    );
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn gateway_api_metrics_and_jwt_probe() {
    let env = Env::new();
    let ports = devnet(
        &env,
        "mon",
        24700,
        "gateway: {port: auto, max_batch: 50, max_body_bytes: 65536, rate_limit: 400, max_ws_sessions: 2, max_subscriptions: 3, logs_max_blocks: 1000, allow: ['eth_*', 'net_*', 'web3_*']}\n",
    );
    let gw = format!("http://127.0.0.1:{}", own_port(&ports, "gateway"));
    let api = format!("http://127.0.0.1:{}", own_port(&ports, "api"));
    wait_ready(&api);
    let tok = token(&env);

    // The API: liveness open, /api/v1 behind the token.
    assert_eq!(http("GET", &format!("{api}/health"), None, None).0, 200);
    let (code, body) = http("GET", &format!("{api}/api/v1/status"), None, None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("api.token"), "{body}");
    assert_eq!(
        http("GET", &format!("{api}/api/v1/status"), Some("wrong"), None).0,
        401
    );
    assert_eq!(
        http(
            "POST",
            &format!("{api}/api/v1/services/val-0-el-1/restart"),
            Some("wrong"),
            None
        )
        .0,
        401
    );
    let st = api_status(&api, &tok);
    assert_eq!(st["health"]["els"].as_object().unwrap().len(), 8, "{st}");
    assert_eq!(
        st["health"]["els"]["val-0-el-0"]["state"], "healthy",
        "{st}"
    );
    assert_eq!(st["health"]["els"]["val-0-el-0"]["active"], true, "{st}");
    assert_eq!(st["health"]["validators"]["val-3"]["state"], "healthy");
    // Each validator is connected to the three others (Malachite's own count).
    wait_for(
        "every validator to report 3 peers",
        Duration::from_secs(20),
        || {
            let st = api_status(&api, &tok);
            (0..4)
                .all(|v| st["health"]["validators"][format!("val-{v}")]["peers"] == 3)
                .then_some(())
        },
    );

    // Reads through the gateway, single and batched, agree with an EL.
    let el = format!(
        "http://127.0.0.1:{}",
        ports["services"]["val-1-el-1"]["http"]["port"]
    );
    assert_eq!(rpc(&gw, "eth_chainId", json!([])), json!("0x539"));
    let n = q(&rpc(&gw, "eth_blockNumber", json!([])));
    assert!(n.abs_diff(q(&rpc(&el, "eth_blockNumber", json!([])))) <= 2);
    let (code, body) = http(
        "POST",
        &gw,
        None,
        Some(
            r#"[{"jsonrpc":"2.0","id":"a","method":"eth_chainId"},{"jsonrpc":"2.0","id":7,"method":"net_version","params":[]}]"#,
        ),
    );
    assert_eq!(code, 200);
    let b: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(b[0]["id"], "a");
    assert_eq!(b[0]["result"], "0x539");
    assert_eq!(b[1]["id"], 7);

    // Bad input: each a clear JSON-RPC error, never a hang.
    let err = |body: &str| -> (u16, Value) {
        let (c, b) = http("POST", &gw, None, Some(body));
        (
            c,
            serde_json::from_str(&b).unwrap_or_else(|_| panic!("not JSON: {b}")),
        )
    };
    let (_, v) = err("{\"jsonrpc\":\"2.0\",");
    assert_eq!(v["error"]["code"], -32700, "{v}");
    let (_, v) = err(r#"{"jsonrpc":"2.0","id":1}"#);
    assert_eq!(v["error"]["code"], -32600, "{v}");
    let (_, v) = err(r#"{"jsonrpc":"2.0","id":4,"method":"eth_noSuchMethod","params":[]}"#);
    assert_eq!(v["error"]["code"], -32601, "{v}");
    assert_eq!(v["id"], 4);
    let (_, v) = err("[]");
    assert_eq!(v["error"]["code"], -32600, "{v}");
    let big: Vec<Value> = (0..51)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"eth_blockNumber"}))
        .collect();
    let (_, v) = err(&Value::Array(big).to_string());
    assert_eq!(v["error"]["code"], -32600, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gateway.max_batch"),
        "{v}"
    );
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_call","params":["{}"]}}"#,
        "a".repeat(100_000)
    );
    let (c, v) = err(&huge);
    assert_eq!(c, 413, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gateway.max_body_bytes"),
        "{v}"
    );
    // A batch mixing a bad call and good ones: each answered in place.
    let (_, v) = err(r#"[{"id":1},{"jsonrpc":"2.0","id":2,"method":"eth_chainId"}]"#);
    assert_eq!(v[0]["error"]["code"], -32600, "{v}");
    assert_eq!(v[1]["result"], "0x539", "{v}");

    // The method policy (gateway.allow, here the defaults without `txpool_status`): the
    // gateway itself refuses what is not allowed, naming the setting — `txpool_status`,
    // which the client behind it answers; admin and debug methods; the Engine API; a
    // method that signs with the node's keys, which `eth_*` does not cover.
    assert!(
        rpc(&el, "txpool_status", json!([]))
            .get("pending")
            .is_some(),
        "the client answers it directly"
    );
    for (method, says) in [
        (
            "txpool_status",
            "add `txpool_status` or `txpool_*` to gateway.allow",
        ),
        ("admin_addPeer", "gateway.allow"),
        ("debug_traceTransaction", "gateway.allow"),
        ("engine_forkchoiceUpdatedV3", "Engine API"),
        ("eth_sign", "name `eth_sign` in gateway.allow"),
    ] {
        let (_, v) = err(&format!(
            r#"{{"jsonrpc":"2.0","id":9,"method":"{method}","params":[]}}"#
        ));
        assert_eq!(v["error"]["code"], -32601, "{method}: {v}");
        assert_eq!(v["id"], 9, "{v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(method) && m.contains(says), "{method}: {m}");
    }
    // In a batch, answered in place beside the calls that go through.
    let (_, v) = err(
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},{"jsonrpc":"2.0","id":2,"method":"admin_addPeer","params":["enode://x"]}]"#,
    );
    assert_eq!(v[0]["result"], "0x539", "{v}");
    assert_eq!(v[1]["error"]["code"], -32601, "{v}");
    assert_eq!(v[1]["id"], 2, "{v}");

    // A transaction through the gateway reaches every pool and gets a receipt.
    let raw = signed_transfer(0);
    let hash = rpc(&gw, "eth_sendRawTransaction", json!([raw]));
    let receipt = wait_for("the receipt", Duration::from_secs(20), || {
        let r = rpc(&gw, "eth_getTransactionReceipt", json!([hash.clone()]));
        (!r.is_null()).then_some(r)
    });
    assert_eq!(receipt["status"], "0x1", "{receipt}");

    // The cache of finalized data (gateway.cache_mb): once the receipt's block is
    // finalized, the block and the receipt are answered by the gateway itself the second
    // time — the same result, the caller's id. A block not made yet is `null` and never
    // kept: asked again once it is finalized, the answer is the block.
    let blk = receipt["blockNumber"].as_str().unwrap().to_string();
    let finalized = || q(&rpc(&gw, "eth_getBlockByNumber", json!(["finalized", false]))["number"]);
    wait_for(
        "the receipt's block to be finalized",
        Duration::from_secs(20),
        || (finalized() >= q(&json!(blk))).then_some(()),
    );
    let hits = || {
        let (_, text) = http("GET", &format!("{api}/metrics"), None, None);
        metric(&text, "chainctl_gateway_cache_hits_total").unwrap_or(0.0)
    };
    let call = |id: u64, method: &str, params: Value| -> Value {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let (code, text) = http("POST", &gw, None, Some(&body.to_string()));
        assert_eq!(code, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    };
    for (method, params) in [
        ("eth_getBlockByNumber", json!([blk, true])),
        ("eth_getTransactionReceipt", json!([hash])),
    ] {
        // The gateway follows the finalized height a moment behind: the first answers
        // may come from a client, then one comes from the cache.
        let first = call(1, method, params.clone());
        let hit = wait_for(
            &format!("{method} from the cache"),
            Duration::from_secs(5),
            || {
                let before = hits();
                let again = call(77, method, params.clone());
                (hits() > before).then_some(again)
            },
        );
        assert_eq!(hit["id"], 77, "{hit}");
        assert_eq!(hit["result"], first["result"], "{method}");
        assert!(!hit["result"].is_null(), "{hit}");
    }
    let ahead = format!("0x{:x}", finalized() + 3);
    assert!(call(1, "eth_getBlockByNumber", json!([ahead, false]))["result"].is_null());
    wait_for("block +3 to be finalized", Duration::from_secs(20), || {
        (finalized() >= q(&json!(ahead))).then_some(())
    });
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..2 {
        let b = call(2, "eth_getBlockByNumber", json!([ahead, false]));
        assert_eq!(b["result"]["number"], json!(ahead), "a null was kept: {b}");
    }

    // eth_getLogs over more blocks than gateway.logs_max_blocks (1000 here; a tag counts
    // at the head) is refused by the gateway itself; a narrower range is answered.
    for filter in [
        json!({"fromBlock": "0x0", "toBlock": "0x100000"}),
        json!({"fromBlock": "earliest", "toBlock": "0x3e8"}),
    ] {
        let v = call(5, "eth_getLogs", json!([filter]));
        assert_eq!(v["error"]["code"], -32005, "{filter}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("gateway.logs_max_blocks"), "{m}");
    }
    let v = call(
        6,
        "eth_getLogs",
        json!([{"fromBlock": "0x1", "toBlock": "latest"}]),
    );
    assert!(v["result"].is_array(), "{v}");

    // newHeads over the gateway's WebSocket: consecutive heights, none repeated.
    let (mut ws, _) = tungstenite::connect(gw.replace("http://", "ws://")).unwrap();
    ws.send(tungstenite::Message::Text(
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#.into(),
    ))
    .unwrap();
    let mut heights = Vec::new();
    let t0 = Instant::now();
    while heights.len() < 3 && t0.elapsed() < Duration::from_secs(20) {
        let m = ws.read().unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if v["method"] == "eth_subscription" {
            heights.push(q(&v["params"]["result"]["number"]));
        } else {
            assert!(v["result"].as_str().unwrap().starts_with("0x"), "{v}");
        }
    }
    assert_eq!(heights.len(), 3, "no heads within 20 s");
    assert!(heights.windows(2).all(|w| w[1] == w[0] + 1), "{heights:?}");
    drop(ws);

    // WebSocket limits (gateway.max_ws_sessions 2, max_subscriptions 3): a third session
    // from the address gets 429 naming the setting, a fourth subscription -32005; a
    // session's place is given back when it closes. 10,000 subscription attempts beyond
    // the limits leave the gateway's memory where it was.
    let ws_url = gw.replace("http://", "ws://");
    let connect = || tungstenite::connect(ws_url.as_str());
    let wait_closed = || {
        wait_for(
            "the closed session's place",
            Duration::from_secs(10),
            || connect().ok().map(drop),
        )
    };
    wait_closed();
    let (mut a, _) = connect().unwrap();
    let (b, _) = connect().unwrap();
    match connect() {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 429);
            let body =
                String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("gateway.max_ws_sessions"), "{body}");
        }
        other => panic!("a third session was not refused: {other:?}"),
    }
    drop(b);
    let answer = |ws: &mut tungstenite::WebSocket<_>, id: u64| -> Value {
        loop {
            let m = ws.read().unwrap();
            let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    };
    let subscribe = |id: u64| {
        tungstenite::Message::Text(
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_subscribe","params":["newHeads"]}}"#
            )
            .into(),
        )
    };
    for id in 1..=3 {
        a.send(subscribe(id)).unwrap();
        let v = answer(&mut a, id);
        assert!(v["result"].is_string(), "{v}");
    }
    a.send(subscribe(4)).unwrap();
    let v = answer(&mut a, 4);
    assert_eq!(v["error"]["code"], -32005, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gateway.max_subscriptions"),
        "{v}"
    );
    let rss = || -> u64 {
        let pid = env.status()["supervisor_pid"].as_i64().unwrap();
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before = rss();
    for id in 10..10_010 {
        a.send(subscribe(id)).unwrap();
    }
    let mut refused = 0;
    while refused < 10_000 {
        let m = a.read().unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if v["id"].as_u64().is_some_and(|id| id >= 10) {
            assert_eq!(v["error"]["code"], -32005, "{v}");
            refused += 1;
        }
    }
    let after = rss();
    assert!(
        after < before + 16 * 1024,
        "the gateway grew from {before} kB to {after} kB over 10,000 refused subscriptions"
    );
    drop(a);
    wait_closed();

    // /metrics: valid exposition with the families the alert rules use.
    let (code, text) = http("GET", &format!("{api}/metrics"), None, None);
    assert_eq!(code, 200);
    check_exposition(&text);
    for family in [
        "chainctl_service_up gauge",
        "chainctl_el_health gauge",
        "chainctl_el_lag_blocks gauge",
        "chainctl_el_probe_duration_seconds histogram",
        "chainctl_validator_height gauge",
        "chainctl_failovers_total counter",
        "chainctl_disk_used_ratio gauge",
        "chainctl_gateway_requests_total counter",
        "chainctl_gateway_request_duration_seconds histogram",
        "chainctl_gateway_cache_hits_total counter",
        "chainctl_gateway_cache_bytes gauge",
        "chainctl_reconcile_duration_seconds histogram",
        "chainctl_ready gauge",
    ] {
        assert!(
            text.lines().any(|l| l == format!("# TYPE {family}")),
            "no {family} in /metrics"
        );
    }
    assert!(
        text.contains("chainctl_el_probe_duration_seconds_bucket{el=\"val-0-el-0\",le=\"+Inf\"}")
    );
    assert_eq!(metric(&text, "chainctl_ready"), Some(1.0));
    assert!(
        text.contains(r#"chainctl_gateway_requests_total{method="eth_chainId",status="ok""#),
        "{text}"
    );
    assert!(text.contains(r#"method="eth_sendRawTransaction",status="ok",upstream="all""#));
    // Refusals are counted (methods outside the known set under `other`).
    assert!(
        text.contains(r#"method="other",status="refused",upstream="gateway""#),
        "{text}"
    );

    // A burst over the rate limit (400 calls/s) gets 429, and the client is named the fix.
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"eth_chainId"}))
        .collect();
    let batch = Value::Array(batch).to_string();
    let mut limited = None;
    for _ in 0..20 {
        let (c, b) = http("POST", &gw, None, Some(&batch));
        if c == 429 {
            limited = Some(b);
            break;
        }
    }
    let b = limited.expect("1000 calls at once never got a 429");
    assert!(b.contains("gateway.rate_limit"), "{b}");
    std::thread::sleep(Duration::from_millis(1500));

    // A wrong JWT on one pair: the pair is named, with the secret file, as the cause.
    let pair = env.state().join("secrets/jwt/val-2--val-2-el-1.hex");
    std::fs::write(&pair, "11".repeat(32)).unwrap();
    let reason = wait_for(
        "val-2-el-1 to be unhealthy with an Unauthorized reason",
        Duration::from_secs(20),
        || {
            let st = api_status(&api, &tok);
            let e = &st["health"]["els"]["val-2-el-1"];
            (e["state"] == "unhealthy").then(|| e["reason"].as_str().unwrap_or("").to_string())
        },
    );
    assert!(reason.contains("Unauthorized"), "{reason}");
    assert!(reason.contains("val-2"), "{reason}");
    assert!(reason.contains(&pair.display().to_string()), "{reason}");
    let table = env.ok(&["status"]);
    assert!(table.contains("val-2-el-1 health: Unauthorized"), "{table}");
    let (_, text) = http("GET", &format!("{api}/metrics"), None, None);
    assert_eq!(
        metric(
            &text,
            r#"chainctl_el_engine_auth_ok{el="val-2-el-1",validator="val-2"}"#
        ),
        Some(0.0)
    );

    // Every pair wrong: no healthy client, and the gateway says so and why.
    for f in std::fs::read_dir(env.state().join("secrets/jwt")).unwrap() {
        std::fs::write(f.unwrap().path(), "22".repeat(32)).unwrap();
    }
    let body = wait_for(
        "the gateway to report no healthy EL",
        Duration::from_secs(20),
        || {
            let (c, b) = http(
                "POST",
                &gw,
                None,
                Some(r#"{"jsonrpc":"2.0","id":9,"method":"eth_blockNumber"}"#),
            );
            (c == 503).then_some(b)
        },
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], 9);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("no healthy execution client"), "{msg}");
    assert!(msg.contains("val-0-el-0 unhealthy: Unauthorized"), "{msg}");
    let (code, body) = http("GET", &format!("{api}/ready"), None, None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("active execution client"), "{body}");
}

/// A signed transfer from dev account 1 with `nonce`.
fn signed_transfer(nonce: u64) -> String {
    chainctl_load::signed_transfer(1337, 1, nonce).unwrap().1
}

/// `curl` against the API over TLS, trusting `ca`: the status code and body.
fn curl_tls(ca: &std::path::Path, url: &str, bearer: Option<&str>) -> (u16, String) {
    let mut c = std::process::Command::new("curl");
    c.args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}", url]);
    if let Some(t) = bearer {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let o = c
        .output()
        .expect("curl is missing: .ci/run installs it (Debian package `curl`)");
    assert!(
        o.status.success(),
        "curl {url}: {}",
        crate::util::text(&o.stderr)
    );
    let out = crate::util::text(&o.stdout);
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// A private CA, as an operator would bring one: writes `ca.pem` and returns a function
/// that writes a certificate for 127.0.0.1 it signs as `NAME.pem` and its key as
/// `NAME.key` (mode 0600).
fn private_ca(env: &Env) -> impl Fn(&str) {
    use std::os::unix::fs::PermissionsExt;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(env.path("ca.pem"), ca.pem()).unwrap();
    let dir = env.path("");
    move |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("chainctl {name}"));
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[test]
fn api_over_tls() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let issue = private_ca(&env);
    issue("api");
    let key_path = env.path("api.key");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Relative paths are relative to the profile.
    env.write_profile(
        "name: tls\nports: {start: 24950, end: 24979}\napi: {tls: {cert: api.pem, key: api.key}, rate_limit: 20}\nservices:\n  idle:\n    command: [sleep, '600']\n",
    );

    // A private key others can read is refused before anything starts, with the fix.
    let o = env.run(&["up", "--detach"]);
    assert!(!o.status.success());
    let e = crate::util::text(&o.stderr);
    assert!(
        e.contains("api.tls.key") && e.contains("chmod 600") && e.contains("0644"),
        "{e}"
    );

    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.up_detached();
    let port = own_port(&ports(&env), "api");
    let https = format!("https://127.0.0.1:{port}");
    let ca_path = env.path("ca.pem");
    let (code, text) = wait_for("the API over TLS", Duration::from_secs(20), || {
        let (c, t) = curl_tls(&ca_path, &format!("{https}/metrics"), None);
        (c == 200).then_some((c, t))
    });
    assert_eq!(code, 200);
    check_exposition(&text);
    // The token is still required over TLS.
    let (code, body) = curl_tls(&ca_path, &format!("{https}/api/v1/status"), None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = curl_tls(
        &ca_path,
        &format!("{https}/api/v1/status"),
        Some(&token(&env)),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"idle\""), "{body}");
    // Plain HTTP gets no answer from a TLS listener.
    let plain = ureq::get(&format!("http://127.0.0.1:{port}/health"))
        .timeout(Duration::from_secs(5))
        .call();
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // The CLI reaches the API over TLS, pinning the configured certificate: the API
    // itself answers (and refuses: this profile has no validators).
    let o = env.run(&["failover", "val-0"]);
    let e = crate::util::text(&o.stderr);
    assert!(!o.status.success());
    assert!(e.contains("failover of val-0 refused"), "{e}");

    // Refused tokens are counted (the 401 above), and the API takes api.rate_limit (20)
    // calls per second per address: 200 calls as fast as curl starts get 429s naming it.
    std::thread::sleep(Duration::from_millis(1100));
    let (_, text) = curl_tls(&ca_path, &format!("{https}/metrics"), None);
    assert!(
        metric(&text, "chainctl_api_auth_failures_total").is_some_and(|n| n >= 1.0),
        "no refused token counted"
    );
    let codes: Vec<(u16, String)> = (0..200)
        .map(|_| curl_tls(&ca_path, &format!("{https}/health"), None))
        .collect();
    let limited: Vec<&String> = codes
        .iter()
        .filter(|(c, _)| *c == 429)
        .map(|(_, b)| b)
        .collect();
    assert!(!limited.is_empty(), "200 calls at once, none limited");
    assert!(limited[0].contains("api.rate_limit"), "{}", limited[0]);
}

/// The gateway over HTTPS and WSS (`gateway.tls`), opened beyond loopback with
/// `listen.gateway` while the clients stay on loopback: curl with the operator's CA and a
/// WebSocket client over TLS get answers, plain HTTP does not; chainctl's own load finds
/// and pins the gateway's certificate, and refuses another; a renewed certificate is
/// served without a restart.
#[test]
fn gateway_over_tls() {
    let env = Env::new();
    let issue = private_ca(&env);
    issue("gw");
    env.write_profile(
        "name: gwtls\nports: {start: 26400, end: 26459}\nlisten: {gateway: 0.0.0.0}\nchain: {chain_id: 1337, block_time: 1s}\nvalidators:\n  count: 1\n  execution: [builtin]\ngateway: {port: auto, tls: {cert: gw.pem, key: gw.key}}\n",
    );
    env.up_detached();
    let port = own_port(&ports(&env), "gateway");
    let https = format!("https://127.0.0.1:{port}");
    let ca = env.path("ca.pem");
    let post = |body: &str| -> Value {
        let o = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .args(["-H", "content-type: application/json", "-d", body, &https])
            .output()
            .expect("curl is missing: .ci/run installs it (Debian package `curl`)");
        assert!(o.status.success(), "curl: {}", crate::util::text(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let v = post(r#"{"jsonrpc":"2.0","id":3,"method":"eth_chainId","params":[]}"#);
    assert_eq!(v["result"], "0x539", "{v}");
    let st = env.ok(&["status"]);
    assert!(
        st.contains(&format!("gateway: https://0.0.0.0:{port}")),
        "{st}"
    );
    // Plain HTTP gets no answer from the TLS listener.
    let plain = ureq::post(&format!("http://127.0.0.1:{port}"))
        .timeout(Duration::from_secs(5))
        .send_string(r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#);
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // WSS: newHeads over a TLS connection that trusts exactly the gateway's certificate.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let tls = chainctl_common::tls::connect(addr, tcp, &env.path("gw.pem")).unwrap();
    let (mut ws, _) = tungstenite::client(format!("wss://127.0.0.1:{port}/"), tls).unwrap();
    ws.send(tungstenite::Message::Text(
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#.into(),
    ))
    .unwrap();
    let mut heads = 0;
    while heads < 2 {
        let m = ws.read().unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if v["method"] == "eth_subscription" {
            assert!(v["params"]["result"]["number"].is_string(), "{v}");
            heads += 1;
        }
    }
    drop(ws);

    // chainctl's own client: `load` finds the gateway, speaks HTTPS and pins its
    // certificate; given another certificate to trust, it refuses the gateway.
    let o = env.run(&["load", "--tps", "5", "--duration", "2s", "--output", "json"]);
    assert!(
        o.status.success(),
        "load over HTTPS: {}\n{}",
        crate::util::text(&o.stdout),
        crate::util::text(&o.stderr)
    );
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["included"], 10, "{s}");
    issue("other");
    let o = env.run(&[
        "load",
        "--rpc",
        &https,
        "--rpc-cert",
        "other.pem",
        "--tps",
        "1",
        "--duration",
        "1s",
    ]);
    let e = crate::util::text(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("another certificate"), "{e}");

    // Renewed on disk (same CA): served from the next connection on, no restart.
    std::fs::copy(env.path("other.pem"), env.path("gw.pem")).unwrap();
    std::fs::copy(env.path("other.key"), env.path("gw.key")).unwrap();
    wait_for("the renewed certificate", Duration::from_secs(10), || {
        let tcp = std::net::TcpStream::connect(addr).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut c = chainctl_common::tls::connect(addr, tcp, &env.path("other.pem")).ok()?;
        use std::io::{Read, Write};
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).ok()?;
        buf.starts_with(b"HTTP/1.").then_some(())
    });
    let v = post(r#"{"jsonrpc":"2.0","id":4,"method":"eth_chainId","params":[]}"#);
    assert_eq!(v["result"], "0x539", "{v}");
}

#[test]
fn disk_over_the_threshold_raises_the_alert() {
    let env = Env::new();
    // A data dir on a file system that is surely over 0.001 % used.
    env.write_profile(
        "name: disk\nports: {start: 24900, end: 24949}\nhealth: {disk_warn_percent: 0.0005, disk_critical_percent: 0.001}\nservices:\n  idle:\n    command: [sleep, '600']\n",
    );
    env.up_detached();
    let api = format!("http://127.0.0.1:{}", own_port(&ports(&env), "api"));
    let body = wait_for("/ready to answer 503", Duration::from_secs(20), || {
        let (c, b) = http("GET", &format!("{api}/ready"), None, None);
        (c == 503 && b.contains("critical")).then_some(b)
    });
    assert!(body.contains("idle"), "{body}");
    let (_, text) = http("GET", &format!("{api}/metrics"), None, None);
    check_exposition(&text);
    assert!(
        text.lines()
            .any(|l| l.starts_with("chainctl_disk_alert_level{") && l.ends_with(" 2")),
        "{text}"
    );
    let table = env.ok(&["status"]);
    assert!(table.contains("CRITICAL"), "{table}");
}

#[test]
fn killing_each_active_el_under_load_through_the_gateway() {
    let _machine = crate::util::busy_machine();
    let env = Env::new();
    let ports = devnet(&env, "fail", 24800, "gateway: {port: auto}\n");
    let gw = format!("http://127.0.0.1:{}", own_port(&ports, "gateway"));
    let api = format!("http://127.0.0.1:{}", own_port(&ports, "api"));
    wait_ready(&api);
    let tok = token(&env);
    let start = q(&rpc(&gw, "eth_blockNumber", json!([])));

    // 30 s of load through the gateway while each validator's active EL is killed in turn.
    let load = env
        .cmd(&[
            "load",
            "--rpc",
            &gw,
            "--tps",
            "100",
            "--duration",
            "30s",
            "--output",
            "json",
        ])
        .env("CHAINCTL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut killed = Vec::new();
    for v in 0..4 {
        std::thread::sleep(Duration::from_secs(5));
        let st = api_status(&api, &tok);
        let active = st["health"]["validators"][format!("val-{v}")]["active_el"]
            .as_str()
            .unwrap()
            .to_string();
        let pid = crate::util::pid_of(&st["supervisor"], &active).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        killed.push(active);
    }
    let o = load.wait_with_output().unwrap();
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "load printed no summary ({e}):\n{}",
            crate::util::text(&o.stderr)
        )
    });
    // Every transaction the gateway took was finalized: none lost, none reverted.
    assert!(
        o.status.success(),
        "load failed: {summary}\n{}",
        crate::util::text(&o.stderr)
    );
    assert_eq!(summary["sent"], summary["included"], "{summary}");
    assert_eq!(summary["pending"], 0, "{summary}");
    assert!(summary["sent"].as_u64().unwrap() >= 2900, "{summary}");

    // Blocks went on, and every switch is recorded with its reason and gap.
    let end = q(&rpc(&gw, "eth_blockNumber", json!([])));
    assert!(end >= start + 30, "{start} → {end}");
    let st = wait_for(
        "every switch to have its gap",
        Duration::from_secs(20),
        || {
            let st = api_status(&api, &tok);
            let sw = st["health"]["switches"].as_array().unwrap().clone();
            (killed
                .iter()
                .all(|k| sw.iter().any(|s| &s["from"] == k && s["gap_ms"].is_u64())))
            .then_some(st)
        },
    );
    for s in st["health"]["switches"].as_array().unwrap() {
        assert!(!s["reason"].as_str().unwrap().is_empty(), "{s}");
        assert!(s["gap_ms"].as_u64().unwrap() < 10_000, "{s}");
    }
    // The supervisor saw the exits as they happened and moved the validators itself
    // (kind `down`); a validator whose own Engine API call failed first records its
    // own kind, which can win a race now and then, not four times in four.
    let down: Vec<&Value> = st["health"]["switches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "down")
        .collect();
    assert!(!down.is_empty(), "{:#}", st["health"]["switches"]);
    assert!(
        down[0]["reason"]
            .as_str()
            .unwrap()
            .contains("is down: its process exited (killed by SIGKILL)"),
        "{}",
        down[0]
    );
    let (_, text) = http("GET", &format!("{api}/metrics"), None, None);
    let failovers: f64 = text
        .lines()
        .filter(|l| l.starts_with("chainctl_failovers_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(failovers >= 4.0, "{text}");
    // The killed clients were restarted and are healthy again.
    wait_for(
        "the killed ELs to be healthy again",
        Duration::from_secs(60),
        || {
            let st = api_status(&api, &tok);
            killed
                .iter()
                .all(|k| st["health"]["els"][k]["state"] == "healthy")
                .then_some(())
        },
    );

    // A frozen active EL (SIGSTOP: the port accepts, nothing answers): the validator
    // stops waiting for it one second after its other EL answered, switches away, and the
    // probes mark it unhealthy (timed out) and keep reads away from it.
    let st = api_status(&api, &tok);
    let active = st["health"]["validators"]["val-1"]["active_el"]
        .as_str()
        .unwrap()
        .to_string();
    let pid =
        nix::unistd::Pid::from_raw(crate::util::pid_of(&st["supervisor"], &active).unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let (sw, reason) = wait_for(
        "val-1 to leave its frozen EL, and the EL to be unhealthy",
        Duration::from_secs(25),
        || {
            let st = api_status(&api, &tok);
            let sw = st["health"]["switches"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| {
                    s["validator"] == "val-1"
                        && s["from"] == active.as_str()
                        && s["gap_ms"].is_u64()
                })
                .cloned()?;
            let e = &st["health"]["els"][&active];
            (e["state"] == "unhealthy")
                .then(|| (sw, e["reason"].as_str().unwrap_or("").to_string()))
        },
    );
    let h = q(&rpc(&gw, "eth_blockNumber", json!([])));
    wait_for(
        "blocks while the EL is frozen",
        Duration::from_secs(20),
        || (q(&rpc(&gw, "eth_blockNumber", json!([]))) >= h + 3).then_some(()),
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(reason.contains("timed out"), "{reason}");
    assert!(sw["gap_ms"].as_u64().unwrap() < 4_000, "{sw}");
}
