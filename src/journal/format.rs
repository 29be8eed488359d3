//! The journal's on-disk records: the compatibility contract.
//!
//! Why this exists apart: every line a run ever wrote must still read, and
//! `tests/compat.rs` pins the shapes. The serde shapes here are the file
//! format, owned here and nowhere else: they borrow no struct from the HTTP
//! client (a [`Ticket`] comes from the ground floor, [`crate::vocab`]), so an
//! edit to the client's wire structs can never change what is written.
//! Nothing here reads or writes a file; [`super::replay`] folds these
//! records and [`super::writer`] appends them.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::vocab::{Key, Ticket};

pub const FILE_NAME: &str = "journal.jsonl";

/// Whether a failed row may have cost money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Charged {
    No,
    Possibly,
    /// Paid for: the gateway accepted and finished it (its result was lost).
    Yes,
}

impl Charged {
    /// Whether it counts as money that may be gone.
    pub fn maybe(self) -> bool {
        self != Charged::No
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One journal line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum Entry {
    /// A run started (`rows` is the size of its plan).
    Run {
        at_ms: u64,
        manifest: String,
        rows: u64,
        version: String,
        /// The gateway's origin, or `simulated` (absent in older journals).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<String>,
        /// The gateway's base URL, normalised (see [`crate::gateway`]);
        /// absent for the simulator and in journals of versions that knew
        /// only origins.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_url: Option<String>,
        /// The digest of the whole plan's row keys (shards of one manifest share it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<String>,
        /// The shard this run did, if it did one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<crate::vocab::Shard>,
        /// The wall time of every earlier run in this folder, in
        /// milliseconds, as this run found it at its start (absent in older
        /// journals): compaction keeps this line, so the total outlives it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wall_before_ms: Option<u64>,
    },
    Intent {
        key: Key,
        at_ms: u64,
        /// What the submit may cost (absent in older journals).
        #[serde(default, skip_serializing_if = "is_zero")]
        price_micros: u64,
    },
    NotAccepted {
        key: Key,
        code: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        message: String,
    },
    Submitted {
        key: Key,
        /// When the accepted submit was sent.
        at_ms: u64,
        /// Absent when the submit answered with finished images.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<Ticket>,
        /// Image URLs the submit itself returned, if any.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<String>,
    },
    /// The run left the row without a verdict; where it stands is unchanged.
    Unfinished {
        key: Key,
        at_ms: u64,
        code: String,
        message: String,
    },
    Done {
        key: Key,
        at_ms: u64,
        /// Relative to the output folder.
        files: Vec<String>,
        sha256: Vec<String>,
        /// Each file's size and modification time (ns since the epoch) as
        /// written: a rerun checks these instead of hashing the files again.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stamps: Vec<[u64; 2]>,
        cost_micros: u64,
        /// When its request was last seen pending and first seen done, in
        /// milliseconds since its submit (absent if it was never polled).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seen_ms: Option<[u64; 2]>,
        /// Taken from the cache (`--cache`), at no cost.
        #[serde(default, skip_serializing_if = "is_false")]
        cached: bool,
    },
    Failed {
        key: Key,
        at_ms: u64,
        code: String,
        message: String,
        charged: Charged,
        /// The cost the failure may have incurred.
        #[serde(default)]
        cost_micros: u64,
    },
    /// A row's whole record, as the lines before it folded it: what
    /// compaction writes in place of the row's history.
    Row { key: Key, row: Box<Record> },
}

/// Why a run left a row without a verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    pub code: String,
    pub message: String,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// What the journal knows of one row (a compacted journal writes it whole).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub state: State,
    /// Submit attempts (intent lines), over all runs.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempts: u32,
    /// The latest accepted request, held compactly (a big run holds one
    /// per row): see [`Record::ticket`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Box<Held>>,
    /// Image URLs its submit returned (`sync_mode`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// What the latest submit may have cost (0 if the journal predates it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub price_micros: u64,
    /// Set when the latest run left the row unfinished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<Box<Left>>,
    /// When the request was last seen pending and first seen done (ms since submit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_ms: Option<[u64; 2]>,
    /// What earlier submits of this row may have cost: ones whose answer
    /// never came, `FAILED` ones, and results paid for and then lost. A
    /// retry never hides them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub earlier_micros: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "is", rename_all = "snake_case")]
pub enum State {
    /// Never accepted: may be submitted.
    #[default]
    Pending,
    /// A submit was sent and nothing is known of its fate: may have been accepted.
    Uncertain,
    /// Accepted, result not yet on disk.
    Submitted,
    Done {
        files: Vec<String>,
        sha256: Vec<String>,
        /// Size and modification time of each file (absent in older journals).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stamps: Vec<[u64; 2]>,
        cost_micros: u64,
        /// Taken from the cache, at no cost.
        #[serde(default, skip_serializing_if = "is_false")]
        cached: bool,
    },
    Failed {
        code: String,
        message: String,
        charged: Charged,
        cost_micros: u64,
    },
}

impl Entry {
    /// Writes this entry as one journal line (its JSON, then `\n`): the one
    /// way a line is made, for the local file and a store's segments alike.
    pub fn write_line(&self, mut out: impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut out, self).map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    }
}

impl Record {
    /// The latest accepted request, whole.
    pub fn ticket(&self) -> Option<Ticket> {
        self.ticket.as_deref().map(|h| Ticket::from(h.clone()))
    }

