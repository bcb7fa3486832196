//! Helpers for tests of the built-in engine: fixtures, a running `chainctl node evm`
//! process, and JSON-RPC / Engine API calls to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chainctl::secrets::{engine_token, JwtSecret};
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
    pub dir: tempfile::TempDir,
}

impl Evm {
    pub fn start(genesis: &Path) -> Evm {
        let dir = tempfile::tempdir().unwrap();
        let jwt = dir.path().join("jwt.hex");
        let secret = JwtSecret::generate();
        std::fs::write(&jwt, secret.to_hex()).unwrap();
        let mut perms = std::fs::metadata(&jwt).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(&jwt, perms).unwrap();
        let mut child = Command::new(bin())
            .args([
                "node",
                "evm",
                "--http-port",
                "0",
                "--authrpc-port",
                "0",
                "--genesis",
            ])
            .arg(genesis)
            .arg("--jwt-secret")
            .arg(&jwt)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("engine did not start ({e}): {line:?}"));
        Evm {
            child,
            rpc: format!("http://{}", v["rpc"].as_str().unwrap()),
            engine: format!("http://{}", v["engine"].as_str().unwrap()),
            genesis: v["genesis"].as_str().unwrap().to_string(),
            secret,
            dir,
        }
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
