//! Ports held by other programs are skipped (TCP and UDP), plans are deterministic and
//! persisted, a pinned busy port is an error naming its holder; JWT files are 0600 and
//! 64 hex chars, `verify` catches bad ones, `rotate` is atomic.

use crate::util::{text, wait_for, Env};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// A base port where TCP `b` and UDP `b+1` can be held by this test and `b+2..b+12` are free.
/// A block of 12 free ports, above Linux's ephemeral range (32768-60999): inside it, the
/// other tests' thousands of client connections can leave no block of 12 free.
fn find_base() -> (u16, TcpListener, UdpSocket) {
    for b in (61000..65000).step_by(37) {
        let Ok(t) = TcpListener::bind(("0.0.0.0", b)) else {
            continue;
        };
        let Ok(u) = UdpSocket::bind(("0.0.0.0", b + 1)) else {
            continue;
        };
        let rest_free = (b + 2..b + 12).all(|p| {
            TcpListener::bind(("0.0.0.0", p)).is_ok() && UdpSocket::bind(("0.0.0.0", p)).is_ok()
        });
        if rest_free {
            return (b, t, u);
        }
    }
    panic!("no free port block found");
}

fn plan_json(env: &Env) -> serde_json::Value {
    serde_json::from_str(&env.ok(&["validate", "--output", "json"])).unwrap()
}

