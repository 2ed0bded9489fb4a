//! Admission: at most `--max-concurrent-queries` statements run at once; the next ones wait
//! in a queue of at most `--query-queue-size`, each at most `--query-queue-timeout-ms`. A
//! statement that finds the queue full, or waits too long, is refused with
//! RESOURCE_EXHAUSTED naming the limit — so thirty BI users refreshing dashboards at once
//! queue up instead of pushing every query into memory errors.
//!
//! A query holds its place while its result streams (from DoGet, or from GetFlightInfo when
//! a place was free then and it started at once (`crate::started`), until the stream ends or
//! is dropped); a write while it runs (it runs when executed). Planning, metadata calls and
//! reading a stored result are not admitted: they are cheap and bounded elsewhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// How many statements run at once and how many may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Statements running at once (None: no limit).
    pub max_running: Option<usize>,
    /// Statements waiting at most; one more is refused at once.
    pub max_queued: usize,
    /// How long a statement waits for a place before it is refused.
    pub queue_timeout: Duration,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            max_running: None,
            max_queued: 100,
            queue_timeout: Duration::from_secs(60),
        }
    }
}

/// The admission gate of one coordinator.
#[derive(Debug, Clone)]
pub struct Admission {
    limits: AdmissionLimits,
    places: Option<Arc<Semaphore>>,
    queued: Arc<AtomicUsize>,
}

/// A running statement's place; dropping it lets the next one in.
#[derive(Debug)]
pub struct Place {
    _permit: Option<OwnedSemaphorePermit>,
}

/// Counts a waiting statement while it waits.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    /// A gate with `limits`.
    pub fn new(limits: AdmissionLimits) -> Self {
        Admission {
            limits,
            places: limits
                .max_running
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            queued: Arc::default(),
        }
    }

    /// Waits for a place to run a statement: at once if one is free, else in the queue (up to
    /// its timeout), or refused when the queue is full.
    pub async fn admit(&self) -> Result<Place, Status> {
        let Some(places) = &self.places else {
            return Ok(Place { _permit: None });
        };
        let running = self.limits.max_running.unwrap_or_default();
        if let Ok(permit) = Arc::clone(places).try_acquire_owned() {
            return Ok(Place {
                _permit: Some(permit),
            });
        }
        let before = self.queued.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(Arc::clone(&self.queued));
        if before >= self.limits.max_queued {
            return Err(Status::resource_exhausted(format!(
                "the coordinator is busy: {running} statements are running and {} are queued \
                 (--max-concurrent-queries {running}, --query-queue-size {}); try again later",
                self.limits.max_queued, self.limits.max_queued
            )));
        }
        match tokio::time::timeout(
            self.limits.queue_timeout,
            Arc::clone(places).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(Place {
                _permit: Some(permit),
            }),
            Ok(Err(_)) => Err(Status::unavailable("the coordinator is shutting down")),
            Err(_) => Err(Status::resource_exhausted(format!(
                "waited {} ms in the queue for one of the {running} places \
                 (--max-concurrent-queries {running}, --query-queue-timeout-ms {}); \
                 try again later",
                self.limits.queue_timeout.as_millis(),
                self.limits.queue_timeout.as_millis()
            ))),
        }
    }

    /// A place if one is free now and nobody waits for one (the queue keeps its order).
    pub fn try_admit(&self) -> Option<Place> {
        let Some(places) = &self.places else {
            return Some(Place { _permit: None });
        };
        Arc::clone(places)
            .try_acquire_owned()
            .ok()
            .map(|permit| Place {
                _permit: Some(permit),
            })
    }

    /// Statements waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(running: usize, queued: usize, timeout_ms: u64) -> Admission {
        Admission::new(AdmissionLimits {
            max_running: Some(running),
            max_queued: queued,
            queue_timeout: Duration::from_millis(timeout_ms),
        })
    }

    #[tokio::test]
    async fn without_a_limit_everyone_runs() {
        let gate = Admission::new(AdmissionLimits::default());
        let places: Vec<Place> = futures::future::try_join_all((0..100).map(|_| gate.admit()))
            .await
            .expect("no limit");
        assert_eq!(places.len(), 100);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_a_freed_place_admits_the_next() {
        let gate = gate(2, 1, 10_000);
        let first = gate.admit().await.expect("place 1");
        let _second = gate.admit().await.expect("place 2");
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.admit().await }
        });
        while gate.queued() == 0 {
            tokio::task::yield_now().await;
        }
        let refused = gate.admit().await.expect_err("queue full");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("--max-concurrent-queries 2"),
            "{}",
            refused.message()
        );
        assert_eq!(gate.queued(), 1);
        drop(first);
        waiting.await.expect("joins").expect("admitted");
        assert_eq!(gate.queued(), 0);
    }

    #[tokio::test]
    async fn waiting_too_long_is_refused() {
        let gate = gate(1, 5, 50);
        let _held = gate.admit().await.expect("place");
        let refused = gate.admit().await.expect_err("times out");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("--query-queue-timeout-ms 50"));
        assert_eq!(gate.queued(), 0);
    }
}
