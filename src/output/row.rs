//! What a journal record means for its row: the status word and code
//! results.csv gives it, and the money it may have cost.
//!
//! Why this exists apart: [`row_result`] is the one place that reads a
//! record as a row's outcome, so `run`, `status`, results.csv and
//! summary.json always count the same rows the same way.

use serde::Serialize;

use crate::journal::{Record, State};
use crate::vocab::{Code, Usd};

/// A row's status word in `results.csv`. Add, never rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    Completed,
    /// A final verdict (the vendor's `FAILED`, a 4xx), a submit that may have
    /// been accepted without an answer, or a row that gave up submitting
    /// (never accepted: a plain rerun submits it again).
    Failed,
    /// Nothing was sent, or nothing was accepted, before the run stopped.
    NotRun,
    /// Accepted by the gateway (it holds a request id) and not collected:
    /// a plain rerun collects it without paying again.
    Accepted,
}

impl RowStatus {
    pub const ALL: [RowStatus; 4] = [
        RowStatus::Completed,
        RowStatus::Failed,
        RowStatus::NotRun,
        RowStatus::Accepted,
    ];

    pub fn parse(word: &str) -> Option<RowStatus> {
        RowStatus::ALL.into_iter().find(|s| s.as_str() == word)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Completed => "completed",
            RowStatus::Failed => "failed",
            RowStatus::NotRun => "not_run",
            RowStatus::Accepted => "accepted",
        }
    }
}

/// Why a row reads as failed `SUBMIT_UNCERTAIN` ([`Code::SubmitUncertain`]).
pub const UNCERTAIN_MESSAGE: &str =
    "a submit was sent and its answer never arrived: it may have been accepted and charged. \
It is not sent again unless you rerun with --retry-failed";

/// One row's line of `results.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct RowResult {
    pub status: RowStatus,
    pub request_id: Option<String>,
    pub attempts: u32,
    pub submitted_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub files: Vec<String>,
    pub sha256: Vec<String>,
    /// Its images came from the cache.
    pub cached: bool,
    pub cost: Usd,
    pub possibly_charged: Usd,
    pub error_code: String,
    pub error_message: String,
}

impl RowResult {
    /// A submit that may have been accepted without an answer.
    pub fn is_uncertain(&self) -> bool {
        self.status == RowStatus::Failed && self.error_code == Code::SubmitUncertain.as_str()
    }
}

/// What the journal says of a row. `price` is what the row costs if every
/// image it asks for is made (used when the journal predates recording it);
/// `stop` (a code and its description) explains rows the run never reached
/// (`INTERRUPTED`, `BUDGET`, …).
pub fn row_result(rec: Option<&Record>, price: Usd, stop: Option<(&str, &str)>) -> RowResult {
    let (stop_code, stop_why) = stop.unwrap_or_default();
    let mut r = RowResult {
        status: RowStatus::NotRun,
        request_id: None,
        attempts: 0,
        submitted_at_ms: None,
        finished_at_ms: None,
        files: Vec::new(),
        sha256: Vec::new(),
        cached: false,
        cost: Usd::default(),
        possibly_charged: Usd::default(),
        error_code: stop_code.to_string(),
        error_message: stop_why.to_string(),
    };
    let Some(rec) = rec else { return r };
    let price = match rec.price_micros {
        0 => price,
        m => Usd::from_micros(m),
    };
    r.request_id = rec.request_id().map(str::to_string);
    r.attempts = rec.attempts;
    r.submitted_at_ms = rec.submitted_at_ms;
    r.finished_at_ms = rec.finished_at_ms;
    let left = |r: &mut RowResult| {
        if let Some(left) = &rec.left {
            r.error_code = left.code.clone();
            r.error_message = left.message.clone();
        }
    };
    match &rec.state {
        State::Pending if rec.left.is_some() => {
            // It gave up submitting: nothing was accepted, nothing charged.
            r.status = RowStatus::Failed;
            left(&mut r);
        }
        State::Pending => {}
        State::Uncertain => {
            r.status = RowStatus::Failed;
            r.error_code = Code::SubmitUncertain.as_str().into();
            r.error_message = UNCERTAIN_MESSAGE.into();
            r.possibly_charged = price;
        }
        State::Submitted => {
            r.status = RowStatus::Accepted;
            r.error_code = Code::InFlight.as_str().into();
            r.error_message =
                "submitted and not yet collected: rerun the same command to collect it".into();
            left(&mut r);
            r.possibly_charged = price;
        }
        State::Done {
            files,
            sha256,
            cost_micros,
            cached,
            ..
        } => {
            r.status = RowStatus::Completed;
            r.cached = *cached;
            r.files = files.clone();
            r.sha256 = sha256.clone();
            r.cost = Usd::from_micros(*cost_micros);
            r.error_code.clear();
            r.error_message.clear();
        }
        State::Failed {
            code,
            message,
            charged,
            cost_micros,
        } => {
            r.status = RowStatus::Failed;
            r.error_code = code.clone();
            r.error_message = message.clone();
            if charged.maybe() {
                r.possibly_charged = Usd::from_micros(*cost_micros);
            }
        }
    }
    r.possibly_charged = r.possibly_charged + Usd::from_micros(rec.earlier_micros);
    r
}
