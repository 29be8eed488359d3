//! Segments, replay and compaction on object_store's in-memory store.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::fault_tests::Faulty;
use super::read::{delete_covered, replay, write_checkpoint};
use super::segments::open_tuned;
use super::{compact, names, open, JournalStoreError};
use crate::journal::{Entry, State};
use crate::vocab::Key;

pub(super) fn intent(k: u64) -> Entry {
    Entry::Intent {
        key: Key(k),
        at_ms: 1_000 + k,
        price_micros: 20_000,
    }
}

pub(super) fn not_accepted(k: u64) -> Entry {
    Entry::NotAccepted {
        key: Key(k),
        code: "RATE_LIMITED".into(),
        message: String::new(),
    }
}

pub(super) fn prefix() -> Path {
    Path::from("nightly/run")
}

fn line(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        serde_json::to_writer(&mut out, e).unwrap();
        out.push(b'\n');
    }
    out
}

/// Objects under `journal/`, by name, with their sizes.
pub(super) async fn objects(store: &dyn ObjectStore) -> Vec<(String, u64)> {
    let dir = names::dir(&prefix());
    let listed = store.list_with_delimiter(Some(&dir)).await.unwrap();
    let mut out: Vec<_> = listed
        .objects
        .into_iter()
        .map(|m| (m.location.filename().unwrap().to_string(), m.size))
        .collect();
    out.sort();
    out
}

/// The names of the objects under `journal/`, in order.
pub(super) async fn object_names(store: &dyn ObjectStore) -> Vec<String> {
    objects(store).await.into_iter().map(|o| o.0).collect()
}

async fn put(store: &dyn ObjectStore, name: &str, bytes: Vec<u8>) {
    let location = names::dir(&prefix()).join(name);
    store.put(&location, PutPayload::from(bytes)).await.unwrap();
}

fn seg(n: u64) -> String {
    format!("seg-{n:08}.jsonl")
}

#[tokio::test]
async fn appends_become_numbered_segments_after_a_marker() {
    let store = Arc::new(InMemory::new());
    let w = open(store.clone(), &prefix()).await.unwrap();
    w.append(&[intent(1)]).await.unwrap();
    w.append(&[intent(2), not_accepted(2)]).await.unwrap();
    w.append(&[]).await.unwrap(); // nothing: no segment, never an empty one
    let two = line(&[intent(1)]).len() as u64;
    let three = line(&[intent(2), not_accepted(2)]).len() as u64;
    assert_eq!(
        objects(&*store).await,
        [(seg(1), 0), (seg(2), two), (seg(3), three)]
    );
    assert_eq!(w.next_segment(), 4);
    let got = replay(&*store, &prefix()).await.unwrap();
    assert_eq!((got.last, got.checkpoint, got.cut), (3, None, false));
    assert_eq!(got.replay.records[&Key(1)].state, State::Uncertain);
    assert_eq!(got.replay.records[&Key(2)].state, State::Pending);
    // The writer's own replay was kept current line by line.
    w.with_replay(|r| assert_eq!(r.records, got.replay.records));
}

