//! Turning SQL into a distributed physical plan: one DataFusion session per query over the
//! Iceberg catalog, with the stage-cutting rule last among the physical optimizers.

use std::sync::Arc;

use datafusion::common::{ParamValues, TableReference};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use floe_catalog::{provider::catalog_provider, CATALOG_NAME};
use iceberg::Catalog;

use crate::error::{CoordinatorError, Result};
use crate::registry::ExecutorRegistry;
use crate::stages::PlanStages;

/// Plans queries against the catalog for the cluster's executors.
#[derive(Debug, Clone)]
pub struct QueryEngine {
    catalog: Arc<dyn Catalog>,
    registry: ExecutorRegistry,
    runtime: Arc<RuntimeEnv>,
}

/// A planned query: its session and logical plan.
pub struct PlannedQuery {
    /// The session the query runs in.
    pub ctx: SessionContext,
    /// Its logical plan, parameters bound.
    pub plan: LogicalPlan,
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
            runtime,
        }
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// A fresh session that sees the catalog as it is now.
    pub async fn session(&self, query_id: &str) -> Result<SessionContext> {
        let executors = self.registry.live().len().max(1);
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG_NAME, "default")
            .with_create_default_catalog_and_schema(false)
            .with_target_partitions((executors * 2).clamp(2, 64))
            .with_round_robin_repartition(false);
        let mut rules = PhysicalOptimizer::new().rules;
        rules.push(Arc::new(PlanStages::new(
            self.registry.clone(),
            query_id.to_string(),
        )));
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_default_features()
            .with_table_factories(Default::default())
            .with_physical_optimizer_rules(rules)
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_catalog(
            CATALOG_NAME,
            catalog_provider(Arc::clone(&self.catalog)).await?,
        );
        Ok(ctx)
    }

    /// Parses, resolves and plans one SQL statement, binding `params` to `$1, $2, …`.
    pub async fn plan(
        &self,
        query_id: &str,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<PlannedQuery> {
        let ctx = self.session(query_id).await?;
        let state = ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        if !is_query(&statement) {
            return Err(CoordinatorError::InvalidArgument(format!(
                "statement not supported: {} (Floe runs queries only)",
                statement_kind(&statement)
            )));
        }
        for reference in state.resolve_table_references(&statement)? {
            let is_table_function = reference.schema().is_none()
                && state.table_functions().contains_key(reference.table());
            if !is_table_function {
                check_table_exists(&ctx, &reference)?;
            }
        }
        let plan = state.statement_to_plan(statement).await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| {
                CoordinatorError::InvalidArgument(format!("{e} (Floe runs queries only)"))
            })?;
        let plan = if params.is_empty() {
            plan
        } else {
            plan.with_param_values(ParamValues::from(params))?
        };
        Ok(PlannedQuery { ctx, plan })
    }
}

/// Queries, EXPLAIN of queries, SHOW and DESCRIBE: the statements Floe runs.
fn is_query(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_)
            | SqlStatement::ShowTables { .. }
            | SqlStatement::ShowColumns { .. }
            | SqlStatement::ExplainTable { .. } => true,
            SqlStatement::Explain { statement, .. } => {
                is_query(&DfStatement::Statement(statement.clone()))
            }
            _ => false,
        },
        DfStatement::Explain(explain) => is_query(&explain.statement),
        DfStatement::CreateExternalTable(_) | DfStatement::CopyTo(_) | DfStatement::Reset(_) => {
            false
        }
    }
}

/// The statement's leading keywords, for error messages.
fn statement_kind(statement: &DfStatement) -> String {
    let text = statement.to_string();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_table_exists(ctx: &SessionContext, reference: &TableReference) -> Result<()> {
    let resolved = reference.clone().resolve(CATALOG_NAME, "default");
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
