//! Writing Iceberg tables: executors write data files, the coordinator commits them.
//!
//! ```text
//!  IcebergCommitExec (coordinator: one snapshot, optimistic concurrency, retried on conflict)
//!    └─ gather of IcebergWriteExec partitions (executors: Parquet files + their statistics)
//!         └─ the statement's input, distributed like any query
//! ```
//!
//! A write task rolls files at the table's target size and keeps one open writer per Iceberg
//! partition its rows fall in. It returns, per file, Iceberg's JSON description of it (path,
//! partition values, record count, size, column sizes, value/null counts, lower/upper bounds).
//! Nothing is visible until the commit: a failed or cancelled statement leaves the table as it
//! was (its files are never referenced).

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use floe_proto::IcebergWriteNode;
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::{schema_to_arrow_schema, RecordBatchPartitionSplitter};
use iceberg::io::FileIO;
use iceberg::spec::{
    deserialize_data_file_from_json, serialize_data_file_to_json, DataFile, DataFileFormat,
    FormatVersion, PartitionSpec, Schema,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::unpartitioned_writer::UnpartitionedWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::{Catalog, TableIdent};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::CatalogError;
use crate::exec::error_chain;
use crate::overwrite::MetadataCommitter;

/// Table property: bytes after which a writer starts a new data file.
pub const TARGET_FILE_SIZE: &str = "write.target-file-size-bytes";
/// Floe's default target file size (128 MiB).
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// A session's write settings, carried in its DataFusion `SessionConfig` as an extension.
#[derive(Debug, Clone, Default)]
pub struct WriteSettings {
    /// Overrides the table's target file size (`SET target_file_size`).
    pub target_file_size: Option<u64>,
}

/// The output of a write task: one row per data file.
fn files_schema() -> SchemaRef {
    Arc::new(ArrowSchema::new(vec![
        Field::new("data_file", DataType::Utf8, false),
        Field::new("record_count", DataType::UInt64, false),
    ]))
}

/// The wire form of a write into `table`, for `write_id`.
pub fn write_node(table: &Table, name: &str, write_id: &str) -> Result<IcebergWriteNode> {
    let metadata = table.metadata();
    let json = |what: &str, r: serde_json::Result<String>| {
        r.map_err(|e| DataFusionError::Internal(format!("{what} of {name} to JSON: {e}")))
    };
    let props = metadata.properties();
    let data_location = props
        .get("write.data.path")
        .or_else(|| props.get("write.folder-storage.path"))
        .cloned()
        .unwrap_or_else(|| format!("{}/data", metadata.location().trim_end_matches('/')));
    let target_file_size = match props.get(TARGET_FILE_SIZE) {
        Some(v) => v.parse().map_err(|_| {
            DataFusionError::Plan(format!(
                "table {name}: property {TARGET_FILE_SIZE} = '{v}' is not a number of bytes"
            ))
        })?,
        None => DEFAULT_TARGET_FILE_SIZE,
    };
    Ok(IcebergWriteNode {
        table: name.to_string(),
        schema_json: json(
            "schema",
            serde_json::to_string(metadata.current_schema().as_ref()),
        )?,
        partition_spec_json: json(
            "partition spec",
            serde_json::to_string(metadata.default_partition_spec().as_ref()),
        )?,
        data_location,
        target_file_size,
        write_id: write_id.to_string(),
        format_version: metadata.format_version() as i32,
    })
}

fn write_error(table: &str, e: iceberg::Error) -> DataFusionError {
    let message = format!("writing table {table}: {}", error_chain(&e));
    DataFusionError::External(Box::new(
        if message.contains(crate::storage::OUTSIDE_ROOTS) {
            CatalogError::PermissionDenied(message)
        } else {
            CatalogError::Unavailable(message)
        },
    ))
}

/// Writes each input partition as data files of one table; outputs the files' descriptions.
#[derive(Debug)]
pub struct IcebergWriteExec {
    node: IcebergWriteNode,
    input: Arc<dyn ExecutionPlan>,
    schema: Arc<Schema>,
    spec: Arc<PartitionSpec>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// What the files are written with: on an executor its own storage settings, confined to
    /// its storage roots (the wire form carries no storage settings or credentials).
    file_io: FileIO,
}

impl IcebergWriteExec {
    /// A writer of `input`'s partitions, writing with `file_io`.
    pub fn try_new(
        node: IcebergWriteNode,
        input: Arc<dyn ExecutionPlan>,
        file_io: FileIO,
    ) -> Result<Self> {
        let schema: Schema = serde_json::from_str(&node.schema_json).map_err(|e| {
            DataFusionError::Plan(format!("IcebergWriteNode.schema_json is invalid: {e}"))
        })?;
        let spec: PartitionSpec = serde_json::from_str(&node.partition_spec_json).map_err(|e| {
            DataFusionError::Plan(format!(
                "IcebergWriteNode.partition_spec_json is invalid: {e}"
            ))
        })?;
        let partitions = input.properties().output_partitioning().partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(files_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            node,
            input,
            schema: Arc::new(schema),
            spec: Arc::new(spec),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
            file_io,
        })
    }

    /// Its wire form.
    pub fn node(&self) -> &IcebergWriteNode {
        &self.node
    }
}

