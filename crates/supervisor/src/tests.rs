//! The reconcile loop against a fake backend and an injected clock: start order,
//! backoff timing, stop order on shutdown, SIGKILL after the grace, restart requests.

use super::*;
use chainctl_core::layout::Layout;
use chainctl_core::loader::load;
use chainctl_core::plan::{self, Plan};
use chainctl_core::ports::Allocation;
use chainctl_core::profile::{Source, StopSignal};
use chainctl_runtime::BackendError;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

#[derive(Default)]
struct Fake {
    next_pid: i32,
    started: Vec<String>,
    signalled: Vec<String>,
    killed: Vec<String>,
    alive: BTreeMap<i32, String>,
    exits: Vec<(i32, Exit)>,
    /// Services that ignore the stop signal.
    stubborn: Vec<String>,
}

struct FakeBackend(Rc<RefCell<Fake>>);

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn start(&mut self, svc: &ServicePlan) -> Result<Handle, BackendError> {
        let mut f = self.0.borrow_mut();
        f.next_pid += 1;
        let pid = f.next_pid;
        f.started.push(svc.name.clone());
        f.alive.insert(pid, svc.name.clone());
        Ok(Handle {
            pid,
            pgid: pid,
            start_ticks: 1,
            relay_pid: None,
        })
    }
    fn signal(&mut self, h: &Handle, _: StopSignal) -> Result<(), BackendError> {
        let mut f = self.0.borrow_mut();
        let name = f.alive.get(&h.pid).cloned().unwrap_or_default();
        f.signalled.push(name.clone());
        if !f.stubborn.contains(&name) {
            f.alive.remove(&h.pid);
            f.exits.push((h.pid, Exit::Signal(15)));
        }
        Ok(())
    }
    fn kill(&mut self, h: &Handle) {
        let mut f = self.0.borrow_mut();
        if let Some(name) = f.alive.remove(&h.pid) {
            f.killed.push(name);
            f.exits.push((h.pid, Exit::Signal(9)));
        }
    }
    fn group_alive(&self, h: &Handle) -> bool {
        self.0.borrow().alive.contains_key(&h.pid)
    }
    fn adopt(&mut self, _: &Handle) -> bool {
        false
    }
    fn poll(&mut self) -> Vec<BackendEvent> {
        self.0
            .borrow_mut()
            .exits
            .drain(..)
            .map(|(pid, exit)| BackendEvent::Exited { pid, exit })
            .collect()
    }
}

fn plan_of(yaml: &str) -> Plan {
    let loaded = load(Source {
        label: "t.yaml".into(),
        path: None,
        text: yaml.into(),
    })
    .unwrap();
    plan::build(
        &loaded.profile,
        &Layout::new("/nonexistent"),
        &Allocation::new(),
        Path::new("/"),
    )
    .unwrap()
}

fn sup(yaml: &str) -> (Supervisor, Rc<RefCell<Fake>>) {
    let fake = Rc::new(RefCell::new(Fake::default()));
    let mut s = Supervisor::new(
        Layout::new("/nonexistent"),
        plan_of(yaml),
        None,
        Box::new(FakeBackend(fake.clone())),
        Box::new(|_: &[String]| anyhow::bail!("no reload in tests")),
    );
    s.persisting = false;
    (s, fake)
}

fn state(s: &Supervisor, name: &str) -> &'static str {
    s.services
        .iter()
        .find(|x| x.plan.name == name)
        .unwrap()
        .state_name()
}

const CHAIN: &str = "name: t\nservices:\n  el:\n    command: [x]\n  cl:\n    command: [x]\n    drives: [el]\n  ui:\n    command: [x]\n    depends_on: [cl]\n";

