//! Health, failover, the JSON-RPC gateway, metrics and the API: everything the supervisor
//! does about services beyond starting and stopping them.
//!
//! It runs beside the supervisor's reconcile loop, in the same process, on a tokio runtime
//! of its own thread. It probes every execution client and validator each
//! `health.interval`, keeps one view of their health ([`View`]), switches a validator to
//! its best backup when its active client fails, asks the supervisor to restart a client
//! that stays unhealthy, and serves the gateway and the API from that same view. The
//! reconcile loop stays single-threaded; the two talk through the supervisor's event
//! channel (as the control socket does) and this module's shared view.
//!
//! Layer 4: on chainctl-core and chainctl-common. It must never depend on the supervisor
//! (control requests go to the loop through the `Forward` callback it is given), a
//! backend, the built-in engine or the consensus node (a validator's files are read
//! through chainctl-common).

pub mod api;
pub mod backups;
pub mod cache;
pub mod gateway;
pub mod health;
pub mod limit;
pub mod metrics;
pub mod probe;
pub mod tls_serve;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use chainctl_common::time::now_ms;
use chainctl_common::tls;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use chainctl_common::validator::Switch;
use chainctl_core::control::{Forward, Request, Response};
use chainctl_core::layout::Layout;
use chainctl_core::plan::Plan;
use health::{ElView, Level, State, Thresholds, Tracker};
use probe::{ElTarget, ValidatorTarget};
use prometheus::Histogram;

/// Events kept for `status` and the API.
const EVENTS_KEPT: usize = 200;

/// Settings from the profile.
#[derive(Debug, Clone)]
pub struct Settings {
    pub profile: String,
    pub health: chainctl_core::profile::Health,
    pub failover: chainctl_core::profile::Failover,
    pub gateway: chainctl_core::profile::Gateway,
    pub block_time: Duration,
    /// Where the gateway listens (none: no gateway).
    pub gateway_addr: Option<SocketAddr>,
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// The API's bearer token file.
    pub token_path: PathBuf,
    /// The API's certificate and key (none: plain HTTP).
    pub api_tls: Option<chainctl_core::profile::TlsFiles>,
    /// The gateway's certificate and key (none: plain HTTP).
    pub gateway_tls: Option<chainctl_core::profile::TlsFiles>,
    /// Calls per second per address the API takes (api.rate_limit).
    pub api_rate_limit: u32,
    /// Scheduled backups (`backup:`).
    pub backup: Option<backups::Scheduled>,
}

impl Settings {
    /// From a profile and the state dir's port allocation.
    pub fn new(profile: &chainctl_core::profile::Profile, layout: &Layout) -> Result<Self> {
        let ports = chainctl_core::state::read_json::<chainctl_core::state::PortsFile>(
            &layout.ports_file(),
        )?
        .unwrap_or_default();
        let own = ports.services.get(chainctl_core::ports::CHAINCTL);
        let port = |name: &str| own.and_then(|m| m.get(name)).map(|a| a.port);
        let api_port = port("api").context("no API port in ports.json")?;
        let gateway_addr = chainctl_core::ports::chainctl_ports(profile)
            .iter()
            .any(|(n, _)| *n == "gateway")
            .then(|| port("gateway").map(|p| SocketAddr::new(profile.listen.gateway(), p)))
            .flatten();
        Ok(Settings {
            profile: profile.name.clone(),
            health: profile.health.clone(),
            failover: profile.failover.clone(),
            gateway: profile.gateway.clone(),
            block_time: profile.chain.block_time.get(),
            gateway_addr,
            api_addr: SocketAddr::new(profile.listen.api, api_port),
            token_path: layout.api_token(),
            api_tls: profile.api.tls.clone(),
            gateway_tls: profile.gateway.tls.clone(),
            api_rate_limit: profile.api.rate_limit,
            backup: profile.backup.as_ref().map(|b| backups::Scheduled {
                every: b.every.get(),
                keep: b.keep,
                to: b.to.clone(),
                recipients: b.recipients.clone(),
                state_dir: layout.root.clone(),
                profile: profile.name.clone(),
            }),
        })
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            failures: self.health.failures,
            successes: self.health.successes,
        }
    }
}

/// What chainctl probes, derived from the plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    pub els: Vec<ElTarget>,
    pub validators: Vec<ValidatorTarget>,
    /// Every service's data dir (for the disk check).
    pub data_dirs: Vec<(String, PathBuf)>,
}

