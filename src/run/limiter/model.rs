//! A deterministic model of a run against each limiter shape, under paused
//! time: C rows at once, each submitting through the [`RateLimiter`] to a
//! fake gateway whose limiter is the simulator's own rule
//! ([`crate::sim::limit::Gate`]), then generating for L seconds.
//!
//! The targets are the issue's: at least 0.85 of the rate bound, at most
//! 20 % of submits refused, every row accepted. Nothing here reads the
//! wall clock, so a loaded machine cannot fail it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use crate::sim::limit::{Gate, LimitShape, Verdict};

/// Half a round trip to the gateway (loopback plus its own work).
const HALF_RTT: Duration = Duration::from_millis(2);

struct Outcome {
    secs: f64,
    submits: u64,
    refused: u64,
    accepted: u64,
}

async fn model(
    mut gate: Gate,
    retry_after: bool,
    rows: u64,
    concurrency: usize,
    latency: Duration,
) -> Outcome {
    let start = Instant::now();
    let limiter = Arc::new(RateLimiter::new(None));
    let gate = Arc::new(Mutex::new(std::mem::replace(
        &mut gate,
        Gate::new(LimitShape::Window, 1, Duration::from_secs(1), 1),
    )));
    let left = Arc::new(AtomicU64::new(rows));
    let (submits, refused, accepted) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (limiter, gate, left) = (limiter.clone(), gate.clone(), left.clone());
            let (submits, refused, accepted) = (submits.clone(), refused.clone(), accepted.clone());
            tokio::spawn(async move {
                let mut finished = start;
                while left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    loop {
                        let sent = limiter.acquire().await;
                        submits.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(HALF_RTT).await;
                        let verdict = gate.lock().unwrap().check(Instant::now());
                        tokio::time::sleep(HALF_RTT).await;
                        match verdict {
                            Verdict::Accept => {
                                limiter.accepted(sent);
                                accepted.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(latency).await;
                                finished = Instant::now();
                                break;
                            }
                            Verdict::Refuse { retry_after_secs } => {
                                refused.fetch_add(1, Ordering::SeqCst);
                                let ra = retry_after.then(|| Duration::from_secs(retry_after_secs));
                                limiter.throttled(ra, sent);
                            }
                        }
                    }
                }
                finished
            })
        })
        .collect();
    let mut end = start;
    for w in workers {
        end = end.max(w.await.unwrap());
    }
    Outcome {
        secs: end.duration_since(start).as_secs_f64(),
        submits: submits.load(Ordering::SeqCst),
        refused: refused.load(Ordering::SeqCst),
        accepted: accepted.load(Ordering::SeqCst),
    }
}

/// Runs one shape and checks the targets; returns (ratio, refused share).
#[allow(clippy::print_stderr)] // what each shape gave, shown on failure
async fn check(name: &str, gate: Gate, retry_after: bool, rows: u64, bound: f64) -> (f64, f64) {
    let out = model(gate, retry_after, rows, 60, Duration::from_secs(1)).await;
    let ratio = bound / out.secs;
    let refused = out.refused as f64 / out.submits as f64;
    eprintln!(
        "{name}: {:.1} s against a bound of {bound:.1} s = {ratio:.2}; {} of {} submits refused ({:.0} %)",
        out.secs,
        out.refused,
        out.submits,
        refused * 100.0
    );
    assert_eq!(out.accepted, rows, "{name}: every row accepted");
    assert!(ratio >= 0.85, "{name}: {ratio:.2} of the bound");
    assert!(refused <= 0.20, "{name}: {:.0} % refused", refused * 100.0);
    (ratio, refused)
}

fn window_bound(rows: u64, n: u64, window_secs: f64, latency: f64) -> f64 {
    ((rows - 1) / n) as f64 * window_secs + latency
}

fn rate_bound(rows: u64, rate: f64, burst: u64, latency: f64) -> f64 {
    (rows - burst) as f64 / rate + latency
}

#[tokio::test(start_paused = true)]
async fn a_one_second_window_with_retry_after() {
    let gate = Gate::new(LimitShape::Window, 10, Duration::from_secs(1), 1);
    check(
        "window 1 s",
        gate,
        true,
        300,
        window_bound(300, 10, 1.0, 1.0),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_sixty_second_window_with_retry_after_to_its_edge() {
    let gate = Gate::new(LimitShape::Window, 300, Duration::from_secs(60), 1);
    let bound = window_bound(600, 300, 60.0, 1.0);
    check("window 60 s", gate, true, 600, bound).await;
}

#[tokio::test(start_paused = true)]
async fn a_token_bucket_with_no_retry_after() {
    let gate = Gate::new(LimitShape::Bucket, 10, Duration::from_secs(1), 5);
    check("bucket", gate, false, 300, rate_bound(300, 10.0, 5, 1.0)).await;
}

#[tokio::test(start_paused = true)]
async fn a_token_bucket_with_retry_after() {
    let gate = Gate::new(LimitShape::Bucket, 10, Duration::from_secs(1), 5);
    check("bucket RA", gate, true, 300, rate_bound(300, 10.0, 5, 1.0)).await;
}

#[tokio::test(start_paused = true)]
async fn nginx_limit_req_with_no_retry_after() {
    let gate = Gate::new(LimitShape::Leaky, 10, Duration::from_secs(1), 5);
    check("leaky", gate, false, 300, rate_bound(300, 10.0, 5, 1.0)).await;
}
