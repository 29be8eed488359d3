//! The estimator and planner: pure maths, no policy.
//!
//! Why this exists apart from the policy (`super`): what it computes is
//! checkable on its own (a latency distribution from censored observations,
//! the poll times that are optimal for it), while the policy decides what to
//! feed it and when to trust it.
//!
//! The estimate: every collected request teaches an interval (the last time
//! it was seen pending, the first time it was seen done], in seconds since
//! its submit; one seen pending and not yet done, (then, ∞). The
//! distribution is estimated on a grid by a few rounds of the
//! self-consistency (EM) algorithm for interval-censored data. Run to
//! convergence it is Turnbull's estimate, which lets the earliest request
//! seen done drag every estimate below it (most requests are seen done at
//! their first poll, which says nothing of when before it they finished),
//! and the schedule then polls too early. A few rounds ([`EM_ROUNDS`]) stop
//! short of that. They start half from an even spread and half from
//! Turnbull's support ([`SUPPORT`], the innermost intervals, where the
//! latencies must lie): from an even start alone, requests seen done at
//! their first poll spread weight back to 0 s.
//!
//! The plan: a dynamic programme picks the poll times that minimise the
//! expected time a finished request waits plus [`CALL_COST`] seconds per
//! status call, with polls of one request at least [`MIN_GAP`] apart (the
//! vendor's advice), in one pass over a monotone hull of lines.
//!
//! Cancellation: nothing here waits or locks.

use std::collections::VecDeque;

/// The vendor asks for 2–3 s between polls of one request.
pub const MIN_GAP: f64 = 2.0;
/// Past the learned horizon, poll this often.
const TAIL_GAP: f64 = 2.5;
/// What one status call is worth, in seconds a finished request may wait.
pub const CALL_COST: f64 = 0.35;
/// The finest grid step, in seconds.
const FINEST: f64 = 0.01;
/// The most grid bins (the step grows for long latencies).
const MAX_BINS: usize = 800;
/// EM rounds per fit: between even spreading (1) and Turnbull (many).
const EM_ROUNDS: usize = 10;
/// The share of the EM's start on Turnbull's support (the rest is even).
const SUPPORT: f64 = 0.5;

/// A latency estimate on a grid and the optimal polls for it.
#[derive(Debug)]
pub(super) struct Fit {
    /// Grid step and number of bins; bin `j` (1..=n) is `((j-1)·step, j·step]`,
    /// bin `n + 1` is everything later.
    pub(super) step: f64,
    pub(super) n: usize,
    /// Survival at each grid point `k·step` (k = 0..=n).
    pub(super) survive: Vec<f64>,
    /// Prefix sums of mass and of mass times each bin's middle.
    cum: Vec<f64>,
    cum_t: Vec<f64>,
    /// Expected future cost (unnormalised) after a pending poll at grid point k.
    after: Vec<f64>,
    /// The best next poll after a pending poll at grid point k.
    best: Vec<usize>,
    /// The best first poll.
    pub(super) first: usize,
    /// The least gap between two polls of a request, in bins.
    gap: usize,
}

