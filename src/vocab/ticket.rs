//! What a run keeps to follow an accepted request: its id and where to ask.
//!
//! Why this exists apart: the journal records it (its serde shape is part of
//! the journal's format, pinned by `tests/compat.rs`) and the HTTP client
//! fills it in; neither owns it, so an edit to the client's wire structs can
//! never change the file format.

use serde::{Deserialize, Serialize};

use super::Kind;

/// What to poll for an accepted request. Serialisable, so the journal can
/// keep it and a resumed run can poll instead of submitting again. Its id
/// and URLs are as the gateway sent them, but for any part of the key they
/// held, which is a placeholder (`{key}`, `{key[A..B]}`) that only the
/// client's requests fill in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub kind: Kind,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_url: Option<String>,
    /// Images the replies carry inline (`sync_mode`): the reply cap grows
    /// by room for that many.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sync_images: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
