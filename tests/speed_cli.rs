//! What the defaults do for speed against the simulator: nothing throttled
//! until the gateway says 429, the pace it allows found and kept, polls
//! planned from what the run (and the folder's earlier runs) learned, and a
//! lost result paid for again only when asked.
//!
//! When things happen is asserted only on tokio's paused clock, with the run
//! in the test process ([`run_in_process`]): there the run and the simulator
//! share one clock that moves only when both wait, so a loaded box cannot
//! change what happens when. Through the binary, in real time, the tests
//! assert what no timing can change: every row collected, nothing paid
//! twice, the counts agreeing.

mod support;

use std::time::Duration;

use batchgen::sim::SimConfig;
use support::*;

/// The settings `run` (tests/support) gives the binary: polls every 40 ms,
/// submits at most 200 a second.
fn as_run(s: &mut batchgen::run::Settings) {
    s.poll_interval = Some(Duration::from_millis(40));
    s.rate_per_sec = Some(200.0);
}

#[tokio::test(start_paused = true)]
async fn defaults_never_throttle_submits() {
    let sim = start(latency(800, 800)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 16);
    let out = dir.path().join("out");
    let report = run_in_process(&m, &out, &sim.url(), |s| s.concurrency = 16).await;
    assert_eq!(report.stop, None);
    let ledger = sim.ledger();
    assert_eq!(ledger.completed, 16);
    assert_eq!(
        ledger.max_in_flight, 16,
        "all sixteen were in flight at once, none held back by a rate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_gateway_sets_the_pace_for_the_whole_run() {
    // Through the binary: whatever the timing, every row is accepted once
    // and every 429 is counted. How many 429s the pace leaves is the next
    // test's, on the paused clock.
    let sim = start(SimConfig {
        rate_limit: Some(5),
        retry_after_secs: 1,
        ..latency(100, 100)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 30);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &["--concurrency", "30"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let ledger = sim.ledger();
    let refused = ledger
        .rejected
        .get("RATE_LIMIT_EXCEEDED")
        .copied()
        .unwrap_or(0);
    assert_eq!(summary(&out)["rate_limited"], refused, "429s are counted");
    assert_eq!(ledger.accepted, 30);
    assert_never_paid_twice(&ledger);
}

#[tokio::test(start_paused = true)]
async fn after_the_first_burst_meets_a_rate_limit_the_run_keeps_to_the_pace() {
    let sim = start(SimConfig {
        rate_limit: Some(5),
        retry_after_secs: 1,
        ..latency(100, 100)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 30);
    let out = dir.path().join("out");
    let report = run_in_process(&m, &out, &sim.url(), |s| {
        as_run(s);
        s.concurrency = 30;
    })
    .await;
    assert_eq!(report.stop, None);
    let ledger = sim.ledger();
    let refused = ledger
        .rejected
        .get("RATE_LIMIT_EXCEEDED")
        .copied()
        .unwrap_or(0);
    assert_eq!(summary(&out)["rate_limited"], refused, "429s are counted");
    // The first burst meets the limit; after it the run keeps to the pace.
    assert!(refused < 30, "{refused} 429s for 30 rows");
    assert_eq!(ledger.accepted, 30);
    assert_never_paid_twice(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_follow_what_the_folder_has_learned() {
    let sim = start(latency(1000, 1000)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 16);
    let out = dir.path().join("out");
    let o = run_with_defaults(&m, &out, &sim.url(), &["--concurrency", "8"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let journal = std::fs::read_to_string(out.join("journal.jsonl")).unwrap();
    assert!(
        journal.contains("\"seen_ms\":["),
        "done lines keep when they were seen"
    );
    // New rows in the same folder: the learned latency seeds their polls.
    let before = sim.ledger().status_calls;
    let grown = seed_sweep(dir.path(), 32);
    let o = run_with_defaults(&grown, &out, &sim.url(), &["--concurrency", "8"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // How few calls that takes is the next test's, on the paused clock.
    let calls = sim.ledger().status_calls - before;
    assert_eq!(summary(&out)["status_calls"], calls);
    assert_eq!(sim.ledger().completed, 32);
    assert_never_paid_twice(&sim.ledger());
}

#[tokio::test(start_paused = true)]
async fn the_folder_s_learned_latency_plans_new_rows_polls() {
    let sim = start(latency(1000, 1000)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 16);
    let out = dir.path().join("out");
    let report = run_in_process(&m, &out, &sim.url(), |s| s.concurrency = 8).await;
    assert_eq!(report.stop, None);
    // New rows in the same folder, in a new run: the learned latency seeds their polls.
    let before = sim.ledger().status_calls;
    let grown = seed_sweep(dir.path(), 32);
    let report = run_in_process(&grown, &out, &sim.url(), |s| s.concurrency = 8).await;
    assert_eq!(report.stop, None);
    let calls = sim.ledger().status_calls - before;
    assert!(
        calls <= 18,
        "{calls} status calls for 16 new rows: each is asked once, just after it finishes"
    );
    assert_eq!(summary(&out)["status_calls"], calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_result_is_charged_and_paid_again_only_when_asked() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    // A request accepted long ago, whose result the gateway has since dropped.
    let (m, out) = accepted_earlier(&sim, dir.path(), batchgen::journal::now_ms(), |ticket| {
        ticket.request_id = "glm-image_forgotten".into();
        ticket.status_url = None;
    })
    .await;
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let row = &results(&out)[0];
    assert_eq!(
        (row["status"].as_str(), row["error_code"].as_str()),
        ("failed", "RESULT_LOST")
    );
    assert_eq!(
        row["possibly_charged_usd"], "0.050000",
        "counted as charged"
    );
    let submits = sim.ledger().submit_calls;
    let o = run(&m, &out, &sim.url(), &["--retry-failed"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        sim.ledger().submit_calls,
        submits,
        "--retry-failed does not pay for it again"
    );
    let o = run(&m, &out, &sim.url(), &["--resubmit-lost"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().submit_calls, submits + 1);
    assert_eq!(results(&out)[0]["status"], "completed");
}

#[tokio::test(start_paused = true)]
async fn a_finished_request_hands_its_slot_on_while_its_images_download() {
    // A slow file host: every image takes 1.5 s to arrive.
    let sim = start(SimConfig {
        download_delay_ms: 1500,
        ..latency(100, 100)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    let report = run_in_process(&m, &out, &sim.url(), |s| {
        as_run(s);
        s.concurrency = 1;
    })
    .await;
    assert_eq!(report.stop, None);
    let ledger = sim.ledger();
    assert_eq!(ledger.completed, 3);
    assert_eq!(
        ledger.max_in_flight, 1,
        "one request at the gateway at a time"
    );
    // The journal's order: the next row is submitted while the last one's
    // image downloads, and one download runs at a time (as many as
    // --concurrency), so the third row waits for the first download.
    let journal = std::fs::read_to_string(out.join("journal.jsonl")).unwrap();
    let mut keys: Vec<String> = Vec::new();
    let order: Vec<String> = journal
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| matches!(e["e"].as_str(), Some("intent" | "done")))
        .map(|e| {
            let key = e["key"].as_str().unwrap().to_string();
            if !keys.contains(&key) {
                keys.push(key.clone());
            }
            let n = keys.iter().position(|k| *k == key).unwrap() + 1;
            format!("{}{n}", &e["e"].as_str().unwrap()[..1])
        })
        .collect();
    assert_eq!(order, ["i1", "i2", "d1", "i3", "d2", "d3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_timed_from_when_the_gateway_answered_its_submit() {
    // A gateway that takes 1 s to answer a submit (a queue at its front
    // door): the request's latency starts when it is accepted, just before
    // the answer. Timed from when the submit left, the first poll (planned
    // 0.4–0.6 s after) would go the moment the answer came.
    //
    // Real time, through the binary, on purpose: the run converts the
    // journal's wall-clock submit time to its own clock, which tokio's
    // paused clock would not move. It cannot race: a loaded box only
    // delays the poll, which widens the gap asserted as a lower bound.
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let times: Arc<Mutex<(Option<Instant>, Option<Instant>)>> = Arc::default();
    let png = batchgen::sim::render::image("p", 1, 16, 16, batchgen::api::ImageFormat::Png);
    let t = times.clone();
    let gw = Recorder::start(move |r| {
        let json = |body: &str| {
            let head = vec![("content-type".to_string(), "application/json".to_string())];
            (200, head, body.as_bytes().to_vec())
        };
        if r.path.ends_with("/glm-image-request") {
            std::thread::sleep(Duration::from_secs(1));
            t.lock().unwrap().0 = Some(Instant::now());
            json(r#"{"request_id":"r-1","status":"QUEUED"}"#)
        } else if r.path.contains("/status/") {
            t.lock().unwrap().1.get_or_insert_with(Instant::now);
            let host = r.header("host").unwrap_or_default();
            json(&format!(
                r#"{{"status":"COMPLETED","output":{{"media_url":["http://{host}/i.png"]}}}}"#
            ))
        } else {
            (200, vec![], png.clone())
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 1);
    let out = dir.path().join("out");
    let o = run_with_defaults(&m, &out, &gw.url, &["--poll-interval-ms", "500"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (answered, polled) = *times.lock().unwrap();
    let gap = polled.unwrap() - answered.unwrap();
    assert!(
        gap >= Duration::from_millis(400),
        "first poll {gap:?} after the submit was answered"
    );
}
