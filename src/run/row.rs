//! One row's life: submit → record the request id → poll → download → done.
//!
//! Every step that costs money or produces files is journaled first (see
//! [`crate::journal`]). Errors follow the client's classification: a row
//! failure is written down and counted, never `?`-ed out of the run. A row
//! ends one of three ways: a verdict (`done`, or `failed` when the answer is
//! final or the submit's fate unknown), or *left* (`unfinished`): it gave up
//! submitting without being accepted, or it holds a request id this run
//! could not collect. A plain rerun takes a left row up where it stands.
//!
//! Cancellation: a row waiting to submit gives up when the run stops; once a
//! submit may have been sent, the row is carried to its end (polls and
//! downloads ignore a soft stop), so that what was paid for is collected. A
//! hard stop (disk, unreachable gateway) leaves it at its next step.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::poll::{self, Schedule};
use super::start::{
    resume, CACHED_FILES_MISSING, CACHED_FILES_MISSING_MESSAGE, FILES_MISSING,
    FILES_MISSING_MESSAGE,
};
use super::{Ctx, Start, Stop};
use crate::api::{
    self, backoff::unit_random, ApiError, Backoff, Class, Status, Ticket, PART_PREFIX,
};
use crate::cache;
use crate::journal::{now_ms, Charged, Entry, State};
use crate::output::{self, IMAGES_DIR, RESULT_LOST, SUBMIT_UNCERTAIN};
use crate::plan::{Key, Request, Usd};
use crate::progress::{Event, Stage};
use crate::sidecar;

struct RowRun {
    ctx: Arc<Ctx>,
    key: Key,
    id: String,
    req: Request,
    price: Usd,
    /// Whether `price` is counted in this run's committed spending.
    reserved: bool,
    /// Failed submits this run (429s and refused connections excepted).
    failures: u32,
    /// Submits in a row whose connection never opened (they wait for the gateway).
    refused: u32,
    /// When its request was last seen pending and first seen done, in
    /// seconds since its submit (journaled with its files, to seed later runs).
    seen: Option<(f64, f64)>,
}

/// Drives row `index` from `start` to its end. `permit` (of
/// `--concurrency`) is held while the row has a request at the gateway, or
/// is about to: from before its submit until the gateway says it finished.
/// Its images are then fetched under a download permit instead (as many as
/// `--concurrency` again), so the slot goes to the next row at once.
pub(super) async fn drive(ctx: Arc<Ctx>, index: usize, start: Start, permit: OwnedSemaphorePermit) {
    let row = ctx.plan.rows[index];
    let mut run = RowRun {
        key: row.key,
        id: ctx.plan.row_id(&row),
        req: ctx.plan.request(&row),
        price: ctx.plan.row_price(&row),
        reserved: false,
        failures: 0,
        refused: 0,
        seen: None,
        ctx,
    };
    let mut next = start;
    let mut request = Some(permit);
    let mut download: Option<OwnedSemaphorePermit> = None;
    loop {
        // Never waits for a request slot while holding a download slot, so
        // the two bounds cannot deadlock.
        match &next {
            Start::Download { .. } if download.is_none() => {
                download = Some(acquire(&run.ctx.downloads).await);
                request = None;
            }
            Start::Submit | Start::Poll { .. } if request.is_none() => {
                download = None;
                request = Some(acquire(&run.ctx.requests).await);
            }
            _ => {}
        }
        #[cfg(test)]
        if matches!(next, Start::Poll { .. }) && run.ctx.settings.panic_on == Some(run.key) {
            panic!("injected by a test after the request was accepted");
        }
        next = match next {
            Start::Submit => run.submit().await,
            Start::Poll { ticket, since_ms } => run.poll(ticket, since_ms).await,
            Start::Download { images, ticket } => run.download(images, ticket).await,
            Start::Cached { hit, or_submit } => run.take_cached(hit, or_submit).await,
            Start::End => return,
        };
    }
}

