//! A faithful simulator of the GLM Image gateway, built into batchgen.
//!
//! Why this exists: the real gateway is paid and out of reach from test
//! machines. The simulator speaks the documented wire format (both submit and
//! status endpoints, both error shapes, both completed shapes), runs each
//! request through QUEUED → PROCESSING → COMPLETED/FAILED/ERROR, hosts real
//! PNG/JPEG files, injects faults on request, and keeps a [`Ledger`] of what it
//! was asked and what it charged, so tests can prove that no row was paid
//! twice and every file on disk is what the gateway sent.
//!
//! Fault decisions are drawn from a hash of (`--fault-seed`, what is being
//! decided, how many times it was asked), so a run is reproducible and a
//! retry of a failed call is a fresh draw.
//!
//! Cancellation: [`start`] serves until [`SimHandle::stop`] is called or the
//! handle is dropped; `batchgen sim` until Ctrl-C.

pub mod render;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::api::wire::{self, code, Output, Phase, Reply, WireImage};
use crate::api::Format;
use crate::disk::hex;
use crate::plan::{Kind, SIZE_PRESETS};

/// How the simulator behaves. Every field is a `batchgen sim` flag.
#[derive(Clone, Debug, clap::Args)]
pub struct SimConfig {
    /// The only API key accepted (default: PIXAZO_API_KEY if set, else any non-empty key).
    #[arg(long, env = "PIXAZO_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Shortest time from submit to a finished request, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub min_latency_ms: u64,
    /// Longest time from submit to a finished request, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 4000)]
    pub max_latency_ms: u64,
    /// How submit answers: `queued` (a request_id to poll), `images` (finished images at once) or
    /// `completed-id` (COMPLETED with a request_id but no images).
    #[arg(long, value_enum, default_value_t = SubmitShape::Queued)]
    pub submit_shape: SubmitShape,
    /// How a finished status reads: `workflow` (status + output.media_url), `images` (images[].url,
    /// no status) or `mixed` (either, per request, with status words in varying letter case).
    #[arg(long, value_enum, default_value_t = StatusShape::Mixed)]
    pub status_shape: StatusShape,
    /// Share of submits answered 500 (not accepted, not charged).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub submit_5xx_rate: f64,
    /// Share of status calls answered 500.
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub status_5xx_rate: f64,
    /// Share of image downloads answered 500.
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub download_5xx_rate: f64,
    /// Share of image downloads cut short (a truncated file, sent as if whole).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub truncate_rate: f64,
    /// Share of accepted requests that end FAILED (charged).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub failed_rate: f64,
    /// Share of accepted requests that end ERROR (not charged).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub error_rate: f64,
    /// Most submits per second; more are answered 429 with Retry-After.
    #[arg(long, value_name = "PER_SEC")]
    pub rate_limit: Option<u32>,
    /// Seconds named in Retry-After (and the message) of a 429.
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Wallet in USD; a submit it cannot pay for is answered INSUFFICIENT_FUNDS. Unlimited if unset.
    #[arg(long, value_name = "USD")]
    pub wallet_usd: Option<f64>,
    /// Charge per text-to-image image, USD.
    #[arg(long, value_name = "USD", default_value_t = 0.05)]
    pub price_text_to_image: f64,
    /// Charge per image-to-image image, USD.
    #[arg(long, value_name = "USD", default_value_t = 0.05)]
    pub price_image_to_image: f64,
    /// Share of submits accepted and charged, then answered 502 with a proxy's HTML page
    /// (a front end that gave up waiting for a gateway that did the work).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub submit_502_rate: f64,
    /// Share of submits accepted and charged, then never answered (until the simulator stops).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub submit_hang_rate: f64,
    /// Share of submits answered with a 307 redirect to --redirect-to (not accepted).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub submit_redirect_rate: f64,
    /// Share of status calls answered with a 307 redirect to --redirect-to.
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub status_redirect_rate: f64,
    /// Where redirects point (another origin: a client must not follow with the key).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:9/elsewhere"
    )]
    pub redirect_to: String,
    /// Share of status replies padded past 8 MiB (an oversized reply).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub oversized_rate: f64,
    /// Finished requests carry this many images more than were asked for (charged for those asked).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub extra_images: u32,
    /// Seed of the fault draws (same seed, same faults).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub fault_seed: u64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            key: None,
            min_latency_ms: 1000,
            max_latency_ms: 4000,
            submit_shape: SubmitShape::Queued,
            status_shape: StatusShape::Mixed,
            submit_5xx_rate: 0.0,
            status_5xx_rate: 0.0,
            download_5xx_rate: 0.0,
            truncate_rate: 0.0,
            failed_rate: 0.0,
            error_rate: 0.0,
            rate_limit: None,
            retry_after_secs: 1,
            wallet_usd: None,
            price_text_to_image: 0.05,
            price_image_to_image: 0.05,
            submit_502_rate: 0.0,
            submit_hang_rate: 0.0,
            submit_redirect_rate: 0.0,
            status_redirect_rate: 0.0,
            redirect_to: "http://127.0.0.1:9/elsewhere".into(),
            oversized_rate: 0.0,
            extra_images: 0,
            fault_seed: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SubmitShape {
    Queued,
    Images,
    /// `COMPLETED` with a request id and no images: the images are polled for.
    CompletedId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusShape {
    Workflow,
    Images,
    Mixed,
}

/// What the simulator was asked, served and charged.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ledger {
    pub submit_calls: u64,
    pub accepted: u64,
    /// Accepted submissions per canonical request (kind + sorted JSON body).
    pub submissions: BTreeMap<String, u32>,
    /// Charged submissions per canonical request: more than 1 is paying twice.
    pub charges: BTreeMap<String, u32>,
    pub charged_usd_micros: u64,
    pub charged_images: u64,
    pub completed: u64,
    pub failed: u64,
    pub errored: u64,
    /// Rejections by error code (`UNAUTHORIZED`, `RATE_LIMIT_EXCEEDED`, …).
    pub rejected: BTreeMap<String, u64>,
    /// Injected faults by kind (`submit_5xx`, `truncated`, …).
    pub faults: BTreeMap<String, u64>,
    pub status_calls: u64,
    pub download_calls: u64,
    pub bytes_served: u64,
    /// SHA-256 of every whole image served, by URL path (or `data:ID/N`).
    pub files: BTreeMap<String, String>,
    /// Accepted requests whose result the client has not yet fully taken.
    pub in_flight: u64,
    pub max_in_flight: u64,
    /// How long each accepted request took to finish, in the order accepted
    /// (for the bound a perfect client would reach).
    pub latencies_ms: Vec<u64>,
}