impl DisplayAs for IcebergWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IcebergWriteExec: table={}, partition_spec=[{}], target_file_size={}",
            self.node.table,
            self.spec
                .fields()
                .iter()
                .map(|p| format!("{}={}", p.name, p.transform))
                .collect::<Vec<_>>()
                .join(", "),
            self.node.target_file_size
        )
    }
}

impl ExecutionPlan for IcebergWriteExec {
    fn name(&self) -> &str {
        "IcebergWriteExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::try_new(
                self.node.clone(),
                input,
                self.file_io.clone(),
            )?)),
            Err(_) => Err(DataFusionError::Internal(
                "IcebergWriteExec has one input".into(),
            )),
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let node = self.node.clone();
        let schema = Arc::clone(&self.schema);
        let spec = Arc::clone(&self.spec);
        let file_io = self.file_io.clone();
        let rows_written = MetricBuilder::new(&self.metrics).counter("rows_written", partition);
        let files_written = MetricBuilder::new(&self.metrics).counter("files_written", partition);
        let bytes_written = MetricBuilder::new(&self.metrics).counter("bytes_written", partition);
        let out = files_schema();
        let stream_schema = Arc::clone(&out);
        let stream = futures::stream::once(async move {
            let table = node.table.clone();
            let fail = |e| write_error(&table, e);
            let arrow_schema = Arc::new(schema_to_arrow_schema(&schema).map_err(fail)?);
            let parquet = ParquetWriterBuilder::new(
                WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build(),
                Arc::clone(&schema),
            );
            let rolling = RollingFileWriterBuilder::new(
                parquet,
                node.target_file_size as usize,
                file_io,
                DefaultLocationGenerator::with_data_location(node.data_location.clone()),
                DefaultFileNameGenerator::new(
                    format!("{}-{partition:05}", node.write_id),
                    None,
                    DataFileFormat::Parquet,
                ),
            );
            let builder = DataFileWriterBuilder::new(rolling);
            let mut input = input;
            let files = if spec.is_unpartitioned() {
                let mut writer = UnpartitionedWriter::new(builder);
                while let Some(batch) = input.next().await {
                    let batch = with_schema(batch?, &arrow_schema)?;
                    rows_written.add(batch.num_rows());
                    writer.write(batch).await.map_err(fail)?;
                }
                writer.close().await.map_err(fail)?
            } else {
                let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
                    Arc::clone(&schema),
                    Arc::clone(&spec),
                )
                .map_err(fail)?;
                let mut writer = FanoutWriter::new(builder);
                while let Some(batch) = input.next().await {
                    let batch = with_schema(batch?, &arrow_schema)?;
                    rows_written.add(batch.num_rows());
                    for (key, part) in splitter.split(&batch).map_err(fail)? {
                        writer.write(key, part).await.map_err(fail)?;
                    }
                }
                writer.close().await.map_err(fail)?
            };
            let partition_type = spec.partition_type(&schema).map_err(fail)?;
            let version = format_version(node.format_version)?;
            let mut descriptions = Vec::with_capacity(files.len());
            let mut counts = Vec::with_capacity(files.len());
            for file in files {
                files_written.add(1);
                bytes_written.add(file.file_size_in_bytes() as usize);
                counts.push(file.record_count());
                descriptions.push(
                    serialize_data_file_to_json(file, &partition_type, version).map_err(fail)?,
                );
            }
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(descriptions)),
                Arc::new(UInt64Array::from(counts)),
            ];
            Ok::<_, DataFusionError>(RecordBatch::try_new(out, columns)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            stream_schema,
            stream,
        )))
    }
}

