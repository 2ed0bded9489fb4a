//! Coordinator errors and their gRPC status, in one exhaustive match.

use datafusion::common::DataFusionError;
use floe_engine::FloeError;
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
    /// The table or schema to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The statement would act outside what clients may touch.
    #[error("{0}")]
    PermissionDenied(String),
    /// The statement needs a state the object is not in (e.g. dropping a non-empty schema).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Floe does not do this yet.
    #[error("{0}")]
    Unimplemented(String),
    /// The catalog could not be reached or failed.
    #[error("{0}")]
    Unavailable(String),
    /// The coordinator is out of a resource (threads, memory) for this request.
    #[error("{0}")]
    ResourcesExhausted(String),
    /// A bug.
    #[error("{0}")]
    Internal(String),
    /// Planning or running the query failed.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] FloeError),
}

impl From<CoordinatorError> for Status {
    fn from(e: CoordinatorError) -> Self {
        match e {
            CoordinatorError::InvalidArgument(m) => Status::invalid_argument(m),
            CoordinatorError::NotFound(m) => Status::not_found(m),
            CoordinatorError::AlreadyExists(m) => Status::already_exists(m),
            CoordinatorError::PermissionDenied(m) => Status::permission_denied(m),
            CoordinatorError::FailedPrecondition(m) => Status::failed_precondition(m),
            CoordinatorError::Unimplemented(m) => Status::unimplemented(m),
            CoordinatorError::Unavailable(m) => Status::unavailable(m),
            CoordinatorError::ResourcesExhausted(m) => Status::resource_exhausted(m),
            CoordinatorError::Internal(m) => Status::internal(m),
            CoordinatorError::DataFusion(e) => floe_engine::status::status_from_datafusion(e),
            CoordinatorError::Catalog(e) => floe_engine::status::status_from_catalog(e),
        }
    }
}

/// Result of coordinator operations.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
