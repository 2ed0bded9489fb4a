//! Turning SQL into a distributed physical plan: one DataFusion session per query over the
//! Iceberg catalog, with the stage-cutting rule last among the physical optimizers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::catalog::MemoryCatalogProviderList;
use datafusion::common::TableReference;
use datafusion::execution::context::ExecutionProps;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DfStatement;
use floe_catalog::provider::{catalog_provider, catalog_provider_for};
use floe_catalog::CATALOG_NAME;
use iceberg::Catalog;

use crate::client_auth::Principal;
use crate::ddl::{self, Command, CreateTableCommand};
use crate::error::{CoordinatorError, Result};
use crate::limits::Planning;
use crate::registry::ExecutorRegistry;
use crate::settings::Settings;
use crate::stages::{PlanStages, QueryOptions};
use crate::statement_kind::{
    is_ddl, is_explain_analyze, is_insert, is_query, is_query_or_insert, statement_kind,
};

use crate::plan_cache::KeptPhysical;
pub use crate::planned_statement::{sum_counts, KeptRun, Planned, PlannedQuery};
use arrow::array::{RecordBatch, UInt64Array};
use datafusion::common::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use floe_catalog::commit::count_schema;
use floe_catalog::commit::Committer;
use floe_engine::checked::CheckedIntegerArithmetic;
use floe_engine::one_row::ScalarSubqueriesReturnOneRow;
use floe_engine::write::WriteSettings;
use futures::TryStreamExt;

/// The schema unqualified names resolve in until a session says `USE`.
pub const DEFAULT_SCHEMA: &str = "default";

/// The session time zone when a connection set none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// The most tasks one stage is cut into, however many slots the executors have: a shuffle
/// moves data between every producer task and every consumer task.
const MAX_TASKS: usize = 256;

/// Plans queries against the catalog for the cluster's executors.
#[derive(Debug, Clone)]
pub struct QueryEngine {
    catalog: Arc<dyn Catalog>,
    registry: ExecutorRegistry,
    runtime: Arc<RuntimeEnv>,
    read_only: bool,
    swap: Option<Arc<dyn Committer>>,
    /// The operator's per-query memory limit (per process), if any.
    query_memory: Option<u64>,
    /// The most a session may ask for with `SET memory_limit`.
    max_query_memory: u64,
    /// The memory shares of the queries running on the coordinator.
    query_pools: floe_engine::memory::QueryPools,
    /// Where tables' files may be: the warehouse and every `--storage-root`.
    storage_roots: Vec<String>,
    /// Statements planned so far.
    statements_planned: Arc<AtomicU64>,
    /// Runs that ran a copy of a kept physical plan so far.
    runs_from_kept_physical: Arc<AtomicU64>,
    /// Queries' plans, for their next runs.
    plans: crate::plan_cache::PlanCache,
    /// Session states by settings, copied for each query.
    templates: crate::session_templates::StateTemplates,
}

/// The memory limit of a runtime's pool, in bytes (`u64::MAX` if it has none).
fn runtime_limit(runtime: &RuntimeEnv) -> u64 {
    match runtime.memory_pool.memory_limit() {
        datafusion::execution::memory_pool::MemoryLimit::Finite(n) => n as u64,
        _ => u64::MAX,
    }
}

impl QueryEngine {
    /// An engine over a catalog and the executors in `registry`; the coordinator's share of
    /// every query runs in `runtime` (its memory pool and spill folder).
    pub fn new(
        catalog: Arc<dyn Catalog>,
        registry: ExecutorRegistry,
        runtime: Arc<RuntimeEnv>,
    ) -> Self {
        Self {
            catalog,
            registry,
            read_only: false,
            swap: None,
            query_memory: None,
            max_query_memory: runtime_limit(&runtime),
            query_pools: Default::default(),
            storage_roots: vec![],
            runtime,
            statements_planned: Default::default(),
            runs_from_kept_physical: Default::default(),
            plans: Default::default(),
            templates: Default::default(),
        }
    }

