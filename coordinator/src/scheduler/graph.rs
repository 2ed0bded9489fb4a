//! A query's shuffle stages, started together (every task at once) so that data flows
//! through the shuffles as it is produced: where each stage's tasks run, and the first failure
//! of any of them, which fails every consumer at once. Dropping the graph ends its tasks.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use floe_engine::runtime::{spawn_scoped, ScopedTask};
use floe_proto::{StageInput, TaskLocation, TaskMetrics};
use futures::StreamExt;
use tokio::sync::watch;
use tonic::Status;

use super::external;
use super::placement::first_choice;
use super::stage::ShuffleStage;
use super::task::Task;
use super::QueryRun;
use crate::registry::ExecutorInfo;

/// The running shuffle stages of one gather stage: where their tasks run, and the first
/// failure of any of them.
pub struct RunningStages {
    locations: HashMap<u32, Vec<TaskLocation>>,
    failure: watch::Receiver<Option<Arc<DataFusionError>>>,
    /// How many of the tasks have ended (their report, if any, taken).
    ended: watch::Receiver<usize>,
    tasks: Vec<ScopedTask>,
    /// The shared stages read (each started once for the run, see [`QueryRun`]), and what
    /// passes their first failure on to this graph's.
    shared: Vec<Arc<RunningStages>>,
    _forwarders: Vec<ScopedTask>,
}

impl fmt::Debug for RunningStages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningStages")
            .field("locations", &self.locations)
            .finish()
    }
}

