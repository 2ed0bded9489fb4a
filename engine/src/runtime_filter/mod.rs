//! Runtime filters across stages: the keys of a partitioned or broadcast join's build side, sent
//! to the producers of its probe side, so that rows which cannot join are dropped before they are
//! shuffled (Trino's dynamic filtering, between tasks of different stages).
//!
//! ```text
//!  consumer task j (the join's stage)           producer task i (a probe-side stage)
//!   HashJoinExec                                  RepartitionExec (the shuffle's split)
//!    ├─ RuntimeFilterSourceExec ──keys of j──▶     RuntimeFilterExec: waits for every j's keys
//!    │                                               (eager: passes rows until they are there)
//!    │   └─ build side (read first)                 └─ probe side's input (scan, joins, …)
//!    └─ probe side ◀──────── shuffle ───────────
//! ```
//!
//! A hash join reads its whole build side before it reads a probe row, and the build side
//! never depends on the probe side (they are different subtrees), so a producer waiting for
//! the keys waits for work that is already running: no cycle. Meanwhile its input makes its
//! first batch (a broadcast join below collects its build side, a scan opens its file), which
//! then waits alone for the keys: reading the input earlier adds no wait the keys' source could
//! be part of. The wait is bounded
//! ([`WAIT`]); a build side of more than [`MAX_KEYS`] rows per task publishes "too many" at
//! once (of one integer key column whose range a bitmap covers, [`MAX_DENSE_KEYS`]), and
//! without the keys the producer keeps every row — the join itself stays exact either way. An eager filter (its producer shuffles the keys alone into the join, which costs
//! about what testing them does) does not wait: rows pass until the keys are there. Keys travel
//! from executor to executor like shuffle data, MACed with the cluster's shuffle key, and wait
//! in this process's [`FilterRegistry`].
//!
//! `filter`: the producers' side; `source`: the join's side; `wire`: keys between executors.

mod filter;
mod source;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::ArrayRef;
use arrow::compute::concat;
use tokio::sync::watch;

pub use filter::RuntimeFilterExec;
pub use source::RuntimeFilterSourceExec;
pub use wire::receive;

/// The most build-side rows one consumer task publishes as keys; past it, "too many".
pub const MAX_KEYS: usize = 1 << 18;

/// The most rows one consumer task publishes as keys of one integer column that a bitmap
/// covers (`filter::dense`: its producers test a bit per row, not a hash lookup). TPC-H SF10
/// Q03's 1.47 M orders of building-segment customers, 735 K per task, cut lineitem's 32 M
/// rows to the 3 M that join before the shuffle.
pub const MAX_DENSE_KEYS: usize = 1 << 21;

/// The most keys of all a join's tasks one filter takes (so many tasks of a big cluster, each
/// under [`MAX_KEYS`], do not make every producer hold a huge hash set): past it, no filter …
pub const MAX_FILTER_KEYS: usize = 1 << 20;

/// … unless they are keys of one integer column that a bitmap covers, up to this many.
pub const MAX_DENSE_FILTER_KEYS: usize = 1 << 22;

/// The most bytes of keys one consumer task sends (long strings): past it, "too many".
const MAX_KEY_BYTES: usize = 24 * 1024 * 1024;

/// How long a producer waits for every consumer's keys before it keeps every row.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long published keys stay for producers that have not come for them yet.
const ENTRY_TTL: Duration = Duration::from_secs(120);

/// The most filters kept at once in one process (the oldest go first).
const MAX_ENTRIES: usize = 4096;

/// What one consumer task published.
#[derive(Debug, Clone)]
pub enum Published {
    /// The build side's key columns, as the task saw them (nulls included: they match nothing).
    Keys(Vec<ArrayRef>),
    /// More rows than [`MAX_KEYS`]: no filter.
    TooMany,
}

type Parts = HashMap<u32, Published>;

/// `name@index` of each key column of `schema`, for EXPLAIN.
fn key_names(schema: &arrow::datatypes::Schema, columns: &[u32]) -> Vec<String> {
    columns
        .iter()
        .map(|&c| match schema.fields().get(c as usize) {
            Some(field) => format!("{}@{c}", field.name()),
            None => format!("?@{c}"),
        })
        .collect()
}

struct Entry {
    created: Instant,
    parts: watch::Sender<Parts>,
}

/// The keys published to this process, by query and filter, until their producers read them.
#[derive(Default)]
pub struct FilterRegistry {
    entries: Mutex<HashMap<(String, u64), Entry>>,
}

