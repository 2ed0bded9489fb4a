//! # floe-catalog — Floe's view of Iceberg catalogs and table metadata (coordinator side)
//!
//! ```text
//!  CatalogSettings ──connect()──▶ iceberg Catalog (SQL on SQLite/PostgreSQL, REST, Glue)
//!        │                              │ load_table, list
//!        │                  cache: CachedCatalog (tables by metadata location)
//!        ▼                              ▼
//!  FileIO over floe_engine::storage  provider: DataFusion catalog/schema/table providers
//!                                     │ scan(): Iceberg scan planning prunes manifests,
//!                                     │ partitions and column bounds; column_stats: the
//!                                     │ optimizer's min/max/null counts from manifests
//!                                     │ (manifests: read in parallel, cached by path);
//!                                     │ deletes: which delete files each data file needs;
//!                                     │ file_groups: data files (or pieces) into tasks
//!                                     ▼
//!                               floe_engine::IcebergScanExec (runs on executors)
//!                               commit: IcebergCommitExec (one snapshot per statement over
//!                                       floe_engine's IcebergWriteExec tasks); append,
//!                                       overwrite, rename; one Committer per catalog kind
//!                               metadata_tables: "t$snapshots", "t$files", …
//! ```
//!
//! Depends on `floe-proto` and `floe-engine`; only the coordinator (and the binary) depend on
//! it, so executors link none of its catalog clients (sqlx, REST, Glue).

#![cfg_attr(test, allow(clippy::disallowed_methods))] // tests spawn freely

pub mod cache;
pub mod column_stats;
pub mod commit;
pub mod config;
pub mod connect;
pub mod deletes;
pub mod file_groups;
pub mod glue;
pub mod manifests;
pub mod metadata_tables;
pub mod predicate;
pub mod provider;

pub use config::{CatalogKind, CatalogSettings, StorageSettings, CATALOG_NAME};
pub use connect::connect;
