//! Command-line flags (the CLI structs) and turning them into each role's config.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use floe_catalog::{CatalogKind, CatalogSettings, StorageSettings};
use floe_coordinator::users::{users_file_line, Role, Users};
use floe_coordinator::CoordinatorConfig;
use floe_executor::ExecutorConfig;
use floe_proto::auth::ClusterSecret;

/// Floe: a distributed SQL engine for Iceberg tables, spoken to over Arrow Flight SQL.
#[derive(Debug, Parser)]
#[command(name = "floe", version)]
pub struct Cli {
    /// A TOML file of settings, keyed by long flag name (e.g. `warehouse = "s3://b/w"`).
    #[arg(long, global = true, env = "FLOE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The roles.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A coordinator and executors in one process (the embedded default).
    Standalone(StandaloneArgs),
    /// The coordinator: Flight SQL front door, planner and scheduler.
    Coordinator(CoordinatorArgs),
    /// An executor: runs plan fragments for its coordinator.
    Executor(ExecutorArgs),
    /// A Flight SQL shell: runs statements and prints their results.
    Sql(crate::shell::SqlArgs),
    /// Prints a users-file line (`name:argon2-hash:role`) for a password read from stdin.
    Passwd(PasswdArgs),
}

/// Flags of `floe passwd`.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// The user name.
    #[arg(long)]
    pub user: String,
    /// The user's role: admin, writer (queries, INSERT, CTAS, DDL) or reader (queries only).
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
}

fn parse_role(s: &str) -> std::result::Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role {s:?} (admin, writer or reader)"))
}

/// TLS on the Flight SQL port: shared by `standalone` and `coordinator`.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// The server's certificate chain (PEM). With --tls-key, the port speaks TLS only
    /// (clients connect with grpc+tls://).
    #[arg(long, env = "FLOE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "FLOE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The certificate and key, read.
    pub fn identity(&self) -> Result<Option<tonic::transport::Identity>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(Some(tonic::transport::Identity::from_pem(
            read(cert)?,
            read(key)?,
        )))
    }
}

/// Who may use the Flight SQL port: shared by `standalone` and `coordinator`.
#[derive(Debug, Args)]
pub struct ClientAuthArgs {
    /// The users file (`name:hash:role` per line; `floe passwd` writes lines). Without it
    /// client authentication is off, which Floe allows only on a loopback address unless
    /// --allow-anonymous is given.
    #[arg(long, env = "FLOE_USERS")]
    pub users: Option<PathBuf>,
    /// Serve clients without authentication on a non-loopback address.
    #[arg(long, env = "FLOE_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    /// How long a client's bearer token is valid, in seconds.
    #[arg(long, env = "FLOE_TOKEN_TTL_SECS", default_value_t = 12 * 3600)]
    pub token_ttl_secs: u64,
}

impl ClientAuthArgs {
    /// The users to authenticate against, after checking that a server on `host` without
    /// them was asked for.
    pub fn users(&self, host: IpAddr) -> Result<Option<Users>> {
        match &self.users {
            Some(path) => Ok(Some(Users::load(path).map_err(anyhow::Error::msg)?)),
            None if host.is_loopback() || self.allow_anonymous => Ok(None),
            None => bail!(
                "refusing to serve Flight SQL on {host} without client authentication: give \
                 --users FILE (lines from `floe passwd`), or --allow-anonymous to let anyone \
                 who reaches the port query and change every table"
            ),
        }
    }
}

/// Which Iceberg catalog.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CatalogChoice {
    /// Iceberg SQL catalog (SQLite or PostgreSQL).
    Sql,
    /// Iceberg REST catalog.
    Rest,
    /// AWS Glue Data Catalog (credentials the standard AWS way: environment, profile, role).
    Glue,
}