#[test]
fn starts_in_dependency_order_as_each_becomes_ready() {
    let (mut s, fake) = sup(CHAIN);
    let t0 = Instant::now();
    s.step(t0);
    assert_eq!(fake.borrow().started, ["el"]);
    assert_eq!((state(&s, "el"), state(&s, "cl")), ("starting", "waiting"));
    s.step(t0 + Duration::from_millis(500));
    assert_eq!(
        fake.borrow().started,
        ["el"],
        "el is not ready before 1 s up"
    );
    s.step(t0 + Duration::from_millis(1100));
    assert_eq!(fake.borrow().started, ["el", "cl"]);
    s.step(t0 + Duration::from_millis(2200));
    assert_eq!(fake.borrow().started, ["el", "cl", "ui"]);
    // Idempotent: more steps with nothing new change nothing.
    for k in 0..5 {
        s.step(t0 + Duration::from_millis(3300 + k * 100));
    }
    assert_eq!(fake.borrow().started.len(), 3);
    assert!(s.services.iter().all(|x| x.state_name() == "ready"));
}

#[test]
fn a_crash_waits_out_its_backoff_on_the_injected_clock() {
    let (mut s, fake) = sup("name: t\nsupervisor:\n  backoff: {initial: 10s, jitter: 0.0}\nservices:\n  a:\n    command: [x]\n");
    let t0 = Instant::now();
    s.step(t0);
    fake.borrow_mut().alive.clear();
    fake.borrow_mut().exits.push((1, Exit::Code(1)));
    s.step(t0 + Duration::from_secs(5));
    assert_eq!(state(&s, "a"), "backoff");
    s.step(t0 + Duration::from_secs(14));
    assert_eq!(fake.borrow().started.len(), 1, "not before 10 s");
    s.step(t0 + Duration::from_secs(15));
    assert_eq!(fake.borrow().started.len(), 2);
    assert_eq!(s.services[0].restarts, 1);
    // The second failure waits twice as long.
    fake.borrow_mut().alive.clear();
    fake.borrow_mut().exits.push((2, Exit::Code(1)));
    s.step(t0 + Duration::from_secs(16));
    s.step(t0 + Duration::from_secs(35));
    assert_eq!(fake.borrow().started.len(), 2);
    s.step(t0 + Duration::from_secs(36));
    assert_eq!(fake.borrow().started.len(), 3);
}

#[test]
fn shutdown_stops_dependents_first_and_kills_after_the_grace() {
    let (mut s, fake) = sup(&CHAIN.replace(
        "  cl:\n    command: [x]\n",
        "  cl:\n    command: [x]\n    stop: {grace: 20s}\n",
    ));
    let t0 = Instant::now();
    for k in 0..4 {
        s.step(t0 + Duration::from_millis(1100 * k));
    }
    assert_eq!(fake.borrow().started.len(), 3);
    fake.borrow_mut().stubborn.push("cl".into());
    s.shutting_down = true;
    let t1 = t0 + Duration::from_secs(10);
    s.step(t1);
    assert_eq!(
        fake.borrow().signalled,
        ["ui"],
        "only the outermost dependent first"
    );
    s.step(t1 + Duration::from_millis(100));
    assert_eq!(fake.borrow().signalled, ["ui", "cl"]);
    s.step(t1 + Duration::from_secs(5));
    assert_eq!(
        fake.borrow().signalled,
        ["ui", "cl"],
        "el waits while cl still runs"
    );
    assert!(
        fake.borrow().killed.is_empty(),
        "no SIGKILL before the grace"
    );
    s.step(t1 + Duration::from_millis(20_050));
    assert!(
        fake.borrow().killed.is_empty(),
        "grace counts from the signal (t1 + 0.1 s)"
    );
    s.step(t1 + Duration::from_millis(20_200));
    assert_eq!(fake.borrow().killed, ["cl"]);
    s.step(t1 + Duration::from_millis(20_300));
    s.step(t1 + Duration::from_millis(20_400));
    assert_eq!(fake.borrow().signalled, ["ui", "cl", "el"]);
    assert!(s
        .services
        .iter()
        .all(|x| x.handle.is_none() && x.state_name() == "stopped"));
}

