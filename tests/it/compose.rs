//! A rendered compose project of the validator devnet: `chainctl compose-init` gives each
//! service its own secrets and nothing else, and docker-compose runs the whole network on
//! this machine's Docker engine from the FROM-scratch image of our own binary (never
//! pulled): blocks, agreement, hardened containers, and the same chain after `down` and
//! `up` again.

use crate::util::{bin, text, wait_for, Env};
use serde_json::json;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const VALIDATORS: u32 = 4;

fn devnet(name: &str, port_start: u16) -> String {
    format!(
        "name: {name}\nports: {{start: {port_start}, end: {}}}\nchain: {{chain_id: 1337, block_time: 1s}}\nvalidators:\n  count: {VALIDATORS}\n  execution: [builtin, builtin]\n",
        port_start + 99
    )
}

/// `chainctl render compose` of the env's profile into `out` (a fresh state dir, so ports
/// are the host-independent allocation).
fn render(env: &Env, out: &Path) {
    let o = Command::new(bin())
        .arg("-p")
        .arg(env.profile())
        .arg("--state-dir")
        .arg(env.path("render-state"))
        .args(["render", "compose", "-o"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "render compose: {}", text(&o.stderr));
}

/// Relative paths of the files under `dir`.
fn files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `--owner` is UID:GID: anything else is refused naming the flag and the form, before
/// the init service writes anything.
#[test]
fn compose_init_owner_is_uid_colon_gid() {
    let env = Env::new();
    env.write_profile(&devnet("owner", 47_100));
    let init = |owner: &str| {
        env.run(&[
            "compose-init",
            "--ports",
            "missing-ports.json",
            "--owner",
            owner,
            "--distribute",
            "dist",
            "--digest",
            "0",
        ])
    };
    for bad in ["10001", "a:1", "1:", ":1"] {
        let o = init(bad);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "--owner {bad} was accepted");
        assert!(err.contains("--owner") && err.contains("UID:GID"), "{err}");
    }
    // A well-formed owner passes; the run then stops at the missing allocation.
    let o = init("10001:10002");
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(!err.contains("UID:GID"), "{err}");
    assert!(err.contains("missing-ports.json"), "{err}");
    assert!(
        !env.path("dist").exists(),
        "nothing written before the checks pass"
    );
}

