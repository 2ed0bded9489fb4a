//! Lookups answered from memory.
//!
//! A serving table (an application's or a dashboard's lookups by key on an ADS table) has the
//! same few small files read over and over, and each lookup pays to decompress and decode whole
//! column chunks for one row: a Parquet dictionary page is compressed as one block, and a file
//! without a page index (pyiceberg writes none) gives no way to read a part of a column chunk.
//! Data files never change once written, so their decoded columns can be kept by path and size
//! and stay exact: the deletes, the rows of a piece, the predicate and the limit of each read are
//! applied to the kept columns just as the Parquet reader applies them.
//!
//! Only lookups bring a file in: a file of at most [`MAX_FILE_BYTES`] and at least
//! [`LOOKUP_SHARE`] rows, read whole with a predicate that kept at most one row in
//! [`LOOKUP_SHARE`] ([`is_lookup`]), [`ADMIT_AFTER`] times; the read after
//! that decodes the columns it needs whole and keeps them. A scan (TPC-H, a CTAS, an export)
//! keeps nothing, so the cache neither churns under it nor turns a scan benchmark into a memory
//! benchmark. Columns are kept within a bound in bytes, least recently used out first: an
//! executor's `--lookup-cache` (default 128 MiB; `0` turns the cache off), never more than a
//! sixteenth of its memory limit ([`HotFiles::set_limit`]). A file answered from
//! memory counts in EXPLAIN ANALYZE as `from_memory` and fetches no bytes; it stays answerable
//! while kept even if something outside Iceberg removes it from storage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::DataType;
use datafusion::common::Result;

use super::parquet_read::{keep_passing, FileToRead};

/// Larger files are never kept (a lookup on them reads pages, or they are not a serving table's).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A read is a lookup when it kept at most one row in this many of the file.
pub const LOOKUP_SHARE: u64 = 4096;

/// Whether a read of a whole file of `file_rows` rows that kept `kept` of them was a lookup: at
/// most one row in [`LOOKUP_SHARE`] (a file of fewer rows is cheap to read and never kept).
pub fn is_lookup(kept: u64, file_rows: u64) -> bool {
    file_rows >= LOOKUP_SHARE && kept.saturating_mul(LOOKUP_SHARE) <= file_rows
}

/// Lookups of a file before a read keeps its columns.
pub const ADMIT_AFTER: u32 = 2;

/// The cache's bound until an executor sets it (`floe executor --lookup-cache`).
pub const DEFAULT_BYTES: usize = 128 * 1024 * 1024;

/// Files whose lookups are counted, at most (the count starts over beyond it).
const MAX_COUNTED: usize = 4096;

/// Rows per batch a kept file is answered in (as the Parquet reader's batches).
const BATCH_ROWS: usize = 8192;

/// A column as kept: its Iceberg field id and the type it was read as.
pub type ColumnKey = (i32, DataType);

/// What to do for a read of a file.
pub enum Lookup {
    /// Its columns are kept: the rows of the file, and each wanted column, in order.
    Kept(usize, Vec<ArrayRef>),
    /// Read the wanted columns whole and keep them ([`HotFiles::keep`]).
    Admit,
    /// Read it from storage (counting the read, if it is a lookup: [`HotFiles::looked_up`]).
    Read,
}

/// The decoded columns of files that lookups read, by path and size.
#[derive(Debug)]
pub struct HotFiles {
    state: Mutex<State>,
    limit: AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<String, Entry>,
    /// Lookups of files not kept; `None` once a file proved too large to keep.
    counted: HashMap<String, Option<u32>>,
    bytes: usize,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    rows: usize,
    columns: HashMap<ColumnKey, ArrayRef>,
    bytes: usize,
    used: u64,
}

