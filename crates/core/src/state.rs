//! Files the supervisor keeps in the state dir: the state file (what runs, with pid and
//! start time, written atomically), the port allocation, and the one-supervisor lock.

use crate::instance::Exit;
use crate::instance::Handle;
use crate::plan::ServicePlan;
use crate::ports::Allocation;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// What the supervisor knows about one service, persisted so a new supervisor can adopt it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The plan it was started with (so it can be stopped even if the profile dropped it).
    pub plan: ServicePlan,
    /// The running instance, if any.
    pub handle: Option<Handle>,
    /// When the instance started (unix ms).
    pub started_at_ms: Option<u64>,
    /// Automatic restarts so far.
    pub restarts: u32,
    /// How the last instance ended.
    pub last_exit: Option<Exit>,
    /// Display state when written.
    pub state: String,
    /// Why it was given up, if it was (restored if the supervisor was killed).
    #[serde(default)]
    pub given_up: Option<String>,
    /// How it completed, if it exited cleanly and is not restarted.
    #[serde(default)]
    pub completed: Option<String>,
}

/// The state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// Kernel boot id: records from another boot are not adopted.
    pub boot_id: String,
    /// The supervisor that wrote it.
    pub supervisor_pid: Option<i32>,
    /// The profile file it supervises (none for the embedded default).
    pub profile_path: Option<PathBuf>,
    /// Profile name.
    pub profile: String,
    /// Services by name.
    pub services: BTreeMap<String, ServiceRecord>,
    /// Whether the supervisor that wrote it stopped everything and exited normally.
    #[serde(default)]
    pub clean_shutdown: bool,
}

/// Reads a JSON file, `None` if it does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| {
            anyhow::anyhow!(
                "{} is corrupt ({e}); remove it to start afresh",
                path.display()
            )
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Writes a JSON file atomically (temp, fsync, rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    chainctl_common::fs::write_atomic(path, &bytes)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// A stop of the whole network that was asked for — `chainctl down`, Ctrl-C of a
/// foreground `up` — as opposed to an outage: the readiness report shows the gap in
/// blocks it makes as planned downtime, not as missed slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStop {
    /// When chainctl was told to stop every service (unix ms).
    pub down_at_ms: u64,
    /// When a supervisor started them again; none while the network is down.
    pub up_at_ms: Option<u64>,
}

/// How many planned stops are kept (the oldest are dropped).
const PLANNED_STOPS_KEPT: usize = 100;

/// The planned stops on record, oldest first (none when there is no record, or it cannot
/// be read: a report must not fail over its history).
pub fn planned_stops(path: &Path) -> Vec<PlannedStop> {
    read_json(path).ok().flatten().unwrap_or_default()
}

/// Records that every service is being stopped on request now.
pub fn record_down(path: &Path, now_ms: u64) -> anyhow::Result<()> {
    let mut stops = planned_stops(path);
    stops.push(PlannedStop {
        down_at_ms: now_ms,
        up_at_ms: None,
    });
    let drop = stops.len().saturating_sub(PLANNED_STOPS_KEPT);
    stops.drain(..drop);
    write_json(path, &stops)
}

/// Records that a supervisor starts the network now: it ends the planned stop still open.
pub fn record_up(path: &Path, now_ms: u64) -> anyhow::Result<()> {
    let mut stops = planned_stops(path);
    match stops.last_mut() {
        Some(s) if s.up_at_ms.is_none() => {
            s.up_at_ms = Some(now_ms);
            write_json(path, &stops)
        }
        _ => Ok(()),
    }
}

/// The persisted port allocation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortsFile {
    /// Service → port name → assignment.
    pub services: Allocation,
}

/// Holds the state dir's supervisor lock until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another supervisor runs.
    #[error("another chainctl supervisor (pid {pid}) already runs for state dir {dir}: use `chainctl status`, or `chainctl down` first")]
    Held {
        /// Its pid, or 0 if unknown.
        pid: i32,
        /// The state dir.
        dir: String,
    },
    /// The lock file cannot be opened.
    #[error("cannot open lock file {path}: {why}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        why: String,
    },
}

fn open_lock(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| LockError::Io {
            path: path.display().to_string(),
            why: e.to_string(),
        })
}

fn try_flock(f: &File) -> bool {
    // SAFETY: flock on an owned, open descriptor.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// How long a lock whose recorded holder has died may take to be released: a killed
/// multi-threaded process shows as a zombie while its last threads still close files.
const DEAD_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Takes the lock (non-blocking) and writes our pid into it.
pub fn lock(path: &Path) -> Result<Lock, LockError> {
    let mut f = open_lock(path)?;
    let t0 = std::time::Instant::now();
    while !try_flock(&f) {
        let pid = read_pid(path);
        let dead = pid != 0 && !crate::procinfo::alive(pid);
        if !dead || t0.elapsed() >= DEAD_HOLDER_WAIT {
            return Err(LockError::Held {
                pid,
                dir: path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .display()
                    .to_string(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = write!(f, "{}", std::process::id());
    let _ = f.sync_all();
    Ok(Lock { _file: f })
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The pid of the supervisor holding the lock, `None` if nobody holds it (waiting briefly
/// for a lock whose holder has just died).
pub fn holder(path: &Path) -> Option<i32> {
    let f = OpenOptions::new().read(true).open(path).ok()?;
    let t0 = std::time::Instant::now();
    loop {
        if try_flock(&f) {
            // SAFETY: unlocking the descriptor we just locked.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
            return None;
        }
        let pid = read_pid(path);
        if pid == 0 || crate::procinfo::alive(pid) || t0.elapsed() >= DEAD_HOLDER_WAIT {
            return Some(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Who may hold the network's ports, from its state file: each service's process group
/// (or swarm instance) and the supervisor.
pub fn port_owners(st: Option<&StateFile>) -> crate::ports::Owners {
    crate::ports::Owners::new(
        st.map(|st| {
            st.services
                .iter()
                .filter_map(|(n, r)| r.handle.as_ref().map(|h| (n.clone(), h.pgid)))
                .collect()
        })
        .unwrap_or_default(),
        st.and_then(|s| s.supervisor_pid),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planned_stop_is_opened_by_down_and_closed_by_the_next_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stops.json");
        assert_eq!(planned_stops(&path), vec![]);
        // An up with no stop on record (the first, or after a crash) records nothing.
        record_up(&path, 5).unwrap();
        assert_eq!(planned_stops(&path), vec![]);
        record_down(&path, 10).unwrap();
        record_up(&path, 20).unwrap();
        record_up(&path, 30).unwrap();
        record_down(&path, 40).unwrap();
        assert_eq!(
            planned_stops(&path),
            vec![
                PlannedStop {
                    down_at_ms: 10,
                    up_at_ms: Some(20)
                },
                PlannedStop {
                    down_at_ms: 40,
                    up_at_ms: None
                },
            ]
        );
        for t in 0..150 {
            record_down(&path, 100 + t).unwrap();
        }
        let kept = planned_stops(&path);
        assert_eq!(kept.len(), PLANNED_STOPS_KEPT);
        assert_eq!(kept.last().unwrap().down_at_ms, 249);
    }
}
