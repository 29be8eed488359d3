//! A job's own `sweep:` and `hold_seed:`, and the hint `plan` gives.

use super::*;

fn ids(plan: &Plan) -> Vec<String> {
    plan.rows.iter().map(|r| plan.row_id(r)).collect()
}

#[test]
fn a_jobs_sweep_adds_to_the_manifests_and_overrides_it_per_parameter() {
    let plan = plan_of(
        "sweep: {guidance_scale: [1.5, 2.5]}
seeds: [1, 2]
jobs:
  - {id: top, prompt: a}
  - id: own
    prompt: b
    sweep: {num_inference_steps: [10, 20], guidance_scale: [4.0], seed: [9]}
",
    );
    assert_eq!(
        ids(&plan),
        [
            "top_g1.5_s1",
            "top_g1.5_s2",
            "top_g2.5_s1",
            "top_g2.5_s2",
            // The manifest's axis order, the job's values; its own axes after; seed last.
            "own_g4_steps10_s9",
            "own_g4_steps20_s9",
        ]
    );
}

#[test]
fn a_jobs_sweep_alone_sweeps_only_that_job() {
    let plan = plan_of(
        "jobs:
  - {id: a, prompt: a, sweep: {guidance_scale: [1, 2, 3]}, seed: 5}
  - {id: b, prompt: b, seed: 5}
",
    );
    assert_eq!(ids(&plan), ["a_g1_s5", "a_g2_s5", "a_g3_s5", "b_s5"]);
}

#[test]
fn a_jobs_sweep_errors_name_the_file_line_job_and_field() {
    let errs = errors_of(
        "jobs:
  - id: a
    prompt: a
    guidance_scale: 2
    sweep:
      guidance_scale: [1, 2]
      num_inference_steps: fast
      colour: [red]
  - {id: b, prompt: b, seeds: [1], sweep: {seed: [2]}}
",
    );
    for want in [
        "error: DIR/m.yaml:8: job `a`: unknown parameter `colour`: expected one of: prompt, image_urls, image_size, num_inference_steps, guidance_scale, seed, num_images, enable_safety_checker, output_format, sync_mode, enable_prompt_expansion",
        "error: DIR/m.yaml:6: job `a`: sweep.guidance_scale: the job sets `guidance_scale` and sweeps `guidance_scale`: keep one",
        "error: DIR/m.yaml:7: job `a`: sweep.num_inference_steps: a sweep is a list of values, found \"fast\"",
        "error: DIR/m.yaml:9: job `b`: sweep.seed: the job sets `seeds` and sweeps `seed`: keep one",
    ] {
        assert!(errs.iter().any(|e| e == want), "{want}\n{errs:#?}");
    }
}

#[test]
fn seedless_sweeps_keep_their_derived_seeds_unless_held() {
    let yaml = "sweep: {guidance_scale: [1.5, 2.5, 3.5]}
jobs:
  - {id: a, prompt: a}
";
    let derived = plan_of(yaml);
    let seeds = |p: &Plan| -> Vec<u64> { requests(p).iter().map(|r| r.seed.unwrap()).collect() };
    let d = seeds(&derived);
    assert!(
        d[0] != d[1] && d[1] != d[2],
        "today's derived seeds: one per cell"
    );
    let held = plan_of(&format!("hold_seed: true\n{yaml}"));
    let h = seeds(&held);
    assert!(h.iter().all(|s| *s == h[0]), "{h:?}");
    assert!(ids(&held)
        .iter()
        .all(|id| id.ends_with(&format!("_s{}", h[0]))));
    // Adding a swept value does not move the held seed.
    let more =
        plan_of("hold_seed: true\nsweep: {guidance_scale: [1.5, 9]}\njobs: [{id: a, prompt: a}]\n");
    assert_eq!(seeds(&more), [h[0], h[0]]);
    // A job's own `hold_seed` overrides the manifest's; jobs with seeds keep theirs.
    let mixed = plan_of(
        "hold_seed: true
sweep: {guidance_scale: [1, 2]}
jobs:
  - {id: free, prompt: a, hold_seed: false}
  - {id: held, prompt: a, sweep: {num_images: [1, 2]}}
  - {id: twin, prompt: a}
  - {id: seeded, prompt: a, seeds: [7]}
",
    );
    let s = seeds(&mixed);
    assert_ne!(s[0], s[1], "free: derived per cell");
    assert!(
        s[2..6].iter().all(|x| *x == s[2]),
        "held: one seed in 4 cells"
    );
    assert!(s[6..8].iter().all(|x| *x == s[6]), "twin: one seed");
    assert_ne!(s[2], s[6], "identical jobs still get different held seeds");
    assert_eq!(&s[8..], [7, 7]);
}

#[test]
fn hold_seed_is_true_or_false() {
    let errs = errors_of("hold_seed: sometimes\njobs: [{id: a, prompt: a, hold_seed: 3}]\n");
    assert_eq!(
        errs,
        [
            "error: DIR/m.yaml:1: hold_seed: expected true or false, found \"sometimes\"",
            "error: DIR/m.yaml:2: job `a`: hold_seed: expected true or false, found `3`",
        ]
    );
}

#[test]
fn plan_hints_at_sweeps_over_seedless_jobs() {
    let hints = |yaml: &str| Summary::new(&plan_of(yaml), 0, None).hints;
    let h = hints(
        "sweep: {guidance_scale: [1, 2]}
jobs: [{id: a, prompt: a}, {id: b, prompt: b, seed: 1}, {id: c, prompt: c, hold_seed: true}]
",
    );
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h[0].starts_with("job `a` sweeps without a seed"), "{h:?}");
    assert!(h[0].contains("hold_seed: true"), "{h:?}");
    assert!(hints("jobs: [{id: a, prompt: a}]\n").is_empty());
    assert!(hints("seeds: [1, 2]\njobs: [{id: a, prompt: a}]\n").is_empty());
}

#[test]
fn hold_seed_is_a_csv_column_too() {
    let (_dir, plan) = expand_files(&[
        (
            "m.yaml",
            "sweep: {guidance_scale: [1, 2]}\njobs_from: jobs.csv\n",
        ),
        (
            "jobs.csv",
            "id,prompt,hold_seed\nheld,a cat,true\nfree,a dog,\n",
        ),
    ]);
    let plan = plan.unwrap_or_else(|e| panic!("{:#?}", e.diagnostics));
    let s: Vec<u64> = requests(&plan).iter().map(|r| r.seed.unwrap()).collect();
    assert_eq!(s[0], s[1], "held: one seed");
    assert_ne!(s[2], s[3], "free: a derived seed per cell");
}
