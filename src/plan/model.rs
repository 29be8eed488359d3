//! The plan's model: what a validated run is made of.
//!
//! Why this exists: every later stage (run, status, report, export, merge)
//! reads a [`Plan`] and its [`Row`]s, [`JobPlan`]s and [`Pricing`], never the
//! manifest. These are the types, and the little arithmetic on them (a row's
//! request, its id, the plan's totals); [`expand`](super::expand()) builds them.

use std::path::PathBuf;

use super::{Kind, ParamValue, Request};
use crate::manifest::{Diagnostic, Loc};
use crate::vocab::{Key, Shard, Usd};

/// Text-to-image price published by the vendor, USD per image.
pub const DEFAULT_TEXT_TO_IMAGE_PRICE: Usd = Usd::from_micros(50_000);
/// The vendor publishes no image-to-image price; we assume the text-to-image
/// one, and say so, unless the manifest sets `pricing.image_to_image`.
pub const ASSUMED_IMAGE_TO_IMAGE_PRICE: Usd = Usd::from_micros(50_000);

#[derive(Clone, Debug, PartialEq)]
pub struct Pricing {
    pub text_to_image: Usd,
    pub image_to_image: Usd,
    /// True when `image_to_image` is our assumption, not the manifest's.
    pub image_to_image_assumed: bool,
}

impl Pricing {
    pub fn per_image(&self, kind: Kind) -> Usd {
        match kind {
            Kind::TextToImage => self.text_to_image,
            Kind::ImageToImage => self.image_to_image,
        }
    }
}

/// One swept dimension of a job.
#[derive(Clone, Debug)]
pub enum Axis {
    /// A parameter taking each listed value in turn.
    List {
        param: &'static str,
        values: Vec<ParamValue>,
    },
    /// Seeds `from`, `from + 1`, … (`count` of them), without a list in memory.
    SeedRange { from: u64, count: u64 },
}

impl Axis {
    pub fn len(&self) -> u64 {
        match self {
            Axis::List { values, .. } => values.len() as u64,
            Axis::SeedRange { count, .. } => *count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn value(&self, i: u64) -> ParamValue {
        match self {
            Axis::List { values, .. } => values[i as usize].clone(),
            Axis::SeedRange { from, .. } => ParamValue::Seed(from + i),
        }
    }

    /// The parameter the axis sweeps.
    pub fn param(&self) -> &'static str {
        match self {
            Axis::List { param, .. } => param,
            Axis::SeedRange { .. } => "seed",
        }
    }

    pub(super) fn is_seed(&self) -> bool {
        matches!(
            self,
            Axis::SeedRange { .. } | Axis::List { param: "seed", .. }
        )
    }
}

/// A job after defaults, its own values and the sweep are resolved.
#[derive(Clone, Debug)]
pub struct JobPlan {
    /// Sanitised to `[A-Za-z0-9._-]`, unique in the plan even ignoring case.
    pub id: String,
    pub loc: Loc,
    /// Every parameter that does not vary between the job's rows.
    pub base: Request,
    /// Varying parameters, outermost first; a seed axis is always last.
    pub axes: Vec<Axis>,
}

impl JobPlan {
    pub fn kind(&self) -> Kind {
        let swept_urls = self.axes.iter().any(|a| {
            matches!(
                a,
                Axis::List {
                    param: "image_urls",
                    ..
                }
            )
        });
        if swept_urls {
            Kind::ImageToImage
        } else {
            self.base.kind()
        }
    }

    /// True when the job sweeps something but has no seed of its own:
    /// each of its cells then sends another derived seed, so the cells
    /// differ by seed as well as by what is swept (`plan` hints at it).
    pub fn derives_seed_per_cell(&self) -> bool {
        self.base.seed.is_none()
            && !self.axes.is_empty()
            && !self.axes.iter().any(Axis::is_seed)
            && self.row_count() > 1
    }

    pub fn row_count(&self) -> u64 {
        self.axes.iter().map(Axis::len).product()
    }

