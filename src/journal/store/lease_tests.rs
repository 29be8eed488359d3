//! The lease and the fence: one writer per prefix, and an old writer that
//! can never add a segment once a new one took over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::fault_tests::Faulty;
use super::tests::{intent, object_names, prefix};
use super::{compact, open, replay, Clock, Holder, JournalStoreError, Lease, LeaseBody};
use crate::vocab::Key;

const TTL: u64 = 30_000;

/// A clock the test moves by hand.
fn clock(start: u64) -> (Arc<AtomicU64>, Clock) {
    let now = Arc::new(AtomicU64::new(start));
    let read = now.clone();
    (now, Arc::new(move || read.load(Ordering::SeqCst)))
}

async fn take(
    store: &Arc<dyn ObjectStore>,
    run: &str,
    host: &str,
    clock: Clock,
) -> Result<Lease, JournalStoreError> {
    let holder = Holder {
        run_id: run.into(),
        host: host.into(),
        pid: 4242,
    };
    Lease::acquire(store.clone(), &prefix(), holder, TTL, clock).await
}

async fn lease_body(store: &dyn ObjectStore) -> LeaseBody {
    let got = store.get(&prefix().join("lease.json")).await.unwrap();
    serde_json::from_slice(&got.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn a_second_run_is_refused_while_the_lease_is_live() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (now, clock) = clock(1_000_000);
    let a = take(&store, "run-a", "pod-a", clock.clone()).await.unwrap();
    assert_eq!(a.expires_at_ms(), 1_030_000);
    assert_eq!(
        lease_body(&*store).await,
        LeaseBody {
            run_id: "run-a".into(),
            host: "pod-a".into(),
            pid: 4242,
            expires_at_ms: 1_030_000,
            nonce: lease_body(&*store).await.nonce,
            started_at_ms: 1_000_000,
        }
    );
    now.store(1_029_999, Ordering::SeqCst);
    let err = take(&store, "run-b", "pod-b", clock).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Held { .. }), "{err}");
    let msg = err.to_string();
    let until = crate::vocab::rfc3339(1_030_000);
    for part in [
        "\"run-a\"",
        "\"pod-a\"",
        "4242",
        until.as_str(),
        "(1 s from now)",
        "nightly/run",
    ] {
        assert!(msg.contains(part), "{part} in {msg}");
    }
    assert_eq!(lease_body(&*store).await.run_id, "run-a", "left alone");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_its_old_holder_learns_it() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (now, clock) = clock(1_000_000);
    let mut a = take(&store, "run-a", "pod-a", clock.clone()).await.unwrap();
    now.store(1_030_000, Ordering::SeqCst);
    let b = take(&store, "run-b", "pod-b", clock).await.unwrap();
    assert_eq!(lease_body(&*store).await.run_id, "run-b");
    assert_eq!(b.expires_at_ms(), 1_060_000);
    let err = a.renew().await.unwrap_err();
    assert!(matches!(err, JournalStoreError::LeaseLost { .. }), "{err}");
    assert!(err.to_string().contains("run-b"), "{err}");
    a.release().await.unwrap();
    assert_eq!(
        lease_body(&*store).await.run_id,
        "run-b",
        "not A's to release"
    );
}

#[tokio::test]
async fn renewal_keeps_the_lease_and_release_frees_the_prefix() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (now, clock) = clock(0);
    let mut a = take(&store, "run-a", "pod-a", clock.clone()).await.unwrap();
    assert!(!a.renew_due());
    now.store(TTL / 3, Ordering::SeqCst);
    assert!(a.renew_due(), "a third of its time gone");
    a.renew().await.unwrap();
    assert_eq!(a.expires_at_ms(), TTL / 3 + TTL);
    assert_eq!(lease_body(&*store).await.expires_at_ms, TTL / 3 + TTL);
    // Past the first expiry, the renewed lease still refuses others.
    now.store(TTL + 1, Ordering::SeqCst);
    let b = take(&store, "run-b", "pod-b", clock.clone()).await;
    assert!(matches!(b, Err(JournalStoreError::Held { .. })));
    a.release().await.unwrap();
    take(&store, "run-b", "pod-b", clock).await.unwrap();
}

