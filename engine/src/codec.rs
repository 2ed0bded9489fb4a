//! Plan fragments on the wire: datafusion-proto plus Floe's own nodes as extensions.

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use floe_proto::{floe_plan_node, FloePlanNode};
use iceberg::io::FileIO;
use prost::Message;

use crate::distinct_keys::DistinctKeysExec;
use crate::like::LikePartsExpr;
use crate::partition_key::PartitionValueExpr;
use crate::runtime_filter::{RuntimeFilterExec, RuntimeFilterSourceExec};
use crate::shuffle::ShuffleReaderExec;
use crate::write::IcebergWriteExec;
use crate::IcebergScanExec;

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
            Some(floe_plan_node::Node::RuntimeFilter(filter)) => match inputs {
                [input] => Ok(Arc::new(RuntimeFilterExec::new(Arc::clone(input), filter))),
                _ => Err(DataFusionError::Plan(
                    "RuntimeFilterNode takes one input".into(),
                )),
            },
            Some(floe_plan_node::Node::RuntimeFilterSource(source)) => match inputs {
                [input] => Ok(Arc::new(RuntimeFilterSourceExec::new(
                    Arc::clone(input),
                    source,
                ))),
                _ => Err(DataFusionError::Plan(
                    "RuntimeFilterSourceNode takes one input".into(),
                )),
            },
            Some(floe_plan_node::Node::DistinctKeys(keys)) => match inputs {
                [input] => Ok(Arc::new(DistinctKeysExec::try_new(
                    Arc::clone(input),
                    keys,
                )?)),
                _ => Err(DataFusionError::Plan(
                    "DistinctKeysNode takes one input".into(),
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
        let any = node.as_any();
        let extension = if let Some(filter) = any.downcast_ref::<RuntimeFilterExec>() {
            Some(floe_plan_node::Node::RuntimeFilter(filter.node().clone()))
        } else if let Some(source) = any.downcast_ref::<RuntimeFilterSourceExec>() {
            Some(floe_plan_node::Node::RuntimeFilterSource(
                source.node().clone(),
            ))
        } else {
            any.downcast_ref::<DistinctKeysExec>()
                .map(|keys| floe_plan_node::Node::DistinctKeys(*keys.node()))
        };
        if let Some(node) = extension {
            FloePlanNode { node: Some(node) }
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(format!("encoding FloePlanNode: {e}")))?;
            return Ok(());
        }
        Err(DataFusionError::NotImplemented(format!(
            "Floe cannot ship plan node {} to an executor",
            node.name()
        )))
    }

    fn try_decode_expr(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Arc<dyn PhysicalExpr>> {
        if let Some(expr) = PartitionValueExpr::decode(buf, inputs) {
            return Ok(Arc::new(expr?));
        }
        match LikePartsExpr::decode(buf, inputs) {
            Some(expr) => Ok(Arc::new(expr?)),
            None => Err(DataFusionError::Plan(
                "unknown expression extension in a plan fragment".into(),
            )),
        }
    }

    fn try_encode_expr(&self, node: &Arc<dyn PhysicalExpr>, buf: &mut Vec<u8>) -> Result<()> {
        if let Some(value) = node.as_any().downcast_ref::<PartitionValueExpr>() {
            buf.extend(value.encode());
            return Ok(());
        }
        match node.as_any().downcast_ref::<LikePartsExpr>() {
            Some(like) => {
                buf.extend(like.encode());
                Ok(())
            }
            None => Err(DataFusionError::NotImplemented(format!(
                "Floe cannot ship expression {node} to an executor"
            ))),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::encode_schema;
    use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
    use datafusion::physical_plan::union::UnionExec;
    use datafusion::physical_plan::{displayable, ExecutionPlanProperties};
    use floe_proto::{
        DataFileTask, FileGroup, IcebergScanNode, IcebergWriteNode, ShuffleReaderNode,
    };
    use iceberg::spec::{NestedField, PartitionSpec, PrimitiveType, Schema, Type};

    fn file_io() -> FileIO {
        iceberg::io::FileIOBuilder::new(Arc::new(
            crate::storage::ObjectStoreStorageFactory::default(),
        ))
        .build()
    }

    /// Every plan node Floe ships survives encoding and decoding: same wire form, same
    /// partitioning, same plan text.
    #[test]
    fn every_floe_node_round_trips() {
        let iceberg = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::optional(2, "city", Type::Primitive(PrimitiveType::String)).into(),
            ])
            .build()
            .expect("schema");
        let arrow = ArrowSchema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("city", DataType::Utf8, true),
        ]);
        let file = |path: &str| DataFileTask {
            path: path.into(),
            file_size_in_bytes: 100,
            length: 100,
            ..Default::default()
        };
        let scan = IcebergScanExec::try_new(
            IcebergScanNode {
                table: "s.t".into(),
                schema_json: serde_json::to_string(&iceberg).expect("json"),
                project_field_ids: vec![1, 2],
                predicate_json: String::new(),
                file_groups: vec![
                    FileGroup {
                        files: vec![file("file:///w/a.parquet")],
                    },
                    FileGroup {
                        files: vec![file("file:///w/b.parquet"), file("file:///w/c.parquet")],
                    },
                ],
                output_schema: encode_schema(&arrow).expect("schema"),
                snapshot_id: 42,
                ..Default::default()
            },
            file_io(),
        )
        .expect("scan");
        let reader = ShuffleReaderExec::try_new(ShuffleReaderNode {
            stage_id: 3,
            schema: encode_schema(&arrow).expect("schema"),
            partitions: 2,
            broadcast: false,
            bucket: 0,
            reader: 1,
        })
        .expect("reader");
        let input = UnionExec::try_new(vec![
            Arc::new(scan) as Arc<dyn ExecutionPlan>,
            Arc::new(reader),
        ])
        .expect("union");
        let write = IcebergWriteExec::try_new(
            IcebergWriteNode {
                table: "s.t".into(),
                schema_json: serde_json::to_string(&iceberg).expect("json"),
                partition_spec_json: serde_json::to_string(&PartitionSpec::unpartition_spec())
                    .expect("json"),
                data_location: "file:///w/data".into(),
                target_file_size: 1 << 20,
                write_id: "w1".into(),
                format_version: 2,
            },
            input,
            file_io(),
        )
        .expect("write");
        let plan: Arc<dyn ExecutionPlan> = Arc::new(write);

        let bytes = encode_plan(Arc::clone(&plan)).expect("encodes");
        let ctx = datafusion::prelude::SessionContext::new().task_ctx();
        let decoded = decode_plan(&bytes, &ctx, file_io()).expect("decodes");

        let text = |p: &Arc<dyn ExecutionPlan>| displayable(p.as_ref()).indent(true).to_string();
        assert_eq!(text(&decoded), text(&plan));
        assert_eq!(
            decoded.output_partitioning().partition_count(),
            plan.output_partitioning().partition_count()
        );
        assert_eq!(encode_plan(decoded).expect("encodes again"), bytes);
        for node in ["IcebergWriteExec", "IcebergScanExec", "ShuffleReaderExec"] {
            assert!(text(&plan).contains(node), "{node} in {}", text(&plan));
        }
    }

    /// A probe side's first keys ship with their range.
    #[test]
    fn distinct_keys_round_trip() {
        let keys = ArrowSchema::new(vec![Field::new("o_custkey", DataType::Int64, true)]);
        let reader = ShuffleReaderExec::try_new(ShuffleReaderNode {
            stage_id: 2,
            schema: encode_schema(&keys).expect("schema"),
            partitions: 2,
            broadcast: false,
            bucket: 1,
            reader: 0,
        })
        .expect("reader");
        let node = floe_proto::DistinctKeysNode {
            low: -7,
            high: 150_000,
        };
        let plan: Arc<dyn ExecutionPlan> =
            Arc::new(DistinctKeysExec::try_new(Arc::new(reader), node).expect("distinct keys"));
        let bytes = encode_plan(Arc::clone(&plan)).expect("encodes");
        let ctx = datafusion::prelude::SessionContext::new().task_ctx();
        let decoded = decode_plan(&bytes, &ctx, file_io()).expect("decodes");
        let decoded_keys = decoded
            .as_any()
            .downcast_ref::<DistinctKeysExec>()
            .expect("a DistinctKeysExec");
        assert_eq!(decoded_keys.node(), &node);
        assert_eq!(decoded.schema(), plan.schema());
    }

    /// A node Floe does not ship is refused by name, not sent half-encoded.
    #[test]
    fn an_unknown_extension_is_refused_by_name() {
        let ctx = datafusion::prelude::SessionContext::new().task_ctx();
        let bad = FloePlanNode { node: None }.encode_to_vec();
        let err = FloeCodec::default()
            .try_decode(&bad, &[], &ctx)
            .expect_err("no node");
        assert!(err.to_string().contains("FloePlanNode.node"), "{err}");
    }
}
