//! Running statements: planning under a fresh query id, writes run when executed (their
//! results stored), queries started when executed and streamed when their ticket is read,
//! cancellation.

use super::*;
use crate::admission::Place;

/// What a query started at GetFlightInfo hands its ticket's reader (see [`crate::started`]):
/// its place, its first batch (or its end, or its error) and the rest of its stream; or the
/// error that stopped it from starting.
pub(crate) type Head = Result<Started, Status>;

pub(crate) struct Started {
    place: Place,
    schema: SchemaRef,
    first: Option<datafusion::common::Result<RecordBatch>>,
    rest: futures::stream::BoxStream<'static, datafusion::common::Result<RecordBatch>>,
}

impl Started {
    /// Its batches, first one first, encoded; its place held while they stream.
    fn into_flight_data(self) -> FlightDataStream {
        let Started {
            place,
            schema,
            first,
            rest,
        } = self;
        let batches = futures::stream::iter(first).chain(rest);
        let stream: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(schema, batches));
        encode_stream(stream)
            .map(move |item| {
                let _holding = &place;
                item
            })
            .boxed()
    }
}

impl FloeFlightSql {
    /// Plans a statement under a fresh query id (a write then runs this very plan, whose
    /// stages are named by it); returns its bound parameters too.
    pub(super) async fn plan_to_run(
        &self,
        handle: &StatementHandle,
        caller: &Principal,
    ) -> Result<(Vec<ScalarValue>, String, Planned), Status> {
        let params = decode_parameters(&handle.parameters)?;
        // The plan made to prepare the statement, if this is its first execution and the
        // tables it reads have not changed since.
        if let Some((query_id, planned)) = self.planned.take_prepared(&handle.prepared_plan, caller)
        {
            if planned.tables_unchanged().await {
                let planned = planned.with_params(params.clone())?;
                return Ok((params, query_id, planned));
            }
        }
        let query_id = uuid::Uuid::new_v4().to_string();
        let planned = self
            .engine
            .plan(&query_id, &handle.sql, params.clone(), caller)
            .await?;
        Ok((params, query_id, planned))
    }

