//! Queries started at GetFlightInfo. A read begins to run as soon as its FlightInfo is
//! answered, not when its ticket is read: the client's DoGet arrives a few hundred
//! microseconds later (ADBC's driver first decodes the FlightInfo and starts a reader), and by
//! then the query has been planned physically, its tasks dispatched and, for a small answer,
//! its first batch made. Only the first batch waits for the ticket; the next ones are made as
//! the client reads, as for any query.
//!
//! A started query is stopped (its tasks end, its admission place frees) if its ticket is not
//! read within the bound it was started with; its ticket then plans and runs it afresh, as a
//! ticket read after its plan expired does. A ticket read by another caller never takes it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe_engine::runtime::{spawn_scoped, ScopedTask};
use futures::FutureExt;
use tokio::sync::oneshot;

use crate::client_auth::Principal;

/// How long a started query waits for its ticket to be read.
pub const STARTED_TTL: Duration = Duration::from_secs(10);

/// Started queries kept at most; beyond it the oldest is stopped.
const MAX_STARTED: usize = 256;

/// Where a started query's head is: being made, made and waiting for its reader, awaited by
/// its reader, or given up (its ticket came too late; the query was stopped).
enum Slot<H> {
    Making,
    Made(H),
    Awaited(oneshot::Sender<H>),
    GaveUp,
}

type Shared<H> = Arc<Mutex<Slot<H>>>;

fn lock<H>(slot: &Shared<H>) -> std::sync::MutexGuard<'_, Slot<H>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// A started query: who started it, where its head is, its task if the head was not made at
/// once (dropped: the query stops).
struct Entry<H> {
    at: Instant,
    caller: Principal,
    slot: Shared<H>,
    task: Option<ScopedTask>,
}

struct Inner<H> {
    entries: HashMap<String, Entry<H>>,
    order: VecDeque<String>,
    /// Whether the sweeper (see [`StartedRuns::start`]) runs.
    swept: bool,
}

/// Queries started at GetFlightInfo, by run id; `H` is what a started query hands its
/// ticket's reader (its first batch and the rest of its stream).
pub struct StartedRuns<H> {
    inner: Arc<Mutex<Inner<H>>>,
    ttl: Duration,
}

impl<H> Clone for StartedRuns<H> {
    fn clone(&self) -> Self {
        StartedRuns {
            inner: Arc::clone(&self.inner),
            ttl: self.ttl,
        }
    }
}

impl<H> Default for StartedRuns<H> {
    fn default() -> Self {
        Self::with_ttl(STARTED_TTL)
    }
}

