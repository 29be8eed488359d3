//! Every way a gateway call can fail, classified into what the caller must do.
//!
//! Why this exists apart from the client: the classification is where money
//! is won or lost. A submit whose answer does not prove it was refused (a
//! timeout, a 502 from a proxy, an HTML error page, a reply cut short) may
//! have been accepted and charged, so it is `Unsure` and never resent
//! automatically; only answers that prove refusal are `Retry`. Messages are
//! always one line: a proxy's HTML page is summarised, never pasted.

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::wire::{code, Reply};
use crate::vocab::Code;

/// What the caller must do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Try again after a delay (429, 503, the documented 500, connection
    /// refused, status `ERROR`). A submit that failed so was not accepted.
    Retry,
    /// A submit may have reached the gateway and been accepted (timeout or
    /// broken reply after the body was sent, 502, 504, an undocumented 5xx).
    /// Resending risks paying twice.
    Unsure,
    /// This row cannot succeed as sent (400, validation, status `FAILED`).
    FailRow,
    /// No later request can succeed (401, 403, `INSUFFICIENT_FUNDS`, a
    /// redirect of a call that carries the key).
    StopRun,
    /// The gateway does not know the request id or file (404 `NOT_FOUND`).
    NotFound,
    /// Our own disk failed (the output folder, a write, a sync): stop
    /// spending. The request itself is fine and stays collectable.
    Local,
}

/// A failed gateway call, classified.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}{}: {message}", http_status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct ApiError {
    pub class: Class,
    /// A documented code (`RATE_LIMIT_EXCEEDED`, …) or one of ours
    /// (`CONNECTION_FAILED`, `TIMEOUT`, `HTTP_502`, `REDIRECTED`, `DISK`, …).
    pub code: String,
    /// One line, never the whole body of a reply.
    pub message: String,
    pub http_status: Option<u16>,
    /// How long the server asked us to wait.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(class: Class, code: &str, message: impl AsRef<str>) -> ApiError {
        ApiError {
            class,
            code: code.to_string(),
            message: one_line(message.as_ref()),
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

    pub fn is_local(&self) -> bool {
        self.class == Class::Local
    }

    /// The gateway could not be reached at all (nothing was sent).
    pub fn is_unreachable(&self) -> bool {
        self.code == Code::ConnectionFailed.as_str()
    }

    /// A limiter's refusal: wait as told; the row did nothing wrong, and
    /// it never uses up the row's attempts. A 429 (or its code), or a 503
    /// the gateway did not phrase itself (nginx's `limit_req` answers 503
    /// with its HTML page by default; see [`classify`] for why it is a
    /// refusal).
    pub fn is_rate_limited(&self) -> bool {
        self.http_status == Some(429)
            || self.code == code::RATE_LIMIT_EXCEEDED
            || (self.http_status == Some(503) && self.code == "HTTP_503")
    }
}

/// Which call failed: the same failure means different things for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Submit,
    Status,
    Download,
}

/// An error for a reply with HTTP status `status` and body `body`.
pub(crate) fn http_error(
    op: Op,
    status: StatusCode,
    content_type: Option<&str>,
    body: &[u8],
    retry_after: Option<Duration>,
) -> ApiError {
    let s = status.as_u16();
    if let Some(message) = (s == 403).then(|| quota_spent(body)).flatten() {
        return ApiError {
            class: Class::StopRun,
            code: Code::QuotaExceeded.as_str().into(),
            message,
            http_status: Some(s),
            retry_after,
        };
    }
    let parsed = documented_error(body);
    let (code, message) = match &parsed {
        Some((code, message)) => (code.clone(), one_line(message)),
        None => (None, summarise(content_type, body)),
    };
    let class = classify(op, s, code.as_deref(), parsed.is_some());
    let retry_after = retry_after.or_else(|| retry_after_message(&message));
    ApiError {
        class,
        code: code.unwrap_or_else(|| format!("HTTP_{s}")),
        message,
        http_status: Some(s),
        retry_after,
    }
}

