//! Runtime filters across stages: the keys of a partitioned join's build side, sent to the
//! producers of its probe side, so that rows which cannot join are dropped before they are
//! shuffled (Trino's dynamic filtering, between tasks of different stages).
//!
//! ```text
//!  consumer task j (the join's stage)           producer task i (a probe-side stage)
//!   HashJoinExec                                  RepartitionExec (the shuffle's split)
//!    ├─ RuntimeFilterSourceExec ──keys of j──▶     RuntimeFilterExec: waits for every j's keys
//!    │   └─ build side (read first)                 └─ probe side's input (scan, joins, …)
//!    └─ probe side ◀──────── shuffle ───────────
//! ```
//!
//! A hash join reads its whole build side before it reads a probe row, and the build side
//! never depends on the probe side (they are different subtrees), so a producer waiting for
//! the keys waits for work that is already running: no cycle. The wait is bounded
//! ([`WAIT`]); a build side of more than [`MAX_KEYS`] rows per task publishes "too many" at
//! once, and without the keys the producer keeps every row — the join itself stays exact
//! either way. Keys travel from executor to executor like shuffle data, MACed with the
//! cluster's shuffle key, and wait in this process's [`FilterRegistry`].

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{concat, filter_record_batch};
use arrow::datatypes::SchemaRef;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Ticket;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{lit, BinaryExpr, Column, InListExpr};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use floe_proto::auth::Tag;
use floe_proto::{
    FloeTicket, RuntimeFilterKeys, RuntimeFilterNode, RuntimeFilterSourceNode, Signed,
    PROTOCOL_VERSION,
};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::watch;
use tracing::warn;

use crate::runtime::MAX_MESSAGE_SIZE;

/// The most build-side rows one consumer task publishes as keys; past it, "too many".
pub const MAX_KEYS: usize = 16_384;

/// How long a producer waits for every consumer's keys before it keeps every row.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long published keys stay for producers that have not come for them yet.
const ENTRY_TTL: Duration = Duration::from_secs(120);

/// The most filters kept at once in one process (the oldest go first).
const MAX_ENTRIES: usize = 4096;

/// What one consumer task published.
#[derive(Debug, Clone)]
pub enum Published {
    /// The build side's key columns, as the task saw them (nulls included: they match nothing).
    Keys(Vec<ArrayRef>),
    /// More rows than [`MAX_KEYS`]: no filter.
    TooMany,
}

type Parts = HashMap<u32, Published>;

struct Entry {
    created: Instant,
    parts: watch::Sender<Parts>,
}

/// The keys published to this process, by query and filter, until their producers read them.
#[derive(Default)]
pub struct FilterRegistry {
    entries: Mutex<HashMap<(String, u64), Entry>>,
}

impl FilterRegistry {
    /// The registry every executor of this process shares.
    pub fn process() -> Arc<Self> {
        static REGISTRY: OnceLock<Arc<FilterRegistry>> = OnceLock::new();
        Arc::clone(REGISTRY.get_or_init(Arc::default))
    }

    fn parts(&self, query_id: &str, filter_id: u64) -> watch::Sender<Parts> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = (query_id.to_string(), filter_id);
        if let Some(entry) = entries.get(&key) {
            return entry.parts.clone();
        }
        entries.retain(|_, e| e.created.elapsed() < ENTRY_TTL);
        if entries.len() >= MAX_ENTRIES {
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        let (parts, _) = watch::channel(Parts::new());
        entries.insert(
            key,
            Entry {
                created: Instant::now(),
                parts: parts.clone(),
            },
        );
        parts
    }

    /// Records what consumer task `partition` published.
    pub fn publish(&self, query_id: &str, filter_id: u64, partition: u32, published: Published) {
        self.parts(query_id, filter_id).send_modify(|parts| {
            parts.insert(partition, published);
        });
    }

    /// The keys of all `sources` consumer tasks, each column's concatenated; `None` when one
    /// had too many, or not all came within `bound`.
    pub async fn wait(
        &self,
        query_id: &str,
        filter_id: u64,
        sources: u32,
        bound: Duration,
    ) -> Option<Vec<ArrayRef>> {
        let mut parts = self.parts(query_id, filter_id).subscribe();
        let ready = |p: &Parts| {
            p.values().any(|v| matches!(v, Published::TooMany)) || p.len() >= sources as usize
        };
        let parts = tokio::time::timeout(bound, parts.wait_for(ready))
            .await
            .ok()?
            .ok()?
            .clone();
        // A task whose build side had no row publishes no column: it adds no key.
        let mut columns: Vec<Vec<ArrayRef>> = Vec::new();
        for part in parts.values() {
            let Published::Keys(keys) = part else {
                return None;
            };
            if keys.is_empty() {
                continue;
            }
            if columns.len() < keys.len() {
                columns.resize_with(keys.len(), Vec::new);
            }
            for (column, key) in columns.iter_mut().zip(keys) {
                column.push(Arc::clone(key));
            }
        }
        columns
            .iter()
            .map(|arrays| {
                let arrays: Vec<&dyn arrow::array::Array> =
                    arrays.iter().map(|a| a.as_ref()).collect();
                concat(&arrays).ok()
            })
            .collect()
    }
}

