//! The calls that carry the key: submit, status, result.
//!
//! Why this exists apart from downloads: these calls carry
//! `Ocp-Apim-Subscription-Key`, so they go only to the gateway's own origin
//! (checked on every call, including URLs a journal replays), never follow a
//! redirect, send a request id as one escaped path segment, and read replies
//! only up to a cap and a deadline. Whatever a reply says (request ids, URLs,
//! error codes and messages) leaves here with the key hidden
//! ([`super::redact`]); ids and URLs get it back only as a request is built.
//! Names are resolved in Rust (hickory), so a static binary needs no NSS;
//! `localhost` is loopback without any file ([`LOCALHOST`]).
//!
//! - `prepare`: a submit's body, built before anything is sent.
//! - `origin`: where the key may go, and the endpoints a request id is sent to.
//! - `logging`: one line per HTTP exchange at `-v`.

mod logging;
mod origin;
mod prepare;

use std::time::Duration;

use reqwest::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use reqwest::Url;

use super::error::{http_error, redirected, retry_after_header, summarise, transport_error, Op};
use super::redact::Redactor;
use super::wire::{self, Phase, Reply};
use super::{ApiError, ApiKey, Class, Status, Submitted, Ticket};
use crate::plan::{Kind, Request};
use crate::vocab::Code;
pub(crate) use logging::{log_exchange, logged_path};
use origin::check_request_id;
pub use origin::MAX_REQUEST_ID;
pub use prepare::{submit_body, Prepared};

pub const DEFAULT_BASE_URL: &str = "https://gateway.pixazo.ai";

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub base_url: String,
    pub key: ApiKey,
    pub connect_timeout: Duration,
    /// A whole submit call, reply included (`--submit-timeout`). Long, since
    /// a `sync_mode` submit answers only once its images are made.
    pub submit_timeout: Duration,
    /// A whole status or result call.
    pub request_timeout: Duration,
    /// Longest silence while a download streams.
    pub read_timeout: Duration,
    /// A whole download.
    pub download_timeout: Duration,
    pub max_download_bytes: u64,
    /// The largest submit, status or result reply read; a reply that carries
    /// images inline (`sync_mode`) gets room for them on top.
    pub max_reply_bytes: u64,
}

impl ClientConfig {
    pub fn new(base_url: &str, key: ApiKey) -> ClientConfig {
        ClientConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            key,
            connect_timeout: Duration::from_secs(10),
            submit_timeout: Duration::from_secs(180),
            request_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            download_timeout: Duration::from_secs(300),
            max_download_bytes: 64 << 20,
            max_reply_bytes: 4 << 20,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    /// For calls that carry the key: redirects are never followed.
    pub(super) keyed: reqwest::Client,
    /// For downloads, which never carry the key.
    pub(super) plain: reqwest::Client,
    /// The base URL, parsed: its scheme, host and port are the origin.
    base: Url,
    /// The documented endpoints, parsed once: submit and status, by kind.
    submit_urls: [Url; 2],
    status_urls: [Url; 2],
    /// Hides the key in what the gateway says; puts it back into ids and URLs sent.
    pub(super) redactor: std::sync::Arc<Redactor>,
    pub(super) cfg: ClientConfig,
}

/// Where `localhost` is, without asking anyone (RFC 6761): names are
/// resolved by hickory (reqwest's `hickory-dns`), which needs the
/// `/etc/resolv.conf` every container runtime provides; a binary in a bare
/// chroot has none, and `--base-url http://localhost:PORT` should still
/// reach a simulator there. The port is the URL's.
pub const LOCALHOST: [std::net::SocketAddr; 2] = [
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0),
    std::net::SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 0),
];

