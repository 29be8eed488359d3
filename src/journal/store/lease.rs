//! One writer per prefix: the lease object, `PREFIX/lease.json`.
//!
//! Why this exists: it stands for the local lock file. A run creates it
//! only if absent, with its id, host, pid and an expiry, and renews it
//! (overwrites it) before it expires; a second run on the prefix while it
//! is live is refused ([`JournalStoreError::Held`], which the CLI maps to exit 2);
//! a lease left by a killed pod expires and the next run takes it over.
//!
//! The lease is advisory: clocks drift and a paused process cannot tell
//! that its lease ran out. What keeps a slow old writer from adding a
//! segment after a new one took over is the segment sequence itself
//! (`segments.rs`), not this file. Replacing a lease uses the version read
//! (`PutMode::Update`) where the store supports it, so that two runs taking
//! over at once do not both believe they hold it; where it does not, the
//! fence still decides.
//!
//! Each lease carries a nonce made when it is acquired (a hash of the
//! process's random hash seed, its pid, the time and a counter), and a
//! lease is this run's only if both its run id and its nonce are ours: two
//! processes given the same run id never take each other's lease for
//! their own. A lease found deleted when renewing is lost, never created
//! again: whoever deleted it (by hand, or a run that took it over and
//! finished) may have let a third run in. [`super::Keeper`] renews a lease
//! in the background and stops the writer when it cannot.
//!
//! Time comes from an injected [`Clock`], so expiry is tested without
//! sleeping. Cancellation: every call is a plain future; dropping one
//! mid-put leaves the old lease or the new one, both whole.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::error::JournalStoreError;
use super::{names, Clock};

/// Who holds a lease: what a refused run is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
}

impl Holder {
    /// This process, under `run_id`.
    pub fn this_process(run_id: &str) -> Holder {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Holder {
            run_id: run_id.into(),
            host,
            pid: std::process::id(),
        }
    }
}

/// `lease.json` as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseBody {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    pub expires_at_ms: u64,
    /// Made when the lease was acquired (leases written before there was
    /// one read as ""; never equal to a nonce made now).
    #[serde(default)]
    pub nonce: String,
    /// When this run first took the lease, ms since the epoch (what
    /// `status` shows as "since"; 0 in leases of older versions).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub started_at_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The name of the lease object under a prefix.
pub const LEASE_NAME: &str = names::LEASE;

/// A lease this run holds.
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: Path,
    holder: Holder,
    nonce: String,
    ttl_ms: u64,
    clock: Clock,
    expires_at_ms: u64,
    /// When it was first taken (kept through renewals).
    started_at_ms: u64,
    version: UpdateVersion,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("location", &self.location)
            .field("holder", &self.holder)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// What `lease.json` holds now, with the version to replace it by.
enum Current {
    Absent,
    Found(Option<LeaseBody>, UpdateVersion),
}

