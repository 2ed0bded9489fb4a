//! The registry, the filter's predicate and the keys' wire form.

use super::filter::{keep, key_test, KeyTest};
use super::wire::encode_keys;
use super::*;
use arrow::array::RecordBatch;
use arrow::array::{Int32Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};

fn keys(values: &[Option<i64>]) -> Vec<ArrayRef> {
    vec![Arc::new(Int64Array::from(values.to_vec())) as ArrayRef]
}

fn values(columns: &[ArrayRef]) -> Vec<Option<i64>> {
    let column = columns[0]
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("Int64 keys");
    let mut v: Vec<Option<i64>> = column.iter().collect();
    v.sort_unstable();
    v
}

const SHORT: Duration = Duration::from_millis(50);

#[tokio::test]
async fn a_filter_is_the_union_of_every_tasks_keys() {
    let registry = FilterRegistry::default();
    registry.publish("q", 1, 0, Published::Keys(keys(&[Some(3), Some(1)])));
    // One of two tasks: not yet a filter.
    assert!(registry.wait("q", 1, 2, SHORT).await.is_none());
    registry.publish("q", 1, 1, Published::Keys(keys(&[Some(2), None])));
    let union = registry
        .wait("q", 1, 2, SHORT)
        .await
        .expect("both published");
    assert_eq!(values(&union), [None, Some(1), Some(2), Some(3)]);
    // A task whose build side had no row adds no key, whatever order the tasks come in.
    for order in [[0u32, 1], [1, 0]] {
        let registry = FilterRegistry::default();
        for task in order {
            let published = match task {
                0 => Published::Keys(Vec::new()),
                _ => Published::Keys(keys(&[Some(9)])),
            };
            registry.publish("q", 1, task, published);
        }
        let union = registry
            .wait("q", 1, 2, SHORT)
            .await
            .expect("both published");
        assert_eq!(values(&union), [Some(9)]);
    }
    // Another query's, or another filter's, keys are not these.
    assert!(registry.wait("other", 1, 2, SHORT).await.is_none());
    assert!(registry.wait("q", 2, 2, SHORT).await.is_none());
}

#[tokio::test]
async fn a_task_with_too_many_keys_releases_the_waiters_at_once() {
    let registry = Arc::new(FilterRegistry::default());
    let waiting = {
        let registry = Arc::clone(&registry);
        tokio::spawn(async move { registry.wait("q", 7, 3, Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    registry.publish("q", 7, 1, Published::TooMany);
    let waited = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("released long before the bound")
        .expect("the waiter ran");
    assert!(waited.is_none());
}

#[tokio::test]
async fn build_sides_without_rows_keep_no_row() {
    let registry = FilterRegistry::default();
    registry.publish("q", 1, 0, Published::Keys(Vec::new()));
    registry.publish("q", 1, 1, Published::Keys(Vec::new()));
    let none = registry
        .wait("q", 1, 2, SHORT)
        .await
        .expect("both published");
    assert!(none.is_empty());
    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
    let predicate = key_test(&schema, &[0], none).expect("a predicate");
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
    )
    .expect("a batch");
    assert_eq!(keep(batch, &predicate).expect("filtered").num_rows(), 0);
}

#[test]
fn rows_are_kept_when_their_key_is_one_of_the_keys_and_null_keys_never() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Int64, true),
        Field::new("k", DataType::Int64, true),
    ]));
    let predicate = key_test(&schema, &[1], keys(&[Some(2), Some(4), None])).expect("a predicate");
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(vec![10, 20, 30, 40, 50])),
            Arc::new(Int64Array::from(vec![
                Some(1),
                Some(2),
                None,
                Some(4),
                Some(5),
            ])),
        ],
    )
    .expect("a batch");
    let kept = keep(batch, &predicate).expect("filtered");
    let x = kept
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("Int64");
    assert_eq!(x.values().to_vec(), [20, 40]);
}

/// The values of an Int32 column `k` that `test` keeps of `values`.
fn kept_i32(test: &KeyTest, values: Vec<Option<i32>>) -> Vec<Option<i32>> {
    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int32, true)]));
    let batch =
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(values))]).expect("a batch");
    let kept = keep(batch, test).expect("filtered");
    kept.column(0)
        .as_any()
        .downcast_ref::<Int32Array>()
        .expect("Int32")
        .iter()
        .collect()
}

#[test]
fn dense_integer_keys_are_tested_by_a_bitmap_and_sparse_ones_by_a_set_alike() {
    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int32, true)]));
    let int32 = |v: Vec<Option<i32>>| vec![Arc::new(Int32Array::from(v)) as ArrayRef];
    let probe = vec![
        Some(-6),
        Some(-5),
        Some(-4),
        Some(-3),
        None,
        Some(0),
        Some(7),
        Some(8),
        Some(i32::MAX),
        Some(i32::MIN),
        Some(-5),
    ];
    let dense = key_test(
        &schema,
        &[0],
        int32(vec![Some(7), Some(-5), None, Some(0), Some(-3)]),
    )
    .expect("a test");
    assert!(
        matches!(dense, KeyTest::Bitmap { low: -5, .. }),
        "{dense:?}"
    );
    assert_eq!(
        kept_i32(&dense, probe.clone()),
        [Some(-5), Some(-3), Some(0), Some(7), Some(-5)]
    );
    // Two keys a billion apart: a bitmap would take 120 MiB.
    let sparse =
        key_test(&schema, &[0], int32(vec![Some(-5), Some(1_000_000_000)])).expect("a test");
    assert!(matches!(sparse, KeyTest::Predicate(_)), "{sparse:?}");
    let mut far = probe;
    far.push(Some(1_000_000_000));
    assert_eq!(
        kept_i32(&sparse, far),
        [Some(-5), Some(-5), Some(1_000_000_000)]
    );
}