impl Targets {
    /// Validators and their execution clients from the plan and the validators'
    /// `config.json` (what the validator itself reads: status address, control token,
    /// each client's Engine API URL and secret).
    pub fn from_plan(plan: &Plan) -> Self {
        let mut t = Targets {
            data_dirs: plan
                .services
                .iter()
                .map(|s| (s.name.clone(), s.data_dir.clone()))
                .collect(),
            ..Default::default()
        };
        for s in &plan.services {
            let Ok(cfg) =
                chainctl_common::validator::NodeFile::load(&s.data_dir.join("config.json"))
            else {
                continue;
            };
            if !s.argv.iter().any(|a| a == "consensus") {
                continue;
            }
            for el in &cfg.execution {
                let Some(ep) = plan.service(&el.name) else {
                    continue;
                };
                // Where the client serves what: its adapter's layout. A validator's
                // clients are all generated, so the plan names each (a plan without the
                // name is the built-in engine's, as every one was before it had names).
                let kind = ep
                    .client
                    .unwrap_or(chainctl_core::profile::ExecutionKind::Builtin);
                let serves = chainctl_core::clients::endpoints(kind);
                let Some(http) = ep.ports.get(serves.http) else {
                    continue;
                };
                let ws = ep.ports.get(serves.ws).unwrap_or(http);
                let engine = el
                    .engine_url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .parse::<SocketAddr>()
                    .ok()
                    .or_else(|| {
                        ep.ports
                            .get(serves.engine)
                            .map(|a| SocketAddr::new(ep.ready_host, a.port))
                    });
                let Some(engine) = engine else { continue };
                let el_jwt = ep
                    .argv
                    .iter()
                    .position(|a| a == serves.jwt_flag)
                    .and_then(|i| ep.argv.get(i + 1))
                    .map(PathBuf::from);
                t.els.push(ElTarget {
                    name: el.name.clone(),
                    validator: s.name.clone(),
                    kind,
                    http: SocketAddr::new(ep.ready_host, http.port),
                    ws: SocketAddr::new(ep.ready_host, ws.port),
                    engine,
                    cl_jwt: el.jwt_secret.clone(),
                    el_jwt,
                    data_dir: ep.data_dir.clone(),
                });
            }
            t.validators.push(ValidatorTarget {
                name: s.name.clone(),
                // Reached where chainctl reaches every service (in containers the node
                // binds all addresses and its port is published there).
                status: SocketAddr::new(s.ready_host, cfg.status_addr.port()),
                token: cfg.control_token.clone(),
                els: cfg.execution.iter().map(|e| e.name.clone()).collect(),
                data_dir: s.data_dir.clone(),
            });
        }
        t
    }
}

/// Health of one execution client.
#[derive(Serialize)]
pub struct ElHealth {
    pub validator: String,
    #[serde(flatten)]
    pub tracker: Tracker,
    pub head: Option<u64>,
    pub lag: Option<u64>,
    pub syncing: bool,
    pub peers: Option<u64>,
    pub version: Option<String>,
    pub latency_ms: Option<f64>,
    pub clock_skew_s: Option<i64>,
    /// Why the Engine API refused our token (the pair's secrets differ), if it did.
    pub engine_auth_error: Option<String>,
    pub active: bool,
    #[serde(skip)]
    pub latency: Histogram,
    #[serde(skip)]
    restart_asked_ms: Option<u64>,
    /// The supervisor saw its process exit (when, ms, and how), and no probe begun since
    /// has answered: down now, not after N failed probes.
    #[serde(skip)]
    exited: Option<(u64, String)>,
    /// When the supervisor last saw its process ready (ms): a probe begun earlier that
    /// failed only saw it still starting.
    #[serde(skip)]
    ready_at: Option<u64>,
}

impl ElHealth {
    /// A client not probed yet.
    fn new(name: &str, validator: &str) -> ElHealth {
        ElHealth {
            validator: validator.to_string(),
            tracker: Tracker::default(),
            head: None,
            lag: None,
            syncing: false,
            peers: None,
            version: None,
            latency_ms: None,
            clock_skew_s: None,
            engine_auth_error: None,
            active: false,
            latency: metrics::latency(
                "chainctl_el_probe_duration_seconds",
                "Duration of the JSON-RPC health probe of each execution client.",
                &[("el", name)],
            ),
            restart_asked_ms: None,
            exited: None,
            ready_at: None,
        }
    }
}

/// Health of one validator.
#[derive(Serialize, Default)]
pub struct ValidatorHealth {
    #[serde(flatten)]
    pub tracker: Tracker,
    pub height: u64,
    pub round: i64,
    pub decided: u64,
    /// Other validators it is connected to (Malachite's count).
    pub peers: Option<u64>,
    pub active_el: Option<String>,
    pub last_decided_at_ms: Option<u64>,
    pub consensus_violations: u64,
    /// Its status endpoint answered the last probe (a stalled validator still does).
    pub reachable: bool,
    #[serde(skip)]
    asked_failover_ms: Option<u64>,
}

/// One data dir's file system.
#[derive(Serialize, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub services: Vec<String>,
    pub used_percent: f64,
    pub available_bytes: u64,
    pub level: Level,
}

/// The host.
#[derive(Serialize, Default, Clone)]
pub struct Host {
    pub disks: Vec<Disk>,
    pub memory_available_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub open_file_limit: Option<u64>,
    /// Largest clock difference between this host and an execution client (seconds).
    pub max_clock_skew_s: Option<i64>,
}

/// A change of health.
#[derive(Serialize, Clone)]
pub struct HealthEvent {
    pub at_ms: u64,
    pub service: String,
    pub from: State,
    pub to: State,
    pub reason: Option<String>,
}

/// One switch of a validator's active execution client: the validator's own record, and
/// whose it is.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct SwitchRecord {
    pub validator: String,
    #[serde(flatten)]
    pub switch: Switch,
}

/// A restart chainctl asked for because a client stayed unhealthy.
#[derive(Serialize, Clone)]
pub struct HealthRestart {
    pub at_ms: u64,
    pub service: String,
    pub reason: String,
}

/// Everything the monitor knows, in one place.
#[derive(Serialize, Default)]
pub struct View {
    pub els: BTreeMap<String, ElHealth>,
    pub validators: BTreeMap<String, ValidatorHealth>,
    pub host: Host,
    pub events: VecDeque<HealthEvent>,
    pub switches: Vec<SwitchRecord>,
    pub restarts: Vec<HealthRestart>,
    /// Probe rounds done.
    pub rounds: u64,
    #[serde(skip)]
    pub transitions_total: BTreeMap<(String, State), u64>,
    #[serde(skip)]
    pub failovers_total: BTreeMap<(String, String), u64>,
}

