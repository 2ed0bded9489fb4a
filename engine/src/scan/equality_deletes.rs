//! Equality deletes, applied by Floe as the spec says: a data row is deleted when its values
//! of the delete file's `equality_ids` columns equal a delete row's, NULL equal to NULL.
//!
//! iceberg 0.10.1's reader turns each delete row into a filter `k <> v`, which is NULL — so
//! false — for a data row whose `k` is NULL: every such row vanished under any equality delete,
//! and a table with many delete rows got a filter as large. Floe reads the delete files' key
//! columns (by field id) into a hash set of row keys instead, and keeps a data row unless its
//! key is in the set. Which delete files apply to which data file (the sequence-number rule)
//! is still decided at planning time.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{cast, concat};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use datafusion::common::{DataFusionError, Result};
use floe_proto::DeleteFileRef;
use iceberg::io::FileIO;

use crate::error::FloeError;
use crate::scan::deletes::{read_delete_columns, EQUALITY_DELETES};

/// The equality deletes of one data file, grouped by the columns they compare.
#[derive(Debug)]
pub struct EqualityDeletes {
    groups: Vec<Group>,
}

/// The delete rows of the files sharing one list of equality field ids.
#[derive(Debug)]
struct Group {
    field_ids: Vec<i32>,
    /// One array per field id: the delete rows' values, all files concatenated.
    columns: Vec<ArrayRef>,
}

/// The key set of one group, built for the data file's column types.
struct Keys {
    /// Where each field id's column is in the data batches.
    positions: Vec<usize>,
    /// The type each column is compared in (a run-end encoded constant column as its values).
    types: Vec<DataType>,
    converter: RowConverter,
    /// The delete rows' keys in the converter's row format (equal values, equal bytes).
    deleted: HashSet<Box<[u8]>>,
}

/// Matches a data file's batches against its equality deletes.
pub struct EqualityFilter {
    deletes: EqualityDeletes,
    /// The output column of each field id in the data batches.
    columns: BTreeMap<i32, usize>,
    keys: Option<Vec<Keys>>,
}