/// What an HTTP answer means for the caller. `documented` is true when the
/// body is one of the vendor's error shapes (and so came from the gateway
/// itself, not from a proxy in front of it).
fn classify(op: Op, status: u16, code: Option<&str>, documented: bool) -> Class {
    match (code, status) {
        (Some(code::INSUFFICIENT_FUNDS | code::UNAUTHORIZED), _) | (_, 401 | 403) => Class::StopRun,
        (Some(code::RATE_LIMIT_EXCEEDED), _) | (_, 429 | 408) => Class::Retry,
        // Only a refusal proves a submit was not accepted: a proxy's 502 or
        // 504, or any 5xx the gateway did not phrase itself, can arrive after
        // the backend took (and charged) the request. A 503 is the refusal
        // status: "Service Unavailable" says the request was not handled,
        // and what sends it in front of a gateway sends it *instead of*
        // forwarding (nginx's `limit_req` and `limit_conn`, whose default
        // status it is, a load balancer with no healthy backend); a proxy
        // that forwarded and lost the answer says 502 or 504. Whatever
        // phrased it, the evidence is the same: no request id, so nothing
        // to collect and nothing the gateway admits to. One the gateway did
        // not phrase (HTML, no vendor JSON) is a limiter's, and waits in the
        // rate limiter without using up the row's attempts
        // ([`ApiError::is_rate_limited`]); the gateway's own JSON 503 keeps
        // the 5xx rules (a bounded number of attempts).
        (_, 503) => Class::Retry,
        (_, 502 | 504) if op == Op::Submit => Class::Unsure,
        (_, 500..=599) if op == Op::Submit && !documented => Class::Unsure,
        (_, 500..=599) => Class::Retry,
        // A submit endpoint that does not exist will not appear later.
        (_, 404) if op == Op::Submit => Class::StopRun,
        (Some(code::NOT_FOUND), _) | (_, 404 | 410) => Class::NotFound,
        _ => Class::FailRow,
    }
}

/// The message of a 403 that says a volume quota is spent: Azure API
/// Management's `{"statusCode": 403, "message": "Out of call volume quota.
/// Quota will be replenished in …"}` (a gateway's words; any JSON `message`
/// or error that names a quota).
fn quota_spent(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = v
        .get("message")
        .or_else(|| v.get("error").and_then(|e| e.get("message")))
        .or_else(|| v.get("error"))?
        .as_str()?;
    message
        .to_ascii_lowercase()
        .contains("quota")
        .then(|| one_line(message))
}

/// `(code, message)` if `body` is one of the vendor's documented error shapes.
pub(crate) fn documented_error(body: &[u8]) -> Option<(Option<String>, String)> {
    let reply: Reply = serde_json::from_slice(body).ok()?;
    let (code, message) = reply.error_parts()?;
    code.is_some().then_some((code, message))
}

/// A redirect of a call that carries the key: never followed.
pub(crate) fn redirected(status: StatusCode, location: Option<&str>) -> ApiError {
    let to = location
        .and_then(|l| reqwest::Url::parse(l).ok())
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|| "an unknown place".into());
    ApiError {
        class: Class::StopRun,
        code: Code::Redirected.as_str().into(),
        message: format!(
            "the gateway redirected to {to}; the key is never sent anywhere but --base-url (check it)"
        ),
        http_status: Some(status.as_u16()),
        retry_after: None,
    }
}

pub(crate) fn transport_error(op: Op, e: &reqwest::Error) -> ApiError {
    // A certificate will not become trusted by asking again.
    if let Some(why) = untrusted_certificate(e) {
        return ApiError::new(
            Class::StopRun,
            Code::TlsUntrusted.as_str(),
            format!(
                "the server's TLS certificate is not trusted ({why}); batchgen trusts the system's certificate store and its bundled roots: add the issuing CA to the system store, or point SSL_CERT_FILE at it"
            ),
        );
    }
    // A connection that never opened carried nothing: always safe to retry.
    if e.is_connect() {
        return ApiError::new(Class::Retry, Code::ConnectionFailed.as_str(), describe(e));
    }
    let code = if e.is_timeout() {
        Code::Timeout.as_str()
    } else {
        Code::Transport.as_str()
    };
    let class = if op == Op::Submit {
        Class::Unsure
    } else {
        Class::Retry
    };
    ApiError::new(class, code, describe(e))
}

