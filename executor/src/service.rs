//! The executor's Arrow Flight service. `DoGet` takes a [`FloeTicket`]:
//!
//! * a [`TaskDefinition`] from the coordinator runs one partition of a plan fragment and either
//!   streams its batches back or (a shuffle producer) splits them into buckets; either way the
//!   stream ends with a [`TaskMetrics`] message;
//! * a [`ShuffleRead`] from another executor's task streams one bucket of a producer here.
//!
//! Every error status the executor raises itself is marked (see [`floe_engine::status`]).

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::TaskContext;
use datafusion::physical_optimizer::filter_pushdown::FilterPushdown;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::metrics::MetricValue;
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::ExecutionPlan;
use floe_engine::scan::metric;
use floe_engine::storage::within_roots;
use floe_engine::write::IcebergWriteExec;
use floe_engine::{IcebergScanExec, StorageSettings};
use floe_proto::auth::{self, ClusterSecret, Tag};
use floe_proto::floe_ticket::Kind;
use floe_proto::{
    FileGroup, FloeTicket, RuntimeFilterKeys, ShuffleOutput, ShuffleRead, Signed, StageInput,
    TaskDefinition, TaskMetrics, PROTOCOL_VERSION,
};
use futures::{Stream, StreamExt, TryStreamExt};
use iceberg::io::FileIO;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::info_span;

use floe_engine::codec::decode_plan;
use floe_engine::runtime_filter::{self, RuntimeFilterExec, RuntimeFilterSourceExec};
use floe_engine::shuffle::{self, ShuffleReaderExec, ShuffleRegistry};
use floe_engine::status::{mark_from_executor, status_from_datafusion};

/// State shared by the Flight service and the registration loop.
#[derive(Debug)]
pub struct ExecutorState {
    /// This executor's id.
    pub executor_id: String,
    /// The cluster secret this executor proves at registration.
    pub secret: ClusterSecret,
    /// The key shuffle reads between executors are MACed with (derived from the secret).
    pub shuffle_key: Tag,
    /// Session keys of this executor's registrations, newest first (at most two: tasks MACed
    /// with the previous one may still be on their way when it registers again).
    pub session_keys: RwLock<Vec<Tag>>,
    /// Nonces of the tasks accepted lately: a task is run at most once.
    seen_tasks: Mutex<NonceWindow>,
    /// Tasks currently streaming.
    pub running_tasks: AtomicUsize,
    /// Context every task runs in.
    pub task_ctx: Arc<TaskContext>,
    /// The memory shares of the queries with a per-query limit running here.
    pub query_pools: floe_engine::memory::QueryPools,
    /// Buckets of the shuffle producers running here.
    pub shuffles: Arc<ShuffleRegistry>,
    /// What every task reads and writes with: this executor's own storage settings, confined
    /// to `roots`.
    pub file_io: FileIO,
    /// The storage roots: every path a task names must be under one of them.
    pub roots: Vec<String>,
}

impl ExecutorState {
    /// The state of a new executor.
    pub fn new(
        executor_id: String,
        secret: ClusterSecret,
        task_ctx: Arc<TaskContext>,
        storage: &StorageSettings,
        roots: Vec<String>,
    ) -> Self {
        let shuffles = ShuffleRegistry::process();
        shuffles.add_local_executor(&executor_id);
        Self {
            executor_id,
            shuffle_key: secret.shuffle_key(),
            secret,
            session_keys: RwLock::default(),
            seen_tasks: Mutex::default(),
            running_tasks: AtomicUsize::new(0),
            task_ctx,
            query_pools: Default::default(),
            shuffles,
            file_io: floe_engine::storage::confined_file_io(storage, roots.clone()),
            roots,
        }
    }

    /// Adopts the session key of a new registration.
    pub fn set_session_key(&self, key: Tag) {
        let mut keys = self.session_keys.write().unwrap_or_else(|p| p.into_inner());
        keys.insert(0, key);
        keys.truncate(2);
    }
}

/// The most recent task nonces, to refuse a replayed task.
#[derive(Debug, Default)]
struct NonceWindow {
    seen: HashSet<Vec<u8>>,
    order: VecDeque<Vec<u8>>,
}

/// Task nonces remembered.
const NONCE_WINDOW: usize = 1 << 16;

