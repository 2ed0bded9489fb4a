//! Metadata tables, with Trino's names and columns: `"t$snapshots"`, `"t$history"`,
//! `"t$manifests"`, `"t$files"`, `"t$partitions"`, `"t$refs"`, `"t$properties"`. Each is built from the table's metadata
//! (and, for manifests, its current manifest list) when a query names it, and is then an
//! ordinary in-memory table: it joins and filters like any other.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int32Builder, Int64Array, Int64Builder, ListBuilder,
    MapBuilder, RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use datafusion::scalar::ScalarValue;
use iceberg::spec::ManifestContentType;
use iceberg::table::Table;

use floe_engine::error::FloeError;

/// What separates a table's name from its metadata table's kind (`orders$snapshots`).
pub const METADATA_TABLE_SEPARATOR: char = '$';

/// The metadata tables Floe has.
pub const KINDS: [&str; 7] = [
    "snapshots",
    "history",
    "manifests",
    "files",
    "partitions",
    "refs",
    "properties",
];

fn external(e: FloeError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// `orders$snapshots` → (`orders`, Some(`snapshots`)).
pub fn split(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once(METADATA_TABLE_SEPARATOR) {
        Some((table, kind)) if !table.is_empty() => (table, Some(kind)),
        _ => (name, None),
    }
}

/// Metadata table `kind` of `table` (named `name` in messages).
pub async fn metadata_table(
    table: &Table,
    name: &str,
    kind: &str,
) -> Result<Arc<dyn TableProvider>> {
    let batch = match kind {
        "snapshots" => snapshots(table)?,
        "history" => history(table)?,
        "manifests" => manifests(table, name).await?,
        "files" => files(table, name).await?,
        "partitions" => partitions(table, name).await?,
        "refs" => refs(table, name)?,
        "properties" => properties(table)?,
        other => {
            return Err(external(FloeError::NotFound(format!(
                "table {name} has no metadata table ${other} (Floe has ${})",
                KINDS.join(", $")
            ))))
        }
    };
    Ok(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?))
}

fn utc_millis() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn string_map(entries: &[Vec<(String, String)>]) -> Result<ArrayRef> {
    let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for row in entries {
        for (k, v) in row {
            builder.keys().append_value(k);
            builder.values().append_value(v);
        }
        builder.append(true)?;
    }
    Ok(Arc::new(builder.finish()))
}

/// `$snapshots`: committed_at, snapshot_id, parent_id, operation, manifest_list, summary.
fn snapshots(table: &Table) -> Result<RecordBatch> {
    let mut list: Vec<_> = table.metadata().snapshots().collect();
    list.sort_by_key(|s| (s.timestamp_ms(), s.sequence_number()));
    let summaries: Vec<Vec<(String, String)>> = list
        .iter()
        .map(|s| {
            let mut pairs: Vec<(String, String)> = s
                .summary()
                .additional_properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            pairs.sort();
            pairs
        })
        .collect();
    let summary = string_map(&summaries)?;
    batch(
        vec![
            Field::new("committed_at", utc_millis(), false),
            Field::new("snapshot_id", DataType::Int64, false),
            Field::new("parent_id", DataType::Int64, true),
            Field::new("operation", DataType::Utf8, true),
            Field::new("manifest_list", DataType::Utf8, false),
            Field::new("summary", summary.data_type().clone(), true),
        ],
        vec![
            Arc::new(
                TimestampMillisecondArray::from_iter_values(list.iter().map(|s| s.timestamp_ms()))
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(
                list.iter().map(|s| s.snapshot_id()),
            )),
            Arc::new(Int64Array::from_iter(
                list.iter().map(|s| s.parent_snapshot_id()),
            )),
            Arc::new(StringArray::from_iter(
                list.iter()
                    .map(|s| Some(s.summary().operation.as_str().to_string())),
            )),
            Arc::new(StringArray::from_iter_values(
                list.iter().map(|s| s.manifest_list()),
            )),
            summary,
        ],
    )
}

