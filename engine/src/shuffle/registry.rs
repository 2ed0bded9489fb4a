//! Where producers leave their buckets and consumers claim them: one registry per process, a
//! claim waiting (bounded) for a producer that has not registered yet.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use floe_proto::ShuffleRead;
use tokio::sync::mpsc;
use tonic::Status;

use super::{ShuffleItem, BUCKET_CAPACITY, SHARED_BUCKET_CAPACITY};

type BucketKey = (String, u32, u32, u32);

#[derive(Debug)]
struct Bucket {
    schema: SchemaRef,
    receiver: mpsc::Receiver<ShuffleItem>,
}

/// How long a claim waits for a bucket whose producer task has not reached its executor yet.
/// The coordinator starts producers and consumers together and fails the whole query when a
/// producer does not start where it was placed, so a bucket that does not come within this
/// belongs to no task that will run.
pub const CLAIM_WAIT: Duration = Duration::from_secs(30);

/// The buckets of the shuffle producers running on this executor, until a consumer claims them.
#[derive(Debug, Default)]
pub struct ShuffleRegistry {
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
    /// The buckets claimed or dropped unclaimed within the last [`CLAIM_WAIT`], and when: a
    /// claim of one of these is answered at once, not waited for.
    gone: Mutex<Gone>,
    /// Woken whenever a producer registers its buckets.
    registered: tokio::sync::Notify,
    /// The executors running in this process (their producers register here).
    local_executors: Mutex<HashSet<String>>,
}

/// Buckets that were here lately, oldest first: forgotten once older than [`CLAIM_WAIT`], a
/// few at a time as new ones come (no sweep of the whole set per claim).
#[derive(Debug, Default)]
struct Gone {
    order: VecDeque<(std::time::Instant, BucketKey)>,
    keys: HashSet<BucketKey>,
}

impl Gone {
    fn forget_old(&mut self, now: std::time::Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < CLAIM_WAIT {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.keys.remove(&key);
            }
        }
    }

    fn insert(&mut self, key: BucketKey, now: std::time::Instant) {
        self.forget_old(now);
        self.keys.insert(key.clone());
        self.order.push_back((now, key));
    }
}

/// Un-registers a producer's buckets that no consumer claimed, when the producer ends.
pub struct BucketsGuard {
    registry: Arc<ShuffleRegistry>,
    keys: Vec<BucketKey>,
}

impl Drop for BucketsGuard {
    fn drop(&mut self) {
        let mut buckets = self
            .registry
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut gone = self.registry.gone.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        for key in &self.keys {
            if buckets.remove(key).is_some() {
                gone.insert(key.clone(), now);
            }
        }
    }
}

/// How long the unclaimed buckets of a failed producer stay, holding its error for the
/// consumers that have not come for them yet.
const FAILED_BUCKETS_LINGER: Duration = Duration::from_secs(30);

impl BucketsGuard {
    /// The producer failed: its unclaimed buckets (each ending with the producer's error)
    /// stay for a while, so that a consumer that comes late learns the real cause (a missing
    /// file, say) rather than that the bucket is gone.
    pub fn linger(self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        #[allow(
            clippy::disallowed_methods,
            reason = "the failed buckets outlive their query on purpose, for a bounded time"
        )]
        runtime.spawn(async move {
            tokio::time::sleep(FAILED_BUCKETS_LINGER).await;
            drop(self);
        });
    }
}

impl ShuffleRegistry {
    /// The registry every executor of this process shares (bucket keys name the query, stage,
    /// task and bucket, which no two producers share).
    pub fn process() -> Arc<Self> {
        static REGISTRY: OnceLock<Arc<ShuffleRegistry>> = OnceLock::new();
        Arc::clone(REGISTRY.get_or_init(Arc::default))
    }

