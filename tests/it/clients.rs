//! Reth, Geth and Erigon at their boundary (the binaries cannot be installed here): the
//! exact command line chainctl renders for each, compared with golden files; no port of
//! one client on another's or on a client default; the versions `up` and `doctor`
//! accept and refuse; and `client-exec`, which refuses a data dir another process holds
//! and runs the init step before the client. Stand-in binaries print each client's real
//! `--version` line.

use crate::util::{bin, text, Env};
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A stand-in `NAME` that prints `version_line` for `--version`.
fn fake(dir: &Path, name: &str, version_line: &str) {
    std::fs::create_dir_all(dir).unwrap();
    crate::util::write_executable(
        &dir.join(name),
        &format!("#!/bin/sh\necho '{version_line}'\n"),
    );
}

const MIXED: &str = "name: mixed\nports: {start: 26000, end: 26199}\nchain: {chain_id: 1337}\nvalidators:\n  count: 4\n  execution: [[reth, builtin], [geth, builtin], [erigon, builtin], [reth, geth, erigon]]\n";

/// The profile above with the clients' binaries in `bin_dir`.
fn mixed(env: &Env, bin_dir: &Path) {
    let b = bin_dir.display();
    env.write_profile(&format!(
        "{MIXED}  clients:\n    reth: {{binary: {b}/reth}}\n    geth: {{binary: {b}/geth}}\n    erigon: {{binary: {b}/erigon, args: [--log.console.verbosity, info]}}\n"
    ));
}

fn good_clients(dir: &Path) {
    fake(dir, "reth", "Reth Version: 2.5.1");
    fake(dir, "geth", "geth version 1.16.3-stable-abcdef12");
    fake(dir, "erigon", "erigon version 3.2.1-abcdef12");
}

/// The resolved plan, as `chainctl validate --output json` prints it.
fn plan(env: &Env) -> Value {
    let out = env.ok(&["validate", "--output", "json"]);
    serde_json::from_str(&out).unwrap()
}

