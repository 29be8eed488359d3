//! One line per HTTP exchange at `-v`: method, path, status, time taken.
//!
//! Why this exists: the submit, status and download calls log their exchanges
//! alike, and never a query, a header's value or the key.

use crate::api::ApiError;

/// The path an exchange is logged under, made only when `-v` (or RUST_LOG)
/// asks for exchanges: the hot path does not build strings nobody reads.
pub(crate) fn logged_path(path: impl FnOnce() -> String) -> Option<String> {
    tracing::enabled!(target: "batchgen::http", tracing::Level::DEBUG).then(path)
}

/// One HTTP exchange at `-v` (target `batchgen::http`): method, path (never
/// the query, never a header's value), status or failure, time taken.
/// Nothing without a path from [`logged_path`].
pub(crate) fn log_exchange<T>(
    method: &str,
    path: Option<&str>,
    status: Option<u16>,
    result: &Result<T, ApiError>,
    started: std::time::Instant,
) {
    let Some(path) = path else { return };
    let ms = started.elapsed().as_millis();
    match (status, result) {
        (Some(s), Ok(_)) => {
            tracing::debug!(target: "batchgen::http", "{method} {path} → {s} in {ms} ms")
        }
        (Some(s), Err(e)) => {
            tracing::debug!(target: "batchgen::http", "{method} {path} → {s} in {ms} ms: {}", e.code)
        }
        (None, Err(e)) => tracing::debug!(
            target: "batchgen::http",
            "{method} {path} → no answer after {ms} ms: {}: {}",
            e.code,
            e.message
        ),
        (None, Ok(_)) => tracing::debug!(target: "batchgen::http", "{method} {path} in {ms} ms"),
    }
}
