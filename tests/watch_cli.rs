//! Watching a run from outside: `--progress json` (NDJSON on stdout),
//! `--metrics-file` (Prometheus text), `--notify` (summary.json POSTed to a
//! loopback server that records what arrived), and what summary.json says
//! of the run's times and exit code. No assertion depends on scheduling:
//! the simulator's least latency bounds how long a run takes from below.

mod support;

use std::path::Path;
use std::process::Output;

use batchgen::sim::SimConfig;
use support::*;

/// stdout's lines, each parsed as one JSON object.
fn events(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn of<'a>(events: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

#[tokio::test]
async fn json_progress_is_one_object_a_line_on_stdout_from_start_to_end() {
    // Six rows, two at a time, each taking at least 1.2 s: over 3 s.
    let sim = start(latency(1200, 1400)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 6);
    let out = dir.path().join("out");
    let args = [
        "--progress",
        "json",
        "--concurrency",
        "2",
        "--max-cost",
        "5",
    ];
    let o = run_loud(&m, &out, &sim.url(), &args).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let all = events(&o.stdout);
    assert_eq!(all[0]["event"], "start");
    assert_eq!(all[0]["rows"], 6);
    assert_eq!(all[0]["rows_to_submit"], 6);
    assert_eq!(all[0]["budget_usd"], 5.0);
    assert_eq!(all[0]["concurrency"], 2);
    assert!(all[0]["spend_max_usd"].as_f64().unwrap() > 0.0);
    let end = all.last().unwrap();
    assert_eq!(end["event"], "end");
    assert_eq!(end["exit_code"], 0);
    assert_eq!(
        end["summary"],
        summary(&out),
        "the end carries summary.json"
    );
    let progress = of(&all, "progress");
    assert!(progress.len() >= 2, "{all:?}");
    for pair in progress.windows(2) {
        let (a, b) = (&pair[0]["elapsed_s"], &pair[1]["elapsed_s"]);
        assert!(
            b.as_f64().unwrap() - a.as_f64().unwrap() >= 0.95,
            "at most once a second"
        );
    }
    for p in &progress {
        assert_eq!(p["rows"], 6);
        assert!(p["in_flight"].as_u64().unwrap() <= 2);
        for field in [
            "rows_done",
            "images",
            "spent_usd",
            "possibly_charged_usd",
            "http_429",
            "rate_limited",
        ] {
            assert!(p[field].is_number(), "{field} in {p}");
        }
        assert!(p["at"].as_str().unwrap().ends_with('Z'));
    }
    // No human text on stdout; stderr as with --quiet.
    assert!(!text(&o.stdout).contains("rows:"));
    let err = text(&o.stderr);
    assert!(
        !err.contains("progress:") && !err.contains("6 rows"),
        "{err}"
    );
}

#[tokio::test]
async fn failures_are_warning_events_and_the_exit_code_agrees_everywhere() {
    let sim = start(SimConfig {
        failed_rate: 1.0,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    let prom = dir.path().join("batchgen.prom");
    let prom_arg = prom.to_str().unwrap();
    let args = ["--progress", "json", "--metrics-file", prom_arg];
    let o = run(&m, &out, &sim.url(), &args).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let all = events(&o.stdout);
    let warnings = of(&all, "warning");
    assert_eq!(warnings.len(), 3, "{all:?}");
    assert!(warnings.iter().all(|w| w["level"] == "error"));
    assert!(warnings[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("row a_s"));
    // Warnings still print on stderr too.
    assert_eq!(text(&o.stderr).matches("error: row").count(), 3);
    assert_eq!(all.last().unwrap()["exit_code"], 1);
    assert_eq!(summary(&out)["exit_code"], 1);
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(metrics.contains("batchgen_exit_code 1\n"), "{metrics}");
    assert!(metrics.contains("batchgen_result_rows{status=\"failed\"} 3\n"));
    assert!(metrics.contains("batchgen_rows{state=\"failed\"} 3\n"));
    assert!(!metrics.contains("batchgen_last_success_time_seconds"));
    // FAILED requests are charged: possibly charged, never spent.
    assert!(metrics.contains("batchgen_spent_usd_total 0\n"));
    assert!(
        !metrics.contains("batchgen_possibly_charged_usd 0\n"),
        "{metrics}"
    );
}

/// A run of 12 rows sends all 12 submits at once: against a limit of 10 a
/// second, some are refused however slow the machine.
async fn run_with_metrics(m: &Path, out: &Path, url: &str, prom: &Path) -> Output {
    let prom = prom.to_str().unwrap();
    run(
        m,
        out,
        url,
        &["--metrics-file", prom, "--concurrency", "12"],
    )
    .await
}

#[tokio::test]
async fn the_metrics_file_is_written_whole_and_a_failed_write_costs_no_row() {
    let sim = start(SimConfig {
        rate_limit: Some(10),
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 12);
    let out = dir.path().join("out");
    let prom = dir.path().join("textfile").join("batchgen.prom");
    std::fs::create_dir(prom.parent().unwrap()).unwrap();
    let o = run_with_metrics(&m, &out, &sim.url(), &prom).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let metrics = std::fs::read_to_string(&prom).unwrap();
    let s = summary(&out);
    for line in [
        "batchgen_running 0".to_string(),
        "batchgen_exit_code 0".into(),
        "batchgen_plan_rows 12".into(),
        "batchgen_result_rows{status=\"completed\"} 12".into(),
        "batchgen_images_total 12".into(),
        format!("batchgen_rate_limited_total {}", s["rate_limited"]),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        s["rate_limited"].as_u64().unwrap() > 0,
        "the limiter refused some"
    );
    assert!(!metrics.contains("batchgen_throttled_total{status=\"429\"} 0\n"));
    assert!(metrics.contains("# TYPE batchgen_last_success_time_seconds gauge\n"));
    let names: Vec<_> = std::fs::read_dir(prom.parent().unwrap()).unwrap().collect();
    assert_eq!(names.len(), 1, "only the file: no temporary left");

    // A metrics file that cannot be written: noted, and every row completes.
    let out2 = dir.path().join("out2");
    let nowhere = dir.path().join("missing").join("batchgen.prom");
    let o = run_with_metrics(&m, &out2, &sim.url(), &nowhere).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(results(&out2).iter().all(|r| r["status"] == "completed"));
    assert!(
        text(&o.stderr).contains("cannot write the metrics file"),
        "{}",
        text(&o.stderr)
    );
}

#[tokio::test]
async fn summary_json_says_when_how_and_for_how_long_across_runs() {
    let sim = start(latency(300, 400)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let m = seed_sweep(dir.path(), 2);
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let first = summary(&out);
    assert_eq!(first["exit_code"], 0);
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"));
    let (started, finished) = (
        first["started_at"].as_str().unwrap(),
        first["finished_at"].as_str().unwrap(),
    );
    assert!(
        started.ends_with('Z') && started.len() == 24 && started <= finished,
        "{first}"
    );
    let wall = first["wall_time_s"].as_f64().unwrap();
    assert!(wall >= 0.3 && first["wall_time_total_s"].as_f64().unwrap() >= wall);
    // The manifest grows; the next run's total counts the first run too.
    let m = seed_sweep(dir.path(), 4);
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let second = summary(&out);
    let wall2 = second["wall_time_s"].as_f64().unwrap();
    let total2 = second["wall_time_total_s"].as_f64().unwrap();
    assert!(
        total2 >= wall2 + 0.3,
        "{total2} covers the first run's 0.3 s too"
    );
    assert!(
        total2 <= wall2 + wall + 0.01,
        "an earlier run counts to its last line"
    );
    assert!(second["started_at"].as_str().unwrap() >= finished);
}

/// A recorder that answers every request `status` (and `Location`).
async fn answering(status: u16, location: Option<String>) -> Recorder {
    Recorder::start(move |_| {
        let headers = location
            .iter()
            .map(|l| ("Location".to_string(), l.clone()))
            .collect();
        (status, headers, vec![])
    })
    .await
}

/// Runs `m` into `out`, notifying `hook`'s `/hooks/nightly`, with `extra`.
async fn run_notifying(m: &Path, out: &Path, url: &str, hook: &str, extra: &[&str]) -> Output {
    let to = format!("{hook}/hooks/nightly");
    let mut args = vec!["--notify", to.as_str()];
    args.extend(extra);
    run(m, out, url, &args).await
}

#[tokio::test]
async fn the_summary_is_posted_at_the_end_without_the_key() {
    let sim = start(quick()).await;
    let hook = Recorder::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    let o = run_notifying(&m, &out, &sim.url(), &hook.url, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let got = hook.requests();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/hooks/nightly")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("authorization").is_none());
    assert!(!text(&r.body).contains(KEY) && !format!("{:?}", r.headers).contains(KEY));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, summary(&out));
    assert_eq!(body["exit_code"], 0);
    assert_no_secret(&out, &o);
}

#[tokio::test]
async fn a_refused_run_is_notified_and_a_key_in_the_url_is_refused() {
    let sim = start(quick()).await;
    let hook = Recorder::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    // Over the budget: nothing sent, exit 2, and the hook hears why.
    let o = run_notifying(&m, &out, &sim.url(), &hook.url, &["--max-cost", "0.000001"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let got = hook.requests();
    assert_eq!(got.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["exit_code"], 2);
    assert!(body["error"].as_str().unwrap().contains("budget"), "{body}");
    assert!(body["finished_at"].is_string() && body["version"].is_string());
    // A URL holding the key: refused before anything is sent, to anyone.
    let holding = format!("{}/hooks?token={KEY}", hook.url);
    let o = run(&m, &out, &sim.url(), &["--notify", &holding]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--notify holds the API key"));
    assert!(!text(&o.stderr).contains(KEY));
    assert_eq!(hook.requests().len(), 1, "nothing more sent");
    assert_eq!(sim.ledger().submit_calls, 0);
    // So under --simulate too, which sends the key nowhere else.
    let sim_out = dir.path().join("simulated");
    let o = run(
        &m,
        &sim_out,
        &sim.url(),
        &["--simulate", "--notify", &holding],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains(KEY));
    assert_eq!(hook.requests().len(), 1, "nothing more sent");
    let args = ["--notify", "ftp://example.com/x", "--progress", "json"];
    let o = run(&m, &out, &sim.url(), &args).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("invalid --notify URL"));
    // Even then, the events end with `end`.
    let end: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (end["event"].as_str(), end["exit_code"].as_u64()),
        (Some("end"), Some(2))
    );
    assert!(end["error"].as_str().unwrap().contains("--notify"));
}

#[tokio::test]
async fn a_failed_notification_is_retried_reported_and_never_the_exit_code() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    // Answers 503 twice, then 200: three tries, delivered, nothing said.
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = tries.clone();
    let flaky = Recorder::start(move |_| {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (if n < 2 { 503 } else { 200 }, vec![], vec![])
    })
    .await;
    let o = run_notifying(&m, &dir.path().join("a"), &sim.url(), &flaky.url, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(flaky.requests().len(), 3);
    assert!(!text(&o.stderr).contains("--notify"), "{}", text(&o.stderr));
    // A redirect is not followed, nor tried again; the run's code stands.
    let elsewhere = Recorder::ok().await;
    let moving = answering(307, Some(format!("{}/stolen", elsewhere.url))).await;
    let o = run_notifying(&m, &dir.path().join("b"), &sim.url(), &moving.url, &[]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(moving.requests().len(), 1);
    assert!(elsewhere.requests().is_empty());
    let err = text(&o.stderr);
    assert!(
        err.contains("--notify: the summary was not delivered to http://127.0.0.1:"),
        "{err}"
    );
    assert!(
        err.contains("redirect") && !err.contains("/hooks/nightly"),
        "{err}"
    );
    // Nobody listening: reported after its tries, exit code unchanged.
    let closed = format!("http://{}", refusing_addr());
    let o = run_notifying(&m, &dir.path().join("c"), &sim.url(), &closed, &[]).await;
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("(3 tries)"), "{}", text(&o.stderr));
}
