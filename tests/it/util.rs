//! Drives the real `chainctl` binary in a temp dir, so each test reads like the commands
//! a user would type. Every environment stops what it started when dropped.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A statically linked chainctl: `CHAINCTL_STATIC_BIN`, else built here exactly as the
/// docs say (once; later calls find it built).
pub fn static_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_static_binary).clone()
}

fn build_static_binary() -> PathBuf {
    if let Ok(p) = std::env::var("CHAINCTL_STATIC_BIN") {
        return PathBuf::from(p);
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{root}/target"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--bin",
            "chainctl",
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(root)
        .status()
        .unwrap();
    assert!(st.success(), "the static build failed");
    PathBuf::from(target).join("x86_64-unknown-linux-gnu/release/chainctl")
}

/// `chainctl:VERSION`, the image the validators and their execution clients run, built
/// once per test binary from the static binary (never pulled).
pub fn chainctl_image() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let bin = static_binary();
        let tag = format!("chainctl:{}", env!("CARGO_PKG_VERSION"));
        let o = Command::new(&bin)
            .args(["image", "build", "--tag", &tag])
            .output()
            .unwrap();
        assert!(o.status.success(), "image build: {}", text(&o.stderr));
    });
}

/// Writes an executable script. The file is written by a child process, never through a
/// descriptor of this one: a descriptor open for writing here can be inherited by a
/// process another test thread forks at that moment, and while that child lives the
/// script cannot be run ("Text file busy", ETXTBSY), which made tests flaky.
pub fn write_executable(path: &Path, content: &str) {
    use std::io::Write as _;
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh writes the script");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(content.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "cannot write {}",
        path.display()
    );
}

/// The image of the external-client stand-ins: `reth`, `geth` and `erigon` on its PATH
/// are the stand-in script of the client tests (busybox's shell runs it, from Debian's
/// `busybox-static`), running our static binary's engine. Built once per test binary
/// with `docker import` (never pulled); its tag is returned.
pub fn standin_image() -> String {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let busybox = Path::new("/bin/busybox");
            assert!(
                busybox.is_file(),
                "/bin/busybox is missing: .ci/run installs Debian's busybox-static, which the stand-in image needs"
            );
            let root = tempfile::tempdir().unwrap();
            let r = root.path();
            for d in ["bin", "usr/local/bin", "tmp"] {
                std::fs::create_dir_all(r.join(d)).unwrap();
            }
            std::fs::copy(busybox, r.join("bin/busybox")).unwrap();
            for applet in ["sh", "cat", "printf", "echo"] {
                std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
            }
            std::fs::copy(static_binary(), r.join("chainctl")).unwrap();
            for (name, version) in [
                ("reth", "Reth Version: 2.5.1"),
                ("geth", "geth version 1.16.3-stable-abcdef12"),
                ("erigon", "erigon version 3.2.1-abcdef12"),
            ] {
                let path = r.join("usr/local/bin").join(name);
                std::fs::write(&path, crate::clients::standin_script(version, "/chainctl")).unwrap();
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .unwrap();
            }
            let tag = format!("chainctl-standin:{}", env!("CARGO_PKG_VERSION"));
            let st = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "chmod 1777 '{0}/tmp' && tar -C '{0}' -c . | docker import --change 'ENV PATH=/usr/local/bin:/bin' - {tag}",
                    r.display()
                ))
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "docker import of the stand-in image failed");
            tag
        })
        .clone()
}

/// The machine's two cores, as the tests share them: the chaos experiments, whose verdict
/// includes how fast the network comes back (blocks at the block time within 5 s of the
/// last fault), have them without the other load-heavy tests (devnets under load, Swarm,
/// real systemd); those share them with each other. Light tests take nothing. Taken
/// before [`DOCKER_ENGINE`] by the tests that hold both, so that they never wait for each
/// other in a circle.
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A load-heavy test: shares the machine with the others (see [`MACHINE`]).
pub fn busy_machine() -> std::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