/// Why the peer's certificate was refused, if that is what `e` is. An
/// `io::Error` hides what it wraps from `source()` (and TLS errors arrive
/// wrapped in two): it is looked into.
fn untrusted_certificate(e: &reqwest::Error) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        match err.downcast_ref::<rustls::Error>() {
            Some(rustls::Error::InvalidCertificate(why)) => return Some(format!("{why:?}")),
            Some(other @ rustls::Error::InvalidCertRevocationList(_)) => {
                return Some(other.to_string())
            }
            _ => {}
        }
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
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

/// `Retry-After: N` (seconds; the HTTP-date form is rare and ignored).
pub(crate) fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
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

/// The longest message we keep from a reply.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// `text` on one line: control characters become spaces, runs of white
/// space one space, and anything past [`MAX_MESSAGE_CHARS`] is cut with `…`.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_CHARS + 4));
    let mut chars = 0;
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if chars > 0 {
            out.push(' ');
            chars += 1;
        }
        for c in word.chars() {
            if chars >= MAX_MESSAGE_CHARS {
                out.push('…');
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}

/// A reply body that is not the vendor's JSON, in a few words: its content
/// type, its size and its first words with markup removed.
pub(crate) fn summarise(content_type: Option<&str>, body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        return "(empty reply)".into();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let mut plain = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => {
                in_tag = true;
                plain.push(' ');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => plain.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = plain.split_whitespace().take(12).collect();
    let kind = content_type
        .and_then(|t| t.split(';').next())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("no content type");
    let mut first = words.join(" ");
    if first.chars().count() > 120 {
        first = first.chars().take(120).collect::<String>() + "…";
    }
    one_line(&format!(
        "{kind} reply of {}: {first}",
        crate::disk::human_bytes(body.len() as u64)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(op: Op, status: u16, body: &str) -> Class {
        http_error(
            op,
            StatusCode::from_u16(status).unwrap(),
            Some("application/json"),
            body.as_bytes(),
            None,
        )
        .class
    }

    const INTERNAL: &str = r#"{"error":{"code":"INTERNAL_ERROR","message":"Internal server error. Please retry later."}}"#;
    const NGINX: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n";

    #[test]
    fn only_refusals_make_a_submit_retryable() {
        assert_eq!(class(Op::Submit, 500, INTERNAL), Class::Retry);
        assert_eq!(class(Op::Submit, 503, NGINX), Class::Retry);
        assert_eq!(class(Op::Submit, 503, ""), Class::Retry);
        assert_eq!(
            class(
                Op::Submit,
                429,
                r#"{"error":"slow","code":"RATE_LIMIT_EXCEEDED"}"#
            ),
            Class::Retry
        );
        for (status, body) in [
            (502, NGINX),
            (504, ""),
            (502, INTERNAL),
            (500, NGINX),
            (500, ""),
        ] {
            assert_eq!(
                class(Op::Submit, status, body),
                Class::Unsure,
                "{status} {body}"
            );
        }
        // The same answers to a status call only mean "ask again".
        for (status, body) in [(502, NGINX), (504, ""), (500, NGINX)] {
            assert_eq!(class(Op::Status, status, body), Class::Retry);
        }
    }

    #[test]
    fn http_errors_are_classified() {
        let c = |status: u16, code: &str| {
            class(
                Op::Status,
                status,
                &format!(r#"{{"error":{{"code":"{code}","message":""}}}}"#),
            )
        };
        assert_eq!(c(429, "RATE_LIMIT_EXCEEDED"), Class::Retry);
        assert_eq!(c(500, "INTERNAL_ERROR"), Class::Retry);
        assert_eq!(c(401, "UNAUTHORIZED"), Class::StopRun);
        assert_eq!(c(403, "X"), Class::StopRun);
        assert_eq!(c(400, "INSUFFICIENT_FUNDS"), Class::StopRun);
        assert_eq!(c(400, "VALIDATION_ERROR"), Class::FailRow);
        assert_eq!(c(400, "INVALID_PARAMETER"), Class::FailRow);
        assert_eq!(c(404, "NOT_FOUND"), Class::NotFound);
        assert_eq!(class(Op::Submit, 404, ""), Class::StopRun);
    }

    const NGINX_503: &str = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n";

    fn submit_error(status: u16, content_type: &str, body: &str) -> ApiError {
        http_error(
            Op::Submit,
            StatusCode::from_u16(status).unwrap(),
            Some(content_type),
            body.as_bytes(),
            None,
        )
    }

    #[test]
    fn a_limiters_refusal_is_a_rate_signal_and_the_gateways_own_503_is_not() {
        // nginx limit_req: 503 (its default) or 429, HTML, no Retry-After.
        for (status, body) in [(503, NGINX_503), (429, NGINX_503), (503, "")] {
            let e = submit_error(status, "text/html", body);
            assert_eq!(e.class, Class::Retry, "{status} {body}");
            assert!(e.is_rate_limited(), "{status} {body}");
            assert_eq!(e.retry_after, None);
        }
        // The gateway's own JSON 503 keeps the 5xx rules.
        let own = submit_error(
            503,
            "application/json",
            r#"{"error":{"code":"SERVICE_UNAVAILABLE","message":"busy"}}"#,
        );
        assert_eq!(own.class, Class::Retry);
        assert!(!own.is_rate_limited());
        // A proxy's 502 stays unsure and is no rate signal.
        let proxy = submit_error(502, "text/html", NGINX);
        assert_eq!(proxy.class, Class::Unsure);
        assert!(!proxy.is_rate_limited());
    }

    #[test]
    fn a_spent_quota_stops_the_run_naming_it() {
        let e = submit_error(
            403,
            "application/json",
            r#"{ "statusCode": 403, "message": "Out of call volume quota. Quota will be replenished in 23:59:59." }"#,
        );
        assert_eq!(e.class, Class::StopRun);
        assert_eq!(e.code, Code::QuotaExceeded.as_str());
        assert_eq!(
            e.message,
            "Out of call volume quota. Quota will be replenished in 23:59:59."
        );
        assert!(!e.is_rate_limited());
        // Any other 403 stops the run as before, under its own words.
        let other = submit_error(
            403,
            "application/json",
            r#"{"statusCode": 403, "message": "Forbidden"}"#,
        );
        assert_eq!(
            (other.class, other.code.as_str()),
            (Class::StopRun, "HTTP_403")
        );
    }

    #[test]
    fn html_pages_are_summarised_on_one_line() {
        let e = http_error(
            Op::Submit,
            StatusCode::BAD_GATEWAY,
            Some("text/html; charset=utf-8"),
            NGINX.as_bytes(),
            None,
        );
        assert_eq!(e.code, "HTTP_502");
        assert_eq!(
            e.message,
            "text/html reply of 157 bytes: 502 Bad Gateway 502 Bad Gateway nginx/1.25.3"
        );
        assert_eq!(e.to_string(), format!("HTTP_502 (HTTP 502): {}", e.message));
        let huge = "word ".repeat(100_000);
        let e = http_error(
            Op::Status,
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            huge.as_bytes(),
            None,
        );
        assert!(e.message.len() < 200, "{}", e.message);
        assert!(e
            .message
            .starts_with("no content type reply of 488.3 KiB: word word"));
    }

    #[test]
    fn messages_are_one_bounded_line() {
        assert_eq!(one_line("  a\r\nb\t\u{7}c  "), "a b c");
        let long = one_line(&"x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(long.ends_with('…'));
        let e = ApiError::new(Class::Retry, "X", "line one\nline two");
        assert_eq!(e.message, "line one line two");
    }

    #[test]
    fn retry_after_comes_from_the_message_too() {
        assert_eq!(
            retry_after_message("Rate limit exceeded. Retry after 60 seconds."),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_after_message("slow down"), None);
    }
}
