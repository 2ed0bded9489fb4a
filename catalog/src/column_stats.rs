//! Per-column statistics of a scan from the manifest entries of the data files it reads: the
//! smallest lower bound, the largest upper bound, the summed null counts and, for strings, the
//! distinct values their compressed size implies ([`distinct_strings`]). DataFusion's
//! optimizer uses them as it would a Parquet footer's: to estimate what a filter keeps and a
//! join produces (a key's value range bounds its distinct values), and so to order joins and
//! choose which side to broadcast. They are inexact by nature (bounds may be truncated, rows
//! deleted or filtered out), and a column any file has no bound for gets none.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use arrow::datatypes::{DataType, Schema as ArrowSchema};
use datafusion::common::stats::{ColumnStatistics, Precision};
use datafusion::common::{Result, ScalarValue};
use iceberg::spec::{DataContentType, ManifestContentType, SnapshotRef};
use iceberg::table::Table;

use crate::metadata_tables::primitive_scalar;
use floe_engine::error::FloeError;

/// One column's statistics as they are merged file by file.
#[derive(Default)]
struct Column {
    min: Bound,
    max: Bound,
    nulls: Option<u64>,
    any_file_without_nulls: bool,
    /// Compressed bytes and values (nulls included) over the files that record both.
    bytes: u64,
    values: u64,
    any_file_without_sizes: bool,
}

/// A bound over the files seen so far.
#[derive(Default)]
enum Bound {
    /// No file seen yet.
    #[default]
    None,
    Known(ScalarValue),
    /// A file had no bound (or one that cannot be compared): the column has none.
    Unknown,
}

impl Bound {
    fn merge(&mut self, value: Option<ScalarValue>, keep_new: impl Fn(std::cmp::Ordering) -> bool) {
        *self = match (std::mem::take(self), value) {
            (Bound::Unknown, _) | (_, None) => Bound::Unknown,
            (Bound::None, Some(v)) => Bound::Known(v),
            (Bound::Known(old), Some(v)) => match v.partial_cmp(&old) {
                Some(order) if keep_new(order) => Bound::Known(v),
                Some(_) => Bound::Known(old),
                None => Bound::Unknown,
            },
        };
    }

    fn precision(self) -> Precision<ScalarValue> {
        match self {
            Bound::Known(v) if !v.is_null() => Precision::Inexact(v),
            _ => Precision::Absent,
        }
    }
}

/// Reads `snapshot`'s data manifests into the cache (errors are left for the read that needs
/// them to report).
pub async fn prefetch(table: &Table, snapshot: &SnapshotRef) {
    if let Ok(list) = crate::manifests::manifest_list(table, snapshot).await {
        let data: Vec<_> = list
            .entries()
            .iter()
            .filter(|m| m.content == ManifestContentType::Data)
            .collect();
        let _ = crate::manifests::manifests(table, &data).await;
    }
}

/// Whether column statistics are worth reading for a scan of `snapshot` now: its data manifests
/// are few, or list few files (a second read of them costs little next to iceberg's planning),
/// or are already cached. Reading a hundred manifests of 10,000 files a second time made cold
/// planning 1.5× slower (`benches/planning`); such a table gets statistics once they are
/// cached — see [`prefetch`], which the caller starts in the background instead. A table
/// appended to thirty times (TPC-H SF10's lineitem as the benchmark loads it: 30 manifests of
/// one file each) is read at once: without statistics its first plan broadcast a join of 100 K
/// estimated rows that had 9 M.
pub async fn worth_reading(table: &Table, snapshot: &SnapshotRef) -> bool {
    let Ok(list) = crate::manifests::manifest_list(table, snapshot).await else {
        return false;
    };
    let data: Vec<_> = list
        .entries()
        .iter()
        .filter(|m| m.content == ManifestContentType::Data)
        .collect();
    // A manifest that does not say how many files it lists counts as many.
    let files: u64 = data
        .iter()
        .map(|m| match (m.added_files_count, m.existing_files_count) {
            (Some(added), Some(existing)) => u64::from(added) + u64::from(existing),
            _ => EAGER_FILES + 1,
        })
        .sum();
    data.len() <= EAGER_MANIFESTS
        || (data.len() <= EAGER_MANIFESTS_OF_FEW_FILES && files <= EAGER_FILES)
        || crate::manifests::all_cached(&data)
}

/// Up to this many data manifests are read for column statistics while iceberg plans.
const EAGER_MANIFESTS: usize = 16;

/// Up to this many data manifests listing at most [`EAGER_FILES`] files in all are read while
/// iceberg plans too.
const EAGER_MANIFESTS_OF_FEW_FILES: usize = 64;

/// See [`EAGER_MANIFESTS_OF_FEW_FILES`].
const EAGER_FILES: u64 = 1_000;

