//! A bucket opened through `store` against a real S3 implementation, moto's
//! server on loopback (see `tests/support/moto.rs`): the settings come from
//! the same variables as in production (`AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`, credentials, region), given to the builder rather than
//! set in the process's environment. What the journal and the lease will
//! stand on: objects land under the prefix, and `PutMode::Create` on an
//! existing key is `AlreadyExists` (moto answers `If-None-Match: *` with
//! 412), the old object untouched.

#[path = "../benches/common/group.rs"]
mod group;
#[path = "support/moto.rs"]
mod moto;

use futures_util::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutPayload};

use batchgen::store::Store;

/// A store at `s3://bench/nightly` of a moto with a bucket `bench`. The
/// environment also asks for conditional puts to be off: `open` turns them
/// on whatever it says, as the journal's segments need them.
fn store(moto: &moto::Moto) -> Store {
    let mut env = moto.env();
    env.push(("AWS_CONDITIONAL_PUT".into(), "disabled".into()));
    moto.open_with("s3://bench/nightly", &env)
}

#[tokio::test]
async fn objects_round_trip_under_the_prefix_and_create_never_overwrites() {
    let Some(moto) = moto::Moto::with_bucket(
        "objects_round_trip_under_the_prefix_and_create_never_overwrites",
        "bench",
    )
    .await
    else {
        return;
    };
    let store = store(&moto);
    let s3 = store.inner();

    // A put and a get, under the prefix.
    let key = store.path("images/a_1.png").unwrap();
    assert_eq!(key.as_ref(), "nightly/images/a_1.png");
    s3.put(&key, PutPayload::from_static(b"first"))
        .await
        .unwrap();
    let got = s3.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"first");

    // Create-only: the first put of a key succeeds, the second is refused
    // as AlreadyExists and leaves the first's bytes.
    let segment = store.path("journal/00000001.jsonl").unwrap();
    s3.put_opts(
        &segment,
        PutPayload::from_static(b"one\n"),
        PutMode::Create.into(),
    )
    .await
    .unwrap();
    let again = s3
        .put_opts(
            &segment,
            PutPayload::from_static(b"two\n"),
            PutMode::Create.into(),
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    let got = s3.get(&segment).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"one\n");

    // A listing under the prefix sees both, and nothing outside it.
    let outside = object_store::path::Path::from("elsewhere/x");
    s3.put(&outside, PutPayload::from_static(b"x"))
        .await
        .unwrap();
    let mut listed: Vec<String> = s3
        .list(Some(store.prefix()))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    listed.sort();
    assert_eq!(
        listed,
        ["nightly/images/a_1.png", "nightly/journal/00000001.jsonl"]
    );
}

#[tokio::test]
async fn a_missing_bucket_is_a_final_error_naming_it() {
    let Some(moto) = moto::Moto::start_or_skip("a_missing_bucket_is_a_final_error_naming_it")
    else {
        return;
    };
    // The bucket is never created: moto answers 404 NoSuchBucket, a final
    // answer (not retried), named in the error.
    let store = moto.open("s3://missing/p");
    let key = store.path("x").unwrap();
    let err = store
        .inner()
        .put(&key, PutPayload::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
}
