//! A query's shuffle stages, started together (producers before consumers) so that data flows
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

use super::stage::ShuffleStage;
use super::task::Task;
use super::QueryRun;

/// The running shuffle stages of one gather stage: where their tasks run, and the first
/// failure of any of them.
pub struct RunningStages {
    locations: HashMap<u32, Vec<TaskLocation>>,
    failure: watch::Receiver<Option<Arc<DataFusionError>>>,
    /// How many of the tasks have ended (their report, if any, taken).
    ended: watch::Receiver<usize>,
    tasks: Vec<ScopedTask>,
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
        let _ = tokio::time::timeout(bound, ended.wait_for(|n| *n >= count)).await;
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

/// Starts every task of `stages` and of the stages they read, producers before consumers.
pub(super) async fn launch(
    run: &QueryRun,
    stages: &[Arc<ShuffleStage>],
) -> Result<Arc<RunningStages>> {
    let mut order = Vec::new();
    for stage in stages {
        post_order(stage, &mut order);
    }
    let (failed, failure) = watch::channel(None);
    let (ended_tx, ended) = watch::channel(0usize);
    let ended_tx = Arc::new(ended_tx);
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
                query_id: run.query_id.clone(),
                memory_limit: run.memory_limit,
                stage_id: stage.stage_id,
                partition,
                slot: stage.first_slot + partition,
                plan: Arc::clone(&stage.encoded),
                files: stage.files.get(partition).cloned().unwrap_or_default(),
                output: Some(stage.output),
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
        locations.insert(stage.stage_id, placed);
    }
    Ok(Arc::new(RunningStages {
        locations,
        failure,
        ended,
        tasks,
    }))
}

fn post_order(stage: &Arc<ShuffleStage>, out: &mut Vec<Arc<ShuffleStage>>) {
    for input in &stage.inputs {
        post_order(input, out);
    }
    out.push(Arc::clone(stage));
}