/// The statistics of each column of `schema` (field `field_ids[i]` for column `i`) over the
/// live data files of `snapshot` whose paths are in `selected`.
pub async fn scan_column_statistics(
    table: &Table,
    snapshot: &SnapshotRef,
    name: &str,
    selected: &HashSet<&str>,
    field_ids: &[i32],
    schema: &ArrowSchema,
) -> Result<Vec<ColumnStatistics>> {
    let unknown = || vec![ColumnStatistics::new_unknown(); schema.fields().len()];
    if selected.is_empty() || field_ids.len() != schema.fields().len() {
        return Ok(unknown());
    }
    let fail = |what: &str, e: iceberg::Error| {
        datafusion::common::DataFusionError::External(Box::new(FloeError::from_iceberg(
            &format!("{what} of {name} (column statistics)"),
            e,
        )))
    };
    let list = crate::manifests::manifest_list(table, snapshot)
        .await
        .map_err(|e| fail("reading the manifest list", e))?;
    let data: Vec<_> = list
        .entries()
        .iter()
        .filter(|m| m.content == ManifestContentType::Data)
        .collect();
    let manifests = crate::manifests::manifests(table, &data)
        .await
        .map_err(|e| fail("reading a manifest", e))?;
    let mut columns: Vec<Column> = field_ids.iter().map(|_| Column::default()).collect();
    for manifest in &manifests {
        for entry in manifest.entries() {
            let file = entry.data_file();
            if !entry.is_alive()
                || file.content_type() != DataContentType::Data
                || !selected.contains(file.file_path())
            {
                continue;
            }
            for ((id, column), field) in field_ids.iter().zip(&mut columns).zip(schema.fields()) {
                let scalar = |bounds: &std::collections::HashMap<i32, iceberg::spec::Datum>| {
                    bounds
                        .get(id)
                        .and_then(|d| primitive_scalar(Some(d.literal()), field.data_type()).ok())
                };
                column.min.merge(scalar(file.lower_bounds()), |o| o.is_lt());
                column.max.merge(scalar(file.upper_bounds()), |o| o.is_gt());
                match file.null_value_counts().get(id) {
                    Some(n) => *column.nulls.get_or_insert(0) += n,
                    None => column.any_file_without_nulls = true,
                }
                match (file.column_sizes().get(id), file.value_counts().get(id)) {
                    (Some(bytes), Some(values)) => {
                        column.bytes += bytes;
                        column.values += values;
                    }
                    _ => column.any_file_without_sizes = true,
                }
            }
        }
    }
    Ok(columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, field)| {
            let mut stats = ColumnStatistics::new_unknown();
            let string = matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            if string && !c.any_file_without_sizes && !c.any_file_without_nulls {
                let non_null = c.values.saturating_sub(c.nulls.unwrap_or(0));
                if let Some(n) = distinct_strings(c.bytes, c.values, non_null) {
                    stats.distinct_count = Precision::Inexact(n);
                }
            }
            let (min, max) = (c.min.precision(), c.max.precision());
            // DataFusion 53 overflows (a panic where overflow checks are on) counting the
            // values of an integer range as wide as its type: such a column gets no bounds.
            let full_width = match (&min, &max) {
                (Precision::Inexact(lo), Precision::Inexact(hi)) => {
                    hi.distance(lo).is_some_and(|d| d == usize::MAX)
                }
                _ => false,
            };
            if !full_width {
                stats.min_value = min;
                stats.max_value = max;
            }
            stats.null_count = match (c.nulls, c.any_file_without_nulls) {
                (Some(n), false) => Precision::Inexact(n as usize),
                _ => Precision::Absent,
            };
            stats
        })
        .collect())
}

/// How many distinct values a string column of `values` values (`non_null` of them not null)
/// holds, judged by its compressed size: `bytes`. A column written with a dictionary stores
/// each value as an index into it, and a compressor brings those indices down towards their
/// entropy — `log2(n)` bits for `n` values used evenly, less when a few of them dominate
/// (then a value picked at random is one of the few, and a filter on it keeps more rows).
/// So `2^(bits per value)` is the number of values used evenly that the size amounts to: on
/// TPC-H SF1 as pyiceberg writes it, 150 part types are estimated at 164, 25 brands at 33,
/// 5 segments at 7, 7 ship modes at 8, 3 return flags at 3 and 1,000 clerks at 1,075, while
/// addresses and comments come out as many as their rows. The dictionary itself and page
/// headers only add bytes, so the estimate errs towards more values; sorted values (long runs,
/// shared prefixes) towards fewer — 150,000 customer names at 6,171. `None` for fewer than
/// [`MIN_CATEGORY_VALUES`] values, where a file's fixed costs dominate its size.
fn distinct_strings(bytes: u64, values: u64, non_null: u64) -> Option<usize> {
    if values < MIN_CATEGORY_VALUES || non_null == 0 {
        return None;
    }
    let bits = 8.0 * bytes as f64 / values as f64;
    let evenly_used = 2f64.powf(bits.min(62.0));
    Some(evenly_used.clamp(1.0, non_null as f64) as usize)
}

