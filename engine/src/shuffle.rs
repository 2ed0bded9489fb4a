//! Shuffles between executors, pipelined and in memory.
//!
//! ```text
//!  producer task (stage s, task i) ──bucket j──▶ bounded channel ──DoGet(ShuffleRead s,i,j)──▶
//!      ShuffleReaderExec partition j of every consumer task merges bucket j of all producers
//! ```
//!
//! A producer task splits its output into buckets (by hash, or every row to every bucket for a
//! broadcast) and pushes each piece into that bucket's bounded channel, so it runs only as fast
//! as its consumers read: backpressure, and nothing on disk. Consumers claim a bucket with a
//! `ShuffleRead` ticket. A producer's task stream (the coordinator's DoGet) stays open until
//! every bucket was read to its end, so unread buckets never outlive their query: when the
//! coordinator drops the query, the producer and its channels go with it.
//!
//! The executors of one process (`floe standalone`, or a consumer that runs where its producer
//! did) share one registry, and a consumer takes a bucket that is in it straight from the
//! channel: no gRPC, no Arrow IPC encoding, no copy.
//!
//! The coordinator starts a query's tasks all at once, consumers with producers, so a consumer
//! may come for a bucket before its producer's task has reached the producer's executor: a
//! claim waits for the bucket to be registered, up to [`CLAIM_WAIT`].

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arrow::compute::BatchCoalescer;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Ticket;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use floe_proto::auth::Tag;
use floe_proto::{
    FloeTicket, ShuffleRead, ShuffleReaderNode, Signed, TaskLocation, PROTOCOL_VERSION,
};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

use crate::runtime::InternalChannel;
use crate::runtime::MAX_MESSAGE_SIZE;
use crate::status::{is_from_executor, ExecutorLost};

/// What travels through a bucket's channel: batches, then exactly one end marker.
#[derive(Debug)]
pub enum ShuffleItem {
    /// A piece of the producer's output.
    Batch(RecordBatch),
    /// The producer finished (`Ok`) or failed with this status.
    End(std::result::Result<(), Status>),
}

/// Batches a bucket buffers before its producer waits for the consumer.
const BUCKET_CAPACITY: usize = 4;

/// Rows per batch a hash shuffle sends (DataFusion's default batch size).
const SHUFFLE_BATCH_ROWS: usize = 8192;

type BucketKey = (String, u32, u32, u32);

#[derive(Debug)]
struct Bucket {
    schema: SchemaRef,
    receiver: mpsc::Receiver<ShuffleItem>,
}

/// How long a claim waits for a bucket whose producer task has not reached its executor yet.
/// The coordinator starts producers and consumers together and fails the whole query when a
/// producer does not start where it was placed, so a bucket that does not come within this
/// belongs to no task that will run.
pub const CLAIM_WAIT: Duration = Duration::from_secs(30);

/// The buckets of the shuffle producers running on this executor, until a consumer claims them.
#[derive(Debug, Default)]
pub struct ShuffleRegistry {
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
    /// The buckets claimed or dropped unclaimed within the last [`CLAIM_WAIT`], and when: a
    /// claim of one of these is answered at once, not waited for.
    gone: Mutex<HashMap<BucketKey, std::time::Instant>>,
    /// Woken whenever a producer registers its buckets.
    registered: tokio::sync::Notify,
    /// The executors running in this process (their producers register here).
    local_executors: Mutex<HashSet<String>>,
}

/// Un-registers a producer's buckets that no consumer claimed, when the producer ends.
pub struct BucketsGuard {
    registry: Arc<ShuffleRegistry>,
    keys: Vec<BucketKey>,
}

impl Drop for BucketsGuard {
    fn drop(&mut self) {
        let mut buckets = self
            .registry
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut gone = self.registry.gone.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        for key in &self.keys {
            if buckets.remove(key).is_some() {
                gone.insert(key.clone(), now);
            }
        }
    }
}

/// How long the unclaimed buckets of a failed producer stay, holding its error for the
/// consumers that have not come for them yet.
const FAILED_BUCKETS_LINGER: Duration = Duration::from_secs(30);

