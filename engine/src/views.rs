//! Strings inside Floe, and where they leave it.
//!
//! Floe plans an Iceberg `string` column that holds categories — a few values repeated, a flag,
//! a mode, a city; which ones: `floe_catalog::column_stats::category_strings` — as `Utf8View`,
//! as DataFusion plans every Parquet string by default: the Parquet reader decodes its
//! dictionary pages into views of the one copy of each value, a filter moves 16-byte views
//! rather than copying strings, and grouping or joining compares a view's inline prefix before
//! its bytes (TPC-H Q01's return flag and line status: CPU −15 %). Free text and unique names
//! stay plain `Utf8`: as views they are copied out again wherever rows are gathered, joined or
//! sent, and were slower (Q10's customer addresses and comments: +20 %). Two places take plain
//! strings again:
//!
//! * what a client receives ([`plain_schema`]): Flight SQL clients and JDBC/ODBC drivers of
//!   every age read `Utf8`, few read views;
//! * what is written to a table: the writers cast to the table's Arrow schema.
//!
//! A view array kept after a filter still points into every buffer it was cut from; Arrow IPC
//! sends those buffers whole, so a batch leaving a process is first compacted where its views
//! use less than half of what they hold ([`compact`]).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::Result;

/// The type Floe plans a column of Arrow type `data_type` as: strings and binaries as views.
pub fn planned_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
        other => other.clone(),
    }
}

/// The type a client receives for a column of type `data_type`: views as plain strings and
/// binaries, also inside lists, maps and structs.
pub fn plain_type(data_type: &DataType) -> DataType {
    let field = |f: &FieldRef| -> FieldRef {
        Arc::new(f.as_ref().clone().with_data_type(plain_type(f.data_type())))
    };
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        other => other.clone(),
    }
}

/// `schema` as a client receives it (see [`plain_type`]); the same schema when it has no view.
pub fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    if schema
        .fields()
        .iter()
        .all(|f| &plain_type(f.data_type()) == f.data_type())
    {
        return Arc::clone(schema);
    }
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| Field::clone(f).with_data_type(plain_type(f.data_type())))
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// Bytes of buffers a view array may hold beyond those its views use before it is compacted.
const SLACK: usize = 64 * 1024;

/// `batch` with each view column that holds more than twice the bytes its views use (plus
/// [`SLACK`]) copied into buffers of just those bytes; the batch itself when none does.
pub fn compact(batch: RecordBatch) -> Result<RecordBatch> {
    // The views are counted only when the buffers hold more than the slack: a batch of a
    // dictionary page's categories (a few KiB) is never copied, nor its views walked.
    fn wasteful(held: usize, used: impl FnOnce() -> usize) -> bool {
        held > SLACK && held > used().saturating_mul(2).saturating_add(SLACK)
    }
    let compacted = |column: &ArrayRef| -> Option<ArrayRef> {
        match column.data_type() {
            DataType::Utf8View => {
                let a = column.as_string_view();
                let held: usize = a.data_buffers().iter().map(|b| b.len()).sum();
                wasteful(held, || a.total_buffer_bytes_used()).then(|| Arc::new(a.gc()) as ArrayRef)
            }
            DataType::BinaryView => {
                let a = column.as_binary_view();
                let held: usize = a.data_buffers().iter().map(|b| b.len()).sum();
                wasteful(held, || a.total_buffer_bytes_used()).then(|| Arc::new(a.gc()) as ArrayRef)
            }
            _ => None,
        }
    };
    let compacted: Vec<Option<ArrayRef>> = batch.columns().iter().map(compacted).collect();
    if compacted.iter().all(Option::is_none) {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(compacted)
        .map(|(c, new)| new.unwrap_or_else(|| Arc::clone(c)))
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringViewArray;
    use arrow::compute::filter;

    #[test]
    fn a_filtered_view_column_is_compacted_and_keeps_its_values() {
        let long = |i: usize| format!("a value long enough not to be inlined, number {i:06}");
        let column: ArrayRef = Arc::new(StringViewArray::from_iter_values((0..10_000).map(long)));
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![column]).expect("test data");
        // Kept whole: nothing to gain.
        let same = compact(batch.clone()).expect("test data");
        assert!(Arc::ptr_eq(same.column(0), batch.column(0)));
        // One row in a hundred kept: its views use 1 % of the buffers they point into.
        let mask = (0..10_000).map(|i| i % 100 == 7).collect();
        let kept = filter(
            batch.column(0),
            &arrow::array::BooleanArray::new(mask, None),
        )
        .expect("test data");
        let kept = RecordBatch::try_new(schema, vec![kept]).expect("test data");
        let small = compact(kept.clone()).expect("test data");
        let held = |b: &RecordBatch| -> usize {
            let a = b.column(0).as_string_view();
            a.data_buffers().iter().map(|b| b.len()).sum()
        };
        assert!(
            held(&small) * 50 < held(&kept),
            "{} {}",
            held(&small),
            held(&kept)
        );
        assert_eq!(small, kept);
        let values: Vec<_> = small.column(0).as_string_view().iter().flatten().collect();
        assert_eq!(values[3], long(307));
    }

    #[test]
    fn clients_get_plain_strings_everywhere_and_plans_get_views_at_the_top_level() {
        let nested = DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true)));
        assert_eq!(
            plain_type(&nested),
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        assert_eq!(plain_type(&DataType::BinaryView), DataType::Binary);
        assert_eq!(plain_type(&DataType::Int64), DataType::Int64);
        assert_eq!(planned_type(&DataType::Utf8), DataType::Utf8View);
        assert_eq!(planned_type(&nested), nested);
        let planned = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("l", nested, true),
        ]));
        let plain = plain_schema(&planned);
        assert_eq!(plain.field(0).data_type(), &DataType::Utf8);
        assert_eq!(
            plain.field(1).data_type(),
            &plain_type(planned.field(1).data_type())
        );
        let unchanged = Arc::new(Schema::new(vec![Field::new("i", DataType::Int32, true)]));
        assert!(Arc::ptr_eq(&plain_schema(&unchanged), &unchanged));
    }
}