/// `status` shows when a run took its lease: renewals keep that time.
#[tokio::test]
async fn renewal_keeps_when_the_lease_was_taken() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (now, clock) = clock(5_000);
    let mut a = take(&store, "run-a", "pod-a", clock).await.unwrap();
    assert_eq!(lease_body(&*store).await.started_at_ms, 5_000);
    now.store(5_000 + TTL / 2, Ordering::SeqCst);
    a.renew().await.unwrap();
    let body = lease_body(&*store).await;
    assert_eq!(body.started_at_ms, 5_000);
    assert_eq!(body.expires_at_ms, 5_000 + TTL / 2 + TTL);
}

#[tokio::test]
async fn an_unreadable_lease_is_taken_over() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let location = prefix().join("lease.json");
    let junk = PutPayload::from_static(b"{not json");
    store.put(&location, junk).await.unwrap();
    let (_, clock) = clock(5);
    take(&store, "run-b", "pod-b", clock).await.unwrap();
    assert_eq!(lease_body(&*store).await.run_id, "run-b");
}

/// A holds the prefix; B takes it over once A's lease expired; A's next
/// append is fenced, and every line A was told is durable is in B's replay.
#[tokio::test]
async fn an_old_writer_is_fenced_and_nothing_it_was_told_durable_is_lost() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (now, clock) = clock(0);
    let _a_lease = take(&store, "run-a", "pod-a", clock.clone()).await.unwrap();
    let a = open(store.clone(), &prefix()).await.unwrap();
    for k in 1..=3 {
        a.append(&[intent(k)]).await.unwrap();
    }
    // A stalls past its lease (a paused pod); B takes over.
    now.store(TTL + 1, Ordering::SeqCst);
    let _b_lease = take(&store, "run-b", "pod-b", clock).await.unwrap();
    let b = open(store.clone(), &prefix()).await.unwrap();
    let err = a.append(&[intent(4)]).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Fenced { .. }), "{err}");
    assert!(err.to_string().contains("seg-00000005.jsonl"), "{err}");
    // Stopped for good: never a retry at a higher number.
    let err = a.append(&[intent(5)]).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Fenced { .. }), "{err}");
    b.append(&[intent(6)]).await.unwrap();
    let got = replay(&*store, &prefix()).await.unwrap();
    for k in 1..=3 {
        assert!(
            b.with_replay(|r| r.records.contains_key(&Key(k))),
            "{k} in B's replay"
        );
        assert!(got.replay.records.contains_key(&Key(k)), "{k} replayed");
    }
    assert!(!got.replay.records.contains_key(&Key(4)));
    assert!(!got.replay.records.contains_key(&Key(5)));
    assert_eq!(
        got.last, 6,
        "1 A's marker, 2-4 A's lines, 5 B's marker, 6 B's line"
    );
}

/// B replays, but A writes the number B was about to take: B's marker
/// finds it taken, B replays again (reading A's line) and takes the next.
#[tokio::test]
async fn a_takeover_that_loses_the_race_reads_again_and_takes_the_next_number() {
    let store = Arc::new(Faulty::default());
    let a = open(store.clone(), &prefix()).await.unwrap(); // marker 1
    a.append(&[intent(1)]).await.unwrap(); // 2
    let paused = store.pause_next_put(); // B's first marker try, at 3
    let b_store: Arc<dyn ObjectStore> = store.clone();
    let b_prefix = prefix();
    let (b, ()) = tokio::join!(open(b_store, &b_prefix), async {
        paused.arrived.await.unwrap();
        // A's line lands at 3 while B's marker put waits.
        a.append(&[intent(2)]).await.unwrap();
        paused.go.send(()).unwrap();
    });
    let b = b.unwrap();
    assert_eq!(b.next_segment(), 5, "B's marker is 4");
    assert!(b.with_replay(|r| r.records.contains_key(&Key(2))));
    let err = a.append(&[intent(3)]).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Fenced { .. }), "{err}");
    assert!(err.to_string().contains("seg-00000004.jsonl"), "{err}");
}

