//! DataFusion and catalog errors → gRPC status, in one exhaustive match each.
//!
//! Errors raised on an executor travel to the coordinator as a `tonic::Status` inside
//! `DataFusionError::External`; they keep their code on the way to the client, however deeply
//! DataFusion wrapped them (`Context`, `Shared`).

use crate::error::error_chain;
use crate::FloeError;
use datafusion::common::DataFusionError;
use tonic::Status;

/// The gRPC status for an error raised while planning or running a query.
pub fn status_from_datafusion(e: DataFusionError) -> Status {
    status_of(&e)
}

fn status_of(e: &DataFusionError) -> Status {
    match e {
        DataFusionError::SQL(e, _) => Status::invalid_argument(format!("SQL error: {e}")),
        DataFusionError::Plan(m) => Status::invalid_argument(m.clone()),
        DataFusionError::SchemaError(e, _) => Status::invalid_argument(e.to_string()),
        DataFusionError::NotImplemented(m) => Status::unimplemented(m.clone()),
        DataFusionError::Configuration(m) => Status::invalid_argument(m.clone()),
        DataFusionError::ResourcesExhausted(m) => Status::resource_exhausted(m.clone()),
        // Raised while running the query on its data: a value the query cannot handle (a
        // failed cast, a bad argument), the client's to fix.
        DataFusionError::Execution(m) => Status::invalid_argument(m.clone()),
        DataFusionError::ExecutionJoin(e) => Status::internal(e.to_string()),
        DataFusionError::Internal(m) => Status::internal(m.clone()),
        DataFusionError::ArrowError(e, _) => status_of_arrow(e),
        DataFusionError::ParquetError(e) => Status::data_loss(e.to_string()),
        DataFusionError::ObjectStore(e) => match e.as_ref() {
            e @ object_store::Error::NotFound { .. } => Status::data_loss(e.to_string()),
            other => Status::unavailable(other.to_string()),
        },
        DataFusionError::IoError(e) => Status::unavailable(e.to_string()),
        DataFusionError::Substrait(m) => Status::invalid_argument(m.clone()),
        DataFusionError::Context(context, inner) => {
            let status = status_of(inner);
            with_message(&status, format!("{context}: {}", status.message()))
        }
        DataFusionError::Diagnostic(_, inner) => status_of(inner),
        DataFusionError::Collection(errors) => match errors.first() {
            Some(e) => status_of(e),
            None => Status::internal("empty error collection"),
        },
        DataFusionError::Shared(shared) => status_of(shared),
        DataFusionError::External(e) => status_of_external(e.as_ref()),
        DataFusionError::Ffi(m) => Status::internal(m.clone()),
    }
}

/// Arrow's errors by whose fault they are: the data and the query's (division by zero,
/// overflow, a failed cast or parse) are the client's; memory is a resource; the rest a bug.
fn status_of_arrow(e: &arrow::error::ArrowError) -> Status {
    use arrow::error::ArrowError;
    let message = e.to_string();
    match e {
        ArrowError::DivideByZero
        | ArrowError::ArithmeticOverflow(_)
        | ArrowError::CastError(_)
        | ArrowError::ParseError(_)
        | ArrowError::InvalidArgumentError(_)
        | ArrowError::ComputeError(_)
        | ArrowError::SchemaError(_)
        | ArrowError::DictionaryKeyOverflowError
        | ArrowError::RunEndIndexOverflowError => Status::invalid_argument(message),
        ArrowError::MemoryError(_) => Status::resource_exhausted(message),
        ArrowError::NotYetImplemented(_) => Status::unimplemented(message),
        ArrowError::IoError(..) => Status::unavailable(message),
        ArrowError::ParquetError(_) => Status::data_loss(message),
        ArrowError::ExternalError(inner) => status_of_external(inner.as_ref()),
        ArrowError::CsvError(_)
        | ArrowError::JsonError(_)
        | ArrowError::AvroError(_)
        | ArrowError::IpcError(_)
        | ArrowError::CDataInterface(_)
        | ArrowError::OffsetOverflowError(_) => Status::internal(message),
    }
}

