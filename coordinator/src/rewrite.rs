//! What Floe's physical rules that replace matched nodes share.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::physical_plan::ExecutionPlan;

/// `plan` with each node that `rewritten` has a replacement for replaced, from the root down
/// (a replacement's children are visited in turn).
pub(crate) fn top_down(
    plan: Arc<dyn ExecutionPlan>,
    rewritten: impl Fn(&Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        Ok(match rewritten(&node)? {
            Some(plan) => Transformed::yes(plan),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}
