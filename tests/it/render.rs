//! Rendered systemd units and compose files: accepted by the real tools
//! (`systemd-analyze verify`, `systemd-analyze security --offline=true` at most 2.5,
//! `docker-compose config`), and the copies in `systemd/` and `compose/` are current.

use crate::util::{bin, text, Env};
use std::path::Path;
use std::process::Command;

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "`{name}` is not installed: .ci/run installs it (apt-get); a missing tool fails this test"
    );
    Command::new(name)
}

fn render(profile: &str, what: &str, out: &Path) -> String {
    render_with(profile, what, out, &[])
}

fn render_with(profile: &str, what: &str, out: &Path, extra: &[&str]) -> String {
    let state = out.with_extension("state");
    let mut c = Command::new(bin());
    c.args(["-p", profile])
        .env_remove("CHAINCTL_STATE_DIR")
        .env_remove("CHAINCTL_PROFILE");
    if what == "compose" {
        c.arg("--state-dir").arg(&state);
    }
    let o = c
        .args(["render", what, "-o"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "render {what} {profile}: {}",
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// `docker-compose config` of a rendered project: it must accept it; returns its view.
fn compose_config(out: &Path) -> serde_yaml::Value {
    let c = tool("docker-compose")
        .arg("--project-directory")
        .arg(out)
        .arg("-f")
        .arg(out.join("compose.yaml"))
        .arg("config")
        .output()
        .unwrap();
    assert!(
        c.status.success(),
        "docker-compose config {out:?}: {}",
        text(&c.stderr)
    );
    serde_yaml::from_slice(&c.stdout).unwrap()
}

fn profiles() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    ["standins.yaml", "example-full.yaml", "devnet.yaml"]
        .iter()
        .map(|p| format!("{root}/profiles/{p}"))
        .collect()
}

#[test]
fn every_rendered_unit_verifies_and_scores_at_most_2_5() {
    let env = Env::new();
    // The devnet's units run chainctl itself, which the build keeps where the units'
    // ProtectHome=/PrivateTmp= would hide it: they run it through a link under /opt, as
    // from an installed copy.
    std::fs::create_dir_all("/opt").unwrap();
    let opt = tempfile::Builder::new()
        .prefix("chainctl-render-test")
        .tempdir_in("/opt")
        .unwrap();
    let installed = opt.path().join("chainctl");
    std::os::unix::fs::symlink(bin(), &installed).unwrap();
    // Scheduled backups add a oneshot service and its timer.
    let with_backup = env.path("backup.yaml");
    std::fs::write(
        &with_backup,
        std::fs::read_to_string(&profiles()[2]).unwrap()
            + "\nbackup: {every: 6h, keep: 7, to: /var/backups/chainctl-test, recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]}\n",
    )
    .unwrap();
    let mut all = profiles();
    all.push(with_backup.display().to_string());
    for (i, p) in all.iter().enumerate() {
        let out = env.path(&format!("units-{i}"));
        render_with(
            p,
            "systemd",
            &out,
            &["--chainctl", installed.to_str().unwrap()],
        );
        let mut units: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "service" || e == "target" || e == "timer")
            })
            .collect();
        units.sort();
        assert!(units.len() >= 3, "{units:?}");
        if i == 3 {
            let unit = |n: &str| std::fs::read_to_string(out.join(n)).unwrap();
            let svc = unit("chainctl-devnet-backup.service");
            assert!(
                svc.contains("Type=oneshot")
                    && svc.contains(
                        "\"backup\" \"--to\" \"/var/backups/chainctl-test\" \"--keep\" \"7\""
                    )
                    && svc.contains("\"--include-secrets\" \"--recipient\" \"age1ql3z7"),
                "{svc}"
            );
            let timer = unit("chainctl-devnet-backup.timer");
            assert!(timer.contains("OnUnitActiveSec=21600s"), "{timer}");
        }
        let v = tool("systemd-analyze")
            .arg("verify")
            .args(&units)
            .output()
            .unwrap();
        assert!(
            v.status.success() && text(&v.stderr).trim().is_empty(),
            "verify {p}: {}{}",
            text(&v.stdout),
            text(&v.stderr)
        );
        for u in units.iter().filter(|u| u.extension().unwrap() == "service") {
            let s = tool("systemd-analyze")
                .args(["security", "--offline=true"])
                .arg(u)
                .output()
                .unwrap();
            let out = text(&s.stdout) + &text(&s.stderr);
            let score: f64 = out
                .lines()
                .find_map(|l| {
                    l.split_once("Overall exposure level for ")?
                        .1
                        .split_once(": ")?
                        .1
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or_else(|| panic!("no score for {u:?}: {out}"));
            assert!(score <= 2.5, "{u:?} scores {score}");
            eprintln!("{}: {score}", u.file_name().unwrap().to_string_lossy());
        }
    }
}

#[test]
fn unit_settings_follow_the_plan() {
    let env = Env::new();
    let out = env.path("units");
    render(&profiles()[0], "systemd", &out);
    let el = std::fs::read_to_string(out.join("chainctl-standins-el-0.service")).unwrap();
    let cl = std::fs::read_to_string(out.join("chainctl-standins-cl-0.service")).unwrap();
    assert!(
        el.contains("TimeoutStopSec=300s"),
        "execution client: minutes to stop"
    );
    assert!(cl.contains("TimeoutStopSec=30s"));
    assert!(
        cl.contains("Wants=network-online.target chainctl-standins-el-0.service")
            && !cl.lines().any(|l| l.starts_with("Requires="))
            && cl.contains("After=network-online.target chainctl-standins-el-0.service")
    );
    assert!(
        el.contains("StateDirectory=chainctl/standins/data/el-0") && el.contains("User=chainctl")
    );
    assert!(
        el.contains("Restart=on-failure")
            && el.contains("RestartSec=1s")
            && el.contains("StartLimitBurst=10")
    );
    assert!(
        el.contains("RestartPreventExitStatus=78") && el.contains("MemoryDenyWriteExecute=yes")
    );
    let secret = "/var/lib/chainctl/standins/secrets/jwt/cl-0--el-0.hex";
    assert!(
        el.contains(secret) && cl.contains(secret),
        "both ends read one secret"
    );
    let target = std::fs::read_to_string(out.join("chainctl-standins.target")).unwrap();
    assert!(
        target.contains("Wants=chainctl-standins-el-0.service chainctl-standins-cl-0.service"),
        "{target}"
    );
}

#[test]
fn compose_files_are_accepted_by_docker_compose_and_publish_on_loopback_only() {
    let env = Env::new();
    for (i, p) in profiles().iter().enumerate() {
        let out = env.path(&format!("compose-{i}"));
        render(p, "compose", &out);
        let cfg = compose_config(&out);
        for (name, svc) in cfg["services"].as_mapping().unwrap() {
            for port in svc["ports"].as_sequence().into_iter().flatten() {
                // Short syntax (docker-compose 1.x) or long syntax (compose 2).
                let ip = match port.as_str() {
                    Some(short) => short.split(':').next().map(String::from),
                    None => port["host_ip"].as_str().map(String::from),
                };
                assert_eq!(ip.as_deref(), Some("127.0.0.1"), "{name:?}: {port:?}");
            }
            assert!(svc["labels"]["io.chainctl.service"].is_string());
            // Every container is hardened the same way.
            assert_eq!(svc["read_only"].as_bool(), Some(true), "{name:?}");
            assert_eq!(svc["cap_drop"][0].as_str(), Some("ALL"), "{name:?}");
            assert_eq!(
                svc["security_opt"][0].as_str(),
                Some("no-new-privileges:true"),
                "{name:?}"
            );
            if name.as_str() != Some("chainctl_init") {
                assert_eq!(svc["user"].as_str(), Some("10001:10001"), "{name:?}");
                assert_eq!(
                    svc["depends_on"]["chainctl_init"]["condition"].as_str(),
                    Some("service_completed_successfully"),
                    "{name:?} starts after the volumes are ready"
                );
            }
        }
    }
    let devnet = std::fs::read_to_string(env.path("compose-0/compose.yaml")).unwrap();
    assert!(
        devnet.contains("ENGINE_URL: \"http://el-0:20001\""),
        "services reach each other by name"
    );
    assert!(
        devnet.contains("\"cl-0-secrets:/var/lib/chainctl/standins/secrets:ro\"")
            && devnet.contains("\"el-0-secrets:/var/lib/chainctl/standins/secrets:ro\""),
        "each service mounts its own secrets volume, read-only"
    );
    assert!(
        !devnet.contains("${"),
        "nothing of the rendering host is needed"
    );
    // The validator devnet: validators wait for their ELs' healthchecks (our binary
    // probes their ports), and only validators and ELs read the network volume.
    let cfg = compose_config(&env.path("compose-2"));
    let val = &cfg["services"]["val-0"];
    assert_eq!(
        val["depends_on"]["val-0-el-1"]["condition"].as_str(),
        Some("service_healthy")
    );
    let el = &cfg["services"]["val-0-el-0"];
    assert_eq!(el["healthcheck"]["test"][2].as_str(), Some("healthcheck"));
    let vols = |s: &serde_yaml::Value| -> Vec<String> {
        s["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| serde_yaml::to_string(v).unwrap().trim().to_string())
            .collect()
    };
    assert!(
        vols(val).iter().any(|v| v.contains("chainctl_network")),
        "{:?}",
        vols(val)
    );
    assert!(devnet.contains("stop_grace_period: \"300s\""));
    for p in [
        "127.0.0.1:20001:20001/tcp",
        "127.0.0.1:20002:20002/tcp",
        "127.0.0.1:20002:20002/udp",
        "127.0.0.1:20000:20000/tcp",
    ] {
        assert!(devnet.contains(p), "{p} published");
    }
}

#[test]
fn rendering_refuses_what_cannot_work() {
    let env = Env::new();
    env.write_profile("name: r\nservices:\n  a:\n    command: [sleep, '1']\n");
    let o = env.run(&["render", "compose", "-o", "out"]);
    assert!(
        text(&o.stderr).contains("these have none: services.a.image"),
        "{}",
        text(&o.stderr)
    );
    let o = Command::new(bin())
        .arg("-p")
        .arg(env.profile())
        .args(["--state-dir", "/root/x", "render", "systemd", "-o"])
        .arg(env.path("u"))
        .output()
        .unwrap();
    assert!(
        text(&o.stderr).contains("hidden from the units by ProtectHome=yes"),
        "{}",
        text(&o.stderr)
    );
    // A program the units could not see (PrivateTmp=, ProtectHome=) is refused by name.
    let prog = env.path("node");
    std::fs::write(&prog, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.write_profile(&format!(
        "name: r\nservices:\n  a:\n    command: [{}]\n",
        prog.display()
    ));
    let o = Command::new(bin())
        .arg("-p")
        .arg(env.profile())
        .args([
            "--state-dir",
            "/var/lib/chainctl/r",
            "render",
            "systemd",
            "-o",
        ])
        .arg(env.path("u2"))
        .output()
        .unwrap();
    assert!(
        !o.status.success()
            && text(&o.stderr).contains(&format!(
                "service a: its program {} is under /tmp/",
                prog.display()
            )),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn the_rendered_profiles_in_the_repo_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = Env::new();
    for (what, extra) in [
        // The embedded default profile (the validator devnet), with a state dir that has
        // no ports.json here, so the allocation does not depend on this host; the units
        // run chainctl where `systemd install` documents it.
        (
            "systemd",
            vec![
                "--state-dir",
                "/var/lib/chainctl/devnet",
                "render",
                "systemd",
                "--chainctl",
                "/usr/local/bin/chainctl",
            ],
        ),
        (
            "compose",
            vec![
                "--state-dir",
                "/var/lib/chainctl/devnet",
                "render",
                "compose",
            ],
        ),
    ] {
        let out = env.path(what);
        let o = Command::new(bin())
            .args(&extra)
            .arg("-o")
            .arg(&out)
            .env_remove("CHAINCTL_PROFILE")
            .env_remove("CHAINCTL_STATE_DIR")
            .current_dir(root)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        let fix = format!("run `cargo run -- {} -o {what}`", extra.join(" "));
        let names = |dir: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(&root.join(what)),
            names(&out),
            "{what}/ has stale or missing files: {fix}"
        );
        for name in names(&out) {
            let fresh = std::fs::read_to_string(out.join(&name)).unwrap();
            let committed = std::fs::read_to_string(root.join(what).join(&name)).unwrap();
            assert_eq!(committed, fresh, "{what}/{name} is out of date: {fix}");
        }
    }
}

/// Values that would break a naive renderer, through the real tools.
const HOSTILE: &str = "name: h\nservices:\n  a:\n    command: [sh, -c, 'echo \"$HOME\" 50% ; true', 'x y']\n    image: debian:bookworm-slim\n    env:\n      YES: 'on'\n      NO: 'no'\n      DOLLAR: '$HOME and $$'\n      QUOTE: 'say \"hi\"'\n      CR: \"a\\rUser=root\"\n    restart: {policy: never}\n";

#[test]
fn hostile_values_stay_values_in_units_and_compose() {
    let env = Env::new();
    env.write_profile(HOSTILE);
    let units = env.path("units");
    let o = Command::new(bin())
        .arg("-p")
        .arg(env.profile())
        .args(["render", "systemd", "-o"])
        .arg(&units)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let unit = std::fs::read_to_string(units.join("chainctl-h-a.service")).unwrap();
    assert_eq!(
        unit.lines().filter(|l| l.starts_with("User=")).count(),
        1,
        "a CR in a value must not start a new line:\n{unit}"
    );
    assert!(unit.contains("Restart=no"));
    let v = tool("systemd-analyze")
        .arg("verify")
        .arg(units.join("chainctl-h-a.service"))
        .output()
        .unwrap();
    assert!(v.status.success(), "verify: {}", text(&v.stderr));
    let show = text(&v.stderr);
    assert!(show.trim().is_empty(), "{show}");

    let out = env.path("compose");
    render(env.profile().to_str().unwrap(), "compose", &out);
    let cfg = compose_config(&out);
    let a = &cfg["services"]["a"];
    assert_eq!(
        a["restart"].as_str(),
        Some("no"),
        "a string, not a boolean: {a:?}"
    );
    assert_eq!(a["environment"]["YES"].as_str(), Some("on"));
    assert_eq!(a["environment"]["NO"].as_str(), Some("no"));
    // compose prints values with `$` still escaped; unescaped, they are what we wrote.
    assert_eq!(
        a["environment"]["DOLLAR"]
            .as_str()
            .map(|v| v.replace("$$", "$"))
            .as_deref(),
        Some("$HOME and $$")
    );
    assert_eq!(a["environment"]["QUOTE"].as_str(), Some("say \"hi\""));
    assert_eq!(a["entrypoint"][0].as_str(), Some("sh"));
    assert_eq!(
        a["command"][1]
            .as_str()
            .map(|v| v.replace("$$", "$"))
            .as_deref(),
        Some("echo \"$HOME\" 50% ; true")
    );
}