/// Idle download connections kept per host.
const DOWNLOAD_IDLE: usize = 16;

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client, ApiError> {
        let bad = |why: &str| ApiError::new(Class::StopRun, Code::BadBaseUrl.as_str(), why);
        let base = Url::parse(&cfg.base_url).map_err(|_| bad("not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(bad("give an http(s) URL with a host"));
        }
        let endpoint = |path: &str| {
            Url::parse(&format!("{}{path}", cfg.base_url))
                .map_err(|_| bad("the base URL cannot take a path"))
        };
        let submit_urls = [
            endpoint(wire::submit_path(Kind::TextToImage))?,
            endpoint(wire::submit_path(Kind::ImageToImage))?,
        ];
        let status_urls = [
            endpoint(wire::TEXT_TO_IMAGE_STATUS)?,
            endpoint(wire::IMAGE_TO_IMAGE_STATUS)?,
        ];
        if status_urls[0].cannot_be_a_base() {
            return Err(bad("the base URL cannot take a path"));
        }
        let build = |redirects, idle| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(idle)
                .connect_timeout(cfg.connect_timeout)
                .read_timeout(cfg.read_timeout)
                .redirect(redirects)
                .user_agent(concat!("batchgen/", env!("CARGO_PKG_VERSION")))
                .resolve_to_addrs("localhost", &LOCALHOST)
                .build()
                .map_err(|e| ApiError::new(Class::StopRun, Code::Client.as_str(), e.to_string()))
        };
        Ok(Client {
            keyed: build(reqwest::redirect::Policy::none(), usize::MAX)?,
            // A download connection keeps a read buffer the size of the
            // largest image it carried: a few idle ones, not one per slot.
            plain: build(reqwest::redirect::Policy::limited(5), DOWNLOAD_IDLE)?,
            base,
            submit_urls,
            status_urls,
            redactor: std::sync::Arc::new(Redactor::new(&cfg.key)),
            cfg,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.cfg.base_url
    }

    /// The base URL as it may be shown: without credentials (or the key).
    pub fn shown_base_url(&self) -> String {
        self.redactor.url(&self.base)
    }

    /// The gateway's origin (`https://host:port`): where the key may go.
    pub fn origin(&self) -> String {
        self.base.origin().ascii_serialization()
    }

    /// Prepares and sends one request.
    pub async fn submit(&self, req: &Request) -> Result<Submitted, ApiError> {
        let prepared = self.prepare(req)?;
        self.send(&prepared).await
    }

    /// Sends a prepared submit. The ticket holds the request id and URLs
    /// with the key hidden, as they are to be written down.
    pub async fn send(&self, prepared: &Prepared) -> Result<Submitted, ApiError> {
        let url = &self.submit_urls[prepared.kind as usize];
        let timeout = self.cfg.submit_timeout;
        let cap = self.reply_cap(prepared.sync_images);
        let reply = self
            .call(Op::Submit, url.clone(), &prepared.body, cap, timeout)
            .await
            .map_err(|e| self.name_missing_endpoint(e, url))?;
        let unsure = |why: &str| {
            Err(ApiError::new(
                Class::Unsure,
                Code::BadResponse.as_str(),
                why,
            ))
        };
        let exact = |text: Option<String>| text.map(|t| self.redactor.hide(&t, true).into_owned());
        let ticket = match reply.request_id.clone() {
            None => None,
            Some(id) if check_request_id(&id).is_err() => {
                return unsure("the gateway accepted the submit but sent an unusable request_id")
            }
            Some(request_id) => Some(Ticket {
                kind: prepared.kind,
                request_id: self.redactor.hide(&request_id, true).into_owned(),
                status_url: exact(self.same_origin(reply.status_url.as_deref())),
                response_url: exact(self.same_origin(reply.response_url.as_deref())),
                sync_images: prepared.sync_images,
            }),
        };
        let status = match (self.terminal_status(&reply), &ticket) {
            // COMPLETED without images: the images are fetched by polling.
            (Some(Status::Completed(images)), Some(_)) if images.is_empty() => None,
            (Some(Status::Completed(images)), None) if images.is_empty() => None,
            (status, _) => status,
        };
        if ticket.is_none() && status.is_none() {
            // Accepted (200) yet unreadable: we may have paid and cannot poll.
            return unsure(
                "the gateway accepted the submit but sent neither a request_id nor images",
            );
        }
        Ok(Submitted { ticket, status })
    }

    /// A submit's 404: the endpoint does not exist at `url`, which is named
    /// (without credentials, query or key) so that a wrong `--base-url` shows.
    fn name_missing_endpoint(&self, mut e: ApiError, url: &Url) -> ApiError {
        if e.http_status != Some(404) {
            return e;
        }
        e.message = super::one_line(&format!(
            "nothing answers submits at {} (check --base-url): {}",
            self.redactor.url(url),
            e.message
        ));
        e
    }

    /// Asks where an accepted request stands. `ticket` is as [`Client::send`]
    /// gave it (or a journal kept it): the key hidden.
    pub async fn status(&self, ticket: &Ticket) -> Result<Status, ApiError> {
        // A status URL written with another key is passed over for the
        // documented endpoint, as one on another origin is.
        let status_url = ticket
            .status_url
            .as_deref()
            .and_then(|u| self.restore(u).ok());
        let id = self.restore(&ticket.request_id)?;
        let url = match self.keyed_url(status_url.as_deref()) {
            Some(u) => u,
            None => self.status_endpoint(ticket, &id)?,
        };
        let body = serde_json::json!({ "request_id": id });
        let cap = self.reply_cap(ticket.sync_images);
        let timeout = self.cfg.request_timeout;
        let reply = self.call(Op::Status, url, &body, cap, timeout).await?;
        if let Some(status) = self.terminal_status(&reply) {
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
                Code::BadResponse.as_str(),
                "the request is COMPLETED but the reply names no image",
            )
        };
        let response_url = ticket
            .response_url
            .as_deref()
            .map(|u| self.restore(u))
            .transpose()?;
        let Some(url) = self.keyed_url(response_url.as_deref()) else {
            return Err(missing());
        };
        let id = self.restore(&ticket.request_id)?;
        let body = serde_json::json!({ "request_id": id });
        let cap = self.reply_cap(ticket.sync_images);
        let timeout = self.cfg.request_timeout;
        let reply = self.call(Op::Status, url, &body, cap, timeout).await?;
        let images = reply.images();
        if images.is_empty() {
            return Err(missing());
        }
        Ok(Status::Completed(images))
    }

    /// A request id or URL as the gateway gave it, the key put back where
    /// [`Client::send`] hid it. One hidden for another key (the key was
    /// changed since) cannot be rebuilt: `KEY_CHANGED`, and the request
    /// stays collectable with the key it was submitted with.
    pub(super) fn restore<'a>(&self, text: &'a str) -> Result<std::borrow::Cow<'a, str>, ApiError> {
        self.redactor.restore(text).map_err(|super::redact::KeyChanged| {
            ApiError::new(
                Class::FailRow,
                Code::KeyChanged.as_str(),
                "the gateway put part of the API key in this request's id or URLs, and the key given now is not the one it was submitted with: rerun with that key to collect it",
            )
        })
    }

    /// The most bytes a reply may hold: the base cap, plus room for images
    /// sent inline as base64.
    fn reply_cap(&self, inline_images: u32) -> u64 {
        let per_image = self.cfg.max_download_bytes / 3 * 4 + 1024;
        self.cfg
            .max_reply_bytes
            .saturating_add(per_image.saturating_mul(u64::from(inline_images)))
    }

    /// How a reply says the request ended, if it does, the key hidden: in
    /// messages for good, in image URLs so that [`Client::download`] can
    /// restore it (inline `data:` images are never shown, so left whole).
    fn terminal_status(&self, reply: &Reply) -> Option<Status> {
        Some(match terminal_status(reply)? {
            Status::Failed(m) => Status::Failed(self.redactor.hide_owned(m)),
            Status::Error(m) => Status::Error(self.redactor.hide_owned(m)),
            Status::Completed(images) => Status::Completed(
                images
                    .into_iter()
                    .map(|u| match u.starts_with("data:") {
                        true => u,
                        false => self.redactor.hide(&u, true).into_owned(),
                    })
                    .collect(),
            ),
            other => other,
        })
    }

    /// POSTs JSON with the key to `url` (on the gateway's origin, or refused
    /// before anything is sent); returns the reply or a classified error.
    async fn call(
        &self,
        op: Op,
        url: Url,
        body: &serde_json::Value,
        cap: u64,
        timeout: Duration,
    ) -> Result<Reply, ApiError> {
        if !self.on_gateway(&url) {
            return Err(ApiError::new(
                Class::StopRun,
                Code::ForeignOrigin.as_str(),
                format!(
                    "refused to send the key to {}: only {} gets it",
                    url.origin().ascii_serialization(),
                    self.origin()
                ),
            ));
        }
        let path = logged_path(|| self.redactor.hide(url.path(), true).into_owned());
        let started = std::time::Instant::now();
        let mut answered: Option<u16> = None;
        let exchange = async {
            let mut key = HeaderValue::from_str(self.cfg.key.expose()).map_err(|_| {
                ApiError::new(
                    Class::StopRun,
                    Code::BadKey.as_str(),
                    "the API key is not a valid header",
                )
            })?;
            key.set_sensitive(true);
            if let Some(path) = &path {
                tracing::trace!(
                    target: "batchgen::http",
                    "POST {path}: {}: <redacted>, {CACHE_CONTROL}: no-cache, {CONTENT_TYPE}: application/json",
                    wire::KEY_HEADER
                );
            }
            let send = self
                .keyed
                .post(url)
                .header(wire::KEY_HEADER, key)
                .header(CACHE_CONTROL, "no-cache")
                .timeout(timeout)
                .json(body)
                .send();
            let mut response = send.await.map_err(|e| transport_error(op, &e))?;
            let status = response.status();
            answered = Some(status.as_u16());
            if status.is_redirection() {
                let location = response.headers().get(LOCATION);
                return Err(redirected(status, location.and_then(|l| l.to_str().ok())));
            }
            let retry_after = retry_after_header(response.headers());
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let uncertain = if op == Op::Submit {
                Class::Unsure
            } else {
                Class::Retry
            };
            let too_large = || {
                ApiError::new(
                    uncertain,
                    Code::ReplyTooLarge.as_str(),
                    format!("the reply is larger than {}", crate::disk::human_bytes(cap)),
                )
            };
            if response.content_length().is_some_and(|n| n > cap) {
                return Err(too_large());
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| transport_error(op, &e))?
            {
                if (bytes.len() + chunk.len()) as u64 > cap {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            let reply: Option<Reply> = serde_json::from_slice(&bytes).ok();
            // Some gateways answer 200 with an error body.
            let says_error = |r: &Reply| {
                r.phase().is_none()
                    && r.images().is_empty()
                    && r.request_id.is_none()
                    && r.error_parts().is_some()
            };
            match reply {
                Some(r) if status.is_success() && !says_error(&r) => Ok(r),
                None if status.is_success() => Err(ApiError::new(
                    uncertain,
                    Code::BadResponse.as_str(),
                    format!(
                        "unreadable reply: {}",
                        summarise(content_type.as_deref(), &bytes)
                    ),
                )),
                _ => Err(http_error(
                    op,
                    status,
                    content_type.as_deref(),
                    &bytes,
                    retry_after,
                )),
            }
        };
        // A transport error names the URL sent to: key and all, if the id held it.
        let result = exchange.await.map_err(|e| self.redactor.error(e));
        log_exchange("POST", path.as_deref(), answered, &result, started);
        result
    }
}

/// How a reply says the request ended, if it does.
fn terminal_status(reply: &Reply) -> Option<Status> {
    let message = || {
        reply
            .error_parts()
            .map(|(_, m)| super::one_line(&m))
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
#[cfg(test)]
mod tests;
