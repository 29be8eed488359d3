//! `run --notify URL`: at the end of a run (success, failure or stop),
//! summary.json is POSTed to the URL, so that a chat hook or a scheduler
//! hears how the night went.
//!
//! Why this exists apart: it is the one request batchgen sends anywhere
//! but the gateway, and it must never carry the API key (no Authorization
//! header; a URL holding the key is refused before anything is sent, as
//! `--base-url` is), never follow a redirect (the body would go where the
//! URL did not say), and never change the run's exit code. It is bounded:
//! [`TRIES`] tries of at most [`TIMEOUT`] each, [`BACKOFF`] doubling between.
//! Messages name the URL's origin only: a hook's path often is its token.
//!
//! Cancellation: [`Target::send`] is awaited whole at the run's end; its
//! bounds are its own.

use std::time::Duration;

use crate::api::{self, ApiKey};
use crate::exit::Error;

/// Tries in all.
pub const TRIES: u32 = 3;
/// The longest one try may take, answer included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The wait before the second try; doubled before each next one.
pub const BACKOFF: Duration = Duration::from_secs(1);

/// A checked `--notify` URL.
pub struct Target {
    url: reqwest::Url,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("origin", &self.origin())
            .finish()
    }
}

impl Target {
    /// Checks `url` before anything is sent: http(s) with a host, and not
    /// holding `key` (as given or as parsed).
    pub fn check(url: &str, key: Option<&ApiKey>) -> Result<Target, Error> {
        let holds = |text: &str| key.is_some_and(|k| api::holds_key(k, text));
        if holds(url) {
            return Err(Error::NotifyHoldsKey);
        }
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or(Error::NotifyUrl)?;
        if holds(parsed.as_str()) {
            return Err(Error::NotifyHoldsKey);
        }
        Ok(Target { url: parsed })
    }

    /// `https://hooks.example.com`: what messages show of the URL.
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }

    /// POSTs `body` (JSON); `Err` says why the last try failed.
    pub async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        let client = reqwest::Client::builder()
            // As the gateway client does: loopback without any file.
            .resolve_to_addrs("localhost", &crate::api::LOCALHOST)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .user_agent(concat!("batchgen/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {}", e.without_url()))?;
        let mut why = String::new();
        for attempt in 0..TRIES {
            if attempt > 0 {
                tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
            }
            let sent = client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let status = match sent {
                Ok(answer) => answer.status(),
                Err(e) if e.is_timeout() => {
                    why = format!("no answer within {} s", TIMEOUT.as_secs());
                    continue;
                }
                Err(e) => {
                    why = format!("cannot reach it ({})", e.without_url());
                    continue;
                }
            };
            if status.is_success() {
                return Ok(());
            }
            why = format!("it answered {status}");
            if status.is_redirection() {
                return Err(format!("{why}, a redirect (not followed)"));
            }
            // Another try would be refused the same way.
            if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) {
                return Err(why);
            }
        }
        Err(format!("{why} ({TRIES} tries)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_must_be_http_and_never_hold_the_key() {
        let key = ApiKey::new("sk-SECRET-notify-4711").unwrap();
        assert!(Target::check("https://hooks.example.com/T0/B1/x", Some(&key)).is_ok());
        for bad in ["ftp://h/x", "hooks.example.com", "http://", ""] {
            assert!(
                matches!(Target::check(bad, Some(&key)), Err(Error::NotifyUrl)),
                "{bad}"
            );
        }
        for holding in [
            "https://h/?token=sk-SECRET-notify-4711",
            "https://sk-SECRET-notify-4711@h/",
            "https://h/SK-SECRET-NOTIFY-4711",
        ] {
            assert!(
                matches!(
                    Target::check(holding, Some(&key)),
                    Err(Error::NotifyHoldsKey)
                ),
                "{holding}"
            );
        }
        let t = Target::check("https://user:pw@hooks.example.com:8443/T0/secret", None).unwrap();
        assert_eq!(t.origin(), "https://hooks.example.com:8443");
        assert!(!format!("{t:?}").contains("secret"));
    }
}
