//! What `batchgen plan` shows: totals, prices and the first rows, as a table
//! for people or JSON for machines.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Kind, Plan, Request, Usd};
use crate::manifest::Diagnostic;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub manifest: String,
    pub name: String,
    pub requests: u64,
    pub requests_by_kind: ByKind<u64>,
    pub images: u64,
    pub images_by_kind: ByKind<u64>,
    pub cost_usd: Usd,
    pub cost_usd_by_kind: ByKind<Usd>,
    pub price_per_image_usd: ByKind<Usd>,
    pub image_to_image_price_assumed: bool,
    pub max_cost_usd: Option<Usd>,
    pub warnings: Vec<Diagnostic>,
    /// Advice that is not a problem: e.g. a sweep over jobs without seeds.
    pub hints: Vec<String>,
    /// The first rows of the plan, in order.
    pub rows: Vec<SummaryRow>,
}

#[derive(Debug, Serialize)]
pub struct ByKind<T> {
    pub text_to_image: T,
    pub image_to_image: T,
}

impl<T: Copy> ByKind<T> {
    fn from(values: [T; 2]) -> ByKind<T> {
        ByKind {
            text_to_image: values[Kind::TextToImage as usize],
            image_to_image: values[Kind::ImageToImage as usize],
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SummaryRow {
    pub id: String,
    pub key: String,
    pub kind: Kind,
    #[serde(flatten)]
    pub request: Request,
}

impl Summary {
    /// Summarises `plan`, listing its first `rows` rows. `max_cost` is the
    /// budget in force (the lower of `--max-cost` and `budget_usd`).
    pub fn new(plan: &Plan, rows: usize, max_cost: Option<Usd>) -> Summary {
        let t = plan.totals();
        Summary {
            manifest: plan.manifest.display().to_string(),
            name: plan.name.clone(),
            requests: t.requests(),
            requests_by_kind: ByKind::from(t.requests),
            images: t.images(),
            images_by_kind: ByKind::from(t.images),
            cost_usd: t.cost(),
            cost_usd_by_kind: ByKind::from(t.cost),
            price_per_image_usd: ByKind::from(Kind::ALL.map(|k| plan.pricing.per_image(k))),
            image_to_image_price_assumed: plan.pricing.image_to_image_assumed,
            max_cost_usd: max_cost,
            warnings: plan.warnings.clone(),
            hints: seed_hint(plan).into_iter().collect(),
            rows: plan
                .rows
                .iter()
                .take(rows)
                .map(|r| SummaryRow {
                    id: plan.row_id(r),
                    key: r.key.to_string(),
                    kind: plan.job(r).kind(),
                    request: plan.request(r),
                })
                .collect(),
        }
    }

    /// The table people read.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let (t, i) = (&self.requests_by_kind, &self.images_by_kind);
        let c = &self.cost_usd_by_kind;
        let p = &self.price_per_image_usd;
        let _ = writeln!(
            out,
            "plan `{}` from {} (nothing is sent)",
            self.name, self.manifest
        );
        let _ = writeln!(
            out,
            "  requests  {} text_to_image + {} image_to_image = {}",
            t.text_to_image, t.image_to_image, self.requests
        );
        let _ = writeln!(
            out,
            "  images    {} text_to_image + {} image_to_image = {}",
            i.text_to_image, i.image_to_image, self.images
        );
        let assumed = if self.image_to_image_price_assumed {
            ", assumed"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  cost      {} + {} = {} estimated (at {}/image text_to_image, {}/image image_to_image{assumed})",
            c.text_to_image, c.image_to_image, self.cost_usd, p.text_to_image, p.image_to_image
        );
        if let Some(max) = self.max_cost_usd {
            let _ = writeln!(out, "  budget    {max} (within budget)");
        }
        for hint in &self.hints {
            let _ = writeln!(out, "  hint      {hint}");
        }
        if self.rows.is_empty() {
            return out;
        }
        let header = [
            "ID", "KIND", "SEED", "SIZE", "STEPS", "GUIDANCE", "N", "FORMAT", "KEY", "PROMPT",
        ];
        let cells: Vec<[String; 10]> = self
            .rows
            .iter()
            .map(|r| {
                let q = &r.request;
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                [
                    r.id.clone(),
                    match r.kind {
                        Kind::TextToImage => "t2i".into(),
                        Kind::ImageToImage => "i2i".into(),
                    },
                    opt(q.seed.map(|s| s.to_string())),
                    opt(q.image_size.map(|s| s.to_string())),
                    opt(q.num_inference_steps.map(|s| s.to_string())),
                    opt(q.guidance_scale.map(|s| s.to_string())),
                    q.images().to_string(),
                    opt(q.output_format.map(|f| f.as_str().to_string())),
                    r.key.clone(),
                    one_line(&q.prompt, 48),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        out.push('\n');
        let mut line = |cols: &[String]| {
            let mut l = String::new();
            for (k, (w, cell)) in widths.iter().zip(cols).enumerate() {
                if k + 1 == cols.len() {
                    l.push_str(cell);
                } else {
                    let _ = write!(l, "{cell:<w$}  ");
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&header.map(String::from));
        for row in &cells {
            line(row);
        }
        let more = self.requests.saturating_sub(self.rows.len() as u64);
        if more > 0 {
            let _ = writeln!(out, "… and {more} more rows (--rows N shows more)");
        }
        out
    }
}

/// Jobs shown by name in the hint; the rest are counted.
const HINTED_JOBS: usize = 3;

/// Names the jobs whose sweep cells each send another derived seed.
fn seed_hint(plan: &Plan) -> Option<String> {
    let jobs: Vec<&str> = plan
        .jobs
        .iter()
        .filter(|j| j.derives_seed_per_cell())
        .map(|j| j.id.as_str())
        .collect();
    let (first, rest) = jobs.split_at(jobs.len().min(HINTED_JOBS));
    let mut names = first
        .iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match (first.len(), rest.len()) {
        (0, _) => return None,
        (_, 0) => {}
        (_, n) => {
            let _ = write!(names, " and {n} more");
        }
    }
    let (noun, verb) = if jobs.len() == 1 {
        ("job", "sweeps")
    } else {
        ("jobs", "sweep")
    };
    Some(format!(
        "{noun} {names} {verb} without a seed: each cell gets another derived seed, so cells differ by seed too; \
         `hold_seed: true` holds one seed across a job's cells (docs/manifests.md#one-seed-across-a-sweep)"
    ))
}

/// A prompt on one line, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
    }
}
