//! Reading one Iceberg data file with DataFusion's Parquet reader.
//!
//! DataFusion's `ParquetSource` brings what a single-node DataFusion scan has: the predicate as a
//! row filter evaluated while decoding (late materialization, where the caller asks for it:
//! [`FileToRead::row_filter`]), row-group pruning by statistics
//! and bloom filters, page-index pruning, and a row selection handed in from outside. Iceberg
//! needs three things on top, supplied here:
//!
//! * **columns by field id** ([`FieldIdAdapter`]): a column is the file column with the same
//!   Parquet field id, whatever its name there (renamed columns read right, a dropped and re-added
//!   name reads as missing); a column the file lacks reads as nulls; a promoted type (int→long,
//!   float→double, wider decimal, date→timestamp) is cast.
//! * **deletes as a row selection** ([`access_plan`]): the positions a deletion vector or position
//!   delete files remove become a `ParquetAccessPlan`, so the predicate still prunes row groups
//!   and pages and filters rows in a file that has deletes.
//! * **storage through Floe's FileIO** ([`FileIoReader`]): bytes come through the same confined
//!   storage as every other read, with footers cached by path (data files are immutable).

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{ParquetAccessPlan, RowGroupAccess};
use datafusion::datasource::physical_plan::{
    FileScanConfigBuilder, FileSource, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
use datafusion::physical_expr::{split_conjunction, PhysicalExpr};
use datafusion::physical_expr_adapter::{PhysicalExprAdapter, PhysicalExprAdapterFactory};
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use iceberg::io::{FileIO, FileRead};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use roaring::RoaringTreemap;

use super::hot::{self, HotFiles, Lookup};
use crate::error::FloeError;
use crate::file_cache::{file_key, FileCache};

/// How many bytes of a file's end the first footer read fetches (one request for most files).
const FOOTER_PREFETCH: usize = 64 * 1024;

/// Footers kept in memory, in bytes of decoded metadata.
const FOOTER_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// Ranges closer than this are fetched in one request.
const COALESCE_BYTES: u64 = 1024 * 1024;

/// One data file to read.
pub struct FileToRead<'a> {
    /// The table, for error messages.
    pub table: &'a str,
    /// The file's location.
    pub path: &'a str,
    /// Its size in bytes (from the manifest).
    pub size: u64,
    /// The byte range of the file this read covers (a split of a large file), if not all.
    pub range: Option<Range<u64>>,
    /// The columns to produce, in order.
    pub schema: SchemaRef,
    /// The Iceberg field id of each column of `schema`.
    pub field_ids: Vec<i32>,
    /// Rows matching none of this may be skipped (the exact filter runs above the scan).
    pub predicate: Option<Arc<dyn PhysicalExpr>>,
    /// Whether `predicate` filters rows while decoding (late materialization: its columns are
    /// decoded first, the others only for the rows that pass) rather than only pruning row
    /// groups and pages. It pays when few rows pass; otherwise it costs (the predicate's
    /// columns decoded twice, the others row by selected row).
    pub row_filter: bool,
    /// Evaluated on each decoded batch, keeping the rows that pass (a filter over whole batches
    /// where `row_filter` is off; exact, unlike `predicate`'s pruning). Not with `limit`.
    pub batch_filter: Option<Arc<dyn PhysicalExpr>>,
    /// Row positions that are deleted.
    pub deleted: Option<&'a RoaringTreemap>,
    /// The rows of the file to read (a piece of it), if not all.
    pub rows: Option<Range<u64>>,
    /// Stop after this many rows.
    pub limit: Option<usize>,
    /// Counts the bytes fetched.
    pub bytes: Count,
    /// Counts the file if it is answered from memory ([`hot`]).
    pub from_memory: Count,
}

