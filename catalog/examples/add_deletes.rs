//! Makes the delete benchmark's tables (benches/deletes): a copy of a table that shares its data
//! files, with every tenth row of each data file (positions 3, 13, 23, …) deleted, either by
//! Iceberg v2 position delete files or by v3 deletion vectors (Puffin `deletion-vector-v1`).
//! pyiceberg writes neither, so this does, from iceberg-rust's public writers.
//!
//! ```text
//! cargo run --example add_deletes -- WAREHOUSE_DIR SOURCE_NS.TABLE TARGET_NS.TABLE position|dv
//! ```
//!
//! WAREHOUSE_DIR is a local warehouse with its SQLite catalog (as `floe standalone` keeps
//! one). The target is dropped first if it exists. Two snapshots: an append of the source's
//! data files, then one adding the deletes (one delete file per data file).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use arrow::record_batch::RecordBatch;
use floe_catalog::CatalogSettings;
use floe_engine::scan::deletes::encode_blob;
use iceberg::puffin::{Blob, CompressionCodec, PuffinWriter};
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, FormatVersion, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, SnapshotReference, SnapshotRetention, Summary,
};
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{TableCreation, TableIdent, TableRequirement, TableUpdate};
use parquet::arrow::ArrowWriter;
use roaring::RoaringTreemap;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Every tenth row of a file, from position 3.
fn deleted_positions(rows: u64) -> RoaringTreemap {
    (3..rows).step_by(10).collect()
}

fn ident(name: &str) -> Result<TableIdent> {
    Ok(TableIdent::from_strs(name.split('.'))?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, source, target, mode] = args.as_slice() else {
        return Err(
            "usage: add_deletes WAREHOUSE_DIR SOURCE_NS.TABLE TARGET_NS.TABLE position|dv".into(),
        );
    };
    let dv = match mode.as_str() {
        "position" => false,
        "dv" => true,
        other => return Err(format!("mode must be position or dv, not {other}").into()),
    };
    let settings = CatalogSettings::local(&std::fs::canonicalize(dir)?);
    let catalog = floe_catalog::connect(&settings).await?;
    let committer = floe_catalog::connect::metadata_committer(&settings)
        .await?
        .ok_or("no metadata committer for this catalog")?;
    let (source, target) = (ident(source)?, ident(target)?);

    let source_table = catalog.load_table(&source).await?;
    let data_files = current_data_files(&source_table).await?;
    let rows: u64 = data_files.iter().map(DataFile::record_count).sum();

    if catalog.table_exists(&target).await? {
        catalog.drop_table(&target).await?;
    }
    if !catalog.namespace_exists(target.namespace()).await? {
        catalog
            .create_namespace(target.namespace(), HashMap::new())
            .await?;
    }
    let metadata = source_table.metadata();
    let creation = TableCreation::builder()
        .name(target.name().to_string())
        .schema(metadata.current_schema().as_ref().clone())
        .partition_spec(
            metadata
                .default_partition_spec()
                .as_ref()
                .clone()
                .into_unbound(),
        )
        .format_version(if dv {
            FormatVersion::V3
        } else {
            FormatVersion::V2
        })
        .properties(HashMap::new())
        .build();
    catalog.create_table(target.namespace(), creation).await?;

    // Snapshot 1: the source's data files, shared.
    let table = catalog.load_table(&target).await?;
    let tx = Transaction::new(&table);
    let tx = tx
        .fast_append()
        .with_check_duplicate(false)
        .add_data_files(data_files.clone())
        .apply(tx)?;
    tx.commit(catalog.as_ref()).await?;

    // Snapshot 2: one delete file per data file.
    let table = catalog.load_table(&target).await?;
    let metadata = table.metadata();
    let file_io = table.file_io();
    let snapshot_id = (uuid::Uuid::new_v4().as_u128() as i64) & i64::MAX;
    let sequence_number = metadata.last_sequence_number() + 1;
    let location = metadata.location().trim_end_matches('/').to_string();
    let spec = metadata.default_partition_spec().as_ref().clone();
    let spec_id = spec.spec_id();
    let mut deletes = Vec::new();
    let mut deleted = 0u64;
    for file in &data_files {
        let positions = deleted_positions(file.record_count());
        deleted += positions.len();
        let id = uuid::Uuid::new_v4();
        let delete = if dv {
            let path = format!("{location}/data/dv-{id}.puffin");
            let blob_bytes = encode_blob(&positions);
            let size = blob_bytes.len() as i64;
            let output = file_io.new_output(&path)?;
            let mut writer = PuffinWriter::new(&output, HashMap::new(), false).await?;
            let blob = Blob::builder()
                .r#type("deletion-vector-v1".to_string())
                .fields(vec![])
                .snapshot_id(snapshot_id)
                .sequence_number(sequence_number)
                .data(blob_bytes)
                .properties(HashMap::from([
                    (
                        "referenced-data-file".to_string(),
                        file.file_path().to_string(),
                    ),
                    ("cardinality".to_string(), positions.len().to_string()),
                ]))
                .build();
            writer.add(blob, CompressionCodec::None).await?;
            writer.close().await?;
            let file_size = file_io.new_input(&path)?.metadata().await?.size;
            DataFileBuilder::default()
                .content(DataContentType::PositionDeletes)
                .file_path(path)
                .file_format(DataFileFormat::Puffin)
                .partition(file.partition().clone())
                .partition_spec_id(spec_id)
                .record_count(positions.len())
                .file_size_in_bytes(file_size)
                .referenced_data_file(Some(file.file_path().to_string()))
                // the blob follows the 4-byte Puffin magic
                .content_offset(Some(4))
                .content_size_in_bytes(Some(size))
                .build()?
        } else {
            let path = format!("{location}/data/deletes-{id}.parquet");
            let file_size =
                write_position_deletes(&table, &path, file.file_path(), &positions).await?;
            DataFileBuilder::default()
                .content(DataContentType::PositionDeletes)
                .file_path(path)
                .file_format(DataFileFormat::Parquet)
                .partition(file.partition().clone())
                .partition_spec_id(spec_id)
                .record_count(positions.len())
                .file_size_in_bytes(file_size)
                .referenced_data_file(Some(file.file_path().to_string()))
                .build()?
        };
        deletes.push(delete);
    }

    let manifest_path = format!(
        "{location}/metadata/{}-deletes-m0.avro",
        uuid::Uuid::new_v4()
    );
    let builder = ManifestWriterBuilder::new(
        file_io.new_output(&manifest_path)?,
        Some(snapshot_id),
        Arc::clone(metadata.current_schema()),
        spec,
    );
    let mut writer = if dv {
        builder.build_v3_deletes()
    } else {
        builder.build_v2_deletes()
    };
    for delete in deletes {
        writer.add_file(delete, sequence_number)?;
    }
    let delete_manifest = writer.write_manifest_file().await?;

    let parent = metadata
        .current_snapshot()
        .ok_or("the copy has no snapshot")?;
    let mut manifests: Vec<_> = table
        .manifest_list_reader(parent)
        .load()
        .await?
        .entries()
        .to_vec();
    manifests.push(delete_manifest);
    let list_path = format!(
        "{location}/metadata/snap-{snapshot_id}-0-{}.avro",
        uuid::Uuid::new_v4()
    );
    let list_writer = file_io.new_output(&list_path)?.writer().await?;
    let mut list = if dv {
        ManifestListWriter::v3(
            list_writer,
            snapshot_id,
            Some(parent.snapshot_id()),
            sequence_number,
            Some(metadata.next_row_id()),
        )
    } else {
        ManifestListWriter::v2(
            list_writer,
            snapshot_id,
            Some(parent.snapshot_id()),
            sequence_number,
        )
    };
    list.add_manifests(manifests.into_iter())?;
    list.close().await?;

    let mut summary = HashMap::new();
    summary.insert("deleted-records".to_string(), deleted.to_string());
    summary.insert(
        "added-delete-files".to_string(),
        data_files.len().to_string(),
    );
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(parent.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64,
        )
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation: Operation::Delete,
            additional_properties: summary,
        })
        .with_schema_id(metadata.current_schema_id());
    let snapshot = if dv {
        snapshot.with_row_range(metadata.next_row_id(), 0).build()
    } else {
        snapshot.build()
    };
    let updates = vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: "main".into(),
            reference: SnapshotReference::new(
                snapshot_id,
                SnapshotRetention::branch(None, None, None),
            ),
        },
    ];
    let requirements = vec![TableRequirement::RefSnapshotIdMatch {
        r#ref: "main".into(),
        snapshot_id: Some(parent.snapshot_id()),
    }];
    if !committer
        .commit(&table, updates, requirements, &target.to_string())
        .await?
    {
        return Err("another writer committed to the copy meanwhile".into());
    }
    println!(
        "{target}: {} data files, {rows} rows, {deleted} deleted by {} ({} left)",
        data_files.len(),
        if dv {
            "deletion vectors"
        } else {
            "position delete files"
        },
        rows - deleted
    );
    Ok(())
}

