//! Cutting a batch into the pieces of each Iceberg partition its rows fall in.
//!
//! iceberg's own `RecordBatchPartitionSplitter` turns every row's partition value into an
//! Iceberg `Struct` literal (an allocation per row), groups rows by hashing those, and filters
//! the whole batch once per group. Here the partition values are computed the same way (its
//! `PartitionValueCalculator`, the spec's transforms), rows are grouped by their values'
//! Arrow row encoding, each group is taken in one `take`, and a literal is made once per
//! group.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use iceberg::arrow::{arrow_struct_to_literal, PartitionValueCalculator};
use iceberg::spec::{Literal, PartitionKey, PartitionSpec, Schema};
use iceberg::{Error, ErrorKind, Result};

/// Splits batches of a table's rows by the partition of `spec` each row belongs to.
pub struct PartitionSplitter {
    calculator: PartitionValueCalculator,
    rows: RowConverter,
    spec: PartitionSpec,
    schema: Arc<Schema>,
}

fn arrow_error(e: arrow::error::ArrowError) -> Error {
    Error::new(ErrorKind::Unexpected, "grouping rows by partition").with_source(e)
}

impl PartitionSplitter {
    /// A splitter for rows of `schema` into the partitions of `spec` (a partitioned spec).
    pub fn try_new(schema: Arc<Schema>, spec: Arc<PartitionSpec>) -> Result<Self> {
        let calculator = PartitionValueCalculator::try_new(&spec, &schema)?;
        let DataType::Struct(fields) = calculator.partition_arrow_type() else {
            return Err(Error::new(
                ErrorKind::DataInvalid,
                "a partition type is a struct",
            ));
        };
        let rows = RowConverter::new(
            fields
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )
        .map_err(arrow_error)?;
        Ok(Self {
            calculator,
            rows,
            spec: spec.as_ref().clone(),
            schema,
        })
    }

    /// `batch`'s rows, grouped by partition (groups in the order their first row comes; rows
    /// in their order), each with its partition key.
    pub fn split(&self, batch: &RecordBatch) -> Result<Vec<(PartitionKey, RecordBatch)>> {
        let values = self.calculator.calculate(batch)?;
        let rows = self
            .rows
            .convert_columns(values.as_struct().columns())
            .map_err(arrow_error)?;
        let mut group_of: HashMap<arrow::row::Row<'_>, usize> = HashMap::new();
        let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
        for i in 0..rows.num_rows() {
            match group_of.entry(rows.row(i)) {
                Entry::Occupied(g) => groups[*g.get()].1.push(i as u32),
                Entry::Vacant(g) => {
                    g.insert(groups.len());
                    groups.push((i, vec![i as u32]));
                }
            }
        }
        let whole = groups.len() == 1;
        groups
            .into_iter()
            .map(|(first, members)| {
                let key = self.key(&values, first)?;
                let piece = if whole {
                    batch.clone()
                } else {
                    take_record_batch(batch, &UInt32Array::from(members)).map_err(arrow_error)?
                };
                Ok((key, piece))
            })
            .collect()
    }

    /// The partition key of row `row` of the partition values `values`.
    fn key(&self, values: &ArrayRef, row: usize) -> Result<PartitionKey> {
        let one = values.slice(row, 1);
        match arrow_struct_to_literal(&one, self.calculator.partition_type())?
            .into_iter()
            .next()
        {
            Some(Some(Literal::Struct(data))) => Ok(PartitionKey::new(
                self.spec.clone(),
                Arc::clone(&self.schema),
                data,
            )),
            _ => Err(Error::new(
                ErrorKind::DataInvalid,
                "a row's partition value is not a struct",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Int64Array, StringArray};
    use iceberg::arrow::RecordBatchPartitionSplitter;
    use iceberg::spec::{NestedField, PrimitiveType, Transform, Type};
    use std::collections::BTreeMap;

    /// Each partition's rows, by partition path, as (id) lists in row order.
    fn by_path(pieces: Vec<(PartitionKey, RecordBatch)>) -> BTreeMap<String, Vec<i64>> {
        let mut out = BTreeMap::new();
        for (key, piece) in pieces {
            let ids = piece
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("ids")
                .values()
                .to_vec();
            assert!(
                out.insert(key.to_path(), ids).is_none(),
                "one piece per partition"
            );
        }
        out
    }

    /// The same partitions with the same rows as iceberg's own splitter, over identity,
    /// month and bucket fields with nulls among them.
    #[test]
    fn splits_as_icebergs_splitter_does() {
        let schema = Arc::new(
            Schema::builder()
                .with_fields(vec![
                    NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                    NestedField::optional(2, "city", Type::Primitive(PrimitiveType::String)).into(),
                    NestedField::optional(3, "day", Type::Primitive(PrimitiveType::Date)).into(),
                ])
                .build()
                .expect("schema"),
        );
        let spec = Arc::new(
            PartitionSpec::builder(schema.as_ref().clone())
                .add_partition_field("city", "city", Transform::Identity)
                .expect("city")
                .add_partition_field("day", "day_month", Transform::Month)
                .expect("month")
                .add_partition_field("id", "id_bucket", Transform::Bucket(3))
                .expect("bucket")
                .build()
                .expect("spec"),
        );
        let arrow_schema =
            Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema).expect("arrow schema"));
        let n = 200i64;
        let cities = ["berlin", "paris", "rome"];
        let batch = RecordBatch::try_new(
            Arc::clone(&arrow_schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| (i % 7 != 0).then(|| cities[(i % 3) as usize])),
                )),
                Arc::new(Date32Array::from_iter(
                    (0..n).map(|i| (i % 11 != 0).then_some((i * 13 % 120) as i32)),
                )),
            ],
        )
        .expect("batch");

        let ours = PartitionSplitter::try_new(Arc::clone(&schema), Arc::clone(&spec))
            .expect("splitter")
            .split(&batch)
            .expect("splits");
        let theirs = RecordBatchPartitionSplitter::try_new_with_computed_values(schema, spec)
            .expect("iceberg's splitter")
            .split(&batch)
            .expect("iceberg splits");
        let (ours, theirs) = (by_path(ours), by_path(theirs));
        assert!(ours.len() > 20, "{} partitions", ours.len());
        assert_eq!(ours, theirs);
        assert_eq!(ours.values().map(Vec::len).sum::<usize>(), n as usize);
    }
}
