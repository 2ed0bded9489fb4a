//! One executor's Flight service on port 0, with shuffle producers fed by the test, and signed
//! shuffle reads of their buckets — the executor as another executor's consumer sees it.

#![allow(dead_code)] // each test file uses its own part of the fixture

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::{FlightData, Ticket};
use datafusion::common::Result;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use floe_engine::shuffle::{produce, Output, Produced, Split};
use floe_engine::StorageSettings;
use floe_executor::{ExecutorFlightService, ExecutorState};
use floe_proto::auth::{shuffle_read_mac, ClusterSecret, Tag};
use floe_proto::{floe_ticket::Kind, FloeTicket, ShuffleRead, Signed, PROTOCOL_VERSION};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Status, Streaming};

/// Rows of one test batch: 256 KiB of Int64.
pub const ROWS_PER_BATCH: usize = 32 * 1024;

/// An executor serving Flight on loopback.
pub struct TestExecutor {
    /// Its state (the shuffle registry producers register in).
    pub state: Arc<ExecutorState>,
    /// The cluster secret it trusts.
    pub secret: ClusterSecret,
    /// A channel to it, as another executor opens one.
    pub channel: floe_engine::runtime::InternalChannel,
    server: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
}

impl TestExecutor {
    /// Starts one on port 0.
    pub async fn start() -> Self {
        let secret = ClusterSecret::new("executor-test-secret").expect("secret");
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
        let channel =
            floe_engine::runtime::internal_channel(&format!("http://{addr}")).expect("channel");
        Self {
            state,
            secret,
            channel,
            server,
        }
    }

    /// A broadcast producer task `task` of stage 1 of `query` with one bucket, fed `batches`
    /// test batches; it ends when its bucket was read to its end or its reader went away.
    pub fn producer(&self, query: &str, task: u32, batches: usize) -> JoinHandle<Result<Produced>> {
        let schema = schema();
        let (senders, guard) =
            self.state
                .shuffles
                .register(query, 1, task, Arc::clone(&schema), 1, 1);
        let input: Vec<_> = (0..batches).map(|_| Ok(batch(&schema))).collect();
        let input = Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(input),
        ));
        tokio::spawn(async move {
            let _guard = guard;
            produce(input, Split::Broadcast, Output::single(senders)).await
        })
    }

    /// The signed ticket of bucket 0 of producer `task` of `query`, MAC'd with `key`.
    pub fn read_ticket(&self, query: &str, task: u32, key: &Tag) -> Ticket {
        let body = ShuffleRead {
            protocol_version: PROTOCOL_VERSION,
            query_id: query.into(),
            stage_id: 1,
            task,
            bucket: 0,
            nonce: floe_engine::runtime::random_nonce().to_vec(),
        }
        .encode_to_vec();
        let ticket = FloeTicket {
            kind: Some(Kind::ShuffleRead(Signed {
                mac: shuffle_read_mac(key, &body).to_vec(),
                body,
            })),
        };
        Ticket::new(ticket.encode_to_vec())
    }

    /// Opens bucket 0 of producer `task` of `query` as another executor of the cluster does.
    pub async fn open(
        &self,
        query: &str,
        task: u32,
    ) -> std::result::Result<Streaming<FlightData>, Status> {
        let ticket = self.read_ticket(query, task, &self.secret.shuffle_key());
        let mut client = FlightServiceClient::new(self.channel.clone());
        Ok(client.do_get(ticket).await?.into_inner())
    }

    /// Stops the server.
    pub fn stop(self) {
        self.server.abort();
    }
}

/// The schema of the test batches.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
}

/// One test batch.
pub fn batch(schema: &SchemaRef) -> RecordBatch {
    let values: ArrayRef = Arc::new(Int64Array::from_iter_values(0..ROWS_PER_BATCH as i64));
    RecordBatch::try_new(Arc::clone(schema), vec![values]).expect("batch")
}
