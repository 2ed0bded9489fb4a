//! The scan's Iceberg predicate as a DataFusion expression, for the Parquet reader's pruning
//! and row filter, and the types the columns it tests are decoded as.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, Literal, NotExpr,
};
use datafusion::physical_expr::PhysicalExpr;
use iceberg::expr::{Predicate, PredicateOperator};
use iceberg::spec::{Datum, PrimitiveLiteral};

/// The scan's Iceberg predicate as a DataFusion expression over `schema`, for pruning and row
/// filtering: every conjunct that converts exactly, lookups first (see [`physical_conjuncts`]);
/// `None` when none does. (Anything left out only prunes less: the exact filter runs above the
/// scan.)
pub fn physical_predicate(
    predicate: &Predicate,
    schema: &ArrowSchema,
) -> Option<Arc<dyn PhysicalExpr>> {
    let (lookups, others) = physical_conjuncts(predicate, schema);
    all_of(lookups.into_iter().chain(others))
}

/// The conjuncts of the scan's Iceberg predicate that convert exactly to DataFusion
/// expressions over `schema`, in two lists: the lookups (a column equal to, or in a list of,
/// numbers, dates or times: [`is_lookup_test`]) and the others, each in the order written.
/// A row filter evaluates its conjuncts in order, each on the rows the earlier ones kept, so the
/// ones likely to keep fewest rows go first.
pub fn physical_conjuncts(predicate: &Predicate, schema: &ArrowSchema) -> (Conditions, Conditions) {
    let mut conjuncts = Vec::new();
    split_and(predicate, &mut conjuncts);
    let (lookups, others): (Vec<_>, Vec<_>) =
        conjuncts.into_iter().partition(|p| is_lookup_test(p));
    let convert_all = |ps: Vec<&Predicate>| {
        ps.into_iter()
            .filter_map(|p| convert(p, schema))
            .collect::<Vec<_>>()
    };
    (convert_all(lookups), convert_all(others))
}

/// Conditions in the order they are tested.
pub type Conditions = Vec<Arc<dyn PhysicalExpr>>;

/// `conditions` and-ed in order (`None` for none).
pub fn all_of(
    conditions: impl IntoIterator<Item = Arc<dyn PhysicalExpr>>,
) -> Option<Arc<dyn PhysicalExpr>> {
    conditions
        .into_iter()
        .reduce(|a, b| Arc::new(BinaryExpr::new(a, Operator::And, b)) as Arc<dyn PhysicalExpr>)
}

/// The type column `field` is decoded as. A string or binary column the predicate reads
/// (`filtered`) becomes a view: the row filter or the scan's batch filter evaluates it for every
/// row of the file, and a view points into the page's bytes where a plain string array copies
/// each value — most of a selective filter's decoding cost (TPC-H Q19's CPU −20 %, Q12's time
/// −27 %). The rows that pass are cast back to the plan's type as they leave the scan.
pub fn decoded_as(field: Field, filtered: bool) -> Field {
    match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 if filtered => {
            field.with_data_type(DataType::Utf8View)
        }
        DataType::Binary | DataType::LargeBinary if filtered => {
            field.with_data_type(DataType::BinaryView)
        }
        _ => field,
    }
}

/// The names of the columns `predicate` reads.
pub fn predicate_columns(predicate: &Predicate) -> HashSet<String> {
    fn walk(predicate: &Predicate, out: &mut HashSet<String>) {
        match predicate {
            Predicate::AlwaysTrue | Predicate::AlwaysFalse => {}
            Predicate::And(e) => e.inputs().iter().for_each(|p| walk(p, out)),
            Predicate::Or(e) => e.inputs().iter().for_each(|p| walk(p, out)),
            Predicate::Not(e) => e.inputs().iter().for_each(|p| walk(p, out)),
            Predicate::Unary(e) => {
                out.insert(e.term().name().to_string());
            }
            Predicate::Binary(e) => {
                out.insert(e.term().name().to_string());
            }
            Predicate::Set(e) => {
                out.insert(e.term().name().to_string());
            }
        }
    }
    let mut out = HashSet::new();
    walk(predicate, &mut out);
    out
}