fn argv(plan: &Value, svc: &str) -> Vec<String> {
    plan["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == svc)
        .unwrap_or_else(|| panic!("no service {svc}"))["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn each_clients_command_line_is_the_golden_one() {
    // `validate` checks the profile's default gateway port (8545), which the mixed
    // network's test binds (CI failed once on "port 8545/tcp … is in use by chainctl").
    let _ports = default_ports_lock();
    let env = Env::new();
    let bins = env.path("bin");
    good_clients(&bins);
    mixed(&env, &bins);
    let plan = plan(&env);
    let state = env.state().display().to_string();
    let chainctl = bin().display().to_string();
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/clients");
    for (client, svc) in [
        ("reth", "val-0-el-0"),
        ("geth", "val-1-el-0"),
        ("erigon", "val-2-el-0"),
        ("builtin", "val-0-el-1"),
    ] {
        let got: String = argv(&plan, svc)
            .iter()
            .map(|a| {
                a.replace(&state, "STATE")
                    .replace(&chainctl, "CHAINCTL")
                    .replace(&bins.display().to_string(), "BIN")
                    + "\n"
            })
            .collect();
        let golden = golden_dir.join(format!("{client}.argv"));
        if std::env::var_os("CHAINCTL_BLESS").is_some() {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        assert_eq!(
            got,
            want,
            "{client}'s command line differs from {}: if the change is meant, run `CHAINCTL_BLESS=1 cargo test --test it -- clients::each_clients_command_line` and review the diff",
            golden.display()
        );
    }
}

/// The tests that check the well-known default ports (8545, 8551, …) as free, and the one
/// whose network's gateway takes 8545, take this lock: `doctor` in one probes them by
/// binding, which `validate` in another would see as "in use" if they ran at the same
/// moment.
fn default_ports_lock() -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("chainctl-tests-default-ports.lock"))
        .unwrap();
    // SAFETY: flock on a descriptor this function owns; released when the file is dropped.
    let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock");
    f
}

#[test]
fn no_client_takes_another_ones_port_or_a_default_port() {
    let _ports = default_ports_lock();
    let env = Env::new();
    let bins = env.path("bin");
    good_clients(&bins);
    mixed(&env, &bins);
    let plan = plan(&env);
    // Defaults each client would fall back to: HTTP, WS, Engine API, P2P (and Erigon's
    // per-protocol range), metrics, Erigon's private API and torrent, Reth's discv5.
    let defaults: BTreeSet<u16> = [
        8545, 8546, 8551, 30303, 30304, 30305, 30306, 30307, 6060, 6061, 9001, 9090, 42069, 9200,
    ]
    .into();
    let mut seen: BTreeSet<(u16, bool)> = BTreeSet::new();
    for s in plan["services"].as_array().unwrap() {
        for (name, a) in s["ports"].as_object().unwrap() {
            let port = a["port"].as_u64().unwrap() as u16;
            assert!(
                !defaults.contains(&port),
                "{}.{name} on default {port}",
                s["name"]
            );
            let proto = a["protocol"].as_str().unwrap();
            for udp in [false, true] {
                let used = if udp { proto != "tcp" } else { proto != "udp" };
                if used {
                    assert!(
                        seen.insert((port, udp)),
                        "{}.{name}: {port} taken twice",
                        s["name"]
                    );
                }
            }
        }
        // Every port a client is told is one of its own.
        let own: BTreeSet<String> = s["ports"]
            .as_object()
            .unwrap()
            .values()
            .map(|a| a["port"].to_string())
            .collect();
        let args = argv(&plan, s["name"].as_str().unwrap());
        for w in args.windows(2) {
            // `--x.port N`, `--port N`, `--p2p.allowed-ports N`, and `ADDR:N` values
            // (`--metrics`, `--private.api.addr`).
            let port = if w[0].ends_with(".port") || w[0].ends_with("-ports") || w[0] == "--port" {
                Some(w[1].clone())
            } else if w[0].starts_with("--") && w[1].starts_with("127.0.0.1:") {
                Some(w[1].rsplit(':').next().unwrap().to_string())
            } else {
                None
            };
            if let Some(port) = port {
                assert!(
                    own.contains(&port),
                    "{}: {} {} is not its port",
                    s["name"],
                    w[0],
                    w[1]
                );
            }
        }
    }
    // P2P is TCP and UDP on one number for each external client.
    let reth = argv(&plan, "val-0-el-0");
    let at = |flag: &str| reth[reth.iter().position(|a| a == flag).unwrap() + 1].clone();
    assert_eq!(at("--port"), at("--discovery.port"));
    // A validator with three clients drives all three, Reth first (active).
    let val3 = plan["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "val-3")
        .unwrap()
        .clone();
    let deps: Vec<&str> = val3["depends_on"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(deps, ["val-3-el-0", "val-3-el-1", "val-3-el-2"]);
}

#[test]
fn up_and_doctor_refuse_missing_and_unsupported_clients_with_what_to_install() {
    let _ports = default_ports_lock();
    let env = Env::new();
    let bins = env.path("bin");
    fake(&bins, "reth", "Reth Version: 2.5.1");
    fake(&bins, "geth", "geth version 1.13.15-stable-abcdef12");
    // no erigon at all
    mixed(&env, &bins);
    let o = env.run(&["doctor"]);
    let out = text(&o.stdout);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("ok    clients     reth 2.5.1"), "{out}");
    assert!(
        out.contains("FAIL  clients     ")
            && out.contains("is geth 1.13.15, outside the versions chainctl knows to work (>= 1.16.0, < 1.18.0): install geth >= 1.16.0, < 1.18.0"),
        "{out}"
    );
    assert!(
        out.contains("/erigon: not found on PATH (or not executable): install erigon >= 3.2.0, < 4.0.0, or set its path under `validators.clients.erigon.binary`"),
        "{out}"
    );
    assert!(out.contains("ok    ports"), "{out}");
    // `up` stops before anything starts, naming the field.
    let o = env.run(&["up", "--detach"]);
    let err = text(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("validators.execution: ")
            && err.contains("geth 1.13.15"),
        "{err}"
    );
    assert!(!env.state().join("state.json").exists(), "nothing started");
    // A binary that is not the client says so.
    fake(&bins, "geth", "Usage: something else");
    let out = text(&env.run(&["doctor"]).stdout);
    assert!(out.contains("--version printed no geth version"), "{out}");
    // The range's edges: its upper bounds are refused, its lower bounds accepted.
    for (name, line, ok) in [
        ("geth", "geth version 1.18.0-stable-abcdef12", false),
        ("geth", "geth version 1.16.0-stable-abcdef12", true),
        ("erigon", "erigon version 4.0.0-abcdef12", false),
        ("erigon", "erigon version 3.2.0-abcdef12", true),
        ("reth", "Reth Version: 3.0.0", false),
        ("reth", "reth Version: 1.9.0", true),
    ] {
        good_clients(&bins);
        fake(&bins, name, line);
        let out = text(&env.run(&["doctor"]).stdout);
        assert_eq!(!out.contains("FAIL  clients"), ok, "{line}: {out}");
    }
    // With good clients the host passes.
    good_clients(&bins);
    let o = env.run(&["doctor"]);
    assert!(
        !text(&o.stdout).contains("FAIL  clients"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn client_exec_refuses_a_data_dir_another_process_holds() {
    let env = Env::new();
    let data = env.path("data");
    std::fs::create_dir_all(data.join("geth")).unwrap();
    let lock = data.join("geth/LOCK");
    std::fs::write(&lock, "").unwrap();
    let marker = env.path("ran");
    let exec = |lock: &Path, kind: &str| {
        let file = if kind == "pid" {
            "db/lock"
        } else {
            "geth/LOCK"
        };
        Command::new(bin())
            .arg("client-exec")
            .arg("--data-dir")
            .arg(lock.parent().unwrap().parent().unwrap())
            .args(["--lock", file])
            .args(["--lock-kind", kind, "--init-argc", "3", "--", "sh", "-c"])
            .arg(format!("echo init >> {}", marker.display()))
            .args(["sh", "-c"])
            .arg(format!("echo client $$ >> {}", marker.display()))
            .output()
            .unwrap()
    };
    // Free: the init step runs, then the client.
    let o = exec(&lock, "flock");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&marker)
            .unwrap()
            .lines()
            .map(|l| l.split(' ').next().unwrap())
            .collect::<Vec<_>>(),
        ["init", "client"]
    );
    // Held (as Geth and Erigon hold it: flock): refused, nothing runs.
    let f = std::fs::File::open(&lock).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) },
        0
    );
    let o = exec(&lock, "flock");
    let err = text(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains(&format!("the data dir {} is in use", data.display()))
            && err.contains("Two clients cannot share a data dir"),
        "{err}"
    );
    drop(f);
    // Reth's lock names its owner's pid: a live one refuses, a dead one does not.
    let reth_lock = env.path("reth/db/lock");
    std::fs::create_dir_all(reth_lock.parent().unwrap()).unwrap();
    let sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(&reth_lock, format!("{}\n", sleeper.id())).unwrap();
    let o = exec(&reth_lock, "pid");
    assert!(
        text(&o.stderr).contains(&format!("process {} holds its lock", sleeper.id())),
        "{}",
        text(&o.stderr)
    );
    // The same pid with another start time is a later process: the lock is stale.
    std::fs::write(&reth_lock, format!("{}\n1", sleeper.id())).unwrap();
    let o = exec(&reth_lock, "pid");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut sleeper = sleeper;
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let o = exec(&reth_lock, "pid");
    assert!(o.status.success(), "{}", text(&o.stderr));
    // A failing init step stops the client from starting.
    let o = Command::new(bin())
        .args(["client-exec", "--init-argc", "1", "--", "false", "true"])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o.stderr).contains("the init step `false` failed"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn units_refuse_a_client_binary_their_hardening_would_hide() {
    let env = Env::new();
    env.write_profile(
        "name: hid\nvalidators:\n  count: 1\n  execution: [geth]\n  clients:\n    geth: {binary: /tmp/clients/geth}\n",
    );
    let o = Command::new(bin())
        .arg("-p")
        .arg(env.profile())
        .args(["--state-dir", "/var/lib/chainctl/hid", "render", "systemd"])
        .args(["--chainctl", "/usr/local/bin/chainctl", "-o"])
        .arg(env.path("units"))
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("service val-0-el-0: its program /tmp/clients/geth is under /tmp/"),
        "{err}"
    );
}

