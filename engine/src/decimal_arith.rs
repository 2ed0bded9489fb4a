//! Decimal `+`, `-` and `*` without a checked operation per value where none can overflow.
//!
//! DataFusion evaluates decimal arithmetic with arrow's kernels, which rescale both sides and
//! add, subtract or multiply each value with checked 128-bit operations, one fallible call per
//! value (`try_unary`/`try_binary`): 28 % of TPC-H Q01's CPU (`1 - l_discount`, `1 + l_tax`,
//! and the products of those with `l_extendedprice`). [`FastDecimalArithmetic`] is an analyzer
//! rule, run after type coercion, that rewrites each decimal `a + b`, `a - b` and `a * b` into
//! `decimal_add(a, b)`, `decimal_sub` or `decimal_mul`, of the very type the operator has.
//! These compute a whole column with overflowing operations and one overflow flag (a product
//! of two values that fit 64 bits is a widening multiply, which cannot overflow), and a
//! rescale by ×1 is skipped. Each operand is rescaled as a column, then combined in one loop
//! per pairing of columns and scalars, without a branch per value (Q01's CPU in a cluster a
//! further −17 %: 446, 524 → 370, 426 ms, `benches/tpch/cpu.py --queries 1`). When the flag
//! is set, or an input has nulls (whose slots hold arbitrary values), they call arrow's kernel
//! instead, so that every answer and every error is arrow's own. They are ordinary scalar
//! functions, carried to executors by name: [`register`] must run on every session that
//! decodes plans.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Datum, PrimitiveArray};
use arrow::buffer::ScalarBuffer;
use arrow::compute::kernels::numeric;
use arrow::datatypes::{DataType, Decimal128Type, FieldRef};
use arrow::error::ArrowError;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{exec_err, DFSchema, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// The operation a function stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Add => "decimal_add",
            Op::Sub => "decimal_sub",
            Op::Mul => "decimal_mul",
        }
    }

    /// Arrow's kernel for the operator (the wrapping names are DataFusion's; for decimals
    /// arrow checks them all the same).
    fn arrow(self) -> fn(&dyn Datum, &dyn Datum) -> std::result::Result<ArrayRef, ArrowError> {
        match self {
            Op::Add => numeric::add_wrapping,
            Op::Sub => numeric::sub_wrapping,
            Op::Mul => numeric::mul_wrapping,
        }
    }

    /// The result's precision and scale for operands of `(p1, s1)` and `(p2, s2)`, as arrow
    /// computes them (Hive's rules); None where arrow refuses (a product's scale over 38).
    fn result(self, (p1, s1): (u8, i8), (p2, s2): (u8, i8)) -> Option<(u8, i8)> {
        const MAX_PRECISION: u8 = 38;
        const MAX_SCALE: i8 = 38;
        // Only the usual decimals, 0 ≤ scale ≤ precision ≤ 38 (a negative scale is left to
        // arrow, whose own sums of these could overflow an i8).
        let usual = |p: u8, s: i8| s >= 0 && (s as u8) <= p && p <= MAX_PRECISION;
        if !usual(p1, s1) || !usual(p2, s2) {
            return None;
        }
        match self {
            Op::Add | Op::Sub => {
                let scale = s1.max(s2);
                let precision = (scale.saturating_add((p1 as i8 - s1).max(p2 as i8 - s2)) as u8)
                    .saturating_add(1)
                    .min(MAX_PRECISION);
                Some((precision, scale))
            }
            Op::Mul => {
                let scale = s1.saturating_add(s2);
                let precision = p1.saturating_add(p2 + 1).min(MAX_PRECISION);
                (scale <= MAX_SCALE).then_some((precision, scale))
            }
        }
    }
}

fn decimal128(t: &DataType) -> Option<(u8, i8)> {
    match t {
        DataType::Decimal128(p, s) => Some((*p, *s)),
        _ => None,
    }
}

/// One of the decimal functions.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DecimalFunction {
    op: Op,
    signature: Signature,
}

impl DecimalFunction {
    fn udf(op: Op) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            op,
            signature: Signature::any(2, Volatility::Immutable),
        })
    }
}

/// One operand: its values (one for a scalar), and how they are rescaled.
struct Side<'a> {
    values: &'a [i128],
    scalar: bool,
    multiplier: i128,
}

/// An operand ready to combine: a column's values or one value.
enum Operand<'a> {
    Column(std::borrow::Cow<'a, [i128]>),
    Scalar(i128),
}

