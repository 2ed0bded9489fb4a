//! A query's share of a process's memory. Every reservation still goes to the process-wide
//! pool (so the process limit holds and spilling stays fair), and a query's reservations
//! together fail once they reach the query's own limit — the operator's per-query limit, or
//! lower if the client's session asked (`SET memory_limit`). One query then cannot take the
//! memory every other user's queries need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use datafusion::common::{resources_datafusion_err, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::RuntimeEnv;

/// One query's reservations in a process's pool, bounded by `limit` bytes.
#[derive(Debug)]
pub struct QueryPool {
    shared: Arc<dyn MemoryPool>,
    query_id: String,
    limit: usize,
    used: AtomicUsize,
}

impl QueryPool {
    /// A share of `shared` for query `query_id`, at most `limit` bytes.
    pub fn new(shared: Arc<dyn MemoryPool>, query_id: &str, limit: usize) -> Self {
        QueryPool {
            shared,
            query_id: query_id.to_string(),
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl MemoryPool for QueryPool {
    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let before = self.used.fetch_add(additional, Ordering::Relaxed);
        if before + additional > self.limit {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(resources_datafusion_err!(
                "query {} would hold {} bytes, above its memory limit of {} bytes \
                 ({} asked for {additional} more); a query's limit is the operator's \
                 per-query limit or the session's memory_limit",
                self.query_id,
                before + additional,
                self.limit,
                reservation.consumer().name()
            ));
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// `base` with its memory pool replaced by `pool` (disk, caches and object stores shared).
pub fn with_pool(base: &RuntimeEnv, pool: Arc<dyn MemoryPool>) -> Arc<RuntimeEnv> {
    Arc::new(RuntimeEnv {
        memory_pool: pool,
        disk_manager: Arc::clone(&base.disk_manager),
        cache_manager: Arc::clone(&base.cache_manager),
        object_store_registry: Arc::clone(&base.object_store_registry),
    })
}

/// The pools of the queries running in a process, so that all the tasks of one query share
/// one limit. A pool lives as long as some task of its query holds it.
#[derive(Debug, Default, Clone)]
pub struct QueryPools {
    pools: Arc<Mutex<HashMap<String, Weak<QueryPool>>>>,
}

impl QueryPools {
    /// Query `query_id`'s pool over `shared`, made with `limit` if the query has none yet.
    pub fn get(
        &self,
        shared: &Arc<dyn MemoryPool>,
        query_id: &str,
        limit: usize,
    ) -> Arc<QueryPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = pools.get(query_id).and_then(Weak::upgrade) {
            return pool;
        }
        pools.retain(|_, pool| pool.strong_count() > 0);
        let pool = Arc::new(QueryPool::new(Arc::clone(shared), query_id, limit));
        pools.insert(query_id.to_string(), Arc::downgrade(&pool));
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn a_query_stops_at_its_limit_and_the_process_pool_still_counts() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let pools = QueryPools::default();
        let a: Arc<dyn MemoryPool> = pools.get(&shared, "a", 600);
        let b: Arc<dyn MemoryPool> = pools.get(&shared, "b", 600);
        let ra = MemoryConsumer::new("join").register(&a);
        let rb = MemoryConsumer::new("sort").register(&b);
        ra.try_grow(500).expect("within a's limit");
        let err = ra.try_grow(200).expect_err("beyond a's limit").to_string();
        assert!(err.contains("query a") && err.contains("600"), "{err}");
        assert_eq!(shared.reserved(), 500);
        rb.try_grow(450)
            .expect("within b's limit and the process's");
        // b is within its own limit, but the process is full.
        assert!(rb.try_grow(100).is_err());
        assert_eq!(shared.reserved(), 950);
        ra.free();
        rb.try_grow(100).expect("room again");
        assert_eq!(a.reserved(), 0);
        assert_eq!(shared.reserved(), 550);
    }

    #[test]
    fn tasks_of_one_query_share_its_pool() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let pools = QueryPools::default();
        let first = pools.get(&shared, "q", 300);
        let second = pools.get(&shared, "q", 300);
        assert!(Arc::ptr_eq(&first, &second));
        drop((first, second));
        let third = pools.get(&shared, "q", 200);
        assert_eq!(third.limit, 200);
    }
}