/// The rows of one file, columns as `file.schema`, without deleted positions: from memory if
/// lookups keep the file there ([`super::hot`]), else from storage.
pub async fn read_file(
    file_io: &FileIO,
    file: FileToRead<'_>,
) -> Result<BoxStream<'static, Result<RecordBatch>>> {
    if file.range.is_some() || file.size > hot::MAX_FILE_BYTES {
        return Ok(read_parquet(file_io, file).await?.0);
    }
    let hot = HotFiles::global();
    let key = file_key(file.path, file.size);
    let wanted: Vec<hot::ColumnKey> = file
        .field_ids
        .iter()
        .zip(file.schema.fields())
        .map(|(id, field)| (*id, field.data_type().clone()))
        .collect();
    match hot.lookup(&key, &wanted) {
        Lookup::Kept(rows, columns) => {
            file.from_memory.add(1);
            let batches = hot::answer(&file, rows, columns)?;
            Ok(futures::stream::iter(batches.into_iter().map(Ok)).boxed())
        }
        Lookup::Admit => {
            let whole = FileToRead {
                range: None,
                predicate: None,
                row_filter: false,
                batch_filter: None,
                deleted: None,
                rows: None,
                limit: None,
                schema: Arc::clone(&file.schema),
                field_ids: file.field_ids.clone(),
                bytes: file.bytes.clone(),
                from_memory: file.from_memory.clone(),
                ..file
            };
            let batches: Vec<RecordBatch> =
                read_parquet(file_io, whole).await?.0.try_collect().await?;
            let all = arrow::compute::concat_batches(&file.schema, &batches)?;
            let rows = all.num_rows();
            let columns = all.columns().to_vec();
            hot.keep(
                &key,
                rows,
                wanted.into_iter().zip(columns.iter().cloned()).collect(),
            );
            let batches = hot::answer(&file, rows, columns)?;
            Ok(futures::stream::iter(batches.into_iter().map(Ok)).boxed())
        }
        Lookup::Read => {
            // A lookup (the whole file read with a predicate that keeps few of its rows) is
            // counted once the read ends.
            let counts = file.predicate.is_some() && file.rows.is_none() && file.limit.is_none();
            let (rows, file_rows) = read_parquet(file_io, file).await?;
            if !counts {
                return Ok(rows);
            }
            let kept = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counted = Arc::clone(&kept);
            Ok(rows
                .inspect(move |batch| {
                    let n = batch.as_ref().map_or(u64::MAX / 2, |b| b.num_rows() as u64);
                    counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                })
                .chain(futures::stream::poll_fn(move |_| {
                    let kept = kept.load(std::sync::atomic::Ordering::Relaxed);
                    if hot::is_lookup(kept, file_rows) {
                        HotFiles::global().looked_up(&key);
                    }
                    std::task::Poll::Ready(None)
                }))
                .boxed())
        }
    }
}

/// [`read_file`] from storage; also the number of rows in the file.
async fn read_parquet(
    file_io: &FileIO,
    file: FileToRead<'_>,
) -> Result<(BoxStream<'static, Result<RecordBatch>>, u64)> {
    let doing = format!("reading table {}, file {}", file.table, file.path);
    let input = file_io
        .new_input(file.path)
        .map_err(|e| external(FloeError::from_iceberg(&doing, e)))?;
    let reader: Arc<dyn FileRead> = Arc::from(
        input
            .reader()
            .await
            .map_err(|e| external(FloeError::from_iceberg(&doing, e)))?,
    );
    let metadata = footer(&reader, file.path, file.size)
        .await
        .map_err(|e| data_error(&doing, &e))?;

    let plan = (file.deleted.is_some() || file.rows.is_some())
        .then(|| access_plan(&metadata, file.deleted, file.rows.clone()));
    let mut source = ParquetSource::new(Arc::clone(&file.schema))
        .with_pushdown_filters(file.row_filter)
        // The conjuncts come in the order they should be tested (see `IcebergScanExec::datafusion_read`).
        .with_reorder_filters(false)
        .with_parquet_file_reader_factory(Arc::new(FileIoReaderFactory {
            reader,
            metadata: Arc::clone(&metadata),
            bytes: file.bytes.clone(),
        }));
    if let Some(predicate) = &file.predicate {
        source = source.with_predicate(Arc::clone(predicate));
    }
    let source: Arc<dyn FileSource> = source.with_batch_size(8192);
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
        .with_limit(file.limit)
        .with_expr_adapter(Some(Arc::new(FieldIdAdapterFactory {
            field_ids: file.field_ids.clone(),
        })))
        .build();
    let opener = config.file_source().create_file_opener(
        Arc::new(object_store::memory::InMemory::new()),
        &config,
        0,
    )?;
    let mut partitioned = PartitionedFile::new(file.path.to_string(), file.size);
    if let Some(range) = &file.range {
        partitioned = partitioned.with_range(range.start as i64, range.end as i64);
    }
    if let Some(plan) = plan {
        partitioned = partitioned.with_extensions(Arc::new(plan));
    }
    let rows = opener
        .open(partitioned)?
        .await
        .map_err(|e| data_error(&doing, &e))?;
    let rows = rows.map(move |batch| batch.map_err(|e| data_error(&doing, &e)));
    let file_rows = metadata.file_metadata().num_rows().max(0) as u64;
    let rows = match file.batch_filter.filter(|_| file.limit.is_none()) {
        Some(filter) => rows
            .filter_map(move |batch| {
                futures::future::ready(match batch.and_then(|b| keep_passing(&b, &filter)) {
                    Ok(b) if b.num_rows() == 0 => None,
                    other => Some(other),
                })
            })
            .boxed(),
        None => rows.boxed(),
    };
    Ok((rows, file_rows))
}

