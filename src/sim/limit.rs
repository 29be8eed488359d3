//! The limiters a gateway's operator puts in front of it, as pure rules:
//! which submit is let through, and what a refused one is told.
//!
//! Why this exists apart from the submit handler: each shape is a known
//! product's rule (Azure API Management's sliding `rate-limit`, an Envoy or
//! AWS token bucket, nginx's `limit_req`), and the client's limiter is
//! judged against all of them. The rules are pure functions of the time
//! they are given, so they are tested under paused time and the client's
//! own model tests (`run::limiter`) drive the very same rules.
//!
//! Cancellation: nothing here waits.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Which limiter stands in front of the gateway (`--limit-shape`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitShape {
    /// A sliding window: at most N accepted submits in any `--limit-window-secs`.
    #[default]
    Window,
    /// A token bucket: N tokens a second, `--limit-burst` of capacity, full at start.
    Bucket,
    /// nginx's `limit_req rate=N r/s burst=B nodelay` (a leaky bucket).
    Leaky,
}

impl LimitShape {
    /// Whether a refusal names a Retry-After when `--limit-retry-after` is not given.
    pub fn retry_after_by_default(self) -> bool {
        self != LimitShape::Leaky
    }
}

/// What the limiter says of one submit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Refused; the whole seconds until a call would be accepted (at least 1).
    Refuse {
        retry_after_secs: u64,
    },
}

/// One limiter's state.
#[derive(Clone, Debug)]
pub struct Gate {
    shape: LimitShape,
    /// Calls per window, or tokens (requests) per second.
    n: u32,
    window: Duration,
    burst: u32,
    /// Window: when each accepted call of the window came.
    recent: VecDeque<Instant>,
    /// Bucket: tokens left; leaky: nginx's `excess`.
    level: f64,
    /// Bucket: when `level` was last brought up to date; leaky: the last accepted call.
    last: Option<Instant>,
}

impl Gate {
    pub fn new(shape: LimitShape, n: u32, window: Duration, burst: u32) -> Gate {
        Gate {
            shape,
            n: n.max(1),
            window: window.max(Duration::from_millis(1)),
            burst,
            recent: VecDeque::new(),
            level: if shape == LimitShape::Bucket {
                f64::from(burst.max(1))
            } else {
                0.0
            },
            last: None,
        }
    }

    /// Whether a submit arriving at `now` is let through (it then counts).
    pub fn check(&mut self, now: Instant) -> Verdict {
        let rate = f64::from(self.n);
        match self.shape {
            LimitShape::Window => {
                while self
                    .recent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    self.recent.pop_front();
                }
                if self.recent.len() >= self.n as usize {
                    let oldest = *self.recent.front().expect("the window is full");
                    let wait = (oldest + self.window).duration_since(now);
                    return refuse(wait.as_secs_f64());
                }
                self.recent.push_back(now);
                Verdict::Accept
            }
            LimitShape::Bucket => {
                let capacity = f64::from(self.burst.max(1));
                if let Some(last) = self.last {
                    let secs = now.duration_since(last).as_secs_f64();
                    self.level = (self.level + rate * secs).min(capacity);
                }
                self.last = Some(now);
                if self.level >= 1.0 {
                    self.level -= 1.0;
                    return Verdict::Accept;
                }
                refuse((1.0 - self.level) / rate)
            }
            LimitShape::Leaky => {
                let Some(last) = self.last else {
                    self.last = Some(now);
                    return Verdict::Accept;
                };
                let secs = now.duration_since(last).as_secs_f64();
                let excess = (self.level - rate * secs + 1.0).max(0.0);
                if excess > f64::from(self.burst) {
                    // When `excess` would be back within the burst.
                    return refuse((excess - f64::from(self.burst)) / rate);
                }
                self.level = excess;
                self.last = Some(now);
                Verdict::Accept
            }
        }
    }
}

fn refuse(secs: f64) -> Verdict {
    // A little slack for float error: 2.0000001 s is 2 s.
    Verdict::Refuse {
        retry_after_secs: ((secs - 1e-6).ceil() as u64).max(1),
    }
}

fn limit_status(s: &str) -> Result<u16, String> {
    match s {
        "429" => Ok(429),
        "503" => Ok(503),
        _ => Err("a limiter answers 429 or 503".into()),
    }
}

/// `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// What a limiter's refusal carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitBody {
    /// The vendor's error JSON (`RATE_LIMIT_EXCEEDED`).
    #[default]
    Json,
    /// nginx's HTML error page, `Content-Type: text/html`.
    Html,
}

