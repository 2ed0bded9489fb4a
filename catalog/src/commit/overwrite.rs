//! INSERT OVERWRITE: one Iceberg `overwrite` snapshot that replaces the partitions the new data
//! touches (dynamic partition overwrite), or the whole table when it is unpartitioned.
//!
//! Floe builds the snapshot from iceberg's public pieces: the new files go into a new manifest,
//! manifests holding no file of a replaced partition are kept as they are, the others are
//! rewritten without those files; then a manifest list and the snapshot, committed through the
//! catalog's [`Committer`]. A commit that loses the race re-reads the table and tries again
//! unless the winner wrote into a partition this statement replaces, which is a conflict.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use floe_engine::error::FloeError;
use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, ManifestContentType, ManifestEntryRef, ManifestFile,
    ManifestListWriter, ManifestStatus, ManifestWriter, ManifestWriterBuilder, Operation,
    PartitionSpec, SchemaRef, Snapshot, SnapshotReference, SnapshotRetention, Struct, Summary,
    TableMetadata,
};
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent, TableRequirement, TableUpdate};

use super::retry::Retries;
use super::{fail, written_files, Committer};

/// Replaces the partitions the described files touch (every file of an unpartitioned table)
/// with those files, in one snapshot.
pub(super) async fn commit_overwrite(
    catalog: &dyn Catalog,
    committer: &dyn Committer,
    ident: &TableIdent,
    name: &str,
    descriptions: &[String],
) -> Result<()> {
    // The table as the first attempt read it; later attempts (after a lost race) check what was
    // committed since.
    let mut base_snapshot: Option<Option<i64>> = None;
    let mut retries = Retries::new("overwriting", name);
    loop {
        let table = catalog
            .load_table(ident)
            .await
            .map_err(|e| fail(&format!("loading {name}"), e))?;
        let metadata = table.metadata();
        let files = written_files(&table, descriptions)
            .map_err(|e| fail("reading the written files", e))?;
        let whole_table = metadata.default_partition_spec().is_unpartitioned();
        let touched: HashSet<Struct> = files.iter().map(|f| f.partition().clone()).collect();
        // After losing a race: the winner must not have written into what this replaces.
        match base_snapshot {
            Some(base) => check_no_conflict(&table, base, &touched, whole_table, name).await?,
            None => base_snapshot = Some(metadata.current_snapshot_id()),
        }

        let snapshot = overwrite_snapshot(&table, files, &touched, whole_table, name).await?;
        let updates = vec![
            TableUpdate::AddSnapshot {
                snapshot: snapshot.clone(),
            },
            TableUpdate::SetSnapshotRef {
                ref_name: "main".into(),
                reference: SnapshotReference::new(
                    snapshot.snapshot_id(),
                    SnapshotRetention::branch(None, None, None),
                ),
            },
        ];
        let requirements = vec![
            TableRequirement::UuidMatch {
                uuid: metadata.uuid(),
            },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: "main".into(),
                snapshot_id: metadata.current_snapshot_id(),
            },
        ];
        if committer
            .commit(&table, updates, requirements, name)
            .await?
        {
            return Ok(());
        }
        retries.lost("another commit changed the table").await?;
    }
}

