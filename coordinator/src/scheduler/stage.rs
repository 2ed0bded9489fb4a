//! A shuffle stage as the scheduler runs it: its encoded plan, its tasks' files, how they split
//! their output, the stages they read, and what they reported.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::physical_plan::ExecutionPlan;
use floe_proto::{FileGroup, ShuffleOutput, TaskMetrics};

/// A stage whose tasks feed a shuffle: its plan, encoded once, and the stages it reads.
#[derive(Debug)]
pub struct ShuffleStage {
    /// The stage's id within its query.
    pub stage_id: u32,
    /// The producer plan as shown in EXPLAIN (a hash shuffle's is rooted at its
    /// `RepartitionExec`).
    pub plan: Arc<dyn ExecutionPlan>,
    /// The plan as sent to executors (scan files taken out).
    pub encoded: Arc<Vec<u8>>,
    /// Each task's files, when the stage scans a table.
    pub files: Arc<Vec<FileGroup>>,
    /// How many tasks the stage runs.
    pub tasks: usize,
    /// The executor slot its first task goes to (see the scheduler's placement).
    pub first_slot: usize,
    /// How its tasks split their output.
    pub output: ShuffleOutput,
    /// The stages its tasks read, and those its runtime filters send keys to (its tasks are
    /// told where the tasks of both run).
    pub inputs: Vec<Arc<ShuffleStage>>,
    /// What its tasks reported, for EXPLAIN ANALYZE.
    pub reports: Mutex<Vec<TaskMetrics>>,
    /// How many parts of the plan read its output (more than one: a shared stage, which runs
    /// once for all of them; see `crate::shared_stages`).
    pub readers: AtomicU32,
}

impl ShuffleStage {
    /// One more part of the plan reads the stage: the reader index it reads as.
    pub fn add_reader(&self) -> u32 {
        self.readers.fetch_add(1, Ordering::SeqCst)
    }

    /// How many parts of the plan read the stage.
    pub fn readers(&self) -> u32 {
        self.readers.load(Ordering::SeqCst).max(1)
    }

    /// Whether more than one part of the plan reads it: it is started once per run of the
    /// query, by whichever reader starts first.
    pub fn is_shared(&self) -> bool {
        self.readers() > 1
    }

    /// How its tasks split their output, with a copy of each bucket per reader.
    pub fn output(&self) -> ShuffleOutput {
        ShuffleOutput {
            readers: self.readers(),
            ..self.output
        }
    }
}

/// Formats task reports for EXPLAIN ANALYZE.
pub fn format_reports(reports: &Mutex<Vec<TaskMetrics>>) -> Option<String> {
    let mut reports = reports.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if reports.is_empty() {
        return None;
    }
    reports.sort_by_key(|r| r.partition);
    let tasks: Vec<String> = reports
        .iter()
        .map(|r| {
            let mut line = format!("t{}@{}", r.partition, r.executor_id);
            // A task reading a piece of a file (not its first) opened no file but read rows.
            if r.files_scanned > 0 || r.rows_scanned > 0 {
                line += &format!(
                    " files={} bytes={} rows_read={}",
                    r.files_scanned, r.bytes_scanned, r.rows_scanned
                );
            }
            if r.files_from_memory > 0 {
                line += &format!(" from_memory={}", r.files_from_memory);
            }
            if r.rows_deleted > 0 {
                line += &format!(" rows_deleted={}", r.rows_deleted);
            }
            if r.shuffle_bytes_read > 0 {
                line += &format!(" shuffle_read={}", r.shuffle_bytes_read);
            }
            line += &format!(" rows_out={}", r.output_rows);
            if r.shuffle_bytes_written > 0 {
                line += &format!(" shuffle_written={}", r.shuffle_bytes_written);
            }
            line += &format!(
                " spills={} spilled_bytes={} time={:.1}ms",
                r.spill_count,
                r.spilled_bytes,
                r.elapsed_nanos as f64 / 1e6
            );
            line
        })
        .collect();
    Some(format!("executed=[{}]", tasks.join("; ")))
}
