//! The scheduler: how a query's stages and tasks run on the executors.
//!
//! ```text
//!  QueryRun (one run of a query: its id, its memory share on each executor, the executors)
//!    │ gather(stage, partition) — called when the coordinator's plan runs a RemoteStageExec
//!    ├─▶ graph: the shuffle stages that gather stage reads, placed, then started at once
//!    │         (RunningStages: where each task runs; the first failure fails every reader)
//!    └─▶ task: each partition as a signed TaskDefinition on one executor
//!              placement: which executor; a gather task fails over to the next, a shuffle
//!              task that cannot start fails the run; loss → out of the registry
//!  retry: a query whose executor was lost before any row reached the client runs again
//! ```
//!
//! The stage cutter (`crate::stages`) decides what the stages are; the plan nodes
//! (`crate::remote::RemoteStageExec`, `crate::stages::ShuffleExchangeExec`) only describe them
//! and hand their execution to this module.

mod graph;
mod placement;
mod retry;
mod stage;
mod task;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow_flight::decode::DecodedPayload;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::{DataFusionError, Result};
use floe_proto::{FileGroup, TaskMetrics};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

pub use graph::RunningStages;
pub use retry::{Restart, RetryingQuery};
pub use stage::{format_reports, ShuffleStage};

use crate::registry::ExecutorRegistry;

/// One run of a query on the cluster, and the shuffle stages started for it so far.
#[derive(Debug)]
pub struct QueryRun {
    query_id: String,
    /// The most memory the query may hold on each executor (0: the executor's limit).
    memory_limit: u64,
    registry: ExecutorRegistry,
    /// The shuffle stages each gather stage reads, by gather stage id: started once, when the
    /// first of its partitions is executed; dropped (every task ended) with the run.
    running: Mutex<HashMap<u32, Arc<OnceCell<Arc<RunningStages>>>>>,
    /// The shared shuffle stages (read by more than one part of the plan), by stage id:
    /// started once, by the first gather stage that reads one.
    shared: Mutex<HashMap<u32, Arc<OnceCell<Arc<RunningStages>>>>>,
    /// Under `EXPLAIN ANALYZE`: a gather task's stream ends only once every producer task it
    /// read has ended (and so reported), so that the printed plan shows every task.
    wait_for_reports: bool,
}

/// How long a gather task waits at its end for its producers' reports (`EXPLAIN ANALYZE`): a
/// producer ends as soon as its last bucket was read, so this is a bound, not a delay.
const REPORTS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A stage whose tasks stream their output back to the coordinator.
#[derive(Debug)]
pub struct GatherStage {
    /// The stage's id within its query.
    pub stage_id: u32,
    /// The fragment as sent to executors (scan files taken out).
    pub plan: Arc<Vec<u8>>,
    /// Each task's files.
    pub files: Vec<FileGroup>,
    /// The executor slot its first task goes to (see the scheduler's placement).
    pub first_slot: usize,
    /// The shuffle stages its tasks read, and those its runtime filters send keys to.
    pub inputs: Vec<Arc<ShuffleStage>>,
}

impl QueryRun {
    /// A run of query `query_id` on the executors of `registry`.
    pub fn new(query_id: String, memory_limit: u64, registry: ExecutorRegistry) -> Self {
        Self {
            query_id,
            memory_limit,
            registry,
            running: Mutex::default(),
            shared: Mutex::default(),
            wait_for_reports: false,
        }
    }

    /// The same run for `EXPLAIN ANALYZE`: every stage's report is in before the plan prints.
    pub fn waiting_for_reports(mut self) -> Self {
        self.wait_for_reports = true;
        self
    }

    /// Runs `partition` of `stage` on an executor and streams its batches here, after starting
    /// (once for the stage) the shuffle stages it reads; the stream fails as soon as any of
    /// those fails. `on_report` receives the executor's report.
    pub fn gather(
        self: &Arc<Self>,
        stage: &GatherStage,
        partition: usize,
        on_report: Arc<dyn Fn(TaskMetrics) + Send + Sync>,
    ) -> BoxStream<'static, Result<RecordBatch>> {
        let mut task = task::Task {
            query_id: self.query_id.clone(),
            memory_limit: self.memory_limit,
            stage_id: stage.stage_id,
            partition,
            slot: stage.first_slot + partition,
            plan: Arc::clone(&stage.plan),
            files: stage.files.get(partition).cloned().unwrap_or_default(),
            output: None,
            inputs: Vec::new(),
            registry: self.registry.clone(),
            on_report,
        };
        let started = self.started(stage.stage_id);
        let inputs = stage.inputs.clone();
        let run = Arc::clone(self);
        let wait_for_reports = self.wait_for_reports;
        // Started now, not when the stream is first read: a join on the coordinator reads its
        // build side's gather to the end before it reads the probe side's (TPC-H Q11, Q15,
        // Q22), and both sides' stages can run on the executors meanwhile. Dropping the stream
        // unread aborts the start (and the stages started go with the run).
        let opening = SpawnedTask::spawn(async move {
            let graph = started
                .get_or_try_init(|| graph::launch(&run, &inputs))
                .await?
                .clone();
            task.inputs = graph.inputs_of(&inputs);
            let data = task.open().await?;
            Ok::<_, DataFusionError>((graph, data))
        });
        futures::stream::once(async move {
            let (graph, data) = opening.join().await.map_err(|e| {
                DataFusionError::Internal(format!("starting a gather task failed: {e}"))
            })??;
            let producers = Arc::clone(&graph);
            let reported = futures::stream::once(async move {
                if wait_for_reports {
                    producers.all_ended(REPORTS_WAIT).await;
                }
            })
            .filter_map(|()| futures::future::ready(None));
            Ok::<_, DataFusionError>(graph.fail_with_producers(data).chain(reported))
        })
        .try_flatten()
        .try_filter_map(|decoded| {
            futures::future::ready(Ok(match decoded.payload {
                DecodedPayload::RecordBatch(batch) => Some(batch),
                _ => None,
            }))
        })
        .boxed()
    }

    /// Shared stage `stage` (and the stages it reads), started once for the run.
    async fn shared_stage(&self, stage: &Arc<ShuffleStage>) -> Result<Arc<RunningStages>> {
        let cell = {
            let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(shared.entry(stage.stage_id).or_default())
        };
        cell.get_or_try_init(|| graph::launch_graph(self, std::slice::from_ref(stage), true))
            .await
            .cloned()
    }

    /// The cell holding the running input stages of gather stage `stage_id`.
    fn started(&self, stage_id: u32) -> Arc<OnceCell<Arc<RunningStages>>> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(running.entry(stage_id).or_default())
    }
}

/// A status as the error of a task's stream.
fn external(status: tonic::Status) -> DataFusionError {
    DataFusionError::External(Box::new(status))
}
