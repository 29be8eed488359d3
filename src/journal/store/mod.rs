//! The journal on an object store (S3, GCS, Azure, or object_store's
//! in-memory store in tests): the same JSON lines as `journal.jsonl`, kept
//! where a pod's local disk is not.
//!
//! Why this exists: an object cannot be appended to, and a pod that dies
//! takes its disk with it. So under `PREFIX/journal/` the journal is a
//! sequence of immutable segments, `seg-00000001.jsonl`, …, each created
//! only if absent (`PutMode::Create`), one per group of lines; a
//! `checkpoint-NNNNNNNN.jsonl` stands for every segment up to N once
//! compaction wrote it; `PREFIX/lease.json` says which run writes.
//!
//! The durability argument, in short:
//!
//! - a caller hears its lines are durable only after the put of the
//!   segment holding them succeeded, so `intent` before submit and
//!   `submitted` before anything else hold as on a local disk;
//! - segments are whole objects and never change, so replay reads exactly
//!   the lines some writer was told were durable, in order; a gap or a
//!   damaged segment before the last is an error that names it;
//! - the segment sequence is the fence: a run taking over creates the next
//!   number itself (an empty "marker" segment), so the old writer's next
//!   create at that number fails and it stops; compaction never deletes a
//!   marker, because a marker is the only number an old writer can still
//!   try (see `segments.rs`);
//! - compaction writes its checkpoint before deleting anything, and replay
//!   prefers the newest checkpoint, so a crash at any step loses nothing;
//!   the writer also compacts as it goes, every [`COMPACT_EVERY`] segments,
//!   from its own replay and only through numbers it created itself, so a
//!   long run does not leave thousands of segments to read on resume;
//! - a create-only put that failed in a way that may pass (a timeout, a
//!   reset) is tried again with backoff (`create.rs`): object_store does
//!   not repeat conditional puts, and every caller here already reads an
//!   AlreadyExists answer safely (the writer compares bytes);
//! - a run that cannot keep its lease stops its writer ([`Keeper`],
//!   [`Writer::stop`]): no append succeeds after that.
//!
//! Listing is strongly consistent on S3, GCS and Azure, which replay needs;
//! a listing of many pages is not one snapshot, though, so replay lists
//! again when another run's compaction made an object it listed vanish or
//! left a gap. It reads a few objects at a time, folding them strictly in
//! order.
//!
//! Layout: `names.rs` the object names, `read.rs` replay and compaction,
//! `segments.rs` the group-commit writer and takeover, `create.rs` creates
//! tried again, `lease.rs` the lease, `keeper.rs` its renewal while a run
//! goes on, `error.rs` what goes wrong. A run on a bucket uses it through
//! `crate::run::Remote` and `Journal::on_store`.
//!
//! Cancellation: see each file; in short, dropping a future never takes
//! back a put already sent (the object exists whole or not at all), and no
//! caller is told "durable" for a put it did not see succeed.

mod create;
mod error;
#[cfg(test)]
mod fault_tests;
mod keeper;
#[cfg(test)]
mod keeper_tests;
mod lease;
#[cfg(test)]
mod lease_tests;
mod names;
mod read;
#[cfg(test)]
mod read_tests;
#[cfg(test)]
mod retry_tests;
mod segments;
#[cfg(test)]
mod tests;

pub use error::JournalStoreError;
pub use keeper::Keeper;
pub use lease::{nonce, Holder, Lease, LeaseBody, LEASE_NAME};
pub use read::{compact, replay, Replayed};
pub use segments::{open, Stopper, Writer, COMPACT_EVERY};

/// Milliseconds since the epoch, injected so that lease expiry is tested
/// without sleeping.
pub type Clock = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    std::sync::Arc::new(super::format::now_ms)
}
