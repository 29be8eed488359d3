//! Submissions per second for the whole run, found from the gateway.
//!
//! Why this exists: the gateway's rate limit is not published, and a fixed
//! rate is either too slow (it binds when the gateway would take more) or
//! too fast (every row sleeps on 429s). So with no `--rate` nothing is
//! throttled until the gateway answers 429. A 429 opens a window, once,
//! however many rows it hits: nothing is sent before its `Retry-After`, and
//! the rate drops to just under what the gateway accepted in the last
//! second (multiplicative decrease), counting submits whose acceptance
//! arrives during the pause (a gateway answers a burst in any order). While
//! submits succeed the rate creeps back up: quickly to just under the rate
//! that drew the 429, slowly past it (additive increase), so that the run
//! probes for a higher limit without hammering the one it found. `--rate`
//! is a ceiling on all of this.
//!
//! Slots are not booked ahead: waiters queue (first come, first served) and
//! only the first one sleeps, until the next slot as the state says *when
//! it wakes*; a 429 in the meantime moves that slot.
//!
//! Cancellation: [`RateLimiter::acquire`] is a sleep behind a queue;
//! dropping it leaves the queue and takes no slot.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a 429 pauses submits when it names no delay.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause a 429 may impose.
const MAX_PAUSE: Duration = Duration::from_secs(120);
/// The slowest a run backs off to.
const MIN_RATE: f64 = 1.0 / 60.0;
/// After a 429: this share of the rate the gateway accepted.
const DECREASE: f64 = 0.95;
/// Growth per second while below the rate that drew the last 429, and past it.
const FAST_GROWTH: f64 = 0.02;
const SLOW_GROWTH: f64 = 0.001;
/// The share of the last 429's rate up to which growth is fast.
const PLATEAU: f64 = 0.98;

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
    /// A 429's pause: nothing is sent before this.
    not_before: Option<Instant>,
    /// Accepted submits of the last second.
    accepted: VecDeque<Instant>,
    /// The accepted rate when the last 429 came.
    limit_seen: Option<f64>,
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
                limit_seen: None,
                grown_at: Instant::now(),
                rate_limited: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for this caller's submission slot.
    pub async fn acquire(&self) {
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
                        return;
                    }
                    Some(t) => t,
                }
            };
            tokio::time::sleep_until(next).await;
        }
    }

    /// The gateway answered 429: once per window, pause and slow down.
    pub fn throttled(&self, retry_after: Option<Duration>) {
        let mut st = self.lock();
        st.rate_limited += 1;
        let now = Instant::now();
        if st.not_before.is_some_and(|t| now < t) {
            return; // the same window: rows sent before the pause began
        }
        prune(&mut st.accepted, now);
        let accepted = st.accepted.len() as f64;
        let rate = if accepted > 0.0 {
            accepted * DECREASE
        } else {
            st.rate.map_or(1.0, |r| r / 2.0)
        };
        let rate = rate.max(MIN_RATE).min(self.ceiling.unwrap_or(f64::MAX));
        st.rate = Some(rate);
        st.limit_seen = Some(accepted.max(rate));
        st.grown_at = now;
        st.not_before = Some(now + retry_after.unwrap_or(DEFAULT_PAUSE).min(MAX_PAUSE));
    }

    /// A submit was accepted: note it, and grow the rate a little.
    pub fn accepted(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        st.accepted.push_back(now);
        prune(&mut st.accepted, now);
        if st.not_before.is_some_and(|t| now < t) {
            // During a 429's pause: a submit sent before it, whose answer
            // came after the 429's (a gateway answers a burst in any
            // order). It counts toward what the gateway accepted.
            let accepted = st.accepted.len() as f64;
            let ceiling = self.ceiling.unwrap_or(f64::MAX);
            st.limit_seen = st.limit_seen.map(|seen| seen.max(accepted));
            st.rate = st.rate.map(|r| r.max(accepted * DECREASE).min(ceiling));
            return;
        }
        let (Some(rate), Some(seen)) = (st.rate, st.limit_seen) else {
            return;
        };
        let secs = now.duration_since(st.grown_at).as_secs_f64();
        if secs < 0.1 {
            return;
        }
        let growth = if rate < seen * PLATEAU {
            FAST_GROWTH
        } else {
            SLOW_GROWTH
        };
        let grown = rate * (1.0 + growth).powf(secs);
        st.rate = Some(grown.min(self.ceiling.unwrap_or(f64::MAX)));
        st.grown_at = now;
    }

    /// Submits per second now (`None`: not throttled).
    pub fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    /// 429s answered to submits so far.
    pub fn rate_limited(&self) -> u64 {
        self.lock().rate_limited
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn nothing_is_throttled_until_the_gateway_says_so() {
        let l = RateLimiter::new(None);
        let start = Instant::now();
        for _ in 0..1000 {
            l.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(l.rate(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ceiling_spaces_slots() {
        let l = RateLimiter::new(Some(4.0));
        let start = Instant::now();
        for _ in 0..9 {
            l.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(2000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_once_and_slows_to_what_was_accepted() {
        let l = RateLimiter::new(None);
        for _ in 0..10 {
            l.acquire().await;
            l.accepted();
        }
        // Fifty rows hear 429 from the same burst: one window, one decrease.
        for _ in 0..50 {
            l.throttled(Some(Duration::from_secs(2)));
        }
        assert_eq!(l.rate_limited(), 50);
        assert_eq!(l.rate(), Some(9.5));
        let start = Instant::now();
        l.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2), "Retry-After, once");
        l.acquire().await;
        let spaced = Duration::from_secs(2) + Duration::from_secs_f64(1.0 / 9.5);
        assert!(start.elapsed().abs_diff(spaced) < Duration::from_millis(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_submit_accepted_after_the_429_counts_toward_the_limit() {
        // The gateway took ten of a burst but answered one 429 before the
        // tenth acceptance.
        let l = RateLimiter::new(None);
        for _ in 0..10 {
            l.acquire().await;
        }
        for _ in 0..9 {
            l.accepted();
        }
        l.throttled(Some(Duration::from_secs(1)));
        assert_eq!(l.rate(), Some(9.0 * DECREASE));
        l.accepted();
        assert_eq!(l.rate(), Some(9.5));
        // It grows back quickly to just under ten, not nine.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            l.accepted();
        }
        let rate = l.rate().unwrap();
        assert!(rate > 10.0 * 0.97, "{rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_re_check_when_they_wake() {
        let l = std::sync::Arc::new(RateLimiter::new(Some(1.0)));
        l.acquire().await;
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move {
                l.acquire().await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        // While it sleeps for its slot (at 1 s), a 429 asks for 5 s of quiet.
        let start = Instant::now();
        l.throttled(Some(Duration::from_secs(5)));
        let woke = waiter.await.unwrap();
        assert_eq!(woke - start, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_grows_back_quickly_then_slowly() {
        let l = RateLimiter::new(None);
        for _ in 0..10 {
            l.acquire().await;
            l.accepted();
        }
        l.throttled(None);
        let after_429 = l.rate().unwrap();
        tokio::time::sleep(DEFAULT_PAUSE).await;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            l.accepted();
        }
        let rate = l.rate().unwrap();
        assert!(rate > after_429, "{rate}");
        assert!(
            rate < 10.0 * 1.02,
            "it stays near the limit it found: {rate}"
        );
    }
}