    pub fn request_id(&self) -> Option<&str> {
        self.ticket.as_deref().map(|h| &*h.request_id)
    }

    /// What its state says may have been charged without images to show
    /// for it: an uncertain submit, a `FAILED` or lost request.
    pub(super) fn at_stake_micros(&self) -> u64 {
        match &self.state {
            State::Uncertain => self.price_micros,
            State::Failed {
                charged: Charged::Possibly | Charged::Yes,
                cost_micros,
                ..
            } => *cost_micros,
            _ => 0,
        }
    }
}

/// A [`Ticket`] as a replay holds it. Status and result URLs are nearly
/// always a prefix shared by every request followed by the request id: the
/// prefix is held once (a few distinct ones per process), not per row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "Ticket", into = "Ticket")]
pub struct Held {
    kind: crate::vocab::Kind,
    request_id: Box<str>,
    status_url: HeldUrl,
    response_url: HeldUrl,
    sync_images: u32,
}

#[derive(Clone, Debug, PartialEq)]
enum HeldUrl {
    None,
    /// A shared prefix, then the request id.
    Id(std::sync::Arc<str>),
    Full(Box<str>),
}

/// The URL prefixes held so far; past a few, URLs are held whole.
static PREFIXES: Mutex<Vec<std::sync::Arc<str>>> = Mutex::new(Vec::new());
const MAX_PREFIXES: usize = 16;

impl HeldUrl {
    fn hold(url: Option<String>, id: &str) -> HeldUrl {
        let Some(url) = url else {
            return HeldUrl::None;
        };
        let Some(prefix) = url.strip_suffix(id).filter(|_| !id.is_empty()) else {
            return HeldUrl::Full(url.into());
        };
        let mut known = PREFIXES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = known.iter().find(|p| ***p == *prefix) {
            return HeldUrl::Id(p.clone());
        }
        if known.len() < MAX_PREFIXES {
            let p: std::sync::Arc<str> = prefix.into();
            known.push(p.clone());
            return HeldUrl::Id(p);
        }
        HeldUrl::Full(url.into())
    }

    fn whole(&self, id: &str) -> Option<String> {
        match self {
            HeldUrl::None => None,
            HeldUrl::Id(prefix) => Some(format!("{prefix}{id}")),
            HeldUrl::Full(url) => Some(url.to_string()),
        }
    }
}

impl From<Ticket> for Held {
    fn from(t: Ticket) -> Held {
        Held {
            status_url: HeldUrl::hold(t.status_url, &t.request_id),
            response_url: HeldUrl::hold(t.response_url, &t.request_id),
            kind: t.kind,
            request_id: t.request_id.into(),
            sync_images: t.sync_images,
        }
    }
}

impl From<Held> for Ticket {
    fn from(h: Held) -> Ticket {
        Ticket {
            kind: h.kind,
            status_url: h.status_url.whole(&h.request_id),
            response_url: h.response_url.whole(&h.request_id),
            request_id: h.request_id.into(),
            sync_images: h.sync_images,
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