/// `$history`: made_current_at, snapshot_id, parent_id, is_current_ancestor.
fn history(table: &Table) -> Result<RecordBatch> {
    let metadata = table.metadata();
    let mut ancestors = HashSet::new();
    let mut next = metadata.current_snapshot_id();
    while let Some(id) = next {
        if !ancestors.insert(id) {
            break;
        }
        next = metadata
            .snapshot_by_id(id)
            .and_then(|s| s.parent_snapshot_id());
    }
    let log = metadata.history();
    batch(
        vec![
            Field::new("made_current_at", utc_millis(), false),
            Field::new("snapshot_id", DataType::Int64, false),
            Field::new("parent_id", DataType::Int64, true),
            Field::new("is_current_ancestor", DataType::Boolean, false),
        ],
        vec![
            Arc::new(
                TimestampMillisecondArray::from_iter_values(log.iter().map(|e| e.timestamp_ms))
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(
                log.iter().map(|e| e.snapshot_id),
            )),
            Arc::new(Int64Array::from_iter(log.iter().map(|e| {
                metadata
                    .snapshot_by_id(e.snapshot_id)
                    .and_then(|s| s.parent_snapshot_id())
            }))),
            Arc::new(BooleanArray::from_iter(
                log.iter().map(|e| Some(ancestors.contains(&e.snapshot_id))),
            )),
        ],
    )
}

/// `$manifests` of the current snapshot: path, length, partition_spec_id, added_snapshot_id,
/// and the added, existing and deleted data-file and row counts (Trino's columns; delete
/// manifests report their delete files under the `*_delete_files_count` columns).
async fn manifests(table: &Table, name: &str) -> Result<RecordBatch> {
    let entries = match table.metadata().current_snapshot() {
        Some(snapshot) => table
            .manifest_list_reader(snapshot)
            .load()
            .await
            .map_err(|e| {
                external(FloeError::from_iceberg(
                    &format!("reading the manifest list of {name}"),
                    e,
                ))
            })?
            .entries()
            .to_vec(),
        None => vec![],
    };
    let data = |m: &iceberg::spec::ManifestFile| m.content == ManifestContentType::Data;
    let count = |keep: bool, n: Option<u32>| keep.then(|| n.unwrap_or(0) as i32);
    let rows = |keep: bool, n: Option<u64>| keep.then(|| n.unwrap_or(0) as i64);
    batch(
        vec![
            Field::new("path", DataType::Utf8, false),
            Field::new("length", DataType::Int64, false),
            Field::new("partition_spec_id", DataType::Int32, false),
            Field::new("added_snapshot_id", DataType::Int64, false),
            Field::new("added_data_files_count", DataType::Int32, true),
            Field::new("added_rows_count", DataType::Int64, true),
            Field::new("existing_data_files_count", DataType::Int32, true),
            Field::new("existing_rows_count", DataType::Int64, true),
            Field::new("deleted_data_files_count", DataType::Int32, true),
            Field::new("deleted_rows_count", DataType::Int64, true),
            Field::new("added_delete_files_count", DataType::Int32, true),
            Field::new("existing_delete_files_count", DataType::Int32, true),
            Field::new("deleted_delete_files_count", DataType::Int32, true),
        ],
        vec![
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|m| m.manifest_path.clone()),
            )),
            Arc::new(Int64Array::from_iter_values(
                entries.iter().map(|m| m.manifest_length),
            )),
            Arc::new(Int32Array::from_iter_values(
                entries.iter().map(|m| m.partition_spec_id),
            )),
            Arc::new(Int64Array::from_iter_values(
                entries.iter().map(|m| m.added_snapshot_id),
            )),
            Arc::new(Int32Array::from_iter(
                entries.iter().map(|m| count(data(m), m.added_files_count)),
            )),
            Arc::new(Int64Array::from_iter(
                entries.iter().map(|m| rows(data(m), m.added_rows_count)),
            )),
            Arc::new(Int32Array::from_iter(
                entries
                    .iter()
                    .map(|m| count(data(m), m.existing_files_count)),
            )),
            Arc::new(Int64Array::from_iter(
                entries.iter().map(|m| rows(data(m), m.existing_rows_count)),
            )),
            Arc::new(Int32Array::from_iter(
                entries
                    .iter()
                    .map(|m| count(data(m), m.deleted_files_count)),
            )),
            Arc::new(Int64Array::from_iter(
                entries.iter().map(|m| rows(data(m), m.deleted_rows_count)),
            )),
            Arc::new(Int32Array::from_iter(
                entries.iter().map(|m| count(!data(m), m.added_files_count)),
            )),
            Arc::new(Int32Array::from_iter(
                entries
                    .iter()
                    .map(|m| count(!data(m), m.existing_files_count)),
            )),
            Arc::new(Int32Array::from_iter(
                entries
                    .iter()
                    .map(|m| count(!data(m), m.deleted_files_count)),
            )),
        ],
    )
}

