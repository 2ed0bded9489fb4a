//! # floe-catalog — Floe's view of Iceberg
//!
//! ```text
//!  CatalogSettings ──connect()──▶ iceberg Catalog (SQL on SQLite/PostgreSQL, REST, Glue)
//!        │                              │ load_table, list
//!        │                  cache: CachedCatalog (tables by metadata location)
//!        ▼                              ▼
//!  ObjectStoreStorage (FileIO)   provider: DataFusion catalog/schema/table providers
//!  s3:// and file:// through         │ scan(): Iceberg scan planning prunes manifests,
//!  object_store                       │ partitions and column bounds; column_stats: the
//!                                     │ optimizer's min/max/null counts from manifests
//!                                     │ (manifests: read in parallel, cached by path)
//!                                     ▼
//!                               exec: IcebergScanExec (file groups, small tables in
//!                                     pieces by rows; runs on executors) reading each file
//!                                     with parquet_read: DataFusion's Parquet reader, columns
//!                                     by field id, deletes as a row selection
//!                               write: IcebergWriteExec (executors write data files),
//!                                      IcebergCommitExec (coordinator commits one snapshot)
//! ```
//!
//! This crate depends on `floe-proto` only. The scan and write nodes live here because both the
//! coordinator (which plans it) and the executors (which run it) depend on this crate.

pub mod apply_deletes;
pub mod cache;
pub mod column_stats;
pub mod config;
pub mod connect;
pub mod deletes;
pub mod equality_deletes;
pub mod error;
pub mod exec;
pub mod file_groups;
pub mod glue;
pub mod manifests;
pub mod metadata_tables;
pub mod overwrite;
pub mod parquet_read;
pub mod predicate;
pub mod provider;
pub mod storage;
pub mod write;

pub use config::{CatalogKind, CatalogSettings, StorageSettings, CATALOG_NAME};
pub use connect::connect;
pub use error::CatalogError;
pub use exec::IcebergScanExec;
