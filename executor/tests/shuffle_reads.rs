//! A shuffle bucket read over Flight `DoGet`, as one executor reads another's: a consumer that
//! goes away mid-stream frees its producer (no task waits forever for a reader that left), a
//! bucket is served once, and a read not signed with the cluster's key is refused.

#![allow(clippy::disallowed_methods)] // a test spawns freely

mod common;

use std::time::Duration;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use common::{TestExecutor, ROWS_PER_BATCH};
use futures::{StreamExt, TryStreamExt};
use tonic::Code;

/// Far more than the bucket, the stream window and the connection buffers hold: the producer
/// can finish only if its reader reads it all, or goes away.
const BATCHES: usize = 128; // 32 MiB

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_goes_away_mid_stream_frees_its_producer() {
    let executor = TestExecutor::start().await;
    let producer = executor.producer("gone", 0, BATCHES);

    let data = executor
        .open("gone", 0)
        .await
        .expect("do_get")
        .map_err(FlightError::from);
    let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
    let first = batches
        .next()
        .await
        .expect("a first batch")
        .expect("read a batch");
    assert_eq!(first.num_rows(), ROWS_PER_BATCH);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !producer.is_finished(),
        "the producer waits for its reader (backpressure across gRPC)"
    );

    // The consumer goes away (its query failed elsewhere, or was cancelled).
    drop(batches);
    let produced = tokio::time::timeout(Duration::from_secs(30), producer)
        .await
        .expect("a reader that went away still holds its producer")
        .expect("join")
        .expect("the producer ends well: its reader leaving is not its failure");
    assert_eq!(produced.rows, (BATCHES * ROWS_PER_BATCH) as u64);

    // The bucket was claimed once; a second read is NOT_FOUND at once, never a wait.
    let again = tokio::time::timeout(Duration::from_secs(10), executor.open("gone", 0))
        .await
        .expect("answered at once")
        .expect_err("served once");
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
    assert!(again.message().contains("query gone"), "{again:?}");
    executor.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_not_signed_with_the_cluster_key_is_refused_and_takes_nothing() {
    let executor = TestExecutor::start().await;
    let producer = executor.producer("forged", 0, 2);

    let forged_key = floe_proto::auth::ClusterSecret::new("some-other-cluster")
        .expect("secret")
        .shuffle_key();
    let ticket = executor.read_ticket("forged", 0, &forged_key);
    let mut client =
        arrow_flight::flight_service_client::FlightServiceClient::new(executor.channel.clone());
    let refused = client.do_get(ticket).await.expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // The bucket is still there for the real consumer, whole.
    let data = executor
        .open("forged", 0)
        .await
        .expect("do_get")
        .map_err(FlightError::from);
    let rows: usize = FlightRecordBatchStream::new_from_flight_data(data)
        .map_ok(|b| b.num_rows())
        .try_collect::<Vec<_>>()
        .await
        .expect("the real read")
        .into_iter()
        .sum();
    assert_eq!(rows, 2 * ROWS_PER_BATCH);
    producer.await.expect("join").expect("producer");
    executor.stop();
}
