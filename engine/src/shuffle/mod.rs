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

use std::sync::Arc;

use arrow::compute::BatchCoalescer;
use arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::repartition::BatchPartitioner;
use floe_proto::ShuffleRead;
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::Status;

mod reader;
mod registry;

pub(crate) use reader::channel;
pub use reader::{ShuffleReaderExec, SHUFFLE_BYTES_READ};
pub use registry::{BucketsGuard, ShuffleRegistry, CLAIM_WAIT};

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

/// Batches each reader's copy of a shared stage's bucket holds at most (see [`Output`]): one
/// reader may read only after the other has read everything (a join's build side before its
/// probe side), so the copies are kept, not read in step — within the query's memory, which
/// the producer reserves for them.
pub const SHARED_BUCKET_CAPACITY: usize = 4096;

/// Rows per batch a hash shuffle sends (DataFusion's default batch size).
const SHUFFLE_BATCH_ROWS: usize = 8192;

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
    /// Pieces it handed to its buckets (once, however many readers each has).
    pub pieces: u64,
}

/// Where a producer's pieces go: its buckets' channels, one set per reader of the stage.
pub struct Output {
    /// `readers` sets of the stage's buckets: reader `r`'s bucket `j` is `r * buckets + j`.
    pub senders: Vec<mpsc::Sender<ShuffleItem>>,
    /// How many consumer stages read the stage (1 unless it is shared, see
    /// `floe_proto::ShuffleOutput::readers`).
    pub readers: usize,
    /// For a shared stage: the memory its kept copies hold, reserved from the query's share.
    pub kept: Option<MemoryReservation>,
}

impl Output {
    /// The buckets of a stage one consumer reads.
    pub fn single(senders: Vec<mpsc::Sender<ShuffleItem>>) -> Self {
        Self {
            senders,
            readers: 1,
            kept: None,
        }
    }

    /// The buckets of one reader.
    fn buckets(&self) -> usize {
        self.senders.len() / self.readers.max(1)
    }
}

/// Runs a producer: reads `input`, splits each batch and pushes the pieces into the buckets,
/// then ends every bucket and waits until each was read to its end (or its reader went away).
pub async fn produce(
    mut input: SendableRecordBatchStream,
    mut split: Split,
    mut output: Output,
) -> Result<Produced> {
    let senders = output.senders.clone();
    let buckets = output.buckets();
    let mut produced = Produced::default();
    // A hash split cuts each batch into one piece per bucket (a quarter of a batch for four):
    // each bucket gathers its pieces into whole batches again, as DataFusion's
    // `RepartitionExec` does, so that consumers (joins, aggregations, the network) handle
    // a few large batches rather than many small ones.
    let mut coalescers: Vec<BatchCoalescer> = match &split {
        Split::Hash(_) => (0..buckets)
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
                Split::Broadcast => {
                    // Views cut from larger buffers are compacted once, not sent whole to
                    // every reader (Arrow IPC sends a view array's buffers as they are).
                    let batch = crate::views::compact(batch)?;
                    pieces.extend((0..buckets).map(|b| (b, batch.clone())))
                }
            }
            send_all(&mut pieces, &mut output, &mut produced).await?;
        }
        for (bucket, coalescer) in coalescers.iter_mut().enumerate() {
            coalescer.finish_buffered_batch()?;
            while let Some(rest) = coalescer.next_completed_batch() {
                pieces.push((bucket, rest));
            }
        }
        send_all(&mut pieces, &mut output, &mut produced).await?;
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

