//! The experiment's loop: observe the network every 100 ms (every execution client's
//! head, every validator's height, every service's restarts from the supervisor), inject
//! the next fault when it is due, mark each fault recovered when all its targets are
//! back and at the head, and after the last one wait until block production is back at
//! the block time. Then the load's figures and the fork check.

use crate::{back_to_rate, choose, longest_stall, quantile, FaultKind, Rng, Topology};
use anyhow::{anyhow, bail, Context as _, Result};
use chainctl_core::chaos::{ChaosRecord, FaultRecord, LoadRecord};
use chainctl_core::control::{self, Request};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How faults reach services.
#[derive(Debug, Clone)]
pub enum Injector {
    /// Signals to the service's process (the process backend).
    Process,
    /// `docker kill` / `docker pause` of the service's container (the docker backend).
    Docker {
        /// The profile's name (container names are `chainctl-PROFILE-SERVICE`).
        profile: String,
    },
}

impl Injector {
    /// Whether this backend can inject `kind`, and why not.
    pub fn check(&self, kind: FaultKind) -> Result<()> {
        match (self, kind) {
            (Injector::Process, FaultKind::Partition) => bail!(
                "--faults partition: the process runtime cannot cut one validator off — its \
                 services share this host's loopback, and a running process cannot be moved \
                 into another network namespace. Run the experiment on a `runtime: docker` \
                 profile (a container is disconnected from the profile's network), or use \
                 `pause` (a validator that stops answering) here"
            ),
            _ => Ok(()),
        }
    }
}

/// A validator's group (it and its clients) moved from the profile's network to a network
/// of their own: they reach each other, nothing else reaches them.
#[derive(Debug, Clone)]
struct Island {
    network: String,
    island: String,
    /// (service, container, fixed address on the profile's network if it had one).
    members: Vec<(String, String, Option<String>)>,
}

