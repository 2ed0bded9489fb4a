//! A scalar subquery must return at most one row.
//!
//! DataFusion 53 rewrites an uncorrelated scalar subquery (`WHERE x = (SELECT y FROM t)`) into a
//! join with the subquery's rows and loses that check: a subquery of two rows made the query
//! return a row per value, silently, where Trino and PostgreSQL fail it. This analyzer rule
//! puts the check back before that rewrite: a subquery that may return more than one row is
//! wrapped as `floe_one_row(count(*), first_value(y))` over its rows, an aggregate of exactly one
//! row (NULL when the subquery has none, as SQL says — DataFusion's join dropped the outer row
//! then), and the function fails the query when the count is over one. A subquery that returns
//! exactly one row by its shape (a global aggregate, constants) is left alone, and so is a
//! correlated one (DataFusion requires it to aggregate).

use std::sync::Arc;

use arrow::array::{Array, Int64Array};
use arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::functions_aggregate::expr_fn::{count, first_value};
use datafusion::logical_expr::{
    col, lit, ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Subquery, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// The checking function's name.
const NAME: &str = "floe_one_row";

/// `floe_one_row(n, value)`: `value`, or an error when `n` (a subquery's row count) is over one.
#[derive(Debug, PartialEq, Eq, Hash)]
struct OneRow {
    signature: Signature,
}

impl OneRow {
    fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            // Volatile: never evaluated while planning, only over the subquery's rows.
            signature: Signature::any(2, Volatility::Volatile),
        })
    }
}

impl ScalarUDFImpl for OneRow {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [DataType::Int64, value] => Ok(value.clone()),
            _ => exec_err!("{NAME} takes a row count and a value, got {arg_types:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [rows, value] = args.args.as_slice() else {
            return exec_err!("{NAME} takes two arguments");
        };
        let most = match rows {
            ColumnarValue::Scalar(ScalarValue::Int64(n)) => n.unwrap_or(0),
            ColumnarValue::Array(a) => match a.as_any().downcast_ref::<Int64Array>() {
                Some(counts) => counts.iter().flatten().max().unwrap_or(0),
                None => return exec_err!("{NAME}: the row count is not a BIGINT"),
            },
            ColumnarValue::Scalar(other) => return exec_err!("{NAME}: the row count is {other:?}"),
        };
        if most > 1 {
            return exec_err!(
                "a scalar subquery returned {most} rows; a subquery used as a value must return \
                 at most one"
            );
        }
        Ok(value.clone())
    }
}

/// Registers the checking function, so that plans naming it decode on executors.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    registry.register_udf(Arc::new(OneRow::udf()))?;
    Ok(())
}

/// The analyzer rule described in the [module documentation](self).
#[derive(Debug)]
pub struct ScalarSubqueriesReturnOneRow {
    one_row: Arc<ScalarUDF>,
}

impl Default for ScalarSubqueriesReturnOneRow {
    fn default() -> Self {
        Self {
            one_row: Arc::new(OneRow::udf()),
        }
    }
}

impl ScalarSubqueriesReturnOneRow {
    /// `subquery` checked to return at most one row, if it may return more.
    fn checked(&self, subquery: Subquery) -> Result<Transformed<Subquery>> {
        let plan = subquery.subquery.as_ref();
        if !subquery.outer_ref_columns.is_empty()
            || exactly_one_row(plan)
            || plan.schema().fields().len() != 1
        {
            return Ok(Transformed::no(subquery));
        }
        let (qualifier, field) = plan.schema().qualified_field(0);
        let name = field.name().clone();
        let value = Expr::from((qualifier, field));
        let checked = LogicalPlanBuilder::from(plan.clone())
            .aggregate(
                Vec::<Expr>::new(),
                vec![
                    count(lit(1)).alias("rows"),
                    first_value(value, vec![]).alias("value"),
                ],
            )?
            .project(vec![self
                .one_row
                .call(vec![col("rows"), col("value")])
                .alias(name)])?
            .build()?;
        Ok(Transformed::yes(Subquery {
            subquery: Arc::new(checked),
            outer_ref_columns: vec![],
            spans: subquery.spans,
        }))
    }
}

/// Whether `plan` returns exactly one row by its shape: a global aggregate or `SELECT` of
/// constants, under projections and aliases. (`LIMIT 1` or one `VALUES` row under a filter may
/// return none, and the join DataFusion makes of the subquery would then drop the outer row
/// rather than give NULL.)
fn exactly_one_row(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(p) => exactly_one_row(&p.input),
        LogicalPlan::SubqueryAlias(a) => exactly_one_row(&a.input),
        LogicalPlan::Aggregate(a) => a.group_expr.is_empty(),
        LogicalPlan::EmptyRelation(e) => e.produce_one_row,
        _ => false,
    }
}

impl AnalyzerRule for ScalarSubqueriesReturnOneRow {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        Ok(plan
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|e| {
                    e.transform_up(|e| match e {
                        Expr::ScalarSubquery(subquery) => {
                            Ok(self.checked(subquery)?.update_data(Expr::ScalarSubquery))
                        }
                        other => Ok(Transformed::no(other)),
                    })
                })
            })?
            .data)
    }

    fn name(&self) -> &str {
        "scalar_subqueries_return_one_row"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn run(sql: &str) -> Result<Vec<arrow::array::RecordBatch>> {
        let ctx = SessionContext::new();
        ctx.add_analyzer_rule(Arc::new(ScalarSubqueriesReturnOneRow::default()));
        ctx.sql(sql).await?.collect().await
    }

    fn values(batches: &[arrow::array::RecordBatch]) -> Vec<Option<i64>> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("bigint");
                a.iter().collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_subquery_of_two_rows_fails_and_one_or_none_is_its_value() {
        let err = run("SELECT (SELECT x FROM (VALUES (1), (2)) t(x)) AS v")
            .await
            .expect_err("two rows");
        assert!(err.to_string().contains("returned 2 rows"), "{err}");
        let err = run("SELECT 5 AS v WHERE 1 = (SELECT x FROM (VALUES (1), (1), (1)) t(x))")
            .await
            .expect_err("three rows in a filter");
        assert!(err.to_string().contains("returned 3 rows"), "{err}");
        let one = run("SELECT (SELECT x FROM (VALUES (7), (8)) t(x) WHERE x > 7) AS v")
            .await
            .expect("one row");
        assert_eq!(values(&one), vec![Some(8)]);
        let none = run("SELECT (SELECT x FROM (VALUES (7)) t(x) WHERE x > 7) AS v")
            .await
            .expect("no row");
        assert_eq!(values(&none), vec![None]);
        let limited = run("SELECT (SELECT x FROM (VALUES (7)) t(x) WHERE x > 7 LIMIT 1) AS v")
            .await
            .expect("no row under a limit");
        assert_eq!(values(&limited), vec![None]);
        // An aggregate is left as it is.
        let max = run("SELECT (SELECT max(x) FROM (VALUES (7), (8)) t(x)) AS v")
            .await
            .expect("an aggregate");
        assert_eq!(values(&max), vec![Some(8)]);
    }
}
