//! One job resolved: the manifest's defaults, sweep and `hold_seed`, then the
//! job's own values, `seeds`, `sweep` and `hold_seed`, into a [`JobPlan`].
//!
//! Why this exists apart from `expand.rs`: the precedence of a job's values
//! over the manifest's is the one rule people ask about, and it is here in
//! one place. Nothing here is async.
//!
//! A job's own `sweep:` adds its axes to the manifest's; a parameter swept by
//! both takes the job's values (in the manifest's axis order); a parameter the
//! job both sets and sweeps is an error. With `hold_seed: true`, a job without
//! `seed` or `seeds` sends one seed, chosen from its values, in every cell of
//! its sweep, so its cells differ only by what is swept.

use super::expand::{parse_hold, parse_seeds, parse_sweep};
use super::keys::HeldSeeds;
use super::model::{Axis, JobPlan};
use super::{params, ParamValue, Request};
use crate::manifest::{Diagnostic, Job};

/// What the manifest gives every job.
pub(super) struct Top<'a> {
    pub defaults: &'a [ParamValue],
    pub sweep: &'a [Axis],
    /// The manifest's `hold_seed:` (a job's own overrides it).
    pub hold_seed: bool,
}

/// Resolves one job; `None` (with diagnostics) if it is invalid.
pub(super) fn resolve_job(
    job: &Job,
    job_id: String,
    top: &Top,
    held: &mut HeldSeeds,
    diags: &mut Vec<Diagnostic>,
) -> Option<JobPlan> {
    let before = diags.iter().filter(|d| d.is_error()).count();
    let id = Some(job_id.as_str());
    let mut base = Request::empty();
    let mut has_prompt = job.get("prompt").is_some();
    for v in top.defaults {
        has_prompt |= matches!(v, ParamValue::Prompt(_));
        base.set(v);
    }
    let own = |name: &str| job.get(name).is_some();
    for f in &job.sweep {
        let set = if f.name == "seed" {
            ["seed", "seeds"].into_iter().find(|k| own(k))
        } else {
            own(&f.name).then_some(f.name.as_str())
        };
        if let Some(set) = set {
            diags.push(
                Diagnostic::error(
                    &f.value.loc,
                    format!("the job sets `{set}` and sweeps `{}`: keep one", f.name),
                )
                .job(id)
                .field(&format!("sweep.{}", f.name)),
            );
        }
    }
    let mut own_sweep = parse_sweep(&job.sweep, id, diags);
    let mut axes: Vec<Axis> = Vec::with_capacity(top.sweep.len() + own_sweep.len());
    for a in top.sweep {
        if let Some(i) = own_sweep.iter().position(|m| m.param() == a.param()) {
            // The job's sweep of a parameter replaces the manifest's, in place.
            axes.push(own_sweep.remove(i));
        } else if !(own(a.param()) || a.is_seed() && (own("seed") || own("seeds"))) {
            // A job's own value (or own `seeds`) pins the parameter.
            axes.push(a.clone());
        }
    }
    axes.extend(own_sweep);
    let mut hold = top.hold_seed;
    for f in &job.fields {
        match f.name.as_str() {
            "id" => {}
            "hold_seed" => hold = parse_hold(&f.value, id, diags).unwrap_or(hold),
            "seeds" => {
                if own("seed") {
                    diags.push(
                        Diagnostic::error(&f.value.loc, "both `seed` and `seeds` are set: use one")
                            .job(id)
                            .field("seeds"),
                    );
                } else if let Some(axis) = parse_seeds(&f.value, id, diags) {
                    axes.push(axis);
                }
            }
            name => match params::parse(name, &f.value) {
                Ok(v) => base.set(&v),
                Err(msg) => diags.push(Diagnostic::error(&f.value.loc, msg).job(id).field(name)),
            },
        }
    }
    // The seed axis, wherever it was written, is innermost.
    axes.sort_by_key(Axis::is_seed);
    let swept_prompt = axes.iter().any(|a| a.param() == "prompt");
    if !has_prompt && !swept_prompt {
        diags.push(
            Diagnostic::error(&job.loc, "no prompt: every job needs one")
                .job(id)
                .field("prompt"),
        );
    }
    let mut prompts: Vec<&str> = vec![&base.prompt];
    for a in &axes {
        if let Axis::List {
            param: "prompt",
            values,
        } = a
        {
            prompts = values
                .iter()
                .filter_map(|v| match v {
                    ParamValue::Prompt(p) => Some(&**p),
                    _ => None,
                })
                .collect();
        }
    }
    if let Some(long) = prompts
        .iter()
        .find(|p| p.chars().count() > params::PROMPT_ADVISED_CHARS)
    {
        diags.push(
            Diagnostic::warning(
                &job.loc,
                format!(
                    "the prompt has {} characters; the vendor advises at most {}",
                    long.chars().count(),
                    params::PROMPT_ADVISED_CHARS
                ),
            )
            .job(id)
            .field("prompt"),
        );
    }
    if diags.iter().filter(|d| d.is_error()).count() > before {
        return None;
    }
    if hold && base.seed.is_none() && !axes.iter().any(Axis::is_seed) {
        base.seed = Some(held.seed_for(&base));
    }
    Some(JobPlan {
        id: job_id,
        loc: job.loc.clone(),
        base,
        axes,
    })
}
