//! Metadata tables, with Trino's names and columns: `"t$snapshots"`, `"t$history"`,
//! `"t$manifests"`, `"t$refs"`, `"t$properties"`. Each is built from the table's metadata
//! (and, for manifests, its current manifest list) when a query names it, and is then an
//! ordinary in-memory table: it joins and filters like any other.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, MapBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use iceberg::spec::ManifestContentType;
use iceberg::table::Table;

use crate::error::CatalogError;

/// What separates a table's name from its metadata table's kind (`orders$snapshots`).
pub const METADATA_TABLE_SEPARATOR: char = '$';

/// The metadata tables Floe has.
pub const KINDS: [&str; 5] = ["snapshots", "history", "manifests", "refs", "properties"];

fn external(e: CatalogError) -> DataFusionError {
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
        "refs" => refs(table, name)?,
        "properties" => properties(table)?,
        other => {
            return Err(external(CatalogError::NotFound(format!(
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
                external(CatalogError::from_iceberg(
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

/// `$refs`: name, type, snapshot_id, max_reference_age_in_ms, min_snapshots_to_keep,
/// max_snapshot_age_in_ms.
fn refs(table: &Table, name: &str) -> Result<RecordBatch> {
    // iceberg-rust keeps the refs map private; its serialized form is the spec's.
    let json = serde_json::to_value(table.metadata()).map_err(|e| {
        external(CatalogError::Unsupported(format!(
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