impl View {
    fn event(&mut self, service: &str, tr: &health::Transition, reason: Option<String>) {
        let at_ms = now_ms();
        match tr.to {
            State::Unhealthy => {
                warn!(
                    service,
                    reason = reason.as_deref().unwrap_or(""),
                    "unhealthy"
                )
            }
            _ => info!(service, from = %tr.from, "healthy"),
        }
        *self
            .transitions_total
            .entry((service.to_string(), tr.to))
            .or_default() += 1;
        self.events.push_back(HealthEvent {
            at_ms,
            service: service.into(),
            from: tr.from,
            to: tr.to,
            reason,
        });
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    /// Problems that make the network not ready: every validator healthy, the active
    /// client of each healthy, no data dir on a critical disk, the gateway with an
    /// upstream. Backups that are down are warnings, not blockers.
    pub fn not_ready(&self, gateway: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.rounds == 0 {
            out.push("no health probe has run yet".into());
        }
        for (name, v) in &self.validators {
            if v.tracker.state != State::Healthy {
                out.push(format!(
                    "{name} is {}{}",
                    v.tracker.state,
                    v.tracker
                        .reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ));
            }
            if let Some(a) = &v.active_el {
                if let Some(e) = self.els.get(a) {
                    if e.tracker.state != State::Healthy {
                        out.push(format!(
                            "{a}, the active execution client of {name}, is {}{}",
                            e.tracker.state,
                            e.tracker
                                .reason
                                .as_deref()
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default()
                        ));
                    }
                }
            }
        }
        for d in &self.host.disks {
            if d.level == Level::Critical {
                out.push(format!(
                    "disk of {} is {:.1}% full ({}): critical",
                    d.path.display(),
                    d.used_percent,
                    d.services.join(", ")
                ));
            }
        }
        if gateway && !self.els.values().any(|e| e.tracker.state == State::Healthy) {
            out.push("the gateway has no healthy execution client".into());
        }
        out
    }
}

/// An upstream of the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    /// Parsed once here, not on every forwarded call.
    pub url: hyper::Uri,
}

/// The gateway's choice of upstreams, recomputed after every probe round.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    /// Healthy, synced, within the lag limit: best first (reads go to the first).
    pub ranked: Vec<Upstream>,
    /// Every healthy client (transactions go to all of them).
    pub healthy: Vec<Upstream>,
    /// The clients the validators build blocks with now (each one's active client, as
    /// its status last said): a transaction counts as taken when one of them took it.
    pub active: BTreeSet<String>,
    /// Why there is none, when there is none.
    pub why_none: String,
}

/// State shared by the probe loop, the gateway and the API.
pub struct Shared {
    pub settings: Settings,
    pub view: Mutex<View>,
    pub upstreams: RwLock<Arc<Upstreams>>,
    pub gateway: gateway::Stats,
    /// The API's rate limit and its refused tokens.
    pub api: api::Guard,
    /// Scheduled backups' runs and the newest backup.
    pub backups: Arc<backups::Stats>,
    sup: Forward,
    targets: RwLock<Arc<Targets>>,
}

impl Shared {
    pub fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn targets(&self) -> Arc<Targets> {
        self.targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ask the supervisor's loop (as the control socket does), off the async threads.
    pub async fn ask(self: &Arc<Self>, req: Request) -> Response {
        let sup = self.sup.clone();
        tokio::task::spawn_blocking(move || {
            let (tx, rx) = std::sync::mpsc::channel();
            if !sup(req, tx) {
                return Response::err("the supervisor is stopping");
            }
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| Response::err("the supervisor did not answer"))
        })
        .await
        .unwrap_or_else(|_| Response::err("the supervisor did not answer"))
    }

    /// Switch a validator's active execution client through its control endpoint.
    pub async fn failover(
        &self,
        http: &reqwest::Client,
        validator: &str,
        to: Option<&str>,
        kind: &str,
        reason: &str,
    ) -> Result<String, String> {
        let targets = self.targets();
        let Some(v) = targets.validators.iter().find(|v| v.name == validator) else {
            let names: Vec<&str> = targets.validators.iter().map(|v| v.name.as_str()).collect();
            return Err(format!(
                "no validator named `{validator}`; known: {}",
                names.join(", ")
            ));
        };
        let token = std::fs::read_to_string(&v.token)
            .map_err(|e| format!("control token {}: {e}", v.token.display()))?;
        let r = http
            .post(format!("http://{}/failover", v.status))
            .bearer_auth(token.trim())
            .json(&serde_json::json!({"to": to, "kind": kind, "reason": reason}))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("{validator}'s control endpoint {}: {e}", v.status))?;
        let ok = r.status().is_success();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        if ok {
            Ok(body["active"].as_str().unwrap_or_default().to_string())
        } else {
            Err(body["error"]
                .as_str()
                .unwrap_or("refused without a reason")
                .to_string())
        }
    }
}

/// The supervisor's reconcile durations (observed by its loop, exported here).
pub fn reconcile_histogram() -> &'static Histogram {
    static H: OnceLock<Histogram> = OnceLock::new();
    H.get_or_init(|| {
        metrics::latency(
            "chainctl_reconcile_duration_seconds",
            "Duration of one pass of the supervisor's reconcile loop.",
            &[],
        )
    })
}