    /// How many statements this engine has planned (a prepared statement's first execution
    /// runs the plan made to prepare it, see [`crate::planned`]; a query run again starts from
    /// its plan while its tables are unchanged, see [`crate::plan_cache`]).
    pub fn statements_planned(&self) -> u64 {
        self.statements_planned.load(Ordering::Relaxed)
    }

    /// How many runs ran a copy of a kept physical plan (see [`crate::plan_cache`]).
    pub fn runs_from_kept_physical(&self) -> u64 {
        self.runs_from_kept_physical.load(Ordering::Relaxed)
    }

    /// The storage roots tables may be registered from.
    pub fn with_storage_roots(mut self, roots: Vec<String>) -> Self {
        self.storage_roots = roots;
        self
    }

    /// Caps every query at `limit` bytes in each process (coordinator and each executor),
    /// under the processes' own limits; sessions may lower it, not raise it.
    pub fn with_query_memory(mut self, limit: Option<u64>) -> Self {
        self.query_memory = limit;
        if let Some(limit) = limit {
            self.max_query_memory = limit;
        }
        self
    }

    /// The per-query memory limit for a caller: theirs if they set one, else the operator's
    /// (0: none beyond the processes' limits).
    fn query_memory_for(&self, settings: &Settings) -> u64 {
        settings.memory_limit.or(self.query_memory).unwrap_or(0)
    }

    /// The SQL catalog's compare-and-swap, which INSERT OVERWRITE commits with.
    pub fn with_metadata_swap(mut self, swap: Option<Arc<dyn Committer>>) -> Self {
        self.swap = swap;
        self
    }

    /// An engine that refuses INSERT and DDL when `read_only`.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Whether the engine refuses INSERT and DDL (`--read-only`).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// A fresh session for query `query_id`, with the caller's settings and an empty catalog
    /// (see [`Self::attach_catalog`]). Its state is a copy of one kept for those settings
    /// (building one registers every DataFusion function: 9 % of a `SELECT 1`), given its own
    /// catalog list, execution properties and [`QueryOptions`]; a query with its own memory
    /// share gets a state of its own, since the share is its runtime's pool.
    pub async fn session(&self, query_id: &str, settings: &Settings) -> Result<SessionContext> {
        // As many tasks per stage as the executors have slots (a task runs on one thread).
        let slots: usize = self
            .registry
            .live()
            .iter()
            .map(|e| e.task_slots as usize)
            .sum();
        let target_partitions = slots.clamp(2, MAX_TASKS);
        let memory_limit = self.query_memory_for(settings);
        let mut state = if memory_limit == 0 {
            self.templates
                .get_or_build(settings, target_partitions, || {
                    self.state(settings, target_partitions, Arc::clone(&self.runtime))
                })
        } else {
            let shared = Arc::clone(&self.runtime.memory_pool);
            let pool = self.query_pools.get(
                &shared,
                query_id,
                usize::try_from(memory_limit).unwrap_or(usize::MAX),
            );
            let runtime = floe_engine::memory::with_pool(&self.runtime, pool);
            self.state(settings, target_partitions, runtime)
        };
        state.register_catalog_list(Arc::new(MemoryCatalogProviderList::new()));
        *state.execution_props_mut() = ExecutionProps::new();
        state
            .config_mut()
            .options_mut()
            .extensions
            .insert(QueryOptions {
                query_id: query_id.to_string(),
                memory_limit,
                explain_analyze: false,
            });
        Ok(SessionContext::new_with_state(state))
    }

