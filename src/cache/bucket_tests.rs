//! The cache in a bucket, on object_store's `InMemory`: what is stored is
//! found by a later run and comes back checked; anything damaged is a miss
//! and forgotten; of two writers of one request, the first stands.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::TryStreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use super::super::{Cache, CacheError, Place};
use super::{block, Part};
use crate::api::ImageFormat;
use crate::disk::hex;
use crate::gateway::Gateway;
use crate::sim::render;
use crate::store::{Location, Store};

fn memory() -> (Store, Arc<InMemory>) {
    let mem = Arc::new(InMemory::new());
    let location = Location::parse("s3://cache/shared").unwrap();
    let bucket = location.bucket().unwrap().clone();
    (Store::over(bucket, mem.clone()).unwrap(), mem)
}

fn open(store: &Store) -> Cache {
    Cache::open_store(store.clone(), &Gateway::simulated()).unwrap()
}

fn part(cache: &Cache) -> &Part {
    match &cache.place {
        Place::Bucket(p) => p,
        Place::Folder(_) => panic!("a bucket's cache"),
    }
}

fn identity(what: &str) -> String {
    hex(&Sha256::digest(what.as_bytes()))
}

/// A picture saved as `dir/name`: its path and SHA-256, and its bytes.
fn saved(dir: &Path, name: &str, seed: u64) -> ((PathBuf, String), Vec<u8>) {
    let format = ImageFormat::of_name(Path::new(name)).unwrap();
    let bytes = render::image("cat", seed, 8, 8, format);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    ((path, hex(&Sha256::digest(&bytes))), bytes)
}

/// Every object in the bucket, by name.
fn names(mem: &InMemory) -> Vec<String> {
    let listed: Vec<_> = block(mem.list(None).try_collect::<Vec<_>>())
        .unwrap()
        .unwrap();
    let mut names: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
    names.sort();
    names
}

fn entry_of(id: &str) -> String {
    format!("shared/simulated/{}/{id}", &id[..2])
}

fn put(mem: &InMemory, name: &str, bytes: Vec<u8>) {
    let path = object_store::path::Path::parse(name).unwrap();
    block(mem.put(&path, PutPayload::from(bytes)))
        .unwrap()
        .unwrap();
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn a_stored_entry_is_found_by_a_later_run_and_comes_back_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mem) = memory();
    let cache = open(&store);
    let id = identity("request");
    assert!(cache.lookup(&id).is_none());
    let (file, picture) = saved(dir.path(), "a_0.png", 1);
    cache.store(&id, std::slice::from_ref(&file)).unwrap();
    assert!(cache.lookup(&id).is_some(), "what it stored, it finds");

    // The folder's layout under the prefix, entry.json beside the image.
    let objects = names(&mem);
    let entry = entry_of(&id);
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert_eq!(objects[1], format!("{entry}/entry.json"));
    assert!(
        objects[0].starts_with(&format!("{entry}/0-")) && objects[0].ends_with(".png"),
        "{objects:?}"
    );

    // A later run lists it once and takes it into its own folder.
    let later = open(&store);
    let hit = later.lookup(&id).expect("listed at open");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let taken = later.take(&hit, &out, "b_s1", ".part-").unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].path, out.join("b_s1_0.png"));
    assert_eq!(std::fs::read(&taken[0].path).unwrap(), picture);
    assert_eq!(taken[0].sha256, file.1);
    assert_eq!(taken[0].bytes, picture.len() as u64);
    assert_eq!(files_in(&out), 1, "no temporary file is left behind");

    // Storing it again sends nothing.
    later.store(&id, &[file]).unwrap();
    assert_eq!(names(&mem), objects);

    // Other requests, other gateways: misses.
    assert!(later.lookup(&identity("other request")).is_none());
    assert!(later.lookup("not an identity").is_none());
    let gateway = Gateway::of_url(&reqwest::Url::parse("https://h.example").unwrap());
    let elsewhere = Cache::open_store(store.clone(), &gateway).unwrap();
    assert!(elsewhere.lookup(&id).is_none());
}

#[test]
fn lookups_are_answered_from_the_listing_made_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _mem) = memory();
    let early = open(&store);
    let id = identity("request");
    let (file, _) = saved(dir.path(), "a_0.jpg", 2);
    open(&store).store(&id, &[file]).unwrap();
    assert!(
        early.lookup(&id).is_none(),
        "stored after it listed: not asked for again per row"
    );
    assert!(open(&store).lookup(&id).is_some());
}

