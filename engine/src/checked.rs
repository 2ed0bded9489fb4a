//! Integer arithmetic that fails on overflow instead of wrapping.
//!
//! DataFusion evaluates `+`, `-`, `*` and unary `-` on integers with wrapping kernels, so
//! `9223372036854775807 + 1` is `-9223372036854775808`: a wrong answer with no warning. Trino,
//! Athena and PostgreSQL fail the query instead ("bigint addition overflow"), and so does Floe.
//!
//! [`CheckedIntegerArithmetic`] is an analyzer rule, run after type coercion, that rewrites each
//! integer `a + b`, `a - b`, `a * b` and `-a` into `checked_add(a, b)`, `checked_sub`,
//! `checked_mul` or `checked_neg`, keeping the column names the original expression gave.
//! These functions use Arrow's checked kernels, which return an overflow error that reaches the
//! client as INVALID_ARGUMENT. They are ordinary scalar functions, so the plan codec carries them
//! to executors by name: [`register`] must run on every session that decodes plans.
//!
//! Floating-point arithmetic is not rewritten: floats follow IEEE 754 (infinity). Decimals
//! widen their precision and arrow already checks their arithmetic; `decimal_arith` rewrites
//! them only to check a whole column at once.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{ArrayRef, Datum};
use arrow::compute::kernels::numeric;
use arrow::datatypes::{DataType, FieldRef};
use arrow::error::ArrowError;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{exec_err, DFSchema, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// The checked operation a function stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Add,
    Sub,
    Mul,
    Neg,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Add => "checked_add",
            Op::Sub => "checked_sub",
            Op::Mul => "checked_mul",
            Op::Neg => "checked_neg",
        }
    }

    fn arity(self) -> usize {
        if self == Op::Neg {
            1
        } else {
            2
        }
    }
}

/// One of the checked integer functions.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CheckedInteger {
    op: Op,
    signature: Signature,
}

impl CheckedInteger {
    fn udf(op: Op) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            op,
            signature: Signature::any(op.arity(), Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for CheckedInteger {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.op.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(t) if t.is_integer() && arg_types.iter().all(|a| a == t) => Ok(t.clone()),
            _ => exec_err!(
                "{} takes integers of one type, got {arg_types:?}",
                self.name()
            ),
        }
    }

    /// Null when an input is null, as the operator it replaces.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let data_type = self.return_type(&types)?;
        Ok(crate::typed_rewrite::operator_field(
            self.name(),
            data_type,
            &args,
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = &args.args;
        if a.len() != self.op.arity() {
            return exec_err!("{} takes {} arguments", self.name(), self.op.arity());
        }
        let kernel: fn(&dyn Datum, &dyn Datum) -> std::result::Result<ArrayRef, ArrowError> =
            match self.op {
                Op::Add => numeric::add,
                Op::Sub => numeric::sub,
                Op::Mul => numeric::mul,
                Op::Neg => {
                    return Ok(match &a[0] {
                        ColumnarValue::Array(v) => ColumnarValue::Array(numeric::neg(v)?),
                        ColumnarValue::Scalar(s) => {
                            let v = numeric::neg(&s.to_array_of_size(1)?)?;
                            ColumnarValue::Scalar(ScalarValue::try_from_array(&v, 0)?)
                        }
                    });
                }
            };
        Ok(match (&a[0], &a[1]) {
            (ColumnarValue::Array(l), ColumnarValue::Array(r)) => {
                ColumnarValue::Array(kernel(l, r)?)
            }
            (ColumnarValue::Array(l), ColumnarValue::Scalar(r)) => {
                ColumnarValue::Array(kernel(l, &r.to_scalar()?)?)
            }
            (ColumnarValue::Scalar(l), ColumnarValue::Array(r)) => {
                ColumnarValue::Array(kernel(&l.to_scalar()?, r)?)
            }
            (ColumnarValue::Scalar(l), ColumnarValue::Scalar(r)) => {
                let v = kernel(&l.to_scalar()?, &r.to_scalar()?)?;
                ColumnarValue::Scalar(ScalarValue::try_from_array(&v, 0)?)
            }
        })
    }
}

/// Registers the checked functions, so that plans naming them decode.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for op in [Op::Add, Op::Sub, Op::Mul, Op::Neg] {
        registry.register_udf(Arc::new(CheckedInteger::udf(op)))?;
    }
    Ok(())
}

/// The analyzer rule described in the [module documentation](self).
#[derive(Debug)]
pub struct CheckedIntegerArithmetic {
    add: Arc<ScalarUDF>,
    sub: Arc<ScalarUDF>,
    mul: Arc<ScalarUDF>,
    neg: Arc<ScalarUDF>,
}

impl Default for CheckedIntegerArithmetic {
    fn default() -> Self {
        Self {
            add: Arc::new(CheckedInteger::udf(Op::Add)),
            sub: Arc::new(CheckedInteger::udf(Op::Sub)),
            mul: Arc::new(CheckedInteger::udf(Op::Mul)),
            neg: Arc::new(CheckedInteger::udf(Op::Neg)),
        }
    }
}

