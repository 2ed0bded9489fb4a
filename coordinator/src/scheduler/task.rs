//! One task: a partition of a stage, as a signed `TaskDefinition` sent to one executor, and its
//! output stream with the executor's report (the trailer) taken out.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::decode::FlightDataDecoder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Ticket;
use datafusion::common::{DataFusionError, Result};
use floe_engine::runtime::MAX_MESSAGE_SIZE;
use floe_proto::floe_ticket::Kind;
use floe_proto::{
    FileGroup, FloeTicket, ShuffleOutput, StageInput, TaskDefinition, TaskMetrics, PROTOCOL_VERSION,
};
use futures::TryStreamExt;
use prost::Message;
use tonic::Status;

use super::external;
use crate::registry::{ExecutorInfo, ExecutorRegistry};

/// One partition of a stage, to be run on some executor.
pub(super) struct Task {
    pub(super) query_id: String,
    /// The most memory the query may hold on the executor (0: the executor's limit).
    pub(super) memory_limit: u64,
    pub(super) stage_id: u32,
    pub(super) partition: usize,
    /// Its place in the query's rotation over the executors' slots (see the scheduler's placement).
    pub(super) slot: usize,
    pub(super) plan: Arc<Vec<u8>>,
    pub(super) files: FileGroup,
    /// Present for a shuffle producer.
    pub(super) output: Option<ShuffleOutput>,
    /// Where the stages this task reads run.
    pub(super) inputs: Vec<StageInput>,
    pub(super) registry: ExecutorRegistry,
    /// Receives the executor's report from the stream's trailer.
    pub(super) on_report: Arc<dyn Fn(TaskMetrics) + Send + Sync>,
}

/// A task's raw output on the wire.
pub(super) type FlightStream =
    futures::stream::BoxStream<'static, Result<arrow_flight::FlightData>>;

impl Task {
    /// Starts a task whose output streams back here, decoded.
    pub(super) async fn open(
        self,
    ) -> Result<impl futures::Stream<Item = Result<arrow_flight::decode::DecodedFlightData>>> {
        let (_, stream) = self.start().await?;
        // Errors were already turned into DataFusion errors; the decoder wants Flight errors.
        let stream =
            stream.map_err(|e| arrow_flight::error::FlightError::ExternalError(Box::new(e)));
        Ok(FlightDataDecoder::new(stream).map_err(|e| match e {
            arrow_flight::error::FlightError::ExternalError(inner) => {
                match inner.downcast::<DataFusionError>() {
                    Ok(e) => *e,
                    Err(other) => DataFusionError::External(other),
                }
            }
            other => external(Status::internal(format!(
                "decoding a task's output: {other}"
            ))),
        }))
    }

    pub(super) async fn try_on(
        &self,
        executor: &ExecutorInfo,
    ) -> Result<impl futures::Stream<Item = Result<arrow_flight::FlightData, Status>>, Status> {
        let task = TaskDefinition {
            protocol_version: PROTOCOL_VERSION,
            query_id: self.query_id.clone(),
            memory_limit: self.memory_limit,
            stage_id: self.stage_id,
            partition: self.partition as u32,
            plan: self.plan.as_ref().clone(),
            files: Some(self.files.clone()),
            output: self.output,
            inputs: self.inputs.clone(),
            executor_id: executor.id.clone(),
            nonce: floe_engine::runtime::random_nonce().to_vec(),
        };
        let body = task.encode_to_vec();
        let mac = floe_proto::auth::task_mac(&executor.session_key, &body).to_vec();
        let ticket = FloeTicket {
            kind: Some(Kind::Task(floe_proto::Signed { body, mac })),
        };
        let mut client = FlightServiceClient::new(executor.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            client.do_get(Ticket::new(ticket.encode_to_vec())),
        )
        .await
        .map_err(|_| {
            Status::unavailable(format!("executor {} did not answer in 30 s", executor.id))
        })??;
        let on_report = Arc::clone(&self.on_report);
        // The trailer carries only app_metadata (no IPC message): take it out before decoding.
        Ok(response.into_inner().try_filter(move |data| {
            let trailer = data.data_header.is_empty() && !data.app_metadata.is_empty();
            if trailer {
                if let Ok(m) = TaskMetrics::decode(data.app_metadata.clone()) {
                    on_report(m);
                }
            }
            futures::future::ready(!trailer)
        }))
    }
}