/// Whether one of `predicate`'s conjuncts picks rows by equality with a key-like value
/// (`key = 42`, `id IN (1, 2)`): a lookup that keeps a few rows of a file, where the reader's
/// row filter pays (see [`super::parquet_read::FileToRead::row_filter`]). An equality on a
/// string or a boolean is not taken as one: those are mostly categories (a mode, a flag) that
/// keep a good share of the rows. Nor is one whose values cover more than 1 % of the column's
/// range where `values_in_range` knows it (`size IN (1, 5, 9)` over sizes 1 to 50: 6 %).
pub fn is_lookup(predicate: &Predicate, values_in_range: impl Fn(&str) -> Option<u128>) -> bool {
    let mut conjuncts = Vec::new();
    split_and(predicate, &mut conjuncts);
    let few = |column: &str, values: usize| {
        values_in_range(column).is_none_or(|range| (values as u128).saturating_mul(100) <= range)
    };
    conjuncts.into_iter().any(|p| match p {
        Predicate::Binary(e) if is_lookup_test(p) => few(e.term().name(), 1),
        Predicate::Set(e) if is_lookup_test(p) => few(e.term().name(), e.literals().len()),
        _ => false,
    })
}

/// Whether `conjunct` compares a column for equality with a key-like value, or with a list of
/// them: not a string or a boolean (mostly categories, a mode or a flag, that keep a good share
/// of the rows).
fn is_lookup_test(conjunct: &Predicate) -> bool {
    let key_like = |d: &Datum| {
        !matches!(
            d.literal(),
            PrimitiveLiteral::String(_)
                | PrimitiveLiteral::Binary(_)
                | PrimitiveLiteral::Boolean(_)
        )
    };
    match conjunct {
        Predicate::Binary(e) => e.op() == PredicateOperator::Eq && key_like(e.literal()),
        Predicate::Set(e) => e.op() == PredicateOperator::In && e.literals().iter().all(key_like),
        _ => false,
    }
}

/// How many values lie between `min` and `max` of an integer or date column (`None`: not one).
pub fn values_between(min: &ScalarValue, max: &ScalarValue) -> Option<u128> {
    let int = |v: &ScalarValue| -> Option<i128> {
        Some(match v {
            ScalarValue::Int8(Some(x)) => i128::from(*x),
            ScalarValue::Int16(Some(x)) => i128::from(*x),
            ScalarValue::Int32(Some(x)) => i128::from(*x),
            ScalarValue::Int64(Some(x)) => i128::from(*x),
            ScalarValue::UInt8(Some(x)) => i128::from(*x),
            ScalarValue::UInt16(Some(x)) => i128::from(*x),
            ScalarValue::UInt32(Some(x)) => i128::from(*x),
            ScalarValue::UInt64(Some(x)) => i128::from(*x),
            ScalarValue::Date32(Some(x)) => i128::from(*x),
            _ => return None,
        })
    };
    let (lo, hi) = (int(min)?, int(max)?);
    Some(u128::try_from(hi.checked_sub(lo)?).ok()?.saturating_add(1))
}

fn split_and<'a>(predicate: &'a Predicate, out: &mut Vec<&'a Predicate>) {
    match predicate {
        Predicate::And(and) => {
            let [a, b] = and.inputs();
            split_and(a, out);
            split_and(b, out);
        }
        other => out.push(other),
    }
}