/// The running monitor, owned by the supervisor.
pub struct Monitor {
    pub shared: Arc<Shared>,
    targets_tx: tokio::sync::watch::Sender<Arc<Targets>>,
    /// Services whose process exited, and how (from the supervisor, as it happens).
    /// What the supervisor saw of a service: its exit (how) or, `None`, that it is ready.
    exits_tx: tokio::sync::mpsc::UnboundedSender<(String, Option<String>)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    /// Binds the API (and the gateway) now, so a port problem fails `up` with the port
    /// named, then runs everything on a thread of its own.
    pub fn start(settings: Settings, plan: &Plan, sup: Forward) -> Result<Monitor> {
        chainctl_common::secrets::ensure(&settings.token_path).with_context(|| {
            format!(
                "cannot create the API token {}",
                settings.token_path.display()
            )
        })?;
        let api_tls = match &settings.api_tls {
            Some(t) => {
                Some(tls::server_config("api.tls", &t.cert, &t.key).map_err(anyhow::Error::msg)?)
            }
            None => None,
        };
        let gateway_tls = match &settings.gateway_tls {
            Some(t) => Some(
                tls::server_config("gateway.tls", &t.cert, &t.key).map_err(anyhow::Error::msg)?,
            ),
            None => None,
        };
        let api_listener = std::net::TcpListener::bind(settings.api_addr).with_context(|| {
            format!(
                "cannot listen on {} for chainctl's API (api.port): another process holds it; \
                 pick another port or `auto`",
                settings.api_addr
            )
        })?;
        let gw_listener = match settings.gateway_addr {
            Some(a) => Some(std::net::TcpListener::bind(a).with_context(|| {
                format!(
                    "cannot listen on {a} for the JSON-RPC gateway (gateway.port): another process \
                     holds it; pick another port, `auto`, or `gateway: {{enabled: false}}`"
                )
            })?),
            None => None,
        };
        for l in [Some(&api_listener), gw_listener.as_ref()]
            .into_iter()
            .flatten()
        {
            l.set_nonblocking(true)?;
        }
        let targets = Arc::new(Targets::from_plan(plan));
        let shared = Arc::new(Shared {
            gateway: gateway::Stats::default(),
            api: api::Guard::new(settings.api_rate_limit),
            backups: Default::default(),
            settings,
            view: Mutex::new(View::default()),
            upstreams: RwLock::new(Arc::new(Upstreams {
                why_none: "no health probe has run yet".into(),
                ..Default::default()
            })),
            sup,
            targets: RwLock::new(targets.clone()),
        });
        let (targets_tx, targets_rx) = tokio::sync::watch::channel(targets);
        let (exits_tx, exits_rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Half the cores at most: the monitor shares the host with the services it
        // watches, and on a small host one worker serves the gateway faster than two
        // that keep waking each other (measured: `chainctl bench --only gateway`).
        let workers = std::thread::available_parallelism()
            .map(|n| (n.get() / 2).clamp(1, 4))
            .unwrap_or(1);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("monitor")
            .enable_all()
            .build()
            .context("cannot start the monitor's runtime")?;
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || {
                rt.block_on(async move {
                    let api = match tokio::net::TcpListener::from_std(api_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            error!("API listener: {e}");
                            return;
                        }
                    };
                    let scheme = if api_tls.is_some() { "https" } else { "http" };
                    info!(addr = %sh.settings.api_addr, scheme, "API (metrics, health, /api/v1) listening");
                    tokio::spawn(api::serve(sh.clone(), api, api_tls));
                    if let Some(l) = gw_listener {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => {
                                let scheme = if gateway_tls.is_some() { "HTTPS and WSS" } else { "HTTP and WebSocket" };
                                info!(addr = ?sh.settings.gateway_addr, scheme, "JSON-RPC gateway listening");
                                tokio::spawn(gateway::serve(sh.clone(), l, gateway_tls));
                            }
                            Err(e) => error!("gateway listener: {e}"),
                        }
                    }
                    if let Some(b) = sh.settings.backup.clone() {
                        tokio::spawn(backups::run(sh.backups.clone(), b));
                    }
                    tokio::select! {
                        _ = probe_loop(sh, targets_rx, exits_rx) => {}
                        _ = stop_rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(500));
            })
            .context("cannot start the monitor thread")?;
        Ok(Monitor {
            shared,
            targets_tx,
            exits_tx,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Health of each probed service into `services`, and the summary `status` shows.
    pub fn summary(
        &self,
        services: &mut [chainctl_core::status::ServiceStatus],
    ) -> chainctl_core::status::MonitorSummary {
        let view = self.shared.view();
        let time = |ms: u64| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        };
        for s in services.iter_mut() {
            if let Some(e) = view.els.get(&s.name) {
                s.health = Some(e.tracker.state.to_string());
                let mut d = Vec::new();
                if let Some(r) = &e.tracker.reason {
                    if e.tracker.state != State::Healthy {
                        d.push(r.clone());
                    }
                }
                if let Some(h) = e.head {
                    d.push(format!("head {h}"));
                }
                if let Some(l) = e.lag {
                    d.push(format!("lag {l}"));
                }
                if e.syncing {
                    d.push("syncing".into());
                }
                if let Some(ms) = e.latency_ms {
                    d.push(format!("probe {ms:.1} ms"));
                }
                if e.active {
                    d.push("active".into());
                }
                // The table shows details only where something is wrong.
                if e.tracker.state != State::Healthy || e.lag.is_some_and(|l| l > 0) {
                    s.health_detail = Some(d.join(", "));
                }
            } else if let Some(v) = view.validators.get(&s.name) {
                s.health = Some(v.tracker.state.to_string());
                if v.tracker.state != State::Healthy {
                    s.health_detail = v.tracker.reason.clone();
                }
            }
        }
        let mut host = Vec::new();
        for d in &view.host.disks {
            if d.level != Level::Ok {
                host.push(format!(
                    "disk {} ({}) {:.1}% full: {}",
                    d.path.display(),
                    d.services.join(", "),
                    d.used_percent,
                    if d.level == Level::Critical {
                        "CRITICAL"
                    } else {
                        "warning"
                    }
                ));
            }
        }
        if let Some(n) = view.host.open_file_limit.filter(|n| *n < 65_536) {
            host.push(format!(
                "open-file limit {n} is low for execution clients (raise it to 65536 or more: `ulimit -n`, LimitNOFILE=)"
            ));
        }
        if let Some(s) = view.host.max_clock_skew_s.filter(|s| s.abs() >= 5) {
            host.push(format!(
                "clock skew {s}s with an execution client (the Engine API refuses tokens beyond ±60s)"
            ));
        }
        let n = view.events.len();
        chainctl_core::status::MonitorSummary {
            gateway: self.shared.settings.gateway_addr.map(|a| a.to_string()),
            api: self.shared.settings.api_addr.to_string(),
            gateway_tls: self.shared.settings.gateway_tls.is_some(),
            api_tls: self.shared.settings.api_tls.is_some(),
            not_ready: view.not_ready(self.shared.settings.gateway_addr.is_some()),
            events: view
                .events
                .iter()
                .skip(n.saturating_sub(10))
                .map(|e| {
                    format!(
                        "{} {} {}→{}{}",
                        time(e.at_ms),
                        e.service,
                        e.from,
                        e.to,
                        e.reason
                            .as_deref()
                            .filter(|_| e.to == State::Unhealthy)
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    )
                })
                .collect(),
            switches: view
                .switches
                .iter()
                .skip(view.switches.len().saturating_sub(10))
                .map(|s| {
                    format!(
                        "{} {}: {} → {} ({}: {}){}",
                        time(s.switch.at_ms),
                        s.validator,
                        s.switch.from,
                        s.switch.to,
                        s.switch.kind,
                        s.switch.reason,
                        s.switch
                            .gap_ms
                            .map(|g| format!(", gap {:.2}s", g as f64 / 1000.0))
                            .unwrap_or_default()
                    )
                })
                .collect(),
            host,
        }
    }

    /// A service's process exited (`how`: its exit status): the supervisor tells at once,
    /// so that a validator leaves a dead execution client before its probes notice.
    pub fn service_exited(&self, service: &str, how: String) {
        let _ = self.exits_tx.send((service.to_string(), Some(how)));
    }

    /// A service became ready (its ports accept connections): failed probes begun
    /// before that are stale — a client still opening its ports is not unhealthy.
    pub fn service_ready(&self, service: &str) {
        let _ = self.exits_tx.send((service.to_string(), None));
    }

    /// The plan changed (profile reload): probe what it now has.
    pub fn update(&self, plan: &Plan) {
        let t = Arc::new(Targets::from_plan(plan));
        *self
            .shared
            .targets
            .write()
            .unwrap_or_else(|e| e.into_inner()) = t.clone();
        let _ = self.targets_tx.send(t);
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn probe_loop(
    sh: Arc<Shared>,
    mut targets_rx: tokio::sync::watch::Receiver<Arc<Targets>>,
    mut exits: tokio::sync::mpsc::UnboundedReceiver<(String, Option<String>)>,
) {
    let http = match reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            error!("monitor HTTP client: {e}");
            return;
        }
    };
    let interval = sh
        .settings
        .health
        .interval
        .get()
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut host_at: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some((service, note)) = exits.recv() => {
                let targets = targets_rx.borrow().clone();
                match note {
                    Some(how) => on_exit(&sh, &http, &targets, &service, &how).await,
                    None => on_ready(&sh, &targets, &service),
                }
                continue;
            }
        }
        let targets = targets_rx.borrow_and_update().clone();
        round(&sh, &http, &targets, interval).await;
        if host_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            host_at = Some(std::time::Instant::now());
            host(&sh, &targets);
        }
        act(&sh, &http, &targets).await;
    }
}

