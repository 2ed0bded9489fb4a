//! Errors of the catalog layer, each saying whose fault it is.

use thiserror::Error;

/// Result of catalog operations.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// What went wrong while talking to the catalog or reading metadata.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// A table or namespace the user named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operator's settings are wrong.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The catalog or object store could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A metadata or data file is missing or unreadable.
    #[error("{0}")]
    DataLoss(String),
    /// A commit lost to a conflicting concurrent one.
    #[error("{0}")]
    Conflict(String),
    /// Something Floe does not support yet.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Any other Iceberg error.
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
}
