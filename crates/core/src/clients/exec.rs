//! `chainctl client-exec`: how an external client starts. It refuses a data dir that
//! another process holds (the client's own lock file, read the client's way), runs the
//! client's init step (`geth init`, `erigon init`), then replaces itself with the client,
//! so the supervisor's pid, signals and exit statuses are the client's own.

use super::LockKind;
use anyhow::{bail, Context as _, Result};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

/// Who holds `lock`, if anyone but us: the holder's description for the message.
pub fn lock_holder(lock: &Path, kind: LockKind) -> Result<Option<String>> {
    if !lock.exists() {
        return Ok(None);
    }
    match kind {
        LockKind::Flock => {
            use std::os::fd::AsRawFd as _;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(lock)
                .with_context(|| format!("cannot open {}", lock.display()))?;
            // SAFETY: flock on a descriptor we own; the lock goes with it when `f` drops.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return Ok(None);
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                Ok(Some("another process".into()))
            } else {
                Err(e).with_context(|| format!("cannot test the lock {}", lock.display()))
            }
        }
        LockKind::PidFile => {
            // Reth writes its pid and that process's start time: a pid alive now but
            // started at another time is a later process, and the lock is stale.
            let text = std::fs::read_to_string(lock).unwrap_or_default();
            let mut words = text.split_whitespace();
            let pid: Option<i32> = words.next().and_then(|p| p.parse().ok());
            let started: Option<u64> = words.next().and_then(|t| t.parse().ok());
            Ok(pid
                .filter(|p| *p as u32 != std::process::id() && crate::procinfo::alive(*p))
                .filter(|p| match (started, crate::procinfo::start_time_unix(*p)) {
                    (Some(want), Some(now)) => want.abs_diff(now) <= 1,
                    _ => true,
                })
                .map(|p| format!("process {p}")))
        }
    }
}

/// A client's data dir and its lock file in it.
pub struct DataDirLock<'a> {
    /// The data dir.
    pub dir: &'a Path,
    /// The lock file, relative to it.
    pub file: &'a Path,
    /// How the client holds it.
    pub kind: LockKind,
}

/// Checks the lock, runs the first `init_argc` words as the init step, then becomes the
/// rest, with the static peers (enode URLs, and the flags that take them) added. Returns
/// only on failure.
pub fn run(
    lock: Option<DataDirLock>,
    init_argc: usize,
    peers: Option<(Vec<String>, &[String])>,
    argv: &[String],
) -> Result<()> {
    if argv.len() <= init_argc {
        bail!("client-exec: nothing to run after the {init_argc} words of the init step");
    }
    if let Some(l) = lock {
        let file = l.dir.join(l.file);
        if let Some(who) = lock_holder(&file, l.kind)? {
            bail!(
                "the data dir {} is in use: {who} holds its lock {}. Two clients cannot share a data dir: stop the other one, or give this service a data dir of its own",
                l.dir.display(),
                file.display()
            );
        }
    }
    let (init, client) = argv.split_at(init_argc);
    if let Some((program, args)) = init.split_first() {
        let st = Command::new(program)
            .args(args)
            .status()
            .with_context(|| format!("cannot run the init step `{program}`"))?;
        if !st.success() {
            bail!(
                "the init step `{}` failed ({st}): see its output above",
                init.join(" ")
            );
        }
    }
    let client = match &peers {
        Some((peers, flags)) => super::p2p::with_peers(client, peers, flags),
        None => client.to_vec(),
    };
    let (program, args) = client.split_first().expect("checked above");
    let e = Command::new(program).args(args).exec();
    Err(e).with_context(|| format!("cannot run `{program}`"))
}
