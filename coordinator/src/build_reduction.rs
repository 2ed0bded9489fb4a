//! A large broadcast build side reduced to the rows whose key can match, by a small filtered
//! build side that already constrains the same key under its probe side.
//!
//! ```text
//! HashJoinExec CollectLeft on (ps_partkey = l_partkey)    HashJoinExec CollectLeft …
//!   partsupp (800 K rows)                          →        HashJoinExec CollectLeft RightSemi
//!   …                                                          on (p_partkey = ps_partkey)
//!     HashJoinExec CollectLeft on (p_partkey = l_partkey)       part WHERE p_name LIKE …
//!       part WHERE p_name LIKE '%green%'                         partsupp
//!       lineitem                                               …
//! ```
//!
//! Every row out of the outer join has `ps_partkey = l_partkey`, and every `l_partkey` that
//! reaches it passed the inner join with the filtered parts: a partsupp row whose key is not
//! among those parts' keys can never match. On one machine this costs nothing to leave: the
//! build side is hashed once, for all threads. On a cluster each of the join's tasks receives the
//! whole build side and hashes its own copy: TPC-H Q09's 800 K partsupp rows crossed the network
//! once per task (25 MB each) to be hashed twice, where the 10,664 green parts keep 43 K of them.
//! The small side is read a second time for this (a scan and a filter, in a stage of its own
//! running beside the others), and the reduced side's producers wait for it.
//!
//! Only where it pays by the estimates: the build side has at least [`MIN_BUILD_ROWS`] rows and
//! the reducing side at most a quarter as many, and that side is selective — it holds a filter
//! estimated to keep at most half of what it reads — so that its keys are not the whole key
//! range (Q09's supplier, all 10,000 of them, reduces nothing). The reducing side runs twice,
//! so it must give the same rows each time: scans, filters, projections and exchanges only — no
//! join (a copy would share its dynamic filters), no LIMIT, no volatile function. The
//! joins reduced are those where a build row that matches no probe row adds nothing to the
//! output (inner, right, right semi, right anti and right mark joins).

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, NullEquality, Result};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::ExecutionPlan;

/// The fewest rows (estimated) a broadcast build side must have to be worth reducing.
pub const MIN_BUILD_ROWS: usize = 100_000;

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub struct ReducedBuildSides;

