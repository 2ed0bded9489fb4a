//! Runtime filters across stages on the in-process cluster (a coordinator and two executors):
//! a partitioned join's build-side keys reach the producers of its probe side, which shuffle
//! only the rows that can join — and every answer stays what it was without them.

mod common;

use arrow::array::{Array, Int64Array};
use common::Cluster;

/// Every Int64 cell of the first column of `sql`'s answer, sorted (NULLs as `None`, first).
async fn numbers(cluster: &Cluster, sql: &str) -> Vec<Option<i64>> {
    let mut connection = cluster.connect().await;
    let batches = connection
        .run(sql)
        .await
        .unwrap_or_else(|s| panic!("{sql}: {s:?}"));
    let mut values = Vec::new();
    for batch in &batches {
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap_or_else(|| panic!("{sql}: not Int64: {:?}", batch.column(0)));
        values.extend((0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i))));
    }
    values.sort_unstable();
    values
}

/// The sum of a figure (`rows_read=`, `rows_out=`) over the tasks of one stage's line.
fn figure(line: &str, name: &str) -> u64 {
    line.split(name)
        .skip(1)
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().expect("a count")
        })
        .sum()
}

/// The rows the shuffle stage that read `rows_read` table rows sent on, in `EXPLAIN ANALYZE`.
fn rows_shuffled_of(text: &str, rows_read: u64) -> u64 {
    let line = text
        .lines()
        .filter(|l| l.contains("ShuffleExchangeExec:"))
        .find(|l| figure(l, "rows_read=") == rows_read)
        .unwrap_or_else(|| panic!("no shuffle stage read {rows_read} rows: {text}"));
    figure(line, "rows_out=")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_joins_build_keys_filter_its_probe_side_before_the_shuffle() {
    let cluster = Cluster::start(2).await;
    let mut connection = cluster.connect().await;
    // 20,000 facts over g = k % 100 (every 1000th g NULL), in four files (so that scans of it
    // run as two tasks); dimensions: g 7 and 42, a g no fact has, and a NULL g.
    let facts: Vec<String> = (1..=20_000)
        .map(|k| {
            let g = if k % 1000 == 0 {
                "NULL".to_string()
            } else {
                (k % 100).to_string()
            };
            format!("({k}, {g}, {})", k % 4)
        })
        .collect();
    connection
        .run_each([
            "CREATE SCHEMA r".to_string(),
            format!(
            "CREATE TABLE r.facts PARTITIONED BY (p) AS SELECT * FROM (VALUES {}) AS v(k, g, p)",
            facts.join(", ")
        ),
            "CREATE TABLE r.dim AS SELECT * FROM (VALUES (1, 7), (2, 42), (3, 1000), (4, NULL)) \
         AS v(id, g)"
                .to_string(),
        ])
        .await;

    // EXISTS: a left semi join, partitioned (its output is the dimension's rows, so it cannot
    // run over a broadcast). The dimension's keys go to the facts' producers (which shuffle
    // more than the key: the condition's k).
    let exists = "SELECT d.id FROM r.dim d WHERE EXISTS \
                  (SELECT 1 FROM r.facts f WHERE f.g = d.g AND f.k <> d.id)";
    let plan = common::plan_text(&cluster, &format!("EXPLAIN {exists}")).await;
    assert!(plan.contains("RuntimeFilterSourceExec"), "{plan}");
    assert!(plan.contains("RuntimeFilterExec"), "{plan}");
    assert_eq!(numbers(&cluster, exists).await, [Some(1), Some(2)]);
    // Of the 20,000 facts only the 400 of g 7 and 42 were shuffled.
    let analyzed = common::plan_text(&cluster, &format!("EXPLAIN ANALYZE {exists}")).await;
    assert_eq!(rows_shuffled_of(&analyzed, 20_000), 400, "{analyzed}");

    // A semi join on g alone, whose 100 values repeat in the 20,000 facts (the manifests' bounds
    // say so): each producer passes each g once (a bitmap of the bounds' range) before the
    // shuffle, and the answers stay.
    let keys_only =
        "SELECT d.id FROM r.dim d WHERE EXISTS (SELECT 1 FROM r.facts f WHERE f.g = d.g)";
    let plan = common::plan_text(&cluster, &format!("EXPLAIN {keys_only}")).await;
    let once_before_shuffle = plan.lines().collect::<Vec<_>>().windows(2).any(|pair| {
        pair[0].contains("RepartitionExec: partitioning=Hash([g@0]")
            && pair[1].contains("DistinctKeysExec: key=g, range=[0, 99]")
    });
    assert!(once_before_shuffle, "{plan}");
    assert_eq!(numbers(&cluster, keys_only).await, [Some(1), Some(2)]);
    // Each producer partition sends each g at most once: against a dimension of every g (so
    // that the runtime filter drops none of them), at most the 100 values per partition (and
    // the 20 NULLs, which join nothing, as they come) of the two tasks' at most 8 partitions,
    // where there were 20,000 rows.
    let every_g: Vec<String> = (0..100).map(|g| format!("({g})")).collect();
    connection
        .run_each([format!(
            "CREATE TABLE r.every_g AS SELECT * FROM (VALUES {}) AS v(g)",
            every_g.join(", ")
        )])
        .await;
    let all =
        "SELECT count(*) FROM r.every_g d WHERE EXISTS (SELECT 1 FROM r.facts f WHERE f.g = d.g)";
    let analyzed = common::plan_text(&cluster, &format!("EXPLAIN ANALYZE {all}")).await;
    assert!(analyzed.contains("DistinctKeysExec"), "{analyzed}");
    let shuffled = rows_shuffled_of(&analyzed, 20_000);
    assert!(
        (100..=8 * 100 + 20).contains(&shuffled),
        "{shuffled}: {analyzed}"
    );
    assert_eq!(numbers(&cluster, all).await, [Some(100)]);
    let keys_only_anti =
        "SELECT d.id FROM r.dim d WHERE NOT EXISTS (SELECT 1 FROM r.facts f WHERE f.g = d.g)";
    assert_eq!(numbers(&cluster, keys_only_anti).await, [Some(3), Some(4)]);

    // A semi join with an aggregation per key (TPC-H Q17's shape): the keys go below both
    // steps of the aggregation, so only g 7 and 42's facts are grouped at all.
    let grouped = "SELECT d.id FROM r.dim d WHERE EXISTS (SELECT 1 FROM \
                   (SELECT g, count(*) AS n FROM r.facts GROUP BY g) s \
                   WHERE s.g = d.g AND s.n > d.id * 150)";
    let plan = common::plan_text(&cluster, &format!("EXPLAIN {grouped}")).await;
    let lines: Vec<&str> = plan.lines().collect();
    let below_partial = lines.windows(2).any(|pair| {
        pair[0].contains("AggregateExec: mode=Partial") && pair[1].contains("RuntimeFilterExec")
    });
    assert!(below_partial, "{plan}");
    // 200 facts each for g 7 and 42: only dimension row 1's bound (150) is under it.
    assert_eq!(numbers(&cluster, grouped).await, [Some(1)]);

    // NOT EXISTS: a left anti join; a probe row that matches no key adds nothing either. The
    // dimension rows without facts (g 1000 and NULL) are the answer.
    let not_exists = "SELECT d.id FROM r.dim d WHERE NOT EXISTS \
                      (SELECT 1 FROM r.facts f WHERE f.g = d.g AND f.k <> d.id)";
    assert_eq!(numbers(&cluster, not_exists).await, [Some(3), Some(4)]);

    // 400,000 rows of k (each k once), g and p: 200,000 keys per task of a join on k.
    connection
        .run(
            "CREATE TABLE r.many PARTITIONED BY (p) AS SELECT f.k * 20 + v.x AS k, f.g, f.p \
             FROM r.facts f CROSS JOIN (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), \
             (9), (10), (11), (12), (13), (14), (15), (16), (17), (18), (19)) AS v(x)",
        )
        .await
        .expect("CREATE TABLE r.many");
    // 800,000 rows of k 40..=800,039 once each.
    connection
        .run(
            "CREATE TABLE r.more PARTITIONED BY (p) AS SELECT m.k * 2 + v.x AS k, m.g, m.p \
             FROM r.many m CROSS JOIN (VALUES (0), (1)) AS v(x)",
        )
        .await
        .expect("CREATE TABLE r.more");
    // A left semi join (partitioned: its output is its build side's rows) whose build side is
    // r.many's 400,000 rows on p / 4: every key is 0, so one task of the join holds them all,
    // more than a filter takes (262,144 per task) — unless they are integers a bitmap covers
    // (these are: one value). So the producers of the probe side (r.more on k - 40) shuffle
    // only their one row of k 40; with the same keys as strings, every row, at once (not after
    // the wait's bound). The answers are right.
    let dense = "SELECT count(b.g) FROM r.many b WHERE EXISTS \
                 (SELECT 1 FROM r.more a WHERE a.k - 40 = b.p / 4)";
    let too_many = "SELECT count(b.g) FROM r.many b WHERE EXISTS \
                    (SELECT 1 FROM r.more a WHERE \
                    CAST(a.k - 40 AS VARCHAR) = CAST(b.p / 4 AS VARCHAR))";
    for (sql, shuffled) in [(dense, 1), (too_many, 800_000)] {
        let plan = common::plan_text(&cluster, &format!("EXPLAIN {sql}")).await;
        assert!(plan.contains("RuntimeFilterExec"), "{plan}");
        let started = std::time::Instant::now();
        // The 20 facts of NULL g are 400 rows of r.many.
        assert_eq!(numbers(&cluster, sql).await, [Some(399_600)]);
        assert!(
            started.elapsed() < floe_engine::runtime_filter::WAIT,
            "the producers waited for keys that were too many"
        );
        let analyzed = common::plan_text(&cluster, &format!("EXPLAIN ANALYZE {sql}")).await;
        assert_eq!(
            rows_shuffled_of(&analyzed, 800_000),
            shuffled,
            "{sql}\n{analyzed}"
        );
    }

    // A broadcast join over a partitioned one (400,000 rows joined by k): the dimension's g
    // (7, 42, 1000; its NULL matches nothing) go from the broadcast join's tasks to the
    // producers of one side, which shuffle only the 8,000 rows of g 7 and 42.
    let over_partitioned = "SELECT count(*) FROM r.many a JOIN r.many b ON a.k = b.k \
                            JOIN r.dim d ON a.g = d.g";
    let analyzed =
        common::plan_text(&cluster, &format!("EXPLAIN ANALYZE {over_partitioned}")).await;
    let shuffled: Vec<(u64, u64)> = analyzed
        .lines()
        .filter(|l| l.contains("ShuffleExchangeExec:") && l.contains("rows_read="))
        .map(|l| (figure(l, "rows_read="), figure(l, "rows_out=")))
        .collect();
    // The other side's producers shuffle their keys alone, so they do not wait for the k
    // join's build keys (those 8,000 rows'): they send every row until the keys come.
    let mut sides: Vec<u64> = shuffled
        .iter()
        .filter(|(read, _)| *read == 400_000)
        .map(|&(_, out)| out)
        .collect();
    sides.sort_unstable();
    assert!(
        sides.len() == 2 && sides[0] == 8_000 && (8_000..=400_000).contains(&sides[1]),
        "{shuffled:?}\n{analyzed}"
    );
    assert_eq!(numbers(&cluster, over_partitioned).await, [Some(8_000)]);
    // The same with a dimension of two files, read by two tasks and collected for the
    // broadcast: the keys go just the same.
    connection
        .run("CREATE TABLE r.dim2 PARTITIONED BY (id) AS SELECT * FROM r.dim")
        .await
        .expect("CREATE TABLE r.dim2");
    let collected = over_partitioned.replace("r.dim d", "r.dim2 d");
    let analyzed = common::plan_text(&cluster, &format!("EXPLAIN ANALYZE {collected}")).await;
    let broadcast = analyzed
        .lines()
        .find(|l| l.contains("build side ≈"))
        .unwrap_or_else(|| panic!("no broadcast: {analyzed}"));
    assert!(
        !broadcast.contains("tasks=1,"),
        "the dimension read by one task: {broadcast}"
    );
    let shuffled: Vec<(u64, u64)> = analyzed
        .lines()
        .filter(|l| l.contains("ShuffleExchangeExec:") && l.contains("rows_read="))
        .map(|l| (figure(l, "rows_read="), figure(l, "rows_out=")))
        .collect();
    assert!(
        shuffled.contains(&(400_000, 8_000)),
        "{shuffled:?}\n{analyzed}"
    );
    assert_eq!(numbers(&cluster, &collected).await, [Some(8_000)]);

    // A join on a key whose build side has no row: the producers drop every row.
    let none = "SELECT d.id FROM r.dim d WHERE d.g > 5000 AND EXISTS \
                (SELECT 1 FROM r.facts f WHERE f.g = d.g AND f.k <> d.id)";
    assert_eq!(numbers(&cluster, none).await, []);

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_broadcast_build_side_is_reduced_by_a_filtered_one_under_its_probe_side() {
    // TPC-H Q09's shape: lines join the green parts (a filtered broadcast), then partsupp on
    // (part, supplier) — 100,000 rows broadcast whole to every task, of which the 40 green
    // parts' 4,000 can match.
    let cluster = Cluster::start(2).await;
    let mut connection = cluster.connect().await;
    let parts: Vec<String> = (1..=1000)
        .map(|k| {
            let colour = if k % 25 == 0 { "green" } else { "red" };
            format!("({k}, '{colour} {k}')")
        })
        .collect();
    let hundred: Vec<String> = (0..100).map(|x| format!("({x})")).collect();
    connection
        .run_each([
            "CREATE SCHEMA b".to_string(),
            format!(
                "CREATE TABLE b.parts AS SELECT * FROM (VALUES {}) AS v(k, name)",
                parts.join(", ")
            ),
            format!(
                "CREATE TABLE b.partsupp PARTITIONED BY (p) AS SELECT k AS pk, x AS sk, \
             k * 100 + x AS cost, x % 2 AS p FROM b.parts CROSS JOIN (VALUES {}) AS v(x)",
                hundred.join(", ")
            ),
            "CREATE TABLE b.lines PARTITIONED BY (p) AS SELECT pk, sk, y + 1 AS qty, y % 2 AS p \
         FROM b.partsupp CROSS JOIN (VALUES (0), (1), (2), (3), (4), (5), (6), (7)) AS v(y)"
                .to_string(),
        ])
        .await;
    let sql = "SELECT sum(l.qty * ps.cost) FROM b.lines l JOIN b.parts pt ON l.pk = pt.k \
               JOIN b.partsupp ps ON ps.pk = l.pk AND ps.sk = l.sk \
               WHERE pt.name LIKE '%green%'";
    let analyzed = common::plan_text(&cluster, &format!("EXPLAIN ANALYZE {sql}")).await;
    assert!(
        analyzed.contains("join_type=RightSemi"),
        "partsupp reduced by the green parts: {analyzed}"
    );
    // The partsupp stage read 100,000 rows and broadcast only the green parts' 4,000.
    let partsupp = analyzed
        .lines()
        .find(|l| l.contains("ShuffleExchangeExec:") && figure(l, "rows_read=") == 100_000)
        .unwrap_or_else(|| panic!("no stage read partsupp: {analyzed}"));
    assert_eq!(figure(partsupp, "rows_out="), 4_000, "{analyzed}");
    // And the answer is right: each green part's 100 suppliers, 8 lines each of qty 1..=8.
    let expected: i64 = (1..=1000)
        .filter(|k| k % 25 == 0)
        .flat_map(|k| (0..100).map(move |x| 36 * (k * 100 + x)))
        .sum();
    assert_eq!(numbers(&cluster, sql).await, [Some(expected)]);
    cluster.shutdown().await;
}
