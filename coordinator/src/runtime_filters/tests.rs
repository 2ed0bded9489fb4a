//! Where runtime filters are placed, on plans of TPC-H's shapes.

use super::*;
use crate::test_plans::hash_join;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::Statistics;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::col;
use datafusion::physical_plan::aggregates::PhysicalGroupBy;
use datafusion::physical_plan::test::exec::StatisticsExec;

/// A shuffled input of Int64 columns `names`, hashed on its first.
fn shuffled(names: &[&str]) -> Arc<dyn ExecutionPlan> {
    let leaf = leaf(names);
    let key = col(names[0], &leaf.schema()).expect("a column");
    Arc::new(
        RepartitionExec::try_new(leaf, Partitioning::Hash(vec![key], 2))
            .expect("a valid test plan"),
    )
}

/// An input of Int64 columns `names`.
fn leaf(names: &[&str]) -> Arc<dyn ExecutionPlan> {
    let schema = Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Int64, true))
            .collect::<Vec<_>>(),
    );
    Arc::new(StatisticsExec::new(
        Statistics::new_unknown(&schema),
        schema,
    ))
}

/// A join whose build side every task collects whole.
fn collect_left(
    build: Arc<dyn ExecutionPlan>,
    probe: Arc<dyn ExecutionPlan>,
    keys: (&str, &str),
    join_type: JoinType,
) -> Arc<dyn ExecutionPlan> {
    hash_join(
        build,
        probe,
        keys,
        join_type,
        None,
        PartitionMode::CollectLeft,
        false,
    )
}

/// `plan` with the one filter it must get, that filter's key columns and the names of its
/// input's columns.
fn the_one_filter(
    plan: &Arc<dyn ExecutionPlan>,
) -> (Arc<dyn ExecutionPlan>, Vec<u32>, Vec<String>) {
    let filtered = with_runtime_filter(plan, &|_| true, &|_| false)
        .expect("planned")
        .expect("a filter");
    let mut placed = Vec::new();
    filters(&filtered, &mut placed);
    assert_eq!(placed.len(), 1, "{filtered:?}");
    let (_, columns, names) = placed.remove(0);
    (filtered, columns, names)
}

fn join(
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    keys: (&str, &str),
    join_type: JoinType,
    projection: Option<Vec<usize>>,
    null_aware: bool,
) -> Arc<dyn ExecutionPlan> {
    let mode = PartitionMode::Partitioned;
    hash_join(left, right, keys, join_type, projection, mode, null_aware)
}

