//! `status` while a run holds the folder (who, since when, rows not reached
//! yet), `status --check` as a gate for schedulers, `status` on a merged
//! folder, and `export` of a folder being run or holding no image.

mod support;

use std::path::Path;
use std::process::{Child, Output, Stdio};

use support::*;

async fn status(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    batchgen(&all, dir).await
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)))
}

/// Starts a run of three rows one at a time against `url` (whose requests
/// never finish while the test looks) and waits until it submitted one.
async fn live_run(m: &Path, out: &Path, url: &str) -> Child {
    let mut cmd = command(m, out, url, &["--concurrency", "1"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let out = out.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        wait_for_journal(&mut child, &out, "\"e\":\"submitted\"", 1);
        child
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_run_holding_the_folder_and_check_gates_on_it() {
    // Requests take ten minutes: the run is still going while we look.
    let sim = start(latency(600_000, 600_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = seed_sweep(d, 3);
    let out = d.join("out");
    let mut child = live_run(&m, &out, &sim.url()).await;
    let pid = child.id();

    let o = status(d, &["out"]).await;
    assert_eq!(o.status.code(), Some(0), "plain status: exit 0");
    let t = text(&o.stdout);
    assert!(
        t.contains(&format!("running now: pid {pid} on host ")),
        "{t}"
    );
    assert!(t.contains(", since 20"), "{t}");
    assert!(
        t.contains("3 rows so far: 0 completed, 0 failed, 1 in flight, 2 not reached yet"),
        "{t}"
    );
    assert!(!t.contains("rerun to collect"), "{t}");

    let o = status(d, &["--check", "out"]).await;
    assert_eq!(o.status.code(), Some(1), "a run going on is not complete");
    let o = status(d, &["--json", "--check", "out"]).await;
    assert_eq!(o.status.code(), Some(1));
    let s = json(&o);
    assert_eq!(s["running"]["pid"], pid);
    assert!(s["running"]["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(s["running"]["since"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        (s["not_run"].clone(), s["not_reached"].clone()),
        (2.into(), 2.into())
    );
    assert_eq!(s["accepted"], 1);
    assert_eq!(s["complete"], false);

    // An export now warns that the run's rows are missing; it has no image
    // yet, so it says that too and exits 1.
    let o = batchgen(
        &["export", "out", "--format", "jsonl", "--out", "x.jsonl"],
        d,
    )
    .await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("warning: a run holds out now (pid "), "{err}");
    assert!(err.contains("not in this export"), "{err}");
    assert!(err.contains("no completed image to export"), "{err}");
    assert!(text(&o.stdout).contains("exported 0 images"));

    // The run dies (its lock goes with it): nothing runs, the accepted row
    // is to collect, and the check still fails.
    child.kill().unwrap();
    child.wait().unwrap();
    let o = status(d, &["out"]).await;
    let t = text(&o.stdout);
    assert!(!t.contains("running now"), "{t}");
    assert!(
        t.contains("3 rows: 0 completed, 0 failed, 2 not run, 1 accepted to collect"),
        "{t}"
    );
    let o = status(d, &["--json", "--check", "out"]).await;
    assert_eq!(o.status.code(), Some(1));
    let s = json(&o);
    assert_eq!(s["running"], serde_json::Value::Null);
    assert_eq!(s["not_reached"], 0);
    let o = batchgen(
        &["export", "out", "--format", "jsonl", "--out", "x.jsonl"],
        d,
    )
    .await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("a run holds"), "{err}");
    assert!(err.contains("holds no completed image to export"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_passes_the_check() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = seed_sweep(d, 2);
    let o = run(&m, &d.join("out"), &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = status(d, &["--check", "out"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("2 rows: 2 completed, 0 failed, 0 not run"));
    let s = json(&status(d, &["--json", "--check", "out"]).await);
    assert_eq!(s["complete"], true);
    assert_eq!(s["running"], serde_json::Value::Null);
    assert_eq!(s["merged"], false);
    // A folder without a run is still exit 2, --check or not.
    std::fs::create_dir(d.join("empty")).unwrap();
    assert_eq!(
        status(d, &["--check", "empty"]).await.status.code(),
        Some(2)
    );
    let o = batchgen(
        &["export", "out", "--format", "jsonl", "--out", "x.jsonl"],
        d,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_a_merged_folder() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    two_shards(&sim, d).await;
    let merge = |shards: &[&str], out: &str| {
        let mut args = vec!["merge"];
        args.extend_from_slice(shards);
        args.extend(["--out", out]);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            batchgen(&args, d).await
        }
    };
    assert_eq!(merge(&["s0", "s1"], "all").await.status.code(), Some(0));
    let o = status(d, &["--check", "all"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let t = text(&o.stdout);
    assert!(t.starts_with("all: merged from 2 shard(s) of "), "{t}");
    assert!(
        t.contains("7 rows: 7 completed, 0 failed, 0 not run"),
        "{t}"
    );
    let s = json(&status(d, &["--json", "all"]).await);
    let merged = summary(&d.join("all"));
    for field in [
        "rows",
        "rows_by_status",
        "images",
        "cost_usd",
        "shards_missing",
    ] {
        assert_eq!(s[field], merged[field], "{field}");
    }
    assert_eq!(
        (s["merged"].clone(), s["complete"].clone()),
        (true.into(), true.into())
    );

    // One shard of two: its rows are there, the other's missing; not complete.
    let o = merge(&["s1", "--partial"], "half").await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let o = status(d, &["--check", "half"]).await;
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o.stdout);
    assert!(t.contains("missing: shard(s) 0 were not merged"), "{t}");
    assert_eq!(
        json(&status(d, &["--json", "half"]).await)["shards_missing"],
        serde_json::json!([0])
    );
}