impl PhysicalOptimizerRule for ReducedBuildSides {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::rewrite::top_down(plan, rewritten)
    }

    fn name(&self) -> &str {
        "floe_reduced_build_sides"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` with its build side reduced, if it is such a join and a reducing side is found.
fn rewritten(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(join) = node.as_any().downcast_ref::<HashJoinExec>() else {
        return Ok(None);
    };
    if *join.partition_mode() != PartitionMode::CollectLeft
        || !crate::broadcast::probe_driven(join.join_type())
        || join.null_aware
    {
        return Ok(None);
    }
    let build = join.left();
    // The rows to reduce: under the coalesce that collects them, if there is one.
    let (coalesce, rows) = match build.as_any().downcast_ref::<CoalescePartitionsExec>() {
        Some(c) if c.fetch().is_none() => (true, Arc::clone(c.input())),
        Some(_) => return Ok(None),
        None => (false, Arc::clone(build)),
    };
    let Some(build_rows) = estimated_rows(&rows) else {
        return Ok(None);
    };
    if build_rows < MIN_BUILD_ROWS {
        return Ok(None);
    }
    for (build_key, probe_key) in join.on() {
        let (Some(build_key), Some(probe_key)) = (column_of(build_key), column_of(probe_key))
        else {
            continue;
        };
        let Some((reducer, reducer_key)) = reducer(join.right(), probe_key.index()) else {
            continue;
        };
        if !worth_it(&reducer, build_rows) {
            continue;
        }
        let on = vec![(
            Arc::new(Column::new(
                reducer.schema().field(reducer_key).name(),
                reducer_key,
            )) as Arc<dyn PhysicalExpr>,
            Arc::new(build_key.clone()) as Arc<dyn PhysicalExpr>,
        )];
        let semi = Arc::new(HashJoinExec::try_new(
            reducer,
            rows,
            on,
            None,
            &JoinType::RightSemi,
            None,
            PartitionMode::CollectLeft,
            NullEquality::NullEqualsNothing,
            false,
        )?) as Arc<dyn ExecutionPlan>;
        let reduced = if coalesce {
            Arc::new(CoalescePartitionsExec::new(semi)) as Arc<dyn ExecutionPlan>
        } else {
            semi
        };
        let children = vec![reduced, Arc::clone(join.right())];
        return Ok(Some(Arc::clone(node).with_new_children(children)?));
    }
    Ok(None)
}

fn column_of(expr: &Arc<dyn PhysicalExpr>) -> Option<&Column> {
    expr.as_any().downcast_ref::<Column>()
}

fn estimated_rows(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    plan.partition_statistics(None)
        .ok()
        .and_then(|s| s.num_rows.get_value().copied())
}

/// The collected build side of an inner (or right semi) join under `plan` whose probe key is
/// `plan`'s output column `key`, and its key column: every row of `plan` has its `key` among
/// that side's keys. Followed through projections, filters and repartitions, and into the
/// probe side of joins (where the key is not one of theirs).
fn reducer(plan: &Arc<dyn ExecutionPlan>, key: usize) -> Option<(Arc<dyn ExecutionPlan>, usize)> {
    let any = plan.as_any();
    if let Some(projection) = any.downcast_ref::<ProjectionExec>() {
        let inner = column_of(&projection.expr().get(key)?.expr)?.index();
        return reducer(projection.input(), inner);
    }
    if let Some(filter) = any.downcast_ref::<FilterExec>() {
        let inner = match filter.projection() {
            Some(p) => *p.get(key)?,
            None => key,
        };
        return reducer(filter.input(), inner);
    }
    if let Some(coop) = any.downcast_ref::<CooperativeExec>() {
        return reducer(coop.input(), key);
    }
    if let Some(repartition) = any.downcast_ref::<RepartitionExec>() {
        return reducer(repartition.input(), key);
    }
    let join = any.downcast_ref::<HashJoinExec>()?;
    let left_len = join.left().schema().fields().len();
    // The probe-side column `key` is, if it is one.
    let probe_column = match join.join_type() {
        JoinType::Inner => {
            let joined = match &join.projection {
                Some(p) => *p.get(key)?,
                None => key,
            };
            joined.checked_sub(left_len)?
        }
        JoinType::RightSemi => match &join.projection {
            Some(p) => *p.get(key)?,
            None => key,
        },
        _ => return None,
    };
    let paired = join
        .on()
        .iter()
        .find(|(_, r)| column_of(r).map(Column::index) == Some(probe_column))
        .map(|(l, _)| column_of(l).map(Column::index));
    match paired {
        Some(Some(build_key))
            if *join.partition_mode() == PartitionMode::CollectLeft
                && !join.null_aware
                && join.null_equality() == NullEquality::NullEqualsNothing
                && !has_fetch(join.left()) =>
        {
            Some((Arc::clone(join.left()), build_key))
        }
        Some(_) => None,
        None => reducer(join.right(), probe_column),
    }
}

/// Whether `plan` is a coalesce with a fetch (a LIMIT): its rows are not all the keys.
fn has_fetch(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.as_any()
        .downcast_ref::<CoalescePartitionsExec>()
        .is_some_and(|c| c.fetch().is_some())
}

/// Whether `reducer` is small beside the `build_rows` it reduces, selective (a filter in it
/// keeps at most half of what it reads, by the estimates) and repeatable (see [`repeatable`]).
fn worth_it(reducer: &Arc<dyn ExecutionPlan>, build_rows: usize) -> bool {
    let Some(rows) = estimated_rows(reducer) else {
        return false;
    };
    if rows.saturating_mul(4) > build_rows || !repeatable(reducer) {
        return false;
    }
    let mut selective = false;
    let _ = reducer.apply(|node| {
        if let Some(filter) = node.as_any().downcast_ref::<FilterExec>() {
            if let (Some(kept), Some(read)) = (estimated_rows(node), estimated_rows(filter.input()))
            {
                selective |= kept.saturating_mul(2) <= read;
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    selective
}

/// Whether `plan` gives the same rows each time it runs: the reducing side runs twice (once
/// for its own join, once for the reduction), and a build row is dropped only if the second
/// run's keys say it cannot match the first's. So: scans (a leaf reads its table's snapshot),
/// filters, projections and exchanges only — no join (a copy would share its dynamic filters),
/// no LIMIT anywhere (which rows it keeps may differ between runs), no volatile function
/// (`random()`).
fn repeatable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut repeatable = true;
    let _ = plan.apply(|node| {
        let any = node.as_any();
        let expressions: Vec<Arc<dyn PhysicalExpr>> =
            if let Some(filter) = any.downcast_ref::<FilterExec>() {
                vec![Arc::clone(filter.predicate())]
            } else if let Some(projection) = any.downcast_ref::<ProjectionExec>() {
                projection
                    .expr()
                    .iter()
                    .map(|e| Arc::clone(&e.expr))
                    .collect()
            } else {
                Vec::new()
            };
        let kind_ok = node.children().is_empty()
            || any.is::<FilterExec>()
            || any.is::<ProjectionExec>()
            || any.is::<CoalescePartitionsExec>()
            || any.is::<RepartitionExec>()
            || any.is::<CooperativeExec>();
        if !kind_ok || node.fetch().is_some() || expressions.iter().any(is_volatile) {
            repeatable = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    repeatable
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::stats::Precision;
    use datafusion::common::{ScalarValue, Statistics};
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{col, lit, BinaryExpr};
    use datafusion::physical_plan::test::exec::StatisticsExec;

    /// A table of `rows` rows of Int64 columns `names`, each of values 1 to 50.
    fn table(names: &[&str], rows: usize) -> Arc<dyn ExecutionPlan> {
        let schema = Schema::new(
            names
                .iter()
                .map(|n| Field::new(*n, DataType::Int64, true))
                .collect::<Vec<_>>(),
        );
        let mut statistics = Statistics::new_unknown(&schema);
        statistics.num_rows = Precision::Exact(rows);
        for column in &mut statistics.column_statistics {
            column.min_value = Precision::Exact(ScalarValue::Int64(Some(1)));
            column.max_value = Precision::Exact(ScalarValue::Int64(Some(50)));
        }
        Arc::new(StatisticsExec::new(statistics, schema))
    }

    /// `input` where `column = 5` (kept: one row in 50, by the estimates).
    fn filtered(input: Arc<dyn ExecutionPlan>, column: &str) -> Arc<dyn ExecutionPlan> {
        let predicate = Arc::new(BinaryExpr::new(
            col(column, &input.schema()).expect("a column"),
            Operator::Eq,
            lit(ScalarValue::Int64(Some(5))),
        ));
        Arc::new(FilterExec::try_new(predicate, input).expect("a valid filter"))
    }

    fn broadcast_join(
        build: Arc<dyn ExecutionPlan>,
        probe: Arc<dyn ExecutionPlan>,
        keys: &[(&str, &str)],
    ) -> Arc<dyn ExecutionPlan> {
        let on = keys
            .iter()
            .map(|(l, r)| {
                (
                    col(l, &build.schema()).expect("a build key"),
                    col(r, &probe.schema()).expect("a probe key"),
                )
            })
            .collect();
        Arc::new(
            HashJoinExec::try_new(
                build,
                probe,
                on,
                None,
                &JoinType::Inner,
                None,
                PartitionMode::CollectLeft,
                NullEquality::NullEqualsNothing,
                false,
            )
            .expect("a valid test plan"),
        )
    }

    /// TPC-H Q09's shape: partsupp (`partsupp_rows`) broadcast to lineitem joined with `part`.
    fn q09(part: Arc<dyn ExecutionPlan>, partsupp_rows: usize) -> Arc<dyn ExecutionPlan> {
        let lines = broadcast_join(
            part,
            table(&["l_partkey", "l_suppkey", "l_quantity"], 6_000_000),
            &[("p_partkey", "l_partkey")],
        );
        broadcast_join(
            table(&["ps_partkey", "ps_suppkey"], partsupp_rows),
            lines,
            &[("ps_suppkey", "l_suppkey"), ("ps_partkey", "l_partkey")],
        )
    }

    fn optimized(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        ReducedBuildSides
            .optimize(plan, &ConfigOptions::new())
            .expect("optimized")
    }

    #[test]
    fn a_large_build_side_is_semi_joined_with_the_filtered_side_that_constrains_its_key() {
        let part = filtered(table(&["p_partkey", "p_size"], 200_000), "p_size");
        let plan = optimized(q09(Arc::clone(&part), 800_000));
        let build = plan.children()[0];
        let semi = build
            .as_any()
            .downcast_ref::<HashJoinExec>()
            .expect("the build side reduced");
        assert_eq!(*semi.join_type(), JoinType::RightSemi);
        assert_eq!(*semi.partition_mode(), PartitionMode::CollectLeft);
        assert!(Arc::ptr_eq(semi.left(), &part), "by the filtered parts");
        assert_eq!(semi.right().schema().field(0).name(), "ps_partkey");
        let on: Vec<(usize, usize)> = semi
            .on()
            .iter()
            .map(|(l, r)| (column_index(l), column_index(r)))
            .collect();
        assert_eq!(on, [(0, 0)], "p_partkey = ps_partkey");
        // The join's output is unchanged.
        assert_eq!(plan.schema(), q09(part, 800_000).schema());
    }

    fn column_index(expr: &Arc<dyn PhysicalExpr>) -> usize {
        column_of(expr).expect("a column").index()
    }

    #[test]
    fn a_side_that_may_give_other_rows_when_run_again_reduces_nothing() {
        let is_reduced = |plan: &Arc<dyn ExecutionPlan>| {
            plan.children()[0]
                .as_any()
                .downcast_ref::<HashJoinExec>()
                .is_some()
        };
        let parts = || filtered(table(&["p_partkey", "p_size"], 200_000), "p_size");
        // A LIMIT keeps some rows, maybe not the same ones twice.
        let limited: Arc<dyn ExecutionPlan> = Arc::new(
            datafusion::physical_plan::limit::LocalLimitExec::new(parts(), 30_000),
        );
        assert!(!is_reduced(&optimized(q09(limited, 800_000))));
        // `p_size = 5 AND random() < 0.5`: a volatile filter keeps other rows each run.
        let input = table(&["p_partkey", "p_size"], 200_000);
        let random = Arc::new(
            datafusion::physical_expr::ScalarFunctionExpr::try_new(
                datafusion::functions::math::random(),
                vec![],
                &input.schema(),
                Arc::new(ConfigOptions::new()),
            )
            .expect("random()"),
        );
        let coin = Arc::new(BinaryExpr::new(
            random,
            Operator::Lt,
            lit(ScalarValue::Float64(Some(0.5))),
        ));
        let sized = Arc::new(BinaryExpr::new(
            col("p_size", &input.schema()).expect("a column"),
            Operator::Eq,
            lit(ScalarValue::Int64(Some(5))),
        ));
        let predicate = Arc::new(BinaryExpr::new(sized, Operator::And, coin));
        let volatile: Arc<dyn ExecutionPlan> =
            Arc::new(FilterExec::try_new(predicate, input).expect("a valid filter"));
        assert!(!is_reduced(&optimized(q09(volatile, 800_000))));
        // The same parts without either are used.
        assert!(is_reduced(&optimized(q09(parts(), 800_000))));
    }

    #[test]
    fn no_reduction_by_an_unfiltered_side_nor_of_a_small_build_side() {
        let is_reduced = |plan: &Arc<dyn ExecutionPlan>| {
            plan.children()[0]
                .as_any()
                .downcast_ref::<HashJoinExec>()
                .is_some()
        };
        // All parts: their keys are every key partsupp has.
        let all = optimized(q09(table(&["p_partkey", "p_size"], 200_000), 800_000));
        assert!(!is_reduced(&all));
        // A build side of 50,000 rows is hashed cheaply enough as it is.
        let part = filtered(table(&["p_partkey", "p_size"], 10_000), "p_size");
        let small = optimized(q09(part, 50_000));
        assert!(!is_reduced(&small));
        // The filtered parts (100,000 of 5 M) are not small beside a build side of 300,000.
        let part = filtered(table(&["p_partkey", "p_size"], 5_000_000), "p_size");
        let close = optimized(q09(part, 300_000));
        assert!(!is_reduced(&close));
    }
}
