//! Submissions per second for the whole run, learned from the limiter in
//! front of the gateway.
//!
//! Why this exists: the gateway's limit is not published, and the limiters
//! gateways put in front differ in shape: a sliding window of N calls per
//! W seconds (Azure API Management's `rate-limit`), a token bucket (Envoy,
//! AWS), nginx's leaky `limit_req` (often answering 503 and HTML, with no
//! Retry-After). A fixed rate is too slow or too fast for all of them. So
//! with no `--rate` nothing is throttled until the first refusal, and then
//! two things are learned apart:
//!
//! - **When.** A refusal's `Retry-After` is a point in time: no submit is
//!   sent before it, and nothing else follows from it. A 60 s window that
//!   refused the 301st call takes the next 300 when it slides, so the rate
//!   is not collapsed for a long pause.
//! - **How fast.** Submits are paced evenly (never a burst) at a rate found
//!   from what the gateway accepted: at a refusal, the rate drops to just
//!   under what it accepted over the last [`HORIZON`] (a limiter at its
//!   bound accepts exactly its rate, whatever we send), counting only time
//!   the run was sending. The first refusal only says how big a burst was
//!   taken, not the rate behind it, so until a *paced* submit is refused
//!   the rate grows fast ([`PROBE_GROWTH`]); once one is, it creeps
//!   ([`SLOW_GROWTH`]), probing for a higher limit without hammering the
//!   one it found. A refusal while the pace is still below what the gateway
//!   was last measured to accept is jitter (submits that left evenly arrive
//!   bunched) or a limit coming down: the pace only eases ([`EASE`]).
//!
//! Each refusal is judged by when its submit was *sent*: one sent before
//! the last decrease was sent at the old rate and says nothing new (a burst
//! of refusals is one decrease). `--rate` is a ceiling on all of this.
//! Refusals never count against a row's attempts (see `row/submitting.rs`): a row may
//! wait for a limiter, never fail of one.
//!
//! Slots are not booked ahead: waiters queue (first come, first served) and
//! only the first one sleeps, until the next slot as the state says *when
//! it wakes*; a refusal in the meantime moves that slot.
//!
//! Cancellation: [`RateLimiter::acquire`] is a sleep behind a queue;
//! dropping it leaves the queue and takes no slot.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The longest pause a Retry-After may impose.
const MAX_PAUSE: Duration = Duration::from_secs(300);
/// The slowest a run backs off to.
const MIN_RATE: f64 = 1.0 / 60.0;
/// After a refusal: this share of the rate the gateway accepted (after the
/// first, which the rate then grows from).
const DECREASE: f64 = 0.95;
const FIRST_DECREASE: f64 = 0.97;
/// A refusal below the rate the gateway was last measured to accept is
/// jitter (two submits that left evenly arrived close) or a limit that is
/// coming down: the rate eases by this share, and that measure by
/// [`FOUND_DECAY`], so refusals that persist still walk it down.
const EASE: f64 = 0.99;
const FOUND_DECAY: f64 = 0.98;
/// How far back what the gateway accepted is measured.
const HORIZON: Duration = Duration::from_secs(2);
/// The shortest sending time a measure is trusted on; below it a refusal
/// cuts the rate by [`BLIND_DECREASE`].
const MIN_MEASURE: Duration = Duration::from_millis(500);
const BLIND_DECREASE: f64 = 0.85;
/// Growth per second until a paced submit is refused, and after.
const PROBE_GROWTH: f64 = 0.25;
const SLOW_GROWTH: f64 = 0.001;

#[derive(Debug)]
pub struct RateLimiter {
    /// `--rate`, if given.
    ceiling: Option<f64>,
    /// Waiters queue here; the one holding it sleeps for the next slot.
    queue: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Submits per second; `None`: not throttled.
    rate: Option<f64>,
    last: Option<Instant>,
    /// A Retry-After's point in time: nothing is sent before it (and the
    /// time up to it is not time spent sending).
    not_before: Option<Instant>,
    /// When accepted submits were answered, over the last [`HORIZON`].
    accepted: VecDeque<Instant>,
    /// The last decrease, and the rate before it: a refusal of a submit
    /// sent before it is old news; an acceptance is counted in again.
    cut: Option<(Instant, f64, bool)>,
    /// No paced submit has been refused yet: the rate grows fast.
    probing: bool,
    /// What the gateway was measured to accept at the last paced refusal.
    found: Option<f64>,
    grown_at: Instant,
    rate_limited: u64,
}

