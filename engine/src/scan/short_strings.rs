//! The scan's own test of a string column against a few short literals, by comparing views.
//!
//! A string the scan's filter tests is decoded as a view (see [`super::predicate::decoded_as`]):
//! 16 bytes holding its length and, when it is at most 12 bytes long, the string itself. So
//! `column = 'MAIL'` or `column IN ('MAIL', 'SHIP')` with literals of at most 12 bytes is one
//! 16-byte comparison per row — equal lengths and equal bytes —, which a longer string can never
//! pass (its length differs). Arrow's comparison goes through a generic per-row routine instead:
//! 21 % of TPC-H Q12's CPU was `l_shipmode = 'MAIL' OR l_shipmode = 'SHIP'` on lineitem's
//! decoded batches. [`ShortStringsIn`] answers exactly as `=`, `<>`, `IN` and `NOT IN` do,
//! nulls included; [`rewrite`] puts it in place of those in the scan's batch filter, which never
//! leaves the process (the predicate handed to the Parquet reader keeps DataFusion's own
//! expressions, which its row-group and page pruning understand).

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::buffer::{BooleanBuffer, Buffer};
use arrow::datatypes::{DataType, Schema as ArrowSchema};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, Column, InListExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;

/// Literals longer than this live outside the view.
const INLINE: usize = 12;

/// At most this many literals are compared (a longer list is left to DataFusion's hash set).
const MAX_LITERALS: usize = 16;

/// `column IN (literals)` (or `NOT IN`) for a string view column and literals of at most
/// [`INLINE`] bytes: see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct ShortStringsIn {
    column: Arc<dyn PhysicalExpr>,
    literals: Vec<String>,
    /// Each literal's view bits and the mask of the bytes that count (length and string).
    views: Vec<(u128, u128)>,
    negated: bool,
}

impl PartialEq for ShortStringsIn {
    fn eq(&self, other: &Self) -> bool {
        self.negated == other.negated
            && self.literals == other.literals
            && self.column.as_ref() == other.column.as_ref()
    }
}

impl Eq for ShortStringsIn {}

impl std::hash::Hash for ShortStringsIn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.negated.hash(state);
        self.literals.hash(state);
        self.column.as_ref().hash(state);
    }
}

impl ShortStringsIn {
    /// The test, if every literal is short enough and there are few of them.
    fn new(column: Arc<dyn PhysicalExpr>, literals: Vec<String>, negated: bool) -> Option<Self> {
        if literals.is_empty()
            || literals.len() > MAX_LITERALS
            || literals.iter().any(|l| l.len() > INLINE)
        {
            return None;
        }
        let views = literals
            .iter()
            .map(|l| view_and_mask(l.as_bytes()))
            .collect();
        Some(Self {
            column,
            literals,
            views,
            negated,
        })
    }

    /// For each of `views`, whether it is one of the literals' (or none of them, negated).
    fn test(&self, views: &[u128]) -> BooleanBuffer {
        match self.views.as_slice() {
            [(bits, mask)] => self.bits(views, |v| u64::from((v ^ bits) & mask == 0)),
            literals => self.bits(views, |v| {
                literals.iter().fold(0, |hit, (bits, mask)| {
                    hit | u64::from((v ^ bits) & mask == 0)
                })
            }),
        }
    }

    /// `hit` of each view (0 or 1) packed 64 to a word, without a branch per row.
    fn bits(&self, views: &[u128], hit: impl Fn(u128) -> u64) -> BooleanBuffer {
        let flip = if self.negated { u64::MAX } else { 0 };
        let word = |chunk: &[u128]| {
            let packed = chunk
                .iter()
                .enumerate()
                .fold(0u64, |w, (j, v)| w | (hit(*v) << j));
            let valid = if chunk.len() == 64 {
                u64::MAX
            } else {
                (1u64 << chunk.len()) - 1
            };
            (packed ^ flip) & valid
        };
        let words: Vec<u64> = views.chunks(64).map(word).collect();
        BooleanBuffer::new(Buffer::from_vec(words), 0, views.len())
    }

