//! Facts about processes and sockets read from `/proc`: start times (to tell a live
//! service from a recycled pid), process groups, and who holds a port.

use crate::profile::Protocol;
use std::fs;

/// The kernel's boot id: pids and start times are only comparable within one boot.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Fields of `/proc/PID/stat` after the command name (which may contain spaces).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    Some(after.split_whitespace().map(String::from).collect())
}

/// Start time of a process in clock ticks since boot, `None` if it does not exist.
pub fn start_ticks(pid: i32) -> Option<u64> {
    // Field 22 of stat; index 19 after the command name (fields 3.. start at index 0).
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// CPU time (user + system) in seconds and resident memory in bytes of a process.
pub fn usage(pid: i32) -> Option<(f64, u64)> {
    let f = stat_fields(pid)?;
    // Fields 14, 15 (utime, stime) and 24 (rss, pages); indices 11, 12, 21 here.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let pages: u64 = f.get(21)?.parse().ok()?;
    // SAFETY: sysconf only reads system constants.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    Some((ticks as f64 / hz.max(1) as f64, pages * page.max(1) as u64))
}

/// When `pid` started, in seconds since the Unix epoch (as sysinfo and Reth count it).
pub fn start_time_unix(pid: i32) -> Option<u64> {
    let ticks = start_ticks(pid)?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + ticks / hz as u64)
}

/// Whether the process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(stat_fields(pid), Some(f) if f.first().map(String::as_str) != Some("Z"))
}

/// Whether `pid` is alive and is the same process that started at `ticks`.
pub fn same_process(pid: i32, ticks: u64) -> bool {
    alive(pid) && start_ticks(pid) == Some(ticks)
}

/// Whether `pid` is a zombie whose parent is `parent`.
pub fn zombie_child_of(pid: i32, parent: i32) -> bool {
    matches!(stat_fields(pid), Some(f) if f.first().map(String::as_str) == Some("Z")
        && f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent))
}

/// Live children of `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            matches!(stat_fields(*p), Some(f) if f.get(1).and_then(|x| x.parse::<i32>().ok()) == Some(parent)
                && f.first().map(String::as_str) != Some("Z"))
        })
        .collect()
}

/// Whether a process is one of chainctl's log relays (they drain output and exit on EOF).
pub fn is_log_relay(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).nth(1) == Some(&b"log-relay"[..]))
        .unwrap_or(false)
}

/// Where a `docker-proxy` process forwards a published port: its `-container-ip` and
/// `-container-port`. None for any other process.
pub fn docker_proxy_target(pid: i32) -> Option<(std::net::IpAddr, u16)> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    proxy_target_in(&args)
}

fn proxy_target_in(args: &[String]) -> Option<(std::net::IpAddr, u16)> {
    if !args.first()?.ends_with("docker-proxy") {
        return None;
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    Some((
        flag("-container-ip")?.parse().ok()?,
        flag("-container-port")?.parse().ok()?,
    ))
}

/// The local IPv4 addresses of the network namespace process `pid` is in (from its
/// `net/fib_trie`): a container's own addresses, seen from the host.
pub fn netns_local_addrs(pid: i32) -> Vec<std::net::IpAddr> {
    fs::read_to_string(format!("/proc/{pid}/net/fib_trie"))
        .map(|t| local_addrs_in(&t))
        .unwrap_or_default()
}

fn local_addrs_in(fib_trie: &str) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut last: Option<std::net::IpAddr> = None;
    for line in fib_trie.lines() {
        let t = line.trim_start_matches([' ', '|', '+']);
        if let Some(ip) = t.strip_prefix("-- ") {
            last = ip.trim().parse().ok();
        } else if t.trim_start().starts_with("/32 host LOCAL") {
            if let Some(ip) = last.filter(|ip| !out.contains(ip)) {
                out.push(ip);
            }
        }
    }
    out
}

/// Whether any live process of group `pgid` started at or after `ticks` (clock ticks since
/// boot): a recorded group id may have been recycled once its group was gone.
pub fn group_alive_since(pgid: i32, ticks: u64) -> bool {
    group_members(pgid)
        .into_iter()
        .any(|p| start_ticks(p).is_some_and(|t| t >= ticks))
}

/// Whether a recorded service instance still has any process running: its main process,
/// or members of its group that it left behind.
pub fn instance_alive(pid: i32, pgid: i32, ticks: u64) -> bool {
    same_process(pid, ticks) || group_alive_since(pgid, ticks)
}

/// Process group of a process.
pub fn pgid(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// Live (non-zombie) members of a process group.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(f) = stat_fields(pid) {
            if f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
                && f.first().map(String::as_str) != Some("Z")
            {
                out.push(pid);
            }
        }
    }
    out
}

/// The command name of a process.
pub fn comm(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Socket inodes bound to `port` in `/proc/net/{tcp,tcp6,udp,udp6}`.
/// Whether a TCP socket listening on `port` is bound to every address (0.0.0.0 or ::),
/// from /proc/net/tcp{,6}; none when nothing listens there.
pub fn listens_on_all_addresses(port: u16) -> Option<bool> {
    let mut found = None;
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            let Some((addr, hexport)) = local.rsplit_once(':') else {
                continue;
            };
            // 0A: LISTEN.
            if *state != "0A" || u16::from_str_radix(hexport, 16).ok() != Some(port) {
                continue;
            }
            let all = addr.chars().all(|c| c == '0');
            found = Some(found.unwrap_or(false) || all);
        }
    }
    found
}

fn socket_inodes(port: u16, protocol: Protocol) -> Vec<String> {
    let mut files = Vec::new();
    if protocol.tcp() {
        files.extend(["/proc/net/tcp", "/proc/net/tcp6"]);
    }
    if protocol.udp() {
        files.extend(["/proc/net/udp", "/proc/net/udp6"]);
    }
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let Some(local) = cols.get(1) else { continue };
            let Some((_, hexport)) = local.rsplit_once(':') else {
                continue;
            };
            if u16::from_str_radix(hexport, 16).ok() == Some(port) {
                if let Some(inode) = cols.get(9) {
                    if *inode != "0" {
                        out.push(inode.to_string());
                    }
                }
            }
        }
    }
    out
}

/// Who holds a port, as far as `/proc` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// This process.
    Pid(i32),
    /// A socket is bound, but its process is not visible to this user.
    Hidden,
}

/// The process holding `port`, `None` if no socket is bound to it.
pub fn port_holder_of(port: u16, protocol: Protocol) -> Option<Holder> {
    let inodes = socket_inodes(port, protocol);
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path())
                .is_ok_and(|link| targets.iter().any(|t| link.as_os_str() == t.as_str()))
            {
                return Some(Holder::Pid(pid));
            }
        }
    }
    Some(Holder::Hidden)
}

/// "pid N (comm)" of a process holding `port`, for messages (other users' processes may
/// be hidden without privileges).
pub fn port_holder(port: u16, protocol: Protocol) -> Option<String> {
    Some(match port_holder_of(port, protocol)? {
        Holder::Pid(pid) => format!("pid {pid} ({})", comm(pid).unwrap_or_else(|| "?".into())),
        Holder::Hidden => "another program (its process is not visible to this user)".into(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn usage_reads_cpu_time_and_memory_of_a_process() {
        // Burn some CPU so the counters move.
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let (cpu, rss) = super::usage(std::process::id() as i32).unwrap();
        assert!(cpu > 0.0 && x > 0, "cpu {cpu}");
        assert!(rss > 1_000_000, "rss {rss}");
        assert!(super::usage(-1).is_none());
    }
}
