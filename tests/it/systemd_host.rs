//! `chainctl systemd install|status|uninstall` against a real systemd: a container whose
//! PID 1 is systemd, from a Debian root made with debootstrap (from this machine's own apt
//! mirror) and `docker import`. The devnet comes up under systemd, drift is reported and
//! repaired with an automatic daemon-reload, and `systemctl kill` of the execution client
//! is answered by systemd restarting it.
//!
//! The container cannot create user namespaces, so the test adds one drop-in,
//! `PrivateUsers=no`, to each unit; every other setting runs as rendered.

use crate::util::{static_binary, text, wait_for};
use std::process::{Command, Output};
use std::time::Duration;

const IMAGE: &str = "chainctl-systemd-host:1";

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker is not installed: this test needs the Docker engine")
}

/// The Debian mirror and release this machine's apt uses.
fn apt_source() -> (String, String) {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .unwrap_or("bookworm")
        .trim_matches('"')
        .to_string();
    let mut uris = Vec::new();
    for f in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for l in text.lines().map(str::trim) {
            if let Some(u) = l.strip_prefix("URIs:") {
                uris.extend(u.split_whitespace().map(String::from));
            } else if let Some(rest) = l.strip_prefix("deb ") {
                uris.extend(
                    rest.split_whitespace()
                        .find(|w| w.contains("://"))
                        .map(String::from),
                );
            }
        }
    }
    let mirror = uris
        .into_iter()
        .find(|u| !u.contains("security"))
        .expect("no Debian mirror in this machine's apt sources");
    (mirror, codename)
}

/// The systemd root image, built once per machine.
fn image() {
    if docker(&["image", "inspect", IMAGE]).status.success() {
        return;
    }
    let found = Command::new("sh")
        .args(["-c", "command -v debootstrap"])
        .output()
        .unwrap();
    assert!(found.status.success(), "debootstrap is not installed: .ci/run installs it (apt-get); a missing tool fails this test");
    let (mirror, codename) = apt_source();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    let st = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=systemd,systemd-sysv,dbus,python3",
            &codename,
        ])
        .arg(&root)
        .arg(&mirror)
        .status()
        .unwrap();
    assert!(st.success(), "debootstrap {codename} from {mirror} failed");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | docker import - {IMAGE}",
            root.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "docker import failed");
}

struct Host(String);

