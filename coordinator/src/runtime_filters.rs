//! Where runtime filters go: from the build side of a partitioned or broadcast join to the
//! producers of its probe side (how they run: `floe_engine::runtime_filter`).
//!
//! A join qualifies when a probe row without a match adds nothing to its output (inner, left,
//! left semi, left anti, left mark and right semi joins; not null-aware ones, nor joins where
//! NULL keys match), its keys on both sides are columns, and both inputs run on executors (so
//! the join's tasks know where the probe side's producers run). The filter is pushed from the
//! probe input down through projections, filters, inner joins — to both sides of an inner
//! join on the same key — and aggregations grouped by the key, and placed under each hash
//! shuffle it reaches (under a partial aggregation there, when it groups by the key), or
//! under the shuffles further down that it reaches through the joins of that shuffle's stage:
//! the producers then drop rows before they cross the network. TPC-H Q18's semi join with the 57
//! orders of `HAVING sum(l_quantity) > 300` thus filters both the orders and the 6 M lineitems
//! that its probe side shuffles; Q17's 204 parts leave lineitem's averages per part to compute
//! for those 204 parts alone (cluster: 0.33 → 0.15 s). A broadcast join's tasks each hold its
//! whole build side, so one task's keys are the filter: Q07's two nations reach the lineitems
//! under its partitioned join with orders, which then shuffle 73 K rows per task, not 913 K
//! (0.32 → 0.22 s); so do Q20's partsupp rows of the forest parts, read by two tasks and
//! collected for the broadcast, which leave lineitem's sums per part and supplier to compute for
//! those parts alone (448 K → 4 K rows shuffled per task). A broadcast build side further
//! down gets the filter too, where its own stage's producers run it (the stage cutter tells the
//! source about that stage as about any other): Q07's customers of the two nations alone are
//! broadcast, and their keys then cut the orders before they are shuffled.

use std::sync::Arc;

use datafusion::common::stats::Precision;
use datafusion::common::{JoinType, NullEquality, Result};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use floe_engine::distinct_keys::DistinctKeysExec;
use floe_engine::runtime_filter::{RuntimeFilterExec, RuntimeFilterSourceExec, MAX_KEYS};
use floe_engine::IcebergScanExec;
use floe_proto::{RuntimeFilterNode, RuntimeFilterSourceNode};

/// Whether a shuffle (a hash `RepartitionExec`) is read by more than one part of the plan.
pub type Shared<'a> = dyn Fn(&Arc<dyn ExecutionPlan>) -> bool + 'a;

/// `join` with a runtime filter from its build side to its probe side's shuffles, if it
/// qualifies (see the module documentation) and the filter reaches at least one shuffle.
/// `on_executors` says whether a subtree runs on executors.
/// No filter is placed under the shuffles `shared` names: a shuffle two parts of the plan read
/// alike runs once for both (see `crate::shared_stages`), so it must keep every row.
pub fn with_runtime_filter(
    join: &Arc<dyn ExecutionPlan>,
    on_executors: &dyn Fn(&Arc<dyn ExecutionPlan>) -> bool,
    shared: &Shared<'_>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(hash_join) = join.as_any().downcast_ref::<HashJoinExec>() else {
        return Ok(None);
    };
    // A broadcast join's tasks each hold the whole build side: any one's keys are all of them.
    let broadcast = *hash_join.partition_mode() == PartitionMode::CollectLeft
        && crate::broadcast::probe_driven(hash_join.join_type());
    let qualifies = (*hash_join.partition_mode() == PartitionMode::Partitioned || broadcast)
        && unmatched_probe_rows_vanish(hash_join.join_type())
        && !hash_join.null_aware
        && hash_join.null_equality() == NullEquality::NullEqualsNothing
        && !hash_join.left().as_any().is::<RuntimeFilterSourceExec>();
    if !qualifies {
        return Ok(None);
    }
    let mut build_keys = Vec::new();
    let mut probe_keys = Vec::new();
    for (left, right) in hash_join.on() {
        let (Some(l), Some(r)) = (column_index(left), column_index(right)) else {
            return Ok(None);
        };
        build_keys.push(l as u32);
        probe_keys.push(r);
    }
    // A broadcast build side is cut under the coalesce that collects it (see `crate::stages`).
    let build_side = if broadcast {
        collected(hash_join.left())
    } else {
        hash_join.left()
    };
    if !on_executors(build_side) || !on_executors(hash_join.right()) {
        return Ok(None);
    }
    if every_row_of_a_large_table(build_side, &build_keys)? {
        return Ok(None);
    }
    let filter = RuntimeFilterNode {
        filter_id: random_id(),
        columns: Vec::new(),
        eager: false,
        sources: if broadcast {
            1
        } else {
            hash_join
                .left()
                .properties()
                .output_partitioning()
                .partition_count() as u32
        },
    };
    let Some(probe) = push(hash_join.right(), &probe_keys, &filter, false, shared)? else {
        return Ok(None);
    };
    let build = Arc::new(RuntimeFilterSourceExec::new(
        Arc::clone(hash_join.left()),
        RuntimeFilterSourceNode {
            filter_id: filter.filter_id,
            columns: build_keys,
            targets: Vec::new(),
        },
    ));
    Ok(Some(
        Arc::clone(join).with_new_children(vec![build, probe])?,
    ))
}

