//! The Rust test fixture: a whole Floe cluster in this process — a coordinator and executors on
//! port 0 over a local warehouse in a temporary folder — and a Flight SQL client for it.
//! `Cluster::shutdown` stops every part; dropping the cluster removes the warehouse.

#![allow(dead_code)] // each test file uses its own part of the fixture

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult,
    ProstMessageExt,
};
use arrow_flight::{Action, FlightData, FlightDescriptor, FlightInfo};
use floe_catalog::CatalogSettings;
use floe_coordinator::{CoordinatorConfig, CoordinatorHandle};
use floe_executor::{ExecutorConfig, ExecutorHandle};
use floe_proto::auth::ClusterSecret;
use futures::TryStreamExt;
use prost::Message;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// How long the fixture waits for the cluster to come up.
const STARTUP: Duration = Duration::from_secs(30);
/// How long one statement may take before a test fails instead of hanging.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);

/// A running in-process cluster.
pub struct Cluster {
    /// Where Flight SQL listens.
    pub addr: SocketAddr,
    /// The warehouse folder (tables and the SQLite catalog).
    pub warehouse: tempfile::TempDir,
    coordinator: CoordinatorHandle,
    executors: Vec<ExecutorHandle>,
}

impl Cluster {
    /// A coordinator and `executors` executors of two task slots each, every executor
    /// registered.
    pub async fn start(executors: usize) -> Cluster {
        Cluster::with_slots(&vec![2; executors]).await
    }

    /// A coordinator and one executor per entry of `slots`, with that many task slots.
    pub async fn with_slots(slots: &[u32]) -> Cluster {
        let executors = slots.len();
        let warehouse = tempfile::tempdir().expect("a temporary warehouse folder");
        let dir = warehouse.path().canonicalize().expect("warehouse path");
        let settings = CatalogSettings::local(&dir);
        let roots = vec![settings.warehouse.clone()];
        let secret = ClusterSecret::from_random(floe_engine::runtime::random_nonce());
        let loopback = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0);
        let memory = 512 << 20;
        let coordinator = floe_coordinator::start(CoordinatorConfig {
            bind: loopback,
            catalog: settings.clone(),
            storage_roots: roots.clone(),
            heartbeat_interval: Duration::from_millis(500),
            executor_expiry: Duration::from_secs(60),
            cluster_secret: secret.clone(),
            memory_limit: memory,
            query_memory_limit: None,
            admission: floe_coordinator::admission::AdmissionLimits::default(),
            read_only: false,
            result_idle_timeout: Duration::from_secs(300),
            users: None,
            token_ttl: Duration::from_secs(3600),
            tls: None,
            control_bind: None,
        })
        .await
        .expect("the coordinator starts");
        let mut started = Vec::new();
        for &task_slots in slots {
            started.push(
                floe_executor::start(ExecutorConfig {
                    coordinator_url: format!("http://{}", coordinator.control_addr),
                    coordinator_ca: None,
                    bind: loopback,
                    advertise_host: Ipv4Addr::LOCALHOST.to_string(),
                    cluster_secret: secret.clone(),
                    storage: settings.storage.clone(),
                    roots: roots.clone(),
                    batch_size: 8192,
                    memory_limit: memory,
                    task_slots,
                    lookup_cache: floe_engine::scan::hot::DEFAULT_BYTES,
                })
                .await
                .expect("an executor starts"),
            );
        }
        let registered = async {
            while coordinator.registry.live().len() < executors {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(STARTUP, registered)
            .await
            .expect("every executor registers");
        Cluster {
            addr: coordinator.addr,
            warehouse,
            coordinator,
            executors: started,
        }
    }

    /// A Flight SQL connection to the coordinator.
    pub async fn connect(&self) -> Connection {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("url")
            .connect()
            .await
            .expect("the coordinator accepts connections");
        Connection {
            client: FlightServiceClient::new(channel).max_decoding_message_size(256 << 20),
            token: None,
        }
    }

    /// How many statements the coordinator has planned.
    pub fn statements_planned(&self) -> u64 {
        self.coordinator.statements_planned()
    }

    pub fn runs_from_kept_physical(&self) -> u64 {
        self.coordinator.runs_from_kept_physical()
    }

    /// Stops the executors, then the coordinator.
    pub async fn shutdown(self) {
        for executor in self.executors {
            executor.shutdown().await;
        }
        self.coordinator.shutdown().await;
    }
}

/// A Flight SQL connection as a driver keeps one: a client, and the bearer token the
/// coordinator last handed it (a connection's settings travel in it: `USE`, `SET TIME ZONE`).
#[derive(Clone)]
pub struct Connection {
    client: FlightServiceClient<Channel>,
    token: Option<MetadataValue<Ascii>>,
}

impl Connection {
    /// Runs `sql` as a Flight SQL statement (GetFlightInfo, then DoGet of every endpoint): its
    /// batches, or the status the coordinator answered with.
    pub async fn run(&mut self, sql: &str) -> Result<Vec<RecordBatch>, Status> {
        let command = CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        };
        let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        bounded(sql, self.fetch(descriptor)).await
    }

    /// Runs each statement in turn, failing the test (naming the statement) on an error.
    pub async fn run_each<S: AsRef<str>>(&mut self, statements: impl IntoIterator<Item = S>) {
        for sql in statements {
            let sql = sql.as_ref();
            if let Err(status) = self.run(sql).await {
                let start: String = sql.chars().take(60).collect();
                panic!("{start}: {status:?}");
            }
        }
    }