#[test]
fn compose_init_gives_each_service_its_own_secrets_and_nothing_else() {
    let env = Env::new();
    env.write_profile(&devnet("initnet", 25500));
    let out = env.path("out");
    render(&env, &out);
    let state = env.path("state");
    let init = env.path("init");
    // The volumes compose would mount: one per service that reads secrets.
    let cfg: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(out.join("compose.yaml")).unwrap()).unwrap();
    let mut mounted = Vec::new();
    for m in cfg["services"]["chainctl_init"]["volumes"]
        .as_sequence()
        .unwrap()
    {
        if let Some(svc) = m
            .as_str()
            .unwrap()
            .split(':')
            .nth(1)
            .unwrap()
            .strip_prefix("/init/")
        {
            mounted.push(svc.to_string());
            std::fs::create_dir_all(init.join(svc)).unwrap();
            // and its data volume
            std::fs::create_dir_all(state.join("data").join(svc)).unwrap();
        }
    }
    assert_eq!(
        mounted.len(),
        12,
        "every validator and EL has a secrets volume"
    );
    let owner = {
        // SAFETY: getuid and getgid cannot fail.
        let (u, g) = unsafe { (libc::getuid(), libc::getgid()) };
        format!("{u}:{g}")
    };
    let command: Vec<String> = cfg["services"]["chainctl_init"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let digest = command[command.iter().position(|a| a == "--digest").unwrap() + 1].clone();
    let compose_init = || -> Output {
        Command::new(bin())
            .arg("-p")
            .arg(out.join("profile.yaml"))
            .arg("--state-dir")
            .arg(&state)
            .arg("compose-init")
            .arg("--ports")
            .arg(out.join("ports.json"))
            .args(["--owner", &owner, "--distribute"])
            .arg(&init)
            .args(["--digest", &digest])
            .output()
            .unwrap()
    };
    let o = compose_init();
    assert!(o.status.success(), "compose-init: {}", text(&o.stderr));

    let val0 = files(&init.join("val-0"));
    assert_eq!(
        val0,
        set(&[
            "jwt/val-0--val-0-el-0.hex",
            "jwt/val-0--val-0-el-1.hex",
            "validators/val-0.control",
            "validators/val-0.key"
        ]),
        "a validator gets its key, its control token and its two pairs' secrets"
    );
    assert_eq!(
        files(&init.join("val-2-el-1")),
        set(&["jwt/val-2--val-2-el-1.hex"]),
        "an EL gets its one pair's secret"
    );
    for (svc, rel) in [
        ("val-0", "validators/val-0.key"),
        ("val-0-el-0", "jwt/val-0--val-0-el-0.hex"),
    ] {
        let copy = init.join(svc).join(rel);
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            std::fs::read(state.join("secrets").join(rel)).unwrap(),
            "{svc}'s copy of {rel} is the master copy"
        );
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", copy.display());
        let dir_mode = std::fs::metadata(init.join(svc))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
    }
    // Validators' configs name the other containers by service name and the paths the
    // containers see.
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("data/val-0/config.json")).unwrap(),
    )
    .unwrap();
    let peers = config["peers"].as_array().unwrap();
    assert!(
        peers
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("val-1:")),
        "{peers:?}"
    );
    assert!(config["execution"][0]["engine_url"]
        .as_str()
        .unwrap()
        .starts_with("http://val-0-el-0:"));
    assert!(state.join("network/genesis.json").exists());

    // Again: keys and genesis are kept (the chain's identity); a secret the service no
    // longer reads is removed from its volume.
    let key = std::fs::read(state.join("secrets/validators/val-0.key")).unwrap();
    let genesis = std::fs::read(state.join("network/genesis.json")).unwrap();
    std::fs::write(init.join("val-0-el-0/jwt/stale.hex"), "00").unwrap();
    let o = compose_init();
    assert!(
        o.status.success(),
        "compose-init again: {}",
        text(&o.stderr)
    );
    assert_eq!(
        std::fs::read(state.join("secrets/validators/val-0.key")).unwrap(),
        key
    );
    assert_eq!(
        std::fs::read(state.join("network/genesis.json")).unwrap(),
        genesis
    );
    assert_eq!(
        files(&init.join("val-0-el-0")),
        set(&["jwt/val-0--val-0-el-0.hex"])
    );

    // A ports.json edited after the render is refused, not used (compose.yaml publishes
    // the rendered ports).
    let ports = std::fs::read_to_string(out.join("ports.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&ports).unwrap();
    v["services"]["val-1"]["status"]["port"] = json!(25599);
    std::fs::write(out.join("ports.json"), v.to_string()).unwrap();
    let o = compose_init();
    assert!(
        !o.status.success() && text(&o.stderr).contains("changed since compose.yaml was rendered"),
        "{}",
        text(&o.stderr)
    );
    // A secrets volume that is not mounted is named.
    std::fs::write(out.join("ports.json"), &ports).unwrap();
    std::fs::remove_dir_all(init.join("val-3-el-0")).unwrap();
    let o = compose_init();
    assert!(
        !o.status.success() && text(&o.stderr).contains("service val-3-el-0's secrets volume"),
        "{}",
        text(&o.stderr)
    );
}

/// A compose project; dropping it runs `docker-compose down -v`, even after a failed
/// assertion.
struct Project {
    dir: PathBuf,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .arg("--project-directory")
            .arg(&self.dir)
            .arg("-f")
            .arg(self.dir.join("compose.yaml"))
            .args(args)
            .output()
            .expect("docker-compose is not installed: .ci/run installs it")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.compose(args);
        assert!(
            o.status.success(),
            "docker-compose {args:?}: {}",
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    fn container(&self, svc: &str) -> String {
        self.ok(&["ps", "-q", svc]).trim().to_string()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--timeout", "5"]);
    }
}

fn docker(args: &[&str]) -> String {
    let o = Command::new("docker").args(args).output().unwrap();
    assert!(o.status.success(), "docker {args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

/// The paths of the files a container sees under `dir` (`docker cp` reads them through
/// the container's mounts, so this works on a FROM-scratch image with no shell).
fn files_in_container(id: &str, dir: &str) -> BTreeSet<String> {
    let o = Command::new("docker")
        .args(["cp", &format!("{id}:{dir}"), "-"])
        .output()
        .unwrap();
    assert!(o.status.success(), "docker cp {dir}: {}", text(&o.stderr));
    let mut ar = tar::Archive::new(&o.stdout[..]);
    ar.entries()
        .unwrap()
        .flatten()
        .filter(|e| e.header().entry_type().is_file())
        .map(|e| e.path().unwrap().display().to_string())
        .collect()
}

#[test]
fn the_devnet_runs_from_its_rendered_compose_project() {
    let _machine = crate::util::busy_machine();
    let _engine = crate::util::docker_engine();
    crate::util::chainctl_image();
    let env = Env::new();
    env.write_profile(&devnet("composenet", 25700));
    let out = env.path("deploy");
    render(&env, &out);
    let project = Project { dir: out.clone() };
    project.ok(&["up", "-d"]);
    let chain = crate::util::Chain::read(&out);
    let els = chain.els(VALIDATORS);

    // chainctl_init ran first and succeeded; every other service is running.
    let init = docker(&[
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &project.container("chainctl_init"),
    ]);
    assert_eq!(init.trim(), "0");
    wait_for("blocks on every EL", Duration::from_secs(120), || {
        els.iter().all(|el| chain.el_height(el) >= 5).then_some(())
    });
    let hashes: BTreeSet<String> = els
        .iter()
        .map(|el| chain.block_hash(el, 3).expect("block 3"))
        .collect();
    assert_eq!(hashes.len(), 1, "every EL has the same block 3: {hashes:?}");
    let peers = chain.status(0).expect("val-0 /status")["peers"].as_u64();
    assert_eq!(peers, Some(3), "val-0 sees the other three validators");

    // Hardened containers, each with its own secrets only.
    let val0 = project.container("val-0");
    let user = docker(&["inspect", "--format", "{{.Config.User}}", &val0]);
    assert_eq!(user.trim(), "10001:10001");
    let host = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}",
        &val0,
    ]);
    assert!(
        host.contains("true") && host.contains("ALL") && host.contains("no-new-privileges"),
        "{host}"
    );
    let state = "/var/lib/chainctl/composenet/secrets";
    assert_eq!(
        files_in_container(&val0, state),
        set(&[
            "secrets/jwt/val-0--val-0-el-0.hex",
            "secrets/jwt/val-0--val-0-el-1.hex",
            "secrets/validators/val-0.control",
            "secrets/validators/val-0.key"
        ])
    );
    assert_eq!(
        files_in_container(&project.container("val-1-el-1"), state),
        set(&["secrets/jwt/val-1--val-1-el-1.hex"])
    );

    // `down` (volumes kept) and `up` again: the same chain goes on.
    let before = chain.el_height("val-0-el-0");
    let block3 = hashes.into_iter().next().unwrap();
    project.ok(&["down", "--timeout", "10"]);
    project.ok(&["up", "-d"]);
    wait_for(
        "the chain to go on after down and up",
        Duration::from_secs(120),
        || (chain.el_height("val-2-el-1") > before + 2).then_some(()),
    );
    assert_eq!(
        chain.block_hash("val-2-el-1", 3).as_deref(),
        Some(block3.as_str()),
        "block 3 is the same block after the restart"
    );
}
