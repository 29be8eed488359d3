//! A proxy on loopback in front of moto that answers some calls with S3's
//! `503 SlowDown` instead of forwarding them, or every call once it is told
//! the store went away: the faults a real bucket shows, in front of a real
//! S3 implementation. A refused call never reaches moto, so retrying it is
//! always right, as with S3's own 503s.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::Response;

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

#[derive(Default)]
pub struct Faults {
    /// Every Nth call is answered 503 (0: none).
    pub every: AtomicU64,
    /// Every call is answered 503.
    pub down: AtomicBool,
    /// Every GET whose path holds this is answered 503 (empty: none).
    pub gets_of: std::sync::Mutex<String>,
    pub calls: AtomicU64,
    pub refused: AtomicU64,
}

struct Proxy {
    upstream: String,
    client: reqwest::Client,
    faults: Arc<Faults>,
}

/// A started proxy: its URL (for `AWS_ENDPOINT_URL`) and its knobs.
pub struct FaultyS3 {
    pub url: String,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a proxy to `upstream` (moto's URL).
pub async fn start(upstream: &str) -> FaultyS3 {
    let faults = Arc::new(Faults::default());
    let proxy = Arc::new(Proxy {
        upstream: upstream.trim_end_matches('/').to_string(),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        faults: faults.clone(),
    });
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FaultyS3 { url, faults, task }
}

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let n = p.faults.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let every = p.faults.every.load(Ordering::SeqCst);
    let get_refused = {
        let gets_of = p.faults.gets_of.lock().unwrap();
        req.method() == axum::http::Method::GET
            && !gets_of.is_empty()
            && req.uri().path().contains(gets_of.as_str())
    };
    if get_refused || p.faults.down.load(Ordering::SeqCst) || (every > 0 && n % every == 0) {
        p.faults.refused.fetch_add(1, Ordering::SeqCst);
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "application/xml")
            .body(Body::from(SLOW_DOWN))
            .unwrap();
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let mut out = p.client.request(method, format!("{}{path}", p.upstream));
    for (name, value) in &parts.headers {
        if name == "host" || name == "content-length" {
            continue;
        }
        out = out.header(name.as_str(), value.as_bytes());
    }
    let reply = match out.body(body.to_vec()).send().await {
        Ok(r) => r,
        Err(_) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::empty())
                .unwrap()
        }
    };
    let mut back = Response::builder().status(reply.status().as_u16());
    for (name, value) in reply.headers() {
        if name == "content-length" || name == "transfer-encoding" || name == "connection" {
            continue;
        }
        back = back.header(
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(),
            value.as_bytes(),
        );
    }
    let bytes = reply.bytes().await.unwrap_or_default();
    back.body(Body::from(bytes)).unwrap()
}
