//! Expansion: precedence, seeds, sweeps, keys, ids and prices.

use std::collections::HashMap;
use std::io::Write;

use super::*;
use crate::manifest::{self, Diagnostic};

/// Writes `files` (name, text) into a fresh folder and expands the first one.
fn expand_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Plan, Invalid>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::File::create(dir.path().join(name))
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let m = manifest::load(&dir.path().join(files[0].0)).unwrap();
    let plan = expand(&m);
    (dir, plan)
}

fn plan_of(yaml: &str) -> Plan {
    let (_dir, plan) = expand_files(&[("m.yaml", yaml)]);
    plan.unwrap_or_else(|e| panic!("{:#?}", e.diagnostics))
}

fn errors_of(yaml: &str) -> Vec<String> {
    let (_dir, plan) = expand_files(&[("m.yaml", yaml)]);
    match plan {
        Ok(_) => panic!("expected the manifest to be refused"),
        Err(e) => e
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| {
                d.to_string()
                    .replace(&*_dir.path().to_string_lossy(), "DIR")
            })
            .collect(),
    }
}

fn requests(plan: &Plan) -> Vec<Request> {
    plan.rows.iter().map(|r| plan.request(r)).collect()
}

#[test]
fn job_values_override_sweep_which_overrides_defaults() {
    let plan = plan_of(
        "defaults: {guidance_scale: 1.0, num_inference_steps: 20, output_format: png}
sweep: {guidance_scale: [2.0, 3.0]}
jobs:
  - {id: swept, prompt: a}
  - {id: pinned, prompt: b, guidance_scale: 9.5, output_format: jpeg}
",
    );
    let reqs = requests(&plan);
    assert_eq!(reqs.len(), 3, "the pinned job is not swept");
    assert_eq!(reqs[0].guidance_scale, Some(2.0));
    assert_eq!(reqs[1].guidance_scale, Some(3.0));
    assert_eq!(reqs[2].guidance_scale, Some(9.5));
    assert_eq!(reqs[2].output_format, Some(OutputFormat::Jpeg));
    assert!(reqs.iter().all(|r| r.num_inference_steps == Some(20)));
    assert_eq!(reqs[0].output_format, Some(OutputFormat::Png));
}

#[test]
fn seed_lists_ranges_and_single_seeds() {
    let plan = plan_of(
        "seeds: [5, 6]
jobs:
  - {id: list, prompt: a, seeds: [1, 2, 3]}
  - {id: range, prompt: b, seeds: {from: 100, count: 4}}
  - {id: one, prompt: c, seed: 7}
  - {id: text, prompt: d, seeds: \"10-12|20\"}
  - {id: global, prompt: e}
",
    );
    let seeds: Vec<u64> = requests(&plan).iter().map(|r| r.seed.unwrap()).collect();
    assert_eq!(
        seeds,
        [1, 2, 3, 100, 101, 102, 103, 7, 10, 11, 12, 20, 5, 6]
    );
}

#[test]
fn rows_without_a_seed_get_one_derived_from_their_key() {
    let plan = plan_of("jobs:\n  - {id: a, prompt: a cat}\n  - {id: b, prompt: a dog}\n");
    let reqs = requests(&plan);
    for (row, req) in plan.rows.iter().zip(&reqs) {
        assert_eq!(req.seed, Some(row.key.derived_seed()));
        assert!(plan
            .row_id(row)
            .ends_with(&format!("_s{}", req.seed.unwrap())));
        assert!(req.seed.unwrap() < (1 << 31));
    }
    assert_ne!(reqs[0].seed, reqs[1].seed);
    let again = plan_of("jobs:\n  - {id: a, prompt: a cat}\n  - {id: b, prompt: a dog}\n");
    assert_eq!(requests(&again), reqs, "derivation is deterministic");
}

#[test]
fn sweeps_are_cartesian_with_the_seed_innermost() {
    let plan = plan_of(
        "sweep:
  seed: [1, 2]
  guidance_scale: [1.0, 2.0]
  image_size: [square, 640x480]
jobs: [{id: j, prompt: p}]
",
    );
    let ids: Vec<String> = plan.rows.iter().map(|r| plan.row_id(r)).collect();
    assert_eq!(ids.len(), 8);
    assert_eq!(ids[0], "j_g1_square_s1");
    assert_eq!(ids[1], "j_g1_square_s2");
    assert_eq!(ids[2], "j_g1_640x480_s1");
    assert_eq!(ids[7], "j_g2_640x480_s2");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 8);
}

