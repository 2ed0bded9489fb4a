//! # floe-coordinator — parse, plan, prune, distribute, stream, commit
//!
//! ```text
//!  Flight SQL client ──▶ flight_sql::FloeFlightSql ──▶ session::QueryEngine
//!      (cancel: cancel::RunRegistry)                  │ DDL → ddl (against the catalog)
//!                                                     │ queries, INSERT: DataFusion plan over
//!                                                     │ the Iceberg catalog (scan planning
//!                                                     ▼ prunes files)
//!                 stages::PlanStages cuts the plan into stages (hash shuffles, broadcasts, gathers)
//!                                                     ▼
//!                 remote::RemoteStageExec (the gather node) ──▶ scheduler::QueryRun: starts the
//!                 shuffle stages (graph), places each task (placement), runs the query again
//!                 when an executor is lost early (retry)
//!                                                     ▼
//!  executors ◀──DoGet(task)── scheduler::task ──▶ batches (or a write's commit) ──▶ client
//!  executors ──Challenge/Register/Heartbeat──▶ registry::ExecutorRegistry (proof of the
//!                                               cluster secret; session key per registration)
//! ```
//!
//! Guards on what a client can make the coordinator do: `limits` (statement size and depth,
//! planning on a large stack), `results` (writes run when executed; their counts are stored for
//! the ticket), `abandoned` (a result nobody reads is dropped), `cancel`.
//!
//! Flight SQL and the executors' control plane share one port.

#![cfg_attr(test, allow(clippy::disallowed_methods))] // tests spawn freely

pub mod abandoned;
pub mod admission;
pub mod broadcast;
pub mod build_reduction;
pub mod cancel;
pub mod client_auth;
pub mod ddl;
pub mod distinct_probe_keys;
pub mod error;
pub mod filter_estimates;
pub mod flight_sql;
mod insert_source;
pub mod keyed_aggregates;
pub mod limits;
mod metadata;
pub mod nested_aggregates;
pub mod not_in;
pub mod partial_aggregates;
pub mod placeholders;
pub mod plan_cache;
pub mod planned;
pub mod planned_statement;
pub mod registry;
pub mod remote;
pub mod results;
mod rewrite;
pub mod runtime_filters;
pub mod scheduler;
pub mod session;
mod session_templates;
pub mod settings;
pub mod shared_stages;
pub mod stages;
pub mod started;
pub mod statement_kind;
mod statements;
#[cfg(test)]
mod test_plans;
pub mod time_travel;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use floe_catalog::CatalogSettings;
use floe_proto::control_plane_server::ControlPlaneServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

pub use error::CoordinatorError;
pub use registry::ExecutorRegistry;

/// How a coordinator is run.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Address for Flight SQL and the control plane (port 0 picks one).
    pub bind: SocketAddr,
    /// The catalog and storage.
    pub catalog: CatalogSettings,
    /// Where tables' files may be: the warehouse and every `--storage-root` (tables are
    /// registered only from under them).
    pub storage_roots: Vec<String>,
    /// How often executors heartbeat.
    pub heartbeat_interval: Duration,
    /// How long a silent executor stays registered.
    pub executor_expiry: Duration,
    /// The secret executors must prove they hold to be admitted (never sent).
    pub cluster_secret: floe_proto::auth::ClusterSecret,
    /// Memory for the operators that run on the coordinator; they spill beyond it.
    pub memory_limit: usize,
    /// The most memory one query may hold in each process (coordinator and each executor);
    /// None: only the processes' own limits apply. Sessions may lower it.
    pub query_memory_limit: Option<u64>,
    /// How many statements run at once, and how many wait.
    pub admission: admission::AdmissionLimits,
    /// Refuse INSERT and DDL: clients may only query.
    pub read_only: bool,
    /// A result its client leaves unread this long is dropped and its query stopped.
    pub result_idle_timeout: Duration,
    /// Who may sign in (None: client authentication is off, every caller is an admin).
    pub users: Option<users::Users>,
    /// How long a client's bearer token is valid.
    pub token_ttl: Duration,
    /// The certificate chain and key the port serves TLS with (None: plain text).
    pub tls: Option<tonic::transport::Identity>,
    /// Also serve the control plane alone, in plain text, here (e.g. for executors that do
    /// not hold the CA of a TLS port; the control plane authenticates with the cluster secret).
    pub control_bind: Option<SocketAddr>,
}

/// A running coordinator.
pub struct CoordinatorHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where executors register: the separate control-plane port, or `addr`.
    pub control_addr: SocketAddr,
    /// Whether `addr` speaks TLS.
    pub tls: bool,
    /// Its executors.
    pub registry: ExecutorRegistry,
    engine: session::QueryEngine,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    reaper: tokio::task::JoinHandle<()>,
}