/// Keeps the rows whose key columns hold a value of the join's build side (see the module
/// documentation). Unbound (on the coordinator) it passes its input through.
#[derive(Debug)]
pub struct RuntimeFilterExec {
    input: Arc<dyn ExecutionPlan>,
    node: RuntimeFilterNode,
    /// The query whose keys it waits for: set when a task binds it.
    query_id: Option<String>,
    metrics: ExecutionPlanMetricsSet,
}

impl RuntimeFilterExec {
    /// A filter on `input`'s key `columns`, with keys from `node.sources` consumer tasks.
    pub fn new(input: Arc<dyn ExecutionPlan>, node: RuntimeFilterNode) -> Self {
        Self {
            input,
            node,
            query_id: None,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// Its wire form.
    pub fn node(&self) -> &RuntimeFilterNode {
        &self.node
    }

    /// The same filter in a task of query `query_id`.
    pub fn bound(&self, query_id: &str) -> Self {
        let mut filter = Self::new(Arc::clone(&self.input), self.node.clone());
        filter.query_id = Some(query_id.to_string());
        filter
    }
}

/// `column IN (keys)` for every key column, and-ed; `false` for a build side without rows (no
/// key column at all).
fn key_predicate(
    schema: &SchemaRef,
    columns: &[u32],
    keys: Vec<ArrayRef>,
) -> Result<Arc<dyn PhysicalExpr>> {
    if keys.is_empty() {
        return Ok(lit(false));
    }
    if columns.len() != keys.len() {
        return Err(DataFusionError::Internal(format!(
            "a runtime filter on {} columns got {} key columns",
            columns.len(),
            keys.len()
        )));
    }
    let mut predicate: Option<Arc<dyn PhysicalExpr>> = None;
    for (&index, keys) in columns.iter().zip(keys) {
        if keys.is_empty() {
            return Ok(lit(false));
        }
        let index = index as usize;
        let field = schema.fields().get(index).ok_or_else(|| {
            DataFusionError::Internal(format!("runtime filter column {index} is out of range"))
        })?;
        let column = Arc::new(Column::new(field.name(), index)) as Arc<dyn PhysicalExpr>;
        let in_list =
            Arc::new(InListExpr::try_new_from_array(column, keys, false)?) as Arc<dyn PhysicalExpr>;
        predicate = Some(match predicate {
            None => in_list,
            Some(p) => Arc::new(BinaryExpr::new(p, Operator::And, in_list)),
        });
    }
    Ok(predicate.unwrap_or_else(|| lit(true)))
}

fn keep(batch: RecordBatch, predicate: &Arc<dyn PhysicalExpr>) -> Result<RecordBatch> {
    let mask = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
    let mask = mask
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| DataFusionError::Internal("a runtime filter is not boolean".into()))?;
    Ok(filter_record_batch(&batch, mask)?)
}

impl DisplayAs for RuntimeFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schema = self.input.schema();
        let keys: Vec<String> = self
            .node
            .columns
            .iter()
            .map(|&c| match schema.fields().get(c as usize) {
                Some(field) => format!("{}@{c}", field.name()),
                None => format!("?@{c}"),
            })
            .collect();
        write!(
            f,
            "RuntimeFilterExec: filter={:08x}, keys=[{}], from {} task(s) of the join",
            self.node.filter_id as u32,
            keys.join(", "),
            self.node.sources
        )
    }
}

impl ExecutionPlan for RuntimeFilterExec {
    fn name(&self) -> &str {
        "RuntimeFilterExec"
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
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("RuntimeFilterExec takes one input".into()))?;
        let mut filter = Self::new(input, self.node.clone());
        filter.query_id = self.query_id.clone();
        Ok(Arc::new(filter))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let Some(query_id) = self.query_id.clone() else {
            return Ok(input);
        };
        let schema = input.schema();
        let node = self.node.clone();
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let filtered = async move {
            let keys = FilterRegistry::process()
                .wait(&query_id, node.filter_id, node.sources, WAIT)
                .await;
            let predicate = match keys.map(|k| key_predicate(&input.schema(), &node.columns, k)) {
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    warn!(
                        "runtime filter {:08x} not applied: {e}",
                        node.filter_id as u32
                    );
                    None
                }
                None => None,
            };
            Ok::<_, DataFusionError>(input.and_then(move |batch| {
                let kept = match &predicate {
                    Some(p) => keep(batch, p),
                    None => Ok(batch),
                };
                if let Ok(b) = &kept {
                    output_rows.add(b.num_rows());
                }
                futures::future::ready(kept)
            }))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(filtered).try_flatten(),
        )))
    }
}

