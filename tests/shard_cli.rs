//! Sharded runs: `--shard I/N` and `auto/N` split a plan by row key, each
//! shard in its own folder, and `batchgen merge` joins them into what one
//! run would have written.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use batchgen::plan::Shard;
use batchgen::sim::SimConfig;
use support::*;

const MANIFEST: &str = "defaults: {image_size: {width: 32, height: 32}}\njobs:\n  - {id: a, prompt: cat, seeds: {from: 1, count: 7}}\n  - {id: b, prompt: dog, seeds: [3, 9, 27]}\n  - {id: c, prompt: owl}\n";

fn keys(path: &Path, shard: Option<Shard>) -> BTreeSet<u64> {
    let mut plan = batchgen::plan::expand(&batchgen::manifest::load(path).unwrap()).unwrap();
    if let Some(s) = shard {
        plan.keep_shard(s);
    }
    plan.rows.iter().map(|r| r.key.0).collect()
}

#[test]
fn shards_split_the_plan_whole_and_stably() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", MANIFEST);
    let all = keys(&m, None);
    let shards: Vec<BTreeSet<u64>> = (0..3)
        .map(|index| keys(&m, Some(Shard { index, count: 3 })))
        .collect();
    let union: BTreeSet<u64> = shards.iter().flatten().copied().collect();
    assert_eq!(union, all, "every row is in a shard");
    assert_eq!(
        shards.iter().map(BTreeSet::len).sum::<usize>(),
        all.len(),
        "and in one only"
    );
    assert!(shards.iter().all(|s| !s.is_empty()), "{shards:?}");
    // Reordered and grown, the same rows stay in the same shards.
    let moved = write(
        dir.path(),
        "moved.yaml",
        "defaults: {image_size: {width: 32, height: 32}}\njobs:\n  - {id: new, prompt: fox, seeds: [1, 2]}\n  - {id: c, prompt: owl}\n  - {id: b, prompt: dog, seeds: [27, 3, 9]}\n  - {id: a, prompt: cat, seeds: {from: 1, count: 7}}\n",
    );
    for (index, before) in shards.iter().enumerate() {
        let after = keys(
            &moved,
            Some(Shard {
                index: index as u32,
                count: 3,
            }),
        );
        assert!(before.is_subset(&after), "shard {index}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_shards_are_what_one_run_writes() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", MANIFEST);
    let single = dir.path().join("single");
    assert_eq!(
        run(&m, &single, &sim.url(), &[]).await.status.code(),
        Some(0)
    );
    let merged = dir.path().join("merged");
    let mut folders = Vec::new();
    for i in 0..3 {
        let out = merged.join(format!("shards/{i}-of-3"));
        let shard = format!("{i}/3");
        let o = run(&m, &out, &sim.url(), &["--shard", &shard]).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        folders.push(out);
    }
    let mut args = vec!["merge".to_string()];
    args.extend(folders.iter().rev().map(|f| f.display().to_string()));
    args.extend(["--out".into(), merged.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = batchgen(&args, dir.path()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (one, joined) = (results(&single), results(&merged));
    assert_eq!(one.len(), joined.len());
    for (a, b) in one.iter().zip(&joined) {
        for col in [
            "row", "id", "key", "kind", "prompt", "seed", "status", "cost_usd", "sha256",
        ] {
            assert_eq!(a[col], b[col], "{col} of row {}", a["row"]);
        }
        for (f, sha) in b["files"].split(';').zip(b["sha256"].split(';')) {
            assert!(f.starts_with("shards/"), "{f}");
            assert_eq!(
                sha256_file(&merged.join(f)),
                sha,
                "{f} resolves from the merged folder"
            );
        }
    }
    let (s1, s2) = (summary(&single), summary(&merged));
    for field in [
        "rows",
        "rows_by_status",
        "images",
        "cost_usd",
        "possibly_charged_usd",
    ] {
        assert_eq!(s1[field], s2[field], "{field}");
    }
    assert_eq!(s2["shards"].as_array().unwrap().len(), 3);
    // As a run's summary.json says them: exit code, version, when.
    assert_eq!(
        (s2["exit_code"].as_u64(), &s2["version"]),
        (s1["exit_code"].as_u64(), &s1["version"])
    );
    assert!(s2["started_at"].as_str().unwrap() <= s2["finished_at"].as_str().unwrap());

    // The merged folder has a contact sheet and exports, its images and
    // sidecars found in the shards' folders.
    let images: usize = joined
        .iter()
        .map(|r| r["files"].split(';').filter(|f| !f.is_empty()).count())
        .sum();
    let o = batchgen(&["report", "merged"], dir.path()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let page = std::fs::read_to_string(merged.join("index.html")).unwrap();
    assert_eq!(page.matches("<img class=\"thumb\"").count(), images);
    let o = batchgen(
        &[
            "export",
            "merged",
            "--format",
            "jsonl",
            "--out",
            "all.jsonl",
        ],
        dir.path(),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let lines = std::fs::read_to_string(dir.path().join("all.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), images);
    assert!(lines.lines().all(|l| l.contains("\"file\":\"shards/")));
}

fn shard_run(dir: &Path, spec: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchgen"));
    cmd.args(["run", "m.yaml", "--simulate", "--quiet", "--shard", spec])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied());
    cmd.output().unwrap()
}

#[test]
fn auto_shards_take_their_index_from_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m.yaml",
        "name: nightly\njobs: [{id: a, prompt: cat, seeds: [1, 2, 3]}]\n",
    );
    let o = shard_run(dir.path(), "auto/3", &[("JOB_COMPLETION_INDEX", "1")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(dir
        .path()
        .join("out/nightly-sim/shards/1-of-3/results.csv")
        .is_file());
    let o = shard_run(dir.path(), "auto/3", &[("SLURM_ARRAY_TASK_ID", "2")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(dir
        .path()
        .join("out/nightly-sim/shards/2-of-3/results.csv")
        .is_file());
    let o = shard_run(dir.path(), "auto/3", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID"),
        "{}",
        text(&o.stderr)
    );
    let o = shard_run(dir.path(), "auto/3", &[("SLURM_ARRAY_TASK_ID", "3")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("takes an index from 0 to 2"),
        "{}",
        text(&o.stderr)
    );
    let o = shard_run(dir.path(), "3/3", &[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an index past the count is a usage error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_refuses_folders_that_are_not_one_run() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", MANIFEST);
    let other = write(
        dir.path(),
        "other.yaml",
        "jobs: [{id: z, prompt: zebra, seed: 1}]\n",
    );
    let folder = |name: &str| dir.path().join(name).display().to_string();
    run(&m, &dir.path().join("s0"), &sim.url(), &["--shard", "0/2"]).await;
    run(
        &m,
        &dir.path().join("s0-again"),
        &sim.url(),
        &["--shard", "0/2"],
    )
    .await;
    run(
        &other,
        &dir.path().join("z1"),
        &sim.url(),
        &["--shard", "1/2"],
    )
    .await;
    run(&m, &dir.path().join("whole"), &sim.url(), &[]).await;
    let merge = |dirs: &[&str], out: &str| {
        let mut args = vec!["merge".to_string()];
        args.extend(dirs.iter().map(|d| folder(d)));
        args.extend(["--out".into(), folder(out)]);
        args
    };
    for (dirs, out, says) in [
        (&["s0", "z1"][..], "m1", "another manifest"),
        (&["s0", "s0-again"][..], "m2", "are the same shard"),
        (&["s0", "whole"][..], "m3", "is not a shard"),
        (&["s0"][..], "whole", "holds a run"),
    ] {
        let args = merge(dirs, out);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = batchgen(&args, dir.path()).await;
        assert_eq!(o.status.code(), Some(2), "{dirs:?}");
        assert!(
            text(&o.stderr).contains(says),
            "{dirs:?}: {}",
            text(&o.stderr)
        );
    }
    // A shard missing: refused, naming it, nothing written; --partial
    // merges the shards there (exit 1, and said so).
    // A shard's folder there without a journal (its run never started) is
    // missing too.
    std::fs::create_dir(dir.path().join("1-of-2")).unwrap();
    for (dirs, out, says) in [
        (
            &["s0"][..],
            "partial",
            "shard(s) 1-of-2 missing (the run was split into 2): nothing was written",
        ),
        (
            &["s0", "1-of-2"][..],
            "never",
            "1-of-2 holds no batchgen run (no journal: its run never started)",
        ),
    ] {
        let mut args = merge(dirs, out);
        let o = batchgen(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            dir.path(),
        )
        .await;
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains(says), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains("--partial"), "{}", text(&o.stderr));
        assert!(!dir.path().join(out).exists());
        args.push("--partial".into());
        let o = batchgen(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            dir.path(),
        )
        .await;
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        assert!(
            text(&o.stdout).contains("missing: shard(s) 1 were not given"),
            "{}",
            text(&o.stdout)
        );
        let missing = &summary(&dir.path().join(out))["shards_missing"];
        assert_eq!(missing, &serde_json::json!([1]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_folder_merges_its_shards_and_names_the_unfinished() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", MANIFEST);
    let shards = dir.path().join("night/shards");
    let o = run(&m, &shards.join("0-of-2"), &sim.url(), &["--shard", "0/2"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // Shard 1 ran, but its rows failed: it is merged (exit 1), and named.
    sim.set_config(SimConfig {
        failed_rate: 1.0,
        ..quick()
    });
    let o = run(&m, &shards.join("1-of-2"), &sim.url(), &["--shard", "1/2"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    std::fs::create_dir(shards.join("not-a-shard")).unwrap();
    let o = batchgen(&["merge", "night/shards", "--out", "night"], dir.path()).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("merged 2 shard(s)")
            && text(&o.stdout).contains("not completed: shard(s) 1-of-2 have rows not completed"),
        "{}",
        text(&o.stdout)
    );
    let s = summary(&dir.path().join("night"));
    assert_eq!(s["shards_incomplete"], serde_json::json!([1]));
    assert_eq!(s["shards_missing"], serde_json::json!([]));
    assert_eq!(s["shard_count"], 2);
    assert_eq!(s["exit_code"], 1, "rows not completed");
    assert_eq!(results(&dir.path().join("night")).len(), 11);
}