fn docker(args: &[&str]) -> Result<String> {
    let o = std::process::Command::new("docker")
        .args(args)
        .output()
        .context("cannot run docker")?;
    if !o.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Cuts `group` (a validator first, then its clients) off from the profile's network: an
/// internal network of their own is made, each joins it under its service name, then
/// leaves the profile's network. Undone on failure.
fn cut(injector: &Injector, group: &[String]) -> Result<Island> {
    let Injector::Docker { profile } = injector else {
        bail!("partition: only the docker runtime can cut a service off");
    };
    let network = chainctl_runtime::docker::network_name(profile);
    let island = format!("{network}-cut-{}", group[0]);
    // Left by an experiment that was killed: made again.
    let _ = docker(&["network", "rm", &island]);
    let label = format!("{}={profile}", chainctl_runtime::docker::LABEL_PROFILE);
    docker(&[
        "network",
        "create",
        "--internal",
        "--label",
        &label,
        &island,
    ])?;
    let mut done = Island {
        network: network.clone(),
        island: island.clone(),
        members: Vec::new(),
    };
    let fmt = format!(
        "{{{{with index .NetworkSettings.Networks \"{network}\"}}}}{{{{with .IPAMConfig}}}}{{{{.IPv4Address}}}}{{{{end}}}}{{{{end}}}}"
    );
    let step = |done: &mut Island| -> Result<()> {
        for svc in group {
            let container = chainctl_runtime::docker::container_name(profile, svc);
            // Its address, kept so that it comes back where its peers expect it.
            let ip = docker(&["inspect", "--format", &fmt, &container])?;
            docker(&["network", "connect", "--alias", svc, &island, &container])?;
            done.members.push((
                svc.clone(),
                container,
                (!ip.is_empty() && ip != "<no value>").then_some(ip),
            ));
        }
        for (_, container, _) in &done.members {
            docker(&["network", "disconnect", &network, container])?;
        }
        Ok(())
    };
    match step(&mut done) {
        Ok(()) => Ok(done),
        Err(e) => {
            let _ = heal(&done);
            Err(e)
        }
    }
}

/// Connects a cut-off group again, under their service names (and fixed addresses), and
/// removes their island.
fn heal(c: &Island) -> Result<()> {
    let mut first_error = None;
    for (svc, container, ip) in &c.members {
        let mut args = vec!["network", "connect", "--alias", svc.as_str()];
        if let Some(ip) = ip {
            args.extend(["--ip", ip.as_str()]);
        }
        args.extend([c.network.as_str(), container.as_str()]);
        match docker(&args) {
            // Never left it (a failed cut), or started again meanwhile.
            Err(e) if format!("{e}").contains("already exists") => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
            Ok(_) => {}
        }
        let _ = docker(&["network", "disconnect", "--force", &c.island, container]);
    }
    if let Err(e) = docker(&["network", "rm", &c.island]) {
        first_error.get_or_insert(e);
    }
    first_error.map_or(Ok(()), Err)
}

/// One experiment.
pub struct Config {
    pub profile: String,
    pub topology: Topology,
    pub kinds: Vec<FaultKind>,
    /// How long faults are injected for.
    pub duration: Duration,
    /// The interval between faults: uniform in this range.
    pub every: (Duration, Duration),
    /// How long a `pause` lasts.
    pub pause_for: Duration,
    /// How long a `partition` lasts.
    pub partition_for: Duration,
    /// Most validators down at once (restart-all aside).
    pub max_down: usize,
    /// Stop after this many faults (before `duration` when reached).
    pub count: Option<usize>,
    pub seed: u64,
    /// The chain's block time (for the rate it must get back to).
    pub block_time: Duration,
    /// Load through the gateway during the experiment (its duration is set to ours).
    pub load: Option<chainctl_load::Config>,
    /// The supervisor's control socket.
    pub control_socket: PathBuf,
    pub injector: Injector,
    /// Starts the supervisor again after the `supervisor` fault (`chainctl up --detach`).
    pub restart_supervisor: Arc<dyn Fn() -> Result<()> + Send + Sync>,
    /// How long after the last fault everything may take to be back.
    pub settle_limit: Duration,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// What the supervisor says about one service.
#[derive(Debug, Clone)]
struct Svc {
    pid: Option<i32>,
    restarts: u32,
    state: String,
}

/// One look at the network.
#[derive(Debug, Default)]
struct Snapshot {
    /// Execution clients that answered: their head.
    heads: BTreeMap<String, u64>,
    /// Validators that answered: the height they work on.
    heights: BTreeMap<String, u64>,
    /// Validators that answered: when they last decided a height (ms since the epoch).
    decided_ms: BTreeMap<String, u64>,
    /// Services, when the supervisor answered.
    services: Option<BTreeMap<String, Svc>>,
    supervisor_pid: Option<i32>,
}

impl Snapshot {
    /// The service answers and is at the head of the others of its kind.
    fn at_head(&self, svc: &str) -> bool {
        let of = |m: &BTreeMap<String, u64>| {
            m.get(svc).map(|h| {
                let best = m
                    .iter()
                    .filter(|(k, _)| k.as_str() != svc)
                    .map(|(_, v)| *v)
                    .max()
                    .unwrap_or(0);
                *h >= best
            })
        };
        of(&self.heads)
            .or_else(|| of(&self.heights))
            .unwrap_or(false)
    }

    fn max_head(&self) -> u64 {
        self.heads.values().copied().max().unwrap_or(0)
    }
}

/// A fault not yet recovered.
struct Open {
    record: usize,
    kind: FaultKind,
    targets: Vec<String>,
    /// Recovery is measured from here (the resume, for a pause).
    since: Instant,
    /// The same moment, ms since the epoch: a validator is back once it decided a height
    /// after it (it votes again, or synced to the head), not when it merely answers.
    since_ms: u64,
    /// Each target's restart count before the fault: a killed one must have been started
    /// again.
    restarts_before: BTreeMap<String, u32>,
    /// A pause or a partition: when to end it (resume, connect again).
    resume_at: Option<Instant>,
    /// A partition: how to connect its targets again.
    island: Option<Island>,
    /// The supervisor fault's restart, running.
    restarting: Option<tokio::task::JoinHandle<Result<()>>>,
    restarted: bool,
}

/// A small JSON-RPC/HTTP client with a short timeout: a paused service must not hold up
/// the look at the others.
#[derive(Clone)]
struct Http(reqwest::Client);

impl Http {
    fn new(timeout: Duration) -> Result<Http> {
        Ok(Http(reqwest::Client::builder().timeout(timeout).build()?))
    }

    async fn rpc(&self, url: &str, body: &Value) -> Option<Value> {
        let r = self.0.post(url).json(body).send().await.ok()?;
        r.json().await.ok()
    }

    async fn head(&self, url: &str) -> Option<u64> {
        let v = self
            .rpc(
                url,
                &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}),
            )
            .await?;
        chainctl_common::units::quantity(&v["result"])
    }

    /// A validator's height and when it last decided one (ms since the epoch).
    async fn height(&self, status: std::net::SocketAddr) -> Option<(u64, u64)> {
        let r = self
            .0
            .get(format!("http://{status}/status"))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        Some((
            v["height"].as_u64()?,
            v["last_decided_at_ms"].as_u64().unwrap_or(0),
        ))
    }

    /// Block hashes `from..=to` (`None` where the client has no such block).
    async fn hashes(&self, url: &str, from: u64, to: u64) -> Option<Vec<Option<String>>> {
        let mut out = Vec::new();
        let mut n = from;
        while n <= to {
            let upto = to.min(n + 99);
            let body: Vec<Value> = (n..=upto)
                .map(|k| json!({"jsonrpc": "2.0", "id": k, "method": "eth_getBlockByNumber", "params": [format!("0x{k:x}"), false]}))
                .collect();
            let v = self.rpc(url, &Value::Array(body)).await?;
            let mut by_id: BTreeMap<u64, Option<String>> = BTreeMap::new();
            for it in v.as_array()? {
                if let Some(id) = it["id"].as_u64() {
                    by_id.insert(id, it["result"]["hash"].as_str().map(str::to_owned));
                }
            }
            out.extend((n..=upto).map(|k| by_id.remove(&k).flatten()));
            n = upto + 1;
        }
        Some(out)
    }
}