#[test]
fn restart_request_clears_given_up_and_restarts_a_running_service() {
    let (mut s, fake) = sup("name: t\nservices:\n  a:\n    command: [x]\n");
    let t0 = Instant::now();
    s.step(t0);
    fake.borrow_mut().alive.clear();
    fake.borrow_mut().exits.push((1, Exit::Code(78)));
    s.step(t0);
    assert_eq!(state(&s, "a"), "given-up");
    assert!(
        s.control(
            Request::Restart {
                service: "a".into()
            },
            t0
        )
        .ok
    );
    s.step(t0 + Duration::from_secs(1));
    assert_eq!(fake.borrow().started.len(), 2);
    s.step(t0 + Duration::from_secs(3));
    assert_eq!(state(&s, "a"), "ready");
    // A running service is stopped, then started again.
    assert!(
        s.control(
            Request::Restart {
                service: "a".into()
            },
            t0
        )
        .ok
    );
    assert_eq!(fake.borrow().signalled, ["a"]);
    s.step(t0 + Duration::from_secs(4));
    assert_eq!(fake.borrow().started.len(), 3);
    let r = s.control(
        Request::Restart {
            service: "zz".into(),
        },
        t0,
    );
    assert!(!r.ok && r.error.unwrap().contains("no service named `zz`; known: a"));
}

#[test]
fn a_stopped_service_stays_stopped_until_restarted() {
    let (mut s, fake) = sup("name: t\nservices:\n  a:\n    command: [x]\n");
    let t0 = Instant::now();
    s.step(t0);
    s.step(t0 + Duration::from_secs(1));
    assert_eq!(state(&s, "a"), "ready");
    let stop = |name: &str| Request::Stop {
        service: name.into(),
    };
    assert!(s.control(stop("a"), t0 + Duration::from_secs(1)).ok);
    assert_eq!(fake.borrow().signalled, ["a"]);
    for n in 2..40 {
        s.step(t0 + Duration::from_secs(n));
    }
    assert_eq!(state(&s, "a"), "stopped");
    assert_eq!(
        fake.borrow().started.len(),
        1,
        "not restarted by its policy"
    );
    assert!(
        s.control(
            Request::Restart {
                service: "a".into()
            },
            t0 + Duration::from_secs(40)
        )
        .ok
    );
    s.step(t0 + Duration::from_secs(41));
    assert_eq!(fake.borrow().started.len(), 2);
    let r = s.control(stop("zz"), t0);
    assert!(!r.ok && r.error.unwrap().contains("no service named `zz`"));
}

/// A supervisor whose reloads return the plan of `yaml`, as edited by the test.
fn sup_reloading(yaml: &str) -> (Supervisor, Rc<RefCell<Fake>>, Rc<RefCell<String>>) {
    let (mut s, fake) = sup(yaml);
    let text = Rc::new(RefCell::new(yaml.to_string()));
    let t = text.clone();
    s.reloader = Box::new(move |_: &[String]| Ok(plan_of(&t.borrow())));
    (s, fake, text)
}