/// Where a source's keys go, set when a task binds it.
#[derive(Debug, Clone)]
struct SourceBinding {
    query_id: String,
    /// The consumer task (the join's partition) this is.
    partition: u32,
    /// The executors running producer tasks of the target stages.
    endpoints: Vec<String>,
    shuffle_key: Tag,
}

/// Passes a partitioned join's build side through, collecting its key columns, and publishes
/// them (or "too many") to the executors of the probe side's producers. Unbound (on the
/// coordinator) it passes its input through.
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
        let schema = self.input.schema();
        let keys: Vec<String> = self
            .node
            .columns
            .iter()
            .map(|&c| match schema.fields().get(c as usize) {
                Some(field) => format!("{}@{c}", field.name()),
                None => format!("?@{c}"),
            })
            .collect();
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
        let collector = Arc::new(Mutex::new(Collector {
            filter_id: self.node.filter_id,
            columns,
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
        if self.rows > MAX_KEYS {
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
                Ok(all) => Published::Keys(all.columns().to_vec()),
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

/// Sends what a consumer task published to every executor of the probe side's producers, in
/// the background (bounded): the join goes on meanwhile.
fn publish(filter_id: u64, binding: &SourceBinding, published: Published) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (overflow, keys) = match &published {
        Published::TooMany => (true, Vec::new()),
        Published::Keys(columns) => match encode_keys(columns) {
            Ok(bytes) => (false, bytes),
            Err(e) => {
                warn!("runtime filter {:08x}: {e}", filter_id as u32);
                (true, Vec::new())
            }
        },
    };
    let message = RuntimeFilterKeys {
        protocol_version: PROTOCOL_VERSION,
        query_id: binding.query_id.clone(),
        filter_id,
        partition: binding.partition,
        overflow,
        keys,
        nonce: crate::runtime::random_nonce().to_vec(),
    }
    .encode_to_vec();
    let signed = Signed {
        mac: floe_proto::auth::runtime_filter_mac(&binding.shuffle_key, &message).to_vec(),
        body: message,
    };
    let ticket = FloeTicket {
        kind: Some(floe_proto::floe_ticket::Kind::RuntimeFilter(signed)),
    }
    .encode_to_vec();
    for endpoint in binding.endpoints.clone() {
        let ticket = ticket.clone();
        #[allow(
            clippy::disallowed_methods,
            reason = "a bounded send that must outlive the build side's stream"
        )]
        runtime.spawn(async move {
            let sent = tokio::time::timeout(WAIT, send(&endpoint, ticket)).await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(
                    "runtime filter {:08x} not sent to {endpoint}: {e}",
                    filter_id as u32
                ),
                Err(_) => warn!(
                    "runtime filter {:08x} not sent to {endpoint}: timed out",
                    filter_id as u32
                ),
            }
        });
    }
}

async fn send(endpoint: &str, ticket: Vec<u8>) -> Result<()> {
    let channel = crate::shuffle::channel(endpoint)?;
    let mut client = FlightServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let mut answer = client
        .do_get(Ticket::new(ticket))
        .await
        .map_err(|s| DataFusionError::External(Box::new(s)))?
        .into_inner();
    while let Some(item) = answer.next().await {
        item.map_err(|s| DataFusionError::External(Box::new(s)))?;
    }
    Ok(())
}

