//! Which joins broadcast their build side, chosen for a cluster rather than for one machine.
//!
//! DataFusion's join selection broadcasts (`CollectLeft`) a build side under a fixed size
//! (128 Ki rows) and partitions everything else, whatever the other side's size: on one machine
//! a partitioned join only costs a repartition in memory. On a cluster it moves both sides over
//! the network, and broadcasting the small side costs its rows once per task instead. This rule
//! runs after DataFusion's join selection and changes two kinds of join:
//!
//! * a partitioned join whose build (smaller) side, copied to every task, moves fewer rows
//!   than shuffling both sides (`build × tasks ≤ build + probe`) becomes a broadcast, up to
//!   [`MAX_BROADCAST_ROWS`] (every task holds a copy). TPC-H Q03 joins 147,000 orders of
//!   building-segment customers with 3.2 M lineitems: broadcasting the former moves 0.6 M
//!   rows, shuffling both 3.4 M.
//! * a `CollectLeft` join that is not driven by its probe side (a left, full, left-semi,
//!   left-anti or left-mark join: its output depends on which build rows *any* probe row
//!   matched) cannot run as independent tasks over a broadcast, so the stage cutter would run it
//!   on the coordinator with both inputs gathered there. It is partitioned instead, so that
//!   the executors run it (unless both inputs are single tasks: nothing to spread). Null-aware anti joins (`NOT IN`) must see their whole build side in
//!   one place and stay as they are.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinType, Result};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::ExecutionPlan;

/// The most rows (estimated) a build side may have to be broadcast for being cheaper: each
/// task of the join holds its own copy in a hash table.
pub const MAX_BROADCAST_ROWS: usize = 1 << 20;

/// Chooses broadcast or partitioned hash joins for a cluster (see the module documentation).
#[derive(Debug, Default)]
pub struct BroadcastJoins;