impl CoordinatorHandle {
    /// How many statements it has planned.
    pub fn statements_planned(&self) -> u64 {
        self.engine.statements_planned()
    }

    /// How many runs ran a copy of a kept physical plan.
    pub fn runs_from_kept_physical(&self) -> u64 {
        self.engine.runs_from_kept_physical()
    }

    /// Stops serving.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.reaper.abort();
        let _ = self.server.await;
    }

    /// Waits until the server stops.
    pub async fn wait(self) -> Result<(), tonic::transport::Error> {
        let result = match self.server.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        };
        self.reaper.abort();
        result
    }
}

/// Errors starting a coordinator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The catalog could not be opened.
    #[error("cannot open the catalog: {0}")]
    Catalog(#[from] floe_engine::FloeError),
    /// The port could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// A server that speaks TLS with `identity`, or plain text.
fn server_builder(
    identity: Option<tonic::transport::Identity>,
) -> Result<tonic::transport::Server, StartError> {
    let builder = tonic::transport::Server::builder();
    match identity {
        None => Ok(builder),
        Some(identity) => builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| StartError::Io(std::io::Error::other(format!("TLS: {e}")))),
    }
}

/// Opens the catalog, binds the port and serves Flight SQL and the control plane.
#[allow(
    clippy::disallowed_methods,
    reason = "the servers and the reaper run until the handle shuts them down"
)]
pub async fn start(config: CoordinatorConfig) -> Result<CoordinatorHandle, StartError> {
    let swap = floe_catalog::connect::metadata_committer(&config.catalog).await?;
    // Loads are served from tables already read while the catalog points at the same file.
    let catalog: Arc<dyn iceberg::Catalog> = floe_catalog::cache::CachedCatalog::wrap(
        floe_catalog::connect(&config.catalog).await?,
        swap.clone(),
    );
    let listener = TcpListener::bind(config.bind).await?;
    let addr = listener.local_addr()?;
    let registry = ExecutorRegistry::new(
        config.heartbeat_interval,
        config.executor_expiry,
        config.cluster_secret.clone(),
    );
    let runtime = floe_engine::runtime::runtime_env(config.memory_limit)
        .map_err(|e| StartError::Io(std::io::Error::other(e)))?;
    let engine = session::QueryEngine::new(catalog, registry.clone(), runtime)
        .read_only(config.read_only)
        .with_query_memory(config.query_memory_limit)
        .with_storage_roots(config.storage_roots.clone())
        .with_metadata_swap(swap);
    let authenticator = Arc::new(client_auth::Authenticator::new(
        config.users.clone(),
        config.cluster_secret.client_token_key(),
        config.token_ttl,
    ));
    let flight = FlightServiceServer::new(
        flight_sql::FloeFlightSql::new(engine.clone())
            .with_result_idle_timeout(config.result_idle_timeout)
            .with_admission(config.admission),
    )
    .max_decoding_message_size(floe_engine::runtime::MAX_MESSAGE_SIZE)
    .max_encoding_message_size(floe_engine::runtime::MAX_MESSAGE_SIZE);
    let (shutdown, mut stop) = watch::channel(false);
    let builder = server_builder(config.tls.clone())?;
    let server = tokio::spawn(
        builder
            .layer(floe_engine::status::DecodeErrorsAreInvalidArgument)
            .layer(client_auth::ClientAuth(authenticator))
            .add_service(flight)
            .add_service(ControlPlaneServer::new(registry.clone()))
            .serve_with_incoming_shutdown(
                // No Nagle: small messages (a query's plan, a batch) must not wait for an ACK.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stop.changed().await;
                },
            ),
    );
    let control_addr = match config.control_bind {
        None => addr,
        Some(bind) => {
            let listener = TcpListener::bind(bind).await?;
            let control_addr = listener.local_addr()?;
            let mut stop = shutdown.subscribe();
            // Ends with the main server (its shutdown signal); not awaited separately.
            tokio::spawn(
                tonic::transport::Server::builder()
                    .layer(floe_engine::status::DecodeErrorsAreInvalidArgument)
                    .add_service(ControlPlaneServer::new(registry.clone()))
                    .serve_with_incoming_shutdown(
                        TcpIncoming::from(listener).with_nodelay(Some(true)),
                        async move {
                            let _ = stop.changed().await;
                        },
                    ),
            );
            control_addr
        }
    };
    let reaper = tokio::spawn(registry.clone().reap_forever());
    Ok(CoordinatorHandle {
        addr,
        control_addr,
        tls: config.tls.is_some(),
        registry,
        engine,
        shutdown,
        server,
        reaper,
    })
}
