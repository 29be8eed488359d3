//! Which gateway a run talks to, named so that spellings of one base URL
//! agree and no credential is ever written down.
//!
//! Why this exists: an output folder belongs to one gateway, and the cache
//! keeps each gateway's images apart. Two gateways may share a host and
//! differ only by path (`https://h/a`, `https://h/b`), so a gateway is named
//! by its whole base URL, normalised:
//!
//! - scheme and host in lowercase (an international host in its ASCII
//!   form), the scheme's default port dropped;
//! - the path with `.` and `..` segments resolved, escapes of letters,
//!   digits and `-._~` decoded and every other escape in capitals, and
//!   trailing slashes dropped;
//! - no user name, password, query or fragment (they may hold a key).
//!
//! A base URL without a path is named by its origin (`https://host:port`),
//! which is what earlier versions recorded for every base URL: their
//! folders and cache entries keep serving it.

use reqwest::Url;

/// The name a simulated run records.
pub const SIMULATED: &str = "simulated";

/// A gateway: its origin (where the key may go) and its normalised base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    origin: String,
    base: String,
}

impl Gateway {
    /// The built-in simulator (`--simulate`).
    pub fn simulated() -> Gateway {
        Gateway {
            origin: SIMULATED.into(),
            base: SIMULATED.into(),
        }
    }

    /// The gateway at `url` (an http(s) URL with a host).
    pub fn of_url(url: &Url) -> Gateway {
        let origin = url.origin().ascii_serialization();
        let base = format!("{origin}{}", normal_path(url.path()));
        Gateway { origin, base }
    }

    /// `https://host:port`, or [`SIMULATED`]: what journals record as `gateway`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The normalised base URL (the origin when it has no path), or [`SIMULATED`].
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether its base URL has a path: earlier versions, which knew only
    /// origins, cannot have told it from its host's other gateways.
    pub fn has_path(&self) -> bool {
        self.base.len() > self.origin.len()
    }

    pub fn is_simulated(&self) -> bool {
        self.origin == SIMULATED
    }

    /// The base URL a run line records (none for the simulator).
    pub fn recorded_base(&self) -> Option<String> {
        (!self.is_simulated()).then(|| self.base.clone())
    }

    /// Whether a folder whose journal names `origin` (and, from versions
    /// that record it, `base`) was made against this gateway. A journal
    /// without a base URL was written by a version that recorded origins
    /// only: any base URL on that origin may resume it (and records its own).
    pub fn made(&self, origin: &str, base: Option<&str>) -> bool {
        origin == self.origin && base.is_none_or(|b| b == self.base)
    }
}

/// `path` as [`Gateway`] compares it (see the module's rule). It is already
/// parsed by the URL standard: dot segments resolved, escaped as needed.
fn normal_path(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%' && i + 2 < b.len())
            .then(|| u8::from_str_radix(&path[i + 1..i + 3], 16).ok())
            .flatten();
        match escaped {
            Some(c) if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => {
                out.push(c as char);
                i += 3;
            }
            Some(c) => {
                out.push_str(&format!("%{c:02X}"));
                i += 3;
            }
            None => {
                out.push(b[i] as char);
                i += 1;
            }
        }
    }
    out.trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(url: &str) -> String {
        Gateway::of_url(&Url::parse(url).unwrap())
            .base()
            .to_string()
    }

    #[test]
    fn spellings_of_one_gateway_agree() {
        for (url, named) in [
            ("https://gateway.pixazo.ai", "https://gateway.pixazo.ai"),
            (
                "HTTPS://Gateway.Pixazo.AI:443/",
                "https://gateway.pixazo.ai",
            ),
            ("https://gateway.pixazo.ai//", "https://gateway.pixazo.ai"),
            ("http://h:80/a/", "http://h/a"),
            ("http://h:8080/a", "http://h:8080/a"),
            ("http://h/x/../a/./", "http://h/a"),
            ("http://h/%61%2f%7e/", "http://h/a%2F~"),
            ("http://h/A", "http://h/A"),
            ("http://[::1]:9/a", "http://[::1]:9/a"),
            ("http://bücher.example/a", "http://xn--bcher-kva.example/a"),
        ] {
            assert_eq!(base(url), named, "{url}");
        }
        assert_ne!(base("http://h/a"), base("http://h/b"));
        assert_ne!(base("http://h/a"), base("http://h"));
        assert_ne!(base("http://h/a"), base("https://h/a"));
    }

    #[test]
    fn credentials_query_and_fragment_are_never_part_of_the_name() {
        let g = Gateway::of_url(&Url::parse("https://me:sk-secret@h/a?key=sk-secret#k").unwrap());
        assert_eq!((g.origin(), g.base()), ("https://h", "https://h/a"));
        assert!(g.has_path());
    }

    #[test]
    fn a_folder_is_made_by_its_base_url_or_by_any_on_the_origin_an_old_journal_names() {
        let a = Gateway::of_url(&Url::parse("https://h/a").unwrap());
        assert!(a.made("https://h", Some("https://h/a")));
        assert!(!a.made("https://h", Some("https://h/b")));
        assert!(!a.made("https://h", Some("https://h")));
        assert!(a.made("https://h", None), "an older version's folder");
        assert!(!a.made("https://other", None));
        let root = Gateway::of_url(&Url::parse("https://h/").unwrap());
        assert!(!root.has_path());
        assert!(root.made("https://h", Some("https://h")));
        assert!(!Gateway::simulated().made("https://h", None));
        assert!(Gateway::simulated().made(SIMULATED, None));
    }
}
