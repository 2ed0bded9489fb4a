//! Results a client stopped reading: after an idle timeout the query is stopped, so that its
//! tasks and buffers on every executor are released instead of waiting for a reader that may
//! never come back.
//!
//! "Idle" means a batch is ready and nobody took it: the stream handed out an item and was not
//! asked for the next one within the timeout (HTTP/2 flow control stops asking when the
//! client stops reading). A query that is still computing its next batch is never idle,
//! however long that takes.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tonic::Status;
use tracing::warn;

type Slot<T> = Arc<Mutex<Option<BoxStream<'static, Result<T, Status>>>>>;

/// `stream`, dropped (ending its query) when the reader leaves a ready item untaken for
/// `timeout`; a reader that comes back then gets CANCELLED.
pub fn drop_when_abandoned<T: Send + 'static>(
    stream: BoxStream<'static, Result<T, Status>>,
    timeout: Duration,
) -> Abandonable<T> {
    let slot: Slot<T> = Arc::new(Mutex::new(Some(stream)));
    let origin = Instant::now();
    let waiting_since = Arc::new(AtomicU64::new(0));
    #[allow(
        clippy::disallowed_methods,
        reason = "the watchdog ends by itself once the result is gone (it holds a weak reference)"
    )]
    let watchdog = {
        let slot = Arc::downgrade(&slot);
        let waiting_since = Arc::clone(&waiting_since);
        let every = (timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(slot) = slot.upgrade() else { return };
                let since = waiting_since.load(Ordering::SeqCst);
                let now = origin.elapsed().as_millis() as u64;
                if since != 0 && now.saturating_sub(since) >= timeout.as_millis() as u64 {
                    let abandoned = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if abandoned.is_some() {
                        warn!(
                            "a result was not read for {} ms: its query is stopped",
                            timeout.as_millis()
                        );
                    }
                    drop(abandoned);
                    return;
                }
            }
        })
    };
    Abandonable {
        slot,
        origin,
        waiting_since,
        timeout,
        watchdog,
        done: false,
    }
}

/// See [`drop_when_abandoned`].
pub struct Abandonable<T> {
    slot: Slot<T>,
    origin: Instant,
    /// When an item was handed out and not yet followed by a request for the next (ms since
    /// `origin`, at least 1), or 0.
    waiting_since: Arc<AtomicU64>,
    timeout: Duration,
    watchdog: tokio::task::JoinHandle<()>,
    done: bool,
}

impl<T> Drop for Abandonable<T> {
    fn drop(&mut self) {
        self.watchdog.abort();
    }
}

impl<T> Stream for Abandonable<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        this.waiting_since.store(0, Ordering::SeqCst);
        let mut slot = this.slot.lock().unwrap_or_else(|p| p.into_inner());
        let Some(inner) = slot.as_mut() else {
            this.done = true;
            return Poll::Ready(Some(Err(Status::cancelled(format!(
                "the result was not read for {} s, so its query was stopped",
                this.timeout.as_secs_f64()
            )))));
        };
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => {
                let now = (this.origin.elapsed().as_millis() as u64).max(1);
                this.waiting_since.store(now, Ordering::SeqCst);
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
        let dropped = Arc::new(AtomicU64::new(0));
        let mut s = drop_when_abandoned(
            counted(10, Arc::clone(&dropped)),
            Duration::from_millis(100),
        );
        assert_eq!(s.next().await.map(|r| r.ok()), Some(Some(0)));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the abandoned stream was dropped"
        );
        let err = s.next().await.expect("an error").expect_err("cancelled");
        assert_eq!(err.code(), tonic::Code::Cancelled);
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn a_reader_that_keeps_reading_or_a_slow_query_is_never_cut() {
        let dropped = Arc::new(AtomicU64::new(0));
        let mut s =
            drop_when_abandoned(counted(5, Arc::clone(&dropped)), Duration::from_millis(100));
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
        let mut s = drop_when_abandoned(slow, Duration::from_millis(100));
        assert_eq!(s.next().await.map(|r| r.ok()), Some(Some(7)));
    }
}