/// A status with another message, keeping the code and Floe's metadata.
fn with_message(status: &Status, message: String) -> Status {
    let mut out = Status::new(status.code(), message);
    *out.metadata_mut() = status.metadata().clone();
    out
}

/// Metadata on every error status an executor raises itself, so that the coordinator can tell
/// "the executor failed the task" from "the connection to the executor broke".
pub const ORIGIN_KEY: &str = "floe-origin";
/// Metadata naming an executor that was found lost (a shuffle producer a consumer could not
/// reach), so that the coordinator drops that executor rather than the one that reported it.
pub const LOST_EXECUTOR_KEY: &str = "floe-lost-executor";

/// Marks a status as raised by an executor.
pub fn mark_from_executor(mut status: Status) -> Status {
    status.metadata_mut().insert(
        ORIGIN_KEY,
        tonic::metadata::MetadataValue::from_static("executor"),
    );
    status
}

/// Whether an executor raised this status itself (rather than the transport).
pub fn is_from_executor(status: &Status) -> bool {
    status.metadata().get(ORIGIN_KEY).is_some()
}

/// The executor a status says was lost, if it says so.
pub fn lost_executor(status: &Status) -> Option<String> {
    status
        .metadata()
        .get(LOST_EXECUTOR_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// An executor died or became unreachable while running a task: the task's output is lost
/// and the work must run again elsewhere.
#[derive(Debug, thiserror::Error)]
#[error("executor {executor_id} was lost while running a task: {reason}")]
pub struct ExecutorLost {
    /// The executor.
    pub executor_id: String,
    /// What the connection reported.
    pub reason: String,
}

/// Whether `e` (however wrapped) says an executor was lost.
pub fn is_executor_lost(e: &DataFusionError) -> bool {
    match e {
        DataFusionError::External(inner) => {
            inner.downcast_ref::<ExecutorLost>().is_some()
                || inner
                    .downcast_ref::<DataFusionError>()
                    .is_some_and(is_executor_lost)
        }
        DataFusionError::Shared(inner) => is_executor_lost(inner),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            is_executor_lost(inner)
        }
        DataFusionError::Collection(errors) => errors.iter().any(is_executor_lost),
        _ => false,
    }
}

fn status_of_external(e: &(dyn std::error::Error + Send + Sync + 'static)) -> Status {
    if let Some(lost) = e.downcast_ref::<ExecutorLost>() {
        let mut status = Status::unavailable(lost.to_string());
        if let Ok(id) = lost.executor_id.parse() {
            status.metadata_mut().insert(LOST_EXECUTOR_KEY, id);
        }
        return status;
    }
    if let Some(status) = e.downcast_ref::<Status>() {
        return with_message(status, status.message().to_string());
    }
    if let Some(c) = e.downcast_ref::<FloeError>() {
        return status_of_catalog(c);
    }
    if let Some(d) = e.downcast_ref::<DataFusionError>() {
        return status_of(d);
    }
    Status::internal(error_chain(e))
}

/// The gRPC status for a catalog-layer error.
pub fn status_from_catalog(e: FloeError) -> Status {
    status_of_catalog(&e)
}

fn status_of_catalog(e: &FloeError) -> Status {
    let message = e.to_string();
    match e {
        FloeError::NotFound(_) => Status::not_found(message),
        FloeError::Config(_) => Status::failed_precondition(message),
        FloeError::Unavailable(_) => Status::unavailable(message),
        FloeError::DataLoss(_) => Status::data_loss(message),
        FloeError::PermissionDenied(_) => Status::permission_denied(message),
        FloeError::Unsupported(_) => Status::unimplemented(message),
        FloeError::Conflict(_) => Status::aborted(message),
        FloeError::Iceberg(e) => {
            let message = error_chain(e);
            match e.kind() {
                iceberg::ErrorKind::TableNotFound | iceberg::ErrorKind::NamespaceNotFound => {
                    Status::not_found(message)
                }
                iceberg::ErrorKind::FeatureUnsupported => Status::unimplemented(message),
                iceberg::ErrorKind::DataInvalid => Status::data_loss(message),
                iceberg::ErrorKind::PreconditionFailed
                | iceberg::ErrorKind::CatalogCommitConflicts => {
                    Status::failed_precondition(message)
                }
                iceberg::ErrorKind::NamespaceAlreadyExists
                | iceberg::ErrorKind::TableAlreadyExists => Status::already_exists(message),
                _ => Status::internal(message),
            }
        }
    }
}

/// A server layer that answers a request whose message does not decode with
/// INVALID_ARGUMENT: tonic answers INTERNAL, which would call a client's garbage Floe's bug.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeErrorsAreInvalidArgument;

impl<S> tower::Layer<S> for DecodeErrorsAreInvalidArgument {
    type Service = DecodeErrorStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrorStatus(inner)
    }
}

/// The service [`DecodeErrorsAreInvalidArgument`] wraps.
#[derive(Debug, Clone)]
pub struct DecodeErrorStatus<S>(S);

impl<S, B, R> tower::Service<http::Request<B>> for DecodeErrorStatus<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answer = self.0.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            let headers = response.headers();
            let internal = headers
                .get("grpc-status")
                .is_some_and(|code| code.as_bytes() == b"13");
            let undecodable = headers
                .get("grpc-message")
                .map(|m| m.as_bytes())
                .is_some_and(|m| {
                    m.starts_with(b"failed to decode Protobuf message")
                        || m.starts_with(b"failed%20to%20decode%20Protobuf%20message")
                });
            if internal && undecodable {
                response.headers_mut().insert(
                    "grpc-status",
                    http::HeaderValue::from_static("3"), // INVALID_ARGUMENT
                );
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tonic::Code;

    use super::*;

    #[test]
    fn a_remote_status_keeps_its_code_through_wrapping() {
        let remote = DataFusionError::External(Box::new(Status::data_loss("object s3://b/k gone")));
        let wrapped = DataFusionError::Shared(Arc::new(DataFusionError::Context(
            "stage 1".into(),
            Box::new(remote),
        )));
        let status = status_from_datafusion(wrapped);
        assert_eq!(status.code(), Code::DataLoss);
        assert!(
            status.message().contains("s3://b/k"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_lost_producer_is_named_in_the_status_through_wrapping() {
        let lost = DataFusionError::External(Box::new(ExecutorLost {
            executor_id: "executor-7".into(),
            reason: "connection refused".into(),
        }));
        let status = mark_from_executor(status_from_datafusion(DataFusionError::Context(
            "task 3".into(),
            Box::new(lost),
        )));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(lost_executor(&status).as_deref(), Some("executor-7"));
        assert!(is_from_executor(&status));
        assert!(!is_from_executor(&Status::unavailable("transport error")));
    }

    #[test]
    fn user_errors_are_invalid_argument_and_catalog_misses_not_found() {
        assert_eq!(
            status_from_datafusion(DataFusionError::Plan("bad".into())).code(),
            Code::InvalidArgument
        );
        let missing = DataFusionError::External(Box::new(FloeError::NotFound("t".into())));
        assert_eq!(status_from_datafusion(missing).code(), Code::NotFound);
        assert_eq!(
            status_from_datafusion(DataFusionError::ResourcesExhausted("mem".into())).code(),
            Code::ResourceExhausted
        );
    }

    /// Every error class, by whose fault it is: the client's (InvalidArgument, NotFound,
    /// AlreadyExists, PermissionDenied, Unimplemented), the data's (DataLoss), the
    /// environment's (Unavailable, ResourceExhausted, Aborted for a lost commit race, a
    /// misconfigured server FailedPrecondition), and Floe's own bugs (Internal).
    #[test]
    fn every_error_class_has_its_status() {
        use arrow::error::ArrowError;
        let external = |e: FloeError| DataFusionError::External(Box::new(e));
        let arrow = |e: ArrowError| DataFusionError::ArrowError(Box::new(e), None);
        let iceberg = |kind| {
            external(FloeError::Iceberg(iceberg::Error::new(
                kind,
                "from iceberg",
            )))
        };
        let cases: Vec<(DataFusionError, Code)> = vec![
            (
                DataFusionError::Plan("no such column".into()),
                Code::InvalidArgument,
            ),
            (
                DataFusionError::Configuration("bad setting".into()),
                Code::InvalidArgument,
            ),
            (
                DataFusionError::Execution("cast failed".into()),
                Code::InvalidArgument,
            ),
            (
                DataFusionError::NotImplemented("LATERAL".into()),
                Code::Unimplemented,
            ),
            (
                DataFusionError::ResourcesExhausted("memory".into()),
                Code::ResourceExhausted,
            ),
            (DataFusionError::Internal("bug".into()), Code::Internal),
            (arrow(ArrowError::DivideByZero), Code::InvalidArgument),
            (
                arrow(ArrowError::ArithmeticOverflow("i64".into())),
                Code::InvalidArgument,
            ),
            (
                arrow(ArrowError::CastError("'a' to INT".into())),
                Code::InvalidArgument,
            ),
            (
                arrow(ArrowError::MemoryError("alloc".into())),
                Code::ResourceExhausted,
            ),
            (
                arrow(ArrowError::ParquetError("corrupt page".into())),
                Code::DataLoss,
            ),
            (
                arrow(ArrowError::IpcError("bad frame".into())),
                Code::Internal,
            ),
            (
                DataFusionError::IoError(std::io::Error::other("reset")),
                Code::Unavailable,
            ),
            (
                external(FloeError::NotFound("table s.t".into())),
                Code::NotFound,
            ),
            (
                external(FloeError::Config("no warehouse".into())),
                Code::FailedPrecondition,
            ),
            (
                external(FloeError::Unavailable("s3 down".into())),
                Code::Unavailable,
            ),
            (
                external(FloeError::DataLoss("s3://b/f.parquet".into())),
                Code::DataLoss,
            ),
            (
                external(FloeError::PermissionDenied("outside roots".into())),
                Code::PermissionDenied,
            ),
            (
                external(FloeError::Conflict("lost the race".into())),
                Code::Aborted,
            ),
            (
                external(FloeError::Unsupported("v4 tables".into())),
                Code::Unimplemented,
            ),
            (iceberg(iceberg::ErrorKind::TableNotFound), Code::NotFound),
            (
                iceberg(iceberg::ErrorKind::NamespaceNotFound),
                Code::NotFound,
            ),
            (
                iceberg(iceberg::ErrorKind::TableAlreadyExists),
                Code::AlreadyExists,
            ),
            (
                iceberg(iceberg::ErrorKind::FeatureUnsupported),
                Code::Unimplemented,
            ),
            (iceberg(iceberg::ErrorKind::DataInvalid), Code::DataLoss),
            (
                iceberg(iceberg::ErrorKind::CatalogCommitConflicts),
                Code::FailedPrecondition,
            ),
            (iceberg(iceberg::ErrorKind::Unexpected), Code::Internal),
        ];
        for (error, code) in cases {
            let shown = error.to_string();
            let status = status_from_datafusion(error);
            assert_eq!(status.code(), code, "{shown} -> {status:?}");
        }
        // The status says what it is about: the file, the table.
        let lost = status_from_datafusion(external(FloeError::DataLoss(
            "reading s3://b/t/data/f.parquet: object not found".into(),
        )));
        assert!(
            lost.message().contains("s3://b/t/data/f.parquet"),
            "{lost:?}"
        );
        let missing = status_from_datafusion(external(FloeError::NotFound(
            "table floe.s.t not found".into(),
        )));
        assert!(missing.message().contains("floe.s.t"), "{missing:?}");
    }
}