fn encode_keys(columns: &[ArrayRef]) -> Result<Vec<u8>> {
    let fields: Vec<arrow::datatypes::Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| arrow::datatypes::Field::new(format!("k{i}"), c.data_type().clone(), true))
        .collect();
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    let mut out = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
    if !columns.is_empty() {
        writer.write(&RecordBatch::try_new(schema, columns.to_vec())?)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Takes a consumer task's keys sent by another executor (already checked to be MACed with the
/// cluster's shuffle key) into this process's registry.
pub fn receive(message: RuntimeFilterKeys) -> std::result::Result<(), tonic::Status> {
    if message.protocol_version != PROTOCOL_VERSION {
        return Err(tonic::Status::failed_precondition(format!(
            "runtime filter keys in protocol version {}, this executor speaks {PROTOCOL_VERSION}",
            message.protocol_version
        )));
    }
    let published = if message.overflow {
        Published::TooMany
    } else {
        let (_, batches) = crate::ipc::decode_ipc_stream(&message.keys)
            .map_err(|e| tonic::Status::invalid_argument(format!("runtime filter keys: {e}")))?;
        match batches.as_slice() {
            [] => Published::Keys(Vec::new()),
            [batch] if batch.num_rows() <= MAX_KEYS => Published::Keys(batch.columns().to_vec()),
            _ => Published::TooMany,
        }
    };
    FilterRegistry::process().publish(
        &message.query_id,
        message.filter_id,
        message.partition,
        published,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn keys(values: &[Option<i64>]) -> Vec<ArrayRef> {
        vec![Arc::new(Int64Array::from(values.to_vec())) as ArrayRef]
    }

    fn values(columns: &[ArrayRef]) -> Vec<Option<i64>> {
        let column = columns[0]
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("Int64 keys");
        let mut v: Vec<Option<i64>> = column.iter().collect();
        v.sort_unstable();
        v
    }

    const SHORT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_filter_is_the_union_of_every_tasks_keys() {
        let registry = FilterRegistry::default();
        registry.publish("q", 1, 0, Published::Keys(keys(&[Some(3), Some(1)])));
        // One of two tasks: not yet a filter.
        assert!(registry.wait("q", 1, 2, SHORT).await.is_none());
        registry.publish("q", 1, 1, Published::Keys(keys(&[Some(2), None])));
        let union = registry
            .wait("q", 1, 2, SHORT)
            .await
            .expect("both published");
        assert_eq!(values(&union), [None, Some(1), Some(2), Some(3)]);
        // A task whose build side had no row adds no key, whatever order the tasks come in.
        for order in [[0u32, 1], [1, 0]] {
            let registry = FilterRegistry::default();
            for task in order {
                let published = match task {
                    0 => Published::Keys(Vec::new()),
                    _ => Published::Keys(keys(&[Some(9)])),
                };
                registry.publish("q", 1, task, published);
            }
            let union = registry
                .wait("q", 1, 2, SHORT)
                .await
                .expect("both published");
            assert_eq!(values(&union), [Some(9)]);
        }
        // Another query's, or another filter's, keys are not these.
        assert!(registry.wait("other", 1, 2, SHORT).await.is_none());
        assert!(registry.wait("q", 2, 2, SHORT).await.is_none());
    }

    #[tokio::test]
    async fn a_task_with_too_many_keys_releases_the_waiters_at_once() {
        let registry = Arc::new(FilterRegistry::default());
        let waiting = {
            let registry = Arc::clone(&registry);
            tokio::spawn(async move { registry.wait("q", 7, 3, Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        registry.publish("q", 7, 1, Published::TooMany);
        let waited = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("released long before the bound")
            .expect("the waiter ran");
        assert!(waited.is_none());
    }

    #[tokio::test]
    async fn build_sides_without_rows_keep_no_row() {
        let registry = FilterRegistry::default();
        registry.publish("q", 1, 0, Published::Keys(Vec::new()));
        registry.publish("q", 1, 1, Published::Keys(Vec::new()));
        let none = registry
            .wait("q", 1, 2, SHORT)
            .await
            .expect("both published");
        assert!(none.is_empty());
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let predicate = key_predicate(&schema, &[0], none).expect("a predicate");
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
        )
        .expect("a batch");
        assert_eq!(keep(batch, &predicate).expect("filtered").num_rows(), 0);
    }

    #[test]
    fn rows_are_kept_when_their_key_is_one_of_the_keys_and_null_keys_never() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("k", DataType::Int64, true),
        ]));
        let predicate =
            key_predicate(&schema, &[1], keys(&[Some(2), Some(4), None])).expect("a predicate");
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![10, 20, 30, 40, 50])),
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(2),
                    None,
                    Some(4),
                    Some(5),
                ])),
            ],
        )
        .expect("a batch");
        let kept = keep(batch, &predicate).expect("filtered");
        let x = kept
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("Int64");
        assert_eq!(x.values().to_vec(), [20, 40]);
    }

    #[test]
    fn keys_survive_the_wire() {
        let columns = keys(&[Some(5), None, Some(-1)]);
        let bytes = encode_keys(&columns).expect("encoded");
        let (_, batches) = crate::ipc::decode_ipc_stream(&bytes).expect("decoded");
        assert_eq!(values(batches[0].columns()), [None, Some(-1), Some(5)]);
    }
}
