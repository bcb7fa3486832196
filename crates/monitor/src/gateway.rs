//! The JSON-RPC gateway: one stable address (HTTP and WebSocket) in front of every
//! execution client of the network.
//!
//! - Reads go to the best client (healthy, synced, least lag, lowest latency); on a
//!   transport error they are retried once on the next best.
//! - `eth_sendRawTransaction` goes to every healthy client's pool (marked as relayed, so
//!   built-in clients do not pass it on again). It counts as taken only when a client a
//!   validator builds blocks with now took it ([`pick_send`]): a backup's acceptance never
//!   hides an active client's refusal. A client that was down missed what was sent
//!   meanwhile: when it is healthy again it is given the last [`REPLAY_WINDOW`] of sends
//!   ([`replay_loop`]), as a devp2p peer is given the pool on connect — without it, a
//!   client that was down when a sender's nonce n went out holds that sender's later
//!   transactions behind a gap it never fills, and builds blocks without them once it is
//!   active again.
//! - Limits: body size (413), batch size, calls per second per client address (429), a
//!   timeout per request; a JSON-RPC error naming each client's state when none is usable.
//! - WebSocket: plain calls as over HTTP; `newHeads` and `logs` subscriptions are served
//!   from one head feed that follows the best client, so they survive a failover with no
//!   head missed or repeated (the chain is final: heights never reorg).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value as Json};
use tokio::sync::{broadcast, mpsc};

use super::cache::{self, Cache};
use super::metrics::{self, Scrape};
use super::{Shared, Upstream};
use chainctl_common::units::quantity;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Opts};

/// Header that tells a built-in client not to pass a transaction on (the gateway sends it
/// to every client itself).
const RELAYED: &str = "x-chainctl-relayed";

/// Methods that change state: sent to every healthy client, never retried.
fn is_send(method: &str) -> bool {
    method == "eth_sendRawTransaction"
}

/// Which client's answer to a sent transaction the gateway returns (an index into
/// `answers`, each client's JSON-RPC answer or none). A transaction counts as taken only
/// when a client that builds blocks now — a validator's active client, `active` — has it:
/// its acceptance (or "already known": it has it) is the answer, and when every active
/// client that answered refused it, their refusal is. A backup's acceptance would hide a
/// transaction no block builder holds: seen with Reth at its limit of pending
/// transactions per sender, whose later nonces then waited behind the gap for good while
/// the sender was told all was well. With no active client answering (or none known),
/// the first acceptance of any client, else the first answer.
fn pick_send(answers: &[(String, Option<Json>)], active: &BTreeSet<String>) -> Option<usize> {
    let ok = |i: &usize| {
        answers[*i]
            .1
            .as_ref()
            .is_some_and(|a| a.get("result").is_some())
    };
    let has_it = |i: &usize| {
        ok(i)
            || answers[*i].1.as_ref().is_some_and(|a| {
                a["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.to_ascii_lowercase().contains("already known"))
            })
    };
    let answered: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].1.is_some())
        .collect();
    let actives: Vec<usize> = answered
        .iter()
        .copied()
        .filter(|&i| active.contains(&answers[i].0))
        .collect();
    if actives.is_empty() {
        return answered
            .iter()
            .copied()
            .find(ok)
            .or(answered.first().copied());
    }
    if actives.iter().any(has_it) {
        return actives
            .iter()
            .copied()
            .find(ok)
            .or_else(|| answered.iter().copied().find(ok))
            .or_else(|| actives.iter().copied().find(has_it));
    }
    actives.first().copied()
}

/// Methods counted under their own name in metrics (anything else is `other`, so a
/// client cannot grow the metric's label set without bound).
const KNOWN: &[&str] = &[
    "eth_blockNumber",
    "eth_call",
    "eth_chainId",
    "eth_estimateGas",
    "eth_feeHistory",
    "eth_gasPrice",
    "eth_getBalance",
    "eth_getBlockByHash",
    "eth_getBlockByNumber",
    "eth_getBlockReceipts",
    "eth_getCode",
    "eth_getLogs",
    "eth_getStorageAt",
    "eth_getTransactionByHash",
    "eth_getTransactionCount",
    "eth_getTransactionReceipt",
    "eth_maxPriorityFeePerGas",
    "eth_sendRawTransaction",
    "eth_subscribe",
    "eth_unsubscribe",
    "eth_syncing",
    "net_version",
    "web3_clientVersion",
];

fn method_label(m: &str) -> &'static str {
    KNOWN.iter().find(|k| **k == m).copied().unwrap_or("other")
}

/// Gateway counters and latency, as Prometheus metrics that live as long as the gateway.
pub struct Stats {
    /// Calls by method, outcome and upstream client.
    requests: IntCounterVec,
    /// Time from a request's arrival to its answer.
    pub latency: Histogram,
    /// Reads retried on another client after a transport error.
    pub failover_retries: IntCounter,
    /// Open WebSocket sessions.
    pub ws_sessions: IntGauge,
    /// Calls answered from the cache of finalized data, and cacheable calls it missed.
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    /// Bytes the cache holds.
    cache_bytes: IntGauge,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            requests: IntCounterVec::new(
                Opts::new(
                    "chainctl_gateway_requests_total",
                    "JSON-RPC calls through the gateway by method, outcome and upstream client.",
                ),
                &["method", "status", "upstream"],
            )
            .expect("a valid counter family"),
            latency: metrics::latency(
                "chainctl_gateway_request_duration_seconds",
                "Time from a request's arrival at the gateway to its answer.",
                &[],
            ),
            failover_retries: IntCounter::new(
                "chainctl_gateway_retries_total",
                "Reads retried on another client after a transport error.",
            )
            .expect("a valid counter"),
            ws_sessions: IntGauge::new(
                "chainctl_gateway_websocket_sessions",
                "Open WebSocket sessions.",
            )
            .expect("a valid gauge"),
            cache_hits: IntCounter::new(
                "chainctl_gateway_cache_hits_total",
                "Calls answered from the gateway's cache of finalized data.",
            )
            .expect("a valid counter"),
            cache_misses: IntCounter::new(
                "chainctl_gateway_cache_misses_total",
                "Calls of a method the cache serves that it could not answer (forwarded to a client).",
            )
            .expect("a valid counter"),
            cache_bytes: IntGauge::new(
                "chainctl_gateway_cache_bytes",
                "Bytes held by the gateway's cache of finalized data (gateway.cache_mb).",
            )
            .expect("a valid gauge"),
        }
    }
}