impl NonceWindow {
    /// Records a nonce; false if it was seen already.
    fn first_time(&mut self, nonce: &[u8]) -> bool {
        if self.seen.contains(nonce) {
            return false;
        }
        if self.order.len() >= NONCE_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(nonce.to_vec());
        self.order.push_back(nonce.to_vec());
        true
    }
}

/// Arrow Flight service running tasks.
#[derive(Debug, Clone)]
pub struct ExecutorFlightService {
    state: Arc<ExecutorState>,
}

fn check_version(protocol_version: u32) -> Result<(), Status> {
    if protocol_version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "peer speaks protocol version {protocol_version}, this executor speaks \
             {PROTOCOL_VERSION}"
        )));
    }
    Ok(())
}

impl ExecutorFlightService {
    /// A service over shared executor state.
    pub fn new(state: Arc<ExecutorState>) -> Self {
        Self { state }
    }

    /// The task in a signed ticket, if this executor's coordinator made it for this executor
    /// and it was not run before.
    fn authenticate_task(&self, signed: &Signed) -> Result<TaskDefinition, Status> {
        let keys = self
            .state
            .session_keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if keys.is_empty() {
            return Err(Status::unavailable(
                "executor is not registered with a coordinator yet",
            ));
        }
        if !keys
            .iter()
            .any(|k| auth::verify(&auth::task_mac(k, &signed.body), &signed.mac))
        {
            return Err(Status::permission_denied(
                "task is not from this executor's coordinator (its MAC does not match)",
            ));
        }
        let task = TaskDefinition::decode(signed.body.as_slice())
            .map_err(|e| Status::invalid_argument(format!("task is not a TaskDefinition: {e}")))?;
        check_version(task.protocol_version)?;
        if task.executor_id != self.state.executor_id {
            return Err(Status::permission_denied(format!(
                "task is for executor '{}', not this one",
                task.executor_id
            )));
        }
        if task.nonce.len() != auth::LEN
            || !self
                .state
                .seen_tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .first_time(&task.nonce)
        {
            return Err(Status::permission_denied(
                "task was already run here (a replayed task is refused)",
            ));
        }
        Ok(task)
    }

    /// Refuses a task that names a path outside this executor's storage roots: its files and
    /// their delete files, any file in its plan's scans, the data folder of its writes. (The
    /// FileIO refuses such paths too; this names the path in a PERMISSION_DENIED up front.)
    fn check_paths(&self, plan: &Arc<dyn ExecutionPlan>, files: &FileGroup) -> Result<(), Status> {
        fn group_paths(group: &FileGroup, out: &mut Vec<String>) {
            for file in &group.files {
                out.push(file.path.clone());
                out.extend(file.deletes.iter().map(|d| d.path.clone()));
            }
        }
        let mut paths = Vec::new();
        group_paths(files, &mut paths);
        let mut stack = vec![Arc::clone(plan)];
        while let Some(node) = stack.pop() {
            if let Some(scan) = node.as_any().downcast_ref::<IcebergScanExec>() {
                for group in &scan.node().file_groups {
                    group_paths(group, &mut paths);
                }
            }
            if let Some(write) = node.as_any().downcast_ref::<IcebergWriteExec>() {
                // A data folder is checked as a location inside it.
                let folder = write.node().data_location.trim_end_matches('/');
                paths.push(format!("{folder}/data-file"));
            }
            stack.extend(node.children().into_iter().cloned());
        }
        match paths.iter().find(|p| !within_roots(p, &self.state.roots)) {
            None => Ok(()),
            Some(path) => Err(Status::permission_denied(format!(
                "task names '{path}', which is outside this executor's storage roots ({})",
                self.state.roots.join(", ")
            ))),
        }
    }

    /// The context a task of `query_id` runs in: the executor's, with the query's own share of
    /// memory when the coordinator set a per-query limit.
    fn task_context(&self, query_id: &str, memory_limit: u64) -> Arc<TaskContext> {
        let base = &self.state.task_ctx;
        if memory_limit == 0 {
            return Arc::clone(base);
        }
        let shared = Arc::clone(&base.runtime_env().memory_pool);
        let pool = self.state.query_pools.get(
            &shared,
            query_id,
            usize::try_from(memory_limit).unwrap_or(usize::MAX),
        );
        Arc::new(TaskContext::new(
            base.task_id(),
            base.session_id(),
            base.session_config().clone(),
            base.scalar_functions().clone(),
            base.aggregate_functions().clone(),
            base.window_functions().clone(),
            floe_engine::memory::with_pool(&base.runtime_env(), pool),
        ))
    }