/// The field ids of the top-level string columns of `table` that hold categories — a few
/// values repeated (a flag, a mode, a city) — judged by the compressed bytes per value its
/// newest data manifest records for them: under [`CATEGORY_BYTES_PER_VALUE`]. Those are
/// planned as string views (`floe_engine::views`), which a dictionary-encoded column decodes
/// into without copying a value per row, and which grouping and joining compare by their inline
/// prefix (TPC-H Q01's return flag and line status). Free text and unique names stay plain
/// strings: their views would only be copied out again where rows are gathered and sent.
/// Best effort: a table without a snapshot or whose manifests cannot be read has none.
pub async fn category_strings(table: &Table) -> HashSet<i32> {
    let metadata = table.metadata();
    let strings: Vec<i32> = metadata
        .current_schema()
        .as_struct()
        .fields()
        .iter()
        .filter(|f| {
            matches!(
                *f.field_type,
                iceberg::spec::Type::Primitive(iceberg::spec::PrimitiveType::String)
            )
        })
        .map(|f| f.id)
        .collect();
    let Some(snapshot) = metadata.current_snapshot() else {
        return HashSet::new();
    };
    if strings.is_empty() {
        return HashSet::new();
    }
    let Ok(list) = crate::manifests::manifest_list(table, snapshot).await else {
        return HashSet::new();
    };
    let Some(newest) = list
        .entries()
        .iter()
        .filter(|m| m.content == ManifestContentType::Data)
        .max_by_key(|m| m.sequence_number)
    else {
        return HashSet::new();
    };
    let key = (newest.manifest_path.clone(), strings.clone());
    if let Some(known) = answers().get(&key) {
        return known.clone();
    }
    let Ok(manifests) = crate::manifests::manifests(table, &[newest]).await else {
        return HashSet::new();
    };
    let mut sizes = vec![(0u64, 0u64); strings.len()];
    for entry in manifests.iter().flat_map(|m| m.entries()) {
        let file = entry.data_file();
        if !entry.is_alive() || file.content_type() != DataContentType::Data {
            continue;
        }
        for (id, (bytes, values)) in strings.iter().zip(&mut sizes) {
            if let (Some(b), Some(v)) = (file.column_sizes().get(id), file.value_counts().get(id)) {
                *bytes += b;
                *values += v;
            }
        }
    }
    let categories: HashSet<i32> = strings
        .into_iter()
        .zip(sizes)
        .filter(|(_, (bytes, values))| {
            *values >= MIN_CATEGORY_VALUES
                && (*bytes as f64) < CATEGORY_BYTES_PER_VALUE * *values as f64
        })
        .map(|(id, _)| id)
        .collect();
    let mut known = answers();
    if known.len() >= MAX_KNOWN_ANSWERS {
        known.clear();
    }
    known.insert(key, categories.clone());
    categories
}

/// The category columns found per newest data manifest (a path names immutable content) and
/// string columns asked about, so that a query does not walk the manifest's entries again.
type Answers = HashMap<(String, Vec<i32>), HashSet<i32>>;

/// How many answers are kept at most (all are forgotten when full: each is cheap to find again).
const MAX_KNOWN_ANSWERS: usize = 4096;

fn answers() -> std::sync::MutexGuard<'static, Answers> {
    static ANSWERS: LazyLock<Mutex<Answers>> = LazyLock::new(Mutex::default);
    ANSWERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Compressed bytes per value under which a string column is taken for a category. On TPC-H
/// SF1 as pyiceberg writes it (zstd, dictionaries): the flags, modes, priorities, segments,
/// brands, containers and types 0.11–0.92; names, phones, addresses and comments 1.26–23.
const CATEGORY_BYTES_PER_VALUE: f64 = 1.0;

/// Fewer values than this say nothing of a column (a file's fixed costs dominate).
const MIN_CATEGORY_VALUES: u64 = 10_000;

#[cfg(test)]
mod tests {
    use super::distinct_strings;

    #[test]
    fn distinct_strings_follow_the_bits_each_value_takes() {
        // 8 bits a value: 256 values used evenly.
        assert_eq!(distinct_strings(100_000, 100_000, 100_000), Some(256));
        // Two bits: four.
        assert_eq!(distinct_strings(25_000, 100_000, 100_000), Some(4));
        // Free text: as many as the values that are not null, never more.
        assert_eq!(distinct_strings(4_000_000, 100_000, 60_000), Some(60_000));
        // Long runs compress to almost nothing: at least one value.
        assert_eq!(distinct_strings(10, 100_000, 100_000), Some(1));
        // Too few values to judge, or none that is not null.
        assert_eq!(distinct_strings(9_000, 9_000, 9_000), None);
        assert_eq!(distinct_strings(100, 100_000, 0), None);
    }
}