/// The runtime filters placed in `plan`: (filter id, key columns, input's column names).
fn filters(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<(u64, Vec<u32>, Vec<String>)>) {
    if let Some(f) = plan.as_any().downcast_ref::<RuntimeFilterExec>() {
        let names = plan.children()[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        out.push((f.node().filter_id, f.node().columns.clone(), names));
    }
    for child in plan.children() {
        filters(child, out);
    }
}

#[test]
fn a_semi_joins_keys_reach_both_shuffles_under_the_inner_join_of_its_probe_side() {
    // TPC-H Q18: the orders of `HAVING sum(l_quantity) > 300` semi-joined with
    // orders ⋈ lineitem on the order key.
    let inner = join(
        shuffled(&["o_custkey", "o_orderkey"]),
        shuffled(&["l_orderkey", "l_quantity"]),
        ("o_orderkey", "l_orderkey"),
        JoinType::Inner,
        Some(vec![1, 3]),
        false,
    );
    let semi = join(
        shuffled(&["k"]),
        inner,
        ("k", "o_orderkey"),
        JoinType::RightSemi,
        None,
        false,
    );
    // Under a shuffle two parts of the plan read (one shared stage), no filter goes.
    assert!(with_runtime_filter(&semi, &|_| true, &|_| true)
        .expect("planned")
        .is_none());
    let filtered = with_runtime_filter(&semi, &|_| true, &|_| false)
        .expect("planned")
        .expect("a filter");
    let source = filtered.children()[0]
        .as_any()
        .downcast_ref::<RuntimeFilterSourceExec>()
        .expect("the build side publishes its keys");
    assert_eq!(source.node().columns, [0]);
    let mut placed = Vec::new();
    filters(&filtered, &mut placed);
    let id = source.node().filter_id;
    assert_eq!(
        placed,
        [
            (id, vec![1], vec!["o_custkey".into(), "o_orderkey".into()]),
            (id, vec![0], vec!["l_orderkey".into(), "l_quantity".into()]),
        ]
    );
    // Each filter sits under its shuffle (the producers run it), waiting for both tasks.
    let under_shuffles = filtered.children()[1].children().iter().all(|shuffle| {
        shuffle.as_any().is::<RepartitionExec>()
            && shuffle.children()[0].as_any().is::<RuntimeFilterExec>()
    });
    assert!(under_shuffles, "{filtered:?}");
    // Already filtered: not twice.
    assert!(with_runtime_filter(&filtered, &|_| true, &|_| false)
        .expect("planned")
        .is_none());
    // The inner join's own keys then filter the lineitems, on the key they already wait
    // for: those producers test them when they come, without waiting for them too.
    let inner = &filtered.children()[1];
    let refined = with_runtime_filter(inner, &|_| true, &|_| false)
        .expect("planned")
        .expect("a filter");
    let mut eager = Vec::new();
    eagerness(&refined, &mut eager);
    // The orders' semi filter, the inner join's filter, the lineitems' semi filter.
    assert_eq!(eager, [false, true, false], "{refined:?}");
}

#[test]
fn joins_that_keep_unmatched_probe_rows_or_run_elsewhere_get_no_filter() {
    let plain = |join_type, null_aware| {
        join(
            shuffled(&["k"]),
            shuffled(&["fk", "note"]),
            ("k", "fk"),
            join_type,
            None,
            null_aware,
        )
    };
    for join_type in [JoinType::Right, JoinType::Full, JoinType::RightAnti] {
        let plan = plain(join_type, false);
        assert!(with_runtime_filter(&plan, &|_| true, &|_| false)
            .expect("planned")
            .is_none());
    }
    // NOT IN (null-aware): a NULL key on the build side changes every answer.
    let not_in = plain(JoinType::LeftAnti, true);
    assert!(with_runtime_filter(&not_in, &|_| true, &|_| false)
        .expect("planned")
        .is_none());
    // Inputs on the coordinator: its tasks would not know the producers.
    let anti = plain(JoinType::LeftAnti, false);
    assert!(with_runtime_filter(&anti, &|_| false, &|_| false)
        .expect("planned")
        .is_none());
    assert!(with_runtime_filter(&anti, &|_| true, &|_| false)
        .expect("planned")
        .is_some());
}

#[test]
fn a_broadcast_joins_keys_reach_the_shuffles_under_its_probe_side() {
    // TPC-H Q07: the two nations (a broadcast build side) joined on the suppliers' nation
    // of orders ⋈ lineitem (a partitioned join): only lineitems of those suppliers need
    // shuffling.
    let inner = join(
        shuffled(&["o_orderkey", "o_custkey"]),
        shuffled(&["l_orderkey", "s_nationkey"]),
        ("o_orderkey", "l_orderkey"),
        JoinType::Inner,
        None,
        false,
    );
    let nations = leaf(&["n_nationkey"]);
    let broadcast = |join_type| {
        collect_left(
            Arc::clone(&nations),
            Arc::clone(&inner),
            ("n_nationkey", "s_nationkey"),
            join_type,
        )
    };
    let (filtered, columns, names) = the_one_filter(&broadcast(JoinType::Inner));
    assert_eq!(
        (columns, names),
        (vec![1], vec!["l_orderkey".into(), "s_nationkey".into()])
    );
    // Every task of the join holds all the keys: one task's are enough.
    let mut sources = Vec::new();
    sources_of(&filtered, &mut sources);
    assert_eq!(sources, [1]);
    // A build side read by several tasks is collected by a coalesce, which runs on the
    // coordinator; the stage cutter broadcasts what is under it, and so the filter comes.
    let collected = Arc::clone(&broadcast(JoinType::Inner)).with_new_children(vec![
        Arc::new(CoalescePartitionsExec::new(Arc::clone(&nations))),
        Arc::clone(&inner),
    ]);
    let not_a_coalesce = |p: &Arc<dyn ExecutionPlan>| !p.as_any().is::<CoalescePartitionsExec>();
    let filtered = with_runtime_filter(
        &collected.expect("a valid test plan"),
        &not_a_coalesce,
        &|_| false,
    )
    .expect("planned")
    .expect("a filter over a collected build side");
    let mut placed = Vec::new();
    filters(&filtered, &mut placed);
    assert_eq!(placed.len(), 1);
    // A broadcast that keeps unmatched probe rows (a right join) gets none.
    assert!(
        with_runtime_filter(&broadcast(JoinType::Right), &|_| true, &|_| false)
            .expect("planned")
            .is_none()
    );
}

#[test]
fn a_filter_goes_down_to_the_shuffles_of_the_stage_under_the_first_it_reaches() {
    // TPC-H Q07 at SF10: the nations' keys on the lineitems' supplier nation reach the
    // shuffle of orders ⋈ lineitem's output, and under it the lineitem side's own shuffle:
    // there they are placed, so that lineitems of other nations are not shuffled at all.
    let lower = join(
        shuffled(&["l_orderkey", "s_nationkey"]),
        shuffled(&["o_orderkey"]),
        ("l_orderkey", "o_orderkey"),
        JoinType::Inner,
        None,
        false,
    );
    let key = col("s_nationkey", &lower.schema()).expect("a column");
    let upper: Arc<dyn ExecutionPlan> = Arc::new(
        RepartitionExec::try_new(lower, Partitioning::Hash(vec![key], 2))
            .expect("a valid test plan"),
    );
    let top = join(
        shuffled(&["n_nationkey"]),
        upper,
        ("n_nationkey", "s_nationkey"),
        JoinType::Inner,
        None,
        false,
    );
    let (filtered, columns, names) = the_one_filter(&top);
    assert_eq!(
        (columns, names),
        (vec![1], vec!["l_orderkey".into(), "s_nationkey".into()])
    );
    // Not over the join under the first shuffle: the rows there were filtered below.
    let upper = &filtered.children()[1];
    assert!(
        upper.children()[0].as_any().is::<HashJoinExec>(),
        "{filtered:?}"
    );
}

#[test]
fn a_filter_on_a_broadcast_build_sides_column_cuts_it_before_it_is_broadcast() {
    // TPC-H Q07: the customers' nation joined with the two nations above the broadcast join
    // of customer (its build side) with the orders: only those nations' customers need
    // broadcasting, and their keys then filter the orders.
    let customers = || leaf(&["c_custkey", "c_nationkey"]);
    for build in [
        Arc::new(CoalescePartitionsExec::new(customers())) as Arc<dyn ExecutionPlan>,
        customers(),
    ] {
        let lower = collect_left(
            build,
            shuffled(&["o_custkey", "o_orderkey"]),
            ("c_custkey", "o_custkey"),
            JoinType::Inner,
        );
        let top = collect_left(
            leaf(&["n_nationkey"]),
            lower,
            ("n_nationkey", "c_nationkey"),
            JoinType::Inner,
        );
        let (filtered, columns, names) = the_one_filter(&top);
        assert_eq!(
            (columns, names),
            (vec![1], vec!["c_custkey".into(), "c_nationkey".into()])
        );
        // On the rows the broadcast stage sends: under the coalesce, if there is one.
        let build = &filtered.children()[1].children()[0];
        let under = match build.as_any().downcast_ref::<CoalescePartitionsExec>() {
            Some(coalesce) => coalesce.input(),
            None => build,
        };
        assert!(under.as_any().is::<RuntimeFilterExec>(), "{filtered:?}");
        // Its producers wait for the keys: they come before the join below needs its rows.
        let mut eager = Vec::new();
        eagerness(&filtered, &mut eager);
        assert_eq!(eager, [false]);
    }
}

/// The `sources` of every filter placed in `plan`.
fn sources_of(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<u32>) {
    if let Some(f) = plan.as_any().downcast_ref::<RuntimeFilterExec>() {
        out.push(f.node().sources);
    }
    for child in plan.children() {
        sources_of(child, out);
    }
}

/// Whether each filter placed in `plan` is eager, in plan order.
fn eagerness(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<bool>) {
    if let Some(f) = plan.as_any().downcast_ref::<RuntimeFilterExec>() {
        out.push(f.node().eager);
    }
    for child in plan.children() {
        eagerness(child, out);
    }
}

/// `GROUP BY` the first of Int64 columns `names` with `count(` the last `)`, in two steps
/// over a hash shuffle.
fn grouped(names: &[&str]) -> Arc<dyn ExecutionPlan> {
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Int64, true))
            .collect::<Vec<_>>(),
    ));
    let leaf = Arc::new(StatisticsExec::new(
        Statistics::new_unknown(&schema),
        (*schema).clone(),
    ));
    let by = |schema: &arrow::datatypes::SchemaRef| {
        PhysicalGroupBy::new_single(vec![(
            col(names[0], schema).expect("a column"),
            names[0].to_string(),
        )])
    };
    let last = names[names.len() - 1];
    let count = Arc::new(
        AggregateExprBuilder::new(count_udaf(), vec![col(last, &schema).expect("a column")])
            .schema(Arc::clone(&schema))
            .alias("n")
            .build()
            .expect("an aggregate"),
    );
    let partial = Arc::new(
        AggregateExec::try_new(
            AggregateMode::Partial,
            by(&schema),
            vec![Arc::clone(&count)],
            vec![None],
            leaf,
            Arc::clone(&schema),
        )
        .expect("a valid test plan"),
    );
    let partial_schema = partial.schema();
    let key = col(names[0], &partial_schema).expect("a column");
    let shuffled = Arc::new(
        RepartitionExec::try_new(partial, Partitioning::Hash(vec![key], 2))
            .expect("a valid test plan"),
    );
    Arc::new(
        AggregateExec::try_new(
            AggregateMode::FinalPartitioned,
            by(&partial_schema),
            vec![count],
            vec![None],
            shuffled,
            partial_schema,
        )
        .expect("a valid test plan"),
    )
}