    /// Both tests of one column as one: `a IN (x) OR a IN (y)` is `a IN (x, y)`.
    fn or(&self, other: &Self) -> Option<Self> {
        if self.negated || other.negated || self.column.as_ref() != other.column.as_ref() {
            return None;
        }
        let literals = self
            .literals
            .iter()
            .chain(&other.literals)
            .cloned()
            .collect();
        Self::new(Arc::clone(&self.column), literals, false)
    }
}

/// The view of a string of at most [`INLINE`] bytes, and the mask of its length and bytes
/// (whatever a writer leaves in the padding after them does not count).
fn view_and_mask(bytes: &[u8]) -> (u128, u128) {
    let mut raw = [0u8; 16];
    raw[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    raw[4..4 + bytes.len()].copy_from_slice(bytes);
    let counted = 8 * (4 + bytes.len()) as u32;
    let mask = if counted == 128 {
        u128::MAX
    } else {
        (1u128 << counted) - 1
    };
    (u128::from_le_bytes(raw), mask)
}

impl fmt::Display for ShortStringsIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = if self.negated { "NOT " } else { "" };
        write!(f, "{} {not}IN ({:?}) (views)", self.column, self.literals)
    }
}

impl PhysicalExpr for ShortStringsIn {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn data_type(&self, _input_schema: &ArrowSchema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &ArrowSchema) -> Result<bool> {
        self.column.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let array = self.column.evaluate(batch)?.into_array(batch.num_rows())?;
        let Some(strings) = array.as_string_view_opt() else {
            return Err(DataFusionError::Internal(format!(
                "{self} over a {} column",
                array.data_type()
            )));
        };
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(
            self.test(strings.views()),
            strings.nulls().cloned(),
        ))))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.column]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        match children.as_slice() {
            [column] => Ok(Arc::new(Self {
                column: Arc::clone(column),
                ..self.as_ref().clone()
            })),
            _ => Err(DataFusionError::Internal(
                "a string test takes one column".into(),
            )),
        }
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.column.fmt_sql(f)?;
        let not = if self.negated { "NOT " } else { "" };
        let list = self
            .literals
            .iter()
            .map(|l| format!("'{}'", l.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        write!(f, " {not}IN ({list})")
    }
}