/// The rows of `batch` for which `filter` is true. Its conjuncts are tested in order, and the
/// rows the ones so far reject are dropped before the next is tested once they are at least
/// half of them; masks of conjuncts that keep more are and-ed instead (a filter copies every
/// column). DataFusion's `AND` over a whole batch gets there by evaluating its right side on
/// the rows its left keeps and scattering the answers back row by row into a mask the batch's
/// length (`pre_selection_scatter`: 11 % of TPC-H Q06's CPU).
pub(super) fn keep_passing(
    batch: &RecordBatch,
    filter: &Arc<dyn PhysicalExpr>,
) -> Result<RecordBatch> {
    let mut batch = batch.clone();
    // Rows of `batch` the conjuncts tested so far keep, when not all.
    let mut pending: Option<BooleanArray> = None;
    for conjunct in split_conjunction(filter) {
        if let Some(mask) = pending.take_if(|m| m.true_count() * 2 <= m.len()) {
            batch = arrow::compute::filter_record_batch(&batch, &mask)?;
        }
        let mask = conjunct.evaluate(&batch)?.into_array(batch.num_rows())?;
        let mask = mask.as_boolean_opt().ok_or_else(|| {
            DataFusionError::Internal(format!(
                "scan filter {conjunct} is not boolean: {}",
                mask.data_type()
            ))
        })?;
        let mask = match pending.take() {
            Some(before) => arrow::compute::and(&before, mask)?,
            None => mask.clone(),
        };
        let kept = mask.true_count();
        if kept == 0 {
            return Ok(batch.slice(0, 0));
        }
        if kept < mask.len() {
            pending = Some(mask);
        }
    }
    match pending {
        Some(mask) => Ok(arrow::compute::filter_record_batch(&batch, &mask)?),
        None => Ok(batch),
    }
}

/// A read error as lost data naming the file, unless it says storage refused or was unreachable.
fn data_error(doing: &str, e: &dyn std::error::Error) -> DataFusionError {
    let message = format!("{doing}: {}", crate::error::error_chain(e));
    external(FloeError::classify_storage(message.clone()).unwrap_or(FloeError::DataLoss(message)))
}

fn external(e: FloeError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The rows of each row group to read: those of `rows` (all when `None`) that `deleted` leaves.
pub fn access_plan(
    metadata: &ParquetMetaData,
    deleted: Option<&RoaringTreemap>,
    rows: Option<Range<u64>>,
) -> ParquetAccessPlan {
    let none = RoaringTreemap::new();
    let deleted = deleted.unwrap_or(&none);
    let wanted = rows.unwrap_or(0..u64::MAX);
    let mut plan = ParquetAccessPlan::new_all(metadata.num_row_groups());
    let mut positions = deleted.iter().peekable();
    let mut first: u64 = 0;
    for (i, group) in metadata.row_groups().iter().enumerate() {
        let end = first + group.num_rows().max(0) as u64;
        let (lo, hi) = (first.max(wanted.start), end.min(wanted.end));
        if lo >= hi || deleted.range_cardinality(lo..hi) == hi - lo {
            plan.set(i, RowGroupAccess::Skip);
        } else if lo > first || hi < end || deleted.range_cardinality(lo..hi) > 0 {
            let mut selectors = Vec::new();
            if lo > first {
                selectors.push(RowSelector::skip((lo - first) as usize));
            }
            let mut at = lo;
            while let Some(p) = positions.next_if(|p| *p < hi) {
                if p < at {
                    continue;
                }
                if p > at {
                    selectors.push(RowSelector::select((p - at) as usize));
                }
                selectors.push(RowSelector::skip(1));
                at = p + 1;
            }
            if hi > at {
                selectors.push(RowSelector::select((hi - at) as usize));
            }
            if end > hi {
                selectors.push(RowSelector::skip((end - hi) as usize));
            }
            plan.set(i, RowGroupAccess::Selection(RowSelection::from(selectors)));
        }
        while positions.next_if(|p| *p < end).is_some() {}
        first = end;
    }
    plan
}

// ---------------------------------------------------------------- footers

fn footers() -> &'static FileCache<Arc<ParquetMetaData>> {
    static CACHE: OnceLock<FileCache<Arc<ParquetMetaData>>> = OnceLock::new();
    CACHE.get_or_init(|| FileCache::new(FOOTER_CACHE_BYTES))
}

