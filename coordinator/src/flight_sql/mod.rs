//! The front door: Arrow Flight SQL on arrow-flight's `FlightSqlService`, a protocol adapter.
//!
//! Statement and prepared-statement handles are self-contained ([`StatementHandle`]: the SQL
//! and any bound parameters), so the coordinator keeps no per-client state for queries.
//! `GetFlightInfo` plans a query to learn its schema and starts it (`crate::started`); `DoGet`
//! streams its batches as the executors produce them (`statements`). A write (INSERT, CTAS, DDL) runs at
//! `GetFlightInfo` — when the client executes it — and its ticket reads the stored count
//! (`results`). Handles, parameters and small answers are encoded in `handles`.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionCancelQueryRequest, ActionCancelQueryResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionCreatePreparedSubstraitPlanRequest,
    ActionEndSavepointRequest, ActionEndTransactionRequest, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, CommandStatementSubstraitPlan,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::scalar::ScalarValue;
use floe_catalog::provider::IcebergTableProvider;
use floe_catalog::CATALOG_NAME;
use floe_engine::status::status_from_datafusion;
use floe_proto::StatementHandle;
use futures::{Stream, StreamExt, TryStreamExt};
use iceberg::TableIdent;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use crate::admission::{Admission, AdmissionLimits};
use crate::cancel::{Cancelled, RunRegistry};
use crate::settings::{wire, Settings, SettingsSlot};

/// The Flight action type of `CancelFlightInfo`.
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";
use crate::client_auth::{IssuedToken, Principal};
use crate::metadata::{admits, FOREIGN_KEYS_SCHEMA, PRIMARY_KEYS_SCHEMA, SERVER_INFO, XDBC_TYPES};
use crate::scheduler::RetryingQuery;
use crate::session::{Planned, QueryEngine};
use crate::statements::{conform_schema, encode_stream, restart, start_planned, start_query};
use handles::{
    decode_handle, decode_parameters, echoed, encode_parameters, one_batch, parameter_batches,
    schema_ipc,
};

mod browse;
mod execution;
pub mod handles;
mod protocol_error;
mod sessions;

use protocol_error::ProtocolError;

pub(crate) type FlightDataStream =
    Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// Floe's Flight SQL service.
#[derive(Debug, Clone)]
pub struct FloeFlightSql {
    engine: QueryEngine,
    runs: RunRegistry,
    results: crate::results::StoredResults,
    planned: crate::planned::PlannedRuns,
    started: crate::started::StartedRuns<execution::Head>,
    abandoned: crate::abandoned::AbandonWatch,
    admission: Admission,
}

impl FloeFlightSql {
    /// A service answering with `engine`.
    pub fn new(engine: QueryEngine) -> Self {
        Self {
            engine,
            runs: RunRegistry::default(),
            results: Default::default(),
            planned: Default::default(),
            started: Default::default(),
            abandoned: crate::abandoned::AbandonWatch::new(std::time::Duration::from_secs(300)),
            admission: Admission::new(AdmissionLimits::default()),
        }
    }

    /// Admit at most `limits.max_running` statements at once (see [`crate::admission`]).
    pub fn with_admission(mut self, limits: AdmissionLimits) -> Self {
        self.admission = Admission::new(limits);
        self
    }

    /// Drop results their client leaves unread for `timeout` (and stop their queries).
    pub fn with_result_idle_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.abandoned = crate::abandoned::AbandonWatch::new(timeout);
        self
    }
}

#[tonic::async_trait]
impl FlightSqlService for FloeFlightSql {
    type FlightService = FloeFlightSql;