impl RunningStages {
    /// Where the tasks of `stages` run, for a task that reads them.
    pub(super) fn inputs_of(&self, stages: &[Arc<ShuffleStage>]) -> Vec<StageInput> {
        stages
            .iter()
            .map(|s| StageInput {
                stage_id: s.stage_id,
                tasks: self.locations.get(&s.stage_id).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// Resolves when every producer task has ended (so every report is in), or after `bound`.
    pub(super) async fn all_ended(&self, bound: std::time::Duration) {
        let count = self.tasks.len();
        let mut ended = self.ended.clone();
        let own = async {
            let _ = ended.wait_for(|n| *n >= count).await;
        };
        let shared = futures::future::join_all(self.shared.iter().map(|s| s.all_ended(bound)));
        let _ = tokio::time::timeout(bound, futures::future::join(own, shared)).await;
    }

    /// `stream`, failing as soon as any producer fails (its consumers may be waiting on it).
    pub(super) fn fail_with_producers<S, T>(
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

/// Starts every task of `stages` and of the stages they read, all at once: each task is placed
/// first (see `placement`), so a consumer knows where its producers will run before they do (an
/// executor waits for a bucket whose producer has not reached it yet). A task that cannot start
/// where it was placed fails the launch as that executor's loss: the query runs again.
pub(super) async fn launch(
    run: &QueryRun,
    stages: &[Arc<ShuffleStage>],
) -> Result<Arc<RunningStages>> {
    launch_graph(run, stages, false).await
}

/// [`launch`]; with `shared_root`, `stages` are shared stages started here (once for the
/// run, see [`QueryRun::shared_stage`]) rather than taken from the run.
pub(super) fn launch_graph<'a>(
    run: &'a QueryRun,
    stages: &'a [Arc<ShuffleStage>],
    shared_root: bool,
) -> futures::future::BoxFuture<'a, Result<Arc<RunningStages>>> {
    Box::pin(async move {
        let mut order = Vec::new();
        let mut shared = Vec::new();
        for stage in stages {
            post_order(stage, &mut order, &mut shared, shared_root);
        }
        let mut shared_graphs: Vec<Arc<RunningStages>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for stage in shared {
            if seen.insert(stage.stage_id) {
                shared_graphs.push(run.shared_stage(&stage).await?);
            }
        }
        launch_own(run, order, shared_graphs).await
    })
}

/// Places and starts the tasks of `order` (producers before their readers), which also read
/// the already running `shared` stages.
async fn launch_own(
    run: &QueryRun,
    order: Vec<Arc<ShuffleStage>>,
    shared: Vec<Arc<RunningStages>>,
) -> Result<Arc<RunningStages>> {
    let live = run.registry.live();
    if live.is_empty() {
        return Err(external(Status::unavailable(
            "no executors are registered with the coordinator",
        )));
    }
    let mut placed: HashMap<u32, Vec<ExecutorInfo>> = HashMap::new();
    let mut unique = Vec::new();
    for stage in order {
        if placed.contains_key(&stage.stage_id) {
            continue;
        }
        let executors = (0..stage.tasks)
            .map(|partition| live[first_choice(&live, stage.first_slot + partition)].clone())
            .collect();
        placed.insert(stage.stage_id, executors);
        unique.push(stage);
    }
    let mut locations: HashMap<u32, Vec<TaskLocation>> = placed
        .iter()
        .map(|(id, executors)| {
            let tasks = executors
                .iter()
                .map(|e| TaskLocation {
                    executor_id: e.id.clone(),
                    endpoint: e.endpoint.clone(),
                })
                .collect();
            (*id, tasks)
        })
        .collect();
    for graph in &shared {
        for (id, tasks) in &graph.locations {
            locations.entry(*id).or_insert_with(|| tasks.clone());
        }
    }
    let mut starts = Vec::new();
    for stage in unique {
        let inputs: Vec<StageInput> = stage
            .inputs
            .iter()
            .map(|s| StageInput {
                stage_id: s.stage_id,
                tasks: locations.get(&s.stage_id).cloned().unwrap_or_default(),
            })
            .collect();
        for (partition, executor) in placed[&stage.stage_id].iter().enumerate() {
            let reporting = Arc::clone(&stage);
            let task = Task {
                query_id: run.query_id.clone(),
                memory_limit: run.memory_limit,
                stage_id: stage.stage_id,
                partition,
                slot: stage.first_slot + partition,
                plan: Arc::clone(&stage.encoded),
                files: stage.files.get(partition).cloned().unwrap_or_default(),
                output: Some(stage.output()),
                inputs: inputs.clone(),
                registry: run.registry.clone(),
                on_report: Arc::new(move |m: TaskMetrics| {
                    reporting
                        .reports
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(m);
                }),
            };
            let executor = executor.clone();
            starts.push(async move { task.start_placed(&executor).await });
        }
    }
    let started = futures::future::try_join_all(starts).await?;
    let (failed, failure) = watch::channel(None);
    let (ended_tx, ended) = watch::channel(0usize);
    let ended_tx = Arc::new(ended_tx);
    let mut tasks = Vec::with_capacity(started.len());
    for mut stream in started {
        let failed = failed.clone();
        let ended = Arc::clone(&ended_tx);
        tasks.push(spawn_scoped(async move {
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
                    break;
                }
            }
            ended.send_modify(|n| *n += 1);
        }));
    }
    // A shared stage's failure fails this graph's readers too.
    let forwarders = shared
        .iter()
        .map(|graph| {
            let mut theirs = graph.failure.clone();
            let failed = failed.clone();
            spawn_scoped(async move {
                let e = first_failure(&mut theirs).await;
                failed.send_if_modified(|f| {
                    if f.is_none() {
                        *f = Some(e);
                        true
                    } else {
                        false
                    }
                });
            })
        })
        .collect();
    Ok(Arc::new(RunningStages {
        locations,
        failure,
        ended,
        tasks,
        shared,
        _forwarders: forwarders,
    }))
}

/// The stages `stage` reads and itself, producers first; a shared stage (other than `stage`
/// itself when `root_here`) goes to `shared` instead, its inputs with it.
fn post_order(
    stage: &Arc<ShuffleStage>,
    out: &mut Vec<Arc<ShuffleStage>>,
    shared: &mut Vec<Arc<ShuffleStage>>,
    root_here: bool,
) {
    if stage.is_shared() && !root_here {
        shared.push(Arc::clone(stage));
        return;
    }
    for input in &stage.inputs {
        post_order(input, out, shared, false);
    }
    out.push(Arc::clone(stage));
}
