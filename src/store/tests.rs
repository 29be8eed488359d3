//! The parser, form by form, and what opening configures.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::AmazonS3ConfigKey;
use object_store::memory::InMemory;

use super::*;

fn local(s: &str) -> Location {
    Location::Local(PathBuf::from(s))
}

fn bucket(scheme: Scheme, name: &str, prefix: &str) -> Location {
    Location::Bucket(Bucket {
        scheme,
        bucket: name.into(),
        prefix: prefix.into(),
    })
}

fn parse(s: &str) -> Location {
    Location::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn refused(s: &str) -> LocationError {
    match Location::parse(s) {
        Ok(l) => panic!("{s} was taken as {l:?}"),
        Err(e) => e,
    }
}

#[test]
fn plain_paths_are_local_as_they_always_were() {
    for s in [
        "out",
        "out/nightly",
        "/abs/out",
        "./out",
        "../out",
        "out:2024",
        "out:2024/x",
        "my:weird/path",
        "a/s3://b",
        "./s3://b",
        "s3",
        "",
        " s3://b",
    ] {
        assert_eq!(parse(s), local(s), "{s}");
    }
}

#[test]
fn file_urls_are_local_paths() {
    assert_eq!(parse("file:///tmp/out"), local("/tmp/out"));
    assert_eq!(parse("file://localhost/tmp/out"), local("/tmp/out"));
    assert_eq!(parse("file://out/nightly"), local("out/nightly"));
    assert_eq!(parse("FILE:///x"), local("/x"));
    // Taken as written: no percent-decoding.
    assert_eq!(parse("file:///a%20b"), local("/a%20b"));
    assert_eq!(refused("file://"), LocationError::NoPath);
}

#[test]
fn bucket_urls_name_the_scheme_bucket_and_prefix() {
    assert_eq!(
        parse("s3://my-bucket/nightly"),
        bucket(Scheme::S3, "my-bucket", "nightly")
    );
    assert_eq!(
        parse("gs://b.example/a/b/c"),
        bucket(Scheme::Gcs, "b.example", "a/b/c")
    );
    assert_eq!(
        parse("az://container/x"),
        bucket(Scheme::Azure, "container", "x")
    );
    assert_eq!(
        parse("azure://container/x"),
        bucket(Scheme::Azure, "container", "x")
    );
    assert_eq!(parse("S3://b/p"), bucket(Scheme::S3, "b", "p"));
    assert_eq!(
        parse("gs://my_bucket"),
        bucket(Scheme::Gcs, "my_bucket", "")
    );
}

#[test]
fn prefixes_lose_a_trailing_slash_and_nothing_else() {
    assert_eq!(parse("s3://b/"), bucket(Scheme::S3, "b", ""));
    assert_eq!(parse("s3://b/p/"), bucket(Scheme::S3, "b", "p"));
    assert_eq!(parse("s3://b/p/q/"), bucket(Scheme::S3, "b", "p/q"));
    // Kept as written: spaces, percent signs, non-ASCII.
    assert_eq!(
        parse("s3://b/a b/%41/é"),
        bucket(Scheme::S3, "b", "a b/%41/é")
    );
}

#[test]
fn bad_prefixes_are_refused() {
    for (s, what) in [
        ("s3://b//p", "empty"),
        ("s3://b/p//q", "empty"),
        ("s3://b/p//", "empty"),
        ("s3://b//", "empty"),
        ("s3://b/../p", "`..`"),
        ("s3://b/p/..", "`..`"),
        ("gs://b/./p", "`.`"),
        ("az://b/p\n", "control"),
    ] {
        let e = refused(s);
        assert!(matches!(e, LocationError::BadPrefix { .. }), "{s}: {e:?}");
        assert!(e.to_string().contains(what), "{s}: {e}");
    }
}

#[test]
fn display_gives_the_normalised_url() {
    assert_eq!(parse("s3://b/p/").to_string(), "s3://b/p");
    assert_eq!(parse("azure://c/x").to_string(), "az://c/x");
    assert_eq!(parse("gs://b").to_string(), "gs://b");
    assert_eq!(parse("out/x").to_string(), "out/x");
}

#[test]
fn unknown_schemes_are_refused_by_name() {
    for (s, scheme) in [
        ("foo://x", "foo"),
        ("http://example.com/out", "http"),
        ("https://bucket.s3.amazonaws.com/p", "https"),
        ("s3a://b/p", "s3a"),
        ("abfs://c/p", "abfs"),
        ("gcs://b/p", "gcs"),
        ("HDFS://x", "hdfs"),
        ("my.out+x://y", "my.out+x"),
    ] {
        let e = refused(s);
        assert_eq!(
            e,
            LocationError::UnknownScheme {
                scheme: scheme.into()
            },
            "{s}"
        );
        let text = e.to_string();
        assert!(text.contains(&format!("`{scheme}://`")), "{text}");
        for known in ["s3://", "gs://", "az://", "file://"] {
            assert!(text.contains(known), "{text}");
        }
    }
}

#[test]
fn an_unknown_scheme_is_named_without_the_rest() {
    let text = refused("foo://user:hunter2@host/x?sig=SECRET").to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("SECRET"),
        "{text}"
    );
}