#[tokio::test]
async fn concurrent_appends_share_one_segment() {
    let store = Arc::new(Faulty::default());
    let w = Arc::new(open(store.clone(), &prefix()).await.unwrap());
    let gate = store.gate();
    let mut tasks = tokio::task::JoinSet::new();
    let spawn = |tasks: &mut tokio::task::JoinSet<_>, k| {
        let w = w.clone();
        tasks.spawn(async move { w.append(&[intent(k)]).await });
    };
    // The first line's put waits at the gate (after the marker and its
    // create-only probe); the other 49 queue behind it.
    spawn(&mut tasks, 0);
    let settle = |want_puts, want_queued| {
        let (store, w) = (store.clone(), w.clone());
        async move {
            for _ in 0..10_000 {
                if (store.puts(), w.queued()) == (want_puts, want_queued) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert_eq!((store.puts(), w.queued()), (want_puts, want_queued));
        }
    };
    settle(3, 0).await;
    for k in 1..50 {
        spawn(&mut tasks, k);
    }
    settle(3, 49).await;
    gate.add_permits(10);
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let listed = objects(&store.inner).await;
    assert_eq!(
        listed.len(),
        3,
        "marker, one line, then 49 in one: {listed:?}"
    );
    let got = replay(&store.inner, &prefix()).await.unwrap();
    assert_eq!(got.replay.records.len(), 50);
}

#[tokio::test]
async fn replay_folds_as_the_local_journal_does() {
    let store = InMemory::new();
    let lines = [intent(1), not_accepted(1), intent(1), intent(2), intent(3)];
    put(&store, &seg(1), Vec::new()).await;
    put(&store, &seg(2), line(&lines[..2])).await;
    put(&store, &seg(3), line(&lines[2..])).await;
    put(&store, "notes.txt", b"not ours".to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("journal.jsonl"), line(&lines)).unwrap();
    let local = crate::journal::read(dir.path()).unwrap();
    let got = replay(&store, &prefix()).await.unwrap();
    assert_eq!(got.replay.records, local.records);
    assert_eq!(got.replay.lines, local.lines);
    assert_eq!(got.replay.records[&Key(1)].attempts, 2);
}

#[tokio::test]
async fn a_cut_last_segment_reads_to_its_last_whole_line_and_open_compacts_it() {
    let store = Arc::new(InMemory::new());
    put(&*store, &seg(1), line(&[intent(1)])).await;
    let mut cut = line(&[intent(2), intent(3)]);
    cut.truncate(cut.len() - 7);
    put(&*store, &seg(2), cut).await;
    let got = replay(&*store, &prefix()).await.unwrap();
    assert!(got.cut);
    assert_eq!(got.last, 2);
    assert!(got.replay.records.contains_key(&Key(2)));
    assert!(!got.replay.records.contains_key(&Key(3)));
    // A writer must not leave the cut segment in the middle: it compacts it away.
    let w = open(store.clone(), &prefix()).await.unwrap();
    w.append(&[intent(4)]).await.unwrap();
    let got = replay(&*store, &prefix()).await.unwrap();
    assert_eq!((got.checkpoint, got.last, got.cut), (Some(2), 4, false));
    let keys = [1, 2, 4].map(|k| got.replay.records.contains_key(&Key(k)));
    assert_eq!(keys, [true; 3]);
}

#[tokio::test]
async fn a_gap_or_a_damaged_segment_before_the_last_is_an_error_naming_it() {
    let store = InMemory::new();
    put(&store, &seg(1), line(&[intent(1)])).await;
    put(&store, &seg(3), line(&[intent(3)])).await;
    let err = replay(&store, &prefix()).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Missing { .. }), "{err}");
    assert!(err.to_string().contains(&seg(2)), "{err}");

    let mut cut = line(&[intent(2)]);
    cut.pop();
    put(&store, &seg(2), cut).await;
    let err = replay(&store, &prefix()).await.unwrap_err().to_string();
    assert!(err.contains(&seg(2)) && err.contains("cut short"), "{err}");

    put(&store, &seg(2), b"{\"e\":\"nonsense\"}\n".to_vec()).await;
    let err = replay(&store, &prefix()).await.unwrap_err().to_string();
    assert!(err.contains(&seg(2)) && err.contains("line 1"), "{err}");

    // A journal that starts after 1 with no checkpoint lost its beginning.
    let store = InMemory::new();
    put(&store, &seg(2), line(&[intent(2)])).await;
    let err = replay(&store, &prefix()).await.unwrap_err().to_string();
    assert!(err.contains(&seg(1)), "{err}");
}

#[tokio::test]
async fn an_empty_checkpoint_is_refused_rather_than_forgetting_every_row() {
    let store = InMemory::new();
    put(&store, &seg(1), Vec::new()).await;
    put(&store, &seg(2), line(&[intent(1), intent(2)])).await;
    // A stray object (a planted or mis-synced one): compaction never
    // writes an empty checkpoint, and taking it would make both rows
    // never-submitted, to be paid for again.
    put(&store, "checkpoint-99999999.jsonl", Vec::new()).await;
    let err = replay(&store, &prefix()).await.unwrap_err().to_string();
    assert!(
        err.contains("checkpoint-99999999") && err.contains("never empty"),
        "{err}"
    );
}

/// Segments 1..=n, 1 a marker and 5 another, each after it with history.
async fn history(store: &dyn ObjectStore, from: u64, to: u64) {
    for n in from..=to {
        let body = if n == 1 || n == 5 {
            Vec::new()
        } else {
            line(&[intent(n % 3), not_accepted(n % 3)])
        };
        put(store, &seg(n), body).await;
    }
}

