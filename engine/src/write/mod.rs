//! Writing Iceberg data files: the write tasks that run on executors.
//!
//! A write task rolls files at the table's target size and keeps one open writer per Iceberg
//! partition its rows fall in (`split.rs` cuts each batch by partition). Into a partitioned
//! table its input arrives shuffled by partition value (`crate::partition_key`), so each
//! partition has one writer in the whole write. It returns, per file, Iceberg's JSON
//! description of it (path, partition values, record count, size, column sizes, value/null
//! counts, lower/upper bounds); the coordinator commits them all in one snapshot
//! (`floe_catalog::commit`). Nothing is visible until that commit.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{Distribution, EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use floe_proto::IcebergWriteNode;
use futures::StreamExt;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::io::FileIO;
use iceberg::spec::{
    serialize_data_file_to_json, DataFileFormat, FormatVersion, PartitionSpec, Schema, Transform,
};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::unpartitioned_writer::UnpartitionedWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::error_chain;
use crate::error::FloeError;
use crate::partition_key::clustering_keys;

mod split;
use split::PartitionSplitter;

/// Table property: bytes after which a writer starts a new data file.
pub const TARGET_FILE_SIZE: &str = "write.target-file-size-bytes";
/// Floe's default target file size (128 MiB).
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// The most bytes of dictionary a column chunk builds before the writer falls back to plain
/// encoding (the Parquet writer's default is 1 MiB). A column of few distinct values (flags,
/// modes, dates within a partition, small integers) fits in a few KiB either way; a column of
/// many (keys, prices, free text) no longer interns its first 1 MiB of values, which cost
/// about 30 % of a CTAS's CPU, and written plain and zstd-compressed it is smaller than an
/// oversized dictionary plus its indices: CTAS of TPC-H SF1 lineitem by month took 2.5 s for
/// 149 MB instead of 3.6 s for 179 MB.
const DICTIONARY_PAGE_BYTES: usize = 64 * 1024;

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
            FloeError::PermissionDenied(message)
        } else {
            FloeError::Unavailable(message)
        },
    ))
}