/// Whether `plan`'s `keys` are columns of every row of a table of more than [`MAX_KEYS`] rows
/// (the scan's count is exact only then): all the table's keys, which a probe side joining it
/// by a foreign key has no other than. Its producers would wait for them to drop nothing — TPC-H
/// Q09's 1.5 M orders (a bitmap's worth of keys) made lineitem's producers wait, then keep
/// every row (SF1: 320 → 350 ms). A whole table of fewer rows still filters (a few dimension
/// rows a semi join keeps the facts of), and keys computed from it may well (they are no
/// table's column).
fn every_row_of_a_large_table(plan: &Arc<dyn ExecutionPlan>, keys: &[u32]) -> Result<bool> {
    let any = plan.as_any();
    if let Some(scan) = any.downcast_ref::<IcebergScanExec>() {
        if scan.node().limit > 0 {
            return Ok(false);
        }
        let rows = scan.partition_statistics(None)?.num_rows;
        return Ok(matches!(rows, Precision::Exact(n) if n > MAX_KEYS));
    }
    if let Some(projection) = any.downcast_ref::<ProjectionExec>() {
        let Some(keys) = keys
            .iter()
            .map(|&k| {
                let expr = &projection.expr().get(k as usize)?.expr;
                column_index(expr).map(|c| c as u32)
            })
            .collect::<Option<Vec<u32>>>()
        else {
            return Ok(false);
        };
        return every_row_of_a_large_table(projection.input(), &keys);
    }
    let passes_every_row = any.is::<RepartitionExec>()
        || any.is::<CooperativeExec>()
        || any
            .downcast_ref::<CoalescePartitionsExec>()
            .is_some_and(|c| c.fetch().is_none());
    match plan.children().as_slice() {
        [input] if passes_every_row => every_row_of_a_large_table(input, keys),
        _ => Ok(false),
    }
}

/// The rows a broadcast build side collects: the input of its coalesce (without a LIMIT).
fn collected(build: &Arc<dyn ExecutionPlan>) -> &Arc<dyn ExecutionPlan> {
    match build.as_any().downcast_ref::<CoalescePartitionsExec>() {
        Some(coalesce) if coalesce.fetch().is_none() => coalesce.input(),
        _ => build,
    }
}

/// A filter id no other filter of the query has (random: a retried query gets new ones).
fn random_id() -> u64 {
    let nonce = floe_engine::runtime::random_nonce();
    let mut id = [0u8; 8];
    id.copy_from_slice(&nonce[..8]);
    u64::from_le_bytes(id)
}

/// Joins whose output has no row made of a probe (right) row that matched nothing.
fn unmatched_probe_rows_vanish(join_type: &JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Inner
            | JoinType::Left
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
            | JoinType::RightSemi
    )
}

fn column_index(expr: &Arc<dyn datafusion::physical_expr::PhysicalExpr>) -> Option<usize> {
    expr.as_any().downcast_ref::<Column>().map(Column::index)
}

