//! Output locations are URLs: a scheme batchgen does not know is refused
//! before anything is sent (exit 2), a bucket that cannot be opened or
//! reached sends nothing either, and neither ever becomes a local folder
//! named after its scheme (before issue 25, `--out s3://my-bucket/nightly`
//! exited 0 and wrote `./s3:/my-bucket/nightly/`). Local folders, `file://`
//! ones included, work as they always did. Runs that reach a bucket are in
//! `store_run.rs`, against moto.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// Every entry under `dir`, recursively, as paths relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `batchgen ARGS` in `cwd`, with a clean environment.
fn batchgen(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchgen"));
    cmd.current_dir(cwd)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PIXAZO_API_KEY", KEY);
    cmd
}

/// Settings that keep every store call on loopback, where nothing listens,
/// or fail before any call: no test may reach a cloud or a metadata server.
const NOWHERE: &[(&str, &str)] = &[
    ("AWS_ENDPOINT_URL", "http://127.0.0.2:9"),
    ("AWS_ALLOW_HTTP", "true"),
    ("AWS_ACCESS_KEY_ID", "AKIDNOWHERE"),
    ("AWS_SECRET_ACCESS_KEY", "sEcReT-nowhere-4711"),
    ("AWS_REGION", "us-east-1"),
    ("GOOGLE_SERVICE_ACCOUNT", "/nonexistent/batchgen-test.json"),
    ("BATCHGEN_STORE_RETRY_SECS", "1"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_to_an_unusable_bucket_or_an_unknown_scheme_sends_nothing() {
    let sim = start(quick()).await;
    for (out, says, code) in [
        (
            "s3://my-bucket/nightly",
            "cannot list s3://my-bucket/nightly",
            3,
        ),
        (
            "gs://my-bucket/nightly/",
            "cannot open gs://my-bucket/nightly",
            2,
        ),
        ("azure://container/x", "cannot open az://container/x", 2),
        ("foo://x", "`foo://`", 2),
        ("s3:my-bucket/nightly", "mistyped", 2),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let m = seed_sweep(dir.path(), 3);
        let cwd = dir.path().join("cwd");
        std::fs::create_dir(&cwd).unwrap();
        let mut cmd = command(&m, Path::new(out), &sim.url(), &[]);
        cmd.current_dir(&cwd).envs(NOWHERE.iter().copied());
        let o = output(cmd).await;
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{out}: {err}");
        assert!(err.contains(says), "{out}: {err}");
        if !out.contains("://") || out.starts_with("foo") {
            assert!(err.contains("--out"), "{out}: {err}");
        }
        assert!(
            !err.contains("sEcReT") && !err.contains("AKIDNOWHERE"),
            "{out}: no credentials in messages: {err}"
        );
        if out == "foo://x" {
            assert!(err.contains("s3://") && err.contains("gs://"), "{err}");
        }
        assert_eq!(tree(&cwd), Vec::<String>::new(), "{out}: wrote locally");
        // Nor beside the manifest (a run's paths are relative to it).
        let beside = tree(dir.path());
        assert!(
            !beside.iter().any(|p| p.contains(':')),
            "{out}: made {beside:?}"
        );
    }
    let ledger = sim.ledger();
    assert_eq!(ledger.submit_calls, 0, "{ledger:?}");
    assert_eq!(ledger.status_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_bucket_cache_from_the_flag_or_the_manifest_sends_nothing() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let out = dir.path().join("out");
    // In the temporary folder: a regression would make `./s3:/b/cache` there.
    let mut cmd = command(&m, &out, &sim.url(), &["--cache", "s3://b/cache"]);
    cmd.current_dir(dir.path()).envs(NOWHERE.iter().copied());
    let o = output(cmd).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("s3://b/cache"), "{err}");
    assert!(!err.contains("sEcReT"), "{err}");
    assert!(!dir.path().join("s3:").exists());
    let mut cmd = command(&m, &out, &sim.url(), &["--cache", "s4://b/cache"]);
    cmd.current_dir(dir.path());
    let o = output(cmd).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--cache") && err.contains("`s4://`"), "{err}");

    let m = write(
        dir.path(),
        "c.yaml",
        "cache: gs://b/cache\ndefaults: {image_size: {width: 32, height: 32}}\njobs: [{id: a, prompt: cat, seed: 1}]\n",
    );
    let mut cmd = command(&m, &out, &sim.url(), &[]);
    cmd.current_dir(dir.path()).envs(NOWHERE.iter().copied());
    let o = output(cmd).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("gs://b/cache"), "{err}");
    assert!(!dir.path().join("gs:").exists());
    assert_eq!(sim.ledger().submit_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_url_is_the_local_folder() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let out = dir.path().join("out");
    let url = format!("file://{}", out.display());
    let mut cmd = command(&m, Path::new(&url), &sim.url(), &[]);
    cmd.current_dir(dir.path());
    let o = output(cmd).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(results(&out).len(), 2);
    assert_eq!(sim.ledger().accepted, 2);
    // A colon without `//` is a plain folder name, as always.
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let mut cmd = command(&m, Path::new("out:2024"), &sim.url(), &[]);
    cmd.current_dir(&cwd);
    let o = output(cmd).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(cwd.join("out:2024/results.csv").is_file());
}

/// `status`, `report`, `export` and `merge` read and write buckets
/// (`tests/bucket_readers_cli.rs`, against moto); a scheme batchgen does not
/// know, and a merge of folders into a bucket or of prefixes into a folder,
/// are still refused (exit 2) before anything is read or written.
#[test]
fn status_report_export_and_merge_refuse_unknown_schemes_and_mixed_places() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir(&local).unwrap();
    let local = local.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["status", "foo://b/p"],
        vec!["report", "s3:b/p"],
        vec![
            "export",
            "gopher://c/p",
            "--format",
            "jsonl",
            "--out",
            "x.jsonl",
        ],
        vec![
            "export",
            local,
            "--format",
            "webdataset",
            "--out",
            "bar://b",
        ],
        vec!["merge", "s3://b/shards/0-of-2", local, "--out", "merged"],
        vec!["merge", local, local, "--out", "gs://b/merged"],
        vec!["merge", local, "--out", "bar://x"],
    ];
    for args in cases {
        let o = batchgen(dir.path(), &args).output().unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        let url = args
            .iter()
            .find(|a| a.contains(':') && *a != &local)
            .unwrap();
        let scheme = url.split(':').next().unwrap();
        if ["s3", "gs"].contains(&scheme) && url.contains("://") {
            assert!(err.contains(url), "{args:?}: {err}");
            assert!(
                err.contains("must all be local folders, or all prefixes of one bucket"),
                "{args:?}: {err}"
            );
        } else if url.contains("://") {
            assert!(err.contains(&format!("`{scheme}://`")), "{args:?}: {err}");
        } else {
            assert!(err.contains("mistyped"), "{args:?}: {err}");
        }
        assert!(
            !dir.path().join(format!("{scheme}:")).exists(),
            "{args:?} made a local folder"
        );
        assert!(!dir.path().join("merged").exists() && !dir.path().join("x.jsonl").exists());
    }
}

/// `--dry-run` sends nothing and opens no store: to a bucket it prints the
/// plan; to a scheme the run would refuse it says so, as the run would.
#[test]
fn a_dry_run_to_a_bucket_plans_and_an_unknown_scheme_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let m = m.to_str().unwrap();
    for (out, code) in [("s3://b/p", 0), ("foo://x", 2)] {
        let o = batchgen(dir.path(), &["run", m, "--dry-run", "--out", out])
            .output()
            .unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{out}: {err}");
        if code == 0 {
            assert!(
                text(&o.stdout).contains("requests  3"),
                "{}",
                text(&o.stdout)
            );
            continue;
        }
        assert!(err.contains("--out"), "{out}: {err}");
        let made = tree(dir.path());
        assert!(
            !made.iter().any(|p| p.contains(':')),
            "{out}: made {made:?}"
        );
    }
}