/// The live entries of the current snapshot's manifests, with their manifest's spec id.
async fn live_files(
    table: &Table,
    name: &str,
) -> Result<Vec<(i32, iceberg::spec::ManifestEntryRef)>> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(vec![]);
    };
    let fail = |what: &str, e: iceberg::Error| {
        external(FloeError::from_iceberg(&format!("{what} of {name}"), e))
    };
    let list = crate::manifests::manifest_list(table, snapshot)
        .await
        .map_err(|e| fail("reading the manifest list", e))?;
    let files: Vec<_> = list.entries().iter().collect();
    let manifests = crate::manifests::manifests(table, &files)
        .await
        .map_err(|e| fail("reading a manifest", e))?;
    let mut out = vec![];
    for (manifest, loaded) in list.entries().iter().zip(&manifests) {
        for entry in loaded.entries() {
            if entry.is_alive() {
                out.push((manifest.partition_spec_id, Arc::clone(entry)));
            }
        }
    }
    Ok(out)
}

/// The partition struct every spec's values fit in: the fields of all the table's specs, by
/// name, in order of first appearance, typed as their transforms produce.
fn partition_type(table: &Table, name: &str) -> Result<Vec<(String, DataType)>> {
    let metadata = table.metadata();
    let mut fields: Vec<(String, DataType)> = vec![];
    let mut specs: Vec<_> = metadata.partition_specs_iter().collect();
    specs.sort_by_key(|s| s.spec_id());
    for spec in specs {
        let schema = metadata.current_schema();
        let Ok(struct_type) = spec.partition_type(schema) else {
            continue;
        };
        for field in struct_type.fields() {
            if fields.iter().any(|(n, _)| n == &field.name) {
                continue;
            }
            let data_type = iceberg::arrow::type_to_arrow_type(&field.field_type).map_err(|e| {
                external(FloeError::Unsupported(format!(
                    "partition field {} of {name}: {e}",
                    field.name
                )))
            })?;
            fields.push((field.name.clone(), data_type));
        }
    }
    Ok(fields)
}

/// One partition value as a scalar of `data_type` (NULL when absent or not representable).
fn partition_scalar(
    value: Option<&iceberg::spec::Literal>,
    data_type: &DataType,
) -> Result<ScalarValue> {
    match value {
        Some(iceberg::spec::Literal::Primitive(p)) => primitive_scalar(Some(p), data_type),
        _ => ScalarValue::try_from(data_type),
    }
}

/// An Iceberg value (a partition value, a column bound) as a scalar of `data_type`, cast
/// where the column's type was promoted since (NULL when absent or not representable).
pub(crate) fn primitive_scalar(
    value: Option<&iceberg::spec::PrimitiveLiteral>,
    data_type: &DataType,
) -> Result<ScalarValue> {
    use iceberg::spec::PrimitiveLiteral as P;
    let null = || ScalarValue::try_from(data_type);
    let Some(p) = value else {
        return null();
    };
    let scalar = match (p, data_type) {
        (P::Boolean(b), _) => ScalarValue::Boolean(Some(*b)),
        (P::Int(i), DataType::Date32) => ScalarValue::Date32(Some(*i)),
        (P::Int(i), _) => ScalarValue::Int32(Some(*i)),
        (P::Long(l), DataType::Timestamp(TimeUnit::Microsecond, tz)) => {
            ScalarValue::TimestampMicrosecond(Some(*l), tz.clone())
        }
        (P::Long(l), DataType::Time64(TimeUnit::Microsecond)) => {
            ScalarValue::Time64Microsecond(Some(*l))
        }
        (P::Long(l), _) => ScalarValue::Int64(Some(*l)),
        (P::Float(f), _) => ScalarValue::Float32(Some(f.0)),
        (P::Double(d), _) => ScalarValue::Float64(Some(d.0)),
        (P::String(text), _) => ScalarValue::Utf8(Some(text.clone())),
        (P::Binary(bytes), _) => ScalarValue::Binary(Some(bytes.clone())),
        (P::Int128(v), DataType::Decimal128(precision, scale)) => {
            ScalarValue::Decimal128(Some(*v), *precision, *scale)
        }
        (P::UInt128(v), _) => ScalarValue::FixedSizeBinary(16, Some(v.to_be_bytes().to_vec())),
        _ => return null(),
    };
    if &scalar.data_type() == data_type {
        Ok(scalar)
    } else {
        scalar.cast_to(data_type)
    }
}