impl BucketsGuard {
    /// The producer failed: its unclaimed buckets (each ending with the producer's error)
    /// stay for a while, so that a consumer that comes late learns the real cause (a missing
    /// file, say) rather than that the bucket is gone.
    pub fn linger(self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        #[allow(
            clippy::disallowed_methods,
            reason = "the failed buckets outlive their query on purpose, for a bounded time"
        )]
        runtime.spawn(async move {
            tokio::time::sleep(FAILED_BUCKETS_LINGER).await;
            drop(self);
        });
    }
}

impl ShuffleRegistry {
    /// The registry every executor of this process shares (bucket keys name the query, stage,
    /// task and bucket, which no two producers share).
    pub fn process() -> Arc<Self> {
        static REGISTRY: OnceLock<Arc<ShuffleRegistry>> = OnceLock::new();
        Arc::clone(REGISTRY.get_or_init(Arc::default))
    }

    /// Opens the buckets of producer task `task` of `stage`: their senders, and a guard that
    /// removes the unclaimed ones when dropped.
    pub fn register(
        self: &Arc<Self>,
        query_id: &str,
        stage: u32,
        task: u32,
        schema: SchemaRef,
        count: usize,
    ) -> (Vec<mpsc::Sender<ShuffleItem>>, BucketsGuard) {
        let mut senders = Vec::with_capacity(count);
        let mut keys = Vec::with_capacity(count);
        {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            for bucket in 0..count as u32 {
                let (tx, rx) = mpsc::channel(BUCKET_CAPACITY);
                let key = (query_id.to_string(), stage, task, bucket);
                buckets.insert(
                    key.clone(),
                    Bucket {
                        schema: Arc::clone(&schema),
                        receiver: rx,
                    },
                );
                senders.push(tx);
                keys.push(key);
            }
        }
        self.registered.notify_waiters();
        let guard = BucketsGuard {
            registry: Arc::clone(self),
            keys,
        };
        (senders, guard)
    }

    /// Notes that executor `executor_id` runs in this process: its producers' buckets are read
    /// from this registry.
    pub fn add_local_executor(&self, executor_id: &str) {
        self.local_executors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(executor_id.to_string());
    }

    /// Whether executor `executor_id` runs in this process.
    pub fn is_local(&self, executor_id: &str) -> bool {
        self.local_executors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(executor_id)
    }

    /// Takes a bucket for reading, waiting up to `bound` for its producer to register it (see
    /// [`CLAIM_WAIT`]); NOT_FOUND then, or at once for a bucket that was here and is gone
    /// (read already, or its producer ended).
    pub async fn claim_waiting(
        &self,
        read: &ShuffleRead,
        bound: Duration,
    ) -> std::result::Result<(SchemaRef, mpsc::Receiver<ShuffleItem>), Status> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            // Listening before looking, so that a producer registering in between wakes it.
            let registered = self.registered.notified();
            tokio::pin!(registered);
            registered.as_mut().enable();
            match self.try_claim(read) {
                Ok(claimed) => return Ok(claimed),
                Err(was_here) if was_here || tokio::time::Instant::now() >= deadline => {
                    return Err(not_found(read))
                }
                Err(_) => {
                    let _ = tokio::time::timeout_at(deadline, registered).await;
                }
            }
        }
    }

    /// Takes a bucket for reading if it is here; NOT_FOUND if not (its producer has not
    /// registered it yet, never ran here, already ended, or the query does not exist).
    pub fn claim(
        &self,
        read: &ShuffleRead,
    ) -> std::result::Result<(SchemaRef, mpsc::Receiver<ShuffleItem>), Status> {
        self.try_claim(read).map_err(|_| not_found(read))
    }

    /// A bucket that is here; otherwise whether it was here (claimed, or dropped unclaimed,
    /// lately): `Err(true)`.
    fn try_claim(
        &self,
        read: &ShuffleRead,
    ) -> std::result::Result<(SchemaRef, mpsc::Receiver<ShuffleItem>), bool> {
        let key = (read.query_id.clone(), read.stage_id, read.task, read.bucket);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        gone.retain(|_, at| now.duration_since(*at) < CLAIM_WAIT);
        match buckets.remove(&key) {
            Some(bucket) => {
                gone.insert(key, now);
                Ok((bucket.schema, bucket.receiver))
            }
            None => Err(gone.contains_key(&key)),
        }
    }
}

fn not_found(read: &ShuffleRead) -> Status {
    Status::not_found(format!(
        "bucket {} of task {} of stage {} (query {}) is not on this executor: the producer \
         never started here, it ended, or it was already read",
        read.bucket, read.task, read.stage_id, read.query_id
    ))
}

