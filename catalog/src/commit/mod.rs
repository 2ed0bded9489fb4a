//! Commits: how a statement's changes become a table's next metadata, on the coordinator.
//!
//! ```text
//!  exec: IcebergCommitExec ── every write task's files ──▶ append   (INSERT, CTAS: iceberg's
//!                                                                   fast append, through the
//!                                                                   catalog's own commit)
//!                                                      └──▶ overwrite (INSERT OVERWRITE: Floe
//!                                                                   builds the snapshot)
//!  ddl ─────────────────────────────────────────────────▶ rename   (RENAME COLUMN)
//!
//!  overwrite and rename commit through a Committer, one per catalog kind:
//!    sql: the SQL catalog's compare-and-swap of the metadata location   ┐ both write the next
//!    glue: Glue's UpdateTable with the version read                     ┘ metadata file (swap)
//!    rest: a CommitTableRequest with requirements
//!  every commit that loses a race reads the table again and retries (retry: one loop, one pause)
//! ```
//!
//! iceberg-rust 0.10 has no public action for an overwrite snapshot or a schema rename, which is
//! why Floe commits those itself; appends go through iceberg's transaction and the catalog.

mod append;
mod exec;
mod glue;
mod overwrite;
mod rename;
mod rest;
mod retry;
mod sql;
mod swap;

use async_trait::async_trait;
use datafusion::common::{DataFusionError, Result};
use floe_engine::error::{error_chain, FloeError};
use iceberg::spec::{deserialize_data_file_from_json, DataFile};
use iceberg::table::Table;
use iceberg::{TableIdent, TableRequirement, TableUpdate};

pub use exec::{count_schema, CommitKind, IcebergCommitExec};
pub use glue::GlueSwap;
pub use rename::rename_column;
pub use rest::RestCommit;
pub use sql::SqlMetadataSwap;

/// Commits the metadata changes iceberg-rust 0.10 has no action for (an overwrite snapshot, a
/// renamed schema), with the table as read as the requirement. One per catalog kind.
#[async_trait]
pub trait Committer: std::fmt::Debug + Send + Sync {
    /// Where the catalog points the table now, without loading it (`Ok(None)`: no such
    /// table); `None` where the catalog cannot say without loading it (REST).
    async fn current_location(
        &self,
        ident: &TableIdent,
    ) -> Option<std::result::Result<Option<String>, String>>;

    /// Applies `updates` to the table as `table` shows it; false if another commit changed it
    /// first (`requirements` say what "as it shows" means to a REST catalog).
    async fn commit(
        &self,
        table: &Table,
        updates: Vec<TableUpdate>,
        requirements: Vec<TableRequirement>,
        name: &str,
    ) -> Result<bool>;
}

fn unavailable(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(FloeError::Unavailable(message)))
}

fn fail(what: &str, e: iceberg::Error) -> DataFusionError {
    unavailable(format!("{what}: {}", error_chain(&e)))
}

/// The data files the write tasks described, read against the table's current schema and
/// default partition spec (the ones they were written with).
fn written_files(table: &Table, descriptions: &[String]) -> iceberg::Result<Vec<DataFile>> {
    let metadata = table.metadata();
    let schema = metadata.current_schema();
    let spec = metadata.default_partition_spec();
    let partition_type = spec.partition_type(schema)?;
    descriptions
        .iter()
        .map(|d| deserialize_data_file_from_json(d, spec.spec_id(), &partition_type, schema))
        .collect()
}
