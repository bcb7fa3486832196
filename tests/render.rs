//! Rendered systemd units and compose files: accepted by the real tools
//! (`systemd-analyze verify`, `systemd-analyze security --offline=true` at most 2.5,
//! `docker-compose config`), and the copies in `systemd/` and `compose/` are current.

mod util;
use std::path::Path;
use std::process::Command;
use util::{bin, text, Env};

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
    let o = Command::new(bin())
        .args(["-p", profile, "render", what, "-o"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "render {what} {profile}: {}",
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn profiles() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    ["devnet.yaml", "example-full.yaml"]
        .iter()
        .map(|p| format!("{root}/profiles/{p}"))
        .collect()
}

#[test]
fn every_rendered_unit_verifies_and_scores_at_most_2_5() {
    let env = Env::new();
    for (i, p) in profiles().iter().enumerate() {
        let out = env.path(&format!("units-{i}"));
        render(p, "systemd", &out);
        let mut units: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "service" || e == "target")
            })
            .collect();
        units.sort();
        assert!(units.len() >= 3, "{units:?}");
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
    let el = std::fs::read_to_string(out.join("chainctl-devnet-el-0.service")).unwrap();
    let cl = std::fs::read_to_string(out.join("chainctl-devnet-cl-0.service")).unwrap();
    assert!(
        el.contains("TimeoutStopSec=300s"),
        "execution client: minutes to stop"
    );
    assert!(cl.contains("TimeoutStopSec=30s"));
    assert!(
        cl.contains("Requires=chainctl-devnet-el-0.service")
            && cl.contains("After=network-online.target chainctl-devnet-el-0.service")
    );
    assert!(
        el.contains("StateDirectory=chainctl/devnet/data/el-0") && el.contains("User=chainctl")
    );
    assert!(
        el.contains("Restart=on-failure")
            && el.contains("RestartSec=1s")
            && el.contains("StartLimitBurst=10")
    );
    assert!(
        el.contains("RestartPreventExitStatus=78") && el.contains("MemoryDenyWriteExecute=yes")
    );
    let secret = "/var/lib/chainctl/devnet/secrets/jwt/cl-0--el-0.hex";
    assert!(
        el.contains(secret) && cl.contains(secret),
        "both ends read one secret"
    );
    let target = std::fs::read_to_string(out.join("chainctl-devnet.target")).unwrap();
    assert!(
        target.contains("Wants=chainctl-devnet-el-0.service chainctl-devnet-cl-0.service"),
        "{target}"
    );
}

#[test]
fn compose_files_are_accepted_by_docker_compose_and_publish_on_loopback_only() {
    let env = Env::new();
    for (i, p) in profiles().iter().enumerate() {
        let out = env.path(&format!("compose-{i}"));
        render(p, "compose", &out);
        let c = tool("docker-compose")
            .arg("--project-directory")
            .arg(&out)
            .arg("-f")
            .arg(out.join("compose.yaml"))
            .arg("config")
            .output()
            .unwrap();
        assert!(
            c.status.success(),
            "docker-compose config {p}: {}",
            text(&c.stderr)
        );
        let cfg: serde_yaml::Value = serde_yaml::from_slice(&c.stdout).unwrap();
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
        }
    }
    let devnet = std::fs::read_to_string(env.path("compose-0/compose.yaml")).unwrap();
    assert!(
        devnet.contains("ENGINE_URL: http://el-0:20001"),
        "services reach each other by name"
    );
    assert!(
        devnet.contains("cl-0--el-0.hex:ro"),
        "secrets are mounted read-only"
    );
    assert!(devnet.contains("stop_grace_period: 300s"));
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
}

#[test]
fn the_rendered_default_profile_in_the_repo_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = Env::new();
    for what in ["systemd", "compose"] {
        let out = env.path(what);
        let o = Command::new(bin())
            .args(["render", what, "-o"])
            .arg(&out)
            .env_remove("CHAINCTL_PROFILE")
            .env_remove("CHAINCTL_STATE_DIR")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        for f in std::fs::read_dir(&out).unwrap().flatten() {
            let fresh = std::fs::read_to_string(f.path()).unwrap();
            let committed =
                std::fs::read_to_string(root.join(what).join(f.file_name())).unwrap_or_default();
            assert_eq!(
                committed,
                fresh,
                "{what}/{} is out of date: run `cargo run -- render {what} -o {what}`",
                f.file_name().to_string_lossy()
            );
        }
    }
}
