//! Where each row's work starts in a run, decided from what the journal
//! knows, before anything is sent.
//!
//! Why this exists apart from the scheduler: this is the rule that keeps a
//! rerun from paying twice, and it is a pure function of a journal record
//! (and whether the row's files are intact, and whether the cache holds its
//! images), so it is tested on its own.
//!
//! A plain rerun submits rows never accepted and collects every row holding
//! a live request id; `--retry-failed` adds final verdicts (`FAILED`, 4xx)
//! and submits whose answer never arrived.

use crate::cache::Hit;
use crate::journal::{now_ms, Charged, Entry, Record, State};
use crate::plan::{Key, Usd};
use crate::vocab::Code;
use crate::vocab::Ticket;

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
    /// Its request was fulfilled before: its images are in the cache (a
    /// completed row whose files were damaged gets them back from there).
    /// If the entry fails its checks, the row is submitted only if
    /// `or_submit` (it would have been without the cache); otherwise it
    /// keeps the verdict it would have had.
    Cached {
        hit: crate::cache::Hit,
        or_submit: bool,
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
const COLLECTABLE_VERDICTS: &[&str] = &[Code::PollTimeout.as_str(), Code::DownloadFailed.as_str()];

/// What the user allows a rerun to pay for again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    /// `--retry-failed`: final verdicts and submits whose answer never came.
    pub retry_failed: bool,
    /// `--resubmit-lost`: results the gateway lost after charging for them.
    pub resubmit_lost: bool,
}

/// The message of a row whose files, taken from the cache at no cost, are
/// gone, and the cache no longer holds them: nothing was charged for it
/// ([`Code::CachedFilesMissing`]).
pub(crate) const CACHED_FILES_MISSING_MESSAGE: &str = "its files, taken from the cache at no cost, are missing or damaged, and no cache this run was given holds them; nothing was charged for it: rerun with the --cache it came from to take it again, or with --retry-failed to submit it (paid)";
/// The message of a paid row whose files are gone ([`Code::FilesMissing`]).
pub(crate) const FILES_MISSING_MESSAGE: &str = "its files are missing or damaged and the request cannot be polled again; rerun with --resubmit-lost to pay for it again";