/// A stand-in `NAME` that answers `--version` with `version_line`, records each command
/// line it is given in its data dir (`standin.argv`, or `standin-init.argv` for the init
/// step, whose last word is the genesis), and otherwise runs chainctl's built-in engine
/// with what the client's own flags name: its data dir, genesis (Reth's `--chain`, else
/// the one its init step was given), HTTP and Engine API addresses and ports and JWT
/// secret. So the validators drive, through the Engine API, exactly the endpoints and
/// secrets each client's command line holds. Like the real clients it answers
/// `eth_syncing` as syncing until a forkchoice update moves its head.
fn engine_standin(dir: &Path, name: &str, version_line: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let script = standin_script(version_line, &bin().display().to_string());
    crate::util::write_executable(&dir.join(name), &script);
}

/// The script of [`engine_standin`], running the engine as `chainctl` (a POSIX shell
/// script: it runs as well in the stand-in image's busybox).
pub fn standin_script(version_line: &str, chainctl: &str) -> String {
    format!(
        r#"#!/bin/sh
if [ "$1" = --version ]; then echo '{version_line}'; exit 0; fi
dd= g= hp= wp= ep= jwt= init= prev= ha=127.0.0.1 ea=127.0.0.1
for a in "$@"; do
  case "$prev" in
    --datadir) dd=$a;; --chain) g=$a;; --http.port) hp=$a;; --ws.port) wp=$a;; --authrpc.port) ep=$a;; --authrpc.jwtsecret) jwt=$a;;
    --http.addr) ha=$a;; --authrpc.addr) ea=$a;;
  esac
  [ "$a" = init ] && init=1
  prev=$a
