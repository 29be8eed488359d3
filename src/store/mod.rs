//! Where outputs go: a local folder, or a prefix in a bucket (S3, GCS,
//! Azure) through the `object_store` crate.
//!
//! Why this exists: output locations are URLs (`--out s3://bucket/prefix`),
//! and a URL batchgen does not know must be refused, never turned into a
//! local folder named after its scheme (`./s3:/bucket/prefix`).
//! [`Location::parse`] says which a string is; [`Bucket::open`] gives
//! object_store's client for a bucket, credentials and endpoint from the
//! environment as each cloud's tools take them, with bounded retries and
//! `PutMode::Create` as `If-None-Match: *`.
//!
//! Parsing is plain computation. Opening does no I/O; a [`Store`]'s calls
//! are object_store futures, cancelled by dropping them.
//!
//! [`Store::upload`], [`Store::download`], [`Store::fetch`] and
//! [`Store::publish`] (in `sync.rs`) move files between a local working
//! folder and the prefix, streaming.
//!
//! On the ground floor beside `disk` and `console`: it imports only `disk`.

mod location;
mod named;
mod open;
mod sync;

pub use location::{Bucket, Location, LocationError, Scheme, KNOWN};
pub use open::{retry, Store, StoreError, RETRY_FOR};
pub use sync::{files_under, local_path, Listed, PART};

#[cfg(test)]
mod tests;