impl Stats {
    fn count(&self, method: &str, status: &'static str, upstream: &str, n: u64) {
        self.requests
            .with_label_values(&[method_label(method), status, upstream])
            .inc_by(n);
    }

    /// Adds the gateway's families to a scrape.
    pub fn register(&self, sc: &Scrape) {
        sc.add(self.requests.clone());
        sc.add(self.latency.clone());
        sc.add(self.failover_retries.clone());
        sc.add(self.ws_sessions.clone());
        sc.add(self.cache_hits.clone());
        sc.add(self.cache_misses.clone());
        sc.add(self.cache_bytes.clone());
    }
}

/// The gateway's client to the execution clients: hyper's own pooled HTTP/1 client (a
/// forwarded call needs nothing more, and every layer less is throughput).
type UpstreamClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

struct Gw {
    sh: Arc<Shared>,
    http: UpstreamClient,
    buckets: super::limit::Buckets,
    heads: broadcast::Sender<Arc<Json>>,
    /// Recent sends (each call's `params`), oldest first, for clients that come back.
    recent: Mutex<std::collections::VecDeque<(Instant, String)>>,
    /// Clients a send could not be delivered to, with the first such send: given what
    /// they missed once they answer again ([`replay_loop`]), even when the monitor never
    /// saw them down (a client killed and restarted between two of its looks).
    missed: Mutex<HashMap<String, Instant>>,
    /// Answers about finalized blocks (gateway.cache_mb; none at 0).
    cache: Option<Cache>,
    /// Open WebSocket sessions by client address (gateway.max_ws_sessions).
    ws_open: Mutex<HashMap<IpAddr, u32>>,
}

/// How far back sends are given again to a client that is healthy again.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(60);
/// Most sends kept for that (at 800 tx/s, the whole window).
const REPLAY_MAX: usize = 50_000;

/// Gives a client that is healthy again (not in the healthy set at the last look, every
/// 250 ms) the sends of the last [`REPLAY_WINDOW`], and a client a send could not be
/// delivered to those since that send (less a second), in batches, marked as relayed.
/// What it holds already or the chain has included it refuses, which is fine.
async fn replay_loop(gw: Arc<Gw>) {
    let mut before: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let ups = gw.sh.upstreams();
        let now: BTreeSet<String> = ups.healthy.iter().map(|u| u.name.clone()).collect();
        for up in &ups.healthy {
            let Some(since) = replay_due(&before, &mut lock(&gw.missed), &up.name) else {
                continue;
            };
            let sends = replay_of(&lock(&gw.recent), since, Instant::now());
            if sends.is_empty() {
                continue;
            }
            let (gw, up) = (gw.clone(), up.clone());
            tokio::spawn(async move {
                for chunk in sends.chunks(100) {
                    let body: Vec<String> = chunk
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"eth_sendRawTransaction","params":{p}}}"#)
                        })
                        .collect();
                    if let Err(e) = gw
                        .post(&up, Bytes::from(format!("[{}]", body.join(","))), true)
                        .await
                    {
                        tracing::debug!(upstream = %up.name, "replaying recent sends stopped: {e:?}");
                        // Tried again once it answers.
                        gw.missed_by(
                            &up.name,
                            since.unwrap_or_else(|| {
                                Instant::now()
                                    .checked_sub(REPLAY_WINDOW)
                                    .unwrap_or_else(Instant::now)
                            }),
                        );
                        return;
                    }
                }
                tracing::info!(upstream = %up.name, sends = sends.len(), "gave a client that is back the sends it missed");
            });
        }
        before = now;
    }
}

/// Whether `client` (healthy now) is given sends again, and from when: all of the
/// window (`Some(None)`) when it was not healthy at the last look; those from a second
/// before the first send it missed when one could not be delivered to it (the mark is
/// taken); else none.
fn replay_due(
    before: &BTreeSet<String>,
    missed: &mut HashMap<String, Instant>,
    client: &str,
) -> Option<Option<Instant>> {
    let mark = missed.remove(client);
    if !before.contains(client) {
        return Some(None);
    }
    mark.map(|at| Some(at.checked_sub(Duration::from_secs(1)).unwrap_or(at)))
}

/// The sends of `recent` within [`REPLAY_WINDOW`] of `now`, from `since` on.
fn replay_of(
    recent: &std::collections::VecDeque<(Instant, String)>,
    since: Option<Instant>,
    now: Instant,
) -> Vec<String> {
    recent
        .iter()
        .filter(|(at, _)| {
            now.saturating_duration_since(*at) <= REPLAY_WINDOW && since.is_none_or(|s| *at >= s)
        })
        .map(|(_, p)| p.clone())
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves the gateway on `listener` until the process ends: HTTPS and WSS with `tls`,
/// else plain HTTP and WebSocket.
pub async fn serve(
    sh: Arc<Shared>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let sh_cache_mb = sh.settings.gateway.cache_mb;
    let sh_rate = sh.settings.gateway.rate_limit;
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector);
    let (heads, _) = broadcast::channel(1024);
    let gw = Arc::new(Gw {
        sh,
        http,
        buckets: super::limit::Buckets::new(sh_rate),
        heads,
        recent: Mutex::new(std::collections::VecDeque::new()),
        missed: Mutex::new(HashMap::new()),
        cache: match sh_cache_mb {
            0 => None,
            mb => Some(Cache::new(mb as usize * 1024 * 1024)),
        },
        ws_open: Mutex::new(HashMap::new()),
    });
    tokio::spawn(head_feed(gw.clone()));
    if gw.cache.is_some() {
        tokio::spawn(finality_feed(gw.clone()));
    }
    tokio::spawn(replay_loop(gw.clone()));
    // http_call enforces gateway.max_body_bytes itself (read_body).
    let app = Router::new()
        .route("/", get(ws_upgrade).post(http_call))
        .with_state(gw);
    if let Some(cfg) = tls {
        super::tls_serve::serve("gateway", listener, cfg, app).await;
        return;
    }
    // Answers go out as soon as they are written (no Nagle wait behind the client's
    // delayed ACK).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let _ = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await;
}

