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
//! its last whole line, as the local journal reads a cut last line. It
//! reads [`READ_AT_ONCE`] objects at a time (a long run leaves thousands
//! of segments, and one GET at a time would make a resume wait on each),
//! and folds them strictly in the order listed (`buffered`, not
//! `buffer_unordered`), holding at most that many bodies.
//!
//! Another run may compact while replay reads: a listed object is then
//! gone, or a listing of many pages (object_store fetches them one after
//! another) shows a gap where the deletes fell between two pages. Either
//! way the checkpoint standing for what went was written first, so replay
//! lists again and starts over, [`RELISTS`] times in all; a gap that stays
//! is [`JournalStoreError::Missing`].
//!
//! Compaction writes `checkpoint-N` (created only if absent, tried again
//! after a transient failure), then deletes the non-empty segments ≤ N,
//! then older checkpoints, through `delete_stream` (S3 deletes a thousand
//! keys a request). Replay takes the newest checkpoint and ignores what it
//! covers, so a crash between any two steps leaves a journal that replays
//! to the same records. Empty segments are takeover markers and are kept:
//! they are the fence (`segments.rs`).
//!
//! Cancellation: both are plain futures; dropping one mid-way is a crash
//! at that step, which the order above makes safe (replay only reads).

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures_util::stream::{self, StreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use super::super::replay::{parse_into, Replay};
use super::super::JournalError;
use super::create::create;
use super::error::JournalStoreError;
use super::names::{self, Kind};

/// Objects replay reads at once (folded in order all the same).
const READ_AT_ONCE: usize = 16;
/// How many times replay lists `journal/` before it gives up on objects
/// that go while it reads (another run compacting all along).
const RELISTS: u32 = 4;

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

/// Why one pass of replay stopped: an object listed was gone when read,
/// or the listing had a gap (another run compacted meanwhile: a listing of
/// many pages is not one snapshot), or a real error.
enum Pass {
    Vanished(Path),
    Gap(JournalStoreError),
    Failed(JournalStoreError),
}

/// Replays the journal under `prefix` (its objects are in `PREFIX/journal/`).
pub async fn replay(store: &dyn ObjectStore, prefix: &Path) -> Result<Replayed, JournalStoreError> {
    let dir = names::dir(prefix);
    let mut tries = 1;
    loop {
        match replay_once(store, &dir).await {
            Ok(r) => return Ok(r),
            Err(Pass::Failed(e)) => return Err(e),
            Err(Pass::Vanished(location)) if tries < RELISTS => {
                tracing::debug!("{location} went while replaying (compacted?); listing again");
            }
            Err(Pass::Gap(e)) if tries < RELISTS => {
                tracing::debug!("{e}; listing again");
            }
            Err(Pass::Gap(e)) => return Err(e),
            Err(Pass::Vanished(_)) => {
                return Err(JournalStoreError::Contended {
                    store: store.to_string(),
                    tries,
                })
            }
        }
        tries += 1;
    }
}

/// One object to fold, and whether a line cut short at its end is allowed.
#[derive(Clone, Copy)]
struct Part<'a> {
    meta: &'a ObjectMeta,
    may_be_cut: bool,
}

async fn replay_once(store: &dyn ObjectStore, dir: &Path) -> Result<Replayed, Pass> {
    let listing = list(store, dir).await.map_err(Pass::Failed)?;
    let mut out = Replayed::default();
    let mut parts = Vec::new();
    if let Some((&n, meta)) = listing.checkpoints.last_key_value() {
        parts.push(Part {
            meta,
            may_be_cut: false,
        });
        out.checkpoint = Some(n);
        out.last = n;
    }
    // The numbers must follow on without a gap: checked before reading.
    let after: Vec<(&u64, &ObjectMeta)> = listing.segments.range(out.last + 1..).collect();
    for (i, &(&n, meta)) in after.iter().enumerate() {
        let want = out.last + 1 + i as u64;
        if n != want {
            return Err(Pass::Gap(JournalStoreError::Missing {
                store: store.to_string(),
                location: names::segment(dir, want).to_string(),
            }));
        }
        parts.push(Part {
            meta,
            may_be_cut: i + 1 == after.len(),
        });
    }
    out.last += after.len() as u64;
    // Read a few at once, fold strictly in order.
    let mut bodies = stream::iter(parts)
        .map(|part| async move {
            let got = get(store, &part.meta.location).await;
            (part, got)
        })
        .buffered(READ_AT_ONCE);
    let mut first = true;
    while let Some((part, got)) = bodies.next().await {
        let location = &part.meta.location;
        let bytes = got?;
        // A checkpoint stands for every segment before it: an empty one (a
        // stray or planted object; compaction never writes one) would
        // silently forget every row, and a rerun would pay for them again.
        if first && out.checkpoint.is_some() && bytes.as_ref().is_empty() {
            return Err(Pass::Failed(JournalStoreError::Journal(
                JournalError::Corrupt {
                    path: PathBuf::from(location.as_ref()),
                    line: 1,
                    reason: "a checkpoint is never empty, so this one was not written by \
                         batchgen's compaction and would forget every row: move it aside \
                         if it does not belong here"
                        .into(),
                },
            )));
        }
        first = false;
        let whole = parse_into(
            &mut out.replay,
            &PathBuf::from(location.as_ref()),
            bytes.as_ref(),
        )
        .map_err(|e| Pass::Failed(e.into()))?;
        if whole < part.meta.size {
            if !part.may_be_cut {
                return Err(Pass::Failed(cut_short(location)));
            }
            out.cut = true;
        }
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

/// One object's bytes; gone is [`Pass::Vanished`].
async fn get(store: &dyn ObjectStore, location: &Path) -> Result<impl AsRef<[u8]>, Pass> {
    let got = match store.get(location).await {
        Ok(got) => got.bytes().await,
        Err(e) => Err(e),
    };
    match got {
        Ok(bytes) => Ok(bytes),
        Err(object_store::Error::NotFound { .. }) => Err(Pass::Vanished(location.clone())),
        Err(e) => Err(Pass::Failed(JournalStoreError::store(store, location, e))),
    }
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
    match create(store, &location, PutPayload::from(body)).await {
        Ok(_) => Ok(()),
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
    delete_all(store, dir, segments.filter(|m| m.size > 0)).await?;
    delete_all(store, dir, listing.checkpoints.range(..n).map(|(_, m)| m)).await
}

/// Deletes them through `delete_stream`, which stores that can batch
/// (S3: a thousand keys a request) do; one already gone is fine.
async fn delete_all<'a>(
    store: &dyn ObjectStore,
    dir: &Path,
    metas: impl Iterator<Item = &'a ObjectMeta>,
) -> Result<(), JournalStoreError> {
    let locations: Vec<object_store::Result<Path>> =
        metas.map(|m| Ok(m.location.clone())).collect();
    if locations.is_empty() {
        return Ok(());
    }
    let mut deleted = store.delete_stream(stream::iter(locations).boxed());
    while let Some(done) = deleted.next().await {
        match done {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(JournalStoreError::store(store, dir, e)),
        }
    }
    Ok(())
}