impl<H> std::fmt::Debug for StartedRuns<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartedRuns")
            .field("kept", &self.lock().entries.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl<H> StartedRuns<H> {
    /// Started queries wait `ttl` for their ticket.
    pub fn with_ttl(ttl: Duration) -> Self {
        StartedRuns {
            inner: Arc::new(Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                swept: false,
            })),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<H>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<H: Send + 'static> StartedRuns<H> {
    /// Starts run `run_id`: `head` runs now; what it makes waits for the ticket's reader (see
    /// [`Self::claim`]) and is dropped, stopping the query, if none comes within the bound.
    /// `at_once`: the head is cheap to make (a kept plan that reads no table), so it is polled
    /// here first and, if that makes it, kept without a task of its own.
    pub fn start(
        &self,
        run_id: &str,
        caller: &Principal,
        head: impl Future<Output = H> + Send + 'static,
        at_once: bool,
    ) {
        let mut head = Box::pin(head);
        let made = if at_once {
            (&mut head).now_or_never()
        } else {
            None
        };
        let (slot, task) = match made {
            Some(made) => (Arc::new(Mutex::new(Slot::Made(made))), None),
            None => {
                let slot: Shared<H> = Arc::new(Mutex::new(Slot::Making));
                let task = spawn_scoped({
                    let slot = Arc::clone(&slot);
                    async move {
                        let made = head.await;
                        let mut slot = lock(&slot);
                        match std::mem::replace(&mut *slot, Slot::GaveUp) {
                            Slot::Awaited(reader) => {
                                let _ = reader.send(made);
                            }
                            // Kept for its reader until the bound (the sweeper drops it then).
                            Slot::Making => *slot = Slot::Made(made),
                            Slot::Made(_) | Slot::GaveUp => {}
                        }
                    }
                });
                (slot, Some(task))
            }
        };
        let first = {
            let mut inner = self.lock();
            let Inner {
                entries,
                order,
                swept,
            } = &mut *inner;
            crate::planned::make_room(entries, order, MAX_STARTED, |e| e.at.elapsed() >= self.ttl);
            entries.insert(
                run_id.to_string(),
                Entry {
                    at: Instant::now(),
                    caller: caller.clone(),
                    slot,
                    task,
                },
            );
            order.push_back(run_id.to_string());
            !std::mem::replace(swept, true)
        };
        if first {
            self.sweep_forever();
        }
    }

    /// Drops the runs whose bound passed unclaimed (stopping them, freeing their places), a
    /// quarter of the bound apart; one task for all runs, ending when they are gone.
    #[allow(
        clippy::disallowed_methods,
        reason = "the sweeper ends by itself once the runs are gone (it holds a weak reference)"
    )]
    fn sweep_forever(&self) {
        let inner = Arc::downgrade(&self.inner);
        let ttl = self.ttl;
        let every = (ttl / 4).max(Duration::from_millis(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = inner.upgrade() else { return };
                let mut expired = Vec::new();
                {
                    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
                    let Inner { entries, order, .. } = &mut *inner;
                    while let Some(oldest) = order.front() {
                        if entries.get(oldest).is_some_and(|e| e.at.elapsed() < ttl) {
                            break;
                        }
                        if let Some(oldest) = order.pop_front() {
                            expired.extend(entries.remove(&oldest));
                        }
                    }
                }
                // Stopped outside the lock.
                drop(expired);
            }
        });
    }

    /// Takes run `run_id` for its ticket's reader, if it was started by `caller` and is still
    /// waiting: the future gives its head once made (None if the run gave up meanwhile).
    /// Dropping the future stops the query.
    pub fn claim(
        &self,
        run_id: &str,
        caller: &Principal,
    ) -> Option<impl Future<Output = Option<H>> + Send + use<H>> {
        if run_id.is_empty() {
            return None;
        }
        let entry = {
            let mut inner = self.lock();
            if inner.entries.get(run_id)?.caller != *caller {
                return None;
            }
            inner.order.retain(|r| r != run_id);
            inner.entries.remove(run_id)?
        };
        let made = {
            let mut slot = lock(&entry.slot);
            match std::mem::replace(&mut *slot, Slot::GaveUp) {
                Slot::Made(made) => Ok(made),
                Slot::Making => {
                    let (reader, head) = oneshot::channel();
                    *slot = Slot::Awaited(reader);
                    Err(head)
                }
                Slot::Awaited(_) | Slot::GaveUp => return None,
            }
        };
        let task = entry.task;
        Some(async move {
            match made {
                Ok(made) => Some(made),
                Err(head) => {
                    let _stops_the_query_if_dropped = task;
                    head.await.ok()
                }
            }
        })
    }

    /// Stops run `run_id` if it is started and unclaimed; true if it was.
    pub fn stop(&self, run_id: &str) -> bool {
        let mut inner = self.lock();
        inner.order.retain(|r| r != run_id);
        inner.entries.remove(run_id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn bob() -> Principal {
        let mut bob = Principal::anonymous();
        bob.user = "bob".into();
        bob
    }

    /// Sets its flag when dropped: stands for a query's stream.
    struct Query(Arc<AtomicBool>);

    impl Drop for Query {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_reader_takes_the_head_made_before_or_after_it_came() {
        let runs = StartedRuns::<u32>::default();
        runs.start("early", &Principal::anonymous(), async { 7 }, false);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let head = runs
            .claim("early", &Principal::anonymous())
            .expect("started");
        assert_eq!(head.await, Some(7));

        let (go, wait) = oneshot::channel::<u32>();
        // Not ready at once: made by a task of its own all the same.
        runs.start(
            "late",
            &Principal::anonymous(),
            async move { wait.await.expect("sent") + 1 },
            true,
        );
        let head = runs
            .claim("late", &Principal::anonymous())
            .expect("started");
        go.send(41).expect("waiting");
        assert_eq!(head.await, Some(42));
        // Taken: a second read finds nothing (it plans afresh).
        assert!(runs.claim("late", &Principal::anonymous()).is_none());
    }

    #[tokio::test]
    async fn a_claimed_run_goes_on_past_the_bound() {
        let runs = StartedRuns::<u32>::with_ttl(Duration::from_millis(30));
        runs.start(
            "slow",
            &Principal::anonymous(),
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                5
            },
            false,
        );
        let head = runs
            .claim("slow", &Principal::anonymous())
            .expect("started");
        assert_eq!(head.await, Some(5));
    }

    #[tokio::test]
    async fn another_caller_never_takes_a_run() {
        let runs = StartedRuns::<u32>::default();
        runs.start("r", &Principal::anonymous(), async { 1 }, true);
        assert!(runs.claim("r", &bob()).is_none());
        assert_eq!(
            runs.claim("r", &Principal::anonymous())
                .expect("started")
                .await,
            Some(1)
        );
    }

    #[tokio::test]
    async fn an_unread_run_is_stopped_after_its_bound() {
        let runs = StartedRuns::<Query>::with_ttl(Duration::from_millis(50));
        // Made (at once, without a task), never read: dropped after the bound.
        let made = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&made);
        runs.start(
            "made",
            &Principal::anonymous(),
            async move { Query(flag) },
            true,
        );
        // Made by its task, never read: dropped after the bound too.
        let made_later = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&made_later);
        runs.start(
            "made later",
            &Principal::anonymous(),
            async move {
                tokio::task::yield_now().await;
                Query(flag)
            },
            false,
        );
        // Still computing when the bound passes: stopped mid-way.
        let computing = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&computing);
        runs.start(
            "computing",
            &Principal::anonymous(),
            async move {
                let query = Query(flag);
                std::future::pending::<()>().await;
                query
            },
            false,
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !made.load(Ordering::SeqCst)
                && !made_later.load(Ordering::SeqCst)
                && !computing.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(made.load(Ordering::SeqCst), "an unread head is dropped");
        assert!(
            made_later.load(Ordering::SeqCst),
            "an unread head is dropped"
        );
        assert!(computing.load(Ordering::SeqCst), "an unread run is stopped");
        // Its ticket then runs the query afresh: the claim finds nothing to take.
        match runs.claim("made", &Principal::anonymous()) {
            None => {}
            Some(head) => assert!(head.await.is_none()),
        }
    }

    #[tokio::test]
    async fn a_reader_that_goes_away_or_a_stop_ends_the_run() {
        let runs = StartedRuns::<Query>::default();
        for how in ["reader gone", "stopped"] {
            let stopped = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stopped);
            runs.start(
                how,
                &Principal::anonymous(),
                async move {
                    let query = Query(flag);
                    std::future::pending::<()>().await;
                    query
                },
                true,
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            if how == "stopped" {
                assert!(runs.stop(how));
                assert!(!runs.stop(how));
            } else {
                let head = runs.claim(how, &Principal::anonymous()).expect("started");
                let waited = tokio::time::timeout(Duration::from_millis(10), head).await;
                assert!(waited.is_err(), "the head is still being made");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(stopped.load(Ordering::SeqCst), "{how}: the run goes on");
        }
    }
}
