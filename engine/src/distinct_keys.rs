//! The first row of each key: a semi or anti join's probe side, shuffled as its keys alone,
//! needs each key once (a repeated key finds the same build rows again, which a semi or anti
//! join does not count).
//!
//! `DistinctKeysExec` keeps, in each partition, one bit per value of an integer key's range
//! `[low, high]` (the column's bounds from the table's statistics) and passes a row only the
//! first time its key is seen: a bit test per row, where a hash aggregation grouping the same
//! keys hashed and probed a table too large for the cache (TPC-H Q22's orders: 750 K customer
//! keys per task, 100 K distinct; the grouping was 30 % of the executors' CPU). It streams:
//! rows go on as they come. Rows whose key is NULL or outside the range pass as they are (the
//! join finds nothing for a NULL, and a repeated key is only redundant), so the bounds steer
//! the saving and never the answer; without memory for its bitmap it passes every row.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrowPrimitiveType, AsArray, BooleanArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{
    ArrowNativeType, DataType, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use floe_proto::DistinctKeysNode;
use futures::StreamExt;

/// The widest key range a bitmap is kept for: 2^26 values, 8 MiB per partition.
pub const MAX_RANGE: u64 = 1 << 26;

/// See the [module documentation](self).
#[derive(Debug)]
pub struct DistinctKeysExec {
    input: Arc<dyn ExecutionPlan>,
    node: DistinctKeysNode,
    metrics: ExecutionPlanMetricsSet,
}