/// Sends each `(bucket, batch)` of `pieces` to its bucket (each reader's copy of it), in order,
/// leaving `pieces` empty. A shared stage's copies wait in memory for their readers: what they
/// hold is reserved from the query's share, and the producer fails, naming the stage, when
/// the share cannot hold it.
async fn send_all(
    pieces: &mut Vec<(usize, RecordBatch)>,
    output: &mut Output,
    produced: &mut Produced,
) -> Result<()> {
    let buckets = output.buckets();
    for (bucket, piece) in pieces.drain(..) {
        produced.bytes += piece.get_array_memory_size() as u64;
        produced.pieces += 1;
        for reader in 1..output.readers {
            // A reader that went away (its query is ending) just stops receiving.
            let _ = output.senders[reader * buckets + bucket]
                .send(ShuffleItem::Batch(piece.clone()))
                .await;
        }
        let _ = output.senders[bucket].send(ShuffleItem::Batch(piece)).await;
    }
    if let Some(kept) = &mut output.kept {
        let held: usize = output
            .senders
            .iter()
            .map(|s| s.max_capacity() - s.capacity())
            .sum();
        let per_piece = produced.bytes / produced.pieces.max(1);
        kept.try_resize(held.saturating_mul(usize::try_from(per_piece).unwrap_or(usize::MAX)))
            .map_err(|e| {
                DataFusionError::ResourcesExhausted(format!(
                    "the output of a stage read by {} parts of the query is kept for the one \
                     that reads it later, and outgrew the query's memory: {e}",
                    output.readers
                ))
            })?;
    }
    Ok(())
}

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
    use std::time::Duration;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use datafusion::physical_plan::Partitioning;
    use futures::TryStreamExt;
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
        let (senders, _guard) = registry.register("q5", 1, 0, schema(), 1, 1);
        let producer = tokio::spawn(produce(
            input(vec![Ok(batch(&[7, 8]))]),
            Split::Broadcast,
            Output::single(senders),
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
        let (senders, _guard) = registry.register("q1", 1, 0, schema(), 2, 1);
        let producer = tokio::spawn(produce(
            input(vec![Ok(batch(&[1, 2])), Ok(batch(&[3]))]),
            Split::Broadcast,
            Output::single(senders),
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

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        let mut got: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let values = b.column(0).as_any().downcast_ref::<Int64Array>();
                values.expect("i64").values().to_vec()
            })
            .collect();
        got.sort_unstable();
        got
    }

    fn hash_split() -> Split {
        use datafusion::physical_expr::expressions::Column;
        let hash = Partitioning::Hash(vec![Arc::new(Column::new("x", 0))], 2);
        Split::Hash(
            BatchPartitioner::try_new(hash, datafusion::physical_plan::metrics::Time::new(), 0, 1)
                .expect("partitioner"),
        )
    }

    /// A producer of 200 batches of 1,000 rows into a stage of 2 buckets that 2 readers read,
    /// keeping its copies within a pool of `pool_bytes`.
    fn shared_producer(
        registry: &Arc<ShuffleRegistry>,
        query: &str,
        pool_bytes: usize,
    ) -> (
        Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
        tokio::task::JoinHandle<Result<Produced>>,
        BucketsGuard,
    ) {
        use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryPool};
        let (senders, guard) = registry.register(query, 1, 0, schema(), 2, 2);
        assert_eq!(senders.len(), 4);
        let inputs: Vec<Result<RecordBatch>> = (0..200)
            .map(|i| Ok(batch(&(i * 1000..(i + 1) * 1000).collect::<Vec<i64>>())))
            .collect();
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(pool_bytes));
        let output = Output {
            senders,
            readers: 2,
            kept: Some(MemoryConsumer::new("kept").register(&pool)),
        };
        let producer = tokio::spawn(produce(input(inputs), hash_split(), output));
        (pool, producer, guard)
    }

    /// A stage two parts of a plan read: each reader has its own copy of every bucket, and the
    /// second may start only after the first has read everything (a join on the coordinator
    /// reads its build side's gather to the end first) — with far more batches than a
    /// bucket buffers for one reader, the producer does not wait for the second.
    #[tokio::test]
    async fn a_shared_stage_keeps_each_readers_copy_until_it_reads() {
        let registry = Arc::new(ShuffleRegistry::default());
        let (pool, producer, _guard) = shared_producer(&registry, "q6", 256 << 20);
        let mut first = Vec::new();
        for bucket in 0..2 {
            let (_, receiver) = registry.claim(&read("q6", bucket)).expect("claimed");
            first.extend(
                tokio::time::timeout(
                    Duration::from_secs(30),
                    serve_bucket(receiver, read("q6", bucket)).try_collect::<Vec<_>>(),
                )
                .await
                .expect("the first reader is not held up by the second")
                .expect("the bucket ends well"),
            );
        }
        assert!(pool.reserved() > 0, "the second reader's copy is reserved");
        let mut second = Vec::new();
        for bucket in 2..4 {
            let (_, receiver) = registry.claim(&read("q6", bucket)).expect("claimed");
            second.extend(
                serve_bucket(receiver, read("q6", bucket))
                    .try_collect::<Vec<_>>()
                    .await
                    .expect("the bucket ends well"),
            );
        }
        let all: Vec<i64> = (0..200_000).collect();
        assert_eq!(values(&first), all);
        assert_eq!(values(&second), all);
        let produced = producer.await.expect("joined").expect("produced");
        assert_eq!(produced.rows, 200_000);
    }

    /// What a shared stage's copies hold is the query's memory: when it cannot hold them the
    /// producer fails with resources exhausted, saying why, and its readers get the error.
    #[tokio::test]
    async fn a_shared_stage_that_outgrows_the_query_memory_fails_saying_so() {
        let registry = Arc::new(ShuffleRegistry::default());
        let (_pool, producer, _guard) = shared_producer(&registry, "q7", 200_000);
        let error = tokio::time::timeout(Duration::from_secs(30), producer)
            .await
            .expect("the producer does not wait for readers that never come")
            .expect("joined")
            .expect_err("the copies outgrow 200 KB");
        let text = error.to_string();
        assert!(text.contains("Resources exhausted"), "{text}");
        assert!(text.contains("read by 2 parts of the query"), "{text}");
        let (_, receiver) = registry.claim(&read("q7", 3)).expect("claimed");
        let status = serve_bucket(receiver, read("q7", 3))
            .try_collect::<Vec<_>>()
            .await
            .expect_err("the reader gets the producer's error");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }

    /// A hash split sends each row to the bucket DataFusion's hash picks, and gathers the
    /// pieces of many batches into whole batches again (here: every bucket gets one batch
    /// from 40 inputs, and a bucket over `SHUFFLE_BATCH_ROWS` rows gets full batches first).
    #[tokio::test]
    async fn a_hash_split_regathers_its_pieces_into_whole_batches() {
        use datafusion::physical_expr::expressions::Column;
        let registry = Arc::new(ShuffleRegistry::default());
        let (senders, _guard) = registry.register("q4", 1, 0, schema(), 2, 1);
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
        let producer = tokio::spawn(produce(
            input(inputs),
            Split::Hash(partitioner),
            Output::single(senders),
        ));
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
            let got = values(&batches);
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
        let (senders, _guard) = registry.register("q2", 1, 0, schema(), 1, 1);
        let many: Vec<Result<RecordBatch>> = (0..(BUCKET_CAPACITY as i64 * 3))
            .map(|i| Ok(batch(&[i])))
            .collect();
        let producer = tokio::spawn(produce(
            input(many),
            Split::Broadcast,
            Output::single(senders),
        ));
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
        let (senders, _guard) = registry.register("q3", 1, 0, schema(), 1, 1);
        let failing = input(vec![
            Ok(batch(&[1])),
            Err(DataFusionError::External(Box::new(Status::data_loss(
                "s3://b/t/f.parquet is gone",
            )))),
        ]);
        let producer = tokio::spawn(produce(failing, Split::Broadcast, Output::single(senders)));
        let (_, receiver) = registry.claim(&read("q3", 0)).expect("claimed");
        let outcome: std::result::Result<Vec<RecordBatch>, Status> =
            serve_bucket(receiver, read("q3", 0)).try_collect().await;
        let status = outcome.expect_err("the producer's error");
        assert_eq!(status.code(), Code::DataLoss);
        assert!(status.message().contains("f.parquet"), "{status:?}");
        assert!(producer.await.expect("joins").is_err());

        let (senders, _guard) = registry.register("q4", 1, 0, schema(), 1, 1);
        let (_, receiver) = registry.claim(&read("q4", 0)).expect("claimed");
        drop(senders);
        let outcome: std::result::Result<Vec<RecordBatch>, Status> =
            serve_bucket(receiver, read("q4", 0)).try_collect().await;
        assert_eq!(outcome.expect_err("no end marker").code(), Code::Aborted);
    }
}
