//! The policy's unit tests (the estimator's are in `fit.rs`, whole runs in
//! `closed_loop.rs`).

use super::*;

const KEY: ModelKey = (Kind::TextToImage, 1);

/// `n` distinct draws from a fixed sequence.
fn draws(n: usize, from: usize) -> impl Iterator<Item = f64> {
    (from..from + n).map(|i| (i as f64 * 0.618_033_988_75 + 0.001) % 1.0)
}

/// A request seen done at `hi` after pending at `lo`, with a token of its own.
fn done(learned: &Learned, lo: f64, hi: f64, draw: f64) {
    let token = learned.token(KEY, draw);
    learned.learn(&token, lo, hi);
}

fn learner(intervals: &[(f64, f64)]) -> Learner {
    let mut l = Learner::default();
    for &(lo, hi) in intervals {
        l.learn(lo, hi, false);
    }
    l.refit();
    l
}

#[test]
fn cold_first_polls_are_staggered_then_the_vendors_pace() {
    let learned = Learned::default();
    let tokens: Vec<Token> = draws(10, 0).map(|d| learned.token(KEY, d)).collect();
    let firsts: Vec<NextPoll> = tokens
        .iter()
        .map(|t| learned.next_poll(t, 0.0, None))
        .collect();
    let at: Vec<f64> = firsts.iter().map(|p| p.at).collect();
    assert!((COLD_FIRST..COLD_FIRST + JITTER).contains(&at[0]), "{at:?}");
    assert!(at[..8].windows(2).all(|w| w[1] > w[0]), "{at:?}");
    assert!(at[7] < COLD_FIRST + MIN_GAP, "one gap: {at:?}");
    assert!(firsts[..8].iter().all(|p| p.ask == Ask::Probe));
    assert!(
        at[8..].iter().all(|&t| t >= COLD_LAST),
        "the rest wait: {at:?}"
    );
    let again = learned.next_poll(&tokens[0], 1.5, Some(1.5));
    assert!(again.at >= 1.5 + MIN_GAP && again.ask == Ask::Again);
}

#[test]
fn next_poll_changes_nothing() {
    // Asked over and over, before and after anything is learned, it gives
    // the same answer and leaves the policy's state as it was.
    let learned = Learned::default();
    let token = learned.token(KEY, 0.3);
    let state = |l: &Learned| format!("{:?}", l.lock().get(&KEY));
    let before = state(&learned);
    let plans: Vec<NextPoll> = (0..5)
        .map(|_| learned.next_poll(&token, 0.0, None))
        .collect();
    assert!(plans.windows(2).all(|w| w[0] == w[1]), "{plans:?}");
    assert_eq!(state(&learned), before);
    for d in draws(40, 1) {
        done(&learned, 2.9, 3.05, d);
    }
    let before = state(&learned);
    let mut changes = learned.changes();
    changes.mark_unchanged();
    for last in [None, Some(2.9)] {
        let plans: Vec<NextPoll> = (0..5)
            .map(|_| learned.next_poll(&token, 2.9, last))
            .collect();
        assert!(plans.windows(2).all(|w| w[0] == w[1]), "{plans:?}");
    }
    assert_eq!(state(&learned), before);
    assert!(!changes.has_changed().unwrap());
}

#[test]
fn each_token_is_its_own_request() {
    // Two requests with the same draw are two requests: one seen pending
    // stays open when the other is learned.
    let learned = Learned::default();
    let (a, b) = (learned.token(KEY, 0.5), learned.token(KEY, 0.5));
    assert_ne!(a, b);
    learned.seen_pending(&a, 2.0);
    learned.seen_pending(&b, 2.0);
    learned.learn(&a, 2.0, 4.0);
    let models = learned.lock();
    let open: Vec<u64> = models[&KEY].open.iter().map(|(id, _)| *id).collect();
    assert_eq!(open, [b.id]);
}

