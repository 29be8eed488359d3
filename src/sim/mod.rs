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

mod files;
pub mod limit;
pub mod render;
mod status;
mod submit;

use std::collections::{BTreeMap, HashMap};
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
use crate::api::ImageFormat;
use crate::disk::hex;
use crate::plan::{Kind, SIZE_PRESETS};
pub use limit::{LimitBody, LimitConfig, LimitShape, OnOff};

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
    /// A limiter in front of the gateway: N calls per window (`window`) or N a second
    /// (`bucket`, `leaky`); more are refused (see --limit-shape).
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,
    /// The least seconds a refusal's Retry-After (and message) names.
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    pub retry_after_secs: u64,
    /// The limiter's shape, and a quota.
    #[command(flatten)]
    pub limit: LimitConfig,
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
    /// Every image download waits this long before its bytes are sent (a slow file host).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub download_delay_ms: u64,
    /// The share of requests that take `--slow-latency-ms` instead of a
    /// latency from `--min-latency-ms` to `--max-latency-ms` (a slow few).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub slow_rate: f64,
    /// How long the slow few take.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub slow_latency_ms: u64,
    /// Echo the API key back, as a careless gateway might: `whole`, or `fragment` (8 of its
    /// characters), inside request ids (and so status and image URLs), status URLs and every
    /// error message.
    #[arg(long, value_enum, value_name = "HOW")]
    pub echo_key: Option<EchoKey>,
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
            limit: LimitConfig::default(),
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
            download_delay_ms: 0,
            slow_rate: 0.0,
            slow_latency_ms: 0,
            echo_key: None,
        }
    }
}

/// How much of the key `--echo-key` sends back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EchoKey {
    Whole,
    /// Its middle 8 characters (the whole key if it is shorter than 12).
    Fragment,
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
    /// Accepted requests the client has not yet been told are finished
    /// (their files may still be downloading). `--concurrency` bounds this.
    pub in_flight: u64,
    pub max_in_flight: u64,
    /// The most accepted requests still running (within their latency) at
    /// once: what the gateway itself carried, whatever the client knew.
    pub max_running: u64,
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
        self.sim.lock().gate = None;
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
    /// The limiter in front of the gateway (`--rate-limit`), made on first use.
    gate: Option<limit::Gate>,
    /// When each accepted request still running finishes (for `max_running`).
    running: std::collections::BinaryHeap<std::cmp::Reverse<Instant>>,
    /// The key the last keyed call carried, kept only for `--echo-key`.
    seen_key: Option<String>,
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
    /// What its download faults are drawn on: its canonical request and
    /// submit attempt, never its id (which follows the order submits were
    /// accepted in, which timing decides), so a seed gives the same faults
    /// on any machine.
    draws: String,
    download_attempts: Vec<u64>,
    delivered: Vec<bool>,
    /// Its result is not yet fully taken.
    open: bool,
    /// The client has been told it finished.
    told: bool,
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
        .route(wire::TEXT_TO_IMAGE_SUBMIT, post(submit::submit_t2i))
        .route(wire::IMAGE_TO_IMAGE_SUBMIT, post(submit::submit_i2i))
        .route(
            &format!("{}{{id}}", wire::TEXT_TO_IMAGE_STATUS),
            get(status::status_t2i).post(status::status_t2i),
        )
        .route(
            wire::IMAGE_TO_IMAGE_STATUS,
            get(status::status_i2i).post(status::status_i2i),
        )
        .route("/files/{id}/{name}", get(files::file))
        .route("/admin/ledger", get(files::ledger))
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
        if self.cfg().echo_key.is_some() && !given.is_empty() {
            self.lock().seen_key = Some(given.to_string());
        }
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
        let slow = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        if (slow as f64 / u64::MAX as f64) < cfg.slow_rate {
            return Duration::from_millis(cfg.slow_latency_ms);
        }
        Duration::from_millis(lo + x % (hi - lo + 1))
    }

    /// What `--echo-key` sends back of the key the client gave, if anything.
    fn echo(&self) -> Option<String> {
        let how = self.cfg().echo_key?;
        let key = self.lock().seen_key.clone()?;
        Some(match how {
            EchoKey::Fragment if key.len() >= 12 && key.is_ascii() => {
                let mid = key.len() / 2;
                key[mid - 4..mid + 4].to_string()
            }
            _ => key,
        })
    }

    /// `message`, with the key echoed at its end under `--echo-key`.
    fn echoed(&self, message: &str) -> String {
        match self.echo() {
            Some(echo) => format!("{message} (key {echo})"),
            None => message.to_string(),
        }
    }

    fn image_url(&self, id: &str, n: usize, format: ImageFormat) -> String {
        format!("{}/files/{id}/{n}.{}", self.base_url, format.extension())
    }
}

/// An error reply in the endpoint's documented shape.
fn error(sim: &Sim, kind: Kind, status: StatusCode, code: &str, message: &str) -> Response {
    let message = &sim.echoed(message);
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
    error(sim, kind, status, code, message)
}

/// An injected fault: counted in the ledger, answered 500 in the endpoint's shape.
fn injected_500(sim: &Sim, kind: Kind, fault: &str) -> Response {
    sim.lock().count_fault(fault);
    error(
        sim,
        kind,
        StatusCode::INTERNAL_SERVER_ERROR,
        code::INTERNAL_ERROR,
        "Internal server error. Please retry later.",
    )
}

/// What a reverse proxy in front of a gateway answers when it gives up:
/// an HTML page, not the vendor's JSON.
fn proxy_page(status: StatusCode, title: &str) -> Response {
    let html = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n"
    );
    (status, [(header::CONTENT_TYPE, "text/html")], html).into_response()
}

/// What every keyed call meets first: a redirect (the fault `redirect`,
/// drawn at `redirect_rate` as `draw`), then the key check.
fn gate(
    sim: &Sim,
    kind: Kind,
    headers: &HeaderMap,
    (redirect_rate, draw, fault): (f64, &str, &str),
    calls: u64,
) -> Option<Response> {
    if sim.chance(redirect_rate, draw, calls) {
        return Some(redirect(sim, fault));
    }
    (!sim.key_ok(headers)).then(|| {
        reject(
            sim,
            kind,
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            "Missing or invalid Ocp-Apim-Subscription-Key header",
        )
    })
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
