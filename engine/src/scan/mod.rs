//! `IcebergScanExec`: the plan node that reads a pruned set of Iceberg data files.
//!
//! The coordinator builds it from scan planning (see [`crate::provider`]) and ships it to
//! executors inside a plan fragment as a [`IcebergScanNode`] protobuf message; each output
//! partition is one group of files (or pieces of files by rows). Each file is read with
//! DataFusion's Parquet reader ([`parquet_read`]: columns by field id, the predicate as
//! pruning and a row filter, deletes as a row selection) over Floe's `object_store` FileIO;
//! a scan projecting a nested column is read with iceberg's `ArrowReader`, which maps nested
//! fields by id. Floe applies every delete itself either way.

pub mod apply_deletes;
pub mod deletes;
pub mod equality_deletes;
pub mod hot;
pub mod parquet_read;
pub mod predicate;
mod short_strings;
mod tasks;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::ColumnStatistics;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_expr_common::physical_expr::is_dynamic_physical_expr;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation, PushedDown,
};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use floe_proto::{DeleteFileRef, FileGroup, IcebergScanNode};
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::ArrowReaderBuilder;
use iceberg::expr::{Bind, Predicate};
use iceberg::io::FileIO;
use iceberg::scan::FileScanTask;
use iceberg::spec::{DataFileFormat, Schema};

use self::apply_deletes::{drop_deleted, drop_equal, PositionDeleteFiles};
use self::deletes::DeletionVector;
use self::equality_deletes::EqualityDeletes;
use self::tasks::FileRead;
use crate::error::FloeError;
use crate::ipc::decode_schema;

/// Metric names the scan records, summed by the coordinator for `EXPLAIN ANALYZE`.
pub mod metric {
    /// Data files opened.
    pub const FILES_SCANNED: &str = "files_scanned";
    /// Bytes fetched from object storage (data and delete files).
    pub const BYTES_SCANNED: &str = "bytes_scanned";
    /// Rows produced by the reader.
    pub const ROWS_SCANNED: &str = "rows_scanned";
    /// Wall time spent in the reader.
    pub const SCAN_TIME: &str = "scan_time";
    /// Rows the delete files (position, equality, deletion vectors) removed.
    pub const ROWS_DELETED: &str = "rows_deleted";
    /// Data files answered from the decoded columns lookups keep in memory ([`super::hot`]).
    pub const FILES_FROM_MEMORY: &str = "files_from_memory";
}

/// Reads groups of Iceberg data files; one output partition per group.
#[derive(Debug)]
pub struct IcebergScanExec {
    node: IcebergScanNode,
    iceberg_schema: Arc<Schema>,
    predicate: Option<Predicate>,
    output_schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// Per-column statistics from the manifests (on the coordinator, for the optimizer; not
    /// shipped).
    column_statistics: Arc<Vec<ColumnStatistics>>,
    /// What the files are read with: on an executor its own storage settings, confined to its
    /// storage roots (the wire form carries no storage settings or credentials).
    file_io: FileIO,
    /// Dynamic filters pushed in on an executor (a hash join's build side, a TopK's current
    /// bound): they only let the reader skip row groups and rows early — the nodes that made
    /// them still apply their own conditions exactly. Not shipped.
    dynamic_filters: Vec<Arc<dyn PhysicalExpr>>,
    /// Whether this is one task's scan on an executor ([`Self::with_single_partition`]): only
    /// then are dynamic filters taken, so that no plan whose partitions are not all run in one
    /// place holds a join that waits for every partition's build side.
    task_scan: bool,
}

/// A scan's plan properties: one partition per file group.
fn properties(output_schema: &SchemaRef, node: &IcebergScanNode) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(Arc::clone(output_schema)),
        Partitioning::UnknownPartitioning(node.file_groups.len().max(1)),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