impl HotFiles {
    /// The process's cache ([`DEFAULT_BYTES`] until an executor sets its bound).
    pub fn global() -> &'static HotFiles {
        static CACHE: OnceLock<HotFiles> = OnceLock::new();
        CACHE.get_or_init(|| HotFiles::new(DEFAULT_BYTES))
    }

    /// An empty cache of at most `limit` bytes (`0`: off).
    pub fn new(limit: usize) -> Self {
        Self {
            state: Mutex::default(),
            limit: AtomicUsize::new(limit),
        }
    }

    /// Bounds the cache to `bytes`, dropping what is kept beyond it (`0` turns it off).
    pub fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
        let limit = self.limit();
        let mut state = self.lock();
        state.evict(limit);
    }

    fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// What a read of the file `key` wanting `wanted` should do.
    pub fn lookup(&self, key: &str, wanted: &[ColumnKey]) -> Lookup {
        if self.limit() == 0 {
            return Lookup::Read;
        }
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        if let Some(entry) = state.files.get_mut(key) {
            let columns: Option<Vec<ArrayRef>> = wanted
                .iter()
                .map(|c| entry.columns.get(c).cloned())
                .collect();
            return match columns {
                Some(columns) => {
                    entry.used = now;
                    Lookup::Kept(entry.rows, columns)
                }
                None => Lookup::Admit,
            };
        }
        match state.counted.get(key) {
            Some(Some(n)) if *n >= ADMIT_AFTER => Lookup::Admit,
            _ => Lookup::Read,
        }
    }

    /// Counts a lookup of the file `key`.
    pub fn looked_up(&self, key: &str) {
        if self.limit() == 0 {
            return;
        }
        let mut state = self.lock();
        if !state.counted.contains_key(key) && state.counted.len() >= MAX_COUNTED {
            state.counted.clear();
        }
        if let Some(n) = state.counted.entry(key.to_string()).or_insert(Some(0)) {
            *n += 1;
        }
    }

    /// Keeps the columns of the file `key` (of `rows` rows) that are not kept yet, making room
    /// by dropping the least recently used files; false (and the file is not tried again) if
    /// the file would take more than a quarter of the bound.
    pub fn keep(&self, key: &str, rows: usize, columns: Vec<(ColumnKey, ArrayRef)>) -> bool {
        let limit = self.limit();
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        let mut entry = state.files.remove(key).unwrap_or(Entry {
            rows,
            columns: HashMap::new(),
            bytes: 0,
            used: now,
        });
        state.bytes -= entry.bytes;
        if entry.rows != rows {
            entry.columns.clear();
            entry.bytes = 0;
            entry.rows = rows;
        }
        for (column, array) in columns {
            if array.len() != rows || entry.columns.contains_key(&column) {
                continue;
            }
            entry.bytes += array.get_array_memory_size();
            entry.columns.insert(column, array);
        }
        if entry.bytes > limit / 4 {
            state.counted.insert(key.to_string(), None);
            return false;
        }
        entry.used = now;
        state.evict(limit.saturating_sub(entry.bytes));
        state.bytes += entry.bytes;
        state.counted.remove(key);
        state.files.insert(key.to_string(), entry);
        true
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Drops the least recently used files until at most `limit` bytes are kept.
    fn evict(&mut self, limit: usize) {
        while self.bytes > limit {
            let Some(oldest) = self
                .files
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(entry) = self.files.remove(&oldest) {
                self.bytes -= entry.bytes;
            }
        }
    }
}

