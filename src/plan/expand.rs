//! Expansion and validation: a manifest in, a [`Plan`] or every problem out.
//!
//! Why this exists: nothing may be sent, and no cent spent, until every row of
//! the run is known to be valid. This applies defaults, per-job values, sweeps
//! and seed lists in their order of precedence, checks every value against the
//! API's documented rules, and reports every problem at once.

use sha2::{Digest, Sha256};

use super::job::{resolve_job, Top};
use super::keys::{rows, HeldSeeds};
use super::model::{
    Axis, JobPlan, Plan, Pricing, ASSUMED_IMAGE_TO_IMAGE_PRICE, DEFAULT_TEXT_TO_IMAGE_PRICE,
};
use super::{ids, params, sanitize, Kind, ParamValue};
use crate::manifest::{entry, stray_key, Diagnostic, Field, Loc, Manifest, Node, Value};
use crate::vocab::Usd;

/// Plans larger than this are refused (memory stays near 0.5 GB).
pub const MAX_ROWS: u64 = 20_000_000;
/// The most seeds one `{from, count}` range may give.
pub const MAX_SEED_COUNT: u64 = MAX_ROWS;

/// The manifest did not validate. Holds every problem found (warnings too).
#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in the manifest", self.errors())]
pub struct Invalid {
    pub diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

/// Expands and validates a manifest. Every problem is reported at once.
pub fn expand(manifest: &Manifest) -> Result<Plan, Invalid> {
    expand_checking(manifest, true)
}

/// [`expand`]; `check_ids: false` leaves out the check that no two rows'
/// ids clash (for the test that compares it with comparing every id).
pub(super) fn expand_checking(manifest: &Manifest, check_ids: bool) -> Result<Plan, Invalid> {
    let mut diags = manifest.problems.clone();
    let top_loc = Loc {
        file: std::sync::Arc::from(manifest.path.as_path()),
        pos: crate::manifest::Pos::Line(1),
    };

    let mut defaults: Vec<ParamValue> = Vec::new();
    for f in &manifest.defaults {
        match params::parse(&f.name, &f.value) {
            Ok(v) => defaults.push(v),
            Err(msg) => diags.push(Diagnostic::error(&f.value.loc, msg).field(&f.name)),
        }
    }
    let mut sweep = parse_sweep(&manifest.sweep, None, &mut diags);
    if let Some(node) = &manifest.seeds {
        if manifest.sweep.iter().any(|f| f.name == "seed") {
            diags.push(
                Diagnostic::error(
                    &node.loc,
                    "seeds are given both by `seeds` and by `sweep.seed`: keep one",
                )
                .field("seeds"),
            );
        } else if let Some(axis) = parse_seeds(node, None, &mut diags) {
            sweep.push(axis);
        }
    }
    // The seed axis, wherever it was written, is innermost.
    sweep.sort_by_key(Axis::is_seed);

    let hold_seed = manifest
        .hold_seed
        .as_ref()
        .and_then(|n| parse_hold(n, None, &mut diags))
        .unwrap_or(false);
    let pricing = parse_pricing(&manifest.pricing, &mut diags);
    let budget_usd = manifest.budget_usd.as_ref().and_then(|n| {
        let usd = params::parse_number(n).ok().and_then(Usd::from_dollars);
        if usd.is_none() {
            diags.push(
                Diagnostic::error(
                    &n.loc,
                    format!("expected an amount of dollars, found {}", n.describe()),
                )
                .field("budget_usd"),
            );
        }
        usd
    });
    let cache = manifest.cache.as_ref().and_then(|n| match n.as_str() {
        // A URL is never a folder named after its scheme.
        Some(dir) if !dir.trim().is_empty() => match crate::store::Location::parse(dir) {
            Ok(crate::store::Location::Local(dir)) => {
                Some(crate::store::Location::Local(n.loc.base_dir().join(dir)))
            }
            Ok(bucket) => Some(bucket),
            Err(e) => {
                diags.push(Diagnostic::error(&n.loc, e.to_string()).field("cache"));
                None
            }
        },
        _ => {
            diags.push(
                Diagnostic::error(
                    &n.loc,
                    format!("expected a folder path, found {}", n.describe()),
                )
                .field("cache"),
            );
            None
        }
    });
    let name = match &manifest.name {
        Some(n) => match n.as_str().map(sanitize) {
            Some(s) if !s.is_empty() => s,
            _ => {
                diags.push(
                    Diagnostic::error(
                        &n.loc,
                        format!(
                            "expected a name made of letters or digits, found {}",
                            n.describe()
                        ),
                    )
                    .field("name"),
                );
                String::new()
            }
        },
        None => manifest
            .path
            .file_stem()
            .map(|s| sanitize(&s.to_string_lossy()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "batch".into()),
    };

    if manifest.jobs.is_empty() {
        diags.push(Diagnostic::error(
            &top_loc,
            "the manifest has no jobs: add `jobs:` or `jobs_from:`",
        ));
    }
    let ids = ids::job_ids(&manifest.jobs, &mut diags);
    let mut jobs = Vec::with_capacity(manifest.jobs.len());
    let mut held = HeldSeeds::default();
    for (job, id) in manifest.jobs.iter().zip(ids) {
        let top = Top {
            defaults: &defaults,
            sweep: &sweep,
            hold_seed,
        };
        if let Some(plan) = resolve_job(job, id, &top, &mut held, &mut diags) {
            jobs.push(plan);
        }
    }

    let total: u64 = jobs
        .iter()
        .map(JobPlan::row_count)
        .fold(0u64, u64::saturating_add);
    if total > MAX_ROWS {
        diags.push(Diagnostic::error(
            &top_loc,
            format!("the plan has {total} rows; batchgen plans at most {MAX_ROWS} per manifest: split it"),
        ));
    }
    if pricing.image_to_image_assumed && jobs.iter().any(|j| j.kind() == Kind::ImageToImage) {
        diags.push(Diagnostic::warning(
            &top_loc,
            format!(
                "the vendor publishes no image-to-image price; estimating {} per image (set `pricing.image_to_image`)",
                pricing.image_to_image
            ),
        ));
    }

    if diags.iter().any(Diagnostic::is_error) {
        return Err(Invalid { diagnostics: diags });
    }
    let (rows, repeats) = rows(&jobs);
    if check_ids {
        diags.extend(ids::clashing_row_ids(&jobs, &rows, &top_loc));
    }
    if diags.iter().any(Diagnostic::is_error) {
        return Err(Invalid { diagnostics: diags });
    }
    diags.extend(ids::repeated_requests(&jobs, &rows, &repeats, &top_loc));
    let mut digest = Sha256::new();
    for r in &rows {
        digest.update(r.key.0.to_be_bytes());
    }
    Ok(Plan {
        name,
        manifest: manifest.path.clone(),
        pricing,
        budget_usd,
        cache,
        jobs,
        digest: crate::disk::hex(&digest.finalize()[..16]),
        rows,
        warnings: diags,
        shard: None,
    })
}

/// A `sweep:` mapping, the manifest's (`job: None`) or a job's.
pub(super) fn parse_sweep(
    fields: &[Field],
    job: Option<&str>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Axis> {
    let mut axes = Vec::new();
    for f in fields {
        let err = |msg: String| {
            Diagnostic::error(&f.value.loc, msg)
                .job(job)
                .field(&format!("sweep.{}", f.name))
        };
        if f.name == "seed" {
            if let Some(axis) = parse_seeds(&f.value, job, diags) {
                axes.push(axis);
            }
            continue;
        }
        let Value::List(items) = &f.value.value else {
            diags.push(err(format!(
                "a sweep is a list of values, found {}",
                f.value.describe()
            )));
            continue;
        };
        if items.is_empty() {
            diags.push(err("a sweep needs at least one value".into()));
            continue;
        }
        let mut values: Vec<ParamValue> = Vec::with_capacity(items.len());
        for item in items {
            match params::parse(&f.name, item) {
                Ok(v) if values.contains(&v) => diags.push(
                    Diagnostic::error(&item.loc, format!("{} is listed twice", item.describe()))
                        .job(job)
                        .field(&format!("sweep.{}", f.name)),
                ),
                Ok(v) => values.push(v),
                Err(msg) => diags.push(
                    Diagnostic::error(&item.loc, msg)
                        .job(job)
                        .field(&format!("sweep.{}", f.name)),
                ),
            }
        }
        let param = crate::manifest::PARAMS
            .iter()
            .find(|p| **p == f.name)
            .copied()
            .unwrap_or("prompt");
        axes.push(Axis::List { param, values });
    }
    axes
}

/// `seeds:` as a list, a `{from, count}` range, one integer, or text such as
/// `1-4|10` (CSV cells). `None` after reporting an error.
pub(super) fn parse_seeds(
    node: &Node,
    job: Option<&str>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Axis> {
    let mut errs: Vec<(Loc, String)> = Vec::new();
    let mut seeds: Vec<u64> = Vec::new();
    let one =
        |at: &Node, seeds: &mut Vec<u64>, errs: &mut Vec<(Loc, String)>| match params::parse_seed(
            at,
        ) {
            Ok(s) => seeds.push(s),
            Err(msg) => errs.push((at.loc.clone(), msg)),
        };
    match &node.value {
        Value::Int(_) => one(node, &mut seeds, &mut errs),
        Value::List(items) => {
            for item in items {
                one(item, &mut seeds, &mut errs)
            }
        }
        Value::Map(entries) => match seed_range(node, entries) {
            Ok(axis) => return Some(axis),
            Err(e) => errs.push(e),
        },
        Value::Str(text) => {
            for part in text
                .split(['|', ','])
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                let cell = |t: &str| Node {
                    value: Value::Str(t.to_string()),
                    loc: node.loc.clone(),
                };
                match part.split_once('-') {
                    Some((a, b)) => {
                        match (params::parse_seed(&cell(a)), params::parse_seed(&cell(b))) {
                            (Ok(a), Ok(b)) if a <= b && b - a < MAX_SEED_COUNT => {
                                seeds.extend(a..=b)
                            }
                            _ => errs.push((
                                node.loc.clone(),
                                format!("`{part}` is not a seed range like `100-103`"),
                            )),
                        }
                    }
                    None => one(&cell(part), &mut seeds, &mut errs),
                }
            }
        }
        _ => errs.push((
            node.loc.clone(),
            format!(
                "expected seeds as a list, a {{from, count}} range or an integer, found {}",
                node.describe()
            ),
        )),
    }
    if errs.is_empty() && seeds.is_empty() {
        errs.push((node.loc.clone(), "no seeds given".into()));
    }
    let mut seen = std::collections::HashSet::with_capacity(seeds.len());
    if let Some(dup) = seeds.iter().find(|s| !seen.insert(**s)) {
        errs.push((
            node.loc.clone(),
            format!("seed {dup} is listed twice (it would pay for the same image twice)"),
        ));
    }
    if !errs.is_empty() {
        diags.extend(
            errs.into_iter()
                .map(|(loc, msg)| Diagnostic::error(&loc, msg).job(job).field("seeds")),
        );
        return None;
    }
    Some(Axis::List {
        param: "seed",
        values: seeds.into_iter().map(ParamValue::Seed).collect(),
    })
}

/// `{from: A, count: N}`.
fn seed_range(node: &Node, entries: &[(Node, Node)]) -> Result<Axis, (Loc, String)> {
    if let Some(k) = stray_key(entries, &["from", "count"]) {
        return Err((
            k.loc.clone(),
            format!(
                "a seed range has only `from` and `count`, found {}",
                k.describe()
            ),
        ));
    }
    let (Some(from), Some(count)) = (entry(entries, "from"), entry(entries, "count")) else {
        return Err((
            node.loc.clone(),
            "a seed range needs `from` and `count`".into(),
        ));
    };
    let from_v = params::parse_seed(from).map_err(|m| (from.loc.clone(), m))?;
    let count_v = match params::parse_seed(count) {
        Ok(c) if (1..=MAX_SEED_COUNT).contains(&c) => c,
        _ => {
            return Err((
                count.loc.clone(),
                format!(
                    "`count` is a whole number from 1 to {MAX_SEED_COUNT}, found {}",
                    count.describe()
                ),
            ))
        }
    };
    if from_v + count_v - 1 > params::MAX_SEED {
        return Err((
            node.loc.clone(),
            format!("the range passes the largest seed, {}", params::MAX_SEED),
        ));
    }
    Ok(Axis::SeedRange {
        from: from_v,
        count: count_v,
    })
}

fn parse_pricing(fields: &[Field], diags: &mut Vec<Diagnostic>) -> Pricing {
    let mut p = Pricing {
        text_to_image: DEFAULT_TEXT_TO_IMAGE_PRICE,
        image_to_image: ASSUMED_IMAGE_TO_IMAGE_PRICE,
        image_to_image_assumed: true,
    };
    for f in fields {
        match params::parse_number(&f.value)
            .ok()
            .and_then(Usd::from_dollars)
        {
            Some(usd) if f.name == "text_to_image" => p.text_to_image = usd,
            Some(usd) => {
                p.image_to_image = usd;
                p.image_to_image_assumed = false;
            }
            None => diags.push(
                Diagnostic::error(
                    &f.value.loc,
                    format!(
                        "expected a price in dollars per image, found {}",
                        f.value.describe()
                    ),
                )
                .field(&format!("pricing.{}", f.name)),
            ),
        }
    }
    p
}

/// `hold_seed:` (the manifest's, or a job's): `None` after reporting an error.
pub(super) fn parse_hold(
    node: &Node,
    job: Option<&str>,
    diags: &mut Vec<Diagnostic>,
) -> Option<bool> {
    match params::parse_bool(node) {
        Ok(b) => Some(b),
        Err(msg) => {
            diags.push(
                Diagnostic::error(&node.loc, msg)
                    .job(job)
                    .field("hold_seed"),
            );
            None
        }
    }
}
