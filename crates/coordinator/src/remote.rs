//! `RemoteStageExec`: runs a plan fragment's partitions on executors and streams their output.
//!
//! Partition `p` goes to live executor `p mod n` (the fragment's file groups are already
//! balanced by bytes). A task that cannot reach its executor before any data arrived is sent to
//! the next one; each executor's own report (files, bytes, rows, time) comes back in the
//! stream's trailer and shows in `EXPLAIN ANALYZE`.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Ticket;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use floe_executor::status::ExecutorLost;
use floe_executor::MAX_MESSAGE_SIZE;
use floe_proto::{FileGroup, TaskDefinition, TaskMetrics, PROTOCOL_VERSION};
use futures::TryStreamExt;
use prost::Message;
use tonic::{Code, Status};
use tracing::warn;

use crate::registry::{ExecutorInfo, ExecutorRegistry};

/// Runs `fragment` on executors, one task per output partition.
#[derive(Debug)]
pub struct RemoteStageExec {
    fragment: Arc<dyn ExecutionPlan>,
    encoded: Arc<Vec<u8>>,
    files: Arc<Vec<FileGroup>>,
    query_id: String,
    stage_id: u32,
    registry: ExecutorRegistry,
    metrics: ExecutionPlanMetricsSet,
    reports: Arc<Mutex<Vec<TaskMetrics>>>,
}

