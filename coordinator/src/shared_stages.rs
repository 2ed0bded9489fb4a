//! One stage for a shuffle that two parts of a plan compute alike.
//!
//! DataFusion plans a CTE once per reference: TPC-H Q15's `revenue0` (the revenue of each
//! supplier in a quarter) is read twice — joined with the suppliers and for its maximum — so
//! its plan holds two identical scans of lineitem, each aggregated and shuffled by supplier.
//! Before the plan is cut into stages, every hash shuffle whose whole input (its encoded plan,
//! scanned files included) repeats one seen before is replaced by that one; the stage cutter
//! (`crate::stages`) then makes it one stage with a reader per place that reads it, and the
//! scheduler starts it once per run of the query. Its producers keep a copy of each bucket
//! per reader (`floe_engine::shuffle::Output`), since one reader may read only once the other
//! has read everything (Q15's join on the coordinator reads the maximum's side to its end
//! before the other): so only a shuffle whose output is estimated small is shared, and what
//! the copies hold is reserved from the query's memory. No runtime filter is placed under a
//! shared shuffle: its output must be whole for every reader.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

/// The most output (estimated bytes) a shuffle is shared with: its copies wait in memory for
/// the reader that reads last.
const MAX_SHARED_BYTES: usize = 64 << 20;

/// Rows taken for the size of a shuffle whose estimate has rows but no bytes.
const BYTES_PER_ROW_GUESS: usize = 64;

/// The identity of a node as the cutter sees it (its `Arc`'s address).
pub fn node_key(plan: &Arc<dyn ExecutionPlan>) -> usize {
    Arc::as_ptr(plan).cast::<()>() as usize
}

