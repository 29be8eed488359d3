//! The codes batchgen itself writes in results.csv's `error_code` column
//! (and summary.json, the journal and messages): a contract with users'
//! scripts, held here in one place.
//!
//! Why this exists apart: a code is written by the run, read back by resume
//! (which codes may be collected or sent again) and counted by the output;
//! as one enum, a code cannot be misspelt in one of them. Codes the gateway
//! sends (`INVALID_PARAMETER`, `NOT_FOUND`, …) are its own words and pass
//! through as text, as does `HTTP_nnn` (an HTTP status with no code in its
//! body, e.g. `HTTP_503`): [`Code::from_str`] knows none of them.

use std::fmt;
use std::str::FromStr;

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $name:ident = $text:literal,)*) => {
        /// A code of batchgen's own. Add, never rename: scripts match on them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($(#[doc = $doc])* $name,)*
        }

        impl Code {
            /// Every code, in the order declared.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// As written in results.csv.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $text,)*
                }
            }
        }
    };
}

codes! {
    // Rows whose submit may have been accepted and charged.
    /// A submit was sent and its answer never arrived.
    SubmitUncertain = "SUBMIT_UNCERTAIN",
    // Accepted rows whose images were not collected (a rerun collects them).
    /// The run polled an accepted request for `--poll-timeout` and left it.
    PollTimeout = "POLL_TIMEOUT",
    /// An image could not be downloaded (after retries).
    DownloadFailed = "DOWNLOAD_FAILED",
    /// The gateway could not be reached for longer than the run allows.
    GatewayUnreachable = "GATEWAY_UNREACHABLE",
    /// Accepted and not yet collected when results were written (a rerun collects it).
    InFlight = "IN_FLIGHT",
    // Rows paid for whose images are gone.
    /// The gateway no longer has the result of a request paid for.
    ResultLost = "RESULT_LOST",
    /// An image URL answered 404.
    DownloadLost = "DOWNLOAD_LOST",
    /// A done row's files are missing from the folder.
    FilesMissing = "FILES_MISSING",
    /// A row copied from the cache lost its files (never paid for).
    CachedFilesMissing = "CACHED_FILES_MISSING",
    /// The gateway said a request finished but sent no image.
    NoImages = "NO_IMAGES",
    // Why a run stopped: the `error_code` of the rows it left unrun.
    /// Ctrl-C (SIGINT).
    Interrupted = "INTERRUPTED",
    /// SIGTERM.
    Terminated = "TERMINATED",
    /// SIGHUP.
    Hangup = "HANGUP",
    /// `--max-cost` would be passed.
    Budget = "BUDGET",
    /// A write to the local disk failed: spending stops.
    Disk = "DISK",
    /// A row's task panicked (a bug in batchgen).
    Panicked = "PANICKED",
    /// A gateway's volume quota is spent (HTTP 403 naming a quota).
    QuotaExceeded = "QUOTA_EXCEEDED",
    // Errors the vendor has no word for.
    /// The connection failed before any answer.
    ConnectionFailed = "CONNECTION_FAILED",
    /// A call had no answer in time (after it was sent).
    Timeout = "TIMEOUT",
    /// The connection broke during a call (after it was sent).
    Transport = "TRANSPORT",
    /// The HTTP client could not be built (its TLS set-up failed).
    Client = "CLIENT",
    /// A request id or URL holds part of another key than this run's.
    KeyChanged = "KEY_CHANGED",
    /// A keyed call was redirected (the key never follows a redirect).
    Redirected = "REDIRECTED",
    /// A reply was larger than any the API sends.
    ReplyTooLarge = "REPLY_TOO_LARGE",
    /// A reply could not be understood.
    BadResponse = "BAD_RESPONSE",
    /// The server's certificate is not trusted: never retried, the run stops.
    TlsUntrusted = "TLS_UNTRUSTED",
    /// A request id the gateway sent cannot be put in a URL safely.
    BadRequestId = "BAD_REQUEST_ID",
    /// `--base-url` is not a URL batchgen will send a key to.
    BadBaseUrl = "BAD_BASE_URL",
    /// A status or image URL points at another origin than the gateway's.
    ForeignOrigin = "FOREIGN_ORIGIN",
    /// The key cannot be sent in a header.
    BadKey = "BAD_KEY",
    /// A local input image could not be read.
    InputUnreadable = "INPUT_UNREADABLE",
    /// An image was larger than `--max-image-bytes`.
    TooLarge = "TOO_LARGE",
    /// A download ended before the length it announced.
    Truncated = "TRUNCATED",
    /// The bytes downloaded are not a whole PNG or JPEG.
    CorruptDownload = "CORRUPT_DOWNLOAD",
    /// A `data:` URI that holds no image.
    BadDataUri = "BAD_DATA_URI",
    /// A bug in batchgen (a task that could not finish).
    Internal = "INTERNAL",
}

impl Code {
    /// Codes of rows paid for whose images are gone: sent again only with
    /// `--resubmit-lost`. `NOT_FOUND` is the gateway's own word for it (404).
    pub const LOST: &'static [&'static str] = &[
        Code::ResultLost.as_str(),
        Code::DownloadLost.as_str(),
        Code::FilesMissing.as_str(),
        "NOT_FOUND",
    ];
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not one of batchgen's codes (perhaps the gateway's own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotOurCode;

impl FromStr for Code {
    type Err = NotOurCode;

    fn from_str(s: &str) -> Result<Code, NotOurCode> {
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or(NotOurCode)
    }
}

impl PartialEq<Code> for str {
    fn eq(&self, c: &Code) -> bool {
        self == c.as_str()
    }
}

impl PartialEq<Code> for &str {
    fn eq(&self, c: &Code) -> bool {
        *self == c.as_str()
    }
}

impl PartialEq<Code> for String {
    fn eq(&self, c: &Code) -> bool {
        self == c.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract, written out: a code renamed or dropped fails here.
    #[test]
    fn every_code_is_listed_and_reads_back() {
        let listed = [
            "SUBMIT_UNCERTAIN",
            "POLL_TIMEOUT",
            "DOWNLOAD_FAILED",
            "GATEWAY_UNREACHABLE",
            "IN_FLIGHT",
            "RESULT_LOST",
            "DOWNLOAD_LOST",
            "FILES_MISSING",
            "CACHED_FILES_MISSING",
            "NO_IMAGES",
            "INTERRUPTED",
            "TERMINATED",
            "HANGUP",
            "BUDGET",
            "DISK",
            "PANICKED",
            "QUOTA_EXCEEDED",
            "CONNECTION_FAILED",
            "TIMEOUT",
            "TRANSPORT",
            "CLIENT",
            "KEY_CHANGED",
            "REDIRECTED",
            "REPLY_TOO_LARGE",
            "BAD_RESPONSE",
            "TLS_UNTRUSTED",
            "BAD_REQUEST_ID",
            "BAD_BASE_URL",
            "FOREIGN_ORIGIN",
            "BAD_KEY",
            "INPUT_UNREADABLE",
            "TOO_LARGE",
            "TRUNCATED",
            "CORRUPT_DOWNLOAD",
            "BAD_DATA_URI",
            "INTERNAL",
        ];
        let ours: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(ours, listed);
        for c in Code::ALL {
            assert_eq!(c.as_str().parse::<Code>(), Ok(*c));
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!("INVALID_PARAMETER".parse::<Code>(), Err(NotOurCode));
        let written: String = "DISK".into();
        assert!("DISK" == Code::Disk && written == Code::Disk);
    }
}
