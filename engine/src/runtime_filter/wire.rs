//! Keys between executors: a consumer task's keys sent to the producers' executors as a
//! MACed ticket, and taken into the receiving process's registry.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Ticket;
use datafusion::common::{DataFusionError, Result};
use floe_proto::{FloeTicket, RuntimeFilterKeys, Signed, PROTOCOL_VERSION};
use futures::StreamExt;
use prost::Message;
use tracing::warn;

use super::source::SourceBinding;
use super::{FilterRegistry, Published, MAX_DENSE_KEYS, MAX_KEY_BYTES, WAIT};
use crate::runtime::MAX_MESSAGE_SIZE;

/// Sends what a consumer task published to every executor of the probe side's producers, in
/// the background (bounded): the join goes on meanwhile.
pub(super) fn publish(filter_id: u64, binding: &SourceBinding, published: Published) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (overflow, keys) = match &published {
        Published::TooMany => (true, Vec::new()),
        Published::Keys(columns) => match encode_keys(columns) {
            Ok(bytes) if bytes.len() <= MAX_KEY_BYTES => (false, bytes),
            Ok(_) => (true, Vec::new()),
            Err(e) => {
                warn!("runtime filter {:08x}: {e}", filter_id as u32);
                (true, Vec::new())
            }
        },
    };
    let message = RuntimeFilterKeys {
        protocol_version: PROTOCOL_VERSION,
        query_id: binding.query_id.clone(),
        filter_id,
        partition: binding.partition,
        overflow,
        keys,
        nonce: crate::runtime::random_nonce().to_vec(),
    }
    .encode_to_vec();
    let signed = Signed {
        mac: floe_proto::auth::runtime_filter_mac(&binding.shuffle_key, &message).to_vec(),
        body: message,
    };
    let ticket = FloeTicket {
        kind: Some(floe_proto::floe_ticket::Kind::RuntimeFilter(signed)),
    }
    .encode_to_vec();
    for endpoint in binding.endpoints.clone() {
        let ticket = ticket.clone();
        #[allow(
            clippy::disallowed_methods,
            reason = "a bounded send that must outlive the build side's stream"
        )]
        runtime.spawn(async move {
            let sent = tokio::time::timeout(WAIT, send(&endpoint, ticket)).await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(
                    "runtime filter {:08x} not sent to {endpoint}: {e}",
                    filter_id as u32
                ),
                Err(_) => warn!(
                    "runtime filter {:08x} not sent to {endpoint}: timed out",
                    filter_id as u32
                ),
            }
        });
    }
}

async fn send(endpoint: &str, ticket: Vec<u8>) -> Result<()> {
    let channel = crate::shuffle::channel(endpoint)?;
    let mut client = FlightServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let mut answer = client
        .do_get(Ticket::new(ticket))
        .await
        .map_err(|s| DataFusionError::External(Box::new(s)))?
        .into_inner();
    while let Some(item) = answer.next().await {
        item.map_err(|s| DataFusionError::External(Box::new(s)))?;
    }
    Ok(())
}

pub(super) fn encode_keys(columns: &[ArrayRef]) -> Result<Vec<u8>> {
    let fields: Vec<arrow::datatypes::Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| arrow::datatypes::Field::new(format!("k{i}"), c.data_type().clone(), true))
        .collect();
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    let mut out = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
    if !columns.is_empty() {
        writer.write(&RecordBatch::try_new(schema, columns.to_vec())?)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Takes a consumer task's keys sent by another executor (already checked to be MACed with the
/// cluster's shuffle key) into this process's registry.
pub fn receive(message: RuntimeFilterKeys) -> std::result::Result<(), tonic::Status> {
    if message.protocol_version != PROTOCOL_VERSION {
        return Err(tonic::Status::failed_precondition(format!(
            "runtime filter keys in protocol version {}, this executor speaks {PROTOCOL_VERSION}",
            message.protocol_version
        )));
    }
    let published = if message.overflow {
        Published::TooMany
    } else {
        let (_, batches) = crate::ipc::decode_ipc_stream(&message.keys)
            .map_err(|e| tonic::Status::invalid_argument(format!("runtime filter keys: {e}")))?;
        match batches.as_slice() {
            [] => Published::Keys(Vec::new()),
            [batch] if batch.num_rows() <= MAX_DENSE_KEYS => {
                Published::Keys(batch.columns().to_vec())
            }
            _ => Published::TooMany,
        }
    };
    FilterRegistry::process().publish(
        &message.query_id,
        message.filter_id,
        message.partition,
        published,
    );
    Ok(())
}
