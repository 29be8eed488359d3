//! `status`, `report`, `export` and `merge` given bucket URLs, against moto
//! (`tests/support/moto.rs`): a run's folder uploaded under a prefix as a
//! run on a bucket leaves it (its journal as segments, no journal.jsonl, no
//! .lock) reads as the folder does, and what the commands write lands under
//! the prefix; a prefix without a run, a bad URL, an output on a run's own
//! files and a results.csv naming files outside the prefix are met as for
//! folders; a live `lease.json` is a run `status` and `export` name.

#[path = "../benches/common/group.rs"]
mod group;
#[path = "support/moto.rs"]
mod moto;
mod support;

use std::path::Path;
use std::process::{Command, Output};

use batchgen::sim::SimHandle;
use batchgen::store::{files_under, Store};
use support::*;

/// The binary in `dir`, with moto's endpoint and dummy credentials in its
/// environment and nothing else.
async fn bg(moto: &moto::Moto, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchgen"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(moto.env());
    output(cmd).await
}

/// Uploads the run folder `local` under `url` as a run on a bucket leaves
/// it: every file but journal.jsonl, .lock and index.html, and the journal
/// as two segments (if it has one).
async fn upload(moto: &moto::Moto, local: &Path, url: &str) -> Store {
    let store = moto.open(url);
    let names: Vec<String> = files_under(local)
        .unwrap()
        .into_iter()
        .filter(|n| !matches!(n.as_str(), "journal.jsonl" | ".lock" | "index.html"))
        .collect();
    store.publish(local, &names, 4).await.unwrap();
    let Ok(journal) = std::fs::read_to_string(local.join("journal.jsonl")) else {
        return store;
    };
    let lines: Vec<&str> = journal.lines().collect();
    let half = lines.len() / 2;
    for (n, part) in [&lines[..half], &lines[half..]].into_iter().enumerate() {
        let body: String = part.iter().map(|l| format!("{l}\n")).collect();
        let name = format!("journal/seg-{:08}.jsonl", n + 1);
        store.put_bytes(&name, body.into_bytes()).await.unwrap();
    }
    store
}

async fn get(store: &Store, name: &str) -> Option<Vec<u8>> {
    store.read_bytes(name, 1 << 30).await.unwrap()
}

async fn names(store: &Store, under: &str) -> Vec<String> {
    let mut n: Vec<String> = store
        .list(Some(under).filter(|u| !u.is_empty()))
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    n.sort();
    n
}