impl Fit {
    /// `intervals`: (seen pending, seen done] in seconds since submit; `hi`
    /// is infinite for a request not yet seen done.
    pub(super) fn new(intervals: impl Iterator<Item = (f64, f64)> + Clone) -> Fit {
        let top = intervals
            .clone()
            .map(|(lo, hi)| if hi.is_finite() { hi } else { lo })
            .fold(0.0f64, f64::max);
        let horizon = (top * 1.25).max(5.0);
        let step = (horizon / MAX_BINS as f64).max(FINEST);
        let n = (horizon / step).ceil() as usize;
        // Bins each interval covers: (lo, hi] meets bins first..=last.
        let cover: Vec<(usize, usize)> = intervals
            .map(|(lo, hi)| {
                let first = ((lo / step).floor() as usize + 1).min(n + 1);
                let last = ((hi / step).ceil() as usize).clamp(first, n + 1);
                (first, last)
            })
            .collect();
        // Start half even, half on Turnbull's support: the bins of the
        // innermost intervals (a left end followed by a right end, with no
        // end between), where every maximum-likelihood estimate lies.
        let mut ends: Vec<(usize, bool)> = cover
            .iter()
            .flat_map(|&(a, b)| [(a, false), (b, true)])
            .collect();
        ends.sort_unstable();
        let mut mass = vec![0.0; n + 2];
        for w in ends.windows(2) {
            if let [(a, false), (b, true)] = w {
                mass[*a..=*b].fill(1.0);
            }
        }
        let total: f64 = mass.iter().sum();
        let even = 1.0 / (n + 1) as f64;
        for m in mass.iter_mut().skip(1) {
            *m = if total > 0.0 {
                SUPPORT * *m / total + (1.0 - SUPPORT) * even
            } else {
                even
            };
        }
        // Turnbull's self-consistency iterations.
        let mut prefix = vec![0.0; n + 2];
        let mut weight = vec![0.0; n + 3];
        for _ in 0..EM_ROUNDS {
            for j in 1..=n + 1 {
                prefix[j] = prefix[j - 1] + mass[j];
            }
            weight.iter_mut().for_each(|w| *w = 0.0);
            for &(a, b) in &cover {
                let p = prefix[b] - prefix[a - 1];
                if p > 0.0 {
                    weight[a] += 1.0 / p;
                    weight[b + 1] -= 1.0 / p;
                }
            }
            let total = cover.len() as f64;
            let mut w = 0.0;
            for j in 1..=n + 1 {
                w += weight[j];
                mass[j] *= w / total;
            }
            let sum: f64 = mass.iter().sum();
            if sum > 0.0 {
                mass.iter_mut().for_each(|m| *m /= sum);
            }
        }
        Fit::plan(step, n, mass)
    }

    /// The dynamic programme: expected cost after a pending poll at each grid point.
    fn plan(step: f64, n: usize, mass: Vec<f64>) -> Fit {
        let mut cum = vec![0.0; n + 2];
        let mut cum_t = vec![0.0; n + 2];
        for j in 1..=n + 1 {
            let mid = (j as f64 - 0.5) * step;
            cum[j] = cum[j - 1] + mass[j];
            cum_t[j] = cum_t[j - 1] + mass[j] * mid.min(n as f64 * step);
        }
        let survive: Vec<f64> = (0..=n).map(|k| (1.0 - cum[k]).max(0.0)).collect();
        let gap = (MIN_GAP / step).ceil() as usize;
        let mut fit = Fit {
            step,
            n,
            survive,
            cum,
            cum_t,
            after: vec![0.0; n + 1],
            best: vec![n; n + 1],
            first: n,
            gap,
        };
        // Past the horizon: polls every TAIL_GAP, about one and a half of them.
        let tail = fit.survive[n] * (2.0 * CALL_COST + TAIL_GAP / 2.0);
        // cost(a, b) = S_a·λ + T_a + (t_b·C_b − T_b + after_b) − t_b·C_a: for
        // each a, the lowest of lines (slope −t_b) at C_a, over b ≥ a + gap.
        // Lines come in by rising slope and queries fall, so a monotone hull
        // answers them all in one pass.
        let mut hull: VecDeque<Line> = VecDeque::new();
        for a in (0..=n).rev() {
            if a + gap > n {
                fit.after[a] = fit.survive[a] * CALL_COST + fit.delay(a, n) + tail;
                continue;
            }
            let b = a + gap;
            let t = b as f64 * step;
            add_steepest_last(
                &mut hull,
                Line {
                    slope: -t,
                    at_zero: t * fit.cum[b] - fit.cum_t[b] + fit.after[b],
                    b,
                },
            );
            let x = fit.cum[a];
            while hull.len() >= 2 && hull[hull.len() - 2].at(x) <= hull[hull.len() - 1].at(x) {
                hull.pop_back();
            }
            let line = hull.back().expect("a line was just added");
            fit.after[a] = fit.survive[a] * CALL_COST + fit.cum_t[a] + line.at(x);
            fit.best[a] = line.b;
        }
        fit.first = fit.scan(0, 1);
        fit
    }

    /// The best poll at or after grid point `from`, after pending at `a`, by
    /// looking at every one.
    fn scan(&self, a: usize, from: usize) -> usize {
        (from..=self.n)
            .min_by(|&x, &y| self.cost(a, x).total_cmp(&self.cost(a, y)))
            .unwrap_or(from)
    }

    /// The last grid point at or before `t` seconds (at most the horizon).
    pub(super) fn point(&self, t: f64) -> usize {
        ((t / self.step).floor() as usize).min(self.n)
    }

