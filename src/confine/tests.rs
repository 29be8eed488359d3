use super::*;

/// A run folder `run` (journal, results, images) and a plain folder `plain` in a temporary folder.
fn folders() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(run.join("images")).unwrap();
    std::fs::write(run.join("journal.jsonl"), b"").unwrap();
    std::fs::write(run.join("results.csv"), b"").unwrap();
    std::fs::create_dir(dir.path().join("plain")).unwrap();
    dir
}

#[test]
fn paths_resolve_as_the_system_will_write_them() {
    let dir = folders();
    let d = std::fs::canonicalize(dir.path()).unwrap();
    std::os::unix::fs::symlink(d.join("run"), d.join("link")).unwrap();
    std::os::unix::fs::symlink(d.join("gone"), d.join("dangling")).unwrap();
    for (given, real) in [
        ("run/journal.jsonl", "run/journal.jsonl"),
        ("link/journal.jsonl", "run/journal.jsonl"),
        ("run/images/../journal.jsonl", "run/journal.jsonl"),
        ("run/new/../journal.jsonl", "run/journal.jsonl"),
        ("link/new/deeper/../../results.csv", "run/results.csv"),
        ("./plain//x.jsonl", "plain/x.jsonl"),
    ] {
        assert_eq!(resolve(&d.join(given)).unwrap(), d.join(real), "{given}");
    }
    let e = resolve(&d.join("dangling/x")).unwrap_err();
    assert!(e.contains("leads nowhere"), "{e}");
}

#[test]
fn a_run_folders_own_files_and_the_inputs_are_refused() {
    let dir = folders();
    let d = std::fs::canonicalize(dir.path()).unwrap();
    let run = d.join("run");
    for (given, writes) in [
        ("run/journal.jsonl", Writes::File),
        ("run/images/x.jsonl", Writes::File),
        ("run/thumbs/x", Writes::Folder),
        ("run/.lock", Writes::File),
        ("run", Writes::Folder),
        ("run", Writes::Merged),
        ("plain/../run/.plan-keys", Writes::File),
    ] {
        let e = check_output("--out", &d.join(given), &[], writes).unwrap_err();
        assert!(e.to_string().starts_with("--out "), "{e}");
        assert!(e.to_string().contains(&run.display().to_string()), "{e}");
    }
    let e = check_output(
        "--out",
        &d.join("plain/."),
        &[&d.join("plain")],
        Writes::Folder,
    )
    .unwrap_err();
    assert!(e.why.contains("the folder this command reads"), "{e}");
    for ok in ["run/all.jsonl", "run/wds", "plain/x", "x.jsonl"] {
        assert!(
            check_output("--out", &d.join(ok), &[&run], Writes::File).is_ok(),
            "{ok}"
        );
    }
    // A merged folder (results and summary, no journal) may be merged into again.
    let merged = d.join("merged");
    std::fs::create_dir(&merged).unwrap();
    std::fs::write(merged.join("results.csv"), b"").unwrap();
    std::fs::write(merged.join("summary.json"), b"{}").unwrap();
    assert!(check_output("--out", &merged, &[], Writes::Merged).is_ok());
    assert!(check_output("--out", &merged, &[], Writes::Folder).is_err());
    assert!(check_output("--out", &merged.join("summary.json"), &[], Writes::File).is_err());
}

#[test]
fn files_are_read_only_inside_the_folder_or_a_recorded_shard() {
    let dir = folders();
    let d = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(d.join("run/images/a.png"), b"x").unwrap();
    std::fs::write(d.join("plain/b.png"), b"x").unwrap();
    std::os::unix::fs::symlink(d.join("plain/b.png"), d.join("run/images/link.png")).unwrap();
    let run = Sources::of(&d.join("run")).unwrap();
    assert_eq!(
        run.resolve("images/a.png").unwrap(),
        Found::Inside(d.join("run/images/a.png"))
    );
    for out in [
        "images/link.png",
        "../plain/b.png",
        &d.join("plain/b.png").display().to_string(),
    ] {
        assert!(
            matches!(run.resolve(out).unwrap(), Found::Outside(_)),
            "{out}"
        );
    }
    assert!(run.resolve("images/none.png").is_err());

    // A merged folder beside its shard reads the shard's files.
    let merged = d.join("merged");
    std::fs::create_dir(&merged).unwrap();
    std::fs::write(
        merged.join("summary.json"),
        br#"{"shards": ["/elsewhere"], "shard_dirs": ["../run", "../plain"]}"#,
    )
    .unwrap();
    let m = Sources::of(&merged).unwrap();
    assert!(matches!(
        m.resolve("../run/images/a.png").unwrap(),
        Found::Inside(_)
    ));
    assert!(
        matches!(m.resolve("../plain/b.png").unwrap(), Found::Outside(_)),
        "a recorded folder that holds no run is not a shard"
    );
    // An older merge: `shards` as given, absolute.
    std::fs::write(
        merged.join("summary.json"),
        format!(r#"{{"shards": ["{}"]}}"#, d.join("run").display()),
    )
    .unwrap();
    let old = Sources::of(&merged).unwrap();
    let abs = d.join("run/images/a.png").display().to_string();
    assert!(matches!(old.resolve(&abs).unwrap(), Found::Inside(_)));
}

#[test]
fn images_are_what_their_names_say() {
    assert!(image_as_named("a.png", b"\x89PNG\r\n\x1a\n").is_ok());
    assert!(image_as_named("a.JPG", &[0xFF, 0xD8, 0xFF, 0xE0]).is_ok());
    assert!(image_as_named("a.jpeg", &[0xFF, 0xD8, 0xFF]).is_ok());
    assert!(image_as_named("a.png", &[0xFF, 0xD8, 0xFF]).is_err());
    assert!(image_as_named("a.png", b"<html>").is_err());
    assert!(image_as_named("a.html", b"\x89PNG\r\n\x1a\n").is_err());
}

#[test]
fn relative_paths_climb_where_they_must() {
    let r = |b: &str, t: &str| relative(Path::new(b), Path::new(t));
    assert_eq!(
        r("/a/merged", "/a/s0/images/x.png"),
        Path::new("../s0/images/x.png")
    );
    assert_eq!(r("/a/m", "/a/m/shards/0/x"), Path::new("shards/0/x"));
    assert_eq!(r("/a/b/c", "/x"), Path::new("../../../x"));
}
