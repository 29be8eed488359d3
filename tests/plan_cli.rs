//! `batchgen plan` through the real binary: output, JSON, budgets, errors, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn batchgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_batchgen"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn plan_prints_totals_cost_and_first_rows() {
    let out = batchgen(&["plan", "examples/quickstart.yaml", "--rows", "3"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("requests  10 text_to_image + 0 image_to_image = 10"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cost      $0.50 + $0.00 = $0.50 estimated"),
        "{stdout}"
    );
    assert!(stdout.contains("watercolor-menu_g1.5_s1"), "{stdout}");
    assert!(stdout.contains("… and 7 more rows"), "{stdout}");
}

#[test]
fn plan_json_is_complete_and_parseable() {
    let out = batchgen(&[
        "plan",
        "manifests/image-to-image.yaml",
        "--json",
        "--rows",
        "100",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests"], 3);
    assert_eq!(v["requests_by_kind"]["image_to_image"], 3);
    assert_eq!(v["cost_usd"], 0.15);
    assert_eq!(v["image_to_image_price_assumed"], false);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["id"], "red-dress_s7");
    assert_eq!(rows[0]["kind"], "image_to_image");
    assert_eq!(rows[0]["seed"], 7);
    assert_eq!(rows[0]["image_size"]["width"], 1024);
    assert_eq!(rows[2]["image_urls"][0], "inputs/swatch.png");
    assert_eq!(rows[0]["key"].as_str().unwrap().len(), 16);
}

#[test]
fn every_shipped_manifest_plans() {
    let mut seen = 0;
    for dir in ["manifests", "examples"] {
        for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let out = batchgen(&["plan", path.to_str().unwrap()]);
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{}: {}",
                    path.display(),
                    text(&out.stderr)
                );
                seen += 1;
            }
        }
    }
    assert!(seen >= 4);
}

#[test]
fn max_cost_refuses_an_expensive_plan_with_exit_2() {
    // quickstart costs $0.50.
    let over = batchgen(&["plan", "examples/quickstart.yaml", "--max-cost", "0.49"]);
    assert_eq!(over.status.code(), Some(2));
    assert!(
        text(&over.stderr)
            .contains("the estimated cost $0.50 exceeds the budget of $0.49; nothing was sent"),
        "{}",
        text(&over.stderr)
    );
    assert!(over.stdout.is_empty());
    let ok = batchgen(&["plan", "examples/quickstart.yaml", "--max-cost", "0.50"]);
    assert_eq!(ok.status.code(), Some(0));
    assert!(text(&ok.stdout).contains("budget    $0.50"));
}

