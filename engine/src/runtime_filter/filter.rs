//! The producers' side: rows kept when their keys are among the join's build-side keys.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, PrimitiveArray, RecordBatch,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{
    ArrowNativeType, DataType, Int16Type, Int32Type, Int64Type, Int8Type, SchemaRef, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::common::{DataFusionError, Result, Statistics};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{lit, BinaryExpr, Column, InListExpr};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use floe_proto::RuntimeFilterNode;
use futures::future::Either;
use futures::{StreamExt, TryStreamExt};
use tracing::warn;

use super::{key_names, Awaiting, FilterRegistry, WAIT};

/// Keeps the rows whose key columns hold a value of the join's build side (see the module
/// documentation). Unbound (on the coordinator) it passes its input through.
#[derive(Debug)]
pub struct RuntimeFilterExec {
    input: Arc<dyn ExecutionPlan>,
    node: RuntimeFilterNode,
    /// The query whose keys it waits for: set when a task binds it.
    query_id: Option<String>,
    /// The test of the keys, built once for all the task's partitions.
    built: Arc<OnceLock<Option<Arc<KeyTest>>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl RuntimeFilterExec {
    /// A filter on `input`'s key `columns`, with keys from `node.sources` consumer tasks.
    pub fn new(input: Arc<dyn ExecutionPlan>, node: RuntimeFilterNode) -> Self {
        Self {
            input,
            node,
            query_id: None,
            built: Arc::default(),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// Its wire form.
    pub fn node(&self) -> &RuntimeFilterNode {
        &self.node
    }

    /// The same filter in a task of query `query_id`.
    pub fn bound(&self, query_id: &str) -> Self {
        let mut filter = Self::new(Arc::clone(&self.input), self.node.clone());
        filter.query_id = Some(query_id.to_string());
        filter
    }
}

/// Rows a filter is tested on before it is judged.
const JUDGED_AFTER: usize = 65_536;

/// The share of rows a filter must drop to be kept on.
const MIN_DROPPED: f64 = 0.1;

/// The share of rows an eager filter must drop to be kept on: its producer shuffles the keys
/// alone, which costs about what testing them does (TPC-H Q22's orders, 63 % dropped: 10 %
/// slower with the filter on; Q04's lineitems, 96 % dropped: 12 % faster).
const MIN_DROPPED_EAGER: f64 = 0.75;

/// Whether a filter pays: one that keeps nearly every row of the first [`JUDGED_AFTER`] costs a
/// hash lookup per row for nothing, and is dropped (the join stays exact either way).
#[derive(Debug)]
pub(super) struct Worth {
    seen: usize,
    kept: usize,
    dropped: bool,
    min_dropped: f64,
}

impl Default for Worth {
    fn default() -> Self {
        Self {
            seen: 0,
            kept: 0,
            dropped: false,
            min_dropped: MIN_DROPPED,
        }
    }
}

impl Worth {
    /// The judge of an eager filter (see [`MIN_DROPPED_EAGER`]).
    pub(super) fn eager() -> Self {
        Self {
            min_dropped: MIN_DROPPED_EAGER,
            ..Self::default()
        }
    }

    pub(super) fn keeps_testing(&self) -> bool {
        !self.dropped
    }

    pub(super) fn saw(&mut self, rows: usize, kept: usize) {
        if self.dropped || self.seen >= JUDGED_AFTER {
            return;
        }
        self.seen += rows;
        self.kept += kept;
        if self.seen >= JUDGED_AFTER {
            self.dropped = (self.kept as f64) > (self.seen as f64) * (1.0 - self.min_dropped);
        }
    }
}

/// How a filter tests a batch's keys: a bit per value of the keys' range for one integer key
/// column whose range is not much wider than its keys, else `column IN (keys)` for every key
/// column, and-ed (DataFusion's static hash set). A NULL key is never kept.
#[derive(Debug)]
pub(super) enum KeyTest {
    /// Bit `v - low` of `bits` is set for each key `v` of column `column`.
    Bitmap {
        column: usize,
        low: i64,
        bits: Vec<u64>,
    },
    Predicate(Arc<dyn PhysicalExpr>),
}

/// Calls the generic function `$f` with `$array` as the primitive array of its integer type;
/// `$other` for any other type.
macro_rules! with_integers {
    ($array:expr, $f:ident, $other:expr) => {
        match $array.data_type() {
            DataType::Int8 => $f($array.as_primitive::<Int8Type>()),
            DataType::Int16 => $f($array.as_primitive::<Int16Type>()),
            DataType::Int32 => $f($array.as_primitive::<Int32Type>()),
            DataType::Int64 => $f($array.as_primitive::<Int64Type>()),
            DataType::UInt8 => $f($array.as_primitive::<UInt8Type>()),
            DataType::UInt16 => $f($array.as_primitive::<UInt16Type>()),
            DataType::UInt32 => $f($array.as_primitive::<UInt32Type>()),
            DataType::UInt64 => $f($array.as_primitive::<UInt64Type>()),
            _ => $other,
        }
    };
}

/// The widest range a filter's bitmap covers (8 MiB of bits) …
const MAX_BITMAP_VALUES: u64 = 1 << 26;

/// … and at most this many values per key (no more memory than a hash set's entry takes).
const MAX_VALUES_PER_KEY: u64 = 1024;

/// The test of `keys` on `schema`'s `columns`; a filter without key columns (a build side
/// without rows) keeps nothing.
pub(super) fn key_test(
    schema: &SchemaRef,
    columns: &[u32],
    keys: Vec<ArrayRef>,
) -> Result<KeyTest> {
    if let ([column], [values]) = (columns, keys.as_slice()) {
        let index = *column as usize;
        let field_type = schema.fields().get(index).map(|f| f.data_type());
        if field_type == Some(values.data_type()) {
            if let Some((low, bits)) = bitmap(values) {
                return Ok(KeyTest::Bitmap {
                    column: index,
                    low,
                    bits,
                });
            }
        }
    }
    key_predicate(schema, columns, keys).map(KeyTest::Predicate)
}

/// Whether `keys` are integers whose range a bitmap covers (see [`bitmap`]): a filter of
/// them costs a bit per value of the range, however many keys there are.
pub(super) fn dense(keys: &ArrayRef) -> bool {
    fn of<T: ArrowPrimitiveType>(keys: &PrimitiveArray<T>) -> bool {
        bitmap_range(keys).is_some()
    }
    with_integers!(keys, of, false)
}

/// The least value and the width of the range of integer `keys`, if a bitmap covers it: at
/// most [`MAX_BITMAP_VALUES`] values, and [`MAX_VALUES_PER_KEY`] per key.
fn bitmap_range<T: ArrowPrimitiveType>(keys: &PrimitiveArray<T>) -> Option<(i64, u64)> {
    let low = arrow::compute::min(keys)?.to_i64()?;
    let high = arrow::compute::max(keys)?.to_i64()?;
    let values = u64::try_from(i128::from(high) - i128::from(low) + 1).ok()?;
    let present = (keys.len() - keys.null_count()) as u64;
    (values <= MAX_BITMAP_VALUES && values <= present.saturating_mul(MAX_VALUES_PER_KEY))
        .then_some((low, values))
}

/// A bitmap of `keys` from their least value, if they are integers whose range fits one.
fn bitmap(keys: &ArrayRef) -> Option<(i64, Vec<u64>)> {
    fn of<T: ArrowPrimitiveType>(keys: &PrimitiveArray<T>) -> Option<(i64, Vec<u64>)> {
        let (low, values) = bitmap_range(keys)?;
        let mut bits = vec![0u64; values.div_ceil(64) as usize];
        for v in keys.iter().flatten() {
            let at = (v.to_i64()? - low) as usize;
            bits[at / 64] |= 1 << (at % 64);
        }
        Some((low, bits))
    }
    with_integers!(keys, of, None)
}

/// Which of `values` have their bit set in `bits` (from `low`); NULLs and values out of the
/// range do not.
fn in_bitmap(values: &dyn Array, low: i64, bits: &[u64]) -> Result<BooleanArray> {
    fn of<T: ArrowPrimitiveType>(values: &dyn Array, low: i64, bits: &[u64]) -> BooleanArray {
        let values = values.as_primitive::<T>();
        let width = bits.len() as i128 * 64;
        let hit = |v: T::Native| {
            v.to_i64().is_some_and(|v| {
                let at = i128::from(v) - i128::from(low);
                (0..width).contains(&at) && bits[at as usize / 64] & (1 << (at as usize % 64)) != 0
            })
        };
        let kept = match values.nulls() {
            None => BooleanBuffer::collect_bool(values.len(), |i| hit(values.value(i))),
            Some(nulls) => BooleanBuffer::collect_bool(values.len(), |i| {
                nulls.is_valid(i) && hit(values.value(i))
            }),
        };
        BooleanArray::new(kept, None)
    }
    Ok(match values.data_type() {
        DataType::Int8 => of::<Int8Type>(values, low, bits),
        DataType::Int16 => of::<Int16Type>(values, low, bits),
        DataType::Int32 => of::<Int32Type>(values, low, bits),
        DataType::Int64 => of::<Int64Type>(values, low, bits),
        DataType::UInt8 => of::<UInt8Type>(values, low, bits),
        DataType::UInt16 => of::<UInt16Type>(values, low, bits),
        DataType::UInt32 => of::<UInt32Type>(values, low, bits),
        DataType::UInt64 => of::<UInt64Type>(values, low, bits),
        other => {
            return Err(DataFusionError::Internal(format!(
                "a runtime filter bitmap over keys of type {other}"
            )))
        }
    })
}

/// `column IN (keys)` for every key column, and-ed; `false` for a build side without rows (no
/// key column at all).
fn key_predicate(
    schema: &SchemaRef,
    columns: &[u32],
    keys: Vec<ArrayRef>,
) -> Result<Arc<dyn PhysicalExpr>> {
    if keys.is_empty() {
        return Ok(lit(false));
    }
    if columns.len() != keys.len() {
        return Err(DataFusionError::Internal(format!(
            "a runtime filter on {} columns got {} key columns",
            columns.len(),
            keys.len()
        )));
    }
    let mut predicate: Option<Arc<dyn PhysicalExpr>> = None;
    for (&index, keys) in columns.iter().zip(keys) {
        if keys.is_empty() {
            return Ok(lit(false));
        }
        let index = index as usize;
        let field = schema.fields().get(index).ok_or_else(|| {
            DataFusionError::Internal(format!("runtime filter column {index} is out of range"))
        })?;
        if field.data_type() != keys.data_type() {
            return Err(DataFusionError::Internal(format!(
                "runtime filter keys of type {} for column {} of type {}",
                keys.data_type(),
                field.name(),
                field.data_type()
            )));
        }
        let column = Arc::new(Column::new(field.name(), index)) as Arc<dyn PhysicalExpr>;
        let in_list =
            Arc::new(InListExpr::try_new_from_array(column, keys, false)?) as Arc<dyn PhysicalExpr>;
        predicate = Some(match predicate {
            None => in_list,
            Some(p) => Arc::new(BinaryExpr::new(p, Operator::And, in_list)),
        });
    }
    Ok(predicate.unwrap_or_else(|| lit(true)))
}

pub(super) fn keep(batch: RecordBatch, test: &KeyTest) -> Result<RecordBatch> {
    let mask = match test {
        KeyTest::Bitmap { column, low, bits } => in_bitmap(batch.column(*column), *low, bits)?,
        KeyTest::Predicate(predicate) => {
            let mask = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
            mask.as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| DataFusionError::Internal("a runtime filter is not boolean".into()))?
                .clone()
        }
    };
    Ok(filter_record_batch(&batch, &mask)?)
}

/// An eager filter's state: waiting for its keys (until a deadline), or settled.
enum Eager {
    Awaiting(Awaiting, Instant),
    Settled(Option<Arc<KeyTest>>),
}

/// The test of `keys` (`None`: no filter), or `None` with a warning when they do not fit.
fn predicate(
    schema: &SchemaRef,
    node: &RuntimeFilterNode,
    keys: Option<Vec<ArrayRef>>,
) -> Option<Arc<KeyTest>> {
    match key_test(schema, &node.columns, keys?) {
        Ok(p) => Some(Arc::new(p)),
        Err(e) => {
            warn!(
                "runtime filter {:08x} not applied: {e}",
                node.filter_id as u32
            );
            None
        }
    }
}

/// `batch` with the rows `predicate` keeps, while the filter is worth testing.
fn test(
    batch: RecordBatch,
    predicate: Option<&Arc<KeyTest>>,
    worth: &mut Worth,
    output_rows: &Count,
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let kept = match predicate {
        Some(p) if worth.keeps_testing() => {
            let kept = keep(batch, p)?;
            worth.saw(rows, kept.num_rows());
            kept
        }
        _ => batch,
    };
    output_rows.add(kept.num_rows());
    Ok(kept)
}

impl DisplayAs for RuntimeFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = key_names(&self.input.schema(), &self.node.columns);
        write!(
            f,
            "RuntimeFilterExec: filter={:08x}, keys=[{}], from {} task(s) of the join{}",
            self.node.filter_id as u32,
            keys.join(", "),
            self.node.sources,
            if self.node.eager { ", eager" } else { "" }
        )
    }
}

