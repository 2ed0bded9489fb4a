//! Results of writes that ran when the client executed them (at GetFlightInfo), kept for the
//! client to read with the ticket it got, as often as it reads it, until they expire.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

/// How long a stored result waits to be read.
pub const RESULT_TTL: Duration = Duration::from_secs(600);

/// Stored results kept at most; beyond it the oldest is dropped.
const MAX_RESULTS: usize = 10_000;

#[derive(Debug, Default)]
struct Inner {
    results: HashMap<String, (Instant, Vec<RecordBatch>)>,
    order: VecDeque<String>,
}

/// Stored results, by run id.
#[derive(Debug, Default, Clone)]
pub struct StoredResults {
    inner: Arc<Mutex<Inner>>,
}

impl StoredResults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `batches` as run `run_id`'s result, dropping expired and (beyond the bound) the
    /// oldest results.
    pub fn put(&self, run_id: &str, batches: Vec<RecordBatch>) {
        let mut inner = self.lock();
        while let Some(oldest) = inner.order.front().cloned() {
            let expired = inner
                .results
                .get(&oldest)
                .is_none_or(|(at, _)| at.elapsed() >= RESULT_TTL);
            if !expired && inner.order.len() < MAX_RESULTS {
                break;
            }
            inner.order.pop_front();
            inner.results.remove(&oldest);
        }
        inner
            .results
            .insert(run_id.to_string(), (Instant::now(), batches));
        inner.order.push_back(run_id.to_string());
    }

    /// Run `run_id`'s result, if it is still kept.
    pub fn get(&self, run_id: &str) -> Option<Vec<RecordBatch>> {
        self.lock()
            .results
            .get(run_id)
            .filter(|(at, _)| at.elapsed() < RESULT_TTL)
            .map(|(_, batches)| batches.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_read_back_as_often_as_asked_and_bounded() {
        let results = StoredResults::default();
        let batch = RecordBatch::new_empty(floe_catalog::commit::count_schema());
        results.put("a", vec![batch.clone()]);
        assert_eq!(results.get("a").map(|b| b.len()), Some(1));
        assert_eq!(results.get("a").map(|b| b.len()), Some(1));
        assert!(results.get("b").is_none());
        for i in 0..MAX_RESULTS + 5 {
            results.put(&format!("r{i}"), vec![]);
        }
        assert!(results.get("a").is_none(), "the oldest went first");
        assert!(results.get(&format!("r{}", MAX_RESULTS + 4)).is_some());
        assert!(results.lock().results.len() <= MAX_RESULTS);
    }
}
