//! Retry delays, written once and used by every retry loop: exponential with
//! full jitter, capped, and honouring a delay the server asked for.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The longest server-requested delay we honour as given.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The ceiling of the first retry's delay; it doubles with each attempt.
    pub base: Duration,
    /// No delay is longer than this (a server's own delay excepted).
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0 for the first retry).
    ///
    /// A server's delay (`Retry-After`) is honoured, plus up to `base` of
    /// jitter so that many waiting rows do not return in one burst. Otherwise
    /// "full jitter": uniform in `[0, min(cap, base * 2^attempt)]`.
    pub fn delay(&self, attempt: u32, server: Option<Duration>) -> Duration {
        if let Some(asked) = server {
            return asked.min(MAX_SERVER_DELAY) + self.base.mul_f64(unit_random());
        }
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(30)))
            .min(self.cap);
        ceiling.mul_f64(unit_random())
    }
}

/// A number in `[0, 1)`: std's randomly keyed hasher over a counter is all
/// the randomness jitter needs.
pub fn unit_random() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_but_stay_under_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        for attempt in 0..40 {
            let ceiling = Duration::from_millis(100 * (1u64 << attempt.min(10))).min(b.cap);
            for _ in 0..50 {
                assert!(b.delay(attempt, None) <= ceiling, "attempt {attempt}");
            }
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let b = Backoff::default();
        let ds: Vec<Duration> = (0..100).map(|_| b.delay(5, None)).collect();
        let distinct: std::collections::HashSet<_> = ds.iter().collect();
        assert!(distinct.len() > 50, "full jitter gives varied delays");
    }

    #[test]
    fn server_delays_are_honoured_and_bounded() {
        let b = Backoff::default();
        let d = b.delay(0, Some(Duration::from_secs(60)));
        assert!(d >= Duration::from_secs(60) && d <= Duration::from_secs(60) + b.base);
        let huge = b.delay(0, Some(Duration::from_secs(1_000_000)));
        assert!(huge <= MAX_SERVER_DELAY + b.base);
    }
}
