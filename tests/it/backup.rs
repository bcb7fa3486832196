//! `chainctl backup` and `chainctl restore` on the consensus devnet (4 validators × 2
//! built-in ELs, 1 s blocks) under load through the gateway: a validator whose data dir,
//! both of its execution clients' data dirs and its key are lost comes back from a backup
//! taken while the network ran, at the head, every execution client agreeing on every
//! block, every transaction finalized; what a restore must refuse, it refuses; an
//! execution client restored from another's snapshot starts near the head instead of
//! replaying the chain from genesis.

use crate::util::{text, wait_for, Chain, Env};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const PASSPHRASE: &str = "a long passphrase for the test";

fn up(env: &Env) -> Chain {
    env.write_profile(
        "name: bk\nports: {start: 26460, end: 26559}\nchain: {chain_id: 1337, block_time: 1s, dev_accounts: 20}\nvalidators:\n  count: 4\n  execution: [builtin, builtin]\ngateway: {port: auto}\nbackup: {every: 1h, keep: 2, to: scheduled}\n",
    );
    env.up_detached();
    Chain::read(&env.state())
}

/// Runs chainctl; (exit success, stdout, stderr).
fn run(env: &Env, args: &[&str]) -> (bool, String, String) {
    let o = env
        .cmd(args)
        .env("CHAINCTL_LOG", "warn")
        .env_remove("CHAINCTL_BACKUP_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (o.status.success(), text(&o.stdout), text(&o.stderr))
}

fn head(chain: &Chain, el: &str) -> Option<u64> {
    let v = chain.rpc(el, "eth_blockNumber", json!([]))?;
    u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok()
}

/// The one backup directory `backup` printed.
fn backup_dir(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("backup "))
        .unwrap_or_else(|| panic!("no backup line in {stdout}"));
    PathBuf::from(line.split_whitespace().nth(1).unwrap())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Every execution client holds the same hash at every height from 1 to `top`.
fn all_agree(chain: &Chain, top: u64) {
    let els = chain.els(4);
    for n in 1..=top {
        let hashes: Vec<Option<String>> = els.iter().map(|el| chain.block_hash(el, n)).collect();
        assert!(
            hashes[0].is_some() && hashes.iter().all(|h| *h == hashes[0]),
            "height {n}: {:?}",
            els.iter().zip(&hashes).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_lost_validator_comes_back_from_a_backup_taken_under_load() {
    let _machine = crate::util::busy_machine();
    let env = Env::new();
    let chain = up(&env);
    let pass = env.path("passphrase");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let backups = env.path("backups");

    // Load through the gateway for the whole experiment.
    let load = env
        .cmd(&[
            "load",
            "--tps",
            "30",
            "--duration",
            "50s",
            "--accounts",
            "10",
            "--output",
            "json",
        ])
        .env("CHAINCTL_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("blocks with load", Duration::from_secs(60), || {
        (head(&chain, "val-0-el-0")? >= 8).then_some(())
    });

    // A backup of the running network, secrets encrypted to a passphrase.
    let t = Instant::now();
    let o = env
        .cmd(&[
            "backup",
            "--to",
            backups.to_str().unwrap(),
            "--include-secrets",
        ])
        .env("CHAINCTL_BACKUP_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(o.status.success(), "backup: {out}\n{}", text(&o.stderr));
    eprintln!(
        "backup of the whole devnet under load: {:?}\n{out}",
        t.elapsed()
    );
    let bk = backup_dir(&out);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(bk.join("manifest.json")).unwrap()).unwrap();
    let val1 = manifest["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "val-1")
        .unwrap()
        .clone();
    let taken_at = val1["height"].as_u64().unwrap();
    assert!(taken_at >= 8, "{val1}");
    assert_eq!(manifest["chain_id"], 1337);
    assert_eq!(manifest["secrets"]["encryption"], "passphrase");
    let sealed = std::fs::read(bk.join("secrets.tar.age")).unwrap();
    let key_file = env.state().join("secrets/validators/val-1.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed).contains(key.trim()),
        "the key is not in the backup in clear"
    );
    let (ok, out, _) = run(&env, &["backup", "verify", bk.to_str().unwrap()]);
    assert!(ok && out.contains("whole"), "{out}");
    let (ok, out, _) = run(&env, &["backup", "list", backups.to_str().unwrap()]);
    assert!(
        ok && out.contains("val-1 (") && out.contains("yes"),
        "{out}"
    );

    // Refused: restoring a validator while it runs (its key would sign twice).
    let (ok, _, err) = run(&env, &["restore", bk.to_str().unwrap(), "val-1"]);
    assert!(
        !ok && err.contains("double signing") && err.contains("chainctl stop val-1"),
        "{err}"
    );
    // Refused: one flipped byte, by `verify` and by `restore`, naming the file.
    let bad = env.path("bad-backup");
    copy_dir(&bk, &bad);
    let damaged = bad.join("val-1-el-0/engine.redb.zst");
    let mut b = std::fs::read(&damaged).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x01;
    std::fs::write(&damaged, &b).unwrap();
    let (ok, out, _) = run(&env, &["backup", "verify", bad.to_str().unwrap()]);
    assert!(
        !ok && out.contains("DAMAGED") && out.contains(damaged.to_str().unwrap()),
        "{out}"
    );
    let (ok, _, err) = run(&env, &["restore", bad.to_str().unwrap(), "val-1"]);
    assert!(!ok && err.contains(damaged.to_str().unwrap()), "{err}");
    // Refused: a backup of another chain, both chains named.
    let other = env.path("other-chain");
    copy_dir(&bk, &other);
    let mut m2 = manifest.clone();
    m2["chain_id"] = json!(4242);
    m2["genesis_hash"] = json!(format!("0x{}", "ab".repeat(32)));
    std::fs::write(other.join("manifest.json"), m2.to_string()).unwrap();
    let (ok, _, err) = run(&env, &["restore", other.to_str().unwrap(), "val-1"]);
    assert!(
        !ok && err.contains("chain 4242")
            && err.contains(&"ab".repeat(32))
            && err.contains(manifest["genesis_hash"].as_str().unwrap()),
        "{err}"
    );

    // The supervisor took a scheduled backup soon after `up` (none was fresh), and
    // /metrics shows its age, size and heights per service.
    let scheduled = env.path("scheduled");
    wait_for(
        "the first scheduled backup",
        Duration::from_secs(60),
        || {
            std::fs::read_dir(&scheduled)
                .ok()?
                .flatten()
                .find(|e| e.path().join("manifest.json").exists())
                .map(|e| e.path())
        },
    );
    let api = chain.port("chainctl", "api");
    let metrics = wait_for("backup metrics", Duration::from_secs(30), || {
        let t = ureq::get(&format!("http://127.0.0.1:{api}/metrics"))
            .call()
            .ok()?
            .into_string()
            .ok()?;
        t.contains("chainctl_backup_age_seconds{service=\"val-1\"}")
            .then_some(t)
    });
    for family in [
        "chainctl_backup_runs_total{result=\"ok\"} 1",
        "chainctl_backup_bytes{service=\"val-1-el-0\"}",
        "chainctl_backup_height{service=\"val-0\"}",
    ] {
        assert!(metrics.contains(family), "no {family} in /metrics");
    }

    // The disaster: val-1 and both of its execution clients stopped, their data dirs and
    // the validator's key gone.
    let t_lost = Instant::now();
    env.ok(&["stop", "val-1", "val-1-el-0", "val-1-el-1"]);
    for d in ["val-1", "val-1-el-0", "val-1-el-1"] {
        std::fs::remove_dir_all(env.state().join("data").join(d)).unwrap();
    }
    std::fs::remove_file(&key_file).unwrap();
    // Without the passphrase: the data comes back, the secrets do not, and it says so.
    let (ok, out, err) = run(
        &env,
        &["restore", bk.to_str().unwrap(), "val-1", "--no-start"],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("secrets not restored") && out.contains("--passphrase-file"),
        "{out}"
    );
    assert!(env.state().join("data/val-1/decided.log").exists());
    assert!(!key_file.exists(), "no key without the passphrase");
    // With it: everything, and the services start again.
    let t_restore = Instant::now();
    let (ok, out, err) = run(
        &env,
        &[
            "restore",
            bk.to_str().unwrap(),
            "val-1",
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}");
    eprintln!("{out}");
    assert!(
        out.contains("secret file(s) restored") && out.contains("started val-1"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
    assert!(
        out.contains("is kept in"),
        "the first restore's data dirs were moved aside, not deleted: {out}"
    );
    let floor: Value = serde_json::from_str(
        &std::fs::read_to_string(env.state().join("data/val-1/sign-floor.json")).unwrap(),
    )
    .unwrap();
    assert!(floor["height"].as_u64().unwrap() >= taken_at, "{floor}");

    // val-1 is back at the head, deciding with the others.
    let back = wait_for("val-1 back at the head", Duration::from_secs(90), || {
        let others = (0..4).filter(|v| *v != 1).map(|v| chain.decided(v)).max()?;
        let mine = chain.decided(1);
        (mine >= others && mine > floor["height"].as_u64().unwrap()).then_some(mine)
    });
    eprintln!(
        "val-1 lost, then restored with its secrets and back at the head (height {back}) {:?} after `restore` began; {:?} from the loss",
        t_restore.elapsed(),
        t_lost.elapsed()
    );
    let log = std::fs::read_to_string(env.state().join("logs/val-1.log")).unwrap_or_default();
    assert!(log.contains("signing floor"), "the node read its floor");

    // The load: every transaction accepted before, during and after was finalized.
    let o = load.wait_with_output().unwrap();
    let summary: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("load printed no summary ({e}): {}", text(&o.stderr)));
    eprintln!("{summary:#}");
    assert!(summary["sent"].as_u64().unwrap() > 1000, "{summary}");
    assert_eq!(summary["included"], summary["sent"], "{summary}");
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Every execution client, val-1's restored ones included, agrees on every block.
    let top = wait_for(
        "every EL at the load's last block",
        Duration::from_secs(60),
        || {
            let last = summary["last_block"].as_u64()?;
            chain
                .els(4)
                .iter()
                .all(|el| head(&chain, el).is_some_and(|h| h >= last))
                .then_some(last)
        },
    );
    all_agree(&chain, top);

    // A broken backup execution client rebuilt two ways, both measured: from genesis (its
    // validator replays every block through the Engine API), and from another client's
    // snapshot (only the blocks after it).
    let el = "val-2-el-1";
    let rebuild = |how: &str| -> (u64, u64, u64, Duration) {
        env.ok(&["stop", el]);
        std::fs::remove_dir_all(env.state().join("data").join(el)).unwrap();
        let target = head(&chain, "val-0-el-0").unwrap();
        let t0 = Instant::now();
        let mut snapshot_at = 0;
        if how == "genesis" {
            env.ok(&["restart", el]);
        } else {
            let fresh = env.ok(&["backup", "val-0-el-0", "--to", backups.to_str().unwrap()]);
            let dir = backup_dir(&fresh);
            let m: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                    .unwrap();
            snapshot_at = m["services"][0]["height"].as_u64().unwrap();
            let (ok, out, err) = run(
                &env,
                &[
                    "restore",
                    dir.to_str().unwrap(),
                    el,
                    "--source",
                    "val-0-el-0",
                ],
            );
            assert!(
                ok && out.contains("from val-0-el-0's snapshot"),
                "{out}\n{err}"
            );
        }
        let first = wait_for("the client answers", Duration::from_secs(30), || {
            head(&chain, el)
        });
        wait_for("the client at the head", Duration::from_secs(120), || {
            (head(&chain, el)? >= target).then_some(())
        });
        (first, snapshot_at, target, t0.elapsed())
    };
    // A backup while one backup client is down: taken, that client named as skipped.
    env.ok(&["stop", el]);
    let out = env.ok(&["backup", "--to", backups.to_str().unwrap()]);
    assert!(out.contains(&format!("{el}     SKIPPED")), "{out}");
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(backup_dir(&out).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["skipped"][0]["name"], el, "{m}");
    let (g_first, _, g_target, g_took) = rebuild("genesis");
    let (s_first, s_at, s_target, s_took) = rebuild("snapshot");
    eprintln!(
        "{el} rebuilt from genesis: first answer at block {g_first}, at block {g_target} after {g_took:?}; from a snapshot of val-0-el-0 at block {s_at}: first answer at block {s_first}, at block {s_target} after {s_took:?}"
    );
    // The engine opened the snapshot: it starts at the snapshot's block, not at genesis.
    assert!(s_at > 0 && s_first >= s_at, "{s_first} < {s_at}");
    let top = head(&chain, "val-0-el-0").unwrap();
    wait_for("every EL at the head", Duration::from_secs(60), || {
        chain
            .els(4)
            .iter()
            .all(|el| head(&chain, el).is_some_and(|h| h >= top))
            .then_some(())
    });
    all_agree(&chain, top);

    // The whole network lost: the first backup restored into a new state dir (network
    // files, every service, the secrets), then `up`: the chain goes on from the backup's
    // blocks, with the same genesis and the same hashes.
    env.ok(&["down"]);
    let env2 = Env::new();
    env2.write_profile(&std::fs::read_to_string(env.profile()).unwrap());
    let t0 = Instant::now();
    let (ok, out, err) = run(
        &env2,
        &[
            "restore",
            bk.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("network files restored") && out.contains("chainctl up"),
        "{out}"
    );
    env2.up_detached();
    let chain2 = Chain::read(&env2.state());
    wait_for(
        "the restored network deciding",
        Duration::from_secs(90),
        || {
            (0..4)
                .all(|v| chain2.decided(v) > taken_at + 3)
                .then_some(())
        },
    );
    eprintln!(
        "whole network rebuilt from the backup and deciding in {:?}",
        t0.elapsed()
    );
    assert_eq!(
        chain2.block_hash("val-3-el-1", taken_at).as_deref(),
        val1["block_hash"].as_str(),
        "the backup's block at its height"
    );
}
