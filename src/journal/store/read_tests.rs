//! Replay under another run's compaction, replay's concurrent reads, and
//! compaction of thousands of segments.

use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::time::Instant;

use super::fault_tests::Faulty;
use super::tests::{intent, not_accepted, object_names, prefix};
use super::{compact, names, open, replay, JournalStoreError};
use crate::vocab::Key;

/// Segments 1..=n straight into the store: 1 a marker, each other one line
/// pair for row `n % 7`.
async fn segments(store: &dyn ObjectStore, n: u64) {
    let dir = names::dir(&prefix());
    for k in 1..=n {
        let mut body = Vec::new();
        if k > 1 {
            intent(k % 7).write_line(&mut body).unwrap();
            not_accepted(k % 7).write_line(&mut body).unwrap();
        }
        let location = names::segment(&dir, k);
        store.put(&location, PutPayload::from(body)).await.unwrap();
    }
}

/// A listing of many pages taken while a compaction ran shows a gap; replay
/// lists again and reads the compacted journal instead of failing.
#[tokio::test]
async fn a_gap_from_a_listing_taken_across_a_compaction_is_listed_again() {
    let store = Faulty::default();
    segments(&store.inner, 6).await;
    store.hide_in_next_list("seg-00000004.jsonl");
    let got = replay(&store, &prefix()).await.unwrap();
    assert_eq!(got.last, 6);
    // A gap that stays is still an error naming it.
    store
        .inner
        .delete(&names::segment(&names::dir(&prefix()), 4))
        .await
        .unwrap();
    let err = replay(&store, &prefix()).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("seg-00000004.jsonl"), "{err}");
}

/// Another run compacts between replay's listing and its reads: what it
/// listed is gone; it lists again and gets the same records.
#[tokio::test]
async fn objects_that_vanish_under_replay_are_listed_again() {
    let store = Arc::new(Faulty::default());
    segments(&store.inner, 30).await;
    let want = replay(&store.inner, &prefix()).await.unwrap();
    let paused = store.pause_after_next_list();
    let p = prefix();
    let (got, ()) = tokio::join!(replay(&*store, &p), async {
        paused.arrived.await.unwrap();
        compact(&store.inner, &p, &want).await.unwrap();
        paused.go.send(()).unwrap();
    });
    let got = got.unwrap();
    assert_eq!(got.replay.records, want.replay.records);
    assert_eq!((got.checkpoint, got.last), (Some(30), 30));
}

/// Replay reads a bounded number of objects at once, and folds them in
/// order: 200 segments taking 100 ms each take about 1.3 s, not 20 s.
#[tokio::test(start_paused = true)]
async fn replay_reads_a_few_segments_at_once_and_folds_them_in_order() {
    let store = Faulty::default();
    let dir = names::dir(&prefix());
    // Row 1's lines in order: its last state depends on the order.
    for k in 1..=200u64 {
        let entry = if k % 2 == 1 {
            intent(1)
        } else {
            not_accepted(1)
        };
        let mut body = Vec::new();
        entry.write_line(&mut body).unwrap();
        let location = names::segment(&dir, k);
        store
            .inner
            .put(&location, PutPayload::from(body))
            .await
            .unwrap();
    }
    store.slow_gets(Duration::from_millis(100));
    let started = Instant::now();
    let got = replay(&store, &prefix()).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(store.max_gets_at_once(), 16);
    let record = &got.replay.records[&Key(1)];
    assert_eq!(record.attempts, 100);
    assert_eq!(
        record.state,
        crate::journal::State::Pending,
        "the last line (segment 200, not accepted) decides"
    );
}

/// Thousands of segments: open compacts them with a few batched deletes,
/// not one request each.
#[tokio::test]
async fn open_compacts_thousands_of_segments_with_batched_deletes() {
    let store = Arc::new(Faulty::default());
    segments(&store.inner, 3_000).await;
    let before = replay(&store.inner, &prefix()).await.unwrap();
    let w = open(store.clone(), &prefix()).await.unwrap();
    assert!(store.delete_calls() <= 2, "{} calls", store.delete_calls());
    assert_eq!(w.next_segment(), 3_002);
    assert_eq!(
        object_names(&store.inner).await,
        [
            "checkpoint-00003000.jsonl",
            "seg-00000001.jsonl",
            "seg-00003001.jsonl"
        ]
    );
    w.with_replay(|r| assert_eq!(r.records, before.replay.records));
}