#[tokio::test]
async fn compaction_is_safe_under_a_crash_at_every_step() {
    let store = InMemory::new();
    let dir = names::dir(&prefix());
    history(&store, 1, 6).await;
    let first = replay(&store, &prefix()).await.unwrap();
    compact(&store, &prefix(), &first).await.unwrap();
    assert_eq!(
        object_names(&store).await,
        ["checkpoint-00000006.jsonl".to_string(), seg(1), seg(5)],
        "non-empty segments covered are gone; markers stay"
    );
    let after = replay(&store, &prefix()).await.unwrap();
    assert_eq!(after.replay.records, first.replay.records);
    assert_eq!((after.checkpoint, after.last), (Some(6), 6));

    // More history, then a second compaction stopped after each step.
    history(&store, 7, 10).await;
    let whole = replay(&store, &prefix()).await.unwrap();
    let same = |label: &'static str| {
        let want = whole.replay.records.clone();
        let store = &store;
        async move {
            let got = replay(store, &prefix()).await.unwrap();
            assert_eq!(got.replay.records, want, "after {label}");
            assert_eq!(got.last, 10, "after {label}");
            got
        }
    };
    write_checkpoint(&store, &dir, &whole).await.unwrap();
    let got = same("the checkpoint").await;
    assert_eq!(got.checkpoint, Some(10));
    // A crash half way through deleting segments.
    store.delete(&names::segment(&dir, 8)).await.unwrap();
    same("some segments deleted").await;
    // Segments gone, the older checkpoint not yet.
    for n in [7, 9, 10] {
        store.delete(&names::segment(&dir, n)).await.unwrap();
    }
    assert!(objects(&store)
        .await
        .iter()
        .any(|o| o.0.contains("00000006")));
    same("every segment deleted").await;
    // Compaction run again over what the crash left: it finishes the job.
    write_checkpoint(&store, &dir, &whole).await.unwrap(); // already there: fine
    delete_covered(&store, &dir, 10).await.unwrap();
    same("the older checkpoint deleted").await;
    assert_eq!(
        object_names(&store).await,
        ["checkpoint-00000010.jsonl".to_string(), seg(1), seg(5)]
    );
}

#[tokio::test]
async fn open_compacts_a_journal_that_is_mostly_history() {
    let store = Arc::new(InMemory::new());
    history(&*store, 1, 20).await;
    let before = replay(&*store, &prefix()).await.unwrap();
    assert!(before.replay.worth_compacting());
    let w = open(store.clone(), &prefix()).await.unwrap();
    assert_eq!(w.next_segment(), 22, "the marker is 21");
    let after = replay(&*store, &prefix()).await.unwrap();
    assert_eq!(after.checkpoint, Some(20));
    assert_eq!(after.replay.records, before.replay.records);
    w.with_replay(|r| assert_eq!(r.records, before.replay.records));
}

#[tokio::test(start_paused = true)]
async fn a_put_that_finally_fails_leaves_the_writer_broken() {
    let store = Arc::new(Faulty::default());
    let w = open(store.clone(), &prefix()).await.unwrap();
    w.append(&[intent(1)]).await.unwrap();
    store.fail_puts(1, super::create::TRIES as usize);
    let err = w.append(&[intent(2)]).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Broken { .. }), "{err}");
    assert!(err.to_string().contains("injected failure"), "{err}");
    let puts = store.puts();
    let err = w.append(&[intent(3)]).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Broken { .. }), "{err}");
    assert_eq!(store.puts(), puts, "a broken writer sends nothing more");
    let got = replay(&store.inner, &prefix()).await.unwrap();
    assert!(got.replay.records.contains_key(&Key(1)));
    assert!(!got.replay.records.contains_key(&Key(2)));
    w.with_replay(|r| assert!(!r.records.contains_key(&Key(2))));
}

#[tokio::test]
async fn a_retried_put_that_had_succeeded_is_not_taken_for_the_fence() {
    let store = Arc::new(Faulty::default());
    let w = open(store.clone(), &prefix()).await.unwrap();
    store.echo_put(1);
    w.append(&[intent(1)]).await.unwrap();
    w.append(&[intent(2)]).await.unwrap();
    let got = replay(&store.inner, &prefix()).await.unwrap();
    assert_eq!((got.last, got.replay.records.len()), (3, 2));
}

