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
//! An executor holds nothing that outlives a task: the plan, the files to read and the storage
//! settings all arrive in the task. It accepts tasks only with the token its coordinator gave
//! it at registration.

pub mod codec;
pub mod registration;
pub mod service;
pub mod shuffle;
pub mod status;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

pub use service::{ExecutorFlightService, ExecutorState};

/// How an executor is run.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The coordinator's control-plane URL, e.g. `http://127.0.0.1:50051`.
    pub coordinator_url: String,
    /// Address to listen on for tasks (port 0 picks one).
    pub bind: SocketAddr,
    /// Host name the coordinator reaches this executor at.
    pub advertise_host: String,
    /// Shared secret to present at registration, if the cluster has one.
    pub cluster_secret: Option<String>,
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

/// Starts an executor: binds its Flight service, then registers with the coordinator and keeps
/// heartbeating in the background.
pub async fn start(config: ExecutorConfig) -> std::io::Result<ExecutorHandle> {
    let listener = TcpListener::bind(config.bind).await?;
    let addr = listener.local_addr()?;
    let executor_id = format!("executor-{}", uuid::Uuid::new_v4().simple());
    let runtime = runtime_env(config.memory_limit).map_err(std::io::Error::other)?;
    let session = SessionContext::new_with_config_rt(
        SessionConfig::new().with_batch_size(config.batch_size),
        runtime,
    );
    let state = Arc::new(ExecutorState {
        executor_id: executor_id.clone(),
        task_token: RwLock::new(None),
        running_tasks: AtomicUsize::new(0),
        task_ctx: session.task_ctx(),
        shuffles: Arc::default(),
    });
    let service = FlightServiceServer::new(ExecutorFlightService::new(Arc::clone(&state)))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let (shutdown, mut stop) = watch::channel(false);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
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
    let cluster_secret = config.cluster_secret.clone();
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
                        endpoint,
                        cluster_secret,
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