fn format_version(v: i32) -> Result<FormatVersion> {
    match v {
        1 => Ok(FormatVersion::V1),
        2 => Ok(FormatVersion::V2),
        3 => Ok(FormatVersion::V3),
        other => Err(DataFusionError::Plan(format!(
            "unknown Iceberg format version {other}"
        ))),
    }
}

/// The batch under the table's Arrow schema (which carries the Parquet field ids), columns
/// cast where DataFusion's physical type differs from the table's (e.g. a decimal's precision).
fn with_schema(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                arrow::compute::cast_with_options(column, field.data_type(), &options).map_err(
                    |e| {
                        DataFusionError::Execution(format!(
                            "column {} does not fit the table's type {}: {e}",
                            field.name(),
                            field.data_type()
                        ))
                    },
                )
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// How a statement changes a table.
#[derive(Debug, Clone)]
pub enum CommitKind {
    /// Add the new files (INSERT INTO, CTAS).
    Append,
    /// Replace the partitions the new files touch (INSERT OVERWRITE), committed with the SQL
    /// catalog's compare-and-swap.
    Overwrite(Arc<MetadataCommitter>),
}

/// Commits every file its input describes in one snapshot, then outputs the rows written.
#[derive(Debug)]
pub struct IcebergCommitExec {
    input: Arc<dyn ExecutionPlan>,
    catalog: Arc<dyn Catalog>,
    ident: TableIdent,
    name: String,
    kind: CommitKind,
    properties: Arc<PlanProperties>,
}

/// The output of a write statement: the rows it wrote (DataFusion's DML schema).
pub fn count_schema() -> SchemaRef {
    Arc::new(ArrowSchema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

/// How many times a commit that lost a race to another writer is tried again (for appends on
/// top of iceberg's own retries).
pub(crate) const COMMIT_ATTEMPTS: usize = 10;

impl IcebergCommitExec {
    /// A commit of `input`'s files (from [`IcebergWriteExec`] partitions) into a table.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        catalog: Arc<dyn Catalog>,
        ident: TableIdent,
        name: String,
        kind: CommitKind,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            input,
            catalog,
            ident,
            name,
            kind,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for IcebergCommitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            CommitKind::Append => "append",
            CommitKind::Overwrite(_) => "overwrite",
        };
        write!(f, "IcebergCommitExec: table={}, {kind}", self.name)
    }
}

impl ExecutionPlan for IcebergCommitExec {
    fn name(&self) -> &str {
        "IcebergCommitExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<datafusion::physical_plan::Distribution> {
        vec![datafusion::physical_plan::Distribution::SinglePartition]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::new(
                input,
                Arc::clone(&self.catalog),
                self.ident.clone(),
                self.name.clone(),
                self.kind.clone(),
            ))),
            Err(_) => Err(DataFusionError::Internal(
                "IcebergCommitExec has one input".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "IcebergCommitExec has one partition, not {partition}"
            )));
        }
        let input = self.input.execute(0, context)?;
        let catalog = Arc::clone(&self.catalog);
        let ident = self.ident.clone();
        let name = self.name.clone();
        let kind = self.kind.clone();
        let stream = futures::stream::once(async move {
            // Every write task must finish before anything is committed.
            let batches: Vec<RecordBatch> = input.try_collect().await?;
            let mut descriptions = Vec::new();
            let mut rows = 0u64;
            for batch in &batches {
                let files = string_column(batch, 0)?;
                let counts = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .ok_or_else(|| {
                        DataFusionError::Internal("record_count is not UInt64".into())
                    })?;
                for i in 0..batch.num_rows() {
                    descriptions.push(files.value(i).to_string());
                    rows += counts.value(i);
                }
            }
            match kind {
                CommitKind::Append if descriptions.is_empty() => {}
                CommitKind::Append => {
                    commit_append(catalog.as_ref(), &ident, &name, &descriptions).await?
                }
                CommitKind::Overwrite(swap) => {
                    crate::overwrite::commit_overwrite(
                        catalog.as_ref(),
                        &swap,
                        &ident,
                        &name,
                        &descriptions,
                    )
                    .await?
                }
            }
            Ok::<_, DataFusionError>(RecordBatch::try_new(
                count_schema(),
                vec![Arc::new(UInt64Array::from(vec![rows]))],
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            stream,
        )))
    }
}

