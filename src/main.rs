//! `floe`: one binary for every role.
//!
//! * `floe standalone` — a coordinator and executors in one process, over a local warehouse
//!   folder with its SQLite Iceberg catalog (the embedded default), talking over loopback gRPC.
//! * `floe coordinator` / `floe executor --coordinator URL` — the roles as separate processes.
//! * `floe sql` — a Flight SQL shell.
//!
//! Every flag also reads a `FLOE_*` environment variable; `--config FILE` reads a TOML file
//! whose keys are the long flag names (flags and environment win over the file).

mod cli;
mod shell;

use anyhow::Result;
use clap::Parser;

/// mimalloc instead of glibc's allocator: a warm point query spent a tenth of its CPU in glibc's
/// malloc and as much again in page faults from memory returned to the system and touched anew.
/// Built without transparent huge pages (feature `no_thp`): with them, every page mimalloc
/// returned to the system and took back cost a fault that zeroed 2 MiB — 18 % of the CPU of a
/// partitioned CTAS of TPC-H SF1 lineitem went to `clear_page_erms`, and the CTAS took 10–11 s
/// against 7 s without them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stack of the runtime's threads.
const WORKER_STACK: usize = 32 << 20;

fn main() -> Result<()> {
    library_backtraces_off_unless_asked();
    cli::load_config_file_into_env(std::env::args())?;
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // TLS (the Flight SQL port, executors reaching a TLS coordinator) uses rustls with ring;
    // other dependencies also bring aws-lc-rs, so the choice is made here, once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Operators evaluate and drop expression trees recursively; the coordinator bounds
        // how deep a statement may be (floe_coordinator::limits), and this stack holds that.
        .thread_stack_size(WORKER_STACK)
        .build()?;
    runtime.block_on(cli::run(args))
}

/// Errors built by libraries (`std::backtrace::Backtrace::capture`) capture no backtrace unless
/// `RUST_LIB_BACKTRACE` asks for them; a panic still prints its backtrace with `RUST_BACKTRACE`.
/// Without this, `RUST_BACKTRACE=1` (common in containers, and set by the test harness) made
/// every error iceberg builds walk the stack, and its scan planner builds and drops one per
/// manifest of every scan with a filter: a warm point query on a table of 300 manifests went
/// 7.7–7.8 → 5.9 ms p50 (`benches/point/run.py`).
fn library_backtraces_off_unless_asked() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Single-threaded here: the first thing main does.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}
