//! The stage cutter: which plans become which stages, read from EXPLAIN on the in-process
//! cluster (a coordinator and two executors); and what a task does with its plan on the
//! executor (dynamic filters reaching the scan), read from EXPLAIN ANALYZE.

mod common;

use arrow::array::{Array, StringArray};
use common::Cluster;
use std::sync::Arc;

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
    connection.run_each([
            "CREATE SCHEMA s",
            "CREATE TABLE s.big PARTITIONED BY (k) AS SELECT * FROM (VALUES (1, 'a', 10), (2, 'b', 20), (3, 'a', 30), (4, 'c', 40)) AS v(k, g, x)",
            "CREATE TABLE s.small AS SELECT * FROM (VALUES ('a', 'A'), ('b', 'B')) AS v(g, label)",
        ],
    )
    .await;

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

/// The EXPLAIN ANALYZE of `sql`, as text.
async fn analyzed(cluster: &Cluster, sql: &str) -> String {
    common::plan_text(cluster, &format!("EXPLAIN ANALYZE {sql}")).await
}

/// The `rows_read` figures of every stage's tasks in the EXPLAIN ANALYZE of `sql`, summed, after
/// checking that every stage lists a report from each of its tasks (EXPLAIN ANALYZE waits for
/// the producers' reports, which travel apart from the rows).
async fn rows_read(cluster: &Cluster, sql: &str) -> u64 {
    let text = analyzed(cluster, sql).await;
    let stages: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("RemoteStageExec:") || line.contains("ShuffleExchangeExec:"))
        .collect();
    for line in &stages {
        let tasks: usize = line
            .split("tasks=")
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no task count: {line}"));
        let reports = line.matches("@executor-").count();
        assert_eq!(reports, tasks, "a stage's reports are missing: {line}");
    }
    let read: Vec<u64> = stages
        .iter()
        .flat_map(|line| line.split("rows_read=").skip(1))
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("a count")
        })
        .collect();
    assert!(!read.is_empty(), "no task read rows: {text}");
    read.iter().sum()
}

/// `CREATE TABLE table` of keys k = 1..=400 partitioned by g = k % 7.
fn keys_in_seven_groups(table: &str) -> String {
    let values: Vec<String> = (1..=400).map(|k| format!("({k}, {})", k % 7)).collect();
    format!(
        "CREATE TABLE {table} PARTITIONED BY (g) AS SELECT * FROM (VALUES {}) AS v(k, g)",
        values.join(", ")
    )
}

