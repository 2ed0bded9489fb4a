//! Errors of the catalog layer, each saying whose fault it is.

use thiserror::Error;

/// Result of catalog operations.
pub type Result<T, E = FloeError> = std::result::Result<T, E>;

/// What went wrong while talking to the catalog or reading metadata.
#[derive(Debug, Error)]
pub enum FloeError {
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
    /// The operation would touch storage outside this process's storage roots.
    #[error("{0}")]
    PermissionDenied(String),
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

impl FloeError {
    /// An Iceberg error, with what Floe was doing, classed by whose fault it is: storage
    /// outside the roots is refused, a missing or unreadable object is lost data (named), a
    /// storage or catalog that cannot be reached is unavailable.
    pub fn from_iceberg(doing: &str, e: iceberg::Error) -> Self {
        let message = format!("{doing}: {}", error_chain(&e));
        let lower = message.to_ascii_lowercase();
        if let Some(classified) = Self::classify_storage(message.clone()) {
            classified
        } else if lower.contains("parquet")
            || lower.contains("avro")
            || lower.contains("eof")
            || lower.contains("magic")
            || e.kind() == iceberg::ErrorKind::DataInvalid
        {
            FloeError::DataLoss(message)
        } else {
            FloeError::Iceberg(e)
        }
    }

    /// A storage error's class from its message: outside the roots (refused), a missing object
    /// (lost data), an unreachable store (unavailable); `None` when it is none of these.
    pub fn classify_storage(message: String) -> Option<Self> {
        let lower = message.to_ascii_lowercase();
        if message.contains(crate::storage::OUTSIDE_ROOTS) {
            Some(FloeError::PermissionDenied(message))
        } else if lower.contains("object not found") || lower.contains("not found at") {
            Some(FloeError::DataLoss(message))
        } else if lower.contains("error sending request")
            || lower.contains("connection refused")
            || lower.contains("timed out")
            || lower.contains("dns error")
        {
            Some(FloeError::Unavailable(message))
        } else {
            None
        }
    }
}

/// An error's message followed by each of its sources, without repeats.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