#[test]
fn budget_usd_in_the_manifest_is_a_max_cost_too() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "m.yaml",
        "budget_usd: 0.10\nseeds: {from: 1, count: 3}\njobs: [{prompt: cat}]\n",
    );
    let out = batchgen(&["plan", m.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("$0.15 exceeds the budget of $0.10"));
    // The lower of the two budgets is in force.
    let out = batchgen(&["plan", m.to_str().unwrap(), "--max-cost", "100"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn invalid_manifests_list_every_error_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "bad.yaml",
        "defaults:\n  guidence_scale: 1.5\njobs:\n  - id: a\n    prompt: cat\n    image_size: huge\n  - id: b\n    prompt: dog\n    num_images: zero\n",
    );
    let out = batchgen(&["plan", m.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let name = m.display().to_string();
    assert!(
        stderr.contains(&format!(
            "error: {name}:2: unknown parameter `guidence_scale`: did you mean `guidance_scale`?"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "error: {name}:6: job `a`: image_size: unknown size \"huge\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "error: {name}:9: job `b`: num_images: expected a positive integer"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("3 error(s) in the manifest; nothing was sent"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));

    let out = batchgen(&["plan", m.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[1]["line"], 6);
    assert_eq!(errors[1]["job"], "a");
    assert_eq!(errors[1]["field"], "image_size");
}

#[test]
fn csv_errors_name_the_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", "jobs_from: p.csv\n");
    write(
        dir.path(),
        "p.csv",
        "id,prompt,guidance_scale\nok,cat,1.5\nbad,dog,high\n",
    );
    let out = batchgen(&["plan", m.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let csv = dir.path().join("p.csv").display().to_string();
    assert!(
        text(&out.stderr).contains(&format!(
            "error: {csv}:3 (row 2): job `bad`: guidance_scale: expected a number, found \"high\""
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn unreadable_or_unknown_manifests_are_exit_2() {
    let out = batchgen(&["plan", "does-not-exist.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read does-not-exist.yaml"));
    let out = batchgen(&["plan", "Cargo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("must end in .yaml, .yml or .csv"));
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.yaml", "jobs: [\n");
    let out = batchgen(&["plan", m.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("YAML syntax error"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_errors_are_exit_2() {
    assert_eq!(batchgen(&["plan"]).status.code(), Some(2));
    assert_eq!(batchgen(&["frobnicate"]).status.code(), Some(2));
    let out = batchgen(&["plan", "examples/quickstart.yaml", "--max-cost", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not an amount of dollars"));
}

#[test]
fn warnings_go_to_stderr_and_do_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "m.yaml",
        &format!(
            "jobs: [{{id: long, prompt: \"{}\"}}]\n",
            "word ".repeat(120)
        ),
    );
    let out = batchgen(&["plan", m.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("warning:"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("job `long`: prompt: the prompt has 600 characters"));
}

fn plan(path: &Path) -> Output {
    batchgen(&["plan", path.to_str().unwrap()])
}

#[test]
fn an_alias_bomb_is_refused_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    // A few hundred bytes that would expand to a billion values.
    let mut yaml = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let items = vec![format!("*{}", pair[0]); 9].join(",");
        yaml.push_str(&format!("{}: &{} [{items}]\n", pair[1], pair[1]));
    }
    assert!(yaml.len() < 400);
    let m = write(dir.path(), "bomb.yaml", &yaml);
    let out = plan(&m);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("error: {}:7: ", m.display())),
        "{err}"
    );
    assert!(
        err.contains("once its aliases (`*name`) are expanded"),
        "{err}"
    );
}

#[test]
fn a_byte_order_mark_is_accepted_in_yaml_too() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "bom.yaml",
        "\u{feff}jobs: [{id: a, prompt: cat}]\n",
    );
    let out = plan(&m);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[cfg(unix)]
#[test]
fn manifests_and_local_images_must_be_regular_files_under_a_cap() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.yaml");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let out = plan(&fifo);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("pipe.yaml: is a FIFO (named pipe), not a regular file"),
        "{}",
        text(&out.stderr)
    );
    let csv_fifo = dir.path().join("more.csv");
    assert!(Command::new("mkfifo")
        .arg(&csv_fifo)
        .status()
        .unwrap()
        .success());
    let m = write(dir.path(), "m.yaml", "jobs_from: more.csv\n");
    let out = plan(&m);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("more.csv: is a FIFO"),
        "{}",
        text(&out.stderr)
    );

    // Sparse files: large to the reader, nothing on disk.
    let big = dir.path().join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(17 << 20)
        .unwrap();
    let out = plan(&big);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("big.yaml: is 17 MiB, larger than the 16 MiB allowed"),
        "{}",
        text(&out.stderr)
    );
    let image = dir.path().join("huge.png");
    let f = std::fs::File::create(&image).unwrap();
    use std::io::Write;
    (&f).write_all(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    f.set_len(11 << 20).unwrap();
    let m = write(
        dir.path(),
        "edit.yaml",
        "jobs: [{id: e, prompt: red, image_urls: [huge.png]}]\n",
    );
    let out = plan(&m);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("huge.png: is 11 MiB, larger than the 10 MiB allowed"),
        "{}",
        text(&out.stderr)
    );
    // A run refuses it before anything is written.
    let out_dir = dir.path().join("out");
    let out = batchgen(&[
        "run",
        m.to_str().unwrap(),
        "--simulate",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out_dir.exists(), "no folder, no journal, no intent");
}

#[test]
fn num_images_has_an_upper_bound() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "m.yaml",
        "jobs: [{id: a, prompt: cat, num_images: 5}]\n",
    );
    let out = plan(&m);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("job `a`: num_images: at most 4 images per request, found 5"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plan_points_out_a_sweep_over_seedless_jobs_and_hold_seed_quiets_it() {
    let dir = tempfile::tempdir().unwrap();
    let body = "sweep: {guidance_scale: [1.5, 2.5]}\njobs:\n  - {id: cat, prompt: a cat}\n";
    let m = write(dir.path(), "m.yaml", body);
    let out = batchgen(&["plan", m.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("  hint      job `cat` sweeps without a seed"),
        "{stdout}"
    );
    let json = batchgen(&["plan", m.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["hints"].as_array().unwrap().len(), 1, "{v}");

    let held = write(dir.path(), "held.yaml", &format!("hold_seed: true\n{body}"));
    let out = batchgen(&["plan", held.to_str().unwrap(), "--json", "--rows", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hints"], serde_json::json!([]));
    assert_eq!(v["rows"][0]["seed"], v["rows"][1]["seed"], "{v}");
}