/// Compaction after a takeover deletes the segments around the marker but
/// keeps the marker, so an old writer still cannot create its next number.
#[tokio::test]
async fn the_fence_holds_after_compaction() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a = open(store.clone(), &prefix()).await.unwrap(); // 1
    a.append(&[intent(1)]).await.unwrap(); // 2
    let b = open(store.clone(), &prefix()).await.unwrap(); // marker 3
    for k in 2..6 {
        b.append(&[intent(k)]).await.unwrap(); // 4..=7
    }
    let got = replay(&*store, &prefix()).await.unwrap();
    compact(&*store, &prefix(), &got).await.unwrap();
    let names = object_names(&*store).await;
    assert_eq!(
        names,
        [
            "checkpoint-00000007.jsonl",
            "seg-00000001.jsonl",
            "seg-00000003.jsonl"
        ]
    );
    let err = a.append(&[intent(9)]).await.unwrap_err();
    assert!(matches!(err, JournalStoreError::Fenced { .. }), "{err}");
    let got = replay(&*store, &prefix()).await.unwrap();
    assert!(!got.replay.records.contains_key(&Key(9)));
    assert_eq!(got.replay.records.len(), 5);
}

/// A lease deleted under a run (by hand, or by a run that took it over and
/// finished) is lost: renewing it never creates it again.
#[tokio::test]
async fn renewing_a_deleted_lease_is_lost_and_creates_nothing() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (now, clock) = clock(0);
    let mut a = take(&store, "run-a", "pod-a", clock).await.unwrap();
    store.delete(&prefix().join("lease.json")).await.unwrap();
    now.store(TTL / 2, Ordering::SeqCst);
    let err = a.renew().await.unwrap_err();
    assert!(matches!(err, JournalStoreError::LeaseLost { .. }), "{err}");
    assert!(err.to_string().contains("deleted"), "{err}");
    let gone = store.get(&prefix().join("lease.json")).await;
    assert!(matches!(gone, Err(object_store::Error::NotFound { .. })));
}

/// Two processes given the same run id are two holders: the lease carries
/// a nonce, and only the process that made it holds it.
#[tokio::test]
async fn one_run_id_in_two_processes_is_two_holders() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (now, clock) = clock(0);
    let mut a = take(&store, "run-x", "pod-a", clock.clone()).await.unwrap();
    assert!(!lease_body(&*store).await.nonce.is_empty());
    let err = take(&store, "run-x", "pod-b", clock.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, JournalStoreError::Held { .. }), "{err}");
    // Once A's lease ran out, B takes it over, and A learns it is lost.
    now.store(TTL + 1, Ordering::SeqCst);
    let b = take(&store, "run-x", "pod-b", clock).await.unwrap();
    let err = a.renew().await.unwrap_err();
    assert!(matches!(err, JournalStoreError::LeaseLost { .. }), "{err}");
    assert!(err.to_string().contains("pod-b"), "{err}");
    a.release().await.unwrap();
    assert_eq!(
        lease_body(&*store).await.host,
        "pod-b",
        "not A's to release"
    );
    b.release().await.unwrap();
    assert!(store.get(&prefix().join("lease.json")).await.is_err());
}

#[test]
fn a_lease_field_reaches_the_screen_escaped_and_cut() {
    let shown = super::lease::shown("h\u{1b}[31mRED");
    assert!(!shown.contains('\u{1b}'), "{shown}");
    assert!(shown.contains("\\u{1b}"), "{shown}");
    assert!(super::lease::shown(&"x".repeat(500)).len() < 90);
}
