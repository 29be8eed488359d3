//! Unit tests of the rate limiter's rules, under paused time.

use super::*;

/// `n` submits sent and accepted at once.
async fn burst(l: &RateLimiter, n: usize) -> Instant {
    let mut sent = Instant::now();
    for _ in 0..n {
        sent = l.acquire().await;
        l.accepted(sent);
    }
    sent
}

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
async fn retry_after_is_a_point_in_time_not_a_collapse_of_the_rate() {
    // A 60 s window took 300 at once and refused the 301st until it slides.
    let l = RateLimiter::new(None);
    let sent = burst(&l, 300).await;
    for _ in 0..50 {
        l.throttled(Some(Duration::from_secs(55)), sent);
    }
    assert_eq!(l.rate_limited(), 50);
    let start = Instant::now();
    l.acquire().await;
    assert_eq!(start.elapsed(), Duration::from_secs(55), "paused, once");
    // Then the next 300 go at the rate the window took, not one a second.
    let rate = l.rate().unwrap();
    assert!(rate >= 60.0 * FIRST_DECREASE, "{rate}");
    for _ in 0..299 {
        l.acquire().await;
    }
    assert!(
        start.elapsed() < Duration::from_secs(57),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_refusals_is_one_decrease() {
    let l = RateLimiter::new(None);
    let sent = burst(&l, 10).await;
    for _ in 0..50 {
        l.throttled(None, sent);
    }
    assert_eq!(l.rate(), Some(10.0 * FIRST_DECREASE));
    // Without Retry-After nothing pauses: the next slot is one rate's space away.
    let start = Instant::now();
    l.acquire().await;
    l.acquire().await;
    let spaced = Duration::from_secs_f64(2.0 / (10.0 * FIRST_DECREASE));
    assert!(start.elapsed().abs_diff(spaced) < Duration::from_millis(2));
}

#[tokio::test(start_paused = true)]
async fn a_submit_accepted_after_the_refusal_counts_toward_the_limit() {
    // The gateway took ten of a burst but answered a refusal before the
    // tenth acceptance.
    let l = RateLimiter::new(None);
    let mut sent = Instant::now();
    for _ in 0..10 {
        sent = l.acquire().await;
    }
    for _ in 0..9 {
        l.accepted(sent);
    }
    l.throttled(Some(Duration::from_secs(1)), sent);
    assert_eq!(l.rate(), Some(9.0 * FIRST_DECREASE));
    l.accepted(sent);
    assert_eq!(l.rate(), Some(10.0 * FIRST_DECREASE));
}

#[tokio::test(start_paused = true)]
async fn waiters_re_check_when_they_wake() {
    let l = std::sync::Arc::new(RateLimiter::new(Some(1.0)));
    let sent = l.acquire().await;
    let waiter = {
        let l = l.clone();
        tokio::spawn(async move {
            l.acquire().await;
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // While it sleeps for its slot (at 1 s), a refusal asks for 5 s of quiet.
    let start = Instant::now();
    l.throttled(Some(Duration::from_secs(5)), sent);
    let woke = waiter.await.unwrap();
    assert_eq!(woke - start, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn the_rate_grows_fast_until_a_paced_submit_is_refused_then_slowly() {
    let l = RateLimiter::new(None);
    let sent = burst(&l, 5).await;
    l.throttled(None, sent);
    let first = l.rate().unwrap();
    // Paced and accepted for 2 s: the first refusal only told a burst's size.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let s = l.acquire().await;
        l.accepted(s);
    }
    let probed = l.rate().unwrap();
    assert!(probed > first * 1.5, "{first} → {probed}");
    // A paced submit refused: just under what was accepted, then slowly.
    let s = l.acquire().await;
    l.throttled(None, s);
    let found = l.rate().unwrap();
    assert!(found < probed, "{found}");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let s = l.acquire().await;
        l.accepted(s);
    }
    let later = l.rate().unwrap();
    assert!(later > found && later < found * 1.03, "{found} → {later}");
}