/// A JSON-RPC error object (`id` as raw JSON text).
fn error_json(id: &str, code: i64, message: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{}}}}}"#,
        Json::String(message.to_string())
    )
}

fn reply(status: StatusCode, body: impl Into<Body>, upstream: Option<&str>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(u) = upstream.and_then(|u| HeaderValue::from_str(u).ok()) {
        r.headers_mut().insert("x-chainctl-upstream", u);
    }
    r
}

#[derive(Deserialize)]
struct Call {
    #[serde(default)]
    id: Option<Box<RawValue>>,
    method: String,
    #[serde(default)]
    params: Option<Box<RawValue>>,
}

impl Call {
    fn id_text(&self) -> String {
        self.id
            .as_ref()
            .map(|r| r.get().to_string())
            .unwrap_or_else(|| "null".into())
    }
    fn to_json(&self) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":{},"params":{}}}"#,
            self.id_text(),
            Json::String(self.method.clone()),
            self.params.as_ref().map(|p| p.get()).unwrap_or("[]")
        )
    }
}

/// An answer to a client: HTTP status, body, and the upstream that served it.
struct Answer {
    status: StatusCode,
    body: Bytes,
    upstream: String,
}

impl Answer {
    fn error(status: StatusCode, id: &str, code: i64, message: &str) -> Answer {
        Answer {
            status,
            body: Bytes::from(error_json(id, code, message)),
            upstream: "none".into(),
        }
    }
}

/// How much of an oversized request body the gateway reads and throws away before it
/// answers 413, and for how long.
const DRAIN_CAP: usize = 8 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(3);

/// Why a request body was not read.
enum BodyError {
    TooLarge,
    Broken(String),
}

/// Reads a request body of at most `max` bytes. The rest of a larger one is read and
/// thrown away (up to [`DRAIN_CAP`], for [`DRAIN_TIME`]) before the 413 goes out: a
/// client still writing its body when the server closes gets a broken pipe instead of
/// the answer (nginx's lingering close exists for the same reason). A body declared
/// larger than that is refused without reading any of it.
async fn read_body(
    body: axum::body::Body,
    declared: Option<u64>,
    max: usize,
) -> Result<Bytes, BodyError> {
    use futures::StreamExt;
    if declared.is_some_and(|n| n > max as u64 && n > DRAIN_CAP as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut stream = body.into_data_stream();
    // A call usually arrives in one chunk: that chunk is the body, not copied.
    let mut first: Option<Bytes> = None;
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
        let have = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if have + chunk.len() > max {
            let mut seen = have + chunk.len();
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while seen < DRAIN_CAP {
                    match stream.next().await {
                        Some(Ok(c)) => seen += c.len(),
                        _ => break,
                    }
                }
            })
            .await;
            return Err(BodyError::TooLarge);
        }
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            f => {
                if let Some(f) = f {
                    buf.extend_from_slice(&f);
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buf)))
}

async fn http_call(
    State(gw): State<Arc<Gw>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
) -> Response {
    // The request taken whole: the headers are read in place, not copied out.
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let max = gw.sh.settings.gateway.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match read_body(body, declared, max as usize).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            let size = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .map(|v| format!("{v} bytes"))
                .unwrap_or_else(|| "the body".into());
            gw.sh.gateway.count("", "too_large", "none", 1);
            let a = Answer::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "null",
                -32600,
                &format!("request of {size} is over the gateway's limit of {max} bytes (gateway.max_body_bytes)"),
            );
            return reply(a.status, a.body, None);
        }
        Err(BodyError::Broken(e)) => {
            let a = Answer::error(
                StatusCode::BAD_REQUEST,
                "null",
                -32600,
                &format!("cannot read the request body: {e}"),
            );
            return reply(a.status, a.body, None);
        }
    };
    let t0 = Instant::now();
    let a = gw.handle(peer.ip(), body).await;
    metrics::observe(&gw.sh.gateway.latency, t0.elapsed());
    let mut r = reply(a.status, a.body, Some(&a.upstream));
    if a.status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

enum Parsed {
    Single(Call),
    Batch(Vec<Result<Call, String>>),
}

/// The gateway's decoding of a request body, as the fuzz targets drive it
/// (`crates/fuzz`): the number of calls it holds (each rebuilt as the JSON forwarded
/// upstream), or the message of the error answered.
pub fn decode_request(body: &[u8]) -> Result<usize, String> {
    match parse(body) {
        Ok(Parsed::Single(c)) => {
            let _ = (c.to_json(), is_send(&c.method));
            Ok(1)
        }
        Ok(Parsed::Batch(items)) => {
            for c in items.iter().flatten() {
                let _ = (c.to_json(), is_send(&c.method));
            }
            Ok(items.len())
        }
        Err(a) => Err(String::from_utf8_lossy(&a.body).into_owned()),
    }
}

fn parse(body: &[u8]) -> Result<Parsed, Answer> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<Box<RawValue>> = serde_json::from_slice(body).map_err(|e| {
            Answer::error(StatusCode::OK, "null", -32700, &format!("parse error: {e}"))
        })?;
        Ok(Parsed::Batch(
            items
                .into_iter()
                .map(|raw| {
                    serde_json::from_str::<Call>(raw.get())
                        .map_err(|e| format!("invalid request: {e}"))
                })
                .collect(),
        ))
    } else {
        match serde_json::from_slice::<Call>(body) {
            Ok(c) => Ok(Parsed::Single(c)),
            Err(e) if e.is_data() => Err(Answer::error(
                StatusCode::OK,
                "null",
                -32600,
                &format!("invalid request: {e} (a JSON-RPC call is an object with a `method`)"),
            )),
            Err(e) => Err(Answer::error(
                StatusCode::OK,
                "null",
                -32700,
                &format!("parse error: {e}"),
            )),
        }
    }
}

