//! An aggregation grouped by a column each of whose values one task reads — a table partitioned
//! by day, grouped by day: the seed question's distinct users per day, city and model, any
//! `GROUP BY dt` over a daily table — runs where its rows are read. The hash exchange DataFusion
//! put under it is taken out (on a cluster: a shuffle and a stage less), and its partial and
//! final steps, now next to each other, become one. So does the exchange under a write into a
//! table partitioned by that column (`CREATE TABLE … PARTITIONED BY (dt) AS SELECT … GROUP BY
//! dt, …`: the layer build), which clusters rows only so that each partition is one task's.
//!
//! A scan says which of its columns its tasks are keyed by (`IcebergScanNode.keyed_column`: its
//! files grouped by the value of an identity partition field, see
//! `floe_catalog::file_groups::keyed_by_identity_partition`). Whether a node's output is still
//! keyed is followed up the plan through filters, projections, the probe side of a broadcast
//! join (and an inner join's build key equal to the probe key) and aggregations grouped by the
//! column. A hash exchange goes when its input is keyed and everything that reads its output (up
//! to the next exchange or merge) needs only each group of columns that include the keyed one in
//! one partition: aggregations grouped by it, a write with an identity partition field on it,
//! nodes that merge partitions. A partitioned join, which needs both inputs hashed alike, and any
//! node not named here keep the partitioning DataFusion planned.
//!
//! ```text
//! AggregateExec FinalPartitioned gby=dt,…
//!   RepartitionExec Hash(dt,…)                →   AggregateExec SinglePartitioned gby=dt,…
//!     AggregateExec Partial gby=dt,…                  FilterExec …
//!       FilterExec …                                    IcebergScanExec tasks=N by dt
//!         IcebergScanExec tasks=N by dt
//! ```

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::{JoinSide, JoinType, Result};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::build_join_schema;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    with_new_children_if_necessary as with_children, Distribution, ExecutionPlan, Partitioning,
};
use floe_engine::partition_key::PartitionValueExpr;
use floe_engine::write::IcebergWriteExec;
use floe_engine::IcebergScanExec;

use crate::broadcast::probe_driven;

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub struct KeyedAggregates;

