//! Plans the coordinator's rule tests build on (tests only): Iceberg scans and hash joins.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{JoinType, NullEquality};
use datafusion::physical_expr::expressions::col;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::ExecutionPlan;
use floe_engine::IcebergScanExec;
use floe_proto::IcebergScanNode;
use iceberg::spec::{NestedField, PrimitiveType, Type};

/// A scan of `table` whose columns are `columns` (name, Iceberg type, Arrow type; field ids
/// from 1), reading what `node` says (its files, statistics, keying); the rest of it is filled in.
pub(crate) fn iceberg_scan(
    table: &str,
    columns: &[(&str, PrimitiveType, DataType)],
    node: IcebergScanNode,
) -> Arc<dyn ExecutionPlan> {
    let ids = 1..=columns.len() as i32;
    let iceberg = iceberg::spec::Schema::builder()
        .with_fields(
            ids.clone()
                .zip(columns)
                .map(|(id, (name, t, _))| {
                    NestedField::optional(id, *name, Type::Primitive(t.clone())).into()
                })
                .collect::<Vec<_>>(),
        )
        .build()
        .expect("schema");
    let arrow = Schema::new(
        columns
            .iter()
            .map(|(name, _, t)| Field::new(*name, t.clone(), true))
            .collect::<Vec<_>>(),
    );
    let file_io = iceberg::io::FileIOBuilder::new(Arc::new(
        floe_engine::storage::ObjectStoreStorageFactory::default(),
    ))
    .build();
    let node = IcebergScanNode {
        table: table.into(),
        schema_json: serde_json::to_string(&iceberg).expect("json"),
        project_field_ids: ids.collect(),
        output_schema: floe_engine::ipc::encode_schema(&arrow).expect("schema"),
        ..node
    };
    Arc::new(IcebergScanExec::try_new(node, file_io).expect("scan"))
}

/// A hash join of `left` and `right` on one column each (`keys`), NULLs matching nothing.
pub(crate) fn hash_join(
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    keys: (&str, &str),
    join_type: JoinType,
    projection: Option<Vec<usize>>,
    mode: PartitionMode,
    null_aware: bool,
) -> Arc<dyn ExecutionPlan> {
    let on = vec![(
        col(keys.0, &left.schema()).expect("a left key"),
        col(keys.1, &right.schema()).expect("a right key"),
    )];
    Arc::new(
        HashJoinExec::try_new(
            left,
            right,
            on,
            None,
            &join_type,
            projection,
            mode,
            NullEquality::NullEqualsNothing,
            null_aware,
        )
        .expect("a valid test plan"),
    )
}
