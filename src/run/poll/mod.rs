//! When to ask about an accepted request: the policy around a schedule
//! learned from the run.
//!
//! Why this exists: a fixed clock either asks too often (status calls are
//! wasted on requests that cannot be done yet) or too late (a finished
//! request waits, holding its `--concurrency` slot). So the run learns how
//! long requests take and asks near the moment each is likely to finish.
//! The estimate and the optimal polls for it are pure maths, in [`fit`];
//! this module decides what to feed it, when to trust it, and where to ask
//! off its plan to learn more. Requests of different kinds or image counts
//! are learned apart. Earlier runs of the same folder seed the estimate.
//!
//! Each request polled under the learned schedule gets a [`Token`] when it
//! is planned ([`Learned::token`]). [`Learned::next_poll`] only reads: it
//! says when to ask and why ([`Ask`]). What changes the policy's state is
//! named apart: [`Learned::asking`] (a poll is sent, for the reason the
//! plan gave), [`Learned::seen_pending`] and [`Learned::learn`] (its
//! answer).
//!
//! The policy, each piece kept because the closed-loop model
//! (`closed_loop.rs`) shows it pays (docs/how-it-works.md, *Speed*):
//! - **Cold probes.** Before anything is learned, the first
//!   [`COLD_PROBES`] requests probe, their first polls staggered over one
//!   gap (2 s), so the first completions teach the latency quickly; the
//!   other requests wait, and a request not yet polled is planned again as
//!   soon as the estimate changes.
//! - **Hurrying.** When every probe finds its request already done, the
//!   gateway is faster than the cold start asks (a request seen done at its
//!   first poll only bounds its latency from above, so nothing else would
//!   teach it): while many rows are still to start, a quarter of the
//!   requests then ask at a quarter to a half of the planned time, until
//!   those early asks find requests pending.
//! - **Sure-done asks.** A request seen pending may not be asked again for
//!   the vendor's gap, though it may finish just after, and its slot idles
//!   meanwhile (with as many rows per slot as a lockstep run has, it stays
//!   that late to the end). Once the estimate gives it less than a 1%
//!   chance of still running ([`SURE`]), it is asked then, once, sooner than
//!   the gap. It keeps its slot until it is seen done: `--concurrency`
//!   bounds what the gateway is generating. Never while too little is
//!   learned, past what was learned, while first polls keep finding
//!   requests pending, nor again in the run once one asked so was pending.
//! - **Jitter.** Every planned poll is moved by up to [`JITTER`], drawn
//!   once per request, so that a wave does not ask at one instant.
//!
//! Cancellation: nothing here waits; rows sleep until the time this gives,
//! and wake early when [`Learned::changes`] says the estimate moved.

mod fit;

#[cfg(test)]
mod closed_loop;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::plan::Kind;
use fit::Fit;
pub use fit::MIN_GAP;

/// Intervals kept per kind of request (the most recent).
const WINDOW: usize = 1024;
/// Cold start: the first poll of the first request (the vendor's advice);
/// the requests that probe before anything is learned, their first polls
/// spread evenly over one gap, so that their polls every `MIN_GAP` after
/// cover every later moment; and when the others first ask if nothing is
/// learned by then (they are planned again at the first completion).
const COLD_FIRST: f64 = 2.0;
const COLD_PROBES: u32 = 8;
const COLD_LAST: f64 = 20.0;
/// While hurrying (every cold probe found its request done), this share of
/// first polls asks at a quarter to a half of the planned time; hurrying
/// stops once fewer than `HURRY_OFF` of the latest `HURRY_WINDOW` of those
/// early asks (at least half a window) found their request done.
const EXPLORE_HURRY: f64 = 0.25;
const HURRY_WINDOW: usize = 16;
const HURRY_OFF: f64 = 0.5;
/// Hurrying stops when fewer than this many rows per slot are still to
/// start (near a run's end there is no future to gain).
const EXPLORE_AHEAD: usize = 10;
/// Up to this many intervals, the estimate is refitted every 8 of them;
/// past it, every 32.
const SETTLED: usize = 64;
/// Jitter added to every planned poll, at most.
const JITTER: f64 = 0.01;
/// A request seen pending is asked before the vendor's gap is up once the
/// estimate gives it less than this chance of still running (given when
/// it was last seen pending) ...
const SURE: f64 = 0.01;
/// ... and this much later again (a share of the time, then seconds), for
/// a grid and clocks that are not exact ...
const SURE_MARGIN: f64 = 0.03;
const SURE_PAD: f64 = 0.05;
/// ... once at least this many requests taught the estimate ...
const SURE_AFTER: usize = 32;
/// ... and only when that comes at least this long (seconds) before its
/// planned poll: less buys its slot too little for the call spent.
const SURE_LEAD: f64 = 0.25;