#[test]
fn keys_survive_reordering_and_additions() {
    let a = plan_of("seeds: [1, 2]\njobs:\n  - {id: x, prompt: cat}\n  - {id: y, prompt: dog}\n");
    let b = plan_of(
        "seeds: [1, 2]\njobs:\n  - {id: new, prompt: fox}\n  - {id: y2, prompt: dog}\n  - {id: x, prompt: cat}\n",
    );
    let keys = |p: &Plan| -> Vec<(String, u64)> {
        p.rows
            .iter()
            .map(|r| {
                (
                    p.request(r).prompt.to_string() + &p.request(r).seed.unwrap().to_string(),
                    r.key.0,
                )
            })
            .collect()
    };
    let (ka, kb) = (keys(&a), keys(&b));
    for entry in &ka {
        assert!(kb.contains(entry), "{entry:?} lost its key");
    }
    // The key is content, not the id: renaming `y` to `y2` keeps it.
    assert_eq!(kb.len(), 6);
}

#[test]
fn keys_change_with_any_parameter() {
    let base = plan_of("jobs: [{prompt: cat, seed: 1}]");
    for variant in [
        "jobs: [{prompt: cat, seed: 2}]",
        "jobs: [{prompt: Cat, seed: 1}]",
        "jobs: [{prompt: cat, seed: 1, num_images: 2}]",
        "jobs: [{prompt: cat, seed: 1, image_urls: [\"https://e.x/a.png\"]}]",
        "jobs: [{prompt: cat, seed: 1, guidance_scale: 1.5}]",
    ] {
        assert_ne!(plan_of(variant).rows[0].key, base.rows[0].key, "{variant}");
    }
    let same = plan_of("defaults: {seed: 1}\njobs: [{prompt: cat}]");
    assert_eq!(
        same.rows[0].key, base.rows[0].key,
        "where a value is written does not matter"
    );
}

#[test]
fn identical_requests_are_numbered_not_merged() {
    let plan =
        plan_of("jobs:\n  - {id: a, prompt: cat, seed: 1}\n  - {id: b, prompt: cat, seed: 1}\n");
    assert_eq!(plan.rows.len(), 2);
    assert_eq!((plan.rows[0].occurrence, plan.rows[1].occurrence), (0, 1));
    assert_ne!(plan.rows[0].key, plan.rows[1].key);
}

#[test]
fn jobs_from_reads_a_csv_relative_to_the_manifest() {
    let (_dir, plan) = expand_files(&[
        (
            "m.yaml",
            "defaults: {output_format: png}\nseeds: [1, 2]\njobs:\n  - {id: y, prompt: yaml}\njobs_from: more.csv\n",
        ),
        ("more.csv", "id,prompt,seeds,width,height\nc1,\"a, \"\"quoted\"\" prompt\",,640,480\nc2,plain,7|8|9,,\n"),
    ]);
    let plan = plan.unwrap();
    let reqs = requests(&plan);
    assert_eq!(reqs.len(), 2 + 2 + 3);
    assert_eq!(&*reqs[2].prompt, "a, \"quoted\" prompt");
    assert_eq!(
        reqs[2].image_size,
        Some(ImageSize::Custom {
            width: 640,
            height: 480
        })
    );
    assert_eq!(
        reqs[2].output_format,
        Some(OutputFormat::Png),
        "defaults apply to CSV jobs"
    );
    assert_eq!(reqs[6].seed, Some(9));
}