#[test]
fn a_request_is_asked_when_all_but_sure_done_once_enough_is_learned_and_never_after_a_miss() {
    let learned = Learned::default();
    for d in draws(SURE_AFTER - 1, 0) {
        done(&learned, 2.9, 3.05, d);
    }
    let token = learned.token(KEY, 0.5);
    // Seen pending at 2.9 s: the plan asks a gap later, or sooner when sure.
    let plan = |l: &Learned| l.next_poll(&token, 2.9, Some(2.9));
    assert_eq!(plan(&learned).ask, Ask::Again, "too little learned");
    assert!(plan(&learned).at >= 2.9 + MIN_GAP);
    done(&learned, 2.9, 3.05, 0.99);
    let sure = plan(&learned);
    assert_eq!(sure.ask, Ask::Sure, "enough learned");
    // Every request learned was done by 3.05 s; with the margins, 3.19 s.
    assert!((3.05..=3.21).contains(&sure.at), "{sure:?}");
    assert_eq!(
        learned.next_poll(&token, 4.0, Some(4.0)).ask,
        Ask::Again,
        "seen pending past all that was learned"
    );
    // First polls that keep finding requests pending (two of the latest
    // sixteen) stop it too: the gateway may have slowed down.
    let slowed = Learned::default();
    for d in draws(SURE_AFTER, 0) {
        done(&slowed, 2.9, 3.05, d);
    }
    for (i, d) in draws(2, 100).enumerate() {
        let t = slowed.token(KEY, d);
        let first = slowed.next_poll(&t, 0.0, None);
        assert_eq!(first.ask, Ask::Plan);
        slowed.asking(&t, first.ask);
        slowed.seen_pending(&t, first.at);
        let ask = slowed.next_poll(&token, 2.9, Some(2.9)).ask;
        assert_eq!(
            ask == Ask::Sure,
            i == 0,
            "{} first polls found pending",
            i + 1
        );
    }
    // A sure-done ask that finds its request pending: never again.
    learned.asking(&token, Ask::Sure);
    learned.seen_pending(&token, sure.at);
    let other = learned.token(KEY, 0.6);
    assert_eq!(learned.next_poll(&other, 2.9, Some(2.9)).ask, Ask::Again);
}

#[test]
fn every_probe_done_at_its_first_poll_hurries_until_early_asks_find_requests_pending() {
    let learned = Learned::default();
    learned.rows_ahead(4000, 60);
    let probes: Vec<Token> = draws(COLD_PROBES as usize, 0)
        .map(|d| learned.token(KEY, d))
        .collect();
    for t in &probes {
        let first = learned.next_poll(t, 0.0, None);
        learned.asking(t, first.ask);
        learned.learn(t, 0.0, first.at);
    }
    let early = learned.token(KEY, 0.1);
    let plain = learned.token(KEY, 0.9);
    let (e, p) = (
        learned.next_poll(&early, 0.0, None),
        learned.next_poll(&plain, 0.0, None),
    );
    assert_eq!((e.ask, p.ask), (Ask::Early, Ask::Plan));
    assert!(e.at < 0.5 * p.at + JITTER, "{e:?} {p:?}");
    // Early asks that find their request pending end it.
    for d in draws(HURRY_WINDOW, 10).map(|d| d * EXPLORE_HURRY) {
        let t = learned.token(KEY, d);
        let first = learned.next_poll(&t, 0.0, None);
        learned.asking(&t, first.ask);
        learned.seen_pending(&t, first.at);
    }
    assert_eq!(learned.next_poll(&early, 0.0, None).ask, Ask::Plan);
}

#[test]
fn the_estimate_moves_when_the_gateway_slows_down() {
    let mut l = learner(&[(2.9, 3.0); 40]);
    let before = l.fit.as_ref().unwrap().next(0.0, None);
    for _ in 0..200 {
        l.learn(3.0, 5.0, true);
        l.learn(4.9, 5.1, true);
    }
    let after = l.fit.as_ref().unwrap().next(0.0, None);
    assert!(before < 3.1 && after > 4.0, "{before} → {after}");
}

#[test]
fn requests_seen_pending_count_before_they_are_done() {
    // A poll at 1.8 s found 80 requests done and 20 pending; the pending
    // ones are learned in full only a gap later.
    let learned = Learned::default();
    for d in draws(80, 0) {
        done(&learned, 0.0, 1.8, d);
    }
    let pending: Vec<Token> = draws(20, 80).map(|d| learned.token(KEY, d)).collect();
    for t in &pending {
        learned.seen_pending(t, 1.8);
    }
    let pending_then = |learned: &Learned| {
        let mut models = learned.lock();
        let m = models.get_mut(&KEY).unwrap();
        m.refit();
        (m.fit.as_ref().unwrap().survival(1.8), m.open.len())
    };
    let (survive, open) = pending_then(&learned);
    assert_eq!(open, 20);
    assert!((0.15..0.3).contains(&survive), "{survive}");
    // Once done they count as what they are, not twice.
    for t in &pending {
        learned.learn(t, 1.8, 3.8);
    }
    let (survive, open) = pending_then(&learned);
    assert_eq!(open, 0);
    assert!((0.15..0.3).contains(&survive), "{survive}");
}
