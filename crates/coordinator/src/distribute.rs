//! Cutting the physical plan into what runs on executors and what stays on the coordinator.
//!
//! A *fragment* is the largest partition-local pipeline above an Iceberg scan: filters,
//! projections, partial aggregation, per-partition sort/top-k and local
//! limits. Each fragment becomes a [`RemoteStageExec`]; everything above it (exchanges, final
//! aggregation, merges, joins) runs on the coordinator over the executors' streams.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::ExecutionPlan;
use floe_catalog::IcebergScanExec;
use floe_proto::FileGroup;
use tracing::debug;

use crate::registry::ExecutorRegistry;
use crate::remote::RemoteStageExec;

/// The physical optimizer rule that distributes scans' fragments to executors.
#[derive(Debug)]
pub struct DistributeScans {
    registry: ExecutorRegistry,
    query_id: String,
}

impl DistributeScans {
    /// A rule for one query.
    pub fn new(registry: ExecutorRegistry, query_id: String) -> Self {
        Self { registry, query_id }
    }

    fn rewrite(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        next_stage: &mut u32,
    ) -> Result<(Arc<dyn ExecutionPlan>, bool)> {
        if plan.as_any().is::<IcebergScanExec>() {
            return Ok((plan, true));
        }
        let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
        if children.is_empty() {
            return Ok((plan, false));
        }
        let mut rewritten = Vec::with_capacity(children.len());
        let mut fragment_flags = Vec::with_capacity(children.len());
        for child in children {
            let (c, is_fragment) = self.rewrite(child, next_stage)?;
            rewritten.push(c);
            fragment_flags.push(is_fragment);
        }
        if rewritten.len() == 1 && fragment_flags[0] && is_partition_local(plan.as_ref()) {
            return Ok((plan.with_new_children(rewritten)?, true));
        }
        let children = rewritten
            .into_iter()
            .zip(fragment_flags)
            .map(|(c, is_fragment)| {
                if is_fragment {
                    self.remote(c, next_stage)
                } else {
                    c
                }
            })
            .collect();
        Ok((plan.with_new_children(children)?, false))
    }

    /// Wraps a fragment for the executors, or leaves it local if it cannot be shipped.
    fn remote(
        &self,
        fragment: Arc<dyn ExecutionPlan>,
        next_stage: &mut u32,
    ) -> Arc<dyn ExecutionPlan> {
        // Encoded once with the scan's files taken out; each task later receives only its own
        // partition's files next to that plan.
        let shipped = split_files(&fragment)
            .and_then(|(plan, files)| Ok((floe_executor::codec::encode_plan(plan)?, files)));
        match shipped {
            Ok((encoded, files)) => {
                *next_stage += 1;
                Arc::new(RemoteStageExec::new(
                    fragment,
                    encoded,
                    files,
                    self.query_id.clone(),
                    *next_stage,
                    self.registry.clone(),
                ))
            }
            Err(e) => {
                debug!("fragment stays on the coordinator: {e}");
                fragment
            }
        }
    }
}

/// The fragment with its Iceberg scan's files removed, and those files per partition.
fn split_files(
    fragment: &Arc<dyn ExecutionPlan>,
) -> Result<(Arc<dyn ExecutionPlan>, Vec<FileGroup>)> {
    let mut files = Vec::new();
    let plan = Arc::clone(fragment).transform_up(|node| {
        let Some(scan) = node.as_any().downcast_ref::<IcebergScanExec>() else {
            return Ok(Transformed::no(node));
        };
        files = scan.node().file_groups.clone();
        Ok(Transformed::yes(
            Arc::new(scan.without_files()?) as Arc<dyn ExecutionPlan>
        ))
    })?;
    Ok((plan.data, files))
}

/// Operators that work on each partition alone, so they can run next to the scan.
fn is_partition_local(plan: &dyn ExecutionPlan) -> bool {
    let any = plan.as_any();
    if any.is::<FilterExec>() || any.is::<ProjectionExec>() || any.is::<LocalLimitExec>() {
        return true;
    }
    if let Some(agg) = any.downcast_ref::<AggregateExec>() {
        return *agg.mode() == AggregateMode::Partial;
    }
    if let Some(sort) = any.downcast_ref::<SortExec>() {
        return sort.preserve_partitioning();
    }
    false
}

impl PhysicalOptimizerRule for DistributeScans {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut next_stage = 0;
        let (plan, is_fragment) = self.rewrite(plan, &mut next_stage)?;
        Ok(if is_fragment {
            self.remote(plan, &mut next_stage)
        } else {
            plan
        })
    }

    fn name(&self) -> &str {
        "floe_distribute_scans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
