//! Runs of statements that a client can cancel (Flight SQL `CancelFlightInfo`, and the older
//! `CancelQuery`).
//!
//! Every ticket `GetFlightInfo` hands out carries a fresh run id. While its `DoGet` streams,
//! the run is registered here; cancelling it ends the stream with CANCELLED, which drops the
//! query's plan and with it every task on every executor. A run cancelled before its `DoGet`
//! started is remembered (a bounded number of them) and refused when it arrives.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tonic::Status;

/// How many runs cancelled before they started are remembered.
const CANCELLED_BEFORE_START: usize = 4096;

#[derive(Debug, Default)]
struct Runs {
    running: HashMap<String, watch::Sender<bool>>,
    cancelled_early: VecDeque<String>,
}

/// The statement runs currently streaming on this coordinator.
#[derive(Debug, Default, Clone)]
pub struct RunRegistry {
    runs: Arc<Mutex<Runs>>,
}

/// What cancelling a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It was streaming and is now stopped.
    Running,
    /// It had not started (or already ended); it will be refused if it starts.
    NotRunning,
}

/// Removes a run from the registry when its stream ends or is dropped.
struct RunGuard {
    registry: RunRegistry,
    run_id: String,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.registry.lock().running.remove(&self.run_id);
    }
}

impl RunRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Runs> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels a run.
    pub fn cancel(&self, run_id: &str) -> Cancelled {
        let mut runs = self.lock();
        if let Some(sender) = runs.running.get(run_id) {
            let _ = sender.send(true);
            return Cancelled::Running;
        }
        if runs.cancelled_early.len() >= CANCELLED_BEFORE_START {
            runs.cancelled_early.pop_front();
        }
        runs.cancelled_early.push_back(run_id.to_string());
        Cancelled::NotRunning
    }

    /// `stream` as run `run_id`: it ends with CANCELLED when the run is cancelled. Fails if the
    /// run was cancelled before it started.
    pub fn track<S, T>(
        &self,
        run_id: &str,
        stream: S,
    ) -> Result<impl Stream<Item = Result<T, Status>> + Send + 'static, Status>
    where
        S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
        T: Send + 'static,
    {
        let (sender, receiver) = watch::channel(false);
        {
            let mut runs = self.lock();
            if runs.cancelled_early.iter().any(|r| r == run_id) {
                return Err(cancelled_status());
            }
            runs.running.insert(run_id.to_string(), sender);
        }
        let guard = RunGuard {
            registry: self.clone(),
            run_id: run_id.to_string(),
        };
        Ok(futures::stream::unfold(
            Some((stream, receiver, guard)),
            |state| async move {
                let (mut stream, mut cancel, guard) = state?;
                let next = tokio::select! {
                    biased;
                    _ = cancel.wait_for(|c| *c) => None,
                    item = stream.next() => Some(item),
                };
                match next {
                    None => Some((Err(cancelled_status()), None)),
                    Some(item) => item.map(|i| (i, Some((stream, cancel, guard)))),
                }
            },
        ))
    }
}

fn cancelled_status() -> Status {
    Status::cancelled("the query was cancelled by the client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancelled_run_ends_with_cancelled_and_leaves_the_registry() {
        let runs = RunRegistry::default();
        let endless = futures::stream::repeat(Ok::<u32, Status>(1)).boxed();
        let mut tracked = Box::pin(runs.track("r1", endless).expect("not cancelled yet"));
        assert_eq!(tracked.next().await.expect("an item").expect("a value"), 1);
        assert_eq!(runs.cancel("r1"), Cancelled::Running);
        let err = tracked
            .next()
            .await
            .expect("an item")
            .expect_err("cancelled");
        assert_eq!(err.code(), tonic::Code::Cancelled);
        assert!(tracked.next().await.is_none());
        drop(tracked);
        assert!(runs.lock().running.is_empty());
    }

    #[tokio::test]
    async fn a_run_cancelled_before_it_starts_is_refused() {
        let runs = RunRegistry::default();
        assert_eq!(runs.cancel("early"), Cancelled::NotRunning);
        let empty = futures::stream::empty::<Result<u32, Status>>();
        let refused = runs.track("early", empty).err().expect("refused");
        assert_eq!(refused.code(), tonic::Code::Cancelled);
    }
}
