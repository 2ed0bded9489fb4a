//! A row's Iceberg partition value as a physical expression, so that the rows a write takes
//! can be hash-shuffled by the partition they belong to before the writers: each partition is
//! then written by one task, into as few files as its size needs, instead of by every task
//! that happened to read some of its rows.
//!
//! The value is computed by iceberg's own transform functions (the ones the writer's
//! partition splitter uses), so rows of one partition always land in one bucket.

use std::any::Any;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use arrow::array::new_empty_array;
use arrow::datatypes::{DataType, Schema as ArrowSchema};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use iceberg::spec::{PartitionSpec, Schema, Transform};
use iceberg::transform::create_transform_function;

/// How an encoded [`PartitionValueExpr`] starts on the wire (followed by the transform's
/// Iceberg name, e.g. `month` or `bucket[16]`).
const WIRE_TAG: &str = "iceberg-partition-value:";

/// `transform(source)` for one partition field of an Iceberg partition spec.
#[derive(Debug, Clone)]
pub struct PartitionValueExpr {
    source: Arc<dyn PhysicalExpr>,
    transform: Transform,
}

impl PartialEq for PartitionValueExpr {
    fn eq(&self, other: &Self) -> bool {
        self.transform == other.transform && self.source.as_ref() == other.source.as_ref()
    }
}

impl Eq for PartitionValueExpr {}

impl Hash for PartitionValueExpr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.transform.hash(state);
        self.source.as_ref().hash(state);
    }
}

impl PartitionValueExpr {
    /// The partition value `transform(source)`.
    pub fn new(source: Arc<dyn PhysicalExpr>, transform: Transform) -> Self {
        Self { source, transform }
    }

    /// The input column whose value the partition value is (an identity transform of a
    /// column), if it is one.
    pub fn identity_column(&self) -> Option<usize> {
        (self.transform == Transform::Identity)
            .then(|| {
                self.source
                    .as_any()
                    .downcast_ref::<Column>()
                    .map(Column::index)
            })
            .flatten()
    }

    /// The wire form (the source travels as the expression's child).
    pub fn encode(&self) -> Vec<u8> {
        format!("{WIRE_TAG}{}", self.transform).into_bytes()
    }

    /// Decodes [`Self::encode`]'s output over the decoded `inputs`; `None` if `buf` is not one.
    pub fn decode(buf: &[u8], inputs: &[Arc<dyn PhysicalExpr>]) -> Option<Result<Self>> {
        let text = std::str::from_utf8(buf).ok()?.strip_prefix(WIRE_TAG)?;
        Some(match inputs {
            [source] => text
                .parse::<Transform>()
                .map(|transform| Self::new(Arc::clone(source), transform))
                .map_err(|e| DataFusionError::Plan(format!("partition transform '{text}': {e}"))),
            _ => Err(DataFusionError::Plan(
                "a partition value takes one input".into(),
            )),
        })
    }

    fn transformed_type(&self, input_schema: &ArrowSchema) -> Result<DataType> {
        // Iceberg's transforms take plain strings, not the views Floe plans strings as.
        let source = crate::views::plain_type(&self.source.data_type(input_schema)?);
        let function = create_transform_function(&self.transform).map_err(iceberg_error)?;
        Ok(function
            .transform(new_empty_array(&source))
            .map_err(iceberg_error)?
            .data_type()
            .clone())
    }
}

fn iceberg_error(e: iceberg::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl fmt::Display for PartitionValueExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.transform, self.source)
    }
}

impl PhysicalExpr for PartitionValueExpr {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn data_type(&self, input_schema: &ArrowSchema) -> Result<DataType> {
        self.transformed_type(input_schema)
    }

    fn nullable(&self, _input_schema: &ArrowSchema) -> Result<bool> {
        Ok(true)
    }

    fn evaluate(&self, batch: &arrow::array::RecordBatch) -> Result<ColumnarValue> {
        let source = self.source.evaluate(batch)?.into_array(batch.num_rows())?;
        let plain = crate::views::plain_type(source.data_type());
        let source = if &plain == source.data_type() {
            source
        } else {
            arrow::compute::cast(&source, &plain)?
        };
        let function = create_transform_function(&self.transform).map_err(iceberg_error)?;
        Ok(ColumnarValue::Array(
            function.transform(source).map_err(iceberg_error)?,
        ))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.source]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        match children.as_slice() {
            [source] => Ok(Arc::new(Self::new(Arc::clone(source), self.transform))),
            _ => Err(DataFusionError::Internal(
                "a partition value takes one input".into(),
            )),
        }
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.transform)?;
        self.source.fmt_sql(f)?;
        write!(f, ")")
    }
}