/// One probe round: every client and validator at once, then the view and the gateway's
/// upstreams are updated from the results.
async fn round(sh: &Arc<Shared>, http: &reqwest::Client, t: &Targets, interval: Duration) {
    let timeout = interval.clamp(Duration::from_millis(500), Duration::from_secs(2));
    let stall = sh.settings.block_time * 3;
    let started = now_ms();
    let el_samples =
        futures::future::join_all(t.els.iter().map(|e| probe::el(http, e, timeout))).await;
    let val_samples = futures::future::join_all(
        t.validators
            .iter()
            .map(|v| probe::validator(http, v, timeout, stall)),
    )
    .await;
    let th = sh.settings.thresholds();
    let now = now_ms();
    let mut view = sh.view();
    view.rounds += 1;
    view.els.retain(|n, _| t.els.iter().any(|e| &e.name == n));
    view.validators
        .retain(|n, _| t.validators.iter().any(|v| &v.name == n));
    let reference = health::reference_head(
        &el_samples
            .iter()
            .filter(|s| s.error.is_none())
            .filter_map(|s| s.head)
            .collect::<Vec<_>>(),
    );
    let actives: Vec<String> = val_samples
        .iter()
        .filter_map(|s| s.active_el.clone())
        .collect();
    for (target, s) in t.els.iter().zip(el_samples) {
        let e = view
            .els
            .entry(target.name.clone())
            .or_insert_with(|| ElHealth::new(&target.name, &target.validator));
        // The validator's own calls refused (it holds another secret than the file now
        // says, or the client does): our probe may pass, the pair still does not work.
        let refused = t
            .validators
            .iter()
            .zip(&val_samples)
            .filter(|(v, _)| v.name == target.validator)
            .flat_map(|(_, vs)| vs.unauthorized.iter())
            .find(|(n, _)| n == &target.name)
            .map(|(_, err)| err.clone());
        let mut s = s;
        if let (None, Some(err)) = (&s.error, refused) {
            s.error = Some(format!(
                "Unauthorized: {} refuses the Engine API token of {} ({err}); {} signs with {} as it read it at its start, {} reads {}: \
                 both ends of the pair must hold the same secret; restart {} if the file changed since",
                target.name,
                target.validator,
                target.validator,
                target.cl_jwt.display(),
                target.name,
                target.el_jwt.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "a file chainctl cannot see".into()),
                target.validator
            ));
        }
        let ok = s.error.is_none();
        // A probe begun after the exit answered: the restarted process is up.
        if ok && e.exited.as_ref().is_some_and(|(at, _)| *at < started) {
            e.exited = None;
        }
        if ok {
            e.head = s.head;
            e.syncing = s.syncing;
            e.peers = s.peers;
            e.version = s.version.clone();
            metrics::observe(&e.latency, s.latency);
            e.latency_ms = Some(health::ewma(
                e.latency_ms,
                s.latency.as_secs_f64() * 1000.0,
                0.3,
            ));
            e.clock_skew_s = s.clock_skew_s;
        }
        // A failed probe keeps the last lag: the client stays ranked until it is
        // unhealthy (N failures in a row), meanwhile a read it fails is retried elsewhere.
        if let (Some(r), Some(h), true) = (reference, e.head, ok) {
            e.lag = Some(r.saturating_sub(h));
        }
        e.engine_auth_error = match &s.engine_auth {
            Some(Err(why)) => Some(why.clone()),
            _ => None,
        };
        e.active = actives.contains(&target.name);
        let result = match s.error {
            None => Ok(()),
            Some(why) => Err(why),
        };
        // A failure of a probe begun before the client was ready is stale (see on_ready).
        let stale = result.is_err() && e.ready_at.is_some_and(|r| started < r);
        if !stale {
            if let Some(tr) = e.tracker.observe(result, th, now) {
                let reason = e.tracker.reason.clone();
                view.event(&target.name, &tr, reason);
            }
        }
    }
    let mut new_switches = Vec::new();
    for (target, s) in t.validators.iter().zip(val_samples) {
        let v = view.validators.entry(target.name.clone()).or_default();
        v.reachable = s.reachable;
        if s.error.is_none() || s.decided > 0 {
            v.height = s.height;
            v.round = s.round;
            v.decided = s.decided;
            v.peers = s.peers;
            v.active_el = s.active_el.clone().or(v.active_el.take());
            v.last_decided_at_ms = s.last_decided_at_ms;
            v.consensus_violations = s.violations;
        }
        for sw in &s.switches {
            new_switches.push(SwitchRecord {
                validator: target.name.clone(),
                switch: sw.clone(),
            });
        }
        let result = match s.error {
            None => Ok(()),
            Some(why) => Err(why),
        };
        if let Some(tr) = v.tracker.observe(result, th, now) {
            let reason = v.tracker.reason.clone();
            view.event(&target.name, &tr, reason);
        }
    }
    for sw in new_switches {
        match view.switches.iter_mut().find(|o| {
            o.validator == sw.validator
                && o.switch.at_ms == sw.switch.at_ms
                && o.switch.to == sw.switch.to
        }) {
            Some(o) => o.switch.gap_ms = sw.switch.gap_ms,
            None => {
                let Switch {
                    from,
                    to,
                    kind,
                    reason,
                    ..
                } = &sw.switch;
                info!(validator = %sw.validator, %from, %to, %kind, %reason, "execution client switched");
                *view
                    .failovers_total
                    .entry((sw.validator.clone(), kind.clone()))
                    .or_default() += 1;
                view.switches.push(sw);
            }
        }
    }
    view.switches.sort_by_key(|s| s.switch.at_ms);
    let excess = view.switches.len().saturating_sub(EVENTS_KEPT);
    view.switches.drain(..excess);
    refresh_upstreams(sh, view, t);
}