impl RemoteStageExec {
    /// Wraps an encoded fragment (scan files taken out) and each partition's files.
    pub fn new(
        fragment: Arc<dyn ExecutionPlan>,
        encoded: Vec<u8>,
        files: Vec<FileGroup>,
        query_id: String,
        stage_id: u32,
        registry: ExecutorRegistry,
    ) -> Self {
        Self {
            fragment,
            encoded: Arc::new(encoded),
            files: Arc::new(files),
            query_id,
            stage_id,
            registry,
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
            self.stage_id,
            self.fragment
                .properties()
                .output_partitioning()
                .partition_count(),
            self.encoded.len()
        )?;
        let mut reports = self
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !reports.is_empty() {
            reports.sort_by_key(|r| r.partition);
            let tasks: Vec<String> = reports
                .iter()
                .map(|r| {
                    format!(
                        "p{}@{} files={} bytes={} rows_read={} rows_out={} spills={} spilled_bytes={} time={:.1}ms",
                        r.partition,
                        r.executor_id,
                        r.files_scanned,
                        r.bytes_scanned,
                        r.rows_scanned,
                        r.output_rows,
                        r.spill_count,
                        r.spilled_bytes,
                        r.elapsed_nanos as f64 / 1e6
                    )
                })
                .collect();
            write!(f, ", executed=[{}]", tasks.join("; "))?;
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
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let spills = MetricBuilder::new(&self.metrics).counter("executor_spill_count", partition);
        let spilled =
            MetricBuilder::new(&self.metrics).counter("executor_spilled_bytes", partition);
        let reports = Arc::clone(&self.reports);
        let task = Task {
            query_id: self.query_id.clone(),
            stage_id: self.stage_id,
            partition,
            plan: Arc::clone(&self.encoded),
            files: self.files.get(partition).cloned().unwrap_or_default(),
            registry: self.registry.clone(),
            on_report: Arc::new(move |m: TaskMetrics| {
                files.add(m.files_scanned as usize);
                bytes.add(m.bytes_scanned as usize);
                rows_read.add(m.rows_scanned as usize);
                spills.add(m.spill_count as usize);
                spilled.add(m.spilled_bytes as usize);
                reports.lock().unwrap_or_else(|p| p.into_inner()).push(m);
            }),
        };
        let stream = futures::stream::once(async move { task.open().await })
            .try_flatten()
            .try_filter_map(move |decoded| {
                let out = match decoded.payload {
                    DecodedPayload::RecordBatch(batch) => {
                        output_rows.add(batch.num_rows());
                        Some(batch)
                    }
                    _ => None,
                };
                futures::future::ready(Ok(out))
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// One partition of a stage, to be run on some executor.
struct Task {
    query_id: String,
    stage_id: u32,
    partition: usize,
    plan: Arc<Vec<u8>>,
    files: FileGroup,
    registry: ExecutorRegistry,
    /// Receives the executor's report from the stream's trailer.
    on_report: Arc<dyn Fn(TaskMetrics) + Send + Sync>,
}

/// How many executors a task tries before giving up.
const MAX_ATTEMPTS: usize = 3;

impl Task {
    /// Starts the task on an executor, moving to the next on connection failures.
    async fn open(
        self,
    ) -> Result<impl futures::Stream<Item = Result<arrow_flight::decode::DecodedFlightData>>> {
        let mut last_error = None;
        for attempt in 0..MAX_ATTEMPTS {
            let live = self.registry.live();
            if live.is_empty() {
                return Err(external(Status::unavailable(
                    "no executors are registered with the coordinator",
                )));
            }
            let executor = &live[(self.partition + attempt) % live.len()];
            match self.try_on(executor).await {
                Ok(stream) => {
                    let id = executor.id.clone();
                    let registry = self.registry.clone();
                    return Ok(stream.map_err(move |e| remote_error(&registry, &id, e)));
                }
                Err(status) if is_connection_failure(&status) => {
                    warn!(executor_id = %executor.id, "task could not start: {status}");
                    self.registry.remove(&executor.id);
                    last_error = Some(status);
                }
                Err(status) => return Err(external(status)),
            }
        }
        Err(external(Status::unavailable(format!(
            "task {} of stage {} failed on {MAX_ATTEMPTS} executors; last error: {}",
            self.partition,
            self.stage_id,
            last_error
                .map(|s| s.message().to_string())
                .unwrap_or_default()
        ))))
    }

    async fn try_on(&self, executor: &ExecutorInfo) -> Result<FlightDataDecoder, Status> {
        let ticket = TaskDefinition {
            protocol_version: PROTOCOL_VERSION,
            task_token: executor.task_token.clone(),
            query_id: self.query_id.clone(),
            stage_id: self.stage_id,
            partition: self.partition as u32,
            plan: self.plan.as_ref().clone(),
            files: Some(self.files.clone()),
        };
        let mut client = FlightServiceClient::new(executor.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            client.do_get(Ticket::new(ticket.encode_to_vec())),
        )
        .await
        .map_err(|_| {
            Status::unavailable(format!("executor {} did not answer in 30 s", executor.id))
        })??;
        let on_report = Arc::clone(&self.on_report);
        // The trailer carries only app_metadata (no IPC message): take it out before decoding.
        let stream = response
            .into_inner()
            .try_filter(move |data| {
                let trailer = data.data_header.is_empty() && !data.app_metadata.is_empty();
                if trailer {
                    if let Ok(m) = TaskMetrics::decode(data.app_metadata.clone()) {
                        on_report(m);
                    }
                }
                futures::future::ready(!trailer)
            })
            .map_err(arrow_flight::error::FlightError::from);
        Ok(FlightDataDecoder::new(stream))
    }
}

fn is_connection_failure(status: &Status) -> bool {
    status.code() == Code::Unavailable && status.message().contains("executor")
        || status.code() == Code::Unavailable
            && (status.message().contains("transport") || status.message().contains("connect"))
        || status.code() == Code::Unknown && status.message().contains("transport")
}

fn external(status: Status) -> DataFusionError {
    DataFusionError::External(Box::new(status))
}

/// An error in a running task's stream. The executor's own errors keep their status; a broken
/// connection (the executor died or vanished) means the executor is lost: it is dropped from
/// the registry so that the retry goes elsewhere.
fn remote_error(
    registry: &ExecutorRegistry,
    executor_id: &str,
    e: arrow_flight::error::FlightError,
) -> DataFusionError {
    use arrow_flight::error::FlightError;
    let lost = match &e {
        FlightError::Tonic(status) => {
            matches!(
                status.code(),
                Code::Unknown | Code::Unavailable | Code::Cancelled
            ) && !status.message().starts_with("reading table")
        }
        FlightError::ProtocolError(_) | FlightError::DecodeError(_) => false,
        _ => false,
    };
    if lost {
        warn!(executor_id, "executor lost mid-task: {e}");
        registry.remove(executor_id);
        return DataFusionError::External(Box::new(ExecutorLost {
            executor_id: executor_id.to_string(),
            reason: e.to_string(),
        }));
    }
    match e {
        FlightError::Tonic(status) => external(*status),
        other => external(Status::internal(format!(
            "stream from executor {executor_id} broke: {other}"
        ))),
    }
}
