//! The join's side: its build side passed through, its keys collected and published.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use floe_proto::auth::Tag;
use floe_proto::RuntimeFilterSourceNode;
use futures::StreamExt;
use tracing::warn;

use super::wire::publish;
use super::{filter, key_names, Published, MAX_DENSE_KEYS, MAX_KEYS};

/// Where a source's keys go, set when a task binds it.
#[derive(Debug, Clone)]
pub(super) struct SourceBinding {
    pub(super) query_id: String,
    /// The consumer task (the join's partition) this is.
    pub(super) partition: u32,
    /// The executors running producer tasks of the target stages.
    pub(super) endpoints: Vec<String>,
    pub(super) shuffle_key: Tag,
}

/// Passes a join's build side through (a partitioned join's part of it, or a broadcast join's
/// whole), collecting its key columns, and publishes them (or "too many") to the executors of
/// the probe side's producers. Unbound (on the coordinator) it passes its input through.
#[derive(Debug)]
pub struct RuntimeFilterSourceExec {
    input: Arc<dyn ExecutionPlan>,
    node: RuntimeFilterSourceNode,
    binding: Option<SourceBinding>,
}

impl RuntimeFilterSourceExec {
    /// A source of filter `node.filter_id` over the build side `input`.
    pub fn new(input: Arc<dyn ExecutionPlan>, node: RuntimeFilterSourceNode) -> Self {
        Self {
            input,
            node,
            binding: None,
        }
    }

    /// Its wire form.
    pub fn node(&self) -> &RuntimeFilterSourceNode {
        &self.node
    }

    /// The same source with the stages its keys go to.
    pub fn with_targets(&self, targets: Vec<u32>) -> Self {
        let mut node = self.node.clone();
        node.targets = targets;
        Self::new(Arc::clone(&self.input), node)
    }

    /// The same source in consumer task `partition` of query `query_id`, publishing to the
    /// executors at `endpoints`.
    pub fn bound(
        &self,
        query_id: &str,
        partition: u32,
        mut endpoints: Vec<String>,
        shuffle_key: Tag,
    ) -> Self {
        endpoints.sort();
        endpoints.dedup();
        let mut source = Self::new(Arc::clone(&self.input), self.node.clone());
        source.binding = Some(SourceBinding {
            query_id: query_id.to_string(),
            partition,
            endpoints,
            shuffle_key,
        });
        source
    }
}

impl DisplayAs for RuntimeFilterSourceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = key_names(&self.input.schema(), &self.node.columns);
        let targets: Vec<String> = self.node.targets.iter().map(u32::to_string).collect();
        write!(
            f,
            "RuntimeFilterSourceExec: filter={:08x}, keys=[{}], to stage(s) [{}]",
            self.node.filter_id as u32,
            keys.join(", "),
            targets.join(", ")
        )
    }
}

impl ExecutionPlan for RuntimeFilterSourceExec {
    fn name(&self) -> &str {
        "RuntimeFilterSourceExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|_| {
            DataFusionError::Internal("RuntimeFilterSourceExec takes one input".into())
        })?;
        let mut source = Self::new(input, self.node.clone());
        source.binding = self.binding.clone();
        Ok(Arc::new(source))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let Some(binding) = self.binding.clone() else {
            return Ok(input);
        };
        let schema = input.schema();
        let columns: Vec<usize> = self.node.columns.iter().map(|&c| c as usize).collect();
        // One integer key column may hold more keys, if a bitmap covers them (seen at the end).
        let limit = match columns.as_slice() {
            [c] if schema
                .fields()
                .get(*c)
                .is_some_and(|f| f.data_type().is_integer()) =>
            {
                MAX_DENSE_KEYS
            }
            _ => MAX_KEYS,
        };
        let collector = Arc::new(Mutex::new(Collector {
            filter_id: self.node.filter_id,
            columns,
            limit,
            binding,
            keys: Vec::new(),
            rows: 0,
            done: false,
        }));
        let at_end = Arc::clone(&collector);
        let passed = input
            .map(move |item| {
                let mut collector = collector.lock().unwrap_or_else(|p| p.into_inner());
                match &item {
                    Ok(batch) => collector.add(batch),
                    Err(_) => collector.give_up(),
                }
                item
            })
            // The end of the input publishes the keys: a last step that yields nothing.
            .chain(
                futures::stream::once(async move {
                    at_end.lock().unwrap_or_else(|p| p.into_inner()).finish();
                })
                .filter_map(|()| futures::future::ready(None)),
            );
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, passed)))
    }
}

/// The keys a source has seen so far.
struct Collector {
    filter_id: u64,
    columns: Vec<usize>,
    /// The most rows it collects: [`MAX_KEYS`], or [`MAX_DENSE_KEYS`] for one integer column
    /// (which must then be dense at the end).
    limit: usize,
    binding: SourceBinding,
    keys: Vec<RecordBatch>,
    rows: usize,
    /// Published (or failed): nothing more to collect.
    done: bool,
}

impl Collector {
    fn add(&mut self, batch: &RecordBatch) {
        if self.done {
            return;
        }
        self.rows += batch.num_rows();
        if self.rows > self.limit {
            self.give_up();
            return;
        }
        match batch.project(&self.columns) {
            Ok(keys) => self.keys.push(keys),
            Err(e) => {
                warn!("runtime filter {:08x}: {e}", self.filter_id as u32);
                self.give_up();
            }
        }
    }

    fn give_up(&mut self) {
        if !self.done {
            self.done = true;
            self.keys.clear();
            publish(self.filter_id, &self.binding, Published::TooMany);
        }
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let keys = std::mem::take(&mut self.keys);
        let published = match keys.first() {
            None => Published::Keys(Vec::new()),
            Some(first) => match arrow::compute::concat_batches(&first.schema(), &keys) {
                Ok(all) => match all.columns() {
                    [one] if self.rows > MAX_KEYS && !filter::dense(one) => Published::TooMany,
                    columns => Published::Keys(columns.to_vec()),
                },
                Err(_) => Published::TooMany,
            },
        };
        publish(self.filter_id, &self.binding, published);
    }
}

impl Drop for Collector {
    /// A build side dropped before its end (the query ended or failed): its keys are not all
    /// known, so the producers keep every row rather than wait.
    fn drop(&mut self) {
        self.give_up();
    }
}
