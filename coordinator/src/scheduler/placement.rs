//! Placement and loss: which executor runs a task, and what a failure says about the executor.
//!
//! A query's tasks go to the executors' slots in turn: the first slot of every live executor,
//! then the second of those that have two, and so on, so each executor gets tasks in proportion
//! to the slots it registered with (file groups are already balanced by bytes). The turn runs
//! over the whole query, not each stage: a stage's first task takes the slot after the previous
//! stage's last (`first_slot`, counted as the plan is cut), so the single-task stages of one
//! query (a small table's scan) do not all land on the first executor.
//!
//! The shuffle stages' tasks are placed before any starts and start all at once (consumers are
//! told where their producers will run), so one that cannot start where it was placed fails the
//! run as an executor loss and the query runs again (`retry`). A gather task, which no task
//! reads, that cannot reach its executor is sent to the next one. Either way the unreachable
//! executor is dropped from the registry; one that turns the task away is kept. An error in a
//! running task that says an executor was lost drops that executor too, so that a query run
//! again goes elsewhere.

use datafusion::common::{DataFusionError, Result};
use floe_engine::status::{is_from_executor, lost_executor, ExecutorLost};
use futures::{StreamExt, TryStreamExt};
use tonic::{Code, Status};
use tracing::warn;

use super::external;
use super::task::{FlightStream, Task};
use crate::registry::{ExecutorInfo, ExecutorRegistry};

impl Task {
    /// Starts the task on an executor, trying every live executor once (from the task's own
    /// place in the rotation) before giving up: an executor that cannot be reached is dropped,
    /// one that turns the task away is kept, and neither fails a query the others can run.
    /// Returns where it runs and its raw stream, the trailer already taken out and reported.
    pub(super) async fn start(&self) -> Result<(ExecutorInfo, FlightStream)> {
        let live = self.registry.live();
        if live.is_empty() {
            return Err(external(Status::unavailable(
                "no executors are registered with the coordinator",
            )));
        }
        let mut last_error = None;
        let first = first_choice(&live, self.slot);
        for attempt in 0..live.len() {
            let executor = &live[(first + attempt) % live.len()];
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

    /// Starts the task on `executor`, where it was placed (its consumers read it there): a
    /// failure to start is the executor's loss for this run, which runs again without it if it
    /// could not be reached.
    pub(super) async fn start_placed(&self, executor: &ExecutorInfo) -> Result<FlightStream> {
        let mut started = self.try_on(executor).await;
        // A connection that broke under other requests (the executor closed it) is not a lost
        // executor: once more, on a new connection, before deciding.
        if matches!(&started, Err(status) if is_connection_failure(status)) {
            started = self.try_on(executor).await;
        }
        match started {
            Ok(stream) => {
                let (id, registry) = (executor.id.clone(), self.registry.clone());
                Ok(stream
                    .map_err(move |status| remote_error(&registry, &id, status))
                    .boxed())
            }
            Err(status) if is_connection_failure(&status) => {
                warn!(executor_id = %executor.id, "executor lost before its task started: {status}");
                self.registry.remove(&executor.id);
                Err(lost_before_start(executor, &status))
            }
            Err(status) if is_from_executor(&status) && status.code() == Code::Unavailable => {
                warn!(executor_id = %executor.id, "executor turned the task away: {status}");
                Err(lost_before_start(executor, &status))
            }
            Err(status) => Err(external(status)),
        }
    }
}

/// A task that could not start on `executor`, as that executor's loss: the query runs again.
fn lost_before_start(executor: &ExecutorInfo, status: &Status) -> DataFusionError {
    DataFusionError::External(Box::new(ExecutorLost {
        executor_id: executor.id.clone(),
        reason: format!("a task could not start there: {}", status.message()),
    }))
}

/// Which of `live` the task in `slot` goes to first: the executors' slots taken in turn (the
/// first slot of each, then the second of those with two, …).
pub(super) fn first_choice(live: &[ExecutorInfo], slot: usize) -> usize {
    let most = live.iter().map(|e| e.task_slots).max().unwrap_or(1);
    let rotation: Vec<usize> = (0..most)
        .flat_map(|slot| {
            live.iter()
                .enumerate()
                .filter(move |(_, e)| e.task_slots > slot)
                .map(|(i, _)| i)
        })
        .collect();
    match rotation.len() {
        0 => slot % live.len().max(1),
        n => rotation[slot % n],
    }
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