/// How a producer splits its output.
pub enum Split {
    /// By DataFusion's hash of these expressions (the same hash as its `RepartitionExec`, so
    /// both sides of a join agree).
    Hash(BatchPartitioner),
    /// Every row to every bucket.
    Broadcast,
}

/// What a producer task did, for its report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Produced {
    /// Rows read from its input.
    pub rows: u64,
    /// Bytes of Arrow data it handed to its buckets.
    pub bytes: u64,
}

/// Runs a producer: reads `input`, splits each batch and pushes the pieces into the buckets,
/// then ends every bucket and waits until each was read to its end (or its reader went away).
pub async fn produce(
    mut input: SendableRecordBatchStream,
    mut split: Split,
    senders: Vec<mpsc::Sender<ShuffleItem>>,
) -> Result<Produced> {
    let mut produced = Produced::default();
    // A hash split cuts each batch into one piece per bucket (a quarter of a batch for four):
    // each bucket gathers its pieces into whole batches again, as DataFusion's
    // `RepartitionExec` does, so that consumers (joins, aggregations, the network) handle
    // a few large batches rather than many small ones.
    let mut coalescers: Vec<BatchCoalescer> = match &split {
        Split::Hash(_) => (0..senders.len())
            .map(|_| BatchCoalescer::new(input.schema(), SHUFFLE_BATCH_ROWS))
            .collect(),
        Split::Broadcast => Vec::new(),
    };
    let outcome: Result<()> = async {
        let mut pieces = Vec::new();
        while let Some(batch) = input.next().await {
            let batch = batch?;
            produced.rows += batch.num_rows() as u64;
            match &mut split {
                Split::Hash(partitioner) => partitioner.partition(batch, |bucket, piece| {
                    let coalescer = &mut coalescers[bucket];
                    coalescer.push_batch(piece)?;
                    while let Some(whole) = coalescer.next_completed_batch() {
                        pieces.push((bucket, whole));
                    }
                    Ok(())
                })?,
                Split::Broadcast => pieces.extend((0..senders.len()).map(|b| (b, batch.clone()))),
            }
            send_all(&mut pieces, &senders, &mut produced).await;
        }
        for (bucket, coalescer) in coalescers.iter_mut().enumerate() {
            coalescer.finish_buffered_batch()?;
            while let Some(rest) = coalescer.next_completed_batch() {
                pieces.push((bucket, rest));
            }
        }
        send_all(&mut pieces, &senders, &mut produced).await;
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => {
            for sender in &senders {
                let _ = sender.send(ShuffleItem::End(Ok(()))).await;
            }
            for sender in &senders {
                sender.closed().await;
            }
            Ok(produced)
        }
        Err(e) => {
            let e = Arc::new(e);
            let status = crate::status::mark_from_executor(crate::status::status_from_datafusion(
                DataFusionError::Shared(Arc::clone(&e)),
            ));
            for sender in &senders {
                let _ = sender.try_send(ShuffleItem::End(Err(status.clone())));
            }
            Err(DataFusionError::Shared(e))
        }
    }
}

/// Sends each `(bucket, batch)` of `pieces` to its bucket, in order, leaving `pieces` empty.
async fn send_all(
    pieces: &mut Vec<(usize, RecordBatch)>,
    senders: &[mpsc::Sender<ShuffleItem>],
    produced: &mut Produced,
) {
    for (bucket, piece) in pieces.drain(..) {
        produced.bytes += piece.get_array_memory_size() as u64;
        // A reader that went away (its query is ending) just stops receiving.
        let _ = senders[bucket].send(ShuffleItem::Batch(piece)).await;
    }
}

/// Reads one stage's shuffle output: partition `j` merges bucket `j` of every producer task
/// (for a broadcast, its single partition reads this task's own bucket).
#[derive(Debug)]
pub struct ShuffleReaderExec {
    node: ShuffleReaderNode,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// The producer tasks, known only when the task runs.
    producers: Vec<TaskLocation>,
    query_id: String,
    /// The cluster's shuffle key, which reads are MACed with.
    shuffle_key: Tag,
    /// A hash reader cut down to one task: the bucket its single partition reads.
    local_bucket: Option<u32>,
    metrics: ExecutionPlanMetricsSet,
}