/// The live data files of the table's current snapshot.
async fn current_data_files(table: &iceberg::table::Table) -> Result<Vec<DataFile>> {
    let snapshot = table
        .metadata()
        .current_snapshot()
        .ok_or("the source table has no snapshot")?;
    let mut files = Vec::new();
    for manifest in table.manifest_list_reader(snapshot).load().await?.entries() {
        if manifest.content != iceberg::spec::ManifestContentType::Data {
            return Err("the source table has delete files".into());
        }
        for entry in manifest.load_manifest(table.file_io()).await?.entries() {
            if entry.is_alive() {
                files.push(entry.data_file().clone());
            }
        }
    }
    Ok(files)
}

/// A position delete file (`file_path`, `pos`, with the spec's field ids) for one data file.
async fn write_position_deletes(
    table: &iceberg::table::Table,
    path: &str,
    data_file: &str,
    positions: &RoaringTreemap,
) -> Result<u64> {
    let field = |name: &str, data_type: DataType, id: i32| {
        Field::new(name, data_type, false).with_metadata(HashMap::from([(
            "PARQUET:field_id".to_string(),
            id.to_string(),
        )]))
    };
    let schema = Arc::new(ArrowSchema::new(vec![
        field("file_path", DataType::Utf8, 2147483546),
        field("pos", DataType::Int64, 2147483545),
    ]));
    let n = positions.len() as usize;
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec![data_file; n])),
            Arc::new(Int64Array::from_iter_values(
                positions.iter().map(|p| p as i64),
            )),
        ],
    )?;
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    let size = buffer.len() as u64;
    let output = table.file_io().new_output(path)?;
    output.write(buffer.into()).await?;
    Ok(size)
}
