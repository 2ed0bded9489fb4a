//! Joins that yield: every join's output passes through DataFusion's `CooperativeExec`, which
//! spends the task's Tokio budget on each batch and so makes the task yield every so often.
//!
//! A join can produce batch after batch from memory without ever waiting on its inputs (a
//! nested-loop or cross join emits the whole build side for every probe batch), and an
//! aggregation above it keeps asking for more: without a yield, one poll runs for minutes, the
//! runtime's threads never get back to their I/O, and a cancelled query — or a client's
//! deadline — cannot stop it, while every other query on the process waits behind it.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec, SymmetricHashJoinExec,
};
use datafusion::physical_plan::ExecutionPlan;

/// `plan` with a [`CooperativeExec`] above every join.
pub fn yielding_joins(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    yielding_joins_until(plan, &|_| false)
}

/// The same, leaving alone the subtrees rooted where `boundary` says (fragments already sent
/// elsewhere, which cannot change).
pub fn yielding_joins_until(
    plan: Arc<dyn ExecutionPlan>,
    boundary: &dyn Fn(&dyn ExecutionPlan) -> bool,
) -> Result<Arc<dyn ExecutionPlan>> {
    if boundary(plan.as_ref()) {
        return Ok(plan);
    }
    let old: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let new = old
        .iter()
        .map(|child| yielding_joins_until(Arc::clone(child), boundary))
        .collect::<Result<Vec<_>>>()?;
    let changed = old.iter().zip(&new).any(|(a, b)| !Arc::ptr_eq(a, b));
    let plan = if changed {
        plan.with_new_children(new)?
    } else {
        plan
    };
    let any = plan.as_any();
    let join = any.is::<NestedLoopJoinExec>()
        || any.is::<CrossJoinExec>()
        || any.is::<HashJoinExec>()
        || any.is::<SortMergeJoinExec>()
        || any.is::<SymmetricHashJoinExec>();
    Ok(if join {
        Arc::new(CooperativeExec::new(plan))
    } else {
        plan
    })
}