    /// Answers GetFlightInfo. A query is planned (to learn its schema) and, if a place is free
    /// at once, started (see [`crate::started`]); otherwise it runs, so planned, when its
    /// ticket is read (see [`crate::planned`]). A write (INSERT, CTAS, DDL) runs here, to its end, before the answer:
    /// a client that executes a statement and never reads its result still changed the table,
    /// and its ticket only hands out the stored result (the count), however often it is read.
    pub(super) async fn flight_info(
        &self,
        mut handle: StatementHandle,
        descriptor: FlightDescriptor,
        caller: &Principal,
        slot: &SettingsSlot,
    ) -> Result<Response<FlightInfo>, Status> {
        handle.run_id = uuid::Uuid::new_v4().to_string();
        let (params, query_id, planned) = self.plan_to_run(&handle, caller).await?;
        handle.prepared_plan.clear();
        let schema = planned.schema().as_ref().clone();
        if planned.is_write() {
            let batches = self
                .run_write(handle.sql.clone(), params, planned, caller, slot)
                .await?;
            self.results.put(&handle.run_id, batches);
            handle.sql.clear();
            handle.parameters.clear();
            handle.stored_result = true;
        } else if let Some(place) = self.admission.try_admit() {
            self.start(&handle, params, caller, query_id, planned, place);
        } else {
            self.planned.put(&handle.run_id, caller, &query_id, planned);
        }
        let ticket = TicketStatementQuery {
            statement_handle: handle.encode_to_vec().into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(ProtocolError::encoding("result schema"))?
            .with_endpoint(endpoint)
            .with_descriptor(echoed(descriptor));
        Ok(Response::new(info))
    }

    /// Starts a planned query now, holding `place`: planned physically, its tasks dispatched
    /// and its first batch made while the client's DoGet is on its way.
    fn start(
        &self,
        handle: &StatementHandle,
        params: Vec<ScalarValue>,
        caller: &Principal,
        query_id: String,
        planned: Planned,
        place: Place,
    ) {
        let engine = self.engine.clone();
        let sql = handle.sql.clone();
        let rerun_as = caller.clone();
        // A kept plan that reads no table runs no task on an executor (nothing to retry) and
        // makes its answer at once.
        let table_less = matches!(planned, Planned::Kept(_));
        let head = async move {
            let stream = start_planned(&engine, &sql, &query_id, planned).await?;
            let schema = stream.schema();
            // Fused: a query that ends before its first batch is not polled again.
            let mut rest = if table_less {
                stream.fuse().boxed()
            } else {
                RetryingQuery::new(stream, restart(engine, sql, params, rerun_as))
                    .into_stream()
                    .fuse()
                    .boxed()
            };
            let first = rest.next().await;
            Ok(Started {
                place,
                schema,
                first,
                rest,
            })
        };
        self.started.start(&handle.run_id, caller, head, table_less);
    }

    /// Runs a planned write to its end (re-running it if an executor is lost before it
    /// committed). A client that cancels or goes away meanwhile drops it: nothing is
    /// committed (the commit is one atomic step at the end, and a CTAS whose insert does not
    /// finish drops its new table).
    pub(super) async fn run_write(
        &self,
        sql: String,
        params: Vec<ScalarValue>,
        planned: Planned,
        caller: &Principal,
        slot: &SettingsSlot,
    ) -> Result<Vec<RecordBatch>, Status> {
        // USE and SET change the caller's settings, which the authentication layer signs
        // into the token it returns; nothing runs.
        if let Planned::Settings(settings) = &planned {
            info!(user = %caller.user, settings = ?settings, "session settings changed");
            slot.put(settings.clone());
        }
        let _place = match planned {
            Planned::Settings(_) => None,
            _ => Some(self.admission.admit().await?),
        };
        let declared = planned.schema();
        let stream = self.engine.execute(planned).await?;
        let mut retrying = RetryingQuery::new(
            conform_schema(stream, declared),
            restart(self.engine.clone(), sql, params, caller.clone()),
        );
        let mut batches = Vec::new();
        while let Some(batch) = retrying.next().await {
            batches.push(batch.map_err(status_from_datafusion)?);
        }
        Ok(batches)
    }

    pub(super) async fn run(
        &self,
        handle: StatementHandle,
        caller: &Principal,
    ) -> Result<Response<FlightDataStream>, Status> {
        if handle.stored_result {
            return self.stored(&handle);
        }
        let run_id = handle.run_id.clone();
        let stream = match self.started.claim(&run_id, caller) {
            // Started at GetFlightInfo: its batches follow once its first one is made. Tracked
            // (cancellable) and dropped with the call while it is still being made.
            Some(head) => {
                let this = self.clone();
                let caller = caller.clone();
                futures::stream::once(async move {
                    match head.await {
                        Some(started) => started.map(Started::into_flight_data),
                        // It gave up waiting for this ticket: run it afresh.
                        None => this.run_afresh(handle, &caller).await,
                    }
                })
                .map(|made| {
                    made.unwrap_or_else(|e| futures::stream::once(async { Err(e) }).boxed())
                })
                .flatten()
                .boxed()
            }
            None => self.run_afresh(handle, caller).await?,
        };
        let stream = if run_id.is_empty() {
            stream
        } else {
            self.runs.track(&run_id, stream)?.boxed()
        };
        Ok(Response::new(self.abandoned.watch(stream).boxed()))
    }

    /// Plans and runs a query when its ticket is read (it was not started at GetFlightInfo).
    async fn run_afresh(
        &self,
        handle: StatementHandle,
        caller: &Principal,
    ) -> Result<FlightDataStream, Status> {
        // The statement holds its place while its result streams.
        let place = self.admission.admit().await?;
        Ok(self
            .run_uncancellable(handle, caller)
            .await?
            .into_inner()
            .map(move |item| {
                let _holding = &place;
                item
            })
            .boxed())
    }

    /// The result a write stored when it ran at GetFlightInfo.
    pub(super) fn stored(
        &self,
        handle: &StatementHandle,
    ) -> Result<Response<FlightDataStream>, Status> {
        let batches =
            self.results
                .get(&handle.run_id)
                .ok_or_else(|| ProtocolError::ResultGone {
                    run_id: handle.run_id.clone(),
                    ttl_secs: crate::results::RESULT_TTL.as_secs(),
                })?;
        let schema = batches
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(floe_catalog::commit::count_schema);
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
            .map_err(Status::from);
        Ok(Response::new(stream.boxed()))
    }

    /// Runs a statement to its end and adds up the rows its count batches report.
    pub(super) async fn update(
        &self,
        handle: StatementHandle,
        caller: &Principal,
        slot: &SettingsSlot,
    ) -> Result<i64, Status> {
        let (params, _, planned) = self.plan_to_run(&handle, caller).await?;
        let batches = self
            .run_write(handle.sql, params, planned, caller, slot)
            .await?;
        Ok(crate::session::sum_counts(&batches) as i64)
    }

    /// Stops the runs a FlightInfo's tickets name.
    pub(super) fn cancel_info(&self, info: &FlightInfo) -> Result<Cancelled, Status> {
        let mut outcome = Cancelled::NotRunning;
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else {
                continue;
            };
            let any = arrow_flight::sql::Any::decode(ticket.ticket.clone())
                .map_err(|e| ProtocolError::malformed("ticket is not a Floe ticket", e))?;
            let Some(query) = any
                .unpack::<TicketStatementQuery>()
                .map_err(|e| ProtocolError::malformed("ticket is not a Floe ticket", e))?
            else {
                return Err(ProtocolError::Refused(
                    "only statement tickets can be cancelled".into(),
                )
                .into());
            };
            let handle = decode_handle(&query.statement_handle)?;
            if handle.run_id.is_empty() {
                return Err(ProtocolError::Refused("the ticket names no run".into()).into());
            }
            let started = self.started.stop(&handle.run_id);
            if self.runs.cancel(&handle.run_id) == Cancelled::Running || started {
                outcome = Cancelled::Running;
            }
        }
        info!(?outcome, "cancel requested");
        Ok(outcome)
    }

    pub(super) async fn run_uncancellable(
        &self,
        handle: StatementHandle,
        caller: &Principal,
    ) -> Result<Response<FlightDataStream>, Status> {
        let params = decode_parameters(&handle.parameters)?;
        let stream = match self.planned.take(&handle.run_id, caller) {
            Some((query_id, planned)) => {
                start_planned(&self.engine, &handle.sql, &query_id, planned).await?
            }
            None => {
                start_query(
                    self.engine.clone(),
                    handle.sql.clone(),
                    params.clone(),
                    caller.clone(),
                )
                .await?
            }
        };
        let schema = stream.schema();
        let batches = RetryingQuery::new(
            stream,
            restart(self.engine.clone(), handle.sql, params, caller.clone()),
        )
        .into_stream();
        let stream: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(schema, batches));
        Ok(Response::new(encode_stream(stream).boxed()))
    }
}
