//! The working copy and the output checks of `bucket.rs`, on object_store's
//! in-memory store.

use super::*;
use crate::store::Scheme;

fn store(prefix: &str) -> Store {
    let bucket = Bucket {
        scheme: Scheme::S3,
        bucket: "b".into(),
        prefix: prefix.into(),
    };
    let inner = std::sync::Arc::new(object_store::memory::InMemory::new());
    Store::over(bucket, inner).unwrap()
}

#[tokio::test]
async fn outputs_stay_off_the_runs_on_the_bucket() {
    let root = store("");
    for name in [
        "run/journal/seg-00000001.jsonl",
        "run/results.csv",
        "run/summary.json",
        "merged/results.csv",
        "merged/summary.json",
    ] {
        root.put_bytes(name, b"x".to_vec()).await.unwrap();
    }
    let check = |key: &'static str, inputs: &'static [&'static str], writes| {
        let root = root.clone();
        async move {
            check_output(&root, "--out", key, inputs, writes)
                .await
                .unwrap()
                .map_err(|e| e.to_string())
        }
    };
    let e = check("run/images/x.jsonl", &[], Writes::File)
        .await
        .unwrap_err();
    assert!(
        e.starts_with("--out s3://b/run/images/x.jsonl: is inside images"),
        "{e}"
    );
    let e = check("run/journal", &[], Writes::Folder).await.unwrap_err();
    assert!(e.contains("is journal of the run prefix s3://b/run"), "{e}");
    let e = check("run", &[], Writes::Merged).await.unwrap_err();
    assert!(e.contains("is the run prefix s3://b/run"), "{e}");
    let e = check("merged", &[], Writes::Folder).await.unwrap_err();
    assert!(e.contains("is the run prefix s3://b/merged"), "{e}");
    let e = check("elsewhere", &["elsewhere"], Writes::Folder)
        .await
        .unwrap_err();
    assert!(e.contains("the prefix this command reads"), "{e}");
    check("merged", &[], Writes::Merged).await.unwrap();
    check("run/export.jsonl", &[], Writes::File).await.unwrap();
    check("elsewhere/x", &["run"], Writes::Folder)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_copy_mirrors_the_bucket_and_follows_no_odd_name() {
    let run = store("runs/nightly");
    run.put_bytes("results.csv", b"r".to_vec()).await.unwrap();
    let copy = Copy::new(&run).unwrap();
    let dir = copy.dir_of(&run);
    assert!(dir.ends_with("b/runs/nightly"), "{}", dir.display());
    assert_eq!(
        copy.show(&format!(
            "{}: no such file",
            dir.join("results.csv").display()
        )),
        "s3://b/runs/nightly/results.csv: no such file"
    );
    let got = copy
        .fetch(
            vec![
                "runs/nightly/results.csv".into(),
                "runs/nightly/gone".into(),
            ],
            10,
        )
        .await
        .unwrap();
    assert_eq!(got, 1);
    assert_eq!(std::fs::read(dir.join("results.csv")).unwrap(), b"r");
    // A name that would climb out of the copy is refused, never followed.
    for odd in ["runs/nightly/images/../../../x", "runs/./x", "runs//x"] {
        let e = copy.fetch(vec![odd.into()], 10).await.unwrap_err();
        assert!(e.to_string().contains("not a plain object name"), "{e}");
    }
    let e = copy
        .fetch(vec!["runs/nightly/results.csv".into()], 0)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("over the 0 this reads"), "{e}");
    assert_eq!(e.code(), exit::ABORTED);
    // No journal there: the caller says there is no run.
    assert!(!copy.journal(&run).await.unwrap());
}

#[test]
fn keys_join_and_climb_within_the_bucket_only() {
    assert_eq!(
        join_key("run/merged", "../shards/0-of-2").as_deref(),
        Some("run/shards/0-of-2")
    );
    assert_eq!(
        join_key("run", "images/./a.png").as_deref(),
        Some("run/images/a.png")
    );
    assert_eq!(join_key("", "a").as_deref(), Some("a"));
    assert_eq!(join_key("run", "../../x"), None);
    assert_eq!(join_key("run", "a\\b"), None);
    assert!(under("run/images/a.png", "run"));
    assert!(!under("running/a.png", "run"));
    assert!(under("x", ""));
    assert_eq!(
        relative_key("run/merged", "run/shards/0-of-2/images/a.png"),
        "../shards/0-of-2/images/a.png"
    );
    assert_eq!(relative_key("run", "run/images/a.png"), "images/a.png");
}