done
if [ -n "$init" ]; then
  printf '%s\n' "$@" > "$dd/standin-init.argv"
  printf '%s' "$prev" > "$dd/standin-genesis"
  exit 0
fi
printf '%s\n' "$@" > "$dd/standin.argv"
[ -z "$g" ] && g=$(cat "$dd/standin-genesis")
exec '{chainctl}' node evm --genesis "$g" --http-addr "$ha" --http-port "$hp" ${{wp:+--ws-port "$wp"}} --authrpc-addr "$ea" --authrpc-port "$ep" --jwt-secret "$jwt" --datadir "$dd/engine" --syncing-until-new-head
"#
    )
}

/// The words after `flag` in a recorded command line.
pub fn after<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
    argv.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

/// The TOML config file a recorded command line names with `--config`, parsed by
/// Python's tomllib (an independent parser), as JSON.
pub fn toml_config(el: &str, argv: &[String]) -> Value {
    let config = after(argv, "--config");
    assert_eq!(config.len(), 1, "{el}: {argv:?}");
    let o = Command::new("python3")
        .args([
            "-c",
            "import json,sys,tomllib; print(json.dumps(tomllib.load(open(sys.argv[1],'rb'))))",
            config[0],
        ])
        .output()
        .expect("python3 (3.11 or later, for tomllib) parses the clients' configs here");
    assert!(o.status.success(), "{el}: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The strings of a JSON array.
pub fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

/// A mixed network on this host, each external client a stand-in running our engine
/// behind that client's command line: the validators make blocks through every one of
/// them, and each one was started with its own node key and, as its static peers, the
/// enode (that key's public key, at the P2P port the plan gave) of every other external
/// client — through the flag or file that client reads them from.
#[test]
fn a_mixed_network_runs_behind_each_clients_command_line_with_static_peers() {
    use crate::util::{wait_for, Chain};
    // Its gateway takes 8545, which the doctor test checks is free.
    let _ports = default_ports_lock();
    let env = Env::new();
    let bins = env.path("bin");
    engine_standin(&bins, "reth", "Reth Version: 2.5.1");
    engine_standin(&bins, "geth", "geth version 1.16.3-stable-abcdef12");
    engine_standin(&bins, "erigon", "erigon version 3.2.1-abcdef12");
    let b = bins.display();
    let profile = format!(
        "name: mixedrun\nports: {{start: 27400, end: 27599}}\nchain: {{chain_id: 1337, block_time: 1s}}\nvalidators:\n  count: 4\n  execution: [[reth, builtin], [geth], [erigon], [reth, geth]]\n  clients:\n    reth: {{binary: {b}/reth}}\n    geth: {{binary: {b}/geth}}\n    erigon: {{binary: {b}/erigon}}\n"
    );
    env.write_profile(&profile);
    env.up_detached();
    let chain = Chain::read(&env.state());
    let els = [
        "val-0-el-0",
        "val-0-el-1",
        "val-1-el-0",
        "val-2-el-0",
        "val-3-el-0",
        "val-3-el-1",
    ];
    wait_for(
        "every EL past height 3",
        std::time::Duration::from_secs(90),
        || els.iter().all(|el| chain.el_height(el) >= 3).then_some(()),
    );
    let hashes: BTreeSet<Option<String>> = els.iter().map(|el| chain.block_hash(el, 3)).collect();
    assert_eq!(hashes.len(), 1, "one chain on every client: {hashes:?}");
    assert!(hashes.iter().all(Option::is_some), "{hashes:?}");

    // The enode of each external client, computed here from its key file.
    let key_file = |el: &str| env.state().join(format!("secrets/p2p/{el}.key"));
    let enode = |chain: &Chain, el: &str| {
        let path = key_file(el);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 64, "{}: the key alone", path.display());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        let key = secp256k1::SecretKey::from_slice(&hex::decode(text).unwrap()).unwrap();
        let public = secp256k1::PublicKey::from_secret_key(secp256k1::SECP256K1, &key);
        format!(
            "enode://{}@127.0.0.1:{}",
            hex::encode(&public.serialize_uncompressed()[1..]),
            chain.port(el, "p2p")
        )
    };
    let recorded = |el: &str| -> Option<Vec<String>> {
        let text = std::fs::read_to_string(env.state().join("data").join(el).join("standin.argv"));
        Some(text.ok()?.lines().map(String::from).collect())
    };
    let check = |chain: &Chain, external: &[(&str, &str)]| {
        let ids: BTreeSet<String> = external.iter().map(|(el, _)| enode(chain, el)).collect();
        assert_eq!(ids.len(), external.len(), "every client its own key");
        let max_peers = (3 * (external.len() - 1)).to_string();
        for (el, client) in external {
            let argv = recorded(el).unwrap_or_else(|| panic!("{el} never started"));
            let want: BTreeSet<String> = external
                .iter()
                .filter(|(o, _)| o != el)
                .map(|(o, _)| enode(chain, o))
                .collect();
            let list = |flag: &str| -> BTreeSet<String> {
                let v = after(&argv, flag);
                assert_eq!(v.len(), 1, "{el}: {flag} once in {argv:?}");
                v[0].split(',').map(String::from).collect()
            };
            // It listens where its enode says.
            let port = chain.port(el, "p2p").to_string();
            assert_eq!(after(&argv, "--port"), [port.as_str()], "{el}");
            let key = key_file(el).display().to_string();
            match *client {
                "reth" => {
                    assert_eq!(after(&argv, "--addr"), ["127.0.0.1"], "{el}");
                    assert_eq!(after(&argv, "--p2p-secret-key"), [key.as_str()], "{el}");
                    // Reth reads its trusted peers from its TOML config (reth-config's
                    // `[peers] trusted_nodes`), as it would in a container.
                    let doc = toml_config(el, &argv);
                    assert_eq!(strings(&doc["peers"]["trusted_nodes"]), want, "{el}");
                }
                "erigon" => {
                    assert_eq!(after(&argv, "--nodekey"), [key.as_str()], "{el}");
                    assert_eq!(list("--staticpeers"), want, "{el}");
                    assert_eq!(list("--trustedpeers"), want, "{el}");
                    assert_eq!(after(&argv, "--maxpeers"), [max_peers.as_str()], "{el}");
                }
                _ => {
                    assert_eq!(after(&argv, "--nodekey"), [key.as_str()], "{el}");
                    assert_eq!(after(&argv, "--maxpeers"), [max_peers.as_str()], "{el}");
                    // Geth reads static peers from its TOML config only: parsed as TOML
                    // (Python's tomllib, an independent parser).
                    let doc = toml_config(el, &argv);
                    for field in ["StaticNodes", "TrustedNodes"] {
                        assert_eq!(strings(&doc["Node"]["P2P"][field]), want, "{el}: {field}");
                    }
                    // Its init step ran first, on its own genesis file.
                    let data = env.state().join("data").join(el);
                    let init = std::fs::read_to_string(data.join("standin-init.argv")).unwrap();
                    assert!(init.ends_with("/network/genesis-geth.json\n"), "{init}");
                }
            }
        }
    };
    let mut external = vec![
        ("val-0-el-0", "reth"),
        ("val-1-el-0", "geth"),
        ("val-2-el-0", "erigon"),
        ("val-3-el-0", "reth"),
        ("val-3-el-1", "geth"),
    ];
    check(&chain, &external);

    // The report upgrades each client's WebSocket where that client serves it: Reth's,
    // Geth's and Erigon's own `ws` port (their HTTP port answers 403, as the stand-ins'
    // does), the built-in engine's HTTP port. Asking on the HTTP port, it could never
    // pass on a real Reth. (The stand-ins serve no metrics or P2P, so only the WebSocket
    // part of `infra.endpoints` is looked at here.) A P2P node key others can read fails
    // the secret-file check, naming the key and the fix, and the verdict is NOT READY.
    let node_key = key_file("val-1-el-0");
    let mode = |m: u32| {
        std::fs::set_permissions(&node_key, std::os::unix::fs::PermissionsExt::from_mode(m))
            .unwrap()
    };
    mode(0o644);
    let r = env.run(&[
        "report",
        "--window",
        "20s",
        "--format",
        "json",
        "--no-canary",
    ]);
    mode(0o600);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r.stderr));
    let out = text(&r.stdout);
    let report: Value = serde_json::from_str(&out[out.find('{').expect("a JSON report")..])
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    let secrets = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "security.secret_files")
        .unwrap();
    assert_eq!(secrets["status"], "fail", "{secrets}");
    let ev = secrets["evidence"].to_string();
    assert!(
        ev.contains("p2p/val-1-el-0.key is mode 0644") && ev.contains("chmod 600"),
        "{ev}"
    );
    assert!(
        report["blockers"]
            .to_string()
            .contains("security.secret_files"),
        "{report}"
    );
    let endpoints = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "infra.endpoints")
        .unwrap();
    let evidence: Vec<&str> = endpoints["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        evidence
            .iter()
            .any(|l| l.ends_with(", 7 WebSocket upgrades answered")),
        "the gateway's and all six clients': {evidence:?}"
    );
    assert!(
        !evidence.iter().any(|l| l.contains("WebSocket:")),
        "{evidence:?}"
    );
    // And a real request on the HTTP port of a Reth stand-in is refused, as Reth does.
    let http = chain.port("val-0-el-0", "http");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut s, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 403", "the HTTP port refuses an upgrade");

    // A client added to the running network: the profile edit reloads it, and every
    // other client is restarted with the new peer among its own — also the Reths, whose
    // command line is the same (their peers come from a file, part of their spec).
    let pids: Vec<Value> = external
        .iter()
        .map(|(el, _)| env.service(el)["pid"].clone())
        .collect();
    env.write_profile(&profile.replace("[erigon], [reth, geth]", "[erigon, reth], [reth, geth]"));
    external.push(("val-2-el-1", "reth"));
    wait_for(
        "every client restarted with six external clients",
        std::time::Duration::from_secs(90),
        || {
            let restarted = external.iter().zip(&pids).all(|((el, _), pid)| {
                let now = env.service(el);
                now["state"] == "ready" && now["pid"] != *pid
            });
            let new_peers = external.iter().all(|(el, client)| {
                let Some(argv) = recorded(el) else {
                    return false;
                };
                match *client {
                    "reth" => strings(&toml_config(el, &argv)["peers"]["trusted_nodes"]).len() == 5,
                    _ => after(&argv, "--maxpeers") == ["15"],
                }
            });
            (restarted && new_peers).then_some(())
        },
    );
    let chain = Chain::read(&env.state());
    check(&chain, &external);
    env.ok(&["down"]);
}