/// A client error with its causes ("client error (Connect): tcp connect error: Connection
/// refused"): hyper's top-level message alone does not say what happened.
fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Why an upstream call failed.
#[derive(Debug)]
enum UpErr {
    /// No connection, reset, bad answer: another client may serve it.
    Transport(String),
    /// It did not answer in time.
    Timeout,
}

impl Gw {
    /// Token bucket per client address (gateway.rate_limit).
    fn admit(&self, ip: IpAddr, calls: usize) -> bool {
        self.buckets.admit(ip, calls)
    }

    /// What a caller over the rate limit is told.
    fn rate_limited(&self) -> String {
        format!(
            "rate limit: {} calls per second per client address (gateway.rate_limit); retry after 1s",
            self.sh.settings.gateway.rate_limit
        )
    }

    async fn post(&self, up: &Upstream, body: Bytes, relayed: bool) -> Result<Bytes, UpErr> {
        use http_body_util::BodyExt;
        let mut req = axum::http::Request::post(up.url.clone())
            .header(header::CONTENT_TYPE, "application/json");
        if relayed {
            req = req.header(RELAYED, "1");
        }
        let req = req
            .body(http_body_util::Full::new(body))
            .map_err(|e| UpErr::Transport(e.to_string()))?;
        let timeout = self.sh.settings.gateway.timeout.get();
        match tokio::time::timeout(timeout, async {
            let r = self
                .http
                .request(req)
                .await
                .map_err(|e| describe_client_error(&e))?;
            r.into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| e.to_string())
        })
        .await
        {
            Err(_) => Err(UpErr::Timeout),
            Ok(Err(e)) => Err(UpErr::Transport(e)),
            Ok(Ok(b)) => Ok(b),
        }
    }

    /// A read: the best client, once more on the next after a transport error.
    async fn read(&self, ups: &super::Upstreams, body: Bytes, id: &str) -> Answer {
        let mut last = String::new();
        for (i, up) in ups.ranked.iter().take(2).enumerate() {
            if i > 0 {
                self.sh.gateway.failover_retries.inc();
            }
            match self.post(up, body.clone(), false).await {
                Ok(b) => {
                    return Answer {
                        status: StatusCode::OK,
                        body: b,
                        upstream: up.name.clone(),
                    }
                }
                Err(UpErr::Timeout) => {
                    return Answer::error(
                        StatusCode::GATEWAY_TIMEOUT,
                        id,
                        -32000,
                        &format!(
                            "{} did not answer within {} (gateway.timeout)",
                            up.name, self.sh.settings.gateway.timeout
                        ),
                    )
                }
                Err(UpErr::Transport(e)) => {
                    tracing::debug!(upstream = %up.name, "gateway read failed: {e}");
                    last = format!("{}: {e}", up.name);
                }
            }
        }
        Answer::error(
            StatusCode::BAD_GATEWAY,
            id,
            -32000,
            &format!("no execution client answered: {last}"),
        )
    }

    /// `client` missed the sends from `at` on (the earliest such time is kept).
    fn missed_by(&self, client: &str, at: Instant) {
        let mut m = lock(&self.missed);
        let e = m.entry(client.to_string()).or_insert(at);
        *e = (*e).min(at);
    }

    /// Keeps sends for clients that come back ([`replay_loop`]).
    fn remember(&self, sends: &[&Call]) {
        let now = Instant::now();
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        for c in sends {
            if let Some(p) = &c.params {
                r.push_back((now, p.get().to_string()));
            }
        }
        while r.len() > REPLAY_MAX
            || r.front()
                .is_some_and(|(at, _)| now.duration_since(*at) > REPLAY_WINDOW)
        {
            r.pop_front();
        }
    }

    /// Send to every healthy client at once; answers from each, in rank order.
    async fn broadcast(&self, ups: &super::Upstreams, body: Bytes) -> Vec<(String, Option<Json>)> {
        let mut order: Vec<&Upstream> = ups.ranked.iter().collect();
        for h in &ups.healthy {
            if !order.iter().any(|u| u.name == h.name) {
                order.push(h);
            }
        }
        let sent_at = Instant::now();
        let answers =
            futures::future::join_all(order.iter().map(|u| self.post(u, body.clone(), true))).await;
        order
            .into_iter()
            .zip(answers)
            .map(|(u, a)| {
                if a.is_err() {
                    self.missed_by(&u.name, sent_at);
                }
                (
                    u.name.clone(),
                    a.ok().and_then(|b| serde_json::from_slice::<Json>(&b).ok()),
                )
            })
            .collect()
    }

    async fn handle(&self, ip: IpAddr, body: Bytes) -> Answer {
        let parsed = match parse(&body) {
            Ok(p) => p,
            Err(a) => {
                self.sh.gateway.count("", "invalid", "none", 1);
                return a;
            }
        };
        let calls = match &parsed {
            Parsed::Single(_) => 1,
            Parsed::Batch(b) => b.len(),
        };
        let max_batch = self.sh.settings.gateway.max_batch as usize;
        if let Parsed::Batch(b) = &parsed {
            if b.is_empty() {
                return Answer::error(
                    StatusCode::OK,
                    "null",
                    -32600,
                    "invalid request: empty batch",
                );
            }
            if b.len() > max_batch {
                self.sh.gateway.count("", "invalid", "none", 1);
                return Answer::error(
                    StatusCode::OK,
                    "null",
                    -32600,
                    &format!(
                        "batch of {} calls is over the gateway's limit of {max_batch} (gateway.max_batch): split it",
                        b.len()
                    ),
                );
            }
        }
        if !self.admit(ip, calls) {
            self.sh
                .gateway
                .count("", "rate_limited", "none", calls as u64);
            return Answer::error(
                StatusCode::TOO_MANY_REQUESTS,
                "null",
                -32005,
                &self.rate_limited(),
            );
        }
        // The method policy (gateway.allow): answered here, whatever the clients are.
        if let Parsed::Single(c) = &parsed {
            if let Some(why) = self.refused(&c.method) {
                return Answer::error(StatusCode::OK, &c.id_text(), -32601, &why);
            }
        }
        // Answers about finalized blocks, from the cache: looked up by the call as it
        // came; its rule (which parses the params) only on a miss.
        let key = match (&parsed, &self.cache) {
            (Parsed::Single(c), Some(_)) if cache::may_keep(&c.method) => Some(Cache::key(
                &c.method,
                c.params.as_deref().map(RawValue::get),
            )),
            _ => None,
        };
        if let (Some(key), Some(cache), Parsed::Single(c)) = (&key, &self.cache, &parsed) {
            if let Some(result) = cache.get(key) {
                self.sh.gateway.cache_hits.inc();
                self.sh.gateway.count(&c.method, "ok", "cache", 1);
                let mut body = Vec::with_capacity(40 + result.len());
                body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
                body.extend_from_slice(c.id_text().as_bytes());
                body.extend_from_slice(br#","result":"#);
                body.extend_from_slice(&result);
                body.push(b'}');
                return Answer {
                    status: StatusCode::OK,
                    body: Bytes::from(body),
                    upstream: "cache".into(),
                };
            }
            self.sh.gateway.cache_misses.inc();
        }
        let cacheable = match (key, &parsed) {
            (Some(key), Parsed::Single(c)) => {
                cache::rule(&c.method, c.params.as_deref().map(RawValue::get)).map(|r| (key, r))
            }
            _ => None,
        };
        let ups = self.sh.upstreams();
        let id = match &parsed {
            Parsed::Single(c) => c.id_text(),
            _ => "null".into(),
        };
        if ups.ranked.is_empty() && ups.healthy.is_empty() {
            let (m, n) = match &parsed {
                Parsed::Single(c) => (c.method.as_str(), 1),
                Parsed::Batch(b) => ("", b.len() as u64),
            };
            self.sh.gateway.count(m, "no_upstream", "none", n);
            return Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                &id,
                -32000,
                &format!("no healthy execution client: {}", ups.why_none),
            );
        }
        match parsed {
            Parsed::Single(c) if is_send(&c.method) => {
                self.remember(&[&c]);
                let answers = self.broadcast(&ups, body).await;
                match pick_send(&answers, &ups.active).map(|i| &answers[i]) {
                    Some((name, Some(a))) => {
                        let status = if a.get("result").is_some() {
                            "ok"
                        } else {
                            "error"
                        };
                        self.sh.gateway.count(&c.method, status, "all", 1);
                        Answer {
                            status: StatusCode::OK,
                            body: Bytes::from(a.to_string()),
                            upstream: name.clone(),
                        }
                    }
                    _ => {
                        self.sh.gateway.count(&c.method, "upstream_error", "all", 1);
                        Answer::error(
                            StatusCode::BAD_GATEWAY,
                            &id,
                            -32000,
                            "no execution client took the transaction (none answered)",
                        )
                    }
                }
            }
            Parsed::Single(c) => {
                if ups.ranked.is_empty() {
                    self.sh.gateway.count(&c.method, "no_upstream", "none", 1);
                    return Answer::error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &id,
                        -32000,
                        &format!("no synced execution client: {}", ups.why_none),
                    );
                }
                if c.method == "eth_getLogs" {
                    if let Some(why) = self.logs_too_wide(&c).await {
                        self.sh.gateway.count(&c.method, "refused", "gateway", 1);
                        return Answer::error(StatusCode::OK, &id, -32005, &why);
                    }
                }
                let mut a = self.read(&ups, body, &id).await;
                let max_logs = self.sh.settings.gateway.logs_max_results;
                if c.method == "eth_getLogs" && a.status == StatusCode::OK {
                    if let Some(n) = cache::result_len(&a.body).filter(|n| *n as u64 > max_logs) {
                        a = Answer::error(
                            StatusCode::OK,
                            &id,
                            -32005,
                            &format!(
                                "query returned {n} logs, more than the gateway's limit of {max_logs} \
                                 (gateway.logs_max_results): narrow the block range or the filter"
                            ),
                        );
                    }
                }
                let status = if a.status != StatusCode::OK {
                    "upstream_error"
                } else if memchr(&a.body, br#""error""#) {
                    "error"
                } else {
                    "ok"
                };
                if let (Some((key, rule)), Some(cache), "ok") = (&cacheable, &self.cache, status) {
                    if cache.offer(key, *rule, &a.body) {
                        self.sh.gateway.cache_bytes.set(cache.usage().0 as i64);
                    }
                }
                self.sh.gateway.count(&c.method, status, &a.upstream, 1);
                a
            }
            Parsed::Batch(items) => self.batch(&ups, body, items).await,
        }
    }

    /// Why an `eth_getLogs` call spans too many blocks (gateway.logs_max_blocks); its
    /// tags are read at the best client's head.
    async fn logs_too_wide(&self, c: &Call) -> Option<String> {
        let range = cache::LogsRange::of(c.params.as_deref().map(RawValue::get))?;
        let head = if range.needs_head() {
            quantity(&self.call("eth_blockNumber", json!([])).await?)?
        } else {
            0
        };
        let span = range.span(head);
        let max = self.sh.settings.gateway.logs_max_blocks;
        (span > max).then(|| {
            format!(
                "eth_getLogs over {span} blocks is more than the gateway's limit of {max} \
                 (gateway.logs_max_blocks): query a narrower range"
            )
        })
    }

    /// Why `method` is not forwarded (gateway.allow), counted; `None` when it is.
    fn refused(&self, method: &str) -> Option<String> {
        match chainctl_core::methods::decide(&self.sh.settings.gateway.allow, method) {
            chainctl_core::methods::Decision::Forward => None,
            chainctl_core::methods::Decision::Refuse(why) => {
                self.sh.gateway.count(method, "refused", "gateway", 1);
                Some(why)
            }
        }
    }

    /// A batch: reads in one request to the best client, transactions to every healthy
    /// one, answers put back in the order of the calls; calls the method policy refuses
    /// are answered in place by the gateway.
    async fn batch(
        &self,
        ups: &super::Upstreams,
        body: Bytes,
        items: Vec<Result<Call, String>>,
    ) -> Answer {
        let refusals: Vec<Option<String>> = items
            .iter()
            .map(|c| c.as_ref().ok().and_then(|c| self.refused(&c.method)))
            .collect();
        let any_invalid = items.iter().any(Result::is_err) || refusals.iter().any(Option::is_some);
        // The calls forwarded: well formed and allowed.
        let forwarded = || {
            items
                .iter()
                .zip(&refusals)
                .filter(|(_, r)| r.is_none())
                .filter_map(|(c, _)| c.as_ref().ok())
        };
        let sends = forwarded().filter(|c| is_send(&c.method)).count();
        let reads = forwarded().count() - sends;
        // Fast path: only reads, all well formed: forward the body as it came.
        if sends == 0 && !any_invalid && !ups.ranked.is_empty() {
            let a = self.read(ups, body, "null").await;
            for c in items.iter().flatten() {
                self.sh.gateway.count(&c.method, "ok", &a.upstream, 1);
            }
            return a;
        }
        let join = |calls: Vec<&Call>| {
            let parts: Vec<String> = calls.iter().map(|c| c.to_json()).collect();
            Bytes::from(format!("[{}]", parts.join(",")))
        };
        let read_calls: Vec<&Call> = forwarded().filter(|c| !is_send(&c.method)).collect();
        let send_calls: Vec<&Call> = forwarded().filter(|c| is_send(&c.method)).collect();
        let mut read_answers: Vec<Json> = Vec::new();
        let mut read_upstream = "none".to_string();
        if reads > 0 {
            if ups.ranked.is_empty() {
                read_answers = read_calls
                    .iter()
                    .map(|c| {
                        serde_json::from_str(&error_json(
                            &c.id_text(),
                            -32000,
                            &format!("no synced execution client: {}", ups.why_none),
                        ))
                        .unwrap_or_default()
                    })
                    .collect();
            } else {
                let a = self.read(ups, join(read_calls.clone()), "null").await;
                read_upstream = a.upstream.clone();
                read_answers = match serde_json::from_slice::<Json>(&a.body) {
                    Ok(Json::Array(v)) => v,
                    Ok(one) => read_calls
                        .iter()
                        .map(|c| {
                            let mut e = one.clone();
                            e["id"] = serde_json::from_str(&c.id_text()).unwrap_or_default();
                            e
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
            }
        }
        let send_answers = if sends > 0 {
            self.remember(&send_calls);
            self.broadcast(ups, join(send_calls.clone())).await
        } else {
            Vec::new()
        };
        // Answers by id, in call order (several with one id are matched in order).
        let mut out: Vec<Json> = Vec::with_capacity(items.len());
        let mut used_read = vec![false; read_answers.len()];
        let mut used_send: Vec<Vec<bool>> = send_answers
            .iter()
            .map(|(_, a)| vec![false; a.as_ref().and_then(Json::as_array).map_or(0, Vec::len)])
            .collect();
        for (item, refusal) in items.iter().zip(&refusals) {
            let c = match item {
                Err(why) => {
                    self.sh.gateway.count("", "invalid", "none", 1);
                    out.push(
                        serde_json::from_str(&error_json("null", -32600, why)).unwrap_or_default(),
                    );
                    continue;
                }
                Ok(c) => c,
            };
            if let Some(why) = refusal {
                out.push(
                    serde_json::from_str(&error_json(&c.id_text(), -32601, why))
                        .unwrap_or_default(),
                );
                continue;
            }
            let id: Json = serde_json::from_str(&c.id_text()).unwrap_or_default();
            if is_send(&c.method) {
                // Each client's answer to this call (the first unused one with its id).
                let mut answers: Vec<(String, Option<Json>)> = Vec::new();
                for (k, (name, a)) in send_answers.iter().enumerate() {
                    let arr = a.as_ref().and_then(Json::as_array);
                    let j = arr.and_then(|arr| {
                        (0..arr.len()).find(|&j| !used_send[k][j] && arr[j]["id"] == id)
                    });
                    if let Some(j) = j {
                        used_send[k][j] = true;
                    }
                    answers.push((name.clone(), j.and_then(|j| arr.map(|arr| arr[j].clone()))));
                }
                let chosen: Option<Json> =
                    pick_send(&answers, &ups.active).and_then(|i| answers[i].1.clone());
                let status = match &chosen {
                    Some(a) if a.get("result").is_some() => "ok",
                    Some(_) => "error",
                    None => "upstream_error",
                };
                self.sh.gateway.count(&c.method, status, "all", 1);
                out.push(chosen.unwrap_or_else(|| {
                    serde_json::from_str(&error_json(
                        &c.id_text(),
                        -32000,
                        "no execution client took the transaction (none answered)",
                    ))
                    .unwrap_or_default()
                }));
            } else {
                let j =
                    (0..read_answers.len()).find(|&j| !used_read[j] && read_answers[j]["id"] == id);
                let a = match j {
                    Some(j) => {
                        used_read[j] = true;
                        read_answers[j].clone()
                    }
                    None => serde_json::from_str(&error_json(
                        &c.id_text(),
                        -32000,
                        "the execution client's answer did not include this call",
                    ))
                    .unwrap_or_default(),
                };
                let status = if a.get("error").is_some() {
                    "error"
                } else {
                    "ok"
                };
                self.sh.gateway.count(&c.method, status, &read_upstream, 1);
                out.push(a);
            }
        }
        Answer {
            status: StatusCode::OK,
            body: Bytes::from(Json::Array(out).to_string()),
            upstream: if sends > 0 {
                "all".into()
            } else {
                read_upstream
            },
        }
    }

    /// One call to the best client that answers it, for the head feed and subscriptions.
    async fn call(&self, method: &str, params: Json) -> Option<Json> {
        let body = Bytes::from(
            json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}).to_string(),
        );
        let ups = self.sh.upstreams();
        for up in ups.ranked.iter().take(2) {
            if let Ok(b) = self.post(up, body.clone(), false).await {
                if let Ok(v) = serde_json::from_slice::<Json>(&b) {
                    if let Some(r) = v.get("result") {
                        return Some(r.clone());
                    }
                }
            }
        }
        None
    }
}