/// Where the data is and how to reach it: shared by every role.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Warehouse: a local folder (the catalog goes in DIR/catalog.db) or s3://bucket/prefix.
    #[arg(long, env = "FLOE_WAREHOUSE", default_value = "floe-warehouse")]
    pub warehouse: String,
    /// Further storage roots executors may read and write under, besides the warehouse (e.g.
    /// the table locations a REST catalog hands out), comma-separated: s3://bucket/prefix or
    /// a local folder.
    #[arg(long, env = "FLOE_STORAGE_ROOTS", value_delimiter = ',')]
    pub storage_root: Vec<String>,
    /// S3 endpoint (for S3-compatible servers).
    #[arg(long, env = "FLOE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "FLOE_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id.
    #[arg(long, env = "FLOE_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key.
    #[arg(long, env = "FLOE_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Path-style S3 requests (MinIO, SeaweedFS).
    #[arg(long, env = "FLOE_S3_PATH_STYLE")]
    pub s3_path_style: bool,
}

impl StorageArgs {
    /// The object-store settings.
    pub fn settings(&self) -> StorageSettings {
        StorageSettings {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_access_key_id: self.s3_access_key_id.clone(),
            s3_secret_access_key: self.s3_secret_access_key.clone(),
            s3_path_style: self.s3_path_style,
        }
    }

    /// The warehouse as a URL (a local folder is created and made absolute).
    pub fn warehouse_url(&self) -> Result<String> {
        if self.warehouse.contains("://") {
            return Ok(self.warehouse.trim_end_matches('/').to_string());
        }
        local_root(&self.warehouse)
    }

    /// The storage roots: the warehouse and every `--storage-root`.
    pub fn roots(&self) -> Result<Vec<String>> {
        let mut roots = vec![self.warehouse_url()?];
        for root in self.storage_root.iter().filter(|r| !r.trim().is_empty()) {
            roots.push(if root.contains("://") {
                root.trim_end_matches('/').to_string()
            } else {
                local_root(root)?
            });
        }
        Ok(roots)
    }
}

/// A local folder as a `file://` URL, created if missing.
fn local_root(dir: &str) -> Result<String> {
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating storage folder {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    Ok(format!(
        "file://{}",
        dir.display().to_string().trim_end_matches('/')
    ))
}

/// Where the tables are.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Catalog kind.
    #[arg(long, env = "FLOE_CATALOG", value_enum, default_value = "sql")]
    pub catalog: CatalogChoice,
    /// Catalog URI: sqlite:///path/catalog.db, postgres://…, or the REST catalog's http(s):// URL.
    #[arg(long, env = "FLOE_CATALOG_URI")]
    pub catalog_uri: Option<String>,
    /// REST catalog `warehouse` parameter.
    #[arg(long, env = "FLOE_REST_WAREHOUSE")]
    pub rest_warehouse: Option<String>,
    /// REST catalog OAuth2 client credentials, `id:secret`.
    #[arg(long, env = "FLOE_REST_CREDENTIAL")]
    pub rest_credential: Option<String>,
    /// Glue's AWS region (default: the AWS SDK's, from AWS_REGION or the profile).
    #[arg(long, env = "FLOE_GLUE_REGION")]
    pub glue_region: Option<String>,
    /// Glue endpoint override: a VPC endpoint, or a Glue-compatible service.
    #[arg(long, env = "FLOE_GLUE_ENDPOINT")]
    pub glue_endpoint: Option<String>,
    /// The Glue catalog id (an AWS account id), when it is not the caller's own.
    #[arg(long, env = "FLOE_GLUE_CATALOG_ID")]
    pub glue_catalog_id: Option<String>,
}

/// The cluster secret, from a flag, the environment or a file.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// The secret coordinator and executors share (at least 16 characters, e.g. `openssl rand
    /// -hex 32`). Executors prove they hold it; it never crosses the wire. Prefer the
    /// environment or --cluster-secret-file over the command line.
    #[arg(long, env = "FLOE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// A file holding the cluster secret.
    #[arg(long, env = "FLOE_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
}

impl SecretArgs {
    /// The secret; an error saying how to set one when there is none.
    pub fn secret(&self) -> Result<ClusterSecret> {
        let text = match (&self.cluster_secret, &self.cluster_secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the cluster secret from {}", path.display()))?,
            (None, None) => bail!(
                "a cluster secret is required: executors are admitted only by proving it. Set \
                 FLOE_CLUSTER_SECRET (or --cluster-secret-file FILE) to the same value on the \
                 coordinator and every executor, e.g. from `openssl rand -hex 32`"
            ),
        };
        Ok(ClusterSecret::new(&text)?)
    }
}