/// Which requests share a latency distribution.
pub type ModelKey = (Kind, u32);

/// How a run schedules its polls.
#[derive(Debug)]
pub enum Schedule {
    /// `--poll-interval-ms`: the first poll and every next one this far apart (±20%).
    Fixed(Duration),
    Adaptive(Learned),
}

/// One request's handle on the learned schedule, handed out when it is
/// first planned ([`Learned::token`]): names it in what the policy
/// remembers, and carries what was drawn for it once (so that planning it
/// again does not draw again).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Token {
    id: u64,
    key: ModelKey,
    /// In [0, 1): whether it explores, and its jitter.
    draw: f64,
    /// Its place among the cold probes, if it is one.
    probe: Option<u32>,
}

/// Why a poll is asked when it is: what its answer teaches the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A cold probe's first poll (planned by the estimate once there is one).
    Probe,
    /// A first poll where the plan puts it.
    Plan,
    /// A first poll asked early, while the gateway is faster than the plan.
    Early,
    /// Before the vendor's gap is up: the estimate is all but sure it finished.
    Sure,
    /// Any other later poll.
    Again,
}

/// When to ask next (seconds since the request's submit) and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NextPoll {
    pub at: f64,
    pub ask: Ask,
}

/// The latency estimates of a run, one per kind of request.
#[derive(Debug)]
pub struct Learned {
    models: Mutex<HashMap<ModelKey, Learner>>,
    changed: watch::Sender<u64>,
    tokens: AtomicU64,
    /// Whether enough rows are still to start for hurrying to pay off.
    explore: AtomicBool,
    /// Whether sure-done asks are still made (none once one found its
    /// request pending).
    sure: AtomicBool,
}

impl Default for Learned {
    fn default() -> Learned {
        Learned {
            models: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            tokens: AtomicU64::new(0),
            explore: AtomicBool::new(true),
            sure: AtomicBool::new(true),
        }
    }
}

impl Learned {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ModelKey, Learner>> {
        self.models.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// A request of kind `key` is about to be planned: its token. `draw`, in
    /// [0, 1), decides whether it explores and its jitter. Before anything
    /// is learned, the first few tokens are the cold probes.
    pub fn token(&self, key: ModelKey, draw: f64) -> Token {
        let mut models = self.lock();
        let m = models.entry(key).or_default();
        let probe = (m.fit.is_none() && m.cold < COLD_PROBES).then(|| {
            m.cold += 1;
            m.cold - 1
        });
        Token {
            id: self.tokens.fetch_add(1, Relaxed),
            key,
            draw: draw.clamp(0.0, 1.0 - f64::EPSILON),
            probe,
        }
    }

    /// Rows still to start, counting the one starting now: hurrying pays
    /// off only with many of them ahead.
    pub fn rows_ahead(&self, rows: usize, concurrency: usize) {
        self.explore
            .store(rows > EXPLORE_AHEAD * concurrency, Relaxed);
    }

    /// Bumps whenever an estimate moves: sleeping rows re-plan.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The next poll of `token`'s request, `elapsed` seconds after its
    /// submit (never before `elapsed`), and why. `last_pending`: when it was
    /// last seen pending, if it was. Changes nothing.
    pub fn next_poll(&self, token: &Token, elapsed: f64, last_pending: Option<f64>) -> NextPoll {
        let models = self.lock();
        let Some(m) = models.get(&token.key) else {
            return Learner::default().plan(token, elapsed, last_pending, &Policy::COLD);
        };
        let policy = Policy {
            explore: self.explore.load(Relaxed),
            sure: self.sure.load(Relaxed),
        };
        m.plan(token, elapsed, last_pending, &policy)
    }

    /// A poll of `token`'s request is being sent, for the reason its plan gave.
    pub fn asking(&self, token: &Token, ask: Ask) {
        if ask == Ask::Again {
            return;
        }
        let mut models = self.lock();
        let m = models.entry(token.key).or_default();
        m.asked.insert(token.id, ask);
    }

    /// `token`'s request was seen pending `at` seconds after its submit.
    pub fn seen_pending(&self, token: &Token, at: f64) {
        let mut models = self.lock();
        let m = models.entry(token.key).or_default();
        match m.asked.remove(&token.id) {
            Some(Ask::Early) => m.early_outcome(false),
            Some(Ask::Plan) => m.first_outcome(true),
            Some(Ask::Sure) => {
                // Sure-done asks planned before this one plan again.
                self.sure.store(false, Relaxed);
                self.bump();
                tracing::debug!(target: "batchgen::poll", "{:?}: asked as all but sure done, yet pending at {at:.3} s", token.key);
            }
            _ => {}
        }
        let moved = m.seen_pending(token.id, at);
        drop(models);
        if moved {
            self.bump();
        }
    }