/// Fails if a snapshot committed after `base` added or removed files in `touched` partitions.
async fn check_no_conflict(
    table: &Table,
    base: Option<i64>,
    touched: &HashSet<Struct>,
    whole_table: bool,
    name: &str,
) -> Result<()> {
    let metadata = table.metadata();
    let mut snapshot = metadata.current_snapshot().cloned();
    while let Some(s) = snapshot {
        if Some(s.snapshot_id()) == base {
            return Ok(());
        }
        let list = table
            .manifest_list_reader(&s)
            .load()
            .await
            .map_err(|e| fail("reading a manifest list", e))?;
        for manifest in list.entries() {
            if manifest.added_snapshot_id != s.snapshot_id() {
                continue;
            }
            let entries = manifest
                .load_manifest(table.file_io())
                .await
                .map_err(|e| fail("reading a manifest", e))?;
            for entry in entries.entries() {
                let changed = entry.status() != ManifestStatus::Existing
                    && (whole_table || touched.contains(entry.data_file().partition()));
                if changed {
                    return Err(DataFusionError::External(Box::new(FloeError::Conflict(
                        format!(
                            "INSERT OVERWRITE into {name} conflicts with snapshot {}, committed \
                             meanwhile into a partition this statement replaces; nothing was \
                             written",
                            s.snapshot_id()
                        ),
                    ))));
                }
            }
        }
        snapshot = s
            .parent_snapshot_id()
            .and_then(|p| metadata.snapshot_by_id(p).cloned());
    }
    Ok(())
}

/// Files, records and bytes added or removed by a snapshot.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    files: u64,
    records: u64,
    size: u64,
}

impl Counts {
    fn add(&mut self, file: &DataFile) {
        self.files += 1;
        self.records += file.record_count();
        self.size += file.file_size_in_bytes();
    }
}

/// What the manifests of one new snapshot are written with.
struct SnapshotFiles<'a> {
    table: &'a Table,
    schema: SchemaRef,
    spec: PartitionSpec,
    snapshot_id: i64,
    sequence_number: i64,
    metadata_dir: String,
    commit_uuid: uuid::Uuid,
    version: FormatVersion,
    manifests: usize,
}

impl<'a> SnapshotFiles<'a> {
    fn new(table: &'a Table) -> Self {
        let metadata = table.metadata();
        Self {
            table,
            schema: metadata.current_schema().clone(),
            spec: metadata.default_partition_spec().as_ref().clone(),
            snapshot_id: new_snapshot_id(metadata),
            sequence_number: metadata.last_sequence_number() + 1,
            metadata_dir: format!("{}/metadata", metadata.location().trim_end_matches('/')),
            commit_uuid: uuid::Uuid::new_v4(),
            version: metadata.format_version(),
            manifests: 0,
        }
    }

    /// A writer of this snapshot's next manifest, for files of `spec`.
    fn manifest_writer(&mut self, spec: PartitionSpec) -> Result<ManifestWriter> {
        self.manifests += 1;
        let path = format!(
            "{}/{}-m{}.avro",
            self.metadata_dir, self.commit_uuid, self.manifests
        );
        let output = self
            .table
            .file_io()
            .new_output(path)
            .map_err(|e| fail("creating a manifest", e))?;
        let builder = ManifestWriterBuilder::new(
            output,
            Some(self.snapshot_id),
            Arc::clone(&self.schema),
            spec,
        );
        Ok(match self.version {
            FormatVersion::V1 => builder.build_v1(),
            FormatVersion::V2 => builder.build_v2_data(),
            FormatVersion::V3 => builder.build_v3_data(),
        })
    }

    /// The manifest of the new files.
    async fn added(&mut self, files: Vec<DataFile>, added: &mut Counts) -> Result<ManifestFile> {
        let mut writer = self.manifest_writer(self.spec.clone())?;
        for file in files {
            added.add(&file);
            writer
                .add_file(file, self.sequence_number)
                .map_err(|e| fail("adding a file to a manifest", e))?;
        }
        writer
            .write_manifest_file()
            .await
            .map_err(|e| fail("writing a manifest", e))
    }