    /// Runs one task: streams its output, or (a shuffle producer) fills its buckets. Either
    /// way the stream ends with the task's [`TaskMetrics`].
    fn run_task(&self, signed: Signed) -> Result<BoxedFlightStream<FlightData>, Status> {
        let task = self.authenticate_task(&signed)?;
        let span = info_span!("task", query_id = %task.query_id, stage = task.stage_id, partition = task.partition);
        let _entered = span.enter();
        let partition = task.partition as usize;
        let plan = decode_plan(&task.plan, &self.state.task_ctx, self.state.file_io.clone())
            .map_err(|e| Status::invalid_argument(format!("task plan: {e}")))?;
        let files = floe_proto::required(task.files.clone(), "TaskDefinition.files")
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.check_paths(&plan, &files)?;
        let plan =
            floe_engine::cooperative::yielding_joins(plan).map_err(status_from_datafusion)?;
        // The fragment cut down to this task's partition, when every node of it can be: then
        // DataFusion's dynamic filters (a hash join's build side, a TopK's bound) reach the
        // scan, as on a single node. Otherwise the fragment runs as planned, at its partition.
        let local = self.bind(&plan, &task, partition, files.clone(), true)?;
        let (plan, split, run) = match local {
            (plan, split) if single_partition(&plan) => {
                let options = self.state.task_ctx.session_config().options();
                let plan = FilterPushdown::new_post_optimization()
                    .optimize(plan, options)
                    .map_err(status_from_datafusion)?;
                (plan, split, 0)
            }
            _ => {
                let (plan, split) = self.bind(&plan, &task, partition, files, false)?;
                (plan, split, partition)
            }
        };
        let partitions = plan.properties().output_partitioning().partition_count();
        if run >= partitions {
            return Err(Status::invalid_argument(format!(
                "task asks for partition {partition} of a fragment with {partitions}"
            )));
        }
        let context = self.task_context(&task.query_id, task.memory_limit);
        let batches = plan
            .execute(run, Arc::clone(&context))
            .map_err(status_from_datafusion)?;
        self.state.running_tasks.fetch_add(1, Ordering::SeqCst);
        let guard = RunningGuard(Arc::clone(&self.state));
        let started = Instant::now();
        let report = TaskReport {
            executor_id: self.state.executor_id.clone(),
            stage_id: task.stage_id,
            partition,
            plan: Arc::clone(&plan),
            started,
        };
        let Some((split, buckets, readers)) = split else {
            let schema = batches.schema();
            let rows = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&rows);
            let batches = batches
                .inspect_ok(move |b| {
                    counted.fetch_add(b.num_rows(), Ordering::Relaxed);
                })
                // Views cut from larger buffers are compacted before IPC sends them whole.
                .and_then(|b| futures::future::ready(floe_engine::views::compact(b)))
                .map_err(|e| FlightError::Tonic(Box::new(status_from_datafusion(e))));
            let data = FlightDataEncoderBuilder::new()
                .with_schema(schema)
                .build(batches)
                .map_err(Status::from);
            let trailer = futures::stream::once(async move {
                let _guard = guard;
                Ok(report.trailer(rows.load(Ordering::Relaxed) as u64, 0))
            });
            return Ok(data.chain(trailer).boxed());
        };
        let (senders, buckets_guard) = self.state.shuffles.register(
            &task.query_id,
            task.stage_id,
            task.partition,
            batches.schema(),
            buckets,
            readers,
        );
        let kept = (readers > 1).then(|| {
            MemoryConsumer::new(format!("stage {} kept for its readers", task.stage_id))
                .register(context.memory_pool())
        });
        let output = shuffle::Output {
            senders,
            readers,
            kept,
        };
        let produced = futures::stream::once(async move {
            let _guard = guard;
            match shuffle::produce(batches, split, output).await {
                Ok(produced) => {
                    drop(buckets_guard);
                    Ok(report.trailer(produced.rows, produced.bytes))
                }
                Err(e) => {
                    buckets_guard.linger();
                    Err(status_from_datafusion(e))
                }
            }
        });
        Ok(produced.boxed())
    }

    /// The fragment bound to task `partition`: its files in the scan, its producers in the
    /// shuffle readers, a hash shuffle's root taken off (with how to split). With `local`, the
    /// leaves become single partitions holding only this task's share.
    #[allow(clippy::type_complexity)]
    fn bind(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        task: &TaskDefinition,
        partition: usize,
        files: FileGroup,
        local: bool,
    ) -> Result<
        (
            Arc<dyn ExecutionPlan>,
            Option<(shuffle::Split, usize, usize)>,
        ),
        Status,
    > {
        let plan = with_task_files(Arc::clone(plan), partition, files, local)
            .map_err(status_from_datafusion)?;
        let plan = with_task_inputs(
            plan,
            &task.query_id,
            &task.inputs,
            partition,
            self.state.shuffle_key,
            local,
        )
        .map_err(status_from_datafusion)?;
        Ok(match &task.output {
            None => (plan, None),
            Some(output) => {
                let (input, split) = shuffle_split(plan, output, partition)?;
                let readers = (output.readers as usize).max(1);
                (input, Some((split, output.buckets as usize, readers)))
            }
        })
    }

    /// Serves a consumer's bucket of one of this executor's shuffle producers (waiting for the
    /// producer's task to register it, up to `shuffle::CLAIM_WAIT`).
    async fn serve_shuffle(&self, signed: Signed) -> Result<BoxedFlightStream<FlightData>, Status> {
        let expected = auth::shuffle_read_mac(&self.state.shuffle_key, &signed.body);
        if !auth::verify(&expected, &signed.mac) {
            return Err(Status::permission_denied(
                "shuffle read is not from an executor of this cluster (its MAC does not match)",
            ));
        }
        let read = ShuffleRead::decode(signed.body.as_slice())
            .map_err(|e| Status::invalid_argument(format!("not a ShuffleRead: {e}")))?;
        check_version(read.protocol_version)?;
        let (schema, receiver) = self
            .state
            .shuffles
            .claim_waiting(&read, shuffle::CLAIM_WAIT)
            .await?;
        let batches = shuffle::serve_bucket(receiver, read)
            .map_err(|s| FlightError::Tonic(Box::new(mark_from_executor(s))));
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(data.boxed())
    }
}