impl ShuffleReaderExec {
    /// A reader as decoded from a plan; producers are set per task with [`Self::with_producers`].
    pub fn try_new(node: ShuffleReaderNode) -> Result<Self> {
        let schema = crate::ipc::decode_schema(&node.schema)?;
        let partitions = (node.partitions as usize).max(1);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            node,
            schema,
            properties: Arc::new(properties),
            producers: Vec::new(),
            query_id: String::new(),
            shuffle_key: [0; floe_proto::auth::LEN],
            local_bucket: None,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// Its wire form.
    pub fn node(&self) -> &ShuffleReaderNode {
        &self.node
    }

    /// The stage it reads.
    pub fn stage_id(&self) -> u32 {
        self.node.stage_id
    }

    /// The same reader bound to one task: where the producers run, (for a broadcast) which
    /// bucket is this task's, and the key its reads are MACed with.
    pub fn with_producers(
        &self,
        query_id: &str,
        producers: Vec<TaskLocation>,
        task: usize,
        shuffle_key: Tag,
    ) -> Result<Self> {
        let mut node = self.node.clone();
        if node.broadcast {
            node.bucket = task as u32;
        }
        let mut reader = Self::try_new(node)?;
        reader.producers = producers;
        reader.query_id = query_id.to_string();
        reader.shuffle_key = shuffle_key;
        Ok(reader)
    }

    /// The same reader as a single partition reading task `task`'s bucket (an executor's task
    /// plan cut down to its own partition).
    pub fn localized(&self, task: usize) -> Result<Self> {
        let mut node = self.node.clone();
        let local_bucket = (!node.broadcast).then_some(task as u32);
        node.partitions = 1;
        let mut reader = Self::try_new(node)?;
        reader.producers = self.producers.clone();
        reader.query_id = self.query_id.clone();
        reader.shuffle_key = self.shuffle_key;
        reader.local_bucket = local_bucket;
        Ok(reader)
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ShuffleReaderExec: stage={}, {}",
            self.node.stage_id,
            if self.node.broadcast {
                "broadcast".to_string()
            } else {
                format!("buckets={}", self.node.partitions)
            }
        )
    }
}

/// Channels to other executors, one per endpoint, shared by every task of this process.
pub(crate) fn channel(endpoint: &str) -> Result<InternalChannel> {
    static CHANNELS: OnceLock<Mutex<HashMap<String, InternalChannel>>> = OnceLock::new();
    let mut channels = CHANNELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(c) = channels.get(endpoint) {
        return Ok(c.clone());
    }
    let channel = crate::runtime::internal_channel(endpoint)
        .map_err(|e| DataFusionError::Plan(format!("bad producer endpoint '{endpoint}': {e}")))?;
    channels.insert(endpoint.to_string(), channel.clone());
    Ok(channel)
}

