//! `--concurrency` is a hard bound on what the gateway is generating,
//! through the binary against the simulator: never more than C requests
//! accepted and not yet seen finished, whatever the latencies and whatever
//! the run has learned. Invariants only: the simulator's ledger counts by
//! its own clock, and a request the client has seen finished is finished
//! by that clock too, so no assertion depends on timing.

mod support;

use batchgen::sim::SimConfig;
use support::*;

/// Every row completed, none paid twice, and at most `concurrency`
/// requests accepted and not yet told finished, or running, at once.
fn assert_bounded(
    sim: &batchgen::sim::SimHandle,
    out: &std::path::Path,
    rows: u64,
    concurrency: u64,
) {
    let ledger = sim.ledger();
    assert_eq!(ledger.completed, rows);
    assert!(
        ledger.max_in_flight <= concurrency,
        "{} requests accepted and not seen finished at once",
        ledger.max_in_flight
    );
    assert!(
        ledger.max_running <= concurrency,
        "{} requests ran at the gateway at once",
        ledger.max_running
    );
    assert_never_paid_twice(&ledger);
    assert!(results(out).iter().all(|r| r["status"] == "completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_folder_never_has_more_than_concurrency_accepted_and_unfinished() {
    // The first requests probe from 2 s on; those found pending just
    // before 2.5 s may not be asked again for a while, and once the rest of
    // the first wave is seen done their end is all but sure. They still
    // hold their slots until they are seen done.
    let sim = start(latency(2500, 2500)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 80);
    let out = dir.path().join("out");
    let o = run_with_defaults(&m, &out, &sim.url(), &["--concurrency", "40"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_bounded(&sim, &out, 80, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_few_never_drive_the_gateway_past_concurrency() {
    // Nearly every request takes 2.5 s, one in ten 8 s: a slow one looks
    // all but sure to be done with the rest, and is not.
    let sim = start(SimConfig {
        slow_rate: 0.1,
        slow_latency_ms: 8000,
        ..latency(2500, 2500)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 120);
    let out = dir.path().join("out");
    let o = run_with_defaults(&m, &out, &sim.url(), &["--concurrency", "40"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains(KEY));
    assert_bounded(&sim, &out, 120, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slower_than_the_folder_learned_keeps_its_slot_until_seen_done() {
    // A folder that learned 1.5 s; then the gateway, restarted at the same
    // address (a ledger of its own), takes 6 s for everything. The first
    // new request, pending at its first poll, looks all but sure to be done
    // soon after: with one slot, the second row still waits until the
    // first is seen done.
    let sim = start(latency(1500, 1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 40);
    let out = dir.path().join("out");
    let o = run_with_defaults(&m, &out, &sim.url(), &["--concurrency", "8"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let addr = sim.addr;
    sim.stop().await;
    let slow = SimConfig {
        slow_rate: 1.0,
        slow_latency_ms: 6000,
        ..latency(1500, 1500)
    };
    let sim = batchgen::sim::start(slow, addr).await.unwrap();
    let grown = seed_sweep(dir.path(), 42);
    let o = run_with_defaults(&grown, &out, &sim.url(), &["--concurrency", "1"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_bounded(&sim, &out, 2, 1);
    assert_eq!(results(&out).len(), 42);
}