#[test]
fn image_urls_make_image_to_image_and_are_priced_apart() {
    let plan = plan_of(
        "pricing: {text_to_image: 0.04, image_to_image: 0.1}
jobs:
  - {id: t, prompt: cat, num_images: 3}
  - {id: i, prompt: edit, image_urls: [\"https://e.x/a.png\", \"data:image/png;base64,iVBOR\"], seeds: [1, 2]}
",
    );
    let t = plan.totals();
    assert_eq!(t.requests, [1, 2]);
    assert_eq!(t.images, [3, 2]);
    assert_eq!(t.cost(), Usd::from_micros(120_000 + 200_000));
    assert!(!plan.pricing.image_to_image_assumed);
}

#[test]
fn swept_num_images_is_priced_per_value() {
    let plan = plan_of("sweep: {num_images: [1, 4]}\nseeds: [1, 2, 3]\njobs: [{prompt: cat}]\n");
    assert_eq!(plan.totals().images, [15, 0]);
    assert_eq!(plan.totals().cost(), Usd::from_micros(750_000));
}

#[test]
fn an_unpriced_image_to_image_run_warns() {
    let plan = plan_of("jobs: [{prompt: e, image_urls: \"https://e.x/a.png\"}]");
    assert!(plan.pricing.image_to_image_assumed);
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.message.contains("no image-to-image price")));
}

#[test]
fn long_prompts_warn_without_failing() {
    let plan = plan_of(&format!(
        "jobs: [{{id: long, prompt: \"{}\"}}]",
        "x".repeat(501)
    ));
    let w = &plan.warnings[0];
    assert_eq!(w.job.as_deref(), Some("long"));
    assert!(w.message.contains("501 characters"));
}

