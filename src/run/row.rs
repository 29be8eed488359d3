//! One row's life: submit → record the request id → poll → download → done.
//!
//! Every step that costs money or produces files is journaled first (see
//! [`crate::journal`]). Errors follow the client's classification: a row
//! failure is written down and counted, never `?`-ed out of the run.
//!
//! Cancellation: a row waiting to submit gives up when the run stops; once a
//! submit may have been sent, the row is carried to its end (polls and
//! downloads ignore the stop), so that what was paid for is collected.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::{Ctx, Start, Stop};
use crate::api::{self, backoff::unit_random, ApiError, Class, Status, Ticket};
use crate::journal::{now_ms, Charged, Entry};
use crate::output::{self, IMAGES_DIR};
use crate::plan::{Request, Usd};
use crate::progress::{Event, Stage};

struct RowRun {
    ctx: Arc<Ctx>,
    key: String,
    id: String,
    req: Request,
    price: Usd,
    /// Whether `price` is counted in the run's committed spend.
    reserved: bool,
    /// Failed submits this run (429s excepted).
    failures: u32,
}

/// Drives row `index` from `start` to its end. The permit is held throughout:
/// it is what bounds the requests in flight.
pub(super) async fn drive(
    ctx: Arc<Ctx>,
    index: usize,
    start: Start,
    _permit: OwnedSemaphorePermit,
) {
    let row = ctx.plan.rows[index];
    let mut run = RowRun {
        key: row.key.to_string(),
        id: ctx.plan.row_id(&row),
        req: ctx.plan.request(&row),
        price: output::row_price(&ctx.plan, &row),
        reserved: !matches!(start, Start::Submit),
        failures: 0,
        ctx,
    };
    let mut next = start;
    loop {
        next = match next {
            Start::Submit => run.submit().await,
            Start::Poll { ticket, since_ms } => run.poll(ticket, since_ms).await,
            Start::Download { images, ticket } => run.download(images, ticket).await,
            Start::End => return,
        };
    }
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
        let mut stop = ctx.stop.subscribe();
        tokio::select! {
            _ = ctx.limiter.acquire() => {}
            _ = stop.wait_for(Option::is_some) => {
                self.release();
                return Start::End;
            }
        }
        if !ctx.record(&Entry::Intent {
            key: self.key.clone(),
            at_ms: now_ms(),
        }) {
            self.release();
            return Start::End;
        }
        ctx.event(Event::Enter(Stage::Submitting));
        let result = ctx.client.submit(&self.req).await;
        ctx.event(Event::Leave(Stage::Submitting));
        match result {
            Ok(sub) => {
                ctx.limiter.accepted();
                let urls: Vec<String> = match &sub.status {
                    Some(Status::Completed(images)) => images
                        .iter()
                        .filter(|u| !u.starts_with("data:"))
                        .cloned()
                        .collect(),
                    _ => Vec::new(),
                };
                if !ctx.record(&Entry::Submitted {
                    key: self.key.clone(),
                    at_ms: now_ms(),
                    ticket: sub.ticket.clone(),
                    images: urls,
                }) {
                    return Start::End;
                }
                match (sub.status, sub.ticket) {
                    (Some(Status::Completed(images)), ticket) => Start::Download { images, ticket },
                    (Some(Status::Failed(m)), _) => self.fail("FAILED", &m, Charged::Possibly),
                    (Some(Status::Error(m)), _) => self.not_accepted("ERROR", &m, None).await,
                    (_, Some(ticket)) => Start::Poll {
                        ticket,
                        since_ms: now_ms(),
                    },
                    (_, None) => self.fail(
                        "BAD_RESPONSE",
                        "the gateway accepted the submit without a request id",
                        Charged::Possibly,
                    ),
                }
            }
            Err(e) => match e.class {
                Class::Retry => {
                    if e.is_rate_limited() {
                        ctx.limiter.slow_down(e.retry_after);
                    }
                    self.not_accepted(&e.code, &e.to_string(), Some(&e)).await
                }
                Class::Unsure => self.fail(
                    "SUBMIT_UNCERTAIN",
                    &format!("{e}; {}", output::UNCERTAIN_MESSAGE),
                    Charged::Possibly,
                ),
                Class::FailRow => self.fail(&e.code, &e.message, Charged::No),
                Class::StopRun | Class::NotFound => {
                    ctx.record(&Entry::NotAccepted {
                        key: self.key.clone(),
                        code: e.code.clone(),
                    });
                    self.release();
                    self.stop_run(&e);
                    Start::End
                }
            },
        }
    }

    /// The submit provably was not accepted: record it, then try again
    /// (after a backoff; a 429 waits in the shared rate limiter instead).
    async fn not_accepted(&mut self, code: &str, message: &str, err: Option<&ApiError>) -> Start {
        let ctx = self.ctx.clone();
        if !ctx.record(&Entry::NotAccepted {
            key: self.key.clone(),
            code: code.to_string(),
        }) {
            self.release();
            return Start::End;
        }
        if err.is_some_and(ApiError::is_rate_limited) {
            return Start::Submit;
        }
        self.failures += 1;
        if self.failures >= ctx.settings.max_attempts {
            return self.fail(
                code,
                &format!("gave up after {} attempts: {message}", self.failures),
                Charged::No,
            );
        }
        let delay = ctx
            .settings
            .backoff
            .delay(self.failures - 1, err.and_then(|e| e.retry_after));
        let mut stop = ctx.stop.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(delay) => Start::Submit,
            _ = stop.wait_for(Option::is_some) => {
                self.release();
                Start::End
            }
        }
    }

    async fn poll(&mut self, ticket: Ticket, since_ms: u64) -> Start {
        let ctx = self.ctx.clone();
        let settings = &ctx.settings;
        ctx.event(Event::Enter(Stage::Polling));
        let leave = || ctx.event(Event::Leave(Stage::Polling));
        // The deadline bounds how long this run waits, so a request resumed
        // long after its submit gets the full time too.
        let elapsed = Duration::from_millis(now_ms().saturating_sub(since_ms));
        let deadline = tokio::time::Instant::now() + settings.row_deadline;
        let mut wait = jitter(settings.poll_interval).saturating_sub(elapsed);
        let mut errors = 0u32;
        let mut polls = 0u32;
        loop {
            // Checked before each poll but the first: a request is always asked once.
            if polls > 0 && tokio::time::Instant::now() + wait >= deadline {
                leave();
                let message = format!(
                    "request {} did not finish within {} s; rerun with --retry-failed to poll it again",
                    ticket.request_id,
                    settings.row_deadline.as_secs()
                );
                return self.fail("POLL_TIMEOUT", &message, Charged::Possibly);
            }
            tokio::time::sleep(wait).await;
            polls += 1;
            wait = jitter(settings.poll_interval);
            match ctx.client.status(&ticket).await {
                Ok(Status::Pending(_)) => errors = 0,
                Ok(Status::Completed(images)) => {
                    leave();
                    return Start::Download {
                        images,
                        ticket: Some(ticket),
                    };
                }
                Ok(Status::Failed(m)) => {
                    leave();
                    return self.fail("FAILED", &m, Charged::Possibly);
                }
                Ok(Status::Error(m)) => {
                    leave();
                    self.say(format!("warning: row {}: the gateway answered ERROR (not charged); submitting again: {m}", self.id));
                    return self.not_accepted("ERROR", &m, None).await;
                }
                Err(e) if e.is_retryable() || e.may_have_been_accepted() => {
                    wait = wait.max(settings.backoff.delay(errors, e.retry_after));
                    errors += 1;
                }
                Err(e) if e.is_not_found() => {
                    leave();
                    let message = format!(
                        "the gateway no longer knows request {}: it was paid for and its result is gone",
                        ticket.request_id
                    );
                    return self.fail("NOT_FOUND", &message, Charged::Possibly);
                }
                Err(e) if e.stops_run() => {
                    leave();
                    // The journal keeps the ticket: a later run polls it again.
                    self.stop_run(&e);
                    return Start::End;
                }
                Err(e) => {
                    leave();
                    return self.fail(&e.code, &e.message, Charged::Possibly);
                }
            }
        }
    }

    async fn download(&mut self, images: Vec<String>, ticket: Option<Ticket>) -> Start {
        let ctx = self.ctx.clone();
        let settings = &ctx.settings;
        if images.is_empty() {
            return self.fail(
                "NO_IMAGES",
                "the request completed without images",
                Charged::Possibly,
            );
        }
        ctx.event(Event::Enter(Stage::Downloading));
        let stem = ctx.stems.stem(&self.id, &self.key);
        let (mut files, mut sha256) = (Vec::new(), Vec::new());
        for (n, image) in images.iter().enumerate() {
            let name = format!("{stem}_{n}");
            let got = api::retry(&settings.backoff, settings.download_attempts, |_| {
                ctx.client.download(image, &ctx.images_dir, &name)
            })
            .await;
            match got {
                Ok(d) => {
                    let file = d.path.file_name().unwrap_or_default().to_string_lossy();
                    files.push(format!("{IMAGES_DIR}/{file}"));
                    sha256.push(d.sha256);
                }
                Err(e) => {
                    ctx.event(Event::Leave(Stage::Downloading));
                    let request = ticket.as_ref().map_or("", |t| t.request_id.as_str());
                    let code = if e.is_not_found() {
                        "DOWNLOAD_LOST"
                    } else {
                        "DOWNLOAD_FAILED"
                    };
                    return self.fail(
                        code,
                        &format!("image {n} of request {request}: {e}"),
                        Charged::Possibly,
                    );
                }
            }
        }
        ctx.event(Event::Leave(Stage::Downloading));
        let cost = ctx
            .plan
            .pricing
            .per_image(self.req.kind())
            .times(files.len() as u64);
        let count = files.len() as u64;
        if !ctx.record(&Entry::Done {
            key: self.key.clone(),
            at_ms: now_ms(),
            files,
            sha256,
            cost_micros: cost.micros(),
        }) {
            return Start::End;
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

    /// Records the row as failed. `Charged::No` frees its share of the budget.
    fn fail(&mut self, code: &str, message: &str, charged: Charged) -> Start {
        let cost = match charged {
            Charged::No => Usd::default(),
            Charged::Possibly => self.price,
        };
        self.ctx.record(&Entry::Failed {
            key: self.key.clone(),
            at_ms: now_ms(),
            code: code.to_string(),
            message: message.to_string(),
            charged,
            cost_micros: cost.micros(),
        });
        if charged == Charged::No {
            self.release();
        }
        self.ctx.event(Event::Failed);
        self.say(format!("error: row {}: {code}: {message}", self.id));
        Start::End
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

/// `d` ± 20%.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * unit_random())
}
