//! What a process keeps of the files it read: Iceberg data files never change once written, so
//! their decoded Parquet footers are kept by path and size for the next query that reads them,
//! within a bound in bytes, oldest out first. (Delete files are read afresh by every query, so
//! a delete file that went missing or was damaged is always noticed: `DATA_LOSS`.)

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Values by key, at most `limit` bytes of them (as weighed by the caller).
#[derive(Debug)]
pub struct FileCache<V> {
    inner: Mutex<Entries<V>>,
    limit: usize,
}

#[derive(Debug)]
struct Entries<V> {
    by_key: HashMap<String, V>,
    order: VecDeque<(String, usize)>,
    bytes: usize,
}

impl<V: Clone> FileCache<V> {
    /// An empty cache of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Mutex::new(Entries {
                by_key: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
            limit,
        }
    }

    /// The value kept under `key`.
    pub fn get(&self, key: &str) -> Option<V> {
        self.lock().by_key.get(key).cloned()
    }

    /// Keeps `value` (weighing `weight` bytes) under `key`, making room by dropping the oldest;
    /// a value of more than a quarter of the limit is not kept.
    pub fn insert(&self, key: String, value: V, weight: usize) {
        if weight > self.limit / 4 {
            return;
        }
        let mut entries = self.lock();
        if entries.by_key.contains_key(&key) {
            return;
        }
        while entries.bytes + weight > self.limit {
            let Some((old, w)) = entries.order.pop_front() else {
                break;
            };
            entries.by_key.remove(&old);
            entries.bytes -= w;
        }
        entries.by_key.insert(key.clone(), value);
        entries.order.push_back((key, weight));
        entries.bytes += weight;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The key of a whole file: its size and path (a file rewritten under the same path with
/// another size is another file).
pub fn file_key(path: &str, size: u64) -> String {
    format!("{size}:{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_its_bound_dropping_the_oldest_and_never_an_oversized_value() {
        let cache = FileCache::new(100);
        cache.insert("a".into(), 1, 20);
        cache.insert("b".into(), 2, 20);
        cache.insert("c".into(), 3, 20);
        assert_eq!(
            (cache.get("a"), cache.get("b"), cache.get("c")),
            (Some(1), Some(2), Some(3))
        );
        // 60 + 25 + 20 > 100: the oldest goes.
        cache.insert("d".into(), 4, 25);
        cache.insert("e".into(), 5, 20);
        assert_eq!(cache.get("a"), None);
        assert_eq!((cache.get("b"), cache.get("e")), (Some(2), Some(5)));
        // More than a quarter of the bound is never kept (it would flush everything else).
        cache.insert("huge".into(), 6, 26);
        assert_eq!(cache.get("huge"), None);
        assert_eq!(cache.get("b"), Some(2));
        // A key is kept once: a second insert does not count its bytes twice.
        cache.insert("b".into(), 7, 20);
        assert_eq!(cache.get("b"), Some(2));
        assert_eq!(cache.lock().bytes, 85);
    }
}
