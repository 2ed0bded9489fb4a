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
    let bytes = match (stats.total_byte_size, stats.num_rows) {
        (Precision::Exact(b) | Precision::Inexact(b), _) => b,
        (Precision::Absent, Precision::Exact(r) | Precision::Inexact(r)) => {
            r.saturating_mul(BYTES_PER_ROW_GUESS)
        }
        (Precision::Absent, Precision::Absent) => return false,
    };
    bytes <= MAX_SHARED_BYTES
}
