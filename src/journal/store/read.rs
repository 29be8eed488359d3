//! Replay of the journal on a store, and its compaction.
//!
//! Why this exists apart: a resuming run, `status` and `merge` read the
//! journal without writing it, and compaction is replay written back.
//!
//! Replay lists `journal/`, folds the newest checkpoint, then every segment
//! numbered after it in order, with the local journal's own parser, so the
//! lines mean exactly what they mean on disk. Segments are whole objects:
//! a gap, or a line cut short anywhere but at the end of the last segment,
//! is an error naming the object; a last segment cut short is read up to
//! its last whole line, as the local journal reads a cut last line.
//!
//! Compaction writes `checkpoint-N` (created only if absent), then deletes
//! the non-empty segments ≤ N, then older checkpoints. Replay takes the
//! newest checkpoint and ignores what it covers, so a crash between any two
//! steps leaves a journal that replays to the same records. Empty segments
//! are takeover markers and are kept: they are the fence (`segments.rs`).
//!
//! Cancellation: both are plain futures; dropping one mid-way is a crash
//! at that step, which the order above makes safe.

use std::collections::BTreeMap;
use std::path::PathBuf;

use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::super::replay::{parse_into, Replay};
use super::super::JournalError;
use super::error::JournalStoreError;
use super::names::{self, Kind};

/// A journal replayed from a store.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The fold of every line, as [`crate::journal::read`] gives it.
    pub replay: Replay,
    /// The newest checkpoint's number, if there is one.
    pub checkpoint: Option<u64>,
    /// The highest number the replay covers (0: nothing yet); the next
    /// segment is `last + 1`.
    pub last: u64,
    /// The last segment ended in a line cut short (compaction removes it).
    pub cut: bool,
}

/// What `journal/` holds, by number.
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub(super) segments: BTreeMap<u64, ObjectMeta>,
    pub(super) checkpoints: BTreeMap<u64, ObjectMeta>,
}

pub(super) async fn list(
    store: &dyn ObjectStore,
    dir: &Path,
) -> Result<Listing, JournalStoreError> {
    let found = store
        .list_with_delimiter(Some(dir))
        .await
        .map_err(|e| JournalStoreError::store(store, dir, e))?;
    let mut listing = Listing::default();
    for meta in found.objects {
        match meta.location.filename().and_then(names::kind) {
            Some(Kind::Segment(n)) => listing.segments.insert(n, meta),
            Some(Kind::Checkpoint(n)) => listing.checkpoints.insert(n, meta),
            None => None,
        };
    }
    Ok(listing)
}

/// Why one pass of replay stopped: an object listed was gone when read
/// (another run compacted meanwhile), or a real error.
enum Pass {
    Vanished,
    Failed(JournalStoreError),
}

/// Replays the journal under `prefix` (its objects are in `PREFIX/journal/`).
pub async fn replay(store: &dyn ObjectStore, prefix: &Path) -> Result<Replayed, JournalStoreError> {
    let dir = names::dir(prefix);
    let mut tries = 0;
    loop {
        match replay_once(store, &dir).await {
            Ok(r) => return Ok(r),
            Err(Pass::Vanished) if tries < 3 => tries += 1,
            Err(Pass::Vanished) => {
                return Err(JournalStoreError::Contended {
                    store: store.to_string(),
                    tries,
                })
            }
            Err(Pass::Failed(e)) => return Err(e),
        }
    }
}