fn port(plan: &serde_json::Value, svc: &str, name: &str) -> u64 {
    plan["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == svc)
        .unwrap()["ports"][name]["port"]
        .as_u64()
        .unwrap()
}

#[test]
fn ports_held_by_tcp_and_udp_sockets_are_skipped_and_plans_agree() {
    let (b, _tcp, _udp) = find_base();
    let env = Env::new();
    env.write_profile(&format!(
        "name: p\nports: {{start: {b}, end: {}}}\nservices:\n  a:\n    command: [sleep, '1']\n    ports: {{http: auto}}\n  b:\n    command: [sleep, '1']\n    ports: {{p2p: {{protocol: both}}}}\n  c:\n    command: [sleep, '1']\n    ports: {{disc: {{protocol: udp}}}}\n",
        b + 11
    ));
    let plan = plan_json(&env);
    let (a, p2p, disc) = (
        port(&plan, "a", "http"),
        port(&plan, "b", "p2p"),
        port(&plan, "c", "disc"),
    );
    let b = u64::from(b);
    assert_ne!(a, b, "TCP port held by our listener is skipped");
    assert_eq!(
        a,
        b + 1,
        "a TCP-only request may use a number whose UDP side is busy"
    );
    assert!(
        p2p != b && p2p != b + 1,
        "tcp+udp request skips both held ports: {p2p}"
    );
    assert_ne!(disc, b + 1, "UDP port held by our socket is skipped");
    let stderr = text(&env.run(&["validate"]).stderr);
    assert!(
        stderr.contains(&format!("skipped port {b}, in use on this host")),
        "the reason is logged: {stderr}"
    );
    // Same profile, same host: same plan.
    assert_eq!(plan, plan_json(&env));
}

#[test]
fn pinned_busy_port_is_an_error_naming_port_and_holder() {
    let (b, _tcp, _udp) = find_base();
    let env = Env::new();
    env.write_profile(&format!(
        "name: p\nservices:\n  a:\n    command: [sleep, '1']\n    ports: {{http: {b}}}\n"
    ));
    let out = env.run(&["validate"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let me = std::process::id();
    assert!(
        err.contains(&format!(
            "port {b}/tcp pinned by services.a.ports.http is in use by pid {me} ("
        )),
        "{err}"
    );
    assert!(err.contains("pin another port, or use `auto`"), "{err}");
}

#[test]
fn ports_persist_across_restarts_and_check_reports_conflicts() {
    let env = Env::new();
    env.write_profile(&format!(
        "name: p\nports: {{start: 23000, end: 23999}}\nservices:\n  web:\n    command: {}\n    ports: {{http: auto}}\n",
        crate::util::listener_cmd("{{port.http}}")
    ));
    env.up_detached();
    let first = env.service("web")["ports"]["http"]["port"]
        .as_u64()
        .unwrap();
    let check = env.run(&["ports", "--check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("in use by this service"),
        "{}",
        text(&check.stdout)
    );
    env.ok(&["down"]);
    // Another program takes the port while chainctl is down: --check names the conflict.
    let squatter = TcpListener::bind(("0.0.0.0", first as u16)).unwrap();
    let check = env.run(&["ports", "--check"]);
    assert!(!check.status.success());
    assert!(
        text(&check.stdout).contains("CONFLICT"),
        "{}",
        text(&check.stdout)
    );
    drop(squatter);
    env.up_detached();
    assert_eq!(
        env.service("web")["ports"]["http"]["port"]
            .as_u64()
            .unwrap(),
        first,
        "same port after restart"
    );
}

const PAIR: &str = "name: j\nservices:\n  el:\n    command: [sleep, infinity]\n    env: {JWT: '{{jwt_path}}'}\n  cl:\n    command: [sh, -c, 'echo $JWT; exec sleep infinity']\n    env: {JWT: '{{jwt_path}}'}\n    drives: [el]\n";

#[test]
fn jwt_generate_verify_catches_bad_files_and_missing_ends() {
    let env = Env::new();
    env.write_profile(PAIR);
    let out = env.ok(&["jwt", "generate"]);
    let path = env.state().join("secrets/jwt/cl--el.hex");
    assert!(out.contains(&path.display().to_string()), "{out}");
    let secret = std::fs::read_to_string(&path).unwrap();
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|c| c.is_ascii_hexdigit()));
    assert!(!out.contains(&secret), "never printed");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert!(env.ok(&["jwt", "verify"]).contains("ok      cl--el"));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let v = env.run(&["jwt", "verify"]);
    assert!(!v.status.success());
    assert!(
        text(&v.stdout).contains(&format!(
            "mode 0644 lets other users read the secret; run `chmod 600 {}`",
            path.display()
        )),
        "{}",
        text(&v.stdout)
    );

    std::fs::write(&path, "abcdef").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let v = text(&env.run(&["jwt", "verify"]).stdout);
    assert!(
        v.contains(
            "expected 64 hex characters (32 bytes), found 6 characters; run `chainctl jwt rotate`"
        ),
        "{v}"
    );

    // One end that never passes the secret to its program is caught.
    env.write_profile(&PAIR.replace("    env: {JWT: '{{jwt_path}}'}\n    drives", "    drives"));
    env.ok(&["jwt", "rotate"]);
    let v = text(&env.run(&["jwt", "verify"]).stdout);
    assert!(v.contains("service `cl` never passes"), "{v}");
}

/// `up` starts nothing while a secret file others can read or a secrets directory others
/// can list is left from an earlier run: each is named with its `chmod`; `up
/// --fix-permissions` applies them and starts.
#[test]
fn up_refuses_secret_files_others_can_read_and_fix_permissions_repairs_them() {
    let env = Env::new();
    env.write_profile(PAIR);
    let path = env.state().join("secrets/jwt/cl--el.hex");
    env.ok(&["jwt", "generate"]);
    let set = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let get = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    set(&path, 0o644);
    set(path.parent().unwrap(), 0o755);
    for args in [&["up", "--detach"][..], &["up"][..]] {
        let o = env.run(args);
        assert!(!o.status.success(), "{args:?} started");
        let e = text(&o.stderr);
        assert!(
            e.contains(&format!("{} is mode 0644", path.display()))
                && e.contains(&format!("chmod 600 {}", path.display()))
                && e.contains(&format!("chmod 700 {}", path.parent().unwrap().display()))
                && e.contains("--fix-permissions")
                && e.contains("nothing was started"),
            "{args:?}: {e}"
        );
    }
    assert!(
        env.status()["supervisor_pid"].is_null(),
        "no supervisor runs"
    );
    assert_eq!((get(&path), get(path.parent().unwrap())), (0o644, 0o755));
    let o = env.run(&["up", "--detach", "--fix-permissions"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!("--fix-permissions: chmod 600 {}", path.display())),
        "{}",
        text(&o.stderr)
    );
    assert_eq!((get(&path), get(path.parent().unwrap())), (0o600, 0o700));
    env.ok(&["down"]);
}

#[test]
fn jwt_rotate_is_atomic_and_restarts_the_pair() {
    let env = Env::new();
    env.write_profile(PAIR);
    env.up_detached();
    let path = env.state().join("secrets/jwt/cl--el.hex");
    let before = std::fs::read_to_string(&path).unwrap();
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
    let (el, cl) = (
        env.service("el")["pid"].as_i64().unwrap(),
        env.service("cl")["pid"].as_i64().unwrap(),
    );
    // A reader racing many rotations never sees a partial or empty file.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let s = std::fs::read_to_string(&path).unwrap();
                assert_eq!(s.len(), 64, "torn read: {s:?}");
                reads += 1;
            }
            reads
        })
    };
    for i in 0..3 {
        env.ok(&["jwt", "rotate", "cl--el"]);
        if i == 0 {
            // While the old file exists the new one cannot get its inode: a new inode
            // proves a rename, not an in-place rewrite.
            let now = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
            assert_ne!(now, inode, "replaced by rename, not rewritten in place");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 10);
    let after = std::fs::read_to_string(&path).unwrap();
    assert_ne!(before, after);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "cl--el.hex")
        .collect();
    assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
    wait_for("both ends restarted", Duration::from_secs(30), || {
        let (e, c) = (env.service("el"), env.service("cl"));
        (e["pid"].as_i64().is_some_and(|p| p != el)
            && c["pid"].as_i64().is_some_and(|p| p != cl)
            && e["state"] == "ready"
            && c["state"] == "ready")
            .then_some(())
    });
    let bad = env.run(&["jwt", "rotate", "nope--el"]);
    assert!(text(&bad.stderr).contains("no pair `nope--el`; pairs: cl--el"));
}

#[test]
fn logs_follow_prints_new_lines() {
    let env = Env::new();
    env.write_profile("name: f\nports: {start: 21400, end: 21499}\nservices:\n  tick:\n    command: [sh, -c, 'i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done']\n");
    env.up_detached();
    let mut child = env
        .cmd(&["logs", "tick", "-f", "-n", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    let out = text(&child.wait_with_output().unwrap().stdout);
    let ticks: Vec<u32> = out
        .lines()
        .filter_map(|l| l.strip_prefix("tick-")?.parse().ok())
        .collect();
    assert!(ticks.len() >= 4, "follow keeps printing: {out}");
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none lost: {ticks:?}"
    );
}
