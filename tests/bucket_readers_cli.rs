//! `status`, `report`, `export` and `merge` given bucket URLs, against moto
//! (`tests/support/moto.rs`): a run's folder uploaded under a prefix as a
//! run on a bucket leaves it (its journal as segments, no journal.jsonl, no
//! .lock) reads as the folder does, and what the commands write lands under
//! the prefix; a prefix without a run, a bad URL, an output on a run's own
//! files and a results.csv naming files outside the prefix are met as for
//! folders.

#[path = "../benches/common/group.rs"]
mod group;
#[path = "support/moto.rs"]
mod moto;
mod support;

use std::path::Path;
use std::process::{Command, Output};

use batchgen::store::{files_under, retry, Location, Store};
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

fn open(moto: &moto::Moto, url: &str) -> Store {
    let location = Location::parse(url).unwrap();
    location
        .bucket()
        .unwrap()
        .open_with(&moto.env(), retry())
        .unwrap()
}

/// Uploads the run folder `local` under `url` as a run on a bucket leaves
/// it: every file but journal.jsonl, .lock and index.html, and the journal
/// as two segments.
async fn upload(moto: &moto::Moto, local: &Path, url: &str) -> Store {
    let store = open(moto, url);
    let names: Vec<String> = files_under(local)
        .unwrap()
        .into_iter()
        .filter(|n| !matches!(n.as_str(), "journal.jsonl" | ".lock" | "index.html"))
        .collect();
    store.publish(local, &names, 4).await.unwrap();
    let journal = std::fs::read_to_string(local.join("journal.jsonl")).unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_the_bucket_reads_and_reports_as_its_folder() {
    let Some(moto) =
        moto::Moto::start_or_skip("a_run_on_the_bucket_reads_and_reports_as_its_folder")
    else {
        return;
    };
    moto.create_bucket("runs").await;
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
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
    let exports = open(&moto, "s3://runs/exports");
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
    ] {
        let o = run_exp(exp("local", "jsonl", out)).await;
        assert_eq!(o.status.code(), Some(2), "{out}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(why), "{out}: {}", text(&o.stderr));
    }
    let o = run_exp(exp(url, "webdataset", url)).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("the prefix this command reads"));
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
}
