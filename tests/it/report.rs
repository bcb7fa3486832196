//! `chainctl report` on the consensus devnet (4 validators × 2 built-in ELs, 1 s blocks):
//! READY only with a passing failover drill; a world-readable JWT file, a frozen EL and
//! an EL producing blocks by itself each fail the right check with the right evidence;
//! the JSON validates against the published schema; the HTML renders in headless
//! Chromium with its verdict. Ports 25000-25099.

use crate::util::{text, wait_for, Env};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const PROFILE: &str = "name: rep\nports: {start: 25000, end: 25099}\nchain: {chain_id: 1337, block_time: 1s, dev_accounts: 20}\nvalidators:\n  count: 4\n  execution: [builtin, builtin]\ngateway: {port: auto}\n";

/// A JSON-RPC server that makes a block every second by itself, as an EL in dev mode
/// does: `rogue.py PORT`.
const ROGUE: &str = r#"
import hashlib, http.server, json, sys, time
start = time.time()
def block(n):
    h = "0x" + hashlib.sha256(b"rogue%d" % n).hexdigest()
    return {"number": hex(n), "hash": h, "timestamp": hex(int(start) + n), "transactions": []}
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        def one(r):
            head = int(time.time() - start) + 1
            if r["method"] == "eth_blockNumber":
                res = hex(head)
            elif r["method"] == "eth_getBlockByNumber":
                res = block(int(r["params"][0], 16))
            else:
                res = None
            return {"jsonrpc": "2.0", "id": r.get("id"), "result": res}
        out = json.dumps([one(r) for r in req] if isinstance(req, list) else one(req)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// Until chainctl's API at `api` says the network is ready (`/ready` 200).
fn wait_ready(api: &str, what: &str) {
    wait_for(what, Duration::from_secs(60), || {
        let r = ureq::get(&format!("{api}/ready")).call().ok()?;
        (r.status() == 200).then_some(())
    });
}

/// `report ARGS` (over the last 20 s unless ARGS say): its exit code and stdout.
fn report(env: &Env, args: &[&str]) -> (i32, String) {
    let mut a = vec!["report"];
    if !args.contains(&"--window") {
        a.extend(["--window", "20s"]);
    }
    a.extend_from_slice(args);
    let o = env.run(&a);
    (
        o.status.code().unwrap_or(-1),
        crate::util::text(&o.stdout) + &crate::util::text(&o.stderr),
    )
}

fn json_report(env: &Env, args: &[&str]) -> (i32, Value) {
    let mut a = vec!["--format", "json"];
    a.extend_from_slice(args);
    let (code, out) = report(env, &a);
    let start = out.find('{').unwrap_or_else(|| panic!("no JSON: {out}"));
    let end = out.rfind('}').unwrap();
    (code, serde_json::from_str(&out[start..=end]).unwrap())
}

fn check<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {r}"))
}

fn not_passing(r: &Value) -> Vec<String> {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "pass" && c["status"] != "info")
        .map(|c| {
            format!(
                "{} {}: {} {}",
                c["id"], c["status"], c["summary"], c["evidence"]
            )
        })
        .collect()
}

/// Validates `report` against `docs/report.schema.json` with Python's jsonschema.
fn validate_against_schema(report: &Value) {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report.schema.json");
    let mut c = Command::new("python3")
        .args([
            "-c",
            "import json, sys, jsonschema; jsonschema.validate(json.load(sys.stdin), json.load(open(sys.argv[1])))",
        ])
        .arg(&schema)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(report.to_string().as_bytes())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "the report does not validate against {} (jsonschema is installed by .ci/run): {}",
        schema.display(),
        crate::util::text(&o.stderr)
    );
}

/// Screenshots `html` in headless Chromium; counts pixels of the verdict colour.
fn screenshot_pixels(dir: &Path, html: &Path, rgb: (u8, u8, u8)) -> (usize, usize) {
    let png = dir.join("report.png");
    let o = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,900",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium is missing: .ci/run installs it (Debian package `chromium`)");
    assert!(
        png.exists(),
        "no screenshot: {}",
        crate::util::text(&o.stderr)
    );
    let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let distinct = {
        let mut seen: Vec<&[u8]> = px.iter().step_by(97).copied().collect();
        seen.sort();
        seen.dedup();
        seen.len()
    };
    let near = |a: u8, b: u8| a.abs_diff(b) <= 12;
    let hits = px
        .iter()
        .filter(|p| near(p[0], rgb.0) && near(p[1], rgb.1) && near(p[2], rgb.2))
        .count();
    (hits, distinct)
}

