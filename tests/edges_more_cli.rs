//! More trust at the edges, through the real binary: sidecars are derived
//! from the journal and rewritten when they disagree with it, a disk fault
//! is told row by row and left where `status` can see it, and a YAML alias
//! bomb is refused in little memory.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use batchgen::sim::SimConfig;
use support::*;

/// Every row's sidecars, by image file (relative to `out`), as bytes.
fn sidecars(out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for row in results(out) {
        assert_eq!(row["status"], "completed", "{row:?}");
        for file in row["files"].split(';') {
            let side = out.join(file).with_extension("json");
            all.push((file.to_string(), std::fs::read(side).unwrap()));
        }
    }
    all
}

fn side_path(out: &Path, file: &str) -> PathBuf {
    out.join(file).with_extension("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_that_disagree_with_the_journal_are_rewritten_and_nothing_is_sent() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 5);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let good = sidecars(&out);
    assert_eq!(good.len(), 5);
    let edit = |n: usize, f: &dyn Fn(String) -> String| {
        let path = side_path(&out, &good[n].0);
        let before = String::from_utf8(good[n].1.clone()).unwrap();
        let after = f(before.clone());
        assert_ne!(after, before);
        std::fs::write(path, after).unwrap();
    };
    // Same length, parsable, another prompt.
    edit(0, &|s| s.replace("\"cat\"", "\"dog\""));
    // Another SHA-256 (one hex digit changed).
    edit(1, &|s| {
        let at = s.find("\"sha256\": \"").unwrap() + 11;
        let mut b = s.into_bytes();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    });
    // Not JSON, and JSON that is not a sidecar.
    edit(2, &|_| "{".into());
    edit(3, &|_| "{\"id\": 1}\n".into());
    // The row's cost says 0 (as if taken from the cache).
    edit(4, &|s| s.replace("\"cached\": false", "\"cached\": true"));

    let calls = sim.ledger().submit_calls;
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().submit_calls, calls, "nothing was sent");
    for (file, bytes) in &good {
        let now = std::fs::read(side_path(&out, file)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&now),
            String::from_utf8_lossy(bytes),
            "{file}: rewritten from the journal"
        );
    }
    // An export reads them without a word.
    let o = batchgen(
        &["export", "out", "--format", "jsonl", "--out", "x.jsonl"],
        dir.path(),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_blames_a_sidecar_that_disagrees_and_the_fix_it_names_works() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 3);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let rows = results(&out);
    let (image, sha) = (&rows[1]["files"], &rows[1]["sha256"]);
    let side = side_path(&out, image);
    let wrong = "0".repeat(64);
    let text_before = std::fs::read_to_string(&side).unwrap();
    std::fs::write(&side, text_before.replace(sha.as_str(), &wrong)).unwrap();
    assert_eq!(sha256_file(&out.join(image)), *sha, "the image is intact");

    let export = || {
        batchgen(
            &["export", "out", "--format", "jsonl", "--out", "x.jsonl"],
            dir.path(),
        )
    };
    let o = export().await;
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    let side_name = Path::new(image).with_extension("json");
    assert!(
        err.contains(&side_name.display().to_string()),
        "names the sidecar: {err}"
    );
    assert!(!err.contains("damaged"), "the image is not damaged: {err}");
    assert!(
        err.contains("batchgen run") && !err.contains("--verify"),
        "names a plain rerun: {err}"
    );
    // The fix it names: a plain rerun, which sends nothing.
    let calls = sim.ledger().submit_calls;
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().submit_calls, calls);
    assert_eq!(std::fs::read_to_string(&side).unwrap(), text_before);
    let o = export().await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_jobs_sidecars_carry_its_current_id() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 2);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let body = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, body.replace("{id: a,", "{id: renamed,")).unwrap();
    let calls = sim.ledger().submit_calls;
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        sim.ledger().submit_calls,
        calls,
        "the same rows, not sent again"
    );
    let rows = results(&out);
    assert_eq!(rows[0]["id"], "renamed_s1");
    for row in rows {
        for file in row["files"].split(';') {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(side_path(&out, file)).unwrap()).unwrap();
            assert_eq!(meta["id"], row["id"].as_str(), "{file}");
        }
    }
}