/// The gateway's upstreams again from `view` (which is released).
fn refresh_upstreams(sh: &Shared, view: std::sync::MutexGuard<'_, View>, t: &Targets) {
    let current = sh.upstreams().ranked.first().map(|u| u.name.clone());
    let ups = upstreams(
        &view,
        t,
        sh.settings.failover.max_lag_blocks,
        current.as_deref(),
    );
    drop(view);
    *sh.upstreams.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ups);
}

/// The supervisor saw `service` exit: an execution client among them is down from now
/// on (until a probe begun later answers), out of the gateway's upstreams, and a
/// validator using it fails over now rather than after its probes fail N times or its
/// next Engine API call does (a built-in client is restarted within about a second,
/// and a validator that missed the outage would stay on a client that just lost its
/// process).
async fn on_exit(sh: &Arc<Shared>, http: &reqwest::Client, t: &Targets, service: &str, how: &str) {
    {
        let mut view = sh.view();
        let Some(e) = view.els.get_mut(service) else {
            return;
        };
        e.exited = Some((now_ms(), how.to_string()));
        refresh_upstreams(sh, view, t);
    }
    act(sh, http, t).await;
}

/// The supervisor saw `service` become ready: failures seen before that were of a client
/// still opening its ports (a slow one, such as a Reth debug build, takes seconds), not
/// of a broken one. They are forgotten, so that a validator starting right after its
/// clients does not leave its first one on that stale verdict; probes begun from now on
/// decide (seen with Reth 2.5.1: both Reths failed over at start).
fn on_ready(sh: &Arc<Shared>, t: &Targets, service: &str) {
    let Some(target) = t.els.iter().find(|e| e.name == service) else {
        return;
    };
    let mut view = sh.view();
    let e = view
        .els
        .entry(target.name.clone())
        .or_insert_with(|| ElHealth::new(&target.name, &target.validator));
    let now = now_ms();
    e.ready_at = Some(now);
    e.tracker.failed_in_row = 0;
    if e.tracker.state == State::Unhealthy {
        e.tracker.state = State::Unknown;
        e.tracker.reason = None;
        e.tracker.since_ms = now;
    }
    refresh_upstreams(sh, view, t);
}

