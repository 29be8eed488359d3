//! Provenance sidecars beside every image, and `batchgen export` in the
//! WebDataset and JSONL formats, read back and checked image by image.

mod support;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use support::*;

/// Two prompts × two guidance values × two seeds, two images per request
/// for one of them: 8 rows, 12 images.
fn sweep(dir: &Path) -> PathBuf {
    write(
        dir,
        "m.yaml",
        "defaults: {image_size: {width: 40, height: 24}, num_inference_steps: 12, output_format: png}\nseeds: [5, 9]\nsweep: {guidance_scale: [2.0, 7.5]}\njobs:\n  - {id: fox, prompt: a red fox, num_images: 2}\n  - {id: owl, prompt: an owl, output_format: jpeg}\n",
    )
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every image of results.csv, with its row: (file, sha256, row).
fn images(out: &Path) -> Vec<(String, String, HashMap<String, String>)> {
    let mut all = Vec::new();
    for row in results(out) {
        assert_eq!(row["status"], "completed");
        for (f, s) in row["files"].split(';').zip(row["sha256"].split(';')) {
            all.push((f.to_string(), s.to_string(), row.clone()));
        }
    }
    all
}

/// A sidecar (or exported metadata) says what its row in results.csv says.
fn assert_describes(
    meta: &serde_json::Value,
    file: &str,
    sha: &str,
    row: &HashMap<String, String>,
) {
    assert_eq!(meta["file"], file);
    assert_eq!(meta["sha256"], sha);
    assert_eq!(meta["id"], row["id"].as_str());
    assert_eq!(meta["request_id"], row["request_id"].as_str());
    assert_eq!(meta["prompt"], row["prompt"].as_str());
    assert_eq!(meta["seed"].to_string(), row["seed"]);
    assert_eq!(meta["submitted_at"], row["submitted_at"].as_str());
    assert_eq!(meta["finished_at"], row["finished_at"].as_str());
    assert_eq!(meta["endpoint"], "/glm-image/v1/glm-image-request");
    let params = &meta["params"];
    assert_eq!(
        params["guidance_scale"].as_f64().unwrap(),
        row["guidance_scale"].parse::<f64>().unwrap()
    );
    assert_eq!(params["num_inference_steps"], 12);
    assert_eq!(params["output_format"], row["output_format"].as_str());
    let index: usize = meta["index"].as_u64().unwrap() as usize;
    assert!(file.ends_with(&format!(
        "_{index}.{}",
        if row["output_format"] == "png" {
            "png"
        } else {
            "jpg"
        }
    )));
    let images = row["files"].split(';').count() as f64;
    let row_cost: f64 = row["cost_usd"].parse().unwrap();
    assert!((meta["cost_usd"].as_f64().unwrap() * images - row_cost).abs() < 1e-6);
}

/// A finished run of [`sweep`] into `DIR/out`.
struct Swept {
    sim: batchgen::sim::SimHandle,
    dir: tempfile::TempDir,
    manifest: PathBuf,
    out: PathBuf,
}

async fn swept() -> Swept {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = sweep(dir.path());
    let out = dir.path().join("out");
    let o = run(&manifest, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    Swept {
        sim,
        dir,
        manifest,
        out,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_image_has_its_provenance_and_a_rerun_restores_lost_ones() {
    // `_dir` keeps the folder for the length of the test.
    let Swept {
        sim,
        dir: _dir,
        manifest: m,
        out,
    } = swept().await;
    let all = images(&out);
    assert_eq!(all.len(), 12);
    for (file, sha, row) in &all {
        let side = out.join(file).with_extension("json");
        assert_describes(&json(&side), file, sha, row);
    }
    // Seeds differ within a request's images; every image differs.
    let distinct: std::collections::HashSet<&String> = all.iter().map(|(_, s, _)| s).collect();
    assert_eq!(
        distinct.len(),
        12,
        "every parameter changes the simulated image"
    );

    // One sidecar lost, one left empty by a crash: a rerun writes them again
    // and sends nothing.
    let lost = out.join(&all[0].0).with_extension("json");
    let empty = out.join(&all[5].0).with_extension("json");
    let before = std::fs::read(&lost).unwrap();
    std::fs::remove_file(&lost).unwrap();
    std::fs::write(&empty, b"").unwrap();
    let accepted = sim.ledger().accepted;
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().accepted, accepted);
    assert_eq!(std::fs::read(&lost).unwrap(), before);
    assert_describes(&json(&empty), &all[5].0, &all[5].1, &all[5].2);
}

fn export(dir: &Path, args: &[&str]) -> impl std::future::Future<Output = std::process::Output> {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    let dir = dir.to_path_buf();
    async move {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        batchgen(&refs, &dir).await
    }
}

/// A WebDataset sample: its key, and its files by extension.
type Sample = (String, HashMap<String, Vec<u8>>);

/// Reads every shard: (shard size, its samples in order).
fn read_shards(dir: &Path) -> Vec<(u64, Vec<Sample>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.starts_with("shard-") && name.ends_with(".tar"),
                "{name}"
            );
            let mut samples: Vec<Sample> = Vec::new();
            let mut archive = tar::Archive::new(std::fs::File::open(p).unwrap());
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                // WebDataset: the key is everything before the first dot.
                let (key, ext) = path.split_once('.').unwrap();
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                match samples.last_mut() {
                    Some((k, parts)) if k == key => {
                        parts.insert(ext.to_string(), bytes);
                    }
                    _ => samples.push((key.to_string(), HashMap::from([(ext.to_string(), bytes)]))),
                }
            }
            (std::fs::metadata(p).unwrap().len(), samples)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webdataset_and_jsonl_hold_every_image_and_its_metadata() {
    let Swept {
        dir,
        out,
        sim: _sim,
        ..
    } = swept().await;
    let all = images(&out);
    let by_file: HashMap<&str, (&str, &HashMap<String, String>)> = all
        .iter()
        .map(|(f, s, r)| (f.as_str(), (s.as_str(), r)))
        .collect();

    // WebDataset, with shards small enough that there are several.
    let wds = dir.path().join("wds");
    let o = export(
        dir.path(),
        &[
            "out",
            "--format",
            "webdataset",
            "--out",
            "wds",
            "--shard-size",
            "8KiB",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let shards = read_shards(&wds);
    assert!(shards.len() >= 3, "{} shards", shards.len());
    let mut seen = Vec::new();
    for (size, samples) in &shards {
        let sample_bytes: u64 = samples
            .iter()
            .flat_map(|(_, p)| p.values())
            .map(|b| 512 + (b.len() as u64).div_ceil(512) * 512)
            .sum();
        assert!(
            *size <= 8192 || samples.len() == 1,
            "a shard of {size} bytes holds {} samples",
            samples.len()
        );
        assert!(sample_bytes < *size);
        for (key, parts) in samples {
            assert!(!key.contains('.'));
            assert_eq!(parts.len(), 3, "{key}: an image, its caption and its json");
            let meta: serde_json::Value = serde_json::from_slice(&parts["json"]).unwrap();
            assert_eq!(
                std::str::from_utf8(&parts["txt"]).unwrap(),
                meta["prompt"].as_str().unwrap(),
                "{key}: the caption is the prompt"
            );
            let file = meta["file"].as_str().unwrap();
            // The key is the image's stem, whichever format the image is.
            let stem = Path::new(file).file_stem().unwrap().to_string_lossy();
            assert_eq!(stem.replace('.', "_"), *key);
            let (sha, row) = by_file[file];
            let ext = if row["output_format"] == "png" {
                "png"
            } else {
                "jpg"
            };
            assert_eq!(
                batchgen::disk::hex(&<sha2::Sha256 as sha2::Digest>::digest(&parts[ext])),
                sha
            );
            assert_describes(&meta, file, sha, row);
            seen.push(file.to_string());
        }
    }
    let mut expected: Vec<String> = all.iter().map(|(f, _, _)| f.clone()).collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected, "every image once, nothing else");

    // JSONL: one line per image.
    let o = export(
        dir.path(),
        &["out", "--format", "jsonl", "--out", "meta/all.jsonl"],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("meta/all.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), all.len());
    for meta in &lines {
        let file = meta["file"].as_str().unwrap();
        let (sha, row) = by_file[file];
        assert_eq!(sha256_file(&out.join(file)), sha);
        assert_describes(meta, file, sha, row);
    }

    // A re-export with bigger shards replaces the earlier, longer one.
    let o = export(
        dir.path(),
        &["out", "--format", "webdataset", "--out", "wds"],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(read_shards(&wds).len(), 1);

    // A damaged image is refused by name, and the earlier export stays.
    let victim = out.join(&all[3].0);
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let before = std::fs::read(wds.join("shard-000000.tar")).unwrap();
    let o = export(
        dir.path(),
        &["out", "--format", "webdataset", "--out", "wds"],
    )
    .await;
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains(&all[3].0) && err.contains("damaged"), "{err}");
    assert_eq!(std::fs::read(wds.join("shard-000000.tar")).unwrap(), before);
    assert_eq!(
        std::fs::read_dir(&wds).unwrap().count(),
        1,
        "no temporary files left"
    );

    // Not an output folder: exit 2, naming the file it looked for.
    let o = export(
        dir.path(),
        &["nowhere", "--format", "jsonl", "--out", "x.jsonl"],
    )
    .await;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("results.csv: no such file"),
        "{}",
        text(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_samples_key_and_caption_do_not_change_with_output_format() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    for format in ["png", "jpeg"] {
        let m = write(
            dir.path(),
            &format!("{format}.yaml"),
            &format!("name: cats\ndefaults: {{output_format: {format}}}\njobs:\n  - {{id: cat, prompt: \"a cat, in the rain\", seeds: [1, 2]}}\n"),
        );
        let out = dir.path().join(format);
        let o = run(&m, &out, &sim.url(), &[]).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let wds = format!("wds-{format}");
        let o = export(
            dir.path(),
            &[format, "--format", "webdataset", "--out", &wds],
        )
        .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let samples: Vec<Sample> = read_shards(&dir.path().join(&wds))
            .into_iter()
            .flat_map(|(_, s)| s)
            .collect();
        let ext = if format == "png" { "png" } else { "jpg" };
        for (key, parts) in &samples {
            let mut exts: Vec<&str> = parts.keys().map(String::as_str).collect();
            exts.sort();
            let mut want = ["json", ext, "txt"];
            want.sort();
            assert_eq!(exts, want, "{key}");
            assert_eq!(parts["txt"], b"a cat, in the rain");
        }
        keys.push(samples.into_iter().map(|(k, _)| k).collect::<Vec<_>>());
    }
    assert_eq!(keys[0], ["cat_s1_0", "cat_s2_0"]);
    assert_eq!(keys[0], keys[1], "the same keys in png and in jpeg");
}
