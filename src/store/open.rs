//! A bucket opened: object_store's client for it, configured the way each
//! cloud's own tools are (from the environment), plus the prefix.
//!
//! Opening does no I/O: the builders only read settings, and credentials
//! are fetched (web identity, workload identity, instance metadata, …) by
//! object_store on the first request and renewed before they expire. What
//! batchgen sets on top of the environment, always:
//!
//! - the bucket (or container) from the URL, over any `AWS_BUCKET`-like
//!   variable;
//! - [`retry`]: transient failures (5xx, S3's 503 SlowDown, 429, connection
//!   resets before a request was sent) retried with jittered exponential
//!   backoff, and never for longer than [`RETRY_FOR`] in all, so a store
//!   that keeps failing surfaces as an error the run can stop on;
//! - S3's conditional put as `If-None-Match: *` (`PutMode::Create`, which
//!   the journal's segments and the lease rely on), over any
//!   `AWS_CONDITIONAL_PUT` in the environment;
//! - names resolved by reqwest's own resolver (hickory, batchgen builds
//!   reqwest with it), not object_store's default, which shuffles what the
//!   C library's `getaddrinfo` returns: a static binary has no NSS, so in an
//!   empty container that one resolves nothing ([`RESOLVER`]).
//!
//! S3-compatible stores: `AWS_ENDPOINT_URL` (object_store 0.13 reads it as
//! `aws_endpoint_url`, an alias of its `endpoint`; `AWS_ENDPOINT` too) and
//! `AWS_ALLOW_HTTP=true` for a plain-HTTP one.
//!
//! Nothing here is async; the store's calls are futures, cancelled by
//! dropping them (object_store's retries run inside the future and stop
//! with it).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use super::location::{Bucket, Location, Scheme};
use super::named::Named;

/// The longest a store call keeps retrying a transient failure, from its
/// first attempt (object_store's default is 3 minutes).
pub const RETRY_FOR: Duration = Duration::from_secs(60);

/// Retries of transient failures: 100 ms doubling to at most 5 s, with
/// jitter; at most 10 retries and [`RETRY_FOR`] in all. A knob for tests
/// (no flag): `BATCHGEN_STORE_RETRY_SECS` shortens the [`RETRY_FOR`], so
/// that a store that went away is given up on in seconds.
pub fn retry() -> RetryConfig {
    let retry_timeout = std::env::var("BATCHGEN_STORE_RETRY_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(RETRY_FOR, |s| Duration::from_secs(s).min(RETRY_FOR));
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout,
    }
}

/// object_store's `randomize_addresses`, set to `false` on every store: its
/// `true` (the default) asks the C library, which a static binary cannot
/// (glibc loads NSS modules from the host at run time); `false` leaves
/// names to the resolver reqwest is built with, hickory, which reads only
/// `/etc/resolv.conf` and `/etc/hosts` and answers `localhost` itself.
pub const RESOLVER: (ClientConfigKey, &str) = (ClientConfigKey::RandomizeAddresses, "false");

/// Why a store could not be opened, or a name not placed in it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} is a local path: it is written as a folder, not opened as a bucket")]
    Local(String),
    #[error("cannot open {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("`{name}` is not an object name under {url}{}", .source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
    Name {
        name: String,
        url: String,
        #[source]
        source: Option<object_store::path::Error>,
    },
    /// A call on the store failed (after object_store's retries).
    #[error("cannot {what} {name}: {reason}")]
    Call {
        name: String,
        what: String,
        reason: String,
    },
}

/// A bucket's client and the prefix everything goes under. Its `Debug`
/// shows the scheme, bucket and prefix only: the client holds credentials.
#[derive(Clone)]
pub struct Store {
    bucket: Bucket,
    prefix: ObjectPath,
    inner: Arc<dyn ObjectStore>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("scheme", &self.bucket.scheme)
            .field("bucket", &self.bucket.bucket)
            .field("prefix", &self.bucket.prefix)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.bucket.fmt(f)
    }
}

impl Store {
    /// A store over `inner` (object_store's `InMemory` in tests), with
    /// `bucket`'s prefix.
    pub fn over(bucket: Bucket, inner: Arc<dyn ObjectStore>) -> Result<Store, StoreError> {
        let prefix = ObjectPath::parse(&bucket.prefix).map_err(|source| StoreError::Name {
            name: bucket.prefix.clone(),
            url: bucket.root_url(),
            source: Some(source),
        })?;
        Ok(Store {
            bucket,
            prefix,
            inner,
        })
    }

    /// The URL it was opened from.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// object_store's client for the whole bucket.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The prefix, as object_store names it.
    pub fn prefix(&self) -> &ObjectPath {
        &self.prefix
    }