#[test]
fn anything_damaged_is_a_miss_and_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mem) = memory();
    let png = render::image("cat", 3, 8, 8, ImageFormat::Png);
    let jpg = render::image("cat", 3, 8, 8, ImageFormat::Jpeg);
    let mut flipped = png.clone();
    flipped[40] ^= 1;
    let json = |name: &str, bytes: &[u8]| {
        serde_json::json!({"files": [{
            "name": name, "bytes": bytes.len(), "sha256": hex(&Sha256::digest(bytes))
        }]})
        .to_string()
        .into_bytes()
    };
    // What is wrong, the image object put (name, bytes), and entry.json.
    type Case = (&'static str, Option<(&'static str, Vec<u8>)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            "a flipped bit",
            Some(("0.png", flipped)),
            json("0.png", &png),
        ),
        (
            "a JPEG named .png",
            Some(("0.png", jpg.clone())),
            json("0.png", &jpg),
        ),
        (
            "a cut image",
            Some(("0.png", png[..png.len() - 4].to_vec())),
            { json("0.png", &png[..png.len() - 4]) },
        ),
        ("a missing image", None, json("0.png", &png)),
        (
            "a path, not a name",
            Some(("0.png", png.clone())),
            json("../0.png", &png),
        ),
        (
            "not an image's name",
            Some(("0.html", png.clone())),
            json("0.html", &png),
        ),
        ("no entry at all", None, b"{\"files\": 3}".to_vec()),
        ("more than it says", Some(("0.png", png.clone())), {
            let mut j: serde_json::Value = serde_json::from_slice(&json("0.png", &png)).unwrap();
            j["files"][0]["bytes"] = (png.len() - 1).into();
            j.to_string().into_bytes()
        }),
    ];
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for (n, (what, file, entry_json)) in cases.into_iter().enumerate() {
        let id = identity(&format!("request {n}"));
        let entry = entry_of(&id);
        if let Some((name, bytes)) = file {
            put(&mem, &format!("{entry}/{name}"), bytes);
        }
        put(&mem, &format!("{entry}/entry.json"), entry_json);
        let cache = open(&store);
        let hit = cache.lookup(&id).expect("an entry");
        let got = cache.take(&hit, &out, "x", ".part-");
        assert!(
            matches!(got, Err(CacheError::Damaged { .. })),
            "{what}: {got:?}"
        );
        assert_eq!(files_in(&out), 0, "{what}: nothing is left in the folder");
        cache.forget(&hit);
        assert!(cache.lookup(&id).is_none(), "{what}");
        assert!(
            !names(&mem).contains(&format!("{entry}/entry.json")),
            "{what}: its entry.json is deleted"
        );
        assert!(open(&store).lookup(&id).is_none(), "{what}");
    }
}

#[test]
fn a_changed_file_is_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mem) = memory();
    let cache = open(&store);
    let ((path, sha), _) = saved(dir.path(), "a_0.png", 4);
    std::fs::write(&path, b"not what was saved").unwrap();
    let id = identity("request");
    let got = cache.store(&id, &[(path, sha)]);
    assert!(matches!(got, Err(CacheError::Unstorable { .. })), "{got:?}");
    assert!(cache.lookup(&id).is_none());
    assert!(names(&mem).is_empty(), "{:?}", names(&mem));
}

#[test]
fn of_two_writers_of_one_request_the_first_stands_and_the_second_drops_its_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mem) = memory();
    let (first, second) = (open(&store), open(&store));
    let id = identity("request");
    let (a, picture) = saved(dir.path(), "a_0.png", 5);
    let (b, _) = saved(dir.path(), "b_0.png", 6);
    first.store(&id, &[a]).unwrap();
    let stood = names(&mem);
    // The second had looked before the first's entry.json was there: it
    // uploads its images, is refused entry.json, and deletes its images.
    block(part(&second).upload(&id, std::slice::from_ref(&b)))
        .unwrap()
        .unwrap();
    assert_eq!(names(&mem), stood, "the first's entry, untouched and alone");
    // Storing through the cache now sees the first's and sends nothing.
    second.store(&id, &[b]).unwrap();
    assert_eq!(names(&mem), stood);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let taken = second
        .take(&second.lookup(&id).unwrap(), &out, "c", ".part-")
        .unwrap();
    assert_eq!(std::fs::read(&taken[0].path).unwrap(), picture);
}

#[tokio::test]
async fn on_a_runtime_it_runs_on_the_blocking_pool_and_forget_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mem) = memory();
    let id = identity("request");
    let (file, _) = saved(dir.path(), "a_0.png", 7);
    let cache = {
        let (store, id) = (store.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            let cache = open(&store);
            cache.store(&id, &[file]).unwrap();
            cache
        })
        .await
        .unwrap()
    };
    let hit = cache.lookup(&id).unwrap();
    // From an async task, as the run forgets an entry that failed its checks.
    cache.forget(&hit);
    assert!(cache.lookup(&id).is_none());
    let json = object_store::path::Path::parse(format!("{}/entry.json", entry_of(&id))).unwrap();
    for _ in 0..100 {
        if mem.head(&json).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("entry.json was never deleted");
}

#[test]
fn a_failing_store_names_the_cache_and_never_its_credentials() {
    let closed = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let vars: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "AKIA-SECRET-ID-4711"),
        ("AWS_SECRET_ACCESS_KEY", "sk-SECRET-cache-4711"),
        ("AWS_SESSION_TOKEN", "tok-SECRET-4711"),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let retry = object_store::RetryConfig {
        max_retries: 0,
        ..crate::store::retry()
    };
    let location = Location::parse("s3://cache/shared").unwrap();
    let store = location.bucket().unwrap().open_with(&vars, retry).unwrap();
    let e = Cache::open_store(store, &Gateway::simulated()).unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(matches!(e, CacheError::Store { .. }), "{text}");
    assert!(text.contains("s3://cache/shared"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
}
