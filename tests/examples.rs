//! The examples in `examples/` are checked, so that none names a flag that
//! does not exist or a file that is not there:
//!
//! - every YAML file parses; a Kubernetes file holds the kinds its name
//!   claims (a CronJob, an Indexed Job, a merge Job apart from the shards'),
//!   and the settings the examples rely on hold (`podFailurePolicy` with
//!   `restartPolicy: Never`, `concurrencyPolicy: Forbid`, no shell in an
//!   image that has none);
//! - every `batchgen …` command line in them (a container's command and
//!   args, a line of a shell script, a crontab line, a line in a comment or
//!   a workflow step), its shell variables given sample values, goes
//!   through the real binary: `run` with `--dry-run` on the examples'
//!   manifest (which prices it against its `--max-cost` and reads nothing
//!   else: no network), every other command with `--help` after its flags,
//!   which clap parses and checks first (an unknown flag or a bad value is
//!   its usage error, exit 2);
//! - every file a `kubectl apply -f` or `sbatch` line names is there, and
//!   every Job a `kubectl wait` names is in an example.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

/// The folder the cluster examples are in.
fn cluster() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster")
}

/// Every file in `examples/cluster`, with its text.
fn files() -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = std::fs::read_dir(cluster())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    found.sort();
    assert!(found.len() >= 10, "{found:?}");
    found
}

/// The sample value of a variable an example uses.
fn sample(name: &str) -> &'static str {
    match name {
        "JOB_COMPLETION_INDEX" | "SLURM_ARRAY_TASK_ID" => "3",
        "matrix.shard" => "1",
        "SLURM_SUBMIT_DIR" => "/shared/datasets",
        other => panic!("an example uses ${other}: give it a sample value here"),
    }
}

/// `text` with `$(X)`, `${X}`, `${{ X }}` and `$X` replaced by samples.
fn substitute(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, used) = if let Some(inner) = after.strip_prefix("{{") {
            let end = inner.find("}}").expect("a closed ${{ }}");
            (inner[..end].trim(), end + 4)
        } else if let Some(inner) = after.strip_prefix('(').or(after.strip_prefix('{')) {
            let end = inner.find([')', '}']).expect("a closed variable");
            (&inner[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        out.push_str(sample(name));
        rest = &after[used..];
    }
    out.push_str(rest);
    out
}

/// A command line split as a shell would (quotes, backslashes), ending at
/// the first shell operator or comment; `None` if a quote is left open
/// (prose, not a command).
fn split(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => word.get_or_insert_default().extend(chars.next()),
            (Some(_), c) => word.get_or_insert_default().push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            (None, '\\') => word.get_or_insert_default().extend(chars.next()),
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, '#' | '>' | '|' | ';' | '&') if word.is_none() => break,
            (None, c) => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    quote.is_none().then_some(words)
}

/// [`split`], prose as no words.
fn words(line: &str) -> Vec<String> {
    split(line).unwrap_or_default()
}

/// The subcommands a line may run.
const SUBCOMMANDS: &[&str] = &[
    "run",
    "plan",
    "merge",
    "status",
    "report",
    "export",
    "sim",
    "completions",
];

/// `text`'s lines, comment marks and list dashes taken off the front, a
/// line ending in `\` joined with the next.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        let bare = line.trim_start_matches([' ', '#', '-']);
        let (bare, next_open) = match bare.trim_end().strip_suffix('\\') {
            Some(b) => (b, true),
            None => (bare, false),
        };
        match lines.last_mut() {
            Some(last) if open => last.push_str(&format!(" {bare}")),
            _ => lines.push(bare.to_string()),
        }
        open = next_open;
    }
    lines
}

/// Every `batchgen SUB …` in `text`, as the words after `batchgen`, and
/// whether it is a whole command line (not a `snippet` in prose, which may
/// leave out what a run needs).
fn command_lines(text: &str) -> Vec<(Vec<String>, bool)> {
    let mut found = Vec::new();
    for line in logical_lines(text) {
        let mut from = 0;
        while let Some(at) = line[from..].find("batchgen ") {
            let start = from + at + "batchgen ".len();
            from = start;
            let snippet = line[..start - "batchgen ".len()].ends_with('`');
            let rest = &line[start..];
            let rest = match rest.find('`') {
                Some(end) if snippet => &rest[..end],
                _ => rest,
            };
            let rest = substitute(rest);
            let words = split(&rest).unwrap_or_else(|| panic!("an unclosed quote in {rest}"));
            if words
                .first()
                .is_some_and(|w| SUBCOMMANDS.contains(&w.as_str()))
            {
                found.push((words, !snippet));
            }
        }
    }
    found
}