fn memchr(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Follows the chain on the best client and publishes every new block once, in order,
/// while anyone is subscribed. After a failover the next client picks up from the last
/// height published: nothing is skipped (missing heights are fetched) or repeated.
async fn head_feed(gw: Arc<Gw>) {
    let mut last: Option<u64> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if gw.heads.receiver_count() == 0 {
            last = None;
            continue;
        }
        let Some(n) = gw
            .call("eth_blockNumber", json!([]))
            .await
            .and_then(|v| u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok())
        else {
            continue;
        };
        let from = match last {
            None => {
                // Subscribers see blocks from the one after the head at their start.
                last = Some(n);
                continue;
            }
            Some(l) => l + 1,
        };
        for h in from..=n {
            let Some(block) = gw
                .call("eth_getBlockByNumber", json!([format!("0x{h:x}"), false]))
                .await
                .filter(|b| b.is_object())
            else {
                break;
            };
            let _ = gw.heads.send(Arc::new(block));
            last = Some(h);
        }
    }
}

/// Follows the finalized height on the best client, for the cache: what it may keep.
async fn finality_feed(gw: Arc<Gw>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = gw
            .call("eth_getBlockByNumber", json!(["finalized", false]))
            .await
            .and_then(|b| quantity(&b["number"]));
        if let (Some(n), Some(cache)) = (n, &gw.cache) {
            cache.finalized_at_least(n);
        }
    }
}

