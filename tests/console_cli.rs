//! A run whose own output cannot be written (a reader that went away, a
//! full disk under a redirected log) loses nothing: every accepted request
//! is journaled and collected, nothing is paid twice, and summary.json says
//! once that the log stopped. The writes fail from the first one (a pipe
//! whose reader is gone before the command starts, /dev/full), so no
//! outcome depends on timing.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

/// Runs `cmd` with stdout and stderr going where `sink` says; returns its exit code.
async fn run_into(mut cmd: Command, sink: fn() -> Stdio) -> Option<i32> {
    tokio::task::spawn_blocking(move || cmd.stdout(sink()).stderr(sink()).status().unwrap().code())
        .await
        .unwrap()
}

/// A pipe whose reader went away (as `| head` does) before the command
/// started: its every write fails.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

/// Every row completed and was paid once, and the run noted that its log stopped.
fn assert_nothing_lost(out: &Path, rows: usize, sim: &batchgen::sim::SimHandle) {
    let results = results(out);
    assert_eq!(results.len(), rows);
    assert!(results.iter().all(|r| r["status"] == "completed"));
    let ledger = sim.ledger();
    assert_eq!(ledger.accepted, rows as u64);
    assert_never_paid_twice(&ledger);
    assert_files_are_what_was_served(out, &ledger);
    let noted = summary(out)["logging_stopped"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(noted.starts_with("stderr could not be written"), "{noted}");
}

fn dev_full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    )
}

#[tokio::test]
async fn a_verbose_run_into_a_full_disk_loses_no_paid_request() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let manifest = seed_sweep(dir.path(), 40);
    let mut cmd = loud_command(&manifest, &out, &sim.url(), &["--concurrency", "8"]);
    cmd.arg("-vv");
    let code = run_into(cmd, dev_full).await;
    assert_eq!(code, Some(0));
    assert_nothing_lost(&out, 40, &sim);
}

#[tokio::test]
async fn a_verbose_run_whose_reader_went_away_loses_no_paid_request() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let manifest = seed_sweep(dir.path(), 40);
    let mut cmd = loud_command(&manifest, &out, &sim.url(), &["--concurrency", "8"]);
    cmd.arg("-v");
    let code = run_into(cmd, closed_pipe).await;
    assert_eq!(code, Some(0));
    assert_nothing_lost(&out, 40, &sim);
    // A rerun finds every row done and pays for nothing.
    let o = run(&manifest, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().accepted, 40);
}

#[tokio::test]
async fn commands_printing_to_a_closed_pipe_end_quietly_with_their_own_code() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = seed_sweep(dir.path(), 3);
    for args in [
        vec!["plan".to_string(), manifest.display().to_string()],
        vec!["--help".to_string()],
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchgen"));
        cmd.args(&args);
        let code = run_into(cmd, closed_pipe).await;
        assert_eq!(code, Some(0), "{args:?}");
    }
    // An invalid manifest keeps its exit code when stderr is gone.
    let bad = write(dir.path(), "bad.yaml", "jobs: [{id: a}]\n");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchgen"));
    cmd.arg("plan").arg(&bad);
    assert_eq!(run_into(cmd, dev_full).await, Some(2));
}
