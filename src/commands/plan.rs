//! `batchgen plan MANIFEST`: what a run would send and cost; sends nothing.

use super::{load_plan, print_stdout};
use crate::cli::{self, PlanArgs};
use crate::exit::{self, Error};
use crate::plan;

/// The budget in force: the lower of `--max-cost` and the manifest's `budget_usd`.
pub fn budget_limit(flag: Option<plan::Usd>, plan: &plan::Plan) -> Option<plan::Usd> {
    match (flag, plan.budget_usd) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Keeps only the shard's rows, if one is asked for.
pub fn shard(plan: &mut plan::Plan, spec: Option<cli::ShardSpec>) -> Result<(), Error> {
    if let Some(spec) = spec {
        plan.keep_shard(spec.resolve().map_err(Error::Shard)?);
    }
    Ok(())
}

pub fn command(args: &PlanArgs) -> Result<u8, Error> {
    let mut plan = match load_plan(&args.manifest) {
        Err(Error::Invalid(invalid)) if args.json => {
            let json = serde_json::json!({ "errors": invalid.diagnostics });
            print_stdout(&format!("{json:#}\n"));
            return Err(Error::Invalid(invalid));
        }
        other => other?,
    };
    shard(&mut plan, args.shard)?;
    let max = budget_limit(args.max_cost, &plan);
    let cost = plan.totals().cost();
    if let Some(max) = max.filter(|max| cost > *max) {
        return Err(Error::OverBudget { cost, max });
    }
    let summary = plan::Summary::new(&plan, args.rows, max);
    if args.json {
        let json = serde_json::to_string_pretty(&summary).expect("a summary always serialises");
        print_stdout(&format!("{json}\n"));
    } else {
        print_stdout(&summary.to_text());
    }
    Ok(exit::OK)
}