impl ExecutorFlightService {
    /// Takes a consumer task's join keys for this executor's producers of the same query (see
    /// `floe_engine::runtime_filter`); answers with an empty stream.
    fn take_runtime_filter(&self, signed: Signed) -> Result<BoxedFlightStream<FlightData>, Status> {
        let expected = auth::runtime_filter_mac(&self.state.shuffle_key, &signed.body);
        if !auth::verify(&expected, &signed.mac) {
            return Err(Status::permission_denied(
                "runtime filter is not from an executor of this cluster (its MAC does not match)",
            ));
        }
        let keys = RuntimeFilterKeys::decode(signed.body.as_slice())
            .map_err(|e| Status::invalid_argument(format!("not RuntimeFilterKeys: {e}")))?;
        runtime_filter::receive(keys)?;
        Ok(futures::stream::empty().boxed())
    }
}

/// What a task reports when it ends.
struct TaskReport {
    executor_id: String,
    stage_id: u32,
    partition: usize,
    plan: Arc<dyn ExecutionPlan>,
    started: Instant,
}

impl TaskReport {
    /// The trailer message: [`TaskMetrics`] in app_metadata, no IPC message.
    fn trailer(&self, output_rows: u64, shuffle_bytes_written: u64) -> FlightData {
        let plan = &self.plan;
        let metrics = TaskMetrics {
            executor_id: self.executor_id.clone(),
            partition: self.partition as u32,
            files_scanned: sum_metric(plan, metric::FILES_SCANNED),
            bytes_scanned: sum_metric(plan, metric::BYTES_SCANNED),
            rows_scanned: sum_metric(plan, metric::ROWS_SCANNED),
            rows_deleted: sum_metric(plan, metric::ROWS_DELETED),
            files_from_memory: sum_metric(plan, metric::FILES_FROM_MEMORY),
            output_rows,
            elapsed_nanos: self.started.elapsed().as_nanos() as u64,
            spill_count: sum_metric(plan, "spill_count"),
            spilled_bytes: sum_metric(plan, "spilled_bytes"),
            stage_id: self.stage_id,
            shuffle_bytes_written,
            shuffle_bytes_read: sum_metric(plan, shuffle::SHUFFLE_BYTES_READ),
        };
        FlightData::new().with_app_metadata(metrics.encode_to_vec())
    }
}