impl PhysicalOptimizerRule for BroadcastJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let tasks = config.execution.target_partitions.max(1);
        plan.transform_up(|node| {
            let Some(join) = node.as_any().downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let mode = match join.partition_mode() {
                PartitionMode::CollectLeft
                    if !probe_driven(join.join_type()) && !join.null_aware && spreads(join) =>
                {
                    PartitionMode::Partitioned
                }
                PartitionMode::Partitioned
                    if probe_driven(join.join_type())
                        && !join.null_aware
                        && broadcast_is_cheaper(join, tasks)? =>
                {
                    PartitionMode::CollectLeft
                }
                _ => return Ok(Transformed::no(node)),
            };
            let join = join.builder().with_partition_mode(mode).build()?;
            Ok(Transformed::yes(Arc::new(join) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "floe_broadcast_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether partitioning the join would spread it over tasks. One partition satisfies any hash
/// distribution: a partitioned join of two such inputs would get no shuffle, and its two scans
/// would fall into one stage.
fn spreads(join: &HashJoinExec) -> bool {
    let partitions =
        |p: &Arc<dyn ExecutionPlan>| p.properties().output_partitioning().partition_count();
    partitions(join.left()) > 1 || partitions(join.right()) > 1
}

/// Joins whose output rows are each driven by one probe row, so that tasks holding a copy of
/// the build side each produce their share independently.
pub fn probe_driven(join_type: &JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Inner
            | JoinType::Right
            | JoinType::RightSemi
            | JoinType::RightAnti
            | JoinType::RightMark
    )
}

/// Whether copying the build (left) side to each of `tasks` tasks moves fewer rows than
/// shuffling both sides, by the optimizer's estimates (no estimate: no).
fn broadcast_is_cheaper(join: &HashJoinExec, tasks: usize) -> Result<bool> {
    let rows = |plan: &Arc<dyn ExecutionPlan>| -> Result<Option<usize>> {
        Ok(plan
            .partition_statistics(None)?
            .num_rows
            .get_value()
            .copied())
    };
    let (Some(build), Some(probe)) = (rows(join.left())?, rows(join.right())?) else {
        return Ok(false);
    };
    Ok(build > 0
        && build <= MAX_BROADCAST_ROWS
        && build.saturating_mul(tasks) <= build.saturating_add(probe))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::stats::{ColumnStatistics, Precision};
    use datafusion::common::{NullEquality, Statistics};
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use datafusion::physical_plan::test::exec::StatisticsExec;

    fn table(name: &str, rows: usize) -> Arc<dyn ExecutionPlan> {
        let schema = Schema::new(vec![Field::new(name, DataType::Int64, false)]);
        let stats = Statistics {
            num_rows: Precision::Inexact(rows),
            total_byte_size: Precision::Absent,
            column_statistics: vec![ColumnStatistics::new_unknown()],
        };
        Arc::new(StatisticsExec::new(stats, schema))
    }

    fn join(
        build: usize,
        probe: usize,
        join_type: JoinType,
        mode: PartitionMode,
        null_aware: bool,
    ) -> Arc<dyn ExecutionPlan> {
        let (left, right) = (table("k", build), table("fk", probe));
        crate::test_plans::hash_join(left, right, ("k", "fk"), join_type, None, mode, null_aware)
    }

    fn mode_after(plan: Arc<dyn ExecutionPlan>, tasks: usize) -> PartitionMode {
        let mut config = ConfigOptions::new();
        config.execution.target_partitions = tasks;
        let plan = BroadcastJoins
            .optimize(plan, &config)
            .expect("a valid test plan");
        *plan
            .as_any()
            .downcast_ref::<HashJoinExec>()
            .expect("a valid test plan")
            .partition_mode()
    }

    #[test]
    fn a_build_side_cheaper_to_copy_than_to_shuffle_is_broadcast() {
        // TPC-H Q03 at SF1: 147 k orders of one segment's customers, 3.2 M lineitems.
        let q03 = || {
            join(
                147_000,
                3_200_000,
                JoinType::Inner,
                PartitionMode::Partitioned,
                false,
            )
        };
        assert_eq!(mode_after(q03(), 4), PartitionMode::CollectLeft);
        // With 32 tasks, 32 copies (4.7 M rows) cost more than the shuffle (3.3 M).
        assert_eq!(mode_after(q03(), 32), PartitionMode::Partitioned);
        // Sides of similar size (customer and a year of orders) stay partitioned.
        let similar = join(
            150_000,
            228_000,
            JoinType::Inner,
            PartitionMode::Partitioned,
            false,
        );
        assert_eq!(mode_after(similar, 4), PartitionMode::Partitioned);
        // A build side over the cap stays partitioned, however big the probe side.
        let big = join(
            2_000_000,
            60_000_000,
            JoinType::Inner,
            PartitionMode::Partitioned,
            false,
        );
        assert_eq!(mode_after(big, 4), PartitionMode::Partitioned);
        // A left join's output depends on every task's matches: it is not broadcast.
        let left = join(
            147_000,
            3_200_000,
            JoinType::Left,
            PartitionMode::Partitioned,
            false,
        );
        assert_eq!(mode_after(left, 4), PartitionMode::Partitioned);
    }

    #[test]
    fn a_collected_join_the_tasks_cannot_share_is_partitioned() {
        // TPC-H Q04: orders (small, build) semi-joined with lineitem.
        let semi = join(
            57_000,
            3_800_000,
            JoinType::LeftSemi,
            PartitionMode::CollectLeft,
            false,
        );
        assert_eq!(mode_after(semi, 4), PartitionMode::Partitioned);
        // Probe-driven joins stay broadcast; a NOT IN's null-aware anti join stays collected.
        let inner = join(
            57_000,
            3_800_000,
            JoinType::Inner,
            PartitionMode::CollectLeft,
            false,
        );
        assert_eq!(mode_after(inner, 4), PartitionMode::CollectLeft);
        // Two single-partition inputs would get no shuffle: the semi join stays collected.
        let one = |plan: Arc<dyn ExecutionPlan>| -> Arc<dyn ExecutionPlan> {
            Arc::new(CoalescePartitionsExec::new(plan))
        };
        let (left, right) = (one(table("k", 3)), one(table("fk", 3)));
        let on = vec![(
            col("k", &left.schema()).expect("a valid test plan"),
            col("fk", &right.schema()).expect("a valid test plan"),
        )];
        let small = HashJoinExec::try_new(
            left,
            right,
            on,
            None,
            &JoinType::LeftSemi,
            None,
            PartitionMode::CollectLeft,
            NullEquality::NullEqualsNothing,
            false,
        )
        .expect("a valid test plan");
        assert_eq!(mode_after(Arc::new(small), 4), PartitionMode::CollectLeft);
        let not_in = join(
            57_000,
            3_800_000,
            JoinType::LeftAnti,
            PartitionMode::CollectLeft,
            true,
        );
        assert_eq!(mode_after(not_in, 4), PartitionMode::CollectLeft);
    }
}
