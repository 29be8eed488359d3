//! `batchgen run` through the real binary against the simulator on loopback.
//! The simulator runs in this test process, so its ledger is the witness of
//! what was submitted, charged and served.

mod support;

use std::process::Command;

use batchgen::sim::{self, SimConfig, StatusShape};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_manifest_end_to_end() {
    let sim = start(SimConfig {
        price_image_to_image: 0.08,
        status_shape: StatusShape::Mixed,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.png"),
        sim::render::image("src", 1, 24, 24, batchgen::api::ImageFormat::Png),
    )
    .unwrap();
    let m = write(
        dir.path(),
        "mixed.yaml",
        "name: mixed
pricing: {text_to_image: 0.05, image_to_image: 0.08}
defaults: {image_size: {width: 64, height: 48}, output_format: png}
jobs:
  - {id: t2i, prompt: a lighthouse, seeds: [1, 2], num_images: 2}
  - {id: jpeg, prompt: a fox, seed: 3, output_format: jpeg}
  - {id: inline, prompt: inline data, seed: 4, sync_mode: true}
  - {id: edit, prompt: make it red, seeds: [5, 6], image_urls: [in.png, \"https://example.com/a.png\"]}
",
    );
    let out = dir.path().join("out");
    let o = run_loud(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let rows = results(&out);
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r["status"] == "completed"), "{rows:#?}");
    assert_eq!(rows[0]["files"], "images/t2i_s1_0.png;images/t2i_s1_1.png");
    assert_eq!(
        rows[2]["files"], "images/jpeg_s3_0.jpg",
        "named from the bytes received"
    );
    assert_eq!(rows[4]["kind"], "image_to_image");
    assert_eq!(rows[4]["image_urls"], "in.png|https://example.com/a.png");
    assert!(rows[0]["request_id"].starts_with("glm-image_"));
    assert_eq!(rows[0]["attempts"], "1");
    let ledger = sim.ledger();
    assert_files_are_what_was_served(&out, &ledger);
    assert_never_paid_twice(&ledger);
    // 2 rows x 2 images + 1 + 1 text-to-image at $0.05, 2 image-to-image at $0.08.
    let s = summary(&out);
    assert_eq!(s["images"], 8);
    assert_eq!(s["cost_usd"], 0.46);
    assert_eq!(s["cost_usd_by_kind"]["image_to_image"], 0.16);
    assert_eq!(
        ledger.charged_usd_micros, 460_000,
        "the tool's total is the gateway's"
    );
    assert!(text(&o.stdout)
        .contains("6 rows: 6 completed, 0 failed, 0 not run · 8 images · $0.46 spent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerunning_a_finished_run_sends_nothing() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", "defaults: {image_size: {width: 32, height: 32}}\nseeds: {from: 1, count: 8}\njobs: [{id: a, prompt: cat}]\n");
    let out = dir.path().join("out");
    assert_eq!(run(&m, &out, &sim.url(), &[]).await.status.code(), Some(0));
    let results = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let calls = sim.ledger().submit_calls;
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        sim.ledger().submit_calls,
        calls,
        "nothing is submitted again"
    );
    assert_eq!(summary(&out)["rows_this_run"], 0);
    // The first run's history is now one line per row, and reads the same.
    let journal = std::fs::read_to_string(out.join("journal.jsonl")).unwrap();
    let kinds: Vec<&str> = journal
        .lines()
        .map(|l| l.split('"').nth(3).unwrap_or_default())
        .collect();
    assert_eq!(kinds.len(), 10, "{journal}");
    assert_eq!(kinds.iter().filter(|k| **k == "row").count(), 8);
    assert_eq!(
        std::fs::read_to_string(out.join("results.csv")).unwrap(),
        results
    );

    // A damaged file is fetched again from the request it came from, unpaid.
    let victim = out.join("images/a_s2_0.jpg");
    std::fs::write(&victim, b"damaged").unwrap();
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().submit_calls, calls);
    assert_files_are_what_was_served(&out, &sim.ledger());

    // Damage that keeps the size and the time escapes the quick check, not --verify.
    let written = std::fs::metadata(&victim).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&victim).unwrap();
    f.set_modified(written).unwrap();
    drop(f);
    let downloads = sim.ledger().download_calls;
    run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(
        sim.ledger().download_calls,
        downloads,
        "not read, not fetched"
    );
    let o = run(&m, &out, &sim.url(), &["--verify"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        sim.ledger().download_calls,
        downloads + 1,
        "found and fetched again"
    );
    assert_files_are_what_was_served(&out, &sim.ledger());
    assert_eq!(sim.ledger().submit_calls, calls);

    // An edited manifest runs only its new rows.
    write(dir.path(), "m.yaml", "defaults: {image_size: {width: 32, height: 32}}\nseeds: [1, 2, 3]\njobs: [{id: new, prompt: dog}, {id: a, prompt: cat}]\n");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(sim.ledger().accepted, 11);
    assert_never_paid_twice(&sim.ledger());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_rows_are_exit_1_and_retried_only_when_asked() {
    let sim = start(SimConfig {
        failed_rate: 1.0,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // The gateway refuses more than 1000 steps: a 400, the row's own fault.
    let m = write(dir.path(), "m.yaml", "defaults: {image_size: {width: 32, height: 32}}\njobs: [{id: a, prompt: cat, seed: 1}, {id: big, prompt: dog, seed: 2, num_inference_steps: 5000}]\n");
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let rows = results(&out);
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["error_code"].as_str()),
        ("failed", "FAILED")
    );
    assert_eq!(rows[0]["possibly_charged_usd"], "0.050000");
    assert_eq!(
        (rows[1]["status"].as_str(), rows[1]["error_code"].as_str()),
        ("failed", "INVALID_PARAMETER")
    );
    assert_eq!(rows[1]["possibly_charged_usd"], "", "a 400 costs nothing");
    assert!(
        text(&o.stderr).contains("error: row a_s1: FAILED"),
        "errors name the row: {}",
        text(&o.stderr)
    );
    assert_eq!(summary(&out)["failures_by_code"]["FAILED"], 1);

    // The same gateway, healed.
    sim.set_config(quick());
    let calls = sim.ledger().submit_calls;
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        sim.ledger().submit_calls,
        calls,
        "final verdicts wait for --retry-failed"
    );
    let o = run(&m, &out, &sim.url(), &["--retry-failed"]).await;
    assert_eq!(o.status.code(), Some(1), "the 400 fails again");
    assert_eq!(results(&out)[0]["status"], "completed");
    assert_eq!(results(&out)[0]["attempts"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_and_never_paid_twice() {
    let sim = start(SimConfig {
        submit_5xx_rate: 0.4,
        status_5xx_rate: 0.3,
        download_5xx_rate: 0.3,
        truncate_rate: 0.3,
        error_rate: 0.3,
        rate_limit: Some(4),
        retry_after_secs: 1,
        fault_seed: 11,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", "defaults: {image_size: {width: 32, height: 32}, output_format: png}\nseeds: {from: 1, count: 12}\njobs: [{id: a, prompt: cat}]\n");
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let ledger = sim.ledger();
    for fault in ["submit_5xx", "status_5xx", "download_5xx", "truncated"] {
        assert!(
            ledger.faults.get(fault).copied().unwrap_or(0) > 0,
            "no {fault}: {:?}",
            ledger.faults
        );
    }
    assert!(ledger.errored > 0, "some requests ended ERROR");
    assert!(
        ledger
            .rejected
            .get("RATE_LIMIT_EXCEEDED")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        ledger.rejected
    );
    assert_never_paid_twice(&ledger);
    assert_eq!(
        ledger.charged_usd_micros,
        12 * 50_000,
        "ERROR resubmits are not charged"
    );
    assert_files_are_what_was_served(&out, &ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_aborts_with_exit_3_and_leaks_nowhere() {
    let sim = start(SimConfig {
        key: Some("the-right-key".into()),
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "m.yaml",
        "seeds: [1, 2, 3]\njobs: [{id: a, prompt: cat}]\n",
    );
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &["--concurrency", "1"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().accepted, 0);
    assert_eq!(
        sim.ledger().submit_calls,
        1,
        "nothing is sent after the first 401"
    );
    let rows = results(&out);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "not_run" && r["error_code"] == "UNAUTHORIZED"),
        "{rows:#?}"
    );
    assert_no_secret(&out, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_appears_in_no_output_of_a_good_run() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", "defaults: {image_size: {width: 32, height: 32}}\njobs: [{id: a, prompt: cat, seeds: [1, 2]}]\n");
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_no_secret(&out, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_wallet_aborts_and_keeps_what_was_made() {
    let sim = start(SimConfig {
        wallet_usd: Some(0.10),
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 5);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &["--concurrency", "1"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let s = summary(&out);
    assert_eq!(s["rows_by_status"]["completed"], 2);
    assert_eq!(s["rows_by_status"]["not_run"], 3);
    assert_eq!(s["cost_usd"], 0.1);
    assert!(s["stopped"]
        .as_str()
        .unwrap()
        .contains("INSUFFICIENT_FUNDS"));
    assert_eq!(results(&out)[4]["error_code"], "INSUFFICIENT_FUNDS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_cap_what_a_run_newly_spends() {
    let sim = start(SimConfig {
        failed_rate: 1.0,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", "defaults: {image_size: {width: 32, height: 32}}\nseeds: [1, 2]\njobs: [{id: a, prompt: cat}]\n");
    let out = dir.path().join("out");
    // The plan costs $0.10: refused before anything is sent.
    let o = run(&m, &out, &sim.url(), &["--max-cost", "0.09"]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr)
            .contains("this run would newly spend up to $0.10, above the budget of $0.09"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(sim.ledger().submit_calls, 0);
    // Both rows fail, possibly charged: $0.10 may be gone.
    assert_eq!(run(&m, &out, &sim.url(), &[]).await.status.code(), Some(1));
    assert_eq!(summary(&out)["possibly_charged_usd"], 0.1);
    // Retrying both would newly spend $0.10: refused under $0.05, run under $0.10.
    sim.set_config(quick());
    let o = run(
        &m,
        &out,
        &sim.url(),
        &["--retry-failed", "--max-cost", "0.05"],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().accepted, 2, "nothing more was sent");
    let o = run(
        &m,
        &out,
        &sim.url(),
        &["--retry-failed", "--max-cost", "0.10"],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    // A nightly manifest grows past its budget: only its new rows count.
    write(dir.path(), "m.yaml", "budget_usd: 0.10\ndefaults: {image_size: {width: 32, height: 32}}\nseeds: [1, 2, 3]\njobs: [{id: a, prompt: cat}]\n");
    let o = run_loud(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains(
            "batchgen: 3 rows (2 finished earlier, $0.10 spent, $0.10 possibly charged); 1 to submit, $0.05 at most"
        ),
        "the plan line shows spent and to-spend apart: {stderr}"
    );
    assert_eq!(sim.ledger().accepted, 5);
    assert_eq!(
        summary(&out)["cost_usd"],
        0.15,
        "money spent in the folder is never hidden"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_never_exceeded() {
    let sim = start(latency(100, 300)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 16);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &["--concurrency", "3"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let ledger = sim.ledger();
    assert_eq!(ledger.completed, 16);
    assert!(
        ledger.max_in_flight <= 3,
        "{} requests were in flight at once",
        ledger.max_in_flight
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_stay_inside_the_output_folder() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "m.yaml",
        "defaults: {image_size: {width: 32, height: 32}}\njobs:\n  - {id: \"../../escape\", prompt: a, seed: 1}\n  - {id: /etc/passwd, prompt: b, seed: 1}\n  - {id: \"..\\\\..\\\\win\", prompt: c, seed: 1}\n",
    );
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let mut names: Vec<String> = std::fs::read_dir(out.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "escape_s1_0.jpg",
            "escape_s1_0.json",
            "etc-passwd_s1_0.jpg",
            "etc-passwd_s1_0.json",
            "win_s1_0.jpg",
            "win_s1_0.json"
        ]
    );
    let mut top: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["m.yaml", "out"],
        "nothing was written beside the output folder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_sends_nothing() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.yaml",
        "jobs: [{prompt: cat, num_images: 0}]\n",
    );
    let o = run(&bad, &dir.path().join("out"), &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("num_images: expected a positive integer"));
    let good = write(dir.path(), "good.yaml", "jobs: [{prompt: cat}]\n");
    let mut cmd = command(&good, &dir.path().join("out"), &sim.url(), &[]);
    cmd.env_remove("PIXAZO_API_KEY");
    let o = output(cmd).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("no API key: set PIXAZO_API_KEY or pass --api-key-file"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(sim.ledger().submit_calls, 0);

    let key_file = write(dir.path(), "key.txt", &format!("{KEY}\n"));
    let mut cmd = command(
        &good,
        &dir.path().join("out"),
        &sim.url(),
        &["--api-key-file", key_file.to_str().unwrap()],
    );
    cmd.env_remove("PIXAZO_API_KEY");
    let o = output(cmd).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "the key file works: {}",
        text(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_summarises_a_run_from_its_journal() {
    let sim = start(SimConfig {
        failed_rate: 0.5,
        fault_seed: 3,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 6);
    let out = dir.path().join("out");
    run(&m, &out, &sim.url(), &[]).await;
    let s = summary(&out);
    let o = Command::new(env!("CARGO_BIN_EXE_batchgen"))
        .args(["status", "--json"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rows"], 6);
    assert_eq!(v["completed"], s["rows_by_status"]["completed"]);
    assert_eq!(v["failed"], s["rows_by_status"]["failed"]);
    assert_eq!(v["cost_usd"], s["cost_usd"]);
    let o = Command::new(env!("CARGO_BIN_EXE_batchgen"))
        .args(["status"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "no journal there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_resume_pays_nothing_twice() {
    let sim = start(latency(300, 900)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 24);
    let out = dir.path().join("out");
    let cmd = command(
        &m,
        &out,
        &sim.url(),
        &["--concurrency", "6", "--rate", "20"],
    );
    signal_when_submitted(cmd, &out, 6, &["-KILL"]).await;
    let at_kill = sim.ledger();
    assert!(at_kill.completed < 24, "the kill came mid-run");
    assert_eq!(
        results(&out).len(),
        24,
        "results.csv is there from the start"
    );
    // Say the kill tore the journal's last line inside a character.
    let journal = out.join("journal.jsonl");
    let mut torn = std::fs::read(&journal).unwrap();
    let line = "{\"e\":\"failed\",\"key\":\"x\",\"message\":\"é".as_bytes();
    torn.extend_from_slice(&line[..line.len() - 1]);
    std::fs::write(&journal, &torn).unwrap();
    assert!(std::str::from_utf8(&torn).is_err());
    let o = Command::new(env!("CARGO_BIN_EXE_batchgen"))
        .args(["status"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    let o = run(&m, &out, &sim.url(), &[]).await;
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "{}",
        text(&o.stderr)
    );
    let ledger = sim.ledger();
    assert_never_paid_twice(&ledger);
    assert_files_are_what_was_served(&out, &ledger);
    // Every row is complete, or (if the kill fell between a submit and its
    // answer) failed as uncertain rather than paid for again.
    let rows = results(&out);
    for r in &rows {
        assert!(
            r["status"] == "completed" || r["error_code"] == "SUBMIT_UNCERTAIN",
            "{r:?}"
        );
    }
    let completed = rows.iter().filter(|r| r["status"] == "completed").count();
    let uncertain = rows.len() - completed;
    assert_eq!(rows.len(), 24);
    assert!(
        ledger.accepted <= 24,
        "a row was accepted twice: {}",
        ledger.accepted
    );
    assert!(ledger.accepted as usize >= completed);
    assert!(
        uncertain <= 6,
        "at most the rows in flight at the kill are uncertain"
    );
    let repaired = std::fs::read_to_string(&journal).expect("the journal is whole UTF-8 again");
    assert!(repaired.ends_with('\n'));
    // The user may accept that risk explicitly.
    let o = run(&m, &out, &sim.url(), &["--retry-failed"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(results(&out).iter().all(|r| r["status"] == "completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_submitting_finishes_in_flight_and_exits_130() {
    assert_one_signal_drains("-INT", 130, "INTERRUPTED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_accepted_long_ago_is_collected_not_paid_again() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    // A run submitted this row two hours ago, recorded the id, then died.
    let long_ago = batchgen::journal::now_ms() - 2 * 3600 * 1000;
    let (m, out) = accepted_earlier(&sim, dir.path(), long_ago, |_| {}).await;

    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().submit_calls, 1, "polled, not submitted again");
    let rows = results(&out);
    assert_eq!(rows[0]["status"], "completed");
    assert_eq!(rows[0]["attempts"], "1");
    assert_files_are_what_was_served(&out, &sim.ledger());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_twice_exits_at_once_with_the_journal_intact() {
    assert_two_signals_quit("-INT", 130).await;
}
