//! What can go wrong with a journal, in the words a user reads.
//!
//! Why this exists apart: reading ([`super::replay`]) and appending
//! ([`super::Journal`]) fail the same ways, and callers (`run`, `status`,
//! `merge`) turn one type into their own.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot use the journal {path}: {}", crate::disk::plain(source))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the journal {path} is damaged at line {line} (only the last line may be cut short): {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "the journal {0} could not be written earlier in this run; nothing more is written to it"
    )]
    Broken(PathBuf),
    /// The journal is kept on a store (`--out s3://…`), and that failed.
    #[error(transparent)]
    Store(Box<super::store::JournalStoreError>),
}

impl From<super::store::JournalStoreError> for JournalError {
    fn from(e: super::store::JournalStoreError) -> JournalError {
        JournalError::Store(Box::new(e))
    }
}