/// A producer's error as the consumer reports it: the producer's own error keeps its status;
/// a broken connection means the producer's executor is lost.
fn producer_error(producer: &TaskLocation, status: Status) -> DataFusionError {
    if is_from_executor(&status) {
        DataFusionError::External(Box::new(status))
    } else {
        DataFusionError::External(Box::new(ExecutorLost {
            executor_id: producer.executor_id.clone(),
            reason: format!("reading its shuffle output: {}", status.message()),
        }))
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &str {
        "ShuffleReaderExec"
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
                "ShuffleReaderExec takes no children".into(),
            ))
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let bucket = if self.node.broadcast {
            self.node.bucket
        } else {
            self.local_bucket.unwrap_or(partition as u32)
        };
        let read_bytes = MetricBuilder::new(&self.metrics).counter(SHUFFLE_BYTES_READ, partition);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let mut inputs = Vec::with_capacity(self.producers.len());
        let local = ShuffleRegistry::process();
        for (task, producer) in self.producers.iter().enumerate() {
            let read = ShuffleRead {
                protocol_version: PROTOCOL_VERSION,
                query_id: self.query_id.clone(),
                stage_id: self.node.stage_id,
                task: task as u32,
                bucket,
                nonce: crate::runtime::random_nonce().to_vec(),
            };
            // A producer in this process: its bucket's channel, read directly (once its task
            // has registered it: the coordinator starts producers and consumers together).
            if let Ok((_, receiver)) = local.claim(&read) {
                let producer = producer.clone();
                inputs.push(
                    serve_bucket(receiver, read)
                        .map_err(move |s| producer_error(&producer, s))
                        .boxed(),
                );
                continue;
            }
            if local.is_local(&producer.executor_id) {
                let (local, producer) = (Arc::clone(&local), producer.clone());
                let claimed = async move {
                    // Not there in time: no producer of this query will run here (not a loss).
                    let (_, receiver) = local
                        .claim_waiting(&read, CLAIM_WAIT)
                        .await
                        .map_err(|s| DataFusionError::External(Box::new(s)))?;
                    Ok::<_, DataFusionError>(
                        serve_bucket(receiver, read).map_err(move |s| producer_error(&producer, s)),
                    )
                };
                inputs.push(futures::stream::once(claimed).try_flatten().boxed());
                continue;
            }
            let read = read.encode_to_vec();
            let read = Signed {
                mac: floe_proto::auth::shuffle_read_mac(&self.shuffle_key, &read).to_vec(),
                body: read,
            };
            let channel = channel(&producer.endpoint)?;
            let producer = producer.clone();
            let read_bytes = read_bytes.clone();
            let opened = async move {
                let ticket = FloeTicket {
                    kind: Some(floe_proto::floe_ticket::Kind::ShuffleRead(read)),
                };
                let mut client = FlightServiceClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_SIZE)
                    .max_encoding_message_size(MAX_MESSAGE_SIZE);
                let response = client
                    .do_get(Ticket::new(ticket.encode_to_vec()))
                    .await
                    .map_err(|s| producer_error(&producer, s))?;
                let data = response
                    .into_inner()
                    .inspect_ok(move |d| read_bytes.add(d.data_body.len() + d.data_header.len()))
                    .map_err(arrow_flight::error::FlightError::from);
                let batches = FlightDataDecoder::new(data).try_filter_map(|d| {
                    futures::future::ready(Ok(match d.payload {
                        DecodedPayload::RecordBatch(b) => Some(b),
                        _ => None,
                    }))
                });
                Ok::<_, DataFusionError>(batches.map_err(move |e| match e {
                    arrow_flight::error::FlightError::Tonic(s) => producer_error(&producer, *s),
                    other => DataFusionError::External(Box::new(other)),
                }))
            };
            inputs.push(futures::stream::once(opened).try_flatten().boxed());
        }
        let merged = futures::stream::select_all(inputs).inspect_ok(move |b| {
            output_rows.add(b.num_rows());
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            merged,
        )))
    }
}

/// The metric a shuffle reader counts its network bytes in.
pub const SHUFFLE_BYTES_READ: &str = "shuffle_bytes_read";