impl DistinctKeysExec {
    /// First rows of each key of `input`'s one column in `[node.low, node.high]`; an error for
    /// an input of more than one column, a column that is not an integer, or a range wider
    /// than [`MAX_RANGE`].
    pub fn try_new(input: Arc<dyn ExecutionPlan>, node: DistinctKeysNode) -> Result<Self> {
        let schema = input.schema();
        let [field] = schema.fields().iter().collect::<Vec<_>>()[..] else {
            return Err(DataFusionError::Plan(format!(
                "DistinctKeysExec takes one key column, got {}",
                schema.fields().len()
            )));
        };
        if !field.data_type().is_integer() {
            return Err(DataFusionError::Plan(format!(
                "DistinctKeysExec keys on an integer column, not {}",
                field.data_type()
            )));
        }
        if range(&node).is_none() {
            return Err(DataFusionError::Plan(format!(
                "DistinctKeysExec range [{}, {}] is empty or wider than {MAX_RANGE} values",
                node.low, node.high
            )));
        }
        Ok(Self {
            input,
            node,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// Its wire form.
    pub fn node(&self) -> &DistinctKeysNode {
        &self.node
    }
}

/// How many values `[low, high]` holds, if it is a range a bitmap is kept for.
fn range(node: &DistinctKeysNode) -> Option<u64> {
    let values = i128::from(node.high) - i128::from(node.low) + 1;
    (1..=i128::from(MAX_RANGE))
        .contains(&values)
        .then_some(values as u64)
}

impl DisplayAs for DistinctKeysExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schema = self.input.schema();
        write!(
            f,
            "DistinctKeysExec: key={}, range=[{}, {}]",
            schema.field(0).name(),
            self.node.low,
            self.node.high
        )
    }
}

impl ExecutionPlan for DistinctKeysExec {
    fn name(&self) -> &str {
        "DistinctKeysExec"
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
            .map_err(|_| DataFusionError::Internal("DistinctKeysExec takes one input".into()))?;
        Ok(Arc::new(Self::try_new(input, self.node)?))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let schema = input.schema();
        let values = range(&self.node).unwrap_or(0);
        let reservation = MemoryConsumer::new(format!("DistinctKeysExec[{partition}]"))
            .register(context.memory_pool());
        let mut seen = Seen::new(self.node.low, values, reservation);
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let stream = input.filter_map(move |batch| {
            let out = match batch {
                Ok(batch) => {
                    let _timer = baseline.elapsed_compute().timer();
                    seen.first_rows(batch)
                        .inspect(|b| baseline.record_output(b.num_rows()))
                }
                Err(e) => Err(e),
            };
            let keep = !matches!(&out, Ok(b) if b.num_rows() == 0);
            futures::future::ready(keep.then_some(out))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// One partition's keys seen so far: a bit per value from `low` (none at all when the memory
/// pool cannot give them: every row then passes).
struct Seen {
    low: i64,
    values: u64,
    bits: Option<Vec<u64>>,
    _reservation: MemoryReservation,
}

impl Seen {
    fn new(low: i64, values: u64, reservation: MemoryReservation) -> Self {
        let words = values.div_ceil(64) as usize;
        let bits = reservation
            .try_grow(words * 8)
            .is_ok()
            .then(|| vec![0; words]);
        Self {
            low,
            values,
            bits,
            _reservation: reservation,
        }
    }

    /// `batch` with the rows whose key was not seen before (or is NULL or out of range).
    fn first_rows(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some(bits) = self.bits.as_mut() else {
            return Ok(batch);
        };
        let keys = batch.column(0);
        let keep = match keys.data_type() {
            DataType::Int8 => first_seen::<Int8Type>(keys, self.low, self.values, bits),
            DataType::Int16 => first_seen::<Int16Type>(keys, self.low, self.values, bits),
            DataType::Int32 => first_seen::<Int32Type>(keys, self.low, self.values, bits),
            DataType::Int64 => first_seen::<Int64Type>(keys, self.low, self.values, bits),
            DataType::UInt8 => first_seen::<UInt8Type>(keys, self.low, self.values, bits),
            DataType::UInt16 => first_seen::<UInt16Type>(keys, self.low, self.values, bits),
            DataType::UInt32 => first_seen::<UInt32Type>(keys, self.low, self.values, bits),
            DataType::UInt64 => first_seen::<UInt64Type>(keys, self.low, self.values, bits),
            other => {
                return Err(DataFusionError::Internal(format!(
                    "DistinctKeysExec got keys of type {other}"
                )))
            }
        };
        if keep.true_count() == batch.num_rows() {
            return Ok(batch);
        }
        Ok(filter_record_batch(&batch, &keep)?)
    }
}

/// Which of `keys` come first: a NULL, a key outside `[low, low + values)`, or a key whose bit
/// was not yet set (it is set now).
fn first_seen<T: ArrowPrimitiveType>(
    keys: &dyn Array,
    low: i64,
    values: u64,
    bits: &mut [u64],
) -> BooleanArray {
    let keys = keys.as_primitive::<T>();
    let offset = |v: T::Native| -> Option<usize> {
        let v = v.to_i64()?;
        let at = (v as i128) - (low as i128);
        (0..values as i128).contains(&at).then_some(at as usize)
    };
    let mut first = |v: T::Native| match offset(v) {
        Some(at) => {
            let (word, bit) = (at / 64, 1u64 << (at % 64));
            let new = bits[word] & bit == 0;
            bits[word] |= bit;
            new
        }
        None => true,
    };
    let keep = match keys.nulls() {
        None => BooleanBuffer::collect_bool(keys.len(), |i| first(keys.value(i))),
        Some(nulls) => {
            BooleanBuffer::collect_bool(keys.len(), |i| nulls.is_null(i) || first(keys.value(i)))
        }
    };
    BooleanArray::new(keep, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, UInt64Array};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::collect;

    fn batch(keys: Arc<dyn Array>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "k",
            keys.data_type().clone(),
            true,
        )]));
        RecordBatch::try_new(schema, vec![keys]).expect("test setup")
    }

    async fn run(batches: Vec<RecordBatch>, low: i64, high: i64) -> Vec<Option<i128>> {
        run_in(batches, low, high, Arc::new(TaskContext::default())).await
    }

