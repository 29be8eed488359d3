//! The GLM Image gateway client: submit, status, download.
//!
//! Why this exists: one module knows the wire format and turns every outcome,
//! whatever shape the gateway answered in, into what the caller must do
//! ([`Class`]): retry, fail the row, stop the run, or beware of having been
//! accepted. It knows nothing of manifests or the journal.
//!
//! Cancellation: every call is a future; dropping it (for instance when a
//! `select!` picks the shutdown branch) abandons the HTTP exchange. A submit
//! abandoned after its body was sent may still have been accepted, which is
//! why callers journal before they submit, not after.

pub mod backoff;
pub mod image;
mod key;
pub mod wire;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderValue, CACHE_CONTROL, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use backoff::Backoff;
pub use image::{Format, ImageInfo};
pub use key::{ApiKey, KeyError, ENV_VAR as KEY_ENV_VAR};
use wire::{code, Phase, Reply};

use crate::plan::{ImageInput, Kind, Request};

pub const DEFAULT_BASE_URL: &str = "https://gateway.pixazo.ai";

/// What the caller must do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Try again after a delay (429, 5xx, connection failures, status `ERROR`).
    /// Nothing was charged.
    Retry,
    /// A submit may have reached the gateway (timeout or broken reply after
    /// the body was sent). Resending risks paying twice.
    Unsure,
    /// This row cannot succeed as sent (400, validation, status `FAILED`).
    FailRow,
    /// No later request can succeed (401, 403, `INSUFFICIENT_FUNDS`).
    StopRun,
    /// The gateway does not know the request id or file (404 `NOT_FOUND`).
    NotFound,
}

/// A failed gateway call, classified.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}{}: {message}", http_status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct ApiError {
    pub class: Class,
    /// A documented code (`RATE_LIMIT_EXCEEDED`, …) or one of ours
    /// (`CONNECTION_FAILED`, `TIMEOUT`, `HTTP_502`, `CORRUPT_DOWNLOAD`, …).
    pub code: String,
    pub message: String,
    pub http_status: Option<u16>,
    /// How long the server asked us to wait.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    fn new(class: Class, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            class,
            code: code.to_string(),
            message: message.into(),
            http_status: None,
            retry_after: None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class == Class::Retry
    }

    pub fn stops_run(&self) -> bool {
        self.class == Class::StopRun
    }

    pub fn may_have_been_accepted(&self) -> bool {
        self.class == Class::Unsure
    }

    pub fn is_not_found(&self) -> bool {
        self.class == Class::NotFound
    }

    /// A 429 (or its code): wait as told; the row did nothing wrong.
    pub fn is_rate_limited(&self) -> bool {
        self.http_status == Some(429) || self.code == code::RATE_LIMIT_EXCEEDED
    }
}

/// Which call failed: the same failure means different things for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Submit,
    Status,
    Download,
}

/// What to poll for an accepted request. Serialisable, so the journal can
/// keep it and a resumed run can poll instead of submitting again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub kind: Kind,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_url: Option<String>,
}

/// Where a request stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Pending(Phase),
    /// Image URLs or `data:` URIs.
    Completed(Vec<String>),
    /// Possibly charged; retrying is the user's call (`--retry-failed`).
    Failed(String),
    /// Not processed and not charged: submit again.
    Error(String),
}

/// What a submit returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// Absent only when the gateway answered with finished images and no id.
    pub ticket: Option<Ticket>,
    /// Set when the submit reply already says how the request ended.
    pub status: Option<Status>,
}

/// A file written into place by [`Client::download`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
    pub info: ImageInfo,
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub base_url: String,
    pub key: ApiKey,
    pub connect_timeout: Duration,
    /// Whole submit and status calls.
    pub request_timeout: Duration,
    /// Longest silence while a download streams.
    pub read_timeout: Duration,
    pub max_download_bytes: u64,
}