/// The `partition` column: one struct per file, its spec's values under their names.
fn partition_column(
    table: &Table,
    name: &str,
    entries: &[(i32, iceberg::spec::ManifestEntryRef)],
) -> Result<(Field, ArrayRef)> {
    let fields = partition_type(table, name)?;
    let metadata = table.metadata();
    let mut columns: Vec<ArrayRef> = vec![];
    for (field_name, data_type) in &fields {
        let mut values = Vec::with_capacity(entries.len());
        for (spec_id, entry) in entries {
            let position = metadata
                .partition_spec_by_id(*spec_id)
                .and_then(|spec| spec.fields().iter().position(|f| &f.name == field_name));
            let value =
                position.and_then(|i| entry.data_file().partition().iter().nth(i).flatten());
            values.push(partition_scalar(value, data_type)?);
        }
        columns.push(if values.is_empty() {
            arrow::array::new_empty_array(data_type)
        } else {
            ScalarValue::iter_to_array(values)?
        });
    }
    let struct_fields: Vec<Field> = fields
        .iter()
        .map(|(n, t)| Field::new(n, t.clone(), true))
        .collect();
    let array: ArrayRef = if struct_fields.is_empty() {
        Arc::new(arrow::array::StructArray::new_empty_fields(
            entries.len(),
            None,
        ))
    } else {
        Arc::new(arrow::array::StructArray::try_new(
            struct_fields.clone().into(),
            columns,
            None,
        )?)
    };
    Ok((
        Field::new("partition", array.data_type().clone(), false),
        array,
    ))
}

fn id_count_map<'a>(
    maps: impl Iterator<Item = &'a std::collections::HashMap<i32, u64>>,
) -> Result<ArrayRef> {
    let mut builder = MapBuilder::new(None, Int32Builder::new(), Int64Builder::new());
    for map in maps {
        let mut pairs: Vec<(&i32, &u64)> = map.iter().collect();
        pairs.sort();
        for (k, v) in pairs {
            builder.keys().append_value(*k);
            builder.values().append_value(*v as i64);
        }
        builder.append(true)?;
    }
    Ok(Arc::new(builder.finish()))
}

fn id_bound_map<'a>(
    maps: impl Iterator<Item = &'a std::collections::HashMap<i32, iceberg::spec::Datum>>,
) -> Result<ArrayRef> {
    let mut builder = MapBuilder::new(None, Int32Builder::new(), StringBuilder::new());
    for map in maps {
        let mut pairs: Vec<(&i32, &iceberg::spec::Datum)> = map.iter().collect();
        pairs.sort_by_key(|(k, _)| **k);
        for (k, v) in pairs {
            builder.keys().append_value(*k);
            builder.values().append_value(v.to_string());
        }
        builder.append(true)?;
    }
    Ok(Arc::new(builder.finish()))
}

