//! Coordinator errors and their gRPC status, in one exhaustive match.

use datafusion::common::DataFusionError;
use floe_catalog::CatalogError;
use thiserror::Error;
use tonic::Status;

/// What went wrong with a client's request.
#[derive(Debug, Error)]
pub enum CoordinatorError {
    /// The request itself is wrong (bad SQL, wrong handle, unsupported statement kind).
    #[error("{0}")]
    InvalidArgument(String),
    /// A table or schema the query names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Planning or running the query failed.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<CoordinatorError> for Status {
    fn from(e: CoordinatorError) -> Self {
        match e {
            CoordinatorError::InvalidArgument(m) => Status::invalid_argument(m),
            CoordinatorError::NotFound(m) => Status::not_found(m),
            CoordinatorError::DataFusion(e) => floe_executor::status::status_from_datafusion(e),
            CoordinatorError::Catalog(e) => floe_executor::status::status_from_catalog(e),
        }
    }
}

/// Result of coordinator operations.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
