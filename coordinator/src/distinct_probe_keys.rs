//! A semi or anti join asks of each probe row only whether its key is there: where its probe
//! side shuffles the keys alone, each producer passes each key once, so that a key shuffles once
//! per producer partition instead of once per row (TPC-H Q22's orders: 750 K customer keys
//! per task, of which 100 K differ; Q04's lineitems: an order's lines share its key).
//!
//! ```text
//! HashJoinExec Partitioned LeftSemi|LeftAnti      HashJoinExec Partitioned LeftSemi|LeftAnti
//!   build side                                      build side
//!   RepartitionExec Hash(keys)              →       RepartitionExec Hash(keys)
//!     input (its columns: the join keys)              DistinctKeysExec range=[min, max]
//!                                                       input
//! ```
//!
//! Only where the statistics show that keys repeat — one integer key whose range of values is at
//! most a quarter of the rows (o_custkey's 150 K values under 1.5 M orders; not l_orderkey's
//! 6 M values under 6 M lineitems) — and where the join has no filter (one could test the probe
//! row's other columns, but there are none) and is not NULL-aware. The producers keep a bit per
//! value of the range (`floe_engine::distinct_keys`; a key outside the statistics' bounds passes
//! every time, so they steer only the saving); a range wider than that bitmap allows is grouped
//! by a partial aggregation instead. No final step is needed: a key that two producers both
//! send is found twice, which a semi or anti join does not count.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::{JoinType, Result, ScalarValue};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use floe_engine::distinct_keys::{self, DistinctKeysExec};
use floe_proto::DistinctKeysNode;

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub struct DistinctProbeKeys;