#[test]
fn known_schemes_without_slashes_are_typos() {
    for s in [
        "s3:bucket/p",
        "s3:/bucket/p",
        "gs:b",
        "az:/c",
        "file:/tmp/x",
    ] {
        let e = refused(s);
        assert!(matches!(e, LocationError::Mistyped { .. }), "{s}: {e:?}");
        let scheme = s.split(':').next().unwrap();
        assert!(e.to_string().contains(&format!("`{scheme}:`")), "{e}");
    }
    // What follows the scheme may be a key and a secret: never repeated.
    for s in ["s3:/AKIA:hunter2@bucket/p", "az:/c?sig=hunter2"] {
        let text = refused(s).to_string();
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[test]
fn bucket_names_are_checked() {
    for s in ["s3://", "s3:///p", "gs:///"] {
        assert!(matches!(refused(s), LocationError::NoBucket { .. }), "{s}");
    }
    for s in [
        "s3://My-Bucket/p",
        "s3://b c/p",
        "s3://b:9000/p",
        "gs://b\u{0}/p",
    ] {
        assert!(matches!(refused(s), LocationError::BadBucket { .. }), "{s}");
    }
}

#[test]
fn credentials_and_queries_are_refused_without_echo() {
    for s in [
        "s3://AKIAEXAMPLE:hunter2@bucket/p",
        "s3://hunter2@bucket",
        "az://c/p?sv=2024&sig=hunter2",
        "gs://b/p#hunter2",
        "s3://b?hunter2",
    ] {
        let e = refused(s);
        assert!(
            matches!(
                e,
                LocationError::Credentials { .. } | LocationError::Query { .. }
            ),
            "{s}: {e:?}"
        );
        let text = e.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("environment"), "{text}");
    }
    // A name with a colon may be a key and a secret without the `@`.
    let text = refused("s3://AKIA:hunter2/p").to_string();
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn non_utf8_paths_are_local_unless_they_start_like_a_url() {
    use std::os::unix::ffi::OsStrExt;
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"out/\xff"));
    assert_eq!(
        Location::of_path(p).unwrap(),
        Location::Local(p.to_path_buf())
    );
    // Never a folder named `s3:`.
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"s3://b/\xff"));
    assert!(Location::of_path(p).is_err());
    assert_eq!(
        Location::of_path(std::path::Path::new("s3://b/p")).unwrap(),
        bucket(Scheme::S3, "b", "p")
    );
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn s3_bucket() -> Bucket {
    parse("s3://bench/nightly").bucket().unwrap().clone()
}

#[test]
fn s3_takes_the_endpoint_from_aws_endpoint_url() {
    let env = vars(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_CONDITIONAL_PUT", "disabled"),
        ("AWS_BUCKET", "other"),
        ("NOT_AWS_ENDPOINT", "http://elsewhere"),
    ]);
    let b = s3_bucket().s3(Some(&env));
    let get = |k| b.get_config_value(&k);
    assert_eq!(
        get(AmazonS3ConfigKey::Endpoint).as_deref(),
        Some("http://127.0.0.1:9")
    );
    assert_eq!(get(AmazonS3ConfigKey::Region).as_deref(), Some("eu-west-1"));
    assert_eq!(get(AmazonS3ConfigKey::Bucket).as_deref(), Some("bench"));
    // The journal's segments need If-None-Match, whatever the environment says.
    assert_eq!(
        get(AmazonS3ConfigKey::ConditionalPut).as_deref(),
        Some("etag")
    );
    assert_eq!(
        get(AmazonS3ConfigKey::Client(
            object_store::ClientConfigKey::AllowHttp
        ))
        .as_deref(),
        Some("true")
    );
}