#[tokio::test]
async fn a_store_that_ignores_create_only_is_refused_before_anything_is_written() {
    let store = Arc::new(Faulty::default());
    store.ignore_create_only();
    let e = open(store.clone(), &prefix()).await.unwrap_err();
    assert!(matches!(e, JournalStoreError::NoCreateOnly { .. }), "{e}");
    assert!(e.to_string().contains("If-None-Match"), "{e}");
}

fn every(k: u64) -> super::segments::Tuning {
    super::segments::Tuning { compact_every: k }
}

/// The writer compacts every K segments from its own replay, in a task of
/// its own: appends go on while the checkpoint is being written.
#[tokio::test]
async fn the_writer_compacts_as_it_goes_without_holding_appends() {
    let store = Arc::new(Faulty::default());
    let w = open_tuned(store.clone(), &prefix(), every(2))
        .await
        .unwrap();
    let paused = store.pause_next_put_named("checkpoint-");
    w.append(&[intent(1)]).await.unwrap(); // 2
    w.append(&[intent(2)]).await.unwrap(); // 3: compaction through 3 starts
    paused.arrived.await.unwrap();
    for k in 3..=5 {
        w.append(&[intent(k)]).await.unwrap(); // 4..=6, the checkpoint waiting
    }
    assert_eq!(w.compactions(), 0);
    paused.go.send(()).unwrap();
    let records = w.with_replay(|r| r.records.clone());
    w.close().await;
    assert_eq!(
        object_names(&store.inner).await,
        [
            "checkpoint-00000003.jsonl".to_string(),
            seg(1),
            seg(4),
            seg(5),
            seg(6)
        ],
        "the marker stays; 2 and 3 are in the checkpoint"
    );
    let got = replay(&store.inner, &prefix()).await.unwrap();
    assert_eq!((got.checkpoint, got.last), (Some(3), 6));
    assert_eq!(got.replay.records, records);
}

/// Many segments: the journal never holds many more than K of them past
/// its checkpoint (or a quarter of the rows' worth of lines, when that is
/// more), and replays to what the writer was told.
#[tokio::test]
async fn a_long_run_leaves_few_segments() {
    let store = Arc::new(InMemory::new());
    let w = open_tuned(store.clone(), &prefix(), every(8))
        .await
        .unwrap();
    for k in 0..100 {
        w.append(&[intent(k)]).await.unwrap();
        tokio::task::yield_now().await; // let a compaction finish
    }
    assert!(w.compactions() >= 5, "{}", w.compactions());
    let records = w.with_replay(|r| r.records.clone());
    w.close().await;
    let got = replay(&*store, &prefix()).await.unwrap();
    assert_eq!(got.replay.records, records);
    assert_eq!(got.last, 101);
    let left = objects(&*store).await;
    assert!(left.len() <= 2 + 8 + 25, "{left:?}");
    assert_eq!(
        left.iter()
            .filter(|o| o.0.starts_with("checkpoint"))
            .count(),
        1
    );
}

/// A takeover's marker survives the new writer's compactions, and the old
/// writer's own compaction deletes nothing past what it wrote: the old
/// writer stays fenced.
#[tokio::test]
async fn the_fence_holds_while_both_writers_compact() {
    let store = Arc::new(InMemory::new());
    let a = open_tuned(store.clone(), &prefix(), every(2))
        .await
        .unwrap(); // 1
    a.append(&[intent(1)]).await.unwrap(); // 2
    let b = open_tuned(store.clone(), &prefix(), every(2))
        .await
        .unwrap(); // marker 3
    for k in 2..8 {
        b.append(&[intent(k)]).await.unwrap(); // 4..=9
        tokio::task::yield_now().await;
    }
    let err = a.append(&[intent(9)]).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Fenced { .. }), "{err}");
    assert!(b.compactions() >= 1);
    b.close().await;
    let names = object_names(&*store).await;
    assert!(
        names.contains(&seg(1)) && names.contains(&seg(3)),
        "{names:?}"
    );
    let got = replay(&*store, &prefix()).await.unwrap();
    assert_eq!(got.replay.records.len(), 7);
    assert!(!got.replay.records.contains_key(&Key(9)));
}