impl ClientConfig {
    pub fn new(base_url: &str, key: ApiKey) -> ClientConfig {
        ClientConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            key,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            max_download_bytes: 64 << 20,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    cfg: ClientConfig,
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .user_agent(concat!("batchgen/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::new(Class::StopRun, "CLIENT", e.to_string()))?;
        Ok(Client { http, cfg })
    }

    pub fn base_url(&self) -> &str {
        &self.cfg.base_url
    }

    /// Submits one request. Local image files are read and sent as data URIs.
    pub async fn submit(&self, req: &Request) -> Result<Submitted, ApiError> {
        let kind = req.kind();
        let path = match kind {
            Kind::TextToImage => wire::TEXT_TO_IMAGE_SUBMIT,
            Kind::ImageToImage => wire::IMAGE_TO_IMAGE_SUBMIT,
        };
        let body = submit_body(req)?;
        let url = format!("{}{path}", self.cfg.base_url);
        let reply = self.call(Op::Submit, &url, &body).await?;
        let status = terminal_status(&reply);
        let ticket = reply.request_id.clone().map(|request_id| Ticket {
            kind,
            request_id,
            status_url: self.same_origin(reply.status_url.as_deref()),
            response_url: self.same_origin(reply.response_url.as_deref()),
        });
        if ticket.is_none() && status.is_none() {
            // Accepted (200) yet unreadable: we may have paid and cannot poll.
            return Err(ApiError::new(
                Class::Unsure,
                "BAD_RESPONSE",
                "the gateway accepted the submit but sent neither a request_id nor images",
            ));
        }
        Ok(Submitted { ticket, status })
    }

    /// Asks where an accepted request stands.
    pub async fn status(&self, ticket: &Ticket) -> Result<Status, ApiError> {
        let url = match (&ticket.status_url, ticket.kind) {
            (Some(u), _) => u.clone(),
            (None, Kind::TextToImage) => format!(
                "{}{}{}",
                self.cfg.base_url,
                wire::TEXT_TO_IMAGE_STATUS,
                ticket.request_id
            ),
            (None, Kind::ImageToImage) => {
                format!("{}{}", self.cfg.base_url, wire::IMAGE_TO_IMAGE_STATUS)
            }
        };
        let body = serde_json::json!({ "request_id": ticket.request_id });
        let reply = self.call(Op::Status, &url, &body).await?;
        if let Some(status) = terminal_status(&reply) {
            if status == Status::Completed(Vec::new()) {
                return self.fetch_result(ticket).await;
            }
            return Ok(status);
        }
        Ok(Status::Pending(reply.phase().unwrap_or(Phase::Processing)))
    }

    /// A `COMPLETED` status without images: the result is at `response_url`.
    async fn fetch_result(&self, ticket: &Ticket) -> Result<Status, ApiError> {
        let missing = || {
            ApiError::new(
                Class::Retry,
                "BAD_RESPONSE",
                "the request is COMPLETED but the reply names no image",
            )
        };
        let Some(url) = &ticket.response_url else {
            return Err(missing());
        };
        let body = serde_json::json!({ "request_id": ticket.request_id });
        let reply = self.call(Op::Status, url, &body).await?;
        let images = reply.images();
        if images.is_empty() {
            return Err(missing());
        }
        Ok(Status::Completed(images))
    }

    /// A server-given URL, kept only if it is on the gateway's own origin:
    /// the key is sent to it, and the key goes nowhere else.
    fn same_origin(&self, url: Option<&str>) -> Option<String> {
        let url = url?;
        let origin = |u: &str| -> Option<String> {
            let parsed = reqwest::Url::parse(u).ok()?;
            Some(parsed.origin().ascii_serialization())
        };
        (origin(url)? == origin(&self.cfg.base_url)?).then(|| url.to_string())
    }

    /// POSTs JSON with the key; returns the reply or a classified error.
    async fn call(&self, op: Op, url: &str, body: &serde_json::Value) -> Result<Reply, ApiError> {
        let mut key = HeaderValue::from_str(self.cfg.key.expose()).map_err(|_| {
            ApiError::new(
                Class::StopRun,
                "BAD_KEY",
                "the API key is not a valid header",
            )
        })?;
        key.set_sensitive(true);
        let response = self
            .http
            .post(url)
            .header(wire::KEY_HEADER, key)
            .header(CACHE_CONTROL, "no-cache")
            .timeout(self.cfg.request_timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| transport_error(op, &e))?;
        let status = response.status();
        let retry_after = retry_after_header(response.headers());
        let text = response.text().await.map_err(|e| transport_error(op, &e))?;
        let reply: Option<Reply> = serde_json::from_str(&text).ok();
        if status.is_success() {
            let reply = reply.ok_or_else(|| {
                let class = if op == Op::Submit {
                    Class::Unsure
                } else {
                    Class::Retry
                };
                ApiError::new(
                    class,
                    "BAD_RESPONSE",
                    format!("unreadable reply: {}", snippet(&text)),
                )
            })?;
            // Some gateways answer 200 with an error body.
            if reply.phase().is_none() && reply.images().is_empty() && reply.request_id.is_none() {
                if let Some((code, message)) = reply.error_parts() {
                    return Err(http_error(op, status, code, message, retry_after));
                }
            }
            return Ok(reply);
        }
        let (code, message) = reply
            .and_then(|r| r.error_parts())
            .unwrap_or((None, snippet(&text)));
        Err(http_error(op, status, code, message, retry_after))
    }

    /// Downloads one image (a URL or a `data:` URI) to `dir/stem.EXT`, where
    /// EXT follows the bytes received. The bytes stream into a temporary file
    /// in `dir`, which is renamed into place only once it holds a complete
    /// PNG or JPEG; a truncated or corrupt download is a `Retry` error and
    /// leaves nothing behind. The API key is never sent with a download.
    pub async fn download(
        &self,
        image: &str,
        dir: &Path,
        stem: &str,
    ) -> Result<Downloaded, ApiError> {
        let io = |e: std::io::Error| {
            ApiError::new(Class::StopRun, "DISK", format!("{}: {e}", dir.display()))
        };
        let mut part = tempfile::Builder::new()
            .prefix(".part-")
            .tempfile_in(dir)
            .map_err(io)?;
        let mut hasher = Sha256::new();
        let mut bytes: u64 = 0;
        if image.starts_with("data:") {
            let data = decode_data_uri(image)?;
            hasher.update(&data);
            bytes = data.len() as u64;
            part.write_all(&data).map_err(io)?;
        } else {
            let mut response = self
                .http
                .get(image)
                .send()
                .await
                .map_err(|e| transport_error(Op::Download, &e))?;
            let status = response.status();
            if !status.is_success() {
                let retry_after = retry_after_header(response.headers());
                let text = response.text().await.unwrap_or_default();
                return Err(http_error(
                    Op::Download,
                    status,
                    None,
                    snippet(&text),
                    retry_after,
                ));
            }
            let expected = response.content_length();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| transport_error(Op::Download, &e))?
            {
                bytes += chunk.len() as u64;
                if bytes > self.cfg.max_download_bytes {
                    return Err(ApiError::new(
                        Class::FailRow,
                        "TOO_LARGE",
                        format!(
                            "the image is larger than {} bytes",
                            self.cfg.max_download_bytes
                        ),
                    ));
                }
                hasher.update(&chunk);
                part.write_all(&chunk).map_err(io)?;
            }
            if expected.is_some_and(|n| n != bytes) {
                return Err(ApiError::new(
                    Class::Retry,
                    "TRUNCATED",
                    format!("received {bytes} of {} bytes", expected.unwrap_or(0)),
                ));
            }
        }
        let sha256 = hex(&hasher.finalize());
        let dir = dir.to_path_buf();
        let stem = stem.to_string();
        tokio::task::spawn_blocking(move || {
            let io = |e: std::io::Error| ApiError::new(Class::StopRun, "DISK", e.to_string());
            part.flush().map_err(io)?;
            let written = std::fs::read(part.path()).map_err(io)?;
            let info = image::inspect(&written)
                .map_err(|e| ApiError::new(Class::Retry, "CORRUPT_DOWNLOAD", e.to_string()))?;
            part.as_file().sync_all().map_err(io)?;
            let path = dir.join(format!("{stem}.{}", info.format.extension()));
            part.persist(&path).map_err(|e| io(e.error))?;
            sync_dir(&dir);
            Ok(Downloaded {
                path,
                bytes,
                sha256,
                info,
            })
        })
        .await
        .map_err(|e| ApiError::new(Class::StopRun, "INTERNAL", e.to_string()))?
    }
}

/// Runs `op` until it succeeds, fails for good, or `attempts` are spent,
/// sleeping per `backoff` between tries. Only `Retry` errors are retried.
/// Cancelled by dropping the returned future.
pub async fn retry<T, F, Fut>(backoff: &Backoff, attempts: u32, mut op: F) -> Result<T, ApiError>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 0;
    loop {
        match op(attempt).await {
            Err(e) if e.is_retryable() && attempt + 1 < attempts => {
                tokio::time::sleep(backoff.delay(attempt, e.retry_after)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Makes a rename durable (best effort: not every platform can sync a folder).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The JSON body of a submit: the request's parameters, with local image
/// files read and inlined as data URIs.
pub fn submit_body(req: &Request) -> Result<serde_json::Value, ApiError> {
    let mut body = serde_json::to_value(req)
        .map_err(|e| ApiError::new(Class::FailRow, "INTERNAL", e.to_string()))?;
    if let Some(inputs) = &req.image_urls {
        let mut urls = Vec::with_capacity(inputs.len());
        for input in inputs.iter() {
            urls.push(match input {
                ImageInput::Url(u) => u.clone(),
                ImageInput::File { path, .. } => {
                    let data = std::fs::read(path).map_err(|e| {
                        ApiError::new(
                            Class::FailRow,
                            "INPUT_UNREADABLE",
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                    let mime = crate::plan::image_mime(&data).unwrap_or("application/octet-stream");
                    format!(
                        "data:{mime};base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(&data)
                    )
                }
            });
        }
        body["image_urls"] = serde_json::json!(urls);
    }
    Ok(body)
}

fn decode_data_uri(uri: &str) -> Result<Vec<u8>, ApiError> {
    let bad = |why: &str| ApiError::new(Class::FailRow, "BAD_DATA_URI", why.to_string());
    let (head, data) = uri
        .split_once(',')
        .ok_or_else(|| bad("a data URI without a comma"))?;
    if !head.ends_with(";base64") {
        return Err(bad("only base64 data URIs carry images"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| bad(&format!("bad base64: {e}")))
}

/// How a reply says the request ended, if it does.
fn terminal_status(reply: &Reply) -> Option<Status> {
    let message = || {
        reply
            .error_parts()
            .map(|(_, m)| m)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "no reason given".into())
    };
    match reply.phase() {
        Some(Phase::Completed) => Some(Status::Completed(reply.images())),
        Some(Phase::Failed) => Some(Status::Failed(message())),
        Some(Phase::Error) => Some(Status::Error(message())),
        Some(Phase::Queued | Phase::Processing) => None,
        None => {
            let images = reply.images();
            (!images.is_empty()).then_some(Status::Completed(images))
        }
    }
}

fn transport_error(op: Op, e: &reqwest::Error) -> ApiError {
    // A connection that never opened carried nothing: always safe to retry.
    if e.is_connect() {
        return ApiError::new(Class::Retry, "CONNECTION_FAILED", describe(e));
    }
    let code = if e.is_timeout() {
        "TIMEOUT"
    } else {
        "TRANSPORT"
    };
    let class = if op == Op::Submit {
        Class::Unsure
    } else {
        Class::Retry
    };
    ApiError::new(class, code, describe(e))
}

/// A reqwest error with its causes, which is where the useful part is.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn http_error(
    op: Op,
    status: StatusCode,
    code: Option<String>,
    message: String,
    retry_after: Option<Duration>,
) -> ApiError {
    let s = status.as_u16();
    let code_str = code.clone().unwrap_or_else(|| format!("HTTP_{s}"));
    let class = match (code.as_deref(), s) {
        (Some(code::INSUFFICIENT_FUNDS | code::UNAUTHORIZED), _) | (_, 401..=403) => Class::StopRun,
        (Some(code::RATE_LIMIT_EXCEEDED | code::INTERNAL_ERROR), _) | (_, 429 | 408) => {
            Class::Retry
        }
        (_, 500..=599) => Class::Retry,
        // A submit endpoint that does not exist will not appear later.
        (_, 404) if op == Op::Submit => Class::StopRun,
        (Some(code::NOT_FOUND), _) | (_, 404 | 410) => Class::NotFound,
        _ => Class::FailRow,
    };
    let retry_after = retry_after.or_else(|| retry_after_message(&message));
    ApiError {
        class,
        code: code_str,
        message,
        http_status: Some(s),
        retry_after,
    }
}

/// `Retry-After: N` (seconds; the HTTP-date form is rare and ignored).
fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// "Rate limit exceeded. Retry after 60 seconds."
fn retry_after_message(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    let rest = &lower[lower.find("retry after")? + "retry after".len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().map(Duration::from_secs)
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        "(empty reply)".into()
    } else {
        t.chars().take(200).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_comes_from_the_message_too() {
        assert_eq!(
            retry_after_message("Rate limit exceeded. Retry after 60 seconds."),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_after_message("slow down"), None);
    }

    #[test]
    fn http_errors_are_classified() {
        let c = |status: u16, code: Option<&str>| {
            http_error(
                Op::Status,
                StatusCode::from_u16(status).unwrap(),
                code.map(String::from),
                String::new(),
                None,
            )
            .class
        };
        assert_eq!(c(429, Some("RATE_LIMIT_EXCEEDED")), Class::Retry);
        assert_eq!(c(500, Some("INTERNAL_ERROR")), Class::Retry);
        assert_eq!(c(503, None), Class::Retry);
        assert_eq!(c(401, Some("UNAUTHORIZED")), Class::StopRun);
        assert_eq!(c(403, None), Class::StopRun);
        assert_eq!(c(400, Some("INSUFFICIENT_FUNDS")), Class::StopRun);
        assert_eq!(c(400, Some("VALIDATION_ERROR")), Class::FailRow);
        assert_eq!(c(400, Some("INVALID_PARAMETER")), Class::FailRow);
        assert_eq!(c(404, Some("NOT_FOUND")), Class::NotFound);
        let submit_404 = http_error(Op::Submit, StatusCode::NOT_FOUND, None, String::new(), None);
        assert_eq!(submit_404.class, Class::StopRun);
    }

    #[test]
    fn the_key_only_goes_to_the_gateways_own_origin() {
        let client = Client::new(ClientConfig::new(
            "http://127.0.0.1:9000/",
            ApiKey::new("k").unwrap(),
        ))
        .unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:9000");
        let same = "http://127.0.0.1:9000/v2/requests/status/x";
        assert_eq!(client.same_origin(Some(same)), Some(same.to_string()));
        for other in [
            "http://evil.example/steal",
            "https://127.0.0.1:9000/x",
            "http://127.0.0.1:9001/x",
            "not a url",
        ] {
            assert_eq!(client.same_origin(Some(other)), None, "{other}");
        }
    }

    #[test]
    fn terminal_statuses_from_either_shape() {
        let r: Reply = serde_json::from_str(r#"{"images":[{"url":"u"}]}"#).unwrap();
        assert_eq!(
            terminal_status(&r),
            Some(Status::Completed(vec!["u".into()]))
        );
        let r: Reply = serde_json::from_str(r#"{"status":"failed","error":"nsfw"}"#).unwrap();
        assert_eq!(terminal_status(&r), Some(Status::Failed("nsfw".into())));
        let r: Reply = serde_json::from_str(r#"{"status":"Processing"}"#).unwrap();
        assert_eq!(terminal_status(&r), None);
    }
}
