//! Flight SQL's handles and messages as Floe fills them: statement handles, bound parameters
//! (Arrow IPC), schemas, the descriptor a FlightInfo echoes, one-batch answers.

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::{FlightDescriptor, IpcMessage, SchemaAsIpc};
use datafusion::scalar::ScalarValue;
use floe_proto::StatementHandle;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use super::protocol_error::ProtocolError;
use super::FlightDataStream;

/// Largest command a FlightInfo echoes back in its descriptor.
const MAX_ECHOED_COMMAND: usize = 64 * 1024;

/// The descriptor a FlightInfo names. A large statement is not echoed (the ticket already
/// carries it, and twice its size may not fit the client's message limit): its descriptor
/// is a command descriptor with an empty command.
pub(crate) fn echoed(descriptor: FlightDescriptor) -> FlightDescriptor {
    if descriptor.cmd.len() + descriptor.path.iter().map(String::len).sum::<usize>()
        <= MAX_ECHOED_COMMAND
    {
        descriptor
    } else {
        FlightDescriptor::new_cmd(Vec::<u8>::new())
    }
}

/// A one-batch answer (the metadata commands').
pub(crate) fn one_batch<E: std::fmt::Display>(
    schema: SchemaRef,
    batch: Result<RecordBatch, E>,
) -> Result<Response<FlightDataStream>, Status> {
    let batch = batch.map_err(ProtocolError::encoding("metadata result"))?;
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { Ok(batch) }))
        .map_err(Status::from);
    Ok(Response::new(stream.boxed()))
}

pub(crate) fn decode_handle(bytes: &[u8]) -> Result<StatementHandle, ProtocolError> {
    StatementHandle::decode(bytes)
        .map_err(|e| ProtocolError::malformed("not a Floe statement handle", e))
}

/// Bound parameters: a one-row Arrow IPC stream → one scalar per column.
///
/// # Errors
/// `INVALID_ARGUMENT` when the bytes are not a one-row Arrow IPC stream of scalars.
pub fn decode_parameters(bytes: &[u8]) -> Result<Vec<ScalarValue>, Status> {
    Ok(parameters(bytes)?)
}

fn parameters(bytes: &[u8]) -> Result<Vec<ScalarValue>, ProtocolError> {
    if bytes.is_empty() {
        return Ok(vec![]);
    }
    let (_, batches) = floe_engine::ipc::decode_ipc_stream(bytes)
        .map_err(|e| ProtocolError::malformed("bound parameters are not Arrow IPC", e))?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(vec![]);
    };
    batch
        .columns()
        .iter()
        .map(|column| {
            ScalarValue::try_from_array(column, 0)
                .map_err(|e| ProtocolError::malformed("bound parameter", e))
        })
        .collect()
}

/// The parameter batches a client sent with a DoPut.
pub(crate) async fn parameter_batches(
    request: Request<PeekableFlightDataStream>,
) -> Result<Vec<RecordBatch>, ProtocolError> {
    let stream = request.into_inner().map_err(FlightError::from);
    FlightRecordBatchStream::new_from_flight_data(stream)
        .try_collect()
        .await
        .map_err(|e| ProtocolError::malformed("reading bound parameters", e))
}

/// One row of parameters as the one-row Arrow IPC stream a handle carries.
pub(crate) fn encode_parameters(batch: &RecordBatch) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    write_first_row(&mut out, batch).map_err(ProtocolError::encoding("parameters"))?;
    Ok(out)
}

fn write_first_row(out: &mut Vec<u8>, batch: &RecordBatch) -> Result<(), ArrowError> {
    let mut writer = StreamWriter::try_new(out, &batch.schema())?;
    writer.write(&batch.slice(0, 1))?;
    writer.finish()
}

pub(crate) fn schema_ipc(schema: &Schema) -> Result<bytes::Bytes, ProtocolError> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(ProtocolError::encoding("schema"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    #[test]
    fn parameters_round_trip_and_cut_or_inflated_bytes_are_refused() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("$1", DataType::Int64, false),
                Field::new("$2", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![42, 7])),
                Arc::new(StringArray::from(vec![Some("x"), None])),
            ],
        )
        .expect("batch");
        let bytes = encode_parameters(&batch).expect("encode");
        assert_eq!(
            decode_parameters(&bytes).expect("decode"),
            vec![
                ScalarValue::Int64(Some(42)),
                ScalarValue::Utf8(Some("x".into()))
            ]
        );
        for cut in [1, 9, bytes.len() / 2, bytes.len() - 9] {
            let err = decode_parameters(&bytes[..cut]).expect_err("cut short");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        }
        // A message header that claims 4 GiB of metadata: refused, nothing that size held.
        let mut inflated = vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe];
        inflated.extend_from_slice(&[0; 64]);
        let err = decode_parameters(&inflated).expect_err("inflated");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    }
}