/// Decides where row `key` starts. `files_intact` checks a completed row's
/// files against what its `done` line recorded (the row's state);
/// `from_cache` finds the row's request in the cache, if it holds it.
pub(crate) fn decide(
    rec: Option<&Record>,
    key: Key,
    price: Usd,
    flags: Flags,
    files_intact: impl FnOnce(&State) -> bool,
    from_cache: impl FnOnce() -> Option<Hit>,
) -> Decision {
    let Some(rec) = rec else {
        return Start::Submit.into();
    };
    // Back from the cache, at no cost; a miss keeps the row's verdict.
    let restore = |hit| Start::Cached {
        hit,
        or_submit: false,
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
                Code::ResultLost.as_str(),
                "accepted with images that were never saved; rerun with --resubmit-lost to pay for it again",
            ),
        },
        State::Done { .. } if files_intact(&rec.state) => Start::End.into(),
        // Taken from the cache: a request id it may hold is not what made
        // its files, and nothing was paid here that could be lost.
        State::Done { cached: true, .. } => match from_cache() {
            Some(hit) => restore(hit).into(),
            None => Decision {
                start: Start::End,
                record: Some(Entry::Failed {
                    key,
                    at_ms: now_ms(),
                    code: Code::CachedFilesMissing.as_str().into(),
                    message: CACHED_FILES_MISSING_MESSAGE.into(),
                    charged: Charged::No,
                    cost_micros: 0,
                }),
            },
        },
        // Paid for: taken from the cache (free, checked by SHA-256, and there
        // when the gateway no longer keeps the result), else fetched again
        // from its request (a miss in the cache falls back to it too).
        State::Done { .. } => match from_cache().map(restore).or_else(|| resume(rec)) {
            Some(start) => start.into(),
            None => verdict(Code::FilesMissing.as_str(), FILES_MISSING_MESSAGE),
        },
        // Cost nothing: taken again whenever the cache has it.
        State::Failed { code, .. } if *code == Code::CachedFilesMissing && !flags.retry_failed => {
            from_cache().map_or(Start::End, restore).into()
        }
        State::Failed { code, .. } => {
            let collectable = COLLECTABLE_VERDICTS.contains(&code.as_str());
            // Paying again for a lost result is its own decision.
            let allowed = if Code::LOST.contains(&code.as_str()) {
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
pub(super) fn resume(rec: &Record) -> Option<Start> {
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
        decide(
            Some(rec),
            Key(7),
            Usd::from_micros(50_000),
            flags,
            |_| intact,
            || None,
        )
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
            decide(
                None,
                Key(7),
                Usd::default(),
                Flags::default(),
                |_| true,
                || None
            )
            .start,
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
            || None,
        );
        assert_eq!(d.start, Start::End);
        assert!(matches!(
            d.record,
            Some(Entry::Failed { ref code, cost_micros: 7, charged: Charged::Yes, .. })
                if code == "RESULT_LOST"
        ));
    }

    #[test]
    fn damaged_files_come_back_from_the_cache_and_a_cached_row_is_never_charged() {
        let files = |cached| State::Done {
            files: vec!["images/a_0.png".into()],
            sha256: vec!["x".into()],
            stamps: vec![],
            cost_micros: if cached { 0 } else { 50_000 },
            cached,
        };
        // Stands for the start that takes the row from the cache.
        let marker = Start::Cached {
            hit: Hit::for_tests(),
            or_submit: false,
        };
        let decide_with = |r: &Record, held: bool, flags| {
            decide(
                Some(r),
                Key(7),
                Usd::from_micros(50_000),
                flags,
                |_| false,
                move || held.then(Hit::for_tests),
            )
        };
        // From the cache, even when an earlier failed attempt left a request id.
        for t in [None, Some(ticket())] {
            let r = rec(files(true), t);
            assert_eq!(decide_with(&r, true, Flags::default()).start, marker);
            let d = decide_with(&r, false, Flags::default());
            assert_eq!(d.start, Start::End);
            let Some(Entry::Failed {
                code,
                message,
                charged,
                cost_micros,
                ..
            }) = d.record
            else {
                panic!("{d:?}");
            };
            assert_eq!(
                (code.as_str(), charged, cost_micros),
                (Code::CachedFilesMissing.as_str(), Charged::No, 0)
            );
            assert!(message.contains("--retry-failed") && !message.contains("--resubmit-lost"));
        }
        // Submitted (paid) only with --retry-failed.
        let gone = rec(failed(Code::CachedFilesMissing.as_str(), Charged::No), None);
        assert_eq!(start(&gone, false, true), Start::End);
        assert_eq!(decide_with(&gone, true, Flags::default()).start, marker);
        assert_eq!(start(&gone, true, true), Start::Submit);
        // A paid row: the cache first (free, and checked by SHA-256; the
        // gateway may have dropped the result), then its request, then a verdict.
        let paid = rec(files(false), Some(ticket()));
        assert_eq!(decide_with(&paid, true, Flags::default()).start, marker);
        assert!(matches!(
            decide_with(&paid, false, Flags::default()).start,
            Start::Poll { .. }
        ));
        let paid = rec(files(false), None);
        assert_eq!(decide_with(&paid, true, Flags::default()).start, marker);
        let d = decide_with(&paid, false, Flags::default());
        assert!(matches!(
            d.record,
            Some(Entry::Failed { ref code, charged: Charged::Yes, .. }) if *code == Code::FilesMissing
        ));
    }

    #[test]
    fn a_lost_result_is_paid_again_only_with_resubmit_lost() {
        let lost = rec(
            failed(Code::ResultLost.as_str(), Charged::Yes),
            Some(ticket()),
        );
        let with = |retry_failed, resubmit_lost| {
            let flags = Flags {
                retry_failed,
                resubmit_lost,
            };
            decide(
                Some(&lost),
                Key(7),
                Usd::default(),
                flags,
                |_| true,
                || None,
            )
            .start
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
