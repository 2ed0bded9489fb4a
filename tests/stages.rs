//! The stage cutter: which plans become which stages, read from EXPLAIN on the in-process
//! cluster (a coordinator and two executors).

mod common;

use arrow::array::{Array, StringArray};
use common::Cluster;

/// The physical plan of `sql`, as EXPLAIN prints it.
async fn physical_plan(cluster: &Cluster, sql: &str) -> String {
    let mut connection = cluster.connect().await;
    let batches = connection
        .run(&format!("EXPLAIN {sql}"))
        .await
        .unwrap_or_else(|s| panic!("EXPLAIN {sql}: {s:?}"));
    let mut plan = String::new();
    for batch in &batches {
        let kinds = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("plan_type");
        let plans = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("plan");
        for row in 0..batch.num_rows() {
            if kinds.value(row) == "physical_plan" && !plans.is_null(row) {
                plan.push_str(plans.value(row));
            }
        }
    }
    assert!(!plan.is_empty(), "no physical plan for {sql}");
    plan
}

fn count(plan: &str, node: &str) -> usize {
    plan.matches(node).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_are_cut_where_data_must_move() {
    let cluster = Cluster::start(2).await;
    let mut connection = cluster.connect().await;
    for sql in [
        "CREATE SCHEMA s",
        "CREATE TABLE s.big PARTITIONED BY (k) AS SELECT * FROM (VALUES (1, 'a', 10), (2, 'b', 20), (3, 'a', 30), (4, 'c', 40)) AS v(k, g, x)",
        "CREATE TABLE s.small AS SELECT * FROM (VALUES ('a', 'A'), ('b', 'B')) AS v(g, label)",
    ] {
        connection.run(sql).await.unwrap_or_else(|s| panic!("{sql}: {s:?}"));
    }

    // A scan and a filter run in the executors' tasks; one gather brings the rows back.
    let plan = physical_plan(&cluster, "SELECT x FROM s.big WHERE x > 15").await;
    assert_eq!(count(&plan, "RemoteStageExec"), 1, "{plan}");
    assert_eq!(count(&plan, "ShuffleExchangeExec"), 0, "{plan}");
    assert!(
        plan.find("RemoteStageExec") < plan.find("FilterExec"),
        "filter below the gather: {plan}"
    );

    // A grouped aggregation: partial aggregates in the scan tasks, a hash shuffle on the
    // group key, final aggregates in the consumers, then a gather.
    let plan = physical_plan(&cluster, "SELECT g, sum(x) FROM s.big GROUP BY g").await;
    assert_eq!(count(&plan, "ShuffleExchangeExec"), 1, "{plan}");
    assert!(plan.contains("hash([g@0]"), "{plan}");
    assert_eq!(count(&plan, "RemoteStageExec"), 1, "{plan}");
    assert!(
        plan.contains("mode=Partial") && plan.contains("mode=FinalPartitioned"),
        "{plan}"
    );

    // A join with a small side: the small side is broadcast to the big side's tasks.
    let plan = physical_plan(
        &cluster,
        "SELECT b.x, s.label FROM s.big b JOIN s.small s ON b.g = s.g",
    )
    .await;
    assert!(plan.contains("broadcast to"), "{plan}");
    assert_eq!(count(&plan, "RemoteStageExec"), 1, "{plan}");

    // What cannot run in tasks (a global sort's merge) stays on the coordinator above the gather.
    let plan = physical_plan(&cluster, "SELECT x FROM s.big ORDER BY x LIMIT 2").await;
    let gather = plan.find("RemoteStageExec").expect("a gather");
    let merge = plan.find("SortPreservingMergeExec").expect("a merge");
    assert!(merge < gather, "the merge above the gather: {plan}");

    // A count with no filter and no deletes is answered from the manifests: no stage at all.
    let plan = physical_plan(&cluster, "SELECT count(*) FROM s.big").await;
    assert_eq!(count(&plan, "RemoteStageExec"), 0, "{plan}");

    cluster.shutdown().await;
}