    /// `name` (`results.csv`, `images/a_1.png`) under the prefix.
    pub fn path(&self, name: &str) -> Result<ObjectPath, StoreError> {
        let rel = ObjectPath::parse(name).map_err(|source| StoreError::Name {
            name: name.to_string(),
            url: self.to_string(),
            source: Some(source),
        })?;
        if rel.is_root() {
            return Err(StoreError::Name {
                name: name.to_string(),
                url: self.to_string(),
                source: None,
            });
        }
        Ok(self.prefix.parts().chain(rel.parts()).collect())
    }
}

impl Location {
    /// Opens a bucket with settings from the process's environment.
    pub fn open(&self) -> Result<Store, StoreError> {
        match self {
            Location::Bucket(b) => b.open(),
            Location::Local(p) => Err(StoreError::Local(p.display().to_string())),
        }
    }
}

impl Bucket {
    /// Opens the bucket with object_store's `from_env` builder and [`retry`].
    pub fn open(&self) -> Result<Store, StoreError> {
        self.open_from(None, retry())
    }

    /// Opens the bucket with settings from `vars` only, read as `from_env`
    /// reads the process's environment (`AWS_*`, `GOOGLE_*` and
    /// `SERVICE_ACCOUNT`, `AZURE_*` and `IDENTITY_ENDPOINT`): for tests,
    /// which should not change the process's environment.
    pub fn open_with(
        &self,
        vars: &[(String, String)],
        retry: RetryConfig,
    ) -> Result<Store, StoreError> {
        self.open_from(Some(vars), retry)
    }

    fn open_from(
        &self,
        vars: Option<&[(String, String)]>,
        retry: RetryConfig,
    ) -> Result<Store, StoreError> {
        let built: object_store::Result<Arc<dyn ObjectStore>> = match self.scheme {
            Scheme::S3 => self
                .s3(vars)
                .with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as _),
            Scheme::Gcs => self
                .gcs(vars)
                .with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as _),
            Scheme::Azure => self
                .azure(vars)
                .with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as _),
        };
        let inner = built.map_err(|source| StoreError::Open {
            url: self.to_string(),
            source,
        })?;
        let url = self.root_url();
        Store::over(self.clone(), Arc::new(Named { url, inner }))
    }

    pub(super) fn s3(&self, vars: Option<&[(String, String)]>) -> AmazonS3Builder {
        let builder = match vars {
            None => AmazonS3Builder::from_env(),
            Some(vars) => configured(vars, "AWS_", AmazonS3Builder::new(), |b, k, v| {
                b.with_config(k, v)
            }),
        };
        builder
            .with_bucket_name(&self.bucket)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_config(AmazonS3ConfigKey::Client(RESOLVER.0), RESOLVER.1)
    }

    pub(super) fn gcs(&self, vars: Option<&[(String, String)]>) -> GoogleCloudStorageBuilder {
        let builder = match vars {
            None => GoogleCloudStorageBuilder::from_env(),
            Some(vars) => {
                let b = configured(
                    vars,
                    "GOOGLE_",
                    GoogleCloudStorageBuilder::new(),
                    |b, k, v| b.with_config(k, v),
                );
                match var(vars, "SERVICE_ACCOUNT") {
                    Some(path) => b.with_service_account_path(path),
                    None => b,
                }
            }
        };
        builder
            .with_bucket_name(&self.bucket)
            .with_config(GoogleConfigKey::Client(RESOLVER.0), RESOLVER.1)
    }

    pub(super) fn azure(&self, vars: Option<&[(String, String)]>) -> MicrosoftAzureBuilder {
        let builder = match vars {
            None => MicrosoftAzureBuilder::from_env(),
            Some(vars) => {
                let b = configured(vars, "AZURE_", MicrosoftAzureBuilder::new(), |b, k, v| {
                    b.with_config(k, v)
                });
                match var(vars, "IDENTITY_ENDPOINT") {
                    Some(endpoint) => b.with_msi_endpoint(endpoint),
                    None => b,
                }
            }
        };
        builder
            .with_container_name(&self.bucket)
            .with_config(AzureConfigKey::Client(RESOLVER.0), RESOLVER.1)
    }
}

/// `builder` given each of `vars` whose name starts with `prefix` and,
/// lower-cased, is a key of the builder's (as `from_env` does).
fn configured<B, K: std::str::FromStr>(
    vars: &[(String, String)],
    prefix: &str,
    builder: B,
    with: impl Fn(B, K, &str) -> B,
) -> B {
    vars.iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .filter_map(|(name, value)| Some((name.to_ascii_lowercase().parse::<K>().ok()?, value)))
        .fold(builder, |b, (key, value)| with(b, key, value))
}

fn var<'v>(vars: &'v [(String, String)], name: &str) -> Option<&'v str> {
    vars.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