/// A permit of `slots` (never closed).
pub(super) async fn acquire(slots: &Arc<tokio::sync::Semaphore>) -> OwnedSemaphorePermit {
    slots
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed")
}

impl RowRun {
    fn release(&mut self) {
        if self.reserved {
            self.ctx.budget().release(self.price);
            self.reserved = false;
        }
    }

    fn say(&self, text: String) {
        self.ctx.event(Event::Say(text));
    }

    async fn submit(&mut self) -> Start {
        let ctx = self.ctx.clone();
        if ctx.stopped() {
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
                .unwrap_or_else(|e| Err(ApiError::new(Class::FailRow, "INTERNAL", e.to_string())))
        } else {
            ctx.client.prepare(&self.req)
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => return self.fail(&e.code, &e.message, Charged::No).await,
        };
        let mut stop = ctx.stop.subscribe();
        let slot = tokio::select! {
            slot = ctx.limiter.acquire() => slot,
            _ = stop.wait_for(Option::is_some) => {
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
        match e.class {
            Class::Retry => {
                if e.is_rate_limited() {
                    ctx.limiter.throttled(e.retry_after, slot);
                }
                self.not_accepted(&e.code, &e.to_string(), Some(&e)).await
            }
            Class::Unsure => {
                self.fail(
                    SUBMIT_UNCERTAIN,
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
                    "BAD_RESPONSE",
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
    async fn not_accepted(&mut self, code: &str, message: &str, err: Option<&ApiError>) -> Start {
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
            ctx.event(Event::Failed);
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
        let mut stop = self.ctx.stop.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(delay) => Start::Submit,
            _ = stop.wait_for(Option::is_some) => {
                self.release();
                Start::End
            }
        }
    }

    /// Polls until the request ends, when the schedule says (see
    /// [`poll`]). Its `--concurrency` slot is held throughout: a request
    /// counts against the bound until it is seen finished.
    async fn poll(&mut self, ticket: Ticket, since_ms: u64) -> Start {
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
                return self.leave_accepted("POLL_TIMEOUT", &message, &ticket).await;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                stop = ctx.until_hard_stop() => {
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
                            .leave_accepted("GATEWAY_UNREACHABLE", &message, &ticket)
                            .await;
                    }
                    not_before = Instant::now() + refused_delay(&backoff, refused);
                }
                Err(e) if e.is_retryable() || e.may_have_been_accepted() => {
                    errors += 1;
                    if errors >= settings.max_status_failures && ctx.hard_stop().is_none() {
                        leave();
                        let message =
                            format!("{errors} status calls in a row failed, the last with {e}");
                        return self.leave_accepted(&e.code, &message, &ticket).await;
                    }
                    not_before = Instant::now() + backoff.delay(errors - 1, e.retry_after);
                }
                // Rebuilt only with the key it was submitted with.
                Err(e) if e.code == api::error::ours::KEY_CHANGED => {
                    leave();
                    return self.leave_accepted(&e.code, &e.message, &ticket).await;
                }
                Err(e) if e.is_not_found() => {
                    leave();
                    let message = format!(
                        "the gateway no longer knows request {}: it was paid for and its result is gone; rerun with --resubmit-lost to pay for it again",
                        ticket.request_id
                    );
                    return self.fail(RESULT_LOST, &message, Charged::Yes).await;
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

    async fn download(&mut self, mut images: Vec<String>, ticket: Option<Ticket>) -> Start {
        let ctx = self.ctx.clone();
        let settings = &ctx.settings;
        let request = ticket
            .as_ref()
            .map_or(String::new(), |t| t.request_id.clone());
        if images.is_empty() {
            return self
                .fail(
                    "NO_IMAGES",
                    "the request completed without images",
                    Charged::Possibly,
                )
                .await;
        }
        let asked = self.req.images() as usize;
        if images.len() > asked {
            self.say(format!(
                "warning: row {}: the gateway sent {} images for a request of {asked}; the extra ones are ignored (and not paid for)",
                self.id,
                images.len()
            ));
            images.truncate(asked);
        }
        ctx.event(Event::Enter(Stage::Downloading));
        let stem = ctx.stems.stem(&self.id, self.key);
        let mut saved = Saved::default();
        for (n, image) in images.iter().enumerate() {
            if let Some(stop) = ctx.hard_stop() {
                ctx.event(Event::Leave(Stage::Downloading));
                return self
                    .leave_collectable(stop.code(), &stop.describe(), &request)
                    .await;
            }
            let name = format!("{stem}_{n}");
            let got = api::retry(&settings.backoff, settings.download_attempts, |_| {
                ctx.client.download(image, &ctx.images_dir, &name)
            })
            .await;
            match got {
                Ok(d) => saved.push(d.path, d.sha256, d.bytes, d.mtime_ns),
                Err(e) => {
                    ctx.event(Event::Leave(Stage::Downloading));
                    let message = format!("image {n} of request {request}: {e}");
                    if e.is_local() {
                        ctx.stop(Stop::Disk(e.message.clone()));
                        return self.leave_collectable(&e.code, &message, &request).await;
                    }
                    if e.is_not_found() {
                        return self
                            .fail("DOWNLOAD_LOST", &message, Charged::Possibly)
                            .await;
                    }
                    if e.code == api::error::ours::KEY_CHANGED {
                        // Its image URL was written with another key: ask
                        // the request for fresh ones (its id may be clean).
                        if let Some(ticket) = ticket {
                            return Start::Poll {
                                ticket,
                                since_ms: now_ms(),
                            };
                        }
                        return self.leave_collectable(&e.code, &message, &request).await;
                    }
                    return self
                        .leave_collectable("DOWNLOAD_FAILED", &message, &request)
                        .await;
                }
            }
        }
        ctx.event(Event::Leave(Stage::Downloading));
        let count = saved.files.len() as u64;
        let cost = ctx.plan.pricing.per_image(self.req.kind()).times(count);
        let to_store = ctx.cache.is_some().then(|| saved.pairs());
        if !ctx.record(&self.done(saved, cost, false)).await {
            return Start::End;
        }
        self.write_sidecars().await;
        if let Some(files) = to_store {
            self.store_in_cache(files).await;
        }
        // The reservation was for every image asked; keep only what was made.
        if self.reserved {
            ctx.budget().release(Usd::from_micros(
                self.price.micros().saturating_sub(cost.micros()),
            ));
        }
        ctx.event(Event::Completed {
            images: count,
            cost,
        });
        Start::End
    }

    /// Takes the row's images from the cache: completed at no cost. A row
    /// completed earlier whose files were damaged gets them back, keeping
    /// what it cost and whether it was paid for. An entry that fails its
    /// checks is forgotten: the row is then submitted if `or_submit` (it
    /// would have been without the cache), else it gets the verdict it
    /// would have had (never a submit nobody asked for). A failure to write
    /// the output folder stops spending, as a download's does.
    async fn take_cached(&mut self, hit: cache::Hit, or_submit: bool) -> Start {
        let ctx = self.ctx.clone();
        let Some(cache) = ctx.cache.clone() else {
            return Start::Submit;
        };
        if ctx.stopped() {
            return Start::End; // left unrun, or left as it stands
        }
        let before = ctx.journal.with_replay(|r| {
            let rec = r.records.get(&self.key)?;
            match &rec.state {
                State::Done {
                    cost_micros,
                    cached,
                    ..
                } => Some((Usd::from_micros(*cost_micros), *cached, rec.seen_ms)),
                _ => None,
            }
        });
        let stem = ctx.stems.stem(&self.id, self.key);
        let dir = ctx.images_dir.clone();
        let taken = {
            let (cache, hit) = (cache.clone(), hit.clone());
            tokio::task::spawn_blocking(move || cache.take(&hit, &dir, &stem, PART_PREFIX))
                .await
                .unwrap_or_else(|e| {
                    Err(cache::CacheError::Io {
                        path: ctx.images_dir.clone(),
                        source: std::io::Error::other(e),
                    })
                })
        };
        let taken = match taken {
            Ok(taken) => taken,
            Err(e @ cache::CacheError::Output { .. }) => {
                self.say(format!(
                    "error: row {}: {e}; no new requests will be sent",
                    self.id
                ));
                if let cache::CacheError::Output { source, .. } = &e {
                    ctx.stop_images_unwritable(source);
                }
                return Start::End;
            }
            Err(e) => {
                cache.forget(&hit);
                let submit = or_submit && before.is_none();
                let then = if submit { "; it is submitted" } else { "" };
                self.say(format!(
                    "warning: row {}: not taken from the cache ({e}){then}",
                    self.id
                ));
                return match before {
                    _ if submit => Start::Submit,
                    // Paid for: fetched again from its request, if it can be.
                    Some((_, false, _)) => {
                        let again = ctx
                            .journal
                            .with_replay(|r| r.records.get(&self.key).and_then(|r| resume(r)));
                        match again {
                            Some(start) => start,
                            None => {
                                self.fail(FILES_MISSING, FILES_MISSING_MESSAGE, Charged::Yes)
                                    .await
                            }
                        }
                    }
                    _ => {
                        self.fail(
                            CACHED_FILES_MISSING,
                            CACHED_FILES_MISSING_MESSAGE,
                            Charged::No,
                        )
                        .await
                    }
                };
            }
        };
        let count = taken.len() as u64;
        let mut saved = Saved::default();
        for t in taken {
            saved.push(t.path, t.sha256, t.bytes, t.mtime_ns);
        }
        let (cost, cached) = match before {
            Some((cost, cached, seen)) => {
                self.seen = seen.map(|[lo, hi]| (lo as f64 / 1000.0, hi as f64 / 1000.0));
                (cost, cached)
            }
            None => (Usd::default(), true),
        };
        if !ctx.record(&self.done(saved, cost, cached)).await {
            return Start::End;
        }
        self.write_sidecars().await;
        ctx.event(Event::Completed {
            images: count,
            cost: Usd::default(),
        });
        Start::End
    }

    /// Stores a paid row's images in the cache, if the run has one. A
    /// failure costs nothing but later savings: it is told once, not fatal.
    async fn store_in_cache(&self, files: Vec<(PathBuf, String)>) {
        let Some(cache) = self.ctx.cache.clone() else {
            return;
        };
        let req = self.req.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let identity = cache.identity(&req)?;
            cache.store(&identity, &files)
        })
        .await;
        let e = match stored {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        if !self.ctx.cache_warned.swap(true, Ordering::Relaxed) {
            self.say(format!(
                "warning: cannot store images in the cache ({e}); the run goes on without storing"
            ));
        }
    }

    /// Offers the row's images to the contact sheet's thumbnailer, and
    /// writes their provenance, from its `done` record (durable by now). A
    /// failure to write stops spending, as a download's does; the row stays
    /// done and the next run writes what is missing.
    async fn write_sidecars(&self) {
        let ctx = self.ctx.clone();
        let Some(rec) = ctx
            .journal
            .with_replay(|r| r.records.get(&self.key).map(|r| (**r).clone()))
        else {
            return;
        };
        // Its thumbnails, off the async workers; never waited for.
        if let (Some(thumbs), State::Done { files, .. }) = (&ctx.thumbs, &rec.state) {
            files.iter().for_each(|f| thumbs.offer(f));
        }
        let (out_dir, id, key, req) = (
            ctx.settings.out_dir.clone(),
            self.id.clone(),
            self.key,
            self.req.clone(),
        );
        let written = super::blocking(move || sidecar::write(&out_dir, &id, key, &req, &rec));
        if let Err(e) = written.await {
            self.say(format!(
                "error: cannot write the provenance of row {} in {}: {}; no new requests will be sent",
                self.id,
                ctx.images_dir.display(),
                crate::disk::plain(&e)
            ));
            ctx.stop_images_unwritable(&e);
        }
    }

    /// The `done` line of this row, with the files it saved.
    fn done(&self, saved: Saved, cost: Usd, cached: bool) -> Entry {
        Entry::Done {
            key: self.key,
            at_ms: now_ms(),
            files: saved.files,
            sha256: saved.sha256,
            stamps: saved.stamps,
            cost_micros: cost.micros(),
            seen_ms: self
                .seen
                .map(|(lo, hi)| [(lo * 1000.0) as u64, (hi * 1000.0) as u64]),
            cached,
        }
    }

    /// Records a verdict. `Charged::No` frees its share of the budget.
    async fn fail(&mut self, code: &str, message: &str, charged: Charged) -> Start {
        let cost = match charged {
            Charged::No => Usd::default(),
            Charged::Possibly | Charged::Yes => self.price,
        };
        self.ctx
            .record(&Entry::Failed {
                key: self.key,
                at_ms: now_ms(),
                code: code.to_string(),
                message: message.to_string(),
                charged,
                cost_micros: cost.micros(),
            })
            .await;
        if charged == Charged::No {
            self.release();
        }
        self.ctx.event(Event::Failed);
        self.say(format!("error: row {}: {code}: {message}", self.id));
        Start::End
    }

    /// Leaves an accepted row for a rerun to collect; it keeps its request id.
    async fn leave_accepted(&mut self, code: &str, message: &str, ticket: &Ticket) -> Start {
        self.leave_collectable(code, message, &ticket.request_id)
            .await
    }

    async fn leave_collectable(&mut self, code: &str, message: &str, request: &str) -> Start {
        let message = if request.is_empty() {
            format!("{message}; accepted: rerun the same command to collect it")
        } else {
            format!(
                "{message}; accepted as request {request}: rerun the same command to collect it"
            )
        };
        self.record_left(code, &message).await;
        self.ctx.event(Event::Left);
        self.say(format!("warning: row {}: {code}: {message}", self.id));
        Start::End
    }

    async fn record_left(&self, code: &str, message: &str) {
        self.ctx
            .record(&Entry::Unfinished {
                key: self.key,
                at_ms: now_ms(),
                code: code.to_string(),
                message: message.to_string(),
            })
            .await;
    }

    fn stop_run(&self, e: &ApiError) {
        self.say(format!(
            "error: row {}: {e}; no new requests will be sent",
            self.id
        ));
        self.ctx.stop(Stop::Rejected {
            code: e.code.clone(),
            message: e.message.clone(),
        });
    }
}

/// The files a row saved, as its `done` line records them.
#[derive(Default)]
struct Saved {
    /// Relative to the output folder.
    files: Vec<String>,
    sha256: Vec<String>,
    stamps: Vec<[u64; 2]>,
    paths: Vec<PathBuf>,
}

impl Saved {
    fn push(&mut self, path: PathBuf, sha256: String, bytes: u64, mtime_ns: u64) {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        self.files.push(format!("{IMAGES_DIR}/{file}"));
        self.sha256.push(sha256);
        self.stamps.push([bytes, mtime_ns]);
        self.paths.push(path);
    }

    /// Each file's path and SHA-256, for the cache.
    fn pairs(&self) -> Vec<(PathBuf, String)> {
        self.paths
            .iter()
            .cloned()
            .zip(self.sha256.iter().cloned())
            .collect()
    }
}

/// How long to wait after the `refused`th connection in a row that never
/// opened: the backoff's first few steps (at most 8 × its base, 4 s by
/// default), so that a gateway that comes back is noticed soon, and the
/// run's unreachable limit, not the row, decides when to give up.
fn refused_delay(backoff: &Backoff, refused: u32) -> Duration {
    backoff.delay(refused.saturating_sub(1).min(3), None)
}

/// `d` ± 20%.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * unit_random())
}