/// A static binary has no NSS: object_store's default resolver (the C
/// library's, shuffled) finds nothing in an empty container, so every store
/// leaves names to reqwest's hickory, whatever the environment says.
#[test]
fn every_scheme_resolves_names_without_the_c_library() {
    use object_store::azure::AzureConfigKey;
    use object_store::gcp::GoogleConfigKey;
    use object_store::ClientConfigKey::RandomizeAddresses;
    let env = vars(&[
        ("AWS_RANDOMIZE_ADDRESSES", "true"),
        ("GOOGLE_RANDOMIZE_ADDRESSES", "true"),
        ("AZURE_RANDOMIZE_ADDRESSES", "true"),
    ]);
    let bucket = |url: &str| parse(url).bucket().unwrap().clone();
    let s3 = bucket("s3://b/p").s3(Some(&env));
    let gcs = bucket("gs://b/p").gcs(Some(&env));
    let azure = bucket("az://b/p").azure(Some(&env));
    let values = [
        s3.get_config_value(&AmazonS3ConfigKey::Client(RandomizeAddresses)),
        gcs.get_config_value(&GoogleConfigKey::Client(RandomizeAddresses)),
        azure.get_config_value(&AzureConfigKey::Client(RandomizeAddresses)),
    ];
    for value in values {
        assert_eq!(value.as_deref(), Some("false"));
    }
}

#[test]
fn opening_shows_no_secret() {
    let env = vars(&[
        ("AWS_ACCESS_KEY_ID", "AKIA-hunter1"),
        ("AWS_SECRET_ACCESS_KEY", "hunter2-secret"),
        ("AWS_SESSION_TOKEN", "hunter3-token"),
    ]);
    let store = s3_bucket().open_with(&env, retry()).unwrap();
    let inner = store.inner();
    let shown = format!("{store:?} {store} {inner:?} {inner}");
    for secret in ["hunter1", "hunter2", "hunter3"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(
        shown.contains("bench") && shown.contains("nightly"),
        "{shown}"
    );
    assert_eq!(store.to_string(), "s3://bench/nightly");
}

/// Errors about the journal, the lease and uploads name the client: by the
/// URL a user gave, not by object_store's type (`AmazonS3(bench)`).
#[test]
fn the_client_is_named_by_its_url() {
    let azure = vars(&[("AZURE_STORAGE_ACCOUNT_NAME", "acct")]);
    for (url, env) in [
        ("s3://bench/nightly", vec![]),
        ("az://c/p", azure),
        (
            "azure://c/p",
            vars(&[("AZURE_STORAGE_ACCOUNT_NAME", "acct")]),
        ),
    ] {
        let store = parse(url)
            .bucket()
            .unwrap()
            .open_with(&env, retry())
            .unwrap();
        let inner = store.inner();
        let want = url.rsplit_once('/').unwrap().0.replace("azure://", "az://");
        assert_eq!(inner.to_string(), want);
        assert_eq!(format!("{inner:?}"), want);
    }
}

#[test]
fn every_scheme_opens_or_says_why_not() {
    let gcs = parse("gs://b/p").open();
    // Without an account, Azure's builder refuses: the message names the URL.
    let az = parse("az://c/p")
        .bucket()
        .unwrap()
        .open_with(&[], retry())
        .unwrap_err()
        .to_string();
    assert!(az.contains("az://c/p"), "{az}");
    let az = parse("az://c/p")
        .bucket()
        .unwrap()
        .open_with(&vars(&[("AZURE_STORAGE_ACCOUNT_NAME", "acct")]), retry());
    assert!(az.is_ok(), "{az:?}");
    // Google's builder may find no credentials here; either way no panic.
    let _ = gcs;
    let local = parse("out").open().unwrap_err();
    assert!(matches!(local, StoreError::Local(_)), "{local:?}");
}

#[test]
fn names_go_under_the_prefix() {
    let store = Store::over(s3_bucket(), Arc::new(InMemory::new())).unwrap();
    assert_eq!(
        store.path("images/a_1.png").unwrap().as_ref(),
        "nightly/images/a_1.png"
    );
    assert_eq!(
        store.path("/results.csv").unwrap().as_ref(),
        "nightly/results.csv"
    );
    for bad in ["", "/", "a//b", "../x", "a/./b"] {
        assert!(store.path(bad).is_err(), "{bad}");
    }
    let root = parse("s3://b").bucket().unwrap().clone();
    let store = Store::over(root, Arc::new(InMemory::new())).unwrap();
    assert_eq!(store.path("x").unwrap().as_ref(), "x");
}
