//! The plan node that commits a write statement: it waits for every write task
//! (`floe_engine::write::IcebergWriteExec`, on executors), then commits all their files in one
//! snapshot and outputs the number of rows written.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::TryStreamExt;
use iceberg::{Catalog, TableIdent};

use super::Committer;

/// How a statement changes a table.
#[derive(Debug, Clone)]
pub enum CommitKind {
    /// Add the new files (INSERT INTO, CTAS).
    Append,
    /// Replace the partitions the new files touch (INSERT OVERWRITE), committed through the
    /// catalog's [`Committer`].
    Overwrite(Arc<dyn Committer>),
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
                    super::append::commit_append(catalog.as_ref(), &ident, &name, &descriptions)
                        .await?
                }
                CommitKind::Overwrite(swap) => {
                    super::overwrite::commit_overwrite(
                        catalog.as_ref(),
                        swap.as_ref(),
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