/// `plan` with the filter on its output columns `keys` placed under every hash shuffle it
/// reaches; `None` if there is none. Its producers wait for the keys under another join
/// (`through_join`: the rows it drops are not joined there either) or where the shuffled rows
/// hold more than the keys. A shuffle of the keys alone straight into the join costs about
/// what its producers' scan does, so they do not wait: rows pass until the keys come (TPC-H
/// Q04's lineitems, Q22's orders: 10–20 % slower when they waited).
fn push(
    plan: &Arc<dyn ExecutionPlan>,
    keys: &[usize],
    filter: &RuntimeFilterNode,
    through_join: bool,
    shared: &Shared<'_>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let any = plan.as_any();
    if let Some(repartition) = any.downcast_ref::<RepartitionExec>() {
        if !matches!(repartition.partitioning(), Partitioning::Hash(..))
            || repartition.preserve_order()
            || shared(plan)
        {
            return Ok(None);
        }
        let input = repartition.input();
        // Under a partial aggregation the filter drops rows before they are grouped.
        if let Some(partial) = input.as_any().downcast_ref::<AggregateExec>() {
            if *partial.mode() == AggregateMode::Partial {
                if let Some(inner) = group_columns(partial, keys) {
                    let filtered = filtered(partial.input(), &inner, filter, through_join);
                    let partial = Arc::clone(input).with_new_children(vec![filtered])?;
                    return Ok(Some(Arc::clone(plan).with_new_children(vec![partial])?));
                }
            }
        }
        // Under a probe side's first keys the filter drops rows before they are looked up.
        if let Some(first_keys) = input.as_any().downcast_ref::<DistinctKeysExec>() {
            let filtered = filtered(first_keys.children()[0], keys, filter, through_join);
            let first_keys = Arc::clone(input).with_new_children(vec![filtered])?;
            return Ok(Some(Arc::clone(plan).with_new_children(vec![first_keys])?));
        }
        // Further down if it reaches a shuffle or a broadcast under this one's input (through
        // the joins of the producers' stage): rows dropped there cost neither this stage's work
        // nor the one below's shuffle. TPC-H Q07 at SF10: the two nations' suppliers cut
        // lineitem before its shuffle to orders, not only the orders ⋈ lineitem rows after it.
        if let Some(deeper) = push(input, keys, filter, true, shared)? {
            return Ok(Some(Arc::clone(plan).with_new_children(vec![deeper])?));
        }
        let filtered = filtered(input, keys, filter, through_join);
        return Ok(Some(Arc::clone(plan).with_new_children(vec![filtered])?));
    }
    if let Some(aggregate) = any.downcast_ref::<AggregateExec>() {
        // Keeping only some groups' keys keeps those groups whole: the filter goes below.
        let Some(inner) = group_columns(aggregate, keys) else {
            return Ok(None);
        };
        return rebuilt(
            plan,
            aggregate.input(),
            &inner,
            filter,
            through_join,
            shared,
        );
    }
    if let Some(projection) = any.downcast_ref::<ProjectionExec>() {
        let exprs = projection.expr();
        let Some(inner) = keys
            .iter()
            .map(|&k| exprs.get(k).and_then(|e| column_index(&e.expr)))
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        return rebuilt(
            plan,
            projection.input(),
            &inner,
            filter,
            through_join,
            shared,
        );
    }
    if let Some(filter_exec) = any.downcast_ref::<FilterExec>() {
        let inner = match filter_exec.projection() {
            Some(p) => match keys.iter().map(|&k| p.get(k).copied()).collect() {
                Some(inner) => inner,
                None => return Ok(None),
            },
            None => keys.to_vec(),
        };
        return rebuilt(
            plan,
            filter_exec.input(),
            &inner,
            filter,
            through_join,
            shared,
        );
    }
    if let Some(coop) = any.downcast_ref::<CooperativeExec>() {
        return rebuilt(plan, coop.input(), keys, filter, through_join, shared);
    }
    if let Some(join) = any.downcast_ref::<HashJoinExec>() {
        return through_inner_join(plan, join, keys, filter, shared);
    }
    Ok(None)
}

/// `input` behind a filter on its columns `keys`. Its producers wait for the keys under another
/// join or where the rows hold more than the keys (see [`push`]), unless they already wait for
/// another filter's on the same columns: then it is eager, as it is otherwise. TPC-H Q18's
/// lineitems wait for the keys of the large orders, and no longer for the keys of the orders
/// ⋈ customer join above (made of those same orders, once they were joined with the customers).
fn filtered(
    input: &Arc<dyn ExecutionPlan>,
    keys: &[usize],
    filter: &RuntimeFilterNode,
    through_join: bool,
) -> Arc<dyn ExecutionPlan> {
    let waited_on = input
        .as_any()
        .downcast_ref::<RuntimeFilterExec>()
        .is_some_and(|below| {
            !below.node().eager
                && below.node().columns.len() == keys.len()
                && below
                    .node()
                    .columns
                    .iter()
                    .zip(keys)
                    .all(|(&c, &k)| c as usize == k)
        });
    let waits = (through_join || input.schema().fields().len() > keys.len()) && !waited_on;
    let node = RuntimeFilterNode {
        columns: keys.iter().map(|&k| k as u32).collect(),
        eager: !waits,
        ..filter.clone()
    };
    Arc::new(RuntimeFilterExec::new(Arc::clone(input), node))
}