impl PhysicalOptimizerRule for DistinctProbeKeys {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::rewrite::top_down(plan, rewritten)
    }

    fn name(&self) -> &str {
        "floe_distinct_probe_keys"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The bounds of `input`'s one column, if its statistics show it repeating: an integer whose
/// range of values is at most a quarter of the rows. Statistics that cannot be had say nothing:
/// the plan stays.
fn repeating_range(input: &Arc<dyn ExecutionPlan>) -> Option<(i128, i128)> {
    let statistics = input.partition_statistics(None).ok()?;
    let [column] = statistics.column_statistics.as_slice() else {
        return None;
    };
    let rows = *statistics.num_rows.get_value()? as i128;
    let min = column.min_value.get_value().and_then(as_i128)?;
    let max = column.max_value.get_value().and_then(as_i128)?;
    let values = max - min + 1;
    (values > 0 && values.saturating_mul(4) <= rows).then_some((min, max))
}

/// An integer scalar's value.
fn as_i128(value: &ScalarValue) -> Option<i128> {
    match value {
        ScalarValue::Int8(v) => v.map(i128::from),
        ScalarValue::Int16(v) => v.map(i128::from),
        ScalarValue::Int32(v) => v.map(i128::from),
        ScalarValue::Int64(v) => v.map(i128::from),
        ScalarValue::UInt8(v) => v.map(i128::from),
        ScalarValue::UInt16(v) => v.map(i128::from),
        ScalarValue::UInt32(v) => v.map(i128::from),
        ScalarValue::UInt64(v) => v.map(i128::from),
        _ => None,
    }
}

/// `node` with its probe side's keys grouped before their shuffle, if it is such a join.
fn rewritten(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(join) = node.as_any().downcast_ref::<HashJoinExec>() else {
        return Ok(None);
    };
    if *join.partition_mode() != PartitionMode::Partitioned
        || !matches!(join.join_type(), JoinType::LeftSemi | JoinType::LeftAnti)
        || join.filter().is_some()
        || join.null_aware
    {
        return Ok(None);
    }
    let probe = join.right();
    let Some(shuffle) = probe.as_any().downcast_ref::<RepartitionExec>() else {
        return Ok(None);
    };
    if !matches!(shuffle.partitioning(), Partitioning::Hash(..)) || shuffle.preserve_order() {
        return Ok(None);
    }
    let input = shuffle.input();
    if input.as_any().is::<AggregateExec>() || input.as_any().is::<DistinctKeysExec>() {
        return Ok(None);
    }
    let schema = input.schema();
    let columns = schema.fields().len();
    let mut is_key = vec![false; columns];
    for (_, right) in join.on() {
        match right.as_any().downcast_ref::<Column>() {
            Some(c) if c.index() < columns => is_key[c.index()] = true,
            _ => return Ok(None),
        }
    }
    if is_key.contains(&false) {
        return Ok(None);
    }
    let Some((min, max)) = repeating_range(input) else {
        return Ok(None);
    };
    let first_keys: Arc<dyn ExecutionPlan> = match bitmap_range(min, max) {
        Some(node) => Arc::new(DistinctKeysExec::try_new(Arc::clone(input), node)?),
        None => match grouped(input)? {
            Some(grouped) => grouped,
            None => return Ok(None),
        },
    };
    let probe = Arc::clone(probe).with_new_children(vec![first_keys])?;
    Ok(Some(
        Arc::clone(node).with_new_children(vec![Arc::clone(join.left()), probe])?,
    ))
}

/// `[min, max]` as a [`DistinctKeysExec`]'s range, if it is one a bitmap is kept for.
fn bitmap_range(min: i128, max: i128) -> Option<DistinctKeysNode> {
    let low = i64::try_from(min).ok()?;
    let high = i64::try_from(max).ok()?;
    (max - min < i128::from(distinct_keys::MAX_RANGE)).then_some(DistinctKeysNode { low, high })
}

/// `input` (its columns: the keys) grouped by all its columns in a partial aggregation, if that
/// keeps its columns as they are.
fn grouped(input: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let schema = input.schema();
    let columns = schema.fields().len();
    let keys = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>,
                f.name().clone(),
            )
        })
        .collect();
    let grouped = AggregateExec::try_new(
        AggregateMode::Partial,
        PhysicalGroupBy::new_single(keys),
        vec![],
        vec![],
        Arc::clone(input),
        Arc::clone(&schema),
    )?;
    // The same columns, of the same types, in the same order: the join reads them as before.
    let same = grouped.schema().fields().len() == columns
        && grouped
            .schema()
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(g, f)| g.name() == f.name() && g.data_type() == f.data_type());
    Ok(same.then(|| Arc::new(grouped) as Arc<dyn ExecutionPlan>))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::stats::Precision;
    use datafusion::common::{ColumnStatistics, NullEquality, Statistics};
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::test::exec::StatisticsExec;

    /// One Int64 column `name` of `rows` rows with values from 1 to `max`, hashed on it.
    fn shuffled(name: &str, rows: usize, max: i64) -> Arc<dyn ExecutionPlan> {
        let schema = Schema::new(vec![Field::new(name, DataType::Int64, true)]);
        let statistics = Statistics {
            num_rows: Precision::Inexact(rows),
            total_byte_size: Precision::Absent,
            column_statistics: vec![ColumnStatistics {
                min_value: Precision::Inexact(ScalarValue::Int64(Some(1))),
                max_value: Precision::Inexact(ScalarValue::Int64(Some(max))),
                ..ColumnStatistics::new_unknown()
            }],
        };
        let leaf = Arc::new(StatisticsExec::new(statistics, schema.clone()));
        let key = col(name, &Arc::new(schema)).expect("a column");
        Arc::new(
            RepartitionExec::try_new(leaf, Partitioning::Hash(vec![key], 2))
                .expect("a valid test plan"),
        )
    }

    fn semi(probe: Arc<dyn ExecutionPlan>, join_type: JoinType) -> Arc<dyn ExecutionPlan> {
        let build = shuffled("c_custkey", 40_000, 150_000);
        let on = vec![(
            col("c_custkey", &build.schema()).expect("a left key"),
            col("o_custkey", &probe.schema()).expect("a right key"),
        )];
        Arc::new(
            HashJoinExec::try_new(
                build,
                probe,
                on,
                None,
                &join_type,
                None,
                PartitionMode::Partitioned,
                NullEquality::NullEqualsNothing,
                false,
            )
            .expect("a valid test plan"),
        )
    }

    /// The node between the probe side's shuffle and its input.
    fn under_the_shuffle(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let probe = &plan.children()[1];
        Arc::clone(probe.children()[0])
    }

    #[test]
    fn repeating_probe_keys_of_a_semi_or_anti_join_pass_once_before_their_shuffle() {
        // TPC-H Q22: 1.5 M orders over 150 K customer keys.
        for join_type in [JoinType::LeftAnti, JoinType::LeftSemi] {
            let plan = semi(shuffled("o_custkey", 1_500_000, 150_000), join_type);
            let once = rewritten(&plan).expect("planned").expect("rewritten");
            let first = under_the_shuffle(&once);
            let first = first
                .as_any()
                .downcast_ref::<DistinctKeysExec>()
                .unwrap_or_else(|| panic!("{once:?}"));
            assert_eq!(
                first.node(),
                &DistinctKeysNode {
                    low: 1,
                    high: 150_000
                }
            );
            assert_eq!(once.schema(), plan.schema());
            // Once is enough.
            assert!(rewritten(&once).expect("planned").is_none());
        }
        // Keys that need not repeat (Q04's 6 M lineitems over 6 M order keys): as it was.
        let unique = semi(
            shuffled("o_custkey", 6_000_000, 6_000_000),
            JoinType::LeftSemi,
        );
        assert!(rewritten(&unique).expect("planned").is_none());
        // An inner join keeps every probe row: as it was.
        let inner = semi(shuffled("o_custkey", 1_500_000, 150_000), JoinType::Inner);
        assert!(rewritten(&inner).expect("planned").is_none());
    }

    #[test]
    fn keys_over_a_range_too_wide_for_a_bitmap_are_grouped_instead() {
        let max = distinct_keys::MAX_RANGE as i64 * 2;
        let plan = semi(
            shuffled("o_custkey", 4 * max as usize, max),
            JoinType::LeftSemi,
        );
        let rewritten = rewritten(&plan).expect("planned").expect("rewritten");
        assert!(under_the_shuffle(&rewritten).as_any().is::<AggregateExec>());
        assert_eq!(rewritten.schema(), plan.schema());
    }
}
