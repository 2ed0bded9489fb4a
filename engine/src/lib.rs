//! # floe-engine — what the coordinator and the executors both run
//!
//! ```text
//!  plan nodes            scan: IcebergScanExec — one task's data files, each read with
//!                              DataFusion's Parquet reader (parquet_read: columns by field id,
//!                              the predicate pruning, and as a row or batch filter where it
//!                              pays — tasks), deletes applied as it reads
//!                              (deletes, equality_deletes, apply_deletes)
//!                        write: IcebergWriteExec — Parquet data files + their descriptions
//!                        shuffle: ShuffleReaderExec and the bounded buckets producers fill
//!  wire                  codec: FloeCodec (datafusion-proto + Floe's nodes); ipc: schemas
//!                              and small results as Arrow IPC
//!  storage               storage: object_store behind Iceberg's FileIO, confined to the
//!                              process's storage roots; StorageSettings;
//!                        file_cache: Parquet footers of immutable files, kept by path
//!  errors                error: FloeError, classed by whose fault it is;
//!                        status: DataFusion / Floe errors → gRPC status (one map)
//!  runtime               runtime: memory-bounded RuntimeEnv, message and window sizes, the
//!                              channel between Floe's processes, nonces;
//!                        memory: a query's share of a process's memory;
//!                        checked: checked integer arithmetic (rule + functions);
//!                        decimal_arith: decimal + - * checked once per column (rule + functions);
//!                        typed_rewrite: the plan walk those two rules share;
//!                        one_row: a scalar subquery returns at most one row (rule + function);
//!                        like: LIKE '%a%b%' by substring search, no regex (rule + expression);
//!                        cooperative: joins that yield;
//!                        distinct_keys: a semi/anti join's probe keys, each once (a bitmap);
//!                        views: strings planned as views, plain where they leave Floe
//! ```
//!
//! Depends on `floe-proto` only. The coordinator and the executor are siblings over this crate:
//! neither depends on the other, and the executor links no catalog client.

#![cfg_attr(test, allow(clippy::disallowed_methods))] // tests spawn freely

pub mod checked;
pub mod codec;
pub mod cooperative;
pub mod decimal_arith;
pub mod distinct_keys;
pub mod error;
pub mod file_cache;
pub mod ipc;
pub mod like;
pub mod memory;
pub mod one_row;
pub mod partition_key;
pub mod runtime;
pub mod runtime_filter;
pub mod scan;
pub mod shuffle;
pub mod status;
pub mod storage;
pub mod typed_rewrite;
pub mod views;
pub mod write;

pub use error::FloeError;
pub use scan::IcebergScanExec;
pub use storage::StorageSettings;
