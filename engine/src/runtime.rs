//! What every Floe process sets up the same way: the memory-bounded DataFusion runtime, the gRPC
//! message and window sizes, the channel between Floe's own processes, and nonces.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use floe_proto::auth::Tag;

/// 32 fresh random bytes (nonces).
pub fn random_nonce() -> Tag {
    use rand::RngCore;
    let mut bytes = [0u8; floe_proto::auth::LEN];
    rand::rng().fill_bytes(&mut bytes);
    bytes
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

/// A channel between Floe's own processes (coordinator → executor, executor → executor): a
/// lazily connected HTTP/2 connection, or — to an executor running in this very process
/// (`floe standalone`) — its service called directly, without a socket.
pub type InternalChannel = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    ChannelError,
>;

/// A call on an [`InternalChannel`] that reached no service (the transport failed, or the
/// in-process executor has stopped).
#[derive(Debug)]
pub struct ChannelError(tonic::codegen::StdError);

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// The executors of this process, by the endpoint they advertise.
/// Each with its stop flag, which also tells one registration from a later one at the same
/// endpoint.
type InProcessMap = HashMap<String, (InternalChannel, Arc<AtomicBool>)>;

fn in_process() -> std::sync::MutexGuard<'static, InProcessMap> {
    static SERVICES: OnceLock<Mutex<InProcessMap>> = OnceLock::new();
    SERVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Makes the executor service listening at `endpoint` reachable from this process without a
/// socket: [`internal_channel`] to that endpoint calls `service` directly (the same service, with
/// the same checks, the network listener serves). The returned guard takes it back; once it is
/// dropped, channels already made answer every call as a connection would that found no
/// server, so a stopped in-process executor looks exactly like a stopped remote one.
pub fn serve_in_process<S>(endpoint: &str, service: S) -> InProcessService
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let stopped = Arc::new(AtomicBool::new(false));
    let running = Arc::clone(&stopped);
    let name = endpoint.to_string();
    let guarded = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let service = service.clone();
        let stopped = running.load(Ordering::Acquire);
        let name = name.clone();
        async move {
            if stopped {
                return Err(ChannelError(
                    format!("executor at {name} has stopped").into(),
                ));
            }
            match tower::ServiceExt::oneshot(service, request).await {
                Ok(response) => Ok(pumped(response)),
                Err(never) => match never {},
            }
        }
    });
    in_process().insert(
        endpoint.to_string(),
        (InternalChannel::new(guarded), Arc::clone(&stopped)),
    );
    InProcessService {
        endpoint: endpoint.to_string(),
        stopped,
    }
}

/// Whether [`internal_channel`] to `url` reaches an executor of this process directly.
pub fn is_in_process(url: &str) -> bool {
    in_process().contains_key(url)
}

/// Frames of a response body an in-process service produces ahead of its reader (one frame is
/// one Flight message: a batch, or the trailers).
const PUMP_FRAMES: usize = 4;

/// `response` with its body produced as a network connection would produce it: from the moment
/// the response is returned, on its own task, up to [`PUMP_FRAMES`] ahead of the reader — a task
/// starts at once and runs beside its consumer rather than inside the consumer's reads. The
/// reader dropping the body stops it (and the task behind it).
fn pumped(response: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    use http_body_util::BodyExt;
    let (parts, mut body) = response.into_parts();
    let (frames, received) = tokio::sync::mpsc::channel(PUMP_FRAMES);
    let pump = spawn_scoped(async move {
        while let Some(frame) = body.frame().await {
            if frames.send(frame).await.is_err() {
                break;
            }
        }
    });
    let stream = futures::stream::unfold((received, pump), |(mut received, pump)| async move {
        let frame = received.recv().await?;
        Some((frame, (received, pump)))
    });
    http::Response::from_parts(
        parts,
        tonic::body::Body::new(http_body_util::StreamBody::new(stream)),
    )
}

/// Keeps an executor reachable in-process (see [`serve_in_process`]) until dropped.
#[derive(Debug)]
pub struct InProcessService {
    endpoint: String,
    stopped: Arc<AtomicBool>,
}

impl Drop for InProcessService {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        let mut services = in_process();
        // Only this registration: another executor may serve the endpoint by now.
        if services
            .get(&self.endpoint)
            .is_some_and(|(_, stopped)| Arc::ptr_eq(stopped, &self.stopped))
        {
            services.remove(&self.endpoint);
        }
    }
}

/// The channel to `url`: the executor's service itself when it runs in this process (see
/// [`serve_in_process`]), else a lazily connected HTTP/2 channel on which every stream is
/// flow-controlled on its own.
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
pub fn internal_channel(url: &str) -> Result<InternalChannel, tonic::transport::Error> {
    if let Some((service, _)) = in_process().get(url) {
        return Ok(service.clone());
    }
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(MAX_CONNECTION_WINDOW)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(InternalChannel::new(tower::ServiceExt::map_err(
        channel,
        |e| ChannelError(Box::new(e)),
    )))
}

/// The largest HTTP/2 window (2^31 - 1).
const MAX_CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// A task that ends with its owner: aborted when dropped.
#[derive(Debug)]
pub struct ScopedTask(tokio::task::JoinHandle<()>);

impl Drop for ScopedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Spawns `task` on the current runtime, to be aborted when the returned handle is dropped: how
/// a task that belongs to a query is started, so that it ends with the query (clippy.toml bans
/// a bare `tokio::spawn`).
#[allow(
    clippy::disallowed_methods,
    reason = "the one place query tasks are spawned, tied to their handle"
)]
pub fn spawn_scoped(task: impl std::future::Future<Output = ()> + Send + 'static) -> ScopedTask {
    ScopedTask(tokio::spawn(task))
}