/// One Int64 cell of a one-row answer.
async fn one_number(cluster: &Cluster, sql: &str) -> i64 {
    let mut connection = cluster.connect().await;
    let batches = connection
        .run(sql)
        .await
        .unwrap_or_else(|s| panic!("{sql}: {s:?}"));
    let column = batches[0].column(0);
    column
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap_or_else(|| panic!("{sql}: not an Int64 answer: {column:?}"))
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamic_filters_reach_the_scan_in_executor_tasks() {
    let cluster = Cluster::start(2).await;
    let mut connection = cluster.connect().await;
    // 20,000 facts in one file, g = k % 100, with a note; a dimension of two g values.
    let values: Vec<String> = (1..=20_000)
        .map(|k| format!("({k}, {}, 'note {k}')", k % 100))
        .collect();
    connection
        .run_each([
            "CREATE SCHEMA d".to_string(),
            format!(
                "CREATE TABLE d.facts AS SELECT * FROM (VALUES {}) AS v(k, g, note)",
                values.join(", ")
            ),
            "CREATE TABLE d.dim AS SELECT * FROM (VALUES (7, 'x'), (42, 'y')) AS v(g, label)"
                .to_string(),
        ])
        .await;

    // The dimension is broadcast; its keys, pushed into the facts scan, let the reader keep
    // only the 400 facts that join (without them it reads all 20,000) and decode their notes
    // alone, and the answer is right.
    let join = "SELECT sum(f.k), max(f.note) FROM d.facts f JOIN d.dim s ON f.g = s.g";
    let plan = physical_plan(&cluster, join).await;
    assert!(plan.contains("broadcast to"), "{plan}");
    let expected: i64 = (1..=20_000).filter(|k| k % 100 == 7 || k % 100 == 42).sum();
    assert_eq!(one_number(&cluster, join).await, expected);
    assert_eq!(
        rows_read(&cluster, join).await,
        2 + 400,
        "the dimension's 2 rows, and of the facts only the 400 that join"
    );
    // Where the scan reads only fixed-width columns, filtering rows while decoding costs more
    // than it saves (the keys tested on every row, the rest decoded anyway): the reader decodes
    // whole batches and the join's probe drops the rest. Same answer.
    let narrow = "SELECT sum(f.k) FROM d.facts f JOIN d.dim s ON f.g = s.g";
    assert_eq!(one_number(&cluster, narrow).await, expected);
    assert_eq!(
        rows_read(&cluster, narrow).await,
        2 + 20_000,
        "the dimension's 2 rows, and all the facts"
    );

    // A key among 20,000 is looked up (the reader filters rows while decoding); two values of
    // a column of a hundred are a category (2 % of its range), read as one.
    let lookup = physical_plan(&cluster, "SELECT note FROM d.facts WHERE k = 7").await;
    assert!(lookup.contains("(a lookup by key)"), "{lookup}");
    let category = physical_plan(&cluster, "SELECT note FROM d.facts WHERE g IN (7, 42)").await;
    assert!(
        category.contains("predicate=") && !category.contains("(a lookup by key)"),
        "{category}"
    );

    // A filter on a string column keeps its rows as the scan decodes each batch (the notes
    // decoded as views, only the kept ones copied): one row leaves the scan, and it is right.
    let by_note = "SELECT sum(k) FROM d.facts WHERE note = 'note 777'";
    assert_eq!(one_number(&cluster, by_note).await, 777);
    assert_eq!(
        rows_read(&cluster, by_note).await,
        1,
        "only the matching row"
    );

    // A TopK runs in the task plan too (its bound is offered to the scan; parquet-rs evaluates a
    // row filter over a whole row group before producing rows, so the bound can only skip later
    // row groups and files of the task, none in this one-file table): the answer stays right.
    let top = "SELECT k FROM d.facts ORDER BY k LIMIT 3";
    let mut connection = cluster.connect().await;
    let batches = connection.run(top).await.expect("top 3");
    let keys: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .expect("Int64 keys");
            c.values().to_vec()
        })
        .collect();
    assert_eq!(keys, [1, 2, 3]);

    cluster.shutdown().await;
}

