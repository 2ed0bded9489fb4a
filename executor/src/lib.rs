//! # floe-executor — stateless task runner
//!
//! ```text
//!  coordinator ◀──Register / Heartbeat── registration loop (its own thread)
//!  coordinator ──DoGet(TaskDefinition)──▶ ExecutorFlightService ──▶ decode fragment (floe_engine::codec)
//!                                              │ execute one partition (DataFusion), or fill
//!                                              │ shuffle buckets, or write data files
//!  coordinator ◀──FlightData batches + TaskMetrics trailer──┘
//!  other executors ◀──DoGet(ShuffleRead): buckets of this executor's shuffle producers
//!                                                  (floe_engine::shuffle)
//! ```
//!
//! An executor holds nothing that outlives a task but its own settings: the plan and the files
//! to read arrive in the task; storage settings and credentials are the executor's own, and it
//! reads and writes only under its storage roots. It is admitted by proving the cluster
//! secret, and runs only tasks MACed with the key of its registration (`floe_proto::auth`).

#![cfg_attr(test, allow(clippy::disallowed_methods))] // tests spawn freely

pub mod registration;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

pub use service::{ExecutorFlightService, ExecutorState};

use floe_engine::runtime::MAX_MESSAGE_SIZE;
use floe_engine::StorageSettings;
use floe_proto::auth::ClusterSecret;

/// How an executor is run.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The coordinator's control-plane URL, e.g. `http://127.0.0.1:50051`, or `https://…`
    /// when it serves TLS.
    pub coordinator_url: String,
    /// The CA certificate (PEM) an `https` coordinator's certificate is checked against.
    pub coordinator_ca: Option<tonic::transport::Certificate>,
    /// Address to listen on for tasks (port 0 picks one).
    pub bind: SocketAddr,
    /// Host name the coordinator reaches this executor at.
    pub advertise_host: String,
    /// The cluster secret this executor proves at registration (never sent).
    pub cluster_secret: ClusterSecret,
    /// This executor's own storage settings: tasks carry none.
    pub storage: StorageSettings,
    /// The storage roots (warehouse, table locations): a task naming any other path is
    /// refused, whoever sent it.
    pub roots: Vec<String>,
    /// Rows per batch.
    pub batch_size: usize,
    /// Memory the executor's operators may hold; sorts, aggregations and joins spill to local
    /// disk beyond it, and a query that still cannot fit fails with `ResourceExhausted`.
    pub memory_limit: usize,
    /// How many tasks of a stage it runs at once, told to the coordinator at registration (each
    /// task runs on one thread): the cores it may use.
    pub task_slots: u32,
    /// Bytes of decoded columns kept for lookups (`floe_engine::scan::hot`), at most a
    /// sixteenth of `memory_limit`; 0 keeps none.
    pub lookup_cache: usize,
}

/// A running executor.
pub struct ExecutorHandle {
    /// Where its Flight service listens.
    pub addr: SocketAddr,
    /// Its id.
    pub executor_id: String,
    shutdown: watch::Sender<bool>,
    /// Keeps the service reachable from this process without a socket.
    _in_process: floe_engine::runtime::InProcessService,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl ExecutorHandle {
    /// Stops serving and registering.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
    }