    /// Runs `sql` as a prepared statement (CreatePreparedStatement; DoPut of `parameters`, one
    /// row, when there are any; GetFlightInfo of the handle the DoPut answered; DoGet).
    pub async fn run_prepared(
        &mut self,
        sql: &str,
        parameters: Option<RecordBatch>,
    ) -> Result<Vec<RecordBatch>, Status> {
        let handle = self.prepare(sql).await?;
        self.execute_prepared(sql, handle, parameters).await
    }

    /// Prepares `sql` (CreatePreparedStatement): the statement's handle.
    pub async fn prepare(&mut self, sql: &str) -> Result<prost::bytes::Bytes, Status> {
        let work = async {
            let request = ActionCreatePreparedStatementRequest {
                query: sql.to_string(),
                transaction_id: None,
            };
            let action = Action::new("CreatePreparedStatement", request.as_any().encode_to_vec());
            let request = self.request(action);
            let mut results = self.client.do_action(request).await?.into_inner();
            let body = results
                .message()
                .await?
                .ok_or_else(|| Status::internal("CreatePreparedStatement answered nothing"))?
                .body;
            let prepared: ActionCreatePreparedStatementResult = Any::decode(body)
                .ok()
                .and_then(|any| any.unpack().ok().flatten())
                .ok_or_else(|| Status::internal("not an ActionCreatePreparedStatementResult"))?;
            Ok(prepared.prepared_statement_handle)
        };
        bounded(sql, work).await
    }

    /// Executes the prepared statement `handle` (of `sql`): DoPut of `parameters`, one row,
    /// when there are any; GetFlightInfo of the handle the DoPut answered; DoGet.
    pub async fn execute_prepared(
        &mut self,
        sql: &str,
        mut handle: prost::bytes::Bytes,
        parameters: Option<RecordBatch>,
    ) -> Result<Vec<RecordBatch>, Status> {
        let work = async {
            if let Some(parameters) = parameters {
                let command = CommandPreparedStatementQuery {
                    prepared_statement_handle: handle.clone(),
                };
                let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
                let data: Vec<FlightData> = FlightDataEncoderBuilder::new()
                    .with_flight_descriptor(Some(descriptor))
                    .build(futures::stream::iter([Ok(parameters)]))
                    .try_collect()
                    .await
                    .map_err(|e| Status::internal(format!("encoding parameters: {e}")))?;
                let request = self.request(futures::stream::iter(data));
                let mut answer = self.client.do_put(request).await?.into_inner();
                if let Some(put) = answer.message().await? {
                    let result = DoPutPreparedStatementResult::decode(put.app_metadata)
                        .map_err(|e| Status::internal(format!("DoPut answer: {e}")))?;
                    if let Some(bound) = result.prepared_statement_handle {
                        handle = bound;
                    }
                }
            }
            let command = CommandPreparedStatementQuery {
                prepared_statement_handle: handle,
            };
            self.fetch(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()))
                .await
        };
        bounded(sql, work).await
    }

    /// GetFlightInfo of `descriptor`, then DoGet of every endpoint, keeping the token the
    /// answers hand out.
    async fn fetch(&mut self, descriptor: FlightDescriptor) -> Result<Vec<RecordBatch>, Status> {
        let request = self.request(descriptor);
        let answer = self.client.get_flight_info(request).await?;
        self.keep_token(answer.metadata());
        let info: FlightInfo = answer.into_inner();
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let ticket = endpoint
                .ticket
                .ok_or_else(|| Status::internal("an endpoint without a ticket"))?;
            let request = self.request(ticket);
            let answer = self.client.do_get(request).await?;
            self.keep_token(answer.metadata());
            let decoded: Vec<RecordBatch> =
                arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                    answer
                        .into_inner()
                        .map_err(arrow_flight::error::FlightError::from),
                )
                .try_collect()
                .await
                .map_err(|e| match e {
                    arrow_flight::error::FlightError::Tonic(status) => *status,
                    other => Status::internal(other.to_string()),
                })?;
            batches.extend(decoded);
        }
        Ok(batches)
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }

    fn keep_token(&mut self, metadata: &MetadataMap) {
        if let Some(token) = metadata.get("authorization") {
            self.token = Some(token.clone());
        }
    }
}

/// `work`, failing instead of hanging past [`STATEMENT_TIMEOUT`].
async fn bounded<T>(
    sql: &str,
    work: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(STATEMENT_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded(format!("test timeout: {sql}"))))
}

/// The text of an `EXPLAIN [ANALYZE]` statement's answer: every row's last column, one line
/// each (the plan's lines).
pub async fn plan_text(cluster: &Cluster, sql: &str) -> String {
    use arrow::array::{Array, StringArray};
    let mut connection = cluster.connect().await;
    let batches = connection
        .run(sql)
        .await
        .unwrap_or_else(|s| panic!("{sql}: {s:?}"));
    let mut text = String::new();
    for batch in &batches {
        let plans = batch
            .column(batch.num_columns() - 1)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("plan text");
        for row in 0..batch.num_rows() {
            if !plans.is_null(row) {
                text.push_str(plans.value(row));
                text.push('\n');
            }
        }
    }
    text
}
