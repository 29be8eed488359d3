//! First contact: `--quiet`, `run --dry-run`, shell completions, `-v`
//! tracing of HTTP exchanges, TLS trust, and errors about files.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_failures_still_print() {
    let sim = start(batchgen::sim::SimConfig {
        failed_rate: 1.0,
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let o = run(&m, &dir.path().join("out"), &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("error: row a_s1: FAILED"), "{err}");
    assert!(
        text(&o.stdout).contains("2 rows: 0 completed, 2 failed"),
        "{}",
        text(&o.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_is_plan_and_sends_nothing() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &["--dry-run"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let plan = batchgen(&["plan", m.to_str().unwrap()], dir.path()).await;
    assert_eq!(text(&o.stdout), text(&plan.stdout));
    assert!(
        text(&o.stdout).contains("requests  3 text_to_image"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(sim.ledger().accepted, 0);
    assert!(!out.exists(), "a dry run makes no folder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_for_every_shell_name_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = batchgen(&["completions", shell], dir.path()).await;
        assert_eq!(o.status.code(), Some(0), "{shell}");
        let script = text(&o.stdout);
        for word in ["report", "export", "dry-run", "shard-size"] {
            assert!(script.contains(word), "{shell}: {word}");
        }
    }
    let o = batchgen(&["completions", "tcsh"], dir.path()).await;
    assert_eq!(o.status.code(), Some(2));
}