#[test]
fn ids_are_sanitised_and_derived_ids_are_unique() {
    let plan = plan_of(
        "jobs:
  - {id: \"../../etc/passwd\", prompt: a}
  - {id: /abs, prompt: b}
  - {prompt: \"A red fox!\"}
  - {prompt: \"A red fox!\", seed: 3}
",
    );
    let ids: Vec<&str> = plan.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["etc-passwd", "abs", "a-red-fox", "a-red-fox-2"]);
    assert_eq!(sanitize("..."), "");
    assert_eq!(sanitize("ok_name-1.2"), "ok_name-1.2");
}

#[test]
fn an_id_made_from_a_prompt_never_differs_from_another_only_in_case() {
    let plan = plan_of("jobs:\n  - {id: Cat, prompt: x}\n  - {prompt: cat}\n");
    let ids: Vec<&str> = plan.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["Cat", "cat-2"], "one file on macOS and Windows");
}

/// Each way two rows' ids met on d00fa90: a swept value's suffix meeting a
/// job id (any swept parameter, ids written or made from the prompt), and
/// ids equal but for case.
#[test]
fn rows_whose_ids_clash_are_refused_naming_both() {
    let cases = [
        (
            "sweep: {guidance_scale: [1.5, 2.5]}\njobs:\n  - {id: j, prompt: first, seed: 2}\n  - {id: j_g1.5, prompt: second, seed: 2, guidance_scale: 3}\n",
            "DIR/m.yaml:4: job `j_g1.5`: id: its row `j_g1.5_s2` has the same id as row `j_g1.5_s2` of job `j` at DIR/m.yaml:3",
        ),
        (
            "sweep: {prompt: [a, b]}\njobs:\n  - {id: j, seed: 1}\n  - {id: j_p2, prompt: c, seed: 1}\n",
            "its row `j_p2_s1` has the same id as row `j_p2_s1` of job `j` at DIR/m.yaml:3",
        ),
        (
            "sweep: {num_images: [1, 2]}\njobs:\n  - {id: cat, prompt: x, seed: 1}\n  - {prompt: cat_n2, seed: 1, num_images: 3}\n",
            "DIR/m.yaml:4: job `cat_n2`: id: its row `cat_n2_s1` has the same id as row `cat_n2_s1` of job `cat`",
        ),
        (
            "sweep: {image_size: [square, 640x480]}\njobs:\n  - {id: j, prompt: a, seed: 1}\n  - {id: J_SQUARE, prompt: b, seed: 1, image_size: square_hd}\n",
            "its row `J_SQUARE_s1` and row `j_square_s1` of job `j` at DIR/m.yaml:3 differ only in case",
        ),
        (
            "seeds: [1, 2]\nsweep: {output_format: [png, jpeg]}\njobs:\n  - {id: x, prompt: a}\n  - {id: X_PNG, prompt: b, output_format: png}\n",
            "its row `X_PNG_s1` and row `x_png_s1` of job `x` at DIR/m.yaml:4 differ only in case",
        ),
    ];
    for (yaml, want) in cases {
        let errors = errors_of(yaml);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{want:?} not in {errors:#?}"
        );
        assert!(errors[0].ends_with("give one of the two jobs another id"));
    }
}

/// The clash check compares stems, then seeds, not whole ids: it must find
/// exactly the rows that comparing every id (in lower case) finds.
#[test]
fn the_clash_check_finds_what_comparing_every_id_finds() {
    let ids = [
        "j",
        "j_g1.5",
        "J_G2.5",
        "j_s2",
        "j_png",
        "J_PNG_s1",
        "j_square_g2.5",
        "J_JPEG",
    ];
    let sweeps = [
        "sweep: {guidance_scale: [1.5, 2.5]}\n",
        "sweep: {output_format: [png, jpeg], seed: [1, 2]}\n",
        "sweep: {image_size: [square, 640x480], guidance_scale: [2.5]}\nseeds: [2, 3]\n",
        "seeds: {from: 1, count: 3}\n",
    ];
    // Swept on all but the seed; pinned, with the sweep's seeds (or ones
    // derived from keys); pinned, another seed.
    let own = [
        "seed: 2",
        "prompt: q, guidance_scale: 1.5, output_format: png",
        "prompt: r, guidance_scale: 2.5, image_size: square, seed: 2",
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.yaml");
    let (mut manifests, mut with_clashes) = (0, 0);
    for sweep in sweeps {
        for a in ids {
            for b in ids.iter().filter(|b| !b.eq_ignore_ascii_case(a)) {
                for (va, vb) in own.iter().flat_map(|va| own.iter().map(move |vb| (va, vb))) {
                    let yaml = format!(
                        "defaults: {{prompt: p}}\n{sweep}jobs:\n  - {{id: {a}, {va}}}\n  - {{id: {b}, {vb}}}\n  - {{id: z, seed: 2}}\n"
                    );
                    std::fs::write(&path, &yaml).unwrap();
                    let m = manifest::load(&path).unwrap();
                    let plan = expand_checking(&m, false)
                        .unwrap_or_else(|e| panic!("{yaml}{:#?}", e.diagnostics));
                    let mut seen: HashMap<String, u32> = HashMap::new();
                    let mut want = Vec::new();
                    for (r, row) in plan.rows.iter().enumerate() {
                        let id = plan.row_id(row).to_ascii_lowercase();
                        match seen.get(&id) {
                            Some(&first) => want.push((first, r as u32)),
                            None => {
                                seen.insert(id, r as u32);
                            }
                        }
                    }
                    let got = ids::clashes(&plan.jobs, &plan.rows);
                    assert_eq!(got.count, want.len() as u64, "{yaml}");
                    for pair in &got.shown {
                        assert!(want.contains(pair), "{pair:?} in {yaml}");
                    }
                    manifests += 1;
                    with_clashes += usize::from(!want.is_empty());
                    assert_eq!(expand(&m).is_err(), !want.is_empty(), "{yaml}");
                }
            }
        }
    }
    assert!(with_clashes >= 14, "{with_clashes} of {manifests} clash");
}

#[test]
fn every_error_is_reported_with_its_line_job_and_field() {
    let errors = errors_of(
        "defaults:
  guidence_scale: 1.5
jobs:
  - id: a
    prompt: \"\"
  - id: b
    prompt: ok
    image_size: huge
    output_format: gif
    num_images: 0
    num_inference_steps: -1
    guidance_scale: lots
    seed: 1.5
    image_urls: [a.png, b.png, c.png, d.png, e.png]
  - id: c
    prompt: ok
    image_size: {width: 0, height: 99999}
    image_urls: [missing.png]
    enable_safety_checker: maybe
  - id: c
    prompt: again
",
    );
    let expect = [
        "DIR/m.yaml:2: unknown parameter `guidence_scale`: did you mean `guidance_scale`?",
        "DIR/m.yaml:5: job `a`: prompt: the prompt is empty",
        "DIR/m.yaml:8: job `b`: image_size: unknown size \"huge\"",
        "DIR/m.yaml:9: job `b`: output_format: expected `jpeg` or `png`, found \"gif\"",
        "DIR/m.yaml:10: job `b`: num_images: expected a positive integer, found `0`",
        "DIR/m.yaml:11: job `b`: num_inference_steps: expected a positive integer, found `-1`",
        "DIR/m.yaml:12: job `b`: guidance_scale: expected a number, found \"lots\"",
        "DIR/m.yaml:13: job `b`: seed: expected an integer, found `1.5`",
        "DIR/m.yaml:14: job `b`: image_urls: 1 to 4 images are accepted, found 5",
        "DIR/m.yaml:17: job `c`: image_size: width must be from 16 to 4096 pixels, found `0`",
        "DIR/m.yaml:18: job `c`: image_urls: local image DIR/missing.png: no such file",
        "DIR/m.yaml:19: job `c`: enable_safety_checker: expected true or false, found \"maybe\"",
        "DIR/m.yaml:20: job `c`: id: id `c` is already used by the job at DIR/m.yaml:15",
    ];
    for e in expect {
        assert!(
            errors
                .iter()
                .any(|got| got.starts_with(&format!("error: {e}"))),
            "missing {e:?} in {errors:#?}"
        );
    }
}

#[test]
fn seed_problems_are_errors() {
    let cases = [
        (
            "seeds: [1, 1]\njobs: [{prompt: a}]",
            "seed 1 is listed twice",
        ),
        (
            "seeds: {from: 1}\njobs: [{prompt: a}]",
            "needs `from` and `count`",
        ),
        (
            "seeds: {from: 1, count: 0}\njobs: [{prompt: a}]",
            "`count` is a whole number",
        ),
        (
            "seeds: {from: 1, cnt: 2}\njobs: [{prompt: a}]",
            "only `from` and `count`",
        ),
        ("seeds: []\njobs: [{prompt: a}]", "no seeds given"),
        (
            "jobs: [{prompt: a, seed: 1, seeds: [2]}]",
            "both `seed` and `seeds`",
        ),
        (
            "seeds: [1]\nsweep: {seed: [2]}\njobs: [{prompt: a}]",
            "both by `seeds` and by `sweep.seed`",
        ),
        ("jobs: [{prompt: a, seeds: \"5-3\"}]", "not a seed range"),
    ];
    for (yaml, want) in cases {
        let errors = errors_of(yaml);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{yaml}: {errors:?}"
        );
    }
}

#[test]
fn structural_problems_are_errors() {
    let cases = [
        ("jobs: []", "no jobs"),
        (
            "jobs: [{prompt: a, colour: red}]",
            "unknown job key `colour`",
        ),
        (
            "jobz: []",
            "unknown manifest key `jobz`: did you mean `jobs`?",
        ),
        (
            "sweep: {guidance_scale: 2}\njobs: [{prompt: a}]",
            "a sweep is a list",
        ),
        (
            "sweep: {guidance_scale: [1, 1.0]}\njobs: [{prompt: a}]",
            "listed twice",
        ),
        (
            "pricing: {text_to_image: -1}\njobs: [{prompt: a}]",
            "expected a price",
        ),
        ("jobs: [{seed: 1}]", "no prompt"),
        (
            "jobs: [{prompt: a, image_urls: [\"ftp://x/y.png\"]}]",
            "only http(s) URLs",
        ),
        (
            "jobs: [{prompt: a, image_urls: [\"data:text/plain,hi\"]}]",
            "a data URI must look like",
        ),
        ("jobs_from: nope.csv\njobs: [{prompt: a}]", "cannot read"),
        (
            "jobs: [{prompt: a, output_format: jpg}]",
            "did you mean `jpeg`",
        ),
        (
            "jobs: [{prompt: a, image_size: squar_hd}]",
            "did you mean `square_hd`",
        ),
    ];
    for (yaml, want) in cases {
        let errors = errors_of(yaml);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{yaml}: {errors:?}"
        );
    }
}

