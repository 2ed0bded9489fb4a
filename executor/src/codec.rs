//! Plan fragments on the wire: datafusion-proto plus Floe's own nodes as extensions.

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use floe_catalog::write::IcebergWriteExec;
use floe_catalog::IcebergScanExec;
use floe_proto::{floe_plan_node, FloePlanNode};
use iceberg::io::FileIO;
use prost::Message;

use crate::shuffle::ShuffleReaderExec;

/// Encodes and decodes the plan nodes Floe adds to DataFusion's. Decoded scans and writes
/// read and write with the decoding process's own FileIO (the wire form carries none).
#[derive(Debug, Default, Clone)]
pub struct FloeCodec {
    file_io: Option<FileIO>,
}

impl FloeCodec {
    fn file_io(&self) -> Result<FileIO> {
        self.file_io.clone().ok_or_else(|| {
            DataFusionError::Internal("this codec decodes no Iceberg scans or writes".into())
        })
    }
}

impl PhysicalExtensionCodec for FloeCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = FloePlanNode::decode(buf)
            .map_err(|e| DataFusionError::Plan(format!("invalid FloePlanNode: {e}")))?;
        match node.node {
            Some(floe_plan_node::Node::IcebergScan(scan)) => {
                if !inputs.is_empty() {
                    return Err(DataFusionError::Plan(
                        "IcebergScanNode takes no inputs".into(),
                    ));
                }
                Ok(Arc::new(IcebergScanExec::try_new(scan, self.file_io()?)?))
            }
            Some(floe_plan_node::Node::ShuffleReader(reader)) => {
                if !inputs.is_empty() {
                    return Err(DataFusionError::Plan(
                        "ShuffleReaderNode takes no inputs".into(),
                    ));
                }
                Ok(Arc::new(ShuffleReaderExec::try_new(reader)?))
            }
            Some(floe_plan_node::Node::IcebergWrite(write)) => match inputs {
                [input] => Ok(Arc::new(IcebergWriteExec::try_new(
                    write,
                    Arc::clone(input),
                    self.file_io()?,
                )?)),
                _ => Err(DataFusionError::Plan(
                    "IcebergWriteNode takes one input".into(),
                )),
            },
            None => Err(DataFusionError::Plan(
                "required protobuf field 'FloePlanNode.node' is missing".into(),
            )),
        }
    }

    fn try_encode(&self, node: Arc<dyn ExecutionPlan>, buf: &mut Vec<u8>) -> Result<()> {
        if let Some(scan) = node.as_any().downcast_ref::<IcebergScanExec>() {
            let msg = FloePlanNode {
                node: Some(floe_plan_node::Node::IcebergScan(scan.node().clone())),
            };
            msg.encode(buf)
                .map_err(|e| DataFusionError::Internal(format!("encoding FloePlanNode: {e}")))?;
            return Ok(());
        }
        if let Some(write) = node.as_any().downcast_ref::<IcebergWriteExec>() {
            let msg = FloePlanNode {
                node: Some(floe_plan_node::Node::IcebergWrite(write.node().clone())),
            };
            msg.encode(buf)
                .map_err(|e| DataFusionError::Internal(format!("encoding FloePlanNode: {e}")))?;
            return Ok(());
        }
        if let Some(reader) = node.as_any().downcast_ref::<ShuffleReaderExec>() {
            let msg = FloePlanNode {
                node: Some(floe_plan_node::Node::ShuffleReader(reader.node().clone())),
            };
            msg.encode(buf)
                .map_err(|e| DataFusionError::Internal(format!("encoding FloePlanNode: {e}")))?;
            return Ok(());
        }
        Err(DataFusionError::NotImplemented(format!(
            "Floe cannot ship plan node {} to an executor",
            node.name()
        )))
    }
}

/// Serializes a plan fragment.
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
    Ok(physical_plan_to_bytes_with_extension_codec(plan, &FloeCodec::default())?.to_vec())
}

/// Deserializes a plan fragment whose scans and writes use `file_io`.
pub fn decode_plan(
    bytes: &[u8],
    ctx: &TaskContext,
    file_io: FileIO,
) -> Result<Arc<dyn ExecutionPlan>> {
    let codec = FloeCodec {
        file_io: Some(file_io),
    };
    physical_plan_from_bytes_with_extension_codec(bytes, ctx, &codec)
}
