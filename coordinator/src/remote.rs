//! `RemoteStageExec`: the plan node where the coordinator reads the output of a stage that runs
//! on executors (a gather). It describes the stage (its fragment, encoded once, and each task's
//! files); running it is the scheduler's (`crate::scheduler::QueryRun::gather`). Each
//! executor's own report (files, bytes, rows, shuffle bytes, spills, time) comes back in the
//! stream's trailer and shows in `EXPLAIN ANALYZE`.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use floe_proto::TaskMetrics;
use futures::TryStreamExt;

use crate::scheduler::{format_reports, GatherStage, QueryRun};

/// Runs `fragment` on executors, one task per output partition.
#[derive(Debug)]
pub struct RemoteStageExec {
    fragment: Arc<dyn ExecutionPlan>,
    stage: GatherStage,
    run: Arc<QueryRun>,
    metrics: ExecutionPlanMetricsSet,
    reports: Arc<Mutex<Vec<TaskMetrics>>>,
}

impl RemoteStageExec {
    /// The gather of `fragment`'s partitions, run as `stage` of `run`.
    pub fn new(fragment: Arc<dyn ExecutionPlan>, stage: GatherStage, run: Arc<QueryRun>) -> Self {
        Self {
            fragment,
            stage,
            run,
            metrics: ExecutionPlanMetricsSet::new(),
            reports: Arc::default(),
        }
    }
}

impl DisplayAs for RemoteStageExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RemoteStageExec: stage={}, tasks={}, plan_bytes={}",
            self.stage.stage_id,
            self.fragment
                .properties()
                .output_partitioning()
                .partition_count(),
            self.stage.plan.len()
        )?;
        if let Some(reports) = format_reports(&self.reports) {
            write!(f, ", {reports}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for RemoteStageExec {
    fn name(&self) -> &str {
        "RemoteStageExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.fragment.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.fragment]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.as_slice() {
            [only] if Arc::ptr_eq(only, &self.fragment) => Ok(self),
            [_] => Err(DataFusionError::Internal(
                "RemoteStageExec's fragment is fixed once encoded".into(),
            )),
            _ => Err(DataFusionError::Internal(
                "RemoteStageExec has exactly one child".into(),
            )),
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema: SchemaRef = self.fragment.schema();
        let files = MetricBuilder::new(&self.metrics).counter("files_scanned", partition);
        let bytes = MetricBuilder::new(&self.metrics).counter("bytes_scanned", partition);
        let rows_read = MetricBuilder::new(&self.metrics).counter("rows_scanned", partition);
        let from_memory = MetricBuilder::new(&self.metrics).counter("files_from_memory", partition);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let spills = MetricBuilder::new(&self.metrics).counter("executor_spill_count", partition);
        let spilled =
            MetricBuilder::new(&self.metrics).counter("executor_spilled_bytes", partition);
        let reports = Arc::clone(&self.reports);
        let on_report = Arc::new(move |m: TaskMetrics| {
            files.add(m.files_scanned as usize);
            bytes.add(m.bytes_scanned as usize);
            rows_read.add(m.rows_scanned as usize);
            from_memory.add(m.files_from_memory as usize);
            spills.add(m.spill_count as usize);
            spilled.add(m.spilled_bytes as usize);
            reports.lock().unwrap_or_else(|p| p.into_inner()).push(m);
        });
        let stream = self
            .run
            .gather(&self.stage, partition, on_report)
            .inspect_ok(move |batch| output_rows.add(batch.num_rows()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
