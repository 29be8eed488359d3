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
//! there: `{key#FP}` for the whole key, `{key[A..B]#FP}` for its bytes A to
//! B; a literal `{key` is written `{key{`; and [`Redactor::restore`] turns
//! the text back into what the gateway sent, only when a request is built.
//! `FP` is a fingerprint of the key (8 hex digits of a SHA-256 of it, which
//! says nothing of the key): a rerun given another key (a rotated one)
//! cannot rebuild the id, and is told so ([`KeyChanged`]) instead of asking
//! the gateway for an id it never issued and taking the 404 for a lost result.

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
    /// The same for the key in lower case, for messages.
    folded: HashMap<u64, Vec<usize>>,
    /// `#` and 8 hex digits that tell this key from another.
    fingerprint: String,
}

/// A placeholder was written for another key than the one this run has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyChanged;

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
        let index = |bytes: &[u8]| {
            let mut windows: HashMap<u64, Vec<usize>> = HashMap::new();
            for (at, w) in bytes.windows(min).enumerate() {
                windows.entry(pack(w)).or_default().push(at);
            }
            windows
        };
        let windows = index(bytes);
        let folded = index(&bytes.to_ascii_lowercase());
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("batchgen key fingerprint\n{}", key.expose()));
        let fingerprint = format!("#{}", &crate::disk::hex(&digest)[..8]);
        Redactor {
            key: key.clone(),
            min,
            windows,
            folded,
            fingerprint,
        }
    }

    /// `text` with every run of the key's characters (at least
    /// [`MIN_FRAGMENT`] long) replaced by a placeholder. `exact`: a literal
    /// `{key` is escaped too, so that [`Redactor::restore`] gives `text`
    /// back (for request ids and URLs; messages need not be).
    pub(crate) fn hide<'a>(&self, text: &'a str, exact: bool) -> Cow<'a, str> {
        if !exact {
            return self.hide_message(text);
        }
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
                    o.push_str(&format!("{OPEN}{}}}", self.fingerprint));
                } else {
                    o.push_str(&format!("{OPEN}[{at}..{}]{}}}", at + len, self.fingerprint));
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

    /// A message with every run of [`MIN_FRAGMENT`] of the key's characters
    /// replaced by `<redacted>`, however the gateway echoed them: as sent,
    /// in another case, or percent-encoded (then the message is shown
    /// decoded). A message need not come back, so nothing is escaped.
    fn hide_message<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let decoded = percent_decoded(text);
        let folded = decoded.to_ascii_lowercase();
        let key = self.key.expose().to_ascii_lowercase();
        let t = folded.as_bytes();
        let mut out: Option<String> = None;
        let mut copied = 0;
        let mut i = 0;
        // The key is ASCII and ASCII case folding keeps every byte in its
        // place, so a match in `folded` is a cut at char boundaries of `decoded`.
        while i < t.len() {
            match longest_run(key.as_bytes(), &self.folded, self.min, t, i) {
                Some(len) => {
                    let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                    o.push_str(&decoded[copied..i]);
                    o.push_str(REDACTED);
                    i += len;
                    copied = i;
                }
                None => i += 1,
            }
        }
        match out {
            None => Cow::Borrowed(text),
            Some(mut o) => {
                o.push_str(&decoded[copied..]);
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
    /// building a request, never for showing. A placeholder whose
    /// fingerprint is another key's cannot be restored with this one.
    pub(crate) fn restore<'a>(&self, text: &'a str) -> Result<Cow<'a, str>, KeyChanged> {
        if !text.contains(OPEN) {
            return Ok(Cow::Borrowed(text));
        }
        let key = self.key.expose();
        let mut out = String::with_capacity(text.len() + key.len());
        let mut rest = text;
        while let Some(at) = rest.find(OPEN) {
            out.push_str(&rest[..at]);
            let after = &rest[at + OPEN.len()..];
            if let Some(r) = after.strip_prefix('{') {
                out.push_str(OPEN);
                rest = r;
                continue;
            }
            let fits = |p: &Placeholder| p.range.as_ref().is_none_or(|r| r.end <= key.len());
            match placeholder(after) {
                // Written for another key (a shorter one's range may not
                // even fit this key): never rebuilt with this one.
                Some(p) if p.fingerprint.is_some_and(|f| f != self.fingerprint) => {
                    return Err(KeyChanged)
                }
                Some(p) if p.fingerprint.is_some() && !fits(&p) => return Err(KeyChanged),
                Some(p) if fits(&p) => {
                    out.push_str(p.range.map_or(key, |r| &key[r]));
                    rest = p.rest;
                }
                _ => {
                    out.push_str(OPEN);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(Cow::Owned(out))
    }
}

/// What follows `{key` in a placeholder.
struct Placeholder<'a> {
    /// The key's bytes it stands for (the whole key if none).
    range: Option<std::ops::Range<usize>>,
    /// `#` and the key's fingerprint, if written.
    fingerprint: Option<&'a str>,
    /// The text after the closing `}`.
    rest: &'a str,
}

/// `[A..B]` (A < B), then `#` and 8 hex digits, both optional, then `}`, at
/// the start of `s`.
fn placeholder(s: &str) -> Option<Placeholder<'_>> {
    let (range, s) = match s.strip_prefix('[') {
        Some(inside) => {
            let (inside, rest) = inside.split_once(']')?;
            (Some(range(inside)?), rest)
        }
        None => (None, s),
    };
    let (fingerprint, s) = match s.get(..9) {
        Some(f) if f.starts_with('#') && f[1..].bytes().all(|c| c.is_ascii_hexdigit()) => {
            (Some(f), &s[9..])
        }
        _ => (None, s),
    };
    let rest = s.strip_prefix('}')?;
    Some(Placeholder {
        range,
        fingerprint,
        rest,
    })
}

/// The longest run of `key`'s bytes, at least `min` long, that `t` holds
/// from `t[i]` (`windows`: where each `min` bytes of `key` start).
fn longest_run(
    key: &[u8],
    windows: &HashMap<u64, Vec<usize>>,
    min: usize,
    t: &[u8],
    i: usize,
) -> Option<usize> {
    let window = t.get(i..i + min)?;
    windows
        .get(&pack(window))?
        .iter()
        .filter(|&&at| key[at..at + min] == *window)
        .map(|&at| {
            key[at..]
                .iter()
                .zip(&t[i..])
                .take_while(|(a, b)| a == b)
                .count()
        })
        .max()
}

/// `text` with its `%XX` escapes of printable ASCII decoded, twice over (a
/// key escaped twice shows too). Only printable ASCII, the key's own
/// alphabet: a message never regains a control character or a line break
/// its one-line form took out, and stays valid UTF-8.
fn percent_decoded(text: &str) -> Cow<'_, str> {
    let once = |text: &str| -> Option<String> {
        if !text.contains('%') {
            return None;
        }
        let b = text.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        let hex = |c: u8| (c as char).to_digit(16);
        while i < b.len() {
            let escaped = match (
                b[i],
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (b'%', Some(hi), Some(lo)) => {
                    Some((hi * 16 + lo) as u8).filter(|c| (0x21..=0x7e).contains(c))
                }
                _ => None,
            };
            match escaped {
                Some(c) => {
                    out.push(c);
                    i += 3;
                }
                None => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).ok().filter(|o| o != text)
    };
    match once(text) {
        None => Cow::Borrowed(text),
        Some(first) => Cow::Owned(once(&first).unwrap_or(first)),
    }
}

/// Whether `text` holds the key, or a run of [`MIN_FRAGMENT`] of its
/// characters, in any case or percent-encoded. A key shorter than that (a
/// test's `local`) is never looked for: it would be found in `localhost`.
pub fn holds_key(key: &ApiKey, text: &str) -> bool {
    key.expose().len() >= MIN_FRAGMENT
        && matches!(Redactor::new(key).hide(text, false), Cow::Owned(_))
}

/// `A..B` (A < B).
fn range(inside: &str) -> Option<std::ops::Range<usize>> {
    let (a, b) = inside.split_once("..")?;
    let digits = |d: &str| {
        (!d.is_empty() && d.len() < 8 && d.bytes().all(|c| c.is_ascii_digit()))
            .then(|| d.parse::<usize>().ok())
            .flatten()
    };
    let (a, b) = (digits(a)?, digits(b)?);
    (a < b).then_some(a..b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-SECRET-run-test-4711";

    fn redactor(key: &str) -> Redactor {
        Redactor::new(&ApiKey::new(key).unwrap())
    }

    /// `text` with `r`'s fingerprint in every placeholder, as `hide` writes them.
    fn with_fp(r: &Redactor, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("{key") {
            out.push_str(&rest[..at + 4]);
            rest = &rest[at + 4..];
            if let Some(close) = rest.find('}').filter(|_| !rest.starts_with('{')) {
                out.push_str(&rest[..close]);
                out.push_str(&r.fingerprint);
                rest = &rest[close..];
            }
        }
        out.push_str(rest);
        out
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
            assert_eq!(got, with_fp(&r, hidden), "{text}");
            assert!(clean(KEY, &got), "{got}");
            assert_eq!(r.restore(&got).unwrap(), text, "{got}");
        }
    }

    #[test]
    fn what_hides_nothing_is_not_copied() {
        let r = redactor(KEY);
        assert!(matches!(r.hide("glm-image_1234", true), Cow::Borrowed(_)));
        assert!(matches!(r.restore("glm-image_1234"), Ok(Cow::Borrowed(_))));
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
            assert_eq!(r.restore(&hidden).unwrap(), text, "{text} → {hidden}");
        }
        // Malformed placeholders are left as they are.
        for text in [
            "{key[",
            "{key[9..3]}",
            "{key[0..99]}",
            "{key[a..b]}",
            "{key#12}",
        ] {
            assert_eq!(r.restore(text).unwrap(), text);
        }
        // Without a fingerprint, a placeholder takes the key this run has.
        assert_eq!(r.restore("a{key[3..9]}b").unwrap(), "aSECRETb");
    }

    #[test]
    fn a_key_echoed_in_another_case_or_percent_encoded_is_hidden_in_messages() {
        let key = "Zq7R+tY3/uWp9=Xk+Lm2N/v5Bc=8Dg4";
        let r = redactor(key);
        for text in [
            "bad key zq7r+ty3/uwp9=xk+lm2n/v5bc=8dg4 here".to_string(),
            "bad key ZQ7R+TY3/UWP9=XK+LM2N/V5BC=8DG4 here".to_string(),
            "id Zq7R%2BtY3%2FuWp9%3DXk%2BLm2N%2Fv5Bc%3D8Dg4 here".to_string(),
            "id zq7r%2bty3%2fuwp9 here".to_string(),
        ] {
            let hidden = r.hide_owned(text.clone());
            assert!(hidden.contains(REDACTED), "{text} → {hidden}");
            assert!(
                clean(&key.to_ascii_lowercase(), &hidden.to_ascii_lowercase()),
                "{hidden}"
            );
        }
        // Escapes that hide no key are left as they are.
        assert_eq!(r.hide_owned("50%25 done %zz".into()), "50%25 done %zz");
        // Escaped twice, or beside an escape that is no character.
        let twice = "id Zq7R%252BtY3%252FuWp9%253DXk here";
        assert!(r.hide_owned(twice.into()).contains(REDACTED));
        let odd = "id Zq7R%2BtY3%2FuWp9%3DXk name caf%E9";
        assert!(r.hide_owned(odd.into()).contains(REDACTED));
        // Decoding never brings back a line break or a terminal escape.
        let shown = r.hide_owned(format!("bad key {key} x%0Ay%1B[31mRED"));
        assert!(shown.contains(REDACTED) && !shown.contains('\n') && !shown.contains('\u{1b}'));
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
        assert_eq!(r.hide("ak3yk3", true), with_fp(&r, "a{key}k3"));
        assert_eq!(r.restore(&with_fp(&r, "a{key}k3")).unwrap(), "ak3yk3");
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
            assert_eq!(r.restore(&hidden).unwrap(), text);
        }
        assert_eq!(r.hide("abcdefghXY", true), with_fp(&r, "{key[8..18]}"));
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
    fn an_id_hidden_for_another_key_is_not_rebuilt_with_this_one() {
        let old = redactor(KEY);
        let new = redactor("sk-ROTATED-run-test-0042");
        for text in ["glm-image_sk-SECRET-run-test-4711_1", "id ET-run-t"] {
            let hidden = old.hide(text, true);
            assert_eq!(new.restore(&hidden), Err(KeyChanged), "{hidden}");
            assert_eq!(old.restore(&hidden).unwrap(), text);
        }
        assert_ne!(old.fingerprint, new.fingerprint);
        assert!(clean(KEY, &old.fingerprint));
    }

    #[test]
    fn a_range_of_a_longer_key_is_not_rebuilt_with_a_shorter_one() {
        let old = redactor(KEY);
        let short = redactor("sk-new-0042");
        let hidden = old.hide("id ET-run-test-4711", true);
        assert!(hidden.contains("{key["), "{hidden}");
        assert_eq!(short.restore(&hidden), Err(KeyChanged));
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert!(!format!("{:?}", redactor(KEY)).contains("SECRET"));
    }
}