async fn replay_once(store: &dyn ObjectStore, dir: &Path) -> Result<Replayed, Pass> {
    let listing = list(store, dir).await.map_err(Pass::Failed)?;
    let mut out = Replayed::default();
    if let Some((&n, meta)) = listing.checkpoints.last_key_value() {
        let whole = fold(store, &meta.location, &mut out.replay).await?;
        if whole < meta.size {
            return Err(Pass::Failed(cut_short(&meta.location)));
        }
        out.checkpoint = Some(n);
        out.last = n;
    }
    let after: Vec<(&u64, &ObjectMeta)> = listing.segments.range(out.last + 1..).collect();
    for (i, (&n, meta)) in after.iter().enumerate() {
        if n != out.last + 1 {
            return Err(Pass::Failed(JournalStoreError::Missing {
                store: store.to_string(),
                location: names::segment(dir, out.last + 1).to_string(),
            }));
        }
        let whole = fold(store, &meta.location, &mut out.replay).await?;
        if whole < meta.size {
            if i + 1 < after.len() {
                return Err(Pass::Failed(cut_short(&meta.location)));
            }
            out.cut = true;
        }
        out.last = n;
    }
    Ok(out)
}

fn cut_short(location: &Path) -> JournalStoreError {
    JournalStoreError::Journal(JournalError::Corrupt {
        path: PathBuf::from(location.as_ref()),
        line: 0,
        reason: "it ends in a line cut short, and it is not the last segment".into(),
    })
}

/// Folds one object's lines into `replay`; returns the length of its whole lines.
async fn fold(store: &dyn ObjectStore, location: &Path, replay: &mut Replay) -> Result<u64, Pass> {
    let got = match store.get(location).await {
        Ok(got) => got.bytes().await,
        Err(e) => Err(e),
    };
    let bytes = match got {
        Ok(bytes) => bytes,
        Err(object_store::Error::NotFound { .. }) => return Err(Pass::Vanished),
        Err(e) => return Err(Pass::Failed(JournalStoreError::store(store, location, e))),
    };
    parse_into(replay, &PathBuf::from(location.as_ref()), &bytes[..])
        .map_err(|e| Pass::Failed(e.into()))
}

/// Compacts the journal under `prefix` through `replayed.last` (what a
/// replay just read): writes the checkpoint, then deletes what it covers.
/// Nothing to do if the replay is already one checkpoint.
pub async fn compact(
    store: &dyn ObjectStore,
    prefix: &Path,
    replayed: &Replayed,
) -> Result<(), JournalStoreError> {
    if replayed.last == 0 || replayed.checkpoint == Some(replayed.last) {
        return Ok(());
    }
    let dir = names::dir(prefix);
    write_checkpoint(store, &dir, replayed).await?;
    delete_covered(store, &dir, replayed.last).await
}

/// Compaction's first step: `checkpoint-N`, created only if absent (one
/// already there was written from the same segments, and stands).
pub(super) async fn write_checkpoint(
    store: &dyn ObjectStore,
    dir: &Path,
    replayed: &Replayed,
) -> Result<(), JournalStoreError> {
    let mut body = Vec::new();
    for entry in replayed.replay.compacted() {
        entry
            .write_line(&mut body)
            .expect("journal entries serialise");
    }
    let location = names::checkpoint(dir, replayed.last);
    let opts = PutOptions::from(PutMode::Create);
    match store
        .put_opts(&location, PutPayload::from(body), opts)
        .await
    {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(JournalStoreError::store(store, &location, e)),
    }
}

/// Compaction's second and third steps: the non-empty segments ≤ `n` (a
/// cut one too), then checkpoints older than `n`. Empty segments (takeover
/// markers) stay: an old writer may still try to create one of them.
pub(super) async fn delete_covered(
    store: &dyn ObjectStore,
    dir: &Path,
    n: u64,
) -> Result<(), JournalStoreError> {
    let listing = list(store, dir).await?;
    let segments = listing.segments.range(..=n).map(|(_, m)| m);
    delete_all(store, segments.filter(|m| m.size > 0)).await?;
    delete_all(store, listing.checkpoints.range(..n).map(|(_, m)| m)).await
}

async fn delete_all<'a>(
    store: &dyn ObjectStore,
    metas: impl Iterator<Item = &'a ObjectMeta>,
) -> Result<(), JournalStoreError> {
    for meta in metas {
        match store.delete(&meta.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(JournalStoreError::store(store, &meta.location, e)),
        }
    }
    Ok(())
}