impl IcebergScanExec {
    /// Builds the node from its wire form, validating every field it will use; files are read
    /// with `file_io`.
    pub fn try_new(node: IcebergScanNode, file_io: FileIO) -> Result<Self> {
        let iceberg_schema: Schema = serde_json::from_str(&node.schema_json).map_err(|e| {
            DataFusionError::Plan(format!("IcebergScanNode.schema_json is invalid: {e}"))
        })?;
        let predicate = if node.predicate_json.is_empty() {
            None
        } else {
            Some(serde_json::from_str(&node.predicate_json).map_err(|e| {
                DataFusionError::Plan(format!("IcebergScanNode.predicate_json is invalid: {e}"))
            })?)
        };
        let output_schema = decode_schema(&node.output_schema)?;
        Ok(Self {
            properties: properties(&output_schema, &node),
            node,
            iceberg_schema: Arc::new(iceberg_schema),
            predicate,
            output_schema,
            metrics: ExecutionPlanMetricsSet::new(),
            column_statistics: Arc::default(),
            file_io,
            dynamic_filters: Vec::new(),
            task_scan: false,
        })
    }

    /// The same scan with these per-column statistics (one per output column; none: unknown).
    pub fn with_column_statistics(mut self, columns: Vec<ColumnStatistics>) -> Self {
        if columns.len() == self.output_schema.fields().len() {
            self.column_statistics = Arc::new(columns);
        }
        self
    }

    /// A copy built from `node`, which differs from this scan's only in its files or limit:
    /// the schemas and predicate already parsed are kept (a point query's plan is rebuilt
    /// several times on its way to a task), as are the column statistics and dynamic filters.
    fn rebuilt(&self, node: IcebergScanNode) -> Result<Self> {
        Ok(Self {
            properties: properties(&self.output_schema, &node),
            node,
            iceberg_schema: Arc::clone(&self.iceberg_schema),
            predicate: self.predicate.clone(),
            output_schema: Arc::clone(&self.output_schema),
            metrics: ExecutionPlanMetricsSet::new(),
            column_statistics: Arc::clone(&self.column_statistics),
            file_io: self.file_io.clone(),
            dynamic_filters: self.dynamic_filters.clone(),
            task_scan: self.task_scan,
        })
    }

    /// The wire form of this node.
    pub fn node(&self) -> &IcebergScanNode {
        &self.node
    }

    /// The same scan with no files in any partition (the plan shipped to every task).
    pub fn without_files(&self) -> Result<Self> {
        let mut node = self.node.clone();
        node.file_groups = vec![Default::default(); self.node.file_groups.len()];
        self.rebuilt(node)
    }

    /// The scan of one task alone: `files` as its only partition (an executor's task plan cut
    /// down to the task's own partition).
    pub fn with_single_partition(&self, files: FileGroup) -> Result<Self> {
        let mut node = self.node.clone();
        node.file_groups = vec![files];
        let mut scan = self.rebuilt(node)?;
        scan.task_scan = true;
        Ok(scan)
    }

    /// The same scan reading `files` as partition `partition` (the task an executor runs).
    pub fn with_partition_files(&self, partition: usize, files: FileGroup) -> Result<Self> {
        let mut node = self.node.clone();
        match node.file_groups.get_mut(partition) {
            Some(group) => *group = files,
            None => {
                return Err(DataFusionError::Plan(format!(
                    "task partition {partition} is outside the scan's {} partitions",
                    node.file_groups.len()
                )))
            }
        }
        self.rebuilt(node)
    }
}

impl DisplayAs for IcebergScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.node.statistics.unwrap_or_default();
        let columns: Vec<&str> = self
            .output_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "IcebergScanExec: table={}, snapshot={}, files={}/{}, bytes={}/{}, records={}, tasks={}{}, projection=[{}]{}",
            self.node.table,
            self.node.snapshot_id,
            stats.files_selected,
            stats.files_total,
            stats.bytes_selected,
            stats.bytes_total,
            stats.records_selected,
            self.node.file_groups.len(),
            match self.node.keyed_column.and_then(|c| columns.get(c as usize)) {
                Some(column) => format!(" by {column}"),
                None => String::new(),
            },
            columns.join(", "),
            match self.node.limit {
                0 => String::new(),
                n => format!(", limit={n}"),
            },
        )?;
        let deletes = [
            ("position", stats.position_delete_files),
            ("equality", stats.equality_delete_files),
            ("dv", stats.deletion_vectors),
        ];
        if deletes.iter().any(|(_, n)| *n > 0) {
            let parts: Vec<String> = deletes
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(kind, n)| format!("{kind}:{n}"))
                .collect();
            write!(f, ", deletes=[{}]", parts.join(" "))?;
        }
        if let Some(p) = &self.predicate {
            write!(f, ", predicate={p}")?;
            if self.node.keys_lookup {
                write!(f, " (a lookup by key)")?;
            }
        }
        Ok(())
    }
}