    /// A session state for `settings` running in `runtime`, its query not yet named.
    fn state(
        &self,
        settings: &Settings,
        target_partitions: usize,
        runtime: Arc<RuntimeEnv>,
    ) -> SessionState {
        let schema = settings.schema.as_deref().unwrap_or(DEFAULT_SCHEMA);
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG_NAME, schema)
            .with_create_default_catalog_and_schema(false)
            .with_target_partitions(target_partitions)
            .with_round_robin_repartition(false)
            .with_extension(Arc::new(WriteSettings {
                target_file_size: settings.target_file_size,
            }));
        // UTC unless the session chose a zone (DataFusion's own default is no zone at all,
        // which would make `TIMESTAMP WITH TIME ZONE` a timestamp without one).
        config.options_mut().execution.time_zone = Some(
            settings
                .time_zone
                .clone()
                .unwrap_or_else(|| DEFAULT_TIME_ZONE.to_string()),
        );
        config
            .options_mut()
            .extensions
            .insert(QueryOptions::default());
        let mut rules = PhysicalOptimizer::new().rules;
        // Before join selection, so a NOT IN proven NULL-free is planned as a plain anti join.
        rules.insert(0, Arc::new(crate::not_in::NotInWithoutNulls));
        // Before join selection, so that it sees what date and decimal filters keep.
        rules.insert(1, Arc::new(crate::filter_estimates::FilterEstimates));
        // Right after join selection: broadcast or partition as suits a cluster.
        let after_join_selection = rules
            .iter()
            .position(|r| r.name() == "join_selection")
            .map_or(rules.len(), |i| i + 1);
        rules.insert(
            after_join_selection,
            Arc::new(crate::broadcast::BroadcastJoins),
        );
        // Once DataFusion has placed its exchanges: one shuffle, not two, for an aggregate
        // over an aggregate that includes its keys (COUNT(DISTINCT …) GROUP BY …).
        rules.push(Arc::new(
            crate::nested_aggregates::OneShuffleForNestedAggregates,
        ));
        // An aggregation grouped by a column whose every value one task reads: no exchange.
        rules.push(Arc::new(crate::keyed_aggregates::KeyedAggregates));
        // A semi or anti join's probe keys passed once per producer before their shuffle.
        rules.push(Arc::new(crate::distinct_probe_keys::DistinctProbeKeys));
        // A large broadcast build side reduced by a small filtered one under its probe side.
        rules.push(Arc::new(crate::build_reduction::ReducedBuildSides));
        // An aggregation over one partition in two steps, the partial one where the rows are.
        rules.push(Arc::new(crate::partial_aggregates::PartialAggregates));
        // On the final plan: LIKE patterns matched without a regular expression.
        rules.push(Arc::new(floe_engine::like::LikeParts));
        rules.push(Arc::new(PlanStages::new(self.registry.clone())));
        SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_table_factories(Default::default())
            .with_physical_optimizer_rules(rules)
            .with_analyzer_rule(Arc::new(CheckedIntegerArithmetic::default()))
            .with_analyzer_rule(Arc::new(
                floe_engine::decimal_arith::FastDecimalArithmetic::default(),
            ))
            .with_analyzer_rule(Arc::new(ScalarSubqueriesReturnOneRow::default()))
            .build()
    }

    /// Gives the session the catalog as `statement` needs it: the tables a query or INSERT
    /// names, loaded together; every namespace and table name for anything that lists the
    /// catalog (SHOW, `information_schema`) and for DDL.
    async fn attach_catalog(&self, ctx: &SessionContext, statement: &DfStatement) -> Result<()> {
        let (default_schema, named) = {
            // A read of the session's state, not a copy of it (a copy clones every function
            // registry: a few percent of a `SELECT 1`), held for no await.
            let state = ctx.state_ref();
            let state = state.read();
            (
                state.config().options().catalog.default_schema.clone(),
                state.resolve_table_references(statement)?,
            )
        };
        let mut references = Vec::new();
        let mut lists_catalog = is_ddl(statement) || !is_query_or_insert(statement);
        if !lists_catalog {
            for reference in named {
                let resolved = reference.resolve(CATALOG_NAME, &default_schema);
                if resolved.schema.as_ref() == "information_schema"
                    || resolved.catalog.as_ref() != CATALOG_NAME
                {
                    lists_catalog = true;
                    break;
                }
                references.push((resolved.schema.to_string(), resolved.table.to_string()));
            }
        }
        let catalog = Arc::clone(&self.catalog);
        let provider = if lists_catalog {
            catalog_provider(catalog, self.swap.clone()).await?
        } else {
            catalog_provider_for(catalog, self.swap.clone(), &references).await?
        };
        ctx.register_catalog(CATALOG_NAME, provider);
        Ok(())
    }

    /// Parses, resolves and plans one SQL statement, binding `params` to `$1, $2, …`. DDL is
    /// parsed and checked, not run. Planning runs on a thread with a large stack, after a
    /// check that the statement is not too large or too deep for it (see [`crate::limits`]).
    pub async fn plan(
        &self,
        query_id: &str,
        sql: &str,
        params: Vec<ScalarValue>,
        caller: &Principal,
    ) -> Result<Planned> {
        let planning = crate::limits::check_statement(sql)?;
        let engine = self.clone();
        let query_id = query_id.to_string();
        let sql = sql.to_string();
        let caller = caller.clone();
        // Everything that walks the plan (reuse checks, optimizing, binding) runs where the
        // statement's size says it is planned.
        crate::limits::on_planning_thread(planning, move || async move {
            engine
                .plan_or_reuse(&query_id, &sql, params, &caller, planning)
                .await
        })
        .await?
    }

    /// The plan kept for `sql` (see [`crate::plan_cache`]) if its tables are unchanged, else a
    /// new one, kept for the next run.
    async fn plan_or_reuse(
        &self,
        query_id: &str,
        sql: &str,
        params: Vec<ScalarValue>,
        caller: &Principal,
        planning: Planning,
    ) -> Result<Planned> {
        if let Some(kept) = self.plans.get(sql, caller) {
            if crate::planned_statement::tables_unchanged(&kept.plan).await {
                let physical = kept.physical.filter(|_| params.is_empty());
                if let Some(made) = physical.as_ref().and_then(|slot| slot.get()) {
                    // Reads no table: runs a copy of the physical plan its first run made.
                    self.runs_from_kept_physical.fetch_add(1, Ordering::Relaxed);
                    return Ok(Planned::Kept(Box::new(KeptRun {
                        schema: floe_engine::views::plain_schema(&Arc::new(
                            kept.plan.schema().as_arrow().clone(),
                        )),
                        planning: kept.planning,
                        physical: made.clone(),
                    })));
                }
                let ctx = self.session(query_id, &caller.settings).await?;
                return Planned::Query(Box::new(PlannedQuery {
                    ctx,
                    plan: kept.plan,
                    planning: kept.planning,
                    optimized: kept.optimized,
                    physical,
                }))
                .with_params(params);
            }
            self.plans.remove(sql, caller);
        }
        self.statements_planned.fetch_add(1, Ordering::Relaxed);
        let mut planned = self
            .plan_here(query_id, sql, &params, caller, planning)
            .await?;
        if let Planned::Query(query) = &mut planned {
            if params.is_empty() && crate::plan_cache::optimizable(sql, &query.plan) {
                // Optimized here, once, and kept so (its runs plan it physically only).
                let optimized = {
                    // As a run optimizes: its start time and config snapshot marked first.
                    let state = query.ctx.state_ref();
                    let mut state = state.write();
                    state.mark_start_execution();
                    state.optimize(&query.plan)?
                };
                query.plan = optimized;
                query.optimized = true;
            }
            // Where its physical plan is kept, if it may be (kept optimized: no parameters).
            query.physical =
                self.plans
                    .put(sql, caller, &query.plan, query.planning, query.optimized);
        }
        planned.with_params(params)
    }

    async fn plan_here(
        &self,
        query_id: &str,
        sql: &str,
        params: &[ScalarValue],
        caller: &Principal,
        planning: Planning,
    ) -> Result<Planned> {
        let ctx = self.session(query_id, &caller.settings).await?;
        let (sql, partition_items) = ddl::take_partitioned_by(sql)?;
        let sql = crate::placeholders::number_question_marks(&sql);
        let sql = crate::time_travel::fold(&sql, caller.settings.time_zone.as_deref())?;
        let statement = {
            let state = ctx.state_ref();
            let state = state.read();
            let dialect = state.config().options().sql_parser.dialect;
            state.sql_to_statement(&sql, &dialect)?
        };
        if let DfStatement::Statement(s) = &statement {
            if let Some(setting) = crate::settings::setting_of(s) {
                return self.change_setting(setting, caller, params.to_vec()).await;
            }
        }
        if is_explain_analyze(&statement) {
            // The stage cutter makes EXPLAIN ANALYZE wait for every task's report (DataFusion
            // adds its AnalyzeExec after the optimizer ran).
            let state = ctx.state_ref();
            let mut state = state.write();
            if let Some(query) = state
                .config_mut()
                .options_mut()
                .extensions
                .get_mut::<QueryOptions>()
            {
                query.explain_analyze = true;
            }
        }
        self.attach_catalog(&ctx, &statement).await?;
        if self.read_only && (is_ddl(&statement) || is_insert(&statement)) {
            return Err(CoordinatorError::InvalidArgument(format!(
                "statement not supported: {} (this coordinator is read-only: --read-only)",
                statement_kind(&statement)
            )));
        }
        if !caller.role.may_write() && (is_ddl(&statement) || is_insert(&statement)) {
            return Err(CoordinatorError::PermissionDenied(format!(
                "user '{}' (role {}) may not run {}: a reader may only query",
                caller.user,
                caller.role,
                statement_kind(&statement)
            )));
        }
        if is_ddl(&statement) {
            if !params.is_empty() {
                return Err(CoordinatorError::InvalidArgument(
                    "DDL statements take no parameters".into(),
                ));
            }
            let command = ddl::parse(&ctx, statement, partition_items).await?;
            if let Command::RegisterTable {
                metadata_location, ..
            } = &command
            {
                if !floe_engine::storage::within_roots(metadata_location, &self.storage_roots) {
                    return Err(CoordinatorError::PermissionDenied(format!(
                        "'{metadata_location}' is outside the storage roots ({}): register \
                         tables whose files are under the warehouse or a --storage-root",
                        self.storage_roots.join(", ")
                    )));
                }
            }
            return Ok(Planned::Command(command, caller.settings.clone()));
        }
        if !partition_items.is_empty() {
            return Err(CoordinatorError::InvalidArgument(
                "PARTITIONED BY belongs to CREATE TABLE".into(),
            ));
        }
        if !is_query(&statement) {
            return Err(CoordinatorError::InvalidArgument(format!(
                "statement not supported: {} (Floe runs queries, INSERT and DDL on its catalog)",
                statement_kind(&statement)
            )));
        }
        if is_insert(&statement) {
            // A write's tasks wait on their files being written: twice as many as the slots
            // keep the cores busy meanwhile (CTAS of TPC-H SF1 lineitem by month on a local
            // disk: 4.3–4.6 s with one task per slot, 3.95 s with two).
            let config = ctx.state_ref();
            let mut state = config.write();
            let options = state.config_mut().options_mut();
            options.execution.target_partitions =
                (options.execution.target_partitions * 2).min(MAX_TASKS);
        }
        let (default_schema, tables) = {
            let state = ctx.state_ref();
            let state = state.read();
            let tables = state
                .resolve_table_references(&statement)?
                .into_iter()
                .filter(|r| {
                    r.schema().is_some() || !state.table_functions().contains_key(r.table())
                })
                .collect::<Vec<_>>();
            let default_schema = state.config().options().catalog.default_schema.clone();
            (default_schema, tables)
        };
        for reference in &tables {
            check_table_exists(&ctx, reference, &default_schema)?;
        }
        let statement = crate::insert_source::plan_apart(&ctx, statement).await?;
        let state = ctx.state();
        let plan = state.statement_to_plan(statement).await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(true)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| {
                CoordinatorError::InvalidArgument(format!(
                    "{e} (Floe runs queries, INSERT and DDL on its catalog)"
                ))
            })?;
        // Parameters are bound by `plan`, after the plan is kept for the next run.
        Ok(Planned::Query(Box::new(PlannedQuery {
            ctx,
            plan,
            planning,
            optimized: false,
            physical: None,
        })))
    }

    /// `USE`, `SET`, `RESET`: the caller's settings with one changed (nothing runs). A schema
    /// must exist; a memory limit may only be lowered.
    async fn change_setting(
        &self,
        setting: Result<(String, Option<String>)>,
        caller: &Principal,
        params: Vec<ScalarValue>,
    ) -> Result<Planned> {
        let (name, value) = setting?;
        if !params.is_empty() {
            return Err(CoordinatorError::InvalidArgument(
                "USE and SET take no parameters".into(),
            ));
        }
        let settings = self
            .with_setting(&caller.settings, &name, value.as_deref())
            .await?;
        Ok(Planned::Settings(settings))
    }

    /// `settings` with option `name` set to `value` (or cleared), checked.
    pub async fn with_setting(
        &self,
        settings: &Settings,
        name: &str,
        value: Option<&str>,
    ) -> Result<Settings> {
        let mut settings = settings.clone();
        settings.set(name, value, self.max_query_memory)?;
        if let (Some(schema), Some(_)) = (&settings.schema, value) {
            if name.eq_ignore_ascii_case(crate::settings::SCHEMA) {
                let namespace = iceberg::NamespaceIdent::new(schema.clone());
                let exists = self
                    .catalog
                    .namespace_exists(&namespace)
                    .await
                    .map_err(|e| {
                        CoordinatorError::Unavailable(format!("looking up schema '{schema}': {e}"))
                    })?;
                if !exists {
                    return Err(CoordinatorError::NotFound(format!(
                        "schema '{schema}' not found"
                    )));
                }
            }
        }
        Ok(settings)
    }

    /// Runs a planned statement: a query's batches as they come, or a write's row count.
    pub async fn execute(&self, planned: Planned) -> Result<SendableRecordBatchStream> {
        match planned {
            Planned::Query(query) => {
                // Physical planning walks the plan recursively too.
                crate::limits::on_planning_thread(query.planning, move || async move {
                    if query.optimized {
                        let state = query.ctx.state();
                        let plan = state
                            .query_planner()
                            .create_physical_plan(&query.plan, &state)
                            .await?;
                        let task_ctx = state.task_ctx();
                        if let Some(slot) = &query.physical {
                            if crate::plan_cache::reusable(&plan) {
                                let _ = slot.set(KeptPhysical {
                                    plan: Arc::clone(&plan),
                                    task_ctx: Arc::clone(&task_ctx),
                                });
                            }
                        }
                        return Ok(datafusion::physical_plan::execute_stream(plan, task_ctx)?);
                    }
                    let df = query.ctx.execute_logical_plan(query.plan).await?;
                    Ok(df.execute_stream().await?)
                })
                .await?
            }
            Planned::Kept(run) => {
                crate::limits::on_planning_thread(run.planning, move || async move {
                    // A fresh copy: the kept plan's metrics (and any state) stay its own.
                    let plan = datafusion::physical_plan::execution_plan::reset_plan_states(
                        Arc::clone(&run.physical.plan),
                    )?;
                    Ok(datafusion::physical_plan::execute_stream(
                        plan,
                        Arc::clone(&run.physical.task_ctx),
                    )?)
                })
                .await?
            }
            Planned::Settings(_) => Ok(Box::pin(RecordBatchStreamAdapter::new(
                count_schema(),
                futures::stream::once(async {
                    Ok(RecordBatch::try_new(
                        count_schema(),
                        vec![Arc::new(UInt64Array::from(vec![0u64]))],
                    )?)
                }),
            ))),
            Planned::Command(command, settings) => {
                // Run when the stream is read, so that its errors travel like a query's: an
                // executor lost during a CTAS re-runs the statement (see flight_sql).
                let engine = self.clone();
                let rows = futures::stream::once(async move {
                    let rows = match &command {
                        Command::CreateTable(create) if create.query.is_some() => {
                            engine.create_table_as(create, &settings).await
                        }
                        other => ddl::run(&engine.catalog, engine.swap.as_deref(), other)
                            .await
                            .map(|()| 0),
                    }
                    .map_err(into_datafusion)?;
                    Ok(RecordBatch::try_new(
                        count_schema(),
                        vec![Arc::new(UInt64Array::from(vec![rows]))],
                    )?)
                });
                Ok(Box::pin(RecordBatchStreamAdapter::new(
                    count_schema(),
                    rows,
                )))
            }
        }
    }

    /// CREATE TABLE … AS SELECT: creates the table, then runs `INSERT INTO` it (distributed,
    /// one commit). If the insert fails the new table is dropped again.
    async fn create_table_as(
        &self,
        create: &CreateTableCommand,
        settings: &Settings,
    ) -> Result<u64> {
        let Some(query) = &create.query else {
            return Ok(0);
        };
        if !ddl::create_iceberg_table(&self.catalog, create).await? {
            return Ok(0);
        }
        // Dropped before the insert finished (the client cancelled or went away): the new
        // table goes again, so that no half-made table is left behind.
        let mut guard = DropTableUnlessDone {
            catalog: Arc::clone(&self.catalog),
            table: Some(create.table.clone()),
        };
        let insert = format!(
            "INSERT INTO \"{}\".\"{}\" {query}",
            create
                .table
                .namespace()
                .to_url_string()
                .replace('"', "\"\""),
            create.table.name().replace('"', "\"\"")
        );
        let result = self.run_insert(&insert, settings).await;
        if result.is_ok() {
            guard.table = None;
        }
        result
    }

    /// Runs an INSERT to its end; returns the rows written.
    async fn run_insert(&self, sql: &str, settings: &Settings) -> Result<u64> {
        let query_id = uuid::Uuid::new_v4().to_string();
        // Floe itself runs it (the caller's right to create the table was checked), in the
        // caller's session: its schema, time zone, memory limit and target file size.
        let floe = Principal {
            settings: settings.clone(),
            ..Principal::anonymous()
        };
        let Planned::Query(query) = self.plan(&query_id, sql, vec![], &floe).await? else {
            return Err(CoordinatorError::Internal("INSERT planned as DDL".into()));
        };
        let df = query.ctx.execute_logical_plan(query.plan).await?;
        let batches: Vec<RecordBatch> = df.execute_stream().await?.try_collect().await?;
        Ok(sum_counts(&batches))
    }
}