/// The row ids (`a_sN`) a line of text names.
fn ids_named(line: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut rest = line;
    while let Some(at) = rest.find("a_s") {
        let tail = &rest[at + 3..];
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            ids.insert(format!("a_s{digits}"));
        }
        rest = tail;
    }
    ids
}

/// Every line of stderr, and every row's error message, names at most one row.
fn assert_each_names_one_row(stderr: &str, out: &Path) {
    for line in stderr.lines() {
        assert!(ids_named(line).len() <= 1, "names another row: {line}");
    }
    for row in results(out) {
        let named = ids_named(&row["error_message"]);
        assert!(
            named.is_empty() || named == HashSet::from([row["id"].clone()]),
            "row {}: {}",
            row["id"],
            row["error_message"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_left_by_a_disk_fault_each_name_only_themselves() {
    // Half the requests take a minute; the others end after 300-400 ms,
    // once every row was submitted. No sidecar can be written (a folder
    // holds each one's name), so the first row to finish stops the run on
    // a disk fault, and the slow rows are left by that stop.
    let sim = start(SimConfig {
        slow_rate: 0.5,
        slow_latency_ms: 60_000,
        ..latency(300, 400)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 16);
    let out = dir.path().join("out");
    for n in 1..=16 {
        let blocker = out.join(format!("images/a_s{n}_0.json"));
        std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    }
    let o = run(&m, &out, &sim.url(), &["--concurrency", "16"]).await;
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("provenance of row a_s"), "{stderr}");
    let left: Vec<_> = results(&out)
        .into_iter()
        .filter(|r| r["status"] == "accepted")
        .collect();
    assert!(!left.is_empty(), "rows were left by the stop: {stderr}");
    assert!(left.iter().all(|r| r["error_code"] == "DISK"), "{left:#?}");
    assert_each_names_one_row(&stderr, &out);
}

/// Runs `script` with `sh` in a private mount namespace (`unshare`), as
/// root there, so that it may mount a tmpfs that no one else sees and that
/// goes when it ends. None if this machine allows no such namespace (tried
/// by mounting one on the folder `probe`).
fn in_mount_namespace(script: &str, args: &[&Path], probe: &Path) -> Option<std::process::Output> {
    for flags in [&["--mount"][..], &["--user", "--map-root-user", "--mount"]] {
        let probe = Command::new("unshare")
            .args(flags)
            .args(["sh", "-c", "mount -t tmpfs -o size=64k tmpfs \"$0\""])
            .arg(probe)
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            continue;
        }
        let mut cmd = Command::new("unshare");
        cmd.args(flags)
            .args(["sh", "-c", script, "sh"])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PIXAZO_API_KEY", KEY);
        return Some(cmd.output().unwrap());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_leaves_rows_status_shows_as_disk_and_a_rerun_collects_them() {
    let sim = start(latency(300, 600)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "m.yaml",
        "defaults: {image_size: {width: 512, height: 512}}\nseeds: {from: 1, count: 40}\njobs: [{id: a, prompt: cat}]\n",
    );
    let vol = dir.path().join("vol");
    let host = dir.path().join("host");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::create_dir_all(&host).unwrap();
    // A 1 MiB tmpfs with about 320 KiB free: room for a few rows' images.
    let script = r#"
        set -u
        bin=$1 m=$2 vol=$3 host=$4 url=$5
        mount -t tmpfs -o size=1m tmpfs "$vol" || exit 99
        head -c 737280 /dev/zero > "$vol/ballast" || exit 98
        "$bin" run "$m" --out "$vol/out" --base-url "$url" --poll-interval-ms 40 \
            --rate 200 --concurrency 16 --quiet --no-report 2> "$host/run1.err"
        echo $? > "$host/run1.code"
        "$bin" status --json "$vol/out" > "$host/status1.json"
        rm "$vol/ballast"
        "$bin" run "$m" --out "$vol/out" --base-url "$url" --poll-interval-ms 40 \
            --rate 200 --concurrency 16 --quiet --no-report 2> "$host/run2.err"
        echo $? > "$host/run2.code"
        "$bin" status --json "$vol/out" > "$host/status2.json"
        cp "$vol/out/results.csv" "$host/results.csv"
    "#;
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_batchgen"));
    let url = PathBuf::from(sim.url());
    let args = [bin, m, vol, host.clone(), url];
    let Some(o) = tokio::task::spawn_blocking(move || {
        let args: Vec<&Path> = args.iter().map(PathBuf::as_path).collect();
        in_mount_namespace(script, &args, args[2])
    })
    .await
    .unwrap() else {
        eprintln!("SKIPPED: this machine allows no private mount namespace (unshare)");
        return;
    };
    assert!(o.status.success(), "{}", text(&o.stderr));
    let read = |name: &str| std::fs::read_to_string(host.join(name)).unwrap();
    let stderr = read("run1.err");
    assert_eq!(read("run1.code").trim(), "3", "{stderr}");
    assert!(stderr.contains("no space left"), "{stderr}");
    for line in stderr.lines() {
        assert!(ids_named(line).len() <= 1, "names another row: {line}");
    }
    let status: serde_json::Value = serde_json::from_str(&read("status1.json")).unwrap();
    let accepted = &status["accepted_by_code"];
    assert!(
        accepted["DISK"].as_u64().unwrap_or(0) > 0,
        "rows left by the fault: {status:#}\n{stderr}"
    );
    assert_eq!(
        accepted.as_object().unwrap().len(),
        1,
        "every row left is DISK: {status:#}"
    );
    assert_eq!(status["uncertain"], 0, "{status:#}");
    assert_eq!(status["failed"], 0, "{status:#}");
    assert_eq!(
        status["completed"].as_u64().unwrap()
            + status["accepted"].as_u64().unwrap()
            + status["not_run"].as_u64().unwrap(),
        40,
        "{status:#}"
    );

    // Room again: a plain rerun collects them and submits the rest, paying
    // for nothing twice (so every request the first run paid for was either
    // completed or left to collect).
    assert_eq!(read("run2.code").trim(), "0", "{}", read("run2.err"));
    let status: serde_json::Value = serde_json::from_str(&read("status2.json")).unwrap();
    assert_eq!(status["completed"], 40, "{status:#}");
    let ledger = sim.ledger();
    assert_never_paid_twice(&ledger);
    assert_eq!(ledger.accepted, 40);
}

/// Runs `batchgen plan FILE` with at most `kib` KiB of data memory
/// (RLIMIT_DATA, `ulimit -d`): an allocation past it aborts the process.
async fn plan_within(kib: u64, file: &Path) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!("ulimit -d {kib} && exec \"$0\" plan \"$1\""),
        env!("CARGO_BIN_EXE_batchgen"),
    ])
    .arg(file)
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    output(cmd).await
}

/// Anchors `a` (holding `base`) to `i`, each a flow list of `fan` aliases to the one before.
fn bomb(base: &str, fan: usize, levels: usize) -> String {
    let names: Vec<char> = ('a'..='z').take(levels + 1).collect();
    let mut text = format!("a: &a {base}\n");
    for w in names.windows(2) {
        let items = vec![format!("*{}", w[0]); fan].join(",");
        text.push_str(&format!("{}: &{} [{items}]\n", w[1], w[1]));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_alias_bombs_are_refused_in_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    // The classic: nine "lol"s, nine levels deep (387 million values).
    let laughs = bomb(&format!("[{}]", ["\"lol\""; 9].join(",")), 9, 8);
    // Few values, long ones: a kilobyte repeated a million times.
    let long = bomb(&format!("\"{}\"", "x".repeat(1000)), 10, 6);
    assert!(laughs.len() < 400 && long.len() < 1300);
    for (name, body) in [("laughs.yaml", &laughs), ("long.yaml", &long)] {
        let file = write(dir.path(), name, body);
        // 48 MiB of data: three times what refusing them takes, a fifth of
        // what building the classic one to the cap took.
        let o = plan_within(48 * 1024, &file).await;
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(&format!("{name}:")) && err.contains("aliases"),
            "{name}: a located error about aliases: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_reuses_anchors_thousands_of_times_still_plans() {
    // 20,000 jobs, each repeating two anchored values: a few MiB of aliases.
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from(
        "defaults: {image_size: &size {width: 64, height: 64}, num_inference_steps: 30}\njobs:\n  - {id: j0, prompt: &p \"an elegant watercolor menu card painted on textured cream paper, soft turquoise washes\", seed: 0}\n",
    );
    for n in 1..20_000 {
        body.push_str(&format!(
            "  - {{id: j{n}, prompt: *p, seed: {n}, image_size: *size}}\n"
        ));
    }
    let file = write(dir.path(), "big.yaml", &body);
    let o = batchgen(&["plan", file.to_str().unwrap(), "--json"], dir.path()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

/// Aliases that stay just under both caps (1.5 million short strings, the
/// text within its 32 MiB) are built, and the tree stays under 200 MB: the
/// plan runs to its own verdict (a manifest without jobs) within 200 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_just_under_the_caps_are_built_in_under_200_mb() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = format!("s: &s \"{}\"\n", "z".repeat(22));
    body.push_str(&format!("l0: &l0 [{}]\n", vec!["*s"; 100].join(",")));
    body.push_str(&format!("l1: &l1 [{}]\n", vec!["*l0"; 100].join(",")));
    body.push_str(&format!("l2: [{}]\n", vec!["*l1"; 147].join(",")));
    let file = write(dir.path(), "under.yaml", &body);
    let o = plan_within(200 * 1024, &file).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        !err.contains("aliases"),
        "built, not refused for its aliases: {err}"
    );
    assert!(err.contains("under.yaml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_rows_file_that_cannot_be_read_stops_the_run_and_changes_nothing() {
    let sim = start(quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = seed_sweep(dir.path(), 4);
    let out = dir.path().join("out");
    let o = run(&m, &out, &sim.url(), &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let file = results(&out)[1]["files"].clone();
    let victim = out.join(&file);
    let kept = std::fs::read(&victim).unwrap();
    // There, but unreadable even by root: a link to itself (ELOOP).
    std::fs::remove_file(&victim).unwrap();
    std::os::unix::fs::symlink(victim.file_name().unwrap(), &victim).unwrap();
    let journal = std::fs::read(out.join("journal.jsonl")).unwrap();
    let before = sim.ledger();
    for verify in [&[][..], &["--verify"][..]] {
        let o = run(&m, &out, &sim.url(), verify).await;
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{verify:?}: {err}");
        assert!(err.contains("cannot read") && err.contains(&file), "{err}");
        assert!(err.contains("no row changed"), "{err}");
    }
    let after = sim.ledger();
    assert_eq!(after.submit_calls, before.submit_calls, "nothing sent");
    assert_eq!(
        after.download_calls, before.download_calls,
        "nothing fetched"
    );
    assert_eq!(after.status_calls, before.status_calls, "nothing polled");
    assert_eq!(std::fs::read(out.join("journal.jsonl")).unwrap(), journal);
    // Once it reads again, the row is done as it was.
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(&victim, &kept).unwrap();
    let o = run(&m, &out, &sim.url(), &["--verify"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(sim.ledger().submit_calls, before.submit_calls);
    assert_eq!(sim.ledger().download_calls, before.download_calls);
    assert!(results(&out).iter().all(|r| r["status"] == "completed"));
}