#[test]
fn local_images_must_be_images() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pic.png"), b"\x89PNG\r\n\x1a\n0000").unwrap();
    std::fs::write(dir.path().join("text.png"), b"hello").unwrap();
    let m = dir.path().join("m.yaml");
    std::fs::write(
        &m,
        "jobs: [{prompt: a, image_urls: [pic.png]}, {prompt: b, image_urls: [text.png]}]",
    )
    .unwrap();
    let mut errors = expand(&manifest::load(&m).unwrap())
        .unwrap_err()
        .diagnostics;
    errors.retain(Diagnostic::is_error);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("is not a PNG, JPEG or WebP"));
    std::fs::remove_file(dir.path().join("text.png")).unwrap();
    std::fs::write(&m, "jobs: [{prompt: a, image_urls: [pic.png]}]").unwrap();
    let plan = expand(&manifest::load(&m).unwrap()).unwrap();
    let urls = plan.request(&plan.rows[0]).image_urls.unwrap();
    assert_eq!(
        urls[0],
        ImageInput::File {
            written: "pic.png".into(),
            path: dir.path().join("pic.png")
        }
    );
}

#[test]
fn csv_manifests_are_jobs_by_row() {
    let (_dir, plan) = expand_files(&[(
        "m.csv",
        "id,prompt,seed,image_size,num_images,output_format,image_urls,enable_safety_checker,sync_mode,enable_prompt_expansion,guidance_scale,num_inference_steps\n\
         a,cat,1,landscape_hd,2,png,,false,true,yes,2.5,40\n\
         b,edit,2,,,,https://e.x/1.png|https://e.x/2.png,,,,,\n",
    )]);
    let plan = plan.unwrap();
    let r = requests(&plan);
    assert_eq!(r[0].image_size, Some(ImageSize::Preset("landscape_hd")));
    assert_eq!(r[0].num_images, Some(2));
    assert_eq!(r[0].enable_safety_checker, Some(false));
    assert_eq!(r[0].sync_mode, Some(true));
    assert_eq!(r[0].enable_prompt_expansion, Some(true));
    assert_eq!(r[0].guidance_scale, Some(2.5));
    assert_eq!(r[0].num_inference_steps, Some(40));
    assert_eq!(r[1].kind(), Kind::ImageToImage);
    assert_eq!(r[1].image_urls.as_ref().unwrap().len(), 2);
    assert_eq!(r[1].image_size, None, "empty cells leave parameters unset");
}

#[test]
fn csv_errors_name_the_row() {
    let (_dir, plan) = expand_files(&[("m.csv", "id,prompt,num_images\na,cat,1\nb,dog,many\n")]);
    let d = &plan.unwrap_err().diagnostics[0];
    assert!(
        d.to_string()
            .contains("m.csv:3 (row 2): job `b`: num_images:"),
        "{d}"
    );
}

#[test]
fn usd_is_exact_and_readable() {
    assert_eq!(
        Usd::from_dollars(0.05).unwrap().times(3).to_string(),
        "$0.15"
    );
    assert_eq!(Usd::from_micros(12_500).to_string(), "$0.0125");
    assert_eq!(Usd::from_micros(25_000_000).to_string(), "$25.00");
    assert!(Usd::from_dollars(-1.0).is_none());
    let many = Usd::from_dollars(0.05).unwrap().times(1_000_000);
    assert_eq!(many.to_string(), "$50000.00");
}

mod job;
