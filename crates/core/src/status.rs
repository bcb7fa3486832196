//! What `chainctl status` shows: one row per service, as a table or JSON.

use crate::ports::Assigned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

/// One service's observed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Name.
    pub name: String,
    /// Kind (`command`, …).
    pub kind: String,
    /// Backend (`process`, …).
    pub backend: String,
    /// Main pid while running (under `runtime: swarm`, the instance's number: a task
    /// may run on another node).
    pub pid: Option<i32>,
    /// The image it runs from (container runtimes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// waiting / blocked / starting / ready / healthy / unhealthy / backoff / given-up / stopping / stopped.
    pub state: String,
    /// Why it is in that state, when that matters.
    pub detail: Option<String>,
    /// Seconds since it started.
    pub uptime_secs: Option<u64>,
    /// Automatic restarts.
    pub restarts: u32,
    /// How the last instance ended.
    pub last_exit: Option<String>,
    /// Its ports.
    pub ports: BTreeMap<String, Assigned>,
    /// The address its ports are reached at (`listen.rpc`, or the swarm node running it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
    /// CPU use of the main process, percent of one core.
    pub cpu_percent: Option<f32>,
    /// Resident memory of the main process, bytes.
    pub memory_bytes: Option<u64>,
    /// What chainctl's probes say (execution clients and validators): healthy,
    /// unhealthy or unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Why it is unhealthy, and what the probe measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_detail: Option<String>,
}

/// The whole status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Profile name.
    pub profile: String,
    /// State dir.
    pub state_dir: PathBuf,
    /// The supervisor's pid, if one runs.
    pub supervisor_pid: Option<i32>,
    /// Services in start order.
    pub services: Vec<ServiceStatus>,
    /// What each validator's status endpoint says (height, round, active EL, …), read by
    /// `chainctl status` from the running validators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<ValidatorView>,
    /// The monitor's summary: endpoints, readiness, recent health events and switches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorSummary>,
}

/// What `chainctl status` shows of health and failover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MonitorSummary {
    /// The JSON-RPC gateway's address.
    pub gateway: Option<String>,
    /// chainctl's API address.
    pub api: String,
    /// Whether the gateway and the API serve HTTPS (`gateway.tls`, `api.tls`).
    #[serde(default)]
    pub gateway_tls: bool,
    #[serde(default)]
    pub api_tls: bool,
    /// Empty when ready; else what is not.
    pub not_ready: Vec<String>,
    /// Recent health changes, oldest first (`time service from→to: reason`).
    pub events: Vec<String>,
    /// Recent switches of active execution clients.
    pub switches: Vec<String>,
    /// Disk, memory and open-file warnings.
    pub host: Vec<String>,
}

/// One validator as its status endpoint reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatorView {
    /// Service name.
    pub name: String,
    /// The endpoint's JSON, or why it could not be read.
    pub status: Result<serde_json::Value, String>,
}

/// A service's `status` port when it is a validator: it has one, and its data dir holds
/// a validator config.
pub fn validator_status_port<'a>(
    state_dir: &std::path::Path,
    name: &str,
    ports: &'a BTreeMap<String, Assigned>,
) -> Option<&'a Assigned> {
    let port = ports.get("status")?;
    state_dir
        .join("data")
        .join(name)
        .join("config.json")
        .exists()
        .then_some(port)
}

/// Ask every running validator ([`validator_status_port`]) for its status.
pub fn query_validators(r: &mut StatusReport) {
    for s in &r.services {
        let Some(port) = validator_status_port(&r.state_dir, &s.name, &s.ports) else {
            continue;
        };
        let status = if s.pid.is_none() {
            Err("not running".to_string())
        } else {
            // At the address its ports are on (another swarm node's, or this host's).
            let ip = s
                .address
                .filter(|a| !a.is_unspecified())
                .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
            chainctl_common::http::get_json(std::net::SocketAddr::new(ip, port.port), "/status")
                .map_err(|e| e.to_string())
        };
        r.validators.push(ValidatorView {
            name: s.name.clone(),
            status,
        });
    }
}

