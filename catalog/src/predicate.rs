//! DataFusion filter expressions → Iceberg predicates, for pruning before any data file opens.
//!
//! Conversion is all-or-nothing per conjunct: a conjunct Floe cannot express in Iceberg is left
//! out of the pushed predicate (the filter still runs in DataFusion above the scan, so the
//! answer stays exact; only pruning is lost).

use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;
use iceberg::expr::{Predicate, Reference};
use iceberg::spec::Datum;

/// ANDs together every conjunct of `filters` that converts; `None` when none does.
pub fn filters_to_predicate(filters: &[Expr]) -> Option<Predicate> {
    let mut conjuncts = Vec::new();
    for filter in filters {
        split_conjunction(filter, &mut conjuncts);
    }
    conjuncts
        .into_iter()
        .filter_map(to_predicate)
        .reduce(Predicate::and)
}

fn split_conjunction<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            split_conjunction(left, out);
            split_conjunction(right, out);
        }
        other => out.push(other),
    }
}

/// Converts one expression exactly, or not at all.
pub fn to_predicate(expr: &Expr) -> Option<Predicate> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => Some(to_predicate(left)?.and(to_predicate(right)?)),
            Operator::Or => Some(to_predicate(left)?.or(to_predicate(right)?)),
            _ => comparison(left, *op, right),
        },
        Expr::Not(inner) => Some(to_predicate(inner)?.negate()),
        Expr::IsNull(inner) => Some(reference(inner)?.is_null()),
        Expr::IsNotNull(inner) => Some(reference(inner)?.is_not_null()),
        Expr::InList(list) => {
            let r = reference(&list.expr)?;
            let values = list.list.iter().map(literal).collect::<Option<Vec<_>>>()?;
            Some(if list.negated {
                r.is_not_in(values)
            } else {
                r.is_in(values)
            })
        }
        Expr::Between(between) => {
            let r = reference(&between.expr)?;
            let low = literal(&between.low)?;
            let high = literal(&between.high)?;
            let inside = r
                .clone()
                .greater_than_or_equal_to(low)
                .and(r.less_than_or_equal_to(high));
            Some(if between.negated {
                inside.negate()
            } else {
                inside
            })
        }
        _ => None,
    }
}

fn comparison(left: &Expr, op: Operator, right: &Expr) -> Option<Predicate> {
    let (r, value, op) = match (reference(left), literal(right)) {
        (Some(r), Some(v)) => (r, v, op),
        _ => (reference(right)?, literal(left)?, op.swap()?),
    };
    Some(match op {
        Operator::Eq => r.equal_to(value),
        Operator::NotEq => r.not_equal_to(value),
        Operator::Lt => r.less_than(value),
        Operator::LtEq => r.less_than_or_equal_to(value),
        Operator::Gt => r.greater_than(value),
        Operator::GtEq => r.greater_than_or_equal_to(value),
        _ => return None,
    })
}

fn reference(expr: &Expr) -> Option<Reference> {
    match expr {
        Expr::Column(c) => Some(Reference::new(c.name.clone())),
        _ => None,
    }
}

fn literal(expr: &Expr) -> Option<Datum> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    scalar_to_datum(value)
}

/// An Iceberg literal for a DataFusion scalar, when the types line up exactly.
pub fn scalar_to_datum(value: &ScalarValue) -> Option<Datum> {
    Some(match value {
        ScalarValue::Boolean(Some(v)) => Datum::bool(*v),
        ScalarValue::Int8(Some(v)) => Datum::int(*v as i32),
        ScalarValue::Int16(Some(v)) => Datum::int(*v as i32),
        ScalarValue::Int32(Some(v)) => Datum::int(*v),
        ScalarValue::Int64(Some(v)) => Datum::long(*v),
        ScalarValue::Float32(Some(v)) => Datum::float(*v),
        ScalarValue::Float64(Some(v)) => Datum::double(*v),
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => Datum::string(v),
        ScalarValue::Date32(Some(v)) => Datum::date(*v),
        ScalarValue::TimestampMicrosecond(Some(v), None) => Datum::timestamp_micros(*v),
        ScalarValue::TimestampMicrosecond(Some(v), Some(_)) => Datum::timestamptz_micros(*v),
        ScalarValue::TimestampNanosecond(Some(v), None) => Datum::timestamp_nanos(*v),
        ScalarValue::TimestampNanosecond(Some(v), Some(_)) => Datum::timestamptz_nanos(*v),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    #[test]
    fn converts_comparisons_and_keeps_unconvertible_conjuncts_out() {
        let filters = vec![
            col("a").gt_eq(lit(5i64)).and(col("b").eq(lit("x"))),
            // a function call: not expressible, must be dropped rather than guessed
            datafusion::functions::expr_fn::upper(col("c")).eq(lit("Y")),
        ];
        let p = filters_to_predicate(&filters).expect("two conjuncts convert");
        let text = p.to_string();
        assert!(text.contains("a >= 5"), "{text}");
        assert!(text.contains("b = \"x\""), "{text}");
        assert!(!text.contains('c'), "{text}");
    }

    #[test]
    fn literal_on_the_left_flips_the_operator() {
        let p = to_predicate(&lit(10i32).gt(col("a"))).expect("converts");
        assert_eq!(p.to_string(), "a < 10");
    }

    #[test]
    fn or_with_an_unconvertible_side_is_not_pushed() {
        let e = col("a")
            .eq(lit(1i32))
            .or(datafusion::functions::expr_fn::upper(col("c")).eq(lit("Y")));
        assert!(to_predicate(&e).is_none());
    }
}