    /// Waits until the server stops on its own (an error or shutdown).
    pub async fn wait(self) -> Result<(), tonic::transport::Error> {
        match self.server.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

/// Requests a peer may cancel before the executor has taken them, per connection (see `start`).
const MAX_PENDING_RESETS: usize = 1024;

/// Starts an executor: binds its Flight service, then registers with the coordinator and keeps
/// heartbeating in the background.
#[allow(
    clippy::disallowed_methods,
    reason = "the server runs until the handle shuts it down"
)]
pub async fn start(config: ExecutorConfig) -> std::io::Result<ExecutorHandle> {
    if config.coordinator_url.starts_with("https://") && config.coordinator_ca.is_none() {
        return Err(std::io::Error::other(
            "an https:// coordinator needs the CA certificate that signed its certificate \
             (--coordinator-ca FILE)",
        ));
    }
    let listener = TcpListener::bind(config.bind).await?;
    let addr = listener.local_addr()?;
    let executor_id = format!("executor-{}", uuid::Uuid::new_v4().simple());
    let runtime =
        floe_engine::runtime::runtime_env(config.memory_limit).map_err(std::io::Error::other)?;
    // Decoded columns kept for lookups take at most a sixteenth of the memory limit.
    floe_engine::scan::hot::HotFiles::global()
        .set_limit(config.lookup_cache.min(config.memory_limit / 16));
    let mut session_config = SessionConfig::new().with_batch_size(config.batch_size);
    // A hash join's build side, pushed into the scan of its probe side (on by default, as in
    // DataFusion; the scan decides whether it also filters rows while decoding — see
    // `floe_engine::scan`'s tasks): TPC-H Q19 −30 %. `FLOE_JOIN_DYNAMIC_FILTERS=off` turns it
    // off, to compare in benchmarks.
    session_config
        .options_mut()
        .optimizer
        .enable_join_dynamic_filter_pushdown =
        std::env::var("FLOE_JOIN_DYNAMIC_FILTERS").map_or(true, |v| !v.eq_ignore_ascii_case("off"));
    let mut session = SessionContext::new_with_config_rt(session_config, runtime);
    floe_engine::checked::register(&mut session).map_err(std::io::Error::other)?;
    floe_engine::decimal_arith::register(&mut session).map_err(std::io::Error::other)?;
    floe_engine::one_row::register(&mut session).map_err(std::io::Error::other)?;
    let state = Arc::new(ExecutorState::new(
        executor_id.clone(),
        config.cluster_secret.clone(),
        session.task_ctx(),
        &config.storage,
        config.roots.clone(),
    ));
    let service = FlightServiceServer::new(ExecutorFlightService::new(Arc::clone(&state)))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let (shutdown, mut stop) = watch::channel(false);
    let endpoint = format!("http://{}:{}", config.advertise_host, addr.port());
    // Tasks from a coordinator or executor in this process (`floe standalone`) reach the
    // service directly, with the same checks as over the network.
    let in_process = floe_engine::runtime::serve_in_process(
        &endpoint,
        tower::Layer::layer(
            &floe_engine::status::DecodeErrorsAreInvalidArgument,
            service.clone(),
        ),
    );
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            // The coordinator starts a query's tasks at once and, when one cannot start, drops
            // the others' requests unanswered: h2's default of 20 such resets per connection
            // would close the connection (its rapid-reset guard) under the next query.
            .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
            .layer(floe_engine::status::DecodeErrorsAreInvalidArgument)
            .add_service(service)
            .serve_with_incoming_shutdown(
                // No Nagle: small messages (a query's plan, a batch) must not wait for an ACK.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stop.changed().await;
                },
            ),
    );
    // Heartbeats get their own thread and runtime: tasks that keep every worker of the main
    // runtime busy (encoding and compressing Parquet) must not make a busy executor look dead.
    let coordinator_url = config.coordinator_url.clone();
    let coordinator_ca = config.coordinator_ca.clone();
    let task_slots = config.task_slots;
    let mut stop_heartbeats = shutdown.subscribe();
    std::thread::Builder::new()
        .name("floe-heartbeat".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("cannot start the heartbeat runtime: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                tokio::select! {
                    _ = registration::run(
                        coordinator_url,
                        coordinator_ca,
                        endpoint,
                        task_slots,
                        state,
                        Duration::from_secs(1),
                    ) => {}
                    _ = stop_heartbeats.changed() => {}
                }
            });
        })?;
    Ok(ExecutorHandle {
        addr,
        executor_id,
        shutdown,
        _in_process: in_process,
        server,
    })
}
