//! Across versions: row keys and derived seeds are a contract with every
//! folder already written, and a folder written by an earlier version (or
//! by today's) resumes in this one without paying again.
//!
//! The fixtures under `tests/fixtures/compat/` are real output folders: one
//! written by the version that landed before the journal carried gateways,
//! prices, stamps or seen times (commit a0fcd4e), one by today's format
//! (`GATEWAY` stands for the simulator's address). Never regenerate them:
//! add a new one when the format changes.

mod support;

use std::path::Path;

use support::*;

/// A manifest touching every part of a row's identity: seeds given and
/// derived, lists and ranges, sweeps, image-to-image, identical requests.
const GOLDEN: &str = r#"name: golden
defaults: {image_size: square_hd, output_format: png}
sweep: {guidance_scale: [1.5, 2.5]}
jobs:
  - {id: seeded, prompt: "A lighthouse at dawn", seed: 42}
  - {id: derived, prompt: "A lighthouse at dawn"}
  - {id: ranged, prompt: "Watercolor menu card", seeds: {from: 100, count: 2}, num_inference_steps: 20}
  - {id: edit, prompt: "Make the dress red.", image_urls: ["https://example.com/catwalk.png"], image_size: {width: 1280, height: 720}, seed: 7}
  - {id: edit-derived, prompt: "Make the dress red.", image_urls: ["https://example.com/catwalk.png", "data:image/png;base64,iVBORw0KGgo="]}
  - {id: twin, prompt: "A lighthouse at dawn", seed: 42, guidance_scale: 1.5}
"#;

#[test]
fn row_keys_and_derived_seeds_never_change() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "golden.yaml", GOLDEN);
    let plan = batchgen::plan::expand(&batchgen::manifest::load(&m).unwrap()).unwrap();
    let got: Vec<String> = plan
        .rows
        .iter()
        .map(|r| {
            let seed = plan.request(r).seed.unwrap();
            format!("{} {} {}", plan.row_id(r), r.key, seed)
        })
        .collect();
    // Computed by the version of commit a0fcd4e, and by every one since.
    let pinned = [
        "seeded_g1.5_s42 73e551614cc383b7 42",
        "seeded_g2.5_s42 7f6008f92cf2c209 42",
        "derived_g1.5_s525664803 3eaa04470d13da15 525664803",
        "derived_g2.5_s1602064226 befb1ec5b7fe9db5 1602064226",
        "ranged_g1.5_s100 76d6704357c4d6bc 100",
        "ranged_g1.5_s101 a161d8c53caf5c49 101",
        "ranged_g2.5_s100 c9b2847173f7d9b4 100",
        "ranged_g2.5_s101 105879841ddce67a 101",
        "edit_g1.5_s7 a5a71e2fe1b6547b 7",
        "edit_g2.5_s7 63216b395dc1d12e 7",
        "edit-derived_g1.5_s214082900 19854aa95d987956 214082900",
        "edit-derived_g2.5_s2128903185 fdc8f822fb3305e2 2128903185",
        "twin_s42_dup1 e639f220018c1c77 42",
    ];
    assert_eq!(
        got, pinned,
        "a change to keys or derived seeds strands every folder written before it"
    );
}

/// Copies a fixture folder into `out`, with `GATEWAY` made `url`, and the
/// files' times set to those their `done` lines recorded (as `cp -a` keeps them).
fn restore(fixture: &str, out: &Path, url: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compat")
        .join(fixture);
    std::fs::create_dir_all(out.join("images")).unwrap();
    for e in std::fs::read_dir(from.join("images")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), out.join("images").join(e.file_name())).unwrap();
    }
    let journal = std::fs::read_to_string(from.join("journal.jsonl")).unwrap();
    std::fs::write(out.join("journal.jsonl"), journal.replace("GATEWAY", url)).unwrap();
    for line in journal.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let stamps = v["stamps"].as_array().cloned().unwrap_or_default();
        for (file, stamp) in v["files"].as_array().into_iter().flatten().zip(stamps) {
            let ns = stamp[1].as_u64().unwrap();
            let f = std::fs::File::options()
                .write(true)
                .open(out.join(file.as_str().unwrap()))
                .unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
                .unwrap();
        }
    }
}

/// `fixture`'s run, from its run line to its last line, in seconds.
fn earlier_wall(fixture: &str) -> f64 {
    match fixture {
        "v0.1.0-a0fcd4e" => 1.052,
        _ => 2.052,
    }
}

async fn resumes_without_paying_again(fixture: &str) {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    restore(fixture, &out, &sim.url());
    let before: Vec<Vec<u8>> = ["a_s1_0.png", "a_s2_0.png", "a_s3_0.png"]
        .iter()
        .map(|f| std::fs::read(out.join("images").join(f)).unwrap())
        .collect();
    // The manifest it was written for, grown by one row.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compat");
    let grown = std::fs::read_to_string(fixtures.join("m.yaml")).unwrap()
        + "  - {id: b, prompt: dog, seed: 7}\n";
    let m = write(dir.path(), "m.yaml", &grown);
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{fixture}: {}", text(&o.stderr));
    assert_eq!(
        sim.ledger().submit_calls,
        1,
        "{fixture}: only the new row is paid for"
    );
    let rows = results(&out);
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["status"] == "completed"), "{rows:#?}");
    for (f, bytes) in ["a_s1_0.png", "a_s2_0.png", "a_s3_0.png"]
        .iter()
        .zip(before)
    {
        assert_eq!(
            std::fs::read(out.join("images").join(f)).unwrap(),
            bytes,
            "{f} untouched"
        );
    }
    assert_eq!(
        summary(&out)["cost_usd"],
        0.2,
        "earlier spending is still counted"
    );
    // A journal older than the run line's wall time: its run counts from
    // its start to its last line.
    let s = summary(&out);
    let earlier = s["wall_time_total_s"].as_f64().unwrap() - s["wall_time_s"].as_f64().unwrap();
    assert!(
        (earlier - earlier_wall(fixture)).abs() < 0.001,
        "{fixture}: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_from_before_gateways_and_stamps_resumes() {
    resumes_without_paying_again("v0.1.0-a0fcd4e").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_in_todays_format_resumes() {
    resumes_without_paying_again("2026-11-27").await;
}