impl EqualityDeletes {
    /// The field ids a data file must be read with for these deletes to be matched.
    pub fn field_ids(refs: &[DeleteFileRef]) -> Vec<i32> {
        let mut ids: Vec<i32> = refs
            .iter()
            .filter(|d| d.content == EQUALITY_DELETES)
            .flat_map(|d| d.equality_ids.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Reads the key columns of every equality delete file in `refs` (none: `None`).
    pub async fn load(
        file_io: &FileIO,
        table: &str,
        refs: &[DeleteFileRef],
    ) -> Result<Option<Self>> {
        let mut by_ids: BTreeMap<Vec<i32>, Vec<Vec<ArrayRef>>> = BTreeMap::new();
        for d in refs.iter().filter(|d| d.content == EQUALITY_DELETES) {
            if d.equality_ids.is_empty() {
                return Err(corrupt(table, &d.path, "it names no equality columns"));
            }
            let files = by_ids.entry(d.equality_ids.clone()).or_default();
            if let Some(columns) = read_delete_columns(
                file_io,
                table,
                &d.path,
                &d.equality_ids,
                "equality delete file",
            )
            .await?
            {
                files.push(columns);
            }
        }
        let mut groups = Vec::new();
        for (field_ids, files) in by_ids.into_iter().filter(|(_, files)| !files.is_empty()) {
            let columns = (0..field_ids.len())
                .map(|i| {
                    let parts: Vec<&dyn arrow::array::Array> =
                        files.iter().map(|f| f[i].as_ref()).collect();
                    Ok(concat(&parts)?)
                })
                .collect::<Result<Vec<_>>>()?;
            groups.push(Group { field_ids, columns });
        }
        Ok((!groups.is_empty()).then_some(Self { groups }))
    }

    /// A filter for batches whose column `columns[id]` holds field `id`.
    pub fn filter(self, columns: BTreeMap<i32, usize>) -> EqualityFilter {
        EqualityFilter {
            deletes: self,
            columns,
            keys: None,
        }
    }
}

impl EqualityFilter {
    /// Which rows of `batch` survive (true) and how many were deleted.
    pub fn keep(&mut self, batch: &RecordBatch) -> Result<(BooleanArray, usize)> {
        if self.keys.is_none() {
            self.keys = Some(self.build(batch)?);
        }
        let keys = self.keys.as_ref().expect("built above");
        let mut keep = vec![true; batch.num_rows()];
        for group in keys {
            let columns = group
                .positions
                .iter()
                .zip(&group.types)
                .map(|(&p, t)| {
                    let c = batch.column(p);
                    Ok(if c.data_type() == t {
                        Arc::clone(c)
                    } else {
                        cast(c, t)?
                    })
                })
                .collect::<Result<Vec<ArrayRef>>>()?;
            let rows = group.converter.convert_columns(&columns)?;
            for (i, row) in rows.iter().enumerate() {
                if keep[i] && group.deleted.contains(row.as_ref()) {
                    keep[i] = false;
                }
            }
        }
        let deleted = keep.iter().filter(|k| !**k).count();
        Ok((BooleanArray::from(keep), deleted))
    }

    /// The key sets, in the data batches' column types (a delete file written before a type
    /// promotion holds the narrower type).
    fn build(&self, batch: &RecordBatch) -> Result<Vec<Keys>> {
        self.deletes
            .groups
            .iter()
            .map(|group| {
                let positions = group
                    .field_ids
                    .iter()
                    .map(|id| {
                        self.columns.get(id).copied().ok_or_else(|| {
                            DataFusionError::Internal(format!(
                                "equality field {id} was not read with the data file"
                            ))
                        })
                    })
                    .collect::<Result<Vec<usize>>>()?;
                let types: Vec<DataType> = positions
                    .iter()
                    .map(|&p| match batch.column(p).data_type() {
                        DataType::RunEndEncoded(_, values) => values.data_type().clone(),
                        other => other.clone(),
                    })
                    .collect();
                let converter =
                    RowConverter::new(types.iter().cloned().map(SortField::new).collect())?;
                let delete_columns = group
                    .columns
                    .iter()
                    .zip(&types)
                    .map(|(c, t)| Ok(cast(c, t)?))
                    .collect::<Result<Vec<ArrayRef>>>()?;
                let rows = converter.convert_columns(&delete_columns)?;
                let deleted = rows.iter().map(|r| Box::<[u8]>::from(r.as_ref())).collect();
                Ok(Keys {
                    positions,
                    types,
                    converter,
                    deleted,
                })
            })
            .collect()
    }
}

fn corrupt(table: &str, path: &str, why: &str) -> DataFusionError {
    DataFusionError::External(Box::new(FloeError::DataLoss(format!(
        "table {table}: equality delete file {path} is unreadable: {why}"
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};

    #[test]
    fn null_matches_null_and_nothing_else_across_a_type_promotion() {
        // Deletes of (id, name): (2, NULL) and (NULL, "x"); written when id was an int.
        let deletes = EqualityDeletes {
            groups: vec![Group {
                field_ids: vec![1, 2],
                columns: vec![
                    Arc::new(Int32Array::from(vec![Some(2), None])),
                    Arc::new(StringArray::from(vec![None, Some("x")])),
                ],
            }],
        };
        // The data (id now a long) holds its columns as name, id.
        let batch = RecordBatch::try_from_iter([
            (
                "name",
                Arc::new(StringArray::from(vec![
                    None,
                    Some("x"),
                    None,
                    Some("x"),
                    Some("y"),
                ])) as ArrayRef,
            ),
            (
                "id",
                Arc::new(Int64Array::from(vec![Some(2), None, None, Some(2), None])) as ArrayRef,
            ),
        ])
        .expect("batch");
        let mut filter = deletes.filter(BTreeMap::from([(1, 1), (2, 0)]));
        let (keep, deleted) = filter.keep(&batch).expect("filtered");
        assert_eq!(
            keep.iter()
                .map(Option::unwrap_or_default)
                .collect::<Vec<_>>(),
            vec![false, false, true, true, true]
        );
        assert_eq!(deleted, 2);
    }
}