impl ExecutionPlan for IcebergScanExec {
    fn name(&self) -> &str {
        "IcebergScanExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "IcebergScanExec has no children".into(),
            ))
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    /// Takes the dynamic filters offered after optimization to a task's scan on an executor (a
    /// hash join's build side, a TopK's bound) to skip row groups and rows with; answers that
    /// no filter is applied exactly, so every node above keeps its own.
    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        let filters: Vec<Arc<dyn PhysicalExpr>> = child_pushdown_result
            .parent_filters
            .into_iter()
            .map(|f| f.filter)
            .collect();
        let answers = vec![PushedDown::No; filters.len()];
        let dynamic: Vec<Arc<dyn PhysicalExpr>> = match phase {
            FilterPushdownPhase::Post if self.task_scan => filters
                .into_iter()
                .filter(is_dynamic_physical_expr)
                .collect(),
            _ => Vec::new(),
        };
        let result = FilterPushdownPropagation::with_parent_pushdown_result(answers);
        if dynamic.is_empty() {
            return Ok(result);
        }
        let mut scan = self.rebuilt(self.node.clone())?;
        scan.dynamic_filters.extend(dynamic);
        Ok(result.with_updated_node(Arc::new(scan)))
    }

    /// Row counts from Iceberg's manifests. DataFusion uses them to pick join sides and to
    /// broadcast a small build side instead of shuffling. They are exact — so `count(*)` and
    /// `count(column)` are answered from them without reading a file — only when the scan
    /// returns every row of its files: no predicate (the reader filters rows with it), no delete
    /// file, every file's record count known; otherwise an estimate.
    fn partition_statistics(
        &self,
        partition: Option<usize>,
    ) -> Result<datafusion::common::Statistics> {
        use datafusion::common::stats::Precision;
        let mut rows = match partition {
            None => self.node.statistics.unwrap_or_default().records_selected,
            Some(p) => self
                .node
                .file_groups
                .get(p)
                .map(|g| g.files.iter().map(|f| f.record_count).sum())
                .unwrap_or(0),
        };
        if self.node.limit > 0 {
            rows = rows.min(self.node.limit);
        }
        let files = || match partition {
            None => self
                .node
                .file_groups
                .iter()
                .flat_map(|g| &g.files)
                .collect::<Vec<_>>(),
            Some(p) => self
                .node
                .file_groups
                .get(p)
                .map(|g| g.files.iter().collect())
                .unwrap_or_default(),
        };
        let exact = self.predicate.is_none()
            && files()
                .iter()
                .all(|f| f.deletes.is_empty() && f.record_count > 0);
        let mut stats = datafusion::common::Statistics::new_unknown(&self.output_schema);
        stats.num_rows = if exact {
            Precision::Exact(rows as usize)
        } else {
            Precision::Inexact(rows as usize)
        };
        if partition.is_none() && !self.column_statistics.is_empty() {
            stats.column_statistics = self.column_statistics.as_ref().clone();
            if exact {
                for column in &mut stats.column_statistics {
                    if let Precision::Inexact(n) = column.null_count {
                        column.null_count = Precision::Exact(n);
                    }
                }
            }
        }
        Ok(stats)
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn fetch(&self) -> Option<usize> {
        (self.node.limit > 0).then_some(self.node.limit as usize)
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        let mut node = self.node.clone();
        node.limit = limit.unwrap_or(0) as u64;
        self.rebuilt(node)
            .ok()
            .map(|scan| Arc::new(scan) as Arc<dyn ExecutionPlan>)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let tasks = self.file_tasks(partition)?;
        let files = MetricBuilder::new(&self.metrics).counter(metric::FILES_SCANNED, partition);
        let bytes = MetricBuilder::new(&self.metrics).counter(metric::BYTES_SCANNED, partition);
        let from_memory =
            MetricBuilder::new(&self.metrics).counter(metric::FILES_FROM_MEMORY, partition);
        let rows = MetricBuilder::new(&self.metrics).counter(metric::ROWS_SCANNED, partition);
        let time = MetricBuilder::new(&self.metrics).subset_time(metric::SCAN_TIME, partition);
        let schema = Arc::clone(&self.output_schema);
        let file_io = self.file_io.clone();
        let table = self.node.table.clone();
        // A file read in pieces counts once, for its first.
        let n_files = tasks
            .iter()
            .filter(|t| t.rows.as_ref().is_none_or(|r| r.start == 0))
            .count();
        let mut remaining = match self.node.limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let stream_schema = Arc::clone(&schema);
        let dv_io = self.file_io.clone();
        let deleted = MetricBuilder::new(&self.metrics).counter(metric::ROWS_DELETED, partition);
        let delete_files = Arc::new(PositionDeleteFiles::for_files(
            tasks.iter().flat_map(|t| t.positional.iter()),
        ));
        let bytes_read = bytes.clone();
        let limit = self.node.limit;
        let stream = futures::stream::once(async move {
            let runtime = iceberg::Runtime::try_current().map_err(|e| iceberg_error(&table, e))?;
            let reader = ArrowReaderBuilder::new(file_io, runtime)
                .with_batch_size(8192)
                .with_row_group_filtering_enabled(true)
                .with_row_selection_enabled(true)
                .build();
            let scan_metrics: Arc<std::sync::Mutex<Vec<iceberg::arrow::ScanMetrics>>> =
                Arc::default();
            let opened = Arc::clone(&scan_metrics);
            let started = Instant::now();
            // One file at a time, so that an error names the file it came from (a corrupt or
            // missing file is lost data the operator must find).
            let batches = futures::stream::iter(tasks)
                .then(move |read| {
                    let FileRead {
                        task,
                        rows: piece,
                        datafusion,
                        vector,
                        positional,
                        equality,
                        columns,
                    } = read;
                    let delete_files = Arc::clone(&delete_files);
                    let reader = reader.clone();
                    let opened = Arc::clone(&opened);
                    let table = table.clone();
                    let file_io = dv_io.clone();
                    let deleted = deleted.clone();
                    let bytes_read = bytes_read.clone();
                    let from_memory = from_memory.clone();
                    async move {
                        let path = task.data_file_path.clone();
                        let positions = match &vector {
                            Some(dv) => {
                                Some(DeletionVector::load(&file_io, &table, &path, dv).await?)
                            }
                            None if !positional.is_empty() => Some(
                                delete_files
                                    .positions(&file_io, &table, &path, &positional)
                                    .await?,
                            ),
                            None => None,
                        };
                        let equality = EqualityDeletes::load(&file_io, &table, &equality)
                            .await?
                            .map(|deletes| deletes.filter(columns));
                        let rows = match datafusion {
                            Some(read) => {
                                let deleted_rows = positions.as_ref().map(|p| p.positions());
                                if let Some(d) = deleted_rows {
                                    let within = piece.clone().unwrap_or(0..u64::MAX);
                                    deleted.add(d.range_cardinality(within) as usize);
                                }
                                let whole = task.start == 0
                                    && (task.length == 0 || task.length == task.file_size_in_bytes);
                                let rows = self::parquet_read::read_file(
                                    &file_io,
                                    self::parquet_read::FileToRead {
                                        table: &table,
                                        path: &path,
                                        size: task.file_size_in_bytes,
                                        range: (!whole)
                                            .then(|| task.start..task.start + task.length),
                                        schema: read.schema,
                                        field_ids: read.field_ids,
                                        predicate: read.predicate,
                                        row_filter: read.row_filter,
                                        batch_filter: read.batch_filter,
                                        deleted: deleted_rows,
                                        rows: piece,
                                        // Equality deletes drop rows after the reader.
                                        limit: (limit > 0 && equality.is_none())
                                            .then_some(limit as usize),
                                        bytes: bytes_read.clone(),
                                        from_memory: from_memory.clone(),
                                    },
                                )
                                .await?;
                                return Ok::<_, DataFusionError>(match equality {
                                    Some(filter) => drop_equal(rows, filter, deleted).boxed(),
                                    None => rows,
                                });
                            }
                            None => {
                                let one = futures::stream::iter([Ok(task)]).boxed();
                                let result =
                                    reader.read(one).map_err(|e| file_error(&table, &path, e))?;
                                opened
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push(result.metrics().clone());
                                result
                                    .stream()
                                    .map_err(move |e| file_error(&table, &path, e))
                            }
                        };
                        let rows = if positions.is_some() || piece.is_some() {
                            drop_deleted(rows, positions, piece, deleted.clone()).boxed()
                        } else {
                            rows.boxed()
                        };
                        Ok::<_, DataFusionError>(match equality {
                            Some(filter) => drop_equal(rows, filter, deleted).boxed(),
                            None => rows,
                        })
                    }
                })
                .try_flatten()
                .map(move |item| {
                    let batch = item?;
                    rows.add(batch.num_rows());
                    // A string column decoded as views points into whole pages; a batch that
                    // uses a small part of them is compacted, so that what holds it (a sort,
                    // a join's build side) counts and keeps what it uses.
                    crate::views::compact(conform(batch, &stream_schema)?)
                })
                // a pushed-down LIMIT: stop reading once enough rows came out
                .scan((), move |_, item| {
                    if remaining == 0 {
                        return futures::future::ready(None);
                    }
                    let item = item.map(|batch| {
                        let take = batch.num_rows().min(remaining);
                        remaining -= take;
                        batch.slice(0, take)
                    });
                    futures::future::ready(Some(item))
                });
            let finish = FinishMetrics {
                files,
                bytes,
                time,
                n_files,
                scan_metrics,
                started,
            };
            Ok::<_, DataFusionError>(batches.chain(futures::stream::poll_fn(move |_| {
                finish.record();
                std::task::Poll::Ready(None)
            })))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Records the totals of a partition's scan when its stream ends.
struct FinishMetrics {
    files: Count,
    bytes: Count,
    time: Time,
    n_files: usize,
    scan_metrics: Arc<std::sync::Mutex<Vec<iceberg::arrow::ScanMetrics>>>,
    started: Instant,
}

impl FinishMetrics {
    fn record(&self) {
        if self.files.value() == 0 {
            self.files.add(self.n_files);
            let read: u64 = self
                .scan_metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|m| m.bytes_read())
                .sum();
            self.bytes.add(read as usize);
            self.time.add_duration(self.started.elapsed());
        }
    }
}

/// Brings a batch read by iceberg to the exact schema the plan expects (same columns; field
/// metadata and string/binary encodings may differ).
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if schema.fields().is_empty() {
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        return Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            vec![],
            &options,
        )?);
    }
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| match batch.columns().get(i) {
            Some(c) if c.data_type() == field.data_type() => Ok(Arc::clone(c)),
            Some(c) => Ok(cast(c, field.data_type())?),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// An error reading one data file: names the table and the file, and keeps its class (missing
/// object → data loss, unreachable store → unavailable).
fn file_error(table: &str, path: &str, e: iceberg::Error) -> DataFusionError {
    DataFusionError::External(Box::new(FloeError::from_iceberg(
        &format!("reading table {table}, file {path}"),
        e,
    )))
}

/// An iceberg error reading table `table`, with its class kept.
fn iceberg_error(table: &str, e: iceberg::Error) -> DataFusionError {
    DataFusionError::External(Box::new(FloeError::from_iceberg(
        &format!("reading table {table}"),
        e,
    )))
}
