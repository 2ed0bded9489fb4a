//! # floe-proto — the wire contract
//!
//! ```text
//!  executor ──Register/Heartbeat (ControlPlane gRPC)──▶ coordinator
//!  coordinator ──DoGet(ticket = FloeTicket::Task)──▶ executor ──FlightData stream──▶ coordinator
//!  executor ──DoGet(ticket = FloeTicket::ShuffleRead)──▶ executor   (one bucket of a shuffle)
//! ```
//!
//! Every control-plane call, task and shuffle read is authenticated on the cluster secret
//! without sending it ([`auth`]).
//!
//! Generated from `proto/floe/v1/floe.proto` by build.rs into OUT_DIR. This crate depends on
//! no other Floe crate. Both sides check [`PROTOCOL_VERSION`].

pub mod auth;

/// Version of the coordinator↔executor protocol; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 5;

/// Generated messages and services of package `floe.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("floe.v1");
}

pub use v1::*;

/// A protobuf field that was required but absent, for error messages that name the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingField(pub &'static str);

impl std::fmt::Display for MissingField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "required protobuf field '{}' is missing", self.0)
    }
}

impl std::error::Error for MissingField {}

/// Turns an absent optional message field into a [`MissingField`] error naming it.
pub fn required<T>(value: Option<T>, field: &'static str) -> Result<T, MissingField> {
    value.ok_or(MissingField(field))
}