    /// Sign-in. The authentication layer has checked the credentials (Basic) and issued a
    /// bearer token in the response's `authorization` header; the payload carries it too, for
    /// clients that read the handshake's answer instead.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let caller = Principal::of(&request)?;
        let payload = request
            .extensions()
            .get::<IssuedToken>()
            .map(|t| bytes::Bytes::from(t.0.clone()))
            .unwrap_or_default();
        info!(user = %caller.user, role = %caller.role, "signed in");
        let response = HandshakeResponse {
            protocol_version: 0,
            payload,
        };
        Ok(Response::new(
            futures::stream::once(async { Ok(response) }).boxed(),
        ))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = StatementHandle {
            sql: query.query,
            parameters: vec![],
            run_id: String::new(),
            stored_result: false,
            prepared_plan: String::new(),
        };
        let caller = Principal::of(&request)?;
        let slot = SettingsSlot::of(&request);
        self.flight_info(handle, request.into_inner(), &caller, &slot)
            .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = decode_handle(&query.prepared_statement_handle)?;
        let caller = Principal::of(&request)?;
        let slot = SettingsSlot::of(&request);
        self.flight_info(handle, request.into_inner(), &caller, &slot)
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle = decode_handle(&ticket.statement_handle)?;
        self.run(handle, &Principal::of(&request)?).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle = decode_handle(&query.prepared_statement_handle)?;
        self.run(handle, &Principal::of(&request)?).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = Principal::of(&request)?;
        let query_id = uuid::Uuid::new_v4().to_string();
        let planned = self
            .engine
            .plan(&query_id, &query.query, vec![], &caller)
            .await?;
        let dataset_schema = planned.schema().as_ref().clone();
        let mut parameters: Vec<(String, Option<DataType>)> = planned
            .parameter_types()
            .map_err(|e| ProtocolError::Refused(format!("parameters of the statement: {e}")))?
            .into_iter()
            .collect();
        parameters.sort_by_key(|(name, _)| {
            name.trim_start_matches('$')
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        let parameter_schema = Schema::new(
            parameters
                .into_iter()
                .map(|(name, t)| {
                    let t = t.map_or(DataType::Null, |t| floe_engine::views::plain_type(&t));
                    Field::new(name, t, true)
                })
                .collect::<Vec<_>>(),
        );
        // A query's plan is kept for the execution that usually follows at once.
        let prepared_plan = if planned.is_write() {
            String::new()
        } else {
            let id = uuid::Uuid::new_v4().to_string();
            self.planned.put_prepared(&id, &caller, &query_id, planned);
            id
        };
        let handle = StatementHandle {
            sql: query.query,
            parameters: vec![],
            run_id: String::new(),
            stored_result: false,
            prepared_plan,
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode_to_vec().into(),
            dataset_schema: schema_ipc(&dataset_schema)?,
            parameter_schema: schema_ipc(&parameter_schema)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut handle = decode_handle(&query.prepared_statement_handle)?;
        let batches = parameter_batches(request).await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows > 1 {
            return Err(ProtocolError::Refused(format!(
                "{rows} parameter rows bound; Floe runs a prepared query with one row of parameters"
            ))
            .into());
        }
        handle.parameters = match batches.iter().find(|b| b.num_rows() == 1) {
            Some(batch) => encode_parameters(batch)?,
            None => vec![],
        };
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.encode_to_vec().into()),
        })
    }

    /// A write or DDL statement through Flight SQL's update path: the rows it wrote.
    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = Principal::of(&request)?;
        let slot = SettingsSlot::of(&request);
        let handle = StatementHandle {
            sql: command.query,
            parameters: vec![],
            run_id: String::new(),
            stored_result: false,
            prepared_plan: String::new(),
        };
        self.update(handle, &caller, &slot).await
    }

    /// A prepared write or DDL statement through the update path: run once, or once per row of
    /// parameters sent with it (each its own statement and commit), adding up the rows written.
    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let handle = decode_handle(&query.prepared_statement_handle)?;
        let caller = Principal::of(&request)?;
        let slot = SettingsSlot::of(&request);
        let batches = parameter_batches(request).await?;
        let rows: Vec<RecordBatch> = batches
            .iter()
            .flat_map(|b| (0..b.num_rows()).map(move |i| b.slice(i, 1)))
            .collect();
        if rows.is_empty() {
            return self.update(handle, &caller, &slot).await;
        }
        let mut total = 0;
        for row in rows {
            let mut bound = handle.clone();
            bound.parameters = encode_parameters(&row)?;
            total += self.update(bound, &caller, &slot).await?;
        }
        Ok(total)
    }

    /// The deprecated Flight SQL `CancelQuery` action.
    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        _request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info)
            .map_err(|e| ProtocolError::malformed("CancelQuery.info is not a FlightInfo", e))?;
        self.cancel_info(&info)?;
        Ok(ActionCancelQueryResult {
            // CANCEL_RESULT_CANCELLED (arrow-flight does not export the nested enum)
            result: 1,
        })
    }

    /// Flight's `CancelFlightInfo` action (which the Flight SQL trait does not route).
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let caller = Principal::of(&request)?;
        let slot = SettingsSlot::of(&request);
        let action = request.into_inner();
        match action.r#type.as_str() {
            wire::SET_SESSION_OPTIONS => {
                let body = self
                    .set_session_options(&action.body, &caller, &slot)
                    .await?;
                return Ok(one_result(body));
            }
            wire::GET_SESSION_OPTIONS => {
                let options = caller
                    .settings
                    .options()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), wire::string(v)))
                    .collect();
                let result = wire::GetSessionOptionsResult {
                    session_options: options,
                };
                return Ok(one_result(result.encode_to_vec()));
            }
            wire::CLOSE_SESSION => {
                // The settings live in the caller's token: closing the session clears them.
                slot.put(Settings::default());
                let result = wire::CloseSessionResult {
                    status: wire::CLOSED,
                };
                return Ok(one_result(result.encode_to_vec()));
            }
            _ => {}
        }
        if action.r#type != CANCEL_FLIGHT_INFO {
            return Err(
                ProtocolError::Unsupported(format!("the action '{}'", action.r#type)).into(),
            );
        }
        let info = CancelFlightInfoRequest::decode(action.body)
            .map_err(|e| ProtocolError::malformed("not a CancelFlightInfoRequest", e))?
            .info
            .ok_or_else(|| {
                ProtocolError::malformed("CancelFlightInfoRequest", "its info is missing")
            })?;
        self.cancel_info(&info)?;
        let result = CancelFlightInfoResult {
            status: CancelStatus::Cancelled as i32,
        };
        let body = arrow_flight::Result {
            body: result.encode_to_vec().into(),
        };
        Ok(Response::new(
            futures::stream::once(async { Ok(body) }).boxed(),
        ))
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles carry their whole state; there is nothing to release.
        Ok(())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = SERVER_INFO.for_caller(self.read_only_for(&request)?);
        let schema = query.clone().into_builder(info).schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let info = SERVER_INFO.for_caller(self.read_only_for(&request)?);
        let builder = query.into_builder(info);
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&XDBC_TYPES).schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let builder = query.into_builder(&XDBC_TYPES);
        one_batch(builder.schema(), builder.build())
    }

    // Iceberg tables have no primary or foreign keys: the key calls answer no rows, with
    // the schemas the Flight SQL spec gives them.

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(query, &PRIMARY_KEYS_SCHEMA, request.into_inner())
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        no_rows(&PRIMARY_KEYS_SCHEMA)
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(query, &FOREIGN_KEYS_SCHEMA, request.into_inner())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        no_rows(&FOREIGN_KEYS_SCHEMA)
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(query, &FOREIGN_KEYS_SCHEMA, request.into_inner())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        no_rows(&FOREIGN_KEYS_SCHEMA)
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(query, &FOREIGN_KEYS_SCHEMA, request.into_inner())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        no_rows(&FOREIGN_KEYS_SCHEMA)
    }

    // What Floe does not do, each refused by name.

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(unsupported(
            "Substrait plans (CommandStatementSubstraitPlan)",
        ))
    }

    async fn do_put_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(unsupported(
            "Substrait plans (CommandStatementSubstraitPlan)",
        ))
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        Err(unsupported("Substrait plans (CreatePreparedSubstraitPlan)"))
    }

    async fn do_put_statement_ingest(
        &self,
        _query: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(unsupported(
            "bulk ingestion (CommandStatementIngest); write with INSERT or CREATE TABLE AS",
        ))
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        _request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(unsupported(
            "transactions (BeginTransaction); every statement commits on its own",
        ))
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Err(unsupported(
            "transactions (EndTransaction); every statement commits on its own",
        ))
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        _request: Request<Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        Err(unsupported("savepoints (BeginSavepoint)"))
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Err(unsupported("savepoints (EndSavepoint)"))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG_NAME);
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let namespaces = self.namespaces().await?;
        let mut builder = query.into_builder();
        for ns in namespaces {
            builder.append(CATALOG_NAME, ns.to_url_string());
        }
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }
    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.list_tables(query).await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append("TABLE");
        one_batch(builder.schema(), builder.build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// A DoAction answer of one result.
fn one_result(body: Vec<u8>) -> Response<<FloeFlightSql as FlightService>::DoActionStream> {
    let result = arrow_flight::Result { body: body.into() };
    Response::new(futures::stream::once(async { Ok(result) }).boxed())
}

/// An answer with no rows.
fn no_rows(schema: &SchemaRef) -> Result<Response<FlightDataStream>, Status> {
    one_batch(
        Arc::clone(schema),
        Ok::<_, ProtocolError>(RecordBatch::new_empty(Arc::clone(schema))),
    )
}

/// `UNIMPLEMENTED`, naming what the client asked for.
fn unsupported(what: &str) -> Status {
    ProtocolError::Unsupported(what.to_string()).into()
}