fn el_view(name: &str, e: &ElHealth) -> ElView {
    ElView {
        name: name.to_string(),
        state: e.tracker.state,
        syncing: e.syncing,
        lag: e.lag,
        latency_ms: e.latency_ms.unwrap_or(f64::MAX),
        exited: e.exited.as_ref().map(|(_, how)| how.clone()),
    }
}

/// The gateway's upstreams: `current`, the client reads went to so far, stays first
/// while it is fit and not clearly worse ([`health::keep_current`]).
fn upstreams(view: &View, t: &Targets, max_lag: u64, current: Option<&str>) -> Upstreams {
    let names: Vec<&String> = view.els.keys().collect();
    let views: Vec<ElView> = view.els.iter().map(|(n, e)| el_view(n, e)).collect();
    let url = |name: &str| {
        t.els
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| format!("http://{}/", e.http).parse::<hyper::Uri>().ok())
    };
    let up = |i: usize| {
        url(names[i]).map(|url| Upstream {
            name: names[i].clone(),
            url,
        })
    };
    let ranked: Vec<Upstream> =
        health::keep_current(&views, health::rank(&views, max_lag), current)
            .into_iter()
            .filter_map(up)
            .collect();
    let healthy: Vec<Upstream> = (0..views.len())
        .filter(|&i| views[i].state == State::Healthy)
        .filter_map(up)
        .collect();
    let why_none = if ranked.is_empty() {
        let mut parts: Vec<String> = view
            .els
            .iter()
            .map(|(n, e)| {
                let why = match (e.tracker.state, &e.tracker.reason) {
                    (State::Healthy, _) if e.syncing => "syncing".to_string(),
                    (State::Healthy, _) => format!(
                        "{} blocks behind",
                        e.lag.map(|l| l.to_string()).unwrap_or("?".into())
                    ),
                    (s, Some(r)) => format!("{s}: {r}"),
                    (s, None) => s.to_string(),
                };
                format!("{n} {why}")
            })
            .collect();
        if parts.is_empty() {
            parts.push("the network has no execution client".into());
        }
        parts.join("; ")
    } else {
        String::new()
    };
    Upstreams {
        ranked,
        healthy,
        active: view
            .validators
            .values()
            .filter_map(|v| v.active_el.clone())
            .collect(),
        why_none,
    }
}

/// Host checks: disk of every data dir, memory, open-file limit, clock skew.
fn host(sh: &Arc<Shared>, t: &Targets) {
    let h = &sh.settings.health;
    // One entry per file system (by device), naming every service on it.
    let mut by_dev: BTreeMap<u64, Disk> = BTreeMap::new();
    for (svc, dir) in &t.data_dirs {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        match probe::disk_used_percent(dir) {
            Ok((pct, avail)) => {
                let d = by_dev.entry(meta.dev()).or_insert_with(|| Disk {
                    path: dir.clone(),
                    services: Vec::new(),
                    used_percent: pct,
                    available_bytes: avail,
                    level: health::disk_level(pct, h.disk_warn_percent, h.disk_critical_percent),
                });
                d.services.push(svc.clone());
            }
            Err(e) => warn!(service = %svc, "disk check: {e}"),
        }
    }
    let disks: Vec<Disk> = by_dev.into_values().collect();
    let mut view = sh.view();
    for d in &disks {
        let before = view
            .host
            .disks
            .iter()
            .find(|o| o.path == d.path)
            .map(|o| o.level)
            .unwrap_or(Level::Ok);
        if d.level != before {
            let msg = format!(
                "disk of {} ({}) is {:.1}% full, {:.1} GiB available",
                d.path.display(),
                d.services.join(", "),
                d.used_percent,
                d.available_bytes as f64 / (1u64 << 30) as f64
            );
            match d.level {
                Level::Ok => info!("{msg}: back below {}%", h.disk_warn_percent),
                Level::Warning => warn!("{msg}: over {}%", h.disk_warn_percent),
                Level::Critical => error!("{msg}: over {}%, critical", h.disk_critical_percent),
            }
        }
    }
    let (avail, total) = probe::memory().unzip();
    let skew = view
        .els
        .values()
        .filter_map(|e| e.clock_skew_s)
        .max_by_key(|s| s.abs());
    view.host = Host {
        disks,
        memory_available_bytes: avail,
        memory_total_bytes: total,
        open_file_limit: probe::open_file_limit(),
        max_clock_skew_s: skew,
    };
}

