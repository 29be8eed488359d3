//! Row ids through the real binary: two rows of one plan never share a file
//! name (a collision is refused with exit 2 and nothing is sent), and two
//! rows that send the same request are named in a warning by `plan` and `run`.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::*;

fn plan(manifest: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_batchgen"))
        .arg("plan")
        .arg(manifest)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("the binary runs")
}

/// Every file under `out/images`, by name.
fn image_names(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(out.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_mentions(stderr: &str, needles: &[&str]) {
    for n in needles {
        assert!(stderr.contains(n), "{n:?} is missing from:\n{stderr}");
    }
}

/// The example: a sweep suffix (`j` + `_g1.5`) meets a job id
/// (`j_g1.5`), so two rows are `j_g1.5_s2`. On d00fa90 `plan` listed both and
/// `run` exited 0 with 3 rows completed and 2 images: row 3 overwrote row 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_suffix_meeting_a_job_id_is_refused_and_nothing_is_sent() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "m.yaml",
        "sweep: {guidance_scale: [1.5, 2.5]}
jobs:
  - {id: j, prompt: first, seed: 2}
  - {id: j_g1.5, prompt: second, seed: 2, guidance_scale: 3}
",
    );
    let p = plan(&m);
    let stderr = text(&p.stderr);
    assert_eq!(p.status.code(), Some(2), "{stderr}");
    assert_mentions(
        &stderr,
        &[
            "m.yaml:4: job `j_g1.5`: id:",
            "`j_g1.5_s2`",
            "job `j` at ",
            "m.yaml:3",
            "give one of the two jobs another id",
        ],
    );
    assert!(text(&p.stdout).is_empty(), "no plan is listed");

    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert_mentions(&text(&o.stderr), &["`j_g1.5_s2`", "nothing was sent"]);
    assert_eq!(sim.ledger().submit_calls, 0, "nothing was sent");
    assert!(!out.join("images").exists(), "no folder was made");

    // Renamed as the error says, every row has files of its own.
    let m = write(
        dir.path(),
        "m.yaml",
        "sweep: {guidance_scale: [1.5, 2.5]}
defaults: {image_size: {width: 32, height: 32}}
jobs:
  - {id: j, prompt: first, seed: 2}
  - {id: k, prompt: second, seed: 2, guidance_scale: 3}
",
    );
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let rows = results(&out);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["status"] == "completed"), "{rows:#?}");
    assert_eq!(
        image_names(&out),
        [
            "j_g1.5_s2_0.jpg",
            "j_g1.5_s2_0.json",
            "j_g2.5_s2_0.jpg",
            "j_g2.5_s2_0.json",
            "k_s2_0.jpg",
            "k_s2_0.json"
        ]
    );
    let ledger = sim.ledger();
    assert_files_are_what_was_served(&out, &ledger);
    assert_never_paid_twice(&ledger);
}

/// On macOS and Windows `Cat_s1_0.png` and `cat_s1_0.png` are one file.
#[test]
fn ids_that_differ_only_in_case_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Two jobs.
    let m = write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  - {id: Cat, prompt: a, seed: 1}\n  - {id: cat, prompt: b, seed: 1}\n",
    );
    let p = plan(&m);
    let stderr = text(&p.stderr);
    assert_eq!(p.status.code(), Some(2), "{stderr}");
    assert_mentions(
        &stderr,
        &["jobs.yaml:3: job `cat`: id:", "jobs.yaml:2", "only in case"],
    );
    // Two rows of different jobs.
    let m = write(
        dir.path(),
        "rows.yaml",
        "sweep: {guidance_scale: [1.5]}\njobs:\n  - {id: j, prompt: a, seed: 1}\n  - {id: J_G1.5, prompt: b, seed: 1, guidance_scale: 3}\n",
    );
    let p = plan(&m);
    let stderr = text(&p.stderr);
    assert_eq!(p.status.code(), Some(2), "{stderr}");
    assert_mentions(
        &stderr,
        &[
            "rows.yaml:4: job `J_G1.5`: id:",
            "`J_G1.5_s1`",
            "`j_g1.5_s1`",
            "rows.yaml:3",
            "only in case",
        ],
    );
}

/// Ids are sanitised to file-name characters; two that become one are refused
/// with the id as written.
#[test]
fn ids_that_sanitise_to_one_name_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (a, b, both) in [("a/b", "a-b", "a-b"), ("../x", "x", "x"), ("q", "Q", "q")] {
        let m = write(
            dir.path(),
            "m.yaml",
            &format!(
                "jobs:\n  - {{id: \"{a}\", prompt: a, seed: 1}}\n  - {{id: \"{b}\", prompt: b, seed: 1}}\n"
            ),
        );
        let p = plan(&m);
        let stderr = text(&p.stderr);
        assert_eq!(p.status.code(), Some(2), "{a} / {b}: {stderr}");
        assert_mentions(&stderr, &["m.yaml:3: job", "m.yaml:2", both]);
    }
}