/// `filter` (over `schema`) with each `=`, `<>`, `IN` and `NOT IN` of a string view column
/// against short literals computed by [`ShortStringsIn`].
pub fn rewrite(filter: Arc<dyn PhysicalExpr>, schema: &ArrowSchema) -> Arc<dyn PhysicalExpr> {
    let view_column = |e: &Arc<dyn PhysicalExpr>| {
        e.as_any().downcast_ref::<Column>().is_some()
            && matches!(e.data_type(schema), Ok(DataType::Utf8View))
    };
    let literal = |e: &Arc<dyn PhysicalExpr>| match e.as_any().downcast_ref::<Literal>()?.value() {
        ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        _ => None,
    };
    let rewritten = Arc::clone(&filter).transform_up(|e| {
        let any = e.as_any();
        let test = if let Some(binary) = any.downcast_ref::<BinaryExpr>() {
            if *binary.op() == Operator::Or {
                let (left, right) = (binary.left().as_any(), binary.right().as_any());
                if let (Some(l), Some(r)) = (
                    left.downcast_ref::<ShortStringsIn>(),
                    right.downcast_ref::<ShortStringsIn>(),
                ) {
                    if let Some(both) = l.or(r) {
                        return Ok(Transformed::yes(Arc::new(both) as Arc<dyn PhysicalExpr>));
                    }
                }
            }
            let negated = match binary.op() {
                Operator::Eq => Some(false),
                Operator::NotEq => Some(true),
                _ => None,
            };
            negated
                .filter(|_| view_column(binary.left()))
                .and_then(|n| {
                    let value = literal(binary.right())?;
                    ShortStringsIn::new(Arc::clone(binary.left()), vec![value], n)
                })
        } else if let Some(in_list) = any.downcast_ref::<InListExpr>() {
            view_column(in_list.expr())
                .then(|| {
                    in_list
                        .list()
                        .iter()
                        .map(literal)
                        .collect::<Option<Vec<_>>>()
                })
                .flatten()
                .and_then(|values| {
                    ShortStringsIn::new(Arc::clone(in_list.expr()), values, in_list.negated())
                })
        } else {
            None
        };
        Ok(match test {
            Some(test) => Transformed::yes(Arc::new(test) as Arc<dyn PhysicalExpr>),
            None => Transformed::no(e),
        })
    });
    rewritten.map(|t| t.data).unwrap_or(filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringViewArray};
    use arrow::datatypes::Field;

    fn batch() -> RecordBatch {
        let values: Vec<Option<&str>> = vec![
            Some("MAIL"),
            Some("SHIP"),
            None,
            Some("MAI"),
            Some("MAIL "),
            Some(""),
            Some("TRUCK"),
            Some("exactly12byt"),
            Some("exactly12bytes and more"),
            Some("MAILMAILMAILMAIL"),
            Some("REG AIR"),
            None,
            Some("SHIP"),
        ];
        // Over two words of 64 rows and a part of a third.
        let values: Vec<Option<&str>> = values.iter().cycle().take(13 * 11).copied().collect();
        let array: ArrayRef = Arc::new(StringViewArray::from(values));
        let schema = Arc::new(ArrowSchema::new(vec![Field::new(
            "mode",
            DataType::Utf8View,
            true,
        )]));
        RecordBatch::try_new(schema, vec![array]).expect("batch")
    }

    fn lit(s: &str) -> Arc<dyn PhysicalExpr> {
        Arc::new(Literal::new(ScalarValue::Utf8View(Some(s.to_string()))))
    }

    #[test]
    fn short_literals_answer_as_datafusion_does_nulls_included() {
        let batch = batch();
        let schema = batch.schema();
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new("mode", 0));
        let in_list = |values: &[&str], negated| -> Arc<dyn PhysicalExpr> {
            Arc::new(
                InListExpr::try_new(
                    Arc::clone(&column),
                    values.iter().map(|v| lit(v)).collect(),
                    negated,
                    &schema,
                )
                .expect("in list"),
            )
        };
        let compare = |op, value: &str| -> Arc<dyn PhysicalExpr> {
            Arc::new(BinaryExpr::new(Arc::clone(&column), op, lit(value)))
        };
        let filters: Vec<Arc<dyn PhysicalExpr>> = vec![
            compare(Operator::Eq, "MAIL"),
            compare(Operator::NotEq, "MAIL"),
            compare(Operator::Eq, ""),
            compare(Operator::Eq, "exactly12byt"),
            Arc::new(BinaryExpr::new(
                compare(Operator::Eq, "MAIL"),
                Operator::Or,
                compare(Operator::Eq, "SHIP"),
            )),
            in_list(&["SHIP", "TRUCK", "REG AIR"], false),
            in_list(&["SHIP", "TRUCK", ""], true),
        ];
        for filter in filters {
            let fast = rewrite(Arc::clone(&filter), &schema);
            assert_ne!(
                fast.to_string(),
                filter.to_string(),
                "{filter} is rewritten"
            );
            let answer = |e: &Arc<dyn PhysicalExpr>| {
                e.evaluate(&batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .expect("evaluates")
            };
            let (want, got) = (answer(&filter), answer(&fast));
            assert_eq!(got.as_boolean(), want.as_boolean(), "{filter}");
        }
    }

    #[test]
    fn long_literals_and_other_tests_are_left_to_datafusion() {
        let schema = batch().schema();
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new("mode", 0));
        for filter in [
            Arc::new(BinaryExpr::new(
                Arc::clone(&column),
                Operator::Eq,
                lit("exactly12bytes and more"),
            )) as Arc<dyn PhysicalExpr>,
            Arc::new(BinaryExpr::new(
                Arc::clone(&column),
                Operator::Lt,
                lit("MAIL"),
            )),
        ] {
            assert_eq!(
                rewrite(Arc::clone(&filter), &schema).to_string(),
                filter.to_string()
            );
        }
    }
}