impl CatalogArgs {
    /// The domain settings these flags describe.
    pub fn settings(&self) -> Result<CatalogSettings> {
        let storage = self.storage.settings();
        let remote = self.storage.warehouse.contains("://");
        let mut settings = if remote {
            CatalogSettings {
                warehouse: self.storage.warehouse.clone(),
                kind: CatalogKind::Sql { uri: String::new() },
                storage,
            }
        } else {
            let dir = PathBuf::from(&self.storage.warehouse);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating warehouse folder {}", dir.display()))?;
            let dir = dir.canonicalize()?;
            CatalogSettings {
                storage,
                ..CatalogSettings::local(&dir)
            }
        };
        settings.kind = match self.catalog {
            CatalogChoice::Sql => match (&self.catalog_uri, settings.kind) {
                (Some(uri), _) => CatalogKind::Sql { uri: uri.clone() },
                (None, _) if remote => bail!(
                    "--catalog-uri (FLOE_CATALOG_URI) is required with a remote warehouse, e.g. sqlite:///var/lib/floe/catalog.db"
                ),
                (None, kind) => kind,
            },
            CatalogChoice::Rest => CatalogKind::Rest {
                uri: self
                    .catalog_uri
                    .clone()
                    .context("--catalog-uri (FLOE_CATALOG_URI) is required with --catalog rest")?,
                warehouse: self.rest_warehouse.clone(),
                credential: self.rest_credential.clone(),
            },
            CatalogChoice::Glue => {
                if !remote {
                    bail!(
                        "--catalog glue needs a warehouse on object storage (--warehouse s3://bucket/prefix): \
                         every engine that reads the Glue catalog must reach the table files"
                    );
                }
                CatalogKind::Glue(floe_catalog::glue::GlueSettings {
                    region: self.glue_region.clone(),
                    endpoint: self.glue_endpoint.clone(),
                    catalog_id: self.glue_catalog_id.clone(),
                })
            }
        };
        Ok(settings)
    }
}

/// How many statements the coordinator runs at once, and each one's memory.
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// Statements (queries and writes) running at once; more wait in a queue (default: no
    /// limit). Metadata calls and planning are not counted.
    #[arg(long, env = "FLOE_MAX_CONCURRENT_QUERIES")]
    pub max_concurrent_queries: Option<usize>,
    /// Statements that may wait for a place; one more is refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FLOE_QUERY_QUEUE_SIZE", default_value_t = 100)]
    pub query_queue_size: usize,
    /// How long (ms) a statement waits for a place before it is refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "FLOE_QUERY_QUEUE_TIMEOUT_MS", default_value_t = 60_000)]
    pub query_queue_timeout_ms: u64,
    /// The most memory one query may hold in each process (the coordinator and each
    /// executor), e.g. `1GiB`, under the processes' own limits (default: only those).
    /// Sessions may lower it with `SET memory_limit`, never raise it.
    #[arg(long, env = "FLOE_QUERY_MEMORY_LIMIT", value_parser = parse_size)]
    pub query_memory_limit: Option<usize>,
}

impl WorkloadArgs {
    fn admission(&self) -> floe_coordinator::admission::AdmissionLimits {
        floe_coordinator::admission::AdmissionLimits {
            max_running: self.max_concurrent_queries,
            max_queued: self.query_queue_size,
            queue_timeout: Duration::from_millis(self.query_queue_timeout_ms),
        }
    }
}

