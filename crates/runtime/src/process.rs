//! The process backend: each service is a child in its own session and process group,
//! its stdout and stderr piped to a log relay that rotates the file by size.
//!
//! Exits are collected with `waitpid` from the supervisor's own thread (woken by SIGCHLD),
//! never from a second thread, so nothing else in the process can lose a child's status.

use super::{Backend, BackendError, BackendEvent, Handle};
use chainctl_core::instance::Exit;
use chainctl_core::plan::ServicePlan;
use chainctl_core::procinfo;
use chainctl_core::profile::StopSignal;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Environment variables passed through from chainctl to every service; everything else
/// a service sees is declared in its profile, so runs are reproducible.
pub const PASSTHROUGH_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR",
];

/// Runs services as child processes.
pub struct ProcessBackend {
    /// The chainctl binary, which also runs the log relays.
    self_exe: PathBuf,
    /// Pids taken over from an earlier supervisor: not our children, so polled.
    adopted: BTreeSet<i32>,
}

impl ProcessBackend {
    /// A backend that spawns log relays from `self_exe`.
    pub fn new(self_exe: PathBuf) -> Self {
        ProcessBackend {
            self_exe,
            adopted: BTreeSet::new(),
        }
    }
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn start(&mut self, svc: &ServicePlan) -> Result<Handle, BackendError> {
        let program = svc.argv.first().ok_or_else(|| {
            BackendError::Program(format!(
                "empty command: give services.{}.command a program to run",
                svc.name
            ))
        })?;
        let resolved = chainctl_core::profile::resolve_program(program, std::path::Path::new("/"))
            .map_err(BackendError::Program)?;
        chainctl_common::fs::private_dir(&svc.data_dir).map_err(|source| {
            BackendError::Prepare {
                path: svc.data_dir.clone(),
                source,
            }
        })?;
        // A workdir other than the data dir is the user's: use it as it is, never chmod it.
        if !svc.workdir.is_dir() {
            return Err(BackendError::Program(format!(
                "workdir {} is not a directory: create it or fix services.{}.workdir",
                svc.workdir.display(),
                svc.name
            )));
        }
        if let Some(d) = svc.log_file.parent() {
            chainctl_common::fs::private_dir(d).map_err(|source| BackendError::Prepare {
                path: d.to_path_buf(),
                source,
            })?;
        }
        let spawn = |what: &str| {
            let what = what.to_string();
            move |source| BackendError::Spawn { what, source }
        };
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(std::io::Error::from)
            .map_err(spawn("pipe"))?;
        let wr2 = wr.try_clone().map_err(spawn("dup"))?;
        // The relay runs in its own session: it outlives a supervisor restart and keeps
        // draining the service's output until every writer has gone.
        let mut relay = Command::new(&self.self_exe);
        relay
            .arg("log-relay")
            .arg("--file")
            .arg(&svc.log_file)
            .arg("--max-bytes")
            .arg(svc.logs.max_bytes.to_string())
            .arg("--keep")
            .arg(svc.logs.keep.to_string())
            .stdin(Stdio::from(rd))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe and touches no memory.
        unsafe {
            relay.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let relay = relay.spawn().map_err(spawn("cannot start the log relay"))?;
        let mut cmd = Command::new(&resolved);
        cmd.args(&svc.argv[1..])
            .env_clear()
            .envs(
                PASSTHROUGH_ENV
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
            )
            .env("CHAINCTL_SERVICE", &svc.name)
            // Fault injection for the tests of the network: debug builds only.
            .envs(
                chainctl_common::test_hooks::fault().map(|f| (chainctl_common::test_hooks::VAR, f)),
            )
            .envs(&svc.env)
            .current_dir(&svc.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(wr))
            .stderr(Stdio::from(wr2));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                // The relay sees EOF now that both write ends are gone and exits.
                return Err(spawn(&format!("cannot start `{}`", resolved.display()))(e));
            }
        };
        let pid = child.id() as i32;
        // The child is reaped by poll(); dropping std's handle neither waits nor kills.
        drop(child);
        // Read at once: even if the child already exited, its zombie keeps its stat.
        let start_ticks = procinfo::start_ticks(pid).unwrap_or(0);
        Ok(Handle {
            pid,
            pgid: pid,
            start_ticks,
            relay_pid: Some(relay.id() as i32),
        })
    }

    fn signal(&mut self, h: &Handle, sig: StopSignal) -> Result<(), BackendError> {
        match killpg(Pid::from_raw(h.pgid), sig.signal()) {
            Ok(()) => {
                // A stopped (SIGSTOP) process cannot act on the stop signal until continued.
                let _ = killpg(Pid::from_raw(h.pgid), Signal::SIGCONT);
                Ok(())
            }
            Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(BackendError::Signal {
                pgid: h.pgid,
                errno,
            }),
        }
    }

    fn kill(&mut self, h: &Handle) {
        let _ = killpg(Pid::from_raw(h.pgid), Signal::SIGKILL);
    }

    fn group_alive(&self, h: &Handle) -> bool {
        if killpg(Pid::from_raw(h.pgid), None).is_err() {
            return false;
        }
        // Our own main process as an unreaped zombie still counts, so its exit status is
        // collected before the stop is considered done.
        if procinfo::zombie_child_of(h.pid, std::process::id() as i32) {
            return true;
        }
        // Live members that started no earlier than the service (a group id can be
        // recycled once the group is gone).
        procinfo::group_alive_since(h.pgid, h.start_ticks)
    }

    fn adopt(&mut self, h: &Handle) -> bool {
        if procinfo::same_process(h.pid, h.start_ticks) {
            self.adopted.insert(h.pid);
            true
        } else {
            false
        }
    }

    fn poll(&mut self) -> Vec<BackendEvent> {
        let mut out = Vec::new();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => out.push(BackendEvent::Exited {
                    pid: pid.as_raw(),
                    exit: Exit::Code(code),
                }),
                Ok(WaitStatus::Signaled(pid, sig, _)) => out.push(BackendEvent::Exited {
                    pid: pid.as_raw(),
                    exit: Exit::Signal(sig as i32),
                }),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let gone: Vec<i32> = self
            .adopted
            .iter()
            .copied()
            .filter(|p| !procinfo::alive(*p))
            .collect();
        for pid in gone {
            self.adopted.remove(&pid);
            out.push(BackendEvent::Exited {
                pid,
                exit: Exit::Unknown,
            });
        }
        out
    }

    fn cleanup(&mut self, known: &[i32]) {
        // We are a child subreaper: descendants that escaped their service's process group
        // (setsid, double fork) were re-parented to us. Stop them too: no orphans.
        let me = std::process::id() as i32;
        let strays: Vec<i32> = procinfo::children_of(me)
            .into_iter()
            .filter(|p| !known.contains(p) && !procinfo::is_log_relay(*p))
            .collect();
        if strays.is_empty() {
            return;
        }
        tracing::warn!(pids = ?strays, "stopping processes that left their service's process group");
        for p in &strays {
            let _ = nix::sys::signal::kill(Pid::from_raw(*p), Signal::SIGTERM);
        }
        let t0 = std::time::Instant::now();
        while strays.iter().any(|p| procinfo::alive(*p))
            && t0.elapsed() < std::time::Duration::from_secs(5)
        {
            let _ = self.poll();
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for p in strays.iter().filter(|p| procinfo::alive(**p)) {
            let _ = nix::sys::signal::kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        let _ = self.poll();
    }
}