impl CheckedIntegerArithmetic {
    /// Rewrites one expression bottom-up, typing each operator once: the type of an operator
    /// this rule rewrote comes from its operands' (kept on a stack as the walk goes up), so a
    /// chain `a + b + … + z` is typed in one pass. (Typing each operand's whole subtree again
    /// at every level made planning cubic in the chain's length: 1,000 terms took minutes.)
    fn rewrite_expr(&self, expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
        crate::typed_rewrite::typed_transform_up(expr, |e, operands| {
            // An operand's type: from the stack when this rule typed it, else asked of it (an
            // expression this rule cannot type is left as it is; type coercion reports it).
            let type_of = |i: usize, operand: &Expr| {
                crate::typed_rewrite::operand_type(operands, i, operand, schema)
                    .filter(DataType::is_integer)
            };
            let (rewritten, typed) = match e {
                Expr::BinaryExpr(BinaryExpr { left, op, right })
                    if matches!(op, Operator::Plus | Operator::Minus | Operator::Multiply) =>
                {
                    let t = type_of(0, &left);
                    if t.is_some() && t == type_of(1, &right) {
                        let fun = match op {
                            Operator::Plus => &self.add,
                            Operator::Minus => &self.sub,
                            _ => &self.mul,
                        };
                        let call = ScalarFunction::new_udf(Arc::clone(fun), vec![*left, *right]);
                        (Transformed::yes(Expr::ScalarFunction(call)), t)
                    } else {
                        (
                            Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op, right })),
                            None,
                        )
                    }
                }
                Expr::Negative(inner) => match type_of(0, &inner) {
                    Some(t) => {
                        let call = ScalarFunction::new_udf(Arc::clone(&self.neg), vec![*inner]);
                        (Transformed::yes(Expr::ScalarFunction(call)), Some(t))
                    }
                    None => (Transformed::no(Expr::Negative(inner)), None),
                },
                other => (Transformed::no(other), None),
            };
            Ok((rewritten, typed))
        })
    }
}

impl AnalyzerRule for CheckedIntegerArithmetic {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        crate::typed_rewrite::rewrite_plan(plan, &|expr, schema| self.rewrite_expr(expr, schema))
    }

    fn name(&self) -> &str {
        "checked_integer_arithmetic"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, RecordBatch};
    use arrow::datatypes::{Field, Schema};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    fn contexts() -> (SessionContext, SessionContext) {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("big", DataType::Int64, false),
                Field::new("small", DataType::Int32, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![i64::MAX, i64::MIN, 0])),
                Arc::new(Int32Array::from(vec![Some(i32::MAX), None, Some(7)])),
            ],
        )
        .expect("batch");
        let plain = SessionContext::new();
        let mut checked = SessionContext::new_with_state(
            SessionStateBuilder::new()
                .with_default_features()
                .with_analyzer_rule(Arc::new(CheckedIntegerArithmetic::default()))
                .build(),
        );
        register(&mut checked).expect("register");
        for ctx in [&plain, &checked] {
            ctx.register_batch("t", batch.clone()).expect("table");
        }
        (plain, checked)
    }

    #[tokio::test]
    async fn arithmetic_that_fits_keeps_its_value_name_type_and_nullability() {
        let (plain, checked) = contexts();
        for sql in [
            "SELECT big - 1, small + 1, -small, small * 2 AS twice FROM t WHERE big > 0",
            "SELECT small + 1, count(*) FROM t WHERE small IS NOT NULL GROUP BY small + 1 ORDER BY small + 1",
            "SELECT big + 0 FROM t WHERE big + 0 = 0 UNION ALL SELECT -(big - big) FROM t",
            "SELECT sum(small * 2) FILTER (WHERE small + 1 > 0), max(big - 1) FILTER (WHERE big > 0) FROM t",
            "SELECT (SELECT max(small + 1) FROM t) + 1, 2 * 3, 1.5 * 2, CAST(1 AS TINYINT) + 2",
            // Types that change along a chain (Int32 operands, then an Int64 one).
            "SELECT small + small * 2 + big - -small, abs(small - 1) + 1 FROM t WHERE big = 0",
        ]
        .into_iter()
        .map(String::from)
        // A long chain (typed in one pass; see `rewrite_expr`).
        .chain([format!(
            "SELECT {} FROM t WHERE small = 7",
            vec!["small"; 300].join(" + ")
        )])
        {
            let sql = sql.as_str();
            let want = plain.sql(sql).await.expect(sql);
            let got = checked.sql(sql).await.expect(sql);
            assert_eq!(want.schema(), got.schema(), "{sql}");
            let want = want.collect().await.expect(sql);
            let got = got.collect().await.expect(sql);
            assert_eq!(want, got, "{sql}");
        }
        let explain = checked
            .sql("EXPLAIN SELECT big - 1 FROM t")
            .await
            .expect("explain")
            .collect()
            .await
            .expect("explain");
        let text = arrow::util::pretty::pretty_format_batches(&explain)
            .expect("format")
            .to_string();
        assert!(text.contains("checked_sub"), "{text}");
    }

    #[tokio::test]
    async fn integer_overflow_is_an_error() {
        let (plain, checked) = contexts();
        for sql in [
            "SELECT big + 1 FROM t",
            "SELECT big - 1 FROM t WHERE big < 0",
            "SELECT big * 2 FROM t",
            "SELECT -big FROM t WHERE big < 0",
            "SELECT small + small FROM t",
            "SELECT 9223372036854775807 + 1",
            // At the top of a chain whose operands this rule typed itself.
            "SELECT small - small + small - small + big + 1 FROM t WHERE big > 0",
        ] {
            // Without the rule the answer wraps around (what this rule is for).
            plain.sql(sql).await.expect(sql).collect().await.expect(sql);
            let err = match checked.sql(sql).await {
                Err(e) => e,
                Ok(df) => df.collect().await.expect_err(sql),
            };
            assert!(err.to_string().contains("Overflow"), "{sql}: {err}");
        }
    }
}
