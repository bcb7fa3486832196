//! The supervisor's own cost with 50 idle `command` services (targets: < 30 MB RSS,
//! < 1 % of one core). Starts the real binary, waits until all are ready, then samples
//! the supervisor's CPU time and RSS from /proc over a window.
//!
//! `cargo bench --bench supervisor_overhead` (window: SUPERVISOR_BENCH_SECS, default 60).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// Proportional set size: shared pages (the chainctl binary's text) divided among the
/// processes that map them, so a sum over processes is the real memory used.
fn pss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks for a list; nothing to list.
    }
    let secs: u64 = std::env::var("SUPERVISOR_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let bin = env!("CARGO_BIN_EXE_chainctl");
    let dir = tempfile::Builder::new()
        .prefix("ccb")
        .tempdir_in("/tmp")
        .unwrap();
    let mut yaml = String::from("name: bench\nservices:\n");
    for i in 0..50 {
        yaml.push_str(&format!("  idle-{i:02}:\n    command: [sleep, infinity]\n"));
    }
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    let state = dir.path().join("s");
    let cc = |args: &[&str]| {
        Command::new(bin)
            .arg("-p")
            .arg(dir.path().join("p.yaml"))
            .arg("--state-dir")
            .arg(&state)
            .arg("-q")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .unwrap()
    };
    let t0 = Instant::now();
    let up = cc(&["up", "--detach"]);
    assert!(up.status.success());
    let up_time = t0.elapsed();
    let status: serde_json::Value =
        serde_json::from_slice(&cc(&["status", "--output", "json"]).stdout).unwrap();
    let pid = status["supervisor_pid"].as_u64().unwrap() as u32;
    let ready = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "ready")
        .count();
    std::thread::sleep(Duration::from_secs(2));
    let (c0, w0) = (cpu_ticks(pid), Instant::now());
    let mut peak = 0;
    while w0.elapsed() < Duration::from_secs(secs) {
        peak = peak.max(rss_kb(pid));
        std::thread::sleep(Duration::from_millis(500));
    }
    let hz = 100.0; // USER_HZ on Linux
    let ticks = cpu_ticks(pid) - c0;
    let cpu = ticks as f64 / hz / w0.elapsed().as_secs_f64() * 100.0;
    // The log relays: one small process per service, outside the supervisor.
    let state_s = state.display().to_string();
    let relay_pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("log-relay") && cmd.contains(&state_s)
        })
        .collect();
    let relay_kb: Vec<u64> = relay_pids.iter().map(|p| rss_kb(*p)).collect();
    let relay_pss: u64 = relay_pids.iter().map(|p| pss_kb(*p)).sum();
    println!(
        "supervisor overhead, 50 idle services ({ready} ready, up --detach took {:.2}s):",
        up_time.as_secs_f64()
    );
    println!(
        "  supervisor RSS: {:.1} MB (peak over {secs}s; target < 30 MB)",
        peak as f64 / 1024.0
    );
    println!(
        "  supervisor CPU: {cpu:.3} % of one core ({ticks} clock ticks of 10 ms in {:.0}s; target < 1 %)",
        w0.elapsed().as_secs_f64()
    );
    println!("  supervisor PSS: {:.1} MB", pss_kb(pid) as f64 / 1024.0);
    println!(
        "  log relays: {} processes, RSS {:.1} MB each (mostly the shared binary), PSS {:.1} MB in all",
        relay_kb.len(),
        relay_kb.iter().sum::<u64>() as f64 / 1024.0 / relay_kb.len().max(1) as f64,
        relay_pss as f64 / 1024.0
    );
    cc(&["down"]);
}