/// Drops a CTAS's new table when dropped while it still holds it (the insert failed or was
/// cancelled).
struct DropTableUnlessDone {
    catalog: Arc<dyn Catalog>,
    table: Option<iceberg::TableIdent>,
}

impl Drop for DropTableUnlessDone {
    fn drop(&mut self) {
        let Some(table) = self.table.take() else {
            return;
        };
        let catalog = Arc::clone(&self.catalog);
        // The cleanup must outlive the cancelled statement that triggers it.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                #[allow(
                    clippy::disallowed_methods,
                    reason = "the cleanup must outlive the cancelled statement that triggers it"
                )]
                runtime.spawn(async move {
                    if let Err(e) = catalog.drop_table(&table).await {
                        tracing::warn!("could not drop {table} after its CTAS did not finish: {e}");
                    }
                });
            }
            Err(_) => tracing::warn!("CTAS of {table} did not finish; its table is left"),
        }
    }
}

/// A coordinator error inside a stream: DataFusion's own as they are (so that a lost executor
/// is still recognised), the others as their gRPC status.
fn into_datafusion(e: CoordinatorError) -> DataFusionError {
    match e {
        CoordinatorError::DataFusion(e) => e,
        other => DataFusionError::External(Box::new(tonic::Status::from(other))),
    }
}

fn check_table_exists(
    ctx: &SessionContext,
    reference: &TableReference,
    default_schema: &str,
) -> Result<()> {
    let resolved = reference.clone().resolve(CATALOG_NAME, default_schema);
    if resolved.schema.as_ref() == "information_schema" {
        return Ok(());
    }
    let exists = ctx
        .catalog(&resolved.catalog)
        .and_then(|c| c.schema(&resolved.schema))
        .map(|s| s.table_exist(&resolved.table))
        .unwrap_or(false);
    if exists {
        Ok(())
    } else {
        Err(CoordinatorError::NotFound(format!(
            "table '{reference}' not found"
        )))
    }
}
