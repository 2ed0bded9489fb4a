//! One shuffle for an aggregate over an aggregate whose keys include its own — what a
//! `COUNT(DISTINCT u) … GROUP BY k` becomes (`GROUP BY k, u`, then `GROUP BY k`; TPC-H Q16, the
//! seed question's distinct users per day, city and model).
//!
//! DataFusion hashes the inner aggregate's rows by all its keys (k, u), then the outer one's by
//! k: two exchanges, which on a cluster are two shuffles and two stages. Hashing the first time
//! by k alone puts every (k, u) group, and so every k group, in one partition: the outer
//! aggregate's partial and final steps then run where the inner one ends, without the second
//! exchange. The outer groups bound the parallelism either way; the inner groups may now be
//! spread less evenly across tasks, by the outer keys' values instead of all keys'.
//!
//! Matched exactly (nothing between the nodes):
//!
//! ```text
//! AggregateExec FinalPartitioned gby=k          AggregateExec FinalPartitioned gby=k
//!   RepartitionExec Hash(k, n)                     AggregateExec Partial gby=k
//!     AggregateExec Partial gby=k          →         AggregateExec FinalPartitioned gby=k,u
//!       AggregateExec FinalPartitioned gby=k,u         RepartitionExec Hash(k, n)
//!         RepartitionExec Hash(k,u, n)                   AggregateExec Partial gby=k,u
//!           AggregateExec Partial gby=k,u
//! ```

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub struct OneShuffleForNestedAggregates;

impl PhysicalOptimizerRule for OneShuffleForNestedAggregates {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::rewrite::top_down(plan, rewritten)
    }

    fn name(&self) -> &str {
        "floe_one_shuffle_for_nested_aggregates"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` with one exchange less, if it is the top of the pattern.
fn rewritten(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(outer_final) = aggregate(node, AggregateMode::FinalPartitioned) else {
        return Ok(None);
    };
    let Some((outer_exchange, outer_hash, n)) = hash_repartition(outer_final.input()) else {
        return Ok(None);
    };
    let Some(outer_partial) = aggregate(outer_exchange.input(), AggregateMode::Partial) else {
        return Ok(None);
    };
    let Some(inner_final) = aggregate(outer_partial.input(), AggregateMode::FinalPartitioned)
    else {
        return Ok(None);
    };
    let Some((inner_exchange, inner_hash, inner_n)) = hash_repartition(inner_final.input()) else {
        return Ok(None);
    };
    let outer_groups = outer_partial.group_expr().expr().len();
    let inner_groups = inner_final.group_expr().expr().len();
    if n != inner_n
        || !plain_groups(outer_final)
        || !plain_groups(outer_partial)
        || !plain_groups(inner_final)
        || !hashes_by_groups(outer_hash, outer_groups)
        || !hashes_by_groups(inner_hash, inner_groups)
    {
        return Ok(None);
    }
    // Each outer group is one of the inner aggregate's group columns: hash by those.
    let mut keys: Vec<Arc<dyn PhysicalExpr>> = Vec::with_capacity(outer_groups);
    for (expr, _) in outer_partial.group_expr().expr() {
        match column_index(expr) {
            Some(j) if j < inner_groups => keys.push(Arc::clone(&inner_hash[j])),
            _ => return Ok(None),
        }
    }
    let by_outer_keys: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        Arc::clone(inner_exchange.input()),
        Partitioning::Hash(keys, n),
    )?);
    let inner = Arc::clone(outer_partial.input()).with_new_children(vec![by_outer_keys])?;
    let partial = Arc::clone(outer_exchange.input()).with_new_children(vec![inner])?;
    Ok(Some(Arc::clone(node).with_new_children(vec![partial])?))
}

/// Whether an exchange hashes by exactly the first `groups` columns, in order: the group
/// columns of the partial aggregate under it.
fn hashes_by_groups(hash: &[Arc<dyn PhysicalExpr>], groups: usize) -> bool {
    hash.len() == groups
        && hash
            .iter()
            .enumerate()
            .all(|(i, e)| column_index(e) == Some(i))
}

fn aggregate(plan: &Arc<dyn ExecutionPlan>, mode: AggregateMode) -> Option<&AggregateExec> {
    plan.as_any()
        .downcast_ref::<AggregateExec>()
        .filter(|a| *a.mode() == mode)
}

/// A hash repartition (one that keeps no order), its keys and partition count.
type HashExchange<'a> = (&'a RepartitionExec, &'a [Arc<dyn PhysicalExpr>], usize);

fn hash_repartition(plan: &Arc<dyn ExecutionPlan>) -> Option<HashExchange<'_>> {
    let repartition = plan.as_any().downcast_ref::<RepartitionExec>()?;
    if repartition.preserve_order() {
        return None;
    }
    match repartition.partitioning() {
        Partitioning::Hash(keys, n) => Some((repartition, keys.as_slice(), *n)),
        _ => None,
    }
}

/// Plain GROUP BY columns: no grouping sets, no filters on the aggregates, no limit.
fn plain_groups(aggregate: &AggregateExec) -> bool {
    aggregate.group_expr().is_single()
        && aggregate.filter_expr().iter().all(Option::is_none)
        && aggregate.limit_options().is_none()
}

fn column_index(expr: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    expr.as_any().downcast_ref::<Column>().map(Column::index)
}