async fn ws_upgrade(
    State(gw): State<Arc<Gw>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let max = gw.sh.settings.gateway.max_body_bytes as usize;
    let ip = peer.ip();
    let limit = gw.sh.settings.gateway.max_ws_sessions;
    {
        let mut open = lock(&gw.ws_open);
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            gw.sh.gateway.count("", "too_many_sessions", "none", 1);
            let body = error_json(
                "null",
                -32005,
                &format!(
                    "{ip} holds {limit} WebSocket sessions, the gateway's limit per address \
                     (gateway.max_ws_sessions): close one first"
                ),
            );
            return reply(StatusCode::TOO_MANY_REQUESTS, body, None);
        }
        *n += 1;
    }
    // The session's place is given back however it ends, even if the upgrade fails.
    let guard = SessionSlot { gw: gw.clone(), ip };
    ws.max_message_size(max)
        .on_upgrade(move |socket| async move {
            let _slot = guard;
            ws_session(gw, ip, socket).await
        })
        .into_response()
}

/// One open WebSocket session of an address, counted until dropped.
struct SessionSlot {
    gw: Arc<Gw>,
    ip: IpAddr,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.gw.ws_open);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

enum Sub {
    Heads,
    Logs(Json),
}

async fn ws_session(gw: Arc<Gw>, ip: IpAddr, socket: WebSocket) {
    use futures::{SinkExt, StreamExt};
    gw.sh.gateway.ws_sessions.inc();
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(4096);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(Message::Text(m.into())).await.is_err() {
                break;
            }
        }
    });
    let subs: Arc<Mutex<HashMap<String, Sub>>> = Arc::new(Mutex::new(HashMap::new()));
    // Subscribe to heads now: a subscription made later still sees every block after it.
    let mut heads = gw.heads.subscribe();
    let feeder = {
        let (gw, subs, out) = (gw.clone(), subs.clone(), out_tx.clone());
        tokio::spawn(async move {
            loop {
                let block = match heads.recv().await {
                    Ok(b) => b,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "a WebSocket client reads too slowly: heads dropped"
                        );
                        continue;
                    }
                    Err(_) => break,
                };
                let list: Vec<(String, Option<Json>)> = {
                    let s = subs.lock().unwrap_or_else(|e| e.into_inner());
                    s.iter()
                        .map(|(id, sub)| {
                            (
                                id.clone(),
                                match sub {
                                    Sub::Heads => None,
                                    Sub::Logs(f) => Some(f.clone()),
                                },
                            )
                        })
                        .collect()
                };
                for (id, filter) in list {
                    match filter {
                        None => {
                            let mut header = (*block).clone();
                            if let Some(o) = header.as_object_mut() {
                                o.remove("transactions");
                            }
                            let note = json!({"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":id,"result":header}});
                            if out.send(note.to_string()).await.is_err() {
                                return;
                            }
                        }
                        Some(mut f) => {
                            f["blockHash"] = block["hash"].clone();
                            if let Some(Json::Array(logs)) =
                                gw.call("eth_getLogs", json!([f])).await
                            {
                                for l in logs {
                                    let note = json!({"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":id,"result":l}});
                                    if out.send(note.to_string()).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        })
    };
    while let Some(Ok(msg)) = stream.next().await {
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            Message::Close(_) => break,
            _ => continue,
        };
        let answer = match serde_json::from_str::<Call>(&text) {
            Ok(c) if c.method == "eth_subscribe" || c.method == "eth_unsubscribe" => {
                let limits = &gw.sh.settings.gateway;
                if let Some(why) = gw.refused(&c.method) {
                    error_json(&c.id_text(), -32601, &why)
                } else if !gw.admit(ip, 1) {
                    gw.sh.gateway.count(&c.method, "rate_limited", "none", 1);
                    error_json(&c.id_text(), -32005, &gw.rate_limited())
                } else {
                    gw.sh.gateway.count(&c.method, "ok", "gateway", 1);
                    subscription(&subs, &c, limits.max_subscriptions as usize)
                }
            }
            _ => {
                let a = gw.handle(ip, Bytes::from(text)).await;
                String::from_utf8_lossy(&a.body).into_owned()
            }
        };
        if out_tx.send(answer).await.is_err() {
            break;
        }
    }
    feeder.abort();
    drop(out_tx);
    let _ = writer.await;
    gw.sh.gateway.ws_sessions.dec();
}

