//! An INSERT (and so a CTAS) whose query holds a VALUES list below its top, e.g.
//! `INSERT INTO t SELECT … FROM events JOIN (VALUES (1, 'web'), (2, 'app')) AS c(id, name) …`:
//! DataFusion plans an INSERT's whole query with the target table's columns in view, and reads
//! any VALUES list in it as rows of the table — refused when its width differs ("Inconsistent
//! data length across values list"), and worse, its values cast to the table's column types by
//! position when the width happens to match. Such a query is planned apart, as the query it is,
//! and the INSERT reads it through a view. An INSERT of a plain `VALUES` list (rows of the
//! table, typed by it) is left to DataFusion.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::ViewTable;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Query, SetExpr, Statement as SqlStatement, Visit, Visitor};

use crate::error::{CoordinatorError, Result};

/// Where the query planned apart is seen from the INSERT (this statement's session only).
const CATALOG: &str = "floe_insert";
const SCHEMA: &str = "source";
const TABLE: &str = "rows";

/// `statement` with its INSERT's query planned apart, if it holds a VALUES list below its top
/// (see the module's comment); otherwise `statement` itself.
pub async fn plan_apart(ctx: &SessionContext, statement: DfStatement) -> Result<DfStatement> {
    let DfStatement::Statement(sql) = &statement else {
        return Ok(statement);
    };
    let SqlStatement::Insert(insert) = sql.as_ref() else {
        return Ok(statement);
    };
    let Some(source) = &insert.source else {
        return Ok(statement);
    };
    if matches!(source.body.as_ref(), SetExpr::Values(_)) || !holds_values(source) {
        return Ok(statement);
    }
    let query = DfStatement::Statement(Box::new(SqlStatement::Query(source.clone())));
    let plan = ctx.state().statement_to_plan(query).await?;
    let view: Arc<dyn TableProvider> = Arc::new(ViewTable::new(plan, None));
    let schema = MemorySchemaProvider::new();
    schema.register_table(TABLE.into(), view)?;
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(SCHEMA, Arc::new(schema))?;
    ctx.register_catalog(CATALOG, Arc::new(catalog));
    let mut insert = insert.clone();
    insert.source = Some(reading_the_view()?);
    Ok(DfStatement::Statement(Box::new(SqlStatement::Insert(
        insert,
    ))))
}

/// `SELECT * FROM` the view.
fn reading_the_view() -> Result<Box<Query>> {
    let sql = format!("SELECT * FROM {CATALOG}.{SCHEMA}.{TABLE}");
    let mut statements = DFParser::parse_sql(&sql)?;
    match statements.pop_front() {
        Some(DfStatement::Statement(statement)) => match *statement {
            SqlStatement::Query(query) => Ok(query),
            other => Err(CoordinatorError::Internal(format!("not a query: {other}"))),
        },
        _ => Err(CoordinatorError::Internal(format!("not a query: {sql}"))),
    }
}

/// Whether a VALUES list is anywhere in `query` (its subqueries and derived tables too).
fn holds_values(query: &Query) -> bool {
    struct Find;
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if in_set_expr(&query.body) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    fn in_set_expr(body: &SetExpr) -> bool {
        match body {
            SetExpr::Values(_) => true,
            SetExpr::SetOperation { left, right, .. } => in_set_expr(left) || in_set_expr(right),
            // A nested query is visited as a query of its own.
            _ => false,
        }
    }
    query.visit(&mut Find).is_break()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(sql: &str) -> Box<Query> {
        let mut statements = DFParser::parse_sql(sql).expect("parses");
        let Some(DfStatement::Statement(statement)) = statements.pop_front() else {
            panic!("{sql}")
        };
        let SqlStatement::Insert(insert) = *statement else {
            panic!("{sql}")
        };
        insert.source.expect("a query")
    }

    #[test]
    fn values_are_found_below_the_top_of_an_insert_query() {
        for sql in [
            "INSERT INTO t SELECT * FROM (VALUES (1, 2)) AS v(a, b)",
            "INSERT INTO t SELECT e.k FROM e JOIN (VALUES (1)) AS v(k) ON e.k = v.k",
            "INSERT INTO t SELECT k FROM e WHERE k IN (SELECT * FROM (VALUES (1)) AS v(k))",
            "INSERT INTO t SELECT 1 UNION ALL VALUES (2)",
        ] {
            assert!(holds_values(&source(sql)), "{sql}");
        }
        for sql in [
            "INSERT INTO t SELECT k FROM e",
            "INSERT INTO t SELECT k FROM e WHERE k IN (SELECT k FROM f)",
        ] {
            assert!(!holds_values(&source(sql)), "{sql}");
        }
    }
}