/// A test that measures recovery times: has the machine without the load-heavy tests.
pub fn quiet_machine() -> std::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

/// Tests that use the host's Docker engine hold this: shared by those that only run
/// containers, exclusive for the one that turns the engine into a swarm manager (the
/// engine-wide change the others must not see half-way). One test binary runs them all,
/// so the lock is what keeps them apart.
static DOCKER_ENGINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Shares the Docker engine with the other container tests (see [`DOCKER_ENGINE`]).
pub fn docker_engine() -> std::sync::RwLockReadGuard<'static, ()> {
    DOCKER_ENGINE.read().unwrap_or_else(|e| e.into_inner())
}

/// Has the Docker engine alone (see [`DOCKER_ENGINE`]).
pub fn docker_engine_alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    DOCKER_ENGINE.write().unwrap_or_else(|e| e.into_inner())
}

/// `docker ARGS` (the engine's own CLI, as a user would check what chainctl made).
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker is not installed: these tests need the Docker engine")
}

/// `docker ARGS`, which must succeed: its trimmed output.
pub fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(o.status.success(), "docker {args:?}: {}", text(&o.stderr));
    text(&o.stdout).trim().to_string()
}

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chainctl"))
}

/// A temp dir holding one profile and its state dir.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("cc")
                .tempdir_in("/tmp")
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn state(&self) -> PathBuf {
        self.path("state")
    }

    pub fn profile(&self) -> PathBuf {
        self.path("profile.yaml")
    }

    /// Writes the profile (atomically, as editors do, so a watcher never sees half a file).
    pub fn write_profile(&self, yaml: &str) {
        let tmp = self.path(".profile.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.profile()).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--profile")
            .arg(self.profile())
            .arg("--state-dir")
            .arg(self.state())
            .args(args);
        c.env_remove("CHAINCTL_PROFILE")
            .env_remove("CHAINCTL_STATE_DIR")
            .env(
                "CHAINCTL_LOG",
                "debug,bollard=info,hyper=info,hyper_util=info",
            );
        c.current_dir(self.dir.path());
        c
    }

    /// Runs chainctl to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd(args);
        c.stdin(Stdio::null());
        c.output().unwrap()
    }

    /// Runs chainctl and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "chainctl {args:?} failed:\nstdout: {}\nstderr: {}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// `up --detach`, asserting it returns successfully.
    pub fn up_detached(&self) -> String {
        self.ok(&["up", "--detach"])
    }

    /// A foreground `up` as a child process.
    pub fn up_foreground(&self) -> Child {
        let mut c = self.cmd(&["up"]);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    }

    /// `status --output json`.
    pub fn status(&self) -> Value {
        let out = self.ok(&["status", "--output", "json"]);
        serde_json::from_str(&out).unwrap()
    }

    /// One service's status.
    pub fn service(&self, name: &str) -> Value {
        let st = self.status();
        st["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no service {name} in {st}"))
    }

    pub fn supervisor_log(&self) -> String {
        std::fs::read_to_string(self.state().join("supervisor.log")).unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Stop whatever the test left running, supervisor or orphans.
        let _ = Command::new(bin())
            .arg("--state-dir")
            .arg(self.state())
            .arg("down")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `f` until it returns `Some`, failing the test with `what` after `timeout`.
/// The fault kinds a `chainctl chaos` record holds.
pub fn fault_kinds(record: &Value) -> std::collections::BTreeSet<String> {
    record["faults"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| f["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of service `name` in a `status --output json` document, if it runs.
pub fn pid_of(status: &Value, name: &str) -> Option<i64> {
    status["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?["pid"]
        .as_i64()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Reads pids written one per line into a file.
pub fn read_pids(path: &Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A python3 one-liner that listens on a TCP port (for readiness).
pub fn listener_cmd(port_placeholder: &str) -> String {
    format!("[python3, -c, 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\", int(\"{port_placeholder}\"))); s.listen(); time.sleep(100000)']")
}

/// A running validator network seen from outside: its ports (the state dir's
/// `ports.json`), each validator's status endpoint and each execution client's JSON-RPC.
#[derive(Default)]
pub struct Chain {
    pub ports: Value,
    /// Services reached elsewhere than 127.0.0.1 (on another swarm node): their address.
    pub hosts: std::collections::BTreeMap<String, String>,
}

impl Chain {
    /// Reads the allocation of the network in `state`.
    pub fn read(state: &Path) -> Chain {
        let text = std::fs::read_to_string(state.join("ports.json")).unwrap();
        Chain {
            ports: serde_json::from_str(&text).unwrap(),
            hosts: Default::default(),
        }
    }

    /// Takes each service's address from `chainctl status --json` (other nodes' services).
    pub fn locate(&mut self, status: &Value) {
        for s in status["services"].as_array().into_iter().flatten() {
            if let (Some(name), Some(addr)) = (s["name"].as_str(), s["address"].as_str()) {
                self.hosts.insert(name.to_string(), addr.to_string());
            }
        }
    }

    /// The address `svc`'s ports are reached at.
    pub fn host(&self, svc: &str) -> &str {
        self.hosts.get(svc).map_or("127.0.0.1", String::as_str)
    }

    pub fn port(&self, svc: &str, name: &str) -> u16 {
        self.ports["services"][svc][name]["port"].as_u64().unwrap() as u16
    }

    /// Validator `v`'s `/status`, if it answers.
    pub fn status(&self, v: u32) -> Option<Value> {
        let val = format!("val-{v}");
        let url = format!(
            "http://{}:{}/status",
            self.host(&val),
            self.port(&val, "status")
        );
        ureq::get(&url)
            .timeout(Duration::from_secs(2))
            .call()
            .ok()?
            .into_json()
            .ok()
    }

    /// Heights validator `v` has decided (0 when it does not answer).
    pub fn decided(&self, v: u32) -> u64 {
        self.status(v)
            .and_then(|s| s["decided_blocks"].as_u64())
            .unwrap_or(0)
    }

    /// The execution clients of `validators` validators with two each.
    pub fn els(&self, validators: u32) -> Vec<String> {
        (0..validators)
            .flat_map(|v| (0..2).map(move |j| format!("val-{v}-el-{j}")))
            .collect()
    }

    /// A JSON-RPC call to an execution client; its `result`.
    pub fn rpc(&self, el: &str, method: &str, params: Value) -> Option<Value> {
        let url = format!("http://{}:{}", self.host(el), self.port(el, "http"));
        let r: Value = ureq::post(&url)
            .timeout(Duration::from_secs(2))
            .send_json(
                serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
            )
            .ok()?
            .into_json()
            .ok()?;
        r.get("result").cloned()
    }

    pub fn block_hash(&self, el: &str, n: u64) -> Option<String> {
        let b = self.rpc(
            el,
            "eth_getBlockByNumber",
            serde_json::json!([format!("0x{n:x}"), false]),
        )?;
        b["hash"].as_str().map(String::from)
    }

    pub fn el_height(&self, el: &str) -> u64 {
        self.rpc(el, "eth_blockNumber", serde_json::json!([]))
            .and_then(|v| u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0)
    }
}

/// A helper process the test started (a Python server, a proxy), killed when the test
/// ends, also when it panics: one left running would hold the test run's output pipe
/// open, and CI would wait for it.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `python3 -c SCRIPT ARGS…`, which prints its port on its first line; the
/// process (killed on drop) and the port.
pub fn python_server(script: &str, args: &[&str]) -> (Killed, u16) {
    use std::io::BufRead;
    let mut killed = Killed(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the test's server"),
    );
    let mut line = String::new();
    std::io::BufReader::new(killed.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the server's port: {line:?}"));
    (killed, port)
}
