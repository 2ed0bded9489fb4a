//! # floe-executor — stateless task runner
//!
//! ```text
//!  coordinator ◀──Register / Heartbeat── registration loop (its own thread)
//!  coordinator ──DoGet(TaskDefinition)──▶ ExecutorFlightService ──▶ decode fragment (codec)
//!                                              │ execute one partition (DataFusion), or fill
//!                                              │ shuffle buckets, or write data files
//!  coordinator ◀──FlightData batches + TaskMetrics trailer──┘
//!  other executors ◀──DoGet(ShuffleRead): buckets of this executor's shuffle producers (shuffle)
//! ```
//!
//! An executor holds nothing that outlives a task but its own settings: the plan and the files
//! to read arrive in the task; storage settings and credentials are the executor's own, and it
//! reads and writes only under its storage roots. It is admitted by proving the cluster
//! secret, and runs only tasks MACed with the key of its registration (`floe_proto::auth`).

pub mod checked;
pub mod codec;
pub mod cooperative;
pub mod memory;
pub mod registration;
pub mod service;
pub mod shuffle;
pub mod status;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

pub use service::{ExecutorFlightService, ExecutorState};

use floe_catalog::StorageSettings;
use floe_proto::auth::{ClusterSecret, Tag};

/// 32 fresh random bytes (nonces).
pub fn random_nonce() -> Tag {
    use rand::RngCore;
    let mut bytes = [0u8; floe_proto::auth::LEN];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

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
}

/// The default executor memory limit: `share` of the machine's memory (all of it when the
/// total cannot be read).
pub fn default_memory_limit(share: f64) -> usize {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(8 << 30);
    ((total as f64) * share) as usize
}

/// A running executor.
pub struct ExecutorHandle {
    /// Where its Flight service listens.
    pub addr: SocketAddr,
    /// Its id.
    pub executor_id: String,
    shutdown: watch::Sender<bool>,
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

/// A runtime whose operators share `memory_limit` fairly and spill to the OS temp folder
/// beyond it; allocation failures name the largest consumers.
pub fn runtime_env(memory_limit: usize) -> datafusion::common::Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(memory_limit),
            NonZeroUsize::new(5).expect("5 > 0"),
        )))
        .build_arc()
}

/// Maximum size of a gRPC message either side accepts (plans of many files are large).
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

/// Bytes a peer may send on one stream before its reader takes them (HTTP/2 stream window).
pub const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// A lazily connected channel between Floe's own processes (coordinator → executor, executor →
/// executor), on which every stream is flow-controlled on its own.
///
/// HTTP/2 multiplexes all streams to one peer over one connection, and by default the
/// connection has a shared receive window (5 MiB in hyper) that data a reader has not taken yet
/// keeps occupied. Floe's streams are read at very different paces: a hash join reads its build
/// side before it touches its probe side, a merge reads the input holding the smallest key, a
/// slow client stalls its query's result streams. With a shared window a few stalled streams
/// (2 MiB each) fill it, and every other stream on the connection stops too, including the one
/// the stalled readers are waiting for: a deadlock across queries and stages that no single
/// plan shows. The connection window is therefore as large as HTTP/2 allows, so that only each
/// stream's own window (bounded, [`STREAM_WINDOW`]) applies: a stalled stream holds at most
/// that much and never blocks another.
pub fn internal_channel(url: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(MAX_CONNECTION_WINDOW)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// The largest HTTP/2 window (2^31 - 1).
const MAX_CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// Starts an executor: binds its Flight service, then registers with the coordinator and keeps
/// heartbeating in the background.
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
    let runtime = runtime_env(config.memory_limit).map_err(std::io::Error::other)?;
    let mut session = SessionContext::new_with_config_rt(
        SessionConfig::new().with_batch_size(config.batch_size),
        runtime,
    );
    checked::register(&mut session).map_err(std::io::Error::other)?;
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
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(status::DecodeErrorsAreInvalidArgument)
            .add_service(service)
            .serve_with_incoming_shutdown(
                // No Nagle: small messages (a query's plan, a batch) must not wait for an ACK.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stop.changed().await;
                },
            ),
    );
    let endpoint = format!("http://{}:{}", config.advertise_host, addr.port());
    // Heartbeats get their own thread and runtime: tasks that keep every worker of the main
    // runtime busy (encoding and compressing Parquet) must not make a busy executor look dead.
    let coordinator_url = config.coordinator_url.clone();
    let coordinator_ca = config.coordinator_ca.clone();
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
        server,
    })
}