#[test]
fn a_restart_waiting_on_a_given_up_dependency_is_blocked_and_does_not_spin() {
    let (mut s, fake) = sup(
        "name: t\nservices:\n  el:\n    command: [x]\n  cl:\n    command: [x]\n    drives: [el]\n",
    );
    let t0 = Instant::now();
    s.step(t0);
    s.step(t0 + Duration::from_millis(1100));
    assert_eq!(fake.borrow().started, ["el", "cl"]);
    // cl crashes (backoff), el exits with a "prevent" code (given up).
    fake.borrow_mut().alive.clear();
    fake.borrow_mut()
        .exits
        .extend([(2, Exit::Code(1)), (1, Exit::Code(78))]);
    let t1 = t0 + Duration::from_secs(5);
    s.step(t1);
    assert_eq!((state(&s, "el"), state(&s, "cl")), ("given-up", "backoff"));
    s.step(t1 + Duration::from_secs(3));
    assert_eq!(
        state(&s, "cl"),
        "waiting",
        "a due restart with a down dependency waits"
    );
    assert_eq!(
        s.next_wake(t1 + Duration::from_secs(3)),
        IDLE_TICK,
        "and the loop sleeps"
    );
    assert_eq!(s.display_state(&s.services[1]).0, "blocked");
    assert!(s.report(false).settled());
    assert_eq!(fake.borrow().started.len(), 2);
    // Once el is restarted by hand and ready, cl follows, counted as a restart.
    s.control(
        Request::Restart {
            service: "el".into(),
        },
        t1,
    );
    s.step(t1 + Duration::from_secs(4));
    s.step(t1 + Duration::from_secs(6));
    assert_eq!(fake.borrow().started, ["el", "cl", "el", "cl"]);
    assert_eq!(s.services[1].restarts, 1);
}

#[test]
fn reload_restarts_only_changed_services_and_supervisor_settings_restart_nothing() {
    let base = "name: t\nservices:\n  a:\n    command: [x, '1']\n  b:\n    command: [x, '2']\n";
    let (mut s, fake, text) = sup_reloading(base);
    let t0 = Instant::now();
    s.step(t0);
    s.step(t0 + Duration::from_millis(1100));
    *text.borrow_mut() =
        format!("{base}supervisor:\n  backoff: {{jitter: 0.1}}\n  stop_grace: {{command: 7s}}\n");
    s.reload(t0 + Duration::from_secs(2));
    assert!(
        fake.borrow().signalled.is_empty(),
        "no restart for supervisor-wide settings"
    );
    assert_eq!(
        s.services[0].plan.stop_grace,
        chainctl_core::profile::Dur::secs(7),
        "new settings apply in place"
    );
    *text.borrow_mut() = base.replace("'2'", "'3'");
    s.reload(t0 + Duration::from_secs(3));
    assert_eq!(fake.borrow().signalled, ["b"]);
    s.step(t0 + Duration::from_secs(4));
    assert_eq!(fake.borrow().started, ["a", "b", "b"]);
    assert_eq!(s.services[1].plan.argv, ["x", "3"]);
}

#[test]
fn edits_during_a_slow_stop_keep_its_deadline_and_a_readded_service_comes_back() {
    let yaml = "name: t\nservices:\n  a:\n    command: [x]\n  slow:\n    command: [x]\n    stop: {grace: 10s}\n";
    let (mut s, fake, text) = sup_reloading(yaml);
    fake.borrow_mut().stubborn.push("slow".into());
    let t0 = Instant::now();
    s.step(t0);
    s.step(t0 + Duration::from_millis(1100));
    // Remove `slow`: it is signalled and has 10 s.
    *text.borrow_mut() = "name: t\nservices:\n  a:\n    command: [x]\n".into();
    s.reload(t0 + Duration::from_secs(2));
    assert_eq!(fake.borrow().signalled, ["slow"]);
    // Re-add it while it is still stopping: no second signal, the deadline stays.
    *text.borrow_mut() = yaml.into();
    s.reload(t0 + Duration::from_secs(5));
    assert_eq!(fake.borrow().signalled, ["slow"]);
    s.step(t0 + Duration::from_millis(11_900));
    assert!(fake.borrow().killed.is_empty());
    s.step(t0 + Duration::from_millis(12_100));
    assert_eq!(fake.borrow().killed, ["slow"]);
    // It is restarted rather than forgotten.
    s.step(t0 + Duration::from_millis(12_200));
    assert_eq!(fake.borrow().started, ["a", "slow", "slow"]);
    assert!(s
        .services
        .iter()
        .any(|x| x.plan.name == "slow" && x.state_name() == "starting"));
}
