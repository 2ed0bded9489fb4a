//! Query-level retry: a query runs again from the start when an executor is lost before any
//! row reached the client (aggregations, sorts and joins emit nothing until their inputs are
//! complete, so they survive an executor dying mid-query). Once rows were sent, a loss fails
//! the query: running again could send rows twice. The lost executor is already out of the
//! registry (`placement`), so the new run goes elsewhere.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use futures::future::BoxFuture;
use futures::StreamExt;
use tonic::Status;

/// How many times a query runs before an executor loss fails it.
const MAX_QUERY_ATTEMPTS: usize = 3;

/// Plans and starts the query again, from the start.
pub type Restart =
    Arc<dyn Fn() -> BoxFuture<'static, Result<SendableRecordBatchStream, Status>> + Send + Sync>;

/// A running query that is run again when it loses an executor early.
pub struct RetryingQuery {
    restart: Restart,
    stream: SendableRecordBatchStream,
    sent_rows: bool,
    attempts: usize,
}

impl RetryingQuery {
    /// The first run's `stream`, and how to start another.
    pub fn new(stream: SendableRecordBatchStream, restart: Restart) -> Self {
        Self {
            restart,
            stream,
            sent_rows: false,
            attempts: 1,
        }
    }

    /// The next batch, from this run or a new one.
    pub async fn next(&mut self) -> Option<datafusion::common::Result<RecordBatch>> {
        loop {
            match self.stream.next().await? {
                Ok(batch) => {
                    self.sent_rows |= batch.num_rows() > 0;
                    return Some(Ok(batch));
                }
                Err(e)
                    if floe_engine::status::is_executor_lost(&e)
                        && !self.sent_rows
                        && self.attempts < MAX_QUERY_ATTEMPTS =>
                {
                    self.attempts += 1;
                    tracing::warn!(attempt = self.attempts, "running the query again: {e}");
                    match (self.restart)().await {
                        Ok(stream) => self.stream = stream,
                        Err(status) => {
                            return Some(Err(DataFusionError::External(Box::new(status))))
                        }
                    }
                }
                Err(e) if floe_engine::status::is_executor_lost(&e) => {
                    let why = if self.sent_rows {
                        "rows were already sent to the client"
                    } else {
                        "no attempts left"
                    };
                    return Some(Err(DataFusionError::Context(
                        format!("query failed after {} attempt(s) ({why})", self.attempts),
                        Box::new(e),
                    )));
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The batches as a stream.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = datafusion::common::Result<RecordBatch>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut state = state?;
            match state.next().await {
                Some(Ok(batch)) => Some((Ok(batch), Some(state))),
                Some(Err(e)) => Some((Err(e), None)),
                None => None,
            }
        })
    }
}