/// The most consumer stages one shuffle stage's output is kept for (a bound on what a task
/// definition can ask an executor to hold).
const MAX_READERS: u32 = 16;

/// The producer's input and how to split it: a hash shuffle's plan is rooted at the
/// `RepartitionExec` that says how (which is not run), a broadcast's plan is the input itself.
fn shuffle_split(
    plan: Arc<dyn ExecutionPlan>,
    output: &ShuffleOutput,
    partition: usize,
) -> Result<(Arc<dyn ExecutionPlan>, shuffle::Split), Status> {
    if output.buckets == 0 {
        return Err(Status::invalid_argument(
            "a shuffle needs at least one bucket",
        ));
    }
    if output.broadcast {
        if output.readers > 1 {
            return Err(Status::invalid_argument(
                "a broadcast has one reader (its join's tasks)",
            ));
        }
        return Ok((plan, shuffle::Split::Broadcast));
    }
    if output.readers > MAX_READERS {
        return Err(Status::invalid_argument(format!(
            "a shuffle read by {} stages (at most {MAX_READERS})",
            output.readers
        )));
    }
    let Some(repartition) = plan.as_any().downcast_ref::<RepartitionExec>() else {
        return Err(Status::invalid_argument(
            "a hash shuffle's plan must be rooted at a RepartitionExec",
        ));
    };
    let partitioning = repartition.partitioning().clone();
    if partitioning.partition_count() != output.buckets as usize {
        return Err(Status::invalid_argument(format!(
            "shuffle of {} buckets under a RepartitionExec into {}",
            output.buckets,
            partitioning.partition_count()
        )));
    }
    let input = Arc::clone(repartition.input());
    let partitions = input.properties().output_partitioning().partition_count();
    let partitioner = BatchPartitioner::try_new(
        partitioning,
        datafusion::physical_plan::metrics::Time::new(),
        partition,
        partitions,
    )
    .map_err(status_from_datafusion)?;
    Ok((input, shuffle::Split::Hash(partitioner)))
}

/// Binds the plan's shuffle readers to this task: where their producers run and which bucket
/// of a broadcast is this task's.
fn with_task_inputs(
    plan: Arc<dyn ExecutionPlan>,
    query_id: &str,
    inputs: &[StageInput],
    partition: usize,
    shuffle_key: Tag,
    local: bool,
) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let plan = plan.transform_up(|node| {
        let any = node.as_any();
        if let Some(filter) = any.downcast_ref::<RuntimeFilterExec>() {
            return Ok(Transformed::yes(
                Arc::new(filter.bound(query_id)) as Arc<dyn ExecutionPlan>
            ));
        }
        if let Some(source) = any.downcast_ref::<RuntimeFilterSourceExec>() {
            let mut endpoints = Vec::new();
            for target in &source.node().targets {
                let Some(input) = inputs.iter().find(|i| i.stage_id == *target) else {
                    return Err(datafusion::common::DataFusionError::Plan(format!(
                        "task filters stage {target} but was not told where its tasks run"
                    )));
                };
                endpoints.extend(input.tasks.iter().map(|t| t.endpoint.clone()));
            }
            let bound = source.bound(query_id, partition as u32, endpoints, shuffle_key);
            return Ok(Transformed::yes(Arc::new(bound) as Arc<dyn ExecutionPlan>));
        }
        let Some(reader) = any.downcast_ref::<ShuffleReaderExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(input) = inputs.iter().find(|i| i.stage_id == reader.stage_id()) else {
            return Err(datafusion::common::DataFusionError::Plan(format!(
                "task reads stage {} but was not told where its tasks run",
                reader.stage_id()
            )));
        };
        let bound = reader.with_producers(query_id, input.tasks.clone(), partition, shuffle_key)?;
        let bound = if local {
            bound.localized(partition)?
        } else {
            bound
        };
        Ok(Transformed::yes(Arc::new(bound) as Arc<dyn ExecutionPlan>))
    })?;
    Ok(plan.data)
}