fn validators_table(r: &StatusReport) -> String {
    let mut out = String::new();
    if r.validators.is_empty() {
        return out;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    out.push_str("\nVALIDATOR  HEIGHT  ROUND  PEERS  LAST DECISION  ACTIVE EL  EXECUTION CLIENTS  SWITCHES  VIOLATIONS\n");
    for v in &r.validators {
        match &v.status {
            Err(e) => {
                let _ = writeln!(out, "{}  unavailable: {e}", v.name);
            }
            Ok(s) => {
                let age = s["last_decided_at_ms"]
                    .as_u64()
                    .map(|t| format!("{:.1}s ago", now_ms.saturating_sub(t) as f64 / 1000.0))
                    .unwrap_or_else(|| "never".into());
                let els: Vec<String> = s["els"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| {
                                format!(
                                    "{}={}@{}",
                                    e["name"].as_str().unwrap_or("?"),
                                    e["state"].as_str().unwrap_or("?"),
                                    e["head"]
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{}  {}  {}  {}  {}  {}  {}  {}  {}",
                    v.name,
                    s["height"],
                    s["round"],
                    s["peers"].as_u64().map_or("?".into(), |p| p.to_string()),
                    age,
                    s["active_el"].as_str().unwrap_or("?"),
                    els.join(" "),
                    s["el_switches"],
                    s["consensus_violations"],
                );
            }
        }
    }
    out
}

impl StatusReport {
    /// Whether every service reached a state that will not change by itself soon.
    pub fn settled(&self) -> bool {
        self.services
            .iter()
            .all(|s| !matches!(s.state.as_str(), "waiting" | "starting" | "stopping"))
    }
}

fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn human_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1}G", b as f64 / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.1}M", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{}K", b / 1024)
    }
}

/// Renders the table `chainctl status` prints.
pub fn table(r: &StatusReport) -> String {
    let header = [
        "SERVICE",
        "KIND",
        "BACKEND",
        "PID",
        "STATE",
        "HEALTH",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
        "CPU",
        "MEM",
        "PORTS",
    ];
    let rows: Vec<Vec<String>> = r
        .services
        .iter()
        .map(|s| {
            let dash = || "-".to_string();
            vec![
                s.name.clone(),
                s.kind.clone(),
                s.backend.clone(),
                s.pid.map(|p| p.to_string()).unwrap_or_else(dash),
                s.state.clone(),
                s.health.clone().unwrap_or_else(dash),
                s.uptime_secs.map(human_secs).unwrap_or_else(dash),
                s.restarts.to_string(),
                s.last_exit.clone().unwrap_or_else(dash),
                s.cpu_percent
                    .map(|c| format!("{c:.1}%"))
                    .unwrap_or_else(dash),
                s.memory_bytes.map(human_bytes).unwrap_or_else(dash),
                if s.ports.is_empty() {
                    dash()
                } else {
                    // Shown when the ports are on another swarm node.
                    let at = s
                        .address
                        .filter(|a| s.backend == "swarm" && !a.is_loopback() && !a.is_unspecified())
                        .map(|a| match a {
                            std::net::IpAddr::V4(a) => format!("{a}: "),
                            std::net::IpAddr::V6(a) => format!("[{a}]: "),
                        })
                        .unwrap_or_default();
                    let ports = s
                        .ports
                        .iter()
                        .map(|(n, a)| format!("{n}={}/{}", a.port, a.protocol))
                        .collect::<Vec<_>>()
                        .join(" ");
                    format!("{at}{ports}")
                },
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<String>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, header.iter().map(|s| s.to_string()).collect());
    for row in rows {
        line(&mut out, row);
    }
    for s in r.services.iter().filter(|s| s.detail.is_some()) {
        let _ = writeln!(out, "  {}: {}", s.name, s.detail.as_deref().unwrap_or(""));
    }
    for s in r.services.iter().filter(|s| s.health_detail.is_some()) {
        let _ = writeln!(
            out,
            "  {} health: {}",
            s.name,
            s.health_detail.as_deref().unwrap_or("")
        );
    }
    out.push_str(&validators_table(r));
    if let Some(m) = &r.monitor {
        if let Some(g) = &m.gateway {
            let (scheme, carries) = if m.gateway_tls {
                ("https", "HTTPS and WSS")
            } else {
                ("http", "HTTP and WebSocket")
            };
            let _ = writeln!(out, "gateway: {scheme}://{g} (JSON-RPC, {carries})");
        }
        let scheme = if m.api_tls { "https" } else { "http" };
        let _ = writeln!(out, "api: {scheme}://{} (/metrics, /ready)", m.api);
        if m.not_ready.is_empty() {
            let _ = writeln!(out, "ready: yes");
        } else {
            let _ = writeln!(out, "ready: NO");
            for p in &m.not_ready {
                let _ = writeln!(out, "  - {p}");
            }
        }
        for h in &m.host {
            let _ = writeln!(out, "host: {h}");
        }
        if !m.events.is_empty() {
            let _ = writeln!(out, "health events (latest last):");
            for e in &m.events {
                let _ = writeln!(out, "  {e}");
            }
        }
        if !m.switches.is_empty() {
            let _ = writeln!(out, "execution client switches (latest last):");
            for e in &m.switches {
                let _ = writeln!(out, "  {e}");
            }
        }
    }
    match r.supervisor_pid {
        Some(pid) => {
            let _ = writeln!(
                out,
                "supervisor: pid {pid}, state dir {}",
                r.state_dir.display()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "supervisor: not running (state dir {}); start it with `chainctl up`",
                r.state_dir.display()
            );
        }
    }
    out
}
