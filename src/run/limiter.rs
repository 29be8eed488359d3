//! Submissions per second, for the whole run. A 429 slows everyone down (the
//! interval doubles, and nothing is sent before the server's `Retry-After`);
//! each success speeds back up towards the configured rate.
//!
//! Cancellation: [`RateLimiter::acquire`] is a sleep; dropping it gives the
//! slot up (later callers may have been scheduled after it: harmless).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    base: Duration,
    state: Mutex<(Instant, Duration)>,
}

/// The slowest a run backs off to: one submit a minute.
const SLOWEST: Duration = Duration::from_secs(60);

impl RateLimiter {
    pub fn new(per_sec: f64) -> RateLimiter {
        let base = Duration::from_secs_f64(1.0 / per_sec);
        RateLimiter {
            base,
            state: Mutex::new((Instant::now(), base)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Instant, Duration)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for this caller's submission slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut st = self.lock();
            let slot = st.0.max(Instant::now());
            st.0 = slot + st.1;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// The gateway said 429: halve the rate and respect its delay.
    pub fn slow_down(&self, retry_after: Option<Duration>) {
        let mut st = self.lock();
        st.1 = (st.1 * 2).min(SLOWEST.max(self.base));
        let not_before = Instant::now() + retry_after.unwrap_or(st.1);
        st.0 = st.0.max(not_before);
    }

    /// A submit was accepted: recover a little speed.
    pub fn accepted(&self) {
        let mut st = self.lock();
        st.1 = st.1.mul_f64(0.8).max(self.base);
    }

    pub fn interval(&self) -> Duration {
        self.lock().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_by_the_rate() {
        let l = RateLimiter::new(4.0);
        let start = Instant::now();
        for _ in 0..9 {
            l.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(2000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_slows_everyone_and_success_recovers() {
        let l = RateLimiter::new(10.0);
        l.acquire().await;
        l.slow_down(Some(Duration::from_secs(5)));
        assert_eq!(l.interval(), Duration::from_millis(200));
        let start = Instant::now();
        l.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_secs(5),
            "nothing before Retry-After"
        );
        for _ in 0..20 {
            l.accepted();
        }
        assert_eq!(
            l.interval(),
            Duration::from_millis(100),
            "back to the configured rate"
        );
    }
}