    /// `token`'s request was seen pending at `lo` and done at `hi` (seconds
    /// since submit; `lo` is 0 if it was never seen pending).
    pub fn learn(&self, token: &Token, lo: f64, hi: f64) {
        let key = token.key;
        let mut models = self.lock();
        let m = models.entry(key).or_default();
        match m.asked.remove(&token.id) {
            Some(Ask::Early) => m.early_outcome(true),
            Some(Ask::Plan) => m.first_outcome(false),
            Some(Ask::Probe) => {
                // Every probe done at its first poll: the gateway is faster
                // than the cold start asks, so hurry from the start.
                m.probes_done += 1;
                if m.probes_done == COLD_PROBES {
                    m.hurry = true;
                }
            }
            _ => {}
        }
        m.open.retain(|(id, _)| *id != token.id);
        let moved = m.learn(lo, hi, true);
        tracing::debug!(target: "batchgen::poll", "{key:?}: pending at {lo:.3} s, done at {hi:.3} s");
        if let Some(fit) = m.fit.as_ref().filter(|_| moved) {
            let first = fit.first as f64 * fit.step;
            tracing::debug!(
                target: "batchgen::poll",
                "{key:?}: first poll now {first:.2} s after submit, {:.1}% expected pending then",
                100.0 * fit.survival(first)
            );
        }
        drop(models);
        if moved {
            self.bump();
        }
    }

    /// What earlier runs saw, before this run polls anything.
    pub fn seed(&self, key: ModelKey, intervals: impl IntoIterator<Item = (f64, f64)>) {
        let mut models = self.lock();
        let m = models.entry(key).or_default();
        for (lo, hi) in intervals {
            m.learn(lo, hi, false);
        }
        m.refit();
    }
}

/// What the run as a whole allows the next plan.
struct Policy {
    explore: bool,
    sure: bool,
}

impl Policy {
    const COLD: Policy = Policy {
        explore: true,
        sure: false,
    };
}

/// One kind of request's intervals, the estimate fitted to them, and what
/// the policy remembers of its asks.
#[derive(Debug, Default)]
struct Learner {
    intervals: VecDeque<(f64, f64)>,
    since_fit: usize,
    fit: Option<Fit>,
    /// Cold probes handed out so far.
    cold: u32,
    /// First polls and sure-done asks sent (by token), whose answer is not
    /// yet known: why each was asked.
    asked: HashMap<u64, Ask>,
    /// The latest early asks: whether each found its request done.
    early_outcomes: VecDeque<bool>,
    /// Early asks keep finding requests done: ask more of them, earlier.
    hurry: bool,
    /// Cold probes done at their first poll.
    probes_done: u32,
    /// The latest first polls planned by the estimate (as many as
    /// [`SURE_AFTER`] / 2): whether each found its request pending.
    firsts: VecDeque<bool>,
    /// Requests seen pending and not yet done (by token), and when they
    /// were last seen pending: the estimate counts them as finishing some
    /// time after that. Left out, they would count only once done, a gap or
    /// more after the requests that were done at the same poll, and the
    /// latest polls would always look as if nearly every request was done.
    open: VecDeque<(u64, f64)>,
    /// When each learned request was seen done, sorted (as of the last fit).
    done_at: Vec<f64>,
}

impl Learner {
    /// Adds an interval; refits when due. True if the estimate moved.
    fn learn(&mut self, lo: f64, hi: f64, refit: bool) -> bool {
        if !(hi.is_finite() && hi > 0.0 && lo >= 0.0) {
            return false;
        }
        push_latest(&mut self.intervals, (lo.min(hi), hi), WINDOW);
        refit && self.changed()
    }

    /// A request (by token) was seen pending `lo` seconds after its submit.
    /// True if the estimate moved.
    fn seen_pending(&mut self, id: u64, lo: f64) -> bool {
        if !(lo.is_finite() && lo >= 0.0) {
            return false;
        }
        match self.open.iter_mut().find(|(open, _)| *open == id) {
            Some((_, seen)) if *seen == lo => return false,
            Some((_, seen)) => *seen = lo,
            None => push_latest(&mut self.open, (id, lo), WINDOW),
        }
        self.changed()
    }