#[test]
fn a_filter_on_grouping_keys_goes_below_both_steps_of_the_aggregation() {
    // TPC-H Q17: the parts of one brand and container joined with lineitem's averages per
    // part: only those parts' lineitems need grouping.
    let probe = grouped(&["l_partkey", "l_quantity"]);
    let plan = join(
        shuffled(&["p_partkey"]),
        probe,
        ("p_partkey", "l_partkey"),
        JoinType::Inner,
        None,
        false,
    );
    let (filtered, columns, names) = the_one_filter(&plan);
    assert_eq!(
        (columns, names),
        (vec![0], vec!["l_partkey".into(), "l_quantity".into()])
    );
    // Final ← shuffle ← partial ← filter: the rows are dropped before they are grouped.
    let partial = &filtered.children()[1].children()[0].children()[0];
    assert!(
        partial.as_any().is::<AggregateExec>()
            && partial.children()[0].as_any().is::<RuntimeFilterExec>(),
        "{filtered:?}"
    );
    // On an aggregate's value (the count), not a grouping key: no filter.
    let on_count = join(
        shuffled(&["k"]),
        grouped(&["l_partkey", "l_quantity"]),
        ("k", "n"),
        JoinType::Inner,
        None,
        false,
    );
    assert!(with_runtime_filter(&on_count, &|_| true, &|_| false)
        .expect("planned")
        .is_none());
}

