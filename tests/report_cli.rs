//! The contact sheet, `DIR/index.html`, opened from disk in a real headless
//! browser (Debian's chromium; `.ci/run` installs it): it loads with no
//! console message, shows one thumbnail per completed image and failed and
//! not-run rows in place, and its screenshot is not blank.
//!
//! The browser is found as `$BATCHGEN_CHROMIUM`, else `chromium`,
//! `chromium-browser` or `google-chrome` on PATH. Without one these tests
//! fail: they are the only check that the page works.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn browser() -> PathBuf {
    if let Some(p) = std::env::var_os("BATCHGEN_CHROMIUM") {
        return p.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no chromium found: install Debian's `chromium` (.ci/run does) or set BATCHGEN_CHROMIUM"
    );
}

/// What the browser made of a page: its DOM after load, its console lines,
/// and a screenshot.
struct Seen {
    dom: String,
    console: Vec<String>,
    shot: image::RgbImage,
}

fn open_in_browser(page: &Path) -> Seen {
    let profile = tempfile::tempdir().unwrap();
    let shot = profile.path().join("shot.png");
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let base = |cmd: &mut Command| {
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            // Tall enough that every lazily loaded thumbnail is in view.
            "--window-size=1280,4000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut cmd = Command::new(browser());
    base(&mut cmd);
    let o = cmd
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(String::from)
        .collect();
    let mut cmd = Command::new(browser());
    base(&mut cmd);
    let dom = cmd.arg("--dump-dom").arg(&url).output().unwrap();
    Seen {
        dom: String::from_utf8_lossy(&dom.stdout).into_owned(),
        console,
        shot: image::open(&shot).expect("a screenshot").into_rgb8(),
    }
}

/// A screenshot with content: many colours, and not mostly one of them.
fn assert_not_blank(shot: &image::RgbImage) {
    let mut counts = std::collections::HashMap::new();
    for p in shot.pixels() {
        *counts.entry(p.0).or_insert(0u64) += 1;
    }
    let most = counts.values().max().copied().unwrap_or(0);
    let total = u64::from(shot.width()) * u64::from(shot.height());
    assert!(counts.len() > 100, "{} colours", counts.len());
    assert!(most < total, "one colour everywhere");
    let inked = total - most;
    assert!(
        inked * 100 / total >= 2,
        "{inked} of {total} pixels are not background"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contact_sheet_shows_every_image_and_every_failure_in_a_browser() {
    // Some requests end FAILED; the wallet runs dry part way, leaving rows unrun.
    let sim = start(batchgen::sim::SimConfig {
        failed_rate: 0.2,
        fault_seed: 3,
        wallet_usd: Some(0.45),
        ..quick()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "sheet.yaml",
        "defaults: {image_size: {width: 96, height: 64}, output_format: png}\nseeds: [1, 2, 3]\nsweep: {guidance_scale: [1, 6]}\njobs:\n  - {id: fox, prompt: a red fox <b>in snow</b>}\n  - {id: owl, prompt: an owl at night, num_images: 2}\n",
    );
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &["--concurrency", "1"]).await;
    let rows = results(&out);
    let count = |s: &str| rows.iter().filter(|r| r["status"] == s).count();
    assert!(
        count("completed") > 0 && count("failed") > 0 && count("not_run") > 0,
        "{}",
        text(&o.stderr)
    );
    let images: Vec<String> = rows
        .iter()
        .filter(|r| r["status"] == "completed")
        .flat_map(|r| r["files"].split(';').map(String::from).collect::<Vec<_>>())
        .collect();

    // The run's end wrote the sheet; the browser sees every thumbnail and
    // nothing on its console.
    let page = out.join("index.html");
    let seen = open_in_browser(&page);
    assert!(seen.console.is_empty(), "console: {:#?}", seen.console);
    assert_eq!(
        seen.dom.matches("<img class=\"thumb\"").count(),
        images.len(),
        "one thumbnail per completed image"
    );
    for f in &images {
        assert!(seen.dom.contains(&format!("href=\"{f}\"")), "{f} is linked");
        let thumb = out.join("thumbs").join(f).with_extension("jpg");
        let t = image::open(&thumb).unwrap();
        assert!(t.width() <= 256 && t.height() <= 256);
    }
    for r in rows.iter().filter(|r| r["status"] == "failed") {
        assert!(
            seen.dom.contains(&r["error_code"]),
            "{} shows its error",
            r["id"]
        );
    }
    assert_eq!(
        seen.dom.matches("<div class=\"cell not_run\"").count(),
        count("not_run")
    );
    assert!(
        seen.dom.contains("a red fox &lt;b&gt;in snow&lt;/b&gt;"),
        "prompts are text, not markup"
    );
    // Grids: columns are the swept values by seed.
    assert!(seen.dom.contains("guidance 1 · seed 1") && seen.dom.contains("guidance 6 · seed 3"));
    assert!(seen
        .dom
        .contains(&format!("completed <b>{}</b>", count("completed"))));
    assert_not_blank(&seen.shot);

    // The detector works: a missing thumbnail is reported on the console.
    let victim = out.join("thumbs").join(&images[0]).with_extension("jpg");
    std::fs::remove_file(&victim).unwrap();
    let seen = open_in_browser(&page);
    assert!(
        seen.console
            .iter()
            .any(|l| l.contains("thumbnail did not load")),
        "console: {:#?}",
        seen.console
    );

    // `batchgen report` makes what is missing and keeps the rest.
    let o = batchgen(&["report", "out"], dir.path()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("(1 thumbnails made)"),
        "{}",
        text(&o.stdout)
    );
    assert!(victim.is_file());
    assert!(open_in_browser(&page).console.is_empty());

    // Not an output folder: exit 2, naming the file.
    let o = batchgen(&["report", "nowhere"], dir.path()).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("results.csv: no such file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_success_says_nothing_and_no_report_writes_no_sheet() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let out = dir.path().join("out");
    // The tests' runs are --quiet: a run that completes every row prints nothing.
    let o = run(&m, &out, &sim.url(), &["--no-report"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "");
    assert_eq!(text(&o.stderr), "");
    assert!(!out.join("index.html").exists());
    assert!(!out.join("thumbs").exists());
    assert_eq!(
        summary(&out)["rows_by_status"]["completed"],
        2,
        "the totals are in summary.json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_axis_sweep_wraps_into_headed_rows_under_the_manifests_name() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    // 2 × 2 × 6 = 24 cells: 6 seed columns, one row per steps and guidance value.
    let m = write(
        dir.path(),
        "wide.yaml",
        "name: Nightly <cats>\ndefaults: {image_size: {width: 48, height: 32}, output_format: png}\nseeds: {from: 1, count: 6}\nsweep: {num_inference_steps: [10, 20], guidance_scale: [1, 6]}\njobs:\n  - {id: cat, prompt: a cat}\n",
    );
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let seen = open_in_browser(&out.join("index.html"));
    assert!(seen.console.is_empty(), "console: {:#?}", seen.console);
    assert!(
        seen.dom.contains("<h1>Nightly &lt;cats&gt;</h1>"),
        "the heading is the manifest's name"
    );
    assert_eq!(seen.dom.matches("<img class=\"thumb\"").count(), 24);
    for s in 1..=6 {
        assert!(seen.dom.contains(&format!("<th>seed {s}</th>")), "seed {s}");
    }
    for head in [
        "steps 10 · guidance 1",
        "steps 10 · guidance 6",
        "steps 20 · guidance 1",
        "steps 20 · guidance 6",
    ] {
        assert!(
            seen.dom
                .contains(&format!("<th class=\"outer\">{head}</th>")),
            "{head}"
        );
    }
    assert_eq!(
        seen.dom.matches("<tr>").count(),
        1 + 4,
        "a header and 4 rows"
    );
    assert!(seen.dom.contains("rowspan=\"4\""));
    assert!(!seen.dom.contains("guidance 1 · seed"), "no 24-wide row");
    assert_not_blank(&seen.shot);
}