/// A client slower to open its ports than the probe interval (a Reth debug build takes
/// about 2 s) is probed "connection refused" while it starts; once the supervisor sees it
/// ready, those verdicts are stale, and its validator, started right after, keeps it as
/// its active client (with Reth 2.5.1 both Reths were failed over at start).
#[test]
fn a_client_slow_to_open_its_ports_is_not_failed_over_at_start() {
    use crate::util::{wait_for, Chain};
    let _ports = default_ports_lock();
    let env = Env::new();
    let bins = env.path("bin");
    engine_standin(&bins, "reth", "Reth Version: 2.5.1");
    // The same stand-in, 3 s late to open its ports.
    let path = bins.join("reth");
    let script = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\nexec '", "\nsleep 3\nexec '");
    std::fs::write(&path, script).unwrap();
    env.write_profile(&format!(
        "name: slowstart\nports: {{start: 27600, end: 27799}}\nchain: {{chain_id: 1337, block_time: 1s}}\nvalidators:\n  count: 4\n  execution: [[reth, builtin], [builtin], [builtin], [builtin]]\n  clients:\n    reth: {{binary: {}/reth}}\n",
        bins.display()
    ));
    env.up_detached();
    let chain = Chain::read(&env.state());
    wait_for(
        "val-0 past height 5",
        std::time::Duration::from_secs(60),
        || (chain.decided(0) >= 5).then_some(()),
    );
    let st = chain.status(0).unwrap();
    assert_eq!(st["active_el"], "val-0-el-0", "{st:#}");
    assert_eq!(st["el_switches"], 0, "{st:#}");
    let events = env.ok(&["status"]);
    assert!(
        !events.contains("val-0: val-0-el-0 → val-0-el-1"),
        "{events}"
    );

    // A transaction sent straight to the Reth once it builds nothing (val-0 switched to
    // its built-in engine): Reth gossips only over devp2p, which the built-in engines do
    // not speak (nor does this stand-in, which passes nothing on), so it is finalized
    // only because the built-in engines pull Reth's new pending transactions.
    env.ok(&["failover", "val-0", "--to", "val-0-el-1"]);
    wait_for(
        "val-0 on its built-in engine",
        Duration::from_secs(20),
        || (chain.status(0)?["active_el"] == "val-0-el-1").then_some(()),
    );
    let sender = chainctl_core::network::dev_signers(chainctl_core::network::DEV_MNEMONIC, 0, 1)
        .unwrap()[0]
        .address();
    let nonce = chain
        .rpc(
            "val-0-el-0",
            "eth_getTransactionCount",
            serde_json::json!([sender, "pending"]),
        )
        .and_then(|v| u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok())
        .expect("the Reth stand-in answers");
    let (hash, raw) = chainctl_load::signed_transfer(1337, 0, nonce).unwrap();
    let sent = std::time::Instant::now();
    let accepted = chain
        .rpc(
            "val-0-el-0",
            "eth_sendRawTransaction",
            serde_json::json!([raw]),
        )
        .expect("the Reth stand-in takes it");
    assert_eq!(accepted, serde_json::json!(hash));
    let pulled = wait_for(
        "the built-in engines pulled it",
        Duration::from_secs(10),
        || {
            ["val-1-el-0", "val-2-el-0", "val-3-el-0"]
                .iter()
                .all(|el| {
                    chain
                        .rpc(el, "eth_getTransactionByHash", serde_json::json!([hash]))
                        .is_some_and(|t| !t.is_null())
                })
                .then(|| sent.elapsed())
        },
    );
    let receipt = wait_for(
        "its receipt on a built-in engine",
        Duration::from_secs(20),
        || {
            chain
                .rpc(
                    "val-2-el-0",
                    "eth_getTransactionReceipt",
                    serde_json::json!([hash]),
                )
                .filter(|r| !r.is_null())
        },
    );
    assert_eq!(receipt["status"], "0x1");
    eprintln!(
        "pulled from the Reth stand-in by three built-in engines in {pulled:?}, finalized in {:?}",
        sent.elapsed()
    );
    env.ok(&["down"]);
}