impl ExecutionPlan for RuntimeFilterExec {
    fn name(&self) -> &str {
        "RuntimeFilterExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("RuntimeFilterExec takes one input".into()))?;
        let mut filter = Self::new(input, self.node.clone());
        filter.query_id = self.query_id.clone();
        Ok(Arc::new(filter))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    /// Its input's estimate, no longer exact: the keys that come decide how many rows pass.
    fn partition_statistics(&self, partition: Option<usize>) -> Result<Statistics> {
        Ok(self.input.partition_statistics(partition)?.to_inexact())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let Some(query_id) = self.query_id.clone() else {
            return Ok(input);
        };
        let input_schema = input.schema();
        let schema = input.schema();
        let node = self.node.clone();
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let awaiting = FilterRegistry::process().awaiting(&query_id, node.filter_id, node.sources);
        let built = Arc::clone(&self.built);
        if node.eager {
            // Rows pass until the keys are there (looked for before each batch), then are
            // tested; past the bound the filter is given up.
            let mut state = Eager::Awaiting(awaiting, Instant::now() + WAIT);
            let mut worth = Worth::eager();
            let filtered = input.and_then(move |batch| {
                if let Eager::Awaiting(awaiting, until) = &state {
                    if let Some(test) = built.get() {
                        state = Eager::Settled(test.clone());
                    } else if let Some(keys) = awaiting.now() {
                        let test = built.get_or_init(|| predicate(&schema, &node, keys));
                        state = Eager::Settled(test.clone());
                    } else if Instant::now() >= *until {
                        state = Eager::Settled(None);
                    }
                }
                let predicate = match &state {
                    Eager::Settled(p) => p.as_ref(),
                    Eager::Awaiting(..) => None,
                };
                futures::future::ready(test(batch, predicate, &mut worth, &output_rows))
            });
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                input_schema,
                filtered,
            )));
        }
        let filtered = async move {
            // Fused: an input that ended on its first batch is not asked again.
            let mut input = input.fuse();
            let (predicate, first) = match built.get() {
                Some(test) => (test.clone(), None),
                None => {
                    // The input makes its first batch meanwhile (a join below collects its
                    // build side, a scan opens its file): that one batch waits here for the
                    // keys. An input that ends or fails first needs no keys.
                    let mut waiting = std::pin::pin!(awaiting.wait(WAIT));
                    let (first, keys) =
                        match futures::future::select(waiting.as_mut(), input.next()).await {
                            Either::Left((keys, first)) => (first.await, Some(keys)),
                            Either::Right((first, _)) => (first, None),
                        };
                    let keys = match (&first, keys) {
                        (Some(Ok(_)), None) => Some(waiting.await),
                        (_, keys) => keys,
                    };
                    let test = match keys {
                        Some(keys) => built
                            .get_or_init(|| predicate(&schema, &node, keys))
                            .clone(),
                        None => None,
                    };
                    (test, first)
                }
            };
            let mut worth = Worth::default();
            Ok::<_, DataFusionError>(futures::stream::iter(first).chain(input).and_then(
                move |batch| {
                    futures::future::ready(test(
                        batch,
                        predicate.as_ref(),
                        &mut worth,
                        &output_rows,
                    ))
                },
            ))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            input_schema,
            futures::stream::once(filtered).try_flatten(),
        )))
    }
}
