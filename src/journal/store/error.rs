//! What goes wrong with the journal on a store, in the words a user reads.
//!
//! Why this exists apart: replay, the writer and the lease fail in ways the
//! CLI tells apart: [`JournalStoreError::Held`] is "another run is using this
//! prefix" (exit 2, nothing sent); [`JournalStoreError::Fenced`] and
//! [`JournalStoreError::Broken`] stop new spend as a local disk fault does (exit 3),
//! and so do [`JournalStoreError::LeaseLost`] and [`JournalStoreError::Stopped`]
//! (the writer stopped because the lease could not be kept).

use super::super::JournalError;

#[derive(Debug, thiserror::Error)]
pub enum JournalStoreError {
    #[error("cannot use {location} in {store}: {source}")]
    Store {
        store: String,
        location: String,
        source: object_store::Error,
    },
    #[error(
        "{store} overwrote an object batchgen asked to create only if absent (it ignores `If-None-Match: *`): the journal cannot be kept safely there; use a store that honours conditional creates (AWS S3, GCS, Azure, a recent MinIO)"
    )]
    NoCreateOnly { store: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(
        "the journal in {store} is missing {location} (segments after the newest checkpoint \
         must all be there); restore it, or move the journal aside to start over"
    )]
    Missing { store: String, location: String },
    #[error(
        "another run took over the journal in {store} (it created {location} first); \
         this run writes nothing more and stops"
    )]
    Fenced { store: String, location: String },
    #[error(
        "the journal in {store} could not be written earlier in this run ({reason}); \
         nothing more is written to it"
    )]
    Broken { store: String, reason: String },
    #[error(
        "{prefix} in {store} is in use by run {run_id} on host {host} (pid {pid}) until \
         {} ({left_s} s from now); wait for it to finish, or for its lease to expire if it \
         was killed, then run again",
        crate::vocab::rfc3339(*.expires_at_ms)
    )]
    Held {
        store: String,
        prefix: String,
        run_id: String,
        host: String,
        pid: u32,
        expires_at_ms: u64,
        left_s: u64,
    },
    /// `why` says what became of it: taken over by another run (named),
    /// or deleted.
    #[error("this run's lease on {prefix} in {store} is lost: {why}; this run stops")]
    LeaseLost {
        store: String,
        prefix: String,
        why: String,
    },
    #[error(
        "this run stopped writing the journal in {store} ({reason}); nothing more is \
         written to it"
    )]
    Stopped { store: String, reason: String },
    #[error(
        "could not take over the journal in {store}: its writer kept adding segments \
         ({tries} tries); is another run still writing to it?"
    )]
    Contended { store: String, tries: u32 },
}

impl JournalStoreError {
    pub(super) fn store(
        store: &dyn object_store::ObjectStore,
        location: &object_store::path::Path,
        source: object_store::Error,
    ) -> JournalStoreError {
        JournalStoreError::Store {
            store: store.to_string(),
            location: location.to_string(),
            source,
        }
    }
}
