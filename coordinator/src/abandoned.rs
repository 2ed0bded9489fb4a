//! Results a client stopped reading: after an idle timeout the query is stopped, so that its
//! tasks and buffers on every executor are released instead of waiting for a reader that may
//! never come back.
//!
//! "Idle" means a batch is ready and nobody took it: the stream handed out an item and was not
//! asked for the next one within the timeout (HTTP/2 flow control stops asking when the
//! client stops reading). A query that is still computing its next batch is never idle,
//! however long that takes.
//!
//! One sweeper task per [`AbandonWatch`] looks at every result it watches, a quarter of the
//! timeout apart (between 20 ms and 5 s); a result costs the watch an entry in a map, not a
//! task and a timer of its own.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tonic::Status;
use tracing::warn;

/// Watches results for readers that left (see the [module documentation](self)).
#[derive(Clone)]
pub struct AbandonWatch {
    inner: Arc<Watch>,
}

struct Watch {
    timeout: Duration,
    origin: Instant,
    watched: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    next: u64,
    results: HashMap<u64, Weak<dyn Idle>>,
    swept: bool,
}

impl std::fmt::Debug for AbandonWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbandonWatch")
            .field("timeout", &self.inner.timeout)
            .field("watched", &self.inner.lock().results.len())
            .finish()
    }
}

impl Watch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Milliseconds since the watch began, at least 1 (0 means "not waiting").
    fn now(&self) -> u64 {
        (self.origin.elapsed().as_millis() as u64).max(1)
    }
}

impl AbandonWatch {
    /// Results left unread for `timeout` are dropped.
    pub fn new(timeout: Duration) -> Self {
        AbandonWatch {
            inner: Arc::new(Watch {
                timeout,
                origin: Instant::now(),
                watched: Mutex::default(),
            }),
        }
    }

    /// `stream`, dropped (ending its query) when the reader leaves a ready item untaken for
    /// the timeout; a reader that comes back then gets CANCELLED.
    pub fn watch<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, Result<T, Status>>,
    ) -> Abandonable<T> {
        let result = Arc::new(Watched {
            slot: Mutex::new(Some(stream)),
            waiting_since: AtomicU64::new(0),
        });
        let weak: Weak<dyn Idle> = Arc::downgrade(&result) as Weak<dyn Idle>;
        let (id, first) = {
            let mut watched = self.inner.lock();
            let id = watched.next;
            watched.next += 1;
            watched.results.insert(id, weak);
            (id, !std::mem::replace(&mut watched.swept, true))
        };
        if first {
            self.sweep_forever();
        }
        Abandonable {
            result,
            id,
            watch: Arc::clone(&self.inner),
            done: false,
        }
    }

    /// The sweeper: ends once the watch is gone (it holds a weak reference).
    #[allow(
        clippy::disallowed_methods,
        reason = "the sweeper ends by itself once the watch is gone (it holds a weak reference)"
    )]
    fn sweep_forever(&self) {
        let watch = Arc::downgrade(&self.inner);
        let timeout = self.inner.timeout;
        let every = (timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(5));
        let timeout_ms = timeout.as_millis() as u64;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(watch) = watch.upgrade() else { return };
                let cutoff = watch.now().saturating_sub(timeout_ms);
                // Looked at outside the lock: dropping a stream stops its query.
                let live: Vec<Arc<dyn Idle>> = watch
                    .lock()
                    .results
                    .values()
                    .filter_map(Weak::upgrade)
                    .collect();
                for result in live {
                    result.stop_if_waiting_since(cutoff, timeout);
                }
            }
        });
    }
}

/// A watched result, as its sweeper sees it.
trait Idle: Send + Sync {
    /// Drops the stream if an item it handed out has waited untaken since `cutoff` or before.
    fn stop_if_waiting_since(&self, cutoff: u64, timeout: Duration);
}

/// One watched result: its stream (taken when abandoned) and since when an item it handed out
/// waits untaken (ms since the watch began, or 0).
struct Watched<T> {
    slot: Mutex<Option<BoxStream<'static, Result<T, Status>>>>,
    waiting_since: AtomicU64,
}

impl<T: Send> Idle for Watched<T> {
    fn stop_if_waiting_since(&self, cutoff: u64, timeout: Duration) {
        let since = self.waiting_since.load(Ordering::SeqCst);
        if since == 0 || since > cutoff {
            return;
        }
        let abandoned = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if abandoned.is_some() {
            warn!(
                "a result was not read for {} ms: its query is stopped",
                timeout.as_millis()
            );
        }
        drop(abandoned);
    }
}

/// See [`AbandonWatch::watch`].
pub struct Abandonable<T> {
    result: Arc<Watched<T>>,
    id: u64,
    watch: Arc<Watch>,
    done: bool,
}

impl<T> Drop for Abandonable<T> {
    fn drop(&mut self) {
        self.watch.lock().results.remove(&self.id);
    }
}

impl<T> Stream for Abandonable<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        this.result.waiting_since.store(0, Ordering::SeqCst);
        let mut slot = this.result.slot.lock().unwrap_or_else(|p| p.into_inner());
        let Some(inner) = slot.as_mut() else {
            this.done = true;
            return Poll::Ready(Some(Err(Status::cancelled(format!(
                "the result was not read for {} s, so its query was stopped",
                this.watch.timeout.as_secs_f64()
            )))));
        };
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => {
                this.result
                    .waiting_since
                    .store(this.watch.now(), Ordering::SeqCst);
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                this.done = true;
                *slot = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that hands out `n` items and reports when it is dropped.
    fn counted(n: usize, dropped: Arc<AtomicU64>) -> BoxStream<'static, Result<usize, Status>> {
        struct OnDrop(Arc<AtomicU64>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.store(1, Ordering::SeqCst);
            }
        }
        let guard = OnDrop(dropped);
        futures::stream::iter(0..n)
            .map(move |i| {
                let _ = &guard;
                Ok(i)
            })
            .boxed()
    }

    #[tokio::test]
    async fn an_untaken_result_is_dropped_after_the_timeout() {
        let watch = AbandonWatch::new(Duration::from_millis(100));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut s = watch.watch(counted(10, Arc::clone(&dropped)));
        // Another result of the same watch, read to its end meanwhile, is left alone.
        let read_dropped = Arc::new(AtomicU64::new(0));
        let mut read = watch.watch(counted(8, Arc::clone(&read_dropped)));
        assert_eq!(s.next().await.map(|r| r.ok()), Some(Some(0)));
        for want in 0..8 {
            assert_eq!(read.next().await.map(|r| r.ok()), Some(Some(want)));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the abandoned stream was dropped"
        );
        assert!(
            read.next().await.is_none(),
            "the one being read ran to its end"
        );
        let err = s.next().await.expect("an error").expect_err("cancelled");
        assert_eq!(err.code(), tonic::Code::Cancelled);
        assert!(s.next().await.is_none());
        drop((s, read));
        assert!(
            watch.inner.lock().results.is_empty(),
            "a dropped result leaves the watch"
        );
    }

    #[tokio::test]
    async fn a_reader_that_keeps_reading_or_a_slow_query_is_never_cut() {
        let watch = AbandonWatch::new(Duration::from_millis(100));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut s = watch.watch(counted(5, Arc::clone(&dropped)));
        let mut got = Vec::new();
        while let Some(item) = s.next().await {
            got.push(item.expect("item"));
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        // Pending for longer than the timeout (still computing) is not idle.
        let slow = futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, Status>(7)
        })
        .boxed();
        let mut s = watch.watch(slow);
        assert_eq!(s.next().await.map(|r| r.ok()), Some(Some(7)));
    }
}