    /// The current snapshot's manifests without the files of replaced partitions: a manifest
    /// holding none is kept as it is, one holding only such files is dropped, the others are
    /// rewritten with the files that stay.
    async fn kept(
        &mut self,
        replaced: impl Fn(&ManifestFile, &ManifestEntryRef) -> bool,
        deleted: &mut Counts,
        name: &str,
    ) -> Result<Vec<ManifestFile>> {
        let table = self.table;
        let metadata = table.metadata();
        let Some(current) = metadata.current_snapshot() else {
            return Ok(Vec::new());
        };
        let list = table
            .manifest_list_reader(current)
            .load()
            .await
            .map_err(|e| fail("reading the manifest list", e))?;
        let mut manifests = Vec::new();
        for manifest in list.entries() {
            if manifest.content != ManifestContentType::Data {
                return Err(DataFusionError::External(Box::new(FloeError::Unsupported(
                    format!("INSERT OVERWRITE into {name}: the table has delete files"),
                ))));
            }
            let loaded = manifest
                .load_manifest(table.file_io())
                .await
                .map_err(|e| fail("reading a manifest", e))?;
            let live: Vec<_> = loaded
                .entries()
                .iter()
                .filter(|e| e.status() != ManifestStatus::Deleted)
                .collect();
            if !live.iter().any(|e| replaced(manifest, e)) {
                manifests.push(manifest.clone());
                continue;
            }
            let (gone, kept): (Vec<_>, Vec<_>) =
                live.into_iter().partition(|e| replaced(manifest, e));
            for e in gone {
                deleted.add(e.data_file());
            }
            if kept.is_empty() {
                continue;
            }
            let spec = metadata
                .partition_spec_by_id(manifest.partition_spec_id)
                .map(|s| s.as_ref().clone())
                .unwrap_or_else(|| self.spec.clone());
            let mut writer = self.manifest_writer(spec)?;
            for e in kept {
                if e.content_type() != DataContentType::Data {
                    continue;
                }
                writer
                    .add_existing_file(
                        e.data_file().clone(),
                        e.snapshot_id().unwrap_or(manifest.added_snapshot_id),
                        e.sequence_number().unwrap_or(manifest.sequence_number),
                        Some(e.file_sequence_number.unwrap_or(manifest.sequence_number)),
                    )
                    .map_err(|e| fail("rewriting a manifest", e))?;
            }
            manifests.push(
                writer
                    .write_manifest_file()
                    .await
                    .map_err(|e| fail("writing a manifest", e))?,
            );
        }
        Ok(manifests)
    }

    /// Writes the snapshot's manifest list; returns its path.
    async fn manifest_list(&self, manifests: Vec<ManifestFile>) -> Result<String> {
        let metadata = self.table.metadata();
        let path = format!(
            "{}/snap-{}-0-{}.avro",
            self.metadata_dir, self.snapshot_id, self.commit_uuid
        );
        let writer = self
            .table
            .file_io()
            .new_output(&path)
            .map_err(|e| fail("creating the manifest list", e))?
            .writer()
            .await
            .map_err(|e| fail("creating the manifest list", e))?;
        let (id, parent, sequence) = (
            self.snapshot_id,
            metadata.current_snapshot_id(),
            self.sequence_number,
        );
        let mut list = match self.version {
            FormatVersion::V1 => ManifestListWriter::v1(writer, id, parent),
            FormatVersion::V2 => ManifestListWriter::v2(writer, id, parent, sequence),
            FormatVersion::V3 => {
                ManifestListWriter::v3(writer, id, parent, sequence, Some(metadata.next_row_id()))
            }
        };
        list.add_manifests(manifests.into_iter())
            .map_err(|e| fail("writing the manifest list", e))?;
        list.close()
            .await
            .map_err(|e| fail("writing the manifest list", e))?;
        Ok(path)
    }
}