/// Jobs from a CSV collide like YAML ones, and are named by file and row.
#[test]
fn csv_jobs_are_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "prompts.csv",
        "id,prompt,seed,guidance_scale\nj,first,2,\nj_g1.5,second,2,3\n",
    );
    let m = write(
        dir.path(),
        "m.yaml",
        "sweep: {guidance_scale: [1.5, 2.5]}\njobs_from: prompts.csv\n",
    );
    let p = plan(&m);
    let stderr = text(&p.stderr);
    assert_eq!(p.status.code(), Some(2), "{stderr}");
    assert_mentions(
        &stderr,
        &[
            "prompts.csv:3 (row 2): job `j_g1.5`: id:",
            "`j_g1.5_s2`",
            "prompts.csv:2 (row 1)",
        ],
    );
    // A CSV manifest of its own: ids equal but for case.
    let m = write(dir.path(), "jobs.csv", "id,prompt,seed\nRed,a,1\nred,b,1\n");
    let p = plan(&m);
    let stderr = text(&p.stderr);
    assert_eq!(p.status.code(), Some(2), "{stderr}");
    assert_mentions(
        &stderr,
        &["jobs.csv:3 (row 2): job `red`: id:", "jobs.csv:2 (row 1)"],
    );
}

/// However many rows collide, the errors stay few and say how many more.
#[test]
fn many_collisions_are_counted_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml =
        String::from("sweep: {guidance_scale: [1.5]}\nseeds: {from: 1, count: 1000}\njobs:\n");
    for i in 0..30 {
        yaml.push_str(&format!(
            "  - {{id: j{i}, prompt: a{i}}}\n  - {{id: j{i}_g1.5, prompt: b{i}, guidance_scale: 3}}\n"
        ));
    }
    let m = write(dir.path(), "m.yaml", &yaml);
    let p = plan(&m);
    let stderr = text(&p.stderr);
    assert_eq!(p.status.code(), Some(2), "{stderr}");
    let lines = stderr.lines().filter(|l| l.starts_with("error:")).count();
    assert!(lines <= 12, "{lines} lines:\n{stderr}");
    assert_mentions(&stderr, &["j0_g1.5_s1", "29990 more rows"]);
}

/// Two rows sending the byte-identical request are paid twice for one
/// image: `plan` and `run` say so, naming both, and how to pay once. On
/// d00fa90 neither said a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_are_named_by_plan_and_run() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "m.yaml",
        "defaults: {image_size: {width: 32, height: 32}}
jobs:
  - {id: one, prompt: cat, seed: 5}
  - {id: two, prompt: cat, seed: 5}
  - {id: fresh, prompt: dog}
  - {id: fresh2, prompt: dog}
",
    );
    let needles = [
        "warning: ",
        "m.yaml:4: job `two`:",
        "`two_s5_dup1`",
        "`one_s5`",
        "m.yaml:3",
        "to pay once",
    ];
    let p = plan(&m);
    let stderr = text(&p.stderr);
    assert_eq!(p.status.code(), Some(0), "{stderr}");
    assert_mentions(&stderr, &needles);
    assert!(
        !stderr.contains("fresh"),
        "rows whose seeds are derived from their keys differ: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_mentions(&text(&o.stderr), &needles);
}

/// A million rows may repeat others: one is named per pair of jobs, the rest counted.
#[test]
fn identical_request_warnings_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "m.yaml",
        "seeds: {from: 1, count: 40}\njobs:\n  - {id: a, prompt: cat}\n  - {id: b, prompt: cat}\n",
    );
    let p = plan(&m);
    let stderr = text(&p.stderr);
    assert_eq!(p.status.code(), Some(0), "{stderr}");
    let lines = stderr.lines().filter(|l| l.starts_with("warning:")).count();
    assert_eq!(lines, 2, "{lines} lines:\n{stderr}");
    assert_mentions(&stderr, &["`b_s1_dup1`", "`a_s1`", "39 more rows"]);
}

#[tokio::test]
async fn a_row_id_too_long_for_a_file_name_still_saves_its_paid_image() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(240);
    let m = write(
        dir.path(),
        "m.yaml",
        &format!(
            "defaults: {{image_size: {{width: 32, height: 32}}}}\nsweep: {{guidance_scale: [1e-300]}}\njobs:\n  - {{id: {long}, prompt: cat, seed: 1}}\n  - {{id: short, prompt: dog, seed: 1}}\n"
        ),
    );
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let rows = results(&out);
    assert!(rows.iter().all(|r| r["status"] == "completed"));
    for row in &rows {
        let file = Path::new(&row["files"]).file_name().unwrap();
        assert!(file.len() < 100, "{file:?}");
        assert!(file.to_string_lossy().starts_with(&row["key"]), "{file:?}");
    }
    assert_files_are_what_was_served(&out, &sim.ledger());
}

/// An `images` folder that is a link (into another run, say) is never
/// written through: exit 2, nothing sent, the other run's images intact.
#[tokio::test]
async fn a_run_never_writes_through_a_linked_images_folder() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let first = write(
        dir.path(),
        "first.yaml",
        "defaults: {image_size: {width: 32, height: 32}}\njobs: [{id: j, prompt: first, seed: 1}]\n",
    );
    let a = dir.path().join("a");
    let o = run(&first, &a, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let before = image_names(&a);
    let shas: Vec<String> = before
        .iter()
        .map(|n| sha256_file(&a.join("images").join(n)))
        .collect();

    let second = write(
        dir.path(),
        "second.yaml",
        "defaults: {image_size: {width: 32, height: 32}}\njobs: [{id: j, prompt: second, seed: 1}]\n",
    );
    let b = dir.path().join("b");
    std::fs::create_dir(&b).unwrap();
    std::os::unix::fs::symlink("../a/images", b.join("images")).unwrap();
    let o = run(&second, &b, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("symbolic link"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(sim.ledger().accepted, 1, "nothing sent for the second run");
    assert_eq!(image_names(&a), before);
    for (n, sha) in before.iter().zip(&shas) {
        assert_eq!(&sha256_file(&a.join("images").join(n)), sha, "{n}");
    }
}