impl<'a> Side<'a> {
    /// The operand rescaled by its multiplier (a column in one pass; ×1 borrows it), and
    /// whether a value overflowed.
    fn rescaled(&self) -> (Operand<'a>, bool) {
        if self.scalar {
            let (v, overflow) = self.values[0].overflowing_mul(self.multiplier);
            return (Operand::Scalar(v), overflow);
        }
        if self.multiplier == 1 {
            return (Operand::Column(self.values.into()), false);
        }
        let mut overflow = false;
        let values = self
            .values
            .iter()
            .map(|v| {
                let (v, o) = v.overflowing_mul(self.multiplier);
                overflow |= o;
                v
            })
            .collect::<Vec<_>>();
        (Operand::Column(values.into()), overflow)
    }

    /// Whether every value fits 64 bits (one pass the compiler vectorizes).
    fn fits_64_bits(&self) -> bool {
        let values = if self.scalar {
            &self.values[..1]
        } else {
            self.values
        };
        values.iter().all(|&v| i128::from(v as i64) == v)
    }
}

/// `f` over each row of `l` and `r` (at least one a column), and whether any call overflowed.
/// Each pairing is its own loop over slices, without a branch or a bounds check per value.
fn combine(
    left: &Operand,
    right: &Operand,
    op: impl Fn(i128, i128) -> (i128, bool),
) -> Option<(Vec<i128>, bool)> {
    let mut overflow = false;
    let mut apply = |x: i128, y: i128| {
        let (value, wrapped) = op(x, y);
        overflow |= wrapped;
        value
    };
    let out = match (left, right) {
        (Operand::Column(xs), Operand::Column(ys)) => xs
            .iter()
            .zip(ys.iter())
            .map(|(&x, &y)| apply(x, y))
            .collect::<Vec<_>>(),
        (Operand::Column(xs), Operand::Scalar(y)) => xs.iter().map(|&x| apply(x, *y)).collect(),
        (Operand::Scalar(x), Operand::Column(ys)) => ys.iter().map(|&y| apply(*x, y)).collect(),
        (Operand::Scalar(_), Operand::Scalar(_)) => return None,
    };
    Some((out, overflow))
}

/// `op` over the rows of `left` and `right`; None when a value overflowed.
fn compute(op: Op, left: &Side, right: &Side) -> Option<Vec<i128>> {
    let (values, overflow) = match op {
        Op::Add | Op::Sub => {
            let (l, lo) = left.rescaled();
            let (r, ro) = right.rescaled();
            let (values, wrapped) = if op == Op::Add {
                combine(&l, &r, i128::overflowing_add)?
            } else {
                combine(&l, &r, i128::overflowing_sub)?
            };
            (values, lo | ro | wrapped)
        }
        Op::Mul => {
            // A product's operands keep their scales (multiplier 1): borrowed, never overflowed.
            let (l, _) = left.rescaled();
            let (r, _) = right.rescaled();
            if left.fits_64_bits() && right.fits_64_bits() {
                // A product of two 64-bit values fits 128 bits: one widening multiply each.
                combine(&l, &r, |a, b| {
                    (i128::from(a as i64) * i128::from(b as i64), false)
                })?
            } else {
                combine(&l, &r, i128::overflowing_mul)?
            }
        }
    };
    (!overflow).then_some(values)
}

impl ScalarUDFImpl for DecimalFunction {
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
        let result = match arg_types {
            [a, b] => decimal128(a)
                .zip(decimal128(b))
                .and_then(|(a, b)| self.op.result(a, b)),
            _ => None,
        };
        match result {
            Some((p, s)) => Ok(DataType::Decimal128(p, s)),
            None => exec_err!("{} takes two decimals, got {arg_types:?}", self.name()),
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
        let [l, r] = args.args.as_slice() else {
            return exec_err!("{} takes 2 arguments", self.name());
        };
        let result_type = args.return_field.data_type().clone();
        let arrow =
            |l: &dyn Datum, r: &dyn Datum| -> Result<ArrayRef> { Ok((self.op.arrow())(l, r)?) };
        let (l_array, l_scalar) = match l {
            ColumnarValue::Array(a) => (Arc::clone(a), false),
            ColumnarValue::Scalar(s) => (s.to_array_of_size(1)?, true),
        };
        let (r_array, r_scalar) = match r {
            ColumnarValue::Array(a) => (Arc::clone(a), false),
            ColumnarValue::Scalar(s) => (s.to_array_of_size(1)?, true),
        };
        let datum = |a: &ArrayRef, scalar: bool| -> Box<dyn Datum> {
            if scalar {
                Box::new(arrow::array::Scalar::new(Arc::clone(a)))
            } else {
                Box::new(Arc::clone(a))
            }
        };
        let by_arrow = || -> Result<ColumnarValue> {
            let v = arrow(
                datum(&l_array, l_scalar).as_ref(),
                datum(&r_array, r_scalar).as_ref(),
            )?;
            if l_scalar && r_scalar {
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&v, 0)?))
            } else {
                Ok(ColumnarValue::Array(v))
            }
        };
        let (Some(lt), Some(rt), Some((p, s))) = (
            decimal128(l_array.data_type()),
            decimal128(r_array.data_type()),
            decimal128(&result_type),
        ) else {
            return by_arrow();
        };
        if (l_scalar && r_scalar) || l_array.null_count() > 0 || r_array.null_count() > 0 {
            return by_arrow();
        }
        let multiplier = |scale: i8| -> Option<i128> {
            match self.op {
                Op::Add | Op::Sub => 10i128.checked_pow(u32::try_from(s - scale).ok()?),
                Op::Mul => Some(1),
            }
        };
        let (Some(lm), Some(rm)) = (multiplier(lt.1), multiplier(rt.1)) else {
            return by_arrow();
        };
        let left = Side {
            values: l_array.as_primitive::<Decimal128Type>().values(),
            scalar: l_scalar,
            multiplier: lm,
        };
        let right = Side {
            values: r_array.as_primitive::<Decimal128Type>().values(),
            scalar: r_scalar,
            multiplier: rm,
        };
        match compute(self.op, &left, &right) {
            Some(values) => Ok(ColumnarValue::Array(Arc::new(
                PrimitiveArray::<Decimal128Type>::new(ScalarBuffer::from(values), None)
                    .with_precision_and_scale(p, s)?,
            ))),
            // Overflow: arrow's kernel says so in its own words.
            None => by_arrow(),
        }
    }
}