/// The input columns of an aggregation's output `keys`, where each is one of its plain
/// grouping columns (no grouping sets).
fn group_columns(aggregate: &AggregateExec, keys: &[usize]) -> Option<Vec<usize>> {
    let groups = aggregate.group_expr();
    if !groups.is_single() {
        return None;
    }
    keys.iter()
        .map(|&k| groups.expr().get(k).and_then(|(e, _)| column_index(e)))
        .collect()
}

/// `plan` with its single input replaced by the input with the filter pushed in.
fn rebuilt(
    plan: &Arc<dyn ExecutionPlan>,
    input: &Arc<dyn ExecutionPlan>,
    keys: &[usize],
    filter: &RuntimeFilterNode,
    through_join: bool,
    shared: &Shared<'_>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    match push(input, keys, filter, through_join, shared)? {
        Some(input) => Ok(Some(Arc::clone(plan).with_new_children(vec![input])?)),
        None => Ok(None),
    }
}

/// An inner join's output row holds equal keys from both sides: a filter on one side's join
/// keys applies to the other side's too.
fn through_inner_join(
    plan: &Arc<dyn ExecutionPlan>,
    join: &HashJoinExec,
    keys: &[usize],
    filter: &RuntimeFilterNode,
    shared: &Shared<'_>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if *join.join_type() != JoinType::Inner {
        return Ok(None);
    }
    let left_len = join.left().schema().fields().len();
    let Some(joined) = keys
        .iter()
        .map(|&k| match &join.projection {
            Some(p) => p.get(k).copied(),
            None => Some(k),
        })
        .collect::<Option<Vec<usize>>>()
    else {
        return Ok(None);
    };
    let on_left: Vec<Option<usize>> = join.on().iter().map(|(l, _)| column_index(l)).collect();
    let on_right: Vec<Option<usize>> = join.on().iter().map(|(_, r)| column_index(r)).collect();
    // The keys on one side, and (where each is a join key) the matching keys on the other.
    let (left_keys, right_keys) = if joined.iter().all(|&j| j < left_len) {
        let other = matching(&joined, &on_left, &on_right);
        (Some(joined), other)
    } else if joined.iter().all(|&j| j >= left_len) {
        let own: Vec<usize> = joined.iter().map(|&j| j - left_len).collect();
        (matching(&own, &on_right, &on_left), Some(own))
    } else {
        return Ok(None);
    };
    let left = match &left_keys {
        Some(k) if *join.partition_mode() == PartitionMode::CollectLeft => {
            Some(into_collected(join.left(), k, filter, shared)?)
        }
        Some(k) => push(join.left(), k, filter, true, shared)?,
        None => None,
    };
    let right = match &right_keys {
        Some(k) => push(join.right(), k, filter, true, shared)?,
        None => None,
    };
    if left.is_none() && right.is_none() {
        return Ok(None);
    }
    let children = vec![
        left.unwrap_or_else(|| Arc::clone(join.left())),
        right.unwrap_or_else(|| Arc::clone(join.right())),
    ];
    Ok(Some(Arc::clone(plan).with_new_children(children)?))
}

/// A broadcast build side with the filter where the producers of its stage run it: under the
/// shuffles inside it if it reaches any, else on the rows it collects, so that rows the join
/// above drops are never broadcast.
fn into_collected(
    build: &Arc<dyn ExecutionPlan>,
    keys: &[usize],
    filter: &RuntimeFilterNode,
    shared: &Shared<'_>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let input = collected(build);
    let filtered_input = match push(input, keys, filter, true, shared)? {
        Some(pushed) => pushed,
        None => filtered(input, keys, filter, true),
    };
    if Arc::ptr_eq(input, build) {
        Ok(filtered_input)
    } else {
        Arc::clone(build).with_new_children(vec![filtered_input])
    }
}

/// The other side's join key for each of `keys` (columns of one side): where `keys[i]` is this
/// side's `on` column, the other side's; `None` if one is not a join key.
fn matching(
    keys: &[usize],
    this_side: &[Option<usize>],
    other_side: &[Option<usize>],
) -> Option<Vec<usize>> {
    keys.iter()
        .map(|&k| {
            this_side
                .iter()
                .position(|c| *c == Some(k))
                .and_then(|i| other_side[i])
        })
        .collect()
}

#[cfg(test)]
mod tests;