impl PhysicalOptimizerRule for KeyedAggregates {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The plan's own output is read whole (gathered): nothing is needed of it.
        Ok(rewrite(plan, &Need::nothing())?.0)
    }

    fn name(&self) -> &str {
        "floe_keyed_aggregates"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What the nodes above a node (up to the next exchange or merge) need of its partitioning.
#[derive(Clone, Debug, PartialEq)]
enum Need {
    /// That each tuple of values of each of these sets of its output columns be in one
    /// partition — met by a keyed column in every set; no set, nothing needed.
    Colocated(Vec<Vec<usize>>),
    /// The partitioning exactly as planned (a partitioned join hashes both sides alike).
    Exact,
}

impl Need {
    fn nothing() -> Self {
        Need::Colocated(vec![])
    }

    /// Whether rows keyed by column `keyed` meet it — and something is needed (an exchange
    /// that nothing reads by its keys is left as planned).
    fn met_by(&self, keyed: usize) -> bool {
        match self {
            Need::Colocated(sets) => !sets.is_empty() && sets.iter().all(|s| s.contains(&keyed)),
            Need::Exact => false,
        }
    }

    /// The need as the input of a node that passes partitions through sees it: `input_of`
    /// maps an output column to the input column it is (none: it cannot be keyed).
    fn through(&self, input_of: impl Fn(usize) -> Option<usize>) -> Self {
        match self {
            Need::Colocated(sets) => Need::Colocated(
                sets.iter()
                    .map(|s| s.iter().filter_map(|c| input_of(*c)).collect())
                    .collect(),
            ),
            Need::Exact => Need::Exact,
        }
    }

    /// This need and also `columns` colocated.
    fn and(mut self, columns: Vec<usize>) -> Self {
        if let Need::Colocated(sets) = &mut self {
            sets.push(columns);
        }
        self
    }
}

/// `plan` rewritten for what is needed of it, and the output column it is then keyed by.
fn rewrite(
    plan: Arc<dyn ExecutionPlan>,
    need: &Need,
) -> Result<(Arc<dyn ExecutionPlan>, Option<usize>)> {
    let any = plan.as_any();
    if let Some(scan) = any.downcast_ref::<IcebergScanExec>() {
        let keyed = scan.node().keyed_column.map(|c| c as usize);
        return Ok((plan, keyed));
    }
    if let Some(repartition) = any.downcast_ref::<RepartitionExec>() {
        // It makes its own partitioning: nothing is needed of its input.
        let (input, keyed) = rewrite(Arc::clone(repartition.input()), &Need::nothing())?;
        let hashes = matches!(repartition.partitioning(), Partitioning::Hash(..));
        if let Some(k) =
            keyed.filter(|k| hashes && !repartition.preserve_order() && need.met_by(*k))
        {
            return Ok((input, Some(k)));
        }
        return Ok((with_children(plan, vec![input])?, None));
    }
    if let Some(aggregate) = any.downcast_ref::<AggregateExec>() {
        return rewrite_aggregate(&plan, aggregate, need);
    }
    if any.is::<IcebergWriteExec>() {
        // A write wants each partition's rows in one task (fewer files), which rows keyed by
        // the column of one of its identity partition fields are.
        let identity: Vec<usize> = match plan.required_input_distribution().first() {
            Some(Distribution::HashPartitioned(keys)) => keys
                .iter()
                .filter_map(|k| k.as_any().downcast_ref::<PartitionValueExpr>())
                .filter_map(PartitionValueExpr::identity_column)
                .collect(),
            _ => vec![],
        };
        let input_need = if identity.is_empty() {
            Need::Exact
        } else {
            Need::Colocated(vec![identity])
        };
        let [input] = plan.children()[..] else {
            return Ok((plan, None));
        };
        let (input, _) = rewrite(Arc::clone(input), &input_need)?;
        return Ok((with_children(plan, vec![input])?, None));
    }
    if let Some(join) = any.downcast_ref::<HashJoinExec>() {
        if join.mode == PartitionMode::CollectLeft && probe_driven(&join.join_type) {
            return rewrite_broadcast_join(&plan, join, need);
        }
    }
    // Nodes whose output column i is input column `input_of(i)`, partition by partition.
    let passing: Option<Box<dyn Fn(usize) -> Option<usize>>> =
        if let Some(projection) = any.downcast_ref::<ProjectionExec>() {
            let columns: Vec<Option<usize>> = projection
                .expr()
                .iter()
                .map(|e| column_index(&e.expr))
                .collect();
            Some(Box::new(move |i| columns.get(i).copied().flatten()))
        } else if let Some(filter) = any.downcast_ref::<FilterExec>() {
            let projection = filter.projection().clone();
            Some(Box::new(move |i| match &projection {
                Some(p) => p.get(i).copied(),
                None => Some(i),
            }))
        } else if any.is::<CooperativeExec>()
            || any.is::<LocalLimitExec>()
            || any
                .downcast_ref::<SortExec>()
                .is_some_and(|s| s.preserve_partitioning())
        {
            Some(Box::new(Some))
        } else {
            None
        };
    if let Some(input_of) = passing {
        let [input] = plan.children()[..] else {
            return Ok((plan, None));
        };
        let (input, keyed) = rewrite(Arc::clone(input), &need.through(&input_of))?;
        let outputs = plan.schema().fields().len();
        let keyed = keyed.and_then(|k| (0..outputs).find(|i| input_of(*i) == Some(k)));
        return Ok((with_children(plan, vec![input])?, keyed));
    }
    // Nodes that merge their input's partitions need nothing of them; any other keeps its
    // input's partitioning as planned.
    let merges = any.is::<CoalescePartitionsExec>()
        || any.is::<SortPreservingMergeExec>()
        || any.is::<GlobalLimitExec>();
    let child_need = if merges { Need::nothing() } else { Need::Exact };
    let children = plan
        .children()
        .into_iter()
        .map(|c| rewrite(Arc::clone(c), &child_need).map(|(c, _)| c))
        .collect::<Result<Vec<_>>>()?;
    if children.is_empty() {
        return Ok((plan, None));
    }
    Ok((with_children(plan, children)?, None))
}

fn rewrite_aggregate(
    plan: &Arc<dyn ExecutionPlan>,
    aggregate: &AggregateExec,
    need: &Need,
) -> Result<(Arc<dyn ExecutionPlan>, Option<usize>)> {
    let groups: Option<Vec<usize>> = aggregate
        .group_expr()
        .is_single()
        .then(|| {
            aggregate
                .group_expr()
                .expr()
                .iter()
                .map(|(e, _)| column_index(e))
                .collect()
        })
        .flatten();
    let mode = *aggregate.mode();
    let per_partition = matches!(
        mode,
        AggregateMode::Partial | AggregateMode::FinalPartitioned | AggregateMode::SinglePartitioned
    );
    let input_need = match (&groups, per_partition) {
        // Over one partition (a merge below): nothing is needed of its input.
        (_, false) => Need::nothing(),
        (None, true) => Need::Exact,
        (Some(groups), true) => {
            let passed = need.through(|i| groups.get(i).copied());
            match mode {
                AggregateMode::Partial => passed,
                _ => passed.and(groups.clone()),
            }
        }
    };
    let (input, keyed) = rewrite(Arc::clone(aggregate.input()), &input_need)?;
    let keyed = match (&groups, per_partition, keyed) {
        (Some(groups), true, Some(k)) => groups.iter().position(|g| *g == k),
        _ => None,
    };
    // A final step straight over its partial step (their exchange taken out): one step.
    if mode == AggregateMode::FinalPartitioned && !Arc::ptr_eq(&input, aggregate.input()) {
        if let Some(single) = single_step(aggregate, &input)? {
            return Ok((single, keyed));
        }
    }
    Ok((with_children(Arc::clone(plan), vec![input])?, keyed))
}

/// The final aggregate `last` over its partial step `input` as one `SinglePartitioned` step,
/// when both are plain (no grouping sets, filters or limit) and it yields the same columns.
fn single_step(
    last: &AggregateExec,
    input: &Arc<dyn ExecutionPlan>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(partial) = input
        .as_any()
        .downcast_ref::<AggregateExec>()
        .filter(|a| *a.mode() == AggregateMode::Partial)
    else {
        return Ok(None);
    };
    let plain = |a: &AggregateExec| {
        a.group_expr().is_single()
            && a.filter_expr().iter().all(Option::is_none)
            && a.limit_options().is_none()
    };
    if !plain(last) || !plain(partial) {
        return Ok(None);
    }
    let single = AggregateExec::try_new(
        AggregateMode::SinglePartitioned,
        partial.group_expr().clone(),
        partial.aggr_expr().to_vec(),
        partial.filter_expr().to_vec(),
        Arc::clone(partial.input()),
        partial.input_schema(),
    )?;
    if single.schema() != last.schema() {
        return Ok(None);
    }
    Ok(Some(Arc::new(single)))
}

/// A join whose build side every partition reads whole: its output is partitioned as its probe
/// (right) side is.
fn rewrite_broadcast_join(
    plan: &Arc<dyn ExecutionPlan>,
    join: &HashJoinExec,
    need: &Need,
) -> Result<(Arc<dyn ExecutionPlan>, Option<usize>)> {
    let (_, columns) =
        build_join_schema(&join.left.schema(), &join.right.schema(), &join.join_type);
    let projection: Option<Vec<usize>> = join.projection.as_ref().map(|p| p.to_vec());
    // An inner join's build key equals the probe key it is paired with in every row it emits.
    let inner = join.join_type == JoinType::Inner;
    let pairs: Vec<(usize, usize)> = join
        .on
        .iter()
        .filter_map(|(l, r)| Some((column_index(l)?, column_index(r)?)))
        .collect();
    // The probe column output column i is (or equals), if any.
    let probe_column = move |i: usize| -> Option<usize> {
        let j = match &projection {
            Some(p) => *p.get(i)?,
            None => i,
        };
        let c = columns.get(j)?;
        match c.side {
            JoinSide::Right => Some(c.index),
            JoinSide::Left if inner => pairs.iter().find(|(l, _)| *l == c.index).map(|(_, r)| *r),
            _ => None,
        }
    };
    let (build, _) = rewrite(Arc::clone(&join.left), &Need::nothing())?;
    let (probe, keyed) = rewrite(Arc::clone(&join.right), &need.through(&probe_column))?;
    let outputs = plan.schema().fields().len();
    let keyed = keyed.and_then(|k| (0..outputs).find(|i| probe_column(*i) == Some(k)));
    Ok((with_children(Arc::clone(plan), vec![build, probe])?, keyed))
}

fn column_index(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    expr.as_any().downcast_ref::<Column>().map(Column::index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;
    use datafusion::common::NullEquality;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::aggregates::PhysicalGroupBy;
    use datafusion::physical_plan::displayable;
    use floe_proto::{DataFileTask, FileGroup, IcebergScanNode};
    use iceberg::spec::PrimitiveType;

    /// A scan of (day, city, user_id) as three tasks, keyed by `day` or not.
    fn scan(keyed: bool) -> Arc<dyn ExecutionPlan> {
        let group = |path: &str| FileGroup {
            files: vec![DataFileTask {
                path: path.into(),
                file_size_in_bytes: 100,
                ..Default::default()
            }],
        };
        crate::test_plans::iceberg_scan(
            "web.events",
            &[
                ("day", PrimitiveType::Date, DataType::Date32),
                ("city", PrimitiveType::String, DataType::Utf8),
                ("user_id", PrimitiveType::Long, DataType::Int64),
            ],
            IcebergScanNode {
                file_groups: vec![group("file:///a"), group("file:///b"), group("file:///c")],
                keyed_column: keyed.then_some(0),
                ..Default::default()
            },
        )
    }

    /// `count(*) GROUP BY columns` in DataFusion's two steps around a hash exchange.
    fn grouped(input: Arc<dyn ExecutionPlan>, columns: &[&str]) -> Arc<dyn ExecutionPlan> {
        let schema = input.schema();
        let groups = PhysicalGroupBy::new_single(
            columns
                .iter()
                .map(|c| (col(c, &schema).expect("column"), c.to_string()))
                .collect(),
        );
        let count = Arc::new(
            AggregateExprBuilder::new(count_udaf(), vec![col(columns[0], &schema).expect("c")])
                .schema(Arc::clone(&schema))
                .alias("n")
                .build()
                .expect("count"),
        );
        let partial = Arc::new(
            AggregateExec::try_new(
                AggregateMode::Partial,
                groups.clone(),
                vec![Arc::clone(&count)],
                vec![None],
                input,
                Arc::clone(&schema),
            )
            .expect("partial"),
        );
        let keys = (0..columns.len())
            .map(|i| Arc::new(Column::new(columns[i], i)) as Arc<dyn PhysicalExpr>)
            .collect();
        let exchange = Arc::new(
            RepartitionExec::try_new(partial, Partitioning::Hash(keys, 4)).expect("exchange"),
        );
        Arc::new(
            AggregateExec::try_new(
                AggregateMode::FinalPartitioned,
                groups.as_final(),
                vec![count],
                vec![None],
                exchange,
                schema,
            )
            .expect("final"),
        )
    }

    fn text(plan: &Arc<dyn ExecutionPlan>) -> String {
        displayable(plan.as_ref()).indent(false).to_string()
    }

    fn rewritten(plan: Arc<dyn ExecutionPlan>) -> String {
        let plan = KeyedAggregates
            .optimize(plan, &ConfigOptions::default())
            .expect("rewritten");
        text(&plan)
    }

    #[test]
    fn grouped_by_the_keyed_column_the_aggregation_runs_in_one_step_without_an_exchange() {
        let plan = rewritten(grouped(scan(true), &["day", "city"]));
        assert!(!plan.contains("RepartitionExec"), "{plan}");
        assert!(
            plan.contains("mode=SinglePartitioned, gby=[day@0 as day, city@1 as city]"),
            "{plan}"
        );
        // Not keyed, or not grouped by the keyed column: as DataFusion planned it.
        for plan in [
            grouped(scan(false), &["day"]),
            grouped(scan(true), &["city"]),
        ] {
            assert_eq!(rewritten(Arc::clone(&plan)), text(&plan));
        }
    }

    #[test]
    fn a_partitioned_join_keeps_its_exchanges() {
        // Both sides keyed by day and hashed by day for the join: the join needs both hashed
        // alike (a task's days on one side are not its days on the other), so nothing goes.
        let side = |plan: Arc<dyn ExecutionPlan>| -> Arc<dyn ExecutionPlan> {
            let key = col("day", &plan.schema()).expect("day");
            Arc::new(RepartitionExec::try_new(plan, Partitioning::Hash(vec![key], 4)).expect("x"))
        };
        let (left, right) = (side(scan(true)), side(scan(true)));
        let on = vec![(
            col("day", &left.schema()).expect("l"),
            col("day", &right.schema()).expect("r"),
        )];
        let join: Arc<dyn ExecutionPlan> = Arc::new(
            HashJoinExec::try_new(
                left,
                right,
                on,
                None,
                &JoinType::Inner,
                Some(vec![0, 1]),
                PartitionMode::Partitioned,
                NullEquality::NullEqualsNothing,
                false,
            )
            .expect("join"),
        );
        let plan = grouped(join, &["day"]);
        let after = rewritten(Arc::clone(&plan));
        assert_eq!(after, text(&plan));
        assert_eq!(after.matches("RepartitionExec").count(), 3, "{after}");
    }

    #[test]
    fn an_outer_joins_build_key_is_not_keyed() {
        // A right join emits the build key NULL for unmatched probe rows, in every task: a
        // group by it is not one task's. Its probe key is.
        let on = |l: &Arc<dyn ExecutionPlan>, r: &Arc<dyn ExecutionPlan>| {
            vec![(
                col("day", &l.schema()).expect("l"),
                col("day", &r.schema()).expect("r"),
            )]
        };
        for (join_type, column, keyed) in [
            (JoinType::Right, 0, false),
            (JoinType::Right, 3, true),
            (JoinType::Inner, 0, true),
        ] {
            let (build, probe) = (scan(false), scan(true));
            let on = on(&build, &probe);
            let join: Arc<dyn ExecutionPlan> = Arc::new(
                HashJoinExec::try_new(
                    build,
                    probe,
                    on,
                    None,
                    &join_type,
                    Some(vec![column]),
                    PartitionMode::CollectLeft,
                    NullEquality::NullEqualsNothing,
                    false,
                )
                .expect("join"),
            );
            let plan = rewritten(grouped(join, &["day"]));
            assert_eq!(
                !plan.contains("RepartitionExec"),
                keyed,
                "{join_type} column {column}: {plan}"
            );
        }
    }
}