async fn look(http: &Http, topo: &Topology, socket: &std::path::Path) -> Snapshot {
    use futures::future::join_all;
    let heads = join_all(
        topo.els()
            .map(|e| async move { (e.name.clone(), http.head(&e.rpc).await) }),
    );
    let heights = join_all(
        topo.validators
            .iter()
            .map(|v| async move { (v.name.clone(), http.height(v.status).await) }),
    );
    let socket = socket.to_path_buf();
    let status = tokio::task::spawn_blocking(move || {
        control::call(&socket, &Request::Status, Duration::from_secs(1))
            .ok()
            .and_then(|r| r.status)
    });
    let (heads, heights, status) = futures::join!(heads, heights, status);
    let status = status.ok().flatten();
    Snapshot {
        heads: heads
            .into_iter()
            .filter_map(|(k, h)| Some((k, h?)))
            .collect(),
        decided_ms: heights
            .iter()
            .filter_map(|(k, h)| Some((k.clone(), h.as_ref()?.1)))
            .collect(),
        heights: heights
            .into_iter()
            .filter_map(|(k, h)| Some((k, h?.0)))
            .collect(),
        supervisor_pid: status.as_ref().and_then(|s| s.supervisor_pid),
        services: status.map(|s| {
            s.services
                .into_iter()
                .map(|x| {
                    (
                        x.name,
                        Svc {
                            pid: x.pid,
                            restarts: x.restarts,
                            state: x.state,
                        },
                    )
                })
                .collect()
        }),
    }
}

/// Sends `sig` to a service (its process, or its container).
fn signal(
    injector: &Injector,
    svc: &str,
    pid: Option<i32>,
    sig: nix::sys::signal::Signal,
) -> Result<()> {
    use nix::sys::signal::Signal;
    match injector {
        Injector::Process => {
            let pid = pid.ok_or_else(|| anyhow!("{svc} has no process running"))?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
                .with_context(|| format!("{sig} to {svc} (pid {pid})"))
        }
        Injector::Docker { profile } => {
            let name = chainctl_runtime::docker::container_name(profile, svc);
            let args: Vec<&str> = match sig {
                Signal::SIGSTOP => vec!["pause", &name],
                Signal::SIGCONT => vec!["unpause", &name],
                _ => vec!["kill", "--signal", sig.as_str(), &name],
            };
            docker(&args).map(drop)
        }
    }
}

