//! Where each row's work starts in a run, decided from what the journal
//! knows, before anything is sent.
//!
//! Why this exists apart from the scheduler: this is the rule that keeps a
//! rerun from paying twice, and it is a pure function of a journal record
//! (and whether the row's files are intact), so it is tested on its own.
//!
//! A plain rerun submits rows never accepted and collects every row holding
//! a live request id; `--retry-failed` adds final verdicts (`FAILED`, 4xx)
//! and submits whose answer never arrived.

use crate::api::Ticket;
use crate::journal::{now_ms, Charged, Entry, Record, State};
use crate::output::{LOST, RESULT_LOST};
use crate::plan::{Key, Usd};

/// Where a row's work starts in this run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Start {
    Submit,
    Poll {
        ticket: Ticket,
        since_ms: u64,
    },
    Download {
        images: Vec<String>,
        ticket: Option<Ticket>,
    },
    /// Its request was fulfilled before: its images are in the cache.
    Cached {
        identity: String,
        stored: crate::cache::Stored,
    },
    End,
}

/// A row's start, and a verdict to journal first if the decision is one.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Decision {
    pub start: Start,
    pub record: Option<Entry>,
}

impl From<Start> for Decision {
    fn from(start: Start) -> Decision {
        Decision {
            start,
            record: None,
        }
    }
}

/// Verdicts older versions wrote for rows whose request was still
/// collectable; a rerun collects those too.
const COLLECTABLE_VERDICTS: &[&str] = &["POLL_TIMEOUT", "DOWNLOAD_FAILED"];

/// What the user allows a rerun to pay for again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    /// `--retry-failed`: final verdicts and submits whose answer never came.
    pub retry_failed: bool,
    /// `--resubmit-lost`: results the gateway lost after charging for them.
    pub resubmit_lost: bool,
}

/// Decides where row `key` starts. `files_intact` checks a completed row's
/// files against what its `done` line recorded (the row's state).
pub(crate) fn decide(
    rec: Option<&Record>,
    key: Key,
    price: Usd,
    flags: Flags,
    files_intact: impl FnOnce(&State) -> bool,
) -> Decision {
    let Some(rec) = rec else {
        return Start::Submit.into();
    };
    let verdict = |code: &str, message: &str| Decision {
        start: Start::End,
        record: Some(Entry::Failed {
            key,
            at_ms: now_ms(),
            code: code.into(),
            message: message.into(),
            charged: Charged::Yes,
            cost_micros: price.micros(),
        }),
    };
    match &rec.state {
        State::Pending => Start::Submit.into(),
        State::Uncertain if flags.retry_failed => Start::Submit.into(),
        // Reads as failed SUBMIT_UNCERTAIN until the user decides.
        State::Uncertain => Start::End.into(),
        State::Submitted => match resume(rec) {
            Some(start) => start.into(),
            None => verdict(
                RESULT_LOST,
                "accepted with images that were never saved; rerun with --resubmit-lost to pay for it again",
            ),
        },
        State::Done { .. } => {
            if files_intact(&rec.state) {
                Start::End.into()
            } else {
                match resume(rec) {
                    Some(start) => start.into(),
                    None => verdict(
                        "FILES_MISSING",
                        "its files are missing or damaged and the request cannot be polled again; rerun with --resubmit-lost to pay for it again",
                    ),
                }
            }
        }
        State::Failed { code, .. } => {
            let collectable = COLLECTABLE_VERDICTS.contains(&code.as_str());
            // Paying again for a lost result is its own decision.
            let allowed = if LOST.contains(&code.as_str()) {
                flags.resubmit_lost
            } else {
                flags.retry_failed
            };
            match (resume(rec).filter(|_| collectable), allowed) {
                (Some(start), _) => start.into(),
                (None, true) => Start::Submit.into(),
                (None, false) => Start::End.into(),
            }
        }
    }
}

