//! chainctl's HTTP API: `/metrics` (Prometheus text), `/health` (liveness), `/ready`
//! (readiness), and under `/api/v1/` the status, restarts and failovers, which need the
//! bearer token in `secrets/api.token`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::metrics::{set_total, Scrape, CONTENT_TYPE};
use super::Shared;
use chainctl_core::control::Request;

/// Serves the API until the process ends: over TLS when `tls` is given, else plain HTTP.
pub async fn serve(
    sh: Arc<Shared>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let app = Router::new()
        .route(
            "/health",
            get(|| async { Json(json!({"status": "alive"})) }),
        )
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/services/{name}/restart", post(restart))
        .route("/api/v1/failover", post(failover))
        .layer(axum::middleware::from_fn_with_state(sh.clone(), rate_limit))
        .with_state(sh);
    match tls {
        Some(cfg) => super::tls_serve::serve("API", listener, cfg, app).await,
        None => {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        }
    }
}

/// How often a refused token from one address is logged (each is counted).
const AUTH_LOG_EVERY: Duration = Duration::from_secs(10);

/// The API's rate limit (api.rate_limit) and its count of refused tokens.
pub struct Guard {
    buckets: super::limit::Buckets,
    rate: u32,
    /// `chainctl_api_auth_failures_total`.
    auth_failures: prometheus::IntCounter,
    /// Per address: when a refusal was last logged, and the refusals since.
    logged: Mutex<HashMap<IpAddr, (Option<Instant>, u64)>>,
}

impl Guard {
    pub fn new(rate: u32) -> Guard {
        Guard {
            buckets: super::limit::Buckets::new(rate),
            rate,
            auth_failures: prometheus::IntCounter::new(
                "chainctl_api_auth_failures_total",
                "Requests to the API refused for a missing or wrong bearer token.",
            )
            .expect("a valid counter"),
            logged: Mutex::new(HashMap::new()),
        }
    }

    /// A refused token from `ip`: counted, and logged at most every [`AUTH_LOG_EVERY`]
    /// per address with the refusals since the last line.
    fn refused(&self, ip: IpAddr, why: &str) {
        self.auth_failures.inc();
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() > 10_000 {
            logged
                .retain(|_, (at, _)| at.is_some_and(|at| now.duration_since(at) < AUTH_LOG_EVERY));
        }
        // An address's first refusal is logged at once (no line before it).
        let e = logged.entry(ip).or_insert((None, 0));
        e.1 += 1;
        if e.0
            .is_none_or(|at| now.duration_since(at) >= AUTH_LOG_EVERY)
        {
            tracing::warn!(client = %ip, refused = e.1, "API request refused: {why}");
            *e = (Some(now), 0);
        }
    }
}

async fn rate_limit(
    State(sh): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = ip {
        if !sh.api.buckets.admit(ip, 1) {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                Json(json!({"error": format!(
                    "rate limit: {} calls per second per client address (api.rate_limit); retry after 1s",
                    sh.api.rate
                )})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

fn authorized(sh: &Shared, headers: &HeaderMap, peer: SocketAddr) -> Result<(), Box<Response>> {
    let deny = |why: &str| {
        sh.api.refused(peer.ip(), why);
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": why})),
        )
            .into_response()
            .into()
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(deny(&format!(
            "this endpoint needs `Authorization: Bearer <token>`; the token is in {} (mode 0600)",
            sh.settings.token_path.display()
        )));
    };
    let token = std::fs::read_to_string(&sh.settings.token_path).unwrap_or_default();
    let token = token.trim();
    if token.is_empty()
        || !chainctl_common::secrets::constant_time_eq(given.trim().as_bytes(), token.as_bytes())
    {
        return Err(deny(&format!(
            "wrong token: use the one in {}",
            sh.settings.token_path.display()
        )));
    }
    Ok(())
}

async fn ready(State(sh): State<Arc<Shared>>) -> Response {
    let problems = sh.view().not_ready(sh.settings.gateway_addr.is_some());
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "not_ready": problems})),
        )
            .into_response()
    }
}

async fn status(
    State(sh): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&sh, &headers, peer) {
        return *r;
    }
    let sup = sh.ask(Request::Status).await;
    let view = serde_json::to_value(&*sh.view()).unwrap_or_default();
    let not_ready = sh.view().not_ready(sh.settings.gateway_addr.is_some());
    Json(json!({
        "profile": sh.settings.profile,
        "gateway": sh.settings.gateway_addr.map(|a| a.to_string()),
        "supervisor": sup.status,
        "health": view,
        "not_ready": not_ready,
    }))
    .into_response()
}