/// The `overwrite` snapshot that replaces the touched partitions with `files` (its manifests and
/// manifest list written).
async fn overwrite_snapshot(
    table: &Table,
    files: Vec<DataFile>,
    touched: &HashSet<Struct>,
    whole_table: bool,
    name: &str,
) -> Result<Snapshot> {
    let metadata = table.metadata();
    if metadata.format_version() == FormatVersion::V3 {
        return Err(DataFusionError::External(Box::new(FloeError::Unsupported(
            format!("INSERT OVERWRITE into {name}: Iceberg format version 3 tables"),
        ))));
    }
    let mut writing = SnapshotFiles::new(table);
    let (mut added, mut deleted) = (Counts::default(), Counts::default());
    let mut manifests = Vec::new();
    if !files.is_empty() {
        manifests.push(writing.added(files, &mut added).await?);
    }
    let default_spec = writing.spec.spec_id();
    let replaced = |manifest: &ManifestFile, e: &ManifestEntryRef| {
        whole_table
            || (manifest.partition_spec_id == default_spec
                && touched.contains(e.data_file().partition()))
    };
    manifests.extend(writing.kept(replaced, &mut deleted, name).await?);
    let manifest_list = writing.manifest_list(manifests).await?;

    let previous = metadata
        .current_snapshot()
        .map(|s| s.summary().additional_properties.clone())
        .unwrap_or_default();
    let mut summary = totals(&previous, added, deleted);
    summary.insert("engine-name".to_string(), "floe".to_string());
    if !whole_table {
        summary.insert("replace-partitions".to_string(), "true".to_string());
    }
    Ok(Snapshot::builder()
        .with_snapshot_id(writing.snapshot_id)
        .with_parent_snapshot_id(metadata.current_snapshot_id())
        .with_sequence_number(writing.sequence_number)
        .with_timestamp_ms(now_ms())
        .with_manifest_list(manifest_list)
        .with_summary(Summary {
            operation: Operation::Overwrite,
            additional_properties: summary,
        })
        .with_schema_id(metadata.current_schema_id())
        .build())
}

/// The snapshot summary's counts: what was added and deleted, and the table's new totals from
/// the `previous` snapshot's summary.
fn totals(
    previous: &HashMap<String, String>,
    added: Counts,
    deleted: Counts,
) -> HashMap<String, String> {
    let total = |key: &str| -> u64 { previous.get(key).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let mut summary = HashMap::new();
    let mut put = |k: &str, v: u64| {
        summary.insert(k.to_string(), v.to_string());
    };
    put("added-data-files", added.files);
    put("added-records", added.records);
    put("added-files-size", added.size);
    put("deleted-data-files", deleted.files);
    put("deleted-records", deleted.records);
    put("removed-files-size", deleted.size);
    put(
        "total-data-files",
        (total("total-data-files") + added.files).saturating_sub(deleted.files),
    );
    put(
        "total-records",
        (total("total-records") + added.records).saturating_sub(deleted.records),
    );
    put(
        "total-files-size",
        (total("total-files-size") + added.size).saturating_sub(deleted.size),
    );
    for key in [
        "total-delete-files",
        "total-position-deletes",
        "total-equality-deletes",
    ] {
        summary.insert(key.to_string(), "0".to_string());
    }
    summary
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A positive snapshot id the table does not use yet.
fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let id = (uuid::Uuid::new_v4().as_u128() as i64) & i64::MAX;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_adds_the_new_files_and_takes_away_the_replaced() {
        let previous: HashMap<String, String> = [
            ("total-data-files", "10"),
            ("total-records", "1000"),
            ("total-files-size", "50000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let added = Counts {
            files: 2,
            records: 300,
            size: 9000,
        };
        let deleted = Counts {
            files: 3,
            records: 400,
            size: 12000,
        };
        let summary = totals(&previous, added, deleted);
        let get = |k: &str| summary.get(k).map(String::as_str);
        assert_eq!(get("added-data-files"), Some("2"));
        assert_eq!(get("deleted-records"), Some("400"));
        assert_eq!(get("total-data-files"), Some("9"));
        assert_eq!(get("total-records"), Some("900"));
        assert_eq!(get("total-files-size"), Some("47000"));
        assert_eq!(get("total-delete-files"), Some("0"));
        // A table without a previous summary (or a damaged one) never goes below zero.
        let fresh = totals(&HashMap::new(), Counts::default(), deleted);
        assert_eq!(fresh.get("total-records").map(String::as_str), Some("0"));
    }
}
