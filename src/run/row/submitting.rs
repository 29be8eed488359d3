//! A row's submit: reserve its price, wait for the submit rate, journal the
//! intent, send, and journal what the gateway answered (its request id
//! before anything else happens to it); a submit not accepted is tried
//! again after a backoff.
//!
//! Cancellation: a row waiting for the rate limiter or a backoff gives up
//! (unrun, its reservation freed) when the run stops; once the intent is
//! journaled, the submit is sent and its answer recorded.

use std::time::Duration;

use super::{refused_delay, RowRun};
use crate::api::{self, ApiError, Class, Status};
use crate::journal::{now_ms, Charged, Entry};
use crate::output;
use crate::progress::{Event, Stage};
use crate::run::{Start, Stop};
use crate::vocab::{Code, Usd};

impl RowRun {
    pub(super) async fn submit(&mut self) -> Start {
        let ctx = self.ctx.clone();
        if self.shutdown.is_shutdown() {
            self.release();
            return Start::End;
        }
        if !self.reserved {
            if !ctx.budget().reserve(self.price) {
                ctx.stop(Stop::Budget {
                    limit: ctx.settings.max_cost.unwrap_or_default(),
                });
                return Start::End;
            }
            self.reserved = true;
        }
        // Built before the intent: a request that cannot be sent never
        // looks as if it might have been.
        let prepared = if self.req.reads_local_files() {
            // Local images are read on the blocking pool.
            let (client, req) = (ctx.client.clone(), self.req.clone());
            tokio::task::spawn_blocking(move || client.prepare(&req))
                .await
                .unwrap_or_else(|e| {
                    Err(ApiError::new(
                        Class::FailRow,
                        Code::Internal.as_str(),
                        e.to_string(),
                    ))
                })
        } else {
            ctx.client.prepare(&self.req)
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => return self.fail(&e.code, &e.message, Charged::No).await,
        };
        let slot = tokio::select! {
            slot = ctx.limiter.acquire() => slot,
            _ = self.shutdown.recv() => {
                self.release();
                return Start::End;
            }
        };
        if !ctx
            .record(&Entry::Intent {
                key: self.key,
                at_ms: now_ms(),
                price_micros: self.price.micros(),
            })
            .await
        {
            self.release();
            return Start::End;
        }
        ctx.event(Event::Enter(Stage::Submitting));
        let sent_ms = now_ms();
        let result = ctx.client.send(&prepared).await;
        // The request's poll clock starts when the gateway's answer comes,
        // not when the submit left (a burst of submits queues at the
        // gateway, or waits for new connections, before each is accepted
        // and its latency starts) and not once the answer is journaled (a
        // sync's wait is no latency): the gateway accepted it just before
        // it answered, so a request is done by then plus its latency.
        let answered_ms = now_ms();
        ctx.event(Event::Leave(Stage::Submitting));
        ctx.observe(&result);
        let e = match result {
            Ok(sub) => {
                ctx.limiter.accepted(slot);
                return self.accepted(sub, sent_ms, answered_ms).await;
            }
            Err(e) => e,
        };
        let status = e.http_status.filter(|s| matches!(s, 429 | 503));
        if status.is_some() || e.is_rate_limited() {
            ctx.event(Event::Busy {
                status,
                rate_limited: e.class == Class::Retry && e.is_rate_limited(),
            });
        }
        match e.class {
            Class::Retry => {
                if e.is_rate_limited() {
                    ctx.limiter.throttled(e.retry_after, slot);
                }
                self.not_accepted(&e.code, &e.to_string(), Some(&e)).await
            }
            Class::Unsure => {
                self.fail(
                    Code::SubmitUncertain.as_str(),
                    &format!("{e}; {}", output::UNCERTAIN_MESSAGE),
                    Charged::Possibly,
                )
                .await
            }
            Class::FailRow => self.fail(&e.code, &e.message, Charged::No).await,
            // A refusal (401, 403, no funds, a redirect): nothing was accepted.
            Class::StopRun | Class::NotFound | Class::Local => {
                ctx.record(&Entry::NotAccepted {
                    key: self.key,
                    code: e.code.clone(),
                    message: e.message.clone(),
                })
                .await;
                self.release();
                if e.is_local() {
                    ctx.stop(Stop::Disk(e.message.clone()));
                } else {
                    self.stop_run(&e);
                }
                Start::End
            }
        }
    }

