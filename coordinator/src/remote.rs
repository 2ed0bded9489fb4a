//! `RemoteStageExec`: runs a plan fragment's partitions on executors and streams their output
//! to the coordinator, after starting the shuffle stages the fragment reads.
//!
//! Task `p` of a stage goes to live executor `p mod n` (file groups are already balanced by
//! bytes). A task that cannot reach its executor is sent to the next one; each executor's own
//! report (files, bytes, rows, shuffle bytes, spills, time) comes back in the stream's trailer
//! and shows in `EXPLAIN ANALYZE`.
//!
//! All stages of a query start together, producers first, so that data flows through the
//! shuffles as it is produced. A producer that fails fails the whole query at once; dropping
//! the query (it finished, failed, or its client went away) ends every task it started.

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
use floe_executor::status::{is_from_executor, lost_executor};
use floe_executor::MAX_MESSAGE_SIZE;
use floe_proto::floe_ticket::Kind;
use floe_proto::{
    FileGroup, FloeTicket, ShuffleOutput, StageInput, TaskDefinition, TaskLocation, TaskMetrics,
    PROTOCOL_VERSION,
};
use std::collections::HashMap;
use tokio::sync::{watch, OnceCell};

use crate::stages::{format_reports, ShuffleStage};
use futures::{StreamExt, TryStreamExt};
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
    /// The shuffle stages the fragment reads.
    inputs: Vec<Arc<ShuffleStage>>,
    launched: Arc<OnceCell<Arc<LaunchedStages>>>,
    query_id: String,
    memory_limit: u64,
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
        inputs: Vec<Arc<ShuffleStage>>,
        (query_id, memory_limit): (String, u64),
        stage_id: u32,
        registry: ExecutorRegistry,
    ) -> Self {
        Self {
            fragment,
            encoded: Arc::new(encoded),
            files: Arc::new(files),
            inputs,
            launched: Arc::default(),
            query_id,
            memory_limit,
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
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let spills = MetricBuilder::new(&self.metrics).counter("executor_spill_count", partition);
        let spilled =
            MetricBuilder::new(&self.metrics).counter("executor_spilled_bytes", partition);
        let reports = Arc::clone(&self.reports);
        let mut task = Task {
            query_id: self.query_id.clone(),
            memory_limit: self.memory_limit,
            stage_id: self.stage_id,
            partition,
            plan: Arc::clone(&self.encoded),
            files: self.files.get(partition).cloned().unwrap_or_default(),
            output: None,
            inputs: Vec::new(),
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
        let launched = Arc::clone(&self.launched);
        let stages = self.inputs.clone();
        let stream = futures::stream::once(async move {
            let graph = launched
                .get_or_try_init(|| {
                    launch(&stages, (&task.query_id, task.memory_limit), &task.registry)
                })
                .await?
                .clone();
            task.inputs = graph.inputs_of(&stages);
            let data = task.open().await?;
            Ok::<_, DataFusionError>(graph.fail_with_producers(data))
        })
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
    /// The most memory the query may hold on the executor (0: the executor's limit).
    memory_limit: u64,
    stage_id: u32,
    partition: usize,
    plan: Arc<Vec<u8>>,
    files: FileGroup,
    /// Present for a shuffle producer.
    output: Option<ShuffleOutput>,
    /// Where the stages this task reads run.
    inputs: Vec<StageInput>,
    registry: ExecutorRegistry,
    /// Receives the executor's report from the stream's trailer.
    on_report: Arc<dyn Fn(TaskMetrics) + Send + Sync>,
}

type FlightStream = futures::stream::BoxStream<'static, Result<arrow_flight::FlightData>>;

impl Task {
    /// Starts the task on an executor, trying every live executor once (from the task's own
    /// place in the rotation) before giving up: an executor that cannot be reached is dropped,
    /// one that turns the task away is kept, and neither fails a query the others can run.
    /// Returns where it runs and its raw stream, the trailer already taken out and reported.
    async fn start(&self) -> Result<(ExecutorInfo, FlightStream)> {
        let live = self.registry.live();
        if live.is_empty() {
            return Err(external(Status::unavailable(
                "no executors are registered with the coordinator",
            )));
        }
        let mut last_error = None;
        for attempt in 0..live.len() {
            let executor = &live[(self.partition + attempt) % live.len()];
            match self.try_on(executor).await {
                Ok(stream) => {
                    let id = executor.id.clone();
                    let registry = self.registry.clone();
                    let stream = stream
                        .map_err(move |status| remote_error(&registry, &id, status))
                        .boxed();
                    return Ok((executor.clone(), stream));
                }
                Err(status) if is_connection_failure(&status) => {
                    warn!(executor_id = %executor.id, "task could not start: {status}");
                    self.registry.remove(&executor.id);
                    last_error = Some(status);
                }
                // The executor is up but cannot take the task now (e.g. it is registering
                // again): try the next one, and keep it.
                Err(status) if is_from_executor(&status) && status.code() == Code::Unavailable => {
                    warn!(executor_id = %executor.id, "executor turned the task away: {status}");
                    last_error = Some(status);
                }
                Err(status) => return Err(external(status)),
            }
        }
        Err(external(Status::unavailable(format!(
            "task {} of stage {} could not start on any of the {} live executor(s); last error: {}",
            self.partition,
            self.stage_id,
            live.len(),
            last_error
                .map(|s| s.message().to_string())
                .unwrap_or_default()
        ))))
    }

    /// Starts a task whose output streams back here, decoded.
    async fn open(
        self,
    ) -> Result<impl futures::Stream<Item = Result<arrow_flight::decode::DecodedFlightData>>> {
        let (_, stream) = self.start().await?;
        // Errors were already turned into DataFusion errors; the decoder wants Flight errors.
        let stream =
            stream.map_err(|e| arrow_flight::error::FlightError::ExternalError(Box::new(e)));
        Ok(FlightDataDecoder::new(stream).map_err(|e| match e {
            arrow_flight::error::FlightError::ExternalError(inner) => {
                match inner.downcast::<DataFusionError>() {
                    Ok(e) => *e,
                    Err(other) => DataFusionError::External(other),
                }
            }
            other => external(Status::internal(format!(
                "decoding a task's output: {other}"
            ))),
        }))
    }

    async fn try_on(
        &self,
        executor: &ExecutorInfo,
    ) -> Result<impl futures::Stream<Item = Result<arrow_flight::FlightData, Status>>, Status> {
        let task = TaskDefinition {
            protocol_version: PROTOCOL_VERSION,
            query_id: self.query_id.clone(),
            memory_limit: self.memory_limit,
            stage_id: self.stage_id,
            partition: self.partition as u32,
            plan: self.plan.as_ref().clone(),
            files: Some(self.files.clone()),
            output: self.output,
            inputs: self.inputs.clone(),
            executor_id: executor.id.clone(),
            nonce: floe_executor::random_nonce().to_vec(),
        };
        let body = task.encode_to_vec();
        let mac = floe_proto::auth::task_mac(&executor.session_key, &body).to_vec();
        let ticket = FloeTicket {
            kind: Some(Kind::Task(floe_proto::Signed { body, mac })),
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
        Ok(response.into_inner().try_filter(move |data| {
            let trailer = data.data_header.is_empty() && !data.app_metadata.is_empty();
            if trailer {
                if let Ok(m) = TaskMetrics::decode(data.app_metadata.clone()) {
                    on_report(m);
                }
            }
            futures::future::ready(!trailer)
        }))
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running shuffle stages of one gather stage: where their tasks run, and the first
/// failure of any of them.
pub struct LaunchedStages {
    locations: HashMap<u32, Vec<TaskLocation>>,
    failure: watch::Receiver<Option<Arc<DataFusionError>>>,
    _tasks: Vec<AbortOnDrop>,
}

impl fmt::Debug for LaunchedStages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaunchedStages")
            .field("locations", &self.locations)
            .finish()
    }
}

impl LaunchedStages {
    /// Where the tasks of `stages` run, for a task that reads them.
    fn inputs_of(&self, stages: &[Arc<ShuffleStage>]) -> Vec<StageInput> {
        stages
            .iter()
            .map(|s| StageInput {
                stage_id: s.stage_id,
                tasks: self.locations.get(&s.stage_id).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// `stream`, failing as soon as any producer fails (its consumers may be waiting on it).
    fn fail_with_producers<S, T>(
        self: Arc<Self>,
        stream: S,
    ) -> impl futures::Stream<Item = Result<T>> + Send
    where
        S: futures::Stream<Item = Result<T>> + Send + Unpin + 'static,
        T: Send + 'static,
    {
        let failure = self.failure.clone();
        futures::stream::unfold(Some((stream, failure, self)), |state| async move {
            let (mut stream, mut failure, graph) = state?;
            let next = tokio::select! {
                biased;
                item = stream.next() => Ok(item),
                e = first_failure(&mut failure) => Err(e),
            };
            match next {
                Ok(item) => item.map(|i| (i, Some((stream, failure, graph)))),
                Err(e) => Some((Err(DataFusionError::Shared(e)), None)),
            }
        })
    }
}

/// Resolves with the first producer failure; never, if there is none.
async fn first_failure(
    failure: &mut watch::Receiver<Option<Arc<DataFusionError>>>,
) -> Arc<DataFusionError> {
    let first = failure
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|e| e.clone());
    match first {
        Some(e) => e,
        None => std::future::pending().await,
    }
}

/// Starts every task of `stages` and of the stages they read, producers before consumers.
async fn launch(
    stages: &[Arc<ShuffleStage>],
    (query_id, memory_limit): (&str, u64),
    registry: &ExecutorRegistry,
) -> Result<Arc<LaunchedStages>> {
    let mut order = Vec::new();
    for stage in stages {
        post_order(stage, &mut order);
    }
    let (failed, failure) = watch::channel(None);
    let mut locations: HashMap<u32, Vec<TaskLocation>> = HashMap::new();
    let mut tasks = Vec::new();
    for stage in order {
        if locations.contains_key(&stage.stage_id) {
            continue;
        }
        let inputs: Vec<StageInput> = stage
            .inputs
            .iter()
            .map(|s| StageInput {
                stage_id: s.stage_id,
                tasks: locations.get(&s.stage_id).cloned().unwrap_or_default(),
            })
            .collect();
        let starts = (0..stage.tasks).map(|partition| {
            let reporting = Arc::clone(&stage);
            let task = Task {
                query_id: query_id.to_string(),
                memory_limit,
                stage_id: stage.stage_id,
                partition,
                plan: Arc::clone(&stage.encoded),
                files: stage.files.get(partition).cloned().unwrap_or_default(),
                output: Some(stage.output),
                inputs: inputs.clone(),
                registry: registry.clone(),
                on_report: Arc::new(move |m: TaskMetrics| {
                    reporting
                        .reports
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(m);
                }),
            };
            async move { task.start().await }
        });
        let started = futures::future::try_join_all(starts).await?;
        let mut placed = Vec::with_capacity(started.len());
        for (executor, mut stream) in started {
            placed.push(TaskLocation {
                executor_id: executor.id.clone(),
                endpoint: executor.endpoint.clone(),
            });
            let failed = failed.clone();
            tasks.push(AbortOnDrop(tokio::spawn(async move {
                while let Some(item) = stream.next().await {
                    if let Err(e) = item {
                        failed.send_if_modified(|f| {
                            if f.is_none() {
                                *f = Some(Arc::new(e));
                                true
                            } else {
                                false
                            }
                        });
                        return;
                    }
                }
            })));
        }
        locations.insert(stage.stage_id, placed);
    }
    Ok(Arc::new(LaunchedStages {
        locations,
        failure,
        _tasks: tasks,
    }))
}

fn post_order(stage: &Arc<ShuffleStage>, out: &mut Vec<Arc<ShuffleStage>>) {
    for input in &stage.inputs {
        post_order(input, out);
    }
    out.push(Arc::clone(stage));
}

/// The task could not reach that executor (the transport failed; the executor said nothing), as
/// opposed to the executor refusing or failing the task.
fn is_connection_failure(status: &Status) -> bool {
    !is_from_executor(status)
        && matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        )
}

fn external(status: Status) -> DataFusionError {
    DataFusionError::External(Box::new(status))
}

/// An error in a running task's stream. The executor's own errors keep their status, unless
/// they say another executor (a shuffle producer) was lost; a broken connection means this
/// executor is lost. A lost executor is dropped from the registry so that the retry goes
/// elsewhere.
fn remote_error(registry: &ExecutorRegistry, executor_id: &str, status: Status) -> DataFusionError {
    let lost = if let Some(producer) = lost_executor(&status) {
        Some(producer)
    } else if is_from_executor(&status) {
        None
    } else if matches!(
        status.code(),
        Code::Unknown | Code::Unavailable | Code::Cancelled | Code::Internal
    ) {
        Some(executor_id.to_string())
    } else {
        None
    };
    match lost {
        Some(lost) => {
            warn!(executor_id = %lost, "executor lost mid-task: {}", status.message());
            registry.remove(&lost);
            DataFusionError::External(Box::new(ExecutorLost {
                executor_id: lost,
                reason: status.message().to_string(),
            }))
        }
        None => external(status),
    }
}