/// The rows `file` asks for, from its kept columns (`rows` rows of them): the piece's rows, less
/// the deleted positions, those the predicate and the batch filter keep, up to the limit — as
/// the Parquet reader would give them.
pub fn answer(
    file: &FileToRead<'_>,
    rows: usize,
    columns: Vec<ArrayRef>,
) -> Result<Vec<RecordBatch>> {
    let whole = RecordBatch::try_new_with_options(
        Arc::clone(&file.schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?;
    let total = rows as u64;
    let (start, end) = match &file.rows {
        Some(r) => (r.start.min(total), r.end.min(total)),
        None => (0, total),
    };
    let mut batch = whole.slice(start as usize, (end - start) as usize);
    if let Some(deleted) = file.deleted {
        if deleted.range_cardinality(start..end) > 0 {
            let keep = BooleanBuffer::collect_bool((end - start) as usize, |i| {
                !deleted.contains(start + i as u64)
            });
            batch = filter_record_batch(&batch, &BooleanArray::new(keep, None))?;
        }
    }
    if let Some(predicate) = &file.predicate {
        // Rows the predicate rejects may be skipped (the exact filter runs above the scan); one
        // it cannot evaluate here is left to that filter.
        if let Ok(kept) = keep_passing(&batch, predicate) {
            batch = kept;
        }
    }
    if let Some(filter) = file.batch_filter.as_ref().filter(|_| file.limit.is_none()) {
        batch = keep_passing(&batch, filter)?;
    }
    if let Some(limit) = file.limit {
        batch = batch.slice(0, batch.num_rows().min(limit));
    }
    Ok((0..batch.num_rows())
        .step_by(BATCH_ROWS)
        .map(|at| batch.slice(at, BATCH_ROWS.min(batch.num_rows() - at)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use datafusion::physical_expr::PhysicalExpr;

    fn column(n: usize) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(0..n as i64))
    }

    const A: fn() -> ColumnKey = || (1, DataType::Int64);

    #[test]
    fn a_lookup_keeps_one_row_in_4096_of_a_file_of_as_many() {
        assert!(is_lookup(0, 4096) && is_lookup(1, 4096) && is_lookup(18, 75_000));
        assert!(!is_lookup(2, 4096) && !is_lookup(19, 75_000));
        assert!(!is_lookup(0, 4095), "a small file is cheap to read");
    }

    #[test]
    fn a_file_is_kept_after_its_lookups_and_answers_from_memory() {
        let hot = HotFiles::new(1 << 20);
        assert!(matches!(hot.lookup("f", &[A()]), Lookup::Read));
        hot.looked_up("f");
        assert!(matches!(hot.lookup("f", &[A()]), Lookup::Read));
        hot.looked_up("f");
        assert!(matches!(hot.lookup("f", &[A()]), Lookup::Admit));
        assert!(hot.keep("f", 100, vec![(A(), column(100))]));
        match hot.lookup("f", &[A()]) {
            Lookup::Kept(rows, columns) => {
                assert_eq!(rows, 100);
                assert_eq!(columns[0].len(), 100);
            }
            _ => panic!("the kept file was not answered from memory"),
        }
        // A column not kept yet brings the file's read back to storage, to be added.
        assert!(matches!(
            hot.lookup("f", &[A(), (2, DataType::Int64)]),
            Lookup::Admit
        ));
        // The same field id read as another type is another column.
        assert!(matches!(
            hot.lookup("f", &[(1, DataType::Int32)]),
            Lookup::Admit
        ));
    }

    #[test]
    fn an_answer_from_memory_keeps_the_rows_a_read_of_the_file_keeps() {
        use arrow::datatypes::{Field, Schema};
        use datafusion::logical_expr::Operator;
        use datafusion::physical_expr::expressions::{binary, col, lit};
        use datafusion::physical_plan::metrics::Count;
        use roaring::RoaringTreemap;

        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let rows = 20_000;
        let read = |piece: Option<std::ops::Range<u64>>,
                    deleted: Option<&RoaringTreemap>,
                    predicate: Option<Arc<dyn PhysicalExpr>>,
                    limit: Option<usize>| {
            let file = FileToRead {
                table: "t",
                path: "f",
                size: 1,
                range: None,
                schema: Arc::clone(&schema),
                field_ids: vec![1],
                predicate,
                row_filter: false,
                batch_filter: None,
                deleted,
                rows: piece,
                limit,
                bytes: Count::new(),
                from_memory: Count::new(),
            };
            let batches = answer(&file, rows, vec![column(rows)]).expect("answered");
            assert!(batches
                .iter()
                .all(|b| b.num_rows() <= BATCH_ROWS && b.num_rows() > 0));
            batches
                .iter()
                .flat_map(|b| {
                    let k = b
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("int64");
                    k.values().to_vec()
                })
                .collect::<Vec<i64>>()
        };
        assert_eq!(
            read(None, None, None, None),
            (0..20_000).collect::<Vec<_>>()
        );
        // The rows of a piece, less the deleted positions (counted from the file's start).
        let deleted: RoaringTreemap = [3u64, 10_001, 10_002, 19_999].into_iter().collect();
        let want: Vec<i64> = (10_000..20_000)
            .filter(|k| ![10_001, 10_002, 19_999].contains(k))
            .collect();
        assert_eq!(read(Some(10_000..20_000), Some(&deleted), None, None), want);
        // The predicate, then the limit.
        let gt = |v: i64| {
            binary(col("k", &schema).expect("k"), Operator::Gt, lit(v), &schema).expect("k > v")
        };
        assert_eq!(
            read(None, Some(&deleted), Some(gt(19_990)), None),
            (19_991..19_999).collect::<Vec<_>>()
        );
        assert_eq!(
            read(None, None, Some(gt(100)), Some(3)),
            vec![101, 102, 103]
        );
        // A lookup that finds nothing answers no batch.
        let eq = binary(
            col("k", &schema).expect("k"),
            Operator::Eq,
            lit(3i64),
            &schema,
        )
        .expect("k = 3");
        assert!(read(None, Some(&deleted), Some(eq), None).is_empty());
    }

    #[test]
    fn the_least_recently_used_file_goes_first_and_a_large_one_is_never_kept() {
        let one = column(1000).get_array_memory_size();
        let hot = HotFiles::new(one * 4 + one / 2);
        for f in ["a", "b", "c", "d"] {
            assert!(hot.keep(f, 1000, vec![(A(), column(1000))]));
        }
        assert!(matches!(hot.lookup("a", &[A()]), Lookup::Kept(..)));
        assert!(hot.keep("e", 1000, vec![(A(), column(1000))]));
        assert!(matches!(hot.lookup("a", &[A()]), Lookup::Kept(..)));
        assert!(matches!(hot.lookup("b", &[A()]), Lookup::Read));
        assert!(hot.bytes() <= one * 4 + one / 2);
        // More than a quarter of the bound: not kept, and not tried again.
        hot.looked_up("big");
        hot.looked_up("big");
        assert!(!hot.keep("big", 3000, vec![(A(), column(3000))]));
        hot.looked_up("big");
        assert!(matches!(hot.lookup("big", &[A()]), Lookup::Read));
        // A bound lowered below what is kept drops files; zero turns the cache off.
        hot.set_limit(one);
        assert!(hot.bytes() <= one);
        hot.set_limit(0);
        assert!(matches!(hot.lookup("e", &[A()]), Lookup::Read));
    }
}
