//! An accepted row's polls: ask the gateway whether its request finished,
//! when the schedule (fixed, or learned from the run) says, until it ends,
//! fails, or the row's deadline passes.
//!
//! Cancellation: a soft stop is ignored (what was paid for is collected); a
//! hard stop wakes the row from its wait and leaves it collectable.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{jitter, refused_delay, RowRun};
use crate::api::{backoff::unit_random, Backoff, Status};
use crate::journal::{now_ms, Charged};
use crate::progress::{Event, Stage};
use crate::run::poll::{self, Schedule};
use crate::run::Start;
use crate::vocab::Code;
use crate::vocab::Ticket;

impl RowRun {
    /// Polls until the request ends, when the schedule says (see
    /// [`poll`]). Its `--concurrency` slot is held throughout: a request
    /// counts against the bound until it is seen finished.
    pub(super) async fn poll(&mut self, ticket: Ticket, since_ms: u64) -> Start {
        let ctx = self.ctx.clone();
        let settings = &ctx.settings;
        ctx.event(Event::Enter(Stage::Polling));
        let leave = || ctx.event(Event::Leave(Stage::Polling));
        // When it was submitted, on this run's clock (maybe in an earlier run).
        let now = Instant::now();
        let submitted = now
            .checked_sub(Duration::from_millis(now_ms().saturating_sub(since_ms)))
            .unwrap_or(now);
        let since = |t: Instant| t.saturating_duration_since(submitted).as_secs_f64();
        // The deadline bounds how long this run waits, so a request resumed
        // long after its submit gets the full time too.
        let deadline = now + settings.row_deadline;
        let key = (self.req.kind(), self.req.images());
        let mut changes = match &ctx.schedule {
            Schedule::Adaptive(learned) => Some(learned.changes()),
            Schedule::Fixed(_) => None,
        };
        // Failed status calls back off from the polling pace.
        let pace = match &ctx.schedule {
            Schedule::Fixed(interval) => *interval,
            Schedule::Adaptive(_) => Duration::from_secs_f64(poll::MIN_GAP),
        };
        let backoff = Backoff {
            base: pace,
            cap: settings.backoff.cap.max(pace),
        };
        // Under the learned schedule, its handle on it; what it draws is
        // drawn once, however often it is planned.
        let learned = match &ctx.schedule {
            Schedule::Adaptive(learned) => Some((learned, learned.token(key, unit_random()))),
            Schedule::Fixed(_) => None,
        };
        let mut not_before = now;
        let mut last_poll: Option<Instant> = None;
        let mut last_pending: Option<f64> = None;
        let mut errors = 0u32;
        let mut refused = 0u32;
        loop {
            let (planned, ask) = match &learned {
                Some((learned, token)) => {
                    let plan = learned.next_poll(token, since(Instant::now()), last_pending);
                    (submitted + Duration::from_secs_f64(plan.at), plan.ask)
                }
                // `--poll-interval-ms`: its pace.
                None => (
                    last_poll.unwrap_or(submitted) + jitter(pace),
                    poll::Ask::Again,
                ),
            };
            let wake = planned.max(not_before);
            // Checked before each poll but the first: a request is always asked once.
            if last_poll.is_some() && wake >= deadline {
                leave();
                let message = format!(
                    "request {} did not finish within {} s",
                    ticket.request_id,
                    settings.row_deadline.as_secs()
                );
                return self
                    .leave_accepted(Code::PollTimeout.as_str(), &message, &ticket)
                    .await;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                stop = self.shutdown.recv_hard() => {
                    leave();
                    return self.leave_accepted(stop.code(), &stop.describe(), &ticket).await;
                }
                // The estimate moved: plan again.
                Some(Ok(())) = async { match changes.as_mut() {
                    Some(rx) => Some(rx.changed().await),
                    None => std::future::pending().await,
                } } => continue,
            }
            if let Some((learned, token)) = &learned {
                learned.asking(token, ask);
            }
            let sent = Instant::now();
            last_poll = Some(sent);
            ctx.status_calls.fetch_add(1, Ordering::Relaxed);
            let result = ctx.client.status(&ticket).await;
            ctx.observe(&result);
            match result {
                Ok(Status::Pending(_)) => {
                    errors = 0;
                    refused = 0;
                    last_pending = Some(since(sent));
                    if let Some((learned, token)) = &learned {
                        learned.seen_pending(token, since(sent));
                    }
                }
                Ok(Status::Completed(images)) => {
                    leave();
                    if let Some((learned, token)) = &learned {
                        // Both ends by when the poll was sent, as polls are
                        // planned: not by when its answer came, which adds
                        // the round trip and any queue to every estimate.
                        let seen = (last_pending.unwrap_or(0.0), since(sent));
                        learned.learn(token, seen.0, seen.1);
                        self.seen = Some(seen);
                    }
                    return Start::Download {
                        images,
                        ticket: Some(ticket),
                    };
                }
                Ok(Status::Failed(m)) => {
                    leave();
                    return self.fail("FAILED", &m, Charged::Possibly).await;
                }
                Ok(Status::Error(m)) => {
                    leave();
                    self.say(format!("warning: row {}: the gateway answered ERROR (not charged); submitting again: {m}", self.id));
                    return self.not_accepted("ERROR", &m, None).await;
                }
                // Not this request's failure: it waits for the gateway (or
                // the run's unreachable stop, which leaves it collectable).
                Err(e) if e.is_unreachable() => {
                    refused += 1;
                    // After a soft stop the run's unreachable stop cannot
                    // come (the first stop stands): leave it here instead.
                    if ctx.unreachable_long() {
                        leave();
                        let message = format!(
                            "every connection to the gateway failed for {} s, the last with {e}",
                            settings.unreachable_after.as_secs()
                        );
                        return self
                            .leave_accepted(Code::GatewayUnreachable.as_str(), &message, &ticket)
                            .await;
                    }
                    not_before = Instant::now() + refused_delay(&backoff, refused);
                }
                Err(e) if e.is_retryable() || e.may_have_been_accepted() => {
                    errors += 1;
                    if errors >= settings.max_status_failures && self.shutdown.hard().is_none() {
                        leave();
                        let message =
                            format!("{errors} status calls in a row failed, the last with {e}");
                        return self.leave_accepted(&e.code, &message, &ticket).await;
                    }
                    not_before = Instant::now() + backoff.delay(errors - 1, e.retry_after);
                }
                // Rebuilt only with the key it was submitted with.
                Err(e) if e.code == Code::KeyChanged => {
                    leave();
                    return self.leave_accepted(&e.code, &e.message, &ticket).await;
                }
                Err(e) if e.is_not_found() => {
                    leave();
                    let message = format!(
                        "the gateway no longer knows request {}: it was paid for and its result is gone; rerun with --resubmit-lost to pay for it again",
                        ticket.request_id
                    );
                    return self
                        .fail(Code::ResultLost.as_str(), &message, Charged::Yes)
                        .await;
                }
                Err(e) if e.stops_run() => {
                    leave();
                    self.stop_run(&e);
                    return self.leave_accepted(&e.code, &e.message, &ticket).await;
                }
                Err(e) => {
                    leave();
                    return self.fail(&e.code, &e.message, Charged::Possibly).await;
                }
            }
        }
    }
}
