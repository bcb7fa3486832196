//! Stopping a network from outside the supervisor's loop (`chainctl down`): wait for the
//! running supervisor to stop everything, or, when none runs (it was killed), stop what an
//! earlier one left running exactly as it would — stop signal, each service's grace, then
//! SIGKILL of the group. Progress goes to `say`, one line at a time.

use std::time::Duration;

use anyhow::{bail, Result};
use chainctl_core::control::{self, Request};
use chainctl_core::layout::Layout;
use chainctl_core::state::{self, StateFile};

/// Waits until the supervisor (pid `pid`), already asked to shut down, has stopped every
/// service and released its lock; fails after the longest grace plus 30 s.
pub fn wait_for_shutdown(layout: &Layout, pid: i32, say: &mut dyn FnMut(String)) -> Result<()> {
    say(format!("stopping services (supervisor pid {pid})…"));
    // The supervisor releases its lock once everything has stopped: each service gets
    // its grace, then SIGKILL. Wait for the longest grace plus a margin, saying what
    // is still running now and then.
    let longest = state::read_json::<StateFile>(&layout.state_file())
        .ok()
        .flatten()
        .and_then(|st| st.services.values().map(|r| r.plan.stop_grace.get()).max())
        .unwrap_or_default();
    let limit = longest + Duration::from_secs(30);
    let t0 = std::time::Instant::now();
    let mut said = std::time::Instant::now();
    while state::holder(&layout.lock_file()).is_some() {
        if said.elapsed() >= Duration::from_secs(5) {
            said = std::time::Instant::now();
            if let Ok(r) = control::call(
                &layout.control_socket(),
                &Request::Status,
                Duration::from_secs(5),
            ) {
                let left: Vec<String> = r
                    .status
                    .map(|st| {
                        st.services
                            .into_iter()
                            .filter(|s| s.pid.is_some())
                            .map(|s| s.name)
                            .collect()
                    })
                    .unwrap_or_default();
                say(format!(
                    "still stopping after {}s: {}",
                    t0.elapsed().as_secs(),
                    left.join(", ")
                ));
            }
        }
        if t0.elapsed() >= limit {
            bail!(
                "supervisor pid {pid} has not finished stopping after {}s (longest grace {}s); it keeps sending SIGKILL: see `chainctl status` and {}",
                limit.as_secs(),
                longest.as_secs(),
                layout.supervisor_log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    say("all services stopped".into());
    Ok(())
}

/// Stops services an earlier supervisor left running (it was killed): stop signal to each
/// group, each one's grace, then SIGKILL.
pub fn stop_unsupervised(layout: &Layout, say: &mut dyn FnMut(String)) -> Result<()> {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let Some(st) = state::read_json::<StateFile>(&layout.state_file())? else {
        say(format!(
            "nothing is running for state dir {}",
            layout.root.display()
        ));
        return Ok(());
    };
    // Swarm services outlive this host's boots and have no pids here.
    if st.services.values().any(|r| {
        r.handle
            .is_some_and(|h| chainctl_runtime::swarm::is_swarm_handle(&h))
    }) {
        let removed = chainctl_runtime::swarm::down_unsupervised(&layout.root)
            .map_err(|e| anyhow::anyhow!(e))?;
        if removed.is_empty() {
            say(format!(
                "no swarm service of state dir {} is left",
                layout.root.display()
            ));
        } else {
            say(format!(
                "removed swarm services (no supervisor running; the swarm stops each task with its grace): {}",
                removed.join(", ")
            ));
        }
        return Ok(());
    }
    if st.boot_id != chainctl_core::procinfo::boot_id() {
        say("nothing is running (the state file is from an earlier boot)".into());
        return Ok(());
    }
    let live: Vec<_> = st
        .services
        .values()
        .filter_map(|r| {
            r.handle
                .filter(|h| chainctl_core::procinfo::instance_alive(h.pid, h.pgid, h.start_ticks))
                .map(|h| (r, h))
        })
        .collect();
    if live.is_empty() {
        say(format!(
            "nothing is running for state dir {}",
            layout.root.display()
        ));
        return Ok(());
    }
    let start = std::time::Instant::now();
    for (r, h) in &live {
        say(format!(
            "stopping {} (pid {}, no supervisor running)",
            r.plan.name, h.pid
        ));
        let _ = killpg(Pid::from_raw(h.pgid), r.plan.stop_signal.signal());
    }
    loop {
        let mut left = 0;
        for (r, h) in &live {
            if chainctl_core::procinfo::group_members(h.pgid).is_empty() {
                continue;
            }
            if start.elapsed() >= r.plan.stop_grace.get() {
                say(format!(
                    "{} did not stop within {}: SIGKILL to its process group",
                    r.plan.name, r.plan.stop_grace
                ));
                let _ = killpg(Pid::from_raw(h.pgid), Signal::SIGKILL);
            }
            left += 1;
        }
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut st = st;
    for r in st.services.values_mut() {
        r.handle = None;
        r.state = "stopped".into();
    }
    state::write_json(&layout.state_file(), &st)?;
    say("all services stopped".into());
    Ok(())
}