    async fn run_in(
        batches: Vec<RecordBatch>,
        low: i64,
        high: i64,
        context: Arc<TaskContext>,
    ) -> Vec<Option<i128>> {
        let schema = batches[0].schema();
        let input = MemorySourceConfig::try_new_exec(&[batches], schema, None).expect("test setup");
        let exec =
            DistinctKeysExec::try_new(input, DistinctKeysNode { low, high }).expect("test setup");
        let out = collect(Arc::new(exec), context).await.expect("test setup");
        let mut keys = Vec::new();
        for b in out {
            let c = arrow::compute::cast(b.column(0), &DataType::Decimal128(38, 0))
                .expect("test setup");
            let c = c.as_primitive::<arrow::datatypes::Decimal128Type>();
            keys.extend(c.iter());
        }
        keys
    }

    #[tokio::test]
    async fn each_key_in_range_passes_once_across_batches_and_the_rest_passes_as_it_is() {
        let first = batch(Arc::new(Int64Array::from(vec![
            Some(5),
            Some(3),
            Some(5),
            None,
            Some(100),
            Some(3),
        ])));
        let second = batch(Arc::new(Int64Array::from(vec![
            Some(3),
            Some(7),
            None,
            Some(100),
            Some(-1),
            Some(7),
            Some(1),
        ])));
        let keys = run(vec![first, second], 1, 10).await;
        // 5, 3 first; the NULLs, 100 and -1 (out of [1, 10]) every time.
        assert_eq!(
            keys,
            [
                Some(5),
                Some(3),
                None,
                Some(100),
                Some(7),
                None,
                Some(100),
                Some(-1),
                Some(1)
            ]
            .to_vec()
        );
    }

    #[tokio::test]
    async fn keys_of_other_integer_types_at_the_range_edges() {
        let keys = run(
            vec![batch(Arc::new(Int32Array::from(vec![-3, 4, -3, 4, 5])))],
            -3,
            4,
        )
        .await;
        assert_eq!(keys, [Some(-3), Some(4), Some(5)].to_vec());
        let big = u64::MAX - 1;
        let keys = run(
            vec![batch(Arc::new(UInt64Array::from(vec![
                0, 63, 64, 0, big, big,
            ])))],
            0,
            64,
        )
        .await;
        // Beyond i64 is out of range: it passes every time.
        assert_eq!(
            keys,
            [0, 63, 64, big, big].map(|v| Some(i128::from(v))).to_vec()
        );
    }

    #[tokio::test]
    async fn without_memory_for_its_bitmap_every_row_passes() {
        let pool = Arc::new(GreedyMemoryPool::new(1024));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .build_arc()
            .expect("test setup");
        let context = Arc::new(TaskContext::default().with_runtime(runtime));
        let keys = run_in(
            vec![batch(Arc::new(Int64Array::from(vec![1, 1, 2, 2])))],
            0,
            1 << 20,
            context,
        )
        .await;
        assert_eq!(keys, [1, 1, 2, 2].map(|v| Some(i128::from(v))).to_vec());
    }

    #[test]
    fn a_range_too_wide_or_a_key_not_an_integer_is_refused() {
        let input = MemorySourceConfig::try_new_exec(
            &[vec![batch(Arc::new(Int64Array::from(vec![1])))]],
            batch(Arc::new(Int64Array::from(vec![1]))).schema(),
            None,
        )
        .expect("test setup");
        let wide = DistinctKeysNode {
            low: 0,
            high: MAX_RANGE as i64,
        };
        assert!(DistinctKeysExec::try_new(input.clone(), wide).is_err());
        let empty = DistinctKeysNode { low: 5, high: 4 };
        assert!(DistinctKeysExec::try_new(input, empty).is_err());
        let strings = batch(Arc::new(arrow::array::StringArray::from(vec!["a"])));
        let input =
            MemorySourceConfig::try_new_exec(&[vec![strings.clone()]], strings.schema(), None)
                .expect("test setup");
        assert!(DistinctKeysExec::try_new(input, DistinctKeysNode { low: 0, high: 1 }).is_err());
    }
}
