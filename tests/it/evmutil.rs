//! Helpers for tests of the built-in engine: fixtures, a running `chainctl node evm`
//! process, and JSON-RPC / Engine API calls to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chainctl_common::secrets::{engine_token, JwtSecret};
use serde_json::{json, Value};

/// `../shared/fixtures` (or `$CHAINCTL_FIXTURES`). Fails loudly when absent: a missing
/// fixture is a failed test, not a pass.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("CHAINCTL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    assert!(
        dir.is_dir(),
        "conformance fixtures not found at {}: put the shared fixtures there or set CHAINCTL_FIXTURES",
        dir.display()
    );
    dir
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chainctl"))
}

/// A running engine, killed on drop.
pub struct Evm {
    pub child: Child,
    pub rpc: String,
    pub engine: String,
    pub genesis: String,
    pub secret: JwtSecret,
    /// The temporary dir of an engine without a data dir (removed on drop).
    pub dir: Option<tempfile::TempDir>,
}

impl Evm {
    /// An engine that keeps its chain in memory only.
    pub fn start(genesis: &Path) -> Evm {
        let dir = tempfile::tempdir().unwrap();
        let mut evm = Evm::spawn(genesis, dir.path(), false).unwrap();
        evm.dir = Some(dir);
        evm
    }

    /// An engine keeping its chain in `dir/data` (its JWT secret in `dir/jwt.hex`, made
    /// once), so that it can be stopped and started again on the same chain.
    pub fn start_in(genesis: &Path, dir: &Path) -> Evm {
        Evm::spawn(genesis, dir, true).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Start an engine; `Err` carries what it printed when it did not start.
    pub fn spawn(genesis: &Path, dir: &Path, datadir: bool) -> Result<Evm, String> {
        Evm::spawn_with(genesis, dir, datadir, &[])
    }

    /// [`Evm::spawn`] with more arguments for `chainctl node evm`.
    pub fn spawn_with(
        genesis: &Path,
        dir: &Path,
        datadir: bool,
        args: &[&str],
    ) -> Result<Evm, String> {
        let jwt = dir.join("jwt.hex");
        let secret = if jwt.exists() {
            JwtSecret::read(&jwt).unwrap()
        } else {
            let secret = JwtSecret::generate();
            std::fs::write(&jwt, secret.to_hex()).unwrap();
            let mut perms = std::fs::metadata(&jwt).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
            std::fs::set_permissions(&jwt, perms).unwrap();
            secret
        };
        let mut cmd = Command::new(bin());
        cmd.args(["node", "evm", "--authrpc-port", "0"]);
        // Port 0 (any) unless the test names one.
        if !args.contains(&"--http-port") {
            cmd.args(["--http-port", "0"]);
        }
        cmd.arg("--genesis")
            .arg(genesis)
            .arg("--jwt-secret")
            .arg(&jwt);
        if datadir {
            cmd.arg("--datadir").arg(dir.join("data"));
        }
        cmd.args(args);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            let _ = child.kill();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut { stderr }, &mut err);
            let _ = child.wait();
            return Err(format!("engine did not start: {line:?} {err}"));
        };
        // Its log goes on to the test's stderr.
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{l}");
            }
        });
        Ok(Evm {
            child,
            rpc: format!("http://{}", v["rpc"].as_str().unwrap()),
            engine: format!("http://{}", v["engine"].as_str().unwrap()),
            genesis: v["genesis"].as_str().unwrap().to_string(),
            secret,
            dir: None,
        })
    }

    /// A public JSON-RPC call; panics on a JSON-RPC error.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        let r = self.rpc_raw(method, params);
        if let Some(e) = r.get("error") {
            panic!("{method} failed: {e}");
        }
        r["result"].clone()
    }

    pub fn rpc_raw(&self, method: &str, params: Value) -> Value {
        post(
            &self.rpc,
            None,
            &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
        )
        .1
    }

    pub fn token(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        engine_token(&self.secret, now)
    }

    /// An Engine API call with a fresh token; returns the whole response.
    pub fn engine_raw(&self, method: &str, params: Value) -> Value {
        let (status, v) = post(
            &self.engine,
            Some(&self.token()),
            &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
        );
        assert_eq!(status, 200, "{method}: HTTP {status} {v}");
        v
    }

    pub fn engine(&self, method: &str, params: Value) -> Value {
        let r = self.engine_raw(method, params);
        if let Some(e) = r.get("error") {
            panic!("{method} failed: {e}");
        }
        r["result"].clone()
    }
}

impl Drop for Evm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POST JSON; returns (HTTP status, body as JSON or as a string).
pub fn post(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = ureq::post(url)
        .timeout(Duration::from_secs(60))
        .set("content-type", "application/json");
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    match req.send_string(&body.to_string()) {
        Ok(r) => {
            let status = r.status();
            let text = r.into_string().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(ureq::Error::Status(code, r)) => {
            (code, Value::String(r.into_string().unwrap_or_default()))
        }
        Err(e) => panic!("POST {url}: {e}"),
    }
}

/// An Engine API call that returns transport failures (a killed engine) as `Err`;
/// a JSON-RPC error still fails the test.
pub fn try_engine(evm: &Evm, method: &str, params: Value) -> Result<Value, String> {
    try_call(&evm.engine, Some(&evm.token()), method, params)
}

/// A public JSON-RPC call, as [`try_engine`].
pub fn try_rpc(evm: &Evm, method: &str, params: Value) -> Result<Value, String> {
    try_call(&evm.rpc, None, method, params)
}

/// A public JSON-RPC call returning the whole answer (`result` or `error`); transport
/// failures (a killed engine) as `Err`.
pub fn try_rpc_answer(evm: &Evm, method: &str, params: Value) -> Result<Value, String> {
    call_answer(&evm.rpc, None, method, params)
}

fn try_call(url: &str, token: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
    let v = call_answer(url, token, method, params.clone())?;
    if let Some(e) = v.get("error") {
        panic!("{method} failed: {e}");
    }
    Ok(v["result"].clone())
}

fn call_answer(
    url: &str,
    token: Option<&str>,
    method: &str,
    params: Value,
) -> Result<Value, String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut req = ureq::post(url)
        .timeout(Duration::from_secs(30))
        .set("content-type", "application/json");
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    let text = req
        .send_string(&body.to_string())
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}