    /// Images the job's rows produce in all (`num_images` may be swept).
    pub fn images(&self) -> u64 {
        let rows = self.row_count();
        match self.axes.iter().find(|a| {
            matches!(
                a,
                Axis::List {
                    param: "num_images",
                    ..
                }
            )
        }) {
            Some(Axis::List { values, .. }) => {
                let per_value = rows / values.len() as u64;
                values
                    .iter()
                    .map(|v| match v {
                        ParamValue::NumImages(n) => u64::from(*n) * per_value,
                        _ => 0,
                    })
                    .sum()
            }
            _ => rows * u64::from(self.base.images()),
        }
    }

    /// The axis values of combination `combo`, outermost axis first.
    pub(super) fn decode(&self, mut combo: u64) -> Vec<ParamValue> {
        let mut out = vec![ParamValue::Seed(0); self.axes.len()];
        for (i, axis) in self.axes.iter().enumerate().rev() {
            out[i] = axis.value(combo % axis.len());
            combo /= axis.len();
        }
        out
    }
}

/// One concrete request of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub job: u32,
    /// Among identical requests in the plan, this one's number (0 for the first).
    pub occurrence: u32,
    /// Position in the job's sweep (mixed radix over its axes).
    pub combo: u64,
    pub key: Key,
    /// Position in the whole plan (manifest order), whatever shard it is in.
    pub index: u32,
}

/// The whole run, validated and priced. Build it with [`expand`](super::expand()).
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub manifest: PathBuf,
    pub pricing: Pricing,
    pub budget_usd: Option<Usd>,
    /// The manifest's `cache:` folder (relative to the manifest) or bucket
    /// prefix (`--cache` overrides it).
    pub cache: Option<crate::store::Location>,
    pub jobs: Vec<JobPlan>,
    /// The rows this run does: every row, or one shard's.
    pub rows: Vec<Row>,
    /// Problems that do not stop the run (long prompts, assumed prices).
    pub warnings: Vec<Diagnostic>,
    /// A digest of every row key of the whole plan, in order: shards of one
    /// manifest share it, so `merge` can tell them from another's.
    pub digest: String,
    /// The slice of the plan these rows are, if only one.
    pub shard: Option<Shard>,
}

impl Plan {
    pub fn job(&self, row: &Row) -> &JobPlan {
        &self.jobs[row.job as usize]
    }

    /// Keeps only the rows of `shard`.
    pub fn keep_shard(&mut self, shard: Shard) {
        self.rows.retain(|r| shard.holds(r.key));
        self.shard = Some(shard);
    }

    /// The request a row sends, seed included (derived from the key if the
    /// manifest gives none).
    pub fn request(&self, row: &Row) -> Request {
        let job = self.job(row);
        let mut req = job.base.clone();
        for v in job.decode(row.combo) {
            req.set(&v);
        }
        if req.seed.is_none() {
            req.seed = Some(row.key.derived_seed());
        }
        req
    }

    /// The row's readable id: job id, swept values, seed (and `_dupN` for
    /// the Nth repeat of an identical request). Unique in the plan, even
    /// ignoring case: [`expand`](super::expand()) refuses a plan where two rows' ids clash.
    pub fn row_id(&self, row: &Row) -> String {
        self.job(row).row_id(row)
    }

    /// Requests, images and estimated cost, by kind.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        if self.shard.is_some() {
            for row in &self.rows {
                let req = self.request(row);
                let k = req.kind() as usize;
                t.requests[k] += 1;
                t.images[k] += u64::from(req.images());
            }
            for kind in Kind::ALL {
                t.cost[kind as usize] = self.pricing.per_image(kind).times(t.images[kind as usize]);
            }
            return t;
        }
        for job in &self.jobs {
            let k = job.kind() as usize;
            t.requests[k] += job.row_count();
            t.images[k] += job.images();
        }
        for kind in Kind::ALL {
            t.cost[kind as usize] = self.pricing.per_image(kind).times(t.images[kind as usize]);
        }
        t
    }
}

/// Counts indexed by `Kind as usize`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub requests: [u64; 2],
    pub images: [u64; 2],
    pub cost: [Usd; 2],
}

impl Totals {
    pub fn requests(&self) -> u64 {
        self.requests.iter().sum()
    }

    pub fn images(&self) -> u64 {
        self.images.iter().sum()
    }

    pub fn cost(&self) -> Usd {
        self.cost[0] + self.cost[1]
    }
}