impl FilterRegistry {
    /// The registry every executor of this process shares.
    pub fn process() -> Arc<Self> {
        static REGISTRY: OnceLock<Arc<FilterRegistry>> = OnceLock::new();
        Arc::clone(REGISTRY.get_or_init(Arc::default))
    }

    fn parts(&self, query_id: &str, filter_id: u64) -> watch::Sender<Parts> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = (query_id.to_string(), filter_id);
        if let Some(entry) = entries.get(&key) {
            return entry.parts.clone();
        }
        entries.retain(|_, e| e.created.elapsed() < ENTRY_TTL);
        if entries.len() >= MAX_ENTRIES {
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        let (parts, _) = watch::channel(Parts::new());
        entries.insert(
            key,
            Entry {
                created: Instant::now(),
                parts: parts.clone(),
            },
        );
        parts
    }

    /// Records what consumer task `partition` published.
    pub fn publish(&self, query_id: &str, filter_id: u64, partition: u32, published: Published) {
        self.parts(query_id, filter_id).send_modify(|parts| {
            parts.insert(partition, published);
        });
    }

    /// The keys of all `sources` consumer tasks, each column's concatenated; `None` when one
    /// had too many, or not all came within `bound`.
    pub async fn wait(
        &self,
        query_id: &str,
        filter_id: u64,
        sources: u32,
        bound: Duration,
    ) -> Option<Vec<ArrayRef>> {
        self.awaiting(query_id, filter_id, sources)
            .wait(bound)
            .await
    }

    /// A producer's watch on the keys of all `sources` consumer tasks of a filter.
    pub fn awaiting(&self, query_id: &str, filter_id: u64, sources: u32) -> Awaiting {
        Awaiting {
            parts: self.parts(query_id, filter_id).subscribe(),
            sources,
        }
    }
}

/// A producer's watch on a filter's keys, looked at without waiting ([`Awaiting::now`]) or
/// waited for ([`Awaiting::wait`]).
pub struct Awaiting {
    parts: watch::Receiver<Parts>,
    sources: u32,
}

impl Awaiting {
    /// Whether every task has published, or one had too many.
    fn settled(parts: &Parts, sources: u32) -> bool {
        parts.values().any(|v| matches!(v, Published::TooMany)) || parts.len() >= sources as usize
    }

    /// `Some` once settled: the keys, or `None` for no filter; `None` while tasks are missing.
    pub fn now(&self) -> Option<Option<Vec<ArrayRef>>> {
        let parts = self.parts.borrow();
        Self::settled(&parts, self.sources).then(|| union(&parts))
    }

    /// The keys once settled; `None` for no filter, or when not settled within `bound`.
    pub async fn wait(mut self, bound: Duration) -> Option<Vec<ArrayRef>> {
        let sources = self.sources;
        let parts = tokio::time::timeout(bound, self.parts.wait_for(|p| Self::settled(p, sources)))
            .await
            .ok()?
            .ok()?
            .clone();
        union(&parts)
    }
}

/// Every task's keys, each column's concatenated; `None` when one had too many, or all together
/// more than [`MAX_FILTER_KEYS`] (a filter's hash set is held by every producer task) — or
/// than [`MAX_DENSE_FILTER_KEYS`] of one integer column a bitmap covers.
fn union(parts: &Parts) -> Option<Vec<ArrayRef>> {
    union_within(parts, MAX_FILTER_KEYS, MAX_DENSE_FILTER_KEYS)
}

/// [`union`] with its limits: `max` keys, `max_dense` of one integer column a bitmap covers.
fn union_within(parts: &Parts, max: usize, max_dense: usize) -> Option<Vec<ArrayRef>> {
    // A task whose build side had no row publishes no column: it adds no key.
    let mut columns: Vec<Vec<ArrayRef>> = Vec::new();
    let mut rows = 0usize;
    for part in parts.values() {
        let Published::Keys(keys) = part else {
            return None;
        };
        let Some(first) = keys.first() else {
            continue;
        };
        rows += first.len();
        if rows > max_dense || (rows > max && keys.len() > 1) {
            return None;
        }
        if columns.len() < keys.len() {
            columns.resize_with(keys.len(), Vec::new);
        }
        for (column, key) in columns.iter_mut().zip(keys) {
            column.push(Arc::clone(key));
        }
    }
    let keys: Vec<ArrayRef> = columns
        .iter()
        .map(|arrays| {
            let arrays: Vec<&dyn arrow::array::Array> = arrays.iter().map(|a| a.as_ref()).collect();
            concat(&arrays).ok()
        })
        .collect::<Option<_>>()?;
    match keys.as_slice() {
        [one] if rows > max && !filter::dense(one) => None,
        _ => Some(keys),
    }
}