#[test]
fn keys_survive_the_wire() {
    let columns = keys(&[Some(5), None, Some(-1)]);
    let bytes = encode_keys(&columns).expect("encoded");
    let (_, batches) = crate::ipc::decode_ipc_stream(&bytes).expect("decoded");
    assert_eq!(values(batches[0].columns()), [None, Some(-1), Some(5)]);
}

#[test]
fn a_filter_that_drops_almost_nothing_is_given_up_after_its_trial() {
    let mut worth = super::filter::Worth::default();
    // 60,000 rows in, 59,000 kept: still on trial.
    worth.saw(60_000, 59_000);
    assert!(worth.keeps_testing());
    // Past 65,536 rows, 98 % kept: dropped.
    worth.saw(10_000, 9_900);
    assert!(!worth.keeps_testing());
    // One that drops half stays on.
    let mut useful = super::filter::Worth::default();
    useful.saw(70_000, 35_000);
    assert!(useful.keeps_testing());
    useful.saw(70_000, 70_000);
    assert!(useful.keeps_testing(), "judged once, on its first rows");
    // An eager filter must drop three rows in four: one that drops 63 % is given up.
    let mut eager = super::filter::Worth::eager();
    eager.saw(70_000, 26_000);
    assert!(!eager.keeps_testing());
    let mut eager = super::filter::Worth::eager();
    eager.saw(70_000, 3_000);
    assert!(eager.keeps_testing());
}

#[test]
fn too_many_keys_in_all_make_no_filter_unless_a_bitmap_holds_them() {
    let mut parts = Parts::new();
    parts.insert(0, Published::Keys(keys(&[Some(1), Some(2)])));
    parts.insert(1, Published::Keys(keys(&[Some(3), Some(4)])));
    assert_eq!(
        values(&union_within(&parts, 4, 4).expect("four keys")),
        [Some(1), Some(2), Some(3), Some(4)]
    );
    assert!(union_within(&parts, 3, 3).is_none());
    // Four integers over a range of four values: a bitmap's, allowed past the limit of a set.
    assert!(union_within(&parts, 3, 4).is_some());
    // Four integers spread over a billion values are no bitmap's.
    parts.insert(1, Published::Keys(keys(&[Some(3), Some(1_000_000_000)])));
    assert!(union_within(&parts, 3, 4).is_none());
    // Nor are keys of two columns.
    let pair = |a: i64, b: i64| Published::Keys([keys(&[Some(a)]), keys(&[Some(b)])].concat());
    let mut pairs = Parts::new();
    for p in 0..4u32 {
        pairs.insert(p, pair(i64::from(p), i64::from(p)));
    }
    assert!(union_within(&pairs, 3, 4).is_none());
    assert!(union_within(&pairs, 4, 4).is_some());
}

/// The rows of `rows`' next batch.
async fn next(rows: &mut datafusion::execution::SendableRecordBatchStream) -> usize {
    use futures::StreamExt;
    let batch = rows.next().await.expect("a batch").expect("no error");
    batch.num_rows()
}

#[tokio::test]
async fn an_eager_filter_passes_rows_until_the_keys_come_and_then_tests_them() {
    use datafusion::execution::TaskContext;
    use datafusion::physical_plan::ExecutionPlan;
    use floe_proto::RuntimeFilterNode;

    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
    let batch = |values: Vec<i64>| {
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(values))],
        )
        .expect("a batch")
    };
    let input = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
        &[vec![
            batch(vec![1, 2, 3]),
            batch(vec![1, 2, 3]),
            batch(vec![1, 2, 3]),
        ]],
        Arc::clone(&schema),
        None,
    )
    .expect("a memory input");
    let query = format!("eager-{}", std::process::id());
    let node = RuntimeFilterNode {
        filter_id: 11,
        columns: vec![0],
        sources: 2,
        eager: true,
    };
    let filter = super::RuntimeFilterExec::new(input, node).bound(&query);
    let mut rows = filter
        .execute(0, Arc::new(TaskContext::default()))
        .expect("a stream");
    // No keys yet: the first batch passes whole, without waiting.
    let first = tokio::time::timeout(SHORT, next(&mut rows))
        .await
        .expect("not held back");
    assert_eq!(first, 3);
    // One task of two: still no filter.
    let registry = FilterRegistry::process();
    registry.publish(&query, 11, 0, Published::Keys(keys(&[Some(2)])));
    assert_eq!(next(&mut rows).await, 3);
    // Both: only the rows with key 2 or 3 pass.
    registry.publish(&query, 11, 1, Published::Keys(keys(&[Some(3)])));
    assert_eq!(next(&mut rows).await, 2);
}