/// Converts all of `predicate`, or nothing.
fn convert(predicate: &Predicate, schema: &ArrowSchema) -> Option<Arc<dyn PhysicalExpr>> {
    let both = |l: &Predicate, r: &Predicate, op| -> Option<Arc<dyn PhysicalExpr>> {
        Some(Arc::new(BinaryExpr::new(
            convert(l, schema)?,
            op,
            convert(r, schema)?,
        )))
    };
    Some(match predicate {
        Predicate::AlwaysTrue => Arc::new(Literal::new(ScalarValue::Boolean(Some(true)))),
        Predicate::AlwaysFalse => Arc::new(Literal::new(ScalarValue::Boolean(Some(false)))),
        Predicate::And(e) => {
            let [a, b] = e.inputs();
            both(a, b, Operator::And)?
        }
        Predicate::Or(e) => {
            let [a, b] = e.inputs();
            both(a, b, Operator::Or)?
        }
        Predicate::Not(e) => {
            let [a] = e.inputs();
            Arc::new(NotExpr::new(convert(a, schema)?))
        }
        Predicate::Unary(e) => {
            let (column, _) = column(e.term().name(), schema)?;
            match e.op() {
                PredicateOperator::IsNull => Arc::new(IsNullExpr::new(column)),
                PredicateOperator::NotNull => Arc::new(IsNotNullExpr::new(column)),
                _ => return None,
            }
        }
        Predicate::Binary(e) => {
            let (column, data_type) = column(e.term().name(), schema)?;
            let value = Arc::new(Literal::new(scalar(e.literal(), data_type)?));
            let op = match e.op() {
                PredicateOperator::LessThan => Operator::Lt,
                PredicateOperator::LessThanOrEq => Operator::LtEq,
                PredicateOperator::GreaterThan => Operator::Gt,
                PredicateOperator::GreaterThanOrEq => Operator::GtEq,
                PredicateOperator::Eq => Operator::Eq,
                PredicateOperator::NotEq => Operator::NotEq,
                _ => return None,
            };
            Arc::new(BinaryExpr::new(column, op, value))
        }
        Predicate::Set(e) => {
            let (column, data_type) = column(e.term().name(), schema)?;
            let negated = match e.op() {
                PredicateOperator::In => false,
                PredicateOperator::NotIn => true,
                _ => return None,
            };
            let list = e
                .literals()
                .iter()
                .map(|d| {
                    scalar(d, data_type).map(|v| Arc::new(Literal::new(v)) as Arc<dyn PhysicalExpr>)
                })
                .collect::<Option<Vec<_>>>()?;
            Arc::new(InListExpr::try_new(column, list, negated, schema).ok()?)
        }
    })
}

fn column<'a>(
    name: &str,
    schema: &'a ArrowSchema,
) -> Option<(Arc<dyn PhysicalExpr>, &'a DataType)> {
    let index = schema.index_of(name).ok()?;
    Some((
        Arc::new(Column::new(name, index)),
        schema.field(index).data_type(),
    ))
}