/// Flags of `floe standalone`.
#[derive(Debug, Args)]
pub struct StandaloneArgs {
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// Address to listen on.
    #[arg(long, env = "FLOE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Flight SQL port (0 picks a free one).
    #[arg(long, env = "FLOE_PORT", default_value_t = 50051)]
    pub port: u16,
    /// Executors to run in the process.
    #[arg(long, env = "FLOE_EXECUTORS", default_value_t = 2)]
    pub executors: usize,
    /// Tasks of a stage each executor runs at once (default: the machine's cores shared among
    /// the executors, at least one each).
    #[arg(long, env = "FLOE_TASK_SLOTS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub task_slots: Option<u32>,
    /// Decoded columns of small data files that lookups read again and again, kept in each
    /// executor's memory (e.g. `256MiB`; `0` keeps none; at most a sixteenth of its
    /// `--memory-limit`). Scans keep nothing.
    #[arg(long, env = "FLOE_LOOKUP_CACHE", value_parser = parse_size, default_value = "128MiB")]
    pub lookup_cache: usize,
    #[command(flatten)]
    pub auth: ClientAuthArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Memory limit of the coordinator and of each executor, e.g. `4GiB` (default: half the
    /// machine's memory, shared by them). Beyond it sorts, aggregations and joins spill to disk.
    #[arg(long, env = "FLOE_MEMORY_LIMIT", value_parser = parse_size)]
    pub memory_limit: Option<usize>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Refuse INSERT and DDL (CREATE/DROP/ALTER): clients may only query.
    #[arg(long, env = "FLOE_READ_ONLY")]
    pub read_only: bool,
    /// A query result its client leaves unread this long (ms) is dropped and its query stopped.
    #[arg(long, env = "FLOE_RESULT_IDLE_TIMEOUT_MS", default_value_t = 300_000)]
    pub result_idle_timeout_ms: u64,
}

/// Flags of `floe coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// Address to listen on.
    #[arg(long, env = "FLOE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Flight SQL and control-plane port (0 picks a free one).
    #[arg(long, env = "FLOE_PORT", default_value_t = 50051)]
    pub port: u16,
    #[command(flatten)]
    pub auth: ClientAuthArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Also serve the control plane (executor registration) alone on this port, in plain text
    /// (it authenticates with the cluster secret): for executors that do not hold the CA of a
    /// TLS Flight SQL port.
    #[arg(long, env = "FLOE_CONTROL_PORT")]
    pub control_port: Option<u16>,
    /// How often executors heartbeat, in milliseconds.
    #[arg(long, env = "FLOE_HEARTBEAT_MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// An executor silent this long (ms) is dropped.
    #[arg(long, env = "FLOE_EXECUTOR_EXPIRY_MS", default_value_t = 5000)]
    pub executor_expiry_ms: u64,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Memory limit for the operators that finish queries on the coordinator (final
    /// aggregation, joins, merges), e.g. `4GiB` (default: a quarter of the machine's memory);
    /// beyond it they spill to disk.
    #[arg(long, env = "FLOE_MEMORY_LIMIT", value_parser = parse_size)]
    pub memory_limit: Option<usize>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Refuse INSERT and DDL (CREATE/DROP/ALTER): clients may only query.
    #[arg(long, env = "FLOE_READ_ONLY")]
    pub read_only: bool,
    /// A query result its client leaves unread this long (ms) is dropped and its query stopped.
    #[arg(long, env = "FLOE_RESULT_IDLE_TIMEOUT_MS", default_value_t = 300_000)]
    pub result_idle_timeout_ms: u64,
}

/// Flags of `floe executor`.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The coordinator's URL.
    #[arg(
        long,
        env = "FLOE_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub coordinator: String,
    /// The CA certificate (PEM) that signed an https:// coordinator's certificate.
    #[arg(long, env = "FLOE_COORDINATOR_CA")]
    pub coordinator_ca: Option<PathBuf>,
    /// Address to listen on for tasks.
    #[arg(long, env = "FLOE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Task port (0 picks a free one).
    #[arg(long, env = "FLOE_PORT", default_value_t = 0)]
    pub port: u16,
    /// Host name the coordinator reaches this executor at (default: --host).
    #[arg(long, env = "FLOE_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Where the data is: this executor's own storage settings and roots (tasks carry none).
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Memory limit for this executor's operators, e.g. `4GiB` (default: half the machine's
    /// memory); beyond it sorts, aggregations and joins spill to disk.
    #[arg(long, env = "FLOE_MEMORY_LIMIT", value_parser = parse_size)]
    pub memory_limit: Option<usize>,
    /// Tasks of a stage this executor runs at once, one thread each (default: the machine's
    /// cores). The coordinator cuts each stage into as many tasks as its executors have slots;
    /// give each executor the cores it may use.
    #[arg(long, env = "FLOE_TASK_SLOTS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub task_slots: Option<u32>,
    /// Decoded columns of small data files that lookups read again and again, kept in each
    /// executor's memory (e.g. `256MiB`; `0` keeps none; at most a sixteenth of its
    /// `--memory-limit`). Scans keep nothing.
    #[arg(long, env = "FLOE_LOOKUP_CACHE", value_parser = parse_size, default_value = "128MiB")]
    pub lookup_cache: usize,
}

