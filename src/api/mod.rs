//! The GLM Image gateway client: submit, status, download.
//!
//! Why this exists: one module knows the wire format and turns every outcome,
//! whatever shape the gateway answered in, into what the caller must do
//! ([`Class`]): retry, fail the row, stop the run, beware of having been
//! accepted, or stop because our own disk failed. It knows nothing of
//! manifests or the journal.
//!
//! - [`client`]: the calls that carry the key (submit, status, result).
//! - [`error`]: classification of every failure, and one-line messages.
//! - [`download`]: images into files, whole or not at all.
//! - [`wire`]: the JSON shapes, shared with the simulator.
//! - `redact`: the key hidden in whatever the gateway says, where it enters.
//!
//! Cancellation: every call is a future; dropping it (for instance when a
//! `select!` picks the shutdown branch) abandons the HTTP exchange. A submit
//! abandoned after its body was sent may still have been accepted, which is
//! why callers journal before they submit, not after.

pub mod backoff;
pub mod client;
pub mod download;
pub mod error;
pub mod image;
mod key;
mod redact;
pub mod wire;

pub use backoff::Backoff;
pub use client::{submit_body, Client, ClientConfig, Prepared, DEFAULT_BASE_URL, LOCALHOST};
pub use download::{Downloaded, PART_PREFIX};
pub use error::{one_line, ApiError, Class};
pub use image::{ImageFormat, ImageInfo};
pub use key::{ApiKey, KeyError, ENV_VAR as KEY_ENV_VAR, MAX_KEY_FILE_BYTES};
pub use redact::holds_key;
pub use wire::submit_path;
use wire::Phase;

pub use crate::vocab::Ticket;

/// Where a request stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Pending(Phase),
    /// Image URLs (the key hidden, as in a [`Ticket`]) or `data:` URIs.
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