/// Writes each input partition as data files of one table; outputs the files' descriptions.
#[derive(Debug)]
pub struct IcebergWriteExec {
    node: IcebergWriteNode,
    input: Arc<dyn ExecutionPlan>,
    schema: Arc<Schema>,
    /// The table's schema as Arrow (what every batch is written as).
    arrow_schema: SchemaRef,
    spec: Arc<PartitionSpec>,
    /// The input's rows hashed by partition value (see [`crate::partition_key`]); `None` for
    /// an unpartitioned table.
    clustering: Option<Vec<Arc<dyn PhysicalExpr>>>,
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
        // Table metadata written elsewhere may carry what Floe's DDL refuses; iceberg's
        // bucket and truncate functions divide by their argument.
        if let Some(zero) = spec
            .fields()
            .iter()
            .find(|f| matches!(f.transform, Transform::Bucket(0) | Transform::Truncate(0)))
        {
            return Err(DataFusionError::Plan(format!(
                "table {}: partition field {} has transform {}, which cannot be computed \
                 (a bucket count or truncate width must be at least 1)",
                node.table, zero.name, zero.transform
            )));
        }
        let partitions = input.properties().output_partitioning().partition_count();
        let arrow_schema = Arc::new(
            schema_to_arrow_schema(&schema)
                .map_err(|e| DataFusionError::Plan(format!("{}: {e}", node.table)))?,
        );
        let clustering = clustering_keys(&spec, &schema, &input.schema(), &arrow_schema);
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
            arrow_schema,
            spec: Arc::new(spec),
            clustering,
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
        )?;
        if let Some(keys) = &self.clustering {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            write!(f, ", clustered_by=[{}]", keys.join(", "))?;
        }
        Ok(())
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

    /// Only when the rows are to be clustered: DataFusion adds the hash shuffle
    /// `required_input_distribution` asks for only where it counts the input as worth
    /// spreading (it judges that before splitting the scan into its tasks).
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![self.clustering.is_some()]
    }

    /// A partitioned table's rows arrive hash-partitioned by their partition value, so each
    /// partition is written by one task, into as few files as its size needs, rather than by
    /// every task that read some of its rows (tasks × partitions small files). The planner
    /// adds the shuffle; the stage cutter runs it between the readers and the writers.
    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![match &self.clustering {
            Some(keys) => Distribution::HashPartitioned(keys.clone()),
            None => Distribution::UnspecifiedDistribution,
        }]
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let node = self.node.clone();
        let schema = Arc::clone(&self.schema);
        let arrow_schema = Arc::clone(&self.arrow_schema);
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
            let parquet = ParquetWriterBuilder::new(
                WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
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
                let splitter = PartitionSplitter::try_new(Arc::clone(&schema), Arc::clone(&spec))
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};
    use datafusion::physical_plan::empty::EmptyExec;
    use iceberg::spec::{NestedField, PrimitiveType, Type};

    fn node(spec: &PartitionSpec, schema: &Schema) -> IcebergWriteNode {
        IcebergWriteNode {
            table: "s.t".into(),
            schema_json: serde_json::to_string(schema).expect("json"),
            partition_spec_json: serde_json::to_string(spec).expect("json"),
            data_location: "file:///w/data".into(),
            target_file_size: 1 << 20,
            write_id: "w1".into(),
            format_version: 2,
        }
    }

    /// A partitioned table asks for its rows hashed by partition value (the planner then adds
    /// the shuffle); an unpartitioned one takes them as they come.
    #[test]
    fn a_partitioned_write_asks_for_rows_clustered_by_partition() {
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::optional(2, "day", Type::Primitive(PrimitiveType::Date)).into(),
            ])
            .build()
            .expect("schema");
        let input: Arc<dyn ExecutionPlan> =
            Arc::new(EmptyExec::new(Arc::new(ArrowSchema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("day", DataType::Date32, true),
            ]))));
        let io = iceberg::io::FileIOBuilder::new(Arc::new(
            crate::storage::ObjectStoreStorageFactory::default(),
        ))
        .build();
        let by_month = PartitionSpec::builder(schema.clone())
            .add_partition_field("day", "day_month", Transform::Month)
            .expect("field")
            .build()
            .expect("spec");
        let write =
            IcebergWriteExec::try_new(node(&by_month, &schema), Arc::clone(&input), io.clone())
                .expect("write");
        match write.required_input_distribution().as_slice() {
            [Distribution::HashPartitioned(keys)] => {
                assert_eq!(keys.len(), 1);
                assert_eq!(keys[0].to_string(), "month(day@1)");
            }
            other => panic!("expected a hash requirement, got {other:?}"),
        }
        // The planner adds the shuffle above a many-task input.
        let rows = RecordBatch::try_new(
            input.schema(),
            vec![
                Arc::new(arrow::array::Int64Array::from_iter_values(0..5000)),
                Arc::new(arrow::array::Date32Array::from_iter_values(0..5000)),
            ],
        )
        .expect("batch");
        let spread = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
            &[vec![rows.clone()], vec![rows.clone()], vec![rows]],
            input.schema(),
            None,
        )
        .expect("source");
        let plan: Arc<dyn ExecutionPlan> = Arc::new(
            IcebergWriteExec::try_new(node(&by_month, &schema), spread, io.clone()).expect("write"),
        );
        let mut config = datafusion::config::ConfigOptions::new();
        config.execution.target_partitions = 4;
        let optimized = datafusion::physical_optimizer::PhysicalOptimizerRule::optimize(
            &datafusion::physical_optimizer::enforce_distribution::EnforceDistribution::new(),
            plan,
            &config,
        )
        .expect("optimizes");
        let text = datafusion::physical_plan::displayable(optimized.as_ref())
            .indent(true)
            .to_string();
        assert!(
            text.contains("RepartitionExec: partitioning=Hash([month(day@1)], 4)"),
            "{text}"
        );
        let flat =
            IcebergWriteExec::try_new(node(&PartitionSpec::unpartition_spec(), &schema), input, io)
                .expect("write");
        assert!(matches!(
            flat.required_input_distribution().as_slice(),
            [Distribution::UnspecifiedDistribution]
        ));
    }

    /// Metadata from another writer with a zero bucket count or truncate width (Floe's DDL
    /// refuses them) is refused by name before any row is split, not a division by zero.
    #[test]
    fn a_zero_width_transform_is_refused_by_name() {
        let schema = Schema::builder()
            .with_fields(vec![NestedField::required(
                1,
                "id",
                Type::Primitive(PrimitiveType::Long),
            )
            .into()])
            .build()
            .expect("schema");
        let input: Arc<dyn ExecutionPlan> =
            Arc::new(EmptyExec::new(Arc::new(ArrowSchema::new(vec![
                Field::new("id", DataType::Int64, false),
            ]))));
        for transform in ["truncate[0]", "bucket[0]"] {
            let mut write = node(&PartitionSpec::unpartition_spec(), &schema);
            write.partition_spec_json = format!(
                r#"{{"spec-id":0,"fields":[{{"source-id":1,"field-id":1000,"name":"id_part","transform":"{transform}"}}]}}"#
            );
            let io = iceberg::io::FileIOBuilder::new(Arc::new(
                crate::storage::ObjectStoreStorageFactory::default(),
            ))
            .build();
            let err =
                IcebergWriteExec::try_new(write, Arc::clone(&input), io).expect_err(transform);
            let text = err.to_string();
            assert!(
                text.contains("s.t") && text.contains("id_part") && text.contains(transform),
                "{text}"
            );
        }
    }
}
