//! Names the commit a binary was built from, for `batchgen --version`:
//! `batchgen 0.1.0 (abc1234)`.
//!
//! The commit is `BATCHGEN_COMMIT` if set (a build from a tarball can name
//! it), else `git rev-parse --short HEAD` in the source folder; a build
//! outside git, or without git installed, says so instead of failing. Cargo
//! reruns this when HEAD moves (a commit, a checkout): the files watched are
//! the ones git names, so a worktree works too. Nothing here is async.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BATCHGEN_COMMIT");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let commit = match std::env::var("BATCHGEN_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // A repository without a commit yet gets one later: watch it too.
            watch_head();
            git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "built outside git".into())
        }
    };
    println!("cargo:rustc-env=BATCHGEN_VERSION={version} ({commit})");
}

/// Reruns this script when HEAD, the branch it names or the packed refs change.
fn watch_head() {
    let mut files = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        files.push(git(&["rev-parse", "--git-path", &branch]));
    }
    files.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    for file in files.into_iter().flatten() {
        let path = dir.join(file);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// What git prints, trimmed, if it runs and succeeds in the source folder.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