/// The executor of each task on a stage's line of EXPLAIN ANALYZE (`t0@executor-… …; t1@…`).
fn task_executors(line: &str) -> Vec<String> {
    line.split('@')
        .skip(1)
        .filter(|rest| rest.starts_with("executor-"))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stages_have_a_task_per_executor_slot() {
    // One executor with three task slots, one with two: each stage has five tasks, three of
    // them on the first.
    let cluster = Cluster::with_slots(&[3, 2]).await;
    let mut connection = cluster.connect().await;
    connection
        .run_each(["CREATE SCHEMA w".to_string(), keys_in_seven_groups("w.t")])
        .await;
    let sql = "SELECT k % 5, sum(k) FROM w.t GROUP BY k % 5";
    let text = analyzed(&cluster, sql).await;
    let stages: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("RemoteStageExec:") || line.contains("ShuffleExchangeExec:"))
        .collect();
    assert_eq!(stages.len(), 2, "a shuffle and a gather: {text}");
    for line in stages {
        assert!(line.contains("tasks=5"), "{line}");
        let mut per_executor = std::collections::HashMap::<String, usize>::new();
        for executor in task_executors(line) {
            *per_executor.entry(executor).or_default() += 1;
        }
        let mut counts: Vec<usize> = per_executor.into_values().collect();
        counts.sort_unstable();
        assert_eq!(counts, [2, 3], "{line}");
    }
    // And the answer is right.
    let answer = "SELECT sum(k) FROM w.t WHERE g = 3";
    let expected: i64 = (1..=400).filter(|k| k % 7 == 3).sum();
    assert_eq!(one_number(&cluster, answer).await, expected);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_querys_single_task_stages_take_the_executors_in_turn() {
    // Two dimensions of one file each, broadcast to the facts' tasks: each is read by a stage of
    // one task, and the two tasks run on different executors (the slots are taken in turn over
    // the whole query, not from the first executor at every stage).
    let cluster = Cluster::with_slots(&[1, 1]).await;
    let mut connection = cluster.connect().await;
    connection.run_each([
            "CREATE SCHEMA b".to_string(),
            keys_in_seven_groups("b.facts"),
            "CREATE TABLE b.colours AS SELECT * FROM (VALUES (1, 'red'), (2, 'green')) AS v(g, colour)"
                .to_string(),
            "CREATE TABLE b.sizes AS SELECT * FROM (VALUES (3, 'S'), (5, 'M')) AS v(m, size)"
                .to_string(),
        ],
    )
    .await;
    let sql = "SELECT sum(f.k) FROM b.facts f JOIN b.colours c ON f.g = c.g \
               JOIN b.sizes s ON f.k % 6 = s.m";
    let text = analyzed(&cluster, sql).await;
    let single: Vec<Vec<String>> = text
        .lines()
        .filter(|line| line.contains("ShuffleExchangeExec:") && line.contains("tasks=1,"))
        .map(task_executors)
        .collect();
    assert_eq!(single.len(), 2, "two single-task stages: {text}");
    assert_eq!(single[0].len(), 1, "{text}");
    assert_eq!(single[1].len(), 1, "{text}");
    assert_ne!(single[0], single[1], "both on one executor: {text}");
    // And the answer is right.
    let expected: i64 = (1..=400)
        .filter(|k| [1, 2].contains(&(k % 7)) && [3, 5].contains(&(k % 6)))
        .sum();
    assert_eq!(one_number(&cluster, sql).await, expected);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aggregation_over_one_task_sends_its_partial_result_not_its_rows() {
    // A table of one file is read by one task; DataFusion aggregates one partition in a single
    // step, which would bring all 400 rows to the coordinator. Split, the task sends one row.
    let cluster = Cluster::start(2).await;
    let mut connection = cluster.connect().await;
    let values: Vec<String> = (1..=400).map(|k| format!("({k})")).collect();
    connection
        .run_each([
            "CREATE SCHEMA p".to_string(),
            format!(
                "CREATE TABLE p.one AS SELECT * FROM (VALUES {}) AS v(k)",
                values.join(", ")
            ),
        ])
        .await;
    let sql = "SELECT sum(k) FROM p.one WHERE k > 100";
    let text = analyzed(&cluster, sql).await;
    let gather = text
        .lines()
        .find(|l| l.contains("RemoteStageExec:"))
        .unwrap_or_else(|| panic!("no gather: {text}"));
    assert!(gather.contains("tasks=1,"), "{gather}");
    assert!(gather.contains("rows_out=1 "), "{text}");
    assert!(text.contains("mode=Partial"), "{text}");
    // And the answer is right.
    assert_eq!(one_number(&cluster, sql).await, (101..=400).sum::<i64>());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_run_twice_as_many_tasks_as_slots() {
    // Two executors of one slot each: a query's stages have two tasks, a write's four (its
    // tasks wait on their files being written).
    let cluster = Cluster::with_slots(&[1, 1]).await;
    let mut connection = cluster.connect().await;
    connection
        .run_each([
            "CREATE SCHEMA x".to_string(),
            keys_in_seven_groups("x.src"),
            "CREATE TABLE x.dst AS SELECT * FROM x.src WHERE k < 0".to_string(),
        ])
        .await;
    let query = physical_plan(&cluster, "SELECT k, g FROM x.src").await;
    assert!(query.contains("tasks=2"), "{query}");
    let write = physical_plan(&cluster, "INSERT INTO x.dst SELECT k, g FROM x.src").await;
    assert!(write.contains("tasks=4"), "{write}");
    // And the write writes every row once.
    connection
        .run("INSERT INTO x.dst SELECT k, g FROM x.src")
        .await
        .expect("insert");
    assert_eq!(
        one_number(&cluster, "SELECT sum(k) FROM x.dst").await,
        (1..=400).sum::<i64>()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prepared_statement_runs_the_plan_made_to_prepare_it_while_its_table_is_unchanged() {
    // Clients such as ADBC's DB-API prepare every statement they execute: the plan made to
    // answer the prepare runs at the first execution, and every later one starts from it,
    // unless a table it reads changed since.
    let cluster = Cluster::start(1).await;
    let mut connection = cluster.connect().await;
    connection
        .run_each([
            "CREATE SCHEMA x",
            "CREATE TABLE x.t AS SELECT * FROM (VALUES (1), (2), (3)) AS v(k)",
        ])
        .await;
    let count = |batches: Vec<arrow::array::RecordBatch>| {
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("a count")
            .value(0)
    };
    let sql = "SELECT count(*) FROM x.t WHERE k > $1";
    let above = |k: i64| {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("$1", arrow::datatypes::DataType::Int64, false),
        ]));
        arrow::array::RecordBatch::try_new(
            schema,
            vec![Arc::new(arrow::array::Int64Array::from(vec![k]))],
        )
        .expect("a parameter row")
    };

    // Prepared and executed twice: planned once, for the prepare (that plan runs first, and
    // the second execution binds its own parameter to it).
    let before = cluster.statements_planned();
    let handle = connection.prepare(sql).await.expect("prepared");
    let first = connection
        .execute_prepared(sql, handle.clone(), Some(above(1)))
        .await
        .expect("first execution");
    assert_eq!(count(first), 2);
    assert_eq!(
        cluster.statements_planned() - before,
        1,
        "planned once for prepare and run"
    );
    let second = connection
        .execute_prepared(sql, handle, Some(above(0)))
        .await
        .expect("second execution");
    assert_eq!(count(second), 3);
    assert_eq!(
        cluster.statements_planned() - before,
        1,
        "the second execution starts from the kept plan"
    );
    // Run without preparing, the same text starts from the same plan.
    let unprepared = connection
        .run("SELECT count(*) FROM x.t WHERE k > 2")
        .await
        .expect("a query");
    assert_eq!(count(unprepared), 1);
    let again = connection
        .run("SELECT count(*) FROM x.t WHERE k > 2")
        .await
        .expect("the query again");
    assert_eq!(count(again), 1);
    assert_eq!(cluster.statements_planned() - before, 2, "planned once");

    // The table changes between the prepare and the execution: planned anew, the change read.
    let handle = connection.prepare(sql).await.expect("prepared");
    connection
        .run("INSERT INTO x.t VALUES (4)")
        .await
        .expect("insert");
    let before = cluster.statements_planned();
    let after_insert = connection
        .execute_prepared(sql, handle, Some(above(1)))
        .await
        .expect("execution after the insert");
    assert_eq!(count(after_insert), 3);
    assert_eq!(cluster.statements_planned() - before, 1, "planned anew");
    let again = connection
        .run("SELECT count(*) FROM x.t WHERE k > 2")
        .await
        .expect("the query after the insert");
    assert_eq!(count(again), 2, "the inserted row is read");
    assert_eq!(cluster.statements_planned() - before, 2, "planned anew");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_run_again_answers_for_its_own_run() {
    // A kept plan is kept optimized only where that cannot change the answer: `now()` is each
    // run's own time, and a constant query's kept plan still answers exactly.
    let cluster = Cluster::start(1).await;
    let mut connection = cluster.connect().await;
    let now = |batches: Vec<arrow::array::RecordBatch>| {
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::TimestampNanosecondArray>()
            .expect("a timestamp")
            .value(0)
    };
    let before = cluster.statements_planned();
    let first = now(connection.run("SELECT now()").await.expect("now"));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = now(connection.run("SELECT now()").await.expect("now again"));
    assert!(
        second >= first + 20_000_000,
        "the second run's now() ({second}) is not its own time (first {first})"
    );
    assert_eq!(cluster.statements_planned() - before, 1, "planned once");
    for _ in 0..3 {
        let sum = connection
            .run("SELECT 40 + 2 AS answer")
            .await
            .expect("a constant");
        let answer = sum[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("an integer")
            .value(0);
        assert_eq!(answer, 42);
    }
    assert_eq!(cluster.statements_planned() - before, 2);
    // Reading no table, its physical plan is kept too: the second and third runs ran copies.
    assert_eq!(cluster.runs_from_kept_physical(), 2);
    // Kept physical plans answer each run whole: a VALUES list filtered, run three times.
    for _ in 0..3 {
        let rows = connection
            .run("SELECT x * 10 AS y FROM (VALUES (1), (2), (3)) AS t(x) WHERE x > 1")
            .await
            .expect("a VALUES list");
        let mut ys: Vec<i64> = rows
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .expect("integers")
                    .values()
                    .to_vec()
            })
            .collect();
        ys.sort_unstable();
        assert_eq!(ys, vec![20, 30]);
    }
    assert_eq!(cluster.runs_from_kept_physical(), 4);
    // Neither a query reading a table nor one asking the time keeps its physical plan.
    connection
        .run_each([
            "CREATE SCHEMA k",
            "CREATE TABLE k.t AS SELECT * FROM (VALUES (1), (2)) AS v(x)",
        ])
        .await;
    for _ in 0..2 {
        connection
            .run("SELECT count(*) FROM k.t")
            .await
            .expect("a table");
        connection.run("SELECT now()").await.expect("now");
    }
    assert_eq!(cluster.runs_from_kept_physical(), 4);
    cluster.shutdown().await;
}
