//! Queries planned once and run again: a dashboard's or an application's statement (a prepared
//! lookup executed with a new key each time, a BI tool's query sent again on each refresh) is
//! parsed, resolved and planned logically the first time; later runs of the same text, by the
//! same caller with the same settings, start from that plan while every table it reads is still
//! at the version it was planned with. Each run still gets its own session and query id and
//! binds its own parameters. A plan is kept optimized where that cannot change its answer (no
//! parameters, no function whose answer depends on when it runs: [`optimizable`]); any other
//! is optimized afresh by each run (so `now()` is the run's own).
//!
//! A kept optimized plan that reads no table at all (`SELECT 1`, the query BI tools and pools
//! send to check a connection; VALUES lists) and whose operators keep no state between runs
//! ([`reusable`]) also keeps the physical plan and task context its first run made: later runs
//! take a fresh copy of it (DataFusion's `reset_plan_states`) instead of a session and a
//! physical planning.
//!
//! Only queries that read nothing but Iceberg tables are kept (a listing, a metadata table or a
//! table function may answer differently with no new table version), and not writes, EXPLAIN,
//! time travel (`AS OF` may name a moving time) or statements over [`MAX_SQL_BYTES`]. At most
//! [`MAX_PLANS`] are kept, the oldest out first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;

use crate::client_auth::Principal;
use crate::limits::Planning;
use crate::planned_statement::iceberg_tables;

/// Statements kept at most.
pub const MAX_PLANS: usize = 256;

/// Longer statements are not kept.
pub const MAX_SQL_BYTES: usize = 16 * 1024;

/// A kept plan: its logical plan (parameters unbound) and where it is planned physically.
#[derive(Clone)]
pub struct KeptPlan {
    /// `$n` unbound; optimized if `optimized`.
    pub plan: LogicalPlan,
    /// Where its physical plan is made.
    pub planning: Planning,
    /// `plan` is optimized (see [`optimizable`]).
    pub optimized: bool,
    /// Where its first run leaves its physical plan, if it may be kept (optimized, reading no
    /// table).
    pub physical: Option<PhysicalSlot>,
}

/// A kept plan's physical plan and the task context its first run made.
#[derive(Clone)]
pub struct KeptPhysical {
    pub plan: Arc<dyn ExecutionPlan>,
    pub task_ctx: Arc<TaskContext>,
}

/// Where a kept plan's first run leaves its physical plan (see [`reusable`]).
pub type PhysicalSlot = Arc<OnceLock<KeptPhysical>>;

#[derive(Default)]
struct Inner {
    by_sql: HashMap<String, Vec<(Principal, KeptPlan)>>,
    order: VecDeque<(String, Principal)>,
}

/// Plans by statement text and caller.
#[derive(Default, Clone)]
pub struct PlanCache {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanCache")
            .field("kept", &self.lock().order.len())
            .finish()
    }
}

impl PlanCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plan kept for `sql` run by `caller` (to be checked against the tables' versions).
    pub fn get(&self, sql: &str, caller: &Principal) -> Option<KeptPlan> {
        let inner = self.lock();
        inner
            .by_sql
            .get(sql)?
            .iter()
            .find(|(who, _)| who == caller)
            .map(|(_, kept)| kept.clone())
    }

    /// Keeps `plan` for `sql` run by `caller`, if it is a query worth keeping (see the module
    /// documentation), replacing what was kept for them. Returns where its run is to leave its
    /// physical plan, if that may be kept too.
    pub fn put(
        &self,
        sql: &str,
        caller: &Principal,
        plan: &LogicalPlan,
        planning: Planning,
        optimized: bool,
    ) -> Option<PhysicalSlot> {
        if !keepable(sql, plan) {
            return None;
        }
        let reads_no_table = iceberg_tables(plan).is_some_and(|tables| tables.is_empty());
        let physical = (optimized && reads_no_table).then(PhysicalSlot::default);
        let kept = KeptPlan {
            plan: plan.clone(),
            planning,
            optimized,
            physical: physical.clone(),
        };
        let mut inner = self.lock();
        let entries = inner.by_sql.entry(sql.to_string()).or_default();
        if let Some(slot) = entries.iter_mut().find(|(who, _)| who == caller) {
            slot.1 = kept;
            return physical;
        }
        entries.push((caller.clone(), kept));
        inner.order.push_back((sql.to_string(), caller.clone()));
        while inner.order.len() > MAX_PLANS {
            if let Some((old_sql, old_caller)) = inner.order.pop_front() {
                inner.forget(&old_sql, &old_caller);
            }
        }
        physical
    }

    /// Drops the plan kept for `sql` run by `caller` (a table it reads changed).
    pub fn remove(&self, sql: &str, caller: &Principal) {
        let mut inner = self.lock();
        inner.forget(sql, caller);
        inner.order.retain(|(s, c)| !(s == sql && c == caller));
    }
}

impl Inner {
    fn forget(&mut self, sql: &str, caller: &Principal) {
        if let Some(entries) = self.by_sql.get_mut(sql) {
            entries.retain(|(who, _)| who != caller);
            if entries.is_empty() {
                self.by_sql.remove(sql);
            }
        }
    }
}

