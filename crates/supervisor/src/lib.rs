//! The supervisor: a reconcile loop that drives every planned service towards "running"
//! through a [`Backend`], applies the restart policy, stops things in dependency order,
//! adopts what an earlier supervisor left running, and reloads its profile live.
//!
//! Everything happens on one thread fed by a channel (signals, control requests, profile
//! edits, ticks), so state has a single owner and no locks. Time comes in as a parameter
//! (`now`), so the loop is tested against a fake backend and a fake clock.
//!
//! Layer 5: on the runtime backends, the monitor, chainctl-core, chainctl-common and the
//! built-in engine (whose genesis hash the network's files name). It must never depend on
//! the report, the renderers or the consensus node.

pub mod files;
pub mod policy;
pub mod setup;
pub mod stop;
#[cfg(test)]
mod tests;
pub mod upgrade;

use chainctl_core::control::{Request, Response};
use chainctl_core::instance::Exit;
use chainctl_core::instance::Handle;
use chainctl_core::layout::Layout;
use chainctl_core::plan::{Plan, ServicePlan};
use chainctl_core::procinfo;
use chainctl_core::state::{ServiceRecord, StateFile};
use chainctl_core::status::{ServiceStatus, StatusReport};
use chainctl_runtime::{Backend, BackendEvent};
use policy::{Decision, History};
use rand::Rng;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, error, info, warn};

/// How often the loop runs when nothing happens.
pub const IDLE_TICK: Duration = Duration::from_secs(2);
/// How often it runs while a service is starting or stopping.
pub const BUSY_TICK: Duration = Duration::from_millis(100);
/// A service with no ports to probe counts as ready after running this long.
pub const PORTLESS_READY_AFTER: Duration = Duration::from_secs(1);
/// How long the rest of a group gets after its main process died, before SIGKILL.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// Something that wakes the loop.
pub enum Event {
    /// SIGINT or SIGTERM: stop everything (a second one kills at once).
    Shutdown,
    /// SIGCHLD: a child exited.
    Child,
    /// SIGHUP or a profile edit: reload the profile.
    Reload,
    /// A control-socket request and where to answer.
    Control(Request, Sender<Response>),
}

/// What follows a stop.
#[derive(Debug, Clone, PartialEq)]
enum After {
    /// Stay stopped (shutdown).
    Rest,
    /// Start again, with this plan (a restart request or a changed spec).
    Restart(Box<ServicePlan>),
    /// Forget the service (removed from the profile).
    Remove,
}

/// Where a service is in its life.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Waiting for its dependencies to be ready.
    Waiting,
    /// Running, not yet ready.
    Starting,
    /// Running and its ports accept connections.
    Ready,
    /// Running but not ready after its startup grace.
    Unhealthy(String),
    /// Exited; starts again at this time (once its dependencies are ready).
    Backoff(Instant),
    /// Failed too often (or with a "prevent" code); `chainctl restart` clears it.
    GivenUp(String),
    /// Signalled; SIGKILL at the deadline (and on every tick after it).
    Stopping { deadline: Instant, after: After },
    /// Exited cleanly and its policy does not restart it: dependents may go on.
    Completed(String),
    /// Not running and not meant to be.
    Stopped(String),
}

struct Svc {
    plan: ServicePlan,
    phase: Phase,
    handle: Option<Handle>,
    started: Option<(Instant, SystemTime)>,
    restarts: u32,
    last_exit: Option<Exit>,
    history: History,
    /// Main process gone but group members left: SIGKILL them at this time.
    leftovers_deadline: Option<Instant>,
    /// The next start is a restart (counted) rather than a first start.
    restart_pending: bool,
}

impl Svc {
    fn new(plan: ServicePlan) -> Self {
        Svc {
            plan,
            phase: Phase::Waiting,
            handle: None,
            started: None,
            restarts: 0,
            last_exit: None,
            history: History::default(),
            leftovers_deadline: None,
            restart_pending: false,
        }
    }

    fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Waiting => "waiting",
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Unhealthy(_) => "unhealthy",
            Phase::Backoff(_) => "backoff",
            Phase::GivenUp(_) => "given-up",
            Phase::Stopping { .. } => "stopping",
            Phase::Completed(_) | Phase::Stopped(_) => "stopped",
        }
    }

    /// Whether services that depend on this one may start.
    fn satisfies_dependents(&self) -> bool {
        matches!(self.phase, Phase::Ready | Phase::Completed(_))
    }

    /// Whether this one cannot become ready without outside help (or a long backoff),
    /// so its dependents are blocked rather than about to start.
    fn blocks_dependents(&self) -> bool {
        matches!(
            self.phase,
            Phase::GivenUp(_) | Phase::Stopped(_) | Phase::Unhealthy(_) | Phase::Backoff(_)
        )
    }
}

/// Reports progress while `up` waits for the network to come up.
pub type Progress = Box<dyn FnMut(&StatusReport, &[(String, String)])>;

/// Re-reads the profile and plans again, given the services now running (whose ports stay).
pub type Reloader = Box<dyn FnMut(&[String]) -> anyhow::Result<Plan>>;

/// The supervisor of one state dir.
pub struct Supervisor {
    layout: Layout,
    profile_name: String,
    profile_path: Option<PathBuf>,
    backend: Box<dyn Backend>,
    services: Vec<Svc>,
    shutting_down: bool,
    reload_at: Option<Instant>,
    reloader: Reloader,
    last_written: Option<StateFile>,
    sys: sysinfo::System,
    usage_at: Option<Instant>,
    progress: Option<Progress>,
    last_states: BTreeMap<String, String>,
    boot_id: String,
    /// Whether the state file may be written (not in unit tests).
    persisting: bool,
    /// Health, failover, gateway and API (none in unit tests).
    monitor: Option<chainctl_monitor::Monitor>,
}

impl Supervisor {
    /// A supervisor for `plan`. `reloader` re-reads the profile and plans again.
    pub fn new(
        layout: Layout,
        plan: Plan,
        profile_path: Option<PathBuf>,
        backend: Box<dyn Backend>,
        reloader: Reloader,
    ) -> Self {
        Supervisor {
            layout,
            profile_name: plan.profile.clone(),
            profile_path,
            backend,
            services: plan.services.into_iter().map(Svc::new).collect(),
            shutting_down: false,
            reload_at: None,
            reloader,
            last_written: None,
            sys: sysinfo::System::new(),
            usage_at: None,
            progress: None,
            last_states: BTreeMap::new(),
            boot_id: procinfo::boot_id(),
            persisting: true,
            monitor: None,
        }
    }

    /// Runs health probes, failover, the gateway and the API beside the loop.
    pub fn with_monitor(mut self, m: chainctl_monitor::Monitor) -> Self {
        self.monitor = Some(m);
        self
    }

    /// Prints progress lines until every service has settled.
    pub fn with_progress(mut self, p: Progress) -> Self {
        self.progress = Some(p);
        self
    }