impl Ledger {
    /// Canonical requests charged more than once.
    pub fn paid_twice(&self) -> Vec<&str> {
        self.charges
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// A running simulator. Dropping it stops the server.
pub struct SimHandle {
    pub addr: SocketAddr,
    sim: Arc<Sim>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`, the base URL to give the client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ledger(&self) -> Ledger {
        self.sim.state.lock().expect("sim state").ledger.clone()
    }

    /// Changes how the simulator behaves from now on (its requests, ledger
    /// and wallet balance stay).
    pub fn set_config(&self, cfg: SimConfig) {
        *self.sim.cfg.write().expect("sim config") = Arc::new(cfg);
    }

    /// Stops accepting connections and waits for the server to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.sim.stopping.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.sim.stopping.send_replace(true);
    }
}

/// Starts the simulator on `addr` (port 0 picks a free one).
pub async fn start(cfg: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let sim = Arc::new(Sim::new(cfg, format!("http://{addr}")));
    let app = router(sim.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SimHandle {
        addr,
        sim,
        shutdown: Some(tx),
        task: Some(task),
    })
}

struct Sim {
    cfg: std::sync::RwLock<Arc<SimConfig>>,
    base_url: String,
    state: Mutex<SimState>,
    /// Set when the simulator stops: replies held back give up.
    stopping: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct SimState {
    next_id: u64,
    jobs: HashMap<String, Job>,
    ledger: Ledger,
    /// Submit attempts per canonical request (accepted or not), for fault draws.
    attempts: HashMap<String, u64>,
    wallet_micros: Option<u64>,
    recent_submits: VecDeque<Instant>,
}

impl SimState {
    fn count_fault(&mut self, fault: &str) {
        *self.ledger.faults.entry(fault.to_string()).or_default() += 1;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Completed,
    Failed,
    Error,
}

struct Job {
    kind: Kind,
    picture: render::Picture,
    /// Images a finished reply names: those asked (`delivered`), plus `--extra-images`.
    served: u32,
    sync: bool,
    processing_at: Instant,
    done_at: Instant,
    outcome: Outcome,
    polls: u64,
    download_attempts: Vec<u64>,
    delivered: Vec<bool>,
    open: bool,
}

/// What a validated submit asks for.
struct Ask {
    picture: render::Picture,
    count: u32,
    sync: bool,
}

/// The size of an oversized reply (`--oversized-rate`).
const OVERSIZED_BYTES: usize = 8 << 20;

fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route(wire::TEXT_TO_IMAGE_SUBMIT, post(submit_t2i))
        .route(wire::IMAGE_TO_IMAGE_SUBMIT, post(submit_i2i))
        .route(
            &format!("{}{{id}}", wire::TEXT_TO_IMAGE_STATUS),
            get(status_t2i).post(status_t2i),
        )
        .route(
            wire::IMAGE_TO_IMAGE_STATUS,
            get(status_i2i).post(status_i2i),
        )
        .route("/files/{id}/{name}", get(file))
        .route("/admin/ledger", get(ledger))
        .with_state(sim)
}

impl Sim {
    fn new(cfg: SimConfig, base_url: String) -> Sim {
        let wallet_micros = cfg
            .wallet_usd
            .map(|usd| (usd.max(0.0) * 1e6).round() as u64);
        Sim {
            cfg: std::sync::RwLock::new(Arc::new(cfg)),
            base_url,
            state: Mutex::new(SimState {
                wallet_micros,
                ..SimState::default()
            }),
            stopping: tokio::sync::watch::channel(false).0,
        }
    }

    /// Adds one to a ledger counter; returns its new value.
    fn count(&self, counter: fn(&mut Ledger) -> &mut u64) -> u64 {
        let mut st = self.lock();
        let n = counter(&mut st.ledger);
        *n += 1;
        *n
    }

    /// The configuration in force.
    fn cfg(&self) -> Arc<SimConfig> {
        self.cfg.read().expect("sim config").clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().expect("sim state")
    }

    /// A reproducible draw: true with probability `rate`.
    fn chance(&self, rate: f64, what: &str, n: u64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        let h = Sha256::new()
            .chain_update(self.cfg().fault_seed.to_le_bytes())
            .chain_update(what.as_bytes())
            .chain_update(n.to_le_bytes())
            .finalize();
        let x = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        rate >= 1.0 || ((x >> 11) as f64 / (1u64 << 53) as f64) < rate
    }

    fn key_ok(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get(wire::KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or("");
        match &self.cfg().key {
            Some(k) => !k.is_empty() && given == k,
            None => !given.is_empty(),
        }
    }

    fn price_micros(&self, kind: Kind) -> u64 {
        let usd = match kind {
            Kind::TextToImage => self.cfg().price_text_to_image,
            Kind::ImageToImage => self.cfg().price_image_to_image,
        };
        (usd.max(0.0) * 1e6).round() as u64
    }

    fn latency(&self, id: &str) -> Duration {
        let cfg = self.cfg();
        let (lo, hi) = (
            cfg.min_latency_ms,
            cfg.max_latency_ms.max(cfg.min_latency_ms),
        );
        let h = Sha256::digest(id.as_bytes());
        let x = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        Duration::from_millis(lo + x % (hi - lo + 1))
    }

    fn image_url(&self, id: &str, n: usize, format: Format) -> String {
        format!("{}/files/{id}/{n}.{}", self.base_url, format.extension())
    }
}

/// An error reply in the endpoint's documented shape.
fn error(kind: Kind, status: StatusCode, code: &str, message: &str) -> Response {
    let body = match kind {
        Kind::TextToImage => Reply::nested_error(code, message),
        Kind::ImageToImage => Reply::flat_error(code, message),
    };
    (status, Json(body)).into_response()
}

fn reject(sim: &Sim, kind: Kind, status: StatusCode, code: &str, message: &str) -> Response {
    *sim.lock()
        .ledger
        .rejected
        .entry(code.to_string())
        .or_default() += 1;
    error(kind, status, code, message)
}

/// An injected fault: counted in the ledger, answered 500 in the endpoint's shape.
fn injected_500(sim: &Sim, kind: Kind, fault: &str) -> Response {
    sim.lock().count_fault(fault);
    error(
        kind,
        StatusCode::INTERNAL_SERVER_ERROR,
        code::INTERNAL_ERROR,
        "Internal server error. Please retry later.",
    )
}

async fn submit_t2i(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    submit(sim, Kind::TextToImage, headers, body).await
}

async fn submit_i2i(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    submit(sim, Kind::ImageToImage, headers, body).await
}

async fn submit(sim: Arc<Sim>, kind: Kind, headers: HeaderMap, body: Bytes) -> Response {
    let cfg = sim.cfg();
    let calls = sim.count(|l| &mut l.submit_calls);
    if sim.chance(cfg.submit_redirect_rate, "submit-redirect", calls) {
        return redirect(&sim, "submit_redirect");
    }
    if !sim.key_ok(&headers) {
        return reject(
            &sim,
            kind,
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            "Missing or invalid Ocp-Apim-Subscription-Key header",
        );
    }
    if let Some(limit) = cfg.rate_limit {
        let now = Instant::now();
        let mut st = sim.lock();
        while st
            .recent_submits
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            st.recent_submits.pop_front();
        }
        if st.recent_submits.len() >= limit as usize {
            *st.ledger
                .rejected
                .entry(code::RATE_LIMIT_EXCEEDED.into())
                .or_default() += 1;
            drop(st);
            let secs = cfg.retry_after_secs;
            let mut resp = error(
                kind,
                StatusCode::TOO_MANY_REQUESTS,
                code::RATE_LIMIT_EXCEEDED,
                &format!("Rate limit exceeded. Retry after {secs} seconds."),
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                secs.to_string().parse().expect("digits"),
            );
            return resp;
        }
        st.recent_submits.push_back(now);
    }
    let json: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            let code = validation_code(kind);
            return reject(
                &sim,
                kind,
                StatusCode::BAD_REQUEST,
                code,
                "Request body is not valid JSON",
            );
        }
    };
    let ask = match validate(kind, &json) {
        Ok(ask) => ask,
        Err(message) => {
            return reject(
                &sim,
                kind,
                StatusCode::BAD_REQUEST,
                validation_code(kind),
                &message,
            );
        }
    };
    let canonical = format!("{}:{}", kind.as_str(), json);
    let attempt = {
        let mut st = sim.lock();
        let n = st.attempts.entry(canonical.clone()).or_default();
        *n += 1;
        *n
    };
    if sim.chance(
        cfg.submit_5xx_rate,
        &format!("submit-5xx:{canonical}"),
        attempt,
    ) {
        return injected_500(&sim, kind, "submit_5xx");
    }
    let outcome = if sim.chance(cfg.error_rate, &format!("error:{canonical}"), attempt) {
        Outcome::Error
    } else if sim.chance(cfg.failed_rate, &format!("failed:{canonical}"), attempt) {
        Outcome::Failed
    } else {
        Outcome::Completed
    };
    let cost = sim.price_micros(kind) * u64::from(ask.count);
    let (id, immediate) = {
        let mut st = sim.lock();
        if st.wallet_micros.is_some_and(|wallet| wallet < cost) {
            drop(st);
            return reject(
                &sim,
                kind,
                StatusCode::FORBIDDEN,
                code::INSUFFICIENT_FUNDS,
                "Insufficient wallet balance to process request",
            );
        }
        // ERROR is "not processed and not charged"; FAILED is charged (the
        // vendor is silent, so the simulator takes the costly reading).
        if outcome != Outcome::Error {
            if let Some(wallet) = st.wallet_micros.as_mut() {
                *wallet -= cost;
            }
            st.ledger.charged_usd_micros += cost;
            st.ledger.charged_images += u64::from(ask.count);
            *st.ledger.charges.entry(canonical.clone()).or_default() += 1;
        }
        st.next_id += 1;
        let prefix = match kind {
            Kind::TextToImage => "glm-image",
            Kind::ImageToImage => "glm-image-image-to-image",
        };
        let h = hex(&Sha256::digest(
            format!("{}:{}", st.next_id, canonical).as_bytes(),
        ));
        let id = format!(
            "{prefix}_{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        let immediate = cfg.submit_shape != SubmitShape::Queued;
        let latency = if immediate {
            Duration::ZERO
        } else {
            sim.latency(&id)
        };
        let now = Instant::now();
        st.ledger.accepted += 1;
        st.ledger.latencies_ms.push(latency.as_millis() as u64);
        *st.ledger.submissions.entry(canonical.clone()).or_default() += 1;
        st.ledger.in_flight += 1;
        st.ledger.max_in_flight = st.ledger.max_in_flight.max(st.ledger.in_flight);
        st.jobs.insert(
            id.clone(),
            Job {
                kind,
                picture: ask.picture,
                served: ask.count + cfg.extra_images,
                sync: ask.sync,
                processing_at: now + latency.mul_f64(0.3),
                done_at: now + latency,
                outcome,
                polls: 0,
                download_attempts: vec![0; (ask.count + cfg.extra_images) as usize],
                delivered: vec![false; ask.count as usize],
                open: true,
            },
        );
        (id, immediate)
    };
    // Accepted and charged; what the client hears may still go wrong.
    if sim.chance(
        cfg.submit_502_rate,
        &format!("submit-502:{canonical}"),
        attempt,
    ) {
        sim.lock().count_fault("submit_502");
        return proxy_page(StatusCode::BAD_GATEWAY, "502 Bad Gateway");
    }
    if sim.chance(
        cfg.submit_hang_rate,
        &format!("submit-hang:{canonical}"),
        attempt,
    ) {
        sim.lock().count_fault("submit_hang");
        let mut stopping = sim.stopping.subscribe();
        let _ = stopping.wait_for(|stop| *stop).await;
        return proxy_page(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Time-out");
    }
    let status_url = match kind {
        Kind::TextToImage => format!("{}{}{id}", sim.base_url, wire::TEXT_TO_IMAGE_STATUS),
        Kind::ImageToImage => format!("{}{}", sim.base_url, wire::IMAGE_TO_IMAGE_STATUS),
    };
    if cfg.submit_shape == SubmitShape::CompletedId {
        return Json(Reply {
            request_id: Some(id),
            status: Some(Phase::Completed.as_str().into()),
            status_url: Some(status_url.clone()),
            response_url: Some(status_url),
            ..Reply::default()
        })
        .into_response();
    }
    if immediate {
        let mut reply = finished_reply(&sim, &id).await;
        if outcome != Outcome::Completed {
            reply.request_id = Some(id);
        }
        return Json(reply).into_response();
    }
    Json(Reply {
        request_id: Some(id),
        status: Some(Phase::Queued.as_str().into()),
        status_url: Some(status_url.clone()),
        response_url: Some(status_url),
        ..Reply::default()
    })
    .into_response()
}

/// What a reverse proxy in front of a gateway answers when it gives up:
/// an HTML page, not the vendor's JSON.
fn proxy_page(status: StatusCode, title: &str) -> Response {
    let html = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n"
    );
    (status, [(header::CONTENT_TYPE, "text/html")], html).into_response()
}

/// A 307 to `--redirect-to`: a client that follows it sends its key there.
fn redirect(sim: &Sim, fault: &str) -> Response {
    sim.lock().count_fault(fault);
    let to = sim.cfg().redirect_to.clone();
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, to)],
        "moved",
    )
        .into_response()
}

fn validation_code(kind: Kind) -> &'static str {
    match kind {
        Kind::TextToImage => code::INVALID_PARAMETER,
        Kind::ImageToImage => code::VALIDATION_ERROR,
    }
}

/// The gateway's documented parameter rules.
fn validate(kind: Kind, body: &Value) -> Result<Ask, String> {
    let obj = body
        .as_object()
        .ok_or("Request body must be a JSON object")?;
    let known = crate::manifest::PARAMS;
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("Unknown parameter: {k}"));
    }
    let prompt = match obj.get("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => p.clone(),
        _ => return Err("Missing required parameter: prompt".into()),
    };
    let positive = |name: &str, default: u64| -> Result<u64, String> {
        match obj.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or(format!("Invalid {name} value: {v}")),
        }
    };
    let steps = positive("num_inference_steps", 30)?;
    let count = positive("num_images", 1)?;
    if steps > 1000 || count > 16 {
        return Err("num_inference_steps or num_images out of range".into());
    }
    if let Some(v) = obj.get("guidance_scale") {
        if !v.is_number() {
            return Err(format!("Invalid guidance_scale value: {v}"));
        }
    }
    let seed = match obj.get("seed") {
        None => 0,
        Some(v) => v.as_u64().ok_or(format!("Invalid seed value: {v}"))?,
    };
    for flag in [
        "enable_safety_checker",
        "sync_mode",
        "enable_prompt_expansion",
    ] {
        if obj.get(flag).is_some_and(|v| !v.is_boolean()) {
            return Err(format!("Invalid {flag} value: {}", obj[flag]));
        }
    }
    let format = match obj.get("output_format").map(|v| v.as_str()) {
        None | Some(Some("jpeg")) => Format::Jpeg,
        Some(Some("png")) => Format::Png,
        Some(_) => {
            return Err(format!(
                "Invalid output_format value: {}",
                obj["output_format"]
            ))
        }
    };
    let (width, height) = match obj.get("image_size") {
        None => (1024, 1024),
        Some(Value::String(s)) if SIZE_PRESETS.contains(&s.as_str()) => {
            render::preset_size(s).expect("every preset has a size")
        }
        Some(Value::Object(o)) => {
            let side = |k: &str| {
                o.get(k)
                    .and_then(Value::as_u64)
                    .filter(|n| (16..=4096).contains(n))
                    .map(|n| n as u32)
            };
            match (side("width"), side("height"), o.len()) {
                (Some(w), Some(h), 2) => (w, h),
                _ => {
                    return Err(format!(
                        "Invalid image_size value: {}",
                        Value::Object(o.clone())
                    ))
                }
            }
        }
        Some(v) => {
            let shown = v
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            return Err(format!("Invalid image_size value: {shown}"));
        }
    };
    match (kind, obj.get("image_urls")) {
        (Kind::TextToImage, Some(_)) => {
            return Err("image_urls is not a text-to-image parameter".into())
        }
        (Kind::ImageToImage, None) => return Err("Missing required parameter: image_urls".into()),
        (Kind::ImageToImage, Some(v)) => {
            let urls = v.as_array().ok_or("image_urls must be an array")?;
            if urls.is_empty() || urls.len() > 4 {
                return Err("image_urls must hold 1 to 4 URLs".into());
            }
            for u in urls {
                let ok = u.as_str().is_some_and(|s| {
                    s.starts_with("http://")
                        || s.starts_with("https://")
                        || s.starts_with("data:image/")
                });
                if !ok {
                    return Err(format!("Invalid image URL: {u}"));
                }
            }
        }
        (Kind::TextToImage, None) => {}
    }
    let guidance = obj
        .get("guidance_scale")
        .and_then(Value::as_f64)
        .unwrap_or(3.5);
    // The condition images count as part of what is drawn (a data URI by its hash).
    let context = match obj.get("image_urls") {
        Some(v) => hex(&Sha256::digest(v.to_string().as_bytes())),
        None => String::new(),
    };
    Ok(Ask {
        picture: render::Picture {
            prompt,
            context,
            seed,
            width,
            height,
            format,
            steps: steps as u32,
            guidance,
        },
        count: count as u32,
        sync: obj.get("sync_mode") == Some(&Value::Bool(true)),
    })
}

async fn status_t2i(
    State(sim): State<Arc<Sim>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    status(sim, Kind::TextToImage, id, headers).await
}

#[derive(serde::Deserialize)]
struct IdQuery {
    request_id: Option<String>,
}

async fn status_i2i(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<IdQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let from_body = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.get("request_id")
            .and_then(Value::as_str)
            .map(String::from)
    });
    match from_body.or(q.request_id) {
        Some(id) => status(sim, Kind::ImageToImage, id, headers).await,
        None => reject(
            &sim,
            Kind::ImageToImage,
            StatusCode::BAD_REQUEST,
            code::VALIDATION_ERROR,
            "Missing required parameter: request_id",
        ),
    }
}

async fn status(sim: Arc<Sim>, kind: Kind, id: String, headers: HeaderMap) -> Response {
    let cfg = sim.cfg();
    let calls = sim.count(|l| &mut l.status_calls);
    if sim.chance(cfg.status_redirect_rate, "status-redirect", calls) {
        return redirect(&sim, "status_redirect");
    }
    if !sim.key_ok(&headers) {
        return reject(
            &sim,
            kind,
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            "Missing or invalid Ocp-Apim-Subscription-Key header",
        );
    }
    let (polls, phase) = {
        let mut st = sim.lock();
        let Some(job) = st.jobs.get_mut(&id).filter(|j| j.kind == kind) else {
            drop(st);
            return reject(
                &sim,
                kind,
                StatusCode::NOT_FOUND,
                code::NOT_FOUND,
                "Operation not found",
            );
        };
        job.polls += 1;
        let now = Instant::now();
        let phase = if now < job.processing_at {
            Phase::Queued
        } else if now < job.done_at {
            Phase::Processing
        } else {
            Phase::Completed
        };
        (job.polls, phase)
    };
    if sim.chance(cfg.status_5xx_rate, &format!("status-5xx:{id}"), polls) {
        return injected_500(&sim, kind, "status_5xx");
    }
    if sim.chance(cfg.oversized_rate, &format!("oversized:{id}"), polls) {
        sim.lock().count_fault("oversized");
        return Json(Reply {
            request_id: Some(id),
            status: Some(Phase::Processing.as_str().into()),
            description: Some("x".repeat(OVERSIZED_BYTES)),
            ..Reply::default()
        })
        .into_response();
    }
    if phase != Phase::Completed {
        let word = status_word(&sim, &id, phase);
        return Json(Reply {
            request_id: Some(id),
            status: Some(word),
            ..Reply::default()
        })
        .into_response();
    }
    Json(finished_reply(&sim, &id).await).into_response()
}

/// Mixed shape: some requests spell status words in lower or title case.
fn status_word(sim: &Sim, id: &str, phase: Phase) -> String {
    let word = phase.as_str();
    if sim.cfg().status_shape != StatusShape::Mixed {
        return word.into();
    }
    match Sha256::digest(id.as_bytes())[0] % 3 {
        0 => word.into(),
        1 => word.to_ascii_lowercase(),
        _ => word[..1].to_string() + &word[1..].to_ascii_lowercase(),
    }
}

/// The reply for a finished request; delivering a terminal reply (or its
/// inline images) may close the request in the ledger.
async fn finished_reply(sim: &Arc<Sim>, id: &str) -> Reply {
    let cfg = sim.cfg();
    let (outcome, format, count, sync, spec) = {
        let st = sim.lock();
        let job = &st.jobs[id];
        (
            job.outcome,
            job.picture.format,
            job.served,
            job.sync,
            job.picture.clone(),
        )
    };
    let word = |p: Phase| status_word(sim, id, p);
    match outcome {
        Outcome::Failed | Outcome::Error => {
            let mut st = sim.lock();
            close(&mut st, id, outcome);
            let (phase, message) = if outcome == Outcome::Failed {
                (
                    Phase::Failed,
                    "Generation failed: the output did not pass the safety checker",
                )
            } else {
                (Phase::Error, "System error: the request was not processed")
            };
            drop(st);
            Reply {
                request_id: Some(id.to_string()),
                status: Some(word(phase)),
                error: Some(wire::ErrorField::Text(message.into())),
                ..Reply::default()
            }
        }
        Outcome::Completed => {
            let urls: Vec<String> = if sync {
                let images = tokio::task::spawn_blocking(move || {
                    (0..count).map(|n| spec.nth(n).encode()).collect::<Vec<_>>()
                })
                .await
                .expect("render task");
                let mut st = sim.lock();
                let uris = images
                    .iter()
                    .enumerate()
                    .map(|(n, bytes)| {
                        st.ledger.bytes_served += bytes.len() as u64;
                        st.ledger
                            .files
                            .insert(format!("data:{id}/{n}"), hex(&Sha256::digest(bytes)));
                        format!(
                            "data:{};base64,{}",
                            format.mime(),
                            base64::engine::general_purpose::STANDARD.encode(bytes)
                        )
                    })
                    .collect();
                close(&mut st, id, outcome);
                uris
            } else {
                (0..count as usize)
                    .map(|n| sim.image_url(id, n, format))
                    .collect()
            };
            let workflow = match cfg.status_shape {
                StatusShape::Workflow => true,
                StatusShape::Images => false,
                StatusShape::Mixed => Sha256::digest(id.as_bytes())[1] % 2 == 0,
            };
            if workflow {
                Reply {
                    request_id: Some(id.to_string()),
                    status: Some(word(Phase::Completed)),
                    output: Some(Output { media_url: urls }),
                    ..Reply::default()
                }
            } else {
                Reply {
                    images: Some(
                        urls.into_iter()
                            .enumerate()
                            .map(|(n, url)| WireImage {
                                url,
                                // As in the vendor's sample: not to be trusted.
                                file_name: Some(format!("output-{n}.png")),
                                content_type: Some("image/png".into()),
                            })
                            .collect(),
                    ),
                    description: Some(String::new()),
                    ..Reply::default()
                }
            }
        }
    }
}

/// Marks a request finished for the client (counted once).
fn close(st: &mut SimState, id: &str, outcome: Outcome) {
    if let Some(job) = st.jobs.get_mut(id) {
        if job.open {
            job.open = false;
            st.ledger.in_flight -= 1;
            match outcome {
                Outcome::Completed => st.ledger.completed += 1,
                Outcome::Failed => st.ledger.failed += 1,
                Outcome::Error => st.ledger.errored += 1,
            }
        }
    }
}

async fn file(
    State(sim): State<Arc<Sim>>,
    UrlPath((id, name)): UrlPath<(String, String)>,
) -> Response {
    let cfg = sim.cfg();
    let not_found = || (StatusCode::NOT_FOUND, "no such file").into_response();
    let Some(n) = name.split('.').next().and_then(|s| s.parse::<usize>().ok()) else {
        return not_found();
    };
    let (attempt, spec) = {
        let mut st = sim.lock();
        st.ledger.download_calls += 1;
        let Some(job) = st.jobs.get_mut(&id) else {
            return not_found();
        };
        if job.outcome != Outcome::Completed
            || n >= job.served as usize
            || Instant::now() < job.done_at
        {
            return not_found();
        }
        job.download_attempts[n] += 1;
        (job.download_attempts[n], job.picture.nth(n as u32))
    };
    let path = format!("/files/{id}/{name}");
    if sim.chance(
        cfg.download_5xx_rate,
        &format!("download-5xx:{path}"),
        attempt,
    ) {
        sim.lock().count_fault("download_5xx");
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    }
    let truncate = sim.chance(cfg.truncate_rate, &format!("truncate:{path}"), attempt);
    let format = spec.format;
    let mut bytes = tokio::task::spawn_blocking(move || spec.encode())
        .await
        .expect("render task");
    {
        let mut st = sim.lock();
        if truncate {
            st.count_fault("truncated");
            bytes.truncate(bytes.len() / 2);
        } else {
            st.ledger.files.insert(path, hex(&Sha256::digest(&bytes)));
            let job = st.jobs.get_mut(&id).expect("job exists");
            if let Some(d) = job.delivered.get_mut(n) {
                *d = true;
            }
            if job.delivered.iter().all(|d| *d) {
                close(&mut st, &id, Outcome::Completed);
            }
        }
        st.ledger.bytes_served += bytes.len() as u64;
    }
    ([(header::CONTENT_TYPE, format.mime())], bytes).into_response()
}

async fn ledger(State(sim): State<Arc<Sim>>) -> Json<Ledger> {
    Json(sim.lock().ledger.clone())
}