impl Lease {
    /// Takes the lease on `prefix` for `ttl_ms`: creates it if absent, takes
    /// it over if it has expired (or is unreadable), refuses if it is live.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        prefix: &Path,
        holder: Holder,
        ttl_ms: u64,
        clock: Clock,
    ) -> Result<Lease, JournalStoreError> {
        let mut lease = Lease {
            location: prefix.clone().join(names::LEASE),
            prefix: prefix.clone(),
            store,
            holder,
            nonce: nonce(),
            ttl_ms,
            clock,
            expires_at_ms: 0,
            started_at_ms: 0,
            version: UpdateVersion {
                e_tag: None,
                version: None,
            },
        };
        for _ in 0..3 {
            let mode = match lease.current().await? {
                Current::Absent => PutMode::Create,
                Current::Found(Some(body), _)
                    if body.expires_at_ms > (lease.clock)() && !lease.ours(&body) =>
                {
                    return Err(lease.held(body));
                }
                Current::Found(body, version) => {
                    if body.is_none() {
                        tracing::warn!("{} is unreadable; taking it over", lease.location);
                    }
                    PutMode::Update(version)
                }
            };
            if lease.put(mode).await? {
                return Ok(lease);
            }
        }
        // Changed under us three times: whoever changed it holds it.
        match lease.current().await? {
            Current::Found(Some(body), _) => Err(lease.held(body)),
            _ => Err(JournalStoreError::Contended {
                store: lease.store.to_string(),
                tries: 3,
            }),
        }
    }

    /// When it runs out, in ms since the epoch.
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// Its time to live, in ms.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// The time it is, by its clock (ms since the epoch).
    pub(super) fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// When a third of its time is gone ([`Lease::renew_due`] from then on).
    pub fn renew_at_ms(&self) -> u64 {
        self.expires_at_ms.saturating_sub(self.ttl_ms * 2 / 3)
    }

    /// Whether a third of its time is gone, so that it is time to renew.
    pub fn renew_due(&self) -> bool {
        (self.clock)() + self.ttl_ms * 2 / 3 >= self.expires_at_ms
    }

    /// Extends it by its time from now, if it is still this run's: one
    /// another run holds, one deleted, or one unreadable is
    /// [`JournalStoreError::LeaseLost`] (never written again).
    pub async fn renew(&mut self) -> Result<(), JournalStoreError> {
        for _ in 0..3 {
            let mode = match self.current().await? {
                Current::Found(Some(body), version) if self.ours(&body) => PutMode::Update(version),
                other => return Err(self.lost(other)),
            };
            if self.put(mode).await? {
                return Ok(());
            }
        }
        match self.current().await? {
            Current::Found(Some(body), _) if self.ours(&body) => {
                Err(JournalStoreError::Contended {
                    store: self.store.to_string(),
                    tries: 3,
                })
            }
            other => Err(self.lost(other)),
        }
    }

    /// Gives it up at the end of a run (if it is still this run's).
    pub async fn release(self) -> Result<(), JournalStoreError> {
        match self.current().await? {
            Current::Found(Some(body), _) if self.ours(&body) => {
                match self.store.delete(&self.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(JournalStoreError::store(&*self.store, &self.location, e)),
                }
            }
            _ => Ok(()),
        }
    }

    async fn current(&self) -> Result<Current, JournalStoreError> {
        let failed = |e| JournalStoreError::store(&*self.store, &self.location, e);
        let got = match self.store.get(&self.location).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(Current::Absent),
            Err(e) => return Err(failed(e)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = match got.bytes().await {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => return Ok(Current::Absent),
            Err(e) => return Err(failed(e)),
        };
        Ok(Current::Found(serde_json::from_slice(&bytes).ok(), version))
    }

    /// Writes this run's lease with a fresh expiry; false if the object
    /// changed since it was read (or appeared, for a create).
    async fn put(&mut self, mode: PutMode) -> Result<bool, JournalStoreError> {
        let now = (self.clock)();
        let expires_at_ms = now + self.ttl_ms;
        if self.started_at_ms == 0 {
            self.started_at_ms = now;
        }
        let body = LeaseBody {
            run_id: self.holder.run_id.clone(),
            host: self.holder.host.clone(),
            pid: self.holder.pid,
            expires_at_ms,
            nonce: self.nonce.clone(),
            started_at_ms: self.started_at_ms,
        };
        let bytes = serde_json::to_vec(&body).expect("a lease serialises");
        let mut result = self.put_as(&bytes, mode.clone()).await;
        if let (
            PutMode::Update(_),
            Err(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ),
        ) = (&mode, &result)
        {
            // A store without conditional updates: overwrite; the fence decides.
            result = self.put_as(&bytes, PutMode::Overwrite).await;
        }
        match result {
            Ok(put) => {
                self.expires_at_ms = expires_at_ms;
                self.version = UpdateVersion::from(put);
                Ok(true)
            }
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            // An update of a lease deleted meanwhile lost a race; a create
            // answered "not found" is a missing bucket (S3's NoSuchBucket),
            // which must be said, not taken for another writer.
            Err(object_store::Error::NotFound { .. }) if matches!(mode, PutMode::Update(_)) => {
                Ok(false)
            }
            Err(e) => Err(JournalStoreError::store(&*self.store, &self.location, e)),
        }
    }

    async fn put_as(
        &self,
        bytes: &[u8],
        mode: PutMode,
    ) -> object_store::Result<object_store::PutResult> {
        let payload = PutPayload::from(bytes.to_vec());
        self.store
            .put_opts(&self.location, payload, PutOptions::from(mode))
            .await
    }

    fn held(&self, body: LeaseBody) -> JournalStoreError {
        let now = (self.clock)();
        JournalStoreError::Held {
            store: self.store.to_string(),
            prefix: self.prefix.to_string(),
            // As stored, by whoever wrote it: shown quoted, control
            // characters escaped, and never longer than a line.
            run_id: shown(&body.run_id),
            host: shown(&body.host),
            pid: body.pid,
            expires_at_ms: body.expires_at_ms,
            left_s: body.expires_at_ms.saturating_sub(now).div_ceil(1000),
        }
    }

    /// Whether `body` is this lease: same run, same nonce.
    fn ours(&self, body: &LeaseBody) -> bool {
        body.run_id == self.holder.run_id && body.nonce == self.nonce
    }

    fn lost(&self, now: Current) -> JournalStoreError {
        let why = match now {
            Current::Found(Some(body), _) if body.run_id == self.holder.run_id => format!(
                "another process of run {} on host {} (pid {}) holds it",
                body.run_id, body.host, body.pid
            ),
            Current::Found(Some(body), _) => format!(
                "run {} on host {} (pid {}) took it over",
                body.run_id, body.host, body.pid
            ),
            Current::Found(None, _) => "it was overwritten with something unreadable".into(),
            Current::Absent => "it was deleted (by hand, or by a run that took it over \
                                and finished); it is not created again"
                .into(),
        };
        JournalStoreError::LeaseLost {
            store: self.store.to_string(),
            prefix: self.prefix.to_string(),
            why,
        }
    }
}

/// A nonce no other process (nor another call in this one) shares: std's
/// random hash seed (drawn from the OS once per process), the pid, the time
/// and a counter, hashed; 16 hex digits. Each lease's, and a run's id.
pub fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u64(COUNT.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", h.finish())
}

/// A field of a lease as stored, for a message: escaped (`{:?}`: no
/// terminal escape sequence reaches the screen) and cut to 80 characters.
pub(super) fn shown(field: &str) -> String {
    let cut: String = field.chars().take(80).collect();
    format!("{cut:?}")
}
