//! `--cache DIR` (or `cache:` in the manifest): a request fulfilled by any
//! earlier run, of any manifest, is taken from the store at no cost.

mod support;

use std::path::Path;

use support::*;

const SIZE: &str = "defaults: {image_size: {width: 32, height: 32}}\n";

/// `m.yaml`: one job (`cat`) over `seeds`, after `extra` top-level lines.
fn cats(dir: &Path, seeds: &str, extra: &str) -> std::path::PathBuf {
    write(
        dir,
        "m.yaml",
        &format!("{SIZE}{extra}seeds: {seeds}\njobs: [{{id: cat, prompt: a cat}}]\n"),
    )
}

fn by_id(
    out: &Path,
) -> std::collections::HashMap<String, std::collections::HashMap<String, String>> {
    results(out)
        .into_iter()
        .map(|r| (r["id"].clone(), r))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_manifests_pay_only_for_what_is_new() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let a = write(
        dir.path(),
        "a.yaml",
        &format!("{SIZE}seeds: [1, 2, 3]\njobs: [{{id: cat, prompt: a cat}}, {{id: dog, prompt: a dog}}]\n"),
    );
    // Another manifest, naming the same cache itself: one row the same
    // request as a's (other ids, same prompt and seed), two new.
    let b = write(
        dir.path(),
        "b.yaml",
        &format!("{SIZE}cache: cache\nseeds: [3, 4]\njobs: [{{id: kitten, prompt: a cat}}, {{id: owl, prompt: an owl, seeds: [1]}}]\n"),
    );
    let (out_a, out_b) = (dir.path().join("out-a"), dir.path().join("out-b"));
    let o = run(
        &a,
        &out_a,
        &sim.url(),
        &["--cache", cache.to_str().unwrap()],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().accepted, 6);
    assert!(by_id(&out_a).values().all(|r| r["cached"] == "false"));

    let o = run(&b, &out_b, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(summary(&out_b)["cached"], 1);
    assert_eq!(sim.ledger().accepted, 8, "kitten_s4 and owl_s1 are new");
    assert_never_paid_twice(&sim.ledger());
    let rows = by_id(&out_b);
    let hit = &rows["kitten_s3"];
    assert_eq!(
        (
            hit["status"].as_str(),
            hit["cached"].as_str(),
            hit["cost_usd"].as_str()
        ),
        ("completed", "true", "0.000000")
    );
    assert_eq!(hit["request_id"], "");
    assert_eq!(hit["sha256"], by_id(&out_a)["cat_s3"]["sha256"]);
    assert_eq!(
        sha256_file(&out_b.join(&hit["files"])),
        hit["sha256"],
        "the file is whole"
    );
    assert_eq!(rows["kitten_s4"]["cached"], "false");
    let s = summary(&out_b);
    assert_eq!(s["cached"], 1);
    assert_eq!(s["rows_by_status"]["completed"], 3);
    assert_eq!(s["cost_usd"], 0.1);

    // A rerun of b is plain resume: nothing taken, nothing paid.
    let o = run(&b, &out_b, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(sim.ledger().accepted, 8);
    assert_eq!(by_id(&out_b)["kitten_s3"]["cached"], "true");

    // Without the cache, the same manifest pays for everything.
    let o = run(&a, &dir.path().join("out-c"), &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(sim.ledger().accepted, 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_entry_is_paid_for_again_and_stored_afresh() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let flag = ["--cache", cache.to_str().unwrap()];
    let m = cats(dir.path(), "[1]", "");
    let o = run(&m, &dir.path().join("one"), &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0));
    let stored: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    std::fs::remove_file(&stored[0]).unwrap();
    std::fs::write(&stored[0], b"not the picture").unwrap();

    let two = dir.path().join("two");
    let o = run(&m, &two, &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("not taken from the cache"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(sim.ledger().accepted, 2, "paid again");
    assert_eq!(by_id(&two)["cat_s1"]["cached"], "false");
    assert_files_are_what_was_served(&two, &sim.ledger());
    assert!(walk(&two)
        .iter()
        .all(|p| !p.to_string_lossy().contains(".part")));

    let three = dir.path().join("three");
    let o = run(&m, &three, &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(sim.ledger().accepted, 2, "stored afresh, taken from there");
    assert_eq!(by_id(&three)["cat_s1"]["cached"], "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_sharing_a_cache_at_once_are_safe_and_gateways_never_mix() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let flag = ["--cache", cache.to_str().unwrap()];
    let m = cats(dir.path(), "{from: 0, count: 20}", "");
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let url = sim.url();
    let (a, b) = tokio::join!(run(&m, &one, &url, &flag), run(&m, &two, &url, &flag));
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert_eq!(b.status.code(), Some(0), "{}", text(&b.stderr));
    // Every entry is whole: its files are what entry.json says.
    let entries: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.ends_with("entry.json"))
        .collect();
    assert_eq!(entries.len(), 20);
    for e in &entries {
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(e).unwrap()).unwrap();
        let f = &json["files"][0];
        let file = e.parent().unwrap().join(f["name"].as_str().unwrap());
        assert_eq!(sha256_file(&file), f["sha256"].as_str().unwrap());
    }
    assert!(
        walk(&cache)
            .iter()
            .all(|p| !p.to_string_lossy().contains(".tmp-")),
        "no temporary folder is left"
    );
    let paid = sim.ledger().accepted;
    let three = dir.path().join("three");
    let o = run(&m, &three, &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(sim.ledger().accepted, paid, "all 20 from the cache");
    assert_eq!(summary(&three)["cached"], 20);

    // Another gateway's images are never taken for this one's.
    let other = start(quick()).await;
    let o = run(&m, &dir.path().join("four"), &other.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(other.ledger().accepted, 20);
}

#[test]
fn a_cache_that_is_not_a_folder_is_exit_2_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let m = cats(dir.path(), "[1]", "");
    let file = write(dir.path(), "cache", "a file");
    // Nothing listens here: a request sent would fail the run with exit 3.
    let o = command(
        &m,
        &dir.path().join("out"),
        "http://127.0.0.1:9",
        &["--cache", file.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("cache"), "{}", text(&o.stderr));

    let bad = cats(dir.path(), "[1]", "cache: [1]\n");
    let o = command(&bad, &dir.path().join("out2"), "http://127.0.0.1:9", &[])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("cache"), "{}", text(&o.stderr));
}
