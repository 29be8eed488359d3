//! How batchgen ships: `--version` names the commit, and the static build,
//! the Dockerfile, `.ci/run` and the README agree on one build command and
//! one binary path. The binary itself is run in an empty chroot by
//! `.ci/chroot-test` (root only), which `.ci/run` calls after the tests.

use std::path::Path;
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of a Dockerfile or script that are not comments or blank.
fn code_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn binary_path() -> String {
    format!("target/{TARGET}/release/batchgen")
}

#[test]
fn version_names_the_version_and_the_commit() {
    let out = Command::new(env!("CARGO_BIN_EXE_batchgen"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let commit = match option_env!("BATCHGEN_COMMIT").filter(|c| !c.trim().is_empty()) {
        Some(c) => c.trim().to_string(),
        None => Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "built outside git".to_string()),
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("batchgen {} ({commit})\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_static_build_is_one_command_for_the_gnu_target() {
    let script = repo_file(".ci/static-build");
    let code = code_lines(&script).join("\n");
    assert!(code.contains("+crt-static"), "{code}");
    assert!(code.contains("BATCHGEN_STATIC_PROFILE:-release"), "{code}");
    assert!(code.contains(TARGET), "{code}");
    assert!(code.contains("/$profile/batchgen"), "{code}");
}

#[test]
fn the_image_is_the_static_binary_alone_run_by_a_non_root_user() {
    let dockerfile = repo_file("Dockerfile");
    let lines = code_lines(&dockerfile);
    let from: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(from, ["FROM scratch"], "building the image pulls nothing");
    assert!(
        !lines.iter().any(|l| l.starts_with("RUN ")),
        "scratch has no shell"
    );
    let copy = format!("COPY {} /usr/local/bin/batchgen", binary_path());
    assert!(lines.contains(&copy.as_str()), "{dockerfile}");
    assert!(lines.contains(&"ENV PATH=/usr/local/bin"), "{dockerfile}");
    assert!(lines.contains(&"USER 65534:65534"), "{dockerfile}");
    assert!(
        lines.contains(&r#"ENTRYPOINT ["batchgen"]"#),
        "{dockerfile}"
    );
    // The builder is sent the binary and nothing else.
    let ignore = repo_file(".dockerignore");
    let ignore = code_lines(&ignore);
    assert_eq!(ignore, ["*", format!("!{}", binary_path()).as_str()]);
}

#[test]
fn the_binary_brings_its_tls_roots_and_its_resolver() {
    let manifest = repo_file("Cargo.toml");
    let reqwest = manifest
        .lines()
        .find(|l| l.starts_with("reqwest "))
        .expect("reqwest is a dependency");
    // rustls-tls brings webpki-roots (compiled in; the system's roots are
    // added when it has them); hickory-dns resolves names without NSS.
    assert!(reqwest.contains("\"rustls-tls\""), "{reqwest}");
    assert!(reqwest.contains("\"hickory-dns\""), "{reqwest}");
}

#[test]
fn ci_runs_the_chroot_test_after_the_tests_and_the_readme_shows_the_commands() {
    let run = repo_file(".ci/run");
    let code = code_lines(&run);
    let test = code.iter().position(|l| *l == "cargo test");
    let chroot = code.iter().position(|l| *l == ".ci/chroot-test");
    assert!(
        matches!((test, chroot), (Some(t), Some(c)) if t < c),
        "{run}"
    );
    let readme = repo_file("README.md");
    for command in [
        "cargo install --path .",
        "batchgen --version",
        ".ci/static-build",
        "docker build -t batchgen .",
    ] {
        assert!(readme.contains(command), "README lacks `{command}`");
    }
}

/// A `FROM scratch` image has no /tmp: a command that reads a bucket says
/// where it wanted its working copy and what to do, before any request.
#[test]
fn a_bucket_reader_without_a_temporary_folder_says_to_set_tmpdir() {
    let out = Command::new(env!("CARGO_BIN_EXE_batchgen"))
        .args(["status", "s3://nightly/run"])
        .env("TMPDIR", "/nonexistent/batchgen-tmp")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "ship")
        .env("AWS_SECRET_ACCESS_KEY", "ship-secret")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/batchgen-tmp") && err.contains("TMPDIR"),
        "{err}"
    );
    assert!(!err.contains("ship-secret"), "{err}");
}