/// Decrements the running-task count when a task's stream is dropped, finished or not.
struct RunningGuard(Arc<ExecutorState>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running_tasks.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Puts the task's files into the fragment's Iceberg scan, at the task's partition.
fn with_task_files(
    plan: Arc<dyn ExecutionPlan>,
    partition: usize,
    files: FileGroup,
    local: bool,
) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let mut files = Some(files);
    let plan = plan.transform_up(|node| {
        let Some(scan) = node.as_any().downcast_ref::<IcebergScanExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(files) = files.take() else {
            return Err(datafusion::common::DataFusionError::Plan(
                "a task fragment holds one Iceberg scan".into(),
            ));
        };
        let bound = if local {
            scan.with_single_partition(files)?
        } else {
            scan.with_partition_files(partition, files)?
        };
        Ok(Transformed::yes(Arc::new(bound) as Arc<dyn ExecutionPlan>))
    })?;
    Ok(plan.data)
}

/// Whether `plan` runs as a task cut down to its own partition: every node has a single output
/// partition (a hash join's build then waits for no other partition of this plan instance), and
/// no node takes meaning from the partition's number (a write names its files after it).
fn single_partition(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.properties().output_partitioning().partition_count() == 1
        && !plan.as_any().is::<IcebergWriteExec>()
        && plan.children().iter().all(|c| single_partition(c))
}

/// Sums one named counter over every node of a plan.
pub fn sum_metric(plan: &Arc<dyn ExecutionPlan>, name: &str) -> u64 {
    let own = plan
        .metrics()
        .map(|m| {
            m.iter()
                .filter(|metric| metric.value().name() == name)
                .map(|metric| match metric.value() {
                    MetricValue::Time { time, .. } => time.value() as u64,
                    other => other.as_usize() as u64,
                })
                .sum::<u64>()
        })
        .unwrap_or(0);
    own + plan
        .children()
        .into_iter()
        .map(|c| sum_metric(c, name))
        .sum::<u64>()
}

/// The Flight action that reports an executor's running tasks.
pub const STATUS_ACTION: &str = "floe.status";

type BoxedFlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightService for ExecutorFlightService {
    type HandshakeStream = BoxedFlightStream<HandshakeResponse>;
    type ListFlightsStream = BoxedFlightStream<FlightInfo>;
    type DoGetStream = BoxedFlightStream<FlightData>;
    type DoPutStream = BoxedFlightStream<PutResult>;
    type DoActionStream = BoxedFlightStream<arrow_flight::Result>;
    type ListActionsStream = BoxedFlightStream<ActionType>;
    type DoExchangeStream = BoxedFlightStream<FlightData>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = FloeTicket::decode(request.into_inner().ticket)
            .map_err(|e| Status::invalid_argument(format!("ticket is not a FloeTicket: {e}")));
        let result = match ticket.map(|t| t.kind) {
            Ok(Some(Kind::Task(task))) => self.run_task(task),
            Ok(Some(Kind::ShuffleRead(read))) => self.serve_shuffle(read).await,
            Ok(Some(Kind::RuntimeFilter(keys))) => self.take_runtime_filter(keys),
            Ok(None) => Err(Status::invalid_argument("empty FloeTicket")),
            Err(e) => Err(e),
        };
        result
            .map(|stream| Response::new(stream.map_err(mark_from_executor).boxed()))
            .map_err(mark_from_executor)
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("executors take tasks only (DoGet)"))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("executors take tasks only (DoGet)"))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("executors take tasks only (DoGet)"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("executors take tasks only (DoGet)"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("executors take tasks only (DoGet)"))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("executors take tasks only (DoGet)"))
    }

    /// `floe.status`: this executor's id and how many tasks it is running, as JSON.
    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != STATUS_ACTION {
            return Err(Status::unimplemented(format!(
                "executors answer only the '{STATUS_ACTION}' action, not '{}'",
                action.r#type
            )));
        }
        let body = format!(
            "{{\"executor_id\":\"{}\",\"running_tasks\":{}}}",
            self.state.executor_id,
            self.state.running_tasks.load(Ordering::SeqCst)
        );
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(
            futures::stream::once(async { Ok(result) }).boxed(),
        ))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("executors take tasks only (DoGet)"))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("executors take tasks only (DoGet)"))
    }
}