    /// Takes over the services an earlier supervisor recorded in the state file: live ones
    /// are adopted (not restarted), dead ones are noticed and handled by the policy (what is
    /// left of their process group is stopped first), ones no longer in the profile are
    /// stopped. If that supervisor was killed, given-up and completed services stay so.
    pub fn adopt(&mut self, previous: Option<StateFile>) {
        let Some(prev) = previous else { return };
        if prev.boot_id != self.boot_id {
            info!("state file is from an earlier boot: nothing to adopt");
            return;
        }
        let now = Instant::now();
        for (name, rec) in prev.services {
            let idx = self.services.iter().position(|s| s.plan.name == name);
            let same_spec =
                idx.is_some_and(|i| self.services[i].plan.spec_hash == rec.plan.spec_hash);
            let Some(h) = rec.handle else {
                if let (Some(i), false, true) = (idx, prev.clean_shutdown, same_spec) {
                    let s = &mut self.services[i];
                    s.restarts = rec.restarts;
                    s.last_exit = rec.last_exit;
                    if let Some(why) = rec.given_up {
                        info!(service = %name, "stays given up (from before chainctl restarted)");
                        s.phase = Phase::GivenUp(why);
                    } else if let Some(how) = rec.completed {
                        s.phase = Phase::Completed(how);
                    }
                }
                continue;
            };
            let since = rec
                .started_at_ms
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
                .unwrap_or_else(SystemTime::now);
            let elapsed = SystemTime::now().duration_since(since).unwrap_or_default();
            let started = (now.checked_sub(elapsed).unwrap_or(now), since);
            let alive = self.backend.adopt(&h);
            if !alive && !self.backend.group_alive(&h) {
                warn!(service = %name, pid = h.pid, "died while chainctl was not running");
                if let Some(i) = idx {
                    let s = &mut self.services[i];
                    s.restarts = rec.restarts;
                    s.last_exit = Some(Exit::Unknown);
                    s.restart_pending = true;
                    let unit = rand::thread_rng().gen::<f64>();
                    s.phase = match policy::on_exit(
                        &s.plan.restart,
                        &mut s.history,
                        Exit::Unknown,
                        elapsed,
                        now,
                        unit,
                    ) {
                        Decision::Restart(d) => Phase::Backoff(now + d),
                        Decision::Done => {
                            Phase::Stopped("exited while chainctl was not running".into())
                        }
                        Decision::GiveUp(why) => Phase::GivenUp(why),
                    };
                }
                continue;
            }
            let i = match idx {
                Some(i) => i,
                None => {
                    self.services.push(Svc::new(rec.plan.clone()));
                    self.services.len() - 1
                }
            };
            let s = &mut self.services[i];
            s.handle = Some(h);
            s.started = Some(started);
            s.restarts = rec.restarts;
            s.last_exit = rec.last_exit;
            s.phase = Phase::Starting;
            if !alive {
                warn!(service = %name, pid = h.pid, "died while chainctl was not running, leaving processes in its group: stopping them, then restarting it");
                s.last_exit = Some(Exit::Unknown);
                s.restart_pending = true;
                let next = Box::new(s.plan.clone());
                s.plan = rec.plan;
                self.begin_stop(i, After::Restart(next), now);
            } else if idx.is_none() {
                info!(service = %name, pid = h.pid, "adopted, but no longer in the profile: stopping it");
                self.begin_stop(i, After::Remove, now);
            } else if !same_spec {
                info!(service = %name, pid = h.pid, "adopted, but its definition changed while chainctl was down: restarting it");
                let next = Box::new(s.plan.clone());
                s.plan = rec.plan;
                self.begin_stop(i, After::Restart(next), now);
            } else {
                info!(service = %name, pid = h.pid, "adopted running service");
            }
        }
    }

    /// Runs until shut down and every service has stopped.
    pub fn run(mut self, rx: Receiver<Event>) -> anyhow::Result<()> {
        let mut interrupts = 0;
        // The end of a planned stop, if one is open (the report's planned downtime).
        if let Err(e) = chainctl_core::state::record_up(
            &self.layout.planned_stops(),
            chainctl_common::time::now_ms(),
        ) {
            warn!("cannot record the end of the planned stop: {e:#}");
        }
        loop {
            let now = Instant::now();
            self.step(now);
            chainctl_monitor::reconcile_histogram().observe(now.elapsed().as_secs_f64());
            self.persist();
            self.report_progress();
            if self.shutting_down && self.services.iter().all(|s| s.handle.is_none()) {
                break;
            }
            match rx.recv_timeout(self.next_wake(Instant::now())) {
                Ok(Event::Child) | Err(RecvTimeoutError::Timeout) => {}
                Ok(Event::Shutdown) => {
                    interrupts += 1;
                    if interrupts == 1 {
                        info!("stopping every service (again to kill them at once)");
                        self.begin_shutdown();
                    } else {
                        warn!("second interrupt: killing every service now");
                        for s in &self.services {
                            if let Some(h) = s.handle {
                                self.backend.kill(&h);
                            }
                        }
                    }
                }
                Ok(Event::Reload) => {
                    self.reload_at = Some(Instant::now() + Duration::from_millis(300))
                }
                Ok(Event::Control(req, reply)) => {
                    let resp = self.control(req, Instant::now());
                    let _ = reply.send(resp);
                }
                Err(RecvTimeoutError::Disconnected) => self.shutting_down = true,
            }
        }
        let known: Vec<i32> = self
            .services
            .iter()
            .filter_map(|s| s.handle)
            .flat_map(|h| [Some(h.pid), h.relay_pid])
            .flatten()
            .collect();
        self.backend.cleanup(&known);
        self.persist_final();
        info!("all services stopped");
        Ok(())
    }

