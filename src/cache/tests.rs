//! The cache in a folder: what goes in comes back checked, or not at all.

use super::*;
use crate::sim::render;

fn dir_of(hit: &Hit) -> PathBuf {
    match &hit.at {
        At::Folder { dir, .. } => dir.clone(),
        At::Bucket { .. } => panic!("a folder's hit"),
    }
}

fn stored(hit: &Hit) -> Stored {
    match &hit.at {
        At::Folder { stored, .. } => stored.clone(),
        At::Bucket { .. } => panic!("a folder's hit"),
    }
}

fn root(cache: &Cache) -> PathBuf {
    match &cache.place {
        Place::Folder(f) => f.root.clone(),
        Place::Bucket(_) => panic!("a folder's cache"),
    }
}

fn gateway(url: &str) -> Gateway {
    Gateway::of_url(&reqwest::Url::parse(url).unwrap())
}

#[test]
fn stored_files_come_back_checked_and_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let src = out.join("a_0.png");
    let picture = render::image("cat", 1, 8, 8, ImageFormat::Png);
    std::fs::write(&src, &picture).unwrap();
    let sha = hex(&Sha256::digest(&picture));
    let cache = Cache::open(&dir.path().join("cache"), &Gateway::simulated()).unwrap();
    let id = hex(&Sha256::digest(b"request"));
    assert!(cache.lookup(&id).is_none());
    cache.store(&id, &[(src.clone(), sha.clone())]).unwrap();
    cache.store(&id, &[(src.clone(), sha.clone())]).unwrap();
    let hit = cache.lookup(&id).expect("stored");
    assert_eq!(stored(&hit).files[0].bytes, picture.len() as u64);

    let elsewhere = dir.path().join("other");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let taken = cache.take(&hit, &elsewhere, "b_s1", ".part-").unwrap();
    assert_eq!(taken[0].path, elsewhere.join("b_s1_0.png"));
    assert_eq!(std::fs::read(&taken[0].path).unwrap(), picture);
    assert_eq!(taken[0].sha256, sha);

    // A stored file changed behind the store's back is refused.
    let entry = dir_of(&hit).join("0.png");
    std::fs::remove_file(&entry).unwrap();
    let mut other = picture.clone();
    other[40] ^= 1;
    std::fs::write(&entry, &other).unwrap();
    assert!(matches!(
        cache.take(&hit, &elsewhere, "c", ".part-"),
        Err(CacheError::Damaged { .. })
    ));
    assert!(!elsewhere.join("c_0.png").exists());
    cache.forget(&hit);
    assert!(cache.lookup(&id).is_none());
    let left: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file is left behind");
}

#[cfg(unix)]
#[test]
fn the_store_and_the_outputs_never_share_a_file() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a_0.jpg");
    let picture = render::image("cat", 1, 8, 8, ImageFormat::Jpeg);
    std::fs::write(&src, &picture).unwrap();
    let sha = hex(&Sha256::digest(&picture));
    let cache = Cache::open(&dir.path().join("cache"), &Gateway::simulated()).unwrap();
    let id = hex(&Sha256::digest(b"request"));
    cache.store(&id, &[(src.clone(), sha.clone())]).unwrap();
    let hit = cache.lookup(&id).unwrap();
    let stored = std::fs::metadata(dir_of(&hit).join("0.jpg")).unwrap();
    let taken = cache.take(&hit, dir.path(), "b", ".part-").unwrap();
    for path in [&src, &taken[0].path] {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(meta.nlink(), 1, "{}", path.display());
        assert_ne!((meta.dev(), meta.ino()), (stored.dev(), stored.ino()));
    }
    // An output changed before it is stored is not stored.
    let changed = dir.path().join("c_0.jpg");
    std::fs::write(&changed, b"not what was saved").unwrap();
    let other = hex(&Sha256::digest(b"other request"));
    assert!(matches!(
        cache.store(&other, &[(changed, sha)]),
        Err(CacheError::Unstorable { .. })
    ));
    assert!(cache.lookup(&other).is_none());
}

#[test]
fn only_whole_images_of_the_declared_format_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&dir.path().join("cache"), &Gateway::simulated()).unwrap();
    let png = render::image("cat", 1, 8, 8, ImageFormat::Png);
    let jpg = render::image("cat", 1, 8, 8, ImageFormat::Jpeg);
    let page = b"<html><script>alert(1)</script></html>".to_vec();
    for (n, (name, bytes)) in [
        ("0.png", page.clone()),
        ("0.html", page),
        ("0.png", jpg),
        ("0.png", png[..png.len() - 4].to_vec()),
    ]
    .into_iter()
    .enumerate()
    {
        let id = hex(&Sha256::digest(format!("request {n}")));
        let folder = local::entry_dir(&root(&cache), &id);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(name), &bytes).unwrap();
        let entry = Stored {
            files: vec![StoredFile {
                name: name.into(),
                bytes: bytes.len() as u64,
                sha256: hex(&Sha256::digest(&bytes)),
            }],
        };
        std::fs::write(folder.join(ENTRY_JSON), serde_json::to_vec(&entry).unwrap()).unwrap();
        let hit = cache.lookup(&id).expect("an entry");
        let got = cache.take(&hit, dir.path(), "x", ".part-");
        assert!(
            matches!(got, Err(CacheError::Damaged { .. })),
            "{name} {n}: {got:?}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing left"
        );
    }
}

#[test]
fn entries_stored_by_origin_serve_only_base_urls_without_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cache");
    let picture = render::image("cat", 1, 8, 8, ImageFormat::Png);
    let src = dir.path().join("a_0.png");
    std::fs::write(&src, &picture).unwrap();
    let sha = hex(&Sha256::digest(&picture));
    let id = hex(&Sha256::digest(b"request"));
    // Stored as versions that knew only origins laid the store out.
    let root = gateway("https://h.example");
    Cache::open(&store, &root)
        .unwrap()
        .store(&id, &[(src, sha)])
        .unwrap();
    let now = store.join(folder_name(root.base()));
    std::fs::rename(&now, store.join("https-h.example")).unwrap();

    assert!(Cache::open(&store, &gateway("HTTPS://h.example:443/"))
        .unwrap()
        .lookup(&id)
        .is_some());
    for other in [
        "https://h.example/a",
        "https://h.example:8443",
        "http://h.example",
    ] {
        let cache = Cache::open(&store, &gateway(other)).unwrap();
        assert!(cache.lookup(&id).is_none(), "{other}");
    }
    let names: std::collections::HashSet<String> = [
        "http://h/a",
        "http://h/b",
        "http://h/a/b",
        "http://h/a-b",
        "http://h",
        "http://h:81",
    ]
    .iter()
    .map(|u| folder_name(gateway(u).base()))
    .collect();
    assert_eq!(names.len(), 6, "{names:?}");
}

#[test]
fn store_errors_lose_the_query_of_every_url() {
    assert_eq!(
        without_queries("GET https://a.example/c/x?sv=1&sig=SECRET failed: 403"),
        "GET https://a.example/c/x?… failed: 403"
    );
    assert_eq!(
        without_queries("\"http://h/p?sig=SECRET\", then http://h/q"),
        "\"http://h/p?…\", then http://h/q"
    );
    assert_eq!(without_queries("what? no URL here"), "what? no URL here");
}