/// Serves one claimed bucket as a stream: its batches, then its end marker (a producer that
/// vanished without one fails the stream).
pub fn serve_bucket(
    receiver: mpsc::Receiver<ShuffleItem>,
    read: ShuffleRead,
) -> futures::stream::BoxStream<'static, std::result::Result<RecordBatch, Status>> {
    futures::stream::unfold(Some(receiver), move |receiver| {
        let (task, stage) = (read.task, read.stage_id);
        async move {
            let mut receiver = receiver?;
            match receiver.recv().await {
                Some(ShuffleItem::Batch(b)) => Some((Ok(b), Some(receiver))),
                Some(ShuffleItem::End(Ok(()))) => None,
                Some(ShuffleItem::End(Err(status))) => Some((Err(status), None)),
                None => Some((
                    Err(Status::aborted(format!(
                        "producer task {task} of stage {stage} ended before finishing its \
                         output (its query was cancelled or failed)"
                    ))),
                    None,
                )),
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use tonic::Code;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]))
    }

    fn batch(values: &[i64]) -> RecordBatch {
        RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(values.to_vec()))])
            .expect("batch")
    }

    fn input(batches: Vec<Result<RecordBatch>>) -> SendableRecordBatchStream {
        Box::pin(RecordBatchStreamAdapter::new(
            schema(),
            futures::stream::iter(batches),
        ))
    }

    fn read(query: &str, bucket: u32) -> ShuffleRead {
        ShuffleRead {
            query_id: query.into(),
            stage_id: 1,
            task: 0,
            bucket,
            ..Default::default()
        }
    }

    async fn rows(
        stream: BoxStream<'static, std::result::Result<RecordBatch, Status>>,
    ) -> Vec<i64> {
        let batches: Vec<RecordBatch> = stream.try_collect().await.expect("the bucket ends well");
        batches
            .iter()
            .flat_map(|b| {
                let values = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("i64");
                values.values().to_vec()
            })
            .collect()
    }

    use futures::stream::BoxStream;

    /// A consumer started with its producer may come first: its claim waits for the bucket;
    /// a bucket read already is NOT_FOUND at once; one that never comes, after the bound.
    #[tokio::test]
    async fn a_claim_waits_for_a_producer_not_for_a_bucket_gone() {
        let registry = Arc::new(ShuffleRegistry::default());
        let early = {
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                registry
                    .claim_waiting(&read("q5", 0), Duration::from_secs(30))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!early.is_finished(), "the claim waits for its producer");
        let (senders, _guard) = registry.register("q5", 1, 0, schema(), 1);
        let producer = tokio::spawn(produce(
            input(vec![Ok(batch(&[7, 8]))]),
            Split::Broadcast,
            senders,
        ));
        let (_, receiver) = tokio::time::timeout(Duration::from_secs(10), early)
            .await
            .expect("claimed once registered")
            .expect("join")
            .expect("claimed");
        assert_eq!(
            rows(serve_bucket(receiver, read("q5", 0))).await,
            vec![7, 8]
        );
        producer.await.expect("join").expect("produced");

        let started = std::time::Instant::now();
        let again = registry
            .claim_waiting(&read("q5", 0), Duration::from_secs(30))
            .await
            .expect_err("read already");
        assert_eq!(again.code(), tonic::Code::NotFound);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered at once"
        );

        let never = registry
            .claim_waiting(&read("q6", 0), Duration::from_millis(100))
            .await
            .expect_err("no producer");
        assert_eq!(never.code(), tonic::Code::NotFound, "{never:?}");
    }

    /// A broadcast puts every row in every bucket, then one end marker each; a bucket is read
    /// once (a second claim is NOT_FOUND at once, never a wait).
    #[tokio::test]
    async fn every_bucket_gets_its_rows_and_one_end_marker() {
        let registry = Arc::new(ShuffleRegistry::default());
        let (senders, _guard) = registry.register("q1", 1, 0, schema(), 2);
        let producer = tokio::spawn(produce(
            input(vec![Ok(batch(&[1, 2])), Ok(batch(&[3]))]),
            Split::Broadcast,
            senders,
        ));
        for bucket in 0..2 {
            let (_, receiver) = registry.claim(&read("q1", bucket)).expect("claimed");
            assert_eq!(
                rows(serve_bucket(receiver, read("q1", bucket))).await,
                vec![1, 2, 3]
            );
        }
        let produced = producer.await.expect("joins").expect("produced");
        assert_eq!(produced.rows, 3);
        let again = registry.claim(&read("q1", 0)).expect_err("read already");
        assert_eq!(again.code(), Code::NotFound);
    }

    /// A hash split sends each row to the bucket DataFusion's hash picks, and gathers the
    /// pieces of many batches into whole batches again (here: every bucket gets one batch
    /// from 40 inputs, and a bucket over `SHUFFLE_BATCH_ROWS` rows gets full batches first).
    #[tokio::test]
    async fn a_hash_split_regathers_its_pieces_into_whole_batches() {
        use datafusion::physical_expr::expressions::Column;
        let registry = Arc::new(ShuffleRegistry::default());
        let (senders, _guard) = registry.register("q4", 1, 0, schema(), 2);
        let inputs: Vec<Result<RecordBatch>> = (0..40)
            .map(|i| Ok(batch(&(i * 500..(i + 1) * 500).collect::<Vec<i64>>())))
            .collect();
        let hash = Partitioning::Hash(vec![Arc::new(Column::new("x", 0))], 2);
        let partitioner = BatchPartitioner::try_new(
            hash.clone(),
            datafusion::physical_plan::metrics::Time::new(),
            0,
            1,
        )
        .expect("partitioner");
        let producer = tokio::spawn(produce(input(inputs), Split::Hash(partitioner), senders));
        // What DataFusion's own partitioner puts in each bucket.
        let mut expected = vec![Vec::new(), Vec::new()];
        let mut reference =
            BatchPartitioner::try_new(hash, datafusion::physical_plan::metrics::Time::new(), 0, 1)
                .expect("partitioner");
        reference
            .partition(
                batch(&(0..20_000).collect::<Vec<i64>>()),
                |bucket, piece| {
                    let values = piece.column(0).as_any().downcast_ref::<Int64Array>();
                    expected[bucket].extend(values.expect("i64").values().iter().copied());
                    Ok(())
                },
            )
            .expect("partitions");
        for (bucket, expected) in expected.into_iter().enumerate() {
            let (_, receiver) = registry.claim(&read("q4", bucket as u32)).expect("claimed");
            let batches: Vec<RecordBatch> = serve_bucket(receiver, read("q4", bucket as u32))
                .try_collect()
                .await
                .expect("the bucket ends well");
            let sizes: Vec<usize> = batches.iter().map(|b| b.num_rows()).collect();
            let whole = expected.len() / SHUFFLE_BATCH_ROWS;
            assert_eq!(
                sizes.len(),
                whole + 1,
                "bucket {bucket}: batches of {sizes:?}"
            );
            assert!(sizes[..whole].iter().all(|n| *n == SHUFFLE_BATCH_ROWS));
            let mut got: Vec<i64> = batches
                .iter()
                .flat_map(|b| {
                    let values = b.column(0).as_any().downcast_ref::<Int64Array>();
                    values.expect("i64").values().to_vec()
                })
                .collect();
            got.sort_unstable();
            let mut expected = expected;
            expected.sort_unstable();
            assert_eq!(got, expected, "bucket {bucket}");
        }
        let produced = producer.await.expect("joins").expect("produced");
        assert_eq!(produced.rows, 20_000);
    }

    /// A producer holds at most the bucket's capacity for a reader that does not read
    /// (backpressure), and a reader that goes away does not keep it waiting.
    #[tokio::test]
    async fn a_slow_reader_holds_the_producer_and_a_gone_reader_frees_it() {
        let registry = Arc::new(ShuffleRegistry::default());
        let (senders, _guard) = registry.register("q2", 1, 0, schema(), 1);
        let many: Vec<Result<RecordBatch>> = (0..(BUCKET_CAPACITY as i64 * 3))
            .map(|i| Ok(batch(&[i])))
            .collect();
        let producer = tokio::spawn(produce(input(many), Split::Broadcast, senders));
        let (_, receiver) = registry.claim(&read("q2", 0)).expect("claimed");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!producer.is_finished(), "the producer waits for its reader");
        drop(receiver);
        let produced = tokio::time::timeout(Duration::from_secs(10), producer)
            .await
            .expect("a gone reader frees the producer")
            .expect("joins")
            .expect("produced");
        assert_eq!(produced.rows, BUCKET_CAPACITY as u64 * 3);
    }

    /// A producer that fails ends each bucket with its error (the reader learns the cause);
    /// one that vanishes without an end marker fails the reader's stream, never a clean end.
    #[tokio::test]
    async fn a_failed_or_vanished_producer_fails_its_readers() {
        let registry = Arc::new(ShuffleRegistry::default());
        let (senders, _guard) = registry.register("q3", 1, 0, schema(), 1);
        let failing = input(vec![
            Ok(batch(&[1])),
            Err(DataFusionError::External(Box::new(Status::data_loss(
                "s3://b/t/f.parquet is gone",
            )))),
        ]);
        let producer = tokio::spawn(produce(failing, Split::Broadcast, senders));
        let (_, receiver) = registry.claim(&read("q3", 0)).expect("claimed");
        let outcome: std::result::Result<Vec<RecordBatch>, Status> =
            serve_bucket(receiver, read("q3", 0)).try_collect().await;
        let status = outcome.expect_err("the producer's error");
        assert_eq!(status.code(), Code::DataLoss);
        assert!(status.message().contains("f.parquet"), "{status:?}");
        assert!(producer.await.expect("joins").is_err());

        let (senders, _guard) = registry.register("q4", 1, 0, schema(), 1);
        let (_, receiver) = registry.claim(&read("q4", 0)).expect("claimed");
        drop(senders);
        let outcome: std::result::Result<Vec<RecordBatch>, Status> =
            serve_bucket(receiver, read("q4", 0)).try_collect().await;
        assert_eq!(outcome.expect_err("no end marker").code(), Code::Aborted);
    }
}