    /// Stops every service, as asked (`chainctl down`, a signal): recorded as a planned
    /// stop; no failover or health restarts while everything stops.
    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        if let Err(e) = chainctl_core::state::record_down(
            &self.layout.planned_stops(),
            chainctl_common::time::now_ms(),
        ) {
            warn!("cannot record the planned stop: {e:#}");
        }
        if let Some(m) = self.monitor.take() {
            // Joining waits for the monitor, which may be waiting for this process's
            // answer: let it go on its own thread.
            std::thread::spawn(move || drop(m));
        }
    }

    /// How long the loop may sleep: short while something is in motion, until the next
    /// due backoff, else the idle tick. A restart blocked on a dependency waits for that
    /// dependency's own progress, so it never spins.
    fn next_wake(&self, now: Instant) -> Duration {
        let moving = self.reload_at.is_some()
            || self.services.iter().any(|s| {
                matches!(s.phase, Phase::Starting | Phase::Stopping { .. })
                    || s.leftovers_deadline.is_some()
            })
            || (self.shutting_down && self.services.iter().any(|s| s.handle.is_some()));
        let mut wait = if moving { BUSY_TICK } else { IDLE_TICK };
        for s in &self.services {
            if let Phase::Backoff(t) = s.phase {
                wait = wait.min(
                    t.saturating_duration_since(now)
                        .max(Duration::from_millis(5)),
                );
            }
        }
        wait
    }

    /// One pass: collect exits, then move every service one step toward where it should be.
    fn step(&mut self, now: Instant) {
        for ev in self.backend.poll() {
            let BackendEvent::Exited { pid, exit } = ev;
            self.on_exit(pid, exit, now);
        }
        if self.reload_at.is_some_and(|t| now >= t) {
            self.reload_at = None;
            if !self.shutting_down {
                self.reload(now);
            }
        }
        for i in 0..self.services.len() {
            self.advance(i, now);
        }
        if self.shutting_down {
            self.stop_in_order(now);
        }
        self.services
            .retain(|s| !matches!(&s.phase, Phase::Stopped(w) if w == REMOVED));
    }

    fn on_exit(&mut self, pid: i32, exit: Exit, now: Instant) {
        let Some(i) = self
            .services
            .iter()
            .position(|s| s.handle.is_some_and(|h| h.pid == pid))
        else {
            debug!(pid, %exit, "reaped a process that is not a service (log relay or orphan)");
            return;
        };
        let s = &mut self.services[i];
        let name = s.plan.name.clone();
        let uptime = s
            .started
            .map(|(t, _)| now.saturating_duration_since(t))
            .unwrap_or_default();
        s.last_exit = Some(exit);
        if let Phase::Stopping { .. } = s.phase {
            info!(service = %name, pid, %exit, "stopped");
            return; // the group check in advance() finishes the stop
        }
        let h = s.handle.expect("matched by handle");
        if self.backend.group_alive(&h) {
            // Leave no orphans: the rest of the group gets a short grace, then SIGKILL.
            warn!(service = %name, "its main process exited, leaving processes in its group: SIGTERM, then SIGKILL in {LEFTOVER_GRACE:?}");
            let _ = self
                .backend
                .signal(&h, chainctl_core::profile::StopSignal::Term);
            self.services[i].leftovers_deadline = Some(now + LEFTOVER_GRACE);
        }
        let s = &mut self.services[i];
        if s.leftovers_deadline.is_none() {
            s.handle = None;
        }
        if self.shutting_down {
            s.phase = Phase::Stopped(format!("{exit} during shutdown"));
            return;
        }
        if let Some(m) = &self.monitor {
            m.service_exited(&name, format!("its process exited ({exit})"));
        }
        let unit = rand::thread_rng().gen::<f64>();
        match policy::on_exit(&s.plan.restart, &mut s.history, exit, uptime, now, unit) {
            Decision::Restart(d) => {
                warn!(service = %name, pid, %exit, uptime_ms = uptime.as_millis() as u64, delay_ms = d.as_millis() as u64, "exited; restarting after backoff");
                s.phase = Phase::Backoff(now + d);
                s.restart_pending = true;
            }
            Decision::Done => {
                info!(service = %name, pid, %exit, "exited; its restart policy does not restart it");
                let success = matches!(exit, Exit::Code(c) if s.plan.restart.success_exit_codes.contains(&i64::from(c)));
                s.phase = if success {
                    Phase::Completed(format!("{exit}"))
                } else {
                    Phase::Stopped(format!("{exit}"))
                };
            }
            Decision::GiveUp(why) => {
                error!(service = %name, pid, %exit, reason = %why, "given up");
                s.phase = Phase::GivenUp(why);
            }
        }
    }

    fn dep(&self, name: &str) -> Option<&Svc> {
        self.services.iter().find(|s| s.plan.name == name)
    }

    fn deps_ready(&self, i: usize) -> bool {
        self.services[i]
            .plan
            .depends_on
            .iter()
            .all(|d| self.dep(d).is_none_or(Svc::satisfies_dependents))
    }

    fn advance(&mut self, i: usize, now: Instant) {
        // Leftover processes of a group whose main process died.
        if let Some(t) = self.services[i].leftovers_deadline {
            let h = self.services[i].handle.expect("leftovers keep the handle");
            if !self.backend.group_alive(&h) {
                self.services[i].leftovers_deadline = None;
                if !matches!(self.services[i].phase, Phase::Stopping { .. }) {
                    self.services[i].handle = None;
                }
            } else if now >= t {
                warn!(service = %self.services[i].plan.name, "killing processes left in its group");
                self.backend.kill(&h);
            }
            return;
        }
        let phase = self.services[i].phase.clone();
        match phase {
            Phase::Waiting if !self.shutting_down && self.deps_ready(i) => self.start(i, now),
            Phase::Backoff(t) if !self.shutting_down && now >= t => {
                if self.deps_ready(i) {
                    self.start(i, now);
                } else {
                    // Its dependency is down: wait for it rather than poll a due timer.
                    self.services[i].phase = Phase::Waiting;
                }
            }
            Phase::Starting | Phase::Unhealthy(_) => self.check_ready(i, now),
            Phase::Stopping { deadline, after } => {
                let h = self.services[i].handle;
                if !h.is_some_and(|h| self.backend.group_alive(&h)) {
                    self.finish_stop(i, after, now);
                } else if now >= deadline {
                    // Repeated on every tick: a process may be stopped or in a syscall.
                    let s = &self.services[i];
                    warn!(service = %s.plan.name, grace_s = s.plan.stop_grace.get().as_secs(), "did not stop within its grace: SIGKILL to its process group");
                    self.backend.kill(&h.expect("alive"));
                }
            }
            _ => {}
        }
    }

    fn start(&mut self, i: usize, now: Instant) {
        let s = &mut self.services[i];
        if std::mem::take(&mut s.restart_pending) {
            s.restarts += 1;
        }
        match self.backend.start(&s.plan) {
            Ok(h) => {
                info!(service = %s.plan.name, pid = h.pid, argv = ?s.plan.argv, "started");
                s.handle = Some(h);
                s.started = Some((now, SystemTime::now()));
                s.phase = Phase::Starting;
                // Record the pid at once, so a supervisor killed right now cannot lose it.
                self.persist();
            }
            Err(why) => {
                let unit = rand::thread_rng().gen::<f64>();
                s.last_exit = Some(Exit::Code(127));
                s.restart_pending = true;
                match policy::on_exit(
                    &s.plan.restart,
                    &mut s.history,
                    Exit::Code(127),
                    Duration::ZERO,
                    now,
                    unit,
                ) {
                    Decision::Restart(d) => {
                        error!(service = %s.plan.name, error = %why, delay_ms = d.as_millis() as u64, "cannot start; retrying after backoff");
                        s.phase = Phase::Backoff(now + d);
                    }
                    Decision::Done | Decision::GiveUp(_) => {
                        error!(service = %s.plan.name, error = %why, "cannot start; given up");
                        s.phase = Phase::GivenUp(format!("cannot start: {why}"));
                    }
                }
            }
        }
    }

    fn check_ready(&mut self, i: usize, now: Instant) {
        let s = &mut self.services[i];
        let Some((t0, _)) = s.started else { return };
        let up = now.saturating_duration_since(t0);
        let ready = if s.plan.ready_ports.is_empty() {
            up >= PORTLESS_READY_AFTER
        } else {
            s.plan.ready_ports.iter().all(|p| {
                TcpStream::connect_timeout(
                    &SocketAddr::new(s.plan.ready_host, *p),
                    Duration::from_millis(100),
                )
                .is_ok()
            })
        };
        if ready {
            if s.phase != Phase::Ready {
                info!(service = %s.plan.name, after_ms = up.as_millis() as u64, "ready");
                if let Some(m) = &self.monitor {
                    m.service_ready(&s.plan.name);
                }
            }
            s.phase = Phase::Ready;
        } else if s.phase == Phase::Starting && up >= s.plan.startup_grace.get() {
            let ports: Vec<String> = s.plan.ready_ports.iter().map(|p| p.to_string()).collect();
            let why = format!(
                "not ready after {}: port(s) {} on {} refuse connections; see `chainctl logs {}`",
                s.plan.startup_grace,
                ports.join(", "),
                s.plan.ready_host,
                s.plan.name
            );
            warn!(service = %s.plan.name, reason = %why, "unhealthy");
            s.phase = Phase::Unhealthy(why);
        }
    }

    /// Signals a running service to stop (or just retargets a stop already under way).
    fn begin_stop(&mut self, i: usize, after: After, now: Instant) {
        let s = &mut self.services[i];
        if let Phase::Stopping { deadline, .. } = s.phase {
            // Already stopping: keep its deadline, change only what follows.
            s.phase = Phase::Stopping { deadline, after };
            return;
        }
        match s.handle {
            Some(h) => {
                info!(service = %s.plan.name, pid = h.pid, signal = ?s.plan.stop_signal, grace_s = s.plan.stop_grace.get().as_secs(), "stopping");
                // A restart or removal (not shutdown): a validator using it moves off now.
                if let (Some(m), false) = (&self.monitor, self.shutting_down) {
                    m.service_exited(&s.plan.name, "chainctl is stopping it".into());
                }
                if let Err(e) = self.backend.signal(&h, s.plan.stop_signal) {
                    warn!(service = %s.plan.name, error = %e, "cannot signal");
                }
                s.leftovers_deadline = None;
                s.phase = Phase::Stopping {
                    deadline: now + s.plan.stop_grace.get(),
                    after,
                };
            }
            None => self.finish_stop(i, after, now),
        }
    }

    fn finish_stop(&mut self, i: usize, after: After, now: Instant) {
        let s = &mut self.services[i];
        s.handle = None;
        s.leftovers_deadline = None;
        match after {
            After::Rest => s.phase = Phase::Stopped("stopped by chainctl".into()),
            After::Remove => s.phase = Phase::Stopped(REMOVED.into()),
            After::Restart(plan) => {
                s.plan = *plan;
                s.phase = Phase::Waiting;
                if !self.shutting_down && self.deps_ready(i) {
                    self.start(i, now);
                }
            }
        }
        self.persist();
    }

    /// During shutdown: stop each service once nothing that depends on it still runs.
    fn stop_in_order(&mut self, now: Instant) {
        for i in (0..self.services.len()).rev() {
            let name = self.services[i].plan.name.clone();
            let s = &self.services[i];
            if let Phase::Stopping {
                deadline,
                after: After::Restart(_) | After::Remove,
            } = s.phase
            {
                self.services[i].phase = Phase::Stopping {
                    deadline,
                    after: After::Rest,
                };
                continue;
            }
            if matches!(s.phase, Phase::Stopping { .. }) {
                continue;
            }
            if s.handle.is_none() {
                if !matches!(s.phase, Phase::Stopped(_)) {
                    self.services[i].phase = Phase::Stopped("stopped by chainctl".into());
                }
                continue;
            }
            let dependents_running = self
                .services
                .iter()
                .any(|o| o.handle.is_some() && o.plan.depends_on.contains(&name));
            if !dependents_running {
                self.begin_stop(i, After::Rest, now);
            }
        }
    }

    fn reload(&mut self, now: Instant) {
        let running: Vec<String> = self
            .services
            .iter()
            .filter(|s| s.handle.is_some())
            .map(|s| s.plan.name.clone())
            .collect();
        let plan = match (self.reloader)(&running) {
            Ok(p) => p,
            Err(e) => {
                error!("profile change refused, the network keeps running as it was:\n{e:#}");
                return;
            }
        };
        info!("profile changed: reconciling");
        if let Some(m) = &self.monitor {
            m.update(&plan);
        }
        let mut order = Vec::new();
        for new in plan.services {
            order.push(new.name.clone());
            let Some(i) = self.services.iter().position(|s| s.plan.name == new.name) else {
                info!(service = %new.name, "added");
                self.services.push(Svc::new(new));
                continue;
            };
            let s = &mut self.services[i];
            let removing = matches!(
                s.phase,
                Phase::Stopping {
                    after: After::Remove,
                    ..
                }
            );
            if s.plan.spec_hash == new.spec_hash && !removing {
                // Same process definition: new restart/stop settings apply from now on.
                s.plan = new;
                continue;
            }
            info!(service = %new.name, "changed: restarting it alone");
            s.history.clear();
            if s.handle.is_some() {
                self.begin_stop(i, After::Restart(Box::new(new)), now);
            } else {
                s.plan = new;
                if !matches!(s.phase, Phase::Stopping { .. }) {
                    s.phase = Phase::Waiting;
                }
            }
        }
        for i in 0..self.services.len() {
            if !order.contains(&self.services[i].plan.name) {
                info!(service = %self.services[i].plan.name, "removed from the profile: stopping it");
                self.begin_stop(i, After::Remove, now);
            }
        }
        // Keep start order as the new plan has it; removed ones go last.
        self.services.sort_by_key(|s| {
            order
                .iter()
                .position(|n| n == &s.plan.name)
                .unwrap_or(usize::MAX)
        });
    }

    fn control(&mut self, req: Request, now: Instant) -> Response {
        match req {
            Request::Status => Response {
                ok: true,
                status: Some(self.report(true)),
                ..Default::default()
            },
            Request::Shutdown => {
                self.begin_shutdown();
                Response::ok("stopping every service")
            }
            Request::Reload => {
                self.reload_at = Some(now);
                Response::ok("reloading the profile")
            }
            Request::Stop { service } => {
                let i = match self.named(&service) {
                    Ok(i) => i,
                    Err(e) => return Response::err(e),
                };
                info!(service = %service, "stop requested: it stays stopped until `chainctl restart`");
                self.services[i].history.clear();
                self.begin_stop(i, After::Rest, now);
                Response::ok(format!(
                    "stopping {service}; it stays stopped until `chainctl restart {service}`"
                ))
            }
            Request::Restart { service } => {
                let i = match self.named(&service) {
                    Ok(i) => i,
                    Err(e) => return Response::err(e),
                };
                info!(service = %service, "restart requested");
                let s = &mut self.services[i];
                s.history.clear();
                if s.handle.is_some() {
                    let plan = Box::new(s.plan.clone());
                    self.begin_stop(i, After::Restart(plan), now);
                } else {
                    s.phase = Phase::Waiting;
                }
                Response::ok(format!("restarting {service}"))
            }
        }
    }

    /// The index of the service `name`, or why there is none to act on: the services
    /// there are, or that the supervisor is shutting down.
    fn named(&self, name: &str) -> Result<usize, String> {
        let Some(i) = self.services.iter().position(|s| s.plan.name == name) else {
            let names: Vec<&str> = self.services.iter().map(|s| s.plan.name.as_str()).collect();
            return Err(format!(
                "no service named `{name}`; known: {}",
                names.join(", ")
            ));
        };
        if self.shutting_down {
            return Err("the supervisor is shutting down".into());
        }
        Ok(i)
    }

    fn refresh_usage(&mut self) {
        let pids: Vec<sysinfo::Pid> = self
            .services
            .iter()
            .filter_map(|s| s.handle)
            .map(|h| sysinfo::Pid::from(h.pid as usize))
            .collect();
        self.sys.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&pids),
            true,
            sysinfo::ProcessRefreshKind::new().with_cpu().with_memory(),
        );
        self.usage_at = Some(Instant::now());
    }

    /// The state shown to users: `waiting` becomes `blocked` when a dependency is down.
    fn display_state(&self, s: &Svc) -> (&'static str, Option<String>) {
        match &s.phase {
            Phase::Waiting => {
                let blocking: Vec<String> = s
                    .plan
                    .depends_on
                    .iter()
                    .filter_map(|d| {
                        self.dep(d)
                            .filter(|d| d.blocks_dependents())
                            .map(|d| format!("{} ({})", d.plan.name, d.state_name()))
                    })
                    .collect();
                if blocking.is_empty() {
                    let detail = (!s.plan.depends_on.is_empty())
                        .then(|| format!("waiting for {}", s.plan.depends_on.join(", ")));
                    ("waiting", detail)
                } else {
                    (
                        "blocked",
                        Some(format!("waiting for {}", blocking.join(", "))),
                    )
                }
            }
            Phase::Unhealthy(w) | Phase::GivenUp(w) => (s.state_name(), Some(w.clone())),
            Phase::Backoff(t) => (
                s.state_name(),
                Some(format!(
                    "restarting in {:.1}s",
                    t.saturating_duration_since(Instant::now()).as_secs_f64()
                )),
            ),
            Phase::Completed(w) => (s.state_name(), Some(format!("completed: {w}"))),
            _ => (s.state_name(), None),
        }
    }

    /// The status of every service.
    pub fn report(&mut self, usage: bool) -> StatusReport {
        if usage
            && self
                .usage_at
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(500))
        {
            self.refresh_usage();
        }
        let backend = self.backend.name().to_string();
        let services = self
            .services
            .iter()
            .map(|s| {
                let proc_ = s
                    .handle
                    .and_then(|h| self.sys.process(sysinfo::Pid::from(h.pid as usize)));
                let (state, detail) = self.display_state(s);
                ServiceStatus {
                    name: s.plan.name.clone(),
                    kind: s.plan.kind.to_string(),
                    backend: backend.clone(),
                    pid: s.handle.map(|h| h.pid),
                    image: s.plan.image.clone(),
                    state: state.into(),
                    detail,
                    uptime_secs: s.handle.and(s.started).map(|(_, t)| {
                        SystemTime::now()
                            .duration_since(t)
                            .unwrap_or_default()
                            .as_secs()
                    }),
                    restarts: s.restarts,
                    last_exit: s.last_exit.map(|e| e.to_string()),
                    ports: s.plan.ports.clone(),
                    address: Some(s.plan.ready_host),
                    cpu_percent: if usage {
                        proc_.map(|p| p.cpu_usage())
                    } else {
                        None
                    },
                    memory_bytes: if usage {
                        proc_.map(|p| p.memory())
                    } else {
                        None
                    },
                    health: None,
                    health_detail: None,
                }
            })
            .collect();
        let mut services: Vec<ServiceStatus> = services;
        let monitor = self.monitor.as_ref().map(|m| m.summary(&mut services));
        StatusReport {
            profile: self.profile_name.clone(),
            state_dir: self.layout.root.clone(),
            supervisor_pid: Some(std::process::id() as i32),
            services,
            validators: Vec::new(),
            monitor,
        }
    }

    fn state_file(&self, clean_shutdown: bool) -> StateFile {
        let services = self
            .services
            .iter()
            .map(|s| {
                let record = ServiceRecord {
                    plan: s.plan.clone(),
                    handle: s.handle,
                    started_at_ms: s.started.map(|(_, t)| {
                        t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
                    }),
                    restarts: s.restarts,
                    last_exit: s.last_exit,
                    state: s.state_name().into(),
                    given_up: match &s.phase {
                        Phase::GivenUp(w) => Some(w.clone()),
                        _ => None,
                    },
                    completed: match &s.phase {
                        Phase::Completed(w) => Some(w.clone()),
                        _ => None,
                    },
                };
                (s.plan.name.clone(), record)
            })
            .collect();
        StateFile {
            boot_id: self.boot_id.clone(),
            supervisor_pid: Some(std::process::id() as i32),
            profile_path: self.profile_path.clone(),
            profile: self.profile_name.clone(),
            services,
            clean_shutdown,
        }
    }

    fn write_state(&mut self, st: StateFile) {
        if !self.persisting || self.last_written.as_ref() == Some(&st) {
            return;
        }
        if let Err(e) = chainctl_core::state::write_json(&self.layout.state_file(), &st) {
            error!("{e:#}");
            return;
        }
        self.last_written = Some(st);
    }

    fn persist(&mut self) {
        let st = self.state_file(false);
        self.write_state(st);
    }

    fn persist_final(&mut self) {
        let mut st = self.state_file(true);
        st.supervisor_pid = None;
        self.write_state(st);
    }

    fn report_progress(&mut self) {
        if self.progress.is_none() {
            return;
        }
        let report = self.report(false);
        let mut changes = Vec::new();
        for s in &report.services {
            if self.last_states.get(&s.name) != Some(&s.state) {
                self.last_states.insert(s.name.clone(), s.state.clone());
                changes.push((s.name.clone(), s.state.clone()));
            }
        }
        let settled = report.settled();
        if let Some(p) = self.progress.as_mut() {
            if !changes.is_empty() || settled {
                p(&report, &changes);
            }
        }
        if settled {
            self.progress = None;
        }
    }
}

/// Marks a service whose stop means "forget it".
const REMOVED: &str = "removed from the profile";
