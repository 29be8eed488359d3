//! A writer stopped from outside, and the [`Keeper`] that renews the lease
//! and stops the writer when it cannot. On tokio's paused clock, with the
//! lease's clock reading it, so hours pass without waiting.

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::fault_tests::Faulty;
use super::tests::{intent, prefix};
use super::{open, replay, Clock, Holder, JournalStoreError, Keeper, Lease, LeaseBody};
use crate::vocab::Key;

const TTL: u64 = 30_000;

/// The lease's clock: tokio's (paused) clock, from 1,000,000 ms.
fn tokio_clock() -> Clock {
    let start = tokio::time::Instant::now();
    Arc::new(move || 1_000_000 + start.elapsed().as_millis() as u64)
}

async fn take(store: &Arc<dyn ObjectStore>, run: &str) -> Lease {
    let holder = Holder {
        run_id: run.into(),
        host: "pod".into(),
        pid: 7,
    };
    Lease::acquire(store.clone(), &prefix(), holder, TTL, tokio_clock())
        .await
        .unwrap()
}

async fn lease_body(store: &dyn ObjectStore) -> Option<LeaseBody> {
    let got = store.get(&prefix().join("lease.json")).await.ok()?;
    Some(serde_json::from_slice(&got.bytes().await.unwrap()).unwrap())
}

#[tokio::test]
async fn a_stopped_writer_fails_later_and_queued_appends_and_puts_nothing_more() {
    let store = Arc::new(Faulty::default());
    let w = Arc::new(open(store.clone(), &prefix()).await.unwrap());
    w.append(&[intent(1)]).await.unwrap();
    let gate = store.gate();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 2..5 {
        let w = w.clone();
        tasks.spawn(async move { (k, w.append(&[intent(k)]).await) });
        // 2's put waits at the gate; 3 and 4 queue behind it.
        for _ in 0..1_000 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(w.queued(), 2);
    let puts = store.puts();
    w.stop("the lease was lost".into());
    let err = w.append(&[intent(5)]).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Stopped { .. }), "{err}");
    assert!(err.to_string().contains("the lease was lost"), "{err}");
    gate.add_permits(10);
    while let Some(done) = tasks.join_next().await {
        let (k, got) = done.unwrap();
        let err = got.unwrap_err();
        assert!(
            matches!(err, JournalStoreError::Stopped { .. }),
            "{k}: {err}"
        );
    }
    assert_eq!(
        store.puts(),
        puts,
        "the put in flight, and nothing after it"
    );
    // 2 was in flight: it is in the store, and in the replay (which stays
    // the fold of the store), though its caller heard the stop.
    let got = replay(&store.inner, &prefix()).await.unwrap();
    let keys = [1, 2, 3, 4, 5].map(|k| got.replay.records.contains_key(&Key(k)));
    assert_eq!(keys, [true, true, false, false, false]);
    w.with_replay(|r| assert_eq!(r.records, got.replay.records));
}

#[tokio::test(start_paused = true)]
async fn the_keeper_renews_the_lease_while_the_run_goes_on() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let lease = take(&store, "run-a").await;
    let w = open(store.clone(), &prefix()).await.unwrap();
    let keeper = Keeper::start(lease, w.stopper());
    let clock = tokio_clock();
    let first = lease_body(&*store).await.unwrap().expires_at_ms;
    // Ten lease times later, the lease is still live and ours.
    tokio::time::sleep(Duration::from_millis(TTL * 10)).await;
    let body = lease_body(&*store).await.unwrap();
    assert_eq!(body.run_id, "run-a");
    assert!(body.expires_at_ms > first + TTL * 9, "{body:?}");
    assert!(body.expires_at_ms > clock() + TTL / 2, "renewed in time");
    assert_eq!(keeper.lost(), None);
    w.append(&[intent(1)]).await.unwrap();
    keeper.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lease_taken_over_stops_the_writer() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let lease = take(&store, "run-a").await;
    let w = open(store.clone(), &prefix()).await.unwrap();
    let keeper = Keeper::start(lease, w.stopper());
    w.append(&[intent(1)]).await.unwrap();
    // Another run writes its own lease (as after a pause past expiry).
    let theirs = LeaseBody {
        run_id: "run-b".into(),
        host: "pod-b".into(),
        pid: 9,
        expires_at_ms: u64::MAX,
        nonce: "b".into(),
        started_at_ms: 0,
    };
    let location = prefix().join("lease.json");
    let bytes = serde_json::to_vec(&theirs).unwrap();
    store.put(&location, PutPayload::from(bytes)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(TTL)).await;
    let why = keeper.lost().expect("lost");
    assert!(why.contains("run-b"), "{why}");
    let err = w.append(&[intent(2)]).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Stopped { .. }), "{err}");
    assert!(err.to_string().contains("run-b"), "{err}");
    // Releasing leaves run B's lease alone.
    keeper.release().await.unwrap();
    assert_eq!(lease_body(&*store).await.unwrap(), theirs);
}

#[tokio::test(start_paused = true)]
async fn a_deleted_lease_stops_the_writer_and_is_not_created_again() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let lease = take(&store, "run-a").await;
    let w = open(store.clone(), &prefix()).await.unwrap();
    let keeper = Keeper::start(lease, w.stopper());
    store.delete(&prefix().join("lease.json")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(TTL)).await;
    assert!(keeper.lost().expect("lost").contains("deleted"));
    assert!(w.append(&[intent(1)]).await.is_err());
    assert_eq!(lease_body(&*store).await, None);
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_fails_once_is_tried_again() {
    let store = Arc::new(Faulty::default());
    let dyn_store: Arc<dyn ObjectStore> = store.clone();
    let lease = take(&dyn_store, "run-a").await;
    let w = open(dyn_store.clone(), &prefix()).await.unwrap();
    let keeper = Keeper::start(lease, w.stopper());
    store.fail_put(1); // the first renewal's put
    let puts = store.puts();
    tokio::time::sleep(Duration::from_millis(TTL)).await;
    assert!(store.puts() >= puts + 2, "failed, then renewed");
    assert_eq!(keeper.lost(), None);
    w.append(&[intent(1)]).await.unwrap();
    // A store that keeps failing: stopped before the lease runs out.
    store.fail_puts(1, 1_000);
    tokio::time::sleep(Duration::from_millis(TTL)).await;
    let why = keeper.lost().expect("lost");
    assert!(why.contains("before it ran out"), "{why}");
    assert!(w.append(&[intent(2)]).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn release_stops_renewing_and_deletes_the_lease() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let lease = take(&store, "run-a").await;
    let w = open(store.clone(), &prefix()).await.unwrap();
    let keeper = Keeper::start(lease, w.stopper());
    tokio::time::sleep(Duration::from_millis(TTL * 2)).await;
    keeper.release().await.unwrap();
    assert_eq!(lease_body(&*store).await, None);
    tokio::time::sleep(Duration::from_millis(TTL * 2)).await;
    assert_eq!(lease_body(&*store).await, None, "no renewal after release");
    w.append(&[intent(1)]).await.unwrap();
    // A keeper dropped stops renewing too (its lease then runs out).
    let lease = take(&store, "run-b").await;
    let expires = lease.expires_at_ms();
    drop(Keeper::start(lease, w.stopper()));
    tokio::time::sleep(Duration::from_millis(TTL * 2)).await;
    assert_eq!(lease_body(&*store).await.unwrap().expires_at_ms, expires);
}
