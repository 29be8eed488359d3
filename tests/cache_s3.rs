//! `--cache` on a bucket against a real S3 implementation, moto's server
//! on loopback (see `tests/support/moto.rs`): an entry stored by one run is
//! listed by the next, taken into its folder checked, and a damaged one is
//! refused and forgotten. The cache's methods block, so they run on the
//! blocking pool, as the run calls them.

#[path = "../benches/common/group.rs"]
mod group;
#[path = "support/moto.rs"]
mod moto;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use batchgen::api::ImageFormat;
use batchgen::cache::{Cache, CacheError};
use batchgen::disk::hex;
use batchgen::gateway::Gateway;
use batchgen::store::Store;

/// Opens the cache on the blocking pool (it lists the bucket once).
async fn open(store: &Store) -> Cache {
    let store = store.clone();
    tokio::task::spawn_blocking(move || Cache::open_store(store, &Gateway::simulated()).unwrap())
        .await
        .unwrap()
}

async fn names(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = store
        .inner()
        .list(Some(store.prefix()))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_stored_in_a_bucket_is_taken_by_the_next_run_checked() {
    let Some(moto) = moto::Moto::with_bucket(
        "an_entry_stored_in_a_bucket_is_taken_by_the_next_run_checked",
        "cache",
    )
    .await
    else {
        return;
    };
    let store = moto.open("s3://cache/shared");
    let dir = tempfile::tempdir().unwrap();
    let picture = batchgen::sim::render::image("cat", 1, 8, 8, ImageFormat::Png);
    let src = dir.path().join("a_0.png");
    std::fs::write(&src, &picture).unwrap();
    let sha = hex(&Sha256::digest(&picture));
    let id = hex(&Sha256::digest(b"request"));

    // One run stores it; a run opened before it did stores it again, and
    // sends nothing (the first's entry stands).
    let (first, second) = (open(&store).await, open(&store).await);
    let files: Vec<(PathBuf, String)> = vec![(src, sha.clone())];
    let (first, files) = {
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            first.store(&id, &files).unwrap();
            (first, files)
        })
        .await
        .unwrap()
    };
    assert!(first.lookup(&id).is_some());
    let stood = names(&store).await;
    let entry = format!("shared/simulated/{}/{id}", &id[..2]);
    assert_eq!(stood.len(), 2, "{stood:?}");
    assert_eq!(stood[1], format!("{entry}/entry.json"));
    let second = {
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            second.store(&id, &files).unwrap();
            second
        })
        .await
        .unwrap()
    };
    assert_eq!(names(&store).await, stood);
    drop(second);

    // The next run finds it in its listing and takes it, checked.
    let next = open(&store).await;
    let hit = next.lookup(&id).expect("listed at open");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (next, taken) = {
        let (hit, out) = (hit.clone(), out.clone());
        tokio::task::spawn_blocking(move || {
            let taken = next.take(&hit, &out, "b_s1", ".part-").unwrap();
            (next, taken)
        })
        .await
        .unwrap()
    };
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].path, out.join("b_s1_0.png"));
    assert_eq!(std::fs::read(&taken[0].path).unwrap(), picture);
    assert_eq!(taken[0].sha256, sha);

    // An image changed in the bucket is refused, and the entry forgotten.
    let image = object_store::path::Path::parse(&stood[0]).unwrap();
    let mut other = picture.clone();
    other[40] ^= 1;
    store
        .inner()
        .put(&image, PutPayload::from(other))
        .await
        .unwrap();
    let (next, got) = {
        let (hit, out) = (hit.clone(), out.clone());
        tokio::task::spawn_blocking(move || {
            let got = next.take(&hit, &out, "c", ".part-");
            (next, got)
        })
        .await
        .unwrap()
    };
    assert!(matches!(got, Err(CacheError::Damaged { .. })), "{got:?}");
    assert!(!out.join("c_0.png").exists());
    next.forget(&hit);
    assert!(next.lookup(&id).is_none());
    let json = object_store::path::Path::parse(format!("{entry}/entry.json")).unwrap();
    for _ in 0..600 {
        if store.inner().head(&json).await.is_err() {
            assert!(open(&store).await.lookup(&id).is_none());
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("entry.json was never deleted");
}
