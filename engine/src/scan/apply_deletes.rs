//! Applying deletes to the rows of one data file as they stream: the ordered walk of a
//! deletion vector's positions (and the rows of a piece of a file) for iceberg's reader, the
//! position delete files of a task read once each, and equality deletes matched on their
//! columns. DataFusion's reader takes positions as a row selection instead
//! (`crate::scan::parquet_read::access_plan`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_plan::metrics::Count;
use floe_proto::DeleteFileRef;
use futures::StreamExt;
use iceberg::io::FileIO;

use crate::scan::deletes::{DeletionVector, PositionDeleteFile};
use crate::scan::equality_deletes::EqualityFilter;

/// The rows of one file (read whole, in order) inside `piece` (all when `None`) without those
/// its deletion vector deletes: the vector's positions are walked once, in order, alongside the
/// batches.
pub(crate) fn drop_deleted(
    rows: impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static,
    vector: Option<DeletionVector>,
    piece: Option<std::ops::Range<u64>>,
    deleted: Count,
) -> impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static {
    let wanted = piece.unwrap_or(0..u64::MAX);
    let mut position: u64 = 0;
    let mut positions = vector
        .map(|v| v.into_positions().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .peekable();
    rows.map(move |batch| {
        let batch = batch?;
        let (first, last) = (position, position + batch.num_rows() as u64);
        position = last;
        // The part of the batch inside the piece.
        let start = first.max(wanted.start).min(last);
        let end = last.min(wanted.end).max(start);
        let batch = if start > first || end < last {
            batch.slice((start - first) as usize, (end - start) as usize)
        } else {
            batch
        };
        let mut keep: Option<arrow::array::BooleanBufferBuilder> = None;
        while let Some(p) = positions.next_if(|p| *p < end) {
            if p < start {
                continue;
            }
            let keep = keep.get_or_insert_with(|| {
                let mut all = arrow::array::BooleanBufferBuilder::new(batch.num_rows());
                all.append_n(batch.num_rows(), true);
                all
            });
            keep.set_bit((p - start) as usize, false);
        }
        let Some(mut keep) = keep else {
            return Ok(batch);
        };
        let keep = arrow::array::BooleanArray::new(keep.finish(), None);
        deleted.add(keep.false_count());
        Ok(arrow::compute::filter_record_batch(&batch, &keep)?)
    })
}

/// The position delete files of one task's data files, each read once: a file several data
/// files share (a partition-scoped one) is kept until the last of them has been read.
pub(crate) struct PositionDeleteFiles {
    /// How many data files of the task each delete file still serves, and the file once read.
    uses: std::sync::Mutex<HashMap<String, Uses>>,
}

/// The data files of a task a delete file still serves, and the file once read.
type Uses = (usize, Option<Arc<PositionDeleteFile>>);

impl PositionDeleteFiles {
    /// For the data files of one task, given all their position delete files.
    pub(crate) fn for_files<'a>(positional: impl Iterator<Item = &'a DeleteFileRef>) -> Self {
        let mut uses: HashMap<String, Uses> = HashMap::new();
        for d in positional {
            uses.entry(d.path.clone()).or_default().0 += 1;
        }
        Self {
            uses: std::sync::Mutex::new(uses),
        }
    }

    /// The positions `files` delete from `data_file`.
    pub(crate) async fn positions(
        &self,
        file_io: &FileIO,
        table: &str,
        data_file: &str,
        files: &[DeleteFileRef],
    ) -> Result<DeletionVector> {
        let mut positions = roaring::RoaringTreemap::new();
        for d in files {
            let cached = self.take(&d.path);
            let file = match cached {
                Some(file) => file,
                None => PositionDeleteFile::load(file_io, table, d).await?,
            };
            file.add_positions(data_file, &mut positions).map_err(|e| {
                DataFusionError::Context(format!("table {table}, {}", d.path), Box::new(e))
            })?;
            self.keep(&d.path, file);
        }
        Ok(DeletionVector::from_positions(positions))
    }

    /// The loaded file, if another data file read it; counts this use.
    fn take(&self, path: &str) -> Option<Arc<PositionDeleteFile>> {
        let mut uses = self.uses.lock().unwrap_or_else(|p| p.into_inner());
        let entry = uses.get_mut(path)?;
        entry.0 = entry.0.saturating_sub(1);
        entry.1.clone()
    }

    /// Keeps `file` for the data files still to come, or forgets it after the last.
    fn keep(&self, path: &str, file: Arc<PositionDeleteFile>) {
        let mut uses = self.uses.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = uses.get_mut(path) {
            entry.1 = (entry.0 > 0).then_some(file);
        }
    }
}

/// The rows of one file without those its equality deletes match.
pub(crate) fn drop_equal(
    rows: impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static,
    mut filter: EqualityFilter,
    deleted: Count,
) -> impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static {
    rows.map(move |batch| {
        let batch = batch?;
        let (keep, removed) = filter.keep(&batch)?;
        if removed == 0 {
            return Ok(batch);
        }
        deleted.add(removed);
        Ok(arrow::compute::filter_record_batch(&batch, &keep)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};
    use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder};
    use futures::TryStreamExt;

    use crate::scan::metric;

    /// Runs `drop_deleted` over rows 0..12 in batches of 3, 4 and 5: the rows kept, and how
    /// many the metric says were deleted.
    async fn kept_of(positions: &[u64], piece: Option<std::ops::Range<u64>>) -> (Vec<i64>, usize) {
        let batch = |from: i64, n: i64| {
            RecordBatch::try_from_iter([(
                "row",
                Arc::new(Int64Array::from_iter_values(from..from + n)) as ArrayRef,
            )])
            .expect("batch")
        };
        let rows = futures::stream::iter([batch(0, 3), batch(3, 4), batch(7, 5)].map(Ok));
        let metrics = ExecutionPlanMetricsSet::new();
        let deleted = MetricBuilder::new(&metrics).counter(metric::ROWS_DELETED, 0);
        let vector = DeletionVector::from_positions(positions.iter().copied().collect());
        let out: Vec<RecordBatch> = drop_deleted(rows, Some(vector), piece, deleted.clone())
            .try_collect()
            .await
            .expect("read");
        let kept = out
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("int64")
                    .values()
                    .to_vec()
            })
            .collect();
        (kept, deleted.value())
    }

    #[tokio::test]
    async fn deleted_positions_are_dropped_across_batch_boundaries() {
        // 100 is past the file's end (the reader never reaches it).
        let (kept, deleted) = kept_of(&[0, 2, 3, 6, 11, 100], None).await;
        assert_eq!(kept, vec![1, 4, 5, 7, 8, 9, 10]);
        assert_eq!(deleted, 5);
    }

    #[tokio::test]
    async fn a_piece_keeps_only_its_rows_and_drops_its_deleted_ones() {
        // Rows 2..10 without 4 and 9; position 1 and 10 lie outside the piece.
        let (kept, deleted) = kept_of(&[1, 4, 9, 10], Some(2..10)).await;
        assert_eq!(kept, vec![2, 3, 5, 6, 7, 8]);
        assert_eq!(deleted, 2);
    }
}