/// The limiter in front of the simulated gateway, beside `--rate-limit`
/// and `--retry-after-secs` (`batchgen sim` flags).
#[derive(Clone, Debug, clap::Args)]
pub struct LimitConfig {
    /// The limiter's shape: `window` (sliding window of --rate-limit calls per
    /// --limit-window-secs, as Azure API Management's rate-limit), `bucket` (token bucket of
    /// --rate-limit a second, --limit-burst deep) or `leaky` (nginx limit_req nodelay).
    #[arg(long, value_enum, default_value_t = LimitShape::Window)]
    pub limit_shape: LimitShape,
    /// The sliding window's length, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    pub limit_window_secs: u64,
    /// The bucket's capacity (bucket), or nginx's `burst` (leaky).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub limit_burst: u32,
    /// The HTTP status of a refusal: 429 or 503 (nginx's default limit_req_status).
    #[arg(long, value_name = "STATUS", default_value_t = 429, value_parser = limit_status)]
    pub limit_status: u16,
    /// Whether a refusal names a Retry-After (default: on for window and bucket, off for leaky).
    #[arg(long, value_enum, value_name = "ON_OFF")]
    pub limit_retry_after: Option<OnOff>,
    /// A refusal's body: the vendor's JSON error, or a proxy's HTML page.
    #[arg(long, value_enum, default_value_t = LimitBody::Json)]
    pub limit_body: LimitBody,
    /// After N accepted submits in all, every submit is answered 403 as Azure API
    /// Management's quota policy answers ("Out of call volume quota").
    #[arg(long, value_name = "N")]
    pub quota: Option<u64>,
}

impl Default for LimitConfig {
    fn default() -> LimitConfig {
        LimitConfig {
            limit_shape: LimitShape::Window,
            limit_window_secs: 1,
            limit_burst: 1,
            limit_status: 429,
            limit_retry_after: None,
            limit_body: LimitBody::Json,
            quota: None,
        }
    }
}

impl LimitConfig {
    /// The limiter of `rate_limit` (`--rate-limit`) in this shape, if any.
    pub(super) fn gate(&self, rate_limit: Option<u32>) -> Option<Gate> {
        rate_limit.map(|n| {
            Gate::new(
                self.limit_shape,
                n,
                Duration::from_secs(self.limit_window_secs.max(1)),
                self.limit_burst,
            )
        })
    }

    /// Whether a refusal names a Retry-After.
    pub(super) fn retry_after(&self) -> bool {
        match self.limit_retry_after {
            Some(on) => on == OnOff::On,
            None => self.limit_shape.retry_after_by_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(gate: &mut Gate, at_ms: &[u64]) -> Vec<bool> {
        let start = Instant::now();
        at_ms
            .iter()
            .map(|ms| gate.check(start + Duration::from_millis(*ms)) == Verdict::Accept)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_takes_n_then_refuses_until_the_oldest_slides_out() {
        let mut g = Gate::new(LimitShape::Window, 3, Duration::from_secs(60), 1);
        let start = Instant::now();
        for ms in [0, 10_000, 20_000] {
            assert_eq!(g.check(start + Duration::from_millis(ms)), Verdict::Accept);
        }
        assert_eq!(
            g.check(start + Duration::from_millis(30_500)),
            Verdict::Refuse {
                retry_after_secs: 30
            }
        );
        // At 60 s the first slides out: one more, then the window is full again.
        assert_eq!(g.check(start + Duration::from_secs(60)), Verdict::Accept);
        assert_eq!(
            g.check(start + Duration::from_secs(60)),
            Verdict::Refuse {
                retry_after_secs: 10
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_starts_full_and_refills_at_its_rate() {
        let mut g = Gate::new(LimitShape::Bucket, 10, Duration::from_secs(1), 5);
        // Five at once, the sixth refused; a token every 100 ms after.
        assert_eq!(
            run(&mut g, &[0, 0, 0, 0, 0, 0, 100, 150, 200]),
            [true, true, true, true, true, false, true, false, true]
        );
        let start = Instant::now();
        assert_eq!(
            g.check(start + Duration::from_millis(200)),
            Verdict::Refuse {
                retry_after_secs: 1
            }
        );
        // It never holds more than its burst.
        let mut g = Gate::new(LimitShape::Bucket, 10, Duration::from_secs(1), 2);
        assert_eq!(run(&mut g, &[5000, 5000, 5000]), [true, true, false]);
    }

    #[tokio::test(start_paused = true)]
    async fn leaky_follows_nginx_limit_req_nodelay() {
        // rate=10r/s burst=5: the first call, then five more at once.
        let mut g = Gate::new(LimitShape::Leaky, 10, Duration::from_secs(1), 5);
        assert_eq!(
            run(&mut g, &[0, 0, 0, 0, 0, 0, 0, 50, 100]),
            [true, true, true, true, true, true, false, false, true]
        );
        // Paced at the rate, every call passes.
        let mut g = Gate::new(LimitShape::Leaky, 10, Duration::from_secs(1), 0);
        let paced: Vec<u64> = (0..50).map(|i| i * 100).collect();
        assert!(run(&mut g, &paced).iter().all(|ok| *ok));
        // Faster than the rate with no burst: every other one.
        let mut g = Gate::new(LimitShape::Leaky, 10, Duration::from_secs(1), 0);
        assert_eq!(
            run(&mut g, &[0, 50, 100, 150, 200]),
            [true, false, true, false, true]
        );
    }
}
