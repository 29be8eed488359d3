//! `batchgen run` against each limiter shape `batchgen sim` puts in front of
//! the gateway, through the real binary. Invariants only (how fast a run
//! goes is the model's and the bench's business, see `run::limiter`): no
//! row fails of a limiter, nothing is paid twice, every refusal is counted,
//! and a spent quota stops the run naming it.

mod support;

use batchgen::sim::{LimitBody, LimitConfig, LimitShape, OnOff, SimConfig};
use support::*;

fn count(ledger: &batchgen::sim::Ledger, code: &str) -> u64 {
    ledger.rejected.get(code).copied().unwrap_or(0)
}

/// Runs `rows` rows, `concurrency` at once, against a limiter of `cfg`;
/// checks the invariants; returns the refusals the ledger counted.
async fn no_row_dies_of(cfg: SimConfig, rows: u32, concurrency: &str) -> u64 {
    let sim = start(SimConfig {
        min_latency_ms: 200,
        max_latency_ms: 200,
        ..cfg
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), rows);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &["--concurrency", concurrency]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let rs = results(&out);
    assert_eq!(rs.len(), rows as usize);
    assert!(rs.iter().all(|r| r["status"] == "completed"), "{rs:#?}");
    let ledger = sim.ledger();
    assert_never_paid_twice(&ledger);
    assert_eq!(ledger.accepted, u64::from(rows), "each row accepted once");
    assert!(ledger.submissions.values().all(|n| *n == 1));
    assert_files_are_what_was_served(&out, &ledger);
    let refused = count(&ledger, "RATE_LIMIT_EXCEEDED");
    assert!(
        refused > 0,
        "the limiter never refused: {:?}",
        ledger.rejected
    );
    // Every refusal, 429 or 503, is counted as rate limited.
    assert_eq!(summary(&out)["rate_limited"], refused);
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_limit_req_answering_503_html_fails_no_row() {
    // nginx's defaults: limit_req_status 503, its HTML page, no Retry-After.
    no_row_dies_of(
        SimConfig {
            rate_limit: Some(20),
            limit: LimitConfig {
                limit_shape: LimitShape::Leaky,
                limit_burst: 0,
                limit_status: 503,
                limit_body: LimitBody::Html,
                ..LimitConfig::default()
            },
            ..quick()
        },
        60,
        "30",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_limit_req_answering_429_html_fails_no_row() {
    no_row_dies_of(
        SimConfig {
            rate_limit: Some(20),
            limit: LimitConfig {
                limit_shape: LimitShape::Leaky,
                limit_burst: 2,
                limit_body: LimitBody::Html,
                ..LimitConfig::default()
            },
            ..quick()
        },
        60,
        "30",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bucket_without_retry_after_fails_no_row() {
    no_row_dies_of(
        SimConfig {
            rate_limit: Some(20),
            limit: LimitConfig {
                limit_shape: LimitShape::Bucket,
                limit_burst: 3,
                limit_retry_after: Some(OnOff::Off),
                ..LimitConfig::default()
            },
            ..quick()
        },
        60,
        "30",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_quota_stops_the_run_naming_it_and_a_rerun_pays_nothing_twice() {
    let sim = start(SimConfig {
        limit: LimitConfig {
            quota: Some(3),
            ..LimitConfig::default()
        },
        ..latency(300, 300)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 8);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &["--concurrency", "4"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let stopped = summary(&out)["stopped"].as_str().unwrap().to_string();
    assert!(
        stopped.contains("QUOTA_EXCEEDED") && stopped.contains("Out of call volume quota"),
        "{stopped}"
    );
    let err = text(&o.stderr);
    assert!(err.contains("QUOTA_EXCEEDED"), "{err}");
    let rs = results(&out);
    let completed = rs.iter().filter(|r| r["status"] == "completed").count();
    assert_eq!(completed, 3, "what was accepted is collected: {rs:#?}");
    assert!(rs
        .iter()
        .filter(|r| r["status"] != "completed")
        .all(|r| r["error_code"] == "QUOTA_EXCEEDED"));
    assert!(count(&sim.ledger(), "QUOTA_EXCEEDED") > 0);
    // The quota is replenished: a plain rerun submits the rest, and nothing twice.
    sim.set_config(SimConfig {
        limit: LimitConfig {
            quota: None,
            ..LimitConfig::default()
        },
        ..latency(300, 300)
    });
    let o = run(&m, &out, &sim.url(), &["--concurrency", "4"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(results(&out).iter().all(|r| r["status"] == "completed"));
    let ledger = sim.ledger();
    assert_never_paid_twice(&ledger);
    assert_eq!(ledger.accepted, 8);
    assert_files_are_what_was_served(&out, &ledger);
}

/// What the client hears from each refusal `batchgen sim` can give.
#[tokio::test]
async fn each_refusal_reaches_the_client_as_the_limiter_sent_it() {
    use batchgen::api::{ApiKey, Class, Client, ClientConfig};
    use batchgen::plan::Request;
    let hear = |cfg: SimConfig| async move {
        let sim = start(SimConfig {
            rate_limit: Some(1),
            ..cfg
        })
        .await;
        let client = Client::new(ClientConfig::new(&sim.url(), ApiKey::new(KEY).unwrap())).unwrap();
        // Until one is refused (each a second apart would all pass, so a
        // slow machine only makes this take longer).
        let mut refused = None;
        for n in 0..50 {
            if let Err(e) = client.submit(&Request::new(&format!("row {n}"))).await {
                refused = Some(e);
                break;
            }
        }
        let e = refused.expect("the limiter refused one");
        assert_eq!(count(&sim.ledger(), "RATE_LIMIT_EXCEEDED"), 1);
        assert_eq!(e.class, Class::Retry, "{e}");
        assert!(e.is_rate_limited(), "{e}");
        (e.http_status, e.retry_after.map(|d| d.as_secs()))
    };
    // nginx: 503, HTML, no Retry-After.
    let nginx = SimConfig {
        limit: LimitConfig {
            limit_shape: LimitShape::Leaky,
            limit_burst: 0,
            limit_status: 503,
            limit_body: LimitBody::Html,
            ..LimitConfig::default()
        },
        ..quick()
    };
    assert_eq!(hear(nginx).await, (Some(503), None));
    // A JSON refusal with Retry-After off names no delay in its message either.
    let quiet = SimConfig {
        limit: LimitConfig {
            limit_shape: LimitShape::Bucket,
            limit_retry_after: Some(OnOff::Off),
            ..LimitConfig::default()
        },
        ..quick()
    };
    assert_eq!(hear(quiet).await, (Some(429), None));
    // Azure API Management's window: Retry-After to when the oldest call slides out.
    let apim = SimConfig {
        limit: LimitConfig {
            limit_window_secs: 60,
            ..LimitConfig::default()
        },
        ..quick()
    };
    assert_eq!(hear(apim).await, (Some(429), Some(60)));
}