/// Whether a physical plan may be kept and run again (from a fresh copy): every operator is one
/// that keeps no state between runs beyond its metrics (which the copy resets) and reads only
/// what the plan holds (VALUES lists, the one row of a table-less SELECT). Joins, sorts and
/// aggregations (dynamic filters), repartitions and Floe's stages (a query id per run) are not.
pub fn reusable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut reusable = true;
    let _ = plan.apply(|node| {
        reusable &= match node.name() {
            "ProjectionExec"
            | "PlaceholderRowExec"
            | "EmptyExec"
            | "FilterExec"
            | "CoalesceBatchesExec"
            | "GlobalLimitExec"
            | "LocalLimitExec" => true,
            "DataSourceExec" => {
                node.as_any()
                    .downcast_ref::<DataSourceExec>()
                    .is_some_and(|exec| {
                        exec.data_source()
                            .as_any()
                            .downcast_ref::<MemorySourceConfig>()
                            .is_some()
                    })
            }
            _ => false,
        };
        Ok(if reusable {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    reusable
}

/// Whether a kept plan may be kept optimized, so that its runs skip the optimizer too: one
/// without parameters (they are bound before optimizing) whose every function answers the
/// same whenever it runs (`now()`, `current_date` and the like are folded by the optimizer
/// into the time it runs; `random()` is not folded, but is left out all the same).
pub fn optimizable(sql: &str, plan: &LogicalPlan) -> bool {
    let mut immutable = true;
    let visited = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                immutable &= match e {
                    Expr::ScalarFunction(f) => {
                        f.func.signature().volatility == Volatility::Immutable
                    }
                    Expr::Placeholder(_) | Expr::ScalarVariable(..) => false,
                    _ => true,
                };
                Ok(if immutable {
                    TreeNodeRecursion::Continue
                } else {
                    TreeNodeRecursion::Stop
                })
            })
        })
    });
    visited.is_ok() && immutable && keepable(sql, plan)
}

/// Whether the plan of `sql` may be kept: a query (not a write or EXPLAIN) reading only
/// Iceberg tables, without time travel, of at most [`MAX_SQL_BYTES`].
fn keepable(sql: &str, plan: &LogicalPlan) -> bool {
    let query = !matches!(
        plan,
        LogicalPlan::Dml(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::DescribeTable(_)
    );
    query
        && sql.len() <= MAX_SQL_BYTES
        && !sql.to_ascii_uppercase().contains("AS OF")
        && iceberg_tables(plan).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::LogicalPlanBuilder;

    fn one_row() -> LogicalPlan {
        LogicalPlanBuilder::empty(true).build().expect("a plan")
    }

    fn bob() -> Principal {
        let mut bob = Principal::anonymous();
        bob.user = "bob".into();
        bob
    }

    #[test]
    fn a_plan_is_kept_by_text_and_caller_and_bounded() {
        let cache = PlanCache::default();
        let alice = Principal::anonymous();
        cache.put("SELECT 1", &alice, &one_row(), Planning::Here, false);
        assert!(cache.get("SELECT 1", &alice).is_some());
        assert!(
            cache.get("SELECT 1", &bob()).is_none(),
            "another caller plans anew"
        );
        assert!(cache.get("SELECT 2", &alice).is_none());
        let mut other_schema = alice.clone();
        other_schema.settings.schema = Some("x".into());
        assert!(
            cache.get("SELECT 1", &other_schema).is_none(),
            "other settings plan anew"
        );
        cache.remove("SELECT 1", &alice);
        assert!(cache.get("SELECT 1", &alice).is_none());
        for i in 0..MAX_PLANS + 5 {
            cache.put(
                &format!("SELECT {i}"),
                &alice,
                &one_row(),
                Planning::Here,
                false,
            );
        }
        assert!(
            cache.get("SELECT 0", &alice).is_none(),
            "the oldest went first"
        );
        assert!(cache
            .get(&format!("SELECT {}", MAX_PLANS + 4), &alice)
            .is_some());
        assert!(cache.lock().order.len() <= MAX_PLANS);
    }

    #[test]
    fn only_plans_whose_answer_cannot_depend_on_when_they_run_are_kept_optimized() {
        use datafusion::logical_expr::expr::Placeholder;
        use datafusion::logical_expr::lit;
        let project = |e: Expr| {
            LogicalPlanBuilder::empty(true)
                .project(vec![e])
                .and_then(|b| b.build())
                .expect("a plan")
        };
        assert!(optimizable("SELECT 1 + 2", &project(lit(1) + lit(2))));
        let abs = datafusion::functions::math::expr_fn::abs(lit(-1));
        assert!(optimizable("SELECT abs(-1)", &project(abs)));
        let now = datafusion::functions::datetime::expr_fn::now();
        assert!(!optimizable("SELECT now()", &project(now)));
        let random = datafusion::functions::math::expr_fn::random();
        assert!(!optimizable("SELECT random()", &project(random)));
        let param = Expr::Placeholder(Placeholder::new_with_field("$1".into(), None));
        assert!(!optimizable("SELECT $1", &project(param)));
    }

    #[test]
    fn time_travel_and_long_statements_are_not_kept() {
        let cache = PlanCache::default();
        let alice = Principal::anonymous();
        cache.put(
            "SELECT 1 FROM t FOR TIMESTAMP as of now()",
            &alice,
            &one_row(),
            Planning::Here,
            false,
        );
        assert!(cache
            .get("SELECT 1 FROM t FOR TIMESTAMP as of now()", &alice)
            .is_none());
        let long = format!("SELECT 1 {}", " ".repeat(MAX_SQL_BYTES));
        cache.put(&long, &alice, &one_row(), Planning::Here, false);
        assert!(cache.get(&long, &alice).is_none());
    }
}
