//! What keeps a run from starting or finishing its bookkeeping: [`RunError`].
//!
//! Why this exists apart: row failures are never errors (they are written
//! down and counted); these are the few faults of the folder itself, and
//! the exit code branches on them (see [`crate::exit`]).

use std::path::PathBuf;

use crate::journal::JournalError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write {path}: {}", crate::disk::plain(source))]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A completed row's file is there but cannot be read: "could not
    /// check" is never taken for "damaged" (which would send a paid row
    /// back to its request, or end it FILES_MISSING).
    #[error("cannot read {path} to check the completed row it belongs to: {}; nothing was sent and no row changed: make it readable (or remove it, to have its row fetched again), then run again", crate::disk::plain(source))]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another batchgen run is using {0}; wait for it to end (a folder is run by one process at a time)")]
    Locked(PathBuf),
    #[error("{0} is a symbolic link: a run writes its images only inside its own folder; replace the link with a folder; nothing was sent")]
    ImagesLink(PathBuf),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// A file could not be uploaded to the run's bucket (after retries).
    #[error("{0}")]
    Upload(String),
    /// The bucket the run writes to (`--out s3://…`) could not be used.
    #[error(transparent)]
    Bucket(crate::store::StoreError),
    #[error("{dir} was made against {made_by}, not {this}: one folder holds the results of one gateway. {hint}")]
    OtherGateway {
        dir: PathBuf,
        made_by: String,
        this: String,
        hint: String,
    },
}
