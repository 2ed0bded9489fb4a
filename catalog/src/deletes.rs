//! Merge-on-read deletes, planned with their data files on the coordinator (executors apply
//! them as they read each file: `floe_engine::scan::deletes`).
//!
//! * **Position and equality delete files** (v2, Parquet) are planned by iceberg's scan
//!   planner with the spec's sequence-number rules (a position delete applies to data files
//!   with a data sequence number ≤ its own, an equality delete only to strictly lower ones,
//!   each within its partition); a file-scoped position delete file is shipped only with the
//!   data file it references.
//! * **Deletion vectors** (v3: a `deletion-vector-v1` blob in a Puffin file, named by the
//!   manifest entry's `referenced_data_file`, `content_offset` and `content_size_in_bytes`) are
//!   not understood by iceberg 0.10.1: Floe reads the live delete manifests itself and ships
//!   each data file the one vector that references it.

use std::collections::HashMap;

use datafusion::common::{DataFusionError, Result};
use floe_engine::error::FloeError;
use floe_engine::scan::deletes::{DELETE_FILE_PATH_ID, MAX_DV_BYTES};
pub use floe_engine::scan::deletes::{DELETION_VECTOR, EQUALITY_DELETES, POSITION_DELETES};
use floe_proto::DeleteFileRef;
use iceberg::scan::{FileScanTask, FileScanTaskDeleteFile};
use iceberg::spec::{DataContentType, DataFileFormat, ManifestContentType, SnapshotRef};
use iceberg::table::Table;

fn external(e: FloeError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// What Floe plans beyond iceberg's planner: the live deletion vectors of a snapshot, by the
/// data file each references, and the data file each file-scoped position delete file
/// references (iceberg ships a position delete file to every data file of its partition).
#[derive(Debug, Default)]
pub struct DeletePlan {
    vectors: HashMap<String, DeleteFileRef>,
    position_targets: HashMap<String, String>,
}

/// Reads `snapshot`'s live delete manifests into a [`DeletePlan`].
pub async fn plan_deletes(table: &Table, snapshot: &SnapshotRef, name: &str) -> Result<DeletePlan> {
    let fail = |what: &str, e: iceberg::Error| {
        external(FloeError::from_iceberg(
            &format!("{what} of {name} (deletion vectors)"),
            e,
        ))
    };
    let list = crate::manifests::manifest_list(table, snapshot)
        .await
        .map_err(|e| fail("reading the manifest list", e))?;
    let deletes: Vec<_> = list
        .entries()
        .iter()
        .filter(|m| m.content == ManifestContentType::Deletes)
        .collect();
    let manifests = crate::manifests::manifests(table, &deletes)
        .await
        .map_err(|e| fail("reading a delete manifest", e))?;
    let mut vectors = HashMap::new();
    let mut position_targets = HashMap::new();
    for loaded in &manifests {
        for entry in loaded.entries() {
            if !entry.is_alive() {
                continue;
            }
            if entry.file_format() != DataFileFormat::Puffin {
                let file = entry.data_file();
                if file.content_type() == DataContentType::PositionDeletes {
                    // The one data file it deletes from: named by the entry, or its file_path
                    // column's bounds are that one path.
                    let bounds = (
                        file.lower_bounds().get(&DELETE_FILE_PATH_ID),
                        file.upper_bounds().get(&DELETE_FILE_PATH_ID),
                    );
                    let bounded = match bounds {
                        (Some(lower), Some(upper)) if lower == upper => match lower.literal() {
                            iceberg::spec::PrimitiveLiteral::String(path) => Some(path.clone()),
                            _ => None,
                        },
                        _ => None,
                    };
                    if let Some(target) = file.referenced_data_file().or(bounded) {
                        position_targets.insert(file.file_path().to_string(), target);
                    }
                }
                continue;
            }
            let file = entry.data_file();
            let path = file.file_path().to_string();
            let bad = |what: &str| {
                external(FloeError::DataLoss(format!(
                    "table {name}: deletion vector in {path} has no {what} in its manifest entry"
                )))
            };
            let referenced = file
                .referenced_data_file()
                .ok_or_else(|| bad("referenced_data_file"))?;
            let offset = file.content_offset().ok_or_else(|| bad("content_offset"))?;
            let size = file
                .content_size_in_bytes()
                .ok_or_else(|| bad("content_size_in_bytes"))?;
            if offset < 0 || size < 12 || size as u64 > MAX_DV_BYTES {
                return Err(external(FloeError::DataLoss(format!(
                    "table {name}: deletion vector for {referenced} in {path} has offset \
                     {offset} and size {size}"
                ))));
            }
            let dv = DeleteFileRef {
                path,
                file_size_in_bytes: file.file_size_in_bytes(),
                content: DELETION_VECTOR,
                partition_spec_id: 0,
                equality_ids: vec![],
                content_offset: offset as u64,
                content_size_in_bytes: size as u64,
                record_count: file.record_count(),
                single_data_file: true,
            };
            if let Some(earlier) = vectors.insert(referenced.clone(), dv) {
                return Err(external(FloeError::DataLoss(format!(
                    "table {name}: two live deletion vectors for {referenced} ({} and {})",
                    earlier.path, vectors[&referenced].path
                ))));
            }
        }
    }
    Ok(DeletePlan {
        vectors,
        position_targets,
    })
}

/// The delete files of a planned data file, as shipped to executors: its deletion vector if it
/// has one, else the Parquet position and equality delete files iceberg planned for it.
pub fn delete_refs(task: &FileScanTask, plan: &DeletePlan) -> Vec<DeleteFileRef> {
    let puffin = |path: &str| path.ends_with(".puffin");
    let vector = plan.vectors.get(&task.data_file_path);
    // A file-scoped position delete file applies to the one data file it references.
    let elsewhere = |d: &FileScanTaskDeleteFile| {
        d.file_type == DataContentType::PositionDeletes
            && plan
                .position_targets
                .get(&d.file_path)
                .is_some_and(|target| target != &task.data_file_path)
    };
    let mut refs: Vec<DeleteFileRef> = task
        .deletes
        .iter()
        // Puffin entries are deletion vectors, planned above by the file they reference.
        .filter(|d| !puffin(&d.file_path))
        .filter(|d| !(vector.is_some() && d.file_type == DataContentType::PositionDeletes))
        .filter(|d| !elsewhere(d))
        .map(|d| DeleteFileRef {
            path: d.file_path.clone(),
            file_size_in_bytes: d.file_size_in_bytes,
            content: match d.file_type {
                DataContentType::EqualityDeletes => EQUALITY_DELETES,
                _ => POSITION_DELETES,
            },
            partition_spec_id: d.partition_spec_id,
            equality_ids: d.equality_ids.clone().unwrap_or_default(),
            content_offset: 0,
            content_size_in_bytes: 0,
            record_count: 0,
            single_data_file: d.file_type == DataContentType::PositionDeletes
                && plan.position_targets.get(&d.file_path) == Some(&task.data_file_path),
        })
        .collect();
    refs.extend(vector.cloned());
    refs
}
