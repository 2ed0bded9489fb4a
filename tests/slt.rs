//! SQL behaviour as sqllogictest files (`tests/slt/*.slt`), each run through Flight SQL against
//! its own in-process cluster (a coordinator and two executors, `common::Cluster`): query
//! results, EXPLAIN output with its pruning figures, and error statuses, so that a planner
//! change shows as a diff of these files.
//!
//! Conventions: every statement goes through GetFlightInfo + DoGet, as a Flight SQL client
//! sends it; a cell is printed by Arrow's formatter (`NULL`, `(empty)` for an empty string); an
//! error reads `<gRPC code>: <message>` so a file pins the status (`statement error NotFound: …`);
//! EXPLAIN prints one row per plan line, with the warehouse folder shown as `<warehouse>` and
//! snapshot ids as `<snapshot>`, encoded plan sizes as `plan_bytes=<n>`, runtime filter ids as
//! `filter=<id>`.
//!
//! A record whose SQL starts with `-- prepared` or `-- params: <values>` runs as a prepared
//! statement (with those values bound); `connection <name>` runs the next record on another
//! connection, whose session settings (`USE`, `SET TIME ZONE`) are its own.
//!
//! `FLOE_SLT=explain cargo test --test slt` runs the files whose name contains `explain`;
//! with `FLOE_SLT_COMPLETE=1` the files' expected output is rewritten from Floe's answers.

mod common;

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use common::{Cluster, Connection};
use sqllogictest::{DBOutput, DefaultColumnType};
use tonic::Status;

/// A Flight SQL connection as sqllogictest drives it (`connection <name>` in a file opens
/// another, with its own session settings).
struct FlightDb {
    connection: Connection,
    warehouse: String,
}

/// How a record's SQL asks to be run: `-- prepared` on its first line runs it as a prepared
/// statement; `-- params: 42, 'x'` binds one row of parameters, the values of
/// `SELECT 42, 'x'` (so they reach the server typed, as a driver sends them).
enum Form<'a> {
    Statement,
    Prepared { parameters: Option<&'a str> },
}

fn form(sql: &str) -> Form<'_> {
    let first = sql.trim_start().lines().next().unwrap_or_default().trim();
    if first == "-- prepared" {
        Form::Prepared { parameters: None }
    } else if let Some(list) = first.strip_prefix("-- params:") {
        Form::Prepared {
            parameters: Some(list.trim()),
        }
    } else {
        Form::Statement
    }
}

/// A failed statement: its gRPC status code and message.
#[derive(Debug)]
struct StatementError(String);

impl std::fmt::Display for StatementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StatementError {}

/// Statements that answer with rows (the rest answer with a count, or nothing).
fn returns_rows(sql: &str) -> bool {
    let first = sql
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--"))
        .map(|l| l.trim_start_matches('('))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "SELECT" | "WITH" | "VALUES" | "EXPLAIN" | "SHOW" | "DESCRIBE" | "DESC" | "TABLE"
    )
}

impl FlightDb {
    fn normalize(&self, cell: String) -> String {
        let cell = cell.replace(&self.warehouse, "<warehouse>");
        let snapshot = regex_lite_replace(&cell, "snapshot=", "<snapshot>");
        // A plan's encoded size varies with the snapshot id's varint length.
        let snapshot = regex_lite_replace(&snapshot, "plan_bytes=", "<n>");
        // Runtime filter ids are random, in hex.
        let snapshot = regex_lite_replace(&snapshot, "filter=", "<id>");
        if snapshot.is_empty() {
            "(empty)".to_string()
        } else {
            snapshot
        }
    }

    fn rows(&self, sql: &str, batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, StatementError> {
        let explain = sql
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("--"))
            .is_some_and(|l| l.to_ascii_uppercase().starts_with("EXPLAIN"));
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StatementError(format!("formatting the result: {e}")))?;
            for row in 0..batch.num_rows() {
                let cells: Vec<String> = formatters
                    .iter()
                    .map(|f| self.normalize(f.value(row).to_string()))
                    .collect();
                match (explain, cells.as_slice()) {
                    // One row per plan line: `plan_type` on its first line only.
                    (true, [kind, plan]) => {
                        for (i, line) in plan.lines().enumerate() {
                            let kind = if i == 0 {
                                kind.clone()
                            } else {
                                "-".to_string()
                            };
                            rows.push(vec![kind, line.trim_end().to_string()]);
                        }
                    }
                    _ => rows.push(cells),
                }
            }
        }
        Ok(rows)
    }
}

/// `text` with the (hex) digits after every `key` replaced by `with`.
fn regex_lite_replace(text: &str, key: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(key) {
        out.push_str(&rest[..at + key.len()]);
        rest = &rest[at + key.len()..];
        let digits = rest
            .find(|c: char| !c.is_ascii_hexdigit() && c != '-')
            .unwrap_or(rest.len());
        if digits > 0 {
            out.push_str(with);
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

#[async_trait]
impl sqllogictest::AsyncDB for FlightDb {
    type Error = StatementError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, StatementError> {
        let error = |s: Status| StatementError(format!("{:?}: {}", s.code(), s.message()));
        let batches = match form(sql) {
            Form::Statement => self.connection.run(sql).await,
            Form::Prepared { parameters } => {
                let bound = match parameters {
                    Some(list) => {
                        let values = self
                            .connection
                            .run(&format!("SELECT {list}"))
                            .await
                            .map_err(error)?;
                        values.into_iter().find(|b| b.num_rows() == 1)
                    }
                    None => None,
                };
                self.connection.run_prepared(sql, bound).await
            }
        }
        .map_err(error)?;
        if returns_rows(sql) {
            let columns = batches.first().map_or(0, |b| b.num_columns());
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; columns],
                rows: self.rows(sql, &batches)?,
            });
        }
        // INSERT and CTAS answer with the rows they wrote; DDL with nothing.
        let count = batches
            .iter()
            .filter(|b| b.num_columns() == 1 && b.num_rows() == 1)
            .filter_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::UInt64Array>()
                    .map(|a| a.value(0))
            })
            .sum();
        Ok(DBOutput::StatementComplete(count))
    }

    fn engine_name(&self) -> &str {
        "floe"
    }

    async fn shutdown(&mut self) {}

    async fn sleep(duration: std::time::Duration) {
        tokio::time::sleep(duration).await
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/slt")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_logic_tests() {
    // FLOE_SLT=name runs the files whose name contains it; FLOE_SLT_COMPLETE=1 rewrites each
    // file's expected output with what Floe answers now (review the diff before committing).
    let only = std::env::var("FLOE_SLT").ok();
    let complete = std::env::var_os("FLOE_SLT_COMPLETE").is_some();
    let mut failures = Vec::new();
    let mut ran = 0;
    for file in slt_files() {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let cluster = Cluster::start(2).await;
        let connection = cluster.connect().await;
        let warehouse = cluster
            .warehouse
            .path()
            .canonicalize()
            .expect("warehouse")
            .display()
            .to_string();
        let mut runner = sqllogictest::Runner::new(move || {
            let db = FlightDb {
                connection: connection.clone(),
                warehouse: warehouse.clone(),
            };
            async move { Ok::<_, StatementError>(db) }
        });
        let outcome = if complete {
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .map_err(|e| e.to_string())
        } else {
            runner
                .run_file_async(&file)
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(e) = outcome {
            failures.push(format!("{name}:\n{e}"));
        }
        ran += 1;
        cluster.shutdown().await;
    }
    assert!(ran > 0, "no .slt file ran");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