/// The containers of every pod template in a Kubernetes document, with
/// the spec of the Job that runs them.
fn containers(doc: &Yaml) -> Vec<(&Yaml, &Yaml)> {
    let job = match doc["kind"].as_str() {
        Some("Job") => &doc["spec"],
        Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"],
        _ => return Vec::new(),
    };
    job["template"]["spec"]["containers"]
        .as_vec()
        .expect("a Job has containers")
        .iter()
        .map(|c| (job, c))
        .collect()
}

/// A container's command line: its command and args, or batchgen (the
/// image's entrypoint) and its args.
fn argv(container: &Yaml) -> Vec<String> {
    let list = |y: &Yaml| -> Vec<String> {
        y.as_vec()
            .map(|v| {
                v.iter()
                    .map(|w| {
                        let w = w.as_str().expect("command and args are strings");
                        substitute(w)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (command, args) = (list(&container["command"]), list(&container["args"]));
    if command.is_empty() {
        std::iter::once("batchgen".to_string())
            .chain(args)
            .collect()
    } else {
        command.into_iter().chain(args).collect()
    }
}

/// What the binary says of one command line: a whole `run` dry, others
/// `--help` after their flags.
fn check(file: &str, words: &[String], whole: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = words.to_vec();
    let dry = whole && args[0] == "run";
    if dry {
        // The manifest is the examples' one, wherever the example keeps it.
        assert!(
            args[1].ends_with("nightly-dataset.yaml"),
            "{file}: {words:?} runs another manifest than nightly-dataset.yaml"
        );
        args[1] = cluster().join("nightly-dataset.yaml").display().to_string();
        args.push("--dry-run".into());
    } else {
        args.push("--help".into());
    }
    let o = Command::new(env!("CARGO_BIN_EXE_batchgen"))
        .args(&args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("JOB_COMPLETION_INDEX", "3")
        .env("SLURM_ARRAY_TASK_ID", "3")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{file}: batchgen {}\n{}",
        words.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    let said = String::from_utf8_lossy(&o.stdout);
    let expect = if dry { "plan `" } else { "Usage: batchgen" };
    assert!(said.contains(expect), "{file}: {words:?}: {said}");
}

#[test]
fn every_command_line_in_the_examples_parses_and_plans() {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (name, text) in files() {
        let mut lines = command_lines(&text);
        if name.ends_with(".yaml") && name.starts_with("k8s-") {
            for doc in YamlLoader::load_from_str(&text).unwrap() {
                for (_, c) in containers(&doc) {
                    let argv = argv(c);
                    assert_eq!(argv[0], "batchgen", "{name}: the image has no shell");
                    lines.push((argv[1..].to_vec(), true));
                }
            }
        }
        for (words, whole) in &lines {
            check(&name, words, *whole);
            assert!(
                !words.contains(&"--partial".to_string()),
                "{name}: an example never merges part of a set"
            );
            seen.insert(format!("{name}: {}", words[0]));
        }
    }
    for expected in [
        "k8s-cronjob.yaml: run",
        "k8s-indexed-job.yaml: run",
        "k8s-indexed-job-merge.yaml: merge",
        "k8s-indexed-job-s3.yaml: run",
        "k8s-indexed-job-s3-merge.yaml: merge",
        "k8s-indexed-job-s3.yaml: export",
        "slurm-array.sh: run",
        "slurm-merge.sh: merge",
        "crontab: run",
        "github-actions-matrix.yml: run",
        "github-actions-matrix.yml: merge",
    ] {
        assert!(seen.contains(expected), "{expected} not found in {seen:?}");
    }
}

#[test]
fn the_kubernetes_files_hold_what_their_names_say() {
    let mut jobs: BTreeSet<String> = BTreeSet::new();
    let mut waits: Vec<(String, String)> = Vec::new();
    for (name, text) in files() {
        if name.ends_with(".yml") || name.ends_with(".yaml") {
            let docs = YamlLoader::load_from_str(&text).expect(&name);
            assert!(!docs.is_empty(), "{name}");
        }
        for line in logical_lines(&text) {
            for part in line.split("&&") {
                let words = words(part);
                let at = |w: &str| words.iter().position(|x| x == w);
                if words.first().is_some_and(|w| w == "kubectl") {
                    if let Some(i) = at("-f").filter(|_| words[1] == "apply") {
                        let file = &words[i + 1];
                        assert!(cluster().join(file).is_file(), "{name}: no {file}");
                    }
                    if words[1] == "wait" {
                        let job = words.iter().find_map(|w| w.strip_prefix("job/"));
                        waits.push((name.clone(), job.unwrap().to_string()));
                    }
                }
                for w in words
                    .iter()
                    .map(|w| w.trim_matches(['(', ')', ',', '.', '`']))
                {
                    if let Some(file) = w.strip_suffix(".sh").and(w.rsplit('/').next()) {
                        assert!(cluster().join(file).is_file(), "{name}: no {file}");
                    }
                }
            }
        }
        if name.ends_with(".yml") {
            let workflow = &YamlLoader::load_from_str(&text).unwrap()[0];
            assert!(workflow["jobs"].as_hash().is_some(), "{name}: a workflow");
        }
        if !(name.starts_with("k8s-") && name.ends_with(".yaml")) {
            continue;
        }
        let docs = YamlLoader::load_from_str(&text).unwrap();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds.len(), docs.len(), "{name}: a document without a kind");
        let indexed = |d: &Yaml| d["spec"]["completionMode"].as_str() == Some("Indexed");
        if name.contains("cronjob") {
            let cron = docs.iter().find(|d| d["kind"].as_str() == Some("CronJob"));
            let cron = cron.unwrap_or_else(|| panic!("{name}: no CronJob"));
            assert_eq!(cron["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"));
            let (_, c) = containers(cron)[0];
            let argv = argv(c);
            for flag in ["--max-cost", "--quiet", "--out"] {
                assert!(argv.iter().any(|a| a == flag), "{name}: no {flag}");
            }
            let key = &c["env"].as_vec().unwrap()[0];
            assert_eq!(key["name"].as_str(), Some("PIXAZO_API_KEY"));
            assert!(!key["valueFrom"]["secretKeyRef"].is_badvalue(), "{name}");
        } else if name.contains("merge") {
            // The merge is apart from the shards: applying it never starts them.
            assert!(docs.iter().all(|d| !indexed(d)), "{name}");
            let merge = docs.iter().find(|d| d["kind"].as_str() == Some("Job"));
            assert_eq!(argv(containers(merge.unwrap())[0].1)[1], "merge");
        } else if name.contains("indexed-job") {
            let job = docs.iter().find(|d| indexed(d));
            let job = job.unwrap_or_else(|| panic!("{name}: no Indexed Job"));
            jobs.insert(job["metadata"]["name"].as_str().unwrap().to_string());
            assert!(
                docs.iter()
                    .all(|d| containers(d).iter().all(|(_, c)| argv(c)[1] != "merge")),
                "{name}: the merge is a file of its own"
            );
        } else {
            panic!("{name}: which kind of example is it?");
        }
        for doc in &docs {
            for (job, c) in containers(doc) {
                let policy = &job["podFailurePolicy"]["rules"];
                let Some(rules) = policy.as_vec() else {
                    continue;
                };
                let pod = &job["template"]["spec"];
                assert_eq!(
                    pod["restartPolicy"].as_str(),
                    Some("Never"),
                    "{name}: podFailurePolicy needs restartPolicy: Never"
                );
                for rule in rules {
                    let action = rule["action"].as_str().unwrap();
                    assert!(
                        ["FailJob", "FailIndex", "Ignore", "Count"].contains(&action),
                        "{name}: {action}"
                    );
                    if action == "FailIndex" {
                        assert!(job["backoffLimitPerIndex"].as_i64().is_some(), "{name}");
                    }
                    let codes = &rule["onExitCodes"];
                    if !codes.is_badvalue() {
                        assert_eq!(codes["containerName"].as_str(), c["name"].as_str());
                        let values = codes["values"].as_vec().unwrap();
                        assert!(values.iter().all(|v| v.as_i64().is_some_and(|v| v > 0)));
                    }
                }
                // 1 (rows not completed) is never cured by a restart.
                let fails_on_1 = rules.iter().any(|r| {
                    r["action"].as_str().is_some_and(|a| a.starts_with("Fail"))
                        && r["onExitCodes"]["values"]
                            .as_vec()
                            .is_some_and(|v| v.contains(&Yaml::Integer(1)))
                });
                assert!(fails_on_1, "{name}: exit 1 must fail, not restart");
            }
        }
    }
    for (file, job) in waits {
        assert!(
            jobs.contains(&job),
            "{file} waits for job/{job}: no such Job"
        );
    }
}

#[test]
fn the_example_manifests_load() {
    for path in [
        cluster().join("nightly-dataset.yaml"),
        cluster().join("../quickstart.yaml"),
    ] {
        let manifest = batchgen::manifest::load(&path).unwrap();
        let plan = batchgen::plan::expand(&manifest).unwrap();
        assert!(!plan.rows.is_empty(), "{}", path.display());
    }
}