    /// The estimated share of requests still pending `t` seconds after submit.
    pub(super) fn survival(&self, t: f64) -> f64 {
        self.survive[self.point(t)]
    }

    /// The first grid time (seconds since submit) by which a request seen
    /// pending at `last_pending` has less than `chance` of still running,
    /// by the estimate; None if it was seen pending where nothing was
    /// learned to be, or nothing learned reaches that far.
    pub(super) fn sure(&self, last_pending: f64, chance: f64) -> Option<f64> {
        let from = self.point(last_pending);
        if self.survive[from] <= 1e-9 {
            return None;
        }
        let limit = chance * self.survive[from];
        let k = (from..=self.n).find(|&k| self.survive[k] <= limit)?;
        Some(k as f64 * self.step)
    }

    /// The first grid time by which at least `q` of the requests are
    /// estimated done (the horizon if none is).
    #[cfg(test)]
    pub(super) fn quantile(&self, q: f64) -> f64 {
        let k = (0..=self.n).find(|&k| self.survive[k] <= 1.0 - q);
        k.unwrap_or(self.n) as f64 * self.step
    }

    /// Expected wait of requests finishing in (a, b] if polled at b.
    fn delay(&self, a: usize, b: usize) -> f64 {
        let t = b as f64 * self.step;
        t * (self.cum[b] - self.cum[a]) - (self.cum_t[b] - self.cum_t[a])
    }

    /// Expected cost (unnormalised) of polling at b after pending at a.
    fn cost(&self, a: usize, b: usize) -> f64 {
        self.survive[a] * CALL_COST + self.delay(a, b) + self.after[b]
    }

    /// The best poll at or after `earliest` seconds, given the last pending
    /// poll (none: not polled since submit).
    pub(super) fn next(&self, earliest: f64, last_pending: Option<f64>) -> f64 {
        let a = last_pending.map_or(0, |s| self.point(s));
        let mut from = ((earliest / self.step).ceil() as usize).max(1);
        if last_pending.is_some() {
            from = from.max(a + self.gap);
        }
        if from > self.n || self.survive[a] <= 1e-9 {
            // Beyond what was learned: the vendor's pace.
            return match last_pending {
                Some(s) => earliest.max(s + TAIL_GAP),
                None => earliest,
            };
        }
        // The best over all later points is the best over these if it is one of them.
        let best = match last_pending {
            None if from <= self.first => self.first,
            Some(_) if from <= self.best[a] => self.best[a],
            _ => self.scan(a, from),
        };
        best as f64 * self.step
    }
}

/// `y = slope·x + at_zero`: the cost of polling at grid point `b`, as a
/// function of the mass already finished.
#[derive(Clone, Copy, Debug)]
struct Line {
    slope: f64,
    at_zero: f64,
    b: usize,
}

impl Line {
    fn at(&self, x: f64) -> f64 {
        self.slope * x + self.at_zero
    }
}