fn string_column(batch: &RecordBatch, i: usize) -> Result<&StringArray> {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("data_file is not Utf8".into()))
}

/// The data files the write tasks described, read against the table's current schema and
/// default partition spec (the ones they were written with).
pub(crate) fn written_files(
    table: &Table,
    descriptions: &[String],
) -> iceberg::Result<Vec<DataFile>> {
    let metadata = table.metadata();
    let schema = metadata.current_schema();
    let spec = metadata.default_partition_spec();
    let partition_type = spec.partition_type(schema)?;
    descriptions
        .iter()
        .map(|d| deserialize_data_file_from_json(d, spec.spec_id(), &partition_type, schema))
        .collect()
}

/// Appends the described files in one snapshot. A commit that loses a race re-reads the table
/// and tries again (appends never conflict with appends).
async fn commit_append(
    catalog: &dyn Catalog,
    ident: &TableIdent,
    name: &str,
    descriptions: &[String],
) -> Result<()> {
    let fail = |what: &str, e: iceberg::Error| {
        DataFusionError::External(Box::new(CatalogError::Unavailable(format!(
            "{what} {name}: {}",
            error_chain(&e)
        ))))
    };
    let mut last = None;
    for attempt in 0..COMMIT_ATTEMPTS {
        let table = catalog
            .load_table(ident)
            .await
            .map_err(|e| fail("loading", e))?;
        let files = written_files(&table, descriptions)
            .map_err(|e| fail("reading the written files of", e))?;
        let mut summary = HashMap::new();
        summary.insert("engine-name".to_string(), "floe".to_string());
        let tx = Transaction::new(&table);
        let append = tx
            .fast_append()
            .with_check_duplicate(false)
            .set_snapshot_properties(summary)
            .add_data_files(files);
        let tx = append
            .apply(tx)
            .map_err(|e| fail("preparing the commit to", e))?;
        match tx.commit(catalog).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == iceberg::ErrorKind::CatalogCommitConflicts => {
                tracing::info!(
                    table = name,
                    attempt,
                    "commit lost a race, trying again: {e}"
                );
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(20 * (attempt as u64 + 1))).await;
            }
            Err(e) => return Err(fail("committing to", e)),
        }
    }
    Err(DataFusionError::External(Box::new(
        CatalogError::Unavailable(format!(
            "committing to {name}: lost the race to other writers {COMMIT_ATTEMPTS} times: {}",
            last.map(|e| error_chain(&e)).unwrap_or_default()
        )),
    )))
}
