//! What every Floe process sets up the same way: the memory-bounded DataFusion runtime, the gRPC
//! message and window sizes, the channel between Floe's own processes, and nonces.

use std::num::NonZeroUsize;
use std::sync::Arc;
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
