//! Row keys: how a row's stable `key` is computed from its request.
//!
//! Why this exists: the key names a row to the journal, to resume and to
//! `merge`; it must not change while the request does not. It is a sha256 of
//! the request's canonical text (seed included, derived seed excluded) and of
//! the row's occurrence among identical requests, so identical requests get
//! distinct keys. The compatibility test (`tests/compat.rs`) pins the result.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::ids;
use super::model::{Axis, JobPlan, Row};
use super::{ParamValue, Request};
use crate::vocab::Key;

/// Every row of every job, keyed. Identical requests are numbered by
/// occurrence so that their keys differ; those with a seed of their own
/// (not derived from the key) send the same bytes again, and are counted.
pub(super) fn rows(jobs: &[JobPlan]) -> (Vec<Row>, ids::Repeats) {
    let total: u64 = jobs.iter().map(JobPlan::row_count).sum();
    let mut rows: Vec<Row> = Vec::with_capacity(total as usize);
    // Hash of a request without derived seed -> (rows with it so far, the first).
    let mut seen: HashMap<u64, (u32, u32)> = HashMap::with_capacity(total as usize);
    let mut repeats = ids::Repeats::default();
    for (j, job) in jobs.iter().enumerate() {
        let seed_axis = job.axes.last().filter(|a| a.is_seed());
        let inner = seed_axis.map_or(1, Axis::len);
        let outer = job.row_count() / inner;
        for o in 0..outer {
            // Everything but the seed is hashed once per outer combination.
            let mut req = job.base.clone();
            for v in job.decode(o * inner) {
                req.set(&v);
            }
            let mut prefix = Sha256::new();
            prefix.update(req.canonical_without_seed().as_bytes());
            for i in 0..inner {
                let combo = o * inner + i;
                let seed = match seed_axis.map(|a| a.value(i)) {
                    Some(ParamValue::Seed(s)) => Some(s),
                    _ => job.base.seed,
                };
                let mut h = prefix.clone();
                h.update(Request::canonical_seed(seed).as_bytes());
                let canonical = first_u64(&h.finalize());
                let index = rows.len() as u32;
                let (occurrence, first) = seen.entry(canonical).or_insert((0, index));
                if *occurrence > 0 && seed.is_some() {
                    repeats.note(rows[*first as usize].job, *first, j as u32, index);
                }
                let mut k = Sha256::new();
                k.update(canonical.to_le_bytes());
                k.update(occurrence.to_le_bytes());
                rows.push(Row {
                    job: j as u32,
                    occurrence: *occurrence,
                    combo,
                    key: Key(first_u64(&k.finalize())),
                    index,
                });
                *occurrence += 1;
            }
        }
    }
    (rows, repeats)
}

/// The seeds of jobs with `hold_seed: true`: one per job, derived from the
/// job's request before its sweep (seed aside), so a sweep's cells share it
/// and adding a swept value does not move it. Jobs with the same values are
/// numbered, as identical rows are, so that they still get different seeds.
#[derive(Default)]
pub(super) struct HeldSeeds {
    /// A digest of the values -> jobs with them so far.
    seen: HashMap<u64, u32>,
}

impl HeldSeeds {
    pub(super) fn seed_for(&mut self, base: &Request) -> u64 {
        let mut h = Sha256::new();
        h.update(b"hold_seed\n");
        h.update(base.canonical_without_seed().as_bytes());
        let values = first_u64(&h.clone().finalize());
        let n = self.seen.entry(values).or_insert(0);
        h.update(n.to_le_bytes());
        *n += 1;
        Key(first_u64(&h.finalize())).derived_seed()
    }
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}