/// The machine's cores, as the default task slots.
fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1024))
}

/// Parses a byte size: `1048576`, `512MiB`, `4GiB`, `2G`, `100k`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    floe_coordinator::settings::parse_size(text).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Sets `FLOE_<KEY>` from `--config FILE` for every key not already in the environment, so
/// clap sees file values with lower precedence than flags and environment.
pub fn load_config_file_into_env(args: impl Iterator<Item = String>) -> Result<()> {
    let args: Vec<String> = args.collect();
    let path = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--config=").map(String::from))
        })
        .or_else(|| std::env::var("FLOE_CONFIG").ok());
    let Some(path) = path else { return Ok(()) };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading config file {path}"))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing config file {path}"))?;
    for (key, value) in table {
        let var = format!("FLOE_{}", key.replace('-', "_").to_uppercase());
        if std::env::var_os(&var).is_some() {
            continue;
        }
        let value = match value {
            toml::Value::String(s) => s,
            other => other.to_string(),
        };
        // Single-threaded here: main has not started the runtime yet.
        std::env::set_var(var, value);
    }
    Ok(())
}

/// Where an executor's data is: its storage settings and roots.
struct ExecutorStorage {
    settings: StorageSettings,
    roots: Vec<String>,
}

fn executor_config(
    coordinator: String,
    bind: SocketAddr,
    advertise_host: String,
    secret: ClusterSecret,
    storage: ExecutorStorage,
    memory_limit: usize,
    task_slots: u32,
) -> ExecutorConfig {
    ExecutorConfig {
        coordinator_url: coordinator,
        coordinator_ca: None,
        bind,
        advertise_host,
        cluster_secret: secret,
        storage: storage.settings,
        roots: storage.roots,
        batch_size: 8192,
        memory_limit,
        task_slots,
        lookup_cache: floe_engine::scan::hot::DEFAULT_BYTES,
    }
}