/// Act on the view: fail validators over, restart clients that stay unhealthy.
async fn act(sh: &Arc<Shared>, http: &reqwest::Client, t: &Targets) {
    let now = now_ms();
    let cfg = &sh.settings;
    let interval_ms = cfg.health.interval.get().as_millis() as u64;
    let mut failovers = Vec::new();
    let mut restarts = Vec::new();
    {
        let mut view = sh.view();
        if cfg.failover.enabled {
            for v in &t.validators {
                if v.els.len() < 2 {
                    continue;
                }
                let last = view
                    .switches
                    .iter()
                    .rev()
                    .find(|s| s.validator == v.name)
                    .map(|s| health::LastSwitch {
                        at_ms: s.switch.at_ms,
                        from: s.switch.from.clone(),
                        to: s.switch.to.clone(),
                    });
                let Some(vh) = view.validators.get(&v.name) else {
                    continue;
                };
                // Only a validator that answers can be switched (a stalled one can, and
                // may need it most); one asked a moment ago gets time to act and to be
                // probed again.
                if !vh.reachable
                    || vh
                        .asked_failover_ms
                        .is_some_and(|t| now.saturating_sub(t) < 3 * interval_ms)
                {
                    continue;
                }
                let Some(active) = vh.active_el.clone() else {
                    continue;
                };
                let views: Vec<ElView> = v
                    .els
                    .iter()
                    .filter_map(|n| view.els.get(n).map(|e| el_view(n, e)))
                    .collect();
                let Some(ai) = views.iter().position(|e| e.name == active) else {
                    continue;
                };
                if let Some(d) = health::failover(
                    &views,
                    ai,
                    cfg.failover.max_lag_blocks,
                    last.as_ref(),
                    cfg.failover.hold.get().as_millis() as u64,
                    now,
                ) {
                    if let Some(vh) = view.validators.get_mut(&v.name) {
                        vh.asked_failover_ms = Some(now);
                    }
                    failovers.push((v.name.clone(), d));
                }
            }
        }
        let after = cfg.health.restart_el_after.get().as_millis() as u64;
        if after > 0 {
            for (name, e) in view.els.iter_mut() {
                if e.tracker.state == State::Unhealthy
                    && now.saturating_sub(e.tracker.since_ms) >= after
                    && e.restart_asked_ms
                        .is_none_or(|t| now.saturating_sub(t) >= after)
                {
                    e.restart_asked_ms = Some(now);
                    restarts.push((
                        name.clone(),
                        format!(
                            "unhealthy for {:.0}s (health.restart_el_after): {}",
                            now.saturating_sub(e.tracker.since_ms) as f64 / 1000.0,
                            e.tracker.reason.clone().unwrap_or_default()
                        ),
                    ));
                }
            }
        }
    }
    for (validator, d) in failovers {
        warn!(%validator, to = %d.to, kind = d.kind, reason = %d.reason, "failing over");
        if let Err(e) = sh
            .failover(http, &validator, Some(&d.to), d.kind, &d.reason)
            .await
        {
            error!(%validator, to = %d.to, "failover refused: {e}");
        }
    }
    for (service, reason) in restarts {
        // Only a running client: one in backoff or given up is the supervisor's already.
        let st = sh.ask(Request::Status).await;
        let running = st
            .status
            .as_ref()
            .and_then(|r| r.services.iter().find(|s| s.name == service))
            .is_some_and(|s| s.state == "ready" || s.state == "unhealthy");
        if !running {
            continue;
        }
        warn!(%service, %reason, "restarting an execution client that stays unhealthy");
        let r = sh
            .ask(Request::Restart {
                service: service.clone(),
            })
            .await;
        if !r.ok {
            error!(%service, "restart refused: {}", r.error.unwrap_or_default());
            continue;
        }
        sh.view().restarts.push(HealthRestart {
            at_ms: now_ms(),
            service,
            reason,
        });
    }
    let _ = t;
}

/// The address to connect to for a listener on `a`: a wildcard (0.0.0.0, ::) is
/// reached on loopback.
pub fn reachable(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        SocketAddr::new(IpAddr::from([127, 0, 0, 1]), a.port())
    } else {
        a
    }
}

/// Where the CLI reaches the API of a running supervisor.
pub struct ApiEndpoint {
    pub addr: SocketAddr,
    pub token: String,
    /// The certificate the API serves (`api.tls.cert`), which the CLI pins; none: HTTP.
    pub tls_cert: Option<PathBuf>,
}

/// The API of the supervisor running `profile`, from its state dir.
pub fn api_endpoint(
    layout: &Layout,
    profile: &chainctl_core::profile::Profile,
) -> Result<ApiEndpoint> {
    let ports =
        chainctl_core::state::read_json::<chainctl_core::state::PortsFile>(&layout.ports_file())?
            .context("no ports.json: is the network up?")?;
    let port = ports
        .services
        .get(chainctl_core::ports::CHAINCTL)
        .and_then(|m| m.get("api"))
        .map(|a| a.port)
        .context("ports.json has no API port: start the network with this chainctl")?;
    let token = std::fs::read_to_string(layout.api_token())
        .with_context(|| format!("cannot read the API token {}", layout.api_token().display()))?;
    Ok(ApiEndpoint {
        addr: reachable(SocketAddr::new(profile.listen.api, port)),
        token: token.trim().to_string(),
        tls_cert: profile.api.tls.as_ref().map(|t| t.cert.clone()),
    })
}
