//! Streams between Floe's processes are flow-controlled one by one: streams a reader has
//! stopped reading never stall another stream on the same connection.
//!
//! Five shuffle producers on one executor each fill one bucket with 12 MiB. A consumer on one
//! channel opens four of the buckets and reads nothing from them (as a hash join does with its
//! probe side while it builds), then reads the fifth to its end. With HTTP/2's shared
//! connection window (5 MiB by default) the four stalled streams would fill it and the fifth
//! would never receive a byte: the deadlock that hung TPC-H Q18.

#![allow(clippy::disallowed_methods)] // a test spawns freely

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::Ticket;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use floe_engine::shuffle::{produce, Split};
use floe_engine::StorageSettings;
use floe_executor::{ExecutorFlightService, ExecutorState};
use floe_proto::auth::{shuffle_read_mac, ClusterSecret};
use floe_proto::{floe_ticket::Kind, FloeTicket, ShuffleRead, Signed, PROTOCOL_VERSION};
use futures::TryStreamExt;
use prost::Message;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

const ROWS_PER_BATCH: usize = 32 * 1024; // 256 KiB of Int64
const BATCHES: usize = 48; // 12 MiB per bucket

fn batch(schema: &Arc<Schema>) -> RecordBatch {
    let values: ArrayRef = Arc::new(Int64Array::from_iter_values(0..ROWS_PER_BATCH as i64));
    RecordBatch::try_new(Arc::clone(schema), vec![values]).expect("batch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_do_not_block_others_on_the_same_connection() {
    let secret = ClusterSecret::new("flow-control-test-secret").expect("secret");
    let state = Arc::new(ExecutorState::new(
        "executor-test".into(),
        secret.clone(),
        SessionContext::new().task_ctx(),
        &StorageSettings::default(),
        vec!["file:///nowhere".into()],
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = FlightServiceServer::new(ExecutorFlightService::new(Arc::clone(&state)));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let mut producers = Vec::new();
    for task in 0..5u32 {
        let (senders, guard) = state
            .shuffles
            .register("q", 1, task, Arc::clone(&schema), 1);
        let batches: Vec<_> = (0..BATCHES).map(|_| Ok(batch(&schema))).collect();
        let input = Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&schema),
            futures::stream::iter(batches),
        ));
        producers.push(tokio::spawn(async move {
            let _guard = guard;
            produce(input, Split::Broadcast, senders).await
        }));
    }

    let channel =
        floe_engine::runtime::internal_channel(&format!("http://{addr}")).expect("channel");
    let key = secret.shuffle_key();
    let open = |task: u32| {
        let body = ShuffleRead {
            protocol_version: PROTOCOL_VERSION,
            query_id: "q".into(),
            stage_id: 1,
            task,
            bucket: 0,
            nonce: floe_engine::runtime::random_nonce().to_vec(),
        }
        .encode_to_vec();
        let ticket = FloeTicket {
            kind: Some(Kind::ShuffleRead(Signed {
                mac: shuffle_read_mac(&key, &body).to_vec(),
                body,
            })),
        };
        let mut client = FlightServiceClient::new(channel.clone());
        async move {
            client
                .do_get(Ticket::new(ticket.encode_to_vec()))
                .await
                .expect("do_get")
                .into_inner()
        }
    };
    // Four streams opened and left unread (each buffers up to its own window).
    let mut stalled = Vec::new();
    for task in 0..4 {
        stalled.push(open(task).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let read_all = async {
        let data = open(4)
            .await
            .map_err(arrow_flight::error::FlightError::from);
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
        let data = stream.map_err(arrow_flight::error::FlightError::from);
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
    server.abort();
}
