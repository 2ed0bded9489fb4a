//! `x NOT IN (SELECT y …)` as a plain anti join when neither side can hold a NULL.
//!
//! SQL's NOT IN is three-valued: one NULL among the subquery's values makes every row's answer
//! unknown, and a NULL `x` is unknown too. DataFusion plans it as a *null-aware* anti join, which
//! must see the whole build side in one place (`CollectLeft`, one partition, never swapped) —
//! on a lakehouse that puts the big fact table in one hash table on one node. When the columns
//! are nullable in the schema but Iceberg's manifests prove that no selected data file holds a
//! NULL in either column, the answer equals a plain anti join's, which DataFusion can swap,
//! broadcast or partition like any other join. This rule runs first among the physical
//! optimizer rules, so join selection and distribution then treat it as such.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, HashJoinExecBuilder, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::ExecutionPlan;
use floe_engine::IcebergScanExec;

/// Turns null-aware anti joins into plain ones where manifests prove both keys NULL-free.
#[derive(Debug, Default)]
pub struct NotInWithoutNulls;

impl PhysicalOptimizerRule for NotInWithoutNulls {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.as_any().downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let proven = join.null_aware
                && join.on().iter().all(|(left, right)| {
                    never_null(join.left(), left) && never_null(join.right(), right)
                });
            if !proven {
                return Ok(Transformed::no(node));
            }
            let plain = HashJoinExecBuilder::from(join)
                .with_null_aware(false)
                .with_partition_mode(PartitionMode::Auto)
                .build()?;
            Ok(Transformed::yes(Arc::new(plain) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "not_in_without_nulls"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `expr` over the output of `plan` is provably never NULL: a column that traces, through
/// operators that pass values through unchanged, to an Iceberg scan whose selected files all
/// record zero NULLs for it.
fn never_null(plan: &Arc<dyn ExecutionPlan>, expr: &Arc<dyn PhysicalExpr>) -> bool {
    match expr.as_any().downcast_ref::<Column>() {
        Some(column) => column_never_null(plan, column.index()),
        None => false,
    }
}

fn column_never_null(plan: &Arc<dyn ExecutionPlan>, index: usize) -> bool {
    let any = plan.as_any();
    if any.is::<IcebergScanExec>() {
        return plan
            .partition_statistics(None)
            .ok()
            .and_then(|s| s.column_statistics.get(index).map(|c| c.null_count))
            .is_some_and(|n| matches!(n, Precision::Exact(0) | Precision::Inexact(0)));
    }
    if let Some(projection) = any.downcast_ref::<ProjectionExec>() {
        return projection
            .expr()
            .get(index)
            .is_some_and(|p| never_null(projection.input(), &p.expr));
    }
    if let Some(filter) = any.downcast_ref::<FilterExec>() {
        let input_index = match filter.projection() {
            Some(projection) => match projection.get(index) {
                Some(i) => *i,
                None => return false,
            },
            None => index,
        };
        return column_never_null(filter.input(), input_index);
    }
    if let Some(aggregate) = any.downcast_ref::<AggregateExec>() {
        // The grouping columns come first in the output (a plain GROUP BY, no grouping sets).
        let group = aggregate.group_expr();
        if group.has_grouping_set() {
            return false;
        }
        return group
            .expr()
            .get(index)
            .is_some_and(|(e, _)| never_null(aggregate.input(), e));
    }
    let passes_through =
        any.is::<RepartitionExec>() || any.is::<CoalescePartitionsExec>() || any.is::<SortExec>();
    if passes_through {
        return plan
            .children()
            .first()
            .is_some_and(|input| column_never_null(input, index));
    }
    false
}
