//! `export`, `merge` and `report` never write over a run and never read
//! outside it: outputs on a run folder's own files are refused (however the
//! path is spelled), files results.csv names outside the folder (or the
//! shard folders a merge recorded) or not the image their name says are
//! skipped, a merged folder still works once moved, and an interrupted
//! command leaves no temporary file behind (or the next one sweeps it).

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use support::*;

const JPEG_SWEEP: &str = "defaults: {image_size: {width: 32, height: 32}, output_format: jpeg}\nseeds: [1, 2, 3]\njobs: [{id: a, prompt: cat}]\n";
/// `batchgen ARGS` in `cwd`, with a clean environment and `env` added.
fn command(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchgen"));
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied());
    cmd
}

/// Every file under `dir` (symbolic links not followed).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return all;
    };
    for e in entries {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            all.extend(files_under(&e.path()));
        } else {
            all.push(e.path());
        }
    }
    all
}

/// The temporary files under `dir`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect()
}

/// Every file of a folder with its bytes.
fn snapshot(dir: &Path) -> HashMap<PathBuf, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .filter(|p| !p.is_symlink())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Rewrites results.csv through `edit` (one map per row, header order kept).
fn edit_results(out: &Path, edit: impl FnOnce(&mut Vec<HashMap<String, String>>)) {
    let path = out.join("results.csv");
    let mut r = csv::Reader::from_path(&path).unwrap();
    let headers: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let mut rows = results(out);
    drop(r);
    edit(&mut rows);
    let mut w = csv::Writer::from_path(&path).unwrap();
    w.write_record(&headers).unwrap();
    for row in &rows {
        w.write_record(headers.iter().map(|h| row[h].as_str()))
            .unwrap();
    }
    w.flush().unwrap();
}

