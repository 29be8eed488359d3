//! Keeping the key out of what the gateway says.
//!
//! Why this exists: a gateway may echo the key it was sent, whole or a piece
//! of it, in a request id, a status or image URL, an error code or message,
//! and every one of those is written down (the journal, results.csv,
//! sidecars, the contact sheet, exports, logs). The client passes all text
//! from the gateway through [`Redactor::hide`] where it enters, so no writer
//! needs to know: every run of [`MIN_FRAGMENT`] or more of the key's
//! characters is replaced. In a message (an error's code and words) it
//! becomes `<redacted>`.
//!
//! Request ids and URLs must still work (a rerun polls the id its journal
//! holds; money depends on it), so in those the placeholder says what stood
//! there: `{key}` for the whole key, `{key[A..B]}` for its bytes A to B; a
//! literal `{key` is written `{key{`; and [`Redactor::restore`] turns the
//! text back into what the gateway sent, only when a request is built.

use std::borrow::Cow;
use std::collections::HashMap;

use super::{ApiError, ApiKey};

/// The shortest run of the key's characters that is hidden (a shorter key
/// is hidden whole).
pub const MIN_FRAGMENT: usize = 8;

/// Opens every placeholder of exact text.
const OPEN: &str = "{key";

/// What stands for the key, or any run of it, in a message.
pub(crate) const REDACTED: &str = "<redacted>";

/// Hides the key in text from the gateway, and puts it back for requests.
pub(crate) struct Redactor {
    key: ApiKey,
    /// The length of the windows below: [`MIN_FRAGMENT`], or the whole key
    /// if it is shorter.
    min: usize,
    /// Where each `min`-byte window of the key starts, by its bytes.
    windows: HashMap<u64, Vec<usize>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor(<redacted>)")
    }
}

/// Up to 8 bytes as one number.
fn pack(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

impl Redactor {
    pub(crate) fn new(key: &ApiKey) -> Redactor {
        let bytes = key.expose().as_bytes();
        let min = MIN_FRAGMENT.min(bytes.len()).max(1);
        let mut windows: HashMap<u64, Vec<usize>> = HashMap::new();
        for (at, w) in bytes.windows(min).enumerate() {
            windows.entry(pack(w)).or_default().push(at);
        }
        Redactor {
            key: key.clone(),
            min,
            windows,
        }
    }

    /// `text` with every run of the key's characters (at least
    /// [`MIN_FRAGMENT`] long) replaced by a placeholder. `exact`: a literal
    /// `{key` is escaped too, so that [`Redactor::restore`] gives `text`
    /// back (for request ids and URLs; messages need not be).
    pub(crate) fn hide<'a>(&self, text: &'a str, exact: bool) -> Cow<'a, str> {
        let t = text.as_bytes();
        let mut out: Option<String> = None;
        // `text[..copied]` is in `out` already.
        let mut copied = 0;
        let mut i = 0;
        // Both a fragment and `{key` are ASCII, so every cut is at a char boundary.
        while i < t.len() {
            if let Some((at, len)) = self.fragment_at(t, i) {
                let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
                o.push_str(&text[copied..i]);
                if !exact {
                    o.push_str(REDACTED);
                } else if len == self.key.expose().len() {
                    o.push_str("{key}");
                } else {
                    o.push_str(&format!("{OPEN}[{at}..{}]}}", at + len));
                }
                i += len;
                copied = i;
            } else if exact && t[i..].starts_with(OPEN.as_bytes()) {
                let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
                i += OPEN.len();
                o.push_str(&text[copied..i]);
                o.push('{');
                copied = i;
            } else {
                i += 1;
            }
        }
        match out {
            None => Cow::Borrowed(text),
            Some(mut o) => {
                o.push_str(&text[copied..]);
                Cow::Owned(o)
            }
        }
    }

    /// [`Redactor::hide`] for an owned message.
    pub(crate) fn hide_owned(&self, text: String) -> String {
        match self.hide(&text, false) {
            Cow::Borrowed(_) => text,
            Cow::Owned(hidden) => hidden,
        }
    }

    /// An error as it may be shown: the key hidden in its code and message.
    pub(crate) fn error(&self, mut e: ApiError) -> ApiError {
        e.code = self.hide_owned(e.code);
        e.message = self.hide_owned(e.message);
        e
    }

    /// `url` as it may be shown: without credentials, query or fragment,
    /// and with the key hidden.
    pub(crate) fn url(&self, url: &reqwest::Url) -> String {
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        shown.set_fragment(None);
        self.hide_owned(shown.as_str().trim_end_matches('/').to_string())
    }

    /// The longest run of the key's characters starting at `t[i]`, at least
    /// `min` long: where it starts in the key, and its length.
    fn fragment_at(&self, t: &[u8], i: usize) -> Option<(usize, usize)> {
        let window = t.get(i..i + self.min)?;
        let key = self.key.expose().as_bytes();
        let starts = self.windows.get(&pack(window))?;
        starts
            .iter()
            .filter(|&&at| key[at..at + self.min] == *window)
            .map(|&at| {
                let len = key[at..]
                    .iter()
                    .zip(&t[i..])
                    .take_while(|(a, b)| a == b)
                    .count();
                (at, len)
            })
            .max_by_key(|&(at, len)| (len, std::cmp::Reverse(at)))
    }

    /// The text [`Redactor::hide`] was given (with `exact`), key and all: for
    /// building a request, never for showing.
    pub(crate) fn restore<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !text.contains(OPEN) {
            return Cow::Borrowed(text);
        }
        let key = self.key.expose();
        let mut out = String::with_capacity(text.len() + key.len());
        let mut rest = text;
        while let Some(at) = rest.find(OPEN) {
            out.push_str(&rest[..at]);
            let after = &rest[at + OPEN.len()..];
            if let Some(r) = after.strip_prefix('}') {
                out.push_str(key);
                rest = r;
            } else if let Some(r) = after.strip_prefix('{') {
                out.push_str(OPEN);
                rest = r;
            } else if let Some((range, r)) = range(after).filter(|(r, _)| r.end <= key.len()) {
                out.push_str(&key[range]);
                rest = r;
            } else {
                out.push_str(OPEN);
                rest = after;
            }
        }
        out.push_str(rest);
        Cow::Owned(out)
    }
}

