//! Creates tried again after a failure that may pass (`create.rs`): a
//! segment, the takeover marker, a checkpoint; and refusals that are not.
//! On tokio's paused clock, so the backoff is seen without waiting for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::create::{FIRST_WAIT, TRIES};
use super::fault_tests::Faulty;
use super::tests::{intent, not_accepted, object_names, prefix};
use super::{open, replay, JournalStoreError};
use crate::vocab::Key;

#[tokio::test(start_paused = true)]
async fn a_segment_put_that_timed_out_is_tried_again_with_backoff() {
    let store = Arc::new(Faulty::default());
    let w = open(store.clone(), &prefix()).await.unwrap();
    let puts = store.puts();
    store.fail_puts(1, 2);
    let started = Instant::now();
    w.append(&[intent(1)]).await.unwrap();
    assert_eq!(store.puts(), puts + 3, "two failures, then the put");
    assert!(
        started.elapsed() >= FIRST_WAIT * 3,
        "waited 100 ms then 200 ms"
    );
    let got = replay(&store.inner, &prefix()).await.unwrap();
    assert_eq!(got.last, 2);
    assert!(got.replay.records.contains_key(&Key(1)));
    w.append(&[intent(2)]).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_put_whose_answer_was_lost_is_found_ours_on_the_retry() {
    let store = Arc::new(Faulty::default());
    let w = open(store.clone(), &prefix()).await.unwrap();
    store.lose_put(1); // written, but the answer is a timeout
    w.append(&[intent(1), not_accepted(1)]).await.unwrap();
    w.append(&[intent(2)]).await.unwrap();
    let got = replay(&store.inner, &prefix()).await.unwrap();
    assert_eq!((got.last, got.replay.records.len()), (3, 2));
    assert_eq!(got.replay.lines, 3, "the lost answer's lines once");
}

#[tokio::test(start_paused = true)]
async fn a_permission_error_breaks_the_writer_at_once() {
    let store = Arc::new(Faulty::default());
    let w = open(store.clone(), &prefix()).await.unwrap();
    let puts = store.puts();
    let started = Instant::now();
    store.deny_put(1);
    let err = w.append(&[intent(1)]).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Broken { .. }), "{err}");
    assert!(err.to_string().contains("denied"), "{err}");
    assert_eq!(store.puts(), puts + 1, "not tried again");
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retries_are_bounded() {
    let store = Arc::new(Faulty::default());
    let w = open(store.clone(), &prefix()).await.unwrap();
    let puts = store.puts();
    store.fail_puts(1, 100);
    let started = Instant::now();
    let err = w.append(&[intent(1)]).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Broken { .. }), "{err}");
    assert_eq!(store.puts(), puts + TRIES as usize);
    // 100 + 200 + 400 + 800 ms between five tries.
    assert_eq!(started.elapsed(), FIRST_WAIT * 15);
}

#[tokio::test(start_paused = true)]
async fn the_takeover_marker_is_tried_again() {
    let store = Arc::new(Faulty::default());
    store.fail_puts(1, 2);
    let w = open(store.clone(), &prefix()).await.unwrap();
    assert_eq!(w.next_segment(), 2, "the marker is 1");
    w.append(&[intent(1)]).await.unwrap();
    // A marker whose answer was lost is not taken for ours: the next
    // number is, and the one left over is just one marker more.
    let store = Arc::new(Faulty::default());
    store.lose_put(1);
    let w = open(store.clone(), &prefix()).await.unwrap();
    assert_eq!(w.next_segment(), 3, "1 is left over, the marker is 2");
    w.append(&[intent(1)]).await.unwrap();
    assert_eq!(
        object_names(&store.inner).await,
        [
            "seg-00000001.jsonl",
            "seg-00000002.jsonl",
            "seg-00000003.jsonl"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_put_is_tried_again() {
    let store = Arc::new(Faulty::default());
    let w = open(store.clone(), &prefix()).await.unwrap();
    for k in 0..20 {
        w.append(&[intent(k % 2), not_accepted(k % 2)])
            .await
            .unwrap();
    }
    w.close().await;
    // The next open compacts: its first put is the checkpoint.
    store.fail_puts(1, 2);
    let w = open(store.clone(), &prefix()).await.unwrap();
    let got = replay(&store.inner, &prefix()).await.unwrap();
    assert_eq!(got.checkpoint, Some(21));
    assert_eq!(w.next_segment(), 23, "the marker is 22");
}