fn jsonl_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_on_a_run_folders_own_files_are_refused_however_spelled() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", JPEG_SWEEP);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    std::os::unix::fs::symlink(&out, dir.path().join("link")).unwrap();
    let before = snapshot(&out);
    let abs = out.display().to_string();
    for (format, target) in [
        ("jsonl", "out/journal.jsonl".to_string()),
        ("jsonl", "out/results.csv".into()),
        ("jsonl", "out/summary.json".into()),
        ("jsonl", "out/.plan-keys".into()),
        ("jsonl", "out/.lock".into()),
        ("jsonl", "out/images/all.jsonl".into()),
        ("jsonl", "out/thumbs/all.jsonl".into()),
        ("jsonl", "out/images/../journal.jsonl".into()),
        ("jsonl", "./out//nowhere/../journal.jsonl".into()),
        ("jsonl", "link/journal.jsonl".into()),
        ("jsonl", format!("{abs}/journal.jsonl")),
        ("jsonl", "out".into()),
        ("webdataset", "out".into()),
        ("webdataset", "link".into()),
        ("webdataset", "out/images".into()),
        ("webdataset", "out/images/new".into()),
        ("webdataset", "out/thumbs".into()),
    ] {
        let o = command(
            &["export", "out", "--format", format, "--out", &target],
            dir.path(),
            &[],
        )
        .output()
        .unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "--out {target}: {err}");
        assert!(err.contains(&target), "--out {target}: {err}");
    }
    assert_eq!(snapshot(&out), before, "the run folder is as it was");
    assert!(!out.join("images/new").exists());

    // The run goes on from its journal: nothing is paid again.
    let accepted = sim.ledger().accepted;
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().accepted, accepted);

    // An export beside the run's files, in its folder, is fine.
    let o = command(
        &[
            "export",
            "out",
            "--format",
            "jsonl",
            "--out",
            "out/all.jsonl",
        ],
        dir.path(),
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(jsonl_lines(&out.join("all.jsonl")).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_never_writes_into_a_shard() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    two_shards(&sim, dir.path()).await;
    std::os::unix::fs::symlink(dir.path().join("s0"), dir.path().join("link")).unwrap();
    let before = (
        snapshot(&dir.path().join("s0")),
        snapshot(&dir.path().join("s1")),
    );
    for target in [
        "s0",
        "s0/images",
        "s0/thumbs",
        "s1/images/merged",
        "s0/images/..",
        "link",
        "link/images",
    ] {
        let o = command(&["merge", "s0", "s1", "--out", target], dir.path(), &[])
            .output()
            .unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "--out {target}: {err}");
        assert!(err.contains(target), "--out {target}: {err}");
    }
    assert_eq!(
        (
            snapshot(&dir.path().join("s0")),
            snapshot(&dir.path().join("s1"))
        ),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_never_writes_thumbnails_into_another_run() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", JPEG_SWEEP);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        let o = run(&m, out, &sim.url(), &["--no-report"]).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    // a's images are older than b's (as an earlier run's are).
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for f in files_under(&a.join("images")) {
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let before = snapshot(&a);
    // b's thumbs/ is a link into a: b's thumbnails would land on a's images.
    std::os::unix::fs::symlink("../a", b.join("thumbs")).unwrap();
    let o = command(&["report", "b"], dir.path(), &[]).output().unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("thumbs"), "{err}");
    assert_eq!(snapshot(&a), before, "a is as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_report_read_only_images_of_the_folder() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "m.yaml",
        "defaults: {image_size: {width: 32, height: 32}, output_format: png}\nseeds: [1, 2, 3, 4, 5, 6]\njobs: [{id: a, prompt: cat}]\n",
    );
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let rows = results(&out);
    let first = rows[0]["files"].clone();
    // Somewhere else, an image and its sidecar, as valid as the run's own.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::copy(out.join(&first), elsewhere.join("x.png")).unwrap();
    std::fs::copy(
        out.join(&first).with_extension("json"),
        elsewhere.join("x.json"),
    )
    .unwrap();
    std::os::unix::fs::symlink(elsewhere.join("x.png"), out.join("images/evil.png")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("x.json"), out.join("images/evil.json")).unwrap();
    // A page with a script, named .png, consistently recorded.
    let page = b"<html><script>alert(1)</script></html>";
    let page_sha = batchgen::disk::hex(&<sha2::Sha256 as sha2::Digest>::digest(page));
    std::fs::write(out.join("images/fake.png"), page).unwrap();
    let mut side: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(&first).with_extension("json")).unwrap())
            .unwrap();
    side["sha256"] = page_sha.clone().into();
    side["file"] = "images/fake.png".into();
    std::fs::write(
        out.join("images/fake.json"),
        serde_json::to_vec(&side).unwrap(),
    )
    .unwrap();
    // A JPEG named .png.
    let jpeg = {
        let mut bytes = Vec::new();
        image::DynamicImage::new_rgb8(8, 8)
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        bytes
    };
    let jpeg_sha = batchgen::disk::hex(&<sha2::Sha256 as sha2::Digest>::digest(&jpeg));
    std::fs::write(out.join("images/jpeg.png"), &jpeg).unwrap();
    side["sha256"] = jpeg_sha.clone().into();
    side["file"] = "images/jpeg.png".into();
    std::fs::write(
        out.join("images/jpeg.json"),
        serde_json::to_vec(&side).unwrap(),
    )
    .unwrap();
    let outside_abs = elsewhere.join("x.png").display().to_string();
    let bad = [
        outside_abs.as_str(),
        "../elsewhere/x.png",
        "images/evil.png",
        "images/fake.png",
        "images/jpeg.png",
    ];
    edit_results(&out, |rows| {
        let sha = rows[0]["sha256"].clone();
        for (i, file) in bad.iter().enumerate() {
            let sha = match *file {
                "images/fake.png" => page_sha.clone(),
                "images/jpeg.png" => jpeg_sha.clone(),
                _ => sha.clone(),
            };
            rows[i].insert("files".into(), file.to_string());
            rows[i].insert("sha256".into(), sha);
        }
    });
    let ids: Vec<String> = results(&out)[..bad.len()]
        .iter()
        .map(|r| r["id"].clone())
        .collect();

    let o = command(
        &["export", "out", "--format", "jsonl", "--out", "all.jsonl"],
        dir.path(),
        &[],
    )
    .output()
    .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let lines = jsonl_lines(&dir.path().join("all.jsonl"));
    let exported: Vec<&str> = lines.iter().map(|l| l["file"].as_str().unwrap()).collect();
    assert_eq!(exported.len(), 1, "{exported:?}");
    assert_eq!(exported[0], results(&out)[5]["files"]);
    for (id, file) in ids.iter().zip(bad) {
        assert!(
            err.lines()
                .any(|l| l.contains(id.as_str()) && l.contains(file)),
            "{id} {file} is named: {err}"
        );
    }

    let wds = dir.path().join("wds");
    let o = command(
        &["export", "out", "--format", "webdataset", "--out", "wds"],
        dir.path(),
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let mut tar = tar::Archive::new(std::fs::File::open(wds.join("shard-000000.tar")).unwrap());
    assert_eq!(
        tar.entries().unwrap().count(),
        3,
        "one image, its caption and its json"
    );

    // The sheet links none of them, and makes no thumbnail of them.
    let o = command(&["report", "out"], dir.path(), &[])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    for file in ["evil.png", "fake.png", "jpeg.png", "elsewhere"] {
        assert!(
            !html.contains(&format!("href=\"images/{file}"))
                && !html.contains(&format!("href=\"../{file}")),
            "{file} is linked"
        );
    }
    assert!(!html.contains("href=\"../elsewhere"));
    assert!(!out.join("thumbs/images/evil.jpg").exists());
    assert!(html.contains(&format!("href=\"{}\"", results(&out)[5]["files"])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_folder_works_after_the_tree_is_moved() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    two_shards(&sim, &tree).await;
    let o = command(
        &["merge", "tree/s0", "tree/s1", "--out", "tree/merged"],
        dir.path(),
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let rows = results(&tree.join("merged"));
    let images: Vec<String> = rows
        .iter()
        .flat_map(|r| r["files"].split(';').map(String::from).collect::<Vec<_>>())
        .collect();
    assert_eq!(images.len(), 7);
    for f in &images {
        assert!(
            f.starts_with("../s"),
            "{f} is relative to the merged folder"
        );
    }

    // The whole tree moves (another mount point, another machine).
    let moved = dir.path().join("moved");
    std::fs::rename(&tree, &moved).unwrap();
    let o = command(&["report", "moved/merged"], dir.path(), &[])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!text(&o.stdout).contains("warning"), "{}", text(&o.stdout));
    let html = std::fs::read_to_string(moved.join("merged/index.html")).unwrap();
    assert_eq!(html.matches("<img class=\"thumb\"").count(), images.len());
    for f in &images {
        assert!(html.contains(&format!("href=\"{f}\"")), "{f}");
    }
    let o = command(
        &[
            "export",
            "moved/merged",
            "--format",
            "jsonl",
            "--out",
            "all.jsonl",
        ],
        dir.path(),
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let lines = jsonl_lines(&dir.path().join("all.jsonl"));
    assert_eq!(lines.len(), images.len());

    // A folder merged by an older batchgen (absolute paths, shards as
    // given) still exports.
    let old = moved.join("merged");
    let abs = |f: &str| old.join(f).canonicalize().unwrap().display().to_string();
    edit_results(&old, |rows| {
        for r in rows.iter_mut() {
            let files: Vec<String> = r["files"].split(';').map(abs).collect();
            r.insert("files".into(), files.join(";"));
        }
    });
    let mut summary = summary(&old);
    summary["shards"] = serde_json::json!([
        moved.join("s0").display().to_string(),
        moved.join("s1").display().to_string()
    ]);
    summary.as_object_mut().unwrap().remove("shard_dirs");
    std::fs::write(old.join("summary.json"), summary.to_string()).unwrap();
    let o = command(
        &[
            "export",
            "moved/merged",
            "--format",
            "jsonl",
            "--out",
            "old.jsonl",
        ],
        dir.path(),
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        jsonl_lines(&dir.path().join("old.jsonl")).len(),
        images.len()
    );
}

/// Starts `cmd` with the test hook that pauses it right after it created a
/// temporary file; returns the child once it says so, with that file.
// The child goes to the caller, which waits for it.
#[allow(clippy::zombie_processes)]
fn start_paused(mut cmd: Command, owner: &str) -> (Child, PathBuf) {
    cmd.env("BATCHGEN_PAUSE_AFTER_TEMP", owner)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "{owner} ended without pausing");
        if let Some(path) = line
            .trim_end()
            .strip_prefix("batchgen: paused after creating ")
        {
            // The rest of what it says is read, so that it can say it.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return (child, PathBuf::from(path));
        }
    }
}

fn kill(child: &Child, signal: &str) {
    assert!(Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

/// A finished run in `DIR/out` and its earlier export in `DIR/wds`.
async fn exported(sim: &batchgen::sim::SimHandle, dir: &Path) -> PathBuf {
    let m = write(dir, "m.yaml", JPEG_SWEEP);
    let out = dir.join("out");
    let o = run(&m, &out, &sim.url(), &["--no-report"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_leaves_no_temporary_file() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = exported(&sim, dir.path()).await;
    let d = dir.path();
    let wds_args = ["export", "out", "--format", "webdataset", "--out", "wds"];
    assert_eq!(
        command(&wds_args, d, &[]).output().unwrap().status.code(),
        Some(0)
    );
    let earlier = snapshot(&d.join("wds"));
    let jsonl_args = [
        "export",
        "out",
        "--format",
        "jsonl",
        "--out",
        "out/all.jsonl",
    ];
    for (args, owner, signal, code) in [
        (&wds_args[..], "export", "-INT", 130),
        (&jsonl_args[..], "export", "-TERM", 143),
        (&["report", "out"][..], "report", "-TERM", 143),
        (&["report", "out"][..], "report", "-INT", 130),
    ] {
        let (child, temp) = start_paused(command(args, d, &[]), owner);
        assert!(temp.is_file(), "{}", temp.display());
        kill(&child, signal);
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{args:?}");
        assert!(!temp.exists(), "{args:?}: {}", temp.display());
        assert_eq!(temporaries(d), Vec::<PathBuf>::new(), "{args:?}");
    }
    assert_eq!(
        snapshot(&d.join("wds")),
        earlier,
        "the earlier export is intact"
    );
    assert!(!out.join("all.jsonl").exists());

    // merge
    two_shards(&sim, d).await;
    let (child, temp) = start_paused(
        command(&["merge", "s0", "s1", "--out", "merged"], d, &[]),
        "merge",
    );
    assert!(temp.starts_with(d.join("merged")), "{}", temp.display());
    kill(&child, "-INT");
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(130));
    assert_eq!(temporaries(d), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_commands_temporaries_are_swept_by_the_next_and_live_ones_kept() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = exported(&sim, dir.path()).await;
    let d = dir.path();
    two_shards(&sim, d).await;
    for (args, owner) in [
        (
            &["export", "out", "--format", "webdataset", "--out", "wds"][..],
            "export",
        ),
        (
            &[
                "export",
                "out",
                "--format",
                "jsonl",
                "--out",
                "meta/all.jsonl",
            ][..],
            "export",
        ),
        (&["report", "out"][..], "report"),
        (&["merge", "s0", "s1", "--out", "merged"][..], "merge"),
    ] {
        let (mut child, temp) = start_paused(command(args, d, &[]), owner);
        kill(&child, "-KILL");
        child.wait().unwrap();
        assert!(temp.is_file(), "SIGKILL leaves {}", temp.display());
        let o = command(args, d, &[]).output().unwrap();
        assert!(
            matches!(o.status.code(), Some(0)),
            "{args:?}: {}",
            text(&o.stderr)
        );
        assert!(!temp.exists(), "{args:?} swept {}", temp.display());
        assert_eq!(temporaries(d), Vec::<PathBuf>::new(), "{args:?}");
    }

    // A live export's temporary is left alone: by another export to the
    // same place, by a report of its folder and by a run of its folder.
    let args = [
        "export",
        "out",
        "--format",
        "jsonl",
        "--out",
        "out/all.jsonl",
    ];
    let (child, temp) = start_paused(command(&args, d, &[]), "export");
    assert!(temp.starts_with(&out), "{}", temp.display());
    let o = command(&args, d, &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = command(&["report", "out"], d, &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = run(&d.join("m.yaml"), &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(temp.is_file(), "a live process's temporary is kept");
    kill(&child, "-INT");
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(130));
    assert!(!temp.exists());
    assert_eq!(temporaries(d), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporaries_an_older_export_left_are_swept_once_stale() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    exported(&sim, dir.path()).await;
    let d = dir.path();
    let args = ["export", "out", "--format", "webdataset", "--out", "wds"];
    assert_eq!(
        command(&args, d, &[]).output().unwrap().status.code(),
        Some(0)
    );
    // What a killed export of an earlier version left: `.tmp-` and six characters.
    let stale = d.join("wds/.tmp-Ab12Cd");
    let young = d.join("wds/.tmp-Zz98Yx");
    for p in [&stale, &young] {
        std::fs::write(p, b"half a shard").unwrap();
    }
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(
        command(&args, d, &[]).output().unwrap().status.code(),
        Some(0)
    );
    assert!(!stale.exists(), "an hour-old one is swept");
    assert!(young.exists(), "a recent one may be a live older export's");
}

/// An output that exists and is not what the command writes (a pipe, a
/// device, a folder where a file goes, a file where a folder goes) is
/// refused, exit 2, and left as it was: outputs are replaced whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_that_are_not_plain_files_or_folders_are_left_alone() {
    use std::os::unix::fs::FileTypeExt;
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    exported(&sim, dir.path()).await;
    let d = dir.path();
    let fifo = d.join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    std::fs::create_dir(d.join("a-folder")).unwrap();
    std::fs::write(d.join("a-file"), "mine").unwrap();
    for (format, to) in [
        ("jsonl", "pipe"),
        ("jsonl", "a-folder"),
        ("webdataset", "pipe"),
        ("webdataset", "a-file"),
    ] {
        let args = ["export", "out", "--format", format, "--out", to];
        let o = command(&args, d, &[]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("exists and is not"),
            "{}",
            text(&o.stderr)
        );
    }
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(d.join("a-folder").is_dir());
    assert_eq!(std::fs::read(d.join("a-file")).unwrap(), b"mine");
}

/// Reads `child`'s stderr (piped) until a line starting with `said`; panics
/// if it ends first. Returns the rest of the stream.
fn until_said(stderr: &mut BufReader<std::process::ChildStderr>, said: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "ended before saying {said:?}");
        if line.starts_with(said) {
            return;
        }
    }
}

/// A signal while an export puts its shards in place waits for them: the
/// folder holds the new export whole, never new shards beside old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_shards_are_put_in_place_leaves_no_mix() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    exported(&sim, dir.path()).await;
    let d = dir.path();
    // An earlier export, a shard per sample.
    let small = [
        "export",
        "out",
        "--format",
        "webdataset",
        "--out",
        "wds",
        "--shard-size",
        "4096",
    ];
    assert_eq!(
        command(&small, d, &[]).output().unwrap().status.code(),
        Some(0)
    );
    let shards = || {
        let mut names: Vec<String> = std::fs::read_dir(d.join("wds"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(shards().len(), 3, "{:?}", shards());
    // The new one fits in one shard; it is paused once that shard is in place.
    let resume = d.join("resume");
    let big = ["export", "out", "--format", "webdataset", "--out", "wds"];
    let resume_env = resume.to_str().unwrap();
    let mut cmd = command(
        &big,
        d,
        &[
            ("BATCHGEN_PAUSE_AFTER_TEMP", "export-commit"),
            ("BATCHGEN_RESUME_FILE", resume_env),
        ],
    );
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    until_said(&mut stderr, "batchgen: paused in a commit");
    kill(&child, "-INT");
    until_said(
        &mut stderr,
        "batchgen: waiting for the outputs being put in place",
    );
    std::fs::write(&resume, "").unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(shards(), ["shard-000000.tar"]);
    let tar = std::fs::File::open(d.join("wds/shard-000000.tar")).unwrap();
    let entries = tar::Archive::new(tar).entries().unwrap().count();
    assert_eq!(
        entries, 9,
        "three images, their captions and their sidecars"
    );
}