    /// Opens the buckets of producer task `task` of `stage`: their senders, and a guard that
    /// removes the unclaimed ones when dropped.
    pub fn register(
        self: &Arc<Self>,
        query_id: &str,
        stage: u32,
        task: u32,
        schema: SchemaRef,
        buckets_per_reader: usize,
        readers: usize,
    ) -> (Vec<mpsc::Sender<ShuffleItem>>, BucketsGuard) {
        let count = buckets_per_reader * readers.max(1);
        // A shared stage's copies are kept for the reader that reads later (see
        // `super::Output`); one reader's buckets hold a few batches, for backpressure.
        let capacity = if readers > 1 {
            SHARED_BUCKET_CAPACITY
        } else {
            BUCKET_CAPACITY
        };
        let mut senders = Vec::with_capacity(count);
        let mut keys = Vec::with_capacity(count);
        {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            for bucket in 0..count as u32 {
                let (tx, rx) = mpsc::channel(capacity);
                let key = (query_id.to_string(), stage, task, bucket);
                buckets.insert(
                    key.clone(),
                    Bucket {
                        schema: Arc::clone(&schema),
                        receiver: rx,
                    },
                );
                senders.push(tx);
                keys.push(key);
            }
        }
        self.registered.notify_waiters();
        let guard = BucketsGuard {
            registry: Arc::clone(self),
            keys,
        };
        (senders, guard)
    }

    /// Notes that executor `executor_id` runs in this process: its producers' buckets are read
    /// from this registry.
    pub fn add_local_executor(&self, executor_id: &str) {
        self.local_executors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(executor_id.to_string());
    }

    /// Whether executor `executor_id` runs in this process.
    pub fn is_local(&self, executor_id: &str) -> bool {
        self.local_executors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(executor_id)
    }

    /// Takes a bucket for reading, waiting up to `bound` for its producer to register it (see
    /// [`CLAIM_WAIT`]); NOT_FOUND then, or at once for a bucket that was here and is gone
    /// (read already, or its producer ended).
    pub async fn claim_waiting(
        &self,
        read: &ShuffleRead,
        bound: Duration,
    ) -> std::result::Result<(SchemaRef, mpsc::Receiver<ShuffleItem>), Status> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            // Listening before looking, so that a producer registering in between wakes it.
            let registered = self.registered.notified();
            tokio::pin!(registered);
            registered.as_mut().enable();
            match self.try_claim(read) {
                Ok(claimed) => return Ok(claimed),
                Err(was_here) if was_here || tokio::time::Instant::now() >= deadline => {
                    return Err(not_found(read))
                }
                Err(_) => {
                    let _ = tokio::time::timeout_at(deadline, registered).await;
                }
            }
        }
    }

    /// Takes a bucket for reading if it is here; NOT_FOUND if not (its producer has not
    /// registered it yet, never ran here, already ended, or the query does not exist).
    pub fn claim(
        &self,
        read: &ShuffleRead,
    ) -> std::result::Result<(SchemaRef, mpsc::Receiver<ShuffleItem>), Status> {
        self.try_claim(read).map_err(|_| not_found(read))
    }

    /// A bucket that is here; otherwise whether it was here (claimed, or dropped unclaimed,
    /// lately): `Err(true)`.
    fn try_claim(
        &self,
        read: &ShuffleRead,
    ) -> std::result::Result<(SchemaRef, mpsc::Receiver<ShuffleItem>), bool> {
        let key = (read.query_id.clone(), read.stage_id, read.task, read.bucket);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        gone.forget_old(now);
        match buckets.remove(&key) {
            Some(bucket) => {
                gone.insert(key, now);
                Ok((bucket.schema, bucket.receiver))
            }
            None => Err(gone.keys.contains(&key)),
        }
    }
}

fn not_found(read: &ShuffleRead) -> Status {
    Status::not_found(format!(
        "bucket {} of task {} of stage {} (query {}) is not on this executor: the producer \
         never started here, it ended, or it was already read",
        read.bucket, read.task, read.stage_id, read.query_id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_gone_are_forgotten_after_the_claim_wait_oldest_first() {
        let key = |task: u32| ("q".to_string(), 1, task, 0);
        let start = std::time::Instant::now();
        let mut gone = Gone::default();
        gone.insert(key(0), start);
        gone.insert(key(1), start + CLAIM_WAIT / 2);
        gone.forget_old(start + CLAIM_WAIT);
        assert!(!gone.keys.contains(&key(0)), "older than the claim wait");
        assert!(gone.keys.contains(&key(1)));
        gone.insert(key(2), start + CLAIM_WAIT * 2);
        assert_eq!(gone.keys.len(), 1, "{:?}", gone.keys);
        assert_eq!(gone.order.len(), 1);
    }
}
