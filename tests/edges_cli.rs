//! Trust at the edges, through the real binary: the key under redirects and
//! replayed journals, a folder bound to its gateway, submits whose fate is
//! unknown, bounded reads, local disk failures, unreachable gateways,
//! signals, and totals that agree everywhere.

mod support;

use std::path::Path;
use std::process::Command;

use batchgen::sim::{SimConfig, SubmitShape};
use support::*;

fn rows_with(out: &Path, status: &str) -> usize {
    results(out)
        .iter()
        .filter(|r| r["status"] == status)
        .count()
}

/// The recorder saw no request at all, and so never the key.
fn assert_untouched(elsewhere: &Recorder) {
    let got = elsewhere.requests();
    assert!(
        got.is_empty(),
        "{} request(s) went elsewhere, key headers: {:?}",
        got.len(),
        got.iter()
            .map(|r| r.header("ocp-apim-subscription-key").map(str::to_string))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_submit_is_never_followed() {
    let elsewhere = Recorder::ok().await;
    let sim = start(SimConfig {
        submit_redirect_rate: 1.0,
        redirect_to: format!("{}/steal", elsewhere.url),
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &["--concurrency", "1"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("REDIRECTED"),
        "{}",
        text(&o.stderr)
    );
    assert_untouched(&elsewhere);
    assert_eq!(sim.ledger().accepted, 0);
    assert_eq!(
        sim.ledger().submit_calls,
        1,
        "the first redirect stops the run"
    );
    assert!(results(&out)
        .iter()
        .all(|r| r["status"] == "not_run" && r["error_code"] == "REDIRECTED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_status_call_leaves_the_row_collectable() {
    let elsewhere = Recorder::ok().await;
    let sim = start(SimConfig {
        status_redirect_rate: 1.0,
        redirect_to: format!("{}/steal", elsewhere.url),
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert_untouched(&elsewhere);
    let accepted: Vec<_> = results(&out)
        .into_iter()
        .filter(|r| r["status"] == "accepted")
        .collect();
    assert!(!accepted.is_empty());
    for r in &accepted {
        assert_eq!(r["error_code"], "REDIRECTED");
        assert!(r["request_id"].starts_with("glm-image_"), "{r:?}");
    }
    // The gateway mends; a plain rerun collects, paying for nothing twice.
    sim.set_config(quick());
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(rows_with(&out, "completed"), 3);
    assert_never_paid_twice(&sim.ledger());
    assert_eq!(sim.ledger().accepted, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_cannot_send_the_key_elsewhere() {
    let elsewhere = Recorder::ok().await;
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    // A journal whose ticket points its status and result URLs elsewhere.
    let now = batchgen::journal::now_ms();
    let (m, out) = accepted_earlier(&sim, dir.path(), now, |ticket| {
        ticket.status_url = Some(format!("{}/v2/requests/status/x", elsewhere.url));
        ticket.response_url = Some(format!("{}/result", elsewhere.url));
    })
    .await;
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_untouched(&elsewhere);
    assert_eq!(
        rows_with(&out, "completed"),
        1,
        "polled at the documented endpoint"
    );
    assert_eq!(sim.ledger().submit_calls, 1, "and not paid for again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_belongs_to_one_gateway() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "quick.yaml",
        "name: quick\ndefaults: {image_size: {width: 32, height: 32}}\njobs: [{id: a, prompt: cat, seed: 1}]\n",
    );
    // The README's first command, then the same with a key and no --simulate.
    let o = batchgen(&["run", "quick.yaml", "--simulate", "--quiet"], dir.path()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let sim_out = dir.path().join("out/quick-sim");
    assert!(
        sim_out.join("results.csv").is_file(),
        "--simulate writes to out/NAME-sim"
    );
    assert_eq!(summary(&sim_out)["gateway"], "simulated");
    let url = sim.url();
    let o = run(&dir.path().join("quick.yaml"), &sim_out, &url, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "was made against the built-in simulator (--simulate), not the gateway at {url}"
        )),
        "{err}"
    );
    assert!(
        err.contains("placeholders") && err.contains("--out"),
        "{err}"
    );
    assert_eq!(sim.ledger().submit_calls, 0, "nothing was sent");
    // And the other way round: a real gateway's folder refuses the simulator.
    let real_out = dir.path().join("real");
    let o = run(&dir.path().join("quick.yaml"), &real_out, &url, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let real = real_out.to_str().unwrap();
    let o = batchgen(
        &["run", "quick.yaml", "--simulate", "--out", real],
        dir.path(),
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(&format!("was made against the gateway at {url}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_502_after_the_gateway_charged_is_never_resent_and_always_reported() {
    let sim = start(SimConfig {
        submit_502_rate: 1.0,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 20);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let ledger = sim.ledger();
    assert_eq!(ledger.submit_calls, 20, "each row was sent once");
    assert_eq!(ledger.charged_usd_micros, 1_000_000);
    let s = summary(&out);
    assert_eq!(s["possibly_charged_usd"], 1.0, "every charge is reported");
    assert_eq!(s["uncertain"], 20);
    for r in results(&out) {
        assert_eq!(r["error_code"], "SUBMIT_UNCERTAIN");
        let m = &r["error_message"];
        assert!(
            m.starts_with("HTTP_502 (HTTP 502): text/html reply of"),
            "{m}"
        );
        assert!(
            !m.contains('<') && !m.contains('\n'),
            "one line, no markup: {m}"
        );
    }
    // A plain rerun of the mended gateway sends nothing: the user decides.
    sim.set_config(quick());
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(sim.ledger().submit_calls, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_that_hangs_is_uncertain_after_the_submit_timeout() {
    let sim = start(SimConfig {
        failed_rate: 1.0,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let out = dir.path().join("out");
    assert_eq!(run(&m, &out, &sim.url(), &[]).await.status.code(), Some(1));
    let old_ids: Vec<String> = results(&out)
        .into_iter()
        .map(|r| r["request_id"].clone())
        .collect();
    assert!(old_ids.iter().all(|id| !id.is_empty()));
    // Retried into a gateway that takes the money and never answers.
    sim.set_config(SimConfig {
        submit_hang_rate: 1.0,
        ..quick()
    });
    let o = run(
        &m,
        &out,
        &sim.url(),
        &["--retry-failed", "--submit-timeout", "1"],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().faults["submit_hang"], 2);
    for r in results(&out) {
        assert_eq!(r["error_code"], "SUBMIT_UNCERTAIN", "{r:?}");
        assert_eq!(
            r["request_id"], "",
            "a new submit forgets the old request id"
        );
    }
    let s = summary(&out);
    assert_eq!(s["possibly_charged_usd"], 0.2, "both attempts of both rows");
    assert_eq!(sim.ledger().charged_usd_micros, 200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_without_images_is_polled_and_extra_images_are_not_paid() {
    let sim = start(SimConfig {
        submit_shape: SubmitShape::CompletedId,
        extra_images: 2,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(sim.ledger().status_calls >= 2, "its result was polled for");
    for r in results(&out) {
        assert_eq!(r["files"].split(';').count(), 1, "{r:?}");
    }
    let s = summary(&out);
    assert_eq!(
        (s["images"].as_u64(), s["cost_usd"].as_f64()),
        (Some(2), Some(0.1))
    );
    assert!(
        text(&o.stderr).contains("the gateway sent 3 images for a request of 1"),
        "{}",
        text(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_status_replies_leave_rows_collectable() {
    let sim = start(SimConfig {
        oversized_rate: 1.0,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    for r in results(&out) {
        assert_eq!(
            (r["status"].as_str(), r["error_code"].as_str()),
            ("accepted", "REPLY_TOO_LARGE")
        );
        assert!(
            r["error_message"].contains("6 status calls in a row failed"),
            "{r:?}"
        );
        assert!(!r["request_id"].is_empty());
    }
    assert_eq!(summary(&out)["possibly_charged_usd"], 0.15);
    sim.set_config(quick());
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        sim.ledger().submit_calls,
        3,
        "collected, not paid for again"
    );
}

/// On tokio's paused clock, with the run in the test process: the folder
/// goes once two requests are accepted, before any can finish (300 ms on
/// the run's clock, which no load can stretch), so how much is spent after
/// it is the run's doing alone. The rerun, through the binary, asserts only
/// what no timing changes.
#[tokio::test(start_paused = true)]
async fn a_deleted_images_folder_stops_spending_and_a_plain_rerun_collects() {
    let sim = start(latency(300, 600)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 30);
    let out = dir.path().join("out");
    let (m2, out2, url) = (m.clone(), out.clone(), sim.url());
    let first = tokio::spawn(async move {
        run_in_process(&m2, &out2, &url, |s| {
            s.concurrency = 4;
            s.rate_per_sec = Some(20.0);
            s.poll_interval = Some(std::time::Duration::from_millis(40));
        })
        .await
    });
    // Looked at every 5 ms of the paused clock: the run moves only between looks.
    while std::fs::read_to_string(out.join("journal.jsonl"))
        .map_or(0, |t| t.matches("\"e\":\"submitted\"").count())
        < 2
    {
        assert!(
            !first.is_finished(),
            "the run ended before two were accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(sim.ledger().completed, 0, "nothing finished yet");
    std::fs::remove_dir_all(out.join("images")).unwrap();
    let report = first.await.unwrap();
    assert_eq!(batchgen::exit::for_run(&report), 3);
    let stop = report.stop.expect("the run stopped");
    assert!(
        stop.describe().contains("cannot write the output"),
        "{}",
        stop.describe()
    );
    let accepted = sim.ledger().accepted;
    assert!(
        accepted <= 12,
        "spending stopped: {accepted} of 30 rows were paid for"
    );
    let rows = results(&out);
    assert!(rows.iter().all(|r| r["status"] != "failed"), "{rows:#?}");
    assert!(rows_with(&out, "accepted") > 0);
    // The binary keeps real time: so does the simulator from here on.
    tokio::time::resume();
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(rows_with(&out, "completed"), 30);
    let ledger = sim.ledger();
    assert_never_paid_twice(&ledger);
    assert_eq!(ledger.accepted, 30);
    assert_files_are_what_was_served(&out, &ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_refuses_every_connection_stops_the_run() {
    let addr = refusing_addr();
    let url = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 48);
    let out = dir.path().join("out");
    // The limit is a knob: the test does not wait out the default 30 s.
    let o = run(&m, &out, &url, &["--unreachable-after", "1"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!("gateway unreachable at {url}")),
        "{}",
        text(&o.stderr)
    );
    let rows = results(&out);
    for r in &rows {
        assert!(
            r["error_code"] == "GATEWAY_UNREACHABLE" || r["error_code"] == "CONNECTION_FAILED",
            "{r:?}"
        );
    }
    // The gateway comes back at the same address: a plain rerun submits them all.
    let sim = batchgen::sim::start(quick(), addr).await.unwrap();
    let o = run(&m, &out, &url, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(rows_with(&out, "completed"), 48);
    assert_eq!(sim.ledger().accepted, 48);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_temporary_files_are_removed_and_outputs_honour_the_umask() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("images")).unwrap();
    std::fs::write(out.join("images/.part-killed"), b"half").unwrap();
    std::fs::write(out.join(".tmp-killed"), b"half").unwrap();
    let inner = command(&m, &out, &sim.url(), &[]);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args())
        .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    let o = output(cmd).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!out.join("images/.part-killed").exists());
    assert!(!out.join(".tmp-killed").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut files = vec![
            out.join("results.csv"),
            out.join("summary.json"),
            out.join("journal.jsonl"),
        ];
        files.extend(
            std::fs::read_dir(out.join("images"))
                .unwrap()
                .map(|e| e.unwrap().path()),
        );
        // Two images, each with its provenance sidecar.
        assert_eq!(files.len(), 7);
        for f in files {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644, "{}", f.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_like_ctrl_c() {
    assert_one_signal_drains("-TERM", 143, "TERMINATED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_quits_at_once() {
    assert_two_signals_quit("-TERM", 143).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_drains_like_ctrl_c() {
    assert_one_signal_drains("-HUP", 129, "HANGUP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_status_and_summary_count_the_same_rows() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    assert_eq!(run(&m, &out, &sim.url(), &[]).await.status.code(), Some(0));
    // The manifest changes: new rows, some failing, some uncertain.
    sim.set_config(SimConfig {
        failed_rate: 0.4,
        submit_502_rate: 0.3,
        fault_seed: 1,
        ..quick()
    });
    let m = write(
        dir.path(),
        "m.yaml",
        "defaults: {image_size: {width: 32, height: 32}}\nseeds: {from: 1, count: 8}\njobs: [{id: b, prompt: dog}]\n",
    );
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let s = summary(&out);
    assert!(
        s["uncertain"].as_u64().unwrap() > 0
            && s["rows_by_status"]["failed"].as_u64().unwrap() > s["uncertain"].as_u64().unwrap(),
        "{s:#}"
    );
    assert_eq!(s["not_in_manifest"]["rows"], 3);
    assert_eq!(s["not_in_manifest"]["cost_usd"], 0.15);
    let o = batchgen(&["status", "--json", out.to_str().unwrap()], dir.path()).await;
    assert_eq!(o.status.code(), Some(0));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for field in [
        "rows",
        "rows_by_status",
        "images",
        "cost_usd",
        "possibly_charged_usd",
        "uncertain",
        "failures_by_code",
        "not_in_manifest",
    ] {
        assert_eq!(st[field], s[field], "{field}");
    }
    let csv = results(&out);
    assert_eq!(csv.len() as u64, st["rows"].as_u64().unwrap());
    let o = batchgen(&["status", out.to_str().unwrap()], dir.path()).await;
    let human = text(&o.stdout);
    assert!(
        human.contains(&format!("8 rows: {} completed", st["completed"])),
        "{human}"
    );
    assert!(human.contains("not in this manifest: 3 rows"), "{human}");
    assert!(text(&o.stdout).contains("uncertain"), "{human}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_rewritten_while_a_run_works() {
    // Row a_s1 completes; row a_s2's submit is taken and never answered
    // (for the hour of its submit timeout), so the run cannot end: only a
    // rewrite mid-run can show a_s1 completed. The rewrite's interval is a
    // knob: 1 s, not the default 30 s. The watch below ends when the rewrite
    // shows; its cap only bounds a failing test.
    let sim = start(SimConfig {
        submit_hang_rate: 0.5,
        fault_seed: 16,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let out = dir.path().join("out");
    let mut cmd = command(
        &m,
        &out,
        &sim.url(),
        &[
            "--concurrency",
            "1",
            "--results-every",
            "1",
            "--submit-timeout",
            "3600",
        ],
    );
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let watched = out.clone();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        let first_completed = || {
            std::fs::read_to_string(watched.join("results.csv"))
                .is_ok_and(|t| t.lines().nth(1).is_some_and(|l| l.contains(",completed,")))
        };
        for _ in 0..9000 {
            assert!(child.try_wait().unwrap().is_none(), "the run ended");
            if first_completed() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(first_completed(), "results.csv was never rewritten");
        child.kill().unwrap();
        child.wait().unwrap();
    })
    .await
    .unwrap();
    assert_eq!(sim.ledger().faults["submit_hang"], 1);
    let rows = results(&out);
    assert_eq!(rows[0]["status"], "completed", "a killed run leaves it");
}