impl Host {
    fn boot() -> Host {
        image();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("chainctl-systemd-{}-{n}", std::process::id());
        let o = docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "-e",
            "container=docker",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            IMAGE,
            "/lib/systemd/systemd",
        ]);
        assert!(
            o.status.success(),
            "cannot start the systemd container: {}",
            text(&o.stderr)
        );
        let h = Host(name);
        wait_for("systemd to boot", Duration::from_secs(90), || {
            let s = h.sh("systemctl is-system-running");
            matches!(text(&s.stdout).trim(), "running" | "degraded").then_some(())
        });
        h
    }
    /// Copies the static chainctl to /usr/local/bin and the repo's profile `file` to
    /// /etc/chainctl, as an operator would.
    fn install(&self, file: &str) {
        let bin = static_binary();
        let profile = format!("{}/profiles/{file}", env!("CARGO_MANIFEST_DIR"));
        self.ok("mkdir -p /etc/chainctl");
        for (from, to) in [
            (bin.to_str().unwrap(), "/usr/local/bin/chainctl".to_string()),
            (profile.as_str(), format!("/etc/chainctl/{file}")),
        ] {
            let o = docker(&["cp", from, &format!("{}:{to}", self.0)]);
            assert!(o.status.success(), "{}", text(&o.stderr));
        }
    }
    fn sh(&self, cmd: &str) -> Output {
        docker(&["exec", &self.0, "sh", "-c", cmd])
    }
    fn ok(&self, cmd: &str) -> String {
        let o = self.sh(cmd);
        assert!(
            o.status.success(),
            "`{cmd}` failed:\n{}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }
    fn prop(&self, unit: &str, p: &str) -> String {
        self.ok(&format!("systemctl show -P {p} {unit}"))
            .trim()
            .to_string()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        docker(&["rm", "-f", &self.0]);
    }
}

#[test]
fn devnet_under_real_systemd_install_drift_restart_uninstall() {
    let _machine = crate::util::busy_machine();
    let _engine = crate::util::docker_engine();
    let host = Host::boot();
    host.install("standins.yaml");
    let (el, cl) = (
        "chainctl-standins-el-0.service",
        "chainctl-standins-cl-0.service",
    );
    for u in [el, cl] {
        host.ok(&format!("mkdir -p /etc/systemd/system/{u}.d && printf '[Service]\\nPrivateUsers=no\\n' > /etc/systemd/system/{u}.d/container.conf"));
    }

    let out = host.ok("chainctl -p /etc/chainctl/standins.yaml systemd install");
    assert!(
        out.contains("unit files changed: ran `systemctl daemon-reload`"),
        "{out}"
    );
    assert!(
        out.contains("enabled and started chainctl-standins.target"),
        "{out}"
    );
    wait_for("both units active", Duration::from_secs(30), || {
        (host.prop(el, "ActiveState") == "active" && host.prop(cl, "ActiveState") == "active")
            .then_some(())
    });
    // The stand-in execution client answers on its planned port, as user chainctl.
    wait_for("el-0 serving", Duration::from_secs(30), || {
        host.sh("python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:20001', timeout=2)\"").status.success().then_some(())
    });
    assert_eq!(
        host.ok(&format!("stat -c %U /proc/{}", host.prop(el, "MainPID")))
            .trim(),
        "chainctl",
        "runs as the dedicated user"
    );
    assert_eq!(
        host.ok("stat -c %U:%a /var/lib/chainctl/standins/secrets/jwt/cl-0--el-0.hex")
            .trim(),
        "chainctl:600"
    );
    assert!(host
        .ok("chainctl -p /etc/chainctl/standins.yaml systemd status")
        .contains("no drift"));
    assert!(host
        .ok("chainctl -p /etc/chainctl/standins.yaml systemd install")
        .contains("unit files unchanged: no daemon-reload needed"));

    // Someone edits a unit by hand: status reports the drift, install repairs and reloads.
    host.ok(&format!("echo '# hand edit' >> /etc/systemd/system/{el}"));
    let st = host.sh("chainctl -p /etc/chainctl/standins.yaml systemd status");
    assert!(!st.status.success());
    assert!(
        text(&st.stdout).contains(&format!("drift: {el} differs from the profile")),
        "{}",
        text(&st.stdout)
    );
    let pid_before = host.prop(el, "MainPID");
    let out = host.ok("chainctl -p /etc/chainctl/standins.yaml systemd install");
    assert!(
        out.contains("ran `systemctl daemon-reload`") && out.contains(&format!("restarted {el}")),
        "{out}"
    );
    assert_ne!(
        host.prop(el, "MainPID"),
        pid_before,
        "the changed unit restarted"
    );
    assert!(host
        .ok("chainctl -p /etc/chainctl/standins.yaml systemd status")
        .contains("no drift"));

    // The execution client is killed: systemd restarts it, its consensus client keeps running.
    let (el_pid, cl_pid) = (host.prop(el, "MainPID"), host.prop(cl, "MainPID"));
    host.ok(&format!("systemctl kill -s KILL {el}"));
    wait_for("el-0 restarted by systemd", Duration::from_secs(30), || {
        let pid = host.prop(el, "MainPID");
        (host.prop(el, "ActiveState") == "active"
            && pid != "0"
            && pid != el_pid
            && host.prop(el, "NRestarts") != "0")
            .then_some(())
    });
    assert_eq!(host.prop(cl, "MainPID"), cl_pid);

    let out = host.ok("chainctl -p /etc/chainctl/standins.yaml systemd uninstall");
    assert!(
        out.contains(&format!("removed {el}")) && out.contains("daemon-reload"),
        "{out}"
    );
    assert!(
        host.sh(&format!("test -e /etc/systemd/system/{el}"))
            .status
            .code()
            == Some(1)
    );
    assert_ne!(host.prop(el, "ActiveState"), "active");
}

/// The JSON-RPC port of a rendered execution-client unit (`"--http-port" "N"`).
fn http_port(unit_text: &str) -> u16 {
    let at = unit_text
        .find("\"--http-port\" \"")
        .expect("the unit passes --http-port")
        + "\"--http-port\" \"".len();
    unit_text[at..].split('"').next().unwrap().parse().unwrap()
}

#[test]
fn the_validator_devnet_runs_under_real_systemd_as_notify_units_and_survives_an_el_kill() {
    let _machine = crate::util::busy_machine();
    let _engine = crate::util::docker_engine();
    let host = Host::boot();
    host.install("devnet.yaml");
    let mut services = Vec::new();
    for v in 0..4 {
        services.push(format!("val-{v}"));
        for j in 0..2 {
            services.push(format!("val-{v}-el-{j}"));
        }
    }
    let unit = |s: &str| format!("chainctl-devnet-{s}.service");
    for s in &services {
        // User namespaces are not available inside this container (see the test above).
        host.ok(&format!("mkdir -p /etc/systemd/system/{0}.d && printf '[Service]\\nPrivateUsers=no\\n' > /etc/systemd/system/{0}.d/container.conf", unit(s)));
    }
    let out = host.ok("chainctl -p /etc/chainctl/devnet.yaml systemd install");
    assert!(
        out.contains("enabled and started chainctl-devnet.target"),
        "{out}"
    );
    // Type=notify: `active` only after the node said READY=1.
    wait_for("all 12 units active", Duration::from_secs(60), || {
        services
            .iter()
            .all(|s| host.prop(&unit(s), "ActiveState") == "active")
            .then_some(())
    });
    for s in &services {
        assert_eq!(host.prop(&unit(s), "Type"), "notify", "{s}");
        assert_eq!(host.prop(&unit(s), "WatchdogUSec"), "30s", "{s}");
    }
    // Every unit verifies, and the node units keep their hardening (at most 2.5).
    host.ok("systemd-analyze verify /etc/systemd/system/chainctl-devnet-*.service /etc/systemd/system/chainctl-devnet.target");
    for s in ["val-0", "val-0-el-0"] {
        let out = host.ok(&format!("systemd-analyze security {}", unit(s)));
        let score: f64 = out
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no score in {out}"));
        assert!(score <= 2.5, "{s}: exposure {score}");
    }
    assert_eq!(
        host.ok("stat -c %U:%a /var/lib/chainctl/devnet/secrets/validators/val-0.key")
            .trim(),
        "chainctl:600"
    );
    let port = http_port(&host.ok(&format!("cat /etc/systemd/system/{}", unit("val-1-el-0"))));
    let height = || -> u64 {
        let o = host.sh(&format!(
            "python3 -c \"import json, urllib.request; r = urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:{port}', data=json.dumps({{'jsonrpc': '2.0', 'id': 1, 'method': 'eth_blockNumber', 'params': []}}).encode(), headers={{'Content-Type': 'application/json'}}), timeout=2); print(int(json.load(r)['result'], 16))\""
        ));
        text(&o.stdout).trim().parse().unwrap_or(0)
    };
    wait_for("blocks under systemd", Duration::from_secs(90), || {
        (height() >= 3).then_some(())
    });

    // systemd restarts a killed execution client; the chain goes on.
    let el = unit("val-0-el-0");
    let el_pid = host.prop(&el, "MainPID");
    host.ok(&format!("systemctl kill -s KILL {el}"));
    wait_for(
        "val-0-el-0 restarted by systemd",
        Duration::from_secs(60),
        || {
            let pid = host.prop(&el, "MainPID");
            (host.prop(&el, "ActiveState") == "active"
                && pid != "0"
                && pid != el_pid
                && host.prop(&el, "NRestarts") != "0")
                .then_some(())
        },
    );
    let h = height();
    wait_for("blocks after the kill", Duration::from_secs(60), || {
        (height() >= h + 3).then_some(())
    });
    assert!(host
        .ok("chainctl -p /etc/chainctl/devnet.yaml systemd status")
        .contains("no drift"));
}