#[test]
fn readiness_report_from_live_evidence() {
    let _machine = crate::util::busy_machine();
    let env = Env::new();
    env.write_profile(PROFILE);
    env.up_detached();
    let ports: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state().join("ports.json")).unwrap())
            .unwrap();
    let api = format!(
        "http://127.0.0.1:{}",
        ports["services"]["chainctl"]["api"]["port"]
    );
    // Ready, and enough blocks for the window.
    wait_ready(&api, "the devnet to be ready");
    std::thread::sleep(Duration::from_secs(12));

    // Without a drill: every check passes but failover is untested, so NOT READY (1).
    let (code, r) = json_report(&env, &[]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["verdict"], "NOT-READY");
    assert_eq!(check(&r, "ha.failover_drill")["status"], "skipped");
    assert!(
        r["blockers"][0].as_str().unwrap().contains("untested"),
        "{r}"
    );
    // No chaos experiment yet: shown as not measured, with the command to run.
    let c = check(&r, "ha.chaos");
    assert_eq!(c["status"], "skipped", "{c}");
    assert!(
        c["summary"].as_str().unwrap().contains("chainctl chaos"),
        "{c}"
    );
    // No `backup:` in the profile: not measured, with how to add it.
    let c = check(&r, "ops.backups");
    assert_eq!(c["status"], "skipped", "{c}");
    assert!(c["summary"].as_str().unwrap().contains("backup:"), "{c}");
    let np = not_passing(&r);
    assert_eq!(
        np.len(),
        3,
        "only the drill, chaos and backups may not pass: {np:#?}"
    );
    assert!(r["score"].as_f64().unwrap() >= 99.9, "{}", r["score"]);
    assert!(r["score_formula"].as_str().unwrap().contains("weight"));
    // The canary: a transfer signed with the last development account, sent through the
    // gateway, finalized, the same receipt from all 8 execution clients, its cost shown.
    let c = check(&r, "execution.canary");
    assert_eq!(c["status"], "pass", "{c}");
    assert!(
        c["summary"]
            .as_str()
            .unwrap()
            .contains("all 8 execution clients return the same successful receipt"),
        "{c}"
    );
    let ev = c["evidence"].to_string();
    assert!(
        ev.contains("development account 19")
            && ev.contains("the gateway")
            && ev.contains("cost: 21000 gas")
            && ev.contains("val-3-el-1: receipt status \\\"0x1\\\""),
        "{ev}"
    );
    let c = check(&r, "consensus.agreement");
    assert!(
        c["summary"]
            .as_str()
            .unwrap()
            .contains("all 8 execution clients hold the same"),
        "{c}"
    );
    for c in r["checks"].as_array().unwrap() {
        for field in ["id", "category", "severity", "status", "summary", "remedy"] {
            assert!(c[field].is_string(), "{field} in {c}");
        }
        assert!(c["measured_at_ms"].as_u64().unwrap() > 0);
    }
    // The service matrix: each EL answers RPC and WebSocket, each validator reports peers.
    let svc = |n: &str| {
        r["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no {n} in the matrix"))
    };
    assert_eq!(svc("val-0-el-1")["rpc"], "ok");
    assert_eq!(svc("val-0-el-1")["websocket"], "ok");
    assert_eq!(svc("val-1")["peers"], 3);
    validate_against_schema(&r);
    // The published schema is the one this binary writes.
    let schema = env.ok(&["report", "--schema"]);
    let published = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report.schema.json"),
    )
    .unwrap();
    assert_eq!(
        schema, published,
        "docs/report.schema.json is stale: `chainctl report --schema > docs/report.schema.json`"
    );

    // The HTML page renders with its verdict (red for NOT READY: #cf222e).
    let html = env.path("report.html");
    let (code, out) = report(&env, &["--format", "html", "--out", html.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("NOT READY") && page.contains("<svg"),
        "{page}"
    );
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "external assets"
    );
    let (red, distinct) = screenshot_pixels(env.dir.path(), &html, (0xcf, 0x22, 0x2e));
    assert!(distinct > 5, "blank screenshot ({distinct} colours)");
    assert!(
        red > 500,
        "the verdict is not visible ({red} verdict pixels)"
    );

    // A chaos experiment (one execution client killed) is evidence with its age; a failed
    // one fails the check with its reasons.
    let o = env
        .cmd(&[
            "chaos",
            "--faults",
            "kill-el",
            "--count",
            "1",
            "--every",
            "1s",
            "--duration",
            "20s",
        ])
        .env("CHAINCTL_LOG", "info")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "chaos: {}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let (_, r) = json_report(&env, &[]);
    let c = check(&r, "ha.chaos");
    assert_eq!(c["status"], "pass", "{c}");
    let ev = c["evidence"].to_string();
    assert!(
        ev.contains("1 faults (kill-el)") && ev.contains("forks: 0"),
        "{ev}"
    );
    let rec = env.state().join("chaos/last.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&rec).unwrap()).unwrap();
    v["verdict"] = "FAIL".into();
    v["reasons"] = serde_json::json!([
        "3 of 900 accepted transactions are in no finalized block on any execution client"
    ]);
    std::fs::write(&rec, v.to_string()).unwrap();
    let (_, r) = json_report(&env, &["--no-canary"]);
    let c = check(&r, "ha.chaos");
    assert_eq!(c["status"], "fail", "{c}");
    // Without the canary nothing shows the network takes a transaction: untested, and a
    // blocker of its own.
    let k = check(&r, "execution.canary");
    assert_eq!(k["status"], "skipped", "{k}");
    assert!(
        r["blockers"].as_array().unwrap().iter().any(|b| b
            .as_str()
            .unwrap()
            .starts_with("execution.canary")
            && b.as_str().unwrap().contains("--no-canary")),
        "{r}"
    );
    assert!(
        c["evidence"].to_string().contains("3 of 900 accepted"),
        "{c}"
    );
    std::fs::remove_file(&rec).unwrap();

    // With the drill: an active EL is killed, the switch measured, the EL restored: READY.
    let (code, r) = json_report(&env, &["--drill"]);
    let d = check(&r, "ha.failover_drill");
    assert_eq!(code, 0, "{:#?}", not_passing(&r));
    assert_eq!(r["verdict"], "READY");
    assert_eq!(d["status"], "pass", "{d}");
    let ev = d["evidence"].to_string();
    assert!(
        ev.contains("kill -9 of") && ev.contains("gap") && ev.contains("healthy again"),
        "{ev}"
    );

    // A JWT secret others can read fails security, naming the file and the fix.
    let jwt = env.state().join("secrets/jwt/val-2--val-2-el-1.hex");
    std::fs::set_permissions(&jwt, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, r) = json_report(&env, &["--no-canary"]);
    std::fs::set_permissions(&jwt, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(code, 1);
    let c = check(&r, "security.jwt_files");
    assert_eq!(c["status"], "fail", "{c}");
    let ev = c["evidence"].to_string();
    assert!(
        ev.contains("val-2--val-2-el-1.hex") && ev.contains("0644") && ev.contains("chmod 600"),
        "{ev}"
    );
    assert!(
        r["blockers"].to_string().contains("security.jwt_files"),
        "{r}"
    );

    // Every secret, not only JWT files: a validator's signing key and the API token that
    // others can read and a secrets directory others can list fail, each named with its fix.
    let key = env.state().join("secrets/validators/val-1.key");
    let token = env.state().join("secrets/api.token");
    let vdir = env.state().join("secrets/validators");
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(&key, 0o644);
    mode(&token, 0o644);
    mode(&vdir, 0o755);
    let (code, r) = json_report(&env, &["--no-canary"]);
    mode(&key, 0o600);
    mode(&token, 0o600);
    mode(&vdir, 0o700);
    assert_eq!(code, 1, "{:#?}", not_passing(&r));
    assert_eq!(r["verdict"], "NOT-READY");
    let c = check(&r, "security.secret_files");
    assert_eq!(c["status"], "fail", "{c}");
    let ev = c["evidence"].to_string();
    for want in [
        "val-1.key is mode 0644",
        "chmod 600",
        "api.token is mode 0644",
        "validators is a directory of mode 0755",
        "chmod 700",
    ] {
        assert!(ev.contains(want), "{want}: {ev}");
    }
    assert!(
        r["blockers"].to_string().contains("security.secret_files"),
        "{r}"
    );

    // A secret that reached a log file fails the scan, naming both files (not the secret).
    let secret = std::fs::read_to_string(&jwt).unwrap();
    let leak = env.state().join("logs/leak.log");
    std::fs::write(&leak, format!("debug: jwt=0x{}\n", secret.trim())).unwrap();
    let (_, r) = json_report(&env, &["--no-canary"]);
    std::fs::remove_file(&leak).unwrap();
    let c = check(&r, "security.secrets_in_logs");
    assert_eq!(c["status"], "fail", "{c}");
    let ev = c["evidence"].to_string();
    assert!(
        ev.contains("val-2--val-2-el-1.hex") && ev.contains("leak.log"),
        "{ev}"
    );
    assert!(
        !r.to_string().contains(secret.trim()),
        "the report printed the secret"
    );

    // Execution clients that disagree on a receipt (a test hook of debug builds: val-2-el-1
    // reports one more gas used than it charged): the canary fails, naming the client and
    // the field, and the verdict is NOT READY. (The reports after this one leave the
    // canary out.)
    let gateway = format!(
        "http://{}",
        env.status()["monitor"]["gateway"]
            .as_str()
            .expect("the gateway's address")
    );
    let head = || -> Option<u64> {
        let v: Value = ureq::post(&gateway)
            .timeout(Duration::from_secs(2))
            .send_json(serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}))
            .ok()?
            .into_json()
            .ok()?;
        u64::from_str_radix(v["result"].as_str()?.trim_start_matches("0x"), 16).ok()
    };
    let stopped = std::time::Instant::now();
    env.ok(&["down"]);
    let o = env
        .cmd(&["up", "--detach"])
        .env("CHAINCTL_TEST_FAULT", "receipt-skew:val-2-el-1")
        .output()
        .unwrap();
    assert!(o.status.success(), "up: {}", text(&o.stderr));
    wait_ready(&api, "the devnet to be ready again");
    // Blocks made after the stop (a supervisor starts again in about a second).
    let before = std::fs::read_to_string(env.state().join("stops.json")).unwrap_or_default();
    assert!(
        before.contains("down_at_ms"),
        "the stop is on record: {before}"
    );
    let resumed = head().unwrap_or(0) + 3;
    wait_for("blocks after the stop", Duration::from_secs(30), || {
        (head()? >= resumed).then_some(())
    });
    // A window of the blocks since a few seconds before the stop.
    let window = format!("{}s", stopped.elapsed().as_secs() + 5);
    let (code, r) = json_report(&env, &["--window", &window]);
    assert_eq!(code, 1, "{:#?}", not_passing(&r));
    // The stop was asked for (`down`): its gap in the blocks is planned downtime, not
    // missed slots (a slot or two missed while the validators start may warn).
    let c = check(&r, "consensus.block_production");
    assert_ne!(c["status"], "fail", "{c}");
    assert!(
        c["evidence"].to_string().contains("planned downtime"),
        "{c}\n{}\n{}",
        r["blocks"],
        std::fs::read_to_string(env.state().join("stops.json")).unwrap_or_default()
    );
    let c = check(&r, "execution.canary");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        c["summary"]
            .as_str()
            .unwrap()
            .contains("receipts differ between execution clients: val-2-el-1 has gasUsed"),
        "{c}"
    );
    assert!(
        r["blockers"]
            .to_string()
            .contains("execution.canary failed"),
        "{r}"
    );

    // A gateway whose allow-list leaves out `eth_sendRawTransaction`: the canary is
    // refused there, and says so.
    env.ok(&["down"]);
    env.write_profile(&PROFILE.replace(
        "gateway: {port: auto}",
        "gateway: {port: auto, allow: [eth_chainId, eth_blockNumber, eth_getBlockByNumber, eth_getBalance, eth_getTransactionCount, eth_getTransactionReceipt, 'net_*', 'web3_*']}",
    ));
    env.up_detached();
    wait_ready(&api, "the devnet to be ready again");
    let (code, r) = json_report(&env, &[]);
    assert_eq!(code, 1, "{:#?}", not_passing(&r));
    let c = check(&r, "execution.canary");
    assert_eq!(c["status"], "fail", "{c}");
    let summary = c["summary"].as_str().unwrap();
    assert!(
        summary.contains("refused by the gateway")
            && summary.contains("eth_sendRawTransaction")
            && summary.contains("gateway.allow"),
        "{c}"
    );

    // A frozen EL (SIGSTOP: its port accepts, nothing answers): execution fails for it,
    // and its validator has no backup in sync.
    let st = env.status();
    let pid = crate::util::pid_of(&st, "val-1-el-1").unwrap();
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let r = wait_for(
        "the frozen EL to fail the execution checks",
        Duration::from_secs(30),
        || {
            let (_, r) = json_report(&env, &["--no-canary"]);
            (check(&r, "execution.synced")["status"] == "fail"
                && check(&r, "execution.backup")["status"] == "fail")
                .then_some(r)
        },
    );
    // (chainctl may have restarted it meanwhile: health.restart_el_after.)
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    let synced = check(&r, "execution.synced");
    assert!(
        synced["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("val-1-el-1: unhealthy")),
        "{synced}"
    );
    assert!(
        check(&r, "execution.backup")["evidence"]
            .to_string()
            .contains("val-1: active"),
        "{r}"
    );
    assert_eq!(r["verdict"], "NOT-READY");

    // An EL producing blocks by itself beside the network (dev mode) is flagged.
    std::fs::write(env.path("rogue.py"), ROGUE).unwrap();
    env.write_profile(&format!(
        "{PROFILE}services:\n  rogue:\n    command: [python3, rogue.py, '{{{{port.http}}}}']\n    workdir: .\n    ports: {{http: auto}}\n"
    ));
    wait_for("the rogue EL to run", Duration::from_secs(30), || {
        env.status()["services"]
            .as_array()?
            .iter()
            .any(|s| s["name"] == "rogue" && s["state"] == "ready")
            .then_some(())
    });
    let (code, r) = json_report(&env, &[]);
    assert_eq!(code, 1);
    let c = check(&r, "consensus.no_dev_mode");
    assert_eq!(c["status"], "fail", "{c}");
    let ev = c["evidence"].to_string();
    assert!(ev.contains("rogue") && ev.contains("NOT ours"), "{ev}");

    // The chain halts (two of four validators frozen: no quorum). The time since the last
    // block counts, so block production fails instead of reporting "none missed".
    let st = env.status();
    let frozen: Vec<nix::unistd::Pid> = ["val-2", "val-3"]
        .iter()
        .map(|v| nix::unistd::Pid::from_raw(crate::util::pid_of(&st, v).unwrap() as i32))
        .collect();
    for p in &frozen {
        nix::sys::signal::kill(*p, nix::sys::signal::Signal::SIGSTOP).unwrap();
    }
    std::thread::sleep(Duration::from_secs(6));
    let (code, r) = json_report(&env, &["--no-canary"]);
    for p in &frozen {
        let _ = nix::sys::signal::kill(*p, nix::sys::signal::Signal::SIGCONT);
    }
    assert_eq!(code, 1);
    let c = check(&r, "consensus.block_production");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        c["summary"].as_str().unwrap().contains("longest gap"),
        "{c}"
    );

    // A drill whose failover never happens: val-0 (the validator drilled) has one
    // execution client, nothing to switch to. The drill fails, NOT READY.
    env.ok(&["down"]);
    env.write_profile(&PROFILE.replace(
        "execution: [builtin, builtin]",
        "execution: [[builtin], [builtin, builtin], [builtin, builtin], [builtin, builtin]]",
    ));
    env.up_detached();
    wait_ready(&api, "the devnet to be ready again");
    let (code, r) = json_report(&env, &["--drill", "--no-canary"]);
    assert_eq!(code, 1, "{:#?}", not_passing(&r));
    let d = check(&r, "ha.failover_drill");
    assert_eq!(d["status"], "fail", "{d}");
    assert!(
        d["evidence"].to_string().contains("switched to nothing"),
        "{d}"
    );
    assert!(
        r["blockers"]
            .to_string()
            .contains("ha.failover_drill failed"),
        "{r}"
    );

    // Could not run (no network): exit 2 with the reason.
    env.ok(&["down"]);
    let (code, out) = report(&env, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("could not run"), "{out}");
}