/// The footer of the file at `path` of `size` bytes, with its page index (cached by path and
/// size).
async fn footer(
    reader: &Arc<dyn FileRead>,
    path: &str,
    size: u64,
) -> std::result::Result<Arc<ParquetMetaData>, ParquetError> {
    let key = file_key(path, size);
    if let Some(found) = footers().get(&key) {
        return Ok(found);
    }
    let metadata = Arc::new(
        ParquetMetaDataReader::new()
            .with_prefetch_hint(Some(FOOTER_PREFETCH))
            // The page index too (when the file has one), so page pruning costs no request.
            .with_page_index_policy(PageIndexPolicy::Optional)
            .load_and_finish(Fetch(Arc::clone(reader)), size)
            .await?,
    );
    footers().insert(key, Arc::clone(&metadata), metadata.memory_size());
    Ok(metadata)
}

/// Fetches footer bytes through a FileIO reader.
struct Fetch(Arc<dyn FileRead>);

impl parquet::arrow::async_reader::MetadataFetch for Fetch {
    fn fetch(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let reader = Arc::clone(&self.0);
        async move { reader.read(range).await.map_err(storage_error) }.boxed()
    }
}

fn storage_error(e: iceberg::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

// ---------------------------------------------------------------- bytes

/// Hands DataFusion's Parquet opener the one file it reads, footer already known.
struct FileIoReaderFactory {
    reader: Arc<dyn FileRead>,
    metadata: Arc<ParquetMetaData>,
    bytes: Count,
}

impl std::fmt::Debug for FileIoReaderFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileIoReaderFactory")
            .finish_non_exhaustive()
    }
}

impl ParquetFileReaderFactory for FileIoReaderFactory {
    fn create_reader(
        &self,
        _partition_index: usize,
        _file: PartitionedFile,
        _metadata_size_hint: Option<usize>,
        _metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        Ok(Box::new(FileIoReader {
            reader: Arc::clone(&self.reader),
            metadata: Arc::clone(&self.metadata),
            bytes: self.bytes.clone(),
        }))
    }
}

/// Byte ranges of one file through a FileIO reader; nearby ranges are fetched together.
pub struct FileIoReader {
    reader: Arc<dyn FileRead>,
    metadata: Arc<ParquetMetaData>,
    bytes: Count,
}

impl AsyncFileReader for FileIoReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.bytes.add((range.end - range.start) as usize);
        let reader = Arc::clone(&self.reader);
        async move { reader.read(range).await.map_err(storage_error) }.boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let reader = Arc::clone(&self.reader);
        let bytes = self.bytes.clone();
        async move {
            object_store::coalesce_ranges(
                &ranges,
                |range| {
                    bytes.add((range.end - range.start) as usize);
                    let reader = Arc::clone(&reader);
                    async move { reader.read(range).await.map_err(storage_error) }
                },
                COALESCE_BYTES,
            )
            .await
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        futures::future::ready(Ok(Arc::clone(&self.metadata))).boxed()
    }
}

// ---------------------------------------------------------------- columns by field id

/// Maps the columns of the read schema to file columns by Iceberg field id.
#[derive(Debug)]
struct FieldIdAdapterFactory {
    /// The field id of each column of the read (logical) schema.
    field_ids: Vec<i32>,
}

impl PhysicalExprAdapterFactory for FieldIdAdapterFactory {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let file_ids: Vec<Option<i32>> = physical_file_schema
            .fields()
            .iter()
            .map(|f| {
                f.metadata()
                    .get(PARQUET_FIELD_ID_META_KEY)
                    .and_then(|id| id.parse().ok())
            })
            .collect();
        // A file written without field ids (imported from elsewhere) is matched by name.
        let by_name = file_ids.iter().all(Option::is_none);
        let sources = logical_file_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| {
                if by_name {
                    physical_file_schema.index_of(field.name()).ok()
                } else {
                    let id = self.field_ids.get(i)?;
                    file_ids.iter().position(|f| *f == Some(*id))
                }
            })
            .collect();
        Ok(Arc::new(FieldIdAdapter {
            logical: logical_file_schema,
            physical: physical_file_schema,
            sources,
        }))
    }
}