/// The expressions that name each row's partition of `spec` in rows of `input` (whose
/// columns are the table's, by name): one per partition field whose source is a top-level
/// column of the table's own type. `None` when there is none (an unpartitioned table, or only
/// void or nested sources): the write is then not worth clustering.
pub fn clustering_keys(
    spec: &PartitionSpec,
    schema: &Schema,
    input: &ArrowSchema,
    table: &ArrowSchema,
) -> Option<Vec<Arc<dyn PhysicalExpr>>> {
    let keys: Vec<Arc<dyn PhysicalExpr>> = spec
        .fields()
        .iter()
        .filter(|field| field.transform != Transform::Void)
        .filter_map(|field| {
            // A top-level column only (a nested field's name could be a top-level column's).
            let source = schema
                .as_struct()
                .fields()
                .iter()
                .find(|f| f.id == field.source_id)?;
            let name = source.name.clone();
            let (index, column) = input.column_with_name(&name)?;
            // Only a column the writer takes as it is (or strings as views: the partition
            // value is the same either way).
            let (_, declared) = table.column_with_name(&name)?;
            let same = column.data_type() == declared.data_type()
                || &crate::views::plain_type(column.data_type()) == declared.data_type();
            same.then(|| {
                Arc::new(PartitionValueExpr::new(
                    Arc::new(Column::new(&name, index)),
                    field.transform,
                )) as Arc<dyn PhysicalExpr>
            })
        })
        .collect();
    (!keys.is_empty()).then_some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Date32Array, Int32Array, Int64Array, RecordBatch};
    use arrow::datatypes::Field;
    use iceberg::spec::{NestedField, PrimitiveType, Type};

    fn table() -> (Schema, ArrowSchema) {
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::optional(2, "day", Type::Primitive(PrimitiveType::Date)).into(),
            ])
            .build()
            .expect("schema");
        let arrow = ArrowSchema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("day", DataType::Date32, true),
        ]);
        (schema, arrow)
    }

    /// The expression gives iceberg's own partition values (months since 1970 for `month`,
    /// null for null), and survives its wire form.
    #[test]
    fn month_of_a_date_is_icebergs_month_and_round_trips() {
        let (schema, arrow) = table();
        let spec = PartitionSpec::builder(schema.clone())
            .add_partition_field("day", "day_month", Transform::Month)
            .expect("field")
            .build()
            .expect("spec");
        let keys = clustering_keys(&spec, &schema, &arrow, &arrow).expect("one key");
        let [key] = keys.as_slice() else {
            panic!("one key: {keys:?}")
        };
        // 1970-01-01, 1970-02-15, 2024-03-31, null
        let batch = RecordBatch::try_new(
            Arc::new(arrow.clone()),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(Date32Array::from(vec![
                    Some(0),
                    Some(45),
                    Some(19813),
                    None,
                ])),
            ],
        )
        .expect("batch");
        let out = key
            .evaluate(&batch)
            .expect("evaluates")
            .into_array(4)
            .expect("array");
        let months = out
            .as_any()
            .downcast_ref::<Int32Array>()
            .expect("months are Int32");
        assert_eq!(months.value(0), 0);
        assert_eq!(months.value(1), 1);
        assert_eq!(months.value(2), (2024 - 1970) * 12 + 2);
        assert!(months.is_null(3));
        assert_eq!(key.data_type(&arrow).expect("type"), DataType::Int32);
        assert_eq!(key.to_string(), "month(day@1)");

        let value = key
            .as_any()
            .downcast_ref::<PartitionValueExpr>()
            .expect("a partition value");
        let decoded =
            PartitionValueExpr::decode(&value.encode(), &[Arc::new(Column::new("day", 1))])
                .expect("ours")
                .expect("decodes");
        assert_eq!(&decoded, value);
        assert!(PartitionValueExpr::decode(b"something else", &[]).is_none());
        assert!(
            PartitionValueExpr::decode(b"iceberg-partition-value:fortnight", &[])
                .expect("ours")
                .is_err()
        );
    }

    /// Nothing to cluster by: no fields, a void transform, a source the input lacks or takes
    /// in another type.
    #[test]
    fn no_key_when_no_field_names_a_usable_column() {
        let (schema, arrow) = table();
        let unpartitioned = PartitionSpec::unpartition_spec();
        assert!(clustering_keys(&unpartitioned, &schema, &arrow, &arrow).is_none());
        let void = PartitionSpec::builder(schema.clone())
            .add_partition_field("id", "id_void", Transform::Void)
            .expect("field")
            .build()
            .expect("spec");
        assert!(clustering_keys(&void, &schema, &arrow, &arrow).is_none());
        let by_id = PartitionSpec::builder(schema.clone())
            .add_partition_field("id", "id_bucket", Transform::Bucket(8))
            .expect("field")
            .build()
            .expect("spec");
        let other = ArrowSchema::new(vec![Field::new("id", DataType::Int32, false)]);
        assert!(clustering_keys(&by_id, &schema, &other, &arrow).is_none());
        assert!(clustering_keys(&by_id, &schema, &arrow, &arrow).is_some());

        // A source nested in a struct is not the top-level column of the same name.
        let nested = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::optional(
                    2,
                    "info",
                    Type::Struct(iceberg::spec::StructType::new(vec![NestedField::optional(
                        3,
                        "id",
                        Type::Primitive(PrimitiveType::Long),
                    )
                    .into()])),
                )
                .into(),
            ])
            .build()
            .expect("schema");
        let by_inner = PartitionSpec::builder(nested.clone())
            .add_partition_field("info.id", "inner_bucket", Transform::Bucket(8))
            .expect("field")
            .build()
            .expect("spec");
        let nested_arrow = iceberg::arrow::schema_to_arrow_schema(&nested).expect("arrow");
        assert!(clustering_keys(&by_inner, &nested, &nested_arrow, &nested_arrow).is_none());
    }
}