/// Ends a pause (SIGCONT, `docker unpause`) or a partition (connected again); what could
/// not be undone.
fn resume(injector: &Injector, snap: &Snapshot, o: &Open) -> Vec<anyhow::Error> {
    if o.kind == FaultKind::Partition {
        return o.island.iter().filter_map(|c| heal(c).err()).collect();
    }
    o.targets
        .iter()
        .filter_map(|t| {
            let pid = snap
                .services
                .as_ref()
                .and_then(|s| s.get(t))
                .and_then(|s| s.pid);
            signal(injector, t, pid, nix::sys::signal::Signal::SIGCONT).err()
        })
        .collect()
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the experiment and returns its record (also when it failed: the verdict says so).
pub fn run(cfg: Config) -> Result<ChaosRecord> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: Config) -> Result<ChaosRecord> {
    use nix::sys::signal::Signal;
    if cfg.kinds.is_empty() {
        bail!("--faults: name at least one fault kind");
    }
    for k in &cfg.kinds {
        cfg.injector.check(*k)?;
    }
    if cfg.topology.validators.is_empty() {
        bail!("the network has no validators: chaos needs a network `validators:` generated");
    }
    let http = Http::new(Duration::from_millis(500))?;
    let say = |line: String| {
        if cfg.progress {
            eprintln!("{line}");
        }
    };
    let first = look(&http, &cfg.topology, &cfg.control_socket).await;
    if first.services.is_none() {
        bail!(
            "no supervisor answers on {}: start the network with `chainctl up --detach` first",
            cfg.control_socket.display()
        );
    }
    let start_head = first.max_head();
    let mut rng = Rng::new(cfg.seed);
    let t0 = Instant::now();
    let secs = |t: Instant| t.duration_since(t0).as_secs_f64();

    let load = cfg.load.clone().map(|mut l| {
        l.duration = cfg.duration;
        l.progress = false;
        std::thread::spawn(move || chainctl_load::run(l))
    });

    let mut records: Vec<FaultRecord> = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut advances: Vec<f64> = Vec::new();
    let mut head = start_head;
    let mut next_at = t0 + rng.between(cfg.every.0, cfg.every.1);
    let mut last_fault: Option<Instant> = None;
    let mut reasons: Vec<String> = Vec::new();
    let mut snap = first;
    let gap = cfg.block_time.as_secs_f64() * 1.5;
    let end_of_faults = t0 + cfg.duration;
    let mut stop_faults = false;
    // When faults stopped: everything must be back within the settle limit after it.
    let mut stopped_at: Option<Instant> = None;
    // Ctrl-C ends the experiment at once; paused processes are resumed first.
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    let mut load = load;
    loop {
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            reasons.push("interrupted (Ctrl-C) before the experiment ended".into());
            say(format!(
                "{:>6.1} s  interrupted: resuming what is paused, then the result so far",
                secs(Instant::now())
            ));
            // The load's thread is left to end by itself: its figures are not waited for.
            load = None;
            break;
        }
        let tick = Instant::now();
        // Resume due pauses first: a paused service must not wait on this look.
        for o in open.iter_mut() {
            if let Some(at) = o.resume_at.filter(|at| tick >= *at) {
                for e in resume(&cfg.injector, &snap, o) {
                    say(format!("{:>6.1} s  cannot resume: {e:#}", secs(tick)));
                }
                o.since = at;
                o.since_ms = now_ms();
                o.resume_at = None;
                // The network is disturbed again when it ends (a validator rejoins): the
                // block rate is judged from here.
                last_fault = Some(last_fault.map_or(at, |l| l.max(at)));
                say(format!(
                    "{:>6.1} s  {} {}",
                    secs(tick),
                    if o.kind == FaultKind::Partition {
                        "connected again:"
                    } else {
                        "resumed"
                    },
                    o.targets.join(", ")
                ));
            }
        }
        snap = look(&http, &cfg.topology, &cfg.control_socket).await;
        let now = Instant::now();
        if snap.max_head() > head {
            head = snap.max_head();
            advances.push(secs(now));
        }
        // Recoveries.
        let mut k = 0;
        while k < open.len() {
            let o = &mut open[k];
            if let Some(h) = o.restarting.as_mut().filter(|h| h.is_finished()) {
                match h.await {
                    Ok(Ok(())) => o.restarted = true,
                    Ok(Err(e)) => {
                        reasons.push(format!(
                            "chainctl could not be started again after it was killed: {e:#}"
                        ));
                        stop_faults = true;
                    }
                    Err(e) => reasons.push(format!("restarting chainctl: {e}")),
                }
                o.restarting = None;
            }
            let restarted = |t: &String| match o.restarts_before.get(t) {
                Some(before) => snap
                    .services
                    .as_ref()
                    .and_then(|s| s.get(t))
                    .is_some_and(|s| s.restarts > *before && s.pid.is_some()),
                None => true,
            };
            let answering = |t: &String| snap.heads.contains_key(t) || snap.heights.contains_key(t);
            // The phases of a kill's recovery, each noted the first time it is seen.
            if !o.restarts_before.is_empty() {
                let rec = &mut records[o.record];
                let took = Some(now.duration_since(o.since).as_secs_f64());
                if rec.restarted_s.is_none() && o.targets.iter().all(restarted) {
                    rec.restarted_s = took;
                }
                if rec.restarted_s.is_some()
                    && rec.answering_s.is_none()
                    && o.targets.iter().all(answering)
                {
                    rec.answering_s = took;
                }
            }
            let back = match o.kind {
                FaultKind::Supervisor => o.restarted && snap.services.is_some(),
                _ if o.resume_at.is_some() => false,
                _ => o.targets.iter().all(|t| {
                    let decided = snap.decided_ms.get(t).is_none_or(|d| *d >= o.since_ms);
                    restarted(t) && decided && snap.at_head(t)
                }),
            };
            if back {
                let took = now.duration_since(o.since).as_secs_f64();
                let rec = &mut records[o.record];
                rec.recovery_s = Some(took);
                say(format!(
                    "{:>6.1} s  {} back{} after {took:.2} s{}",
                    secs(now),
                    if o.targets.is_empty() {
                        "chainctl".to_string()
                    } else {
                        o.targets.join(", ")
                    },
                    if o.kind == FaultKind::Supervisor {
                        " (its services adopted)"
                    } else {
                        " at the head"
                    },
                    phases(rec),
                ));
                open.swap_remove(k);
            } else {
                k += 1;
            }
        }
        // A service given up on will not come back by itself: the experiment ends (the
        // record says which).
        if !stop_faults
            && snap
                .services
                .as_ref()
                .is_some_and(|s| s.values().any(|v| v.state == "given-up"))
        {
            say(format!(
                "{:>6.1} s  chainctl gave up on a service: no more faults",
                secs(now)
            ));
            stop_faults = true;
        }
        // The next fault.
        let budget_left = cfg.count.is_none_or(|c| records.len() < c);
        if !stop_faults && now < end_of_faults && budget_left && now >= next_at {
            let down: BTreeSet<String> = open.iter().flat_map(|o| o.targets.clone()).collect();
            // Nothing else while chainctl itself is down.
            let supervisor_down = open.iter().any(|o| o.kind == FaultKind::Supervisor);
            let choice = if supervisor_down || snap.services.is_none() {
                None
            } else {
                choose(&mut rng, &cfg.topology, &cfg.kinds, &down, cfg.max_down)
            };
            if let Some(c) = choice {
                let services = snap.services.clone().unwrap_or_default();
                let mut o = Open {
                    record: records.len(),
                    kind: c.kind,
                    targets: c.targets.clone(),
                    since: now,
                    since_ms: now_ms(),
                    restarts_before: BTreeMap::new(),
                    resume_at: None,
                    island: None,
                    restarting: None,
                    restarted: false,
                };
                let mut failed = None;
                match c.kind {
                    FaultKind::Supervisor => match snap.supervisor_pid {
                        Some(pid) => {
                            match nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                Signal::SIGKILL,
                            ) {
                                Ok(()) => {
                                    let again = cfg.restart_supervisor.clone();
                                    o.restarting = Some(tokio::task::spawn_blocking(move || {
                                        let t = Instant::now();
                                        while !ended(pid) {
                                            if t.elapsed() > Duration::from_secs(30) {
                                                bail!("chainctl (pid {pid}) did not end within 30 s of SIGKILL");
                                            }
                                            std::thread::sleep(Duration::from_millis(20));
                                        }
                                        again()
                                    }));
                                }
                                Err(e) => {
                                    failed = Some(format!("SIGKILL to chainctl (pid {pid}): {e}"))
                                }
                            }
                        }
                        None => failed = Some("the supervisor did not say its pid".into()),
                    },
                    FaultKind::Partition => {
                        o.resume_at = Some(now + cfg.partition_for);
                        match cut(&cfg.injector, &c.targets) {
                            Ok(k) => o.island = Some(k),
                            Err(e) => failed = Some(format!("{e:#}")),
                        }
                    }
                    kind => {
                        let sig = if kind == FaultKind::Pause {
                            o.resume_at = Some(now + cfg.pause_for);
                            Signal::SIGSTOP
                        } else {
                            Signal::SIGKILL
                        };
                        for t in &c.targets {
                            let s = services.get(t);
                            if sig == Signal::SIGKILL {
                                o.restarts_before
                                    .insert(t.clone(), s.map_or(0, |s| s.restarts));
                            }
                            if let Err(e) = signal(&cfg.injector, t, s.and_then(|s| s.pid), sig) {
                                failed = Some(format!("{e:#}"));
                            }
                        }
                    }
                }
                match failed {
                    // A service that is not running right now (restarting by itself):
                    // try another one at the next look.
                    Some(e) if c.kind != FaultKind::RestartAll => {
                        say(format!(
                            "{:>6.1} s  {} skipped: {e}",
                            secs(now),
                            c.kind.name()
                        ));
                    }
                    _ => {
                        say(format!(
                            "{:>6.1} s  {} {}",
                            secs(now),
                            c.kind.name(),
                            if c.targets.is_empty() {
                                "chainctl".to_string()
                            } else {
                                c.targets.join(", ")
                            }
                        ));
                        records.push(FaultRecord {
                            at_s: secs(now),
                            kind: c.kind.name().to_string(),
                            targets: if c.targets.is_empty() {
                                vec!["chainctl".into()]
                            } else {
                                c.targets.clone()
                            },
                            recovery_s: None,
                            restarted_s: None,
                            answering_s: None,
                        });
                        open.push(o);
                        last_fault = Some(now);
                        next_at = now + rng.between(cfg.every.0, cfg.every.1);
                    }
                }
            }
        }
        // Done: no more faults to inject, all back, and blocks at the block time again
        // (or out of time for that).
        let injecting = !stop_faults && now < end_of_faults && budget_left;
        if !injecting {
            let since = *stopped_at.get_or_insert(now);
            let settled = open.is_empty()
                && last_fault.is_none_or(|l| back_to_rate(&advances, secs(l), gap).is_some());
            if settled || now >= since + cfg.settle_limit {
                break;
            }
        }
        let next = tick + Duration::from_millis(100);
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
    }
    let t_end = Instant::now();
    // Pauses never resumed (out of time) are resumed now: never leave a process stopped.
    for o in open.iter().filter(|o| o.resume_at.is_some()) {
        for e in resume(&cfg.injector, &snap, o) {
            say(format!("cannot resume: {e:#}"));
        }
    }
    for o in &open {
        reasons.push(format!(
            "{} of {} at {:.1} s: not back at the head within {} of the last fault",
            o.kind.name(),
            if o.targets.is_empty() {
                "chainctl".to_string()
            } else {
                o.targets.join(", ")
            },
            records[o.record].at_s,
            humantime::format_duration(cfg.settle_limit)
        ));
    }

    // The load's figures.
    let load = match load {
        None => None,
        Some(h) => {
            say("waiting for the load's last transactions".into());
            let s = h
                .join()
                .map_err(|_| anyhow!("the load generator panicked"))?
                .context("the load generator")?;
            Some(LoadRecord {
                tps: s.tps_offered,
                sent: s.sent,
                finalized: s.included,
                lost: s.pending,
                refused: s.errors.values().sum(),
                retried: s.retried.values().sum(),
                refused_by_kind: s.errors.clone(),
                retried_by_kind: s.retried.clone(),
                retired_senders: s.retired.len() as u64,
                latency_p50_s: s.latency_s.p50,
                latency_p99_s: s.latency_s.p99,
                latency_max_s: s.latency_s.max,
            })
        }
    };
    if let Some(l) = &load {
        if l.lost > 0 {
            reasons.push(format!(
                "{} of {} accepted transactions are in no finalized block on any execution client",
                l.lost, l.sent
            ));
        }
        if l.sent == 0 {
            reasons.push("the load sent nothing the network accepted".into());
        }
    }

    // Forks: every execution client's block at every height, compared.
    say("comparing every execution client's blocks".into());
    let fin = look(&http, &cfg.topology, &cfg.control_socket).await;
    let target = fin.max_head();
    let wait_until = Instant::now() + Duration::from_secs(30);
    let mut lagging: Vec<String>;
    loop {
        let s = look(&http, &cfg.topology, &cfg.control_socket).await;
        lagging = cfg
            .topology
            .els()
            .filter(|e| s.heads.get(&e.name).is_none_or(|h| *h < target))
            .map(|e| e.name.clone())
            .collect();
        if lagging.is_empty() || Instant::now() >= wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !lagging.is_empty() {
        reasons.push(format!(
            "{} did not reach block {target} within 30 s of the end",
            lagging.join(", ")
        ));
    }
    let from = start_head.saturating_sub(100).max(1);
    let mut canon: Vec<Option<String>> = vec![None; (target + 1).saturating_sub(from) as usize];
    let mut forks: BTreeSet<u64> = BTreeSet::new();
    let http_slow = Http::new(Duration::from_secs(20))?;
    for e in cfg.topology.els().filter(|e| !lagging.contains(&e.name)) {
        let Some(hs) = http_slow.hashes(&e.rpc, from, target).await else {
            reasons.push(format!(
                "{}: its blocks {from}..={target} could not be read",
                e.name
            ));
            continue;
        };
        for (i, h) in hs.into_iter().enumerate() {
            match (&canon[i], h) {
                (_, None) => {}
                (None, Some(h)) => canon[i] = Some(h),
                (Some(c), Some(h)) if *c != h => {
                    forks.insert(from + i as u64);
                }
                _ => {}
            }
        }
    }
    if !forks.is_empty() {
        reasons.push(format!(
            "FORK: execution clients hold different blocks at {} heights (first {})",
            forks.len(),
            forks.iter().next().copied().unwrap_or(0)
        ));
    }

    let given_up: Vec<String> = fin
        .services
        .as_ref()
        .map(|s| {
            s.iter()
                .filter(|(_, v)| v.state == "given-up")
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    if !given_up.is_empty() {
        reasons.push(format!("chainctl gave up on {}", given_up.join(", ")));
    }
    if records.is_empty() {
        reasons.push(
            "no fault was injected (the experiment was too short, or no target fitted --max-down)"
                .into(),
        );
    }
    let back = last_fault.and_then(|l| back_to_rate(&advances, secs(l), gap));
    // Blocks at the block time within 5 s of the last fault; after every service was
    // killed at once, within 5 s of all of them being back.
    let allowed = 5.0
        + records
            .last()
            .filter(|r| r.kind == FaultKind::RestartAll.name())
            .and_then(|r| r.recovery_s)
            .unwrap_or(0.0);
    match back {
        None if last_fault.is_some() => reasons.push(format!(
            "blocks did not come at the block time again within {} of the last fault",
            humantime::format_duration(cfg.settle_limit)
        )),
        Some(b) if b > allowed => reasons.push(format!(
            "blocks came at the block time again only {b:.1} s after the last fault (more than {allowed:.1} s)"
        )),
        _ => {}
    }
    let mut rec: Vec<f64> = records.iter().filter_map(|r| r.recovery_s).collect();
    rec.sort_by(f64::total_cmp);
    let elapsed = secs(t_end);
    let observed_end = advances.last().copied().unwrap_or(0.0).max(elapsed);
    Ok(ChaosRecord {
        version: env!("CARGO_PKG_VERSION").to_string(),
        profile: cfg.profile.clone(),
        seed: cfg.seed,
        finished_at_ms: now_ms(),
        duration_s: elapsed,
        kinds: cfg.kinds.iter().map(|k| k.name().to_string()).collect(),
        max_down: cfg.max_down,
        recovery_p50_s: quantile(&rec, 0.5),
        recovery_max_s: rec.last().copied(),
        faults: records,
        load,
        heights_checked: (from, target),
        forks: forks.into_iter().collect(),
        blocks: head.saturating_sub(start_head),
        expected_blocks: (elapsed / cfg.block_time.as_secs_f64()).floor() as u64,
        longest_stall_s: longest_stall(&advances, 0.0, observed_end),
        back_to_rate_s: back,
        given_up,
        verdict: if reasons.is_empty() { "PASS" } else { "FAIL" }.into(),
        reasons,
    })
}

/// The record as a table for people.
/// Where a kill's recovery went: ` (restarted after 0.01 s, answering after 0.40 s)`, or
/// nothing when the phases were not seen.
fn phases(f: &FaultRecord) -> String {
    match (f.restarted_s, f.answering_s) {
        (Some(r), Some(a)) => format!(" (restarted after {r:.2} s, answering after {a:.2} s)"),
        (Some(r), None) => format!(" (restarted after {r:.2} s)"),
        _ => String::new(),
    }
}

pub fn table(r: &ChaosRecord) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "chaos on {}: {} for {:.0} s, seed {}, at most {} validator(s) down at once",
        r.profile,
        r.kinds.join(", "),
        r.duration_s,
        r.seed,
        r.max_down
    );
    let _ = writeln!(
        out,
        "\n  AT (s)  FAULT           TARGET                RECOVERY"
    );
    for f in &r.faults {
        let _ = writeln!(
            out,
            "  {:>6.1}  {:<14}  {:<20}  {}",
            f.at_s,
            f.kind,
            f.targets.join(","),
            f.recovery_s
                .map_or_else(|| "NOT BACK".to_string(), |s| format!("{s:.2} s"))
                + &phases(f)
        );
    }
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |s| format!("{s:.2} s"));
    let _ = writeln!(
        out,
        "\n  faults {}  recovery p50 {}  max {}",
        r.faults.len(),
        opt(r.recovery_p50_s),
        opt(r.recovery_max_s)
    );
    if let Some(l) = &r.load {
        let _ = writeln!(
            out,
            "  load {} tx/s: sent {}  finalized {}  lost {}  refused {}  retried {}  latency p50 {:.2} s  p99 {:.2} s  max {:.2} s",
            l.tps, l.sent, l.finalized, l.lost, l.refused, l.retried, l.latency_p50_s, l.latency_p99_s, l.latency_max_s
        );
        for (what, m) in [
            ("refused", &l.refused_by_kind),
            ("retried", &l.retried_by_kind),
        ] {
            for (kind, n) in m {
                let _ = writeln!(out, "    {what} × {n}: {kind}");
            }
        }
        if l.retired_senders > 0 {
            let _ = writeln!(
                out,
                "    senders retired after repeated refusals: {}",
                l.retired_senders
            );
        }
    }
    let _ = writeln!(
        out,
        "  blocks {} (block time asks for {})  longest stall {:.1} s  back to the block time {} after the last fault",
        r.blocks,
        r.expected_blocks,
        r.longest_stall_s,
        opt(r.back_to_rate_s)
    );
    let _ = writeln!(
        out,
        "  forks {} (heights {}..={} on every execution client)  given up {}",
        r.forks.len(),
        r.heights_checked.0,
        r.heights_checked.1,
        if r.given_up.is_empty() {
            "none".to_string()
        } else {
            r.given_up.join(", ")
        }
    );
    let _ = writeln!(out, "\n  verdict: {}", r.verdict);
    for why in &r.reasons {
        let _ = writeln!(out, "    - {why}");
    }
    out
}