/// Where an accepted row picks up: its images if the journal has them, else
/// its request id.
fn resume(rec: &Record) -> Option<Start> {
    match (rec.ticket(), rec.images.is_empty()) {
        (_, false) => Some(Start::Download {
            images: rec.images.clone(),
            ticket: rec.ticket(),
        }),
        (Some(t), true) => Some(Start::Poll {
            ticket: t,
            since_ms: rec.submitted_at_ms.unwrap_or_else(now_ms),
        }),
        (None, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Left;
    use crate::plan::Kind;

    fn ticket() -> Ticket {
        Ticket {
            kind: Kind::TextToImage,
            request_id: "r1".into(),
            status_url: None,
            response_url: None,
            sync_images: 0,
        }
    }

    fn rec(state: State, ticket: Option<Ticket>) -> Record {
        Record {
            state,
            ticket: ticket.map(|t| Box::new(t.into())),
            submitted_at_ms: Some(5),
            ..Record::default()
        }
    }

    fn start(rec: &Record, retry_failed: bool, intact: bool) -> Start {
        let flags = Flags {
            retry_failed,
            resubmit_lost: false,
        };
        decide(Some(rec), Key(7), Usd::from_micros(50_000), flags, |_| {
            intact
        })
        .start
    }

    fn failed(code: &str, charged: Charged) -> State {
        State::Failed {
            code: code.into(),
            message: String::new(),
            charged,
            cost_micros: 0,
        }
    }

    #[test]
    fn a_plain_rerun_submits_what_was_never_accepted() {
        assert_eq!(
            decide(None, Key(7), Usd::default(), Flags::default(), |_| true).start,
            Start::Submit
        );
        let mut gave_up = rec(State::Pending, None);
        gave_up.left = Some(Box::new(Left {
            code: "CONNECTION_FAILED".into(),
            message: String::new(),
        }));
        assert_eq!(start(&gave_up, false, true), Start::Submit);
    }

    #[test]
    fn a_plain_rerun_collects_every_live_request_id() {
        let mut left = rec(State::Submitted, Some(ticket()));
        left.left = Some(Box::new(Left {
            code: "DISK".into(),
            message: String::new(),
        }));
        let poll = Start::Poll {
            ticket: ticket(),
            since_ms: 5,
        };
        assert_eq!(start(&left, false, true), poll);
        // Older versions wrote these as verdicts.
        let old = rec(failed("POLL_TIMEOUT", Charged::Possibly), Some(ticket()));
        assert_eq!(start(&old, false, true), poll);
        // A completed row whose file was damaged is fetched again.
        let done = rec(
            State::Done {
                files: vec!["images/a_0.png".into()],
                sha256: vec!["x".into()],
                stamps: vec![],
                cost_micros: 1,
                cached: false,
            },
            Some(ticket()),
        );
        assert_eq!(start(&done, false, true), Start::End);
        assert_eq!(start(&done, false, false), poll);
    }

    #[test]
    fn verdicts_and_uncertain_submits_wait_for_retry_failed() {
        for state in [
            failed("FAILED", Charged::Possibly),
            failed("INVALID_PARAMETER", Charged::No),
            failed("SUBMIT_UNCERTAIN", Charged::Possibly),
            State::Uncertain,
        ] {
            let r = rec(state.clone(), None);
            assert_eq!(start(&r, false, true), Start::End, "{state:?}");
            assert_eq!(start(&r, true, true), Start::Submit, "{state:?}");
        }
    }

    #[test]
    fn an_accepted_row_with_nothing_to_poll_is_a_lost_result() {
        let d = decide(
            Some(&rec(State::Submitted, None)),
            Key(7),
            Usd::from_micros(7),
            Flags::default(),
            |_| true,
        );
        assert_eq!(d.start, Start::End);
        assert!(matches!(
            d.record,
            Some(Entry::Failed { ref code, cost_micros: 7, charged: Charged::Yes, .. })
                if code == "RESULT_LOST"
        ));
    }

    #[test]
    fn a_lost_result_is_paid_again_only_with_resubmit_lost() {
        let lost = rec(failed(RESULT_LOST, Charged::Yes), Some(ticket()));
        let with = |retry_failed, resubmit_lost| {
            let flags = Flags {
                retry_failed,
                resubmit_lost,
            };
            decide(Some(&lost), Key(7), Usd::default(), flags, |_| true).start
        };
        assert_eq!(with(false, false), Start::End);
        assert_eq!(
            with(true, false),
            Start::End,
            "--retry-failed is not enough"
        );
        assert_eq!(with(false, true), Start::Submit);
    }
}
