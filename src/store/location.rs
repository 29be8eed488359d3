//! A location string, parsed: a local folder or file, or a bucket and a
//! prefix in it. Nothing here touches the disk or the network.
//!
//! The forms, checked in this order:
//!
//! - `SCHEME://…` (a scheme is a letter, then letters, digits, `+`, `-` or
//!   `.`, matched without regard to case):
//!   - `file://PATH` is the local `PATH` (`file:///abs`, `file://localhost/abs`,
//!     or `file://rel/ative` relative to the working directory; taken as
//!     written, not percent-decoded);
//!   - `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, `az://CONTAINER/PREFIX`
//!     (`azure://` is the same as `az://`, as object_store and fsspec take it);
//!   - any other scheme is refused, naming it and the ones batchgen knows,
//!     so that `--out foo://x` never becomes a local folder `foo:`;
//! - a known scheme with a colon not followed by `//` (`s3:bucket`,
//!   `s3:/bucket`) is refused as a mistyped URL;
//! - anything else is a local path, as today, colons and all (`out:2024`).
//!
//! A bucket URL may not carry credentials (`user:pass@`), a query or a
//! fragment (`?…` could be a SAS token): those are refused without echoing
//! the URL, and the credentials go in the environment instead. The prefix
//! loses one trailing `/`; an empty segment (`s3://b//p`, `a//b`), `.`,
//! `..` or a control character in it is refused. What is accepted is displayed
//! whole by [`Location`]'s `Display`, which therefore never holds a secret.

use std::fmt;
use std::path::{Path, PathBuf};

/// The object stores batchgen knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Amazon S3 and S3-compatible stores (`AWS_ENDPOINT_URL`).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage (the bucket is a container).
    Azure,
}

impl Scheme {
    /// The scheme as batchgen writes it in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azure => "az",
        }
    }

    /// The scheme named `name` (lower case), aliases included.
    fn named(name: &str) -> Option<Scheme> {
        match name {
            "s3" => Some(Scheme::S3),
            "gs" => Some(Scheme::Gcs),
            "az" | "azure" => Some(Scheme::Azure),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The schemes an error lists as known.
pub const KNOWN: &str = "s3://, gs://, az:// (or azure://), file:// or a plain path";

/// A bucket (or Azure container) and a prefix in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bucket {
    pub scheme: Scheme,
    /// The bucket's (or container's) name.
    pub bucket: String,
    /// Segments joined by `/`, without a leading or trailing one; empty for
    /// the bucket's root.
    pub prefix: String,
}

impl Bucket {
    /// The bucket's own URL, without the prefix (`s3://data`).
    pub fn root_url(&self) -> String {
        format!("{}://{}", self.scheme, self.bucket)
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.root_url())?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// Where a command reads or writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// A local folder or file, as batchgen has always taken it.
    Local(PathBuf),
    /// A prefix in a bucket.
    Bucket(Bucket),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Bucket(b) => b.fmt(f),
        }
    }
}

/// Why a location string was refused. The messages never repeat a part of
/// the string that could hold a secret (what follows an unknown scheme,
/// credentials, a query).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("`{scheme}://` is not a location batchgen knows: give {KNOWN}")]
    UnknownScheme { scheme: String },
    #[error("`{scheme}:` without `//` looks like a mistyped URL: give {scheme}://BUCKET/PREFIX, or start a local folder's name with ./")]
    Mistyped { scheme: String },
    #[error(
        "a {scheme}:// location that is not UTF-8: give {scheme}://BUCKET/PREFIX in plain text"
    )]
    NotUtf8 { scheme: Scheme },
    #[error("a {scheme}:// location names no bucket: give {scheme}://BUCKET/PREFIX")]
    NoBucket { scheme: Scheme },
    #[error("the {scheme}:// location holds credentials (`…@`): give them in the environment (for example AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), never in the URL")]
    Credentials { scheme: Scheme },
    #[error("the {scheme}:// location has a query (`?…`) or a fragment (`#…`): give {scheme}://BUCKET/PREFIX only (credentials go in the environment)")]
    Query { scheme: Scheme },
    // The name is not repeated: `KEY:SECRET` without an `@` lands here.
    #[error("the bucket name of a {scheme}:// location may hold only lower-case letters, digits, `.`, `-` and `_`")]
    BadBucket { scheme: Scheme },
    #[error("the prefix of `{url}` has {what}: give segments separated by single `/`, none of them `.` or `..`")]
    BadPrefix { url: String, what: &'static str },
    #[error("a file:// location names no path: give file:///ABSOLUTE/PATH or a plain path")]
    NoPath,
}

