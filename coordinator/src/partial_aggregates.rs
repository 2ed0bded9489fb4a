//! An aggregation over one partition split into its partial and final steps, so that the
//! partial step runs where the rows are.
//!
//! ```text
//! AggregateExec Single                     AggregateExec Final          (coordinator)
//!   input (one partition)         →          AggregateExec Partial      (executor task)
//!                                              input
//! ```
//!
//! DataFusion aggregates an input of one partition in a single step: on one machine there is
//! nothing to split. In a cluster that input is a task on an executor (a table of one file:
//! TPC-H Q22's customers, Q14's join with part), and the single step is not partition-local, so
//! the stage cutter gathers every row to the coordinator to aggregate there — Q14's 76 K rows,
//! Q22's 38 K — where the partial step would send one row per group. Aggregates that are
//! DISTINCT or ordered, and aggregations with a limit, are left as they are.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::ExecutionPlan;

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub struct PartialAggregates;

impl PhysicalOptimizerRule for PartialAggregates {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::rewrite::top_down(plan, split)
    }

    fn name(&self) -> &str {
        "floe_partial_aggregates"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` in two steps, if it is a single-step aggregation that can be split.
fn split(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(single) = node.as_any().downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    let input = single.input();
    if *single.mode() != AggregateMode::Single
        || input.properties().output_partitioning().partition_count() != 1
        || single.limit_options().is_some()
        || single
            .aggr_expr()
            .iter()
            .any(|a| a.is_distinct() || !a.order_bys().is_empty())
    {
        return Ok(None);
    }
    let partial = Arc::new(AggregateExec::try_new(
        AggregateMode::Partial,
        single.group_expr().clone(),
        single.aggr_expr().to_vec(),
        single.filter_expr().to_vec(),
        Arc::clone(input),
        single.input_schema(),
    )?);
    let last = AggregateExec::try_new(
        AggregateMode::Final,
        partial.group_expr().as_final(),
        partial.aggr_expr().to_vec(),
        partial.filter_expr().to_vec(),
        partial,
        single.input_schema(),
    )?;
    // Two steps give the same rows as one; should a type differ, the plan stays.
    if last.schema() != single.schema() {
        return Ok(None);
    }
    Ok(Some(Arc::new(last)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::functions_aggregate::average::avg_udaf;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::aggregates::PhysicalGroupBy;
    use datafusion::physical_plan::empty::EmptyExec;

    /// `avg(x)` (or `count(DISTINCT x)`) over one partition, grouped by g.
    fn single(distinct: bool) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, true),
            Field::new("x", DataType::Int64, true),
        ]));
        let input = Arc::new(EmptyExec::new(Arc::clone(&schema)));
        let x = col("x", &schema).expect("x");
        let aggregate = if distinct {
            AggregateExprBuilder::new(count_udaf(), vec![x])
                .distinct()
                .alias("n")
        } else {
            AggregateExprBuilder::new(avg_udaf(), vec![x]).alias("a")
        }
        .schema(Arc::clone(&schema))
        .build()
        .expect("an aggregate");
        let group =
            PhysicalGroupBy::new_single(vec![(col("g", &schema).expect("g"), "g".to_string())]);
        Arc::new(
            AggregateExec::try_new(
                AggregateMode::Single,
                group,
                vec![Arc::new(aggregate)],
                vec![None],
                input,
                schema,
            )
            .expect("a valid test plan"),
        )
    }

    fn mode(plan: &Arc<dyn ExecutionPlan>) -> AggregateMode {
        *plan
            .as_any()
            .downcast_ref::<AggregateExec>()
            .expect("an aggregation")
            .mode()
    }

    #[test]
    fn a_single_step_over_one_partition_becomes_partial_then_final() {
        let plan = single(false);
        let split = PartialAggregates
            .optimize(Arc::clone(&plan), &ConfigOptions::new())
            .expect("optimized");
        assert_eq!(mode(&split), AggregateMode::Final);
        assert_eq!(mode(split.children()[0]), AggregateMode::Partial);
        assert_eq!(split.schema(), plan.schema());
        // DISTINCT stays in one step.
        let distinct = PartialAggregates
            .optimize(single(true), &ConfigOptions::new())
            .expect("optimized");
        assert_eq!(mode(&distinct), AggregateMode::Single);
    }
}