/// Rewrites expressions over the read schema into expressions over one file's columns.
#[derive(Debug)]
struct FieldIdAdapter {
    logical: SchemaRef,
    physical: SchemaRef,
    /// For each logical column, the file column holding it.
    sources: Vec<Option<usize>>,
}

impl PhysicalExprAdapter for FieldIdAdapter {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
        expr.transform(|e| {
            let Some(column) = e.as_any().downcast_ref::<Column>() else {
                return Ok(Transformed::no(e));
            };
            let index = column.index();
            let wanted = self.logical.field(index).data_type();
            let rewritten: Arc<dyn PhysicalExpr> = match self.sources.get(index).copied().flatten()
            {
                Some(source) => {
                    let found = self.physical.field(source);
                    let read: Arc<dyn PhysicalExpr> = Arc::new(Column::new(found.name(), source));
                    if found.data_type() == wanted {
                        read
                    } else {
                        Arc::new(CastExpr::new(read, wanted.clone(), None))
                    }
                }
                None => Arc::new(Literal::new(ScalarValue::try_from(wanted)?)),
            };
            Ok(Transformed::yes(rewritten))
        })
        .map(|t| t.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Schema as ArrowSchema};
    use std::collections::HashMap;

    #[test]
    fn deleted_positions_become_row_selections_per_row_group() {
        // Row groups of 4, 3 and 2 rows; delete 1 and 3 of the first, all of the second.
        let deleted: RoaringTreemap = [1u64, 3, 4, 5, 6, 100].into_iter().collect();
        let plan = access_plan_for(&[4, 3, 2], &deleted);
        assert!(plan.should_scan(0) && !plan.should_scan(1) && plan.should_scan(2));
        let kept = kept_rows(plan, &[4, 3, 2]);
        // Over the row groups read (0, then 2): rows 0 and 2 of the first, all of the last.
        assert_eq!(kept, vec![0, 2, 4, 5]);

        // Only rows 2..8 (a piece of the file): row 2 of the first group, row 7 of the last.
        let plan = access_plan_for_rows(&[4, 3, 2], &deleted, Some(2..8));
        assert!(plan.should_scan(0) && !plan.should_scan(1) && plan.should_scan(2));
        assert_eq!(kept_rows(plan, &[4, 3, 2]), vec![2, 4]);
        let whole_piece = access_plan_for_rows(&[4, 3, 2], &RoaringTreemap::new(), Some(4..7));
        assert!(!whole_piece.should_scan(0) && whole_piece.should_scan(1));
        assert!(!whole_piece.should_scan(2));
    }

