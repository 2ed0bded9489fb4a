//! Arrow schemas and small results as Arrow IPC streams (in plan nodes and statement handles).

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};

/// Decodes an Arrow schema sent as an (empty) Arrow IPC stream.
pub fn decode_schema(bytes: &[u8]) -> Result<SchemaRef> {
    let (schema, _) = decode_ipc_stream(bytes).map_err(|e| {
        DataFusionError::Plan(format!("IcebergScanNode.output_schema is invalid: {e}"))
    })?;
    Ok(schema)
}

/// Decodes a whole Arrow IPC stream held in memory: its schema and batches.
///
/// Unlike `arrow::ipc::reader::StreamReader`, which allocates whatever length a message
/// header declares before reading it (so a few crafted bytes can ask for gigabytes, or abort the
/// process), this only ever holds the bytes it was given: a declared length beyond them is an
/// error.
pub fn decode_ipc_stream(
    bytes: &[u8],
) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), arrow::error::ArrowError> {
    let mut decoder = arrow::ipc::reader::StreamDecoder::new();
    let mut buffer = arrow::buffer::Buffer::from(bytes.to_vec());
    let mut batches = Vec::new();
    while !buffer.is_empty() {
        if let Some(batch) = decoder.decode(&mut buffer)? {
            batches.push(batch);
        }
    }
    decoder.finish()?;
    let schema = decoder.schema().ok_or_else(|| {
        arrow::error::ArrowError::IpcError("an Arrow IPC stream without a schema".into())
    })?;
    Ok((schema, batches))
}

/// Encodes an Arrow schema as an empty Arrow IPC stream.
pub fn encode_schema(schema: &arrow::datatypes::Schema) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, schema)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}
