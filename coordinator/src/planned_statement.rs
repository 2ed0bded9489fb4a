//! A statement as planned: a DataFusion plan, a catalog command or new settings; what it
//! returns, whether it writes, its parameters, and whether a plan made earlier may still run.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use floe_catalog::commit::count_schema;
use floe_catalog::provider::IcebergTableProvider;

use crate::ddl::Command;
use crate::error::{CoordinatorError, Result};
use crate::settings::Settings;

/// A planned query: its session and logical plan.
pub struct PlannedQuery {
    /// The session the query runs in.
    pub ctx: SessionContext,
    /// Its logical plan, parameters bound.
    pub plan: LogicalPlan,
    /// Where its physical plan is made (as its logical plan was).
    pub planning: crate::limits::Planning,
    /// `plan` is optimized already (a query without parameters or functions whose answer
    /// depends on when it runs, whose optimized plan is kept: see `crate::plan_cache`).
    pub optimized: bool,
    /// Where its physical plan is to be kept for later runs, if it may be.
    pub physical: Option<crate::plan_cache::PhysicalSlot>,
}

/// A query run again from the physical plan its first run made (see `crate::plan_cache`).
pub struct KeptRun {
    /// What it returns.
    pub schema: SchemaRef,
    /// Where its copy is made (as its logical plan was).
    pub planning: crate::limits::Planning,
    pub physical: crate::plan_cache::KeptPhysical,
}

/// A planned statement.
pub enum Planned {
    /// A query or an INSERT: a DataFusion plan.
    Query(Box<PlannedQuery>),
    /// A query reading no table, run again from its kept physical plan.
    Kept(Box<KeptRun>),
    /// DDL (and CREATE TABLE … AS SELECT), run against the catalog in the caller's session.
    Command(Command, Settings),
    /// USE or SET: the caller's new settings (the statement's effect is the new token).
    Settings(Settings),
}

impl Planned {
    /// The schema of what the statement returns, as clients receive it (strings plain, not
    /// views: see `floe_engine::views`).
    pub fn schema(&self) -> SchemaRef {
        match self {
            Planned::Query(q) => {
                floe_engine::views::plain_schema(&Arc::new(q.plan.schema().as_arrow().clone()))
            }
            Planned::Kept(run) => Arc::clone(&run.schema),
            Planned::Command(..) | Planned::Settings(_) => count_schema(),
        }
    }

    /// Whether running it changes tables or the catalog (INSERT, CTAS, DDL, and EXPLAIN
    /// ANALYZE of an INSERT): such a statement runs once, when the client executes it.
    pub fn is_write(&self) -> bool {
        match self {
            Planned::Command(..) | Planned::Settings(_) => true,
            Planned::Kept(_) => false,
            Planned::Query(q) => match &q.plan {
                LogicalPlan::Dml(_) => true,
                LogicalPlan::Analyze(analyze) => {
                    matches!(analyze.input.as_ref(), LogicalPlan::Dml(_))
                }
                _ => false,
            },
        }
    }

    /// With `params` bound to its `$1, $2, …` (a statement planned without them, e.g. to
    /// prepare it).
    pub fn with_params(self, params: Vec<ScalarValue>) -> Result<Planned> {
        match self {
            Planned::Query(mut q) if !params.is_empty() => {
                // A client binds plain strings where the plan compares views (the schema it
                // was told says `Utf8`): each becomes the view its placeholder expects.
                let types = q.plan.get_parameter_types()?;
                let params = params
                    .into_iter()
                    .enumerate()
                    .map(|(i, value)| match types.get(&format!("${}", i + 1)) {
                        Some(Some(t))
                            if t != &value.data_type()
                                && floe_engine::views::plain_type(t) == value.data_type() =>
                        {
                            value.cast_to(t)
                        }
                        _ => Ok(value),
                    })
                    .collect::<datafusion::common::Result<Vec<_>>>()?;
                q.plan = q.plan.with_param_values(ParamValues::from(params))?;
                Ok(Planned::Query(q))
            }
            Planned::Command(..) | Planned::Settings(_) | Planned::Kept(_)
                if !params.is_empty() =>
            {
                Err(CoordinatorError::InvalidArgument(
                    "this statement takes no parameters".into(),
                ))
            }
            other => Ok(other),
        }
    }

    /// Whether every table it reads is still the catalog's current version, so that a plan
    /// made earlier (to prepare the statement) may run as made. A plan reading anything but
    /// Iceberg tables (listings, metadata tables, table functions) counts as changed.
    pub async fn tables_unchanged(&self) -> bool {
        match self {
            Planned::Query(query) => tables_unchanged(&query.plan).await,
            // Reads no table.
            Planned::Kept(_) => true,
            Planned::Command(..) | Planned::Settings(_) => false,
        }
    }

    /// The types of its `$n` parameters.
    pub fn parameter_types(
        &self,
    ) -> datafusion::common::Result<std::collections::HashMap<String, Option<DataType>>> {
        match self {
            Planned::Query(q) => q.plan.get_parameter_types(),
            Planned::Kept(_) | Planned::Command(..) | Planned::Settings(_) => {
                Ok(Default::default())
            }
        }
    }
}

/// The Iceberg tables `plan` reads, or `None` if it reads anything else (listings, metadata
/// tables, table functions), whose answer may change without a new table version.
pub fn iceberg_tables(plan: &LogicalPlan) -> Option<Vec<Arc<dyn TableProvider>>> {
    let mut providers = Vec::new();
    let mut others = false;
    let visited = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            match datafusion::datasource::source_as_provider(&scan.source) {
                Ok(provider) if provider.as_any().is::<IcebergTableProvider>() => {
                    providers.push(provider)
                }
                _ => others = true,
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    (visited.is_ok() && !others).then_some(providers)
}

/// Whether every table `plan` reads is an Iceberg table still at the version it was planned
/// with (one look at each table's current metadata location).
pub async fn tables_unchanged(plan: &LogicalPlan) -> bool {
    let Some(providers) = iceberg_tables(plan) else {
        return false;
    };
    let checks = providers.iter().filter_map(|provider| {
        let table = provider.as_any().downcast_ref::<IcebergTableProvider>()?;
        Some(table.is_current())
    });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .all(|current| current)
}

/// The rows a write statement's count batches add up to.
pub fn sum_counts(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>())
        .flat_map(|a| a.iter().flatten())
        .sum()
}
