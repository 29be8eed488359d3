//! A row's identity, and the slices of a plan that shards hold.
//!
//! Why this exists apart: the journal, the plan, the output and `merge` all
//! name rows by these keys, and a journal written years ago must still read.

use std::fmt;

/// A row's stable identity: 64 bits of SHA-256, shown as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub u64);

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Key {
    /// The seed of a row whose manifest gives none: derived from the key, never
    /// fed back into it. 31 bits, so every gateway takes it.
    pub fn derived_seed(self) -> u64 {
        self.0 >> 33
    }

    /// The key written as its 16 hex digits (as journals and `.plan-keys` hold it).
    pub fn parse(text: &str) -> Option<Key> {
        (text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(text, 16).ok().map(Key))
            .flatten()
    }
}

/// Written as the 16 hex digits a journal line has always held.
impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Key::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not a row key (16 hex digits)"))
        })
    }
}

/// One of `count` slices of a plan (`index` from 0), by row key: a row's
/// shard depends on its content only, so it is the same however the
/// manifest is reordered or grown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub fn holds(&self, key: Key) -> bool {
        key.0 % u64::from(self.count) == u64::from(self.index)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}