/// Runs the chosen role until it stops or Ctrl-C.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Standalone(args) => {
            let settings = args.catalog.settings()?;
            let roots = args.catalog.storage.roots()?;
            let memory_limit = args.memory_limit.unwrap_or_else(|| {
                floe_engine::runtime::default_memory_limit(0.5 / (args.executors + 1) as f64)
            });
            // The in-process executors prove a secret made for this run alone.
            let secret = ClusterSecret::from_random(floe_engine::runtime::random_nonce());
            let coordinator = floe_coordinator::start(CoordinatorConfig {
                bind: SocketAddr::new(args.host, args.port),
                catalog: settings.clone(),
                storage_roots: roots.clone(),
                heartbeat_interval: Duration::from_millis(500),
                // Executors in this process die only with it; a long expiry keeps CPU-heavy
                // work (which can delay the coordinator's heartbeat handling) from dropping them.
                executor_expiry: Duration::from_secs(60),
                cluster_secret: secret.clone(),
                memory_limit,
                admission: args.workload.admission(),
                query_memory_limit: args.workload.query_memory_limit.map(|n| n as u64),
                read_only: args.read_only,
                result_idle_timeout: Duration::from_millis(args.result_idle_timeout_ms),
                users: args.auth.users(args.host)?,
                token_ttl: Duration::from_secs(args.auth.token_ttl_secs),
                // With TLS, the in-process executors register on a loopback control port.
                control_bind: args
                    .tls
                    .tls_cert
                    .as_ref()
                    .map(|_| SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), 0)),
                tls: args.tls.identity()?,
            })
            .await?;
            let url = format!("http://{}", coordinator.control_addr);
            let task_slots = args.task_slots.unwrap_or_else(|| {
                let executors = u32::try_from(args.executors.max(1)).unwrap_or(u32::MAX);
                (cores() / executors).max(1)
            });
            let mut executors = Vec::new();
            for _ in 0..args.executors {
                let config = ExecutorConfig {
                    lookup_cache: args.lookup_cache,
                    ..executor_config(
                        url.clone(),
                        SocketAddr::new(args.host, 0),
                        args.host.to_string(),
                        secret.clone(),
                        ExecutorStorage {
                            settings: settings.storage.clone(),
                            roots: roots.clone(),
                        },
                        memory_limit,
                        task_slots,
                    )
                };
                executors.push(floe_executor::start(config).await?);
            }
            announce(&coordinator, &settings);
            tokio::select! {
                r = coordinator.wait() => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
            for e in executors {
                e.shutdown().await;
            }
            Ok(())
        }
        Command::Coordinator(args) => {
            let secret = args.secret.secret()?;
            let settings = args.catalog.settings()?;
            let coordinator = floe_coordinator::start(CoordinatorConfig {
                bind: SocketAddr::new(args.host, args.port),
                catalog: settings.clone(),
                storage_roots: args.catalog.storage.roots()?,
                heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
                executor_expiry: Duration::from_millis(args.executor_expiry_ms),
                cluster_secret: secret,
                memory_limit: args
                    .memory_limit
                    .unwrap_or_else(|| floe_engine::runtime::default_memory_limit(0.25)),
                admission: args.workload.admission(),
                query_memory_limit: args.workload.query_memory_limit.map(|n| n as u64),
                read_only: args.read_only,
                result_idle_timeout: Duration::from_millis(args.result_idle_timeout_ms),
                users: args.auth.users(args.host)?,
                token_ttl: Duration::from_secs(args.auth.token_ttl_secs),
                tls: args.tls.identity()?,
                control_bind: args.control_port.map(|p| SocketAddr::new(args.host, p)),
            })
            .await?;
            announce(&coordinator, &settings);
            tokio::select! {
                r = coordinator.wait() => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(())
        }
        Command::Executor(args) => {
            let secret = args.secret.secret()?;
            let storage = ExecutorStorage {
                settings: args.storage.settings(),
                roots: args.storage.roots()?,
            };
            let advertise = args.advertise_host.unwrap_or_else(|| args.host.to_string());
            let mut config = executor_config(
                args.coordinator,
                SocketAddr::new(args.host, args.port),
                advertise,
                secret,
                storage,
                args.memory_limit
                    .unwrap_or_else(|| floe_engine::runtime::default_memory_limit(0.5)),
                args.task_slots.unwrap_or_else(cores),
            );
            config.lookup_cache = args.lookup_cache;
            if let Some(ca) = &args.coordinator_ca {
                let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
                config.coordinator_ca = Some(tonic::transport::Certificate::from_pem(pem));
            }
            let executor = floe_executor::start(config).await?;
            tracing::info!(executor_id = %executor.executor_id, addr = %executor.addr, "executor listening");
            tokio::select! {
                r = executor.wait() => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(())
        }
        Command::Sql(args) => crate::shell::run(args).await,
        Command::Passwd(args) => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!password.is_empty(), "an empty password (give it on stdin)");
            println!(
                "{}",
                users_file_line(&args.user, password, args.role).map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
    }
}

fn announce(coordinator: &floe_coordinator::CoordinatorHandle, settings: &CatalogSettings) {
    let addr = coordinator.addr;
    let scheme = if coordinator.tls { "grpc+tls" } else { "grpc" };
    tracing::info!(warehouse = %settings.warehouse, "Flight SQL listening on {scheme}://{addr}");
    if coordinator.control_addr == addr {
        println!("FLOE_READY flight_sql={addr}");
    } else {
        println!(
            "FLOE_READY flight_sql={addr} coordinator={}",
            coordinator.control_addr
        );
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
    }
}