    /// Something was added to the estimate: refits when due. True if it did.
    fn changed(&mut self) -> bool {
        self.since_fit += 1;
        let due = match self.intervals.len() {
            n if n <= 32 => true,
            n if n <= SETTLED => self.since_fit >= 8,
            _ => self.since_fit >= 32,
        };
        due && self.refit()
    }

    /// True if there was anything to fit.
    fn refit(&mut self) -> bool {
        if self.intervals.is_empty() {
            return false;
        }
        self.since_fit = 0;
        self.done_at = self.intervals.iter().map(|&(_, hi)| hi).collect();
        self.done_at.sort_unstable_by(f64::total_cmp);
        let open = self.open.iter().map(|&(_, lo)| (lo, f64::INFINITY));
        self.fit = Some(Fit::new(self.intervals.iter().copied().chain(open)));
        true
    }

    /// Whether a first poll planned by the estimate found its request pending.
    fn first_outcome(&mut self, pending: bool) {
        if self.fit.is_none() {
            return;
        }
        push_latest(&mut self.firsts, pending, SURE_AFTER / 2);
    }

    /// One early ask's outcome: hurry while they keep finding requests done.
    fn early_outcome(&mut self, done: bool) {
        push_latest(&mut self.early_outcomes, done, HURRY_WINDOW);
        let n = self.early_outcomes.len();
        let share = self.early_outcomes.iter().filter(|d| **d).count() as f64 / n as f64;
        if n >= HURRY_WINDOW / 2 && share < HURRY_OFF {
            self.hurry = false;
        }
    }

    /// When a request seen pending `last_pending` seconds after its submit,
    /// and not yet seen done, is all but sure to have finished at the
    /// gateway; None while too little is learned, past what was learned
    /// (fewer than a quarter of [`SURE_AFTER`] requests were seen done
    /// later: it may be one of a slow few), or while first polls keep
    /// finding requests pending (the gateway may have slowed down, which the
    /// estimate, refitted only now and then, may not show yet).
    fn sure_done(&self, last_pending: f64) -> Option<f64> {
        let fit = self
            .fit
            .as_ref()
            .filter(|_| self.intervals.len() >= SURE_AFTER)?;
        let later = self.done_at.len() - self.done_at.partition_point(|&hi| hi <= last_pending);
        let recent = self.firsts.iter().rev().take(SURE_AFTER / 2);
        if later < SURE_AFTER / 4 || recent.filter(|p| **p).count() > 1 {
            return None;
        }
        let t = fit.sure(last_pending, SURE)?;
        Some(t * (1.0 + SURE_MARGIN) + SURE_PAD)
    }

    /// The next poll of `token`'s request and why (see [`Learned::next_poll`]).
    fn plan(
        &self,
        token: &Token,
        elapsed: f64,
        last_pending: Option<f64>,
        run: &Policy,
    ) -> NextPoll {
        let earliest = last_pending.map_or(elapsed, |s| elapsed.max(s + MIN_GAP));
        let jitter = JITTER * (token.draw * 7919.0).fract();
        let plan = |at: f64, ask| NextPoll {
            at: at.max(elapsed) + jitter,
            ask,
        };
        let Some(fit) = &self.fit else {
            // Nothing learned yet: stagger the probes' first polls; the
            // others wait to be planned again; then the vendor's pace.
            return match (last_pending, token.probe) {
                (Some(_), _) => plan(earliest, Ask::Again),
                (None, Some(k)) => {
                    let t = COLD_FIRST + MIN_GAP * f64::from(k) / f64::from(COLD_PROBES);
                    plan(t, Ask::Probe)
                }
                (None, None) => plan(COLD_LAST, Ask::Plan),
            };
        };
        let planned = fit.next(earliest, last_pending);
        if let Some(lo) = last_pending {
            // All but sure it is done: ask before the gap is up.
            let sure = self
                .sure_done(lo)
                .filter(|&t| run.sure && t + SURE_LEAD <= planned);
            return match sure {
                Some(t) => plan(t, Ask::Sure),
                None => plan(planned, Ask::Again),
            };
        }
        if token.probe.is_some() {
            // Its answer still tells whether the cold start was too slow.
            return plan(planned, Ask::Probe);
        }
        let draw = token.draw;
        if self.hurry && run.explore && draw < EXPLORE_HURRY {
            // Faster than the plan knows: ask early, and earlier.
            let share = 0.25 + 0.25 * draw / EXPLORE_HURRY;
            return plan(planned * share, Ask::Early);
        }
        plan(planned, Ask::Plan)
    }
}

/// Appends `item`, keeping only the latest `keep`.
fn push_latest<T>(latest: &mut VecDeque<T>, item: T, keep: usize) {
    latest.push_back(item);
    if latest.len() > keep {
        latest.pop_front();
    }
}