/// `$files` of the current snapshot (data and delete files): content, file_path, file_format,
/// spec_id, partition, record_count, file_size_in_bytes, the column statistics maps (bounds as
/// text), key_metadata, split_offsets, equality_ids, sort_order_id, and for a deletion vector
/// the data file it references and where its blob is.
async fn files(table: &Table, name: &str) -> Result<RecordBatch> {
    let entries = live_files(table, name).await?;
    let (partition_field, partition) = partition_column(table, name, &entries)?;
    let files: Vec<&iceberg::spec::DataFile> = entries.iter().map(|(_, e)| e.data_file()).collect();
    let mut offsets = ListBuilder::new(Int64Builder::new());
    let mut equality = ListBuilder::new(Int32Builder::new());
    for file in &files {
        match file.split_offsets() {
            Some(o) => {
                offsets.values().append_slice(o);
                offsets.append(true);
            }
            None => offsets.append(false),
        }
        match file.equality_ids() {
            Some(ids) => {
                equality.values().append_slice(&ids);
                equality.append(true);
            }
            None => equality.append(false),
        }
    }
    let column_sizes = id_count_map(files.iter().map(|f| f.column_sizes()))?;
    let value_counts = id_count_map(files.iter().map(|f| f.value_counts()))?;
    let null_counts = id_count_map(files.iter().map(|f| f.null_value_counts()))?;
    let nan_counts = id_count_map(files.iter().map(|f| f.nan_value_counts()))?;
    let lower = id_bound_map(files.iter().map(|f| f.lower_bounds()))?;
    let upper = id_bound_map(files.iter().map(|f| f.upper_bounds()))?;
    let offsets: ArrayRef = Arc::new(offsets.finish());
    let equality: ArrayRef = Arc::new(equality.finish());
    batch(
        vec![
            Field::new("content", DataType::Int32, false),
            Field::new("file_path", DataType::Utf8, false),
            Field::new("file_format", DataType::Utf8, false),
            Field::new("spec_id", DataType::Int32, false),
            partition_field,
            Field::new("record_count", DataType::Int64, false),
            Field::new("file_size_in_bytes", DataType::Int64, false),
            Field::new("column_sizes", column_sizes.data_type().clone(), true),
            Field::new("value_counts", value_counts.data_type().clone(), true),
            Field::new("null_value_counts", null_counts.data_type().clone(), true),
            Field::new("nan_value_counts", nan_counts.data_type().clone(), true),
            Field::new("lower_bounds", lower.data_type().clone(), true),
            Field::new("upper_bounds", upper.data_type().clone(), true),
            Field::new("key_metadata", DataType::Binary, true),
            Field::new("split_offsets", offsets.data_type().clone(), true),
            Field::new("equality_ids", equality.data_type().clone(), true),
            Field::new("sort_order_id", DataType::Int32, true),
            Field::new("referenced_data_file", DataType::Utf8, true),
            Field::new("content_offset", DataType::Int64, true),
            Field::new("content_size_in_bytes", DataType::Int64, true),
        ],
        vec![
            Arc::new(Int32Array::from_iter_values(
                files.iter().map(|f| f.content_type() as i32),
            )),
            Arc::new(StringArray::from_iter_values(
                files.iter().map(|f| f.file_path()),
            )),
            Arc::new(StringArray::from_iter_values(
                files
                    .iter()
                    .map(|f| f.file_format().to_string().to_ascii_uppercase()),
            )),
            Arc::new(Int32Array::from_iter_values(
                entries.iter().map(|(s, _)| *s),
            )),
            partition,
            Arc::new(Int64Array::from_iter_values(
                files.iter().map(|f| f.record_count() as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                files.iter().map(|f| f.file_size_in_bytes() as i64),
            )),
            column_sizes,
            value_counts,
            null_counts,
            nan_counts,
            lower,
            upper,
            Arc::new(arrow::array::BinaryArray::from_iter(
                files.iter().map(|f| f.key_metadata()),
            )),
            offsets,
            equality,
            Arc::new(Int32Array::from_iter(
                files.iter().map(|f| f.sort_order_id()),
            )),
            Arc::new(StringArray::from_iter(
                files.iter().map(|f| f.referenced_data_file()),
            )),
            Arc::new(Int64Array::from_iter(
                files.iter().map(|f| f.content_offset()),
            )),
            Arc::new(Int64Array::from_iter(
                files.iter().map(|f| f.content_size_in_bytes()),
            )),
        ],
    )
}

/// `$partitions` of the current snapshot: partition, record_count, file_count, total_size
/// (data files only, as Trino counts them).
async fn partitions(table: &Table, name: &str) -> Result<RecordBatch> {
    let entries: Vec<_> = live_files(table, name)
        .await?
        .into_iter()
        .filter(|(_, e)| e.data_file().content_type() == iceberg::spec::DataContentType::Data)
        .collect();
    let (partition_field, partition) = partition_column(table, name, &entries)?;
    // Group the files by their partition value.
    let mut groups: Vec<(usize, i64, i64, i64)> = vec![];
    let mut index: std::collections::HashMap<Vec<ScalarValue>, usize> = Default::default();
    let structs = partition
        .as_any()
        .downcast_ref::<arrow::array::StructArray>()
        .ok_or_else(|| DataFusionError::Internal("partition column is not a struct".into()))?;
    for (row, (_, entry)) in entries.iter().enumerate() {
        let key: Vec<ScalarValue> = structs
            .columns()
            .iter()
            .map(|c| ScalarValue::try_from_array(c, row))
            .collect::<Result<_>>()?;
        let file = entry.data_file();
        let at = *index.entry(key).or_insert_with(|| {
            groups.push((row, 0, 0, 0));
            groups.len() - 1
        });
        groups[at].1 += file.record_count() as i64;
        groups[at].2 += 1;
        groups[at].3 += file.file_size_in_bytes() as i64;
    }
    let take = arrow::array::UInt32Array::from_iter_values(groups.iter().map(|g| g.0 as u32));
    let partition = arrow::compute::take(&partition, &take, None)?;
    batch(
        vec![
            partition_field,
            Field::new("record_count", DataType::Int64, false),
            Field::new("file_count", DataType::Int64, false),
            Field::new("total_size", DataType::Int64, false),
        ],
        vec![
            partition,
            Arc::new(Int64Array::from_iter_values(groups.iter().map(|g| g.1))),
            Arc::new(Int64Array::from_iter_values(groups.iter().map(|g| g.2))),
            Arc::new(Int64Array::from_iter_values(groups.iter().map(|g| g.3))),
        ],
    )
}

/// `$refs`: name, type, snapshot_id, max_reference_age_in_ms, min_snapshots_to_keep,
/// max_snapshot_age_in_ms.
fn refs(table: &Table, name: &str) -> Result<RecordBatch> {
    // iceberg-rust keeps the refs map private; its serialized form is the spec's.
    let json = serde_json::to_value(table.metadata()).map_err(|e| {
        external(FloeError::Unsupported(format!(
            "metadata of {name} to JSON: {e}"
        )))
    })?;
    let mut refs: Vec<(String, serde_json::Value)> = json
        .get("refs")
        .and_then(|r| r.as_object())
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    refs.sort_by(|a, b| a.0.cmp(&b.0));
    let int = |v: &serde_json::Value, key: &str| v.get(key).and_then(|x| x.as_i64());
    batch(
        vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("snapshot_id", DataType::Int64, false),
            Field::new("max_reference_age_in_ms", DataType::Int64, true),
            Field::new("min_snapshots_to_keep", DataType::Int32, true),
            Field::new("max_snapshot_age_in_ms", DataType::Int64, true),
        ],
        vec![
            Arc::new(StringArray::from_iter_values(refs.iter().map(|(k, _)| k))),
            Arc::new(StringArray::from_iter_values(refs.iter().map(|(_, v)| {
                v.get("type")
                    .and_then(|t| t.as_str())
                    .unwrap_or("branch")
                    .to_ascii_uppercase()
            }))),
            Arc::new(Int64Array::from_iter_values(
                refs.iter()
                    .map(|(_, v)| int(v, "snapshot-id").unwrap_or_default()),
            )),
            Arc::new(Int64Array::from_iter(
                refs.iter().map(|(_, v)| int(v, "max-ref-age-ms")),
            )),
            Arc::new(Int32Array::from_iter(
                refs.iter()
                    .map(|(_, v)| int(v, "min-snapshots-to-keep").map(|n| n as i32)),
            )),
            Arc::new(Int64Array::from_iter(
                refs.iter().map(|(_, v)| int(v, "max-snapshot-age-ms")),
            )),
        ],
    )
}

/// `$properties`: key, value.
fn properties(table: &Table) -> Result<RecordBatch> {
    let mut props: Vec<(&String, &String)> = table.metadata().properties().iter().collect();
    props.sort();
    batch(
        vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, false),
        ],
        vec![
            Arc::new(StringArray::from_iter_values(
                props.iter().map(|(k, _)| k.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                props.iter().map(|(_, v)| v.as_str()),
            )),
        ],
    )
}