    #[test]
    fn a_conjunction_keeps_the_rows_every_conjunct_keeps_as_datafusion_would() {
        use arrow::array::{Array, Int32Array};
        use datafusion::logical_expr::Operator;
        use datafusion::physical_expr::expressions::{col, lit, BinaryExpr};
        // a: 0..1000 with every 7th NULL; b: a % 10.
        let a = Int32Array::from_iter((0..1000).map(|i| (i % 7 != 3).then_some(i)));
        let b = Int32Array::from_iter_values((0..1000).map(|i| i % 10));
        let schema = Arc::new(ArrowSchema::new(vec![
            arrow::datatypes::Field::new("a", DataType::Int32, true),
            arrow::datatypes::Field::new("b", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(a), Arc::new(b)])
            .expect("batch");
        let test = |c: &str, op: Operator, v: i32| -> Arc<dyn PhysicalExpr> {
            Arc::new(BinaryExpr::new(
                col(c, &schema).expect("column"),
                op,
                lit(v),
            ))
        };
        let and =
            |l, r| -> Arc<dyn PhysicalExpr> { Arc::new(BinaryExpr::new(l, Operator::And, r)) };
        // Conjuncts keeping 90 % (and-ed), then 10 % of those (filtered), all (no copy), none.
        let cases = [
            and(test("a", Operator::GtEq, 100), test("b", Operator::Eq, 4)),
            and(
                and(test("b", Operator::Eq, 4), test("a", Operator::GtEq, 100)),
                test("a", Operator::Lt, 5000),
            ),
            and(test("a", Operator::Lt, 5000), test("b", Operator::NotEq, 4)),
            and(test("b", Operator::Eq, 4), test("a", Operator::Lt, 0)),
            test("a", Operator::Lt, 5000),
        ];
        for filter in cases {
            let expected = {
                let mask = filter
                    .evaluate(&batch)
                    .and_then(|m| m.into_array(1000))
                    .expect("mask");
                arrow::compute::filter_record_batch(&batch, mask.as_boolean()).expect("filtered")
            };
            let kept = keep_passing(&batch, &filter).expect("kept");
            assert_eq!(kept, expected, "{filter}");
            // NULLs of `a` never pass.
            assert_eq!(kept.column(0).null_count(), 0, "{filter}");
        }
        let some = keep_passing(
            &batch,
            &and(test("a", Operator::GtEq, 100), test("b", Operator::Eq, 4)),
        )
        .expect("kept");
        assert_eq!(
            some.num_rows(),
            78,
            "rows 104, 114, … 994 but the NULL ones"
        );
    }

    /// The rows a plan reads, numbered over the row groups it reads.
    fn kept_rows(plan: ParquetAccessPlan, rows: &[i64]) -> Vec<usize> {
        match plan
            .into_overall_row_selection(&groups(rows))
            .expect("plan")
        {
            None => (0..rows.iter().sum::<i64>() as usize).collect(),
            Some(selection) => selection
                .iter()
                .scan(0usize, |at, s| {
                    let start = *at;
                    *at += s.row_count;
                    Some((start, s.row_count, s.skip))
                })
                .filter(|(_, _, skip)| !skip)
                .flat_map(|(start, n, _)| start..start + n)
                .collect(),
        }
    }

    fn groups(rows: &[i64]) -> Vec<parquet::file::metadata::RowGroupMetaData> {
        use parquet::basic::Type as PhysicalType;
        use parquet::schema::types::{SchemaDescriptor, Type};
        let schema = Arc::new(SchemaDescriptor::new(Arc::new(
            Type::group_type_builder("schema")
                .with_fields(vec![Arc::new(
                    Type::primitive_type_builder("a", PhysicalType::INT32)
                        .build()
                        .expect("column"),
                )])
                .build()
                .expect("schema"),
        )));
        rows.iter()
            .map(|n| {
                parquet::file::metadata::RowGroupMetaData::builder(Arc::clone(&schema))
                    .set_num_rows(*n)
                    .set_column_metadata(vec![
                        parquet::file::metadata::ColumnChunkMetaData::builder(schema.column(0))
                            .build()
                            .expect("chunk"),
                    ])
                    .build()
                    .expect("row group")
            })
            .collect()
    }

    fn access_plan_for(rows: &[i64], deleted: &RoaringTreemap) -> ParquetAccessPlan {
        access_plan_for_rows(rows, deleted, None)
    }

    fn access_plan_for_rows(
        rows: &[i64],
        deleted: &RoaringTreemap,
        piece: Option<Range<u64>>,
    ) -> ParquetAccessPlan {
        let groups = groups(rows);
        let schema = groups[0].schema_descr_ptr();
        let file = parquet::file::metadata::FileMetaData::new(
            1,
            rows.iter().sum(),
            None,
            None,
            schema,
            None,
        );
        access_plan(&ParquetMetaData::new(file, groups), Some(deleted), piece)
    }

    #[test]
    fn columns_are_found_by_field_id_and_cast_or_null() {
        use arrow::datatypes::Field;
        let with_id = |name: &str, t: DataType, id: i32| {
            Field::new(name, t, true).with_metadata(HashMap::from([(
                PARQUET_FIELD_ID_META_KEY.to_string(),
                id.to_string(),
            )]))
        };
        // The table renamed `a` (id 1) to `x`, promoted `b` (id 2) to long and added `c` (id 3);
        // the file also holds an old column named `x` with id 9.
        let logical = Arc::new(ArrowSchema::new(vec![
            Field::new("x", DataType::Int32, true),
            Field::new("b", DataType::Int64, true),
            Field::new("c", DataType::Utf8, true),
        ]));
        let physical = Arc::new(ArrowSchema::new(vec![
            with_id("x", DataType::Utf8, 9),
            with_id("b", DataType::Int32, 2),
            with_id("a", DataType::Int32, 1),
        ]));
        let adapter = FieldIdAdapterFactory {
            field_ids: vec![1, 2, 3],
        }
        .create(Arc::clone(&logical), physical)
        .expect("adapter");
        let shown = |i: usize| {
            let name = logical.field(i).name();
            format!(
                "{}",
                adapter
                    .rewrite(Arc::new(Column::new(name, i)))
                    .expect("rewrite")
            )
        };
        assert_eq!(shown(0), "a@2");
        assert_eq!(shown(1), "CAST(b@1 AS Int64)");
        assert_eq!(shown(2), "NULL");
    }
}
