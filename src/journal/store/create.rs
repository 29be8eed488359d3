//! Creating an object only if absent (`PutMode::Create`), tried again
//! after a failure that may be transient.
//!
//! Why this exists: object_store retries a plain put after a timeout or a
//! connection reset, but not a conditional one (it cannot know whether the
//! first try landed, so it treats repeating it as unsafe). Every create
//! here is safe to repeat because its caller already reads an
//! `AlreadyExists` answer for what it is: a segment compares the object's
//! bytes with its own (our own first try landed, or another run's fence),
//! a takeover marker just tries the next number, and a checkpoint that is
//! there was written from the same segments. So a failure that is neither
//! an answer about the object (exists, precondition, not found) nor a
//! refusal (permission, credentials, an unsupported request) is tried
//! again, [`TRIES`] times in all, waiting [`FIRST_WAIT`], then twice as
//! long each time (on tokio's clock, so paused-time tests see it).
//!
//! Cancellation: a plain future; dropped between tries it sends nothing
//! more, dropped during one the object lands whole or not at all, and the
//! caller (not having heard `Ok`) tells nobody it is there.

use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

/// How many times a create is tried in all.
pub(super) const TRIES: u32 = 5;
/// The wait before the second try; it doubles before each later one.
pub(super) const FIRST_WAIT: Duration = Duration::from_millis(100);

/// Creates `location` with `body` unless it exists: `Ok(true)` if this call
/// created it (on some try), `Ok(false)` if the name was taken (perhaps by
/// an earlier try of this call whose answer was lost: the caller decides).
pub(super) async fn create(
    store: &dyn ObjectStore,
    location: &Path,
    body: PutPayload,
) -> Result<bool, object_store::Error> {
    let mut wait = FIRST_WAIT;
    let mut tried = 1;
    loop {
        let opts = PutOptions::from(PutMode::Create);
        match store.put_opts(location, body.clone(), opts).await {
            Ok(_) => return Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => return Ok(false),
            Err(e) if tried < TRIES && transient(&e) => {
                tracing::warn!(
                    "creating {location} in {store} failed ({e}); trying again in {} ms \
                     (try {tried} of {TRIES})",
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
                wait *= 2;
                tried += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `e` may go away if the same request is sent again: not an
/// answer about the object, not a refusal of this client or this request.
pub(super) fn transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        e,
        E::NotFound { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::UnknownConfigurationKey { .. }
    )
}