impl RateLimiter {
    /// `ceiling`: `--rate`, the most submits per second ever sent.
    pub fn new(ceiling: Option<f64>) -> RateLimiter {
        RateLimiter {
            ceiling,
            queue: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                rate: ceiling,
                last: None,
                not_before: None,
                accepted: VecDeque::new(),
                cut: None,
                probing: true,
                found: None,
                grown_at: Instant::now(),
                rate_limited: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cap(&self, rate: f64) -> f64 {
        rate.max(MIN_RATE).min(self.ceiling.unwrap_or(f64::MAX))
    }

    /// Waits for this caller's submission slot; returns when it was given
    /// (the submit's send time, for [`Self::accepted`] and [`Self::throttled`]).
    pub async fn acquire(&self) -> Instant {
        let _turn = self.queue.lock().await;
        loop {
            let next = {
                let mut st = self.lock();
                let now = Instant::now();
                let spaced = match (st.rate, st.last) {
                    (Some(rate), Some(last)) => Some(last + Duration::from_secs_f64(1.0 / rate)),
                    _ => None,
                };
                match spaced.max(st.not_before).filter(|t| *t > now) {
                    None => {
                        st.last = Some(now);
                        return now;
                    }
                    Some(t) => t,
                }
            };
            tokio::time::sleep_until(next).await;
        }
    }

    /// A limiter refused the submit sent at `sent`: pause until its
    /// Retry-After, if it names one; slow down, once per decrease.
    pub fn throttled(&self, retry_after: Option<Duration>, sent: Instant) {
        let mut st = self.lock();
        st.rate_limited += 1;
        let now = Instant::now();
        if st.cut.is_some_and(|(at, _, _)| sent <= at) {
            pause(&mut st, now, retry_after);
            return; // sent at the old rate
        }
        let before = st.rate;
        let first = st.cut.is_none();
        let rate = match (before, measured(&mut st, now, first)) {
            // The first refusal: what the burst got, a floor to grow from.
            (None, measure) => measure.unwrap_or(1.0) * FIRST_DECREASE,
            (Some(r), _) if st.found.is_some_and(|found| r < found) => {
                st.found = st.found.map(|found| found * FOUND_DECAY);
                r * EASE
            }
            (Some(r), Some(measure)) => {
                st.probing = st.cut.is_none();
                if !first {
                    st.found = Some(measure.min(r));
                }
                measure.min(r) * DECREASE
            }
            (Some(r), None) => {
                st.probing = st.cut.is_none();
                r * BLIND_DECREASE
            }
        };
        st.rate = Some(self.cap(rate));
        st.cut = Some((now, before.unwrap_or(f64::MAX), first));
        pause(&mut st, now, retry_after);
        // A pause is no time to grow in.
        st.grown_at = st.not_before.map_or(now, |t| t.max(now));
    }

    /// The submit sent at `sent` was accepted: note it, and grow the rate.
    pub fn accepted(&self, sent: Instant) {
        let mut st = self.lock();
        let now = Instant::now();
        st.accepted.push_back(now);
        if let Some((_, before, first)) = st.cut.filter(|(at, _, _)| sent <= *at) {
            // Sent before the last decrease, answered after it (a gateway
            // answers a burst in any order): it counts toward what the
            // gateway accepted then.
            if let Some(measure) = measured(&mut st, now, first) {
                let share = if first { FIRST_DECREASE } else { DECREASE };
                let rate = self.cap(measure.min(before) * share);
                st.rate = st.rate.map(|r| r.max(rate));
            }
            return;
        }
        let Some(rate) = st.rate.filter(|_| st.cut.is_some()) else {
            return; // not throttled, or only by --rate
        };
        if st.not_before.is_some_and(|t| now < t) {
            return;
        }
        let secs = now.duration_since(st.grown_at).as_secs_f64();
        if secs < 0.05 {
            return;
        }
        let growth = if st.probing {
            PROBE_GROWTH
        } else {
            SLOW_GROWTH
        };
        st.rate = Some(self.cap(rate * (1.0 + growth).powf(secs)));
        st.grown_at = now;
    }

    /// Submits per second now (`None`: not throttled).
    pub fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    /// Refusals by a limiter answered to submits so far.
    pub fn rate_limited(&self) -> u64 {
        self.lock().rate_limited
    }
}

/// Nothing is sent before `retry_after` from `now`, if given.
fn pause(st: &mut State, now: Instant, retry_after: Option<Duration>) {
    if let Some(wait) = retry_after {
        let until = now + wait.min(MAX_PAUSE);
        if st.not_before.is_none_or(|t| t < until) {
            st.not_before = Some(until);
        }
    }
}

/// Submits the gateway accepted per second of the last [`HORIZON`] the run
/// spent sending (a pause is not sending); `None` if that is too short to
/// tell. Before the first refusal, the burst it took counts as one second.
fn measured(st: &mut State, now: Instant, first: bool) -> Option<f64> {
    while st
        .accepted
        .front()
        .is_some_and(|t| now.duration_since(*t) >= HORIZON)
    {
        st.accepted.pop_front();
    }
    if first {
        // A burst's worth a second (a burst may be answered over more than
        // a second when the run was held by --concurrency).
        let in_second = st
            .accepted
            .iter()
            .filter(|t| now.duration_since(**t) < Duration::from_secs(1))
            .count() as f64;
        let per_second = st.accepted.len() as f64 / HORIZON.as_secs_f64();
        return Some(in_second.max(per_second).max(1.0));
    }
    let mut from = now.checked_sub(HORIZON).unwrap_or(now);
    if let Some(end) = st.not_before.filter(|end| *end > from) {
        from = end.min(now);
    }
    let span = now.duration_since(from);
    if span < MIN_MEASURE {
        return None;
    }
    let n = st.accepted.iter().filter(|t| **t >= from).count();
    Some(n as f64 / span.as_secs_f64())
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
