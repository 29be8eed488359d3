//! Where the key may go: the gateway's own origin, and nowhere else.
//!
//! Why this exists apart from the calls: every URL a call carries the key to
//! passes these checks, whether the base URL built it, a reply named it or a
//! journal replays it; and a request id goes back to the gateway only as one
//! escaped path segment of the documented status endpoint.

use reqwest::Url;

use super::Client;
use crate::api::{ApiError, Class, Ticket};
use crate::plan::Kind;
use crate::vocab::Code;

/// The longest request id we accept from a gateway.
pub const MAX_REQUEST_ID: usize = 256;

impl Client {
    /// The documented status endpoint of `ticket`, whose request id is `id`
    /// (restored: the key back in it); a text-to-image request id is one
    /// escaped path segment, whatever it holds.
    pub(super) fn status_endpoint(&self, ticket: &Ticket, id: &str) -> Result<Url, ApiError> {
        check_request_id(id).map_err(|why| {
            ApiError::new(
                Class::FailRow,
                Code::BadRequestId.as_str(),
                format!("cannot poll request id {:?}: {why}", ticket.request_id),
            )
        })?;
        let mut url = self.status_urls[ticket.kind as usize].clone();
        if ticket.kind == Kind::TextToImage {
            url.path_segments_mut()
                .map_err(|()| self.not_a_base())?
                .pop_if_empty()
                .push(id);
        }
        Ok(url)
    }

    pub(super) fn not_a_base(&self) -> ApiError {
        ApiError::new(
            Class::StopRun,
            Code::BadBaseUrl.as_str(),
            "the base URL cannot take a path",
        )
    }

    /// A server-given URL, kept only if it is on the gateway's own origin:
    /// the key is sent to it, and the key goes nowhere else.
    pub(super) fn same_origin(&self, url: Option<&str>) -> Option<String> {
        self.keyed_url(url).map(String::from)
    }

    /// A server-given URL, parsed once, if it is on the gateway's own origin.
    pub(super) fn keyed_url(&self, url: Option<&str>) -> Option<Url> {
        Url::parse(url?).ok().filter(|u| self.on_gateway(u))
    }

    /// Whether `url` has the gateway's origin: its scheme, host and port
    /// (the base URL is http(s), whose origin is exactly those three).
    pub(super) fn on_gateway(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host() == self.base.host()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }
}

/// Whether `id` can be sent back to the gateway safely.
pub(super) fn check_request_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id == "." || id == ".." {
        return Err("empty or a dot path");
    }
    if id.len() > MAX_REQUEST_ID {
        return Err("too long");
    }
    if id.chars().any(char::is_control) {
        return Err("holds control characters");
    }
    Ok(())
}