/// Registers the decimal functions, so that plans naming them decode.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for op in [Op::Add, Op::Sub, Op::Mul] {
        registry.register_udf(Arc::new(DecimalFunction::udf(op)))?;
    }
    Ok(())
}

/// The analyzer rule described in the [module documentation](self).
#[derive(Debug)]
pub struct FastDecimalArithmetic {
    add: Arc<ScalarUDF>,
    sub: Arc<ScalarUDF>,
    mul: Arc<ScalarUDF>,
}

impl Default for FastDecimalArithmetic {
    fn default() -> Self {
        Self {
            add: Arc::new(DecimalFunction::udf(Op::Add)),
            sub: Arc::new(DecimalFunction::udf(Op::Sub)),
            mul: Arc::new(DecimalFunction::udf(Op::Mul)),
        }
    }
}

impl FastDecimalArithmetic {
    /// Rewrites one expression bottom-up, typing each operator once: the type of an operator
    /// this rule rewrote comes from its operands' (kept on a stack as the walk goes up), so a
    /// long chain is typed in one pass (as `checked::CheckedIntegerArithmetic` does).
    fn rewrite_expr(&self, expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
        crate::typed_rewrite::typed_transform_up(expr, |e, operands| {
            let type_of = |i: usize, operand: &Expr| {
                crate::typed_rewrite::operand_type(operands, i, operand, schema)
                    .and_then(|t| decimal128(&t))
            };
            let (rewritten, typed) = match e {
                Expr::BinaryExpr(BinaryExpr { left, op, right })
                    if matches!(op, Operator::Plus | Operator::Minus | Operator::Multiply) =>
                {
                    let (fun, kind) = match op {
                        Operator::Plus => (&self.add, Op::Add),
                        Operator::Minus => (&self.sub, Op::Sub),
                        _ => (&self.mul, Op::Mul),
                    };
                    // Only where the function's type is the one DataFusion gives the operator.
                    let result = type_of(0, &left)
                        .zip(type_of(1, &right))
                        .and_then(|(a, b)| {
                            let ours =
                                kind.result(a, b).map(|(p, s)| DataType::Decimal128(p, s))?;
                            let (a, b) = (
                                DataType::Decimal128(a.0, a.1),
                                DataType::Decimal128(b.0, b.1),
                            );
                            let theirs =
                                BinaryTypeCoercer::new(&a, &op, &b).get_result_type().ok()?;
                            (theirs == ours).then_some(ours)
                        });
                    if result.is_some() {
                        let call = ScalarFunction::new_udf(Arc::clone(fun), vec![*left, *right]);
                        (Transformed::yes(Expr::ScalarFunction(call)), result)
                    } else {
                        (
                            Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op, right })),
                            None,
                        )
                    }
                }
                other => (Transformed::no(other), None),
            };
            Ok((rewritten, typed))
        })
    }
}