fn ok(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// What each test here starts from: moto with a bucket `runs`, the
/// simulator and a temporary folder; `None` when moto is skipped.
async fn setup(test: &str) -> Option<(moto::Moto, SimHandle, tempfile::TempDir)> {
    let moto = moto::Moto::with_bucket(test, "runs").await?;
    let sim = start(quick()).await;
    Some((moto, sim, tempfile::tempdir().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_the_bucket_reads_and_reports_as_its_folder() {
    let Some((moto, sim, dir)) = setup("a_run_on_the_bucket_reads_and_reports_as_its_folder").await
    else {
        return;
    };
    let d = dir.path();
    let m = seed_sweep(d, 4);
    ok(&run(&m, &d.join("local"), &sim.url(), &[]).await);
    let store = upload(&moto, &d.join("local"), "s3://runs/nightly").await;
    let url = "s3://runs/nightly";

    // status: the same counts, text and JSON, without an image read.
    for json in [false, true] {
        let mut args = vec!["status", "local"];
        args.extend(json.then_some("--json"));
        let local = bg(&moto, d, &args).await;
        args[1] = url;
        let remote = bg(&moto, d, &args).await;
        ok(&local);
        ok(&remote);
        let expected = match json {
            true => text(&local.stdout),
            false => text(&local.stdout).replacen("local", url, 1),
        };
        assert_eq!(text(&remote.stdout), expected);
    }

    // report: one thumbnail taken away; the sheet is the folder's, written
    // under the prefix with every thumbnail, the missing one made again.
    let thumbs = names(&store, "thumbs").await;
    assert_eq!(thumbs.len(), 4, "{thumbs:?}");
    let gone = store.path(&thumbs[0]).unwrap();
    object_store::ObjectStoreExt::delete(&**store.inner(), &gone)
        .await
        .unwrap();
    ok(&bg(&moto, d, &["report", "local"]).await);
    let o = bg(&moto, d, &["report", url]).await;
    ok(&o);
    assert!(
        text(&o.stdout).contains("(1 thumbnails made) → s3://runs/nightly/index.html"),
        "{}",
        text(&o.stdout)
    );
    let page = get(&store, "index.html")
        .await
        .expect("index.html uploaded");
    assert_eq!(page, std::fs::read(d.join("local/index.html")).unwrap());
    assert_eq!(names(&store, "thumbs").await, thumbs);
    let made = get(&store, &thumbs[0]).await.unwrap();
    assert_eq!(
        made,
        std::fs::read(d.join("local").join(&thumbs[0])).unwrap()
    );

    // export: from the bucket to a file, from a folder to the bucket, and
    // from the bucket to the bucket, byte for byte what folders give.
    let exp = |src: &str, format: &str, out: &str| {
        ["export", src, "--format", format, "--out", out].map(String::from)
    };
    let run_exp = |args: [String; 6]| {
        let moto = &moto;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bg(moto, d, &args).await
        }
    };
    ok(&run_exp(exp("local", "jsonl", "local.jsonl")).await);
    ok(&run_exp(exp(url, "jsonl", "remote.jsonl")).await);
    let jsonl = std::fs::read(d.join("local.jsonl")).unwrap();
    assert_eq!(std::fs::read(d.join("remote.jsonl")).unwrap(), jsonl);
    assert_eq!(jsonl.iter().filter(|b| **b == b'\n').count(), 4);
    let o = run_exp(exp(url, "jsonl", "s3://runs/exports/all.jsonl")).await;
    ok(&o);
    assert!(text(&o.stdout).contains("→ s3://runs/exports/all.jsonl"));
    let exports = moto.open("s3://runs/exports");
    assert_eq!(get(&exports, "all.jsonl").await.unwrap(), jsonl);
    ok(&run_exp(exp("local", "webdataset", "wds")).await);
    // An earlier export's extra shard there goes, as in a folder.
    exports
        .put_bytes("wds/shard-000007.tar", b"old".to_vec())
        .await
        .unwrap();
    ok(&run_exp(exp("local", "webdataset", "s3://runs/exports/wds")).await);
    assert_eq!(names(&exports, "wds").await, ["wds/shard-000000.tar"]);
    assert_eq!(
        get(&exports, "wds/shard-000000.tar").await.unwrap(),
        std::fs::read(d.join("wds/shard-000000.tar")).unwrap()
    );

    // Never on a run's own files, never over the prefix read.
    for (out, why) in [
        (
            "s3://runs/nightly/images/x.jsonl",
            "never writes over a run's own files",
        ),
        (
            "s3://runs/nightly/journal/x.jsonl",
            "never writes over a run's own files",
        ),
        ("s3://runs/nightly", "is the run prefix s3://runs/nightly"),
        // A "file" beside a prefix holding objects would be a folder too.
        ("s3://runs/misc", "objects are stored under it"),
    ] {
        if out.ends_with("/misc") {
            let put = format!("{}/runs/misc/a.txt", moto.url());
            let r = reqwest::Client::new()
                .put(&put)
                .body("x")
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
        let o = run_exp(exp("local", "jsonl", out)).await;
        assert_eq!(o.status.code(), Some(2), "{out}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(why), "{out}: {}", text(&o.stderr));
    }
    let o = run_exp(exp(url, "webdataset", url)).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("the prefix this command reads"));
    assert!(
        !text(&o.stderr).contains("nightly/nightly"),
        "the URL is named once: {}",
        text(&o.stderr)
    );
    assert!(get(&store, "images/x.jsonl").await.is_none());
    assert!(names(&store, "")
        .await
        .iter()
        .all(|n| !n.starts_with("shard-")));

    // A prefix without a run: what a folder without one says, exit 2.
    std::fs::create_dir(d.join("empty")).unwrap();
    let empty = "s3://runs/empty";
    for args in [
        ["status", "empty"].as_slice(),
        &["report", "empty"],
        &["export", "empty", "--format", "jsonl", "--out", "e.jsonl"],
        &["merge", "empty", "--out", "m"],
    ] {
        let local = bg(&moto, d, args).await;
        let swapped: Vec<&str> = args
            .iter()
            .map(|a| match *a {
                "empty" => empty,
                "m" => "s3://runs/m",
                a => a,
            })
            .collect();
        let remote = bg(&moto, d, &swapped).await;
        assert_eq!(local.status.code(), Some(2), "{}", text(&local.stderr));
        assert_eq!(remote.status.code(), Some(2), "{}", text(&remote.stderr));
        let mut expected = text(&local.stderr).replace(&d.display().to_string(), "");
        expected = expected.replace("empty", empty);
        assert_eq!(text(&remote.stderr), expected, "{args:?}");
    }

    // A URL batchgen cannot read is exit 2, before anything is read.
    for args in [
        ["status", "s3:/runs/nightly"].as_slice(),
        &["report", "gopher://runs/nightly"],
        &["status", "s3://runs/../etc"],
    ] {
        let o = bg(&moto, d, args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
    }

    // A live lease: a run holds the prefix. status names it (exit 0, or 1
    // with --check), an export warns; a lease run out holds nothing.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let lease = |expires_at_ms: u64| {
        serde_json::json!({"run_id": "r7", "host": "pod-a", "pid": 4242,
            "expires_at_ms": expires_at_ms, "nonce": "n", "started_at_ms": 1_000})
        .to_string()
        .into_bytes()
    };
    store
        .put_bytes("lease.json", lease(now + 3_600_000))
        .await
        .unwrap();
    let o = bg(&moto, d, &["status", url]).await;
    ok(&o);
    let t = text(&o.stdout);
    assert!(
        t.contains("running now: pid 4242 on host pod-a (run r7), since 1970-01-01T00:00:01.000Z"),
        "{t}"
    );
    assert!(t.contains("4 rows so far: 4 completed"), "{t}");
    let o = bg(&moto, d, &["status", "--check", "--json", url]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["running"]["run_id"], "r7");
    assert_eq!(s["complete"], false);
    let o = run_exp(exp(url, "jsonl", "live.jsonl")).await;
    ok(&o);
    assert!(
        text(&o.stderr).contains("warning: a run holds s3://runs/nightly now (pid 4242"),
        "{}",
        text(&o.stderr)
    );
    store.put_bytes("lease.json", lease(now - 1)).await.unwrap();
    let o = bg(&moto, d, &["status", "--check", url]).await;
    ok(&o);
    assert!(!text(&o.stdout).contains("running now"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_on_the_bucket_merge_as_folders_do() {
    let Some((moto, sim, dir)) = setup("shards_on_the_bucket_merge_as_folders_do").await else {
        return;
    };
    let d = dir.path();
    let m = write(d, "m.yaml", SHARDED);
    for i in 0..2 {
        let local = d.join(format!("job/shards/{i}-of-2"));
        ok(&run(&m, &local, &sim.url(), &["--shard", &format!("{i}/2")]).await);
        upload(&moto, &local, &format!("s3://runs/job/shards/{i}-of-2")).await;
    }
    let local = bg(
        &moto,
        d,
        &[
            "merge",
            "job/shards/1-of-2",
            "job/shards/0-of-2",
            "--out",
            "job/merged",
        ],
    )
    .await;
    ok(&local);
    let merged = d.join("job/merged");

    // The shards named one by one, and their parent prefix standing for
    // every `I-of-N` under it: both give the folders' merge.
    for (args, out) in [
        (
            vec![
                "merge",
                "s3://runs/job/shards/1-of-2",
                "s3://runs/job/shards/0-of-2",
                "--out",
                "s3://runs/job/merged",
            ],
            "s3://runs/job/merged",
        ),
        (
            vec![
                "merge",
                "s3://runs/job/shards",
                "--out",
                "s3://runs/job/merged2",
            ],
            "s3://runs/job/merged2",
        ),
    ] {
        let o = bg(&moto, d, &args).await;
        ok(&o);
        assert_eq!(
            text(&o.stdout),
            text(&local.stdout).replacen("job/merged", out, 1)
        );
        let store = moto.open(out);
        assert_eq!(
            get(&store, "results.csv").await.unwrap(),
            std::fs::read(merged.join("results.csv")).unwrap()
        );
        let s: serde_json::Value =
            serde_json::from_slice(&get(&store, "summary.json").await.unwrap()).unwrap();
        let l = summary(&merged);
        for field in [
            "rows",
            "rows_by_status",
            "images",
            "cost_usd",
            "shard_dirs",
            "shards_missing",
        ] {
            assert_eq!(s[field], l[field], "{field}");
        }
        assert_eq!(
            s["shards"],
            serde_json::json!(["s3://runs/job/shards/0-of-2", "s3://runs/job/shards/1-of-2"])
        );
        assert_eq!(s["out_dir"], out);
    }

    // status reads the merged prefix as the merged folder.
    for args in [
        ["status", "--check", "job/merged"],
        ["status", "--check", "s3://runs/job/merged"],
    ] {
        let o = bg(&moto, d, &args).await;
        ok(&o);
        let t = text(&o.stdout);
        assert!(
            t.starts_with(&format!("{}: merged from 2 shard(s)", args[2])),
            "{t}"
        );
        assert!(
            t.contains("7 rows: 7 completed, 0 failed, 0 not run"),
            "{t}"
        );
    }

    // The merged prefix has a sheet and exports, its images read from the
    // shard prefixes its merge recorded.
    let o = bg(&moto, d, &["report", "s3://runs/job/merged"]).await;
    ok(&o);
    let store = moto.open("s3://runs/job/merged");
    let page = String::from_utf8(get(&store, "index.html").await.unwrap()).unwrap();
    assert_eq!(page.matches("<img class=\"thumb\"").count(), 7, "{page}");
    ok(&bg(
        &moto,
        d,
        &[
            "export",
            "job/merged",
            "--format",
            "jsonl",
            "--out",
            "l.jsonl",
        ],
    )
    .await);
    ok(&bg(
        &moto,
        d,
        &[
            "export",
            "s3://runs/job/merged",
            "--format",
            "jsonl",
            "--out",
            "r.jsonl",
        ],
    )
    .await);
    assert_eq!(
        std::fs::read(d.join("r.jsonl")).unwrap(),
        std::fs::read(d.join("l.jsonl")).unwrap()
    );

    // Shards and --out in two places, or --out on a shard: exit 2, nothing written.
    for (args, why) in [
        (
            vec!["merge", "job/shards/0-of-2", "--out", "s3://runs/x"],
            "must all be local folders, or all prefixes of one bucket",
        ),
        (
            vec!["merge", "s3://runs/job/shards/0-of-2", "--out", "x"],
            "must all be local folders, or all prefixes of one bucket",
        ),
        (
            vec![
                "merge",
                "s3://runs/job/shards/0-of-2",
                "--out",
                "s3://other/x",
            ],
            "must all be local folders, or all prefixes of one bucket",
        ),
        (
            vec![
                "merge",
                "s3://runs/job/shards/0-of-2",
                "--out",
                "s3://runs/job/shards/1-of-2",
            ],
            "holds a run",
        ),
        (
            vec![
                "merge",
                "s3://runs/job/shards/0-of-2",
                "--out",
                "s3://runs/job/shards/1-of-2/images",
            ],
            "never writes over a run's own files",
        ),
    ] {
        let o = bg(&moto, d, &args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(why),
            "{args:?}: {}",
            text(&o.stderr)
        );
    }
    assert!(get(&moto.open("s3://runs/x"), "results.csv")
        .await
        .is_none());
    let shard = moto.open("s3://runs/job/shards/1-of-2");
    assert!(get(&shard, "images/summary.json").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_set_on_the_bucket_is_merged_only_when_asked() {
    let Some(moto) =
        moto::Moto::start_or_skip("a_partial_set_on_the_bucket_is_merged_only_when_asked")
    else {
        return;
    };
    moto.create_bucket("runs").await;
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = write(d, "m.yaml", SHARDED);
    let local = d.join("0-of-2");
    ok(&run(&m, &local, &sim.url(), &["--shard", "0/2"]).await);
    upload(&moto, &local, "s3://runs/part/shards/0-of-2").await;
    // Shard 1's pod took its lease and died before its journal's first
    // segment: its prefix is there, its run is not.
    let lease = d.join("lease-only");
    std::fs::create_dir(&lease).unwrap();
    write(&lease, "lease.json", "{}");
    upload(&moto, &lease, "s3://runs/part/shards/1-of-2").await;
    let out = moto.open("s3://runs/part");
    for (shards, says) in [
        (
            "s3://runs/part/shards",
            "s3://runs/part/shards/1-of-2 holds no batchgen run",
        ),
        (
            "s3://runs/part/shards/0-of-2",
            "shard(s) 1-of-2 missing (the run was split into 2): nothing was written",
        ),
    ] {
        let o = bg(&moto, d, &["merge", shards, "--out", "s3://runs/part"]).await;
        assert_eq!(o.status.code(), Some(2), "{shards}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(says),
            "{shards}: {}",
            text(&o.stderr)
        );
        assert!(text(&o.stderr).contains("--partial"), "{}", text(&o.stderr));
        assert!(get(&out, "results.csv").await.is_none());
        assert!(get(&out, "summary.json").await.is_none());
    }
    let o = bg(
        &moto,
        d,
        &[
            "merge",
            "s3://runs/part/shards",
            "--out",
            "s3://runs/part",
            "--partial",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("missing: shard(s) 1 were not given"),
        "{}",
        text(&o.stdout)
    );
    let s: serde_json::Value =
        serde_json::from_slice(&get(&out, "summary.json").await.unwrap()).unwrap();
    assert_eq!(s["shards_missing"], serde_json::json!([1]));
    assert_eq!(
        s["shards"],
        serde_json::json!(["s3://runs/part/shards/0-of-2"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_named_outside_the_prefix_are_never_read() {
    let Some((moto, sim, dir)) = setup("files_named_outside_the_prefix_are_never_read").await
    else {
        return;
    };
    let d = dir.path();
    let m = seed_sweep(d, 3);
    let evil = d.join("evil");
    ok(&run(&m, &evil, &sim.url(), &["--no-report"]).await);
    // results.csv edited to name an image (with its sidecar) beside the
    // folder, as a merge's shard would be named, but recorded by no merge.
    let rows = results(&evil);
    let first = rows[0]["files"].clone();
    std::fs::create_dir_all(d.join("secret/images")).unwrap();
    let side = batchgen::sidecar::path_for(Path::new(&first));
    for f in [Path::new(&first), side.as_path()] {
        std::fs::copy(evil.join(f), d.join("secret").join(f)).unwrap();
    }
    let csv = std::fs::read_to_string(evil.join("results.csv")).unwrap();
    let csv = csv.replacen(&first, &format!("../secret/{first}"), 1);
    std::fs::write(evil.join("results.csv"), &csv).unwrap();
    let store = upload(&moto, &evil, "s3://runs/evil").await;
    upload(&moto, &d.join("secret"), "s3://runs/secret").await;

    // `export s3://runs/evil` to `out`.
    let export = |out: &'static str| {
        let moto = &moto;
        async move {
            let args = [
                "export",
                "s3://runs/evil",
                "--format",
                "jsonl",
                "--out",
                out,
            ];
            bg(moto, d, &args).await
        }
    };

    // Skipped as outside, as for a folder: the same warning, the same export.
    let local = bg(
        &moto,
        d,
        &["export", "evil", "--format", "jsonl", "--out", "l.jsonl"],
    )
    .await;
    ok(&local);
    let o = export("r.jsonl").await;
    ok(&o);
    assert!(
        text(&local.stderr).contains("lies outside the folder; not exported"),
        "{}",
        text(&local.stderr)
    );
    let expected =
        text(&local.stderr).replace(&d.join("secret").display().to_string(), "s3://runs/secret");
    assert_eq!(text(&o.stderr), expected);
    assert_eq!(
        std::fs::read(d.join("r.jsonl")).unwrap(),
        std::fs::read(d.join("l.jsonl")).unwrap()
    );
    let o = bg(&moto, d, &["report", "s3://runs/evil"]).await;
    ok(&o);
    assert!(
        text(&o.stdout).contains("lies outside the folder; not read"),
        "{}",
        text(&o.stdout)
    );
    let page = String::from_utf8(get(&store, "index.html").await.unwrap()).unwrap();
    assert_eq!(page.matches("<img class=\"thumb\"").count(), 2, "{page}");
    assert!(page.contains("not a file of this folder"));
    let thumbs = names(&store, "thumbs").await;
    assert!(thumbs.iter().all(|t| !t.contains("@up")), "{thumbs:?}");
    assert!(names(&moto.open("s3://runs/secret"), "").await.len() == 2);

    // A name that climbs above the bucket is not there, said by name.
    let second = rows[1]["files"].clone();
    let climbing = format!("images/../../../../{second}");
    let csv = csv.replacen(&second, &climbing, 1);
    store
        .put_bytes("results.csv", csv.into_bytes())
        .await
        .unwrap();
    let o = export("c.jsonl").await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(&climbing), "{}", text(&o.stderr));
    assert!(!d.join("c.jsonl").exists());
}