/// An Iceberg literal as a value of the column's type, if it converts exactly.
fn scalar(datum: &Datum, data_type: &DataType) -> Option<ScalarValue> {
    let value = match datum.literal() {
        PrimitiveLiteral::Boolean(v) => ScalarValue::Boolean(Some(*v)),
        PrimitiveLiteral::Int(v) => ScalarValue::Int32(Some(*v)),
        PrimitiveLiteral::Long(v) => ScalarValue::Int64(Some(*v)),
        PrimitiveLiteral::Float(v) => ScalarValue::Float32(Some(v.0)),
        PrimitiveLiteral::Double(v) => ScalarValue::Float64(Some(v.0)),
        PrimitiveLiteral::String(v) => ScalarValue::Utf8(Some(v.clone())),
        _ => return None,
    };
    if value.data_type() == *data_type {
        return Some(value);
    }
    // Dates and timestamps travel as their integer, and a value may widen; nothing that could
    // change it (a double to an integer, a long to an int) converts.
    let lossless = matches!(
        (&value, data_type),
        (
            ScalarValue::Int32(_),
            DataType::Int64 | DataType::Date32 | DataType::Timestamp(_, _)
        ) | (ScalarValue::Int64(_), DataType::Timestamp(_, _))
            | (
                ScalarValue::Utf8(_),
                DataType::LargeUtf8 | DataType::Utf8View
            )
            | (ScalarValue::Float32(_), DataType::Float64)
    );
    if lossless {
        value.cast_to(data_type).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::RecordBatch;

    #[test]
    fn predicates_convert_by_conjunct_and_keep_types() {
        use arrow::datatypes::Field;
        use iceberg::expr::Reference;
        let schema = ArrowSchema::new(vec![
            Field::new("d", DataType::Date32, true),
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        let p = Reference::new("d")
            .greater_than_or_equal_to(Datum::date(9000))
            .and(Reference::new("n").less_than(Datum::long(5)))
            .and(Reference::new("s").starts_with(Datum::string("x")))
            .and(Reference::new("missing").is_null());
        let e = physical_predicate(&p, &schema).expect("converted");
        assert_eq!(
            format!("{e}"),
            "d@0 >= 1994-08-23 AND n@1 < 5",
            "starts_with and an unknown column are left out"
        );
        // A literal that would change converting to the column's type is left out.
        let lossy = Reference::new("n").less_than(Datum::double(2.5));
        assert!(physical_predicate(&lossy, &schema).is_none());
        // An OR with a side that does not convert is left out whole.
        let or = Reference::new("n")
            .equal_to(Datum::long(1))
            .or(Reference::new("s").starts_with(Datum::string("x")));
        assert!(physical_predicate(&or, &schema).is_none());
    }

    #[test]
    fn lookups_lead_the_conjuncts_and_the_others_keep_their_order() {
        use arrow::datatypes::Field;
        use iceberg::expr::Reference;
        let schema = ArrowSchema::new(vec![
            Field::new("d", DataType::Date32, true),
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        // Written: a category, a range, a key, keys; the row filter tests the keys first.
        let p = Reference::new("s")
            .equal_to(Datum::string("AIR"))
            .and(Reference::new("d").greater_than_or_equal_to(Datum::date(9000)))
            .and(Reference::new("n").equal_to(Datum::long(42)))
            .and(Reference::new("n").is_in([Datum::long(1), Datum::long(2)]));
        let (lookups, others) = physical_conjuncts(&p, &schema);
        let text =
            |es: &[Arc<dyn PhysicalExpr>]| es.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        assert_eq!(text(&lookups), ["n@1 = 42", "n@1 IN (SET) ([1, 2])"]);
        assert_eq!(text(&others), ["s@2 = AIR", "d@0 >= 1994-08-23"]);
        assert_eq!(
            physical_predicate(&p, &schema)
                .expect("converted")
                .to_string(),
            "n@1 = 42 AND n@1 IN (SET) ([1, 2]) AND s@2 = AIR AND d@0 >= 1994-08-23"
        );
        assert!(all_of(Vec::new()).is_none());
    }

    #[test]
    fn lookups_by_non_string_equality_are_told_from_ranges_and_categories() {
        use iceberg::expr::Reference;
        let unknown = |_: &str| None;
        let key = || Reference::new("o_orderkey").equal_to(Datum::long(42));
        let date = || Reference::new("d").greater_than_or_equal_to(Datum::date(9000));
        let mode = || Reference::new("mode").equal_to(Datum::string("AIR"));
        // A key compared for equality, alone, among other conjuncts or as a set of keys.
        assert!(is_lookup(&key(), unknown));
        assert!(is_lookup(&date().and(key()).and(mode()), unknown));
        assert!(is_lookup(
            &Reference::new("id").is_in([Datum::int(1), Datum::int(7)]),
            unknown
        ));
        // Ranges, string and boolean categories, negations and a key only on one side of an
        // OR are not.
        assert!(!is_lookup(&date(), unknown));
        assert!(!is_lookup(
            &Reference::new("flag").equal_to(Datum::bool(true)),
            unknown
        ));
        assert!(!is_lookup(&mode().and(date()), unknown));
        assert!(!is_lookup(
            &Reference::new("mode").is_in([Datum::string("AIR"), Datum::string("MAIL")]),
            unknown
        ));
        assert!(!is_lookup(
            &Reference::new("o_orderkey").not_equal_to(Datum::long(42)),
            unknown
        ));
        assert!(!is_lookup(&key().or(date()), unknown));
        // Where the manifests give the column's range: a key among millions is a lookup, a
        // size among fifty is a category.
        let ranges = |column: &str| match column {
            "o_orderkey" => Some(6_000_000),
            "p_size" => Some(50),
            _ => None,
        };
        assert!(is_lookup(&key(), ranges));
        let sizes = [Datum::int(1), Datum::int(5), Datum::int(9)];
        assert!(!is_lookup(&Reference::new("p_size").is_in(sizes), ranges));
        assert!(!is_lookup(
            &Reference::new("p_size").equal_to(Datum::int(7)),
            ranges
        ));
        assert_eq!(
            values_between(&ScalarValue::Int32(Some(1)), &ScalarValue::Int32(Some(50))),
            Some(50)
        );
        assert_eq!(
            values_between(
                &ScalarValue::Utf8(Some("a".into())),
                &ScalarValue::Utf8(None)
            ),
            None
        );
    }

    #[test]
    fn filtered_string_columns_are_decoded_as_views_and_filter_right() {
        use arrow::array::{Array, BooleanArray, Int64Array, StringViewArray};
        use arrow::datatypes::Field;
        use iceberg::expr::Reference;
        use std::ops::Not;
        let p = Reference::new("mode")
            .is_in([Datum::string("AIR"), Datum::string("MAIL")])
            .and(Reference::new("n").less_than(Datum::long(5)).not())
            .or(Reference::new("note").equal_to(Datum::string("x")));
        let mut names: Vec<String> = predicate_columns(&p).into_iter().collect();
        names.sort();
        assert_eq!(names, ["mode", "n", "note"]);

        let read: Vec<Field> = [
            Field::new("mode", DataType::Utf8, true),
            Field::new("note", DataType::LargeUtf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("other", DataType::Utf8, true),
            Field::new("raw", DataType::Binary, true),
        ]
        .into_iter()
        .map(|f| {
            let filtered = names.contains(f.name()) || f.name() == "raw";
            decoded_as(f, filtered)
        })
        .collect();
        let types: Vec<&DataType> = read.iter().map(|f| f.data_type()).collect();
        assert_eq!(
            types,
            [
                &DataType::Utf8View,
                &DataType::Utf8View,
                &DataType::Int64,
                &DataType::Utf8,
                &DataType::BinaryView
            ],
            "only the predicate's string and binary columns become views"
        );

        // The predicate over the view-typed columns evaluates on view arrays.
        let schema = Arc::new(ArrowSchema::new(read[..3].to_vec()));
        let e = physical_predicate(&p, &schema).expect("converted");
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringViewArray::from(vec![
                    Some("AIR"),
                    Some("SHIP"),
                    Some("MAIL"),
                    None,
                ])),
                Arc::new(StringViewArray::from(vec![
                    Some("y"),
                    Some("x"),
                    Some("y"),
                    Some("y"),
                ])),
                Arc::new(Int64Array::from(vec![9, 1, 2, 7])),
            ],
        )
        .expect("batch");
        let kept = e
            .evaluate(&batch)
            .and_then(|v| v.into_array(4))
            .expect("evaluated");
        let kept = kept
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("a boolean array");
        // row 0: AIR and 9 >= 5; row 1: note = x; row 2: MAIL but 2 < 5; row 3: null mode.
        let got: Vec<Option<bool>> = kept.iter().collect();
        assert_eq!(got, [Some(true), Some(true), Some(false), None]);
    }
}