async fn restart(
    State(sh): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorized(&sh, &headers, peer) {
        return *r;
    }
    tracing::info!(service = %name, "restart requested through the API");
    let r = sh.ask(Request::Restart { service: name }).await;
    let code = if r.ok {
        StatusCode::OK
    } else if r
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("no service"))
    {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::CONFLICT
    };
    (code, Json(r)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailoverReq {
    validator: String,
    #[serde(default)]
    to: Option<String>,
}

async fn failover(
    State(sh): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<FailoverReq>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = authorized(&sh, &headers, peer) {
        return *r;
    }
    let Ok(Json(req)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected a JSON body {\"validator\": NAME, \"to\": EL (optional)}"})),
        )
            .into_response();
    };
    let http = reqwest::Client::new();
    match sh
        .failover(
            &http,
            &req.validator,
            req.to.as_deref(),
            "forced",
            "forced through chainctl's API (`chainctl failover`)",
        )
        .await
    {
        Ok(active) => (
            StatusCode::OK,
            Json(json!({"validator": req.validator, "active": active})),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}

async fn metrics(State(sh): State<Arc<Shared>>) -> Response {
    let sup = sh.ask(Request::Status).await;
    let sc = Scrape::default();
    if let Some(st) = &sup.status {
        let up = sc.gauges(
            "chainctl_service_up",
            "1 when the service runs and answers on its ports.",
            &["service", "kind"],
        );
        let state = sc.gauges(
            "chainctl_service_state",
            "The supervisor's state of each service (1 for the current state).",
            &["service", "state"],
        );
        let restarts = sc.counters(
            "chainctl_service_restarts_total",
            "Restarts of each service since it was first started.",
            &["service"],
        );
        let exit = sc.gauges(
            "chainctl_service_last_exit_info",
            "How each service last exited (1 for that exit).",
            &["service", "exit"],
        );
        for s in &st.services {
            up.with_label_values(&[&s.name, &s.kind])
                .set(f64::from(u8::from(s.state == "ready")));
            state.with_label_values(&[&s.name, &s.state]).set(1.0);
            set_total(&restarts, &[&s.name], f64::from(s.restarts));
            if let Some(e) = &s.last_exit {
                exit.with_label_values(&[&s.name, e]).set(1.0);
            }
        }
    }
    let view = sh.view();
    let families: [(&str, &str, &str); 8] = [
        (
            "chainctl_el_health",
            "gauge",
            "Execution client health: 1 healthy, 0 unhealthy, -1 unknown.",
        ),
        (
            "chainctl_el_head_block",
            "gauge",
            "Head block number each execution client reports.",
        ),
        (
            "chainctl_el_lag_blocks",
            "gauge",
            "Blocks behind the second-highest head of the network's execution clients.",
        ),
        (
            "chainctl_el_syncing",
            "gauge",
            "1 when the client reports syncing.",
        ),
        (
            "chainctl_el_peers",
            "gauge",
            "Peers the client reports (net_peerCount).",
        ),
        (
            "chainctl_el_active",
            "gauge",
            "1 for the execution client its validator builds with.",
        ),
        (
            "chainctl_el_engine_auth_ok",
            "gauge",
            "1 when the Engine API accepts a token signed with the validator's secret.",
        ),
        (
            "chainctl_el_clock_skew_seconds",
            "gauge",
            "The client's clock minus the supervisor's (HTTP Date header).",
        ),
    ];
    for (i, (name, _, help)) in families.iter().enumerate() {
        let g = sc.gauges(name, help, &["el", "validator"]);
        for (el, e) in &view.els {
            let v = match i {
                0 => Some(e.tracker.state.gauge() as f64),
                1 => e.head.map(|h| h as f64),
                2 => e.lag.map(|h| h as f64),
                3 => Some(f64::from(u8::from(e.syncing))),
                4 => e.peers.map(|p| p as f64),
                5 => Some(f64::from(u8::from(e.active))),
                6 => Some(f64::from(u8::from(e.engine_auth_error.is_none()))),
                _ => e.clock_skew_s.map(|s| s as f64),
            };
            if let Some(v) = v {
                g.with_label_values(&[el.as_str(), e.validator.as_str()])
                    .set(v);
            }
        }
    }
    // One histogram per client, labelled `el` when it was made.
    for e in view.els.values() {
        sc.add(e.latency.clone());
    }
    let now = chainctl_common::time::now_ms();
    let vfamilies: [(&str, &str, &str); 7] = [
        (
            "chainctl_validator_health",
            "gauge",
            "Validator health: 1 healthy, 0 unhealthy (down or stalled), -1 unknown.",
        ),
        (
            "chainctl_validator_height",
            "gauge",
            "Height the validator is deciding.",
        ),
        ("chainctl_validator_round", "gauge", "Round of that height."),
        (
            "chainctl_validator_decided_blocks",
            "gauge",
            "Blocks the validator has decided (its chain height).",
        ),
        (
            "chainctl_validator_seconds_since_decision",
            "gauge",
            "Seconds since the validator's last decision.",
        ),
        (
            "chainctl_validator_consensus_violations_total",
            "counter",
            "Consensus violations (equivocation, invalid certificates) the validator saw.",
        ),
        (
            "chainctl_validator_peers",
            "gauge",
            "Other validators this validator is connected to.",
        ),
    ];
    let value = |i: usize, v: &super::ValidatorHealth| match i {
        0 => Some(v.tracker.state.gauge() as f64),
        1 => Some(v.height as f64),
        2 => Some(v.round as f64),
        3 => Some(v.decided as f64),
        4 => v
            .last_decided_at_ms
            .map(|t| now.saturating_sub(t) as f64 / 1000.0),
        5 => Some(v.consensus_violations as f64),
        _ => v.peers.map(|p| p as f64),
    };
    for (i, (name, kind, help)) in vfamilies.iter().enumerate() {
        if *kind == "counter" {
            let c = sc.counters(name, help, &["validator"]);
            for (vn, v) in &view.validators {
                if let Some(x) = value(i, v) {
                    set_total(&c, &[vn.as_str()], x);
                }
            }
        } else {
            let g = sc.gauges(name, help, &["validator"]);
            for (vn, v) in &view.validators {
                if let Some(x) = value(i, v) {
                    g.with_label_values(&[vn.as_str()]).set(x);
                }
            }
        }
    }
    let failovers = sc.counters(
        "chainctl_failovers_total",
        "Switches of a validator's active execution client, by reason.",
        &["validator", "reason"],
    );
    for ((v, kind), n) in &view.failovers_total {
        set_total(&failovers, &[v, kind], *n as f64);
    }
    let transitions = sc.counters(
        "chainctl_health_transitions_total",
        "Health changes of each probed service, by the state entered.",
        &["service", "state"],
    );
    for ((svc, st), n) in &view.transitions_total {
        set_total(&transitions, &[svc, &st.to_string()], *n as f64);
    }
    let health_restarts = sc.counters(
        "chainctl_health_restarts_total",
        "Restarts chainctl asked for because a client stayed unhealthy.",
        &["service"],
    );
    for r in &view.restarts {
        set_total(&health_restarts, &[&r.service], 1.0);
    }
    let used = sc.gauges(
        "chainctl_disk_used_ratio",
        "Used share of the file system of each data dir (0..1).",
        &["path"],
    );
    let level = sc.gauges(
        "chainctl_disk_alert_level",
        "Disk alert of each data dir's file system: 0 ok, 1 warning, 2 critical.",
        &["path"],
    );
    for d in &view.host.disks {
        let path = d.path.display().to_string();
        used.with_label_values(&[&path]).set(d.used_percent / 100.0);
        level
            .with_label_values(&[&path])
            .set(d.level.gauge() as f64);
    }
    if let Some(m) = view.host.memory_available_bytes {
        sc.gauge(
            "chainctl_host_memory_available_bytes",
            "Memory available on the host.",
            m as f64,
        );
    }
    if let Some(n) = view.host.open_file_limit {
        sc.gauge(
            "chainctl_host_open_file_limit",
            "Soft limit on open files that services inherit.",
            n as f64,
        );
    }
    let ready = view
        .not_ready(sh.settings.gateway_addr.is_some())
        .is_empty();
    sc.gauge(
        "chainctl_ready",
        "1 when every critical service is healthy (what /ready answers).",
        f64::from(u8::from(ready)),
    );
    drop(view);
    sh.gateway.register(&sc);
    sc.add(sh.api.auth_failures.clone());
    sh.backups.register(&sc);
    sc.add(super::reconcile_histogram().clone());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], sc.encode()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refusal is counted; an address's first is logged at once, the next ones
    /// only gathered until [`AUTH_LOG_EVERY`] has passed.
    #[test]
    fn refused_tokens_are_all_counted_and_logged_at_most_every_ten_seconds() {
        let g = Guard::new(50);
        let ip: IpAddr = [10, 0, 0, 9].into();
        for _ in 0..3 {
            g.refused(ip, "wrong token");
        }
        assert_eq!(g.auth_failures.get(), 3);
        let (at, since) = g.logged.lock().unwrap()[&ip];
        assert!(at.is_some(), "the first refusal was not logged");
        assert_eq!(since, 2, "the later ones wait for the next line");
    }
}