/// Adds a line of the largest slope yet to the front of a lower hull whose
/// lines fall in slope towards its back, dropping lines it makes useless.
fn add_steepest_last(hull: &mut VecDeque<Line>, line: Line) {
    while hull.len() >= 2 {
        let (l2, l3) = (hull[0], hull[1]);
        // l2 is useless if it meets `line` at or right of where it meets l3.
        let useless = (l2.at_zero - line.at_zero) * (l2.slope - l3.slope)
            >= (l3.at_zero - l2.at_zero) * (line.slope - l2.slope);
        if !useless {
            break;
        }
        hull.pop_front();
    }
    hull.push_front(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(intervals: &[(f64, f64)]) -> Fit {
        Fit::new(intervals.iter().copied())
    }

    fn plan(l: &Fit, mut last: Option<f64>, latency: f64) -> Vec<f64> {
        let mut polls = Vec::new();
        let mut now = 0.0;
        loop {
            let t = l.next(now, last);
            polls.push(t);
            if t >= latency || polls.len() > 50 {
                return polls;
            }
            last = Some(t);
            now = t;
        }
    }

    #[test]
    fn a_fixed_latency_learned_from_first_polls_is_asked_once_just_after_it() {
        // What a run at a fixed 3 s teaches: four probes seen pending, then
        // hundreds of requests seen done at their first poll, just after 3 s.
        let mut intervals = vec![
            (2.0, 4.0),
            (2.25, 4.25),
            (2.5, 4.5),
            (2.75, 4.75),
            (0.0, 3.0),
        ];
        intervals.extend((0..500).map(|i| (0.0, 3.02 + 0.06 * ((i as f64 * 0.618) % 1.0))));
        let polls = plan(&fit(&intervals), None, 3.0);
        // Not an ask near 1 s whose next ask must wait until 3 s or later.
        assert_eq!(polls.len(), 1, "{polls:?}");
        assert!((3.0..=3.1).contains(&polls[0]), "{polls:?}");
    }

    #[test]
    fn a_fixed_latency_is_found_just_after_it() {
        // Staggered first polls around 3 s taught (2.9, 3.0] and wider.
        let mut intervals = vec![(2.9, 3.0), (0.0, 3.05), (2.5, 4.5), (1.2, 3.2)];
        intervals.extend([(0.0, 3.02); 40]);
        let fit = &fit(&intervals);
        let polls = plan(fit, None, 3.0);
        // An early ask may be spent, but the one that finds it done is right after it.
        assert!(polls.len() <= 2, "{polls:?}");
        let found = *polls.last().unwrap();
        assert!((3.0..=3.06).contains(&found), "{polls:?}");
    }

    #[test]
    fn a_spread_latency_is_polled_a_few_times_at_least_two_seconds_apart() {
        // Latencies spread evenly over 5-15 s, each seen within a second.
        let intervals: Vec<(f64, f64)> = (0..400)
            .map(|i| {
                let l = 5.0 + 10.0 * (i as f64 + 0.5) / 400.0;
                (l - 0.5, l + 0.5)
            })
            .collect();
        let fit = &fit(&intervals);
        let mut calls = 0.0;
        let mut wait = 0.0;
        for i in 0..100 {
            let latency = 5.0 + 10.0 * (i as f64 + 0.5) / 100.0;
            let polls = plan(fit, None, latency);
            assert!(
                polls[0] >= 4.5,
                "no poll before anything can finish: {polls:?}"
            );
            for w in polls.windows(2) {
                assert!(w[1] - w[0] >= MIN_GAP - 1e-9, "{polls:?}");
            }
            calls += polls.len() as f64;
            wait += polls.last().unwrap() - latency;
        }
        let (calls, wait) = (calls / 100.0, wait / 100.0);
        assert!(calls < 2.6, "{calls} calls per request");
        assert!(wait < 1.35, "{wait} s waited per request");
    }

    #[test]
    fn the_hull_finds_what_looking_at_every_point_finds() {
        let intervals: Vec<(f64, f64)> = (0..300)
            .map(|i| {
                let l = 1.0 + (i as f64 * 7.31) % 9.0;
                let lo = if i % 3 == 0 { 0.0 } else { l - 1.3 };
                (lo, l + 0.7)
            })
            .collect();
        let fit = &fit(&intervals);
        for a in 0..=fit.n.saturating_sub(fit.gap) {
            let brute = fit.scan(a, a + fit.gap);
            let (c_hull, c_brute) = (fit.cost(a, fit.best[a]), fit.cost(a, brute));
            assert!(
                (c_hull - c_brute).abs() <= 1e-9 * c_brute.abs().max(1.0),
                "a = {a}"
            );
        }
    }

    #[test]
    fn a_request_past_everything_learned_is_asked_at_once() {
        let fit = fit(&[(2.9, 3.0); 10]);
        assert_eq!(fit.next(7200.0, None), 7200.0, "resumed two hours later");
        assert_eq!(fit.next(30.0, Some(29.0)), 29.0 + TAIL_GAP);
    }

    #[test]
    fn the_sure_time_and_quantiles_read_the_estimate() {
        // Latencies spread from 2.92 to 3.05 s, each seen within 20 ms.
        let intervals: Vec<(f64, f64)> = (0..100)
            .map(|i| {
                let hi = 2.92 + 0.0013 * f64::from(i + 1);
                (hi - 0.02, hi)
            })
            .collect();
        let fit = fit(&intervals);
        let sure = fit.sure(2.9, 0.01).unwrap();
        assert!((3.0..=3.07).contains(&sure), "{sure}");
        assert_eq!(
            fit.sure(4.0, 0.01),
            None,
            "seen pending past everything learned"
        );
        let (median, most) = (fit.quantile(0.5), fit.quantile(0.99));
        assert!(
            2.95 < median && median < most && most <= 3.07,
            "{median} {most}"
        );
    }
}