#[test]
fn producers_that_shuffle_their_keys_alone_into_the_join_do_not_wait_for_them() {
    // TPC-H Q04: the lineitems' order keys, straight into the semi join.
    let keys_only = join(
        shuffled(&["o_orderkey"]),
        shuffled(&["l_orderkey"]),
        ("o_orderkey", "l_orderkey"),
        JoinType::LeftSemi,
        None,
        false,
    );
    let filtered = with_runtime_filter(&keys_only, &|_| true, &|_| false)
        .expect("planned")
        .expect("a filter");
    let mut eager = Vec::new();
    eagerness(&filtered, &mut eager);
    assert_eq!(eager, [true]);
    // Rows with more than the keys: the producers wait.
    let wide = join(
        shuffled(&["o_orderkey"]),
        shuffled(&["l_orderkey", "l_quantity"]),
        ("o_orderkey", "l_orderkey"),
        JoinType::LeftSemi,
        None,
        false,
    );
    let filtered = with_runtime_filter(&wide, &|_| true, &|_| false)
        .expect("planned")
        .expect("a filter");
    let mut eager = Vec::new();
    eagerness(&filtered, &mut eager);
    assert_eq!(eager, [false]);
}

/// A scan of every row of a table of `rows` rows of one Int64 column `key` (its count exact).
fn whole_table(key: &str, rows: u64) -> Arc<dyn ExecutionPlan> {
    use floe_proto::{DataFileTask, FileGroup, IcebergScanNode, ScanStatistics};
    crate::test_plans::iceberg_scan(
        "t.whole",
        &[(key, iceberg::spec::PrimitiveType::Long, DataType::Int64)],
        IcebergScanNode {
            file_groups: vec![FileGroup {
                files: vec![DataFileTask {
                    path: "file:///a".into(),
                    file_size_in_bytes: 100,
                    record_count: rows,
                    ..Default::default()
                }],
            }],
            statistics: Some(ScanStatistics {
                records_selected: rows,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

#[test]
fn every_key_of_a_large_table_filters_nothing_and_is_not_sent() {
    let hashed = |input: Arc<dyn ExecutionPlan>| -> Arc<dyn ExecutionPlan> {
        let key = col(&input.schema().field(0).name().clone(), &input.schema()).expect("a key");
        Arc::new(
            RepartitionExec::try_new(input, Partitioning::Hash(vec![key], 2))
                .expect("a valid test plan"),
        )
    };
    let over = |build: Arc<dyn ExecutionPlan>| {
        let probe = shuffled(&["l_orderkey", "l_quantity"]);
        join(
            build,
            probe,
            ("o_orderkey", "l_orderkey"),
            JoinType::Inner,
            None,
            false,
        )
    };
    // All 1.5 M orders' keys (TPC-H Q09's build side): each line's order is among them.
    let orders = over(hashed(whole_table("o_orderkey", 1_500_000)));
    assert!(with_runtime_filter(&orders, &|_| true, &|_| false)
        .expect("planned")
        .is_none());
    // A table of a few rows may hold few of the probe side's keys.
    the_one_filter(&over(hashed(whole_table("o_orderkey", 1_000))));
    // Keys computed from the table's rows are no table's column.
    let scan = whole_table("k", 1_500_000);
    let computed = datafusion::physical_expr::expressions::binary(
        col("k", &scan.schema()).expect("a column"),
        datafusion::logical_expr::Operator::Divide,
        datafusion::physical_expr::expressions::lit(4i64),
        &scan.schema(),
    )
    .expect("k / 4");
    let projection = ProjectionExec::try_new(vec![(computed, "o_orderkey".to_string())], scan)
        .expect("a projection");
    the_one_filter(&over(hashed(Arc::new(projection))));
}