impl Location {
    /// Parses a location as given on the command line or in a manifest.
    pub fn parse(s: &str) -> Result<Location, LocationError> {
        let Some((scheme, rest)) = split_scheme(s) else {
            return Ok(Location::Local(PathBuf::from(s)));
        };
        let lower = scheme.to_ascii_lowercase();
        let Some(rest) = rest.strip_prefix("//") else {
            // `out:2024` stays a local path; `s3:bucket` is a typo.
            if lower == "file" || Scheme::named(&lower).is_some() {
                return Err(LocationError::Mistyped { scheme: lower });
            }
            return Ok(Location::Local(PathBuf::from(s)));
        };
        if lower == "file" {
            return local_of_file_url(rest);
        }
        let Some(scheme) = Scheme::named(&lower) else {
            return Err(LocationError::UnknownScheme { scheme: lower });
        };
        bucket(scheme, rest).map(Location::Bucket)
    }

    /// [`Location::parse`] of a path from the command line: one that is not
    /// UTF-8 cannot be a URL, and is a local path.
    pub fn of_path(path: &Path) -> Result<Location, LocationError> {
        match path.to_str() {
            Some(s) => Location::parse(s),
            // Not UTF-8: a local name, unless it starts like a URL (which
            // would otherwise become a folder named `s3:`).
            None => match Location::parse(&path.to_string_lossy()) {
                Ok(Location::Local(_)) => Ok(Location::Local(path.to_path_buf())),
                Ok(Location::Bucket(b)) => Err(LocationError::NotUtf8 { scheme: b.scheme }),
                Err(e) => Err(e),
            },
        }
    }

    /// The bucket, if this is one.
    pub fn bucket(&self) -> Option<&Bucket> {
        match self {
            Location::Bucket(b) => Some(b),
            Location::Local(_) => None,
        }
    }
}

/// `(scheme, rest)` if `s` starts with `SCHEME:`.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some((scheme, rest))
}

/// The path of `file://REST`.
fn local_of_file_url(rest: &str) -> Result<Location, LocationError> {
    let path = match rest.strip_prefix("localhost") {
        Some(abs) if abs.starts_with('/') => abs,
        _ => rest,
    };
    if path.is_empty() {
        return Err(LocationError::NoPath);
    }
    Ok(Location::Local(PathBuf::from(path)))
}

/// `BUCKET/PREFIX`, checked; the messages name only what passed the checks
/// for secrets.
fn bucket(scheme: Scheme, rest: &str) -> Result<Bucket, LocationError> {
    if rest.contains(['?', '#']) {
        return Err(LocationError::Query { scheme });
    }
    let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if name.contains('@') {
        return Err(LocationError::Credentials { scheme });
    }
    if name.is_empty() {
        return Err(LocationError::NoBucket { scheme });
    }
    let name_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
    if !name_ok {
        return Err(LocationError::BadBucket { scheme });
    }
    let url = || {
        format!(
            "{scheme}://{name}/{}",
            prefix.replace(char::is_control, "?")
        )
    };
    // One trailing `/` is dropped (`s3://b/p/` is `s3://b/p`); any other
    // empty segment is refused (`s3://b//p`, `s3://b/p//`).
    let inner = prefix.strip_suffix('/').unwrap_or(prefix);
    if inner.is_empty() && !prefix.is_empty() {
        return Err(LocationError::BadPrefix {
            url: url(),
            what: "an empty segment",
        });
    }
    if !inner.is_empty() {
        for segment in inner.split('/') {
            let what = match segment {
                "" => Some("an empty segment"),
                "." | ".." => Some("a `.` or `..` segment"),
                s if s.chars().any(char::is_control) => Some("a control character"),
                _ => None,
            };
            if let Some(what) = what {
                return Err(LocationError::BadPrefix { url: url(), what });
            }
        }
    }
    Ok(Bucket {
        scheme,
        bucket: name.to_string(),
        prefix: inner.to_string(),
    })
}
