//! The consumer's side of a shuffle: [`ShuffleReaderExec`], bucket `j` of every producer task,
//! straight from the channel when the producer runs in this process, else over Flight.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::datatypes::SchemaRef;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Ticket;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
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
use tonic::Status;

use super::{serve_bucket, ShuffleRegistry, CLAIM_WAIT};
use crate::runtime::{InternalChannel, MAX_MESSAGE_SIZE};
use crate::status::{is_from_executor, ExecutorLost};

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

    /// The same reader as reader `reader` of a shared stage (see
    /// `floe_proto::ShuffleOutput::readers`).
    pub fn for_reader(&self, reader: u32) -> Result<Self> {
        let mut node = self.node.clone();
        node.reader = reader;
        Self::try_new(node)
    }

    /// The same reader as a single partition reading task `task`'s bucket (an executor's task
    /// plan cut down to its own partition).
    pub fn localized(&self, task: usize) -> Result<Self> {
        let mut node = self.node.clone();
        let local_bucket = (!node.broadcast).then(|| bucket_of(&node, task as u32));
        node.partitions = 1;
        let mut reader = Self::try_new(node)?;
        reader.producers = self.producers.clone();
        reader.query_id = self.query_id.clone();
        reader.shuffle_key = self.shuffle_key;
        reader.local_bucket = local_bucket;
        Ok(reader)
    }
}

/// The bucket a hash reader's partition `j` reads: its reader's copy of bucket `j` (a bucket
/// no producer has, for numbers out of range: the claim then fails).
fn bucket_of(node: &ShuffleReaderNode, j: u32) -> u32 {
    node.reader
        .saturating_mul(node.partitions)
        .saturating_add(j)
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ShuffleReaderExec: stage={}, {}",
            self.node.stage_id,
            if self.node.broadcast {
                "broadcast".to_string()
            } else if self.node.reader > 0 {
                format!(
                    "buckets={}, reader={}",
                    self.node.partitions, self.node.reader
                )
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
            // A shared stage's reader r reads its own copy of the buckets (see
            // `ShuffleOutput::readers`).
            self.local_bucket
                .unwrap_or_else(|| bucket_of(&self.node, partition as u32))
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
