//! What can go wrong in the protocol adapter itself — a message that does not decode, a call
//! Floe does not serve, an answer that cannot be encoded — and its gRPC status, in one
//! exhaustive match. Errors of planning, running and the catalog keep their own maps
//! ([`crate::error::CoordinatorError`], [`floe_engine::status`]).

use thiserror::Error;
use tonic::Status;

/// An error of the Flight SQL adapter, classed by whose fault it is.
#[derive(Debug, Error)]
pub(crate) enum ProtocolError {
    /// The client sent bytes that are not the message the call takes: its fault.
    #[error("{what}: {detail}")]
    Malformed {
        /// The message expected, as the client would name it.
        what: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// A well-formed request Floe refuses (several parameter rows for one query, a ticket
    /// that names no run).
    #[error("{0}")]
    Refused(String),
    /// A Flight SQL call or action Floe does not implement.
    #[error("Floe does not support {0}")]
    Unsupported(String),
    /// A write's stored result that is no longer held.
    #[error(
        "no stored result for run {run_id}: the statement ran when GetFlightInfo answered, \
         and its result is kept for {ttl_secs} s"
    )]
    ResultGone {
        /// The run whose result was asked for.
        run_id: String,
        /// How long results are kept.
        ttl_secs: u64,
    },
    /// Encoding an answer failed: Floe's fault.
    #[error("encoding {what}: {detail}")]
    Encoding {
        /// The part of the answer being encoded.
        what: &'static str,
        /// What the encoder said.
        detail: String,
    },
}

impl ProtocolError {
    /// A decoding error of the message `what`.
    pub(crate) fn malformed(what: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Malformed {
            what,
            detail: detail.to_string(),
        }
    }

    /// An encoding error of `what`, for `map_err`.
    pub(crate) fn encoding<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::Encoding {
            what,
            detail: e.to_string(),
        }
    }
}

impl From<ProtocolError> for Status {
    fn from(e: ProtocolError) -> Self {
        let message = e.to_string();
        match e {
            ProtocolError::Malformed { .. } | ProtocolError::Refused(_) => {
                Status::invalid_argument(message)
            }
            ProtocolError::Unsupported(_) => Status::unimplemented(message),
            ProtocolError::ResultGone { .. } => Status::not_found(message),
            ProtocolError::Encoding { .. } => Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::error::ArrowError;
    use tonic::Code;

    /// Every class pinned to its code, and each message names what it is about.
    #[test]
    fn every_protocol_error_class_has_its_code_and_names_its_subject() {
        let cases = [
            (
                ProtocolError::malformed("not a CancelFlightInfoRequest", "buffer underflow"),
                Code::InvalidArgument,
                "CancelFlightInfoRequest",
            ),
            (
                ProtocolError::Refused("the ticket names no run".into()),
                Code::InvalidArgument,
                "no run",
            ),
            (
                ProtocolError::Unsupported("Substrait plans".into()),
                Code::Unimplemented,
                "Substrait plans",
            ),
            (
                ProtocolError::ResultGone {
                    run_id: "run-7".into(),
                    ttl_secs: 300,
                },
                Code::NotFound,
                "run-7",
            ),
            (
                ProtocolError::encoding::<ArrowError>("result schema")(ArrowError::SchemaError(
                    "bad".into(),
                )),
                Code::Internal,
                "result schema",
            ),
        ];
        for (error, code, subject) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(subject), "{status:?}");
        }
    }
}