    /// The gateway accepted the submit: its request id is journaled before
    /// anything else happens to it. `sent_ms`: when its submit was sent
    /// (its `submitted_at`); `answered_ms`: when the answer came (its polls'
    /// clock).
    async fn accepted(&mut self, sub: api::Submitted, sent_ms: u64, answered_ms: u64) -> Start {
        let ctx = self.ctx.clone();
        let urls: Vec<String> = match &sub.status {
            Some(Status::Completed(images)) => images
                .iter()
                .filter(|u| !u.starts_with("data:"))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        if !ctx
            .record(&Entry::Submitted {
                key: self.key,
                at_ms: sent_ms,
                ticket: sub.ticket.clone(),
                images: urls,
            })
            .await
        {
            return Start::End;
        }
        match (sub.status, sub.ticket) {
            (Some(Status::Completed(images)), ticket) => Start::Download { images, ticket },
            (Some(Status::Failed(m)), _) => self.fail("FAILED", &m, Charged::Possibly).await,
            (Some(Status::Error(m)), _) => self.not_accepted("ERROR", &m, None).await,
            (_, Some(ticket)) => Start::Poll {
                ticket,
                since_ms: answered_ms,
            },
            (_, None) => {
                self.fail(
                    Code::BadResponse.as_str(),
                    "the gateway accepted the submit without a request id",
                    Charged::Possibly,
                )
                .await
            }
        }
    }

    /// The submit provably was not accepted: record it, then try again
    /// (after a backoff; a 429 waits in the shared rate limiter instead). A
    /// connection that never opened says nothing of the row: it waits for
    /// the gateway, without using up its attempts, until the gateway answers
    /// or the run stops as unreachable (`watch_reachability`).
    pub(super) async fn not_accepted(
        &mut self,
        code: &str,
        message: &str,
        err: Option<&ApiError>,
    ) -> Start {
        let ctx = self.ctx.clone();
        if !ctx
            .record(&Entry::NotAccepted {
                key: self.key,
                code: code.to_string(),
                message: message.to_string(),
            })
            .await
        {
            self.release();
            return Start::End;
        }
        if err.is_some_and(ApiError::is_rate_limited) {
            return Start::Submit;
        }
        if err.is_some_and(ApiError::is_unreachable) {
            self.refused += 1;
            let delay = refused_delay(&ctx.settings.backoff, self.refused);
            return self.wait_to_submit(delay).await;
        }
        self.refused = 0;
        self.failures += 1;
        if self.failures >= ctx.settings.max_attempts {
            // Never accepted, nothing charged: a plain rerun submits it again.
            self.release();
            let message = format!(
                "gave up after {} attempts, none accepted (nothing charged; a rerun submits it again): {message}",
                self.failures
            );
            self.record_left(code, &message).await;
            ctx.event(Event::Failed {
                possibly: Usd::default(),
            });
            self.say(format!("error: row {}: {code}: {message}", self.id));
            return Start::End;
        }
        let delay = ctx
            .settings
            .backoff
            .delay(self.failures - 1, err.and_then(|e| e.retry_after));
        self.wait_to_submit(delay).await
    }

    /// Sleeps `delay`, then submits again; gives up (unrun) if the run stops first.
    async fn wait_to_submit(&mut self, delay: Duration) -> Start {
        tokio::select! {
            _ = tokio::time::sleep(delay) => Start::Submit,
            _ = self.shutdown.recv() => {
                self.release();
                Start::End
            }
        }
    }
}
