//! DataFusion errors → gRPC status, in one exhaustive match.

use datafusion::common::DataFusionError;
use floe_catalog::CatalogError;
use tonic::Status;

/// The gRPC status for an error raised while planning or running a query.
pub fn status_from_datafusion(e: DataFusionError) -> Status {
    match e {
        DataFusionError::SQL(e, _) => Status::invalid_argument(format!("SQL error: {e}")),
        DataFusionError::Plan(m) => Status::invalid_argument(m),
        DataFusionError::SchemaError(e, _) => Status::invalid_argument(e.to_string()),
        DataFusionError::NotImplemented(m) => Status::unimplemented(m),
        DataFusionError::Configuration(m) => Status::invalid_argument(m),
        DataFusionError::ResourcesExhausted(m) => Status::resource_exhausted(m),
        DataFusionError::Execution(m) => Status::internal(m),
        DataFusionError::ExecutionJoin(e) => Status::internal(e.to_string()),
        DataFusionError::Internal(m) => Status::internal(m),
        DataFusionError::ArrowError(e, _) => Status::internal(e.to_string()),
        DataFusionError::ParquetError(e) => Status::data_loss(e.to_string()),
        DataFusionError::ObjectStore(e) => match *e {
            e @ object_store::Error::NotFound { .. } => Status::data_loss(e.to_string()),
            other => Status::unavailable(other.to_string()),
        },
        DataFusionError::IoError(e) => Status::unavailable(e.to_string()),
        DataFusionError::Substrait(m) => Status::invalid_argument(m),
        DataFusionError::Context(context, inner) => {
            let status = status_from_datafusion(*inner);
            Status::new(status.code(), format!("{context}: {}", status.message()))
        }
        DataFusionError::Diagnostic(_, inner) => status_from_datafusion(*inner),
        DataFusionError::Collection(mut errors) => match errors.pop() {
            Some(e) => status_from_datafusion(e),
            None => Status::internal("empty error collection"),
        },
        DataFusionError::Shared(shared) => match std::sync::Arc::try_unwrap(shared) {
            Ok(e) => status_from_datafusion(e),
            Err(shared) => Status::internal(shared.to_string()),
        },
        DataFusionError::External(e) => status_from_external(e),
        DataFusionError::Ffi(m) => Status::internal(m),
    }
}

fn status_from_external(e: Box<dyn std::error::Error + Send + Sync>) -> Status {
    let e = match e.downcast::<Status>() {
        Ok(status) => return *status,
        Err(e) => e,
    };
    let e = match e.downcast::<CatalogError>() {
        Ok(c) => return status_from_catalog(*c),
        Err(e) => e,
    };
    match e.downcast::<DataFusionError>() {
        Ok(d) => status_from_datafusion(*d),
        Err(e) => Status::internal(floe_catalog::exec::error_chain(e.as_ref())),
    }
}

/// The gRPC status for a catalog-layer error.
pub fn status_from_catalog(e: CatalogError) -> Status {
    let message = e.to_string();
    match e {
        CatalogError::NotFound(_) => Status::not_found(message),
        CatalogError::Config(_) => Status::failed_precondition(message),
        CatalogError::Unavailable(_) => Status::unavailable(message),
        CatalogError::DataLoss(_) => Status::data_loss(message),
        CatalogError::Unsupported(_) => Status::unimplemented(message),
        CatalogError::Iceberg(e) => {
            let message = floe_catalog::exec::error_chain(&e);
            match e.kind() {
                iceberg::ErrorKind::TableNotFound | iceberg::ErrorKind::NamespaceNotFound => {
                    Status::not_found(message)
                }
                iceberg::ErrorKind::FeatureUnsupported => Status::unimplemented(message),
                iceberg::ErrorKind::DataInvalid => Status::data_loss(message),
                _ => Status::internal(message),
            }
        }
    }
}