fn subscription(subs: &Mutex<HashMap<String, Sub>>, c: &Call, max: usize) -> String {
    let id = c.id_text();
    let params: Json = c
        .params
        .as_ref()
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or(Json::Null);
    let mut s = subs.lock().unwrap_or_else(|e| e.into_inner());
    if c.method == "eth_unsubscribe" {
        let sid = params[0].as_str().unwrap_or_default();
        return format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{}}}"#,
            s.remove(sid).is_some()
        );
    }
    if s.len() >= max {
        return error_json(
            &id,
            -32005,
            &format!(
                "this session holds {max} subscriptions, the gateway's limit \
                 (gateway.max_subscriptions): eth_unsubscribe one first"
            ),
        );
    }
    let sub = match params[0].as_str() {
        Some("newHeads") => Sub::Heads,
        Some("logs") => {
            let mut f = params.get(1).cloned().unwrap_or_else(|| json!({}));
            if !f.is_object() {
                return error_json(&id, -32602, "logs filter must be an object");
            }
            if let Some(o) = f.as_object_mut() {
                o.retain(|k, _| k == "address" || k == "topics");
            }
            Sub::Logs(f)
        }
        other => {
            return error_json(
                &id,
                -32602,
                &format!(
                    "unsupported subscription {other:?}: the gateway serves newHeads and logs"
                ),
            )
        }
    };
    let sid = format!("0x{}", hex::encode(rand::random::<[u8; 16]>()));
    s.insert(sid.clone(), sub);
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"{sid}"}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client the monitor never saw down (killed and restarted between two looks) but
    /// to which a send could not be delivered is given the sends from just before the
    /// first it missed — before, only a client seen unhealthy was (seen under `chainctl
    /// chaos` restart-all: clients back in 0.5 s never left the healthy set, and a
    /// sender's nonce held only by a backup left its later transactions waiting).
    #[test]
    fn a_client_a_send_missed_is_given_what_it_missed_even_if_never_seen_down() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let recent: std::collections::VecDeque<(Instant, String)> = (0..10)
            .map(|s| (at(s), format!("[\"0x{s:02x}\"]")))
            .collect();
        let before: BTreeSet<String> = ["el-0".to_string(), "el-1".to_string()].into();
        let mut missed = HashMap::new();
        missed.insert("el-1".to_string(), at(6));
        // Seen healthy all along, nothing missed: nothing.
        assert_eq!(replay_due(&before, &mut missed, "el-0"), None);
        // Missed the send at 6 s: from 5 s on, once.
        let since = replay_due(&before, &mut missed, "el-1").expect("due");
        assert_eq!(since, Some(at(5)));
        assert_eq!(
            replay_of(&recent, since, at(10)),
            [
                "[\"0x05\"]",
                "[\"0x06\"]",
                "[\"0x07\"]",
                "[\"0x08\"]",
                "[\"0x09\"]"
            ]
        );
        assert_eq!(
            replay_due(&before, &mut missed, "el-1"),
            None,
            "the mark is taken"
        );
        // Back after the monitor saw it down: the whole window (the older sends are
        // past it).
        assert_eq!(replay_due(&before, &mut missed, "el-2"), Some(None));
        assert_eq!(replay_of(&recent, None, at(65)).len(), 5);
    }

    /// The answer to a sent transaction: an active client's acceptance, never a backup's
    /// hiding an active client's refusal; "already known" is an acceptance; with no
    /// active client answering, the first acceptance of any.
    #[test]
    fn a_send_is_taken_only_when_a_block_builder_took_it() {
        let ok = |h: &str| Some(json!({"jsonrpc": "2.0", "id": 1, "result": h}));
        let refused = |m: &str| {
            Some(json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": m}}))
        };
        let answers = |list: Vec<(&str, Option<Json>)>| -> Vec<(String, Option<Json>)> {
            list.into_iter().map(|(n, a)| (n.to_string(), a)).collect()
        };
        let active: BTreeSet<String> = ["reth-0".to_string(), "reth-1".to_string()].into();
        // Reth at its per-sender limit refuses; the backup takes it: the refusal answers.
        let a = answers(vec![
            ("builtin-0", ok("0xab")),
            ("reth-0", refused("txpool is full")),
            ("reth-1", refused("txpool is full")),
        ]);
        assert_eq!(pick_send(&a, &active), Some(1));
        // One active client took it: that acceptance.
        let a = answers(vec![
            ("builtin-0", ok("0xab")),
            ("reth-0", refused("txpool is full")),
            ("reth-1", ok("0xab")),
        ]);
        assert_eq!(pick_send(&a, &active), Some(2));
        // An active client already has it (gossip was first): a success answers.
        let a = answers(vec![
            ("builtin-0", ok("0xab")),
            ("reth-0", refused("already known")),
            ("reth-1", None),
        ]);
        assert_eq!(pick_send(&a, &active), Some(0));
        let a = answers(vec![("reth-0", refused("Already known"))]);
        assert_eq!(pick_send(&a, &active), Some(0));
        // No active client answered (both down): the first acceptance of any.
        let a = answers(vec![
            ("reth-0", None),
            ("builtin-0", refused("nonce too low")),
            ("builtin-1", ok("0xab")),
        ]);
        assert_eq!(pick_send(&a, &active), Some(2));
        // No validators (plain services): the first acceptance, else the first answer.
        let a = answers(vec![("a", refused("underpriced")), ("b", refused("x"))]);
        assert_eq!(pick_send(&a, &BTreeSet::new()), Some(0));
        assert_eq!(pick_send(&answers(vec![("a", None)]), &active), None);
    }

    #[test]
    fn parse_tells_single_batch_and_garbage_apart() {
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":7,"method":"eth_blockNumber"}"#),
            Ok(Parsed::Single(c)) if c.id_text() == "7"
        ));
        match parse(br#" [{"id":1,"method":"a"}, {"id":2}] "#) {
            Ok(Parsed::Batch(b)) => {
                assert!(b[0].is_ok());
                assert!(b[1].as_ref().is_err_and(|e| e.contains("method")));
            }
            _ => panic!("batch expected"),
        }
        let Err(a) = parse(b"{not json") else {
            panic!("parse error expected")
        };
        assert!(String::from_utf8_lossy(&a.body).contains("-32700"));
        let Err(a) = parse(br#"{"id":1}"#) else {
            panic!("invalid request expected")
        };
        assert!(String::from_utf8_lossy(&a.body).contains("-32600"));
    }

    #[test]
    fn calls_rebuild_as_json() {
        let c: Call =
            serde_json::from_str(r#"{"id":"x","method":"m","params":[1,{"a":2}]}"#).unwrap();
        let v: Json = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":"x","method":"m","params":[1,{"a":2}]})
        );
        assert_eq!(method_label("eth_call"), "eth_call");
        assert_eq!(method_label("evil_{}"), "other");
    }
}