/// `plan` with every hash shuffle that repeats an earlier one replaced by that one (the same
/// `Arc`), and the keys ([`node_key`]) of those read more than once.
pub fn share_repeated_shuffles(
    plan: Arc<dyn ExecutionPlan>,
) -> Result<(Arc<dyn ExecutionPlan>, HashSet<usize>)> {
    let mut candidates = 0;
    plan.apply(|node| {
        if is_small_hash_shuffle(node) {
            candidates += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if candidates < 2 {
        return Ok((plan, HashSet::new()));
    }
    let mut seen: HashMap<Vec<u8>, Arc<dyn ExecutionPlan>> = HashMap::new();
    let mut shared = HashSet::new();
    let plan = plan
        .transform_down(|node| {
            if !is_small_hash_shuffle(&node) {
                return Ok(Transformed::no(node));
            }
            // A plan the codec cannot send is not run on executors anyway.
            let Ok(bytes) = floe_engine::codec::encode_plan(Arc::clone(&node)) else {
                return Ok(Transformed::no(node));
            };
            match seen.get(&bytes) {
                Some(first) => {
                    shared.insert(node_key(first));
                    Ok(Transformed::new(
                        Arc::clone(first),
                        true,
                        TreeNodeRecursion::Jump,
                    ))
                }
                None => {
                    seen.insert(bytes, Arc::clone(&node));
                    Ok(Transformed::no(node))
                }
            }
        })?
        .data;
    Ok((plan, shared))
}

/// A hash shuffle whose output is estimated under [`MAX_SHARED_BYTES`].
fn is_small_hash_shuffle(node: &Arc<dyn ExecutionPlan>) -> bool {
    let Some(repartition) = node.as_any().downcast_ref::<RepartitionExec>() else {
        return false;
    };
    if !matches!(repartition.partitioning(), Partitioning::Hash(..)) || repartition.preserve_order()
    {
        return false;
    }
    let Ok(stats) = node.partition_statistics(None) else {
        return false;
    };
    let rows = stats.num_rows.get_value().copied();
    let per_row = match (stats.total_byte_size.get_value(), rows) {
        (Some(&bytes), Some(rows)) if rows > 0 => bytes.div_ceil(rows),
        _ => BYTES_PER_ROW_GUESS,
    };
    let rows = match (rows, grouped_rows_bound(repartition.input())) {
        (Some(rows), Some(bound)) => rows.min(bound),
        (rows, bound) => match rows.or(bound) {
            Some(rows) => rows,
            None => return false,
        },
    };
    rows.saturating_mul(per_row) <= MAX_SHARED_BYTES
}

/// The most rows a partial aggregation on columns sends: one per group in each of its
/// partitions, the groups at most the product of the group columns' values (an exact distinct
/// count, or the width of a whole-number range: an estimate would be no bound). DataFusion
/// estimates an aggregation's output at its input's rows: TPC-H Q15's revenue per supplier
/// over a quarter of SF10's lineitem, 2.2 M rows, where the 100,000 suppliers bound it.
fn grouped_rows_bound(input: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    let aggregate = input.as_any().downcast_ref::<AggregateExec>()?;
    if *aggregate.mode() != AggregateMode::Partial || !aggregate.group_expr().is_single() {
        return None;
    }
    let columns = aggregate
        .input()
        .partition_statistics(None)
        .ok()?
        .column_statistics;
    let mut groups = 1.0f64;
    for (expr, _) in aggregate.group_expr().expr() {
        let column = expr.as_any().downcast_ref::<Column>()?;
        let stats = columns.get(column.index())?;
        groups *= match stats.distinct_count {
            Precision::Exact(n) => n as f64,
            _ => crate::filter_estimates::whole_number_values(stats)?,
        };
    }
    let partitions = aggregate
        .properties()
        .output_partitioning()
        .partition_count();
    let bound = groups * partitions.max(1) as f64;
    (bound < usize::MAX as f64).then_some(bound as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::{ColumnStatistics, ScalarValue, Statistics};
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::aggregates::PhysicalGroupBy;
    use datafusion::physical_plan::test::exec::StatisticsExec;

    /// `rows` rows (estimated) of an Int64 `k` from 1 to `max` and an Int64 `v`.
    fn rows(rows: usize, max: i64) -> Arc<dyn ExecutionPlan> {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]);
        let statistics = Statistics {
            num_rows: Precision::Inexact(rows),
            total_byte_size: Precision::Inexact(rows * 16),
            column_statistics: vec![
                ColumnStatistics {
                    min_value: Precision::Inexact(ScalarValue::Int64(Some(1))),
                    max_value: Precision::Inexact(ScalarValue::Int64(Some(max))),
                    ..ColumnStatistics::new_unknown()
                },
                ColumnStatistics::new_unknown(),
            ],
        };
        Arc::new(StatisticsExec::new(statistics, schema))
    }

    /// `input` shuffled on its first column.
    fn shuffled(input: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let key = col(input.schema().field(0).name(), &input.schema()).expect("a column");
        Arc::new(
            RepartitionExec::try_new(input, Partitioning::Hash(vec![key], 2))
                .expect("a valid test plan"),
        )
    }

    /// The groups of `input` by `k`, partially aggregated.
    fn grouped(input: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let schema = input.schema();
        let by = PhysicalGroupBy::new_single(vec![(
            col("k", &schema).expect("a column"),
            "k".to_string(),
        )]);
        Arc::new(
            AggregateExec::try_new(AggregateMode::Partial, by, vec![], vec![], input, schema)
                .expect("a valid test plan"),
        )
    }

    #[test]
    fn a_shuffled_aggregation_is_as_small_as_its_groups_allow() {
        // 10 M rows: DataFusion estimates the aggregation at its input's 160 MB, over the
        // limit; grouped by a key of 100,000 values it sends at most one row per key and
        // partition.
        assert!(!is_small_hash_shuffle(&shuffled(rows(10_000_000, 100_000))));
        assert!(is_small_hash_shuffle(&shuffled(grouped(rows(
            10_000_000, 100_000
        )))));
        // A key of a billion values bounds nothing.
        assert!(!is_small_hash_shuffle(&shuffled(grouped(rows(
            10_000_000,
            1_000_000_000
        )))));
        // Few rows are small whatever their key.
        assert!(is_small_hash_shuffle(&shuffled(grouped(rows(
            1_000,
            1_000_000_000
        )))));
    }
}
