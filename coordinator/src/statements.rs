//! Running a statement: planning it, starting it on the cluster (and again, through
//! `crate::scheduler::RetryingQuery`, when an executor is lost before any row reached the
//! client); its output with the schema the client was told, encoded as Flight data.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::FlightData;
use datafusion::common::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::scalar::ScalarValue;
use floe_engine::status::status_from_datafusion;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use tonic::Status;
use tracing::{info, info_span, Instrument};

use crate::client_auth::Principal;
use crate::error::CoordinatorError;
use crate::scheduler::Restart;
use crate::session::{Planned, QueryEngine};

/// Plans and starts one run of a query.
pub(crate) async fn start_query(
    engine: QueryEngine,
    sql: String,
    params: Vec<ScalarValue>,
    caller: Principal,
) -> Result<SendableRecordBatchStream, CoordinatorError> {
    let query_id = uuid::Uuid::new_v4().to_string();
    let span = info_span!("query", query_id = %query_id);
    async {
        info!(sql = %sql, "running query");
        let planned = engine.plan(&query_id, &sql, params, &caller).await?;
        let declared = planned.schema();
        Ok(conform_schema(engine.execute(planned).await?, declared))
    }
    .instrument(span)
    .await
}

/// Starts a query planned already (at GetFlightInfo) under `query_id`.
pub(crate) async fn start_planned(
    engine: &QueryEngine,
    sql: &str,
    query_id: &str,
    planned: Planned,
) -> Result<SendableRecordBatchStream, CoordinatorError> {
    let span = info_span!("query", query_id = %query_id);
    async {
        info!(sql = %sql, "running query");
        let declared = planned.schema();
        Ok(conform_schema(engine.execute(planned).await?, declared))
    }
    .instrument(span)
    .await
}

/// How a query is run again after losing an executor: planned and started afresh by the same
/// caller (see `crate::scheduler::RetryingQuery`).
pub(crate) fn restart(
    engine: QueryEngine,
    sql: String,
    params: Vec<ScalarValue>,
    caller: Principal,
) -> Restart {
    Arc::new(move || {
        let (engine, sql, params, caller) =
            (engine.clone(), sql.clone(), params.clone(), caller.clone());
        async move {
            start_query(engine, sql, params, caller)
                .await
                .map_err(Status::from)
        }
        .boxed()
    })
}

/// `stream` with the schema the statement declared when it was planned (what GetFlightInfo
/// and prepared statements told the client). The physical plan may know more, e.g. that a
/// folded constant is never null; a client that compares the two (ADBC does) must see the
/// same schema in the FlightInfo and in the stream. Strings, views inside Floe, leave as plain
/// strings (`floe_engine::views`).
pub(crate) fn conform_schema(
    stream: SendableRecordBatchStream,
    declared: SchemaRef,
) -> SendableRecordBatchStream {
    if stream.schema() == declared {
        return stream;
    }
    let target = Arc::clone(&declared);
    let batches = stream.map(move |batch| {
        let batch = batch?;
        // Columns keep their arrays where the types agree; views become plain strings.
        let columns = batch
            .columns()
            .iter()
            .zip(target.fields())
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(Arc::clone(column))
                } else {
                    arrow::compute::cast(column, field.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>();
        columns
            .and_then(|columns| RecordBatch::try_new(Arc::clone(&target), columns))
            .map_err(|e| {
                DataFusionError::Internal(format!(
                    "a result batch does not fit the statement's declared schema: {e}"
                ))
            })
    });
    Box::pin(RecordBatchStreamAdapter::new(declared, batches))
}

/// DataFusion batches → Flight data, errors as precise statuses.
pub(crate) fn encode_stream(
    stream: SendableRecordBatchStream,
) -> impl Stream<Item = Result<FlightData, Status>> + Send {
    let schema = stream.schema();
    let batches = stream.map_err(|e| FlightError::Tonic(Box::new(status_from_datafusion(e))));
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from)
}
