//! Queries planned at GetFlightInfo, kept for the DoGet that runs them when they could not start
//! at once (no admission place was free; see `crate::started`): a query is planned once per
//! execution, not once to learn its schema and again to run it. A plan waits
//! [`PLANNED_TTL`] for its ticket; a ticket read later, read again, or by another caller plans
//! the query afresh.
//!
//! A query planned to answer CreatePreparedStatement is kept the same way, for the statement's
//! first execution: clients such as ADBC's DB-API prepare every statement they execute, so the
//! plan made to learn its schema is the one that runs (if its tables are unchanged since, see
//! `FloeFlightSql::plan_to_run`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client_auth::Principal;
use crate::session::Planned;

/// How long a planned query waits for its ticket to be read.
pub const PLANNED_TTL: Duration = Duration::from_secs(60);

/// Planned queries kept at most; beyond it the oldest is dropped.
const MAX_PLANNED: usize = 256;

/// A query planned for a run: who planned it, its query id, its plan.
struct Entry {
    at: Instant,
    /// Planned to prepare a statement (taken by its first execution, not by a ticket).
    prepared: bool,
    caller: Principal,
    query_id: String,
    planned: Planned,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    order: VecDeque<String>,
}

/// Planned queries, by run id.
#[derive(Default, Clone)]
pub struct PlannedRuns {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for PlannedRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedRuns")
            .field("kept", &self.lock().entries.len())
            .finish()
    }
}

impl PlannedRuns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps run `run_id`'s plan, dropping expired plans and (beyond the bound) the oldest.
    pub fn put(&self, run_id: &str, caller: &Principal, query_id: &str, planned: Planned) {
        self.keep(run_id, false, caller, query_id, planned);
    }

    /// Keeps the plan made to prepare a statement, under `id`, for its first execution.
    pub fn put_prepared(&self, id: &str, caller: &Principal, query_id: &str, planned: Planned) {
        self.keep(id, true, caller, query_id, planned);
    }

    fn keep(
        &self,
        run_id: &str,
        prepared: bool,
        caller: &Principal,
        query_id: &str,
        planned: Planned,
    ) {
        let mut inner = self.lock();
        let Inner { entries, order } = &mut *inner;
        make_room(entries, order, MAX_PLANNED, |e| {
            e.at.elapsed() >= PLANNED_TTL
        });
        inner.entries.insert(
            run_id.to_string(),
            Entry {
                at: Instant::now(),
                prepared,
                caller: caller.clone(),
                query_id: query_id.to_string(),
                planned,
            },
        );
        inner.order.push_back(run_id.to_string());
    }

    /// Run `run_id`'s plan and query id, taken (a second read plans again), if it is still
    /// kept and `caller` is who planned it.
    pub fn take(&self, run_id: &str, caller: &Principal) -> Option<(String, Planned)> {
        self.take_if(run_id, false, caller)
    }

    /// The plan made to prepare statement `id` and its query id, taken (later executions plan
    /// anew), if it is still kept and `caller` made it.
    pub fn take_prepared(&self, id: &str, caller: &Principal) -> Option<(String, Planned)> {
        self.take_if(id, true, caller)
    }

    fn take_if(
        &self,
        run_id: &str,
        prepared: bool,
        caller: &Principal,
    ) -> Option<(String, Planned)> {
        if run_id.is_empty() {
            return None;
        }
        let mut inner = self.lock();
        let fresh = inner.entries.get(run_id).is_some_and(|e| {
            e.at.elapsed() < PLANNED_TTL && e.prepared == prepared && &e.caller == caller
        });
        if !fresh {
            return None;
        }
        inner.order.retain(|r| r != run_id);
        inner
            .entries
            .remove(run_id)
            .map(|e| (e.query_id, e.planned))
    }
}

/// Drops the oldest of `entries` (oldest first in `order`) while the oldest has `expired` or
/// there are `max` or more, so that one more fits.
pub(crate) fn make_room<V>(
    entries: &mut HashMap<String, V>,
    order: &mut VecDeque<String>,
    max: usize,
    expired: impl Fn(&V) -> bool,
) {
    while let Some(oldest) = order.front() {
        if order.len() < max && entries.get(oldest).is_some_and(|e| !expired(e)) {
            break;
        }
        if let Some(oldest) = order.pop_front() {
            entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn planned() -> Planned {
        Planned::Settings(Settings::default())
    }

    /// Two callers: anonymous, and a user named bob.
    fn alice_and_bob() -> (Principal, Principal) {
        let mut bob = Principal::anonymous();
        bob.user = "bob".into();
        (Principal::anonymous(), bob)
    }

    #[test]
    fn a_plan_is_taken_once_by_whoever_planned_it_and_bounded() {
        let runs = PlannedRuns::default();
        let (alice, bob) = alice_and_bob();
        runs.put("r1", &alice, "q1", planned());
        assert!(
            runs.take("r1", &bob).is_none(),
            "another caller plans afresh"
        );
        assert_eq!(
            runs.take("r1", &alice).map(|(q, _)| q).as_deref(),
            Some("q1")
        );
        assert!(
            runs.take("r1", &alice).is_none(),
            "a second read plans again"
        );
        assert!(runs.take("", &alice).is_none());
        for i in 0..MAX_PLANNED + 3 {
            runs.put(&format!("r{i}"), &alice, "q", planned());
        }
        assert!(runs.take("r0", &alice).is_none(), "the oldest went first");
        assert!(runs
            .take(&format!("r{}", MAX_PLANNED + 2), &alice)
            .is_some());
        assert!(runs.lock().entries.len() <= MAX_PLANNED);
    }

    #[test]
    fn a_prepared_plan_is_taken_once_by_its_execution_not_by_a_ticket() {
        let runs = PlannedRuns::default();
        let (alice, bob) = alice_and_bob();
        runs.put_prepared("p1", &alice, "q1", planned());
        assert!(runs.take("p1", &alice).is_none(), "not a run's ticket");
        assert!(
            runs.take_prepared("p1", &bob).is_none(),
            "another caller's handle plans afresh"
        );
        assert_eq!(
            runs.take_prepared("p1", &alice).map(|(q, _)| q).as_deref(),
            Some("q1")
        );
        assert!(runs.take_prepared("p1", &alice).is_none(), "taken once");
        runs.put("r1", &alice, "q2", planned());
        assert!(runs.take_prepared("r1", &alice).is_none(), "a run's plan");
    }
}
