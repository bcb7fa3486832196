//! `chainctl doctor`: what the host must have before `up`, checked on this host — the
//! programs and client versions the profile runs, its ports, disk, clock sync, the
//! open-file limit, Docker when the profile needs it — each problem with what to do.

use chainctl_core::layout::Layout;
use chainctl_core::ports::HostUse;
use chainctl_core::profile::{Loaded, RuntimeKind};
use std::path::Path;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// Works, but worth fixing (or could not be measured here).
    Warn,
    /// `up` would fail or the network would misbehave.
    Fail,
}

/// One finding.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What was checked (`clients`, `ports`, …).
    pub area: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found, and for a problem what to do.
    pub text: String,
}

fn finding(area: &'static str, status: Status, text: impl Into<String>) -> Finding {
    Finding {
        area,
        status,
        text: text.into(),
    }
}

/// Below this many open files a node with many peers and database files runs out.
const MIN_OPEN_FILES: u64 = 65_536;

/// Every check, in the order printed.
pub fn run(
    loaded: &Loaded,
    layout: &Layout,
    alloc: &chainctl_core::ports::Allocation,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let p = &loaded.profile;

    // Client versions and programs (the checks `up` makes before starting anything).
    if !p.runtime.containers() {
        for (kind, binary) in chainctl_core::loader::external_clients(loaded) {
            out.push(
                match chainctl_core::clients::version::check(kind, &binary) {
                    Ok(v) => finding(
                        "clients",
                        Status::Ok,
                        format!("{} {v} ({binary})", chainctl_core::clients::kind_name(kind)),
                    ),
                    Err(e) => finding("clients", Status::Fail, e.to_string()),
                },
            );
        }
    }
    match chainctl_core::loader::check_host(loaded, false) {
        Ok(()) => out.push(finding(
            "programs",
            Status::Ok,
            "every program the profile runs is installed",
        )),
        Err(e) => {
            for pr in e.problems {
                out.push(finding("programs", Status::Fail, pr.message));
            }
        }
    }

    // Ports: each one the profile needs, free on this host (or already this network's).
    let owners = chainctl_core::state::port_owners(
        chainctl_core::state::read_json::<chainctl_core::state::StateFile>(&layout.state_file())
            .ok()
            .flatten()
            .as_ref(),
    );
    let mut n = 0;
    let mut conflicts = 0;
    for (svc, ports) in alloc {
        for (name, a) in ports {
            n += 1;
            if let HostUse::Conflict(why) = owners.host_use(svc, a) {
                conflicts += 1;
                out.push(finding(
                    "ports",
                    Status::Fail,
                    format!(
                        "{svc}.{name} needs {}/{}: {why}; stop that program, or pin another port (`services.{svc}.ports.{name}`) or move `ports.start`",
                        a.port, a.protocol
                    ),
                ));
            }
        }
    }
    if conflicts == 0 {
        out.push(finding(
            "ports",
            Status::Ok,
            format!("{n} ports free or already this network's"),
        ));
    }

    // Disk under the state dir (or its nearest existing parent).
    let dir = layout
        .root
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    match chainctl_monitor::probe::disk_used_percent(dir) {
        Ok((pct, free)) => {
            let gib = free as f64 / (1u64 << 30) as f64;
            let status = if pct >= 90.0 {
                Status::Fail
            } else if pct >= 80.0 {
                Status::Warn
            } else {
                Status::Ok
            };
            let mut text = format!("{} is {pct:.0}% used, {gib:.1} GiB free", dir.display());
            if status != Status::Ok {
                text.push_str(": free space, or use a --state-dir on a larger disk (execution clients grow by gigabytes)");
            }
            out.push(finding("disk", status, text));
        }
        Err(e) => out.push(finding(
            "disk",
            Status::Warn,
            format!("cannot measure: {e}"),
        )),
    }

    // Clock: the Engine API's JWT `iat` must be within 60 s of each client's clock.
    out.push(clock());

    match chainctl_monitor::probe::open_file_limit() {
        Some(l) if l < MIN_OPEN_FILES => out.push(finding(
            "open files",
            Status::Warn,
            format!("the limit is {l}: raise it to at least {MIN_OPEN_FILES} (`ulimit -n 1048576` in the shell that runs chainctl, or LimitNOFILE= in its unit)"),
        )),
        Some(l) => out.push(finding("open files", Status::Ok, format!("limit {l}"))),
        None => out.push(finding("open files", Status::Warn, "cannot read the limit")),
    }

    if p.runtime == RuntimeKind::Docker {
        match chainctl_runtime::docker::DockerBackend::connect(
            &p.name,
            &layout.root,
            p.listen.rpc,
            None,
        ) {
            Ok(_) => out.push(finding("docker", Status::Ok, "the Docker engine answers")),
            Err(e) => out.push(finding("docker", Status::Fail, e)),
        }
    }
    if p.runtime == RuntimeKind::Swarm {
        let manager = chainctl_runtime::swarm::connect_engine()
            .and_then(|(rt, d)| chainctl_runtime::swarm::manager_node(&rt, &d));
        match manager {
            Ok(id) => out.push(finding(
                "swarm",
                Status::Ok,
                format!("the Docker engine is a swarm manager (node {id})"),
            )),
            Err(e) => out.push(finding("swarm", Status::Fail, e)),
        }
    }
    out
}

/// Whether the system clock is kept in sync (systemd's view, where there is one).
fn clock() -> Finding {
    let o = std::process::Command::new("timedatectl")
        .args(["show", "--property=NTPSynchronized", "--value"])
        .output();
    match o {
        Ok(o) if o.status.success() => {
            if String::from_utf8_lossy(&o.stdout).trim() == "yes" {
                finding("clock", Status::Ok, "synchronised (NTP)")
            } else {
                finding(
                    "clock",
                    Status::Fail,
                    "not synchronised: enable time sync (`timedatectl set-ntp true`, chrony or systemd-timesyncd); Engine API tokens are refused beyond 60 s of skew",
                )
            }
        }
        _ => finding(
            "clock",
            Status::Warn,
            "cannot tell whether the clock is synchronised (no timedatectl or no systemd here): make sure NTP runs; Engine API tokens are refused beyond 60 s of skew",
        ),
    }
}

/// The findings as the command prints them, one per line.
pub fn print(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        let word = match f.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        s.push_str(&format!("{word:<5} {:<11} {}\n", f.area, f.text));
    }
    let fails = findings.iter().filter(|f| f.status == Status::Fail).count();
    let warns = findings.iter().filter(|f| f.status == Status::Warn).count();
    s.push_str(&format!("{fails} problem(s), {warns} warning(s)\n"));
    s
}
