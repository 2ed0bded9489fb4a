//! Streams between Floe's processes are flow-controlled one by one: streams a reader has
//! stopped reading never stall another stream on the same connection.
//!
//! Five shuffle producers on one executor each fill one bucket with 12 MiB. A consumer on one
//! channel opens four of the buckets and reads nothing from them (as a hash join does with its
//! probe side while it builds), then reads the fifth to its end. With HTTP/2's shared
//! connection window (5 MiB by default) the four stalled streams would fill it and the fifth
//! would never receive a byte: the deadlock that hung TPC-H Q18.

#![allow(clippy::disallowed_methods)] // a test spawns freely

mod common;

use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use common::{TestExecutor, ROWS_PER_BATCH};
use futures::TryStreamExt;

const BATCHES: usize = 48; // 12 MiB per bucket

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_do_not_block_others_on_the_same_connection() {
    let executor = TestExecutor::start().await;
    let producers: Vec<_> = (0..5u32)
        .map(|task| executor.producer("q", task, BATCHES))
        .collect();

    // Four streams opened and left unread (each buffers up to its own window).
    let mut stalled = Vec::new();
    for task in 0..4 {
        stalled.push(executor.open("q", task).await.expect("do_get"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let read_all = async {
        let data = executor
            .open("q", 4)
            .await
            .expect("do_get")
            .map_err(FlightError::from);
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(data)
            .try_collect()
            .await
            .expect("read the fifth bucket");
        batches.iter().map(|b| b.num_rows()).sum::<usize>()
    };
    let rows = tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("the fifth stream stalled behind the unread ones (shared connection window)");
    assert_eq!(rows, BATCHES * ROWS_PER_BATCH);

    // The stalled streams are intact: each still delivers its whole bucket.
    for stream in stalled {
        let data = stream.map_err(FlightError::from);
        let rows: usize = FlightRecordBatchStream::new_from_flight_data(data)
            .map_ok(|b| b.num_rows())
            .try_collect::<Vec<_>>()
            .await
            .expect("stalled stream")
            .into_iter()
            .sum();
        assert_eq!(rows, BATCHES * ROWS_PER_BATCH);
    }
    for producer in producers {
        producer.await.expect("join").expect("producer");
    }
    executor.stop();
}