/// `[A..B]}` at the start of `s` (A < B): the range, and what follows.
fn range(s: &str) -> Option<(std::ops::Range<usize>, &str)> {
    let s = s.strip_prefix('[')?;
    let (inside, rest) = s.split_once("]}")?;
    let (a, b) = inside.split_once("..")?;
    let digits = |d: &str| {
        (!d.is_empty() && d.len() < 8 && d.bytes().all(|c| c.is_ascii_digit()))
            .then(|| d.parse::<usize>().ok())
            .flatten()
    };
    let (a, b) = (digits(a)?, digits(b)?);
    (a < b).then_some((a..b, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-SECRET-run-test-4711";

    fn redactor(key: &str) -> Redactor {
        Redactor::new(&ApiKey::new(key).unwrap())
    }

    /// No `MIN_FRAGMENT` characters of `key` in a row in `text`.
    fn clean(key: &str, text: &str) -> bool {
        let min = MIN_FRAGMENT.min(key.len());
        !key.as_bytes()
            .windows(min)
            .any(|w| text.as_bytes().windows(min).any(|t| t == w))
    }

    #[test]
    fn the_whole_key_and_any_run_of_8_of_its_characters_are_hidden() {
        let r = redactor(KEY);
        for (text, hidden) in [
            ("glm-image_sk-SECRET-run-test-4711_ab", "glm-image_{key}_ab"),
            ("id ET-run-t x", "id {key[7..15]} x"),
            ("SECRET-run", "{key[3..13]}"),
            // Seven in a row are not the key's.
            ("ET-run-", "ET-run-"),
            ("a sk-SECRET-b sk-SECRET-c", "a {key[0..10]}b {key[0..10]}c"),
            ("4711sk-SECRET-run-test-4711", "4711{key}"),
            ("no key here", "no key here"),
            ("", ""),
        ] {
            let got = r.hide(text, true);
            assert_eq!(got, hidden, "{text}");
            assert!(clean(KEY, &got), "{got}");
            assert_eq!(r.restore(&got), text, "{got}");
        }
    }

    #[test]
    fn what_hides_nothing_is_not_copied() {
        let r = redactor(KEY);
        assert!(matches!(r.hide("glm-image_1234", true), Cow::Borrowed(_)));
        assert!(matches!(r.restore("glm-image_1234"), Cow::Borrowed(_)));
    }

    #[test]
    fn hidden_ids_and_urls_come_back_exactly() {
        let r = redactor(KEY);
        for text in [
            "{key}",
            "{key{",
            "{key[0..8]}",
            "{key[3..13]}sk-SECRET-run",
            "a{key",
            "{ke{key}y",
            "http://h/s/{key}?k=sk-SECRET-run-test-4711&{key[1..2]}",
            "ünïcödé sk-SECRET-run-test-4711 ✓",
            "{keysk-SECRET-run",
        ] {
            let hidden = r.hide(text, true);
            assert!(clean(KEY, &hidden), "{hidden}");
            assert_eq!(r.restore(&hidden), text, "{text} → {hidden}");
        }
        // Malformed placeholders are left as they are.
        for text in ["{key[", "{key[9..3]}", "{key[0..99]}", "{key[a..b]}"] {
            assert_eq!(r.restore(text), text);
        }
    }

    #[test]
    fn messages_are_hidden_without_escapes() {
        let r = redactor(KEY);
        assert_eq!(
            r.hide_owned("bad key sk-SECRET-run-test-4711 ({key}) ET-run-t".into()),
            "bad key <redacted> ({key}) <redacted>"
        );
    }

    #[test]
    fn a_short_key_is_hidden_whole() {
        let r = redactor("k3y");
        assert_eq!(r.hide("ak3yk3", true), "a{key}k3");
        assert_eq!(r.restore("a{key}k3"), "ak3yk3");
    }

    #[test]
    fn a_key_with_repeats_is_hidden_by_its_longest_runs() {
        let key = "abcdefghabcdefghXY";
        let r = redactor(key);
        for text in [
            "abcdefghXY",
            "abcdefghabcdefgh",
            "zabcdefghabcdefghabcdefghz",
        ] {
            let hidden = r.hide(text, true);
            assert!(clean(key, &hidden), "{hidden}");
            assert_eq!(r.restore(&hidden), text);
        }
        assert_eq!(r.hide("abcdefghXY", true), "{key[8..18]}");
    }

    #[test]
    fn urls_are_shown_without_credentials_or_the_key() {
        let r = redactor(KEY);
        let url = reqwest::Url::parse(
            "https://me:pw@gw.example:8443/sk-SECRET-run-test-4711/x?token=t#f",
        )
        .unwrap();
        assert_eq!(r.url(&url), "https://gw.example:8443/<redacted>/x");
        let base = reqwest::Url::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(r.url(&base), "http://127.0.0.1:9000");
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert!(!format!("{:?}", redactor(KEY)).contains("SECRET"));
    }
}