impl AnalyzerRule for FastDecimalArithmetic {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        crate::typed_rewrite::rewrite_plan(plan, &|expr, schema| self.rewrite_expr(expr, schema))
    }

    fn name(&self) -> &str {
        "fast_decimal_arithmetic"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, RecordBatch};
    use arrow::datatypes::{Field, Schema};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    fn contexts() -> (SessionContext, SessionContext) {
        let decimal = |values: Vec<Option<i128>>, p: u8, s: i8| -> ArrayRef {
            Arc::new(
                Decimal128Array::from(values)
                    .with_precision_and_scale(p, s)
                    .expect("decimal"),
            )
        };
        let n = 5000;
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("price", DataType::Decimal128(15, 2), false),
                Field::new("disc", DataType::Decimal128(15, 2), false),
                Field::new("maybe", DataType::Decimal128(12, 4), true),
                Field::new("huge", DataType::Decimal128(38, 0), false),
            ])),
            vec![
                decimal(
                    (0..n)
                        .map(|i| Some(i * 7919 % 10_000_000 + 90_000))
                        .collect(),
                    15,
                    2,
                ),
                decimal((0..n).map(|i| Some(i % 11)).collect(), 15, 2),
                decimal(
                    (0..n)
                        .map(|i| (i % 3 != 0).then_some(i * 31 - 70_000))
                        .collect(),
                    12,
                    4,
                ),
                decimal((0..n).map(|i| Some(i128::MAX / 3 + i)).collect(), 38, 0),
            ],
        )
        .expect("batch");
        let plain = SessionContext::new();
        let mut fast = SessionContext::new_with_state(
            SessionStateBuilder::new()
                .with_default_features()
                .with_analyzer_rule(Arc::new(FastDecimalArithmetic::default()))
                .build(),
        );
        register(&mut fast).expect("register");
        for ctx in [&plain, &fast] {
            ctx.register_batch("t", batch.clone()).expect("table");
        }
        (plain, fast)
    }

    #[tokio::test]
    async fn decimal_arithmetic_keeps_its_values_names_types_and_nulls() {
        let (plain, fast) = contexts();
        for sql in [
            // TPC-H Q01's expressions: a literal rescaled, products of 64-bit values.
            "SELECT price * (1 - disc), price * (1 - disc) * (1 + disc) AS charge, 1 - disc FROM t",
            "SELECT sum(price * (1 - disc)) AS revenue, avg(price - disc) FROM t",
            // Nulls, other scales, both operands columns, a scalar on either side.
            "SELECT maybe + price, price - maybe, maybe * disc, maybe * 2.5, 0.125 - maybe FROM t",
            "SELECT price + 1.5, 2 * price, price * price, disc - disc FROM t WHERE price - disc > 1000",
            // Scalars only, and a chain of the rule's own results.
            "SELECT 1.25 + 2.5, 3.5 * 2.25, price + disc + price + disc + price - disc - price FROM t",
            // Values beyond 64 bits that do not overflow.
            "SELECT huge - 5, huge + 7, huge * 2, disc * 3, (disc - price) * price, -2 * huge FROM t",
        ] {
            let want = plain.sql(sql).await.expect(sql);
            let got = fast.sql(sql).await.expect(sql);
            assert_eq!(want.schema(), got.schema(), "{sql}");
            let want = want.collect().await.expect(sql);
            let got = got.collect().await.expect(sql);
            assert_eq!(want, got, "{sql}");
        }
        let explain = fast
            .sql("EXPLAIN SELECT price * (1 - disc) FROM t")
            .await
            .expect("explain")
            .collect()
            .await
            .expect("explain");
        let text = arrow::util::pretty::pretty_format_batches(&explain)
            .expect("format")
            .to_string();
        assert!(
            text.contains("decimal_mul") && text.contains("decimal_sub"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn decimal_overflow_is_arrows_error() {
        let (plain, fast) = contexts();
        for sql in [
            "SELECT huge * 4 FROM t",
            "SELECT huge + huge + huge + huge FROM t",
        ] {
            let error = |r: Result<Vec<arrow::array::RecordBatch>>| match r {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{sql} did not overflow"),
            };
            let want = error(plain.sql(sql).await.expect(sql).collect().await);
            let got = error(fast.sql(sql).await.expect(sql).collect().await);
            assert!(got.contains("Overflow"), "{sql}: {got}");
            assert_eq!(want, got, "{sql}");
        }
    }

    #[test]
    fn the_result_types_are_arrows() {
        assert_eq!(Op::Sub.result((20, 0), (15, 2)), Some((23, 2)));
        assert_eq!(Op::Mul.result((15, 2), (23, 2)), Some((38, 4)));
        assert_eq!(Op::Add.result((38, 10), (38, 0)), Some((38, 10)));
        assert_eq!(Op::Mul.result((38, 20), (38, 20)), None);
        // Not rewritten: negative scales, precisions beyond Decimal128's.
        assert_eq!(Op::Add.result((38, -100), (38, 10)), None);
        assert_eq!(Op::Mul.result((255, 0), (10, 0)), None);
    }
}
